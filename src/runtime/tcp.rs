//! The compiled form of a `protocol: tcp` listener and of PROXY protocol acceptance.

use crate::config::model::{Config, ListenerConfig, Protocol};
use crate::config::tcp::ProxyAcceptConfig;
use crate::config::PathError;
use crate::filters::chain::{build_filters, FilterChain};
use crate::request::forwarded::TrustedProxies;
use portcullis_plugin::{BuildContext, FilterRegistry, Hooks};
use std::net::IpAddr;
use std::time::Duration;

/// Most connect attempts a TCP listener may be configured with.
pub const MAX_CONNECT_ATTEMPTS: u32 = 10;

/// What a TCP listener does with a connection.
#[derive(Debug)]
pub struct TcpSpec {
    /// Index of its upstream in [`super::Snapshot::upstreams`].
    pub upstream: usize,
    /// Most client connections open at once.
    pub max_connections: u32,
    /// Close after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Close this long after opening.
    pub max_lifetime: Option<Duration>,
    /// Backends tried when connecting fails.
    pub connect_attempts: u32,
    /// `accept_backend` and `on_outcome` filters (a circuit breaker).
    pub filters: FilterChain,
}

/// Who may send a PROXY protocol header, and how long it may take.
#[derive(Debug, Clone)]
pub struct ProxyAccept {
    /// Peers allowed to send it.
    pub trusted: TrustedProxies,
    /// Time to receive the header.
    pub timeout: Duration,
}

impl ProxyAccept {
    /// Whether `peer` may send a header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer)
    }
}

/// Compile `proxy_protocol` (errors relative to it); `None` when it is off.
pub fn compile_proxy_accept(p: &ProxyAcceptConfig) -> Result<Option<ProxyAccept>, PathError> {
    if !p.accept {
        return Ok(None);
    }
    if p.trusted.is_empty() {
        return Err(PathError::at(
            "trusted",
            "list the load balancers allowed to send the header (CIDRs or addresses)",
        ));
    }
    let trusted = TrustedProxies::parse(&p.trusted)
        .map_err(|(i, e)| PathError::at(format!("trusted[{i}]"), e))?;
    if p.timeout.0.is_zero() || p.timeout.0 > Duration::from_secs(60) {
        return Err(PathError::at(
            "timeout",
            format!("must be between 1ms and 60s, got {:?}", p.timeout.0),
        ));
    }
    Ok(Some(ProxyAccept {
        trusted,
        timeout: p.timeout.0,
    }))
}

/// The keys only a `tcp` listener has, when set on another listener.
pub fn tcp_only_keys(l: &ListenerConfig) -> Vec<&'static str> {
    if l.protocol == Protocol::Tcp {
        return Vec::new();
    }
    let mut keys = Vec::new();
    if l.upstream.is_some() {
        keys.push("upstream");
    }
    if l.tcp.is_some() {
        keys.push("tcp");
    }
    if !l.filters.is_empty() {
        keys.push("filters");
    }
    keys
}

/// Compile the TCP part of listener `l` (errors relative to the listener). `upstreams` are the
/// configured upstream names, in order.
pub fn compile_tcp(
    l: &ListenerConfig,
    upstreams: &[&str],
    registry: &FilterRegistry,
    cx: &BuildContext<'_>,
) -> Result<TcpSpec, Vec<PathError>> {
    let mut errors = Vec::new();
    let upstream = match &l.upstream {
        None => {
            errors.push(PathError::at(
                "upstream",
                "a tcp listener needs `upstream: NAME`",
            ));
            None
        }
        Some(name) => {
            let found = upstreams.iter().position(|u| u == name);
            if found.is_none() {
                errors.push(PathError::at(
                    "upstream",
                    format!(
                        "unknown upstream `{name}` (defined: {})",
                        upstreams.join(", ")
                    ),
                ));
            }
            found
        }
    };
    let t = l.tcp.clone().unwrap_or_default();
    if !(1..=1_000_000).contains(&t.max_connections) {
        errors.push(PathError::at(
            "tcp.max_connections",
            format!("must be between 1 and 1000000, got {}", t.max_connections),
        ));
    }
    if !(1..=MAX_CONNECT_ATTEMPTS).contains(&t.connect_attempts) {
        errors.push(PathError::at(
            "tcp.connect_attempts",
            format!(
                "must be between 1 and {MAX_CONNECT_ATTEMPTS}, got {}",
                t.connect_attempts
            ),
        ));
    }
    for (key, d) in [
        ("idle_timeout", Some(t.idle_timeout)),
        ("max_lifetime", t.max_lifetime),
    ] {
        if d.is_some_and(|d| d.0.is_zero() || d.0 > Duration::from_secs(7 * 86_400)) {
            errors.push(PathError::at(
                format!("tcp.{key}"),
                "must be between 1ms and 7d",
            ));
        }
    }
    let filters = build_filters(&l.filters, "filters", registry, cx).unwrap_or_else(|errs| {
        errors.extend(errs);
        Vec::new()
    });
    let allowed = Hooks::ACCEPT_BACKEND | Hooks::OUTCOME;
    for (i, e) in filters.iter().enumerate() {
        let hooks = e.filter.hooks();
        if !allowed.contains(hooks) {
            errors.push(PathError::at(
                format!("filters[{i}].kind"),
                format!(
                    "filter `{}` implements {}, which a tcp listener cannot call (allowed: filters with only accept_backend and on_outcome, such as circuit_breaker)",
                    e.kind,
                    hooks.describe()
                ),
            ));
        }
    }
    match upstream {
        Some(upstream) if errors.is_empty() => Ok(TcpSpec {
            upstream,
            max_connections: t.max_connections,
            idle_timeout: t.idle_timeout.0,
            max_lifetime: t.max_lifetime.map(|d| d.0),
            connect_attempts: t.connect_attempts,
            filters: FilterChain::new(filters),
        }),
        _ => Err(errors),
    }
}

/// A PROXY header goes only to backends of TCP listeners: a pooled HTTP connection carries many
/// clients' requests, so one header per connection would name the wrong client.
pub fn check_proxy_sending(cfg: &Config, errors: &mut Vec<PathError>) {
    for (i, r) in cfg.routes.iter().enumerate() {
        let sends = cfg
            .upstreams
            .iter()
            .any(|u| u.name == r.upstream && u.send_proxy_protocol.is_some());
        if sends {
            errors.push(PathError::at(
                format!("routes[{i}].upstream"),
                format!(
                    "upstream `{}` sends a PROXY protocol header, which only TCP listeners do (pooled HTTP connections carry many clients; HTTP backends see the client in X-Forwarded-For or Forwarded): use another upstream for this route",
                    r.upstream
                ),
            ));
        }
    }
}
