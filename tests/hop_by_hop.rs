//! Hop-by-hop request fields never reach the backend (RFC 9110 §7.6.1), and every other field
//! does. The backend here is a raw socket that records each request head exactly as it
//! arrived. Pingora strips these fields; portcullis's vendored pingora-proxy skips the strip
//! when one scan finds none of them (vendor/README.md), so each field is also sent alone: a
//! name missing from that scan would pass through and fail here.

mod support;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use support::raw_http::RawBackend;
use support::*;

/// The raw backend, which keeps each request head it read.
struct Recorder(RawBackend);

impl Recorder {
    fn start() -> Self {
        Recorder(RawBackend::start("ok", None))
    }

    /// The lower-cased field names of the last request head, polled until one arrives.
    fn last_names(&self, before: usize) -> Vec<String> {
        assert!(
            poll_until(Duration::from_secs(10), || self.count() > before),
            "no request reached the backend"
        );
        let heads = self.0.heads();
        heads[heads.len() - 1]
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, _)| k.trim().to_ascii_lowercase())
            .collect()
    }

    fn count(&self) -> usize {
        self.0.heads().len()
    }
}

/// Send one keep-alive request with `extra` header lines on a new connection; the answer.
fn send(gw: &Gateway, extra: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET /h HTTP/1.1\r\nHost: x.test\r\nX-Kept: 1\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).expect("send");
    read_response(&mut s)
}

/// Each hop-by-hop field a client may send, as a header line. `Transfer-Encoding` is left
/// out: it frames the request body, which Pingora re-frames for the upstream on its own.
const HOP_BY_HOP: &[&str] = &[
    "Connection: keep-alive\r\n",
    "Keep-Alive: timeout=5\r\n",
    "Proxy-Connection: keep-alive\r\n",
    "TE: trailers\r\n",
    "Trailer: X-Checksum\r\n",
    "Upgrade: h2c\r\n",
    "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n",
    "Proxy-Authenticate: Basic\r\n",
    "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
];

#[test]
fn a_request_without_hop_by_hop_fields_arrives_whole() {
    let rec = Recorder::start();
    let gw = Gateway::start(&one_route_to(rec.0.addr, "", "", ""));
    let r = send(&gw, "Accept: text/plain\r\nX-Other: 2\r\n");
    assert!(r.starts_with(b"HTTP/1.1 200"), "{r:?}");
    let names = rec.last_names(0);
    for kept in ["host", "x-kept", "accept", "x-other"] {
        assert!(names.iter().any(|n| n == kept), "{kept} missing: {names:?}");
    }
}

#[test]
fn each_hop_by_hop_field_is_stripped_alone_and_together() {
    let rec = Recorder::start();
    let gw = Gateway::start(&one_route_to(rec.0.addr, "", "", ""));
    let name = |line: &str| line.split(':').next().unwrap().to_ascii_lowercase();
    for line in HOP_BY_HOP {
        let before = rec.count();
        let r = send(&gw, line);
        assert!(r.starts_with(b"HTTP/1.1 200"), "{line:?}: {r:?}");
        let names = rec.last_names(before);
        assert!(
            !names.contains(&name(line)),
            "{line:?} reached the backend: {names:?}"
        );
        assert!(names.iter().any(|n| n == "x-kept"), "{names:?}");
    }
    let before = rec.count();
    let all: String = HOP_BY_HOP.iter().skip(1).copied().collect();
    // `Connection` also nominates a field of its own, which goes too.
    let r = send(
        &gw,
        &format!("{all}Connection: x-secret\r\nX-Secret: 1\r\n"),
    );
    assert!(r.starts_with(b"HTTP/1.1 200"), "{r:?}");
    let names = rec.last_names(before);
    for line in HOP_BY_HOP {
        assert!(!names.contains(&name(line)), "{line:?}: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "x-secret"), "{names:?}");
    assert!(names.iter().any(|n| n == "x-kept"), "{names:?}");
}
