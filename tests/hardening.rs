//! Hostile clients through the real gateway: path equivalence against an ACL, limits, an
//! unsolicited 101, forwarded client addresses and trusted proxies.

mod support;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

fn addr(gw: &Gateway) -> SocketAddr {
    format!("127.0.0.1:{}", gw.port).parse().unwrap()
}

/// `/admin` is denied to loopback; everything else goes to the catch-all backend.
fn acl_config(b: &Backends, listener_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}"{listener_extra} }}
access_log: off
routes:
  - name: catch-all
    upstream: other
  - name: admin
    match: {{ path: {{ prefix: /admin{route_extra} }} }}
    upstream: admin
    filters:
      - {{ kind: ip_acl, deny: [127.0.0.0/8] }}
upstreams:
  - {{ name: other, backends: [{{ address: "{o}" }}] }}
  - {{ name: admin, backends: [{{ address: "{a}" }}] }}
"#,
        o = b.addr(0),
        a = b.addr(1),
    )
}

fn send(gw: &Gateway, target: &str) -> RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
    raw_request(addr(gw), req.as_bytes(), Duration::from_secs(10))
}

#[test]
fn equivalent_spellings_of_a_denied_path_are_denied() {
    let b = Backends::start(&["other", "admin"]);
    let gw = Gateway::start(&acl_config(&b, "", ""));
    assert_eq!(send(&gw, "/admin").status, 403);
    assert_eq!(send(&gw, "/public").status, 200);
    let other_before = b.arrivals(0);
    let cases = [
        // dot segments
        "/./admin",
        "/x/../admin",
        "/x/./../admin/x",
        "/a/b/../../admin",
        // percent-encoded unreserved characters
        "/%61dmin",
        "/adm%69n/x",
        "/%61%64%6D%69%6E",
        // encoded dot segments
        "/%2e/admin",
        "/x/%2e%2e/admin",
        "/.%2e/admin",
        "/x/%2E%2E/admin?q=1",
        // merged slashes (default on)
        "//admin",
        "/x//..//admin",
        // a space in the target (Pingora escapes it to `%20`: the segment `x%20` then goes)
        "/x /../admin",
        // absolute-form targets
        "http://x.test/x/../admin",
        "http://x.test/%61dmin",
    ];
    for target in cases {
        let r = send(&gw, target);
        assert_eq!(r.status, 403, "{target}: {r:?}");
    }
    // Not normalisable: 400, and never forwarded.
    for target in ["/adm%zzin", "/admin%", "/admin%4", "/%%61dmin"] {
        let r = send(&gw, target);
        assert_eq!(r.status, 400, "{target:?}: {r:?}");
    }
    assert_eq!(
        b.arrivals(0),
        other_before,
        "the catch-all received none of them"
    );
    assert_eq!(b.arrivals(1), 0, "the admin backend received none of them");
    // The canonical path is what the backend receives.
    let r = send(&gw, "/x/../pub%6cic/./a?b=%2e%2e");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-path"), Some("/public/a?b=%2e%2e"));
}

#[test]
fn case_insensitive_prefixes_are_a_route_option() {
    let b = Backends::start(&["other", "admin"]);
    let gw = Gateway::start(&acl_config(&b, "", ", ignore_case: true"));
    for target in ["/ADMIN", "/Admin/x", "/%41dmin"] {
        assert_eq!(send(&gw, target).status, 403, "{target}");
    }
    let gw2 = Gateway::start(&acl_config(&b, "", ""));
    let r = send(&gw2, "/ADMIN");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("other")),
        "case-sensitive by default"
    );
}

