//! The configuration file as written by the operator (serde types, `deny_unknown_fields`).
//!
//! These types are only the *shape* of the file. [`super::validate`] checks meaning (references,
//! duplicates, ranges) and [`crate::runtime::compile`] turns a valid file into the immutable
//! runtime snapshot. Defaults are documented on each field and in `docs/configuration.md`.

use super::duration::Dur;
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pingora's process settings (threads, pid file, upgrade socket, grace periods...).
    #[serde(default)]
    pub server: ServerSection,
    /// Sockets to accept client traffic on. At least one.
    pub listeners: Vec<ListenerConfig>,
    /// Filters run on every route, before the route's own.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// Request routing rules. See [`RouteConfig`] for how the winner is chosen.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named groups of backends.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Prometheus endpoint; absent = no metrics listener.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Where JSON access-log lines go. Default: `stdout`.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The admin API; absent = none.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Span export (OTLP); absent = none. Trace context is propagated either way.
    #[serde(default)]
    pub tracing: Option<super::tracing::TracingConfig>,
}

/// The admin API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port`. Default: `127.0.0.1:9901`. A non-loopback address requires a token.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Bearer token required by every mutating call.
    #[serde(default)]
    pub token: Option<String>,
    /// Read the token from this environment variable instead (e.g. `PORTCULLIS_ADMIN_TOKEN`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Keep the registry's registrations in this file, so that they survive restarts and
    /// graceful upgrades. Default: none (registrations live as long as the process).
    #[serde(default)]
    pub state_file: Option<String>,
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}

/// Pingora server settings, under `server:`. Names match Pingora's own `ServerConf` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads per listener service. Default: number of CPUs.
    pub threads: Option<usize>,
    /// Let idle worker threads steal tasks from busy ones. Default: false: each worker thread
    /// runs its own event loop, like nginx workers (measured ~12% less CPU per request than
    /// work stealing with one thread; see docs/performance.md). Turn on for very uneven
    /// per-connection load.
    pub work_stealing: bool,
    /// Pid file (absolute path). Default: `/tmp/portcullis.pid`.
    pub pid_file: String,
    /// Socket that old and new processes use to hand over listeners during a graceful upgrade
    /// (absolute path). Default: `/tmp/portcullis-upgrade.sock`.
    pub upgrade_sock: String,
    /// Error log file when running as a daemon (`-d`). Default: stderr.
    pub error_log: Option<String>,
    /// User to switch to after daemonizing.
    pub user: Option<String>,
    /// Group to switch to after daemonizing.
    pub group: Option<String>,
    /// Seconds to keep serving in-flight requests after SIGTERM / an upgrade before the final
    /// shutdown step. Default: 20 (fits inside Kubernetes' 30 s termination grace).
    pub grace_period_seconds: u64,
    /// Seconds the final shutdown step may take. Default: 5.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Size of the process-wide upstream keep-alive connection pool. Default: 128.
    pub upstream_keepalive_pool_size: usize,
    /// Accept tasks per listening socket. Default: 1.
    pub listener_tasks_per_fd: usize,
    /// CA bundle for upstream TLS verification. Default: the system store.
    pub ca_file: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: None,
            work_stealing: false,
            pid_file: "/tmp/portcullis.pid".into(),
            upgrade_sock: "/tmp/portcullis-upgrade.sock".into(),
            error_log: None,
            user: None,
            group: None,
            grace_period_seconds: 20,
            graceful_shutdown_timeout_seconds: 5,
            upstream_keepalive_pool_size: 128,
            listener_tasks_per_fd: 1,
            ca_file: None,
        }
    }
}

pub use super::listener::{CertConfig, ListenerConfig, ListenerTlsConfig, Protocol};

/// A routing rule: conditions on the request, and the upstream it goes to.
///
/// **How the winner is chosen:** the most specific matching route wins; ties go to the route
/// listed first. Specificity compares, in order: exact host > wildcard host (longer suffix
/// first) > any host; exact path > longer prefix > shorter prefix > any path; then the number
/// of method and header conditions. A request no route matches gets `404`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name (used in logs and metrics).
    pub name: String,
    /// Conditions; all must hold. Absent = matches every request.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Name of the upstream this route sends to.
    pub upstream: String,
    /// The route's filters, in order (after the global ones).
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// Send a copy of some requests to another upstream and discard its answers.
    #[serde(default)]
    pub mirror: Option<super::mirror::MirrorConfig>,
    /// Compress responses for clients that accept gzip, brotli or zstd.
    #[serde(default)]
    pub compression: Option<super::compression::CompressionConfig>,
}

/// A filter in a chain: `{ kind: <registered name>, ...its config }`.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// Registered filter name.
    pub kind: String,
    /// The other keys of the entry: the filter's own config.
    pub config: serde_yaml::Value,
}

impl<'de> Deserialize<'de> for FilterSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        let (kind, config) = split_tagged(value, "kind").map_err(serde::de::Error::custom)?;
        Ok(FilterSpec { kind, config })
    }
}

/// The conditions of a route. Every present condition must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names: `api.example.com` (exact) or `*.example.com` (any subdomain). Any one may
    /// match. Compared case-insensitively, without the port.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path condition: `{ exact: /healthz }` or `{ prefix: /api/ }`.
    #[serde(default)]
    pub path: Option<PathMatchConfig>,
    /// Allowed methods, e.g. `[GET, HEAD]`. Empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// Exactly one of `exact` or `prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatchConfig {
    /// The path must equal this.
    pub exact: Option<String>,
    /// The path must start with this.
    pub prefix: Option<String>,
    /// Compare `prefix` ignoring ASCII case (`/ADMIN` matches `/admin`). Default: false.
    #[serde(default)]
    pub ignore_case: bool,
}

