//! Client-side deadlines that Pingora does not enforce by itself: a whole-header read timeout
//! (slowloris) and a keep-alive idle timeout.
//!
//! Pingora times out each *read* of a request header, so a client that sends one byte every
//! few seconds holds a connection forever. [`ClientGuard`] wraps a listener's app and every
//! HTTP/1 connection's stream in a [`GuardedStream`] with one deadline, by phase:
//! - `Header`: from the connection's start (or the first byte after an idle period) until the
//!   proxy has the whole header. Past the deadline, a client that sent part of a header gets
//!   `408 Request Timeout` and the connection closes; one that sent nothing is closed quietly.
//! - `Active`: a request is being served; Pingora's own per-read timeout (set from the
//!   listener's `body_timeout`) bounds a stalled body.
//! - `Idle`: between keep-alive requests; past the deadline the connection closes.
//!
//! The proxy moves a connection between phases with [`GuardedStream::request_started`] and
//! [`GuardedStream::request_done`] (two atomic stores per request). HTTP/2 connections are not
//! wrapped: h2 has its own idle timeout (`h2_idle_timeout`).

use crate::balance::now_ns;
pub use crate::runtime::listener::Deadlines;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER: u8 = 0;
const ACTIVE: u8 = 1;
const IDLE: u8 = 2;

const TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Where a listener's current deadlines come from (they can change with a reload).
pub trait DeadlineSource: Send + Sync + 'static {
    /// The deadlines for a new connection.
    fn deadlines(&self) -> Deadlines;

    /// Who may send a PROXY protocol header first (`None`: none is read).
    fn proxy(&self) -> Option<Arc<crate::runtime::tcp::ProxyAccept>> {
        None
    }
}

/// The answer to a plain-HTTP connection whose PROXY header is refused.
const PROXY_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nConnection: close\r\n\r\nthis listener needs a PROXY protocol header from a trusted peer\n";

