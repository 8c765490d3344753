//! Per-request state carried through the proxy phases.

use crate::balance::InflightGuard;
use crate::runtime::Snapshot;
use http::HeaderValue;
use portcullis_plugin::RequestState;
use std::sync::Arc;

/// Backend ids already tried by this request (retries go elsewhere). No allocation.
#[derive(Debug, Default)]
pub struct Tried {
    ids: [u32; 12],
    len: u8,
}

impl Tried {
    /// Remember `id`.
    #[inline]
    pub fn push(&mut self, id: u32) {
        if (self.len as usize) < self.ids.len() {
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }

    /// Whether `id` was tried.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.ids[..self.len as usize].contains(&id)
    }

    /// Backends tried so far.
    #[inline]
    pub fn count(&self) -> u8 {
        self.len
    }
}

/// Why the gateway answered by itself instead of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    /// No route matched.
    NoRoute,
    /// Every backend of the upstream is unhealthy, drained or already tried.
    NoBackend,
    /// Connecting to the backend failed (and retries, if any, too).
    ConnectFailed,
    /// The backend did not answer in time.
    Timeout,
    /// A filter answered the request (e.g. 403, 429).
    Filter,
    /// Filters refused every available backend (e.g. all circuits open).
    Vetoed,
    /// Every eligible backend was at `max_connections` and the queue was full.
    QueueFull,
    /// No backend slot freed within the queue timeout.
    QueueTimeout,
    /// Refused before routing: a limit, or a path that cannot be normalised.
    Refused,
    /// The backend's answer was refused (e.g. an unsolicited 101).
    BadUpstreamResponse,
}

/// The context of one request.
#[derive(Default)]
pub struct RequestCtx {
    /// The config snapshot this request runs on.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Index of the chosen upstream.
    pub upstream: Option<usize>,
    /// `now_ns` when the request arrived.
    pub started_ns: u64,
    /// The request id (received or generated).
    pub request_id: Option<HeaderValue>,
    /// The W3C trace this request belongs to.
    pub trace: super::trace::Trace,
    /// In-flight slot on the current backend; released on drop, whatever the outcome.
    pub backend: Option<InflightGuard>,
    /// Backends tried.
    pub tried: Tried,
    /// Retries used.
    pub retries: u32,
    /// Retry the same backend on a fresh connection (a pooled connection was stale).
    pub retry_same: bool,
    /// `now_ns` when the current attempt started.
    pub attempt_started_ns: u64,
    /// The current attempt's response-header deadline (ns) when its backend is only being
    /// probed; its retry is already taken from the budget.
    pub probe: Option<u64>,
    /// Time to the backend's response header, once it arrived.
    pub upstream_latency_ns: Option<u64>,
    /// Whether a response header came back from a backend.
    pub response_started: bool,
    /// Why the gateway answered locally, if it did.
    pub local: Option<LocalReason>,
    /// The filter that refused the last candidate, when every backend was refused.
    pub vetoed_by: Option<Arc<str>>,
    /// The filter that answered the request or chose its upstream.
    pub acted_by: Option<Arc<str>>,
    /// Status of the backend's response, once it arrived.
    pub upstream_status: u16,
    /// Attempts already reported to `on_outcome` filters.
    pub outcomes_reported: u8,
    /// Whether the request's final outcome was reported.
    pub final_reported: bool,
    /// The client's address (the peer, or the forwarded client behind a trusted proxy).
    pub client_ip: Option<std::net::IpAddr>,
    /// Scratch space of the route's filters.
    pub filter_state: RequestState,
    /// The backend token of the request's sticky cookie, when it carried a well-formed one.
    pub sticky: Option<crate::runtime::sticky::Token>,
    /// The copy of this request for the route's mirror, when it is sampled.
    pub mirror: Option<Box<super::mirror::Copy>>,
}
