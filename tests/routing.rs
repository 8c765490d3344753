//! Routing through the real gateway: host, path, method, header, precedence, 404.

mod support;
use support::*;

fn config(b: &Backends) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
access_log: off
routes:
  - name: catch-all
    upstream: default
  - name: api-host
    match: {{ hosts: [api.example.test] }}
    upstream: api
  - name: wildcard-host
    match: {{ hosts: ["*.shop.test"] }}
    upstream: shop
  - name: api-prefix
    match: {{ path: {{ prefix: /api/ }} }}
    upstream: api
  - name: api-health-exact
    match: {{ path: {{ exact: /api/health }} }}
    upstream: health
  - name: writes
    match: {{ path: {{ prefix: /api/ }}, methods: [POST, PUT] }}
    upstream: writes
  - name: beta-header
    match: {{ path: {{ prefix: /api/ }}, headers: [{{ name: x-beta, exact: "on" }}] }}
    upstream: beta
  - name: only-docs-host
    match: {{ hosts: [docs.test], path: {{ prefix: /v1 }} }}
    upstream: docs
upstreams:
  - {{ name: default, backends: [{{ address: "{d}" }}] }}
  - {{ name: api, backends: [{{ address: "{a}" }}] }}
  - {{ name: shop, backends: [{{ address: "{s}" }}] }}
  - {{ name: health, backends: [{{ address: "{h}" }}] }}
  - {{ name: writes, backends: [{{ address: "{w}" }}] }}
  - {{ name: beta, backends: [{{ address: "{bt}" }}] }}
  - {{ name: docs, backends: [{{ address: "{dc}" }}] }}
"#,
        d = b.addr(0),
        a = b.addr(1),
        s = b.addr(2),
        h = b.addr(3),
        w = b.addr(4),
        bt = b.addr(5),
        dc = b.addr(6),
    )
}

fn send(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = c
        .request(method.parse().unwrap(), gw.url(path))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().expect("request");
    let backend = r
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), backend)
}

#[test]
fn routes_by_host_path_method_and_header_most_specific_first() {
    let b = Backends::start(&["default", "api", "shop", "health", "writes", "beta", "docs"]);
    let gw = Gateway::start(&config(&b));
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "www.test", "/", &[], "default"),
        ("GET", "api.example.test", "/", &[], "api"),
        ("GET", "API.EXAMPLE.TEST:8080", "/anything", &[], "api"),
        ("GET", "a.shop.test", "/", &[], "shop"),
        ("GET", "deep.a.shop.test", "/", &[], "shop"),
        ("GET", "shop.test", "/", &[], "default"),
        ("GET", "www.test", "/api/users", &[], "api"),
        ("GET", "www.test", "/api/health", &[], "health"),
        ("POST", "www.test", "/api/users", &[], "writes"),
        ("DELETE", "www.test", "/api/users", &[], "api"),
        ("GET", "www.test", "/api/users", &[("x-beta", "on")], "beta"),
        ("GET", "www.test", "/api/users", &[("x-beta", "off")], "api"),
        // Host beats path: the exact host route wins over /api/ prefix routes.
        ("GET", "api.example.test", "/api/health", &[], "api"),
        ("GET", "docs.test", "/v1/x", &[], "docs"),
        ("GET", "docs.test", "/v2/x", &[], "default"),
    ];
    for (method, host, path, headers, want) in cases {
        let (status, backend) = send(&c, &gw, method, host, path, headers);
        assert_eq!(status, 200, "{method} {host}{path}");
        assert_eq!(&backend, want, "{method} {host}{path} {headers:?}");
    }
}

#[test]
fn no_matching_route_is_404_with_a_short_body_and_request_id() {
    let b = Backends::start(&["api"]);
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes:
  - {{ name: api, match: {{ hosts: [api.test] }}, upstream: api }}
upstreams:
  - {{ name: api, backends: [{{ address: "{}" }}] }}
"#,
        b.addr(0)
    ));
    let r = client()
        .get(gw.url("/"))
        .header("host", "other.test")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().unwrap(), "no route matches this request\n");
    assert_eq!(b.requests(0), 0);
}
