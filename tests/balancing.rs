//! Each strategy's observable behaviour through the real gateway.

mod support;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn one_upstream(b: &Backends, strategy: &str, weights: &[u32]) -> String {
    let backends: String = (0..weights.len())
        .map(|i| {
            format!(
                "      - {{ address: \"{}\", weight: {} }}\n",
                b.addr(i),
                weights[i]
            )
        })
        .collect();
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: {strategy}
    backends:
{backends}"#
    )
}

fn sequence(gw: &Gateway, n: usize) -> Vec<String> {
    let c = client();
    (0..n)
        .map(|_| {
            let (status, backend) = get(&c, &gw.url("/"));
            assert_eq!(status, 200);
            backend
        })
        .collect()
}

/// Send `total` requests from `clients` concurrent clients; returns answers per backend.
fn concurrent_load(gw: &Gateway, clients: usize, total: usize) -> HashMap<String, usize> {
    let per_client = total / clients;
    let url = gw.url("/");
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                (0..per_client).map(|_| get(&c, &url).1).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for h in handles {
        for backend in h.join().expect("client thread") {
            *counts.entry(backend).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn round_robin_cycles_three_backends() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&one_upstream(&b, "round_robin", &[1, 1, 1]));
    let seq = sequence(&gw, 12);
    for window in seq.windows(3) {
        let mut w = window.to_vec();
        w.sort();
        assert_eq!(
            w,
            ["a", "b", "c"],
            "every 3 consecutive requests hit 3 backends: {seq:?}"
        );
    }
}

#[test]
fn smooth_weighted_round_robin_never_sends_five_in_a_row() {
    let b = Backends::start(&["heavy", "x", "y"]);
    let gw = Gateway::start(&one_upstream(&b, "weighted_round_robin", &[5, 1, 1]));
    let seq = sequence(&gw, 70);
    let longest = seq.chunk_by(|a, b| a == b).map(|r| r.len()).max().unwrap();
    assert!(longest < 5, "longest run {longest}: {seq:?}");
    let heavy = seq.iter().filter(|s| *s == "heavy").count();
    assert_eq!(heavy, 50, "weight 5 of 7 over 10 full cycles: {seq:?}");
}

#[test]
fn weighted_random_follows_weights() {
    let b = Backends::start(&["a", "b"]);
    let gw = Gateway::start(&one_upstream(&b, "random", &[1, 3]));
    let seq = sequence(&gw, 400);
    let share_b = seq.iter().filter(|s| *s == "b").count() as f64 / 400.0;
    // Expected 0.75; 400 draws have sd ~0.022, so ±0.1 is > 4 sd.
    assert!((share_b - 0.75).abs() < 0.1, "share of b {share_b}");
}

#[test]
fn least_conn_moves_traffic_away_from_a_slow_backend() {
    let b = Backends::start(&["fast1", "fast2", "slow"]);
    b.state(2).set_delay(Duration::from_millis(150));
    let gw = Gateway::start(&one_upstream(&b, "least_conn", &[1, 1, 1]));
    let counts = concurrent_load(&gw, 8, 240);
    let slow = *counts.get("slow").unwrap_or(&0);
    // Round robin would send 80 (a third). The slow backend holds its requests 30x longer,
    // so it is the busier of any pair it is compared in.
    assert!(slow < 40, "slow backend got {slow} of 240: {counts:?}");
}

#[test]
fn adaptive_moves_traffic_away_from_a_slow_backend() {
    let b = Backends::start(&["fast1", "fast2", "slow"]);
    b.state(2).set_delay(Duration::from_millis(150));
    let gw = Gateway::start(&one_upstream(&b, "adaptive", &[1, 1, 1]));
    let counts = concurrent_load(&gw, 4, 200);
    let slow = *counts.get("slow").unwrap_or(&0);
    assert!(slow < 30, "slow backend got {slow} of 200: {counts:?}");
}

#[test]
fn fastest_response_sends_traffic_to_a_recovered_backend_again() {
    let b = Backends::start(&["steady", "flaky"]);
    b.state(1).set_delay(Duration::from_millis(300));
    let gw = Gateway::start(&one_upstream(
        &b,
        "{ kind: fastest_response, idle_decay: 150ms }",
        &[1, 1],
    ));
    // Phase 1: flaky is slow and gets little traffic.
    let seq = sequence(&gw, 60);
    let flaky_slow = seq.iter().filter(|s| *s == "flaky").count();
    assert!(flaky_slow < 15, "slow phase: flaky got {flaky_slow} of 60");
    // Phase 2: flaky recovers; its old estimate decays toward steady's (sub-millisecond, and
    // one request at a time: about log2(16 x 300 ms / 0.3 ms) = 14 half-lives, 2 s), it is
    // tried, and wins traffic back.
    b.state(1).set_delay(Duration::ZERO);
    let before = b.requests(1);
    let c = client();
    let recovered = poll_until(Duration::from_secs(10), || {
        for _ in 0..20 {
            get(&c, &gw.url("/"));
        }
        b.requests(1) - before >= 20
    });
    assert!(
        recovered,
        "flaky got only {} requests after recovering",
        b.requests(1) - before
    );
}

#[test]
fn consistent_hash_keeps_a_key_on_one_backend() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&one_upstream(
        &b,
        "{ kind: consistent_hash, key: \"header:x-user\" }",
        &[1, 1, 1],
    ));
    let c = client();
    let mut owners = HashMap::new();
    for user in 0..40 {
        let key = format!("user-{user}");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let r = c.get(gw.url("/")).header("x-user", &key).send().unwrap();
            seen.insert(r.headers()["x-backend"].to_str().unwrap().to_string());
        }
        assert_eq!(seen.len(), 1, "key {key} moved between backends: {seen:?}");
        owners.insert(key, seen.into_iter().next().unwrap());
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 2,
        "40 keys should spread over several backends: {owners:?}"
    );
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&one_upstream(&b, "ip_hash", &[1, 1, 1]));
    let seq = sequence(&gw, 20);
    assert!(
        seq.iter().all(|s| s == &seq[0]),
        "one client, one backend: {seq:?}"
    );
}

