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
