//! Choosing the backend of one attempt and taking its in-flight slot: the strategy's pick
//! among eligible members not tried yet and not vetoed by the route's filters, and, when the
//! upstream caps each backend (`max_connections`), a wait in its queue while all are full.

use super::context::{LocalReason, RequestCtx};
use crate::balance::{now_ns, BackendState, InflightGuard, PickRequest};
use crate::runtime::admission::Refusal;
use crate::runtime::affinity::Affinity;
use crate::runtime::Upstream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use portcullis_plugin::Candidate;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Pick a backend for the next attempt of `ctx`'s request on `up` and hold a slot on it: the
/// backend its sticky cookie or affinity entry names when that one can serve, else the
/// strategy's pick. On failure, `ctx.local` says why and the error is a 503.
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
    let kept = Preference::of(session, ctx, up, now);
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
    let taken = if let Some(slot) = kept.slot(up, &accept, now) {
        Ok(slot)
    } else if up.admission.cap == 0 {
        up.pick(&pick, accept)
            .map(|s| InflightGuard::new(s, now))
            .ok_or(Refusal::NoBackend)
    } else {
        let mut capped =
            |ok: &dyn Fn(&BackendState) -> bool| up.pick(&pick, |s| ok(s) && accept(s));
        up.admission.acquire(&mut capped, Some(now)).await
    };
    match taken {
        Ok(slot) => {
            kept.served(&slot, now);
            Ok(slot)
        }
        Err(refusal) => {
            let vetoed = vetoed_by.load(Relaxed).checked_sub(1);
            let kind = vetoed
                .and_then(|i| filters.get(i))
                .map(|e| Arc::clone(&e.kind));
            Err(refused(ctx, up, refusal, kind))
        }
    }
}

/// The response-header deadline (ns) of this attempt when the strategy chose `s` only to probe
/// it ([`Upstream::probe_deadline`]) and the request can go elsewhere after it: idempotent,
/// its body still replayable, a retry left and granted by the budget (taken now, so that a
/// probe that times out is never answered with a 504 for want of budget).
pub fn probe_deadline(
    session: &Session,
    ctx: &RequestCtx,
    up: &Upstream,
    s: &BackendState,
) -> Option<u64> {
    if !replayable(session) || ctx.retries >= up.retry.attempts {
        return None;
    }
    let deadline = up.probe_deadline(s, ctx.attempt_started_ns)?;
    up.retry
        .try_spend(ctx.attempt_started_ns)
        .then_some(deadline)
}

/// Whether the request can be sent again after it reached a backend: an idempotent method, and
/// a body that still fits the retry buffer.
pub fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated()
}

/// Say why no backend was taken (in `ctx.local`) and build the 503.
fn refused(
    ctx: &mut RequestCtx,
    up: &Upstream,
    refusal: Refusal,
    vetoed_by: Option<Arc<str>>,
) -> Box<Error> {
    ctx.local = match (refusal, vetoed_by) {
        (Refusal::QueueFull, _) => Some(LocalReason::QueueFull),
        (Refusal::QueueTimeout, _) => Some(LocalReason::QueueTimeout),
        (Refusal::NoBackend, Some(kind)) => {
            ctx.vetoed_by = Some(kind);
            Some(LocalReason::Vetoed)
        }
        (Refusal::NoBackend, None) if ctx.tried.count() == 0 => Some(LocalReason::NoBackend),
        (Refusal::NoBackend, None) => ctx.local,
    };
    Error::explain(
        ErrorType::HTTPStatus(503),
        format!("no available backend in upstream {}", up.name),
    )
}

/// The backend a request asks to keep: the one its sticky cookie names, else the one its
/// affinity key is remembered with. Both are honoured on the first attempt only (a retry goes
/// elsewhere); every attempt that gets a backend refreshes the key's entry.
struct Preference<'a> {
    sticky: Option<SocketAddr>,
    /// The table and the request key's hash.
    affinity: Option<(&'a Affinity, u64)>,
    /// Whether the table was consulted (a first attempt without a sticky target): only then
    /// does the pick count as a hit or a miss.
    consulted: bool,
    /// The entry found, when the table was consulted.
    remembered: Option<SocketAddr>,
}

impl<'a> Preference<'a> {
    #[inline]
    fn of(session: &Session, ctx: &mut RequestCtx, up: &'a Upstream, now: u64) -> Self {
        let first = ctx.tried.count() == 0;
        let req = session.req_header();
        let mut sticky = None;
        if let Some((token, addr)) = up.sticky().and_then(|t| t.target(req)).filter(|_| first) {
            ctx.sticky = Some(token);
            sticky = addr;
        }
        let affinity = up.affinity().map(|a| (a, a.key_of(req, ctx.client_ip)));
        let consulted = affinity.is_some() && first && sticky.is_none();
        let remembered = affinity
            .filter(|_| consulted)
            .and_then(|(a, h)| a.lookup(h, now));
        Preference {
            sticky,
            affinity,
            consulted,
            remembered,
        }
    }

    /// A slot on the preferred backend, when it is eligible, not vetoed and below its cap;
    /// otherwise `None` and the request is balanced (the cookie issued again, the entry
    /// replaced). Counts the affinity hit or miss.
    #[inline]
    fn slot(
        &self,
        up: &Upstream,
        accept: &dyn Fn(&BackendState) -> bool,
        now: u64,
    ) -> Option<InflightGuard> {
        let slot = self.sticky.or(self.remembered).and_then(|addr| {
            up.pick_addr(addr, accept)
                .and_then(|s| InflightGuard::try_new(&s, up.admission.cap, Some(now)))
        });
        if let (Some((a, _)), true) = (self.affinity, self.consulted) {
            a.count(slot.is_some());
        }
        slot
    }

    /// Remember the backend that was taken.
    #[inline]
    fn served(&self, slot: &InflightGuard, now: u64) {
        if let Some((a, h)) = self.affinity {
            a.remember(h, slot.state().addr(), now);
        }
    }
}
