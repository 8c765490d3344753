//! The background jobs (the control plane's start, the lifecycle watch, health checks, DNS
//! discovery, the config watch and housekeeping) share one runtime thread, and each of them
//! still does its work while the others run beside it.

mod support;
use std::time::Duration;
use support::*;

/// The names of the process's threads that start with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn config(b: &Backends, route_to: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: {{ file: "{{dir}}/access.log" }}
routes: [{{ name: all, upstream: {route_to} }}]
upstreams:
  - name: pool
    retry: {{ attempts: 0 }}
    health_check: {{ kind: tcp, interval: 100ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2 }}
    backends: [{{ address: "{}" }}, {{ address: "{}" }}]
  - name: other
    backends: [{{ address: "{}" }}]
"#,
        b.addr(0),
        b.addr(1),
        b.addr(2)
    )
}

#[test]
fn background_jobs_share_one_thread_and_each_still_works() {
    let mut b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b, "pool"));
    let c = client();

    // Pingora would give each background service its own runtime thread ("BG <name>").
    assert_eq!(threads_named(gw.pid(), "BG "), ["BG background"]);

    // Health checks: a stopped backend leaves rotation.
    let b1 = b.addr(1).to_string();
    let healthy = || gw.metric_sum("portcullis_backend_healthy", &[("backend", &b1)]);
    assert!(poll_until(Duration::from_secs(5), || healthy() == 1.0));
    b.stop(1);
    assert!(
        poll_until(Duration::from_secs(5), || healthy() == 0.0),
        "the health check did not mark the stopped backend down"
    );
    for _ in 0..10 {
        assert_eq!(get(&c, &gw.url("/")), (200, "a".to_string()));
    }

    // Housekeeping: buffered access-log lines reach the file without more traffic.
    let log = gw.dir.path().join("access.log");
    assert!(
        poll_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.lines().count() >= 10)),
        "the access log was not written out"
    );

    // The config watch: a changed file is loaded without a signal.
    gw.write_config(&config(&b, "other"));
    assert!(
        poll_until(Duration::from_secs(10), || get(&c, &gw.url("/")).1 == "c"),
        "the config watch did not reload the changed file"
    );
    assert_eq!(threads_named(gw.pid(), "BG "), ["BG background"]);
}
