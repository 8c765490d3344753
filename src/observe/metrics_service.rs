//! The `/metrics` listener: Prometheus text exposition, nothing else.

use super::Metrics;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// Serves `GET /metrics`; any other path gets 404.
pub struct MetricsApp {
    metrics: Arc<Metrics>,
}

impl MetricsApp {
    /// An app serving `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsApp { metrics }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, ctype, body) = if path == "/metrics" {
            (200, "text/plain; version=0.0.4", self.metrics.render())
        } else {
            (404, "text/plain", b"not found: try /metrics\n".to_vec())
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ctype)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
