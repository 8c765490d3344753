//! The portcullis plugin API.
//!
//! A filter is a Rust type implementing [`Filter`]. It is built from its YAML config by a
//! factory registered under a name in a [`FilterRegistry`], and routes list filters by that
//! name:
//!
//! ```yaml
//! filters:                     # global: every route, before the route's own
//!   - kind: ip_acl
//!     allow: [10.0.0.0/8]
//! routes:
//!   - name: api
//!     upstream: api
//!     filters:
//!       - kind: rate_limit
//!         rate: 100
//!         per: second
//! ```
//!
//! The hooks, in request order:
//!
//! | hook | may |
//! |---|---|
//! | [`Filter::on_request`] | answer directly (403, 429...) |
//! | [`Filter::choose_upstream`] | send the request to another upstream (canary) |
//! | [`Filter::accept_backend`] | veto a backend candidate (circuit breaker) |
//! | [`Filter::on_upstream_request`] | change the headers sent to the backend |
//! | [`Filter::on_response`] | change the headers sent to the client |
//! | [`Filter::on_outcome`] | observe every attempt: backend, status, latency, error, retried |
//!
//! A filter declares the hooks it implements in [`Filter::hooks`]; the gateway calls only
//! those, so a hook a filter does not implement costs nothing. The hooks see the request
//! through [`RequestView`] (plain `http` types), so a filter is unit-tested without a server:
//! see [`testing`].

pub mod build;
pub mod duration;
pub mod headers;
pub mod hooks;
pub mod outcome;
pub mod request;
pub mod testing;
pub mod window;

pub use build::{BuildContext, Ejector, FilterError, FilterFactory, FilterRegistry, Scope};

// The crates whose types appear in this API, so a plugin uses the very versions the gateway
// was built with instead of pinning them by hand.
pub use async_trait::async_trait;
pub use duration::Dur;
pub use headers::HeaderEdit;
pub use http;
pub use outcome::{AttemptError, Outcome};
pub use prometheus;
pub use request::{Candidate, Decision, RequestState, RequestView, Response};
pub use serde_yaml;

use std::net::SocketAddr;

/// Which hooks a filter implements (a small bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks(u8);

impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks(0);
    /// [`Filter::on_request`].
    pub const REQUEST: Hooks = Hooks(1);
    /// [`Filter::choose_upstream`].
    pub const CHOOSE_UPSTREAM: Hooks = Hooks(1 << 1);
    /// [`Filter::accept_backend`].
    pub const ACCEPT_BACKEND: Hooks = Hooks(1 << 2);
    /// [`Filter::on_upstream_request`].
    pub const UPSTREAM_REQUEST: Hooks = Hooks(1 << 3);
    /// [`Filter::on_response`].
    pub const RESPONSE: Hooks = Hooks(1 << 4);
    /// [`Filter::on_outcome`].
    pub const OUTCOME: Hooks = Hooks(1 << 5);

    /// Whether every hook in `other` is set.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no hook is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each hook, with its constant's name and its method's.
    pub const ALL: [(Hooks, &'static str, &'static str); 6] = [
        (Hooks::REQUEST, "REQUEST", "on_request"),
        (Hooks::CHOOSE_UPSTREAM, "CHOOSE_UPSTREAM", "choose_upstream"),
        (Hooks::ACCEPT_BACKEND, "ACCEPT_BACKEND", "accept_backend"),
        (
            Hooks::UPSTREAM_REQUEST,
            "UPSTREAM_REQUEST",
            "on_upstream_request",
        ),
        (Hooks::RESPONSE, "RESPONSE", "on_response"),
        (Hooks::OUTCOME, "OUTCOME", "on_outcome"),
    ];

    /// `on_request and on_outcome (Hooks::REQUEST | Hooks::OUTCOME)`, for messages.
    pub fn describe(self) -> String {
        let set: Vec<_> = Self::ALL
            .iter()
            .filter(|(h, ..)| self.contains(*h))
            .collect();
        let methods: Vec<&str> = set.iter().map(|(_, _, m)| *m).collect();
        let consts: Vec<String> = set.iter().map(|(_, c, _)| format!("Hooks::{c}")).collect();
        format!("{} ({})", methods.join(" and "), consts.join(" | "))
    }
}

impl std::ops::BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, rhs: Hooks) -> Hooks {
        Hooks(self.0 | rhs.0)
    }
}

/// A request filter. Implement the hooks you need, list them in [`Filter::hooks`]: only listed
/// hooks are called. An instance may list fewer on purpose (a `headers` filter without request
/// edits skips that hook), so the gateway cannot tell an omission from a choice: test a fully
/// configured instance with [`testing::assert_hooks_declared`], which fails on a hook that is
/// implemented but not listed.
///
/// All hooks run on the request path: avoid blocking, and prefer atomics to locks.
#[async_trait]
pub trait Filter: Send + Sync + 'static {
    /// The hooks this filter implements; only these are ever called.
    fn hooks(&self) -> Hooks;

    /// Inspect the request; return [`Decision::Respond`] to answer it without a backend.
    async fn on_request(&self, _req: &RequestView<'_>, _state: &mut RequestState) -> Decision {
        hooks::default_ran(Hooks::REQUEST);
        Decision::Continue
    }

    /// Name an upstream to use instead of the route's. The first filter that names one wins.
    fn choose_upstream<'a>(
        &'a self,
        _req: &RequestView<'_>,
        _state: &mut RequestState,
    ) -> Option<&'a str> {
        hooks::default_ran(Hooks::CHOOSE_UPSTREAM);
        None
    }

    /// Whether `candidate` may serve this request. When every candidate is refused, the client
    /// gets `503`.
    fn accept_backend(&self, _candidate: &Candidate<'_>) -> bool {
        hooks::default_ran(Hooks::ACCEPT_BACKEND);
        true
    }

    /// Change the headers of the request sent to the backend.
    fn on_upstream_request(
        &self,
        _req: &RequestView<'_>,
        _headers: &mut dyn HeaderEdit,
        _state: &mut RequestState,
    ) {
        hooks::default_ran(Hooks::UPSTREAM_REQUEST);
    }

    /// Change the headers of the response sent to the client (also for answers the gateway
    /// or a filter produced).
    fn on_response(
        &self,
        _req: &RequestView<'_>,
        _status: u16,
        _headers: &mut dyn HeaderEdit,
        _state: &mut RequestState,
    ) {
        hooks::default_ran(Hooks::RESPONSE);
    }

    /// Observe one attempt: called after each failed attempt and once at the end of every
    /// request (including requests that never reached a backend).
    fn on_outcome(&self, _outcome: &Outcome<'_>) {
        hooks::default_ran(Hooks::OUTCOME);
    }

    /// Housekeeping, called about once per second (evict idle keys, refresh gauges).
    fn maintain(&self) {}

    /// A short status of `backend` for the admin API (e.g. a circuit state), if the filter
    /// tracks backends.
    fn describe_backend(&self, _backend: SocketAddr) -> Option<(&'static str, String)> {
        None
    }
}
