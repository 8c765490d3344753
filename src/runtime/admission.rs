//! Per-backend connection caps and the queue in front of them (HAProxy's `maxconn` and
//! queue): a pick only considers members below `max_connections`, and when every eligible
//! member is at its cap the caller waits, bounded in count and time, for a slot to free.
//!
//! The cap is taken with a compare-and-swap on the backend's in-flight count, so it holds
//! exactly under concurrency. A released slot wakes one waiter, the oldest; a waiter also looks
//! again every [`RECHECK`], so a slot freed elsewhere (another upstream sharing the backend,
//! a health change) is never missed for long.
//!
//! First come, first served: while requests wait, a newcomer queues behind them instead of
//! taking the slot just freed for the oldest. Without that, under load a waiter lost most
//! such races to arrivals, and every lost race sent it to the back of the queue.

use crate::balance::{BackendState, InflightGuard};
use crate::config::model::UpstreamConfig;
use crate::config::PathError;
use crate::observe::l4_metrics::QueueSeries;
use crate::observe::Metrics;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest a waiter sleeps before looking again without a wake-up.
pub const RECHECK: Duration = Duration::from_millis(100);

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No backend may serve at all (none eligible, or all vetoed).
    NoBackend,
    /// Every eligible backend was at its cap and the queue was full.
    QueueFull,
    /// The wait for a slot reached the queue timeout.
    QueueTimeout,
}

/// A pick under an extra condition: `pick(accept)` returns a member that `accept` allows.
pub type PickFn<'a> =
    dyn FnMut(&dyn Fn(&BackendState) -> bool) -> Option<Arc<BackendState>> + Send + 'a;

enum Taken {
    Slot(InflightGuard),
    Full,
    None,
}

/// The cap and queue of one upstream (shared by every membership version of one config).
pub struct Admission {
    /// Most slots per backend (0: no cap).
    pub cap: u32,
    /// Most waiters.
    pub queue_size: u32,
    /// Longest wait.
    pub timeout: Duration,
    waiting: AtomicU32,
    notify: Arc<Notify>,
    series: QueueSeries,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("cap", &self.cap)
            .field("queue_size", &self.queue_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// A cap of `cap` per backend (0: none) with a queue of `queue_size` waiting up to `timeout`.
    pub fn new(cap: u32, queue_size: u32, timeout: Duration, series: QueueSeries) -> Self {
        Admission {
            cap,
            queue_size,
            timeout,
            waiting: AtomicU32::new(0),
            notify: Arc::new(Notify::new()),
            series,
        }
    }

    /// The per-backend cap and queue of upstream `u` (errors relative to it).
    pub fn compile(u: &UpstreamConfig, metrics: &Metrics, errors: &mut Vec<PathError>) -> Self {
        let cap = u.max_connections.unwrap_or(0);
        if u.max_connections.is_some() && !(1..=1_000_000).contains(&cap) {
            errors.push(PathError::at(
                "max_connections",
                format!("must be between 1 and 1000000, got {cap} (leave it out for no cap)"),
            ));
        }
        let q = &u.queue;
        if q.size > 1_000_000 {
            errors.push(PathError::at(
                "queue.size",
                format!("must be between 0 and 1000000, got {}", q.size),
            ));
        }
        if q.timeout.0.is_zero() || q.timeout.0 > std::time::Duration::from_secs(3600) {
            errors.push(PathError::at(
                "queue.timeout",
                format!("must be between 1ms and 1h, got {:?}", q.timeout.0),
            ));
        }
        Admission::new(cap, q.size, q.timeout.0, metrics.l4().queue(&u.name))
    }

    /// How many wait now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Relaxed)
    }

    /// Whether `s` has a slot free under the cap.
    fn has_room(&self, s: &BackendState) -> bool {
        self.cap == 0 || s.inflight() < self.cap
    }

