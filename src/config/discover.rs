//! `discover:` of an upstream: backends found through DNS (A, AAAA or SRV records), beside or
//! instead of the static `backends`.

use super::duration::Dur;
use serde::Deserialize;

/// Where and how to look an upstream's backends up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverConfig {
    /// The name to resolve, e.g. `api.service.consul` or `_http._tcp.api.default.svc`.
    pub dns: String,
    /// `A` (default), `AAAA` or `SRV`.
    #[serde(default, rename = "type")]
    pub record: RecordType,
    /// Port of every address found (A and AAAA; SRV records carry their own).
    #[serde(default)]
    pub port: Option<u16>,
    /// Weight of every address found through A or AAAA (1-1000). Default: 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Bounds on the time between two resolutions: the answer's TTL, clamped to them.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// Name servers, `ip` or `ip:port`. Default: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolvers: Vec<String>,
    /// Longest one resolution may take. Default: 2s.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

/// The record type to ask for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 addresses.
    #[default]
    #[serde(alias = "a")]
    A,
    /// IPv6 addresses.
    #[serde(alias = "aaaa")]
    AAAA,
    /// Service records: target, port, weight and priority.
    #[serde(alias = "srv")]
    SRV,
}

/// `refresh: { min, max }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    /// Shortest time between resolutions (also the retry time after a failure). Default: 1s.
    #[serde(default = "default_min")]
    pub min: Dur,
    /// Longest time between resolutions, whatever the TTL. Default: 60s.
    #[serde(default = "default_max")]
    pub max: Dur,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            min: default_min(),
            max: default_max(),
        }
    }
}

fn default_weight() -> u32 {
    1
}
fn default_timeout() -> Dur {
    Dur::secs(2)
}
fn default_min() -> Dur {
    Dur::secs(1)
}
fn default_max() -> Dur {
    Dur::secs(60)
}
