//! A lock-free rolling window of two counters per second, for rates and ratios over the last
//! seconds (failure ratios, retry budgets).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SLOTS: usize = 64;
const SEC: u64 = 1_000_000_000;

/// Per-second pairs of counters over the last minute (windows of 1 to 63 seconds).
#[derive(Debug)]
pub struct SecondsWindow {
    slots: [(AtomicU64, AtomicU32, AtomicU32); SLOTS],
}

impl Default for SecondsWindow {
    fn default() -> Self {
        SecondsWindow {
            slots: std::array::from_fn(|_| {
                (
                    AtomicU64::new(u64::MAX),
                    AtomicU32::new(0),
                    AtomicU32::new(0),
                )
            }),
        }
    }
}

impl SecondsWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `a` and `b` to the counters of the second containing `now_ns` (monotonic ns).
    pub fn add(&self, now_ns: u64, a: u32, b: u32) {
        let sec = now_ns / SEC;
        let (epoch, ca, cb) = &self.slots[(sec as usize) % SLOTS];
        if epoch.swap(sec, Relaxed) != sec {
            ca.store(0, Relaxed);
            cb.store(0, Relaxed);
        }
        if a > 0 {
            ca.fetch_add(a, Relaxed);
        }
        if b > 0 {
            cb.fetch_add(b, Relaxed);
        }
    }

    /// The sums of both counters over the last `window` (rounded to whole seconds, 1 to 63).
    pub fn sum(&self, now_ns: u64, window: Duration) -> (u64, u64) {
        let sec = now_ns / SEC;
        let span = window.as_secs().clamp(1, SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|(e, _, _)| {
                let e = e.load(Relaxed);
                e != u64::MAX && e <= sec && sec - e < span
            })
            .fold((0, 0), |(a, b), (_, ca, cb)| {
                (
                    a + u64::from(ca.load(Relaxed)),
                    b + u64::from(cb.load(Relaxed)),
                )
            })
    }

    /// Forget everything.
    pub fn clear(&self) {
        for (e, _, _) in &self.slots {
            e.store(u64::MAX, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_last_seconds_only() {
        let w = SecondsWindow::new();
        let t = 1000 * SEC;
        w.add(t, 2, 1);
        w.add(t + SEC, 3, 0);
        w.add(t + 5 * SEC, 1, 1);
        assert_eq!(w.sum(t + 5 * SEC, Duration::from_secs(10)), (6, 2));
        assert_eq!(w.sum(t + 5 * SEC, Duration::from_secs(2)), (1, 1));
        assert_eq!(
            w.sum(t + 100 * SEC, Duration::from_secs(10)),
            (0, 0),
            "old slots expire"
        );
        w.clear();
        assert_eq!(w.sum(t + 5 * SEC, Duration::from_secs(10)), (0, 0));
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let w = SecondsWindow::new();
        w.add(SEC, 5, 5);
        w.add((1 + SLOTS as u64) * SEC, 1, 0);
        assert_eq!(
            w.sum((1 + SLOTS as u64) * SEC, Duration::from_secs(1)),
            (1, 0)
        );
    }
}