/// Slow phase then recovery, sequential requests: the recovered backend must get `wanted`
/// requests within `within`. Returns the requests it got in the slow phase (of 60).
fn slow_then_recovered(strategy: &str, steady_ms: u64, wanted: u64, within: Duration) -> usize {
    let b = Backends::start(&["steady", "flaky"]);
    for (i, ms) in [(0, steady_ms), (1, 300)] {
        b.state(i).set_delay(Duration::from_millis(ms));
        b.state(i).set_health_delay(Duration::from_millis(ms));
    }
    let gw = Gateway::start(&one_upstream(&b, strategy, &[1, 1]));
    let seq = sequence(&gw, 60);
    let flaky_slow = seq.iter().filter(|s| *s == "flaky").count();
    b.state(1).set_delay(Duration::from_millis(steady_ms));
    b.state(1)
        .set_health_delay(Duration::from_millis(steady_ms));
    let before = b.requests(1);
    let c = client();
    let recovered = poll_until(within, || {
        for _ in 0..10 {
            get(&c, &gw.url("/"));
        }
        b.requests(1) - before >= wanted
    });
    assert!(
        recovered,
        "flaky got only {} requests within {within:?} of recovering ({strategy})",
        b.requests(1) - before
    );
    flaky_slow
}

#[test]
fn adaptive_sends_traffic_to_a_recovered_backend_again() {
    // Nothing measures flaky but client requests: its estimate decays toward steady's with
    // the default 150 ms half-life, it is tried, answers fast, and wins its share back.
    let slow_phase = slow_then_recovered("adaptive", 0, 20, Duration::from_secs(10));
    assert!(slow_phase < 15, "slow phase: flaky got {slow_phase} of 60");
}

#[test]
fn health_probes_find_a_recovered_backend_without_client_requests() {
    // A 60 s idle decay alone would take minutes to try flaky again. Every 100 ms the health
    // probe measures it: 300 ms while it is slow (it stays out: at most the request or two
    // sent before it was measured), then 20 ms like steady once it recovers.
    let strategy = "{ kind: adaptive, idle_decay: 60s }\n    health_check: \
                    { kind: http, path: /healthz, interval: 100ms, timeout: 2s }";
    let slow_phase = slow_then_recovered(strategy, 20, 5, Duration::from_secs(6));
    assert!(slow_phase <= 2, "slow phase: flaky got {slow_phase} of 60");
}

/// Sequential requests for 3 s over two fast backends and one at 300 ms, all answered once:
/// (answers that came from the slow one, requests that reached it in those 3 s).
fn probes_of_a_slow_backend(strategy: &str) -> (usize, u64) {
    let b = Backends::start(&["fast1", "fast2", "slow"]);
    b.state(2).set_delay(Duration::from_millis(300));
    let gw = Gateway::start(&one_upstream(&b, strategy, &[1, 1, 1]));
    let c = client();
    // Until every backend has answered once, an unmeasured one costs what the others cost
    // (the slow one too, and the fast ones then cost the slow one's 300 ms).
    let measured = poll_until(Duration::from_secs(10), || {
        get(&c, &gw.url("/"));
        (0..3).all(|i| b.requests(i) > 0)
    });
    assert!(measured, "a backend never answered");
    let before = b.arrivals(2);
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while std::time::Instant::now() < end {
        let (status, backend) = get(&c, &gw.url("/"));
        assert_eq!(status, 200, "every request is answered");
        answered += usize::from(backend == "slow");
    }
    (answered, b.arrivals(2) - before)
}

#[test]
fn a_probe_of_a_slow_backend_is_cut_short_and_answered_by_another() {
    // With a 50 ms idle decay the slow backend is tried again about every 0.7 s. Each try
    // waits 5 ms (the floor: the fast ones answer in well under 1.5 ms), then goes elsewhere.
    let (answered, reached) = probes_of_a_slow_backend("{ kind: adaptive, idle_decay: 50ms }");
    assert!(
        reached >= 2,
        "the slow backend was tried {reached} times in 3 s"
    );
    assert_eq!(
        answered, 0,
        "a client waited for the slow backend ({reached} tries)"
    );
    // Without the deadline the same tries are answered by the slow backend, 300 ms each.
    let (answered, reached) =
        probes_of_a_slow_backend("{ kind: adaptive, idle_decay: 50ms, probe_deadline: false }");
    assert!(
        answered >= 2,
        "without a deadline: {answered} answers of {reached} tries"
    );
}
