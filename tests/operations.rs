//! Operations against the built binary: reloads under load, a broken config under load,
//! a graceful upgrade under load, SIGTERM draining, and the admin API. Load is bounded and
//! goes to 127.0.0.1 only.

mod support;
use std::time::Duration;
use support::load::Load;
use support::*;

const TOKEN: &str = "test-token-0123456789";

fn config(backends: &[std::net::SocketAddr], extra_route: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}", token: "{TOKEN}" }}
access_log: off
routes:
  - {{ name: all, upstream: pool }}
{extra_route}
upstreams:
  - name: pool
    strategy: round_robin
    health_check: {{ interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
    backends:
{}"#,
        backends_yaml(backends)
    )
}

fn generation(gw: &Gateway) -> f64 {
    gw.metric_sum("portcullis_config_generation", &[])
}

/// The backend addresses the live config routes `pool` to, as the admin API reports them.
fn live_backends(gw: &Gateway) -> std::collections::BTreeSet<String> {
    let ups: serde_json::Value = client()
        .get(gw.admin_url("/upstreams"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default();
    ups["upstreams"][0]["backends"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|b| b["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reloads_under_load_with_changing_backends_drop_nothing() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let lists = [
        vec![b.addr(0), b.addr(1)],
        vec![b.addr(2), b.addr(3)],
        vec![b.addr(0), b.addr(2)],
        vec![b.addr(1), b.addr(3)],
        vec![b.addr(0), b.addr(1), b.addr(2), b.addr(3)],
    ];
    let gw = Gateway::start(&config(&lists[0], ""));
    let load = Load::start(&gw.url("/"), 6, 20_000, Duration::from_secs(60));
    for (i, list) in lists.iter().enumerate().skip(1) {
        let before = load.sent();
        assert!(
            poll_until(Duration::from_secs(10), || load.sent() >= before + 400),
            "load is moving"
        );
        let generation_before = generation(&gw);
        let want: std::collections::BTreeSet<String> = list.iter().map(|a| a.to_string()).collect();
        gw.write_config(&config(list, ""));
        if i % 2 == 0 {
            gw.signal("HUP");
        } // odd steps: the file watch picks it up
          // A HUP step may reload twice (the watch can see the file before the signal lands),
          // so wait for the backend list itself rather than an exact generation number.
        assert!(
            poll_until(Duration::from_secs(10), || generation(&gw)
                > generation_before
                && live_backends(&gw) == want),
            "reload {i} went live: {:?}",
            live_backends(&gw)
        );
    }
    let before = load.sent();
    poll_until(Duration::from_secs(10), || load.sent() >= before + 400);
    let r = load.finish();
    eprintln!("reload test: {} requests, {:?}", r.sent, r.statuses);
    assert!(r.sent >= 2000, "a few thousand requests: {}", r.sent);
    assert_eq!(
        r.failures(),
        0,
        "failed requests: {:?} {:?}",
        r.statuses,
        r.errors.first()
    );
    for name in ["a", "b", "c", "d"] {
        assert!(
            r.backends.get(name).copied().unwrap_or(0) > 0,
            "{name} got traffic: {:?}",
            r.backends
        );
    }
    let reloads = gw.metric_sum("portcullis_config_reloads_total", &[("result", "success")]);
    assert!(
        (4.0..=6.0).contains(&reloads),
        "4 changes, each reloaded once (twice at most on HUP steps): {reloads}"
    );
    assert_eq!(
        gw.metric_sum("portcullis_config_reloads_total", &[("result", "failure")]),
        0.0
    );
}

#[test]
fn a_broken_config_under_load_changes_nothing() {
    let b = Backends::start(&["a", "b"]);
    let good = config(
        &[b.addr(0), b.addr(1)],
        "  - { name: api, match: { path: { prefix: /api } }, upstream: pool }",
    );
    let gw = Gateway::start(&good);
    let load = Load::start(&gw.url("/api/x"), 4, 20_000, Duration::from_secs(60));
    poll_until(Duration::from_secs(10), || load.sent() >= 500);
    // Unknown key deep in the file, then a route naming an unknown upstream.
    gw.write_config(&good.replace(
        "strategy: round_robin",
        "strategy: round_robin\n    retires: 3",
    ));
    gw.signal("HUP");
    // The file watch may see the file before the signal lands, so a step can fail twice:
    // wait for each step's own error in the log rather than a count.
    assert!(poll_until(Duration::from_secs(10), || gw
        .stderr()
        .contains("upstreams[0].retires: unknown field `retires`")));
    gw.write_config(&good.replace("upstream: pool }\n", "upstream: nowhere }\n"));
    gw.signal("HUP");
    assert!(poll_until(Duration::from_secs(10), || gw
        .stderr()
        .contains("unknown upstream `nowhere`")));
    assert!(gw.metric_sum("portcullis_config_reloads_total", &[("result", "failure")]) >= 2.0);
    let before = load.sent();
    poll_until(Duration::from_secs(10), || load.sent() >= before + 500);
    let r = load.finish();
    eprintln!("broken-config test: {} requests, {:?}", r.sent, r.statuses);
    assert_eq!(
        r.failures(),
        0,
        "failed: {:?} {:?}",
        r.statuses,
        r.errors.first()
    );
    assert_eq!(generation(&gw), 1.0, "still the first config");
    assert_eq!(
        get(&client(), &gw.url("/api/still-here")).0,
        200,
        "old routes still answer"
    );
    let log = gw.stderr();
    assert!(
        log.contains("upstreams[0].retires: unknown field `retires`"),
        "{log}"
    );
    assert!(log.contains("unknown upstream `nowhere`"), "{log}");
    let status: serde_json::Value = client()
        .get(gw.admin_url("/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["last_reload"]["result"], "failure");
    assert_eq!(status["config_generation"], 1);
}

#[test]
fn graceful_upgrade_under_load_drops_nothing() {
    let b = Backends::start(&["a", "b"]);
    let mut old = Gateway::start(&config(&[b.addr(0), b.addr(1)], ""));
    let old_pid = old.pid();
    let load = Load::start(&old.url("/"), 4, 30_000, Duration::from_secs(60));
    poll_until(Duration::from_secs(10), || load.sent() >= 1000);
    let new = old.spawn_upgrade(&binary());
    // The new process waits for the listeners on the upgrade socket.
    let sock = old.dir.path().join("upgrade.sock");
    assert!(
        poll_until(Duration::from_secs(10), || sock.exists()),
        "new process is waiting"
    );
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(30)).is_some(),
        "old process exited after draining"
    );
    let before = load.sent();
    poll_until(Duration::from_secs(10), || load.sent() >= before + 1000);
    let r = load.finish();
    eprintln!("upgrade test: {} requests, {:?}", r.sent, r.statuses);
    assert_eq!(
        r.failures(),
        0,
        "failed: {:?} {:?}",
        r.statuses,
        r.errors.first()
    );
    let status: serde_json::Value = client()
        .get(old.admin_url("/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        status["pid"],
        new.pid(),
        "the new process serves (old was {old_pid})"
    );
    assert_eq!(get(&client(), &old.url("/")).0, 200);
}

#[test]
fn sigterm_lets_slow_requests_finish() {
    let b = Backends::start(&["slow"]);
    b.state(0).set_delay(Duration::from_millis(1500));
    let yaml = config(&[b.addr(0)], "").replace(
        "listeners:",
        "server: { threads: 2, pid_file: \"{dir}/p.pid\", upgrade_sock: \"{dir}/u.sock\", grace_period_seconds: 4, graceful_shutdown_timeout_seconds: 1 }\nlisteners:",
    );
    let mut gw = Gateway::start(&yaml);
    let url = gw.url("/");
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&client(), &url))
        })
        .collect();
    assert!(
        poll_until(Duration::from_secs(5), || b.arrivals(0) == 5),
        "5 slow requests in flight"
    );
    gw.signal("TERM");
    for c in clients {
        assert_eq!(
            c.join().unwrap(),
            (200, "slow".to_string()),
            "in-flight request finished"
        );
    }
    assert!(
        gw.wait_exit(Duration::from_secs(15)).is_some(),
        "exits after the grace period"
    );
}

