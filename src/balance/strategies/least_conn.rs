//! `least_conn`: the member with the fewest in-flight requests per unit of weight.
//!
//! Default `choice: auto`: a full scan with random tie-breaking up to 16 members (nginx's
//! `least_conn`), power of two choices above (Envoy's `LEAST_REQUEST`), candidates drawn by
//! weight *without replacement* (with replacement, two members would compare a member with
//! itself a quarter of the time). `choice: all` always scans; `choice: p2c` always samples.
//! P2C gave a 250 ms backend among five twice the share a full scan gives it (issue 15).
//!
//! `prefer_fast` (default on): in-flight counts cannot tell a backend that answers in 250 ms
//! (or fails in 1 ms) from one that answers in 5 ms while both are idle, so a member whose
//! moving-average latency is markedly above the fastest candidate's (`SlowMark`) counts as
//! one request busier and loses ties. The mark lasts `slow_for` after its last answer, so a
//! slow member is tried again and a recovered one is found. `prefer_fast: false` counts
//! in-flight requests only, as nginx does.

use super::{scan_lowest, Choice, SCAN_UP_TO};
use crate::balance::sample::WeightTable;
use crate::balance::{Member, PickRequest, Refused, Strategy, StrategyFactory};
use crate::config::duration::Dur;
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `auto` (default), `all` or `p2c`.
    #[serde(default = "auto")]
    choice: Choice,
    /// Count a markedly slow member as one request busier (default `true`).
    #[serde(default = "yes")]
    prefer_fast: bool,
    /// How long a slow answer marks a member as slow (default `1s`).
    #[serde(default = "one_second")]
    slow_for: Dur,
    /// Slow means a moving average above this many times the fastest candidate's.
    #[serde(default = "default_factor")]
    slow_factor: f64,
}

fn auto() -> Choice {
    Choice::Auto
}

fn yes() -> bool {
    true
}

fn one_second() -> Dur {
    Dur::millis(1000)
}

fn default_factor() -> f64 {
    SLOW_FACTOR
}

/// Parameters: `choice: auto | all | p2c`, `prefer_fast: <bool>` (default `true`),
/// `slow_for: <duration>` (default `1s`, greater than 0), `slow_factor: <number>` (default
/// [`SLOW_FACTOR`], greater than 1).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    if p.slow_for.0.is_zero() {
        return Err(PathError::at(
            "slow_for",
            "must be greater than 0 (e.g. 1s)",
        ));
    }
    if !(p.slow_factor > 1.0 && p.slow_factor.is_finite()) {
        return Err(PathError::at(
            "slow_factor",
            "must be a number greater than 1 (e.g. 3)",
        ));
    }
    let slow = SlowMark {
        enabled: p.prefer_fast,
        window_ns: p.slow_for.0.as_nanos() as u64,
        factor: p.slow_factor,
    };
    Ok(Arc::new(Factory {
        choice: p.choice,
        slow,
    }))
}

/// The default `slow_factor`: a member whose moving-average latency is more than this many
/// times the fastest candidate's counts as slow...
pub const SLOW_FACTOR: f64 = 3.0;

/// ...and at least this much more (ns), so that jitter among sub-millisecond backends (or TCP
/// connect times) marks nothing.
pub const SLOW_GAP_NS: f64 = 5e6;

/// Relative amount by which a slow member's load is raised so that it loses ties.
const TIE_NUDGE: f64 = 1e-12;

/// Which members count as slow: a moving average (failures count as 1 s answers) above both
/// `factor` × and [`SLOW_GAP_NS`] + the fastest candidate's, both sampled within the
/// last `window_ns`. A member that stops getting answers stops counting as slow after
/// `window_ns`, so it is tried again and can never be starved.
#[derive(Debug, Clone, Copy)]
struct SlowMark {
    enabled: bool,
    window_ns: u64,
    factor: f64,
}

impl SlowMark {
    /// `m`'s moving average, if sampled within the window.
    #[inline]
    fn recent(&self, m: &Member, now: u64) -> Option<f64> {
        m.state.recent_ewma(now, self.window_ns)
    }

