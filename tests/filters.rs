//! The filters through the real gateway: rate limits, circuit breaking, canaries, headers,
//! IP lists, a third-party plugin in a custom binary, retry budgets, and config errors.

mod support;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn route_config(b: &Backends, n: usize, upstream_extra: &str, route_filters: &str) -> String {
    let backends = backends_yaml(&(0..n).map(|i| b.addr(i)).collect::<Vec<_>>());
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes:
  - name: api
    upstream: pool
    filters:
{route_filters}
upstreams:
  - name: pool
    {upstream_extra}
    backends:
{backends}"#
    )
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_burst_gets_rate_plus_burst_through_and_the_rest_429_with_headers() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&route_config(
        &b,
        1,
        "",
        "      - { kind: rate_limit, rate: 10, per: minute, burst: 5 }",
    ));
    let c = client();
    let mut statuses = HashMap::new();
    let mut refused = None;
    for _ in 0..40 {
        let r = c.get(gw.url("/")).send().unwrap();
        *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
        if r.status() == 429 {
            refused = Some(r);
        }
    }
    assert_eq!(statuses.get(&200), Some(&15), "10 + burst 5: {statuses:?}");
    assert_eq!(statuses.get(&429), Some(&25), "{statuses:?}");
    assert_eq!(
        b.requests(0),
        15,
        "refused requests never reach the backend"
    );
    let r = refused.unwrap();
    let retry_after: u64 = header(&r, "retry-after").parse().unwrap();
    assert!(
        (1..=6).contains(&retry_after),
        "one token per 6 s: {retry_after}"
    );
    assert_eq!(header(&r, "ratelimit-policy"), "\"api\";q=10;w=60");
    assert_eq!(
        header(&r, "ratelimit"),
        format!("\"api\";r=0;t={retry_after}")
    );
    assert!(!header(&r, "x-request-id").is_empty());
    assert_eq!(
        gw.metric_sum("portcullis_rate_limited_total", &[("route", "api")]),
        25.0
    );
}

#[test]
fn distinct_client_keys_get_separate_buckets() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&route_config(
        &b,
        1,
        "",
        "      - { kind: rate_limit, rate: 3, per: minute, key: 'header:x-user' }",
    ));
    let c = client();
    for user in ["ann", "bob", "cid"] {
        let codes: Vec<u16> = (0..5)
            .map(|_| {
                c.get(gw.url("/"))
                    .header("x-user", user)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
            .collect();
        assert_eq!(
            codes,
            [200, 200, 200, 429, 429],
            "{user} has a bucket of its own"
        );
    }
}

#[test]
fn a_failing_backend_is_ejected_and_a_probe_closes_the_breaker_once_it_is_fixed() {
    let b = Backends::start(&["good1", "good2", "bad"]);
    let gw = Gateway::start(&route_config(
        &b,
        3,
        "strategy: round_robin",
        "      - { kind: circuit_breaker, consecutive_failures: 3, open_time: 1s, half_open_requests: 1, max_ejection_percent: 50 }",
    ));
    let c = client();
    b.state(2).set_status(500);
    // Round robin sends every third request to `bad` until its third consecutive 500.
    let mut fivexx = 0;
    for _ in 0..9 {
        if get(&c, &gw.url("/")).0 == 500 {
            fivexx += 1;
        }
    }
    assert_eq!(
        fivexx, 3,
        "exactly the threshold of failures reaches clients"
    );
    let ejected_at = b.requests(2);
    for _ in 0..30 {
        let (status, backend) = get(&c, &gw.url("/"));
        assert_eq!(status, 200);
        assert_ne!(backend, "bad");
    }
    assert_eq!(b.requests(2), ejected_at, "no traffic while open");
    assert!(
        gw.metric_sum(
            "portcullis_circuit_breaker_state",
            &[("backend", &b.addr(2).to_string())]
        ) == 1.0
    );
    // Fix it; after the open time a probe goes through and closes the circuit.
    b.state(2).set_status(200);
    let back = poll_until(Duration::from_secs(10), || {
        (0..3).any(|_| get(&c, &gw.url("/")).1 == "bad")
    });
    assert!(back, "the fixed backend never got traffic again");
    assert_eq!(
        gw.metric_sum(
            "portcullis_circuit_breaker_state",
            &[("backend", &b.addr(2).to_string())]
        ),
        0.0
    );
    let to = |s: &str| gw.metric_sum("portcullis_circuit_breaker_transitions_total", &[("to", s)]);
    assert_eq!((to("open"), to("half_open"), to("closed")), (1.0, 1.0, 1.0));
    assert!(gw.stderr().contains("-> open"), "transitions are logged");
}

#[test]
fn ejection_never_exceeds_the_cap() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let gw = Gateway::start(&route_config(
        &b,
        4,
        "strategy: round_robin",
        "      - { kind: circuit_breaker, consecutive_failures: 2, open_time: 1m, max_ejection_percent: 50 }",
    ));
    for i in 0..4 {
        b.state(i).set_status(503);
    }
    let c = client();
    for _ in 0..60 {
        get(&c, &gw.url("/"));
    }
    let open = gw.metric_sum("portcullis_circuit_breaker_state", &[("route", "api")]);
    assert_eq!(open, 2.0, "50% of 4 backends at most");
    let served: Vec<u64> = (0..4).map(|i| b.requests(i)).collect();
    assert_eq!(
        served.iter().filter(|&&n| n > 4).count(),
        2,
        "two backends keep serving: {served:?}"
    );
}

