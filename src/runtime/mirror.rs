//! A route's compiled `mirror`: which upstream gets the copies, how many, and the bounds that
//! keep shadow traffic from ever costing the real request anything.

use crate::config::mirror::MirrorConfig;
use crate::config::model::Config;
use crate::config::PathError;
use once_cell::sync::Lazy;
use pingora::connectors::http::Connector;
use portcullis_plugin::BuildContext;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Connections to mirror backends, pooled apart from the real traffic's. Built by the first
/// compile of a config with a mirror, on the control thread: building it loads TLS settings
/// from disk, which on a worker stalled the requests behind it (170 ms in `tests/mirror.rs`).
static CONNECTOR: Lazy<Connector> = Lazy::new(|| Connector::new(None));

/// The connector mirror copies use.
pub fn connector() -> &'static Connector {
    &CONNECTOR
}

/// Largest `max_body` accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Counters of one route's copies.
pub struct MirrorSeries {
    /// Copies answered by the mirror upstream (any status).
    pub mirrored: IntCounter,
    /// Requests not copied: the body was over `max_body`, `max_concurrent` copies were in
    /// flight, or no mirror backend could serve.
    pub dropped: IntCounter,
    /// Copies sent that failed: connect error, timeout, a broken answer.
    pub failed: IntCounter,
}

/// A compiled `mirror` section.
pub struct Mirror {
    /// Index of the mirror upstream in the snapshot.
    pub upstream: usize,
    /// A request is copied when a random u32 falls below this.
    threshold: u64,
    /// Largest body copied.
    pub max_body: usize,
    /// Most copies in flight.
    max_concurrent: usize,
    /// Copies in flight now.
    inflight: AtomicUsize,
    /// Bound on one copy, start to end.
    pub timeout: Duration,
    /// What happened to the copies.
    pub series: MirrorSeries,
}

/// One copy's claim on the concurrency cap; released on drop.
pub struct MirrorSlot(Arc<Mirror>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("upstream", &self.upstream)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Whether this request is one of the `percent` copied (a draw, no lock).
    #[inline]
    pub fn sampled(&self) -> bool {
        u64::from(fastrand::u32(..)) < self.threshold
    }

    /// A place among the copies in flight, unless `max_concurrent` are.
    pub fn slot(self: &Arc<Self>) -> Option<MirrorSlot> {
        self.inflight
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < self.max_concurrent).then_some(n + 1)
            })
            .ok()?;
        Some(MirrorSlot(Arc::clone(self)))
    }
}

/// Compile route `route`'s `mirror` (`c`); errors are located under `mirror`.
pub fn compile(
    route: &str,
    c: &MirrorConfig,
    cfg: &Config,
    bc: &BuildContext<'_>,
) -> Result<Arc<Mirror>, Vec<PathError>> {
    let mut errors = Vec::new();
    let at = |k: &str, m: String| PathError::at(format!("mirror.{k}"), m);
    let upstream = cfg.upstreams.iter().position(|u| u.name == c.upstream);
    if upstream.is_none() {
        errors.push(at("upstream", format!("unknown upstream `{}`", c.upstream)));
    }
    if !(0.0..=100.0).contains(&c.percent) || c.percent.is_nan() {
        errors.push(at(
            "percent",
            format!("must be between 0 and 100, got {}", c.percent),
        ));
    }
    if c.max_body > MAX_BODY {
        errors.push(at(
            "max_body",
            format!("must be at most {MAX_BODY} bytes, got {}", c.max_body),
        ));
    }
    if !(1..=10_000).contains(&c.max_concurrent) {
        errors.push(at(
            "max_concurrent",
            format!("must be between 1 and 10000, got {}", c.max_concurrent),
        ));
    }
    if c.timeout.0.is_zero() || c.timeout.0 > Duration::from_secs(300) {
        errors.push(at(
            "timeout",
            format!("must be between 1ms and 5m, got {:?}", c.timeout.0),
        ));
    }
    let counters = bc
        .int_counter_vec(
            "portcullis_mirror_requests_total",
            "Request copies sent to a route's mirror upstream, by result: mirrored, dropped (not sent) or failed.",
            &["route", "result"],
        )
        .map_err(|e| errors.push(at("upstream", e.to_string())))
        .ok();
    let (Some(upstream), Some(v), true) = (upstream, counters, errors.is_empty()) else {
        return Err(errors);
    };
    Lazy::force(&CONNECTOR);
    Ok(Arc::new(Mirror {
        upstream,
        threshold: (c.percent / 100.0 * f64::from(u32::MAX)).round() as u64
            + u64::from(c.percent >= 100.0),
        max_body: c.max_body,
        max_concurrent: c.max_concurrent,
        inflight: AtomicUsize::new(0),
        timeout: c.timeout.0,
        series: MirrorSeries {
            mirrored: v.with_label_values(&[route, "mirrored"]),
            dropped: v.with_label_values(&[route, "dropped"]),
            failed: v.with_label_values(&[route, "failed"]),
        },
    }))
}