    /// The threshold above which a member is slow, given the lowest recent average among the
    /// candidates (infinite when none is recent).
    #[inline]
    fn threshold(&self, floor: f64) -> f64 {
        (floor * self.factor).max(floor + SLOW_GAP_NS)
    }

    /// The threshold among `candidates`, each read once here and again by [`Self::is_slow`]
    /// (infinite when disabled or none is recent).
    #[inline]
    fn threshold_among<'a>(&self, candidates: impl Iterator<Item = &'a Member>, now: u64) -> f64 {
        if !self.enabled {
            return f64::INFINITY;
        }
        let floor = candidates
            .filter_map(|m| self.recent(m, now))
            .fold(f64::INFINITY, f64::min);
        self.threshold(floor)
    }

    /// Whether `m` is above threshold `t` (from [`Self::threshold_among`]).
    #[inline]
    fn is_slow(&self, m: &Member, t: f64, now: u64) -> bool {
        t.is_finite() && self.recent(m, now).is_some_and(|v| v > t)
    }
}

#[derive(Debug)]
struct Factory {
    choice: Choice,
    slow: SlowMark,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "least_conn"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(LeastConn {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            choice: self.choice,
            slow: self.slow,
        })
    }
}

struct LeastConn {
    table: WeightTable,
    choice: Choice,
    slow: SlowMark,
}

impl LeastConn {
    /// In flight per unit of weight, a slow member counting one more and, on equal load,
    /// losing: its load is raised by a relative [`TIE_NUDGE`], less than the gap between any
    /// two distinct loads (in-flight × weight below 10^12), so it only breaks ties. One `f64`
    /// compares in a few instructions where a tuple takes a `partial_cmp` chain.
    #[inline]
    fn load(m: &Member, slow: bool) -> f64 {
        let s = f64::from(u8::from(slow));
        (f64::from(m.state.inflight()) + s) / f64::from(m.weight) * (1.0 + s * TIE_NUDGE)
    }

    /// Full scan. Up to [`SCAN_UP_TO`] members, each recent average is read once into a
    /// stack array; above (`choice: all`), twice.
    #[inline]
    fn scan(&self, members: &[Member], now: u64) -> usize {
        if !self.slow.enabled {
            return scan_lowest(members, |_, m| Self::load(m, false));
        }
        if members.len() <= SCAN_UP_TO {
            let mut recent = [f64::NAN; SCAN_UP_TO];
            let mut floor = f64::INFINITY;
            for (r, m) in recent.iter_mut().zip(members) {
                if let Some(v) = self.slow.recent(m, now) {
                    *r = v;
                    floor = floor.min(v);
                }
            }
            // NaN (no recent average) is never above the threshold.
            let t = self.slow.threshold(floor);
            return scan_lowest(members, |i, m| Self::load(m, recent[i] > t));
        }
        let t = self.slow.threshold_among(members.iter(), now);
        scan_lowest(members, |_, m| Self::load(m, self.slow.is_slow(m, t, now)))
    }

    /// Power of two choices.
    #[inline]
    fn p2c(&self, members: &[Member], now: u64) -> usize {
        let (a, b) = self.table.draw_two();
        let (ma, mb) = (&members[a], &members[b]);
        let (mut slow_a, mut slow_b) = (false, false);
        if self.slow.enabled {
            if let (Some(ra), Some(rb)) = (self.slow.recent(ma, now), self.slow.recent(mb, now)) {
                slow_a = ra > self.slow.threshold(rb);
                slow_b = rb > self.slow.threshold(ra);
            }
        }
        if Self::load(mb, slow_b) < Self::load(ma, slow_a) {
            b
        } else {
            a
        }
    }
}

impl Strategy for LeastConn {
    #[inline]
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize {
        match members.len() {
            1 => 0,
            n if self.choice.scans(n) => self.scan(members, req.now),
            _ => self.p2c(members, req.now),
        }
    }

