//! A compiled health-check configuration.

use crate::config::model::{HealthCheckConfig, HealthKind};
use crate::config::PathError;
use std::time::Duration;

/// What to send and expect in an HTTP probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbeSpec {
    /// Request method.
    pub method: http::Method,
    /// Request path (and query).
    pub path: String,
    /// Host header; `None` = the probed address.
    pub host: Option<String>,
    /// Statuses that pass; empty = any 2xx.
    pub expected_status: Vec<u16>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
}

impl HttpProbeSpec {
    /// Whether `status` passes.
    pub fn status_ok(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }
}

/// How and how often one upstream's backends are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Probe this port instead of the backend's.
    pub port: Option<u16>,
    /// `Some` for HTTP probes, `None` for TCP connect probes.
    pub http: Option<HttpProbeSpec>,
    /// The upstream's TLS settings (HTTP probes then speak HTTPS).
    pub tls: Option<crate::tls::UpstreamTls>,
}

impl HealthSpec {
    /// Compile and check a `health_check` section (errors are relative to it).
    pub fn compile(cfg: &HealthCheckConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        if cfg.interval.0 < Duration::from_millis(10) {
            errors.push(PathError::at("interval", "must be at least 10ms"));
        }
        if cfg.timeout.0.is_zero() {
            errors.push(PathError::at("timeout", "must be greater than 0 (e.g. 1s)"));
        }
        for (key, v) in [
            ("healthy_threshold", cfg.healthy_threshold),
            ("unhealthy_threshold", cfg.unhealthy_threshold),
        ] {
            if !(1..=100).contains(&v) {
                errors.push(PathError::at(
                    key,
                    format!("must be between 1 and 100, got {v}"),
                ));
            }
        }
        let http = match cfg.kind {
            HealthKind::Tcp => {
                for (key, set) in [
                    ("path", cfg.path.is_some()),
                    ("method", cfg.method.is_some()),
                    ("host", cfg.host.is_some()),
                    ("expected_status", !cfg.expected_status.is_empty()),
                    ("body_contains", cfg.body_contains.is_some()),
                ] {
                    if set {
                        errors.push(PathError::at(key, "only allowed with `kind: http`"));
                    }
                }
                None
            }
            HealthKind::Http => {
                let path = cfg.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    errors.push(PathError::at(
                        "path",
                        format!("`{path}` must start with `/`"),
                    ));
                }
                let method = match http::Method::from_bytes(
                    cfg.method.as_deref().unwrap_or("GET").as_bytes(),
                ) {
                    Ok(m) => m,
                    Err(_) => {
                        errors.push(PathError::at("method", "not a valid HTTP method"));
                        http::Method::GET
                    }
                };
                for (i, s) in cfg.expected_status.iter().enumerate() {
                    if !(100..=599).contains(s) {
                        errors.push(PathError::at(
                            format!("expected_status[{i}]"),
                            "must be an HTTP status (100-599)",
                        ));
                    }
                }
                Some(HttpProbeSpec {
                    method,
                    path,
                    host: cfg.host.clone(),
                    expected_status: cfg.expected_status.clone(),
                    body_contains: cfg.body_contains.clone(),
                })
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(HealthSpec {
            interval: cfg.interval.0,
            timeout: cfg.timeout.0,
            healthy_threshold: cfg.healthy_threshold,
            unhealthy_threshold: cfg.unhealthy_threshold,
            port: cfg.port,
            http,
            tls: None,
        })
    }
}
