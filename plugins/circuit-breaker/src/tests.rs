use super::*;
use portcullis_plugin::testing::TestEnv;
use portcullis_plugin::AttemptError;

const MS: u64 = 1_000_000;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 3,
        failure_ratio: None,
        min_requests: 10,
        window: Duration::from_secs(10),
        failure_statuses: vec![],
        open_time: Duration::from_millis(100),
        max_open_time: Duration::from_millis(350),
        half_open_requests: 2,
    }
}

#[test]
fn opens_after_consecutive_failures_and_probes_after_the_open_time() {
    let p = policy();
    let b = Breaker::new("u");
    let always = || true;
    assert_eq!(b.record(&p, true, MS, always), None);
    assert_eq!(
        b.record(&p, false, 2 * MS, always),
        None,
        "a success resets the run"
    );
    assert_eq!(b.record(&p, true, 3 * MS, always), None);
    assert_eq!(b.record(&p, true, 4 * MS, always), None);
    let t = b.record(&p, true, 5 * MS, always).unwrap();
    assert_eq!((t.0, t.1), (State::Closed, State::Open));
    assert!(!b.admit(&p, || 50 * MS).0, "open: skipped");
    // After 100 ms: half-open, two probes pass, a third waits.
    let (ok, tr) = b.admit(&p, || 106 * MS);
    assert!(ok);
    assert_eq!(tr, Some((State::Open, State::HalfOpen)));
    assert!(b.admit(&p, || 107 * MS).0);
    assert!(!b.admit(&p, || 108 * MS).0);
    assert_eq!(
        b.record(&p, false, 110 * MS, always),
        None,
        "one of two probes"
    );
    let t = b.record(&p, false, 111 * MS, always).unwrap();
    assert_eq!((t.0, t.1), (State::HalfOpen, State::Closed));
    assert!(b.admit(&p, || 112 * MS).0);
}

#[test]
fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
    let p = policy();
    let b = Breaker::new("u");
    for i in 0..3 {
        b.record(&p, true, i * MS, || true);
    }
    let mut now = 2 * MS;
    let mut periods = Vec::new();
    for _ in 0..4 {
        // Find when it lets a probe through again.
        let opened = now;
        while !b.admit(&p, || now).0 {
            now += MS;
        }
        periods.push((now - opened) / MS);
        b.record(&p, true, now, || true);
    }
    assert_eq!(
        periods,
        vec![100, 200, 350, 350],
        "doubling, capped at max_open_time"
    );
}

#[test]
fn ratio_trips_only_after_min_requests() {
    let mut p = policy();
    p.consecutive_failures = 0;
    p.failure_ratio = Some(0.5);
    let b = Breaker::new("u");
    for i in 0..4 {
        b.record(&p, false, i * MS, || true);
        assert_eq!(
            b.record(&p, true, i * MS + 1, || true),
            None,
            "below min_requests"
        );
    }
    b.record(&p, false, 5 * MS, || true);
    let t = b.record(&p, true, 6 * MS, || true).unwrap();
    assert_eq!(t.1, State::Open, "5 of 10 failed");
}

#[test]
fn the_ejection_cap_keeps_a_circuit_closed() {
    let p = policy();
    let b = Breaker::new("u");
    for i in 0..10 {
        assert_eq!(b.record(&p, true, i * MS, || false), None);
    }
    assert_eq!(b.state(), State::Closed);
}

fn outcome(
    addr: &str,
    status: u16,
    error: Option<AttemptError>,
) -> (SocketAddr, u16, Option<AttemptError>) {
    (addr.parse().unwrap(), status, error)
}

fn feed(
    f: &Arc<dyn Filter>,
    (addr, status, error): (SocketAddr, u16, Option<AttemptError>),
    size: usize,
) {
    f.on_outcome(&Outcome {
        route: "r",
        upstream: "pool",
        upstream_size: size,
        backend: Some(addr),
        status,
        latency: Duration::from_millis(1),
        error,
        retried: false,
        attempt: 1,
    });
}

