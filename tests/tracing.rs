//! W3C Trace Context through the gateway: the backend sees the client's trace with a new
//! parent id (or a new trace when there was none or it was malformed), `tracestate` passes
//! through, and the access log names the trace.

mod support;

use support::{Backends, Gateway};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(b: &Backends) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
access_log: {{ file: "{{dir}}/access.log" }}
routes:
  - {{ name: all, upstream: pool }}
upstreams:
  - {{ name: pool, backends: [{{ address: "{a}" }}] }}
"#,
        a = b.addr(0)
    )
}

/// GET / with `headers`; the `traceparent` and `tracestate` the backend saw.
fn seen(g: &Gateway, headers: &[(&str, &str)]) -> (String, String) {
    let mut req = support::client().get(g.url("/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200);
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (h("x-seen-traceparent"), h("x-seen-tracestate"))
}

fn trace_id(tp: &str) -> &str {
    tp.split('-').nth(1).unwrap_or("")
}

#[test]
fn the_trace_is_kept_or_started_and_logged() {
    let b = Backends::start(&["a"]);
    let g = Gateway::start(&config(&b));
    // Kept: same trace id and flags, a new parent id; tracestate untouched.
    let (tp, ts) = seen(&g, &[("traceparent", PARENT), ("tracestate", "vendor=abc")]);
    assert_eq!(tp.len(), 55, "{tp}");
    assert_eq!(&tp[..36], &PARENT[..36]);
    assert_eq!(&tp[52..], "-01");
    assert_ne!(
        &tp[36..52],
        &PARENT[36..52],
        "the gateway's span is the new parent"
    );
    assert_eq!(ts, "vendor=abc");
    // Started: none sent, or a malformed one.
    let (fresh, _) = seen(&g, &[]);
    let (replaced, _) = seen(&g, &[("traceparent", "00-zz-nope-01")]);
    for tp in [&fresh, &replaced] {
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
        assert_ne!(trace_id(tp), trace_id(PARENT));
    }
    assert_ne!(
        trace_id(&fresh),
        trace_id(&replaced),
        "each new trace has its own id"
    );
    // The access log names each request's trace.
    let log_path = g.dir.path().join("access.log");
    let ids = [trace_id(&tp), trace_id(&fresh), trace_id(&replaced)];
    let logged = support::poll_until(std::time::Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        ids.iter()
            .all(|id| log.contains(&format!("\"trace_id\":\"{id}\"")))
    });
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}
