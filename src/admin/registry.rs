//! The registry calls of the admin API: register with an optional lease, heartbeat,
//! deregister, list. The state lives in the control plane (`control::registry`).

use super::api::{error, AdminApp, Reply};
use super::overlay::AddedBackend;
use crate::config::duration::parse_duration;
use crate::control::registry::{Registration, LEASE_BOUNDS};
use crate::control::AdminChange;
use crate::runtime::compile::MAX_WEIGHT;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `POST /upstreams/{u}/registrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// `"10s"`; absent: no lease.
    #[serde(default)]
    ttl: Option<String>,
}

fn one() -> u32 {
    1
}

/// Most metadata entries, and longest key or value, of one registration.
const MAX_METADATA: (usize, usize) = (32, 256);

impl AdminApp {
    pub(super) async fn register(&self, upstream: &str, body: &[u8]) -> Reply {
        let req: Register = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, format!("bad body: {e}")),
        };
        if !(1..=MAX_WEIGHT).contains(&req.weight) {
            return error(400, format!("weight must be between 1 and {MAX_WEIGHT}"));
        }
        let (n, len) = MAX_METADATA;
        if req.metadata.len() > n
            || req
                .metadata
                .iter()
                .any(|(k, v)| k.len() > len || v.len() > len)
        {
            return error(
                400,
                format!("metadata: at most {n} entries of at most {len} bytes"),
            );
        }
        let ttl = match req.ttl.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) if (LEASE_BOUNDS.0..=LEASE_BOUNDS.1).contains(&d) => Some(d),
            Some(Ok(_)) => return error(400, "ttl must be between 1s and 24h"),
            Some(Err(e)) => return error(400, format!("ttl: {e}")),
        };
        let change = AdminChange::Register {
            upstream: upstream.to_string(),
            address: req.address,
            backend: AddedBackend {
                weight: req.weight,
                backup: req.backup,
                metadata: req.metadata,
            },
            ttl,
        };
        self.change(upstream, change, 201).await
    }

    pub(super) async fn heartbeat(&self, upstream: &str, addr: SocketAddr) -> Reply {
        let change = AdminChange::Heartbeat {
            upstream: upstream.to_string(),
            addr,
        };
        match self.control.admin(change).await {
            Ok(()) => (200, json!({ "renewed": addr.to_string() })),
            Err(r) => error(r.status, r.message),
        }
    }

    pub(super) async fn deregister(&self, upstream: &str, addr: SocketAddr) -> Reply {
        let change = AdminChange::Deregister {
            upstream: upstream.to_string(),
            addr,
        };
        self.change(upstream, change, 200).await
    }

    pub(super) async fn registrations(&self) -> Reply {
        let list: Vec<Value> = self
            .control
            .registrations()
            .await
            .iter()
            .map(registration_json)
            .collect();
        (200, json!({ "registrations": list }))
    }
}

fn registration_json(r: &Registration) -> Value {
    json!({
        "upstream": r.upstream,
        "address": r.address.to_string(),
        "weight": r.weight,
        "backup": r.backup,
        "metadata": r.metadata,
        "ttl_ms": r.ttl.map(|t| t.as_millis() as u64),
        "lease_left_ms": r.left_ms(),
    })
}