fn candidate(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

#[test]
fn filter_skips_open_backends_never_counts_4xx_and_caps_ejection() {
    let env = TestEnv::new(&["pool"]);
    let f = factory(
        &portcullis_plugin::serde_yaml::from_str(
            "{consecutive_failures: 2, max_ejection_percent: 50}",
        )
        .unwrap(),
        &env.context("r"),
    )
    .unwrap();
    let a = "10.0.0.1:80";
    let b = "10.0.0.2:80";
    let accept = |addr: &str| {
        f.accept_backend(&Candidate {
            addr: candidate(addr),
            upstream: "pool",
            upstream_size: 3,
        })
    };
    for _ in 0..5 {
        feed(&f, outcome(a, 404, None), 3);
    }
    assert!(accept(a), "4xx is never a failure");
    feed(&f, outcome(a, 503, None), 3);
    feed(&f, outcome(a, 0, Some(AttemptError::Connect)), 3);
    assert!(!accept(a), "opened after 2 failures");
    let ejected = env.ejections();
    assert_eq!(ejected.len(), 1, "{ejected:?}");
    assert_eq!(
        (ejected[0].0.as_str(), ejected[0].1),
        ("pool", candidate(a))
    );
    assert!(
        ejected[0].2 > Duration::from_secs(4) && ejected[0].2 <= Duration::from_secs(5),
        "ejected for the open period: {:?}",
        ejected[0].2
    );
    assert_eq!(
        f.describe_backend(candidate(a)),
        Some(("circuit", "open".into()))
    );
    // 50% of 3 backends = 1: b may not open while a is open.
    for _ in 0..5 {
        feed(&f, outcome(b, 500, None), 3);
    }
    assert!(accept(b), "ejection cap reached");
    assert_eq!(env.ejections().len(), 1, "b was not ejected");
    assert_eq!(
        env.metric("portcullis_circuit_breaker_state", &[("backend", a)]),
        1.0
    );
    assert_eq!(
        env.metric(
            "portcullis_circuit_breaker_transitions_total",
            &[("backend", a), ("to", "open")]
        ),
        1.0
    );
    assert_eq!(
        env.metric(
            "portcullis_circuit_breaker_transitions_total",
            &[("backend", b)]
        ),
        0.0
    );
}

#[test]
fn state_survives_a_rebuild() {
    let env = TestEnv::new(&["pool"]);
    let cfg = portcullis_plugin::serde_yaml::from_str("{consecutive_failures: 1}").unwrap();
    let f1 = factory(&cfg, &env.context("r")).unwrap();
    feed(&f1, outcome("10.0.0.1:80", 500, None), 4);
    let f2 = factory(&cfg, &env.context("r")).unwrap();
    assert!(!f2.accept_backend(&Candidate {
        addr: candidate("10.0.0.1:80"),
        upstream: "pool",
        upstream_size: 4
    }));
}

#[test]
fn bad_config_names_the_key() {
    let env = TestEnv::new(&[]);
    for (yaml, path) in [
        ("{failure_ratio: 1.5}", "failure_ratio"),
        ("{failure_statuses: [404]}", "failure_statuses[0]"),
        ("{half_open_requests: 0}", "half_open_requests"),
        ("{max_ejection_percent: 150}", "max_ejection_percent"),
        ("{open_time: 10s, max_open_time: 1s}", "max_open_time"),
        ("{open_tme: 10s}", "open_tme"),
    ] {
        let e = factory(
            &portcullis_plugin::serde_yaml::from_str(yaml).unwrap(),
            &env.context("r"),
        )
        .err()
        .unwrap();
        assert_eq!(e.path, path, "{yaml}: {e}");
    }
}

#[test]
fn declares_every_hook_it_implements() {
    let env = TestEnv::new(&["pool"]);
    let f = factory(
        &portcullis_plugin::serde_yaml::from_str("{}").unwrap(),
        &env.context("r"),
    )
    .unwrap();
    portcullis_plugin::testing::assert_hooks_declared(f.as_ref());
}
