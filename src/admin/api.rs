//! The admin HTTP app: routing, authentication, JSON in and out.

use super::overlay::AddedBackend;
use crate::control::{AdminChange, ControlHandle};
use crate::gateway::Gateway;
use crate::runtime::compile::MAX_WEIGHT;
use crate::runtime::Upstream;
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API of one gateway.
pub struct AdminApp {
    gateway: Arc<Gateway>,
    pub(super) control: ControlHandle,
}

impl AdminApp {
    /// An app that reads `gateway` and sends changes to `control`.
    pub fn new(gateway: Arc<Gateway>, control: ControlHandle) -> Self {
        AdminApp { gateway, control }
    }
}

pub(super) type Reply = (u16, Value);

pub(super) fn error(status: u16, message: impl Into<String>) -> Reply {
    (status, json!({ "error": message.into() }))
}

/// The body of `POST .../backends` and of `POST .../registrations` (which alone takes `ttl`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendBody {
    pub(super) address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// A registration's lease, e.g. `"10s"`.
    #[serde(default)]
    pub(super) ttl: Option<String>,
}

/// Most metadata entries, and longest key or value, of one backend.
const MAX_METADATA: (usize, usize) = (32, 256);

impl BackendBody {
    /// Parse and check a body.
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reply> {
        let b: BackendBody =
            serde_json::from_slice(body).map_err(|e| error(400, format!("bad body: {e}")))?;
        if !(1..=MAX_WEIGHT).contains(&b.weight) {
            return Err(error(
                400,
                format!("weight must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        let (n, len) = MAX_METADATA;
        if b.metadata.len() > n
            || b.metadata
                .iter()
                .any(|(k, v)| k.len() > len || v.len() > len)
        {
            return Err(error(
                400,
                format!("metadata: at most {n} entries of at most {len} bytes"),
            ));
        }
        Ok(b)
    }

    /// Weight, backup flag and labels.
    pub(super) fn backend(self) -> (String, AddedBackend) {
        let b = AddedBackend {
            weight: self.weight,
            backup: self.backup,
            metadata: self.metadata,
        };
        (self.address, b)
    }
}

fn one() -> u32 {
    1
}

/// Constant-time comparison of the presented token with the configured one.
fn token_ok(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Decode `%xx` escapes (for IPv6 addresses in paths).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl AdminApp {
    async fn body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BODY {
                        return Err(error(413, "body too large"));
                    }
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(error(400, format!("cannot read the body: {e}"))),
            }
        }
    }

    fn authorized(&self, session: &ServerSession) -> Result<(), Reply> {
        let Some(expected) = self
            .gateway
            .snapshot()
            .admin
            .as_ref()
            .and_then(|a| a.token.clone())
        else {
            return Err(error(
                403,
                "mutating calls are disabled: configure admin.token or admin.token_env",
            ));
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_ok(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(error(401, "missing or wrong bearer token"))
        }
    }

    fn status(&self) -> Reply {
        let gw = &self.gateway;
        let snapshot = gw.snapshot();
        let reload = gw.last_reload();
        let uptime = SystemTime::now()
            .duration_since(gw.started())
            .map_or(0, |d| d.as_secs());
        let last_reload = reload.at.map(|at| {
            json!({
                "at_unix": unix_seconds(at),
                "trigger": reload.trigger,
                "result": if reload.ok { "success" } else { "failure" },
                "messages": reload.messages,
            })
        });
        (
            200,
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "uptime_seconds": uptime,
                "config_file": gw.config_path().display().to_string(),
                "config_generation": snapshot.generation,
                "last_reload": last_reload,
            }),
        )
    }

    fn upstream_json(&self, up: &Upstream) -> Value {
        let snapshot = self.gateway.snapshot();
        let metrics = self.gateway.metrics();
        let eligible = up.eligible();
        let backends: Vec<Value> = up
            .backends()
            .iter()
            .map(|b| {
                let s = &b.state;
                let q = metrics.latency_quantiles(&up.name, s.label());
                let ms = |v: f64| (v * 1e6).round() / 1e3;
                let mut filters = serde_json::Map::new();
                for route in snapshot.router.routes() {
                    for (key, value) in route.filters.describe_backend(s.addr()) {
                        filters.insert(key.to_string(), Value::String(value));
                    }
                }
                json!({
                    "address": s.label(),
                    "weight": b.backend.weight,
                    "backup": b.backup,
                    "origin": b.origin.label(),
                    "metadata": &*b.metadata,
                    "healthy": s.is_healthy(),
                    "enabled": s.is_enabled(),
                    "in_rotation": eligible.contains(&s.addr()),
                    "ramp": up.ramp_of(s.addr()),
                    "inflight": s.inflight(),
                    "requests": s.requests(),
                    "failures": s.failures(),
                    "latency_ewma_ms": (s.ewma_latency_ns() / 1e3).round() / 1e3,
                    "latency_ms": q.map(|[p50, p95, p99]| json!({ "p50": ms(p50), "p95": ms(p95), "p99": ms(p99) })),
                    "filters": filters,
                })
            })
            .collect();
        json!({ "name": &*up.name, "strategy": up.strategy(), "panic": up.in_panic(), "backends": backends })
    }

    /// `GET /overview`: what the status page draws, in one call.
    fn overview(&self) -> Reply {
        let (_, status) = self.status();
        let (_, upstreams) = self.upstreams();
        let events = self.gateway.events().newest_first();
        let reply =
            json!({ "status": status, "upstreams": upstreams["upstreams"], "events": events });
        (200, reply)
    }

    /// `GET /`: the status page, rendered from the same JSON.
    fn page(&self) -> Response<Vec<u8>> {
        let (_, status) = self.status();
        let (_, upstreams) = self.upstreams();
        let html = super::page::render(&status, &upstreams, &self.gateway.events().newest_first());
        Self::reply(200, "text/html; charset=utf-8", html.into_bytes())
    }

    fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
        let mut r = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        for (k, v) in super::page::SECURITY_HEADERS {
            r = r.header(k, v);
        }
        r.body(body).unwrap_or_default()
    }

