//! Live per-backend state, kept outside Pingora's selectors.
//!
//! Pingora rebuilds a selector from scratch whenever membership (or, here, eligibility)
//! changes. In-flight counts, latency estimates, failures and health must survive that, so they
//! live in one [`StateStore`] keyed by backend address. Selectors, health probes and requests
//! hold `Arc<BackendState>`; the store keeps only weak references, so state disappears once no
//! upstream uses the address any more.

use super::ewma::{AtomicF64, ERROR_PENALTY_NS};
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Monotonic nanoseconds since the first call in this process.
#[inline]
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// Time constant of both latency estimates (300 ms): the moving average (`fastest_response`)
/// and the peak-EWMA (`adaptive`). A sample's weight is `1 - e^(-dt/tau)`, where `dt` is the
/// time since the previous sample, so an estimate follows the last few hundred milliseconds
/// of traffic at any request rate, and a sample that arrives after a long idle gap mostly
/// replaces a stale estimate instead of being averaged into it. Finagle, Linkerd and tower use
/// 10 s for the peak-EWMA: a backend that was slow and recovered then needs tens of seconds to
/// come back (issue 15: one fast answer after a 1 s gap moved a 250 ms estimate only to
/// 227 ms). In the peak-EWMA a slower sample still replaces the estimate at once.
pub const LATENCY_TAU_NS: f64 = 3e8;

/// What is known right now about one backend address.
#[derive(Debug)]
pub struct BackendState {
    addr: SocketAddr,
    label: Box<str>,
    id: u32,
    inflight: AtomicU32,
    /// How many of the in-flight slots are timed requests (TCP connections hold untimed
    /// slots: an hour-long session is not a slow answer).
    timed: AtomicU32,
    /// Sum of the start times (µs since [`now_ns`]'s epoch) of the in-flight requests, so the
    /// mean age of what is outstanding is one division away.
    inflight_started_us: AtomicU64,
    healthy: AtomicBool,
    probed: AtomicBool,
    enabled: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Time-weighted moving average of response latency (ns) and the time of its last sample.
    ewma_ns: AtomicF64,
    ewma_at: AtomicU64,
    /// Peak-EWMA of response latency (ns) and the time of its last update.
    peak_ns: AtomicF64,
    peak_at: AtomicU64,
    samples: AtomicU64,
}

impl BackendState {
    fn new(addr: SocketAddr, id: u32) -> Self {
        BackendState {
            addr,
            label: addr.to_string().into_boxed_str(),
            id,
            inflight: AtomicU32::new(0),
            timed: AtomicU32::new(0),
            inflight_started_us: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            probed: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ewma_ns: AtomicF64::new(0.0),
            ewma_at: AtomicU64::new(0),
            peak_ns: AtomicF64::new(0.0),
            peak_at: AtomicU64::new(0),
            samples: AtomicU64::new(0),
        }
    }