#[test]
fn each_escaped_slash_option_does_what_it_says() {
    let b = Backends::start(&["other", "admin"]);
    let opts = |merge: bool, esc: &str| {
        format!(", path: {{ merge_slashes: {merge}, escaped_slashes: {esc} }}")
    };
    // keep (default): `%2F` and `\` are not separators, forwarded as `%2F` / `%5C`.
    let gw = Gateway::start(&acl_config(&b, &opts(true, "keep"), ""));
    let r = send(&gw, "/%2fadmin");
    assert_eq!(
        (r.status, r.header("x-seen-path")),
        (200, Some("/%2Fadmin"))
    );
    let r = send(&gw, "/x\\..\\admin");
    assert_eq!(
        (r.status, r.header("x-seen-path")),
        (200, Some("/x%5C..%5Cadmin"))
    );
    let r = send(&gw, "/x/..%5cadmin");
    assert_eq!(
        (r.status, r.header("x-seen-path")),
        (200, Some("/x/..%5Cadmin"))
    );
    drop(gw);
    // reject: 400 for all three families.
    let gw = Gateway::start(&acl_config(&b, &opts(true, "reject"), ""));
    for t in ["/%2fadmin", "/x\\admin", "/x%5Cadmin"] {
        assert_eq!(send(&gw, t).status, 400, "{t}");
    }
    assert_eq!(send(&gw, "/ok").status, 200);
    drop(gw);
    // unescape_and_forward: they become `/`, so each is `/admin` and denied.
    let gw = Gateway::start(&acl_config(&b, &opts(true, "unescape_and_forward"), ""));
    for t in [
        "/%2fadmin",
        "/x\\..\\admin",
        "/x%2F..%2Fadmin",
        "/x%5c..%5cadmin",
    ] {
        assert_eq!(send(&gw, t).status, 403, "{t}");
    }
    drop(gw);
    // unescape_and_redirect: 307 to the path with `/`.
    let gw = Gateway::start(&acl_config(&b, &opts(true, "unescape_and_redirect"), ""));
    let r = send(&gw, "/a%2Fb?x=1");
    assert_eq!((r.status, r.header("location")), (307, Some("/a/b?x=1")));
    let r = send(&gw, "/x\\..\\admin");
    assert_eq!((r.status, r.header("location")), (307, Some("/admin")));
    drop(gw);
    // merge_slashes off: `//admin` is not `/admin` (for backends that keep empty segments).
    let gw = Gateway::start(&acl_config(&b, &opts(false, "keep"), ""));
    let r = send(&gw, "//admin");
    assert_eq!((r.status, r.header("x-seen-path")), (200, Some("//admin")));
    assert_eq!(b.arrivals(1), 0);
}

fn plain_config(b: &Backends, listener_extra: &str, filters: &str) -> String {
    one_route(b, listener_extra, filters, "")
}

#[test]
fn header_and_uri_limits_answer_431_and_414() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&plain_config(
        &b,
        ", client: { max_header_bytes: 8192, max_headers: 20, max_uri_length: 1024 }",
        "",
    ));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(
        raw_request(addr(&gw), big.as_bytes(), Duration::from_secs(10)).status,
        431
    );
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    assert_eq!(
        raw_request(addr(&gw), req.as_bytes(), Duration::from_secs(10)).status,
        431
    );
    let long = format!("/{}", "u".repeat(2000));
    assert_eq!(send(&gw, &long).status, 414);
    assert_eq!(b.arrivals(0), 0, "nothing was forwarded");
    let ok: String = (0..15).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n{ok}Connection: close\r\n\r\n",
        "u".repeat(900)
    );
    assert_eq!(
        raw_request(addr(&gw), req.as_bytes(), Duration::from_secs(10)).status,
        200
    );
    // Defaults: 64 KiB of header, so a 100 KB header is refused without any setting.
    let gw = Gateway::start(&plain_config(&b, "", ""));
    assert_eq!(
        raw_request(addr(&gw), big.as_bytes(), Duration::from_secs(10)).status,
        431
    );
}

#[test]
fn an_unsolicited_101_is_refused_with_502() {
    let b = Backends::start(&["a"]);
    b.state(0).set_status(101);
    let gw = Gateway::start(&plain_config(&b, "", ""));
    let r = send(&gw, "/ws");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(b.arrivals(0), 1, "it did reach the backend");
}

