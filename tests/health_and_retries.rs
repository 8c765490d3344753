//! Health checks, backups, 503 when nothing is healthy, and retries on refused connections.

mod support;
use std::time::{Duration, Instant};
use support::*;

const INTERVAL_MS: u64 = 100;
const UNHEALTHY_THRESHOLD: u64 = 2;

fn health_config(b: &Backends, backups: &[usize], kind: &str) -> String {
    let path = if kind == "http" {
        "\n      path: /healthz"
    } else {
        ""
    };
    let backends: String = (0..b.len())
        .map(|i| {
            format!(
                "      - {{ address: \"{}\", backup: {} }}\n",
                b.addr(i),
                backups.contains(&i)
            )
        })
        .collect();
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    retry: {{ attempts: 0 }}
    health_check:
      kind: {kind}{path}
      interval: {INTERVAL_MS}ms
      timeout: 200ms
      healthy_threshold: 1
      unhealthy_threshold: {UNHEALTHY_THRESHOLD}
    backends:
{backends}"#
    )
}

fn healthy_gauge(gw: &Gateway, addr: std::net::SocketAddr) -> f64 {
    gw.metric_sum(
        "portcullis_backend_healthy",
        &[("backend", &addr.to_string())],
    )
}

#[test]
fn a_killed_backend_leaves_rotation_within_interval_times_threshold_and_returns() {
    let mut b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&health_config(&b, &[], "tcp"));
    let c = client();
    assert!(poll_until(Duration::from_secs(5), || healthy_gauge(
        &gw,
        b.addr(1)
    ) == 1.0));

    b.stop(1);
    let stopped = Instant::now();
    assert!(
        poll_until(Duration::from_secs(5), || healthy_gauge(&gw, b.addr(1))
            == 0.0),
        "b never marked unhealthy"
    );
    // The verdict flips after `threshold` failed probes, one per interval. How fast that is
    // depends on the machine's load, so it is reported, not asserted: the behaviour checked
    // is that the backend leaves (within the deadline above) and comes back.
    eprintln!(
        "b marked unhealthy after {:?} (interval {INTERVAL_MS} ms x threshold {UNHEALTHY_THRESHOLD})",
        stopped.elapsed()
    );
    // Out of rotation: with no retries configured, every request still succeeds.
    for _ in 0..30 {
        let (status, backend) = get(&c, &gw.url("/"));
        assert_eq!(status, 200);
        assert_ne!(backend, "b");
    }

    b.restart(1);
    assert!(
        poll_until(Duration::from_secs(5), || {
            (0..6).any(|_| get(&c, &gw.url("/")).1 == "b")
        }),
        "b never returned to rotation"
    );
    assert!(gw.stderr().contains("is unhealthy"), "transition logged");
    assert!(gw.stderr().contains("is healthy again"), "recovery logged");
    assert_eq!(
        gw.metric_sum(
            "portcullis_backend_health_transitions_total",
            &[("backend", &b.addr(1).to_string()), ("to", "unhealthy")]
        ),
        1.0
    );
}

#[test]
fn http_check_uses_status_of_health_endpoint() {
    let b = Backends::start(&["a", "b"]);
    let gw = Gateway::start(&health_config(&b, &[], "http"));
    let c = client();
    b.state(0).set_health_status(503);
    assert!(poll_until(Duration::from_secs(5), || healthy_gauge(
        &gw,
        b.addr(0)
    ) == 0.0));
    for _ in 0..10 {
        let r = c.get(gw.url("/")).send().unwrap();
        let status = r.status().as_u16();
        let backend = header_of(&r, "x-backend");
        let body = r.text().unwrap_or_default();
        assert_eq!(backend, "b", "{status} {body}\n{}", gw.stderr());
    }
    b.state(0).set_health_status(200);
    assert!(poll_until(Duration::from_secs(5), || healthy_gauge(
        &gw,
        b.addr(0)
    ) == 1.0));
}

#[test]
fn backups_take_over_when_no_primary_is_healthy_and_then_503() {
    let mut b = Backends::start(&["p1", "p2", "backup"]);
    let gw = Gateway::start(&health_config(&b, &[2], "tcp"));
    let c = client();
    for _ in 0..12 {
        assert_ne!(
            get(&c, &gw.url("/")).1,
            "backup",
            "backup idle while primaries are healthy"
        );
    }
    b.stop(0);
    b.stop(1);
    assert!(
        poll_until(Duration::from_secs(5), || get(&c, &gw.url("/"))
            == (200, "backup".to_string())),
        "backup never took over"
    );
    for _ in 0..10 {
        assert_eq!(get(&c, &gw.url("/")), (200, "backup".to_string()));
    }
    b.stop(2);
    assert!(poll_until(Duration::from_secs(5), || get(&c, &gw.url("/"))
        .0
        == 503));
    let r = c.get(gw.url("/")).send().unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(status, 503, "{body} {}", gw.stderr());
    assert!(
        body.contains("no backend of upstream pool may serve") && body.contains("3 unhealthy"),
        "short reason in the body: {body}"
    );
    // A primary coming back wins over the (also returning) backup.
    b.restart(0);
    b.restart(2);
    assert!(poll_until(Duration::from_secs(5), || get(&c, &gw.url("/"))
        .1
        == "p1"));
}

