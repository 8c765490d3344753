//! The service registry of the admin API: leases renewed by heartbeat, expiry under load
//! without a failed request, tokens on every mutation, and registrations that survive a
//! graceful upgrade through the state file.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::load::Load;
use support::{binary, poll_until, Backends, Gateway};

const TOKEN: &str = "registry-test-token-0123456789";

fn config(b: &Backends) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}", token: "{TOKEN}", state_file: "{{dir}}/registry.json" }}
access_log: off
routes:
  - {{ name: all, upstream: pool }}
upstreams:
  - name: pool
    backends: [{{ address: "{a}" }}]
"#,
        a = b.addr(0)
    )
}

fn call(g: &Gateway, method: &str, path: &str, body: Option<Value>, token: bool) -> (u16, Value) {
    let c = support::client();
    let url = g.admin_url(path);
    let mut req = match method {
        "POST" => c.post(url),
        "PUT" => c.put(url),
        "DELETE" => c.delete(url),
        _ => c.get(url),
    };
    if token {
        req = req.bearer_auth(TOKEN);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().expect("admin call");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn registered(g: &Gateway) -> Vec<Value> {
    call(g, "GET", "/registrations", None, false).1["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn register(g: &Gateway, addr: &str, ttl: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "address": addr, "weight": 1, "metadata": { "zone": "z1" } });
    if let Some(t) = ttl {
        body["ttl"] = json!(t);
    }
    call(g, "POST", "/upstreams/pool/registrations", Some(body), true)
}

#[test]
fn an_expired_lease_leaves_within_two_leases_and_no_request_fails() {
    let b = Backends::start(&["static", "leased"]);
    let g = Gateway::start(&config(&b));
    let leased = b.addr(1).to_string();
    assert_eq!(register(&g, &leased, Some("2s")).0, 201);
    let load = Load::start(&g.url("/"), 4, 50_000, Duration::from_secs(30));
    // Heartbeats keep it for longer than its lease.
    let hb = format!("/upstreams/pool/registrations/{leased}/heartbeat");
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(call(&g, "POST", &hb, None, true).0, 200);
    }
    assert_eq!(registered(&g).len(), 1, "renewed past its 2 s lease");
    assert!(b.requests(1) > 20, "the registered instance serves");
    let last_beat = Instant::now();
    assert!(
        poll_until(Duration::from_secs(6), || registered(&g).is_empty()),
        "the lease ran out"
    );
    let gone_after = last_beat.elapsed();
    let at_exit = b.requests(1);
    let before = load.sent();
    poll_until(Duration::from_secs(5), || load.sent() > before + 300);
    let r = load.finish();
    println!(
        "left {gone_after:?} after the last heartbeat; {:?}",
        r.statuses
    );
    assert!(
        gone_after >= Duration::from_millis(1500) && gone_after <= Duration::from_secs(4),
        "left within 2 x lease: {gone_after:?}"
    );
    assert!(b.requests(1) <= at_exit + 4, "no new requests once it left");
    assert_eq!(r.failures(), 0, "{:?} {:?}", r.statuses, r.errors.first());
    let m = g.metrics();
    assert_eq!(
        support::metric_sum(&m, "portcullis_registry_instances", &[("upstream", "pool")]),
        0.0
    );
    assert_eq!(
        support::metric_sum(
            &m,
            "portcullis_registry_expired_total",
            &[("upstream", "pool")]
        ),
        1.0
    );
}

#[test]
fn every_mutation_needs_the_token_and_bad_calls_change_nothing() {
    let b = Backends::start(&["static", "x"]);
    let g = Gateway::start(&config(&b));
    let x = b.addr(1).to_string();
    let body = json!({ "address": x });
    let path = "/upstreams/pool/registrations";
    assert_eq!(call(&g, "POST", path, Some(body.clone()), false).0, 401);
    let hb = format!("{path}/{x}/heartbeat");
    assert_eq!(call(&g, "POST", &hb, None, false).0, 401);
    assert_eq!(
        call(&g, "DELETE", &format!("{path}/{x}"), None, false).0,
        401
    );
    for (bad, status) in [
        (json!({ "address": x, "ttl": "0s" }), 400),
        (json!({ "address": x, "ttl": "forever" }), 400),
        (json!({ "address": x, "weight": 0 }), 400),
        (json!({ "address": "nowhere" }), 400),
        (json!({ "address": b.addr(0).to_string() }), 409),
        (json!({ "address": x, "colour": "red" }), 400),
    ] {
        let (s, v) = call(&g, "POST", path, Some(bad.clone()), true);
        assert_eq!(s, status, "{bad}: {v}");
    }
    assert_eq!(
        call(
            &g,
            "POST",
            "/upstreams/nope/registrations",
            Some(body.clone()),
            true
        )
        .0,
        404
    );
    assert_eq!(
        call(&g, "POST", &hb, None, true).0,
        404,
        "not registered yet"
    );
    let with_ttl = json!({ "address": x, "ttl": "5s" });
    let (s, v) = call(&g, "POST", "/upstreams/pool/backends", Some(with_ttl), true);
    assert_eq!(
        (s, v["error"].as_str().unwrap_or("")),
        (
            400,
            "ttl applies to registrations: POST /upstreams/{name}/registrations"
        )
    );
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, _) = call(
        &g,
        "POST",
        path,
        Some(json!({ "address": x, "metadata": many })),
        true,
    );
    assert_eq!(s, 400, "metadata is bounded");
    assert!(registered(&g).is_empty(), "nothing changed");
    // Without a lease it stays until deregistered.
    assert_eq!(register(&g, &x, None).0, 201);
    let r = registered(&g);
    assert_eq!(r[0]["lease_left_ms"], Value::Null);
    assert_eq!(r[0]["metadata"]["zone"], "z1");
    let (s, up) = call(&g, "GET", "/upstreams/pool", None, false);
    assert_eq!(s, 200);
    let origins: Vec<&str> = up["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["file", "registered"]);
    assert_eq!(
        call(&g, "DELETE", &format!("{path}/{x}"), None, true).0,
        200
    );
    assert!(registered(&g).is_empty());
}

#[test]
fn registrations_survive_a_graceful_upgrade() {
    let b = Backends::start(&["static", "reg"]);
    let mut old = Gateway::start(&config(&b));
    let reg = b.addr(1).to_string();
    assert_eq!(register(&old, &reg, Some("30s")).0, 201);
    let left_before = registered(&old)[0]["lease_left_ms"].as_u64().unwrap();
    let new = old.spawn_upgrade(&binary());
    let sock = old.dir.path().join("upgrade.sock");
    assert!(poll_until(Duration::from_secs(10), || sock.exists()));
    old.signal("QUIT");
    assert!(old.wait_exit(Duration::from_secs(30)).is_some());
    // The new process answers on the same admin port, with the registration and its lease.
    let mut after = Vec::new();
    assert!(poll_until(Duration::from_secs(10), || {
        after = registered(&old);
        !after.is_empty()
    }));
    let status = call(&old, "GET", "/status", None, false).1;
    assert_eq!(
        status["pid"].as_u64(),
        Some(u64::from(new.pid())),
        "the new process answers"
    );
    let left_after = after[0]["lease_left_ms"].as_u64().unwrap();
    assert!(
        left_after <= left_before && left_after > 20_000,
        "lease carried over: {left_after}"
    );
    let c = support::client();
    let before = b.requests(1);
    for _ in 0..20 {
        assert_eq!(support::get(&c, &old.url("/")).0, 200);
    }
    assert!(
        b.requests(1) >= before + 8,
        "the registered instance serves in the new process"
    );
}
