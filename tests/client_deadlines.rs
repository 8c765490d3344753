//! Slow and idle clients against the real gateway: the header deadline (slowloris) and the
//! keep-alive idle timeout, while normal requests keep being served, and idle connections at
//! shutdown.

mod support;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

fn config(b: &Backends) -> String {
    one_route(
        b,
        ", client: { header_timeout: 2s, idle_timeout: 3s }",
        "",
        "",
    )
}

/// Read until EOF or error; returns what was read and whether the peer closed the
/// connection (EOF or reset) before `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// `s` is closed by the gateway within `limit`, and nothing was sent on it.
fn assert_closed_without_a_byte(s: &mut TcpStream, limit: Duration, what: &str) {
    let (bytes, closed) = read_until_closed(s, limit);
    assert!(closed, "{what} stayed open for {limit:?}");
    assert!(bytes.is_empty(), "{what}: nothing is sent, got {bytes:?}");
}

#[test]
fn slowloris_connections_are_closed_after_the_header_timeout() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&config(&b));
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let started = Instant::now();
    // 10 send a request line and then trickle a header byte every 500 ms; 10 send nothing.
    let mut trickling: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let feeder = {
        let mut clones: Vec<TcpStream> = trickling.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(500));
                for s in clones.iter_mut() {
                    let _ = s.write_all(b"a");
                }
            }
        })
    };
    // Meanwhile normal requests are served.
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &gw.url("/")).0, 200);
    }
    for s in trickling.iter_mut() {
        let (bytes, closed) = read_until_closed(s, Duration::from_secs(8));
        assert!(closed, "a trickling connection stayed open for 8 s");
        let r = parse_raw(&bytes);
        assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&bytes));
    }
    for s in silent.iter_mut() {
        assert_closed_without_a_byte(s, Duration::from_secs(8), "a silent connection");
    }
    let took = started.elapsed();
    eprintln!("20 slow connections closed after {took:?} (header timeout 2 s)");
    // The trickle goes on for 10 s, one byte per 500 ms: only a whole-header deadline can
    // have closed them within the 8 s each read above waited.
    assert_eq!(get(&c, &gw.url("/")).0, 200, "still serving");
    feeder.join().unwrap();
}

#[test]
fn idle_keepalive_connections_are_closed_and_busy_ones_are_not() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&config(&b));
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    // Requests 1 s apart keep the connection for longer than one idle timeout (3 s).
    for i in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let answer = read_response(&mut s);
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "request {i}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Then silence: closed after the idle timeout.
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(closed, "an idle keep-alive connection stayed open");
}

#[test]
fn a_stalled_request_body_gets_408_after_the_body_timeout() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(
        &config(&b).replace("idle_timeout: 3s", "idle_timeout: 3s, body_timeout: 1s"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let (bytes, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(closed, "a stalled body held the connection for 8 s");
    let r = parse_raw(&bytes);
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(get(&client(), &gw.url("/")).0, 200, "still serving");
}

/// At SIGTERM, connections idle between requests (and one that connected and sent nothing)
/// are closed at once, not held for the grace period: they wait for their next request
/// outside any HTTP session (vendor/README.md, fourth patch), and that wait ends at shutdown.
#[test]
fn idle_connections_close_at_sigterm_before_the_grace_period_ends() {
    let b = Backends::start(&["a"]);
    let yaml = one_route(
        &b,
        ", client: { idle_timeout: 60s }",
        "",
        "server: { threads: 2, grace_period_seconds: 6, graceful_shutdown_timeout_seconds: 1 }\n",
    );
    let mut gw = Gateway::start(&yaml);
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let mut idle: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert!(read_response(&mut s).starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect();
    idle.push(TcpStream::connect(addr).unwrap());
    // Idle for longer than a request takes, so that every connection is waiting.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    gw.signal("TERM");
    for (i, s) in idle.iter_mut().enumerate() {
        let what = format!("idle connection {i} after SIGTERM");
        assert_closed_without_a_byte(s, Duration::from_secs(3), &what);
    }
    let took = signalled.elapsed();
    eprintln!("9 idle connections closed {took:?} after SIGTERM (grace period 6 s)");
    assert!(
        took < Duration::from_secs(4),
        "closed at shutdown, not at exit"
    );
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some(), "exits");
}