/// SIGTERM while 16 keep-alive clients wait for slow responses: each response is complete and
/// says `Connection: close`, so no client sends its next request on a connection that this
/// process is about to close. The next request either reaches a process that still listens or
/// is refused at connect: never a reset or an early EOF.
#[test]
fn sigterm_closes_keepalive_connections_in_the_response() {
    let b = Backends::start(&["slow"]);
    let yaml = config(&[b.addr(0)], "").replace(
        "listeners:",
        "server: { threads: 2, pid_file: \"{dir}/p.pid\", upgrade_sock: \"{dir}/u.sock\", grace_period_seconds: 3, graceful_shutdown_timeout_seconds: 1 }\nlisteners:",
    );
    let mut gw = Gateway::start(&yaml);
    let url = gw.url("/");
    let clients: Vec<reqwest::blocking::Client> = (0..16).map(|_| client()).collect();
    for c in &clients {
        assert_eq!(get(c, &url).0, 200, "warm-up on a keep-alive connection");
    }
    b.state(0).set_delay(Duration::from_millis(1500));
    let before = b.arrivals(0);
    let threads: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = c.get(&url).send().expect("in-flight request");
                let connection = r
                    .headers()
                    .get("connection")
                    .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
                let status = r.status().as_u16();
                let body = r.text().expect("complete body");
                let next = match c.get(&url).send() {
                    Ok(r) => Ok(r.status().as_u16()),
                    Err(e) if e.is_connect() => Err("refused".to_string()),
                    Err(e) => Err(format!("failed: {e:?}")),
                };
                (status, body, connection, next)
            })
        })
        .collect();
    assert!(
        poll_until(Duration::from_secs(5), || b.arrivals(0) >= before + 16),
        "16 slow requests in flight"
    );
    gw.signal("TERM");
    for t in threads {
        let (status, body, connection, next) = t.join().unwrap();
        assert_eq!((status, body.trim()), (200, "slow"), "complete response");
        assert_eq!(connection.as_deref(), Some("close"), "Connection: close");
        match next {
            Ok(s) => assert_eq!(s, 200, "next request on a new connection"),
            Err(e) => assert_eq!(e, "refused", "next request: a clean refusal or an answer"),
        }
    }
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some(), "exits");
}

