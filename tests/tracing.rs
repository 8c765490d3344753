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

fn otlp_config(b: &Backends, dead: u16, endpoint: &str, ratio: f64) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
access_log: off
tracing:
  otlp: {{ endpoint: "{endpoint}", service_name: edge-gw, sampling_ratio: {ratio}, max_queue: 64 }}
routes:
  - name: api
    match: {{ path: {{ prefix: /api }} }}
    upstream: flaky
  - name: limited
    match: {{ path: {{ prefix: /limited }} }}
    upstream: pool
    filters: [{{ kind: rate_limit, rate: 1, per: minute }}]
  - {{ name: all, upstream: pool }}
upstreams:
  - {{ name: pool, backends: [{{ address: "{a}" }}] }}
  - name: flaky
    strategy: round_robin
    retry: {{ attempts: 1, backoff: off }}
    backends: [{{ address: "127.0.0.1:{dead}" }}, {{ address: "{a}" }}]
"#,
        a = b.addr(0)
    )
}

fn traced_get(g: &Gateway, path: &str, traceparent: &str) -> u16 {
    let r = support::client()
        .get(g.url(path))
        .header("traceparent", traceparent)
        .send()
        .unwrap();
    r.status().as_u16()
}

#[test]
fn each_request_is_one_span_at_the_otlp_collector() {
    let b = Backends::start(&["a"]);
    let dead = support::DeadPort::new();
    let rx = support::otlp::Receiver::start();
    let g = Gateway::start(&otlp_config(&b, dead.port, &rx.endpoint(), 1.0));
    let (tp, _) = seen(&g, &[("traceparent", PARENT)]);
    let gateway_span = tp[36..52].to_string();
    for i in 0..2 {
        let trace = format!("00-{:032x}-00f067aa0ba902b7-01", 0xa000 + i);
        assert_eq!(traced_get(&g, "/api", &trace), 200);
    }
    assert_eq!(
        traced_get(
            &g,
            "/limited",
            "00-0000000000000000000000000000b001-00f067aa0ba902b7-01"
        ),
        200
    );
    assert_eq!(
        traced_get(
            &g,
            "/limited",
            "00-0000000000000000000000000000b002-00f067aa0ba902b7-01"
        ),
        429
    );
    let all = support::poll_until(std::time::Duration::from_secs(10), || rx.spans().len() >= 5);
    let spans = rx.spans();
    assert!(all, "{spans:#?}");
    assert_eq!(spans.len(), 5, "one span per request: {spans:#?}");

    let s = spans
        .iter()
        .find(|s| s.trace_id == PARENT[3..35])
        .expect("the client's trace");
    assert_eq!(
        s.span_id, gateway_span,
        "the span the backend saw as its parent"
    );
    assert_eq!(
        s.parent_id,
        PARENT[36..52],
        "the client's span is its parent"
    );
    assert_eq!(
        (s.kind, s.service.as_str(), s.name.as_str()),
        (2, "edge-gw", "GET all")
    );
    let a = b.addr(0).to_string();
    for (k, v) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("url.path", "/"),
        ("portcullis.route", "all"),
        ("portcullis.upstream", "pool"),
        ("portcullis.backend", a.as_str()),
        ("portcullis.retries", "0"),
    ] {
        assert_eq!(s.attrs.get(k).map(String::as_str), Some(v), "{k} in {s:#?}");
    }
    let retried: Vec<_> = spans
        .iter()
        .filter(|s| s.attrs.get("portcullis.route").is_some_and(|r| r == "api"))
        .collect();
    assert_eq!(retried.len(), 2);
    assert!(
        retried
            .iter()
            .any(|s| s.attrs["portcullis.retries"] == "1" && s.attrs["portcullis.backend"] == a),
        "a retry after the dead backend: {retried:#?}"
    );
    let refused = spans
        .iter()
        .find(|s| {
            s.attrs
                .get("http.response.status_code")
                .is_some_and(|c| c == "429")
        })
        .expect("the refused request's span");
    assert_eq!(
        refused.attrs.get("portcullis.filters").map(String::as_str),
        Some("rate_limit")
    );
    assert_eq!(refused.trace_id, "0000000000000000000000000000b002");
}

#[test]
fn the_sampling_ratio_decides_from_the_trace_id() {
    let b = Backends::start(&["a"]);
    let dead = support::DeadPort::new();
    let rx = support::otlp::Receiver::start();
    let g = Gateway::start(&otlp_config(&b, dead.port, &rx.endpoint(), 0.5));
    // Ratio 0.5: exported when the trace id's low 64 bits are below 2^63.
    let out = "00-0000000000000000f000000000000001-00f067aa0ba902b7-01";
    let within = "00-00000000000000000000000000000001-00f067aa0ba902b7-01";
    assert_eq!(traced_get(&g, "/", out), 200);
    assert_eq!(traced_get(&g, "/", within), 200);
    let arrived = support::poll_until(std::time::Duration::from_secs(10), || {
        !rx.spans().is_empty()
    });
    assert!(arrived, "the sampled trace was not exported");
    // Spans leave in order: had the first been sampled, it would be here by now.
    let ids: Vec<String> = rx.spans().into_iter().map(|s| s.trace_id).collect();
    assert_eq!(ids, ["00000000000000000000000000000001"]);
}
