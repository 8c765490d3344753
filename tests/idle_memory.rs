//! What an idle keep-alive client connection costs the gateway. Pingora held a 64 KiB read
//! buffer, an HTTP session and a whole request future for every open connection, about 90 KiB
//! in all; the listener buffer setting, vendor patches 4 and 7 and the boxed admission in
//! `ClientGuard` bring it to a few KiB (docs/performance.md, "Idle connections…"). This test
//! holds many idle connections open and bounds the gateway's memory growth per connection.
//! An idle HTTPS connection also held the 64 KiB read buffer of `https` listeners and, since
//! a TLS stream could not tell whether a read would find bytes, a whole HTTP session; vendor
//! patch 9 frees the first and waits without the second.

mod support;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::tls::make_cert;
use support::*;

/// Connections held idle after one request each, after `WARM` others.
const WARM: usize = 1000;
const IDLE: usize = 2000;
/// The bound, in KiB per idle connection, for the debug build the tests run, without huge
/// pages: it measures 2.7 there (4.8 before patch 7 and the boxed admission, which this
/// bound fails; about 15 more with a session held per idle connection, 64 more with
/// Pingora's default read buffer).
const LIMIT_KIB: f64 = 3.5;

/// TLS connections held idle after `TLS_WARM` others, and their bound in KiB per idle
/// connection (debug build, no huge pages). It measures 30.8; OpenSSL's own state per
/// connection is about 20 KiB of it. Each half of patch 9 alone fails it: 45.9 with the read
/// buffer freed but an HTTP session held per idle connection, 94.9 the other way round,
/// 110.0 with neither.
const TLS_WARM: usize = 500;
const TLS_IDLE: usize = 1000;
const TLS_LIMIT_KIB: f64 = 38.0;

/// A TCP connection to `addr` with a read deadline.
fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A TLS connection to `addr` (any certificate).
fn tls(addr: SocketAddr) -> SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("idle.test", tcp(addr))
        .expect("TLS handshake")
}

