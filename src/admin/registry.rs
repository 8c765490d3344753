//! The registry calls of the admin API: register with an optional lease, heartbeat,
//! deregister, list. The state lives in the control plane (`control::registry`).

use super::api::{error, AdminApp, BackendBody, Reply};
use crate::config::duration::parse_duration;
use crate::control::registry::{Registration, LEASE_BOUNDS};
use crate::control::AdminChange;
use serde_json::{json, Value};
use std::net::SocketAddr;

impl AdminApp {
    pub(super) async fn register(&self, upstream: &str, body: &[u8]) -> Reply {
        let req = match BackendBody::parse(body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let ttl = match req.ttl.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) if (LEASE_BOUNDS.0..=LEASE_BOUNDS.1).contains(&d) => Some(d),
            Some(Ok(_)) => return error(400, "ttl must be between 1s and 24h"),
            Some(Err(e)) => return error(400, format!("ttl: {e}")),
        };
        let (address, backend) = req.backend();
        let change = AdminChange::Register {
            upstream: upstream.to_string(),
            address,
            backend,
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
