//! TCP proxying side by side (issue 11): portcullis `protocol: tcp`, HAProxy `mode tcp` (at its
//! defaults, and with `option splice-auto`) and nginx `stream`, one worker each, in one run.
//!
//! `cargo bench --bench tcp -- [--rounds 3] [--gib 1] [--secs 10] [--conns 32] [--targets a,b]`
//! (targets: portcullis, portcullis-b (the build at `PORTCULLIS_BIN_B`), haproxy,
//! haproxy-splice, nginx)
//!
//! - **bulk**: one connection moves `--gib` GiB backend → client (download), then another
//!   client → backend (upload); GiB/s from the wall time, and the proxy's CPU seconds per GiB.
//! - **connection rate**: `--conns` clients for `--secs` seconds, each in a loop: connect, send
//!   16 bytes, read their echo, close. Connections per second, and the proxy's CPU ms per 1000.
//!
//! Each proxy runs on CPU 1 (`taskset -c 1`); this process (clients and the two backends) on
//! CPU 0. Rounds are interleaved over the targets; the tables show medians. Only 127.0.0.1 is
//! contacted; every phase is bounded in bytes or time.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

struct Args {
    rounds: usize,
    gib: u64,
    secs: u64,
    conns: usize,
    targets: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 3,
        gib: 1,
        secs: 10,
        conns: 32,
        targets: ["portcullis", "haproxy", "haproxy-splice", "nginx"]
            .map(String::from)
            .to_vec(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--gib" => a.gib = v.parse().expect("--gib N"),
            "--secs" => a.secs = v.parse().expect("--secs N"),
            "--conns" => a.conns = v.parse().expect("--conns N"),
            "--targets" => a.targets = v.split(',').map(String::from).collect(),
            _ => {
                i += 1; // cargo's own flags (--bench)
                continue;
            }
        }
        i += 2;
    }
    a
}

// ---- the backend: D = send N bytes, U = count bytes until EOF, E = echo -------------------

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; CHUNK];
    s.read_exact(&mut buf[..1]).await?;
    match buf[0] {
        b'D' => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n).await?;
            let mut left = u64::from_be_bytes(n);
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                s.write_all(&buf[..k]).await?;
                left -= k as u64;
            }
        }
        b'U' => {
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_be_bytes()).await?;
        }
        _ => {
            s.write_all(&buf[..1]).await?;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await?;
            }
        }
    }
    s.shutdown().await
}

async fn backend(l: TcpListener) {
    while let Ok((s, _)) = l.accept().await {
        tokio::spawn(serve(s));
    }
}

// ---- the proxies ---------------------------------------------------------------------------

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain([PathBuf::from("/usr/sbin").join(name)])
        .find(|p| p.is_file())
}

/// The binary of target `portcullis` (`PORTCULLIS_BIN`, else the release build) or of
/// `portcullis-b` (`PORTCULLIS_BIN_B`: a second build, to compare two in one run).
fn portcullis_bin(target: &str) -> PathBuf {
    let var = if target == "portcullis-b" {
        "PORTCULLIS_BIN_B"
    } else {
        "PORTCULLIS_BIN"
    };
    std::env::var_os(var).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/portcullis"),
        PathBuf::from,
    )
}

/// Program, arguments and config text of `target` listening on `port`.
fn setup(
    target: &str,
    d: &Path,
    port: u16,
    b: &[SocketAddr],
) -> Option<(PathBuf, Vec<String>, PathBuf, String)> {
    let dd = d.display();
    match target {
        "portcullis" | "portcullis-b" => {
            let list: Vec<String> = b
                .iter()
                .map(|a| format!("{{ address: \"{a}\" }}"))
                .collect();
            let y = format!(
                "server: {{ threads: 1, pid_file: {dd}/p.pid, upgrade_sock: {dd}/p.sock, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }}\n\
                 listeners: [ {{ name: bench, address: \"127.0.0.1:{port}\", protocol: tcp, upstream: pool }} ]\n\
                 access_log: {{ file: {dd}/access.log }}\n\
                 upstreams: [ {{ name: pool, backends: [{}] }} ]\n",
                list.join(", ")
            );
            let conf = d.join("p.yaml");
            let bin = portcullis_bin(target);
            bin.is_file()
                .then(|| (bin, vec!["-c".into(), conf.display().to_string()], conf, y))
        }
        "haproxy" | "haproxy-splice" => {
            // haproxy-splice: kernel splicing between the sockets where it pays (Linux).
            let splice = if target == "haproxy-splice" {
                "  option splice-auto\n"
            } else {
                ""
            };
            let servers: String = b
                .iter()
                .enumerate()
                .map(|(i, a)| format!("  server s{i} {a}\n"))
                .collect();
            let c = format!(
                "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n{splice}\
                 frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  balance roundrobin\n{servers}"
            );
            let conf = d.join("haproxy.cfg");
            let args = vec!["-db".into(), "-f".into(), conf.display().to_string()];
            find_program("haproxy").map(|p| (p, args, conf, c))
        }
        "nginx" => {
            let servers: String = b.iter().map(|a| format!("    server {a};\n")).collect();
            let c = format!(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
                 pid {dd}/nginx.pid;\nerror_log {dd}/error.log;\nevents {{ worker_connections 20000; }}\n\
                 stream {{\n  upstream b {{\n{servers}  }}\n  server {{ listen 127.0.0.1:{port}; proxy_pass b; proxy_half_close on; }}\n}}\n"
            );
            let conf = d.join("nginx.conf");
            let args = vec![
                "-p".into(),
                dd.to_string(),
                "-c".into(),
                conf.display().to_string(),
                "-e".into(),
                format!("{dd}/error.log"),
            ];
            let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").is_file();
            find_program("nginx")
                .filter(|_| module)
                .map(|p| (p, args, conf, c))
        }
        _ => None,
    }
}

