//! A lock-free rolling window of two counters per second, for rates and ratios over the last
//! seconds (failure ratios, retry budgets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SLOTS: usize = 64;
const SEC: u64 = 1_000_000_000;
/// No second yet: a slot whose stamp is this holds nothing.
const EMPTY: u64 = u64::MAX;

/// One counter of one second: the second's number (high 32 bits, +1 so 0 is never a
/// stamp) and the count (low 32 bits) in one atomic, so a slot that moves to a new second
/// and the additions racing with it can never lose or mix counts.
#[inline]
fn pack(sec: u64, count: u64) -> u64 {
    (stamp(sec) << 32) | (count & 0xffff_ffff)
}

/// The stamp of second `sec` as it sits in the high 32 bits.
#[inline]
fn stamp(sec: u64) -> u64 {
    sec.wrapping_add(1) & 0xffff_ffff
}

/// Per-second pairs of counters over the last minute (windows of 1 to 63 seconds).
#[derive(Debug)]
pub struct SecondsWindow {
    slots: [(AtomicU64, AtomicU64); SLOTS],
}

impl Default for SecondsWindow {
    fn default() -> Self {
        SecondsWindow {
            slots: std::array::from_fn(|_| (AtomicU64::new(EMPTY), AtomicU64::new(EMPTY))),
        }
    }
}

/// Add `n` to `cell` for second `sec` (starting the second from zero if the cell holds an
/// older one).
fn bump(cell: &AtomicU64, sec: u64, n: u64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |v| {
        Some(if v != EMPTY && v >> 32 == stamp(sec) {
            pack(sec, (v & 0xffff_ffff).saturating_add(n).min(0xffff_ffff))
        } else {
            pack(sec, n)
        })
    });
}

/// The count in `v` if it belongs to a second in `(sec - span, sec]`.
fn count_in(v: u64, sec: u64, span: u64) -> u64 {
    if v == EMPTY {
        return 0;
    }
    let s = v >> 32;
    // Seconds are compared modulo 2^32, which is over a century of uptime.
    let age = stamp(sec).wrapping_sub(s) & 0xffff_ffff;
    if age < span {
        v & 0xffff_ffff
    } else {
        0
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
        let (ca, cb) = &self.slots[(sec as usize) % SLOTS];
        if a > 0 {
            bump(ca, sec, u64::from(a));
        }
        if b > 0 {
            bump(cb, sec, u64::from(b));
        }
    }

    /// The sums of both counters over the last `window` (rounded to whole seconds, 1 to 63).
    pub fn sum(&self, now_ns: u64, window: Duration) -> (u64, u64) {
        self.sum_skipping_b(now_ns, window, usize::MAX)
    }

    fn sum_skipping_b(&self, now_ns: u64, window: Duration, skip: usize) -> (u64, u64) {
        let sec = now_ns / SEC;
        let span = window.as_secs().clamp(1, SLOTS as u64 - 1);
        let mut sums = (0, 0);
        for (i, (ca, cb)) in self.slots.iter().enumerate() {
            sums.0 += count_in(ca.load(Relaxed), sec, span);
            if i != skip {
                sums.1 += count_in(cb.load(Relaxed), sec, span);
            }
        }
        sums
    }

    /// Add 1 to the second counter if `allow(sum_a, sum_b)` holds for the sums over `window`,
    /// atomically with respect to other callers: concurrent callers can never together take
    /// more than `allow` permits (a budget spent from several threads stays exact).
    pub fn add_b_if(
        &self,
        now_ns: u64,
        window: Duration,
        allow: impl Fn(u64, u64) -> bool,
    ) -> bool {
        let sec = now_ns / SEC;
        let index = (sec as usize) % SLOTS;
        let cell = &self.slots[index].1;
        loop {
            let current = cell.load(Relaxed);
            let here = count_in(current, sec, 1);
            let (a, others) = self.sum_skipping_b(now_ns, window, index);
            if !allow(a, others + here) {
                return false;
            }
            // Succeeds only if nobody changed this second's count since it was read.
            if cell
                .compare_exchange(current, pack(sec, here + 1), Relaxed, Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Forget everything.
    pub fn clear(&self) {
        for (a, b) in &self.slots {
            a.store(EMPTY, Relaxed);
            b.store(EMPTY, Relaxed);
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

    #[test]
    fn concurrent_spenders_never_exceed_the_allowance() {
        let w = std::sync::Arc::new(SecondsWindow::new());
        let now = 500 * SEC;
        w.add(now, 100, 0);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| w.add_b_if(now, Duration::from_secs(10), |a, b| b < a / 5 + 10))
                        .count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 30, "100 / 5 + 10, whatever the interleaving");
        assert_eq!(w.sum(now, Duration::from_secs(10)), (100, 30));
    }
}