    fn try_take(&self, pick: &mut PickFn<'_>, timed_at: Option<u64>) -> Taken {
        let cap = self.cap;
        // A member that fills between the pick and the take is picked around (bounded).
        for _ in 0..4 {
            let Some(s) = pick(&|s: &BackendState| self.has_room(s)) else {
                break;
            };
            if let Some(g) = InflightGuard::try_new(&s, cap, timed_at) {
                return Taken::Slot(if cap > 0 {
                    g.notify_on_release(Arc::clone(&self.notify))
                } else {
                    g
                });
            }
        }
        if cap > 0 && pick(&|_| true).is_some() {
            Taken::Full
        } else {
            Taken::None
        }
    }

    /// A slot on a member chosen by `pick`, waiting in the queue while every eligible member
    /// is at its cap. `timed_at`: the request's start for latency accounting (`None` for a TCP
    /// connection).
    pub async fn acquire(
        &self,
        pick: &mut PickFn<'_>,
        timed_at: Option<u64>,
    ) -> Result<InflightGuard, Refusal> {
        // Others waiting: a slot free now was freed for the oldest of them.
        let behind = self.waiting.load(Relaxed) > 0;
        if behind {
            if pick(&|_| true).is_none() {
                return Err(Refusal::NoBackend);
            }
        } else {
            match self.try_take(pick, timed_at) {
                Taken::Slot(g) => return Ok(g),
                Taken::None => return Err(Refusal::NoBackend),
                Taken::Full => {}
            }
        }
        if self
            .waiting
            .fetch_update(Relaxed, Relaxed, |n| (n < self.queue_size).then_some(n + 1))
            .is_err()
        {
            self.series.full.inc();
            return Err(Refusal::QueueFull);
        }
        self.series.queued.inc();
        self.series.depth.inc();
        let start = Instant::now();
        let result = self
            .wait(pick, timed_at, start + self.timeout, behind)
            .await;
        self.waiting.fetch_sub(1, Relaxed);
        self.series.depth.dec();
        self.series.wait.observe(start.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.series.served.inc(),
            Err(Refusal::QueueTimeout) => self.series.timeout.inc(),
            Err(_) => {}
        }
        result
    }

    /// After a waiter took a slot: if others still wait and a slot is still free, wake the
    /// next. A burst of releases can free more slots than it woke waiters (tokio's `Notify`
    /// keeps one permit, not a count), and the rest would otherwise wait for a recheck.
    fn pass_on(&self, pick: &mut PickFn<'_>) {
        if self.waiting.load(Relaxed) > 1 && pick(&|s: &BackendState| self.has_room(s)).is_some() {
            self.notify.notify_one();
        }
    }

