//! One immutable, validated config. Requests hold the snapshot they started with; a reload
//! builds a new one and swaps it in.

use super::address::parse_listen_addr;
use super::router::Router;
use super::upstream::Upstream;
use crate::config::model::{Protocol, ServerSection};
use crate::config::PathError;
use crate::health::HealthTarget;
use crate::observe::AccessLog;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A listener as configured. Two specs are equal when their sockets are (name, address,
/// protocol, HTTP/2): the client policy can change with a reload.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Name.
    pub name: String,
    /// Bind address.
    pub addr: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// HTTP/2 to clients (ALPN for https, h2c for http).
    pub http2: bool,
    /// Path normalisation, client deadlines and limits, forwarded headers.
    pub policy: Arc<super::listener::ClientPolicy>,
    /// For `tcp` listeners: upstream, limits, timeouts and filters.
    pub tcp: Option<Arc<super::tcp::TcpSpec>>,
    /// Who may send a PROXY protocol header (`None`: nobody, none is read).
    pub proxy: Option<Arc<super::tcp::ProxyAccept>>,
    /// Each client connection's L4 read and write buffer sizes.
    pub buffers: (usize, usize),
}

impl PartialEq for ListenerSpec {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.addr == o.addr
            && self.protocol == o.protocol
            && self.http2 == o.http2
            && self.buffers == o.buffers
    }
}

impl Eq for ListenerSpec {}

/// The admin API as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSpec {
    /// Bind address.
    pub addr: SocketAddr,
    /// Token for mutating calls (none: mutations are refused).
    pub token: Option<String>,
    /// Where the registry keeps its registrations across restarts and upgrades.
    pub state_file: Option<std::path::PathBuf>,
}

impl AdminSpec {
    /// Check and compile `admin:`.
    pub fn compile(a: &crate::config::model::AdminConfig) -> Result<AdminSpec, PathError> {
        let addr = parse_listen_addr(&a.address).map_err(|e| PathError::at("admin.address", e))?;
        let token = match (&a.token, &a.token_env) {
            (Some(_), Some(_)) => {
                return Err(PathError::at(
                    "admin",
                    "set `token` or `token_env`, not both",
                ))
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    return Err(PathError::at(
                        "admin.token_env",
                        format!("environment variable `{var}` is not set or empty"),
                    ))
                }
            },
            (None, None) => None,
        };
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(PathError::at(
                "admin.token",
                "use a token of at least 16 characters",
            ));
        }
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(PathError::at(
                "admin.address",
                format!("refusing an admin listener on non-loopback {addr} without a token (set admin.token or admin.token_env)"),
            ));
        }
        Ok(AdminSpec {
            addr,
            token,
            state_file: a.state_file.as_ref().map(std::path::PathBuf::from),
        })
    }
}

impl std::fmt::Debug for AdminSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSpec")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Everything a config file compiles to except the upstreams' member lists: routes,
/// filters, listeners, certificates. Shared by every snapshot of one config generation.
#[derive(Debug)]
pub struct Compiled {
    /// 1 for the config read at start, +1 per successful reload.
    pub generation: u64,
    /// Routes.
    pub router: Router,
    /// Access-log sink.
    pub access_log: Arc<AccessLog>,
    /// OTLP span export (`tracing.otlp`), kept across reloads while its config is the same.
    pub otlp: Option<Arc<crate::observe::otlp::Otlp>>,
    /// Listeners (bound at start; changing them needs a graceful upgrade).
    pub listeners: Vec<ListenerSpec>,
    /// Metrics listener address.
    pub metrics_addr: Option<SocketAddr>,
    /// Admin API listener.
    pub admin: Option<AdminSpec>,
    /// Pingora process settings.
    pub server: ServerSection,
    /// Upstream name → index.
    pub upstream_index: HashMap<Arc<str>, usize>,
    /// Certificates of each HTTPS listener, by listener name (replaced by reloads).
    pub certificates: HashMap<String, Arc<crate::tls::CertStore>>,
}

impl Compiled {
    /// The client policy of listener number `index` (the defaults if there is none: a
    /// listener's index is stable across reloads, since listeners change only by upgrade).
    pub fn listener_policy(&self, index: usize) -> &super::listener::ClientPolicy {
        static DEFAULT: once_cell::sync::Lazy<super::listener::ClientPolicy> =
            once_cell::sync::Lazy::new(Default::default);
        self.listeners.get(index).map_or(&*DEFAULT, |l| &*l.policy)
    }

    /// Every filter instance of every route (the global ones appear once per route), for
    /// housekeeping.
    pub fn filters(&self) -> impl Iterator<Item = &crate::filters::chain::Entry> {
        let tcp = self.listeners.iter().filter_map(|l| l.tcp.as_ref());
        self.router
            .routes()
            .iter()
            .flat_map(|r| r.filters.all.iter())
            .chain(tcp.flat_map(|t| t.filters.all.iter()))
    }
}

/// What requests read: a compiled config and its upstreams' current member lists. Immutable:
/// the control plane publishes a new snapshot for every change (a reload, an admin call, a
/// health transition, an open or closed circuit), sharing the parts that did not change.
#[derive(Debug)]
pub struct Snapshot {
    compiled: Arc<Compiled>,
    /// Upstreams, indexed by [`super::Route::upstream`].
    pub upstreams: Box<[Arc<Upstream>]>,
}

impl std::ops::Deref for Snapshot {
    type Target = Compiled;
    #[inline]
    fn deref(&self) -> &Compiled {
        &self.compiled
    }
}

impl Snapshot {
    /// A snapshot of a freshly compiled config.
    pub fn new(compiled: Compiled, upstreams: Vec<Arc<Upstream>>) -> Self {
        Snapshot {
            compiled: Arc::new(compiled),
            upstreams: upstreams.into_boxed_slice(),
        }
    }

    /// The same config with other upstream member lists.
    pub fn with_upstreams(&self, upstreams: Vec<Arc<Upstream>>) -> Self {
        Snapshot {
            compiled: Arc::clone(&self.compiled),
            upstreams: upstreams.into_boxed_slice(),
        }
    }

    /// The compiled config, to adjust before the snapshot is first published; `None` once it
    /// is shared.
    pub fn compiled_mut(&mut self) -> Option<&mut Compiled> {
        Arc::get_mut(&mut self.compiled)
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstream_index.get(name).map(|&i| &self.upstreams[i])
    }

    /// Every backend with an active health check, in config order.
    pub fn health_targets(&self) -> Vec<HealthTarget> {
        let mut out = Vec::new();
        for up in self.upstreams.iter() {
            let Some(spec) = &up.health else { continue };
            for b in up.backends() {
                out.push(HealthTarget {
                    addr: b.addr(),
                    spec: spec.clone(),
                    state: Arc::clone(&b.state),
                    upstream: Arc::clone(&up.name),
                });
            }
        }
        out
    }
}
