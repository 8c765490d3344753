//! TCP listeners (issue 11): the listener cap, per-backend max_connections and the queue,
//! the idle timeout, and who may serve (health checks, backups, the circuit breaker).

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::tcp::*;
use support::{free_port, poll_until, Gateway};

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