#[test]
fn when_every_candidate_is_open_the_client_gets_503_saying_so() {
    let b = Backends::start(&["only"]);
    let gw = Gateway::start(&route_config(
        &b,
        1,
        "",
        "      - { kind: circuit_breaker, consecutive_failures: 1, open_time: 1m, max_ejection_percent: 100 }",
    ));
    b.state(0).set_status(500);
    let c = client();
    assert_eq!(get(&c, &gw.url("/")).0, 500);
    // The breaker vetoes the backend at once; the control plane then takes it out of the
    // rotation. Either way the 503 says why.
    let mut last = String::new();
    let ejected = poll_until(Duration::from_secs(5), || {
        let r = c.get(gw.url("/")).send().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        last = r.text().unwrap();
        assert!(
            last.contains("refused by circuit_breaker") || last.contains("ejected"),
            "{last}"
        );
        last.contains("1 ejected by an open circuit")
    });
    assert!(ejected, "the 503 names the open circuit: {last}");
}

fn canary_config(b: &Backends, canary: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes:
  - name: api
    upstream: stable
    filters:
      - {canary}
upstreams:
  - {{ name: stable, backends: [{{ address: "{}" }}] }}
  - {{ name: canary, backends: [{{ address: "{}" }}] }}
"#,
        b.addr(0),
        b.addr(1)
    )
}

#[test]
fn a_canary_header_sends_every_request_to_the_canary() {
    let b = Backends::start(&["stable", "canary"]);
    let gw = Gateway::start(&canary_config(
        &b,
        "{ kind: canary, upstream: canary, header: { name: x-canary }, weight: 0 }",
    ));
    let c = client();
    for _ in 0..50 {
        let r = c
            .get(gw.url("/"))
            .header("x-canary", "always")
            .send()
            .unwrap();
        assert_eq!(header(&r, "x-backend"), "canary");
    }
    for _ in 0..20 {
        assert_eq!(
            get(&c, &gw.url("/")).1,
            "stable",
            "weight 0 without the header"
        );
    }
}

#[test]
fn weight_20_sends_about_a_fifth_and_sticky_clients_never_flip() {
    let b = Backends::start(&["stable", "canary"]);
    let gw = Gateway::start(&canary_config(
        &b,
        "{ kind: canary, upstream: canary, weight: 20, sticky: { cookie: pc } }",
    ));
    let c = client();
    let mut canary = 0;
    let mut first_cookie = None;
    for _ in 0..2000 {
        let r = c.get(gw.url("/")).send().unwrap();
        let set_cookie = header(&r, "set-cookie");
        let side = header(&r, "x-backend");
        assert_eq!(
            set_cookie.starts_with("pc=canary"),
            side == "canary",
            "the cookie names the side: {set_cookie}"
        );
        if side == "canary" {
            canary += 1;
        }
        first_cookie.get_or_insert((set_cookie, side));
    }
    // Binomial(2000, 0.2): mean 400, sd 17.9; 300..500 is more than 5.5 sd either way.
    assert!(
        (300..500).contains(&canary),
        "{canary} of 2000 went to the canary"
    );
    // A client sending its cookie back stays on its side.
    let (cookie, side) = first_cookie.unwrap();
    let value = cookie.split(';').next().unwrap().to_string();
    for _ in 0..100 {
        let r = c.get(gw.url("/")).header("cookie", &value).send().unwrap();
        assert_eq!(header(&r, "x-backend"), side, "a sticky client never flips");
        assert!(header(&r, "set-cookie").is_empty());
    }
}

#[test]
fn headers_and_ip_acl_filters_act() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&route_config(
        &b,
        1,
        "",
        "      - { kind: headers, response: { set: { x-served-by: portcullis }, remove: [x-backend] } }\n      - { kind: ip_acl, deny: [127.0.0.0/8] }",
    ));
    let r = client().get(gw.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 403, "loopback is denied");
    assert_eq!(
        header(&r, "x-served-by"),
        "portcullis",
        "response filters run on local answers too"
    );
    assert_eq!(b.requests(0), 0);

    let gw = Gateway::start(&route_config(
        &b,
        1,
        "",
        "      - { kind: headers, response: { set: { x-served-by: portcullis }, remove: [x-backend] } }\n      - { kind: ip_acl, allow: [127.0.0.1] }",
    ));
    let r = client().get(gw.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "x-served-by"), "portcullis");
    assert_eq!(header(&r, "x-backend"), "", "removed");
}

