//! PROXY protocol on an HTTP listener (issue 11): the client address that forwarded headers,
//! filters and logs use is the one a trusted load balancer's header names.

mod support;

use std::time::Duration;
use support::{raw_request, Backends, Gateway};

const V1: &[u8] = b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";

fn gateway(b: &Backends, trusted: &str) -> Gateway {
    Gateway::start(&support::one_route(
        b,
        &format!(", proxy_protocol: {{ trusted: [{trusted}] }}"),
        "",
        "",
    ))
}

fn addr(gw: &Gateway) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", gw.port).parse().unwrap()
}

#[test]
fn a_trusted_header_sets_the_client_address_for_forwarded_headers() {
    let b = Backends::start(&["a"]);
    let gw = gateway(&b, "127.0.0.0/8");
    for header in [
        V1.to_vec(),
        portcullis::l4::proxy_protocol::encode_v2(
            "198.51.100.4:5555".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        ),
    ] {
        let r = raw_request(
            addr(&gw),
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
        let gw = gateway(&b, trusted);
        let r = raw_request(addr(&gw), &request, Duration::from_secs(10));
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
    use std::io::{Read, Write};
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
    let mut tcp = std::net::TcpStream::connect(addr(&gw)).unwrap();
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
