//! A compiled upstream: its backends, strategy, connection settings and retry policy.
//!
//! The selector covers only *eligible* members: healthy and enabled primaries, or — while no
//! primary is eligible — healthy and enabled backups. It is rebuilt (through Pingora's
//! [`BackendSelection`](pingora::lb::selection::BackendSelection) contract) whenever health or
//! enablement changes, so strategies always balance over exactly the members that may serve.

use super::retry::RetryPolicy;
use crate::balance::{
    BackendState, KeySource, Member, PickRequest, Selector, StateStore, StrategyFactory,
};
use crate::health::HealthSpec;
use arc_swap::ArcSwap;
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a backend came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOrigin {
    /// The config file.
    File,
    /// The admin API (kept across file reloads, lost on restart).
    Admin,
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

/// TLS to an upstream's backends.
#[derive(Clone)]
pub struct UpstreamTls {
    /// SNI (and verified name).
    pub sni: String,
    /// Verify chain and name.
    pub verify: bool,
    /// Where the CA bundle came from (for comparisons).
    pub ca_file: Option<String>,
    /// CA bundle, when not the default store.
    pub ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        self.sni == o.sni && self.verify == o.verify && self.ca_file == o.ca_file
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Apply to a peer.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
        peer.sni = self.sni.clone();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
    }
}

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

/// A named group of backends.
pub struct Upstream {
    /// Name.
    pub name: Arc<str>,
    /// Interned name (metric label cache key).
    pub label_id: u32,
    factory: Arc<dyn StrategyFactory>,
    key: Option<KeySource>,
    backends: Mutex<Vec<UpstreamBackend>>,
    size: AtomicUsize,
    selector: ArcSwap<Selector>,
    conn: Connection,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Active health check, if configured.
    pub health: Option<HealthSpec>,
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
    ) -> Self {
        let key = factory.key_source().cloned();
        let selector = ArcSwap::from_pointee(Selector::empty(factory.as_ref()));
        let up = Upstream {
            name: name.into(),
            label_id: crate::observe::labels::intern(name),
            factory,
            key,
            size: AtomicUsize::new(backends.len()),
            backends: Mutex::new(backends),
            selector,
            conn,
            retry,
            health,
        };
        up.rebuild();
        up
    }

    /// Recompute the eligible members and swap in a new selector.
    pub fn rebuild(&self) {
        let backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        let eligible = |backup: bool| -> Vec<Member> {
            backends
                .iter()
                .filter(|b| b.backup == backup && b.state.is_available())
                .map(|b| Member {
                    backend: b.backend.clone(),
                    state: Arc::clone(&b.state),
                    weight: u32::try_from(b.backend.weight).unwrap_or(1),
                })
                .collect()
        };
        let mut members = eligible(false);
        if members.is_empty() {
            members = eligible(true);
        }
        self.selector
            .store(Arc::new(Selector::new(members, self.factory.as_ref())));
    }

    /// Which part of the request the strategy hashes, if any.
    #[inline]
    pub fn key_source(&self) -> Option<&KeySource> {
        self.key.as_ref()
    }

    /// Choose a backend that `accept` allows. Members that became unavailable since the last
    /// rebuild are skipped too.
    #[inline]
    pub fn pick(
        &self,
        req: &PickRequest,
        accept: impl Fn(&BackendState) -> bool,
    ) -> Option<Arc<BackendState>> {
        let selector = self.selector.load();
        selector
            .pick(req, |m| m.state.is_available() && accept(&m.state))
            .map(|m| Arc::clone(&m.state))
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
        self.size.load(Relaxed)
    }

    /// The configured backends (primary and backup).
    pub fn backends(&self) -> Vec<UpstreamBackend> {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `addr` is one of this upstream's backends.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|b| b.addr() == addr)
    }

    /// The members the selector currently balances over.
    pub fn eligible(&self) -> Vec<SocketAddr> {
        self.selector
            .load()
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

    /// Add a backend (no-op returning false when the address is already a member).
    pub fn add_backend(&self, b: UpstreamBackend) -> bool {
        {
            let mut backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
            if backends.iter().any(|x| x.addr() == b.addr()) {
                return false;
            }
            backends.push(b);
            self.size.store(backends.len(), Relaxed);
        }
        self.rebuild();
        true
    }

    /// Remove the backend at `addr`; false when it is not a member.
    pub fn remove_backend(&self, addr: SocketAddr) -> bool {
        {
            let mut backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
            let before = backends.len();
            backends.retain(|x| x.addr() != addr);
            if backends.len() == before {
                return false;
            }
            self.size.store(backends.len(), Relaxed);
        }
        self.rebuild();
        true
    }

    /// The strategy's registered name.
    pub fn strategy(&self) -> &'static str {
        self.factory.name()
    }
}
