//! The Prometheus metrics of one gateway instance.
//!
//! Each instance has its own [`Registry`] (tests run several gateways in one process).
//! Request-path counters are resolved once per label combination and then cached per thread
//! by integer ids, so a request costs a hash lookup and an atomic add, not a label-string
//! lookup under a lock. Gauges of live state (health, in-flight) are read from the state store
//! when scraped, so requests never touch them.

use super::labels::{IdMap, METHOD_LABELS, STATUS_LABELS};
use crate::balance::BackendState;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Weak};

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Upstream latency histogram buckets (seconds): 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Something that can list the backends of the live config, for scrape-time gauges.
pub trait BackendSource: Send + Sync {
    /// Call `f(upstream, backend state, ramp)` for every backend of every upstream; the ramp
    /// is the share of its weight it gets (slow start), 1 when it does not ramp.
    fn for_each_backend(&self, f: &mut dyn FnMut(&str, &BackendState, f32));
    /// Call `f(upstream, in panic)` for every upstream.
    fn for_each_upstream(&self, f: &mut dyn FnMut(&str, bool));
}

/// Label values identifying one request-counter series, as ids plus their text.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// Interned route id and name ("" when no route matched).
    pub route: (u32, &'a str),
    /// Interned upstream id and name ("" when none was chosen).
    pub upstream: (u32, &'a str),
    /// Backend id and address text ("" when none was reached).
    pub backend: (u32, &'a str),
    /// [`super::labels::method_index`].
    pub method: u8,
    /// [`super::labels::status_class`].
    pub status_class: u8,
}

/// All metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    instance: u32,
    requests: IntCounterVec,
    upstream_latency: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
    retries_refused: IntCounterVec,
    downstream_connections: IntCounterVec,
    received_bytes: IntCounterVec,
    sent_bytes: IntCounterVec,
    health_transitions: IntCounterVec,
    fleet: super::fleet_metrics::FleetMetrics,
    reloads: IntCounterVec,
    /// Config generation currently serving.
    pub config_generation: IntGauge,
    /// 1 if the last reload went live (or none was tried), 0 if it was refused.
    last_reload_ok: IntGauge,
    l4: super::l4_metrics::L4Metrics,
}

thread_local! {
    static REQUESTS: RefCell<IdMap<u128, IntCounter>> = RefCell::new(IdMap::default());
    static LATENCY: RefCell<IdMap<u128, Histogram>> = RefCell::new(IdMap::default());
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

impl Metrics {
    /// Create and register every metric in a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_latency_seconds",
                "Time from sending a request to a backend to receiving its response header.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream", "backend"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(upstream_latency.clone()))
            .expect("metric registered once");
        let config_generation = IntGauge::new(
            "portcullis_config_generation",
            "Generation of the configuration serving requests (1 = the file read at start).",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("metric registered once");
        let last_reload_ok = IntGauge::new(
            "portcullis_config_last_reload_successful",
            "1 if the last reload went live (or none was tried yet), 0 if it was refused.",
        )
        .expect("static metric definition");
        last_reload_ok.set(1);
        registry
            .register(Box::new(last_reload_ok.clone()))
            .expect("metric registered once");
        Arc::new(Metrics {
            last_reload_ok,
            l4: super::l4_metrics::L4Metrics::new(&registry),
            requests: counter_vec(
                &registry,
                "portcullis_requests_total",
                "Requests answered, by route, upstream, backend, method and status class.",
                &["route", "upstream", "backend", "method", "status"],
            ),
            connect_errors: counter_vec(
                &registry,
                "portcullis_upstream_connect_errors_total",
                "Failed attempts to connect to a backend (refused, timed out, unreachable).",
                &["upstream", "backend"],
            ),
            retries: counter_vec(
                &registry,
                "portcullis_upstream_retries_total",
                "Requests retried on another backend.",
                &["upstream"],
            ),
            retries_refused: counter_vec(
                &registry,
                "portcullis_upstream_retries_refused_total",
                "Retries not made because the upstream's retry budget was spent.",
                &["upstream"],
            ),
            downstream_connections: counter_vec(
                &registry,
                "portcullis_downstream_connections_total",
                "Client connections accepted, by listener.",
                &["listener"],
            ),
            received_bytes: counter_vec(
                &registry,
                "portcullis_downstream_received_bytes_total",
                "Request body bytes received from clients, by route.",
                &["route"],
            ),
            sent_bytes: counter_vec(
                &registry,
                "portcullis_downstream_sent_bytes_total",
                "Response body bytes sent to clients, by route.",
                &["route"],
            ),
            reloads: counter_vec(
                &registry,
                "portcullis_config_reloads_total",
                "Config reloads, by result (success or failure).",
                &["result"],
            ),
            health_transitions: counter_vec(
                &registry,
                "portcullis_backend_health_transitions_total",
                "Health-check verdict changes, by upstream, backend and new state.",
                &["upstream", "backend", "to"],
            ),
            fleet: super::fleet_metrics::FleetMetrics::new(&registry),
            upstream_latency,
            config_generation,
            registry,
            instance: INSTANCE.fetch_add(1, Relaxed),
        })
    }

    /// Add the scrape-time gauges of live backend state (health, in-flight).
    pub fn register_backend_gauges(&self, source: Weak<dyn BackendSource>) {
        let collector = BackendGauges::new(source);
        if let Err(e) = self.registry.register(Box::new(collector)) {
            log::error!("cannot register backend gauges: {e}");
        }
    }

    /// The TCP listener and connection-queue metrics.
    pub fn l4(&self) -> &super::l4_metrics::L4Metrics {
        &self.l4
    }

    /// The registry (to register plugin metrics in).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Count one finished request.
    #[inline]
    pub fn count_request(&self, l: &RequestLabels<'_>) {
        let key = (u128::from(self.instance) << 104)
            | (u128::from(l.route.0) << 72)
            | (u128::from(l.upstream.0) << 40)
            | (u128::from(l.backend.0) << 8)
            | (u128::from(l.method) << 4)
            | u128::from(l.status_class);
        REQUESTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache
                .entry(key)
                .or_insert_with(|| {
                    self.requests.with_label_values(&[
                        l.route.1,
                        l.upstream.1,
                        l.backend.1,
                        METHOD_LABELS[usize::from(l.method)],
                        STATUS_LABELS[usize::from(l.status_class)],
                    ])
                })
                .inc();
        });
    }

    /// Record the time a backend took to send its response header.
    #[inline]
    pub fn observe_upstream_latency(
        &self,
        upstream: (u32, &str),
        backend: (u32, &str),
        seconds: f64,
    ) {
        let key = (u128::from(self.instance) << 64)
            | (u128::from(upstream.0) << 32)
            | u128::from(backend.0);
        LATENCY.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache
                .entry(key)
                .or_insert_with(|| {
                    self.upstream_latency
                        .with_label_values(&[upstream.1, backend.1])
                })
                .observe(seconds);
        });
    }

    /// A connect attempt to a backend failed.
    pub fn count_connect_error(&self, upstream: &str, backend: &str) {
        self.connect_errors
            .with_label_values(&[upstream, backend])
            .inc();
    }

    /// A request was retried on another backend.
    pub fn count_retry(&self, upstream: &str) {
        self.retries.with_label_values(&[upstream]).inc();
    }

    /// A retry was refused by the retry budget.
    pub fn count_retry_refused(&self, upstream: &str) {
        self.retries_refused.with_label_values(&[upstream]).inc();
    }

    /// A config reload finished.
    pub fn count_reload(&self, success: bool) {
        self.last_reload_ok.set(i64::from(success));
        self.reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
    }

    /// p50, p95 and p99 of a backend's upstream latency in seconds (interpolated within the
    /// histogram buckets, since start), or `None` before the first sample.
    pub fn latency_quantiles(&self, upstream: &str, backend: &str) -> Option<[f64; 3]> {
        use prometheus::core::Metric;
        let h = self
            .upstream_latency
            .get_metric_with_label_values(&[upstream, backend])
            .ok()?;
        let m = h.metric();
        let hist = m.get_histogram();
        let total = hist.get_sample_count();
        if total == 0 {
            return None;
        }
        let buckets: Vec<(f64, u64)> = hist
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        let quantile = |q: f64| {
            let rank = q * total as f64;
            let (mut lower, mut below) = (0.0, 0u64);
            for &(upper, cumulative) in &buckets {
                if cumulative as f64 >= rank {
                    let in_bucket = (cumulative - below).max(1) as f64;
                    return lower
                        + (upper - lower) * ((rank - below as f64) / in_bucket).clamp(0.0, 1.0);
                }
                (lower, below) = (upper, cumulative);
            }
            lower
        };
        Some([quantile(0.5), quantile(0.95), quantile(0.99)])
    }

    /// A health check changed its verdict.
    pub fn count_health_transition(&self, upstream: &str, backend: &str, healthy: bool) {
        let to = if healthy { "healthy" } else { "unhealthy" };
        self.health_transitions
            .with_label_values(&[upstream, backend, to])
            .inc();
    }

    /// Discovery and registry series.
    pub fn fleet(&self) -> &super::fleet_metrics::FleetMetrics {
        &self.fleet
    }

    /// The accepted-connections counter of a listener (resolved once at startup).
    pub fn downstream_connections(&self, listener: &str) -> IntCounter {
        self.downstream_connections.with_label_values(&[listener])
    }

    /// The body-byte counters (received, sent) of a route (resolved when the route is compiled).
    pub fn route_bytes(&self, route: &str) -> (IntCounter, IntCounter) {
        (
            self.received_bytes.with_label_values(&[route]),
            self.sent_bytes.with_label_values(&[route]),
        )
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// `portcullis_backend_healthy` and `portcullis_backend_inflight`, read at scrape time.
struct BackendGauges {
    source: Weak<dyn BackendSource>,
    descs: Vec<Desc>,
}

/// The scrape-time gauges: (name, help, labels).
const GAUGES: [(&str, &str, &[&str]); 4] = [
    (
        "portcullis_backend_healthy",
        "1 when the backend passes its health check (or has none), else 0.",
        &["upstream", "backend"],
    ),
    (
        "portcullis_backend_inflight",
        "Requests currently in flight to the backend.",
        &["upstream", "backend"],
    ),
    (
        "portcullis_backend_slow_start_ratio",
        "Share of its weight the backend gets while it ramps in (slow start); 1 at full weight.",
        &["upstream", "backend"],
    ),
    (
        "portcullis_upstream_panic",
        "1 while fewer primaries are healthy than the upstream's panic_threshold and all of them serve.",
        &["upstream"],
    ),
];

impl BackendGauges {
    fn new(source: Weak<dyn BackendSource>) -> Self {
        let descs = GAUGES
            .iter()
            .map(|(name, help, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels,
                    Default::default(),
                )
                .expect("static metric definition")
            })
            .collect();
        BackendGauges { source, descs }
    }
}

