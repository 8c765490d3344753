//! Metrics (Prometheus), access logs (JSON lines) and the `/metrics` endpoint.

pub mod access_log;
pub mod events;
pub mod fleet_metrics;
pub mod json;
pub mod l4_metrics;
pub mod labels;
pub mod metrics;
pub mod metrics_service;
pub mod otlp;

pub use access_log::{AccessLog, AccessLogEntry};
pub use metrics::{BackendSource, Metrics};
