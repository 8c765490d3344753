//! Upstream keep-alive through the real gateway: a pooled connection is taken again for the
//! next request to the same backend, and never for another backend; an idle connection is
//! closed at its idle timeout, one the backend closed is not used, and a full pool closes its
//! oldest idle connection.
//!
//! The pool checks that a connection it hands out goes to the requested peer (vendor patch 11
//! compares the address recorded at connect instead of calling `getpeername`). If that check
//! said "no" when it should say "yes", every request would open a new connection; if it said
//! "yes" when it should say "no", a request could reach the wrong backend.

mod support;
use std::time::{Duration, Instant};
use support::raw_http::RawBackend;
use support::*;

const REQUESTS: usize = 200;

fn config(b: &Backends) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
access_log: off
routes:
  - {{ name: one, match: {{ path: {{ prefix: /one/ }} }}, upstream: one }}
  - {{ name: two, match: {{ path: {{ prefix: /two/ }} }}, upstream: two }}
upstreams:
  - {{ name: one, backends: [{{ address: "{one}" }}] }}
  - {{ name: two, backends: [{{ address: "{two}" }}] }}
"#,
        one = b.addr(0),
        two = b.addr(1),
    )
}

#[test]
fn sequential_requests_reuse_one_upstream_connection_per_backend() {
    let b = Backends::start(&["one", "two"]);
    let gw = Gateway::start(&config(&b));
    let c = client();
    for i in 0..REQUESTS {
        let (path, want) = if i % 2 == 0 {
            ("/one/x", "one")
        } else {
            ("/two/x", "two")
        };
        let (status, backend) = get(&c, &gw.url(path));
        assert_eq!((status, backend.as_str()), (200, want), "request {i}");
    }
    assert_eq!(b.requests(0) as usize, REQUESTS / 2);
    assert_eq!(b.requests(1) as usize, REQUESTS / 2);
    // One connection each when every reuse succeeds; a few spare for a pooled connection that
    // a race dropped (pingora issue #201). Without reuse this would be 100 each.
    for i in 0..2 {
        let conns = b.state(i).connections();
        assert!(
            (1..=3).contains(&conns),
            "backend {i}: {conns} connections for {} requests",
            REQUESTS / 2
        );
    }
}

fn counting_config(backends: &[&RawBackend], extra: &str) -> String {
    let mut routes = String::new();
    let mut upstreams = String::new();
    for (i, b) in backends.iter().enumerate() {
        routes += &format!(
            "  - {{ name: r{i}, match: {{ path: {{ prefix: /{i}/ }} }}, upstream: u{i} }}\n"
        );
        upstreams += &format!(
            "  - {{ name: u{i}, retry: {{ attempts: 0 }}, timeouts: {{ idle: 600ms }}, backends: [{{ address: \"{}\" }}] }}\n",
            b.addr
        );
    }
    format!(
        "{extra}listeners:\n  - {{ name: web, address: \"{{listen}}\" }}\naccess_log: off\nroutes:\n{routes}upstreams:\n{upstreams}"
    )
}

#[test]
fn an_idle_upstream_connection_is_closed_at_its_idle_timeout_without_traffic() {
    let b = RawBackend::start("one", None);
    let gw = Gateway::start(&counting_config(&[&b], ""));
    let c = client();
    assert_eq!(get(&c, &gw.url("/0/x")), (200, "one".to_string()));
    assert_eq!(get(&c, &gw.url("/0/x")), (200, "one".to_string()));
    assert_eq!((b.accepted(), b.open()), (1, 1), "one pooled connection");
    // Nothing else reaches the gateway: the pool itself must close the connection once it
    // has been idle for 600 ms (its sweep runs every second).
    let idle = Instant::now();
    assert!(
        poll_until(Duration::from_secs(5), || b.open() == 0),
        "the idle connection was still open after 5 s"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(500),
        "closed before its idle timeout"
    );
    assert_eq!(get(&c, &gw.url("/0/x")), (200, "one".to_string()));
    assert_eq!(b.accepted(), 2);
}

#[test]
fn a_connection_the_backend_closed_while_idle_is_never_used_again() {
    let b = RawBackend::start("closer", Some(Duration::from_millis(50)));
    let gw = Gateway::start(&counting_config(&[&b], ""));
    let c = client();
    // A POST is not replayed: one sent on the closed connection would fail with a 502. Each
    // request waits until the backend has closed the last connection (a request that crosses
    // the close on the wire is the race every keep-alive client has, which no pool can see).
    for i in 0..30 {
        assert!(poll_until(Duration::from_secs(5), || b.open() == 0));
        let r = c.post(gw.url("/0/x")).send().expect("POST");
        assert_eq!(r.status().as_u16(), 200, "request {i}");
        assert_eq!(r.text().expect("body"), "closer", "request {i}");
    }
    assert_eq!(b.accepted(), 30);
}

#[test]
fn a_full_pool_closes_its_oldest_idle_connection() {
    let b: Vec<RawBackend> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| RawBackend::start(n, None))
        .collect();
    let refs: Vec<&RawBackend> = b.iter().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let server = format!(
        "server: {{ threads: 1, pid_file: {d}/p.pid, upgrade_sock: {d}/u.sock, upstream_keepalive_pool_size: 2 }}\n"
    );
    let gw = Gateway::start(&counting_config(&refs, &server));
    let c = client();
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        assert_eq!(
            get(&c, &gw.url(&format!("/{i}/x"))),
            (200, name.to_string())
        );
    }
    // Room for two: a's and b's connections, the oldest, are closed; c's and d's stay.
    assert!(
        poll_until(Duration::from_secs(5), || b[0].open() == 0
            && b[1].open() == 0),
        "the oldest idle connections were not evicted"
    );
    assert_eq!((b[2].open(), b[3].open()), (1, 1));
    assert_eq!(get(&c, &gw.url("/3/x")), (200, "d".to_string()));
    assert_eq!(b[3].accepted(), 1, "d's pooled connection was reused");
}
