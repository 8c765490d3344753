//! PROXY protocol (issue 11) on HTTP, HTTPS and TCP listeners: the client address that
//! forwarded headers, filters, keyed strategies and logs use is the one a trusted load
//! balancer's header names; backends of a TCP listener can be sent one.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::tcp::*;
use support::{poll_until, raw_request, Backends, Gateway};

const V1: &[u8] = b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";

fn http_gateway(b: &Backends, trusted: &str) -> Gateway {
    Gateway::start(&support::one_route(
        b,
        &format!(", proxy_protocol: {{ trusted: [{trusted}] }}"),
        "",
        "",
    ))
}

fn http_addr(gw: &Gateway) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", gw.port).parse().unwrap()
}

#[test]
fn a_trusted_header_sets_the_client_address_for_forwarded_headers() {
    let b = Backends::start(&["a"]);
    let gw = http_gateway(&b, "127.0.0.0/8");
    for header in [
        V1.to_vec(),
        portcullis::l4::proxy_protocol::encode_v2(
            "198.51.100.4:5555".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        ),
    ] {
        let r = raw_request(
            http_addr(&gw),
            &[header, GET.to_vec()].concat(),
            Duration::from_secs(10),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-seen-x-forwarded-for"), Some("198.51.100.4"));
    }
}

#[test]
fn a_header_from_an_untrusted_peer_or_none_at_all_gets_400() {
    let b = Backends::start(&["a"]);
    for (trusted, request) in [
        ("10.0.0.0/8", [V1, GET].concat()),
        ("127.0.0.1", GET.to_vec()),
    ] {
        let gw = http_gateway(&b, trusted);
        let r = raw_request(http_addr(&gw), &request, Duration::from_secs(10));
        assert_eq!(r.status, 400, "trusted {trusted}");
        assert!(
            r.body
                .contains("needs a PROXY protocol header from a trusted peer"),
            "{}",
            r.body
        );
    }
    assert_eq!(b.requests(0), 0, "nothing reached the backend");
}

#[test]
fn an_https_listener_reads_the_header_before_the_tls_handshake() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let b = Backends::start(&["a"]);
    let dir = tempfile::tempdir().unwrap();
    let params = rcgen::CertificateParams::new(vec!["proxied.test".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let tls = format!(
        ", protocol: https, tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}, proxy_protocol: {{ trusted: [127.0.0.1] }}",
        c.display(),
        k.display()
    );
    let gw = Gateway::start(&support::one_route(&b, &tls, "", ""));
    let mut tcp = std::net::TcpStream::connect(http_addr(&gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(V1).unwrap();
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let mut s = builder
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("proxied.test", tcp)
        .expect("TLS after the PROXY header");
    s.write_all(GET).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let r = support::parse_raw(&buf);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-x-forwarded-for"), Some("198.51.100.4"));
}

#[test]
fn proxy_headers_are_read_from_trusted_peers_and_sent_to_backends() {
    let a = echo("a", true, 0);
    let listener = "    proxy_protocol: { trusted: [127.0.0.0/8] }\n";
    for (send, header) in [
        (
            "v2",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 5432\r\n".to_vec(),
        ),
        (
            "v1",
            portcullis::l4::proxy_protocol::encode_v2(
                "203.0.113.9:40000".parse().unwrap(),
                "127.0.0.1:5432".parse().unwrap(),
            ),
        ),
    ] {
        let up = format!("    send_proxy_protocol: {send}\n");
        let (gw, addr) = gateway(&[a.addr()], &up, listener);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&header).unwrap();
        s.write_all(b"after").unwrap();
        let line = first_line(&s).expect("greeting");
        assert_eq!(
            line, "a 203.0.113.9:40000",
            "the backend saw the real client ({send})"
        );
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"after", "no byte after the header was lost");
        drop(s);
        assert!(
            poll_until(WAIT, || {
                std::fs::read_to_string(gw.dir.path().join("access.log"))
                    .unwrap_or_default()
                    .contains("\"client\":\"203.0.113.9:40000\"")
            }),
            "the access log names the client from the header"
        );
    }
}

#[test]
fn proxy_headers_from_untrusted_peers_or_malformed_are_refused() {
    let a = echo("a", false, 0);
    for (trusted, header, why) in [
        (
            "[10.0.0.0/8]",
            &b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 5432\r\n"[..],
            "untrusted",
        ),
        (
            "[127.0.0.1]",
            b"PROXY TCP4 203.0.113.9 nonsense\r\n",
            "malformed",
        ),
        ("[127.0.0.1]", b"GET / HTTP/1.1\r\n\r\n", "missing"),
    ] {
        let listener = format!("    proxy_protocol: {{ trusted: {trusted} }}\n");
        let (gw, addr) = gateway(&[a.addr()], "", &listener);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(header);
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "{why}: must be closed without a byte"
        );
        assert!(
            poll_until(WAIT, || {
                gw.metric_sum(
                    "portcullis_tcp_connections_total",
                    &[("result", "proxy_refused")],
                ) == 1.0
            }),
            "{why}: counted"
        );
    }
    assert_eq!(
        a.stats()
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no backend connection was made"
    );
}

#[test]
fn keyed_strategies_hash_the_client_ip_from_the_proxy_header() {
    let (a, b, c) = (
        echo("a", false, 0),
        echo("b", false, 0),
        echo("c", false, 0),
    );
    let listener = "    proxy_protocol: { trusted: [127.0.0.1] }\n";
    let (_gw, addr) = gateway(
        &[a.addr(), b.addr(), c.addr()],
        "    strategy: ip_hash\n",
        listener,
    );
    let via = |client: u8| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let header = format!("PROXY TCP4 203.0.113.{client} 127.0.0.1 40000 5432\r\n");
        s.write_all(header.as_bytes()).unwrap();
        first_line(&s)
            .expect("greeting")
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let mut seen = std::collections::HashSet::new();
    for client in 1..=20u8 {
        let first = via(client);
        for _ in 0..3 {
            assert_eq!(via(client), first, "client {client} moved");
        }
        seen.insert(first);
    }
    assert!(
        seen.len() >= 2,
        "20 clients all hashed to {seen:?}: the header's address was not the key"
    );
}
