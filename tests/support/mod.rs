//! Test harness: real backends on 127.0.0.1 ephemeral ports, the real `portcullis` binary, a
//! real HTTP client. Everything started here is stopped by `Drop`.
#![allow(dead_code)]

pub mod chromium;
pub mod dns;
pub mod load;
pub mod otlp;
pub mod prometheus;
pub mod raw_http;
pub mod redis;
pub mod tcp;
pub mod tls;
pub mod ws;

use portcullis::devserver::{DevServer, DevState};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Field `key` of /proc/`pid`/status (`pid` may be `self`), its value trimmed.
pub fn proc_status(pid: impl std::fmt::Display, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// A size field of /proc/`pid`/status (`VmRSS`, `RssAnon`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let v = proc_status(pid, key);
    v.trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a size in kB: {v}"))
}

/// The resident memory (VmRSS) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Lets this process, and the gateway it starts, hold `n` descriptors.
pub fn raise_descriptor_limit(n: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a properly initialised struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= n as libc::rlim_t,
            "the hard descriptor limit {} is below the {n} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_cur.max(n as libc::rlim_t);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Poll `f` until it returns true or `timeout` passes. Returns whether it succeeded.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago.
///
/// Never the same port twice in one test process: the kernel may hand a released port out
/// again, and two gateways of tests running in parallel could then be given the same port for
/// different listeners. CI once saw a WebSocket client of one test answered by another
/// gateway's admin API ("no such call: GET /chat").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A port that refuses connections for as long as this value lives: bound, never listening,
/// so no other test can take it in the meantime (a port from [`free_port`] can be taken by
/// a backend of a test running in parallel, which then answers instead of refusing).
pub struct DeadPort {
    _socket: tokio::net::TcpSocket,
    /// The port.
    pub port: u16,
}

impl DeadPort {
    /// Bind an ephemeral port on 127.0.0.1 without listening.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind an ephemeral port");
        let port = socket.local_addr().expect("local addr").port();
        DeadPort {
            _socket: socket,
            port,
        }
    }
}

/// Dev-server backends running on their own runtime.
pub struct Backends {
    rt: tokio::runtime::Runtime,
    names: Vec<String>,
    addrs: Vec<SocketAddr>,
    servers: Vec<Option<DevServer>>,
    /// Ports of stopped backends, held (bound, not listening) so that no backend of a
    /// parallel test takes them and answers in their place.
    held: Vec<Option<tokio::net::TcpSocket>>,
}

/// Bind `addr` without listening: connections to it are refused, and nobody else can bind it.
fn hold_port(addr: SocketAddr) -> Option<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    Some(socket)
}

impl Backends {
    /// Start one backend per name, each on a free port.
    pub fn start(names: &[&str]) -> Self {
        let addrs: Vec<SocketAddr> = names
            .iter()
            .map(|_| "127.0.0.1:0".parse().unwrap())
            .collect();
        Self::start_at(names, &addrs)
    }