/// `s` after one request has been answered on it, to be kept open.
fn answered<S: Read + Write>(mut s: S) -> S {
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete(&got) {
        let n = s.read(&mut buf).expect("read the response");
        assert!(n > 0, "closed before the response ended: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    s
}

/// The gateway's RSS growth in KiB per connection while `idle` connections that each served
/// one request are held, after `warm` others: the allocator and the runtime fill their
/// first pages with those, and keep freed start-up memory to reuse.
fn growth_per_idle_connection<S: Read + Write>(
    gw: &Gateway,
    warm: usize,
    idle: usize,
    open: impl Fn() -> S,
) -> f64 {
    growth_per_idle_connection_of(gw, warm, idle, || answered(open()))
}

/// The same for connections that `used` opens and uses once.
fn growth_per_idle_connection_of<S>(
    gw: &Gateway,
    warm: usize,
    idle: usize,
    used: impl Fn() -> S,
) -> f64 {
    let warm: Vec<S> = (0..warm).map(|_| used()).collect();
    let before = rss_kib(gw.pid());
    let held: Vec<S> = (0..idle).map(|_| used()).collect();
    let after = rss_kib(gw.pid());
    let per = after.saturating_sub(before) as f64 / idle as f64;
    eprintln!("RSS {before} -> {after} KiB with {idle} more idle connections: {per:.1} KiB each");
    drop((warm, held));
    per
}

/// Whether `got` holds a whole response with a `Content-Length` body.
fn complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("the devserver sends Content-Length");
    got.len() >= end + 4 + length
}

#[test]
fn an_idle_keep_alive_connection_costs_a_few_kib() {
    raise_descriptor_limit(WARM + IDLE + 500);
    let b = Backends::start(&["a"]);
    // Without transparent huge pages RSS grows by 4 KiB pages instead of 2 MiB steps.
    let gw = Gateway::start_with_env(
        &binary(),
        &one_route(&b, "", "", ""),
        &[("MIMALLOC_ALLOW_THP", "0")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let per = growth_per_idle_connection(&gw, WARM, IDLE, || tcp(addr));
    assert!(
        per <= LIMIT_KIB,
        "{per:.1} KiB per idle keep-alive connection (limit {LIMIT_KIB})"
    );
}

#[test]
fn an_idle_keep_alive_tls_connection_holds_no_read_buffer_and_no_session() {
    raise_descriptor_limit(TLS_WARM + TLS_IDLE + 500);
    let b = Backends::start(&["a"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "idle.test");
    let listener = format!(
        r#", protocol: https, http2: false, tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}"#,
        cert.cert.display(),
        cert.key.display()
    );
    let gw = Gateway::start_with_env(
        &binary(),
        &one_route(&b, &listener, "", ""),
        &[("MIMALLOC_ALLOW_THP", "0")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let per = growth_per_idle_connection(&gw, TLS_WARM, TLS_IDLE, || tls(addr));
    assert!(
        per <= TLS_LIMIT_KIB,
        "{per:.1} KiB per idle keep-alive TLS connection (limit {TLS_LIMIT_KIB})"
    );
}

/// TCP connections held idle after `TCP_WARM` others, and their bound in KiB per idle
/// connection (debug build, no huge pages). Each direction's copy loop held a 32 KiB buffer
/// for the connection's life (68.1 KiB per connection); it now holds one only while data
/// flows (5.9).
const TCP_WARM: usize = 300;
const TCP_IDLE: usize = 600;
const TCP_LIMIT_KIB: f64 = 16.0;

/// A proxied TCP connection that has moved 64 KiB each way (so both directions filled their
/// large buffer) and is kept open.
fn echoed(addr: SocketAddr) -> TcpStream {
    let (mut s, _greeting) = support::tcp::open(addr);
    let data = vec![7u8; 64 * 1024];
    s.write_all(&data).expect("send");
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, data);
    s
}

#[test]
fn an_idle_tcp_connection_holds_no_copy_buffers() {
    raise_descriptor_limit(4 * (TCP_WARM + TCP_IDLE) + 500);
    let echo = support::tcp::echo("e", false, 0);
    let port = free_port();
    let gw = Gateway::start_with_env(
        &binary(),
        &support::tcp::config(port, &[echo.addr()], "", ""),
        &[("MIMALLOC_ALLOW_THP", "0")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    support::tcp::wait_bound(addr);
    let per = growth_per_idle_connection_of(&gw, TCP_WARM, TCP_IDLE, || echoed(addr));
    assert!(
        per <= TCP_LIMIT_KIB,
        "{per:.1} KiB per idle proxied TCP connection (limit {TCP_LIMIT_KIB})"
    );
}

/// WebSocket sessions held idle after `WS_WARM` others, and their bound in KiB per idle
/// session (debug build, no huge pages), after one `WS_MESSAGE`-byte echo each, so that each
/// direction's 64 KiB body buffer has been written (RSS counts only touched pages). Those
/// buffers were held for the session's life: 238.7 KiB per session before vendor patch 10,
/// 110.6 with it (dhat: 40 KiB of heap; why RSS stays higher is not traced).
const WS_WARM: usize = 300;
const WS_IDLE: usize = 600;
const WS_LIMIT_KIB: f64 = 140.0;
const WS_MESSAGE: usize = 64 * 1024;

/// A WebSocket session through `addr` that has echoed one message and is kept open.
fn ws_echoed(addr: SocketAddr) -> support::ws::Session {
    let mut s = support::ws::connect(addr, "/chat");
    let data: Vec<u8> = (0..WS_MESSAGE).map(|i| (i * 31) as u8).collect();
    assert!(support::ws::echoes(&mut s, &data), "64 KiB echoed");
    s
}

#[test]
fn an_idle_websocket_session_holds_no_body_buffers() {
    raise_descriptor_limit(4 * (WS_WARM + WS_IDLE) + 500);
    let echo = support::ws::WsEcho::start("e");
    let gw = Gateway::start_with_env(
        &binary(),
        &format!(
            r#"listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams: [{{ name: pool, backends: [{{ address: "{}" }}] }}]
"#,
            echo.addr
        ),
        &[("MIMALLOC_ALLOW_THP", "0")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let per = growth_per_idle_connection_of(&gw, WS_WARM, WS_IDLE, || ws_echoed(addr));
    assert!(
        per <= WS_LIMIT_KIB,
        "{per:.1} KiB per idle WebSocket session (limit {WS_LIMIT_KIB})"
    );
}