    async fn wait(
        &self,
        pick: &mut PickFn<'_>,
        timed_at: Option<u64>,
        deadline: Instant,
        mut behind: bool,
    ) -> Result<InflightGuard, Refusal> {
        loop {
            // Registered before looking, so a slot released in between still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Queued behind others: the first look waits for our turn (a wake-up or a recheck).
            if !std::mem::take(&mut behind) {
                match self.try_take(pick, timed_at) {
                    Taken::Slot(g) => {
                        self.pass_on(pick);
                        return Ok(g);
                    }
                    Taken::None => return Err(Refusal::NoBackend),
                    Taken::Full => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Refusal::QueueTimeout);
            }
            let nap = (deadline - now).min(RECHECK);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Metrics;

    fn admission(cap: u32, size: u32, timeout_ms: u64) -> Admission {
        let m = Metrics::new();
        Admission::new(
            cap,
            size,
            Duration::from_millis(timeout_ms),
            m.l4().queue("t"),
        )
    }

    fn picker(s: &Arc<BackendState>) -> Box<PickFn<'_>> {
        Box::new(move |ok: &dyn Fn(&BackendState) -> bool| ok(s).then(|| Arc::clone(s)))
    }

    /// A request for a slot of `s`, spawned, once it waits in `a`'s queue.
    async fn queued_waiter(
        a: &Arc<Admission>,
        s: &Arc<BackendState>,
    ) -> tokio::task::JoinHandle<Result<InflightGuard, Refusal>> {
        let (a2, s2) = (Arc::clone(a), Arc::clone(s));
        let waiter = tokio::spawn(async move { a2.acquire(&mut *picker(&s2), None).await });
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.waiting() == 0 {
            assert!(Instant::now() < deadline, "the waiter never queued");
            tokio::task::yield_now().await;
        }
        waiter
    }

    /// Polls `f` once: its output if it is ready, `None` if it is pending.
    async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            r = f => Some(r),
            _ = std::future::ready(()) => None,
        }
    }

    #[tokio::test]
    async fn the_cap_holds_and_a_waiter_gets_the_freed_slot() {
        let s = BackendState::detached("127.0.0.1:1".parse().unwrap());
        let a = Arc::new(admission(2, 1, 5_000));
        let g1 = a.acquire(&mut *picker(&s), None).await.unwrap();
        let _g2 = a.acquire(&mut *picker(&s), None).await.unwrap();
        assert_eq!(s.inflight(), 2);
        let waiter = queued_waiter(&a, &s).await;
        // The queue (size 1) is full: a fourth is refused at once.
        assert_eq!(
            a.acquire(&mut *picker(&s), None).await.err(),
            Some(Refusal::QueueFull)
        );
        drop(g1);
        let got = waiter.await.unwrap();
        assert_eq!(got.map(|g| g.state().inflight()), Ok(2));
    }

    #[tokio::test]
    async fn a_newcomer_queues_behind_a_waiter_for_a_freed_slot() {
        let s = BackendState::detached("127.0.0.1:1".parse().unwrap());
        let a = Arc::new(admission(1, 4, 5_000));
        let held = a.acquire(&mut *picker(&s), None).await.unwrap();
        let first = queued_waiter(&a, &s).await;
        // The slot frees; the waiter is woken but has not run yet when a newcomer asks.
        drop(held);
        let mut pk = picker(&s);
        let mut second = Box::pin(a.acquire(&mut *pk, None));
        let barged = poll_once(&mut second).await.map(|r| r.is_ok());
        assert_eq!(
            barged, None,
            "the newcomer took the slot freed for the waiter"
        );
        let g = first.await.unwrap().expect("the waiter gets the slot");
        assert_eq!(a.waiting(), 1, "the newcomer waits");
        drop(g);
        assert!(second.await.is_ok());
        assert_eq!(a.waiting(), 0);
    }

    /// Three slots free at once while one request waits: the first release wakes it, the
    /// second leaves `Notify`'s one permit, the third wakes nobody. The newcomer that takes
    /// the permit's slot passes the wake-up on, so a second newcomer gets the third slot
    /// without waiting for a [`RECHECK`].
    #[tokio::test]
    async fn a_newcomer_behind_others_finds_a_slot_freed_in_a_burst() {
        let s = BackendState::detached("127.0.0.1:1".parse().unwrap());
        let a = Arc::new(admission(3, 8, 5_000));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.acquire(&mut *picker(&s), None).await.unwrap());
        }
        let first = queued_waiter(&a, &s).await;
        held.clear();
        let (mut p1, mut p2) = (picker(&s), picker(&s));
        let mut n1 = Box::pin(a.acquire(&mut *p1, None));
        let mut n2 = Box::pin(a.acquire(&mut *p2, None));
        // The first newcomer takes the permit's slot (and holds it); the second must wait.
        let got1 = poll_once(&mut n1).await;
        assert!(matches!(got1, Some(Ok(_))), "{got1:?}");
        let t = Instant::now();
        let got = tokio::time::timeout(Duration::from_millis(50), &mut n2).await;
        assert!(
            matches!(got, Ok(Ok(_))),
            "no slot after {:?}: {got:?}",
            t.elapsed()
        );
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_wait_times_out_and_no_member_is_no_backend() {
        let s = BackendState::detached("127.0.0.1:1".parse().unwrap());
        let a = admission(1, 4, 50);
        let _g = a.acquire(&mut *picker(&s), None).await.unwrap();
        let t = Instant::now();
        assert_eq!(
            a.acquire(&mut *picker(&s), None).await.err(),
            Some(Refusal::QueueTimeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(a.waiting(), 0);
        let mut none = |_: &dyn Fn(&BackendState) -> bool| None;
        assert_eq!(
            a.acquire(&mut none, None).await.err(),
            Some(Refusal::NoBackend)
        );
    }
}
