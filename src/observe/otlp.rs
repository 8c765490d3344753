//! OTLP export of one span per request (`tracing.otlp`), through the OpenTelemetry SDK's
//! batch processor: the request path decides sampling from the trace id, builds the span
//! only when sampled, and hands it to a bounded queue without waiting (a full queue drops
//! it). A thread of the SDK sends batches to the collector with OTLP/HTTP (protobuf).

use crate::config::tracing::OtlpConfig;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A running exporter. Cheap to share; kept across reloads while its config stays the same.
pub struct Otlp {
    processor: Option<BatchSpanProcessor>,
    /// Sampled when the trace id's low 63 bits are below this (`u64::MAX`: every trace).
    threshold: u64,
    scope: InstrumentationScope,
}

/// What one finished request contributes to its span.
pub struct RequestSpan<'a> {
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: &'a [u8],
    /// The gateway's span id (the parent id every attempt carried), 16 hex digits.
    pub span_id: &'a [u8],
    /// The client's span, if the request came with a `traceparent`.
    pub parent_id: Option<&'a [u8]>,
    /// When the request arrived and how long it took.
    pub start: SystemTime,
    /// Its duration.
    pub duration: Duration,
    /// HTTP method.
    pub method: &'a str,
    /// Path (normalised, without the query).
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Route, upstream, backend (empty when none).
    pub route: &'a str,
    /// Upstream.
    pub upstream: &'a str,
    /// Backend `ip:port`.
    pub backend: &'a str,
    /// Retries used.
    pub retries: u32,
    /// Filters that acted on the request (answered it, chose its upstream, vetoed backends).
    pub filters: &'a [&'a str],
}

fn hex_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

impl Otlp {
    /// Check `cfg` and start the exporter's thread. Call on the control thread or at startup,
    /// never on an async worker (the HTTP client is a blocking one).
    pub fn start(cfg: &OtlpConfig) -> Result<Otlp, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(cfg.endpoint.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(cfg.timeout.0)
            .with_headers(cfg.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue)
            .with_max_export_batch_size(512.min(cfg.max_queue))
            .with_scheduled_delay(Duration::from_millis(500))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(cfg.service_name.clone())
            .build();
        processor.set_resource(&resource);
        let threshold = if cfg.sampling_ratio >= 1.0 {
            u64::MAX
        } else {
            (cfg.sampling_ratio.max(0.0) * (1u64 << 63) as f64) as u64
        };
        let scope = InstrumentationScope::builder("portcullis")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Otlp {
            processor: Some(processor),
            threshold,
            scope,
        })
    }

    /// Whether the trace `trace_id` (32 hex digits) is exported: its low 64 bits, halved,
    /// below the ratio's share (OpenTelemetry's TraceIdRatioBased rule).
    #[inline]
    pub fn sampled(&self, trace_id: &[u8]) -> bool {
        if self.threshold == u64::MAX {
            return trace_id.len() == 32;
        }
        trace_id.len() == 32
            && u64::from_str_radix(hex_str(&trace_id[16..]), 16)
                .is_ok_and(|low| (low >> 1) < self.threshold)
    }

    /// Queue the span of one request (call only when [`Otlp::sampled`]).
    pub fn record(&self, s: &RequestSpan<'_>) {
        let Some(processor) = &self.processor else {
            return;
        };
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(hex_str(s.trace_id)),
            SpanId::from_hex(hex_str(s.span_id)),
        ) else {
            return;
        };
        let parent = s
            .parent_id
            .and_then(|p| SpanId::from_hex(hex_str(p)).ok())
            .unwrap_or(SpanId::INVALID);
        let name: Cow<'static, str> = match s.route {
            "" => Cow::Owned(s.method.to_string()),
            r => Cow::Owned(format!("{} {r}", s.method)),
        };
        let status = if s.status >= 500 {
            Status::error(format!("HTTP {}", s.status))
        } else {
            Status::Unset
        };
        processor.on_end(SpanData {
            span_context: SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent,
            parent_span_is_remote: s.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name,
            start_time: s.start,
            end_time: s.start + s.duration,
            attributes: attributes(s),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

fn attributes(s: &RequestSpan<'_>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("http.request.method", s.method.to_string()),
        KeyValue::new("url.path", s.path.to_string()),
        KeyValue::new("http.response.status_code", i64::from(s.status)),
        KeyValue::new("portcullis.retries", i64::from(s.retries)),
    ];
    for (key, value) in [
        ("http.route", s.route),
        ("portcullis.route", s.route),
        ("portcullis.upstream", s.upstream),
        ("portcullis.backend", s.backend),
    ] {
        if !value.is_empty() {
            a.push(KeyValue::new(key, value.to_string()));
        }
    }
    if !s.filters.is_empty() {
        let names: Vec<opentelemetry::StringValue> =
            s.filters.iter().map(|f| f.to_string().into()).collect();
        a.push(KeyValue::new(
            "portcullis.filters",
            opentelemetry::Value::Array(names.into()),
        ));
    }
    a
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp")
            .field("threshold", &self.threshold)
            .finish()
    }
}

