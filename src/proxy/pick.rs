//! Choosing the backend of one attempt and taking its in-flight slot: the strategy's pick
//! among eligible members not tried yet and not vetoed by the route's filters, and, when the
//! upstream caps each backend (`max_connections`), a wait in its queue while all are full.

use super::context::{LocalReason, RequestCtx};
use crate::balance::{now_ns, BackendState, InflightGuard, PickRequest};
use crate::runtime::admission::Refusal;
use crate::runtime::Upstream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use portcullis_plugin::Candidate;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Pick a backend for the next attempt of `ctx`'s request on `up` and hold a slot on it.
/// On failure, `ctx.local` says why and the error is a 503.
pub async fn take_backend(
    session: &Session,
    ctx: &mut RequestCtx,
    up: &Arc<Upstream>,
) -> Result<InflightGuard> {
    let hash = match up.key_source() {
        Some(key) => {
            let mut buf = [0u8; 16];
            crc32fast::hash(key.extract(session.req_header(), ctx.client_ip, &mut buf))
        }
        None => 0,
    };
    let now = now_ns();
    let pick = PickRequest { hash, now };
    // A sticky cookie is honoured on the first attempt only: a retry goes elsewhere.
    let sticky = match up.sticky_target(session.req_header()) {
        Some((token, addr)) if ctx.tried.count() == 0 => {
            ctx.sticky = Some(token);
            addr
        }
        _ => None,
    };
    let filters = super::route_of(ctx).map_or(&[][..], |r| &r.filters.accept_backend[..]);
    // 1 + the index of the filter that vetoed last (0: none did).
    let vetoed_by = AtomicUsize::new(0);
    let tried = &ctx.tried;
    let size = up.size();
    let accept = |s: &BackendState| {
        if tried.contains(s.id()) {
            return false;
        }
        let c = Candidate {
            addr: s.addr(),
            upstream: &up.name,
            upstream_size: size,
        };
        match filters.iter().position(|e| !e.filter.accept_backend(&c)) {
            Some(i) => {
                vetoed_by.store(i + 1, Relaxed);
                false
            }
            None => true,
        }
    };
    if let Some(slot) = sticky.and_then(|addr| sticky_slot(up, addr, &accept, now)) {
        return Ok(slot);
    }
    let taken = if up.admission.cap == 0 {
        up.pick(&pick, accept)
            .map(|s| InflightGuard::new(s, now))
            .ok_or(Refusal::NoBackend)
    } else {
        let mut capped =
            |ok: &dyn Fn(&BackendState) -> bool| up.pick(&pick, |s| ok(s) && accept(s));
        up.admission.acquire(&mut capped, Some(now)).await
    };
    let refusal = match taken {
        Ok(slot) => return Ok(slot),
        Err(r) => r,
    };
    let vetoed = vetoed_by
        .load(Relaxed)
        .checked_sub(1)
        .and_then(|i| filters.get(i));
    ctx.local = match (refusal, vetoed) {
        (Refusal::QueueFull, _) => Some(LocalReason::QueueFull),
        (Refusal::QueueTimeout, _) => Some(LocalReason::QueueTimeout),
        (Refusal::NoBackend, Some(e)) => {
            ctx.vetoed_by = Some(Arc::clone(&e.kind));
            Some(LocalReason::Vetoed)
        }
        (Refusal::NoBackend, None) if ctx.tried.count() == 0 => Some(LocalReason::NoBackend),
        (Refusal::NoBackend, None) => ctx.local,
    };
    Err(Error::explain(
        ErrorType::HTTPStatus(503),
        format!("no available backend in upstream {}", up.name),
    ))
}

/// A slot on `addr`, the backend the request's sticky cookie names, when it is eligible, not
/// vetoed and below its cap; otherwise `None` and the request is balanced (and the cookie issued
/// again).
#[inline]
fn sticky_slot(
    up: &Upstream,
    addr: std::net::SocketAddr,
    accept: &dyn Fn(&BackendState) -> bool,
    now: u64,
) -> Option<InflightGuard> {
    let state = up.pick_addr(addr, accept)?;
    InflightGuard::try_new(&state, up.admission.cap, Some(now))
}