impl Collector for BackendGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(source) = self.source.upgrade() else {
            return Vec::new();
        };
        let vecs: Vec<prometheus::GaugeVec> = GAUGES
            .iter()
            .filter_map(|(name, help, labels)| {
                prometheus::GaugeVec::new(Opts::new(*name, *help), labels).ok()
            })
            .collect();
        let [healthy, inflight, ramp, panic] = &vecs[..] else {
            return Vec::new();
        };
        source.for_each_backend(&mut |upstream, state, r| {
            let labels = [upstream, state.label()];
            healthy
                .with_label_values(&labels)
                .set(f64::from(u8::from(state.is_healthy())));
            inflight
                .with_label_values(&labels)
                .set(f64::from(state.inflight()));
            ramp.with_label_values(&labels).set(f64::from(r));
        });
        source.for_each_upstream(&mut |upstream, p| {
            panic
                .with_label_values(&[upstream])
                .set(f64::from(u8::from(p)));
        });
        vecs.iter().flat_map(|v| v.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_counters_are_the_registered_series() {
        let m = Metrics::new();
        let l = RequestLabels {
            route: (1, "r"),
            upstream: (2, "u"),
            backend: (3, "127.0.0.1:1"),
            method: 0,
            status_class: 2,
        };
        for _ in 0..3 {
            m.count_request(&l);
        }
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"portcullis_requests_total{backend="127.0.0.1:1",method="GET",route="r",status="2xx",upstream="u"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn instances_do_not_share_series() {
        let a = Metrics::new();
        let b = Metrics::new();
        let l = RequestLabels {
            route: (1, "r"),
            upstream: (2, "u"),
            backend: (3, "b"),
            method: 0,
            status_class: 2,
        };
        a.count_request(&l);
        let text = String::from_utf8(b.render()).unwrap();
        assert!(!text.contains("portcullis_requests_total{"), "{text}");
    }
}