/// Check `cfg` (the key and the problem when it is wrong) and return the exporter for it:
/// the one already running when a reload keeps the same config, otherwise a new one.
pub fn shared(
    cfg: &OtlpConfig,
    cx: &portcullis_plugin::BuildContext<'_>,
) -> Result<Arc<Otlp>, (&'static str, String)> {
    check(cfg)?;
    let started = cx.persistent(&format!("otlp/{cfg:?}"), || Otlp::start(cfg).map(Arc::new));
    match &*started {
        Ok(otlp) => Ok(Arc::clone(otlp)),
        Err(e) => Err(("endpoint", e.clone())),
    }
}

/// Longest extra header name or value, and most headers.
const MAX_HEADERS: (usize, usize) = (16, 4096);

fn check(cfg: &OtlpConfig) -> Result<(), (&'static str, String)> {
    let uri: http::Uri = cfg
        .endpoint
        .parse()
        .map_err(|e| ("endpoint", format!("`{}` is not a URL: {e}", cfg.endpoint)))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err((
            "endpoint",
            format!(
                "`{}`: an http:// URL of a collector is required, e.g. http://127.0.0.1:4318/v1/traces \
                 (https is not built in: export to a local collector or agent)",
                cfg.endpoint
            ),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.sampling_ratio) {
        return Err((
            "sampling_ratio",
            format!("must be between 0.0 and 1.0, got {}", cfg.sampling_ratio),
        ));
    }
    if cfg.service_name.is_empty() || cfg.service_name.len() > 128 {
        return Err(("service_name", "must be 1-128 bytes".into()));
    }
    let t = cfg.timeout.0;
    if t < Duration::from_millis(10) || t > Duration::from_secs(60) {
        return Err((
            "timeout",
            format!("must be between 10ms and 60s, got {t:?}"),
        ));
    }
    if !(64..=100_000).contains(&cfg.max_queue) {
        return Err((
            "max_queue",
            format!("must be between 64 and 100000, got {}", cfg.max_queue),
        ));
    }
    let (most, len) = MAX_HEADERS;
    let bad = cfg.headers.iter().find(|(k, v)| {
        k.len() > len
            || v.len() > len
            || http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
    });
    if cfg.headers.len() > most || bad.is_some() {
        return Err((
            "headers",
            format!("at most {most} valid HTTP headers of at most {len} bytes"),
        ));
    }
    Ok(())
}

impl Drop for Otlp {
    /// Flush and stop on a thread of its own: the last holder may be an async worker, which
    /// must not wait for an export.
    fn drop(&mut self) {
        if let Some(p) = self.processor.take() {
            let _ = std::thread::Builder::new()
                .name("portcullis-otlp-stop".into())
                .spawn(move || {
                    let _ = p.shutdown();
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ratio(r: f64) -> Otlp {
        let cfg: OtlpConfig = serde_yaml::from_str(&format!(
            "{{ endpoint: 'http://127.0.0.1:9/v1/traces', sampling_ratio: {r} }}"
        ))
        .unwrap();
        Otlp::start(&cfg).unwrap()
    }

    #[test]
    fn samples_the_configured_share_of_trace_ids() {
        let otlp = with_ratio(0.01);
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| otlp.sampled(format!("{:032x}", rng.u128(..)).as_bytes()))
            .count();
        assert!((800..=1200).contains(&hits), "{hits} of {n}");
        assert!(with_ratio(1.0).sampled(b"4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!with_ratio(0.0).sampled(b"4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!otlp.sampled(b"not hex"));
    }
}