/// A header condition: `name` plus exactly one of `present`, `exact`, `regex`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (case-insensitive).
    pub name: String,
    /// `true`: the header must be present; `false`: it must be absent.
    pub present: Option<bool>,
    /// The header value must equal this.
    pub exact: Option<String>,
    /// The header value must match this regular expression (unanchored; use `^...$`).
    pub regex: Option<String>,
}

pub use super::upstream::{BackendConfig, UpstreamConfig, UpstreamTlsConfig};

/// A strategy name plus its parameters: `round_robin`, or `{ kind: consistent_hash, key: ... }`.
#[derive(Debug, Clone)]
pub struct StrategySpec {
    /// Registered strategy name.
    pub kind: String,
    /// The remaining keys of the map (an empty map for the plain-name form).
    pub params: serde_yaml::Value,
}

impl Default for StrategySpec {
    fn default() -> Self {
        StrategySpec {
            kind: "round_robin".into(),
            params: serde_yaml::Value::Mapping(Default::default()),
        }
    }
}

impl<'de> Deserialize<'de> for StrategySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        let (kind, params) = split_tagged(value, "kind").map_err(serde::de::Error::custom)?;
        Ok(StrategySpec { kind, params })
    }
}

/// Split `name` or `{ <tag>: name, ...rest }` into the name and the rest (as a mapping).
pub fn split_tagged(
    value: serde_yaml::Value,
    tag: &str,
) -> Result<(String, serde_yaml::Value), String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Ok((s, Value::Mapping(Default::default()))),
        Value::Mapping(mut m) => match m.remove(tag) {
            Some(Value::String(s)) => Ok((s, Value::Mapping(m))),
            Some(_) => Err(format!("`{tag}` must be a string")),
            None => Err(format!(
                "missing `{tag}`: expected a name or a map with `{tag}: <name>`"
            )),
        },
        _ => Err(format!("expected a name or a map with `{tag}: <name>`")),
    }
}

pub use super::health::{HealthCheckConfig, HealthKind};

/// Upstream timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP connect. Default: `2s`.
    pub connect: Dur,
    /// Waiting for each read from the backend (including the response header). Default: `60s`.
    pub read: Dur,
    /// Waiting for each write to the backend. Default: none (the read timeout still bounds a
    /// stalled exchange).
    pub write: Option<Dur>,
    /// How long a pooled keep-alive connection may sit unused before it is closed. Default: `60s`.
    pub idle: Dur,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: Dur::secs(2),
            read: Dur::secs(60),
            write: None,
            idle: Dur::secs(60),
        }
    }
}

/// Upstream connection reuse. The pool itself is process-wide in Pingora; its capacity is
/// `server.upstream_keepalive_pool_size`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    /// Reuse connections to this upstream. Default: true.
    pub enabled: bool,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig { enabled: true }
    }
}

/// Retry policy of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Extra attempts after the first, each on a different backend. A request whose connection
    /// failed was never sent and may be retried whatever its method; after a timeout only
    /// idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are. Default: 2.
    pub attempts: u32,
    /// Wait before each retry: a random time in `[0, min(max, base * 2^n))` ("full jitter").
    /// Default: `{ base: 25ms, max: 250ms }`; `off` retries at once.
    #[serde(deserialize_with = "or_off")]
    pub backoff: Option<BackoffConfig>,
    /// Cap retries to `ratio` of requests plus `min_per_second` per second over `window`, so
    /// retries cannot multiply load in an outage. Default: `{ ratio: 0.2, min_per_second: 10,
    /// window: 10s }`; `off` removes the cap.
    #[serde(deserialize_with = "or_off")]
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            backoff: Some(BackoffConfig::default()),
            budget: Some(BudgetConfig::default()),
        }
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Base delay. Default `25ms` (Envoy's).
    pub base: Dur,
    /// Largest delay. Default `250ms`.
    pub max: Dur,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Dur::millis(25),
            max: Dur::millis(250),
        }
    }
}

/// A retry budget (Linkerd / Finagle).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Retries allowed as a share of requests. Default `0.2`.
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic. Default `10`.
    pub min_per_second: u32,
    /// The accounting window (1s to 60s). Default `10s`.
    pub window: Dur,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            window: Dur::secs(10),
        }
    }
}

/// `off` (or `false`) for `None`, else the section.
fn or_off<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_yaml::Value::deserialize(d)?;
    match &value {
        serde_yaml::Value::String(s) if s == "off" => Ok(None),
        serde_yaml::Value::Bool(false) => Ok(None),
        _ => serde_yaml::from_value(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` of the metrics listener; it serves `GET /metrics`.
    pub address: String,
}

/// Where access-log lines go: `off`, `stdout`, or `{ file: /path/to/access.log }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogConfig {
    /// No access log.
    Off,
    /// One JSON line per request on standard output (default).
    #[default]
    Stdout,
    /// Append JSON lines to this file.
    File(String),
}

impl<'de> Deserialize<'de> for AccessLogConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileTarget {
            file: String,
        }
        let value = serde_yaml::Value::deserialize(d)?;
        let allowed = "expected `off`, `stdout` or `{ file: <path> }`";
        match &value {
            serde_yaml::Value::String(s) if s == "off" => Ok(AccessLogConfig::Off),
            serde_yaml::Value::String(s) if s == "stdout" => Ok(AccessLogConfig::Stdout),
            serde_yaml::Value::Bool(false) => Ok(AccessLogConfig::Off),
            serde_yaml::Value::Mapping(_) => serde_yaml::from_value::<FileTarget>(value)
                .map(|f| AccessLogConfig::File(f.file))
                .map_err(|e| serde::de::Error::custom(format!("{e}; {allowed}"))),
            _ => Err(serde::de::Error::custom(allowed)),
        }
    }
}
