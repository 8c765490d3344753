//! A compiled upstream: its backends, strategy, connection settings and retry policy.
//!
//! The selector covers only *eligible* members: healthy, enabled primaries whose circuit is
//! not open, or — while no primary is eligible — such backups. The control plane builds a new
//! upstream whenever health, enablement, ejection or membership changes, so strategies
//! always balance over exactly the members that may serve.

use super::affinity::Affinity;
use super::ramp::{in_panic, Rotation, SlowStart, Steady};
use super::retry::RetryPolicy;
use super::sticky::{Sticky, StickyTable};
use crate::balance::{
    BackendState, KeySource, Member, PickRequest, Selector, StateStore, StrategyFactory,
};
use crate::health::HealthSpec;
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a backend came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOrigin {
    /// The config file.
    File,
    /// The admin API (kept across file reloads, lost on restart).
    Admin,
    /// DNS discovery (the last good answer).
    Discovered,
    /// The admin API's registry (until deregistered or its lease runs out).
    Registered,
}

impl BackendOrigin {
    /// `file`, `admin` or `discovered`.
    pub fn label(self) -> &'static str {
        match self {
            BackendOrigin::File => "file",
            BackendOrigin::Admin => "admin",
            BackendOrigin::Discovered => "discovered",
            BackendOrigin::Registered => "registered",
        }
    }
}

/// One configured backend of an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamBackend {
    /// Address and weight.
    pub backend: Backend,
    /// Live state (shared by address across upstreams and reloads).
    pub state: Arc<BackendState>,
    /// Serves only while no primary is eligible.
    pub backup: bool,
    /// Free-form labels (e.g. `zone`), set through the admin API.
    pub metadata: Arc<BTreeMap<String, String>>,
    /// File or admin API.
    pub origin: BackendOrigin,
}

impl UpstreamBackend {
    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr()
    }
}

pub use crate::tls::upstream::UpstreamTls;

/// Everything needed to reach an upstream's backends.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Template peer (address replaced per request).
    pub peer: HttpPeer,
    /// Whether upstream connections are reused.
    pub keepalive: bool,
}

impl Connection {
    /// Plain-HTTP connection settings with these timeouts.
    pub fn new(
        connect: Duration,
        read: Duration,
        write: Option<Duration>,
        idle: Duration,
        keepalive: bool,
    ) -> Self {
        let mut peer = HttpPeer::new(SocketAddr::from(([127, 0, 0, 1], 1)), false, String::new());
        peer.options.connection_timeout = Some(connect);
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = write;
        peer.options.idle_timeout = Some(if keepalive { idle } else { Duration::ZERO });
        Connection { peer, keepalive }
    }

    /// Connect over TLS.
    pub fn with_tls(mut self, tls: Option<&UpstreamTls>) -> Self {
        if let Some(t) = tls {
            t.apply(&mut self.peer);
        }
        self
    }

    /// Speak HTTP/2 to the backends (h2 via ALPN over TLS, h2c with prior knowledge without).
    pub fn with_http2(mut self, http2: bool) -> Self {
        if http2 {
            self.peer.options.set_http_version(2, 2);
        }
        self
    }
}

