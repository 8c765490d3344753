//! Slow start and the panic threshold, end to end: real backends whose health checks the tests
//! fail and pass, a real gateway, shares counted at the backends.

mod support;
use std::time::{Duration, Instant};
use support::load::Load;
use support::*;

/// One upstream `pool` over `b` with fast health checks, and `extra` keys on the upstream.
fn config(b: &Backends, strategy: &str, extra: &str) -> String {
    let addrs: Vec<_> = (0..b.len()).map(|i| b.addr(i)).collect();
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: {strategy}
    health_check: {{ kind: http, path: /healthz, interval: 100ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
{extra}
    backends:
{}"#,
        backends_yaml(&addrs)
    )
}

/// The admin API's view of backend `addr` of `pool`.
fn backend_json(gw: &Gateway, addr: std::net::SocketAddr) -> serde_json::Value {
    let body: serde_json::Value = client()
        .get(gw.admin_url("/upstreams"))
        .send()
        .and_then(|r| r.json())
        .expect("admin answers");
    body["upstreams"][0]["backends"]
        .as_array()
        .and_then(|bs| {
            bs.iter()
                .find(|b| b["address"] == addr.to_string())
                .cloned()
        })
        .expect("backend listed")
}

fn answered(b: &Backends) -> Vec<u64> {
    (0..b.len()).map(|i| b.requests(i)).collect()
}

#[test]
fn below_the_panic_threshold_every_primary_serves_and_without_it_only_the_healthy() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let panicky = Gateway::start(&config(&b, "round_robin", "    panic_threshold: 50"));
    let strict = Gateway::start(&config(&b, "round_robin", ""));
    for i in 1..4 {
        b.state(i).set_health_status(503);
    }
    let gauge = |gw: &Gateway| gw.metric_sum("portcullis_upstream_panic", &[("upstream", "pool")]);
    let out_of_rotation =
        |gw: &Gateway| (1..4).all(|i| backend_json(gw, b.addr(i))["healthy"] == false);
    assert!(poll_until(Duration::from_secs(10), || out_of_rotation(
        &panicky
    ) && out_of_rotation(
        &strict
    )));
    assert!(poll_until(Duration::from_secs(5), || gauge(&panicky) == 1.0));
    assert_eq!(gauge(&strict), 0.0);
    assert!(panicky.stderr().contains("upstream pool is in panic"));

    for (gw, all_serve) in [(&panicky, true), (&strict, false)] {
        let before = answered(&b);
        let c = client();
        for _ in 0..400 {
            assert_eq!(get(&c, &gw.url("/")).0, 200);
        }
        let got: Vec<u64> = answered(&b)
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        if all_serve {
            // Round robin over all four: 100 each.
            assert!(got.iter().all(|&n| (90..=110).contains(&n)), "{got:?}");
        } else {
            assert_eq!(got, vec![400, 0, 0, 0]);
        }
    }

    // Two healthy of four is not below 50%: panic ends and the unhealthy leave again.
    b.state(1).set_health_status(200);
    assert!(poll_until(Duration::from_secs(5), || gauge(&panicky) == 0.0));
    let before = answered(&b);
    let c = client();
    for _ in 0..200 {
        assert_eq!(get(&c, &panicky.url("/")).0, 200);
    }
    let got: Vec<u64> = answered(&b)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(got[2] + got[3], 0, "{got:?}");
    assert!(panicky.stderr().contains("upstream pool leaves panic"));
}

/// Backend 3 of four comes back under steady load; its share per 2 s bucket, over an 8 s ramp
/// and one bucket after.
fn ramp_shares(strategy: &str) -> Vec<f64> {
    let b = Backends::start(&["a", "b", "c", "d"]);
    for i in 0..4 {
        b.state(i).set_delay(Duration::from_millis(5));
    }
    let slow = "    slow_start: { window: 8s, min_weight_percent: 10 }";
    let gw = Gateway::start(&config(&b, strategy, slow));
    b.state(3).set_health_status(503);
    assert!(poll_until(Duration::from_secs(10), || {
        backend_json(&gw, b.addr(3))["in_rotation"] == false
    }));
    let load = Load::start(&gw.url("/"), 8, 1_000_000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500)); // load settles
    b.state(3).set_health_status(200);
    assert!(poll_until(Duration::from_secs(5), || {
        let j = backend_json(&gw, b.addr(3));
        j["in_rotation"] == true && j["ramp"].as_f64().is_some_and(|r| r < 0.5)
    }));
    let ramp_gauge = || {
        gw.metric_sum(
            "portcullis_backend_slow_start_ratio",
            &[("backend", &b.addr(3).to_string())],
        )
    };
    let mut shares = Vec::new();
    let mut gauges = Vec::new();
    let mut last = answered(&b);
    let start = Instant::now();
    for k in 1..=5u32 {
        let at = start + Duration::from_secs(2 * u64::from(k));
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let now = answered(&b);
        let got: Vec<u64> = now.iter().zip(&last).map(|(a, b)| a - b).collect();
        let total: u64 = got.iter().sum();
        assert!(total > 100, "too little traffic to judge: {got:?}");
        shares.push(got[3] as f64 / total as f64);
        gauges.push(ramp_gauge());
        last = now;
    }
    let result = load.finish();
    assert_eq!(result.failures(), 0, "{:?}", result.statuses);
    eprintln!("{strategy}: shares per 2 s {shares:.3?}, ramp gauge {gauges:.2?}");
    // The gauge rose during the ramp and reads full weight after it.
    assert!(gauges[0] < gauges[2] && gauges[2] < 1.0, "{gauges:?}");
    assert_eq!(gauges[4], 1.0, "{gauges:?}");
    shares
}

/// The share rises bucket by bucket (within noise), starts well below a fair quarter and ends
/// at it.
fn assert_ramps(strategy: &str, shares: &[f64]) {
    for w in shares.windows(2) {
        assert!(w[1] >= w[0] - 0.03, "{strategy}: not rising: {shares:.3?}");
    }
    assert!(
        shares[0] < 0.12,
        "{strategy}: first bucket too high: {shares:.3?}"
    );
    assert!(
        shares[3] > shares[0] + 0.06,
        "{strategy}: no ramp: {shares:.3?}"
    );
    assert!(
        (0.18..=0.32).contains(&shares[4]),
        "{strategy}: not at its fair share after the window: {shares:.3?}"
    );
}

#[test]
fn slow_start_ramps_round_robin() {
    assert_ramps("round_robin", &ramp_shares("round_robin"));
}

#[test]
fn slow_start_ramps_least_conn() {
    assert_ramps("least_conn", &ramp_shares("least_conn"));
}

#[test]
fn slow_start_ramps_adaptive() {
    assert_ramps("adaptive", &ramp_shares("adaptive"));
}

#[test]
fn slow_start_settings_out_of_range_are_located() {
    let b = Backends::start(&["a"]);
    let (code, out) = check_config(&config(
        &b,
        "round_robin",
        "    slow_start: { window: 0s }\n    panic_threshold: 150",
    ));
    assert_ne!(code, 0);
    assert!(out.contains("upstreams[0].slow_start.window"), "{out}");
    assert!(out.contains("upstreams[0].panic_threshold"), "{out}");
    assert!(out.contains("between 0 and 100"), "{out}");
}
