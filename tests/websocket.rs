//! WebSocket through the gateway, end to end: real tungstenite servers and clients, every
//! strategy, byte-exact echoes, least_conn counting open sessions, the idle timeout, and drain
//! on shutdown.

mod support;
use std::time::{Duration, Instant};
use support::ws::{self, WsEcho};
use support::*;

const TOKEN: &str = "test-token-0123456789";

fn config(backends: &[&WsEcho], strategy: &str, upstream_extra: &str, server: &str) -> String {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    format!(
        r#"{server}
listeners: [{{ name: web, address: "{{listen}}" }}]
admin: {{ address: "{{admin}}", token: "{TOKEN}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: {strategy}
{upstream_extra}
    backends:
{}"#,
        backends_yaml(&addrs)
    )
}

fn gateway_addr(gw: &Gateway) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", gw.port).parse().unwrap()
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

#[test]
fn a_hundred_sessions_echo_byte_exact_with_every_strategy() {
    let servers = [WsEcho::start("a"), WsEcho::start("b"), WsEcho::start("c")];
    let refs: Vec<&WsEcho> = servers.iter().collect();
    for strategy in [
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_conn",
        "fastest_response",
        "adaptive",
        "{ kind: consistent_hash, key: client_ip }",
        "ip_hash",
    ] {
        let gw = Gateway::start(&config(&refs, strategy, "", ""));
        let addr = gateway_addr(&gw);
        let mut sessions: Vec<ws::Session> = (0..100).map(|_| ws::connect(addr, "/chat")).collect();
        assert!(poll_until(Duration::from_secs(5), || {
            servers.iter().map(WsEcho::open).sum::<usize>() == 100
        }));
        for round in 0..3 {
            for (i, s) in sessions.iter_mut().enumerate() {
                let data = pattern(i + round, 1 + (i * 977 + round * 4099) % 70_000);
                assert!(
                    ws::echoes(s, &data),
                    "{strategy}: session {i} round {round}"
                );
            }
        }
        for mut s in sessions {
            let _ = s.close(None);
            let _ = s.flush();
        }
        assert!(
            poll_until(Duration::from_secs(10), || servers
                .iter()
                .all(|s| s.open() == 0)),
            "{strategy}: sessions closed at the backends"
        );
    }
}

#[test]
fn least_conn_sends_new_sessions_away_from_the_backend_holding_the_most() {
    let servers = [WsEcho::start("a"), WsEcho::start("b"), WsEcho::start("c")];
    let refs: Vec<&WsEcho> = servers.iter().collect();
    let gw = Gateway::start(&config(&refs, "least_conn", "", ""));
    let addr = gateway_addr(&gw);
    let admin = |action: &str, i: usize| {
        let url = gw.admin_url(&format!(
            "/upstreams/pool/backends/{}/{action}",
            servers[i].addr
        ));
        let r = client().post(url).bearer_auth(TOKEN).send().unwrap();
        assert_eq!(r.status(), 200);
    };
    // Six sessions on `a` alone.
    admin("drain", 1);
    admin("drain", 2);
    let mut held: Vec<ws::Session> = (0..6).map(|_| ws::connect(addr, "/")).collect();
    for s in &mut held {
        assert_eq!(ws::who(s), "a");
    }
    admin("enable", 1);
    admin("enable", 2);
    // Six new sessions: a holds six open, so they go to b and c, three each.
    let mut fresh: Vec<ws::Session> = (0..6).map(|_| ws::connect(addr, "/")).collect();
    let mut names: Vec<String> = fresh.iter_mut().map(ws::who).collect();
    names.sort();
    assert_eq!(names, ["b", "b", "b", "c", "c", "c"]);
    assert_eq!(servers[0].open(), 6);
    for s in held.iter_mut().chain(&mut fresh) {
        assert!(ws::echoes(s, b"still open"));
    }
}

#[test]
fn an_idle_session_is_closed_by_the_read_timeout() {
    let server = WsEcho::start("a");
    let gw = Gateway::start(&config(
        &[&server],
        "round_robin",
        "    timeouts: { read: 1s }",
        "",
    ));
    let mut s = ws::connect(gateway_addr(&gw), "/");
    assert!(ws::echoes(&mut s, b"hello"));
    // Active sessions live past the timeout.
    let until = Instant::now() + Duration::from_millis(1_800);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(300));
        assert!(ws::echoes(&mut s, b"ping"));
    }
    // Silent past it: the gateway closes the session.
    let idle = Instant::now();
    assert!(poll_until(Duration::from_secs(10), || server.open() == 0));
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed early: {waited:?}"
    );
    assert!(
        !ws::echoes(&mut s, b"after"),
        "the client side is closed too"
    );
}

#[test]
fn open_sessions_keep_working_while_the_gateway_drains_and_close_when_it_exits() {
    let server = WsEcho::start("a");
    let mut gw = Gateway::start(&config(
        &[&server],
        "round_robin",
        "",
        "server: { threads: 2, pid_file: \"{dir}/p.pid\", upgrade_sock: \"{dir}/u.sock\", grace_period_seconds: 2, graceful_shutdown_timeout_seconds: 1 }",
    ));
    let addr = gateway_addr(&gw);
    let mut sessions: Vec<ws::Session> = (0..5).map(|_| ws::connect(addr, "/")).collect();
    gw.signal("TERM");
    // During the grace period every open session still echoes.
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        for (i, s) in sessions.iter_mut().enumerate() {
            assert!(ws::echoes(s, &pattern(i, 1000)), "session {i} during drain");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some(), "exits");
    assert!(poll_until(Duration::from_secs(5), || server.open() == 0));
    for s in &mut sessions {
        assert!(!ws::echoes(s, b"after exit"));
    }
}