/// A named group of backends, with the selector over those that may serve.
///
/// Immutable: a change of membership or eligibility (admin call, health transition, open
/// circuit) is a new `Upstream` in a new [`super::Snapshot`], built by the control plane.
pub struct Upstream {
    /// Name.
    pub name: Arc<str>,
    /// Interned name (metric label cache key).
    pub label_id: u32,
    factory: Arc<dyn StrategyFactory>,
    key: Option<KeySource>,
    backends: Box<[UpstreamBackend]>,
    selector: Selector,
    /// How many backends were left out because they were ejected (open circuit).
    ejected: usize,
    conn: Arc<Connection>,
    /// Retry policy (its budget is shared by every membership version of this config).
    pub retry: Arc<RetryPolicy>,
    /// Active health check, if configured.
    pub health: Option<HealthSpec>,
    /// Per-backend cap and its queue (shared by every membership version of this config).
    pub admission: Arc<super::admission::Admission>,
    /// PROXY protocol header sent on new backend connections (TCP listeners).
    pub send_proxy: Option<crate::config::tcp::ProxyVersion>,
    /// How members ramp in, if they do.
    pub slow_start: Option<SlowStart>,
    /// Healthy share of primaries below which all of them serve (a fraction).
    pub panic_threshold: Option<f64>,
    /// Whether this membership version balances in panic (over unhealthy primaries too).
    panic: bool,
    /// Sticky cookie settings and each backend's token.
    sticky: Option<StickyTable>,
    /// Remembered key -> backend mappings (shared by every version of this config, and across
    /// reloads that keep its settings).
    affinity: Option<Arc<Affinity>>,
    /// Where DNS discovery looks for more members.
    pub discover: Option<Arc<crate::discovery::DiscoverSpec>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Build and select over the currently eligible backends.
    pub fn new(
        name: &str,
        factory: Arc<dyn StrategyFactory>,
        backends: Vec<UpstreamBackend>,
        conn: Connection,
        retry: RetryPolicy,
        health: Option<HealthSpec>,
        admission: super::admission::Admission,
    ) -> Self {
        let key = factory.key_source().cloned();
        let (selector, panic) = select(&backends, factory.as_ref(), &Steady, None);
        Upstream {
            ejected: 0,
            slow_start: None,
            panic_threshold: None,
            panic,
            sticky: None,
            affinity: None,
            discover: None,
            name: name.into(),
            label_id: crate::observe::labels::intern(name),
            factory,
            key,
            backends: backends.into_boxed_slice(),
            selector,
            conn: Arc::new(conn),
            retry: Arc::new(retry),
            health,
            admission: Arc::new(admission),
            send_proxy: None,
        }
    }

    /// Ramp members in with `slow_start`; balance over every primary below `panic_threshold`.
    pub fn with_ramps(
        mut self,
        slow_start: Option<SlowStart>,
        panic_threshold: Option<f64>,
    ) -> Self {
        self.slow_start = slow_start;
        self.panic_threshold = panic_threshold;
        let (selector, panic) = select(
            &self.backends,
            self.factory.as_ref(),
            &Steady,
            panic_threshold,
        );
        self.selector = selector;
        self.panic = panic;
        self
    }

    /// Keep clients on a backend with a gateway-issued cookie, or by a remembered key.
    pub fn with_sessions(
        mut self,
        sticky: Option<Sticky>,
        affinity: Option<Arc<Affinity>>,
    ) -> Self {
        let addrs: Vec<SocketAddr> = self.backends.iter().map(|b| b.addr()).collect();
        self.sticky = sticky.map(|s| StickyTable::new(s, &self.name, &addrs));
        self.affinity = affinity;
        self
    }

    /// Find more members through DNS.
    pub fn with_discover(mut self, d: Option<Arc<crate::discovery::DiscoverSpec>>) -> Self {
        self.discover = d;
        self
    }

    /// Send this PROXY protocol header on new backend connections.
    pub fn with_send_proxy(mut self, v: Option<crate::config::tcp::ProxyVersion>) -> Self {
        self.send_proxy = v;
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.conn
            .peer
            .options
            .connection_timeout
            .unwrap_or(Duration::from_secs(5))
    }