/// A stream with a deadline per phase. See the module documentation.
pub struct GuardedStream {
    inner: Stream,
    phase: AtomicU8,
    /// Monotonic ns ([`now_ns`]); 0 = none.
    deadline: AtomicU64,
    header_started: AtomicBool,
    limits: Deadlines,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timer_for: u64,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl GuardedStream {
    /// Wrap `inner`; the header deadline starts now.
    pub fn new(inner: Stream, limits: Deadlines) -> Self {
        GuardedStream {
            inner,
            phase: AtomicU8::new(HEADER),
            deadline: AtomicU64::new(now_ns().saturating_add(nanos(limits.header))),
            header_started: AtomicBool::new(false),
            limits,
            timer: None,
            timer_for: 0,
        }
    }

    /// The whole request header has arrived: no deadline of ours while it is served.
    #[inline]
    pub fn request_started(&self) {
        self.phase.store(ACTIVE, Relaxed);
        self.deadline.store(0, Relaxed);
    }

    /// The response is done: the idle deadline starts.
    #[inline]
    pub fn request_done(&self) {
        self.header_started.store(false, Relaxed);
        self.phase.store(IDLE, Relaxed);
        self.deadline
            .store(now_ns().saturating_add(nanos(self.limits.idle)), Relaxed);
    }

    fn on_bytes(&self) {
        match self.phase.load(Relaxed) {
            IDLE => {
                self.phase.store(HEADER, Relaxed);
                self.header_started.store(true, Relaxed);
                self.deadline
                    .store(now_ns().saturating_add(nanos(self.limits.header)), Relaxed);
            }
            HEADER => self.header_started.store(true, Relaxed),
            _ => {}
        }
    }

    /// The deadline passed: answer 408 to a partial header, then end the read.
    fn expire(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.deadline.store(0, Relaxed);
        if self.phase.load(Relaxed) == HEADER && self.header_started.load(Relaxed) {
            // Best effort: a few bytes into an idle socket's send buffer.
            let _ = Pin::new(&mut *self.inner).poll_write(cx, TIMEOUT_408);
            let _ = Pin::new(&mut *self.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not send a whole request header in time",
            )));
        }
        // Nothing of a request yet: end the connection like a clean close.
        Poll::Ready(Ok(()))
    }

    /// Whether `deadline` has passed, judged by the connection's timer.
    ///
    /// The timer is only moved *earlier*, never later: a keep-alive connection's idle deadline
    /// moves forward with every request, and resetting a tokio timer each time was a measured
    /// ~2k instructions per request. When the timer fires before the current deadline, it is
    /// re-armed then (at most once per idle period).
    fn timer_fired(&mut self, deadline: u64, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.is_none() || deadline < self.timer_for {
                let wait = Duration::from_nanos(deadline.saturating_sub(now_ns()));
                match &mut self.timer {
                    Some(t) => t.as_mut().reset(tokio::time::Instant::now() + wait),
                    None => self.timer = Some(Box::pin(tokio::time::sleep(wait))),
                }
                self.timer_for = deadline;
            }
            let Some(timer) = self.timer.as_mut() else {
                return false;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if now_ns() >= deadline {
                return true;
            }
            // Fired for an older, earlier deadline: wait for the current one.
            self.timer_for = u64::MAX;
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let deadline = this.deadline.load(Relaxed);
        // A client that keeps sending (a byte at a time) never lets a read wait for the
        // timer, so the header deadline is also checked on every read of that phase.
        if deadline != 0 && this.phase.load(Relaxed) == HEADER && now_ns() >= deadline {
            return this.expire(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if deadline != 0 && this.timer_fired(deadline, cx) {
                    return this.expire(cx);
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }

    /// Ready when the connection has bytes, or when its deadline passed: the read that
    /// follows then ends it (see [`GuardedStream::expire`]).
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.poll_readable(cx).is_ready() {
            return Poll::Ready(());
        }
        let deadline = self.deadline.load(Relaxed);
        if deadline != 0 && self.timer_fired(deadline, cx) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The guard of the connection serving `session`, if it has one (HTTP/1 only).
pub fn of(stream: Option<&Stream>) -> Option<&GuardedStream> {
    stream?.as_any().downcast_ref::<GuardedStream>()
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A listener's app with every HTTP/1 connection wrapped in a [`GuardedStream`].
pub struct ClientGuard<A> {
    inner: Arc<A>,
    source: Arc<dyn DeadlineSource>,
    h2c: bool,
}

impl<A> ClientGuard<A> {
    /// Guard `inner`'s connections with deadlines from `source`; `h2c`: the listener accepts
    /// HTTP/2 with prior knowledge (such connections are not wrapped).
    pub fn new(inner: A, source: Arc<dyn DeadlineSource>, h2c: bool) -> Self {
        ClientGuard {
            inner: Arc::new(inner),
            source,
            h2c,
        }
    }
}

/// How a connection goes on after [`ClientGuard::admit`].
enum Admitted {
    /// HTTP/2 (by ALPN or prior knowledge): to the app as it is.
    Direct(Stream),
    /// HTTP/1: to the app in a [`GuardedStream`] with these deadlines.
    Guarded(Stream, Deadlines),
}

impl<A: ServerApp + Send + Sync + 'static> ClientGuard<A> {
    /// What happens before the app sees the connection: the PROXY header, the h2c preface.
    /// `None`: the connection ends here.
    async fn admit(&self, mut stream: Stream) -> Option<Admitted> {
        let limits = self.source.deadlines();
        if stream.get_ssl_digest().is_none() {
            if let Some(p) = self.source.proxy() {
                let trusts = |ip| p.trusts(ip);
                if let Err(why) =
                    crate::l4::proxy_protocol::accept(&mut *stream, &trusts, p.timeout).await
                {
                    crate::l4::proxy_protocol::log_refusal(&why);
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(PROXY_REFUSED).await;
                    let _ = stream.flush().await;
                    return None;
                }
            }
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return Some(Admitted::Direct(stream));
        }
        if self.h2c && stream.get_ssl_digest().is_none() {
            let mut buf = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout(limits.header, stream.try_peek(&mut buf)).await {
                Ok(Ok(true)) if buf == H2_PREFACE => return Some(Admitted::Direct(stream)),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        Some(Admitted::Guarded(stream, limits))
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ClientGuard<A> {
    /// The future of this method lives as long as the connection, and its size is that of
    /// its largest state; [`ClientGuard::admit`] runs in a box of its own, freed when it ends,
    /// so that the PROXY parser and the h2c peek's timer are not held by an idle connection.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let admitted = Box::pin(self.admit(stream)).await?;
        let stream: Stream = match admitted {
            Admitted::Direct(stream) => stream,
            Admitted::Guarded(stream, limits) => Box::new(GuardedStream::new(stream, limits)),
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
