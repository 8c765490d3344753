//! A tiny HTTP/1.1 origin server for demos and tests.
//!
//! It answers every request with its own name (`<name>\n`, header `x-backend: <name>`) and
//! echoes the `x-request-id` it received as `x-upstream-request-id`, the request target as
//! `x-seen-path`, and the forwarding headers it received (`x-forwarded-for`,
//! `x-forwarded-proto`, `x-forwarded-host`, `forwarded`) and trace context (`traceparent`,
//! `tracestate`) as `x-seen-<name>`. `GET /healthz` answers
//! `ok`. Its behaviour can be changed while it runs: a delay, a status code, a separate health
//! status; and it can be stopped, which closes the listener and every open connection (so a
//! proxy's pooled connections break too, like a crashed process).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Counters and knobs shared with the connection tasks.
#[derive(Debug, Default)]
pub struct DevState {
    name: String,
    arrivals: AtomicU64,
    requests: AtomicU64,
    inflight: AtomicU32,
    max_inflight: AtomicU32,
    delay_ms: AtomicU64,
    status: AtomicU16,
    health_status: AtomicU16,
    health_delay_ms: AtomicU64,
    exponential: std::sync::atomic::AtomicBool,
    connections: AtomicU64,
    posts: AtomicU64,
    /// Sum of the CRC-32s of the request bodies received (a cheap fingerprint for tests).
    body_crcs: AtomicU64,
    /// Concurrency cap (0 = none) and the permits that enforce it (see [`DevState::set_capacity`]).
    capacity: AtomicU32,
    permits: Permits,
}

/// [`PERMITS`] permits; a request takes `PERMITS / capacity` of them, so at most `capacity`
/// requests are served at once and the cap can change while requests wait (FIFO).
#[derive(Debug)]
struct Permits(tokio::sync::Semaphore);

/// Divisible by every capacity from 1 to 16.
const PERMITS: u32 = 720_720;

impl Default for Permits {
    fn default() -> Self {
        Permits(tokio::sync::Semaphore::new(PERMITS as usize))
    }
}

impl DevState {
    /// Requests received, counted on arrival (health checks excluded).
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Relaxed)
    }
    /// Requests answered (health checks excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Connections that carried at least one request other than a health check: how often a
    /// proxy in front connected to serve traffic (`GET /devserver/connections` reads it).
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }
    /// POST requests received, counted on arrival.
    pub fn posts(&self) -> u64 {
        self.posts.load(Relaxed)
    }
    /// Sum of the CRC-32s of the request bodies received (content-length bodies).
    pub fn body_crcs(&self) -> u64 {
        self.body_crcs.load(Relaxed)
    }
    /// Highest number of concurrent requests seen.
    pub fn max_inflight(&self) -> u32 {
        self.max_inflight.load(Relaxed)
    }
    /// Delay every answer (health checks excluded).
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Relaxed);
    }
    /// Status of every answer (health checks excluded). Default 200.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Relaxed);
    }
    /// Draw each answer's delay from an exponential distribution whose mean is the delay
    /// (service times of a real server vary; fixed ones favour round robin unrealistically).
    pub fn set_exponential_delay(&self, on: bool) {
        self.exponential.store(on, Relaxed);
    }
    /// Delay `/healthz` answers (a slow host is slow for its health check too). Default none.
    pub fn set_health_delay(&self, d: Duration) {
        self.health_delay_ms.store(d.as_millis() as u64, Relaxed);
    }
    /// Status of `/healthz`. Default 200.
    pub fn set_health_status(&self, status: u16) {
        self.health_status.store(status, Relaxed);
    }
    /// Serve at most `n` requests at once (1..=16; 0 = no cap); the others queue in arrival
    /// order, as on a server with `n` worker threads.
    pub fn set_capacity(&self, n: u32) {
        self.capacity.store(n.min(16), Relaxed);
    }
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A running dev server.
pub struct DevServer {
    addr: SocketAddr,
    state: Arc<DevState>,
    stop: watch::Sender<bool>,
}

impl DevServer {
    /// Bind `addr` (port 0 = any free port) and serve on the current tokio runtime.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<DevServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(DevState {
            name: name.to_string(),
            status: AtomicU16::new(200),
            health_status: AtomicU16::new(200),
            ..Default::default()
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::clone(&state), stopped));
        Ok(DevServer { addr, state, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters and knobs.
    pub fn state(&self) -> &Arc<DevState> {
        &self.state
    }

    /// Stop: close the listener and all connections.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<DevState>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, Arc::clone(&state), stopped.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = stopped.changed() => return,
        }
    }
}