    /// This upstream with `backends` as its members, selecting over those that are healthy,
    /// enabled and not ejected, with the ramps `rot` gives.
    pub fn with_backends(&self, backends: Vec<UpstreamBackend>, rot: &dyn Rotation) -> Self {
        let (selector, panic) = select(&backends, self.factory.as_ref(), rot, self.panic_threshold);
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
        let sticky = self
            .sticky
            .as_ref()
            .map(|t| t.for_members(&self.name, &addrs));
        Upstream {
            sticky,
            affinity: self.affinity.clone(),
            discover: self.discover.clone(),
            name: Arc::clone(&self.name),
            label_id: self.label_id,
            factory: Arc::clone(&self.factory),
            key: self.key.clone(),
            selector,
            panic,
            slow_start: self.slow_start,
            panic_threshold: self.panic_threshold,
            ejected: backends.iter().filter(|b| rot.ejected(b.addr())).count(),
            backends: backends.into_boxed_slice(),
            conn: Arc::clone(&self.conn),
            retry: Arc::clone(&self.retry),
            health: self.health.clone(),
            admission: Arc::clone(&self.admission),
            send_proxy: self.send_proxy,
        }
    }

    /// The same members, eligibility computed again.
    pub fn reselect(&self, rot: &dyn Rotation) -> Self {
        self.with_backends(self.backends.to_vec(), rot)
    }

    /// With `b` added; `None` when its address is already a member.
    pub fn with_added(&self, b: UpstreamBackend, rot: &dyn Rotation) -> Option<Self> {
        if self.contains(b.addr()) {
            return None;
        }
        let mut all = self.backends.to_vec();
        all.push(b);
        Some(self.with_backends(all, rot))
    }

    /// With the backend at `addr` removed; `None` when it is not a member.
    pub fn with_removed(&self, addr: SocketAddr, rot: &dyn Rotation) -> Option<Self> {
        if !self.contains(addr) {
            return None;
        }
        let rest = self
            .backends
            .iter()
            .filter(|b| b.addr() != addr)
            .cloned()
            .collect();
        Some(self.with_backends(rest, rot))
    }

    /// Which part of the request the strategy hashes, if any.
    #[inline]
    pub fn key_source(&self) -> Option<&KeySource> {
        self.key.as_ref()
    }

    /// Choose a backend that `accept` allows. Members that became unavailable since the
    /// selector was built are skipped too (in panic, only those drained since).
    #[inline]
    pub fn pick(
        &self,
        req: &PickRequest,
        accept: impl Fn(&BackendState) -> bool,
    ) -> Option<Arc<BackendState>> {
        self.selector
            .pick(req, |m| self.may_serve(&m.state) && accept(&m.state))
            .map(|m| Arc::clone(&m.state))
    }

    /// See [`Selector::probe_deadline`].
    #[inline]
    pub fn probe_deadline(&self, chosen: &BackendState, now: u64) -> Option<u64> {
        self.selector.probe_deadline(chosen, now)
    }

    /// The sticky cookie settings and tokens, when the upstream is sticky.
    #[inline]
    pub fn sticky(&self) -> Option<&StickyTable> {
        self.sticky.as_ref()
    }