    /// A state not registered in any store (tests, benchmarks, stand-alone selectors).
    pub fn detached(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self::new(addr, u32::MAX))
    }

    /// The backend address.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as text, computed once (for logs and metric labels).
    #[inline]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Small id, unique within the store for the life of the process.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Requests and TCP connections currently being served by this backend.
    #[inline]
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }

    /// Mean time (ns) the in-flight requests have been waiting at `now`; 0 when none is.
    ///
    /// Read without a lock beside concurrent starts and ends, so it can count one finished
    /// request for an instant (an age a little too small); it never panics or goes negative.
    #[inline]
    pub fn outstanding_age_ns(&self, now: u64) -> f64 {
        let n = u64::from(self.timed.load(Acquire));
        if n == 0 {
            return 0.0;
        }
        let mean_start_us = self.inflight_started_us.load(Relaxed) / n;
        (now / 1_000).saturating_sub(mean_start_us) as f64 * 1e3
    }

    /// Last verdict of the active health check (true when no check is configured).
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Record a health verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Relaxed) != healthy
    }

    /// Note that a health probe ran; returns whether one had run before.
    pub fn mark_probed(&self) -> bool {
        self.probed.swap(true, Relaxed)
    }

    /// False while an operator drains the backend: no new requests, in-flight ones finish.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Drain (`false`) or re-enable (`true`); returns whether it changed.
    pub fn set_enabled(&self, enabled: bool) -> bool {
        self.enabled.swap(enabled, Relaxed) != enabled
    }

    /// Healthy and enabled: may take new requests.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.is_healthy() && self.is_enabled()
    }

    /// Requests completed (with any outcome).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Failures recorded (connect errors, timeouts, 5xx).
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// A response arrived after `latency_ns`.
    pub fn record_success(&self, latency_ns: u64, now: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.record_latency(latency_ns as f64, now);
    }

    /// The attempt failed (connect error, timeout or an error status). Latency-aware strategies
    /// see it as a slow response, so a backend that fails fast does not attract traffic.
    pub fn record_failure(&self, now: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.failures.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.record_latency(ERROR_PENALTY_NS, now);
    }

    /// An active health probe answered in `latency_ns`. It counts as a latency sample only
    /// when no request or probe was measured for `idle_after_ns` (a backend with traffic is
    /// judged by its traffic) and the last request did not fail (the probe's cheap endpoint
    /// does not vouch for a backend that answers errors). So a backend that gets no traffic
    /// because it was slow is re-measured without sending it a client request; one that
    /// recovered is found within a probe interval.
    pub fn record_probe(&self, latency_ns: u64, now: u64, idle_after_ns: u64) {
        let last = self.peak_at.load(Relaxed);
        if now.saturating_sub(last) >= idle_after_ns && self.consecutive_failures() == 0 {
            self.record_latency(latency_ns as f64, now);
        }
    }

    /// `adaptive` re-tried this slow, idle backend and it sent no response header within the
    /// deadline of `waited_ns`: it is still slow. Its peak-EWMA stays (or rises to
    /// `waited_ns`), dated now, so its idle decay starts over. The moving average and its date
    /// are left alone: they keep the last complete answer. Not a failure.
    pub fn record_still_slow(&self, waited_ns: u64, now: u64) {
        self.requests.fetch_add(1, Relaxed);
        let peak = self.peak_ewma().map_or(0.0, |(v, _)| v);
        self.update_peak(peak.max(waited_ns as f64), now);
    }

    fn record_latency(&self, sample: f64, now: u64) {
        self.samples.fetch_add(1, Relaxed);
        // Time-weighted moving average (fastest_response); the first sample seeds it.
        let prev_at = self.ewma_at.swap(now.max(1), Relaxed);
        let dt = now.saturating_sub(prev_at) as f64;
        self.ewma_ns.update(|v| {
            if prev_at == 0 {
                sample
            } else {
                let w = (-dt / LATENCY_TAU_NS).exp();
                v * w + sample * (1.0 - w)
            }
        });
        self.update_peak(sample, now);
    }

    /// Peak-EWMA (adaptive): a sample above the estimate replaces it at once; otherwise the
    /// estimate moves toward the sample with weight 1 - e^(-dt/tau).
    fn update_peak(&self, sample: f64, now: u64) {
        let prev_at = self.peak_at.swap(now.max(1), Relaxed);
        let dt = now.saturating_sub(prev_at) as f64;
        self.peak_ns.update(|v| {
            if prev_at == 0 || sample > v {
                sample
            } else {
                let w = (-dt / LATENCY_TAU_NS).exp();
                v * w + sample * (1.0 - w)
            }
        });
    }

    /// Whether any latency sample was recorded.
    #[inline]
    pub fn is_measured(&self) -> bool {
        self.samples.load(Relaxed) > 0
    }

    /// The moving average of latency (ns) and the time of its last sample, as stored;
    /// `None` before the first sample.
    #[inline]
    pub fn ewma(&self) -> Option<(f64, u64)> {
        if !self.is_measured() {
            return None;
        }
        Some((self.ewma_ns.load(), self.ewma_at.load(Relaxed)))
    }

    /// The peak-EWMA latency (ns) and the time of its last sample, as stored (no decay for
    /// the time since: `adaptive` decides how an idle backend's cost moves); `None` before
    /// the first sample.
    #[inline]
    pub fn peak_ewma(&self) -> Option<(f64, u64)> {
        if !self.is_measured() {
            return None;
        }
        Some((self.peak_ns.load(), self.peak_at.load(Relaxed)))
    }

    /// The moving average (ns) if its last sample is less than `window_ns` before `now`.
    #[inline]
    pub fn recent_ewma(&self, now: u64, window_ns: u64) -> Option<f64> {
        let at = self.ewma_at.load(Relaxed);
        (at != 0 && now.saturating_sub(at) < window_ns).then(|| self.ewma_ns.load())
    }

    /// The undecayed moving-average latency in nanoseconds (for reporting).
    pub fn ewma_latency_ns(&self) -> f64 {
        self.ewma_ns.load()
    }
}