    /// The least loaded among the members not refused.
    fn repick(&self, members: &[Member], req: &PickRequest, refused: &Refused) -> Option<usize> {
        let t = self.slow.threshold_among(members.iter(), req.now);
        (0..members.len())
            .filter(|i| !refused.contains(*i))
            .map(|i| {
                (
                    i,
                    Self::load(&members[i], self.slow.is_slow(&members[i], t, req.now)),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;
    use crate::balance::InflightGuard;

    fn busy(m: &Member, n: usize) -> Vec<InflightGuard> {
        (0..n)
            .map(|_| InflightGuard::new(m.state.clone(), 0))
            .collect()
    }

    #[test]
    fn full_scan_picks_the_least_loaded() {
        let m = members(&[1, 1, 1]);
        let _g0 = busy(&m[0], 3);
        let _g1 = busy(&m[1], 1);
        let _g2 = busy(&m[2], 2);
        let s = from_params(&serde_yaml::from_str("choice: all").unwrap())
            .unwrap()
            .build(&m);
        for _ in 0..100 {
            assert_eq!(s.pick(&m, &PickRequest::default()), 1);
        }
    }

    #[test]
    fn p2c_never_picks_the_most_loaded_of_two() {
        let m = members(&[1, 1]);
        let _g = busy(&m[0], 5);
        let s = from_params(&serde_yaml::from_str("choice: p2c").unwrap())
            .unwrap()
            .build(&m);
        for _ in 0..1000 {
            assert_eq!(s.pick(&m, &PickRequest::default()), 1);
        }
    }

    #[test]
    fn the_default_scans_small_groups_and_samples_large_ones() {
        // 16 members, one idle: the default finds it every time.
        let m = members(&[1; 16]);
        let _g: Vec<_> = m[1..].iter().flat_map(|x| busy(x, 1)).collect();
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        assert!((0..500).all(|_| s.pick(&m, &PickRequest::default()) == 0));
        // 17 members, one idle: two samples miss it most of the time.
        let m = members(&[1; 17]);
        let _g: Vec<_> = m[1..].iter().flat_map(|x| busy(x, 1)).collect();
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        let hits = (0..500)
            .filter(|_| s.pick(&m, &PickRequest::default()) == 0)
            .count();
        assert!(
            hits < 150,
            "P2C finds the idle one 2/17 of the time: {hits}"
        );
    }

    const MS: u64 = 1_000_000;

    fn strategy(yaml: &str, m: &[Member]) -> Box<dyn Strategy> {
        from_params(&serde_yaml::from_str(yaml).unwrap())
            .unwrap()
            .build(m)
    }

    fn at(now: u64) -> PickRequest {
        PickRequest { hash: 0, now }
    }

    /// Backend 0 answered in 250 ms at 10 ms, the others in 5 ms.
    fn one_slow(n: usize) -> Vec<Member> {
        let m = members(&vec![1; n]);
        m[0].state.record_success(250 * MS, 10 * MS);
        for x in &m[1..] {
            x.state.record_success(5 * MS, 10 * MS);
        }
        m
    }

    #[test]
    fn a_slow_member_loses_ties_and_counts_one_busier() {
        let m = one_slow(3);
        let s = strategy("{}", &m);
        assert!(
            (0..500).all(|_| s.pick(&m, &at(20 * MS)) != 0),
            "loses ties"
        );
        // Each fast one has a request in flight: the slow one counts as busy as they are, and
        // still loses the tie.
        let _g1 = busy(&m[1], 1);
        let _g2 = busy(&m[2], 1);
        assert!((0..500).all(|_| s.pick(&m, &at(20 * MS)) != 0));
        // Two each: the idle slow one is the least loaded.
        let _h1 = busy(&m[1], 1);
        let _h2 = busy(&m[2], 1);
        assert_eq!(s.pick(&m, &at(20 * MS)), 0);
    }

    #[test]
    fn the_slow_mark_expires_so_a_slow_member_is_tried_again() {
        let m = one_slow(3);
        let s = strategy("slow_for: 500ms", &m);
        assert!((0..500).all(|_| s.pick(&m, &at(509 * MS)) != 0));
        // 500 ms after its last answer the slow member is no longer marked, nor are the others
        // (no answer from them either): a three-way tie.
        let picks: Vec<usize> = (0..600).map(|_| s.pick(&m, &at(510 * MS))).collect();
        let zeros = picks.iter().filter(|p| **p == 0).count();
        assert!((120..280).contains(&zeros), "a fair tie: {zeros} of 600");
    }

    #[test]
    fn a_member_that_fails_fast_is_slow() {
        let m = members(&[1, 1, 1]);
        for t in 1..4 {
            m[0].state.record_failure(t * MS);
            m[1].state.record_success(5 * MS, t * MS);
            m[2].state.record_success(5 * MS, t * MS);
        }
        let s = strategy("{}", &m);
        assert!((0..500).all(|_| s.pick(&m, &at(5 * MS)) != 0));
    }

    #[test]
    fn p2c_prefers_the_fast_member_of_two() {
        let m = one_slow(2);
        let s = strategy("choice: p2c", &m);
        assert!((0..500).all(|_| s.pick(&m, &at(20 * MS)) == 1));
    }

    #[test]
    fn within_the_factor_or_the_gap_members_tie() {
        // 14 ms against 5 ms is under 3x; 3.5 ms against 0.1 ms is under 5 ms more.
        for (slow, fast) in [(14 * MS, 5 * MS), (3_500_000, 100_000)] {
            let m = members(&[1, 1]);
            m[0].state.record_success(slow, 10 * MS);
            m[1].state.record_success(fast, 10 * MS);
            let s = strategy("{}", &m);
            let zeros = (0..600).filter(|_| s.pick(&m, &at(20 * MS)) == 0).count();
            assert!(
                (200..400).contains(&zeros),
                "{slow} vs {fast}: {zeros} of 600"
            );
        }
    }

    #[test]
    fn prefer_fast_off_counts_in_flight_only() {
        let m = one_slow(3);
        let s = strategy("prefer_fast: false", &m);
        let zeros = (0..600).filter(|_| s.pick(&m, &at(20 * MS)) == 0).count();
        assert!((120..280).contains(&zeros), "a fair tie: {zeros} of 600");
    }

    #[test]
    fn repick_prefers_the_fast_among_the_rest() {
        let m = one_slow(3);
        let s = strategy("{}", &m);
        let mut refused = Refused::default();
        refused.insert(1);
        assert_eq!(s.repick(&m, &at(20 * MS), &refused), Some(2));
    }

    #[test]
    fn a_larger_slow_factor_marks_less() {
        let m = members(&[1, 1, 1]);
        m[0].state.record_success(40 * MS, 10 * MS);
        m[1].state.record_success(5 * MS, 10 * MS);
        m[2].state.record_success(5 * MS, 10 * MS);
        let marked = strategy("{}", &m);
        assert!(
            (0..500).all(|_| marked.pick(&m, &at(20 * MS)) != 0),
            "8x > 3x"
        );
        let unmarked = strategy("slow_factor: 10", &m);
        assert!(
            (0..500).any(|_| unmarked.pick(&m, &at(20 * MS)) == 0),
            "8x < 10x"
        );
        for bad in ["slow_factor: 1", "slow_factor: 0.5", "slow_factor: .inf"] {
            let e = from_params(&serde_yaml::from_str(bad).unwrap()).unwrap_err();
            assert!(e.to_string().contains("slow_factor"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_slow_for_is_refused() {
        let e = from_params(&serde_yaml::from_str("slow_for: 0s").unwrap()).unwrap_err();
        assert!(e.to_string().contains("slow_for"), "{e}");
    }

    #[test]
    fn weight_scales_the_load() {
        let m = members(&[1, 4]);
        let _g0 = busy(&m[0], 1);
        let _g1 = busy(&m[1], 3);
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        // 3/4 < 1/1: the heavier member still wins.
        assert_eq!(s.pick(&m, &PickRequest::default()), 1);
    }
}
