//! The proxies under test: portcullis with one strategy, nginx and Envoy with theirs. Each
//! target runs as its own processes (one worker thread each) on 127.0.0.1 ports of its own,
//! with a config written into a temporary directory.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a target is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// portcullis with `strategy` (YAML flow value), route `filters` (YAML flow list) and
    /// `upstream` keys (YAML flow map entries, e.g. a health check).
    Portcullis {
        strategy: String,
        filters: String,
        upstream: String,
    },
    /// nginx 1 worker; `least_conn` or round robin.
    Nginx { least_conn: bool },
    /// Envoy `--concurrency 1` with this `lb_policy`.
    Envoy { policy: &'static str },
}

/// One row of the tables.
#[derive(Clone, Debug)]
pub struct Target {
    pub label: String,
    pub kind: Kind,
}

/// Processes of one started target; stopped (by PID) when dropped.
pub struct Running {
    children: Vec<Child>,
    /// nginx: its workers outlive a killed master, so it is asked to stop (SIGTERM: the
    /// master stops its workers, then exits) before it is killed.
    term_first: bool,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            if self.term_first {
                stop_gently(c);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM, then up to 3 s for the process to exit.
fn stop_gently(c: &mut Child) {
    let Ok(pid) = i32::try_from(c.id()) else {
        return;
    };
    // SAFETY: kill(2) on our own child's PID, which is not reaped until `wait` below.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The portcullis binary: `PORTCULLIS_BIN` or this checkout's release build.
pub fn portcullis_bin() -> PathBuf {
    std::env::var_os("PORTCULLIS_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/portcullis"),
        PathBuf::from,
    )
}

/// `name` on PATH or in the peer-gateway venv (`shared/bench/setup.sh --with-gateways`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let venv = PathBuf::from("/opt/peer-gateways/bin").join(name);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain([venv, PathBuf::from("/usr/sbin").join(name)])
        .find(|p| p.is_file())
}

impl Target {
    /// Whether the program this target needs is installed.
    pub fn available(&self) -> bool {
        match self.kind {
            Kind::Portcullis { .. } => portcullis_bin().is_file(),
            Kind::Nginx { .. } => find_program("nginx").is_some(),
            Kind::Envoy { .. } => find_program("envoy").is_some(),
        }
    }

    /// Start `instances` independent processes balancing over `backends`; wait until each
    /// answers.
    pub fn start(&self, backends: &[SocketAddr], instances: usize) -> Result<Running, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut run = Running {
            children: Vec::new(),
            term_first: matches!(self.kind, Kind::Nginx { .. }),
            urls: Vec::new(),
            _dir: dir,
        };
        for i in 0..instances {
            let port = free_port();
            let d = run._dir.path().join(format!("i{i}"));
            std::fs::create_dir_all(d.join("tmp")).map_err(|e| e.to_string())?;
            let child = self.spawn(&d, port, backends)?;
            run.children.push(child);
            run.urls.push(format!("http://127.0.0.1:{port}/"));
        }
        for (i, url) in run.urls.iter().enumerate() {
            wait_ready(url, &mut run.children[i]).map_err(|e| format!("{}: {e}", self.label))?;
        }
        Ok(run)
    }

    fn spawn(
        &self,
        d: &std::path::Path,
        port: u16,
        backends: &[SocketAddr],
    ) -> Result<Child, String> {
        let (program, args, conf, text) = match &self.kind {
            Kind::Portcullis {
                strategy,
                filters,
                upstream,
            } => {
                let conf = d.join("portcullis.yaml");
                let args = vec!["-c".into(), conf.display().to_string()];
                let y = portcullis_yaml(d, port, backends, (strategy, filters, upstream));
                (portcullis_bin(), args, conf, y)
            }
            Kind::Nginx { least_conn } => {
                let conf = d.join("nginx.conf");
                let args = [
                    "-p",
                    &d.display().to_string(),
                    "-c",
                    &conf.display().to_string(),
                ]
                .map(String::from)
                .to_vec();
                let program = find_program("nginx").ok_or("nginx not installed")?;
                (
                    program,
                    args,
                    conf,
                    nginx_conf(d, port, backends, *least_conn),
                )
            }
            Kind::Envoy { policy } => {
                let conf = d.join("envoy.yaml");
                let args = ["-c", &conf.display().to_string(), "--concurrency", "1"]
                    .into_iter()
                    .chain(["--disable-hot-restart", "--log-level", "error"])
                    .map(String::from)
                    .collect();
                let program = find_program("envoy").ok_or("envoy not installed")?;
                (program, args, conf, envoy_yaml(port, backends, policy))
            }
        };
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("stderr.log")).map_err(|e| e.to_string())?;
        Command::new(&program)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))
    }
}

fn wait_ready(url: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start: {status}"));
        }
        if client.get(url).send().is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("did not answer within 15 s".into())
}

fn portcullis_yaml(
    d: &std::path::Path,
    port: u16,
    b: &[SocketAddr],
    (strategy, filters, upstream): (&str, &str, &str),
) -> String {
    let d = d.display();
    let y = format!(
        "server: {{ threads: 1, pid_file: {d}/p.pid, upgrade_sock: {d}/p.sock, \
         grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }}\n\
         listeners: [ {{ name: bench, address: \"127.0.0.1:{port}\" }} ]\n\
         routes: [ {{ name: all, upstream: pool, filters: {filters} }} ]\n\
         upstreams:\n  - {{ name: pool, strategy: {strategy}, {upstream} backends: [] }}\n"
    );
    let list: Vec<String> = b
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    y.replace(
        "backends: []",
        &format!("backends: [ {} ]", list.join(", ")),
    )
}

fn nginx_conf(d: &std::path::Path, port: u16, b: &[SocketAddr], least_conn: bool) -> String {
    let d = d.display();
    let mut c = format!(
        "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\nhttp {{ access_log off;\n\
         client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; \
         fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;\n\
         upstream ups {{ {}keepalive 128;\n",
        if least_conn { "least_conn; " } else { "" }
    );
    for a in b {
        let _ = writeln!(c, "  server {a};");
    }
    let _ = write!(
        c,
        "}}\nserver {{ listen 127.0.0.1:{port}; keepalive_requests 10000000;\n\
         location / {{ proxy_pass http://ups; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }} }}\n}}\n"
    );
    c
}

fn envoy_yaml(port: u16, b: &[SocketAddr], policy: &str) -> String {
    let mut y = format!(
        r#"static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: ups, timeout: 30s }} }} ] }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: ups
    type: STATIC
    lb_policy: {policy}
    circuit_breakers: {{ thresholds: [ {{ max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }} ] }}
    load_assignment:
      cluster_name: ups
      endpoints:
      - lb_endpoints:
"#
    );
    for a in b {
        let _ = writeln!(
            y,
            "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}",
            a.ip(),
            a.port()
        );
    }
    y
}