    /// The affinity table, when the upstream remembers keys.
    #[inline]
    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_deref()
    }

    /// Member `addr`, if it is eligible, available and `accept` allows it: the target of a
    /// sticky cookie, taken without a strategy's pick.
    #[inline]
    pub fn pick_addr(
        &self,
        addr: SocketAddr,
        accept: impl Fn(&BackendState) -> bool,
    ) -> Option<Arc<BackendState>> {
        let m = self
            .selector
            .members()
            .iter()
            .find(|m| m.state.addr() == addr)?;
        (self.may_serve(&m.state) && accept(&m.state)).then(|| Arc::clone(&m.state))
    }

    /// Whether a member may still take a request: it may have become unavailable since the
    /// selector was built (in panic, only a drain counts).
    #[inline]
    fn may_serve(&self, s: &BackendState) -> bool {
        if self.panic {
            s.is_enabled()
        } else {
            s.is_available()
        }
    }

    /// Whether too few primaries are healthy and all of them serve (`panic_threshold`).
    pub fn in_panic(&self) -> bool {
        self.panic
    }

    /// The ramp of member `addr` (1 when it does not ramp or is not a member).
    pub fn ramp_of(&self, addr: SocketAddr) -> f32 {
        self.selector
            .members()
            .iter()
            .find(|m| m.state.addr() == addr)
            .map_or(1.0, |m| m.ramp)
    }

    /// The peer to connect to for `addr`.
    #[inline]
    pub fn peer_for(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = self.conn.peer.clone();
        peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(addr);
        peer
    }

    /// Whether upstream connections are reused.
    pub fn keepalive(&self) -> bool {
        self.conn.keepalive
    }

    /// Number of configured backends (primary and backup).
    #[inline]
    pub fn size(&self) -> usize {
        self.backends.len()
    }

    /// The configured backends (primary and backup).
    pub fn backends(&self) -> &[UpstreamBackend] {
        &self.backends
    }

    /// Whether `addr` is one of this upstream's backends.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.backends.iter().any(|b| b.addr() == addr)
    }

    /// The members the selector balances over.
    pub fn eligible(&self) -> Vec<SocketAddr> {
        self.selector
            .members()
            .iter()
            .map(|m| m.state.addr())
            .collect()
    }

    /// State of one backend address from `store` as a member of this upstream.
    pub fn backend_from(
        store: &StateStore,
        addr: SocketAddr,
        weight: u32,
        backup: bool,
    ) -> UpstreamBackend {
        let backend = Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
            weight: weight as usize,
            ext: Default::default(),
        };
        UpstreamBackend {
            state: store.get_or_create(addr),
            backend,
            backup,
            metadata: Arc::default(),
            origin: BackendOrigin::File,
        }
    }

    /// Why no backend may serve, for the 503 (computed only when it is needed).
    pub fn why_none(&self) -> String {
        if self.backends.is_empty() {
            return format!("upstream {} has no backends", self.name);
        }
        let count = |f: &dyn Fn(&BackendState) -> bool| {
            self.backends.iter().filter(|b| f(&b.state)).count()
        };
        format!(
            "no backend of upstream {} may serve ({} configured: {} unhealthy, {} draining, {} ejected by an open circuit)",
            self.name,
            self.backends.len(),
            count(&|s| !s.is_healthy()),
            count(&|s| !s.is_enabled()),
            self.ejected,
        )
    }

    /// The strategy's registered name.
    pub fn strategy(&self) -> &'static str {
        self.factory.name()
    }
}

/// Who may serve is decided here, before any pick: healthy, enabled and not ejected
/// primaries; while none is, the backups that are. Below the panic threshold (a share of the
/// enabled primaries), every enabled primary, healthy or not. Returns the selector and whether
/// it is in panic.
fn select(
    backends: &[UpstreamBackend],
    factory: &dyn StrategyFactory,
    rot: &dyn Rotation,
    panic_threshold: Option<f64>,
) -> (Selector, bool) {
    let serving = |b: &&UpstreamBackend| b.state.is_available() && !rot.ejected(b.addr());
    let members = |it: &mut dyn Iterator<Item = &UpstreamBackend>| -> Vec<Member> {
        it.map(|b| Member {
            backend: b.backend.clone(),
            state: Arc::clone(&b.state),
            weight: u32::try_from(b.backend.weight).unwrap_or(1),
            ramp: rot.ramp(b.addr()),
        })
        .collect()
    };
    let primaries = || {
        backends
            .iter()
            .filter(|b| !b.backup && b.state.is_enabled())
    };
    let healthy = primaries().filter(serving).count();
    let backups = || backends.iter().filter(|b| b.backup).filter(serving);
    let chosen = if healthy == 0 && backups().next().is_some() {
        (members(&mut backups()), false)
    } else if in_panic(panic_threshold, healthy, primaries().count()) {
        (members(&mut primaries()), true)
    } else {
        (members(&mut primaries().filter(serving)), false)
    };
    (Selector::new(chosen.0, factory), chosen.1)
}