    fn upstreams(&self) -> Reply {
        let snapshot = self.gateway.snapshot();
        let all: Vec<Value> = snapshot
            .upstreams
            .iter()
            .map(|u| self.upstream_json(u))
            .collect();
        (200, json!({ "upstreams": all }))
    }

    fn find_upstream(&self, name: &str) -> Result<Arc<Upstream>, Reply> {
        self.gateway
            .snapshot()
            .upstream(name)
            .cloned()
            .ok_or_else(|| error(404, format!("no upstream `{name}`")))
    }

    async fn add_backend(&self, upstream: &str, body: &[u8]) -> Reply {
        let req = match BackendBody::parse(body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if req.ttl.is_some() {
            return error(
                400,
                "ttl applies to registrations: POST /upstreams/{name}/registrations",
            );
        }
        let (address, backend) = req.backend();
        let change = AdminChange::Add {
            upstream: upstream.to_string(),
            address,
            backend,
        };
        self.change(upstream, change, 201).await
    }

    /// Send `change` to the control plane; the upstream as it is once the change is live.
    pub(super) async fn change(&self, upstream: &str, change: AdminChange, ok: u16) -> Reply {
        match self.control.admin(change).await {
            Ok(()) => match self.find_upstream(upstream) {
                Ok(up) => (ok, self.upstream_json(&up)),
                Err(r) => r,
            },
            Err(refusal) => error(refusal.status, refusal.message),
        }
    }

    async fn reload(&self) -> Reply {
        match self.control.reload("admin API").await {
            Ok(generation) => (
                200,
                json!({ "result": "success", "config_generation": generation }),
            ),
            Err(errors) => (
                422,
                json!({
                    "result": "failure",
                    "config_generation": self.gateway.snapshot().generation,
                    "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                }),
            ),
        }
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        if method != Method::GET {
            if let Err(r) = self.authorized(session) {
                return r;
            }
        }
        let addr = |s: &str| {
            s.parse::<SocketAddr>()
                .map_err(|_| error(400, format!("`{s}` is not ip:port")))
        };
        match (&method, segs.as_slice()) {
            (&Method::GET, ["status"]) => self.status(),
            (&Method::GET, ["overview"]) => self.overview(),
            (&Method::GET, ["events"]) => (
                200,
                json!({ "events": self.gateway.events().newest_first() }),
            ),
            (&Method::GET, ["upstreams"]) => self.upstreams(),
            (&Method::GET, ["upstreams", name]) => match self.find_upstream(name) {
                Ok(u) => (200, self.upstream_json(&u)),
                Err(r) => r,
            },
            (&Method::POST, ["upstreams", name, "backends"]) => match Self::body(session).await {
                Ok(body) => self.add_backend(name, &body).await,
                Err(r) => r,
            },
            (&Method::DELETE, ["upstreams", name, "backends", a]) => match addr(a) {
                Ok(addr) => {
                    let upstream = name.to_string();
                    self.change(name, AdminChange::Remove { upstream, addr }, 200)
                        .await
                }
                Err(r) => r,
            },
            (&Method::POST, ["upstreams", name, "backends", a, action @ ("drain" | "enable")]) => {
                match addr(a) {
                    Ok(addr) => {
                        let upstream = name.to_string();
                        let enabled = *action == "enable";
                        let change = AdminChange::SetEnabled {
                            upstream,
                            addr,
                            enabled,
                        };
                        self.change(name, change, 200).await
                    }
                    Err(r) => r,
                }
            }
            (&Method::GET, ["registrations"]) => self.registrations().await,
            (&Method::POST, ["upstreams", name, "registrations"]) => {
                match Self::body(session).await {
                    Ok(body) => self.register(name, &body).await,
                    Err(r) => r,
                }
            }
            (&Method::POST, ["upstreams", name, "registrations", a, "heartbeat"]) => {
                match addr(a) {
                    Ok(addr) => self.heartbeat(name, addr).await,
                    Err(r) => r,
                }
            }
            (&Method::DELETE, ["upstreams", name, "registrations", a]) => match addr(a) {
                Ok(addr) => self.deregister(name, addr).await,
                Err(r) => r,
            },
            (&Method::POST, ["reload"]) => self.reload().await,
            _ => error(404, format!("no such call: {method} {path}")),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == Method::GET {
            let path = req.uri.path();
            if path == "/" {
                return self.page();
            }
            if let Some((content_type, body)) = super::page::asset(path) {
                return Self::reply(200, content_type, body.as_bytes().to_vec());
            }
        }
        let (status, value) = self.route(session).await;
        let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
        body.push(b'\n');
        Self::reply(status, "application/json", body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_ok(b"abcdefabcdefabcd", b"abcdefabcdefabcd"));
        assert!(!token_ok(b"abcdefabcdefabce", b"abcdefabcdefabcd"));
        assert!(!token_ok(b"", b"abcdefabcdefabcd"));
    }

    #[test]
    fn decodes_ipv6_in_paths() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("é%4"), "é%4");
    }
}