struct Proxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(target: &str, b: &[SocketAddr]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let (program, args, conf, text) =
            setup(target, dir.path(), port, b).ok_or(format!("{target}: not installed"))?;
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
        let child = Command::new("taskset")
            .args(["-c", "1"])
            .arg(&program)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut p = Proxy {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || p.child.try_wait().ok().flatten().is_some() {
                let log =
                    std::fs::read_to_string(p._dir.path().join("stderr.log")).unwrap_or_default();
                return Err(format!("{target} did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    /// CPU seconds (user + system) the proxy used so far.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    }
}

// ---- the measurements ------------------------------------------------------------------------

async fn download(addr: SocketAddr, bytes: u64) -> std::io::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    let t = Instant::now();
    let mut cmd = vec![b'D'];
    cmd.extend_from_slice(&bytes.to_be_bytes());
    s.write_all(&cmd).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other(format!("ended after {got} bytes")));
        }
        got += n as u64;
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn upload(addr: SocketAddr, bytes: u64) -> std::io::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    let t = Instant::now();
    s.write_all(b"U").await?;
    let buf = vec![7u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    s.shutdown().await?;
    let mut n = [0u8; 8];
    s.read_exact(&mut n).await?;
    if u64::from_be_bytes(n) != bytes {
        return Err(std::io::Error::other("the backend counted another size"));
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn one_connection(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let msg = *b"E123456789abcdef";
    s.write_all(&msg).await?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

/// Connections completed and failed in `secs` with `conns` clients.
async fn connection_rate(addr: SocketAddr, conns: usize, secs: u64) -> (u64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    match tokio::time::timeout(Duration::from_secs(5), one_connection(addr)).await {
                        Ok(Ok(())) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut total = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, 0));
        total = (total.0 + o, total.1 + f);
    }
    total
}

#[derive(Default, Clone)]
struct Row {
    down_gibs: Vec<f64>,
    up_gibs: Vec<f64>,
    cpu_per_gib: Vec<f64>,
    conn_rate: Vec<f64>,
    cpu_ms_per_1k: Vec<f64>,
    failed: u64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

async fn measure(
    target: &str,
    backends: &[SocketAddr],
    a: &Args,
    row: &mut Row,
) -> Result<(), String> {
    let p = Proxy::start(target, backends)?;
    let bytes = a.gib << 30;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let c0 = p.cpu();
    let down = download(p.addr, bytes)
        .await
        .map_err(|e| format!("{target} download: {e}"))?;
    let up = upload(p.addr, bytes)
        .await
        .map_err(|e| format!("{target} upload: {e}"))?;
    let c1 = p.cpu();
    let (ok, failed) = connection_rate(p.addr, a.conns, a.secs).await;
    let c2 = p.cpu();
    row.down_gibs.push(gib / down);
    row.up_gibs.push(gib / up);
    row.cpu_per_gib.push((c1 - c0) / (2.0 * gib));
    row.conn_rate.push(ok as f64 / a.secs as f64);
    row.cpu_ms_per_1k.push((c2 - c1) * 1e6 / ok.max(1) as f64);
    row.failed += failed;
    eprintln!(
        "  {target}: down {:.2} GiB/s, up {:.2} GiB/s, {:.0} conn/s ({failed} failed)",
        gib / down,
        gib / up,
        ok as f64 / a.secs as f64
    );
    Ok(())
}

fn print_table(a: &Args, rows: &[(String, Row)]) {
    let reference = rows
        .iter()
        .find(|(t, _)| t == "haproxy")
        .map(|(_, r)| r.clone());
    let pct = |v: f64, f: fn(&Row) -> f64| {
        reference
            .as_ref()
            .map_or("-".to_string(), |r| format!("{:.0}%", 100.0 * v / f(r)))
    };
    println!(
        "\nTCP proxying, one worker each on CPU 1; medians of {} rounds ({} GiB each way; {} clients x {} s of short connections)\n",
        a.rounds, a.gib, a.conns, a.secs
    );
    println!("| proxy | download GiB/s | upload GiB/s | CPU-s per GiB | bulk vs HAProxy | conn/s | CPU-ms per 1k conns | conn/s vs HAProxy | failed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (t, r) in rows {
        let (d, u, c) = (
            median(&r.down_gibs),
            median(&r.up_gibs),
            median(&r.conn_rate),
        );
        let bulk = |r: &Row| median(&r.down_gibs) + median(&r.up_gibs);
        println!(
            "| {t} | {d:.2} | {u:.2} | {:.3} | {} | {c:.0} | {:.1} | {} | {} |",
            median(&r.cpu_per_gib),
            pct(d + u, bulk),
            median(&r.cpu_ms_per_1k),
            pct(c, |r| median(&r.conn_rate)),
            r.failed
        );
    }
}

fn main() {
    let a = parse_args();
    // This process (clients and backends) on CPU 0; the proxies on CPU 1.
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut backends = Vec::new();
        for _ in 0..2 {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a backend");
            backends.push(l.local_addr().unwrap());
            tokio::spawn(backend(l));
        }
        let mut rows: Vec<(String, Row)> = a
            .targets
            .iter()
            .map(|t| (t.clone(), Row::default()))
            .collect();
        for round in 1..=a.rounds {
            eprintln!("round {round}/{}", a.rounds);
            for (t, row) in rows.iter_mut() {
                if let Err(e) = measure(t, &backends, &a, row).await {
                    eprintln!("  {e}");
                }
                // Let TIME_WAIT sockets of the previous target clear a little.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        rows.retain(|(_, r)| !r.conn_rate.is_empty());
        print_table(&a, &rows);
    });
}
