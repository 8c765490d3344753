//! JSON access logs: one line per request, written in batches.
//!
//! A request formats its line into a per-thread scratch buffer and appends it to a shared
//! buffer (one short uncontended lock, one memcpy). The housekeeping service writes the buffer
//! out every 100 ms, so the request path makes no syscall. Only if lines pile up past 8 MiB
//! (the disk cannot keep up) does a request write them itself, which bounds memory.

use crate::observe::json::{json_bytes, json_str};
use crate::request::forwarded::write_ip;
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Buffered bytes past which a request writes the buffer out itself.
const FLUSH_AT: usize = 8 * 1024 * 1024;
/// Initial buffer capacity.
const INITIAL: usize = 256 * 1024;

/// Where lines go.
pub struct AccessLog {
    sink: Option<Sink>,
}

struct Sink {
    buf: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
    target: String,
}

/// The fields of one access-log line.
#[derive(Debug, Default)]
pub struct AccessLogEntry<'a> {
    /// When the request arrived.
    pub time: Option<SystemTime>,
    /// The `x-request-id` sent upstream and back.
    pub request_id: &'a [u8],
    /// The W3C trace id (32 hex digits).
    pub trace_id: &'a [u8],
    /// Client address.
    pub client: Option<SocketAddr>,
    /// Request method.
    pub method: &'a str,
    /// Host the request was for.
    pub host: &'a str,
    /// Request path and query.
    pub path: &'a str,
    /// Status sent to the client (0: none, the connection failed).
    pub status: u16,
    /// Matched route ("" when none).
    pub route: &'a str,
    /// Upstream used ("" when none).
    pub upstream: &'a str,
    /// Backend that answered last ("" when none).
    pub backend: &'a str,
    /// Total time in microseconds.
    pub duration_us: u64,
    /// Time to the backend's response header in microseconds, when one arrived.
    pub upstream_us: Option<u64>,
    /// Request body bytes read from the client.
    pub bytes_in: usize,
    /// Response body bytes sent to the client.
    pub bytes_out: usize,
    /// Backends tried.
    pub attempts: u8,
}

/// The fields of one TCP connection's line.
#[derive(Debug, Default)]
pub struct TcpLogEntry<'a> {
    /// When the connection was accepted.
    pub time: Option<SystemTime>,
    /// The TCP listener.
    pub listener: &'a str,
    /// Client address (from a PROXY header when one was accepted).
    pub client: Option<SocketAddr>,
    /// Upstream.
    pub upstream: &'a str,
    /// Backend connected to ("" when none).
    pub backend: &'a str,
    /// Lifetime in microseconds.
    pub duration_us: u64,
    /// Client to backend bytes.
    pub bytes_in: u64,
    /// Backend to client bytes.
    pub bytes_out: u64,
    /// Backends tried.
    pub attempts: u32,
    /// How it ended (`closed`, `error`, `idle_timeout`, `queue_full`...).
    pub end: &'a str,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessLog({})", self.target())
    }
}

impl AccessLog {
    /// No access log.
    pub fn off() -> Self {
        AccessLog { sink: None }
    }

    /// Lines to standard output.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()), "stdout")
    }

    /// Lines appended to `path` (created if missing).
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::to_writer(Box::new(f), &path.display().to_string()))
    }

    /// Lines to any writer.
    pub fn to_writer(out: Box<dyn Write + Send>, target: &str) -> Self {
        AccessLog {
            sink: Some(Sink {
                buf: Mutex::new(Vec::with_capacity(INITIAL)),
                out: Mutex::new(out),
                target: target.to_string(),
            }),
        }
    }

    /// Where the lines go ("off", "stdout" or a path).
    pub fn target(&self) -> &str {
        self.sink.as_ref().map_or("off", |s| &s.target)
    }

    /// Whether lines are written at all.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Record one request.
    pub fn log(&self, e: &AccessLogEntry<'_>) {
        self.append(|line| format_entry(line, e));
    }

    /// Record one closed TCP connection.
    pub fn log_tcp(&self, e: &TcpLogEntry<'_>) {
        self.append(|line| format_tcp_entry(line, e));
    }

    fn append(&self, format: impl FnOnce(&mut Vec<u8>)) {
        let Some(sink) = &self.sink else { return };
        SCRATCH.with(|scratch| {
            let mut line = scratch.borrow_mut();
            line.clear();
            format(&mut line);
            let full = {
                let mut buf = sink.buf.lock().unwrap_or_else(|p| p.into_inner());
                buf.extend_from_slice(&line);
                buf.len() >= FLUSH_AT
            };
            if full {
                sink.flush();
            }
        });
    }

    /// Whether lines wait in the buffer for [`AccessLog::flush`].
    pub fn has_pending(&self) -> bool {
        self.sink
            .as_ref()
            .is_some_and(|s| !s.buf.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    }

    /// Write out buffered lines.
    pub fn flush(&self) {
        if let Some(s) = &self.sink {
            s.flush();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Sink {
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let pending = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            if buf.is_empty() {
                return;
            }
            let keep = buf.capacity().clamp(INITIAL, FLUSH_AT);
            std::mem::replace(&mut *buf, Vec::with_capacity(keep))
        };
        if let Err(e) = out.write_all(&pending).and_then(|_| out.flush()) {
            log::error!("access log {}: write failed: {e}", self.target);
        }
    }
}

/// The fields of one JSON line after its `time`: each call appends `,"key":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    /// Start a line with its time.
    fn open(out: &mut Vec<u8>, time: Option<SystemTime>) -> Fields<'_> {
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339(out, time.unwrap_or_else(SystemTime::now));
        out.push(b'"');
        Fields(out)
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(k.as_bytes());
        self.0.extend_from_slice(b"\":");
        self.0
    }

    fn str(&mut self, k: &str, v: &str) {
        json_str(self.key(k), v);
    }

    fn bytes(&mut self, k: &str, v: &[u8]) {
        json_bytes(self.key(k), v);
    }

    fn num<I: itoa::Integer>(&mut self, k: &str, v: I) {
        let mut n = itoa::Buffer::new();
        self.key(k).extend_from_slice(n.format(v).as_bytes());
    }

    fn millis(&mut self, k: &str, us: Option<u64>) {
        let out = self.key(k);
        match us {
            Some(us) => write_millis(out, us),
            None => out.extend_from_slice(b"null"),
        }
    }

    fn addr(&mut self, k: &str, a: Option<SocketAddr>) {
        let out = self.key(k);
        out.push(b'"');
        if let Some(a) = a {
            write_socket_addr(out, a);
        }
        out.push(b'"');
    }

    fn close(self) {
        self.0.extend_from_slice(b"}\n");
    }
}

