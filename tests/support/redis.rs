//! Real Redis servers for the tests: Debian's `redis-server` on 127.0.0.1 ephemeral ports,
//! alone or as a 3-node cluster made with `redis-cli --cluster create`. A missing binary fails
//! the test (scripts/deps.sh installs it); nothing is skipped.

use super::{free_port, poll_until, ChildGuard};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One `redis-server`, killed on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
    cluster: bool,
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli is missing: run scripts/deps.sh (Debian package redis-tools)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Redis {
    /// A standalone server.
    pub fn start() -> Self {
        Self::start_mode(false)
    }

    fn start_mode(cluster: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            port: 0,
            dir,
            child: None,
            cluster,
        };
        // A port from free_port() can be taken before redis-server binds it, and a cluster node
        // also binds port + 10000 (its bus): try a few fresh ports before failing.
        for _ in 0..4 {
            r.port = if cluster { cluster_port() } else { free_port() };
            if r.try_start() {
                return r;
            }
            r.child = None;
        }
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port; returns once it answers PING.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "redis-server on port {} did not answer PING; its log:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    /// Start on `self.port`; whether it answers PING within 10 s (false at once if it exits).
    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--logfile", "redis.log"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = cmd
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is missing: run scripts/deps.sh (Debian package redis-server)");
        let child = self.child.insert(ChildGuard(child));
        let port = self.port;
        let mut exited = false;
        poll_until(Duration::from_secs(10), || {
            exited = child.0.try_wait().ok().flatten().is_some();
            exited || cli(port, &["PING"]).as_deref() == Some("PONG")
        }) && !exited
    }

    /// Kill the server (SIGKILL, by its PID).
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Run a command with redis-cli.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A free port whose cluster bus port (+10000) is free too and below 65536, in at most 1,000
/// draws.
fn cluster_port() -> u16 {
    let fits =
        |p: u16| p <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
    (0..1_000)
        .map(|_| free_port())
        .find(|p| fits(*p))
        .expect("no loopback port with a free cluster bus port in 1,000 draws")
}

/// A 3-master Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Start 3 nodes and join them; returns once every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<Redis> = (0..3).map(|_| Redis::start_mode(true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            assert!(
                poll_until(Duration::from_secs(15), || n
                    .cli(&["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))),
                "cluster node {} not ok",
                n.port
            );
        }
        RedisCluster { nodes }
    }

    /// The node URLs, as a YAML flow list.
    pub fn yaml_list(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}
