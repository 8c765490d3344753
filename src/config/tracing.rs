//! `tracing:`: export one span per request to an OpenTelemetry collector (OTLP over HTTP).

use super::duration::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `tracing:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export spans with OTLP; absent = no export (trace context is still propagated).
    pub otlp: Option<OtlpConfig>,
}

/// Where and how much to export.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Share of traces exported, 0.0-1.0, decided from the trace id (so every gateway and
    /// every hop of one trace decide alike). Default: 1.0.
    #[serde(default = "default_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the spans. Default: `portcullis`.
    #[serde(default = "default_service")]
    pub service_name: String,
    /// Longest one export may take. Default: 5s (10ms-60s).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Spans waiting for export; more are dropped, never waited for. Default: 2048 (64-100,000).
    #[serde(default = "default_queue")]
    pub max_queue: usize,
    /// Extra headers of every export (e.g. an API key); at most 16.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_ratio() -> f64 {
    1.0
}
fn default_service() -> String {
    "portcullis".into()
}
fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn default_queue() -> usize {
    2048
}
