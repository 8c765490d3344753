//! TCP listeners (issue 11): real echo backends on 127.0.0.1, the real binary, real sockets.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::tcp::*;
use support::{free_port, poll_until, Gateway};

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
