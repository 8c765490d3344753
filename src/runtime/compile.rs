//! Config → [`Snapshot`]: every semantic check, with errors by key path.
//!
//! Nothing here starts a service or binds a socket, so `portcullis -t` runs exactly this.

pub use super::address::{parse_listen_addr, resolve_backend_addr};
use super::retry::RetryPolicy;
use super::router::{Matcher, Route, Router};
use super::snapshot::{Compiled, ListenerSpec, Snapshot};
use super::upstream::{Connection, Upstream, UpstreamTls};
use crate::balance::{StateStore, StrategyRegistry};
use crate::config::model::{AccessLogConfig, Config, Protocol, UpstreamConfig};
use crate::config::PathError;
use crate::filters::chain::{build_filters, FilterChain};
use crate::health::HealthSpec;
use crate::observe::{AccessLog, Metrics};
use crate::tls::CertStore;
use portcullis_plugin::build::{PersistentStore, SharedMetrics};
use portcullis_plugin::{BuildContext, Ejector, FilterRegistry, Scope};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub use super::retry::MAX_RETRIES;
/// Largest backend weight.
pub use crate::config::upstream::MAX_WEIGHT;

/// What compiled objects are attached to.
pub struct CompileContext<'a> {
    /// Live backend state.
    pub store: &'a StateStore,
    /// Metric handles for routes.
    pub metrics: &'a Metrics,
    /// Generation number of the result.
    pub generation: u64,
    /// Filter factories by name.
    pub filters: &'a FilterRegistry,
    /// Where filters register their metrics.
    pub plugin_metrics: &'a SharedMetrics,
    /// Filter state that survives reloads.
    pub persistent: &'a PersistentStore,
    /// Where filters report backends to take out of rotation (the control plane).
    pub ejector: &'a Arc<dyn Ejector>,
    /// Strategy factories by name.
    pub strategies: &'a StrategyRegistry,
}