fn format_entry(out: &mut Vec<u8>, e: &AccessLogEntry<'_>) {
    let mut f = Fields::open(out, e.time);
    f.bytes("request_id", e.request_id);
    f.bytes("trace_id", e.trace_id);
    f.addr("client", e.client);
    f.str("method", e.method);
    f.str("host", e.host);
    f.str("path", e.path);
    f.num("status", e.status);
    f.str("route", e.route);
    f.str("upstream", e.upstream);
    f.str("backend", e.backend);
    f.millis("duration_ms", Some(e.duration_us));
    f.millis("upstream_ms", e.upstream_us);
    f.num("bytes_in", e.bytes_in);
    f.num("bytes_out", e.bytes_out);
    f.num("attempts", e.attempts);
    f.close();
}

fn format_tcp_entry(out: &mut Vec<u8>, e: &TcpLogEntry<'_>) {
    let mut f = Fields::open(out, e.time);
    f.str("kind", "tcp");
    f.str("listener", e.listener);
    f.addr("client", e.client);
    f.str("upstream", e.upstream);
    f.str("backend", e.backend);
    f.millis("duration_ms", Some(e.duration_us));
    f.num("bytes_in", e.bytes_in);
    f.num("bytes_out", e.bytes_out);
    f.num("attempts", e.attempts);
    f.str("end", e.end);
    f.close();
}

/// Microseconds as milliseconds with three decimals (`1500` → `1.500`).
fn write_millis(out: &mut Vec<u8>, us: u64) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(us / 1000).as_bytes());
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn write_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            write_ip(out, std::net::IpAddr::V4(*v4.ip()));
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

thread_local! {
    /// The `YYYY-MM-DDTHH:MM:SS.` prefix of the current second, formatted once per second.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// Append `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T09:30:00.123Z`.
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, day) = civil_from_days(days as i64);
            let mut buf = Vec::with_capacity(20);
            let _ = write!(
                buf,
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            );
            if buf.len() == 20 {
                cached.1.copy_from_slice(&buf);
                cached.0 = secs;
            } else {
                // Years beyond 9999: no cache.
                out.extend_from_slice(&buf);
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
    let ms = d.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn formats_client_addresses_and_millis() {
        let mut out = Vec::new();
        write_socket_addr(&mut out, "10.0.0.7:8080".parse().unwrap());
        out.push(b' ');
        write_socket_addr(&mut out, "[::1]:80".parse().unwrap());
        out.push(b' ');
        write_millis(&mut out, 12_034);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "10.0.0.7:8080 [::1]:80 12.034"
        );
    }

    #[test]
    fn formats_time() {
        let mut out = Vec::new();
        write_rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn writes_one_escaped_json_line_per_request_after_flush() {
        let shared = Shared::default();
        let log = AccessLog::to_writer(Box::new(shared.clone()), "test");
        log.log(&AccessLogEntry {
            method: "GET",
            path: "/a\"b",
            status: 200,
            route: "r",
            backend: "127.0.0.1:1",
            duration_us: 1500,
            request_id: b"abc",
            ..Default::default()
        });
        assert!(
            shared.0.lock().unwrap().is_empty(),
            "buffered until flushed"
        );
        log.flush();
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#""path":"/a\"b""#), "{text}");
        assert!(text.contains(r#""duration_ms":1.500"#), "{text}");
        assert!(text.contains(r#""request_id":"abc""#), "{text}");
    }
}
