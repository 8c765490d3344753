//! How the `portcullis` binary uses its allocator (src/main.rs):
//! - transparent huge pages are off (mimalloc's `allow_thp` default, set before mimalloc
//!   starts), and `MIMALLOC_ALLOW_THP=1` turns them back on. `THP_enabled` in
//!   /proc/PID/status is the process's `PR_SET_THP_DISABLE` flag, which mimalloc sets when the
//!   option is off; the test fails if the option index in src/main.rs is wrong for the linked
//!   mimalloc, or if the constructor stops running before mimalloc's;
//! - memory freed after a burst goes back to the system while the gateway is idle.

mod support;
use support::*;

const CONFIG: &str = r#"
listeners: [{ name: web, address: "{listen}" }]
metrics: { address: "{metrics}" }
routes: [{ name: all, upstream: pool }]
upstreams: [{ name: pool, backends: [{ address: "BACKEND" }] }]
"#;

#[test]
fn huge_pages_are_off_by_default_and_the_environment_turns_them_on() {
    assert!(
        std::env::var_os("MIMALLOC_ALLOW_THP").is_none(),
        "unset MIMALLOC_ALLOW_THP to run this test: it checks the gateway's own default"
    );
    assert_eq!(
        proc_status("self", "THP_enabled"),
        "1",
        "this test process was started with huge pages disabled (PR_SET_THP_DISABLE is \
         inherited), so the gateway's own choice cannot be seen"
    );
    let b = Backends::start(&["a"]);
    let yaml = CONFIG.replace("BACKEND", &b.addr(0).to_string());
    let c = client();

    let gw = Gateway::start(&yaml);
    for _ in 0..20 {
        assert_eq!(get(&c, &gw.url("/")), (200, "a".to_string()));
    }
    let pid = gw.pid();
    assert_eq!(
        proc_status(pid, "THP_enabled"),
        "0",
        "huge pages are on by default"
    );
    drop(gw);

    let on = Gateway::start_with_env(&binary(), &yaml, &[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(get(&c, &on.url("/")), (200, "a".to_string()));
    let pid = on.pid();
    assert_eq!(
        proc_status(pid, "THP_enabled"),
        "1",
        "MIMALLOC_ALLOW_THP=1 did not turn huge pages back on"
    );
}

/// `n` clients each send one request over a connection of their own and wait, all at once;
/// the backend holds each answer for a while, so all `n` are in the gateway together.
fn burst(url: &std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(url).expect("connect to the gateway");
            s.write_all(b"GET /burst HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
            s
        })
        .collect()
}

#[test]
fn memory_freed_after_a_burst_goes_back_while_idle() {
    use std::io::Read;
    use std::time::Duration;
    let b = Backends::start(&["a"]);
    // Long enough that every request of the burst is still in the gateway when the last one
    // arrives, even in a debug build on a busy machine.
    b.state(0).set_delay(Duration::from_secs(5));
    let yaml = CONFIG.replace("BACKEND", &b.addr(0).to_string());
    let gw = Gateway::start(&yaml);
    let pid = gw.pid();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], gw.port));
    let before = status_kib(pid, "RssAnon");

    // The test process holds the clients' sockets and the backend's.
    let n = 400;
    raise_descriptor_limit(2 * n + 500);
    let mut clients = burst(&addr, n);
    assert!(
        poll_until(Duration::from_secs(10), || b.state(0).max_inflight()
            >= n as u32),
        "the burst did not reach the backend together: at most {} of {n} requests at once",
        b.state(0).max_inflight()
    );
    let peak = status_kib(pid, "RssAnon");
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut head = [0u8; 12];
        c.read_exact(&mut head).expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    drop(clients);
    let grown = peak.saturating_sub(before);
    println!("RssAnon: {before} kB before, {peak} kB at the peak");
    assert!(
        grown > 4_000,
        "the burst grew RssAnon by only {grown} kB; the test cannot see a release"
    );

    // Idle now: at least half of what the burst added must go back within a few seconds
    // (mimalloc's purge delay is 1 s, and housekeeping runs once a second). Not all of it: the
    // upstream pool keeps connections, and tokio's and the timers' slabs do not shrink.
    let target = before + grown / 2;
    let mut last = peak;
    let released = poll_until(Duration::from_secs(8), || {
        last = status_kib(pid, "RssAnon");
        last <= target
    });
    println!("RssAnon: {last} kB once released (wanted <= {target})");
    assert!(released, "RssAnon stayed at {last} kB after the burst (before {before}, peak {peak}); wanted <= {target}");
}