    /// Start backend `names[i]` on `addrs[i]` (port 0: any free one).
    pub fn start_at(names: &[&str], at: &[SocketAddr]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for (n, a) in names.iter().zip(at) {
            let s = rt.block_on(DevServer::start(n, *a)).expect("start backend");
            addrs.push(s.addr());
            servers.push(Some(s));
        }
        Backends {
            rt,
            names: names.iter().map(|s| s.to_string()).collect(),
            held: addrs.iter().map(|_| None).collect(),
            addrs,
            servers,
        }
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Address of backend `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Knobs and counters of backend `i` (must be running).
    pub fn state(&self, i: usize) -> Arc<DevState> {
        Arc::clone(self.servers[i].as_ref().expect("backend running").state())
    }

    /// Requests that arrived at backend `i`.
    pub fn arrivals(&self, i: usize) -> u64 {
        self.servers[i].as_ref().map_or(0, |s| s.state().arrivals())
    }

    /// Requests answered by backend `i`.
    pub fn requests(&self, i: usize) -> u64 {
        self.servers[i].as_ref().map_or(0, |s| s.state().requests())
    }

    /// Stop backend `i`: its port refuses connections and its connections close.
    pub fn stop(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.stop();
        }
        // Wait until the port really refuses, then hold it.
        let addr = self.addrs[i];
        poll_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err());
        poll_until(Duration::from_secs(5), || {
            self.held[i] = hold_port(addr);
            self.held[i].is_some()
        });
    }

    /// Start backend `i` again on the same port.
    pub fn restart(&mut self, i: usize) {
        let addr = self.addrs[i];
        let name = self.names[i].clone();
        self.held[i] = None;
        let mut started = None;
        poll_until(Duration::from_secs(5), || {
            started = self.rt.block_on(DevServer::start(&name, addr)).ok();
            started.is_some()
        });
        self.servers[i] = Some(started.expect("restart backend on its old port"));
    }
}

/// The example custom binary `examples/custom_gateway.rs` (cargo builds examples before it
/// runs integration tests).
pub fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let dir = deps.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo test builds examples)",
        path.display()
    );
    path
}

/// A `portcullis` process on a generated config.
pub struct Gateway {
    child: Child,
    /// Client port.
    pub port: u16,
    /// Metrics port.
    pub metrics_port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Scratch directory (config, logs).
    pub dir: tempfile::TempDir,
}

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

impl Gateway {
    /// Start the gateway. In `yaml`, `{listen}`, `{metrics}` and `{dir}` are replaced by the
    /// client address, the metrics address and the scratch directory; a `server:` section
    /// with per-test pid file and upgrade socket is prepended unless the yaml has one.
    pub fn start(yaml: &str) -> Self {
        Self::start_binary(&binary(), yaml)
    }

    /// Like [`Gateway::start`] with another binary (e.g. a custom build from `examples/`).
    pub fn start_binary(bin: &std::path::Path, yaml: &str) -> Self {
        Self::start_with_env(bin, yaml, &[])
    }

    /// Like [`Gateway::start_binary`], with these variables added to the gateway's environment.
    pub fn start_with_env(bin: &std::path::Path, yaml: &str, env: &[(&str, &str)]) -> Self {
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start(bin, yaml, env) {
                Ok(gw) => return gw,
                Err(e) => last_err = e,
            }
        }
        panic!("gateway did not start: {last_err}");
    }

    fn try_start(bin: &std::path::Path, yaml: &str, env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (port, metrics_port, admin_port) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("portcullis.yaml");
        std::fs::write(
            &conf,
            render(yaml, dir.path(), port, metrics_port, admin_port),
        )
        .map_err(|e| e.to_string())?;
        let stderr =
            std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
        let stdout =
            std::fs::File::create(dir.path().join("stdout.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| e.to_string())?;
        let up = poll_until(Duration::from_secs(15), || {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            // Listening itself, not some other test's server that took the port in between.
            owns_listener(child.id(), port)
        });
        // The metrics and admin listeners start alongside; wait for those the config has.
        for (placeholder, p) in [("{metrics}", metrics_port), ("{admin}", admin_port)] {
            if yaml.contains(placeholder) {
                let a: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
                poll_until(Duration::from_secs(10), || TcpStream::connect(a).is_ok());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            return Err(format!("exited with {status}: {log}"));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            return Err("not listening after 15 s".into());
        }
        Ok(Gateway {
            child,
            port,
            metrics_port,
            admin_port,
            dir,
        })
    }

    /// The config file the gateway runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.yaml")
    }

    /// Replace the config file (same placeholders and ports as at start). Written to a
    /// temporary file and renamed, as config management tools do.
    pub fn write_config(&self, yaml: &str) {
        let text = render(
            yaml,
            self.dir.path(),
            self.port,
            self.metrics_port,
            self.admin_port,
        );
        let tmp = self.dir.path().join("portcullis.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("replace config");
    }

    /// Send a signal (`HUP`, `QUIT`, `TERM`...) to the gateway process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Wait up to `timeout` for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start another process of the same binary on the same config with `-u` (graceful
    /// upgrade): it waits for this one to hand over its listeners on SIGQUIT.
    pub fn spawn_upgrade(&self, bin: &std::path::Path) -> ChildGuard {
        let stderr =
            std::fs::File::create(self.dir.path().join("stderr-upgrade.log")).expect("log");
        let child = Command::new(bin)
            .arg("-u")
            .arg("-c")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn upgrade");
        ChildGuard(child)
    }

    /// URL of `path` on the client listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The Prometheus text.
    pub fn metrics(&self) -> String {
        client()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Sum of every sample of `name` whose labels include all of `labels` (`k="v"` pairs).
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// What the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `portcullis -t` on `yaml` (placeholders filled with unused addresses); returns the exit
/// code and the output, with the temporary file's path replaced by `FILE`.
pub fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.yaml");
    let text = yaml
        .replace("{listen}", "127.0.0.1:1")
        .replace("{metrics}", "127.0.0.1:2")
        .replace("{admin}", "127.0.0.1:3")
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run -t");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&path.display().to_string(), "FILE"),
    )
}

/// Replace `{listen}`, `{metrics}`, `{admin}` and `{dir}`, and prepend a `server:` section
/// with per-test pid file and upgrade socket unless the yaml has one.
fn render(yaml: &str, dir: &std::path::Path, port: u16, metrics: u16, admin: u16) -> String {
    let d = dir.display().to_string();
    let text = yaml
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{metrics}", &format!("127.0.0.1:{metrics}"))
        .replace("{admin}", &format!("127.0.0.1:{admin}"))
        .replace("{dir}", &d);
    if text.contains("server:") {
        return text;
    }
    format!(
        "server:\n  threads: 2\n  pid_file: {d}/portcullis.pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n{text}"
    )
}

/// Whether process `pid` holds the listening socket of 127.0.0.1:`port` (Linux: the
/// socket's inode in /proc/net/tcp among the process's file descriptors). A bare connect
/// cannot tell: a free port can be taken by another test's backend before the gateway binds.
pub fn owns_listener(pid: u32, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.to_string_lossy() == *i))
    })
}

/// Send `sig` to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sum of the samples of `name` in Prometheus text that carry all `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A blocking HTTP client (no proxy, short timeouts).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET `url`; returns (status, x-backend header or "").
pub fn get(c: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    match c.get(url).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let backend = r
                .headers()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, backend)
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// A config with one listener (`listener_extra` appended inside its flow map, e.g.
/// `, client: { ... }`), one route through `filters` to an upstream of backend 0, access log
/// off, and `top_extra` (whole top-level sections) at the end.
pub fn one_route(b: &Backends, listener_extra: &str, filters: &str, top_extra: &str) -> String {
    one_route_to(b.addr(0), listener_extra, filters, top_extra)
}

/// [`one_route`] to a backend at `backend` that is not one of [`Backends`].
pub fn one_route_to(
    backend: SocketAddr,
    listener_extra: &str,
    filters: &str,
    top_extra: &str,
) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}"{listener_extra} }}
access_log: off
routes:
  - name: all
    upstream: pool
    filters: [{filters}]
upstreams:
  - {{ name: pool, backends: [{{ address: "{backend}" }}] }}
{top_extra}"#
    )
}

/// The YAML of a backend list for `addrs`.
pub fn backends_yaml(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("      - {{ address: {a} }}\n"))
        .collect()
}

/// A response read off a raw socket.
#[derive(Debug, Default)]
pub struct RawResponse {
    /// Status code (0 when nothing parsable came back).
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Everything after the header.
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send `request` as raw bytes on a new connection and read until the server closes it
/// (the request should say `Connection: close`) or `timeout` passes.
pub fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_raw(&buf)
}

/// One whole response (header and `Content-Length` body), however the bytes are segmented.
pub fn read_response(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read the response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_raw(&out);
            let len: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return out;
            }
        }
    }
}

/// Parse the first response in `buf`.
pub fn parse_raw(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return RawResponse::default();
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}
