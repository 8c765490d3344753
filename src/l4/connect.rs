//! Choosing a backend for a TCP connection and connecting to it, with failover.
//!
//! Each attempt is a fresh pick by the upstream's strategy among the eligible members not
//! tried yet, below their `max_connections` (or a wait in the queue), and allowed by the
//! listener's filters. A failed connect counts as a failure for the backend (latency-aware
//! strategies, the circuit breaker's `on_outcome`), and the next attempt goes elsewhere:
//! nothing was sent yet, so it is always safe.

use crate::balance::{key, now_ns, BackendState, InflightGuard, PickRequest};
use crate::gateway::Gateway;
use crate::observe::l4_metrics::TcpEnd;
use crate::runtime::admission::Refusal;
use crate::runtime::tcp::TcpSpec;
use crate::runtime::Upstream;
use portcullis_plugin::{AttemptError, Candidate, Outcome};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A connected backend.
pub struct Connected {
    /// The backend connection.
    pub stream: TcpStream,
    /// The slot held on the backend for the connection's life.
    pub slot: InflightGuard,
    /// The upstream it belongs to (as it was when connected).
    pub upstream: Arc<Upstream>,
}

/// Who is connecting, for the pick and the filters.
pub struct Connecting<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// Its compiled settings.
    pub spec: &'a TcpSpec,
    /// The upstream's name.
    pub upstream: &'a str,
    /// The client (from a PROXY header when one was accepted).
    pub client: IpAddr,
}

fn accepted(spec: &TcpSpec, up: &Upstream, s: &BackendState) -> bool {
    let c = Candidate {
        addr: s.addr(),
        upstream: &up.name,
        upstream_size: up.size(),
    };
    spec.filters
        .accept_backend
        .iter()
        .all(|e| e.filter.accept_backend(&c))
}

fn report(
    c: &Connecting<'_>,
    up: &Upstream,
    backend: SocketAddr,
    latency: u64,
    attempt: u32,
    err: Option<AttemptError>,
    retried: bool,
) {
    if c.spec.filters.outcome.is_empty() {
        return;
    }
    let o = Outcome {
        route: c.listener,
        upstream: &up.name,
        upstream_size: up.size(),
        backend: Some(backend),
        // L4 has no status: a connection made is reported as a success (200).
        status: if err.is_none() { 200 } else { 0 },
        latency: Duration::from_nanos(latency),
        error: err,
        retried,
        attempt,
    };
    for e in c.spec.filters.outcome.iter() {
        e.filter.on_outcome(&o);
    }
}

/// Connect to a backend of `c.upstream`, trying up to `connect_attempts` of them. Returns the
/// connection, or how the client connection ends, and how many backends were tried.
pub async fn connect(gw: &Gateway, c: &Connecting<'_>) -> (Result<Connected, TcpEnd>, u32) {
    let Some(first) = gw.snapshot().upstream(c.upstream).cloned() else {
        return (Err(TcpEnd::NoBackend), 0);
    };
    let admission = Arc::clone(&first.admission);
    let mut buf = [0u8; 16];
    let hash = crc32fast::hash(key::ip_bytes(Some(c.client), &mut buf));
    let mut tried: Vec<u32> = Vec::new();
    for attempt in 1..=c.spec.connect_attempts {
        let mut current = Arc::clone(&first);
        let mut pick = |ok: &dyn Fn(&BackendState) -> bool| {
            // The member list may change while waiting in the queue: read it afresh.
            current = gw.snapshot().upstream(c.upstream).cloned()?;
            let req = PickRequest {
                hash,
                now: now_ns(),
            };
            let up = &current;
            up.pick(&req, |s| {
                !tried.contains(&s.id()) && ok(s) && accepted(c.spec, up, s)
            })
        };
        let slot = match admission.acquire(&mut pick, None).await {
            Ok(slot) => slot,
            Err(_) if attempt > 1 => return (Err(TcpEnd::ConnectFailed), attempt - 1),
            Err(Refusal::NoBackend) => return (Err(TcpEnd::NoBackend), 0),
            Err(Refusal::QueueFull) => return (Err(TcpEnd::QueueFull), 0),
            Err(Refusal::QueueTimeout) => return (Err(TcpEnd::QueueTimeout), 0),
        };
        let up = current;
        let state = Arc::clone(slot.state());
        tried.push(state.id());
        let start = now_ns();
        let result =
            tokio::time::timeout(up.connect_timeout(), TcpStream::connect(state.addr())).await;
        let now = now_ns();
        let err = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                state.record_success(now - start, now);
                report(c, &up, state.addr(), now - start, attempt, None, false);
                return (
                    Ok(Connected {
                        stream,
                        slot,
                        upstream: up,
                    }),
                    attempt,
                );
            }
            Ok(Err(e)) => {
                log::debug!(
                    "tcp listener {}: connect to {} failed: {e}",
                    c.listener,
                    state.addr()
                );
                AttemptError::Connect
            }
            Err(_) => AttemptError::Timeout,
        };
        state.record_failure(now);
        gw.metrics().count_connect_error(&up.name, state.label());
        report(
            c,
            &up,
            state.addr(),
            now - start,
            attempt,
            Some(err),
            attempt < c.spec.connect_attempts,
        );
    }
    (Err(TcpEnd::ConnectFailed), c.spec.connect_attempts)
}
