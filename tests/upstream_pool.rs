//! Upstream keep-alive through the real gateway: a pooled connection is taken again for the
//! next request to the same backend, and never for another backend.
//!
//! The pool checks that a connection it hands out goes to the requested peer (vendor patch 11
//! compares the address recorded at connect instead of calling `getpeername`). If that check
//! said "no" when it should say "yes", every request would open a new connection; if it said
//! "yes" when it should say "no", a request could reach the wrong backend.

mod support;
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