/// Check `cfg` and build the runtime snapshot; on failure, every problem found.
pub fn compile(cfg: &Config, cx: &CompileContext<'_>) -> Result<Snapshot, Vec<PathError>> {
    let mut errors = Vec::new();

    let (listeners, certificates) = compile_listeners(cfg, &mut errors);

    let mut upstreams = Vec::new();
    let mut upstream_names = HashSet::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        if !upstream_names.insert(u.name.as_str()) {
            errors.push(PathError::at(
                format!("{path}.name"),
                format!("duplicate upstream name `{}`", u.name),
            ));
        }
        match compile_upstream(u, cx) {
            Ok(up) => upstreams.push(Arc::new(up)),
            Err(errs) => errors.extend(errs.into_iter().map(|e| e.under(&path))),
        }
    }

    let upstream_names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    let build_cx = |scope| {
        BuildContext::new(
            scope,
            &upstream_names,
            cx.plugin_metrics,
            cx.persistent,
            cx.generation,
        )
        .with_ejector(Arc::clone(cx.ejector))
    };
    let global = build_filters(
        &cfg.filters,
        "filters",
        cx.filters,
        &build_cx(Scope::Global),
    )
    .map_err(|errs| errors.extend(errs))
    .unwrap_or_default();

    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.is_empty() {
            errors.push(PathError::at(format!("{path}.name"), "must not be empty"));
        }
        if !route_names.insert(r.name.as_str()) {
            errors.push(PathError::at(
                format!("{path}.name"),
                format!("duplicate route name `{}`", r.name),
            ));
        }
        let upstream = cfg.upstreams.iter().position(|u| u.name == r.upstream);
        if upstream.is_none() {
            let known: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
            errors.push(PathError::at(
                format!("{path}.upstream"),
                format!(
                    "unknown upstream `{}` (defined: {})",
                    r.upstream,
                    list_or_none(&known)
                ),
            ));
        }
        let matcher = Matcher::compile(&r.matcher).map_err(|errs| {
            errors.extend(errs.into_iter().map(|e| e.under(&format!("{path}.match"))));
        });
        let own = build_filters(
            &r.filters,
            &format!("{path}.filters"),
            cx.filters,
            &build_cx(Scope::Route(&r.name)),
        )
        .map_err(|errs| errors.extend(errs));
        let mirror = r.mirror.as_ref().map(|c| {
            super::mirror::compile(&r.name, c, cfg, &build_cx(Scope::Route(&r.name)))
                .map_err(|e| errors.extend(e.into_iter().map(|e| e.under(&path))))
        });
        let compression = r.compression.as_ref().and_then(|c| {
            super::compression::Compression::compile(c)
                .map_err(|e| errors.extend(e.into_iter().map(|e| e.under(&path))))
                .ok()
        });
        if let (Some(up), Ok(m), Ok(own)) = (upstream, matcher, own) {
            let chain = FilterChain::new(global.iter().cloned().chain(own).collect());
            let mut route =
                Route::new(&r.name, up, m, cx.metrics.route_bytes(&r.name)).with_filters(chain);
            route.mirror = mirror.and_then(Result::ok);
            route.compression = compression.map(Arc::new);
            routes.push(route);
        }
    }

    let mut listeners = listeners;
    compile_tcp_listeners(cfg, &mut listeners, cx, &mut errors);
    super::tcp::check_proxy_sending(cfg, &mut errors);

    let metrics_addr = cfg.metrics.as_ref().and_then(|m| {
        parse_listen_addr(&m.address)
            .map_err(|e| errors.push(PathError::at("metrics.address", e)))
            .ok()
    });

    let admin = cfg.admin.as_ref().and_then(|a| {
        super::snapshot::AdminSpec::compile(a)
            .map_err(|e| errors.push(e))
            .ok()
    });

    let access_log = match &cfg.access_log {
        AccessLogConfig::Off => Some(AccessLog::off()),
        AccessLogConfig::Stdout => Some(AccessLog::stdout()),
        AccessLogConfig::File(p) => AccessLog::file(Path::new(p))
            .map_err(|e| {
                errors.push(PathError::at(
                    "access_log.file",
                    format!("cannot open `{p}`: {e}"),
                ))
            })
            .ok(),
    };

    let otlp = cfg
        .tracing
        .as_ref()
        .and_then(|t| t.otlp.as_ref())
        .and_then(|o| {
            crate::observe::otlp::shared(o, &build_cx(Scope::Global))
                .map_err(|(key, msg)| {
                    errors.push(PathError::at(format!("tracing.otlp.{key}"), msg))
                })
                .ok()
        });

    if !errors.is_empty() {
        return Err(errors);
    }
    let upstream_index = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (Arc::clone(&u.name), i))
        .collect();
    let compiled = Compiled {
        upstream_index,
        certificates,
        generation: cx.generation,
        router: Router::new(routes),
        access_log: Arc::new(access_log.unwrap_or_else(AccessLog::off)),
        otlp,
        listeners,
        metrics_addr,
        admin,
        server: cfg.server.clone(),
    };
    Ok(Snapshot::new(compiled, upstreams))
}

