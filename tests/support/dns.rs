//! A real DNS server for the tests: Debian's `dnsmasq` on a 127.0.0.1 ephemeral port,
//! authoritative for names under `.test` only (no upstream servers, no /etc/hosts), answering
//! from a hosts file that the test rewrites and makes it re-read with SIGHUP. A missing binary
//! fails the test (scripts/deps.sh installs it).

use super::{free_port, poll_until, ChildGuard};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running dnsmasq, killed on drop.
pub struct Dnsmasq {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
    extra: Vec<String>,
}

impl Dnsmasq {
    /// Serve `hosts` (lines `IP NAME`) and the extra dnsmasq options `extra` (e.g.
    /// `srv-host=...`), with a TTL of 1 s on every answer.
    pub fn start(hosts: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hosts"), hosts).expect("hosts file");
        let mut d = Dnsmasq {
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// `127.0.0.1:PORT`, for `resolvers:`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port; returns once it answers a query.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let hosts = self.dir.path().join("hosts");
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
        ])
        .args([
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--pid-file=",
        ])
        .args([
            "--user=root",
            "--group=root",
            "--local-ttl=1",
            "--auth-ttl=1",
        ])
        .args(["--log-facility=-", "--cache-size=0"])
        .arg(format!("--port={}", self.port))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(self.extra.iter().map(|e| format!("--{e}")));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is missing: run scripts/deps.sh (Debian package dnsmasq-base)");
        self.child = Some(ChildGuard(child));
        let port = self.port;
        assert!(
            poll_until(Duration::from_secs(10), || answers(port)),
            "dnsmasq on port {port} does not answer"
        );
    }

    /// Replace the hosts file and make dnsmasq re-read it (SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        let tmp = self.dir.path().join("hosts.tmp");
        std::fs::write(&tmp, hosts).expect("hosts file");
        std::fs::rename(&tmp, self.dir.path().join("hosts")).expect("replace hosts file");
        let pid = self.child.as_ref().expect("running").pid();
        super::signal(pid, "HUP");
    }

    /// Stop the server (by its PID).
    pub fn stop(&mut self) {
        self.child = None;
    }
}

/// Whether something answers a DNS query (any answer) on `port`.
fn answers(port: u16) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    // A query for `probe.test. A`, id 0x1234, recursion desired.
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if s.send_to(&q, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x12, 0x34])
}
