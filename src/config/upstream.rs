//! An upstream's section: its backends, strategy, checks, connections, and how members ramp
//! in (`slow_start`) and what happens when most fail their checks (`panic_threshold`).

use super::duration::Dur;
use super::model::{HealthCheckConfig, KeepaliveConfig, RetryConfig, StrategySpec, TimeoutsConfig};
use serde::Deserialize;

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 1000;

/// A named group of backends and how to balance, check and reach them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, referenced by routes.
    pub name: String,
    /// The servers. At least one, unless `discover` finds them.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Find (more) backends through DNS.
    #[serde(default)]
    pub discover: Option<super::discover::DiscoverConfig>,
    /// Balancing strategy: a name (`round_robin`) or `{ kind: least_conn, ... }`.
    /// Default: `round_robin`.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Active health check. Absent = backends are always considered healthy.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Connect, read, write and idle timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Upstream connection reuse.
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// Retries to another backend on connect failure or timeout before any response byte.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Connect to the backends over TLS.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// `1` (default) or `2`: HTTP/2 to the backends (ALPN `h2` over TLS, or h2c with prior
    /// knowledge without TLS, which is what gRPC backends speak).
    #[serde(default = "default_http_version")]
    pub http_version: u8,
    /// Most requests (HTTP) or connections (TCP) one backend serves at once. Default: no cap.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Waiting room while every eligible backend is at `max_connections`.
    #[serde(default)]
    pub queue: super::tcp::QueueConfig,
    /// Send a PROXY protocol header (`v1` or `v2`) on every new backend connection
    /// (TCP listeners only).
    #[serde(default)]
    pub send_proxy_protocol: Option<super::tcp::ProxyVersion>,
    /// Ramp a backend that joins or comes back into rotation from a floor to its full share.
    #[serde(default)]
    pub slow_start: Option<SlowStartConfig>,
    /// Percent (0-100) of primaries that must be healthy; below it, balance over every enabled
    /// primary, healthy or not (Envoy's `healthy_panic_threshold`). Default: none (off).
    #[serde(default)]
    pub panic_threshold: Option<f64>,
    /// Keep a client on one backend with a gateway-issued cookie (HTTP listeners).
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
    /// Remember which backend served a key and send the key there again.
    #[serde(default)]
    pub affinity: Option<AffinityConfig>,
}

/// `affinity:` of an upstream: a table of key -> backend (the TAI design's affinity table,
/// HAProxy's stick table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityConfig {
    /// `client_ip`, `header:<name>`, `cookie:<name>` or `query:<name>`. Default: `client_ip`.
    #[serde(default = "default_affinity_key")]
    pub key: String,
    /// How long an unused entry lives (1s to 7 days). Default: 10m.
    #[serde(default = "default_affinity_ttl")]
    pub ttl: Dur,
    /// Most entries held (16 to 10,000,000); the least recently used go first. Default: 100000.
    #[serde(default = "default_affinity_entries")]
    pub max_entries: usize,
}

fn default_affinity_key() -> String {
    "client_ip".into()
}

fn default_affinity_ttl() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}

fn default_affinity_entries() -> usize {
    100_000
}

/// `sticky:` of an upstream: HAProxy's `cookie SRV insert`, nginx's `sticky cookie`.
///
/// The first answer sets cookie `cookie` naming the backend by a keyed hash (HMAC-SHA256 of
/// the upstream name and address, never the address); later requests carrying it go to that
/// backend while it is eligible.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Cookie name (letters, digits, `-`, `_`, `.`).
    pub cookie: String,
    /// `Max-Age`. Default: none (a browser-session cookie).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// `Path`. Default: `/`.
    #[serde(default = "default_cookie_path")]
    pub path: String,
    /// `Domain`. Default: none (the request's host).
    #[serde(default)]
    pub domain: Option<String>,
    /// `Secure`. Default: false.
    #[serde(default)]
    pub secure: bool,
    /// `HttpOnly`. Default: true.
    #[serde(default = "default_true")]
    pub http_only: bool,
    /// `SameSite`: `strict`, `lax` or `none` (`none` needs `secure`). Default: `lax`.
    #[serde(default = "default_same_site")]
    pub same_site: String,
    /// The HMAC key (at least 16 bytes). Gateways that share it, and restarts, keep clients on
    /// their backends. Default: a random key per process.
    #[serde(default)]
    pub secret: Option<String>,
    /// Read the key from this environment variable instead.
    #[serde(default)]
    pub secret_env: Option<String>,
}

fn default_cookie_path() -> String {
    "/".into()
}

fn default_true() -> bool {
    true
}

fn default_same_site() -> String {
    "lax".into()
}

/// `slow_start:` of an upstream (Envoy's `slow_start_config`, HAProxy's `slowstart`).
///
/// A backend that is added, comes back healthy, is enabled again or rejoins after an ejection
/// gets `max(min_weight_percent, (elapsed / window) ^ (1 / aggression))` of its share, until
/// `window` has passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfig {
    /// How long the ramp lasts (100ms to 1h).
    pub window: Dur,
    /// Shape of the ramp: 1.0 (default) is linear, above 1 rises faster early. 0.1 to 10.
    #[serde(default = "default_aggression")]
    pub aggression: f64,
    /// Share at the start of the ramp, in percent of the full share (1-100). Default: 10.
    #[serde(default = "default_min_weight_percent")]
    pub min_weight_percent: f64,
}

fn default_aggression() -> f64 {
    1.0
}

fn default_min_weight_percent() -> f64 {
    10.0
}

fn default_http_version() -> u8 {
    1
}

/// TLS to the backends of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent (SNI) and checked against the backends' certificates.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the backends' certificate chain and name. Default: true.
    #[serde(default = "yes")]
    pub verify: bool,
    /// CA bundle (PEM) to verify against. Default: `server.ca_file`, else the system store.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn yes() -> bool {
    true
}

/// One server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `ip:port` or `hostname:port` (resolved when the config is loaded).
    pub address: String,
    /// Relative share of traffic, 1 to 1000. Default: 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// A backup gets traffic only while no primary backend is healthy. Default: false.
    #[serde(default)]
    pub backup: bool,
}

fn default_weight() -> u32 {
    1
}
