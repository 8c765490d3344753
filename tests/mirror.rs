//! Request mirroring end to end: copies reach the mirror upstream with the same body, in the
//! configured share, bounded by their concurrency cap and body size, and a slow or dead mirror
//! never delays or fails the real request.

mod support;
use std::time::{Duration, Instant};
use support::*;

fn config(b: &Backends, mirror: &Backends, dead: u16) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes:
  - {{ name: all, match: {{ path: {{ prefix: /all }} }}, upstream: main, mirror: {{ upstream: shadow, max_concurrent: 1000 }} }}
  - {{ name: half, match: {{ path: {{ prefix: /half }} }}, upstream: main, mirror: {{ upstream: shadow, percent: 50, max_concurrent: 1000 }} }}
  - {{ name: capped, match: {{ path: {{ prefix: /capped }} }}, upstream: main, mirror: {{ upstream: shadow, max_concurrent: 5 }} }}
  - {{ name: dead, match: {{ path: {{ prefix: /dead }} }}, upstream: main, mirror: {{ upstream: nowhere }} }}
  - {{ name: plain, match: {{ path: {{ prefix: /plain }} }}, upstream: main }}
upstreams:
  - name: main
    backends:
{}
  - name: shadow
    backends:
{}
  - name: nowhere
    backends: [{{ address: "127.0.0.1:{dead}" }}]
"#,
        backends_yaml(&[b.addr(0), b.addr(1)]),
        backends_yaml(&[mirror.addr(0)]),
    )
}

fn copies(gw: &Gateway, route: &str, result: &str) -> f64 {
    gw.metric_sum(
        "portcullis_mirror_requests_total",
        &[("route", route), ("result", result)],
    )
}

/// Wait until `route`'s copies add up to `n` (mirrored + dropped + failed).
fn settled(gw: &Gateway, route: &str, n: f64) -> bool {
    poll_until(Duration::from_secs(20), || {
        ["mirrored", "dropped", "failed"]
            .iter()
            .map(|r| copies(gw, route, r))
            .sum::<f64>()
            == n
    })
}

/// `n` POSTs of distinct bodies to `path` from 4 clients: (the bodies' CRC sum, every answer's
/// latency, sorted).
fn post_all(gw: &Gateway, path: &str, n: usize) -> (u64, Vec<Duration>) {
    let url = gw.url(path);
    let results = std::sync::Mutex::new((0u64, Vec::new()));
    std::thread::scope(|s| {
        for t in 0..4 {
            let (url, results) = (&url, &results);
            s.spawn(move || {
                let c = client();
                for i in (t..n).step_by(4) {
                    let body: Vec<u8> = (0..100 + i * 37).map(|j| (i * 7 + j) as u8).collect();
                    let crc = u64::from(crc32fast::hash(&body));
                    let start = Instant::now();
                    let r = c.post(url.as_str()).body(body).send().expect("answer");
                    assert_eq!(r.status(), 200);
                    let took = start.elapsed();
                    let mut g = results.lock().unwrap();
                    g.0 += crc;
                    g.1.push(took);
                }
            });
        }
    });
    let (crcs, mut latencies) = results.into_inner().unwrap();
    latencies.sort();
    (crcs, latencies)
}

/// p50, p99 and max of sorted `l`, in ms.
fn quantiles(l: &[Duration]) -> [f64; 3] {
    let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    [at(0.5), at(0.99), at(1.0)]
}

#[test]
fn copies_carry_the_body_and_a_slow_mirror_never_delays_the_real_request() {
    let b = Backends::start(&["a", "b"]);
    let m = Backends::start(&["m"]);
    let dead = DeadPort::new();
    let gw = Gateway::start(&config(&b, &m, dead.port));
    m.state(0).set_delay(Duration::from_secs(2));

    // Every request copied to a mirror that takes 2 s: the real answers stay fast. The same
    // requests on a route without a mirror, in the same run, for comparison.
    let (_, plain) = post_all(&gw, "/plain", 100);
    let (crcs, mirrored) = post_all(&gw, "/all", 100);
    let (qp, qm) = (quantiles(&plain), quantiles(&mirrored));
    eprintln!("real answers, ms [p50, p99, max]: without mirror {qp:.2?}, mirrored to a 2 s backend {qm:.2?}");
    assert!(qm[2] < 1_000.0, "slowest real answer {qm:?} ms");
    assert!(settled(&gw, "all", 100.0));
    assert_eq!(copies(&gw, "all", "mirrored"), 100.0);
    assert_eq!(m.arrivals(0), 100);
    assert_eq!(m.state(0).posts(), 100);
    assert_eq!(
        m.state(0).body_crcs(),
        crcs,
        "the copies carry the same bodies"
    );

    // A body over max_body (64 KiB) is not copied.
    let big = vec![b'x'; 100 * 1024];
    let r = client().post(gw.url("/all")).body(big).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(settled(&gw, "all", 101.0));
    assert_eq!(copies(&gw, "all", "dropped"), 1.0);

    // At most 5 copies in flight: the rest of a quick burst is dropped.
    let (_, latencies) = post_all(&gw, "/capped", 60);
    assert!(quantiles(&latencies)[2] < 1_000.0, "{latencies:?}");
    assert!(settled(&gw, "capped", 60.0));
    let mirrored = copies(&gw, "capped", "mirrored");
    assert!((5.0..=20.0).contains(&mirrored), "mirrored {mirrored}");
    assert_eq!(copies(&gw, "capped", "dropped"), 60.0 - mirrored);
}

#[test]
fn half_the_requests_are_copied_and_a_dead_mirror_fails_only_its_copies() {
    let b = Backends::start(&["a", "b"]);
    let m = Backends::start(&["m"]);
    let dead = DeadPort::new();
    let gw = Gateway::start(&config(&b, &m, dead.port));
    let c = client();
    for _ in 0..1_000 {
        assert_eq!(get(&c, &gw.url("/half")).0, 200);
    }
    // The copies of sampled requests arrive; poll until their count stops moving.
    let mut last = -1.0;
    assert!(poll_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = copies(&gw, "half", "mirrored");
        std::mem::replace(&mut last, now) == now
    }));
    assert!((430.0..=570.0).contains(&last), "copied {last} of 1000");
    assert_eq!(m.arrivals(0) as f64, last);
    assert_eq!(
        copies(&gw, "half", "failed") + copies(&gw, "half", "dropped"),
        0.0
    );

    for _ in 0..10 {
        assert_eq!(get(&c, &gw.url("/dead")).0, 200);
    }
    assert!(settled(&gw, "dead", 10.0));
    assert_eq!(copies(&gw, "dead", "failed"), 10.0);
}

#[test]
fn mirror_settings_are_checked() {
    let b = Backends::start(&["a"]);
    let yaml = format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
routes: [{{ name: r, upstream: main, mirror: {{ upstream: nope, percent: 120, max_concurrent: 0 }} }}]
upstreams: [{{ name: main, backends: [{{ address: "{}" }}] }}]
"#,
        b.addr(0)
    );
    let (code, out) = check_config(&yaml);
    assert_ne!(code, 0);
    for key in ["mirror.upstream", "mirror.percent", "mirror.max_concurrent"] {
        assert!(out.contains(&format!("routes[0].{key}")), "{key}: {out}");
    }
}