#[test]
fn admin_drain_add_remove_and_auth() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&[b.addr(0), b.addr(1)], ""));
    let c = client();
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<&str>| {
        let mut r = c.request(method.parse().unwrap(), gw.admin_url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().unwrap_or_default())
    };
    let a = b.addr(0).to_string();
    // Missing or wrong token: 401, and nothing changes.
    assert_eq!(
        call(
            "POST",
            &format!("/upstreams/pool/backends/{a}/drain"),
            None,
            None
        )
        .0,
        401
    );
    assert_eq!(
        call(
            "POST",
            &format!("/upstreams/pool/backends/{a}/drain"),
            Some("wrong-token-0000000"),
            None
        )
        .0,
        401
    );
    // Drain a: no new requests.
    let (s, up) = call(
        "POST",
        &format!("/upstreams/pool/backends/{a}/drain"),
        Some(TOKEN),
        None,
    );
    assert_eq!(s, 200, "{up}");
    for _ in 0..10 {
        assert_eq!(get(&c, &gw.url("/")).1, "b");
    }
    // Add c (with a zone): it takes traffic and is health-checked.
    let body = format!(
        r#"{{"address": "{}", "weight": 1, "metadata": {{"zone": "z2"}}}}"#,
        b.addr(2)
    );
    let (s, up) = call("POST", "/upstreams/pool/backends", Some(TOKEN), Some(&body));
    assert_eq!(s, 201, "{up}");
    let seen: std::collections::HashSet<String> =
        (0..10).map(|_| get(&c, &gw.url("/")).1).collect();
    assert_eq!(
        seen,
        ["b", "c"].iter().map(|s| s.to_string()).collect(),
        "rotation is b and c"
    );
    assert_eq!(
        call("POST", "/upstreams/pool/backends", Some(TOKEN), Some(&body)).0,
        409,
        "no duplicates"
    );
    let (_, ups) = call("GET", "/upstreams", None, None);
    let backends = ups["upstreams"][0]["backends"].as_array().unwrap().clone();
    let entry = |addr: &str| {
        backends
            .iter()
            .find(|x| x["address"] == addr)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(&a)["enabled"], false);
    assert_eq!(entry(&b.addr(2).to_string())["metadata"]["zone"], "z2");
    assert_eq!(entry(&b.addr(2).to_string())["origin"], "admin");
    assert!(
        entry(&b.addr(1).to_string())["latency_ms"]["p99"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(
        entry(&b.addr(1).to_string())["filters"],
        serde_json::json!({})
    );
    // Remove b: rotation is c only.
    let (s, _) = call(
        "DELETE",
        &format!("/upstreams/pool/backends/{}", b.addr(1)),
        Some(TOKEN),
        None,
    );
    assert_eq!(s, 200);
    for _ in 0..6 {
        assert_eq!(get(&c, &gw.url("/")).1, "c");
    }
    // A file reload keeps the runtime changes: a drained, b removed, c added.
    gw.signal("HUP");
    assert!(poll_until(Duration::from_secs(10), || generation(&gw) == 2.0));
    for _ in 0..6 {
        assert_eq!(
            get(&c, &gw.url("/")).1,
            "c",
            "admin changes survive a file reload"
        );
    }
    // Enable a again.
    assert_eq!(
        call(
            "POST",
            &format!("/upstreams/pool/backends/{a}/enable"),
            Some(TOKEN),
            None
        )
        .0,
        200
    );
    let seen: std::collections::HashSet<String> =
        (0..10).map(|_| get(&c, &gw.url("/")).1).collect();
    assert_eq!(seen.len(), 2, "a and c: {seen:?}");
    // POST /reload answers with the result.
    let (s, r) = call("POST", "/reload", Some(TOKEN), None);
    assert_eq!((s, r["result"].as_str()), (200, Some("success")));
    let (s, st) = call("GET", "/status", None, None);
    assert_eq!(s, 200);
    assert_eq!(st["config_generation"], 3);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn admin_added_backends_are_health_checked() {
    let mut b = Backends::start(&["a", "new"]);
    let gw = Gateway::start(&config(&[b.addr(0)], ""));
    let c = client();
    let body = format!(r#"{{"address": "{}"}}"#, b.addr(1));
    let r = c
        .post(gw.admin_url("/upstreams/pool/backends"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    b.stop(1);
    assert!(
        poll_until(Duration::from_secs(5), || gw.metric_sum(
            "portcullis_backend_healthy",
            &[("backend", &b.addr(1).to_string())]
        ) == 0.0),
        "the added backend is probed"
    );
    for _ in 0..10 {
        assert_eq!(get(&c, &gw.url("/")), (200, "a".to_string()));
    }
}

#[test]
fn a_public_admin_listener_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "listeners: [{ name: web, address: 127.0.0.1:1 }]\nadmin: { address: 0.0.0.0:9901 }\nupstreams: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.address: refusing an admin listener on non-loopback 0.0.0.0:9901 without a token"), "{err}");
    // With the token in an environment variable it is accepted (checked with -t).
    std::fs::write(
        &path,
        "listeners: [{ name: web, address: 127.0.0.1:1 }]\nadmin: { address: 0.0.0.0:9901, token_env: PC_TEST_TOKEN }\nupstreams: []\n",
    )
    .unwrap();
    let ok = std::process::Command::new(binary())
        .args(["-t", "-c"])
        .arg(&path)
        .env("PC_TEST_TOKEN", "a-long-enough-token-123")
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Admin changes and reloads go through one writer, in order: 200 admin adds and removes
/// raced against 50 reloads leave exactly the file's backends plus the admin changes.
#[test]
fn admin_changes_raced_against_reloads_are_never_lost() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&config(&[b.addr(0)], ""));
    let admin = |method: reqwest::Method, path: String, body: Option<String>| {
        let c = client();
        let mut r = c.request(method, gw.admin_url(&path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            r = r.body(body);
        }
        r.send().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    // 4 writers x 25 addresses: each added, and every other one removed again = 150 calls;
    // 2 more writers add 25 each that stay = 50 calls. 200 admin calls in all.
    let addr = |w: usize, i: usize| format!("127.0.0.{}:{}", 2 + w, 10_000 + i);
    let mut expected: std::collections::BTreeSet<String> =
        [b.addr(0).to_string()].into_iter().collect();
    for w in 0..6 {
        for i in 0..25 {
            if w >= 4 || i % 2 == 1 {
                expected.insert(addr(w, i));
            }
        }
    }
    std::thread::scope(|s| {
        for w in 0..6 {
            let admin = &admin;
            s.spawn(move || {
                for i in 0..25 {
                    let a = addr(w, i);
                    let body = format!(r#"{{"address": "{a}"}}"#);
                    let path = "/upstreams/pool/backends".to_string();
                    assert_eq!(
                        admin(reqwest::Method::POST, path, Some(body)),
                        201,
                        "add {a}"
                    );
                    if w < 4 && i % 2 == 0 {
                        let path = format!("/upstreams/pool/backends/{a}");
                        assert_eq!(
                            admin(reqwest::Method::DELETE, path, None),
                            200,
                            "remove {a}"
                        );
                    }
                }
            });
        }
        let admin = &admin;
        s.spawn(move || {
            for _ in 0..50 {
                assert_eq!(admin(reqwest::Method::POST, "/reload".into(), None), 200);
            }
        });
    });
    assert_eq!(generation(&gw), 51.0, "50 reloads went live");
    assert_eq!(live_backends(&gw), expected);
}