async fn serve(stream: TcpStream, state: Arc<DevState>, mut stopped: watch::Receiver<bool>) {
    let mut stream = BufReader::new(stream);
    let mut counted = false;
    loop {
        tokio::select! {
            r = handle_one(&mut stream, &state, &mut counted) => match r {
                Ok(true) => continue,
                _ => return,
            },
            _ = stopped.changed() => return,
        }
    }
}

/// Serve one request; `Ok(true)` to keep the connection open.
async fn handle_one(
    stream: &mut BufReader<TcpStream>,
    state: &DevState,
    counted: &mut bool,
) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(512);
    loop {
        let n = stream.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(false);
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            break;
        }
        if head.len() > 64 * 1024 {
            return Ok(false);
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut close = false;
    let mut request_id = None;
    let mut echoes = String::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => content_length = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "connection" => close = v.eq_ignore_ascii_case("close"),
            "x-request-id" => request_id = Some(v.to_string()),
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded"
            | "traceparent" | "tracestate" => {
                echoes.push_str(&format!("x-seen-{k}: {v}\r\n"));
            }
            _ => {}
        }
    }
    if chunked {
        read_chunked(stream).await?;
    } else if content_length > 0 {
        let mut body = vec![0; content_length];
        stream.read_exact(&mut body).await?;
        state
            .body_crcs
            .fetch_add(u64::from(crc32fast::hash(&body)), Relaxed);
    }
    let health = path == "/healthz";
    let stats = path == "/devserver/connections";
    if !health && !stats && !*counted {
        *counted = true;
        state.connections.fetch_add(1, Relaxed);
    }
    let (status, body) = if health {
        let delay = state.health_delay_ms.load(Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        (state.health_status.load(Relaxed), "ok\n".to_string())
    } else if stats {
        (200, format!("{}\n", state.connections.load(Relaxed)))
    } else {
        state.arrivals.fetch_add(1, Relaxed);
        if method == "POST" {
            state.posts.fetch_add(1, Relaxed);
        }
        let now = state.inflight.fetch_add(1, Relaxed) + 1;
        state.max_inflight.fetch_max(now, Relaxed);
        let cap = state.capacity.load(Relaxed);
        let _slot = match PERMITS.checked_div(cap) {
            Some(share) => state.permits.0.acquire_many(share).await.ok(),
            None => None,
        };
        let delay = Duration::from_millis(state.delay_ms.load(Relaxed));
        let delay = if state.exponential.load(Relaxed) {
            // -ln(U) for U in (0, 1]: exponential with mean 1, capped at 20 x the mean.
            delay.mul_f64((-(1.0 - fastrand::f64()).ln()).min(20.0))
        } else {
            delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        state.inflight.fetch_sub(1, Relaxed);
        state.requests.fetch_add(1, Relaxed);
        (state.status.load(Relaxed), format!("{}\n", state.name))
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {}\r\n",
        reason(status),
        body.len(),
        state.name
    );
    if let Some(id) = request_id {
        resp.push_str(&format!("x-upstream-request-id: {id}\r\n"));
    }
    if path.bytes().all(|b| b > b' ' && b < 0x7f) {
        resp.push_str(&format!("x-seen-path: {path}\r\n"));
    }
    resp.push_str(&echoes);
    if close {
        resp.push_str("connection: close\r\n");
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    stream.get_mut().write_all(resp.as_bytes()).await?;
    Ok(!close)
}

async fn read_chunked(stream: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let mut size_line = String::new();
        stream.read_line(&mut size_line).await?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        stream.read_exact(&mut chunk).await?;
        if size == 0 {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The value after `flag` on a demo server's command line (`--name a` → `a`).
pub fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Run one demo server until Ctrl-C or SIGTERM (`portcullis demo-backend`); the exit code.
pub fn run_demo(name: &str, listen: SocketAddr) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-backend: cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let server = match DevServer::start(name, listen).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("demo-backend {name}: cannot listen on {listen}: {e}");
                return 1;
            }
        };
        eprintln!("demo-backend {name} listening on http://{}", server.addr());
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("demo-backend: cannot watch SIGTERM: {e}");
                    return 1;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        server.stop();
        0
    })
}
