//! The Grafana dashboard and the alert rules, proven on a real Prometheus (Debian's
//! `prometheus`, scraping a gateway under load): every PromQL expression of
//! conf/grafana/portcullis-dashboard.json returns data, `promtool` accepts the rules and
//! their unit tests, and alerts fire when their condition is created (a backend stopped, a
//! reload refused).

mod support;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use support::prometheus::Prometheus;
use support::*;

const TOKEN: &str = "prometheus-test-token-0123456789";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Backends: 0, 1 serve `pool`; 2 answers 500 behind a breaker; 3 serves `flaky` beside a
/// dead port, whose retries exceed a small budget.
fn config(b: &Backends, dead: u16) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}", token: "{TOKEN}" }}
access_log: off
routes:
  - name: api
    upstream: pool
  - name: limited
    match: {{ path: {{ prefix: /limited }} }}
    upstream: pool
    filters:
      - {{ kind: rate_limit, rate: 5, per: second }}
  - name: broken
    match: {{ path: {{ prefix: /broken }} }}
    upstream: broken
    filters:
      - {{ kind: circuit_breaker, consecutive_failures: 3, open_time: 1s }}
  - name: flaky
    match: {{ path: {{ prefix: /flaky }} }}
    upstream: flaky
upstreams:
  - name: pool
    health_check: {{ kind: http, path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
    backends:
{}  - name: broken
    backends:
      - {{ address: "{}" }}
  - name: flaky
    retry: {{ attempts: 1, backoff: off, budget: {{ ratio: 0.1, min_per_second: 1, window: 1s }} }}
    backends:
      - {{ address: "127.0.0.1:{dead}" }}
      - {{ address: "{}" }}
"#,
        backends_yaml(&[b.addr(0), b.addr(1)]),
        b.addr(2),
        b.addr(3),
    )
}

/// `POST /reload` on the admin API; its status.
fn reload(gw: &Gateway) -> u16 {
    let r = client()
        .post(gw.admin_url("/reload"))
        .bearer_auth(TOKEN)
        .send();
    r.expect("reload").status().as_u16()
}

/// Requests on every route from one thread until `stop` (at most 3 minutes, about 100/s).
fn load(url: String, stop: &AtomicBool) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !stop.load(Relaxed) && Instant::now() < deadline {
        for path in ["/", "/limited", "/broken", "/flaky"] {
            let _ = c.get(format!("{url}{path}")).send();
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Every `expr` of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo("conf/grafana/portcullis-dashboard.json")).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "10s")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    assert!(out.len() >= 15, "{} queries", out.len());
    out
}

#[test]
fn every_dashboard_query_returns_data() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    b.state(2).set_status(500);
    let dead = DeadPort::new();
    let gw = Gateway::start(&config(&b, dead.port));
    assert_eq!(reload(&gw), 200);
    let prom = Prometheus::start(&format!("127.0.0.1:{}", gw.metrics_port), &[]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| load(gw.url(""), &stop));
        let queries = dashboard_queries();
        let mut missing: Vec<(String, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for (title, expr) in &queries {
            let left = deadline.saturating_duration_since(Instant::now());
            if !poll_until(left, || !prom.query(expr).is_empty()) {
                missing.push((title.clone(), expr.clone()));
            }
        }
        let instances = prom.query("portcullis_config_generation");
        stop.store(true, Relaxed);
        assert!(missing.is_empty(), "queries without data: {missing:#?}");
        assert_eq!(
            instances.len(),
            1,
            "the instance variable's source: {instances:?}"
        );
        println!("{} dashboard queries returned data", queries.len());
    });
    drop(b);
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("conf/prometheus"))
        .output()
        .expect("promtool is missing: run scripts/deps.sh (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_fire() {
    let text = promtool(&["check", "rules", "portcullis-alerts.yml"]);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
    promtool(&["test", "rules", "portcullis-alerts.test.yml"]);

    let mut b = Backends::start(&["a", "b", "c", "d"]);
    let dead = DeadPort::new();
    let gw = Gateway::start(&config(&b, dead.port));
    let prom = Prometheus::start(
        &format!("127.0.0.1:{}", gw.metrics_port),
        &[repo("conf/prometheus/portcullis-alerts.yml")],
    );
    let scraped = poll_until(Duration::from_secs(20), || {
        !prom.query("portcullis_backend_healthy").is_empty()
    });
    assert!(scraped, "prometheus never scraped the gateway");
    assert!(
        prom.alerts().is_empty(),
        "alerts before any fault: {:?}",
        prom.alerts()
    );

    // A backend stops: BackendDown goes pending, then fires after its `for: 30s`.
    b.stop(1);
    let stopped = Instant::now();
    let down = b.addr(1).to_string();
    let fired = poll_until(Duration::from_secs(75), || {
        prom.alerts().iter().any(|(n, s, l)| {
            n == "PortcullisBackendDown" && s == "firing" && l["backend"] == down.as_str()
        })
    });
    assert!(
        fired,
        "PortcullisBackendDown did not fire: {:?}",
        prom.alerts()
    );
    println!(
        "PortcullisBackendDown fired {:?} after the backend stopped",
        stopped.elapsed()
    );
    let wrong: Vec<_> = prom
        .alerts()
        .into_iter()
        .filter(|(n, _, l)| n == "PortcullisBackendDown" && l["backend"] != down.as_str())
        .collect();
    assert!(wrong.is_empty(), "a live backend is alerted: {wrong:?}");

    // A refused reload fires ReloadFailed.
    gw.write_config("listeners: [ this is not a config");
    assert_eq!(reload(&gw), 422);
    let fired = poll_until(Duration::from_secs(20), || {
        prom.alerts()
            .iter()
            .any(|(n, s, _)| n == "PortcullisReloadFailed" && s == "firing")
    });
    assert!(
        fired,
        "PortcullisReloadFailed did not fire: {:?}",
        prom.alerts()
    );
}
