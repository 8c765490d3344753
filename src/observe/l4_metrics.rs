//! Metrics of TCP proxying and of the connection queue (HAProxy's `maxconn` and queue).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Connection duration buckets (seconds): 1 ms to 1 h.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Queue wait buckets (seconds): 1 ms to 60 s.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How a client connection of a TCP listener ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEnd {
    /// Both sides finished (FIN both ways).
    Closed,
    /// A side reset or failed mid-stream.
    Error,
    /// Neither side sent a byte for the idle timeout.
    IdleTimeout,
    /// The maximum lifetime passed.
    Lifetime,
    /// Still open when the grace period of a shutdown or upgrade ended.
    Drained,
    /// Closed at once: the listener was at its `max_connections`.
    ListenerFull,
    /// Refused: a PROXY header from an untrusted peer, malformed, or missing.
    ProxyRefused,
    /// No backend may serve.
    NoBackend,
    /// Every eligible backend was at its cap and the queue was full.
    QueueFull,
    /// The wait for a backend slot timed out.
    QueueTimeout,
    /// Every connect attempt failed.
    ConnectFailed,
}

impl TcpEnd {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpEnd::Closed => "closed",
            TcpEnd::Error => "error",
            TcpEnd::IdleTimeout => "idle_timeout",
            TcpEnd::Lifetime => "lifetime",
            TcpEnd::Drained => "drained",
            TcpEnd::ListenerFull => "listener_full",
            TcpEnd::ProxyRefused => "proxy_refused",
            TcpEnd::NoBackend => "no_backend",
            TcpEnd::QueueFull => "queue_full",
            TcpEnd::QueueTimeout => "queue_timeout",
            TcpEnd::ConnectFailed => "connect_failed",
        }
    }
}

/// The L4 and queue metrics of one gateway (registered in its registry).
pub struct L4Metrics {
    open: IntGaugeVec,
    total: IntCounterVec,
    bytes: IntCounterVec,
    backend_open: IntGaugeVec,
    backend_total: IntCounterVec,
    duration: HistogramVec,
    queue_depth: IntGaugeVec,
    queue_total: IntCounterVec,
    queue_wait: HistogramVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

fn histograms(r: &Registry, name: &str, help: &str, b: &[f64], l: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(b.to_vec());
    reg(
        r,
        HistogramVec::new(opts, l).expect("static metric definition"),
    )
}

impl L4Metrics {
    /// Create and register in `r`.
    pub fn new(r: &Registry) -> Self {
        L4Metrics {
            open: gauges(r, "portcullis_tcp_connections_open", "Client connections open on a TCP listener.", &["listener"]),
            total: counters(r, "portcullis_tcp_connections_total", "Client connections of a TCP listener, by how they ended.", &["listener", "result"]),
            bytes: counters(r, "portcullis_tcp_bytes_total", "Bytes proxied by a TCP listener: in = client to backend, out = backend to client.", &["listener", "upstream", "backend", "direction"]),
            backend_open: gauges(r, "portcullis_tcp_backend_connections_open", "TCP connections open to a backend.", &["upstream", "backend"]),
            backend_total: counters(r, "portcullis_tcp_backend_connections_total", "TCP connections made to a backend.", &["upstream", "backend"]),
            duration: histograms(r, "portcullis_tcp_connection_duration_seconds", "Lifetime of client connections of a TCP listener.", DURATION_BUCKETS, &["listener"]),
            queue_depth: gauges(r, "portcullis_upstream_queue_depth", "Requests or connections waiting for a backend slot (max_connections).", &["upstream"]),
            queue_total: counters(r, "portcullis_upstream_queue_total", "Waits for a backend slot: queued, served (got one), full (refused at once), timeout.", &["upstream", "result"]),
            queue_wait: histograms(r, "portcullis_upstream_queue_wait_seconds", "Time waited in the queue for a backend slot.", WAIT_BUCKETS, &["upstream"]),
        }
    }

    /// The series of one listener.
    pub fn listener(&self, name: &str) -> ListenerSeries {
        let end = |e: TcpEnd| self.total.with_label_values(&[name, e.as_str()]);
        ListenerSeries {
            open: self.open.with_label_values(&[name]),
            duration: self.duration.with_label_values(&[name]),
            ends: ALL_ENDS.map(end),
        }
    }

    /// Count a connection to `backend` of `upstream` open (call [`Self::backend_closed`]).
    pub fn backend_opened(&self, upstream: &str, backend: &str) {
        self.backend_total
            .with_label_values(&[upstream, backend])
            .inc();
        self.backend_open
            .with_label_values(&[upstream, backend])
            .inc();
    }

    /// A connection to a backend closed, having moved these bytes.
    pub fn backend_closed(&self, listener: &str, upstream: &str, backend: &str, bytes: (u64, u64)) {
        self.backend_open
            .with_label_values(&[upstream, backend])
            .dec();
        for (dir, n) in [("in", bytes.0), ("out", bytes.1)] {
            self.bytes
                .with_label_values(&[listener, upstream, backend, dir])
                .inc_by(n);
        }
    }

    /// The queue series of one upstream.
    pub fn queue(&self, upstream: &str) -> QueueSeries {
        let c = |r: &str| self.queue_total.with_label_values(&[upstream, r]);
        QueueSeries {
            depth: self.queue_depth.with_label_values(&[upstream]),
            queued: c("queued"),
            served: c("served"),
            full: c("full"),
            timeout: c("timeout"),
            wait: self.queue_wait.with_label_values(&[upstream]),
        }
    }
}

const ALL_ENDS: [TcpEnd; 11] = [
    TcpEnd::Closed,
    TcpEnd::Error,
    TcpEnd::IdleTimeout,
    TcpEnd::Lifetime,
    TcpEnd::Drained,
    TcpEnd::ListenerFull,
    TcpEnd::ProxyRefused,
    TcpEnd::NoBackend,
    TcpEnd::QueueFull,
    TcpEnd::QueueTimeout,
    TcpEnd::ConnectFailed,
];

/// One TCP listener's series, resolved once.
#[derive(Clone)]
pub struct ListenerSeries {
    /// Open connections.
    pub open: IntGauge,
    /// Connection lifetimes.
    pub duration: Histogram,
    ends: [IntCounter; 11],
}

impl ListenerSeries {
    /// Count a connection that ended `how`.
    pub fn ended(&self, how: TcpEnd) {
        // ALL_ENDS lists the variants in declaration order (checked by a test).
        self.ends[how as usize].inc();
    }
}

/// One upstream's queue series, resolved once.
#[derive(Clone)]
pub struct QueueSeries {
    /// Waiting now.
    pub depth: IntGauge,
    /// Entered the queue.
    pub queued: IntCounter,
    /// Left it with a slot.
    pub served: IntCounter,
    /// Refused: the queue was full.
    pub full: IntCounter,
    /// Left it without a slot after the timeout.
    pub timeout: IntCounter,
    /// Time waited.
    pub wait: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_has_its_own_series_in_order() {
        for (i, e) in ALL_ENDS.iter().enumerate() {
            assert_eq!(*e as usize, i, "{}", e.as_str());
        }
    }
}