/// Holds one in-flight slot on a backend; dropping it (on success, error or client abort)
/// releases the slot, and wakes one waiter of `release` if set (a connection queue).
#[derive(Debug)]
pub struct InflightGuard {
    state: Arc<BackendState>,
    /// Start time in µs, or `None` for an untimed slot (a TCP connection).
    started_us: Option<u64>,
    release: Option<Arc<tokio::sync::Notify>>,
}

impl InflightGuard {
    /// Take an in-flight slot on `state` for a request sent at `now` ([`now_ns`]).
    #[inline]
    pub fn new(state: Arc<BackendState>, now: u64) -> Self {
        state.inflight.fetch_add(1, Relaxed);
        Self::timed(state, now)
    }

    /// Take a slot on `state` only while fewer than `cap` are taken (`cap` 0: no limit);
    /// `timed_at` is the request's start ([`now_ns`]), `None` for a TCP connection.
    #[inline]
    pub fn try_new(state: &Arc<BackendState>, cap: u32, timed_at: Option<u64>) -> Option<Self> {
        if cap == 0 {
            state.inflight.fetch_add(1, Relaxed);
        } else {
            state
                .inflight
                .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
                .ok()?;
        }
        let state = Arc::clone(state);
        Some(match timed_at {
            Some(now) => Self::timed(state, now),
            None => InflightGuard {
                state,
                started_us: None,
                release: None,
            },
        })
    }

    fn timed(state: Arc<BackendState>, now: u64) -> Self {
        let started_us = now / 1_000;
        // Start time first, then the count with Release: a reader that sees the count (with
        // Acquire) sees the start time too, so the mean start is never pulled toward zero.
        state.inflight_started_us.fetch_add(started_us, Relaxed);
        state.timed.fetch_add(1, Release);
        InflightGuard {
            state,
            started_us: Some(started_us),
            release: None,
        }
    }

    /// Wake one waiter of `notify` when this slot is released.
    pub fn notify_on_release(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.release = Some(notify);
        self
    }

