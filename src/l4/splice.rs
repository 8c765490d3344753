//! Moving bytes both ways between a client and a backend, with half-close, an idle timeout, a
//! maximum lifetime and a drain deadline.
//!
//! Each direction is a read–write loop. When one side shuts down writing (its read returns
//! end of file), that direction forwards the FIN by shutting down the other side's writing,
//! and the opposite direction goes on until it ends too: a client that half-closes still
//! receives the backend's whole answer.

use crate::balance::now_ns;
use crate::observe::l4_metrics::TcpEnd;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes read per step, per direction, while data flows.
pub const BUF_SIZE: usize = 32 * 1024;

/// Bytes read by a direction that had to wait for data. This buffer lives in the
/// connection's future; the `BUF_SIZE` heap buffer exists only while data flows, so an idle
/// connection holds 2 × 1 KiB instead of 2 × 32 KiB.
const WAKE_READ: usize = 1024;

/// When a connection must end whatever its traffic.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Neither side sent a byte for this long.
    pub idle: Duration,
    /// Time since the connection opened.
    pub lifetime: Option<Duration>,
}

/// What a finished splice moved and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Client to backend.
    pub bytes_in: u64,
    /// Backend to client.
    pub bytes_out: u64,
    /// How it ended.
    pub end: TcpEnd,
}

/// One read; how many bytes it read. They are in `big` if it is still there after the call,
/// else in `small`: with a heap buffer, a read that has to wait drops it first and waits with
/// the small buffer instead.
fn poll_step<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    big: &mut Option<BytesMut>,
    small: &mut [u8; WAKE_READ],
) -> Poll<io::Result<usize>> {
    if let Some(b) = big.as_mut() {
        b.clear();
        let mut rb = ReadBuf::uninit(b.spare_capacity_mut());
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Ready(res) => {
                let n = rb.filled().len();
                // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
                unsafe { b.set_len(n) };
                return Poll::Ready(res.map(|()| n));
            }
            Poll::Pending => *big = None,
        }
    }
    let mut rb = ReadBuf::new(small);
    ready!(Pin::new(r).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

async fn pump<R, W>(mut r: R, mut w: W, moved: &AtomicU64, last: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; WAKE_READ];
    let mut big: Option<BytesMut> = None;
    loop {
        let n = std::future::poll_fn(|cx| poll_step(&mut r, cx, &mut big, &mut small)).await?;
        let data = match &big {
            Some(b) => &b[..],
            None => &small[..n],
        };
        if n == 0 {
            // Forward the FIN; the other direction carries on.
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(data).await?;
        w.flush().await?;
        moved.fetch_add(n as u64, Relaxed);
        last.store(now_ns(), Relaxed);
        if n == WAKE_READ && big.is_none() {
            // More may have arrived than the small buffer took: data flows again.
            big = Some(BytesMut::with_capacity(BUF_SIZE));
        }
    }
}

/// Resolves when nothing moved for `idle` (either way).
async fn idle_watch(last: &AtomicU64, idle: Duration) {
    let idle_ns = idle.as_nanos() as u64;
    loop {
        let quiet = now_ns().saturating_sub(last.load(Relaxed));
        if quiet >= idle_ns {
            return;
        }
        tokio::time::sleep(Duration::from_nanos(idle_ns - quiet)).await;
    }
}

/// Copy both ways until both directions end, one fails, a limit passes or `drain` resolves
/// (the gateway's grace period after a shutdown or upgrade began).
pub async fn splice<C, B>(
    client: C,
    backend: B,
    limits: Limits,
    drain: impl Future<Output = ()>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
{
    let (bytes_in, bytes_out, last) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(now_ns()),
    );
    let (cr, cw) = tokio::io::split(client);
    let (br, bw) = tokio::io::split(backend);
    let both = async {
        tokio::try_join!(
            pump(cr, bw, &bytes_in, &last),
            pump(br, cw, &bytes_out, &last)
        )
    };
    let lifetime = async {
        match limits.lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        r = both => if r.is_ok() { TcpEnd::Closed } else { TcpEnd::Error },
        _ = idle_watch(&last, limits.idle) => TcpEnd::IdleTimeout,
        _ = lifetime => TcpEnd::Lifetime,
        _ = drain => TcpEnd::Drained,
    };
    Spliced {
        bytes_in: bytes_in.load(Relaxed),
        bytes_out: bytes_out.load(Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    const LONG: Limits = Limits {
        idle: Duration::from_secs(30),
        lifetime: None,
    };

    #[tokio::test]
    async fn a_half_close_still_gets_the_whole_answer() {
        let (client, mut client_far) = duplex(1024);
        let (backend, mut backend_far) = duplex(1024);
        let task = tokio::spawn(splice(client, backend, LONG, std::future::pending()));
        client_far.write_all(b"question").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question", "the backend sees the data, then the FIN");
        let answer = vec![7u8; 100_000];
        let sent = answer.clone();
        let writer = tokio::spawn(async move {
            backend_far.write_all(&sent).await.unwrap();
            backend_far.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        client_far.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back, answer);
        let s = task.await.unwrap();
        assert_eq!(
            (s.bytes_in, s.bytes_out, s.end),
            (8, 100_000, TcpEnd::Closed)
        );
    }

    #[tokio::test]
    async fn bursts_of_every_size_around_the_buffers_arrive_exact_after_waits() {
        let (client, mut client_far) = duplex(256 * 1024);
        let (backend, mut backend_far) = duplex(256 * 1024);
        let task = tokio::spawn(splice(client, backend, LONG, std::future::pending()));
        let mut total = 0u64;
        for (i, size) in [
            1,
            WAKE_READ - 1,
            WAKE_READ,
            WAKE_READ + 1,
            BUF_SIZE,
            100_000,
            5,
        ]
        .into_iter()
        .enumerate()
        {
            let burst: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            client_far.write_all(&burst).await.unwrap();
            let mut got = vec![0u8; size];
            backend_far.read_exact(&mut got).await.unwrap();
            assert_eq!(got, burst, "burst {i} of {size} bytes");
            total += size as u64;
            // Let the copy loop wait (and drop its large buffer) before the next burst.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop((client_far, backend_far));
        let s = task.await.unwrap();
        assert_eq!((s.bytes_in, s.bytes_out), (total, 0));
    }

    #[tokio::test]
    async fn a_quiet_connection_ends_at_the_idle_timeout() {
        let (client, _c) = duplex(64);
        let (backend, _b) = duplex(64);
        let limits = Limits {
            idle: Duration::from_millis(50),
            lifetime: None,
        };
        let s = splice(client, backend, limits, std::future::pending()).await;
        assert_eq!(s.end, TcpEnd::IdleTimeout);
    }

    #[tokio::test]
    async fn the_lifetime_and_the_drain_end_a_busy_connection() {
        let (client, _c) = duplex(64);
        let (backend, _b) = duplex(64);
        let limits = Limits {
            idle: Duration::from_secs(30),
            lifetime: Some(Duration::from_millis(30)),
        };
        assert_eq!(
            splice(client, backend, limits, std::future::pending())
                .await
                .end,
            TcpEnd::Lifetime
        );
        let (client, _c) = duplex(64);
        let (backend, _b) = duplex(64);
        let drained = splice(
            client,
            backend,
            LONG,
            tokio::time::sleep(Duration::from_millis(20)),
        );
        assert_eq!(drained.await.end, TcpEnd::Drained);
    }
}
