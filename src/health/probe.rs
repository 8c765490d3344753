//! Probes, as Pingora [`HealthCheck`]s: Pingora's own TCP check, and an HTTP check that can
//! also look at the status list and the body (Pingora's `HttpHealthCheck` drains the body
//! without reading it).

use super::spec::{HealthSpec, HttpProbeSpec};
use async_trait::async_trait;
use once_cell::sync::Lazy;
use pingora::connectors::http::Connector as HttpConnector;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

/// Limit on how much body an HTTP probe reads while looking for `body_contains`.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

/// The one connector every HTTP probe uses. Building a connector loads the system CA bundle
/// (about 1.8 MB resident); one per probed backend cost that much per backend. TLS settings
/// are per peer (`UpstreamTls::apply`), so sharing it changes nothing else.
static CONNECTOR: Lazy<HttpConnector> = Lazy::new(|| HttpConnector::new(None));

/// Build the probes' connector off the async workers (it reads files); a no-op once built.
pub async fn prepare_connector() {
    if Lazy::get(&CONNECTOR).is_none() {
        let _ = tokio::task::spawn_blocking(|| Lazy::force(&CONNECTOR)).await;
    }
}

/// The probe for a spec.
pub fn probe_for(spec: &HealthSpec) -> Box<dyn HealthCheck + Send + Sync> {
    match &spec.http {
        None => {
            let mut tcp = TcpHealthCheck::new();
            tcp.peer_template.options.connection_timeout = Some(spec.timeout);
            tcp.consecutive_success = spec.healthy_threshold as usize;
            tcp.consecutive_failure = spec.unhealthy_threshold as usize;
            tcp
        }
        Some(http) => Box::new(HttpProbe {
            tls: spec.tls.clone(),
            spec: http.clone(),
            timeout: spec.timeout,
            thresholds: (
                spec.healthy_threshold as usize,
                spec.unhealthy_threshold as usize,
            ),
            connector: &CONNECTOR,
        }),
    }
}

/// An HTTP request whose status (and optionally body) decides health.
pub struct HttpProbe {
    spec: HttpProbeSpec,
    tls: Option<crate::tls::UpstreamTls>,
    timeout: std::time::Duration,
    thresholds: (usize, usize),
    connector: &'static HttpConnector,
}

fn fail(why: String) -> Result<()> {
    Error::e_explain(ErrorType::Custom("health check failed"), why)
}

#[async_trait]
impl HealthCheck for HttpProbe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(addr) = target.addr.as_inet().copied() else {
            return fail("not an IP backend".into());
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        if let Some(tls) = &self.tls {
            tls.apply(&mut peer);
        }
        let mut req =
            RequestHeader::build(self.spec.method.clone(), self.spec.path.as_bytes(), None)?;
        let host = self.spec.host.clone().unwrap_or_else(|| addr.to_string());
        req.insert_header(http::header::HOST, host)?;
        req.insert_header(http::header::USER_AGENT, "portcullis-health-check")?;
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        if !self.spec.status_ok(status) {
            return fail(format!("status {status}"));
        }
        let Some(needle) = &self.spec.body_contains else {
            return Ok(());
        };
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_PROBE_BODY {
                break;
            }
        }
        if find(&body, needle.as_bytes()) {
            Ok(())
        } else {
            fail(format!("body does not contain {needle:?}"))
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.thresholds.0
        } else {
            self.thresholds.1
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
