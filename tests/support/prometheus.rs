//! A real Prometheus (Debian's `prometheus`) on a 127.0.0.1 ephemeral port, scraping a
//! gateway's `/metrics` every second and evaluating rule files every second. A missing binary
//! fails the test (scripts/deps.sh installs it); nothing is skipped.

use super::{client, free_port, poll_until, ChildGuard};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One Prometheus server, killed on drop.
pub struct Prometheus {
    /// Its HTTP port.
    pub port: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrape `target` (`host:port` of a metrics listener) with the rule files `rules`.
    pub fn start(target: &str, rules: &[std::path::PathBuf]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rule_files: Vec<String> = rules
            .iter()
            .map(|r| format!("\"{}\"", r.display()))
            .collect();
        let conf = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms }}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: portcullis\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
            rule_files.join(", ")
        );
        let conf_path = dir.path().join("prometheus.yml");
        std::fs::write(&conf_path, conf).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("log")).expect("log")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus ({e}): run scripts/deps.sh (Debian package prometheus)"));
        let p = Prometheus {
            port,
            _child: ChildGuard(child),
            _dir: dir,
        };
        let c = client();
        let ready = poll_until(Duration::from_secs(30), || {
            c.get(p.url("/-/ready"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        assert!(ready, "prometheus not ready in 30 s");
        p
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `data.result` of an instant query (panics on a query error: a bad expression).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let v: Value = client()
            .get(self.url("/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .and_then(|r| r.json())
            .expect("query answer");
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alerts now pending or firing: `(name, state, labels)`.
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        let v: Value = client()
            .get(self.url("/api/v1/alerts"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                (
                    name,
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}