#[test]
fn a_refused_connection_is_retried_on_another_backend() {
    let b = Backends::start(&["live"]);
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    backends:
      - {{ address: "127.0.0.1:{dead}" }}
      - {{ address: "{live}" }}
"#,
        live = b.addr(0)
    ));
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &gw.url("/")), (200, "live".to_string()));
    }
    assert_eq!(b.requests(0), 20);
    let dead_label = format!("127.0.0.1:{dead}");
    let errors = gw.metric_sum(
        "portcullis_upstream_connect_errors_total",
        &[("backend", &dead_label)],
    );
    let retries = gw.metric_sum("portcullis_upstream_retries_total", &[("upstream", "pool")]);
    assert!(
        errors >= 10.0,
        "round robin sends every other request to the dead backend: {errors}"
    );
    assert_eq!(errors, retries, "each refused connection was retried");
}

/// A POST whose connection was refused was never sent: it is retried on another backend,
/// and reaches a backend exactly once. A POST that was sent is never retried (below).
#[test]
fn a_post_that_was_never_sent_is_retried_once_elsewhere() {
    let b = Backends::start(&["live"]);
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    retry: {{ budget: off }}
    backends: [{{ address: "127.0.0.1:{dead}" }}, {{ address: "{live}" }}]
"#,
        live = b.addr(0)
    ));
    let c = client();
    for i in 0..40 {
        let r = c
            .post(gw.url("/"))
            .body(format!("order {i}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "POST {i}");
    }
    assert_eq!(b.requests(0), 40, "each POST reached the live backend once");
    let retries = gw.metric_sum("portcullis_upstream_retries_total", &[]);
    assert!(retries >= 15.0, "the refused half was retried: {retries}");
}

/// A backend is killed under a mixed GET/POST load. A POST that was never sent (its connect
/// was refused) never fails: it is retried elsewhere. A POST is never sent twice: the backends
/// together see at most one arrival per POST.
#[test]
fn killing_a_backend_under_mixed_load_fails_no_unsent_post_and_repeats_none() {
    let mut b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    retry: {{ budget: off, backoff: off }}
    backends: [{{ address: "{}" }}, {{ address: "{}" }}, {{ address: "{}" }}]
"#,
        b.addr(0),
        b.addr(1),
        b.addr(2)
    ));
    let states: Vec<_> = (0..3).map(|i| b.state(i)).collect();
    let url = gw.url("/");
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let (url, sent, results) = (&url, &sent, &results);
            s.spawn(move || {
                let c = client();
                for i in 0..150 {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let post = (t + i) % 2 == 0;
                    let r = if post {
                        c.post(url).body(format!("{t}-{i}")).send()
                    } else {
                        c.get(url).send()
                    };
                    let ok = r.is_ok_and(|r| r.status().as_u16() == 200);
                    results.lock().unwrap().push((post, ok));
                }
            });
        }
        assert!(poll_until(Duration::from_secs(10), || sent
            .load(std::sync::atomic::Ordering::Relaxed)
            > 300));
        b.stop(1);
    });
    let results = results.into_inner().unwrap();
    let posts = results.iter().filter(|(p, _)| *p).count() as u64;
    let failed_posts = results.iter().filter(|(p, ok)| *p && !ok).count() as u64;
    let post_arrivals: u64 = states.iter().map(|s| s.posts()).sum();
    // What may fail: a POST the killed backend received and never answered, or one written on
    // a pooled connection that the backend closed at that instant. The gateway cannot know
    // whether the backend read the latter, so, like nginx, it does not resend it: at most one
    // per pooled connection to the killed backend, and 8 clients keep at most 8 in the pool.
    let lost_at_b = states[1].arrivals() - states[1].requests();
    assert!(
        failed_posts <= lost_at_b + 8,
        "{failed_posts} POSTs failed; the killed backend had {lost_at_b} unanswered requests"
    );
    assert!(
        post_arrivals <= posts,
        "a POST reached a backend twice: {post_arrivals} arrivals for {posts} POSTs"
    );
    assert!(post_arrivals >= posts - failed_posts);
    let failed_gets = results.iter().filter(|(p, ok)| !*p && !ok).count();
    eprintln!(
        "{posts} POSTs ({failed_posts} failed), {failed_gets} GETs failed, {lost_at_b} lost at the killed backend"
    );
}

/// A POST that failed after it was sent (the backend took it and timed out) is not retried:
/// the backend may have acted on it.
#[test]
fn a_post_that_was_sent_is_not_retried() {
    let b = Backends::start(&["slow", "other"]);
    b.state(0).set_delay(Duration::from_secs(3));
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    timeouts: {{ read: 300ms }}
    retry: {{ budget: off }}
    backends: [{{ address: "{a}" }}, {{ address: "{b}" }}]
"#,
        a = b.addr(0),
        b = b.addr(1)
    ));
    let c = client();
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            c.post(gw.url("/"))
                .body("x")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        2,
        "the POSTs sent to the slow backend time out and stay failed: {statuses:?}"
    );
    assert_eq!(b.arrivals(0) + b.arrivals(1), 4, "no POST was sent twice");
}

#[test]
fn non_idempotent_requests_are_not_retried() {
    let b = Backends::start(&["live"]);
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    backends: [{{ address: "127.0.0.1:{dead}" }}]
"#
    ));
    let r = client().post(gw.url("/")).body("x").send().unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "clients must not reuse the failed connection"
    );
    assert_eq!(b.requests(0), 0);
}

fn header_of(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
