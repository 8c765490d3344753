//! Moving bytes both ways between a client and a backend, with half-close, an idle timeout, a
//! maximum lifetime and a drain deadline.
//!
//! Each direction is a read–write loop. When one side shuts down writing (its read returns
//! end of file), that direction forwards the FIN by shutting down the other side's writing,
//! and the opposite direction goes on until it ends too: a client that half-closes still
//! receives the backend's whole answer.

use crate::balance::now_ns;
use crate::observe::l4_metrics::TcpEnd;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read per step, per direction.
pub const BUF_SIZE: usize = 32 * 1024;

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

async fn pump<R, W>(mut r: R, mut w: W, moved: &AtomicU64, last: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Capacity, not zeroed memory: `read_buf` fills only what arrived.
    let mut buf = bytes::BytesMut::with_capacity(BUF_SIZE);
    loop {
        buf.clear();
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            // Forward the FIN; the other direction carries on.
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        moved.fetch_add(n as u64, Relaxed);
        last.store(now_ns(), Relaxed);
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
    use tokio::io::duplex;

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
