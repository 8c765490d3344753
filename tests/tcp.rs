//! TCP listeners (issue 11): real echo backends on 127.0.0.1, the real binary, real sockets.

mod support;

use portcullis::devtcp::{EchoOptions, TcpEcho};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{check_config, free_port, poll_until, Gateway};

const WAIT: Duration = Duration::from_secs(10);

fn echo(name: &str, proxy: bool, trailer: usize) -> TcpEcho {
    let opts = EchoOptions {
        name: name.into(),
        proxy,
        trailer,
    };
    TcpEcho::start("127.0.0.1:0", opts).expect("start echo backend")
}

/// A gateway whose `{listen}` is an HTTP listener (for the harness) and with one TCP listener
/// on a port of its own, returned beside it. `upstream_extra` and `listener_extra` are YAML
/// lines (indented 4) added to the upstream and the TCP listener.
fn gateway(
    backends: &[SocketAddr],
    upstream_extra: &str,
    listener_extra: &str,
) -> (Gateway, SocketAddr) {
    let port = free_port();
    let gw = Gateway::start(&config(port, backends, upstream_extra, listener_extra));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_bound(addr);
    (gw, addr)
}

/// Wait until the gateway listens on `addr`, without connecting (a connection would be
/// proxied and counted): binding the port fails once it does.
fn wait_bound(addr: SocketAddr) {
    assert!(
        poll_until(WAIT, || std::net::TcpListener::bind(addr).is_err()),
        "the TCP listener never bound {addr}"
    );
}

fn config(
    port: u16,
    backends: &[SocketAddr],
    upstream_extra: &str,
    listener_extra: &str,
) -> String {
    let list: String = backends
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        r#"listeners:
  - name: http
    address: "{{listen}}"
  - name: db
    address: "127.0.0.1:{port}"
    protocol: tcp
    upstream: pool
{listener_extra}
metrics:
  address: "{{metrics}}"
access_log:
  file: "{{dir}}/access.log"
upstreams:
  - name: pool
    backends:
{list}{upstream_extra}
"#
    )
}

/// Connect and read the backend's `NAME CLIENT` line.
fn open(addr: SocketAddr) -> (TcpStream, String) {
    let s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let line = first_line(&s).expect("the backend's greeting");
    (s, line)
}

