//! An upstream's `health_check` section.

use super::duration::Dur;
use serde::Deserialize;

/// Active health check of every backend in an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp` (connect only) or `http` (request and check the answer). Default: `tcp`.
    #[serde(default)]
    pub kind: HealthKind,
    /// Time between probes of one backend. Default: `5s`.
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    /// Probe timeout. Default: `1s`.
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that make an unhealthy backend healthy. Default: 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy. Default: 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Probe this port instead of the backend's own.
    #[serde(default)]
    pub port: Option<u16>,
    /// http: request path. Default: `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// http: request method. Default: `GET`.
    #[serde(default)]
    pub method: Option<String>,
    /// http: Host header. Default: the backend address.
    #[serde(default)]
    pub host: Option<String>,
    /// http: statuses that count as healthy. Default: any 2xx.
    #[serde(default)]
    pub expected_status: Vec<u16>,
    /// http: the body must contain this text.
    #[serde(default)]
    pub body_contains: Option<String>,
}

fn default_hc_interval() -> Dur {
    Dur::secs(5)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Health-check protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect must succeed.
    #[default]
    Tcp,
    /// An HTTP request must get an expected status (and body text).
    Http,
}
