//! Hop-by-hop request fields never reach the backend (RFC 9110 §7.6.1), and every other field
//! does. The backend here is a raw socket that records each request head exactly as it
//! arrived. Pingora strips these fields; portcullis's vendored pingora-proxy skips the strip
//! when one scan finds none of them (vendor/README.md), so each field is also sent alone: a
//! name missing from that scan would pass through and fail here.

mod support;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// A backend that answers `200 ok` to every request and keeps each request head it read.
struct Recorder {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&heads);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || serve(conn, &kept));
            }
        });
        Recorder { addr, heads }
    }

    /// The lower-cased field names of the last request head, polled until one arrives.
    fn last_names(&self, before: usize) -> Vec<String> {
        assert!(
            poll_until(Duration::from_secs(10), || self.heads.lock().unwrap().len()
                > before),
            "no request reached the backend"
        );
        let heads = self.heads.lock().unwrap();
        heads[heads.len() - 1]
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, _)| k.trim().to_ascii_lowercase())
            .collect()
    }

    fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

/// Keep-alive: one head after another on the same connection (the requests have no body).
fn serve(mut conn: TcpStream, kept: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            kept.lock().unwrap().push(head);
            if conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
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
    let gw = Gateway::start(&one_route_to(rec.addr, "", "", ""));
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
    let gw = Gateway::start(&one_route_to(rec.addr, "", "", ""));
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
