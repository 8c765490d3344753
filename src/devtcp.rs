//! A TCP backend for demos, tests and benchmarks: it says who it is, echoes every byte, and
//! answers a half-close with a trailer before closing its side.
//!
//! Per connection: optionally read a PROXY protocol header (v1 or v2); write one line,
//! `NAME CLIENT\n` (CLIENT: the header's source, or the peer); then echo until the client
//! shuts down writing; then write `trailer` bytes of `T` and shut down writing. Blocking
//! threads, one per connection: simple, and apart from any async runtime under test.

use crate::l4::proxy_protocol::{parse_v1, parse_v2, Header, MAX_V1_LEN, MAX_V2_LEN, V2_SIGNATURE};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How a [`TcpEcho`] behaves.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// Its name, in the first line.
    pub name: String,
    /// Expect a PROXY protocol header first.
    pub proxy: bool,
    /// Bytes sent after the client's FIN, before closing.
    pub trailer: usize,
}

/// Counters of a running [`TcpEcho`].
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Most open at once.
    pub max_open: AtomicI64,
}

/// A running echo backend; stops accepting when dropped.
pub struct TcpEcho {
    addr: SocketAddr,
    stats: Arc<EchoStats>,
    stop: Arc<AtomicBool>,
}

impl TcpEcho {
    /// Listen on `addr` (port 0: any) with `opts`.
    pub fn start(addr: &str, opts: EchoOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stats = Arc::new(EchoStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&stats), Arc::clone(&stop));
        let opts = Arc::new(opts);
        std::thread::spawn(move || accept_loop(listener, opts, s, st));
        Ok(TcpEcho { addr, stats, stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<EchoStats> {
        &self.stats
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn accept_loop(
    l: TcpListener,
    opts: Arc<EchoOptions>,
    stats: Arc<EchoStats>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Relaxed) {
        match l.accept() {
            Ok((s, peer)) => {
                let (o, st) = (Arc::clone(&opts), Arc::clone(&stats));
                std::thread::spawn(move || {
                    st.accepted.fetch_add(1, Relaxed);
                    let now = st.open.fetch_add(1, Relaxed) + 1;
                    st.max_open.fetch_max(now, Relaxed);
                    let _ = serve(s, peer, &o);
                    st.open.fetch_sub(1, Relaxed);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Read a PROXY header byte-exactly from a blocking stream.
fn read_proxy(s: &mut TcpStream) -> std::io::Result<Header> {
    let bad = |e: crate::l4::proxy_protocol::Malformed| std::io::Error::other(e.0);
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    if head == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest)?;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(MAX_V2_LEN);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        return parse_v2(rest[0], rest[1], &body).map_err(bad);
    }
    let mut line = head.to_vec();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < MAX_V1_LEN {
        s.read_exact(&mut b)?;
        line.push(b[0]);
    }
    parse_v1(&line).map_err(bad)
}

fn serve(mut s: TcpStream, peer: SocketAddr, o: &EchoOptions) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    let _ = s.set_nodelay(true);
    let client = if o.proxy {
        match read_proxy(&mut s)? {
            Header::Proxied { source, .. } => source,
            Header::Local => peer,
        }
    } else {
        peer
    };
    s.write_all(format!("{} {client}\n", o.name).as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
    }
    let chunk = [b'T'; 8192];
    let mut left = o.trailer;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.shutdown(Shutdown::Write)
}
