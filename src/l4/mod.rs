//! L4 proxying: `protocol: tcp` listeners balance whole connections over the same upstreams,
//! with the same eligibility (health, enablement, breaker, backups) and strategies as HTTP
//! routes. Keyed strategies hash the client IP.
//!
//! A connection: the listener's cap → the PROXY header (when accepted) → a backend slot (per
//! backend cap, queue) and a connect with failover → the PROXY header to the backend (when
//! configured) → bytes both ways until both sides finish, a timeout, or the drain deadline →
//! metrics and one JSON log line.

pub mod connect;
pub mod proxy_protocol;
pub mod splice;

use crate::gateway::Gateway;
use crate::observe::access_log::TcpLogEntry;
use crate::observe::l4_metrics::{ListenerSeries, TcpEnd};
use crate::runtime::tcp::ProxyAccept;
use async_trait::async_trait;
use connect::{Connected, Connecting};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// The app behind one TCP listener.
pub struct TcpProxy {
    gateway: Arc<Gateway>,
    index: usize,
    name: String,
    open: AtomicU32,
    series: ListenerSeries,
}

impl TcpProxy {
    /// The app of listener number `index` of the gateway's config.
    pub fn new(gateway: Arc<Gateway>, index: usize) -> Self {
        let name = gateway
            .snapshot()
            .listeners
            .get(index)
            .map_or_else(String::new, |l| l.name.clone());
        let series = gateway.metrics().l4().listener(&name);
        TcpProxy {
            gateway,
            index,
            name,
            open: AtomicU32::new(0),
            series,
        }
    }
}

/// One open client connection, counted while it lives.
struct Open<'a>(&'a TcpProxy);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.series.open.dec();
    }
}

fn inet(a: Option<&pingora::protocols::l4::socket::SocketAddr>) -> Option<SocketAddr> {
    a.and_then(|a| a.as_inet().copied())
}

/// The client and destination addresses: the peer's, or a trusted PROXY header's.
async fn client_of(
    stream: &mut Stream,
    proxy: Option<&ProxyAccept>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), String> {
    if let Some(p) = proxy {
        proxy_protocol::accept(&mut **stream, &|ip| p.trusts(ip), p.timeout).await?;
    }
    let digest = stream.get_socket_digest();
    let peer = inet(digest.as_ref().and_then(|d| d.peer_addr()));
    let local = inet(digest.as_ref().and_then(|d| d.local_addr()));
    Ok((peer, local))
}

/// The PROXY header read before the TLS handshake of an HTTPS listener.
pub struct PreTlsProxyHeader(pub Arc<ProxyAccept>);

#[async_trait]
impl pingora::listeners::PreTlsProcess for PreTlsProxyHeader {
    async fn process(
        &self,
        stream: &mut pingora::protocols::l4::stream::Stream,
    ) -> pingora::Result<()> {
        proxy_protocol::accept(stream, &|ip| self.0.trusts(ip), self.0.timeout)
            .await
            .map_err(|why| {
                proxy_protocol::log_refusal(&why);
                pingora::Error::explain(pingora::ErrorType::AcceptError, why)
            })
    }
}

/// Resolves at the end of the grace period once a shutdown or upgrade began.
async fn drain_deadline(mut shutdown: ShutdownWatch, grace: Duration) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
    tokio::time::sleep(grace).await;
}

impl TcpProxy {
    fn finish(&self, mut entry: TcpLogEntry<'_>, end: TcpEnd, started: Instant) {
        let elapsed = started.elapsed();
        entry.end = end.as_str();
        entry.duration_us = elapsed.as_micros() as u64;
        self.series.ended(end);
        self.series.duration.observe(elapsed.as_secs_f64());
        self.gateway.snapshot().access_log.log_tcp(&entry);
    }

    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch, started: Instant) {
        let time = Some(SystemTime::now());
        let snapshot = self.gateway.snapshot();
        let Some(l) = snapshot.listeners.get(self.index) else {
            return;
        };
        let Some(spec) = l.tcp.clone() else { return };
        let upstream = snapshot.upstreams[spec.upstream].name.clone();
        let mut entry = TcpLogEntry {
            time,
            listener: &self.name,
            upstream: &upstream,
            ..Default::default()
        };
        let (client, dst) = match client_of(&mut stream, l.proxy.as_deref()).await {
            Ok(a) => a,
            Err(why) => {
                proxy_protocol::log_refusal(&format!("tcp listener {}: {why}", self.name));
                return self.finish(entry, TcpEnd::ProxyRefused, started);
            }
        };
        entry.client = client;
        let client_ip = client.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.ip());
        let c = Connecting {
            listener: &self.name,
            spec: &spec,
            upstream: &upstream,
            client: client_ip,
        };
        let (result, attempts) = connect::connect(&self.gateway, &c).await;
        entry.attempts = attempts;
        let Connected {
            stream: mut backend,
            slot,
            upstream: up,
        } = match result {
            Ok(c) => c,
            Err(end) => {
                return self.finish(entry, end, started);
            }
        };
        let state = Arc::clone(slot.state());
        let label = state.label();
        entry.backend = label;
        let metrics = self.gateway.metrics();
        metrics.l4().backend_opened(&up.name, label);
        if let (Some(v), Some(src), Some(dst)) = (up.send_proxy, client, dst) {
            let header = match v {
                crate::config::tcp::ProxyVersion::V1 => proxy_protocol::encode_v1(src, dst),
                crate::config::tcp::ProxyVersion::V2 => proxy_protocol::encode_v2(src, dst),
            };
            if backend.write_all(&header).await.is_err() {
                metrics
                    .l4()
                    .backend_closed(&self.name, &up.name, label, (0, 0));
                return self.finish(entry, TcpEnd::Error, started);
            }
        }
        let limits = splice::Limits {
            idle: spec.idle_timeout,
            lifetime: spec.max_lifetime,
        };
        let grace = Duration::from_secs(snapshot.server.grace_period_seconds);
        drop(snapshot);
        let done = splice::splice(
            stream,
            backend,
            limits,
            drain_deadline(shutdown.clone(), grace),
        )
        .await;
        drop(slot);
        metrics
            .l4()
            .backend_closed(&self.name, &up.name, label, (done.bytes_in, done.bytes_out));
        entry.bytes_in = done.bytes_in;
        entry.bytes_out = done.bytes_out;
        self.finish(entry, done.end, started);
    }
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let started = Instant::now();
        let max = self
            .gateway
            .snapshot()
            .listeners
            .get(self.index)
            .and_then(|l| l.tcp.as_ref().map(|t| t.max_connections))
            .unwrap_or(0);
        if self.open.fetch_add(1, Relaxed) >= max {
            self.open.fetch_sub(1, Relaxed);
            self.series.ended(TcpEnd::ListenerFull);
            return None;
        }
        self.series.open.inc();
        let _open = Open(self);
        self.serve(stream, shutdown, started).await;
        None
    }
}
