//! A TCP backend for demos, tests and benchmarks: it says who it is, echoes every byte, and
//! answers a half-close with a trailer before closing its side.
//!
//! Per connection: optionally read a PROXY protocol header (v1 or v2); write one line,
//! `NAME CLIENT\n` (CLIENT: the header's source, or the peer); then echo until the client
//! shuts down writing; then write `trailer` bytes of `T` and shut down writing. Blocking
//! threads, one per connection: simple, and apart from any async runtime under test.

use crate::l4::proxy_protocol::{read_header, Header};
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

/// Read a PROXY header from a blocking stream with the gateway's own reader (byte-exact: it
/// never takes a byte past the header), on a one-off runtime; the stream comes back blocking.
fn read_proxy(s: TcpStream) -> std::io::Result<(Header, TcpStream)> {
    s.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (header, s) = rt.block_on(async {
        let mut t = tokio::net::TcpStream::from_std(s)?;
        let h = read_header(&mut t).await;
        t.into_std().map(|s| (h, s))
    })?;
    s.set_nonblocking(false)?;
    Ok((header.map_err(|e| std::io::Error::other(e.0))?, s))
}

fn serve(mut s: TcpStream, peer: SocketAddr, o: &EchoOptions) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    let _ = s.set_nodelay(true);
    let client = if o.proxy {
        let (header, stream) = read_proxy(s)?;
        s = stream;
        match header {
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