#[test]
fn backends_see_the_client_and_spoofed_headers_are_not_believed() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&plain_config(
        &b,
        ", forwarded: { forwarded: true, x_forwarded_host: true }",
        "",
    ));
    let r = send(&gw, "/");
    assert_eq!(r.header("x-seen-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-seen-x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-seen-x-forwarded-host"), Some("x.test"));
    assert_eq!(
        r.header("x-seen-forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"x.test\"")
    );
    // From an untrusted peer a forged chain is appended to, and Proto/Host are overwritten.
    let req = "GET / HTTP/1.1\r\nHost: x.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n";
    let r = raw_request(addr(&gw), req.as_bytes(), Duration::from_secs(10));
    assert_eq!(
        r.header("x-seen-x-forwarded-for"),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(r.header("x-seen-x-forwarded-proto"), Some("http"));
    assert_eq!(
        r.header("x-seen-forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"x.test\"")
    );
}

fn with_xff(gw: &Gateway, path: &str, xff: &str) -> RawResponse {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
    );
    raw_request(addr(gw), req.as_bytes(), Duration::from_secs(10))
}

#[test]
fn behind_a_trusted_proxy_filters_act_on_the_forwarded_client() {
    let b = Backends::start(&["a"]);
    // The ACL allows only 203.0.113.0/24; the peer (127.0.0.1) is a trusted proxy.
    let trusted = ", forwarded: { trusted_proxies: [127.0.0.0/8] }";
    let gw = Gateway::start(&plain_config(
        &b,
        trusted,
        "{ kind: ip_acl, allow: [203.0.113.0/24] }",
    ));
    assert_eq!(with_xff(&gw, "/", "203.0.113.9").status, 200);
    assert_eq!(with_xff(&gw, "/", "198.51.100.1").status, 403);
    // The right-most untrusted hop counts: a client can't prepend its way in.
    assert_eq!(with_xff(&gw, "/", "203.0.113.9, 198.51.100.1").status, 403);
    assert_eq!(
        with_xff(&gw, "/", "198.51.100.1, 203.0.113.9, 127.0.0.2").status,
        200
    );
    assert_eq!(
        send(&gw, "/").status,
        403,
        "no header: the proxy itself is the client"
    );
    // Untrusted peer: the same header is not believed.
    let gw2 = Gateway::start(&plain_config(
        &b,
        "",
        "{ kind: ip_acl, allow: [203.0.113.0/24] }",
    ));
    assert_eq!(with_xff(&gw2, "/", "203.0.113.9").status, 403);
    // Rate-limit keys use the forwarded client: two clients, two buckets.
    let gw3 = Gateway::start(&plain_config(
        &b,
        trusted,
        "{ kind: rate_limit, rate: 2, per: minute, burst: 0 }",
    ));
    let statuses =
        |ip: &str| -> Vec<u16> { (0..3).map(|_| with_xff(&gw3, "/", ip).status).collect() };
    assert_eq!(statuses("192.0.2.1"), [200, 200, 429]);
    assert_eq!(statuses("192.0.2.2"), [200, 200, 429]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use std::io::{Read, Write};
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&plain_config(&b, "", ""));
    let mut s = std::net::TcpStream::connect(addr(&gw)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("x-seen-path: "))
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"], "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3);
}

#[test]
fn the_access_log_names_the_forwarded_client() {
    let b = Backends::start(&["a"]);
    let yaml = plain_config(&b, ", forwarded: { trusted_proxies: [127.0.0.1] }", "").replace(
        "access_log: off",
        "access_log: { file: \"{dir}/access.log\" }",
    );
    let gw = Gateway::start(&yaml);
    assert_eq!(with_xff(&gw, "/from-proxy", "203.0.113.9").status, 200);
    let log = gw.config_path().with_file_name("access.log");
    assert!(
        poll_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("\"client\":\"203.0.113.9:0\""))),
        "{:?}",
        std::fs::read_to_string(&log)
    );
}
