//! Metrics of the fleet inputs: DNS discovery and the service registry.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Discovery and registry series.
pub struct FleetMetrics {
    resolutions: IntCounterVec,
    discovered: IntGaugeVec,
    registered: IntGaugeVec,
    expired: IntCounterVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl FleetMetrics {
    /// The series, registered in `r`.
    pub fn new(r: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels)
                    .expect("static metric definition"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), &["upstream"])
                    .expect("static metric definition"),
            )
        };
        FleetMetrics {
            resolutions: counter(
                "portcullis_discovery_resolutions_total",
                "DNS discovery resolutions, by upstream and result (ok, or error: failed, timed out or empty; the last good set stays).",
                &["upstream", "result"],
            ),
            discovered: gauge(
                "portcullis_discovery_backends",
                "Backends in the last good DNS answer of a discovering upstream.",
            ),
            registered: gauge(
                "portcullis_registry_instances",
                "Instances registered through the admin API, by upstream.",
            ),
            expired: counter(
                "portcullis_registry_expired_total",
                "Registrations removed because their lease ran out, by upstream.",
                &["upstream"],
            ),
        }
    }

    /// A discovery resolution of `upstream` ended with `result`; `found` addresses when ok.
    pub fn count_discovery(&self, upstream: &str, result: &str, found: usize) {
        self.resolutions
            .with_label_values(&[upstream, result])
            .inc();
        if result == "ok" {
            self.discovered
                .with_label_values(&[upstream])
                .set(found as i64);
        }
    }

    /// `upstream` has `n` registrations.
    pub fn set_registered(&self, upstream: &str, n: usize) {
        self.registered.with_label_values(&[upstream]).set(n as i64);
    }

    /// A lease of `upstream` ran out.
    pub fn count_expired(&self, upstream: &str) {
        self.expired.with_label_values(&[upstream]).inc();
    }
}