/// Attach upstream, limits and filters to every `tcp` listener.
fn compile_tcp_listeners(
    cfg: &Config,
    listeners: &mut [ListenerSpec],
    cx: &CompileContext<'_>,
    errors: &mut Vec<PathError>,
) {
    let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    for (i, l) in cfg.listeners.iter().enumerate() {
        if l.protocol != Protocol::Tcp {
            continue;
        }
        // The scope names the listener: a breaker's state is per listener, as per route.
        let scope = format!("listener:{}", l.name);
        let build = BuildContext::new(
            Scope::Route(&scope),
            &names,
            cx.plugin_metrics,
            cx.persistent,
            cx.generation,
        )
        .with_ejector(Arc::clone(cx.ejector));
        match super::tcp::compile_tcp(l, &names, cx.filters, &build) {
            Ok(spec) => {
                if let Some(out) = listeners.iter_mut().find(|o| o.name == l.name) {
                    out.tcp = Some(Arc::new(spec));
                }
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|e| e.under(&format!("listeners[{i}]"))),
            ),
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

type Certificates = HashMap<String, Arc<CertStore>>;

fn compile_listeners(
    cfg: &Config,
    errors: &mut Vec<PathError>,
) -> (Vec<ListenerSpec>, Certificates) {
    let mut certificates = HashMap::new();
    if cfg.listeners.is_empty() {
        errors.push(PathError::at(
            "listeners",
            "at least one listener is required",
        ));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if l.name.is_empty() {
            errors.push(PathError::at(format!("{path}.name"), "must not be empty"));
        }
        if !names.insert(l.name.as_str()) {
            errors.push(PathError::at(
                format!("{path}.name"),
                format!("duplicate listener name `{}`", l.name),
            ));
        }
        match (l.protocol, &l.tls) {
            (Protocol::Https, Some(tls)) => match CertStore::load(&tls.certificates) {
                Ok(store) => {
                    certificates.insert(l.name.clone(), Arc::new(store));
                }
                Err(errs) => errors.extend(
                    errs.into_iter()
                        .map(|e| e.under(&format!("{path}.tls.certificates"))),
                ),
            },
            (Protocol::Https, None) => errors.push(PathError::at(
                format!("{path}.tls"),
                "an https listener needs `tls: { certificates: [{ cert, key }] }`",
            )),
            (Protocol::Http, Some(_)) => errors.push(PathError::at(
                format!("{path}.tls"),
                "only allowed with `protocol: https`",
            )),
            (Protocol::Http | Protocol::Tcp, None) => {}
            (Protocol::Tcp, Some(_)) => errors.push(PathError::at(
                format!("{path}.tls"),
                "a tcp listener passes TLS through untouched; remove `tls`",
            )),
        }
        for key in super::tcp::tcp_only_keys(l) {
            errors.push(PathError::at(
                format!("{path}.{key}"),
                "only allowed with `protocol: tcp`",
            ));
        }
        let proxy = l.proxy_protocol.as_ref().and_then(|p| {
            super::tcp::compile_proxy_accept(p)
                .map_err(|e| errors.push(e.under(&format!("{path}.proxy_protocol"))))
                .ok()
                .flatten()
                .map(Arc::new)
        });
        let policy = super::listener::compile_policy(l).unwrap_or_else(|errs| {
            errors.extend(errs.into_iter().map(|e| e.under(&path)));
            Default::default()
        });
        match parse_listen_addr(&l.address) {
            Ok(addr) => {
                if !addrs.insert(addr) {
                    errors.push(PathError::at(
                        format!("{path}.address"),
                        format!("address {addr} is used by another listener"),
                    ));
                }
                out.push(ListenerSpec {
                    name: l.name.clone(),
                    addr,
                    protocol: l.protocol,
                    http2: l.http2.unwrap_or(l.protocol == Protocol::Https),
                    policy: Arc::new(policy),
                    tcp: None,
                    proxy,
                    buffers: (l.buffers.read_for(l.protocol), l.buffers.write),
                });
            }
            Err(e) => errors.push(PathError::at(format!("{path}.address"), e)),
        }
    }
    (out, certificates)
}

fn compile_upstream(
    u: &UpstreamConfig,
    cx: &CompileContext<'_>,
) -> Result<Upstream, Vec<PathError>> {
    let (store, strategies) = (cx.store, cx.strategies);
    let mut errors = Vec::new();
    if u.name.is_empty() {
        errors.push(PathError::at("name", "must not be empty"));
    }
    if u.backends.is_empty() && u.discover.is_none() {
        errors.push(PathError::at(
            "backends",
            "at least one backend is required (or `discover` to find them)",
        ));
    } else if !u.backends.is_empty() && u.backends.iter().all(|b| b.backup) {
        errors.push(PathError::at(
            "backends",
            "at least one backend must not be a backup",
        ));
    }
    let mut seen = HashSet::new();
    let mut backends = Vec::new();
    for (i, b) in u.backends.iter().enumerate() {
        let path = format!("backends[{i}]");
        if !(1..=MAX_WEIGHT).contains(&b.weight) {
            errors.push(PathError::at(
                format!("{path}.weight"),
                format!("weight must be between 1 and {MAX_WEIGHT}, got {} (remove a backend instead of weighting it 0)", b.weight),
            ));
        }
        match resolve_backend_addr(&b.address) {
            Ok(addr) => {
                if !seen.insert(addr) {
                    errors.push(PathError::at(
                        format!("{path}.address"),
                        format!("duplicate backend {addr} in this upstream"),
                    ));
                }
                backends.push(Upstream::backend_from(
                    store,
                    addr,
                    b.weight.clamp(1, MAX_WEIGHT),
                    b.backup,
                ));
            }
            Err(e) => errors.push(PathError::at(format!("{path}.address"), e)),
        }
    }
    let factory = strategies
        .build(&u.strategy.kind, &u.strategy.params)
        .map_err(|e| errors.push(e.under("strategy")))
        .ok();
    let tls = u.tls.as_ref().and_then(|t| {
        UpstreamTls::compile(t)
            .map_err(|e| errors.push(e.under("tls")))
            .ok()
    });
    if !matches!(u.http_version, 1 | 2) {
        errors.push(PathError::at(
            "http_version",
            format!("must be 1 or 2, got {}", u.http_version),
        ));
    }
    let health = match &u.health_check {
        None => None,
        Some(h) => HealthSpec::compile(h)
            .map_err(|errs| errors.extend(errs.into_iter().map(|e| e.under("health_check"))))
            .ok()
            .map(|mut spec| {
                spec.tls = tls.clone();
                spec
            }),
    };
    let t = &u.timeouts;
    for (key, d) in [
        ("connect", Some(t.connect)),
        ("read", Some(t.read)),
        ("write", t.write),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            errors.push(PathError::at(
                format!("timeouts.{key}"),
                "must be greater than 0",
            ));
        }
    }
    let retry = RetryPolicy::compile(&u.retry)
        .map_err(|errs| errors.extend(errs.into_iter().map(|e| e.under("retry"))))
        .ok();
    let admission = super::admission::Admission::compile(u, cx.metrics, &mut errors);
    let (slow_start, panic_threshold) = super::ramp::compile(u, &mut errors);
    let bc = BuildContext::new(
        Scope::Global,
        &[],
        cx.plugin_metrics,
        cx.persistent,
        cx.generation,
    );
    let affinity = u.affinity.as_ref().and_then(|c| {
        super::affinity::build(&u.name, c, &bc)
            .map_err(|e| errors.extend(e))
            .ok()
    });
    let sticky = u.sticky.as_ref().and_then(|c| {
        super::sticky::Sticky::compile(c)
            .map_err(|e| errors.extend(e))
            .ok()
    });
    let discover = u.discover.as_ref().and_then(|d| {
        crate::discovery::DiscoverSpec::compile(d)
            .map_err(|e| errors.extend(e.into_iter().map(|e| e.under("discover"))))
            .ok()
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(factory), Some(retry)) = (factory, retry) else {
        return Err(errors);
    };
    let conn = Connection::new(
        t.connect.0,
        t.read.0,
        t.write.map(|d| d.0),
        t.idle.0,
        u.keepalive.enabled,
    )
    .with_tls(tls.as_ref())
    .with_http2(u.http_version == 2);
    Ok(
        Upstream::new(&u.name, factory, backends, conn, retry, health, admission)
            .with_send_proxy(u.send_proxy_protocol)
            .with_ramps(slow_start, panic_threshold)
            .with_sessions(sticky, affinity)
            .with_discover(discover.map(Arc::new)),
    )
}
