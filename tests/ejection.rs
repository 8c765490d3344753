//! Who may serve is decided before the pick: a backend whose circuit opens leaves its
//! upstream's rotation, and every strategy spreads its share over the others in proportion
//! (the old veto-then-next-in-list fallback doubled one neighbour's load).

mod support;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn config(b: &Backends, strategy: &str, weights: &[u32]) -> String {
    let backends: String = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("      - {{ address: \"{}\", weight: {w} }}\n", b.addr(i)))
        .collect();
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes:
  - name: api
    upstream: pool
    filters:
      - {{ kind: circuit_breaker, consecutive_failures: 1, open_time: 1m, max_ejection_percent: 50 }}
upstreams:
  - name: pool
    strategy: {strategy}
    backends:
{backends}"#
    )
}

/// `total` GETs from 8 keep-alive clients; answers per backend name (statuses other than 200
/// counted under their status).
fn load(url: &str, total: usize, key: impl Fn(usize) -> String + Sync) -> HashMap<String, usize> {
    let clients = 8;
    let counts = std::sync::Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for t in 0..clients {
            let (counts, key) = (&counts, &key);
            s.spawn(move || {
                let c = client();
                for i in (t..total).step_by(clients) {
                    let r = c.get(url).header("x-user", key(i)).send().expect("answer");
                    let status = r.status().as_u16();
                    let body = r.text().unwrap_or_default().trim().to_string();
                    let name = if status == 200 {
                        body
                    } else {
                        status.to_string()
                    };
                    *counts.lock().unwrap().entry(name).or_insert(0) += 1;
                }
            });
        }
    });
    counts.into_inner().unwrap()
}

/// Fail backend `a` until its circuit opens and it has left the rotation.
fn open_circuit_of_a(gw: &Gateway, b: &Backends, key: impl Fn(usize) -> String + Sync) {
    b.state(0).set_status(500);
    let url = gw.url("/");
    let mut round = 0;
    let ejected = poll_until(Duration::from_secs(10), || {
        round += 1;
        let seen = load(&url, 40, |i| key(i + round * 40));
        !seen.contains_key("a") && !seen.contains_key("500")
    });
    assert!(ejected, "backend a left the rotation\n{}", gw.stderr());
    assert_eq!(
        gw.metric_sum(
            "portcullis_circuit_breaker_state",
            &[("backend", &b.addr(0).to_string())]
        ),
        1.0
    );
}

fn fair_shares(strategy: &str, weights: [u32; 4]) {
    fair_shares_within(strategy, weights, 0.15);
}

fn fair_shares_within(strategy: &str, weights: [u32; 4], tolerance: f64) {
    let b = Backends::start(&["a", "b", "c", "d"]);
    // Equal backends that do some work (10 ms), so latency-aware strategies compare like with
    // like rather than loopback scheduling noise.
    for i in 0..4 {
        b.state(i).set_delay(Duration::from_millis(10));
    }
    let gw = Gateway::start(&config(&b, strategy, &weights));
    let key = |i: usize| format!("user-{i}");
    open_circuit_of_a(&gw, &b, key);
    let counts = load(&gw.url("/"), 3_000, key);
    eprintln!("{strategy}: {counts:?}");
    assert_eq!(counts.get("a"), None, "{strategy}: a is out: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 3_000);
    let total_weight: u32 = weights[1..].iter().sum();
    for (i, name) in ["b", "c", "d"].iter().enumerate() {
        let expected = 3_000.0 * f64::from(weights[i + 1]) / f64::from(total_weight);
        let got = counts.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= tolerance * expected,
            "{strategy}: {name} got {got}, expected {expected:.0} ±{}%: {counts:?}",
            tolerance * 100.0
        );
    }
}

#[test]
fn round_robin_spreads_an_open_backends_share_evenly() {
    fair_shares("round_robin", [1, 1, 1, 1]);
}

#[test]
fn weighted_round_robin_spreads_it_by_weight() {
    fair_shares("weighted_round_robin", [1, 1, 2, 3]);
}

#[test]
fn least_conn_spreads_it_evenly() {
    fair_shares("least_conn", [1, 1, 1, 1]);
}

#[test]
fn random_spreads_it_evenly() {
    fair_shares("random", [1, 1, 1, 1]);
}

#[test]
fn fastest_response_spreads_it_evenly() {
    fair_shares("fastest_response", [1, 1, 1, 1]);
}

/// Peak-EWMA keeps a latency outlier for a while by design, so between identical backends
/// adaptive's shares follow scheduling noise more than the others' do. Measured with the
/// 10 s time constant it had before issue 15 (now 300 ms) and 10 ms backends: within ±7% in
/// most runs, up to ±17% in one of eight run beside two busy loops. Not re-measured since;
/// the defect here, one neighbour taking the ejected backend's whole share (+100%), stays far
/// outside ±25%.
#[test]
fn adaptive_spreads_it_evenly() {
    fair_shares_within("adaptive", [1, 1, 1, 1], 0.25);
}

/// Consistent hashing moves only the keys of the ejected backend.
#[test]
fn consistent_hash_moves_only_the_ejected_backends_keys() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let strategy = "{ kind: consistent_hash, key: \"header:x-user\" }";
    let gw = Gateway::start(&config(&b, strategy, &[1, 1, 1, 1]));
    let c = client();
    let owner = |k: &str| {
        let r = c.get(gw.url("/")).header("x-user", k).send().unwrap();
        (r.status().as_u16(), r.text().unwrap().trim().to_string())
    };
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = keys.iter().map(|k| owner(k).1).collect();
    let on_a: Vec<&String> = keys
        .iter()
        .zip(&before)
        .filter(|(_, o)| *o == "a")
        .map(|(k, _)| k)
        .collect();
    assert!(
        on_a.len() > 40,
        "a owns a share of the keys: {}",
        on_a.len()
    );
    open_circuit_of_a(&gw, &b, |i| on_a[i % on_a.len()].clone());
    for (k, was) in keys.iter().zip(&before) {
        let (status, now) = owner(k);
        assert_eq!(status, 200, "{k}");
        if was == "a" {
            assert_ne!(now, "a", "{k} moved off the ejected backend");
        } else {
            assert_eq!(&now, was, "{k} stays where it was");
        }
    }
}