fn first_line(s: &TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    let mut r = s;
    loop {
        match r.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
}

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// Send `data`, half-close, and return everything read back after the greeting.
fn round_trip(mut s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    writer.join().unwrap();
    back
}

#[test]
fn fifty_connections_echo_64_mib_byte_exact_in_both_directions() {
    let (a, b) = (echo("a", false, 0), echo("b", false, 0));
    let (gw, addr) = gateway(&[a.addr(), b.addr()], "", "");
    const CONNS: usize = 50;
    const EACH: usize = 64 * 1024 * 1024 / CONNS;
    let threads: Vec<_> = (0..CONNS)
        .map(|i| {
            std::thread::spawn(move || {
                let (s, greeting) = open(addr);
                let data = pattern(i as u64, EACH);
                let sum = crc32fast::hash(&data);
                let back = round_trip(s, data);
                (greeting, back.len(), crc32fast::hash(&back) == sum)
            })
        })
        .collect();
    let mut names = std::collections::HashMap::new();
    for t in threads {
        let (greeting, len, same) = t.join().unwrap();
        assert_eq!(len, EACH, "{greeting}: length");
        assert!(same, "{greeting}: checksum differs");
        *names
            .entry(greeting.split(' ').next().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        names.get("a"),
        Some(&25),
        "round robin per connection: {names:?}"
    );
    assert_eq!(names.get("b"), Some(&25), "{names:?}");
    let total = (CONNS * EACH) as f64;
    assert!(poll_until(WAIT, || {
        gw.metric_sum(
            "portcullis_tcp_connections_total",
            &[("listener", "db"), ("result", "closed")],
        ) == CONNS as f64
    }));
    let bytes_in = gw.metric_sum("portcullis_tcp_bytes_total", &[("direction", "in")]);
    let bytes_out = gw.metric_sum("portcullis_tcp_bytes_total", &[("direction", "out")]);
    assert_eq!(bytes_in, total);
    assert!(
        bytes_out > total && bytes_out < total + 50.0 * 40.0,
        "out {bytes_out}: the echo plus 50 greetings"
    );
}

#[test]
fn a_client_that_half_closes_still_gets_the_whole_answer() {
    let a = echo("a", false, 1 << 20);
    let (gw, addr) = gateway(&[a.addr()], "", "");
    let (s, greeting) = open(addr);
    assert!(greeting.starts_with("a "));
    let back = round_trip(s, b"question".to_vec());
    assert_eq!(&back[..8], b"question");
    assert_eq!(
        back.len(),
        8 + (1 << 20),
        "the trailer sent after the client's FIN arrived whole"
    );
    assert!(back[8..].iter().all(|&b| b == b'T'));
    // One JSON line per closed connection.
    assert!(
        poll_until(WAIT, || {
            let log = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap_or_default();
            log.lines().any(|l| {
                l.contains("\"kind\":\"tcp\"")
                    && l.contains("\"end\":\"closed\"")
                    && l.contains(&format!("\"backend\":\"{}\"", a.addr()))
                    && l.contains("\"bytes_in\":8,")
            })
        }),
        "no access-log line for the connection"
    );
}

struct EchoProcess(support::ChildGuard, SocketAddr);

fn echo_process(name: &str) -> EchoProcess {
    let mut child = std::process::Command::new(support::example_binary("tcp_echo"))
        .args(["--name", name, "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tcp_echo");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .expect("its address");
    EchoProcess(support::ChildGuard(child), addr)
}

fn still_echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut b = [0u8; 4];
    s.read_exact(&mut b).is_ok() && &b == b"ping"
}

#[test]
fn a_killed_backend_ends_its_connections_only_and_new_ones_go_elsewhere() {
    let (a, b) = (echo_process("a"), echo_process("b"));
    let (_gw, addr) = gateway(&[a.1, b.1], "", "");
    let mut conns: Vec<(TcpStream, String)> = (0..6).map(|_| open(addr)).collect();
    assert!(conns
        .iter()
        .all(|(_, g)| g.starts_with("a ") || g.starts_with("b ")));
    support::signal(a.0.pid(), "KILL");
    for (s, g) in conns.iter_mut() {
        let alive = still_echoes(s);
        assert_eq!(
            alive,
            g.starts_with("b "),
            "{g}: only b's connections survive"
        );
    }
    for _ in 0..6 {
        let (_s, g) = open(addr);
        assert!(g.starts_with("b "), "new connections go to b: {g}");
    }
}

#[test]
fn max_connections_queues_the_fifth_and_refuses_past_a_full_queue() {
    let (a, b) = (echo("a", false, 0), echo("b", false, 0));
    let extra = "    max_connections: 2\n    queue: { size: 1, timeout: 10s }\n";
    let (gw, addr) = gateway(&[a.addr(), b.addr()], extra, "");
    let mut held: Vec<TcpStream> = (0..4).map(|_| open(addr).0).collect();
    // The fifth waits: connected to the gateway, no backend yet.
    let fifth = TcpStream::connect(addr).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert!(
        first_line(&fifth).is_none(),
        "the fifth got a backend past the caps"
    );
    assert!(poll_until(WAIT, || gw.metric_sum(
        "portcullis_upstream_queue_depth",
        &[("upstream", "pool")]
    ) == 1.0));
    // The queue (size 1) is full: a sixth is closed at once.
    let sixth = TcpStream::connect(addr).unwrap();
    sixth.set_read_timeout(Some(WAIT)).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert!(
        matches!((&sixth).read(&mut buf), Ok(0) | Err(_)),
        "the sixth must be closed"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closed at once, not after a wait"
    );
    // One held connection closes: the fifth is served.
    held.pop();
    fifth.set_read_timeout(Some(WAIT)).unwrap();
    assert!(
        first_line(&fifth).is_some(),
        "the fifth was not served when a slot freed"
    );
    assert_eq!(
        a.stats()
            .max_open
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        b.stats()
            .max_open
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let count = |r: &str| {
        gw.metric_sum(
            "portcullis_upstream_queue_total",
            &[("upstream", "pool"), ("result", r)],
        )
    };
    assert!(poll_until(WAIT, || count("full") == 1.0 && count("served") == 1.0));
    assert!(poll_until(WAIT, || gw.metric_sum(
        "portcullis_tcp_connections_total",
        &[("result", "queue_full")]
    ) == 1.0));
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
fn a_reload_cuts_no_long_lived_connection_and_a_removed_backend_drains() {
    let (a, b) = (echo("a", false, 0), echo("b", false, 0));
    let port = free_port();
    let gw = Gateway::start(&config(port, &[a.addr(), b.addr()], "", ""));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_bound(addr);
    let mut conns: Vec<(TcpStream, String)> = (0..20).map(|_| open(addr)).collect();
    gw.write_config(&config(port, &[a.addr()], "", ""));
    assert!(
        poll_until(WAIT, || gw.metric_sum("portcullis_config_generation", &[])
            == 2.0),
        "reloaded"
    );
    for (s, g) in conns.iter_mut() {
        assert!(still_echoes(s), "{g}: cut by the reload");
    }
    for _ in 0..4 {
        assert!(
            open(addr).1.starts_with("a "),
            "the removed backend gets no new connection"
        );
    }
    assert_eq!(
        b.stats().open.load(std::sync::atomic::Ordering::Relaxed),
        10,
        "b's connections drain, untouched"
    );
}

#[test]
fn tcp_listener_config_errors_name_the_key_and_what_is_allowed() {
    let up = "upstreams:\n  - name: pool\n    backends: [{ address: \"127.0.0.1:9\" }]\n";
    for (listener, expect) in [
        (
            "protocol: tcp",
            "listeners[0].upstream: a tcp listener needs `upstream: NAME`",
        ),
        (
            "protocol: tcp\n    upstream: nope",
            "unknown upstream `nope` (defined: pool)",
        ),
        (
            "upstream: pool",
            "listeners[0].upstream: only allowed with `protocol: tcp`",
        ),
        (
            "protocol: tcp\n    upstream: pool\n    filters: [{ kind: rate_limit, rate: 5 }]",
            "which a tcp listener cannot call",
        ),
        (
            "protocol: tcp\n    upstream: pool\n    tcp: { connect_attempts: 0 }",
            "tcp.connect_attempts: must be between 1 and 10",
        ),
        (
            "protocol: tcp\n    upstream: pool\n    proxy_protocol: { trusted: [] }",
            "proxy_protocol.trusted: list the load balancers",
        ),
    ] {
        let yaml =
            format!("listeners:\n  - name: l\n    address: \"{{listen}}\"\n    {listener}\n{up}");
        expect_error(&yaml, expect);
    }
    let sending = up.replace(
        "  - name: pool\n",
        "  - name: pool\n    send_proxy_protocol: v1\n",
    );
    expect_error(
        &format!("listeners: [{{ name: l, address: \"{{listen}}\" }}]\nroutes: [{{ name: r, upstream: pool }}]\n{sending}"),
        "routes[0].upstream: upstream `pool` sends a PROXY protocol header, which only TCP listeners do",
    );
}

fn expect_error(yaml: &str, expect: &str) {
    let (code, out) = check_config(yaml);
    assert_eq!(code, 1, "{yaml}: {out}");
    assert!(out.contains(expect), "expected `{expect}` in:\n{out}");
    assert!(out.contains("FILE:"), "located: {out}");
}

#[test]
fn health_checks_and_backups_decide_who_gets_new_connections() {
    let (a, b) = (echo_process("a"), echo("b", false, 0));
    let port = free_port();
    let up =
        "    health_check: { kind: tcp, interval: 100ms, timeout: 500ms, unhealthy_threshold: 1 }
";
    let yaml = config(port, &[a.1], up, "    tcp: { connect_attempts: 1 }\n").replace(
        &format!("      - address: \"{}\"\n", a.1),
        &format!(
            "      - address: \"{}\"\n      - {{ address: \"{}\", backup: true }}\n",
            a.1,
            b.addr()
        ),
    );
    let gw = Gateway::start(&yaml);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_bound(addr);
    assert!(
        open(addr).1.starts_with("a "),
        "the primary serves while healthy"
    );
    support::signal(a.0.pid(), "KILL");
    let backend = a.1.to_string();
    assert!(
        poll_until(WAIT, || {
            gw.metric_sum("portcullis_backend_healthy", &[("backend", &backend)]) == 0.0
        }),
        "the health check saw the primary go"
    );
    // One attempt only: the backup answers because it is the member now, not by failover.
    for _ in 0..3 {
        assert!(open(addr).1.starts_with("b "));
    }
}

#[test]
fn a_circuit_breaker_on_the_listener_ejects_a_backend_that_refuses_connections() {
    let dead = support::DeadPort::new();
    let dead_addr: SocketAddr = format!("127.0.0.1:{}", dead.port).parse().unwrap();
    let b = echo("b", false, 0);
    let listener =
        "    filters: [{ kind: circuit_breaker, consecutive_failures: 1, open_time: 1m }]\n";
    let (gw, addr) = gateway(&[dead_addr, b.addr()], "", listener);
    for _ in 0..10 {
        assert!(
            open(addr).1.starts_with("b "),
            "failover and then ejection keep serving from b"
        );
    }
    let errors = gw.metric_sum(
        "portcullis_upstream_connect_errors_total",
        &[("backend", &dead_addr.to_string())],
    );
    assert!(
        (1.0..=2.0).contains(&errors),
        "{errors} connect errors: round robin alone would try the dead one 5 times"
    );
}

#[test]
fn sigterm_lets_open_connections_finish_within_the_grace_period() {
    let a = echo("a", false, 0);
    let (mut gw, addr) = gateway(&[a.addr()], "", "");
    let (mut s, _) = open(addr);
    gw.signal("TERM");
    // The listener stops accepting at once; the open connection still works.
    assert!(
        poll_until(WAIT, || TcpStream::connect(addr).is_err()),
        "still accepting after SIGTERM"
    );
    assert!(
        still_echoes(&mut s),
        "cut at SIGTERM instead of after the grace period"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "did not exit after the grace period"
    );
    let mut buf = [0u8; 8];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "closed at the end of the grace period"
    );
}

#[test]
fn a_graceful_upgrade_hands_over_the_tcp_listener_and_keeps_open_connections_for_the_grace() {
    let a = echo("a", false, 0);
    let (mut old, addr) = gateway(&[a.addr()], "", "");
    let (mut held, _) = open(addr);
    let _new = old.spawn_upgrade(&support::binary());
    let sock = old.dir.path().join("upgrade.sock");
    assert!(
        poll_until(WAIT, || sock.exists()),
        "the new process is waiting"
    );
    old.signal("QUIT");
    assert!(
        still_echoes(&mut held),
        "an open connection was cut by the upgrade"
    );
    // The listener never closes: new connections are served throughout.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut served = 0;
    while Instant::now() < deadline {
        assert!(
            open(addr).1.starts_with("a "),
            "a connection during the upgrade failed"
        );
        served += 1;
    }
    assert!(served > 5);
    assert!(
        old.wait_exit(Duration::from_secs(15)).is_some(),
        "the old process exited"
    );
    assert!(
        !still_echoes(&mut held),
        "closed when the old process ended, after its grace period"
    );
    assert!(open(addr).1.starts_with("a "), "the new process serves");
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

#[test]
fn the_listener_cap_closes_the_extra_connection_and_the_idle_timeout_ends_quiet_ones() {
    let a = echo("a", false, 0);
    let listener = "    tcp: { max_connections: 2, idle_timeout: 400ms }\n";
    let (gw, addr) = gateway(&[a.addr()], "", listener);
    let (mut one, _) = open(addr);
    let (_two, _) = open(addr);
    let third = TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    assert!(
        first_line(&third).is_none(),
        "a third connection past the listener's cap was served"
    );
    assert!(poll_until(WAIT, || {
        gw.metric_sum(
            "portcullis_tcp_connections_total",
            &[("result", "listener_full")],
        ) == 1.0
    }));
    // Traffic keeps a connection open past the idle timeout; silence ends it.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(800) {
        assert!(still_echoes(&mut one), "closed while busy");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !still_echoes(&mut one),
        "still open after 700 ms of silence"
    );
    assert!(poll_until(WAIT, || {
        gw.metric_sum(
            "portcullis_tcp_connections_total",
            &[("result", "idle_timeout")],
        ) >= 1.0
    }));
}
