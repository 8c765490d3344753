//! Metrics match the traffic sent; access-log lines and request ids are right.

mod support;
use support::*;

fn config(b: &Backends, access_log: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: {access_log}
routes:
  - {{ name: api, match: {{ path: {{ prefix: /api }} }}, upstream: pool }}
upstreams:
  - name: pool
    backends:
{}"#,
        backends_yaml(&[b.addr(0), b.addr(1), b.addr(2)])
    )
}

#[test]
fn metrics_counters_match_the_traffic_sent() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b, "off"));
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, &gw.url("/api/x")).0, 200);
    }
    for _ in 0..6 {
        let r = c.post(gw.url("/api/items")).body("12345").send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    for _ in 0..4 {
        assert_eq!(get(&c, &gw.url("/nope")).0, 404);
    }
    let text = gw.metrics();
    let sum = |labels: &[(&str, &str)]| metric_sum(&text, "portcullis_requests_total", labels);
    assert_eq!(
        sum(&[("route", "api"), ("method", "GET"), ("status", "2xx")]),
        30.0,
        "{text}"
    );
    assert_eq!(
        sum(&[("route", "api"), ("method", "POST"), ("status", "2xx")]),
        6.0
    );
    assert_eq!(sum(&[("route", ""), ("status", "4xx")]), 4.0);
    for i in 0..3 {
        let per_backend = sum(&[("backend", &b.addr(i).to_string())]);
        assert_eq!(
            per_backend, 12.0,
            "round robin: 36 requests over 3 backends"
        );
        assert_eq!(b.requests(i), 12);
    }
    let latency_count = metric_sum(
        &text,
        "portcullis_upstream_latency_seconds_count",
        &[("upstream", "pool")],
    );
    assert_eq!(latency_count, 36.0);
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_downstream_received_bytes_total",
            &[("route", "api")]
        ),
        30.0,
        "6 bodies of 5 bytes"
    );
    // Every answer body is the backend name and a newline: 2 bytes.
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_downstream_sent_bytes_total",
            &[("route", "api")]
        ),
        72.0
    );
    assert!(
        metric_sum(
            &text,
            "portcullis_downstream_connections_total",
            &[("listener", "web")]
        ) >= 1.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_backend_inflight",
            &[("upstream", "pool")]
        ),
        0.0,
        "all slots released"
    );
    assert_eq!(
        metric_sum(&text, "portcullis_backend_healthy", &[("upstream", "pool")]),
        3.0
    );
    assert_eq!(metric_sum(&text, "portcullis_config_generation", &[]), 1.0);
}

#[test]
fn request_ids_are_generated_kept_and_passed_upstream() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b, "off"));
    let c = client();
    let r = c.get(gw.url("/api")).send().unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(
        r.headers()["x-upstream-request-id"].to_str().unwrap(),
        id,
        "the backend saw the same id"
    );
    let r = c
        .get(gw.url("/api"))
        .header("x-request-id", "client-chosen-1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen-1");
    assert_eq!(r.headers()["x-upstream-request-id"], "client-chosen-1");
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b, "{ file: \"{dir}/access.log\" }"));
    let c = client();
    for _ in 0..5 {
        get(&c, &gw.url("/api/log?q=1"));
    }
    get(&c, &gw.url("/missing"));
    let path = gw.dir.path().join("access.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        poll_until(std::time::Duration::from_secs(5), || read().lines().count()
            == 6),
        "{}",
        read()
    );
    let text = read();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[..5] {
        assert!(l.starts_with("{\"time\":\"20"), "{l}");
        assert!(l.contains("\"method\":\"GET\""), "{l}");
        assert!(l.contains("\"path\":\"/api/log?q=1\""), "{l}");
        assert!(l.contains("\"status\":200"), "{l}");
        assert!(l.contains("\"route\":\"api\""), "{l}");
        assert!(l.contains("\"upstream\":\"pool\""), "{l}");
        assert!(l.contains("\"backend\":\"127.0.0.1:"), "{l}");
        assert!(l.contains("\"bytes_out\":2"), "{l}");
        assert!(l.contains("\"request_id\":\""), "{l}");
        assert!(l.ends_with('}'), "{l}");
    }
    assert!(
        lines[5].contains("\"status\":404") && lines[5].contains("\"route\":\"\""),
        "{}",
        lines[5]
    );
}