#[test]
fn the_example_plugin_loads_from_yaml_in_a_custom_binary_and_acts() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start_binary(
        &example_binary("custom_gateway"),
        &route_config(&b, 1, "", "      - { kind: api_key, keys: [s3cret] }"),
    );
    let c = client();
    assert_eq!(c.get(gw.url("/")).send().unwrap().status().as_u16(), 401);
    assert_eq!(
        c.get(gw.url("/"))
            .header("x-api-key", "nope")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let r = c
        .get(gw.url("/"))
        .header("x-api-key", "s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(b.requests(0), 1);
    // The stock binary does not know the plugin: a validation error that names it.
    let (code, out) = check_config(&route_config(
        &b,
        1,
        "",
        "      - { kind: api_key, keys: [s3cret] }",
    ));
    assert_ne!(code, 0);
    assert!(
        out.contains("routes[0].filters[0].kind: unknown filter `api_key` on route `api`"),
        "{out}"
    );
}

/// A custom binary registers its own strategy as it registers filters: `priority` (in
/// examples/custom_gateway.rs) sends everything to the first eligible backend in file order.
#[test]
fn a_custom_binary_registers_its_own_strategy() {
    let b = Backends::start(&["a", "b", "c"]);
    let yaml = route_config(
        &b,
        3,
        "strategy: priority\n    health_check: { kind: http, path: /healthz, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
        "      - { kind: api_key, keys: [s3cret] }",
    );
    let gw = Gateway::start_binary(&example_binary("custom_gateway"), &yaml);
    let c = client();
    let ask = || {
        let r = c
            .get(gw.url("/"))
            .header("x-api-key", "s3cret")
            .send()
            .unwrap();
        r.text().unwrap().trim().to_string()
    };
    for _ in 0..20 {
        assert_eq!(ask(), "a", "the first backend takes everything");
    }
    b.state(0).set_health_status(500);
    assert!(
        poll_until(Duration::from_secs(5), || ask() == "b"),
        "the next one takes over when the first leaves the rotation"
    );
    for _ in 0..20 {
        assert_eq!(ask(), "b");
    }
    // The stock binary does not know the strategy.
    let (code, out) = check_config(&yaml.replace("      - { kind: api_key, keys: [s3cret] }", ""));
    assert_ne!(code, 0);
    assert!(out.contains("unknown strategy `priority`"), "{out}");
}

#[test]
fn a_bad_filter_config_fails_the_check_and_names_the_route_filter_and_key() {
    let b = Backends::start(&["a"]);
    let (code, out) = check_config(&route_config(
        &b,
        1,
        "",
        "      - { kind: rate_limit, rate: 10, brust: 5 }",
    ));
    assert_ne!(code, 0);
    assert!(
        out.contains("FILE:9: routes[0].filters[0].brust: filter `rate_limit` on route `api`: unknown field `brust`"),
        "{out}"
    );
    let (code, out) = check_config(&route_config(
        &b,
        1,
        "",
        "      - { kind: canary, upstream: nowhere }",
    ));
    assert_ne!(code, 0);
    assert!(out.contains("routes[0].filters[0].upstream: filter `canary` on route `api`: unknown upstream `nowhere`"), "{out}");
}

#[test]
fn an_outage_with_retries_stays_within_the_retry_budget() {
    let b = Backends::start(&["a", "b", "c"]);
    for i in 0..3 {
        b.state(i).set_delay(Duration::from_millis(400));
    }
    let gw = Gateway::start(&route_config(
        &b,
        3,
        "timeouts: { read: 50ms }\n    retry: { attempts: 2, backoff: { base: 1ms, max: 2ms }, budget: { ratio: 0.2, min_per_second: 1, window: 10s } }",
        "",
    ));
    let requests = 100;
    let url = gw.url("/");
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                (0..requests / 10)
                    .map(|_| get(&c, &url).0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|&s| s == 504),
        "every attempt times out"
    );
    let hits: u64 = (0..3).map(|i| b.arrivals(i)).sum();
    let retries = gw.metric_sum("portcullis_upstream_retries_total", &[("upstream", "pool")]);
    let refused = gw.metric_sum(
        "portcullis_upstream_retries_refused_total",
        &[("upstream", "pool")],
    );
    // Without a budget: 100 * (1 + 2) = 300 hits. The budget: 0.2 * 100 + 1/s * 10 s = 30.
    assert!(retries > 0.0 && retries <= 30.0, "{retries} retries");
    assert_eq!(
        hits,
        requests as u64 + retries as u64,
        "every hit is a first attempt or a budgeted retry"
    );
    // Each request whose retry was refused counts once (it makes no further attempt).
    assert!(
        refused >= (requests as f64) - 30.0,
        "the budget refused the rest: {refused}"
    );
}
