//! The affinity table end to end: bounded by max_entries, entries expire, a membership change
//! or a reload moves no remembered key, and its metrics count what happened.

mod support;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn config(addrs: &[std::net::SocketAddr], affinity: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    affinity: {affinity}
    backends:
{}"#,
        backends_yaml(addrs)
    )
}

/// The backend that answers `key`'s request.
fn serve(c: &reqwest::blocking::Client, gw: &Gateway, key: &str) -> String {
    let r = c
        .get(gw.url("/"))
        .header("x-user", key)
        .send()
        .expect("answer");
    assert_eq!(r.status(), 200);
    r.headers()["x-backend"].to_str().unwrap().to_string()
}

/// `keys` requests from 8 threads; key -> backend.
fn serve_all(gw: &Gateway, keys: &[String]) -> HashMap<String, String> {
    let out = std::sync::Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for part in keys.chunks(keys.len().div_ceil(8)) {
            let out = &out;
            s.spawn(move || {
                let c = client();
                for k in part {
                    let b = serve(&c, gw, k);
                    out.lock().unwrap().insert(k.clone(), b);
                }
            });
        }
    });
    out.into_inner().unwrap()
}

fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("upstream", "pool")];
    all.extend_from_slice(labels);
    gw.metric_sum(name, &all)
}

#[test]
fn five_thousand_keys_in_a_table_of_a_thousand_stay_within_it() {
    let b = Backends::start(&["a", "b"]);
    let gw = Gateway::start(&config(
        &[b.addr(0), b.addr(1)],
        "{ key: \"header:x-user\", ttl: 1h, max_entries: 1000 }",
    ));
    let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    serve_all(&gw, &keys);
    let entries = metric(&gw, "portcullis_affinity_entries", &[]);
    let evicted = metric(
        &gw,
        "portcullis_affinity_evictions_total",
        &[("reason", "lru")],
    );
    assert!((900.0..=1000.0).contains(&entries), "entries {entries}");
    assert_eq!(entries + evicted, 5_000.0);
    assert_eq!(
        metric(&gw, "portcullis_affinity_misses_total", &[]),
        5_000.0
    );
    // The most recently used keys are remembered: 100 new keys, then the same again, all hits.
    let recent: Vec<String> = (0..100).map(|i| format!("late-{i}")).collect();
    let c = client();
    let first: Vec<String> = recent.iter().map(|k| serve(&c, &gw, k)).collect();
    let again: Vec<String> = recent.iter().map(|k| serve(&c, &gw, k)).collect();
    assert_eq!(first, again);
    assert_eq!(metric(&gw, "portcullis_affinity_hits_total", &[]), 100.0);
    assert!(metric(&gw, "portcullis_affinity_entries", &[]) <= 1000.0);
}

#[test]
fn remembered_keys_stay_put_when_a_backend_joins_and_across_a_reload() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let three = [b.addr(0), b.addr(1), b.addr(2)];
    let affinity = "{ key: \"header:x-user\", ttl: 1h, max_entries: 10000 }";
    let gw = Gateway::start(&config(&three, affinity));
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let before = serve_all(&gw, &keys);
    let mut spread: HashMap<&str, usize> = HashMap::new();
    for v in before.values() {
        *spread.entry(v).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "{spread:?}");

    // A reload adds `d`: no remembered key moves; new keys reach `d`.
    gw.write_config(&config(
        &[b.addr(0), b.addr(1), b.addr(2), b.addr(3)],
        affinity,
    ));
    gw.signal("HUP");
    assert!(poll_until(Duration::from_secs(10), || {
        let fresh: Vec<String> = (0..8)
            .map(|i| format!("probe-{i}-{}", fastrand::u32(..)))
            .collect();
        serve_all(&gw, &fresh).values().any(|v| v == "d")
    }));
    let hits = metric(&gw, "portcullis_affinity_hits_total", &[]);
    assert_eq!(serve_all(&gw, &keys), before, "a remembered key moved");
    assert_eq!(
        metric(&gw, "portcullis_affinity_hits_total", &[]),
        hits + 300.0
    );

    // Draining a backend moves only its keys; they then stay on their new backend.
    let drained_name = before["k0"].clone();
    let i = ["a", "b", "c"]
        .iter()
        .position(|n| *n == drained_name)
        .unwrap();
    gw.write_config(&config(
        &three
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .chain([b.addr(3)])
            .collect::<Vec<_>>(),
        affinity,
    ));
    gw.signal("HUP");
    assert!(poll_until(Duration::from_secs(10), || serve(
        &client(),
        &gw,
        "k0"
    ) != drained_name));
    let after = serve_all(&gw, &keys);
    for k in &keys {
        if before[k] != drained_name {
            assert_eq!(after[k], before[k], "{k} moved though its backend serves");
        } else {
            assert_ne!(after[k], drained_name);
        }
    }
    assert_eq!(serve_all(&gw, &keys), after, "moved keys stay");
}

#[test]
fn an_entry_expires_after_its_ttl() {
    let b = Backends::start(&["a", "b"]);
    let gw = Gateway::start(&config(
        &[b.addr(0), b.addr(1)],
        "{ key: \"header:x-user\", ttl: 1s, max_entries: 100 }",
    ));
    let c = client();
    let first = serve(&c, &gw, "alice");
    for _ in 0..5 {
        assert_eq!(serve(&c, &gw, "alice"), first);
    }
    assert_eq!(metric(&gw, "portcullis_affinity_hits_total", &[]), 5.0);
    std::thread::sleep(Duration::from_millis(1_300));
    // Expired: a miss, counted as a TTL eviction, and remembered again.
    serve(&c, &gw, "alice");
    assert_eq!(
        metric(
            &gw,
            "portcullis_affinity_evictions_total",
            &[("reason", "ttl")]
        ),
        1.0
    );
    assert_eq!(metric(&gw, "portcullis_affinity_misses_total", &[]), 2.0);
    assert_eq!(metric(&gw, "portcullis_affinity_entries", &[]), 1.0);
}

#[test]
fn affinity_settings_are_checked() {
    let b = Backends::start(&["a"]);
    let (code, out) = check_config(&config(
        &[b.addr(0)],
        "{ key: \"header:\", max_entries: 5 }",
    ));
    assert_ne!(code, 0);
    assert!(out.contains("upstreams[0].affinity.key"), "{out}");
    assert!(out.contains("upstreams[0].affinity.max_entries"), "{out}");
}
