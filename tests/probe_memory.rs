//! HTTP health checks cost little memory per checked backend. A connector per probe used to
//! load the system CA bundle twice per backend (about 1.8 MB resident): 40 HTTP-checked
//! backends made a gateway about 70 MB larger than one. Probes now share one connector, and
//! since vendor patch 6 every connector with the same TLS settings shares one TLS context
//! (tests/tls_roots.rs counts the loads); this test bounds what a checked backend costs in all.

mod support;
use std::time::Duration;
use support::*;

const MANY: usize = 40;

/// A gateway whose one upstream has `n` HTTP-checked backends on 127.0.0.2.. port 9 (nothing
/// listens there, so every probe fails at once and leaves a verdict).
fn gateway_with_checked_backends(n: usize) -> Gateway {
    let backends: String = (0..n)
        .map(|i| format!("      - {{ address: \"127.0.0.{}:9\" }}\n", i + 2))
        .collect();
    Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    health_check: {{ kind: http, path: /healthz, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1 }}
    backends:
{backends}"#
    ))
}

/// Every backend of `gw` has been probed: the healthy gauges sum to 0.
fn wait_all_probed(gw: &Gateway, n: usize) {
    let probed = poll_until(Duration::from_secs(10), || {
        let m = gw.metrics();
        m.matches("portcullis_backend_healthy{").count() == n
            && metric_sum(&m, "portcullis_backend_healthy", &[("upstream", "pool")]) == 0.0
    });
    assert!(probed, "not every backend was probed within 10 s");
}

#[test]
fn http_probes_share_one_connector() {
    let one = gateway_with_checked_backends(1);
    let many = gateway_with_checked_backends(MANY);
    wait_all_probed(&one, 1);
    wait_all_probed(&many, MANY);
    let (a, b) = (rss_kib(one.pid()), rss_kib(many.pid()));
    let per_backend = b.saturating_sub(a) / (MANY as u64 - 1);
    eprintln!("RSS: 1 checked backend {a} KiB, {MANY}: {b} KiB, {per_backend} KiB per backend");
    assert!(
        per_backend < 400,
        "{per_backend} KiB per HTTP-checked backend (a connector per probe cost ~1,800 before patch 6)"
    );
}