    /// The backend this slot is on.
    #[inline]
    pub fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for InflightGuard {
    #[inline]
    fn drop(&mut self) {
        // Count first: a racing reader may see one start too many (an age a little too
        // small for an instant), never one too few.
        if let Some(started_us) = self.started_us {
            self.state.timed.fetch_sub(1, Relaxed);
            self.state
                .inflight_started_us
                .fetch_sub(started_us, Relaxed);
        }
        self.state.inflight.fetch_sub(1, Relaxed);
        if let Some(n) = &self.release {
            n.notify_one();
        }
    }
}

/// The one place live backend state is found by address.
#[derive(Debug, Default)]
pub struct StateStore {
    map: Mutex<HashMap<SocketAddr, Weak<BackendState>>>,
    next_id: AtomicU32,
}

impl StateStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The state of `addr`, created (healthy, enabled, unmeasured) if no one holds it.
    pub fn get_or_create(&self, addr: SocketAddr) -> Arc<BackendState> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = map.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        if map.len() > 64 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let state = Arc::new(BackendState::new(addr, self.next_id.fetch_add(1, Relaxed)));
        map.insert(addr, Arc::downgrade(&state));
        state
    }

    /// The state of `addr`, if some upstream still holds it.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<BackendState>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).and_then(Weak::upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn store_returns_the_same_state_while_held() {
        let store = StateStore::new();
        let a = store.get_or_create(addr(1));
        let b = store.get_or_create(addr(1));
        assert!(Arc::ptr_eq(&a, &b));
        let id = a.id();
        drop((a, b));
        let c = store.get_or_create(addr(1));
        assert_ne!(c.id(), id, "state is dropped once nobody holds it");
    }

    #[test]
    fn guard_releases_inflight_on_drop() {
        let s = BackendState::detached(addr(1));
        let g1 = InflightGuard::new(s.clone(), 1_000_000);
        let g2 = InflightGuard::new(s.clone(), 3_000_000);
        assert_eq!(s.inflight(), 2);
        // Mean start 2 ms, now 10 ms: 8 ms outstanding on average.
        assert_eq!(s.outstanding_age_ns(10_000_000), 8e6);
        drop(g1);
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.outstanding_age_ns(10_000_000), 7e6);
        drop(g2);
        assert_eq!(s.inflight(), 0);
        assert_eq!(s.outstanding_age_ns(10_000_000), 0.0);
        // A clock read before the start (another thread) never goes negative.
        let _g = InflightGuard::new(s.clone(), 50_000_000);
        assert_eq!(s.outstanding_age_ns(10_000_000), 0.0);
    }

    #[test]
    fn peak_ewma_jumps_up_and_comes_down_with_faster_samples() {
        let s = BackendState::detached(addr(1));
        assert_eq!(s.peak_ewma(), None);
        s.record_success(1_000_000, 1);
        s.record_success(50_000_000, 2);
        let (peak, at) = s.peak_ewma().unwrap();
        assert!(
            (peak - 50e6).abs() < 1.0,
            "a higher sample replaces the estimate: {peak}"
        );
        assert_eq!(at, 2);
        // A 10 ms answer 300 ms later: weight e^-1 on the old estimate.
        s.record_success(10_000_000, 2 + 300_000_000);
        let (v, _) = s.peak_ewma().unwrap();
        let e = (-1f64).exp();
        assert!((v - (50e6 * e + 10e6 * (1.0 - e))).abs() < 1.0, "{v}");
    }

    #[test]
    fn probes_measure_only_idle_backends_that_do_not_fail() {
        let s = BackendState::detached(addr(1));
        s.record_success(250_000_000, 1_000);
        // 100 ms later, with traffic: the probe is ignored.
        s.record_probe(1_000_000, 100_001_000, 250_000_000);
        assert_eq!(s.peak_ewma().unwrap().0, 250e6);
        // 2 s without traffic: the probe replaces the stale estimate almost entirely.
        s.record_probe(1_000_000, 2_000_001_000, 250_000_000);
        assert!(s.peak_ewma().unwrap().0 < 2e6);
        assert_eq!(s.requests(), 1, "probes are not requests");
        // After a failed request, a probe does not lower the estimate.
        s.record_failure(3_000_000_000);
        s.record_probe(1_000_000, 9_000_000_000, 250_000_000);
        assert!(s.peak_ewma().unwrap().0 >= ERROR_PENALTY_NS * 0.99);
    }

    #[test]
    fn a_sample_after_a_long_gap_replaces_a_stale_estimate() {
        let s = BackendState::detached(addr(1));
        s.record_success(300_000_000, 1);
        s.record_success(1_000_000, 1 + 10_000_000_000); // 10 s later
        assert!(s.ewma().unwrap().0 < 2e6);
        // Samples close together move the estimate only a little.
        let t = BackendState::detached(addr(2));
        t.record_success(1_000_000, 1);
        t.record_success(300_000_000, 1_000_001); // 1 ms later
        assert!(t.ewma().unwrap().0 < 2e6);
    }

    #[test]
    fn failures_count_and_look_slow() {
        let s = BackendState::detached(addr(1));
        s.record_success(1_000_000, 10);
        s.record_failure(20);
        assert_eq!(s.failures(), 1);
        assert_eq!(s.consecutive_failures(), 1);
        assert!(s.peak_ewma().unwrap().0 >= ERROR_PENALTY_NS * 0.99);
        s.record_success(1_000_000, 30);
        assert_eq!(s.consecutive_failures(), 0);
    }
}
