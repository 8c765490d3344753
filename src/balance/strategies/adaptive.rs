//! `adaptive`: Peak-EWMA latency × (in-flight + 1), power of two choices (Finagle, Linkerd,
//! tower). A slower answer replaces a backend's estimate at once; faster ones bring it down
//! with a 300 ms time constant ([`LATENCY_TAU_NS`](crate::balance::state::LATENCY_TAU_NS)).
//! Failures count as 1 s answers, so a backend that fails fast does not attract traffic (the
//! black-hole effect). An idle backend's estimate decays toward its competitor's with
//! half-life `idle_decay`, so a backend that was slow is tried again within a bounded time,
//! and the mean age of a backend's outstanding requests counts as its latency once it exceeds
//! the estimate, so one that hangs is avoided before it answers: see `latency.rs`. With an
//! HTTP health check, the probe's answer time measures an idle backend without sending it a
//! client request ([`BackendState::record_probe`](crate::balance::BackendState::record_probe)).
//!
//! **A re-try has a deadline** (`probe_deadline`, default on). When the pick lands on a backend
//! only because its estimate decayed, the proxy waits for its response header only briefly
//! ([`Strategy::probe_deadline`]) and then sends the request elsewhere, so a backend that is still
//! slow costs its re-tries a few milliseconds instead of its full latency. A re-try cut short
//! keeps the backend's estimate ([`BackendState::record_still_slow`]); one in full, with no
//! deadline, is made when the backend has not completed an answer for [`FULL_MEASURE_NS`], so
//! a backend that recovered to a latency above the deadline is still found.

use super::latency::LatencyCost;
use super::Choice;
use crate::balance::sample::WeightTable;
use crate::balance::{BackendState, Member, PickRequest, Strategy, StrategyFactory};
use crate::config::duration::Dur;
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

/// A chosen member is only being re-tried when its peak-EWMA is at least this many times the
/// lowest moving average of the other members ...
const PROBE_RATIO: f64 = 4.0;
/// ... and at least this much above it (ns), so that microseconds of jitter never count.
const PROBE_GAP_NS: f64 = 5e6;
/// The deadline: 1.25 × that lowest average, plus this margin (ns) ...
const PROBE_MARGIN_NS: f64 = 1e6;
/// ... and never less than this (ns), so scheduling noise alone does not cut a re-try short.
const PROBE_FLOOR_NS: f64 = 5e6;
/// How many other members are read for the lowest average (the first ones).
const PROBE_SCAN: usize = 16;
/// A member whose last completed answer is older than this (ns) is re-tried without a
/// deadline, and measured in full.
pub const FULL_MEASURE_NS: u64 = 10_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// RTT assumed when no candidate has samples yet. Default `30ms` (linkerd2-proxy).
    #[serde(default = "default_rtt")]
    default_rtt: Dur,
    /// Half-life with which an idle backend's estimate moves toward its competitor's.
    /// Default `150ms`.
    #[serde(default = "default_idle_decay")]
    idle_decay: Dur,
    /// Wait for a probed backend's answer only briefly, then try another (default `true`).
    #[serde(default = "probe_on")]
    probe_deadline: bool,
}

fn probe_on() -> bool {
    true
}

fn default_rtt() -> Dur {
    Dur::millis(30)
}

fn default_idle_decay() -> Dur {
    Dur::millis(150)
}

/// Parameters: `default_rtt: <duration>` (default `30ms`), `idle_decay: <duration>`
/// (default `150ms`, greater than 0), `probe_deadline: <bool>` (default `true`).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    let default_ns = p.default_rtt.0.as_nanos() as f64;
    Ok(Arc::new(Factory {
        cost: LatencyCost::new(p.idle_decay, default_ns, false)?,
        probe: p.probe_deadline,
    }))
}

#[derive(Debug)]
struct Factory {
    cost: LatencyCost,
    probe: bool,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(PeakEwma {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            cost: self.cost,
            probe: self.probe,
        })
    }
}

struct PeakEwma {
    table: WeightTable,
    cost: LatencyCost,
    /// Give re-tries a deadline.
    probe: bool,
}

impl Strategy for PeakEwma {
    #[inline]
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize {
        self.cost.pick(
            members,
            &self.table,
            Choice::P2c,
            req,
            BackendState::peak_ewma,
        )
    }

    /// A deadline when `chosen` is only being re-tried: its peak-EWMA is at least
    /// [`PROBE_RATIO`] × and [`PROBE_GAP_NS`] above the lowest moving average (what an answer
    /// takes, without the peak's pessimism) of the first [`PROBE_SCAN`] other members, the idle
    /// decay has taken at least `1 - 1 /` [`PROBE_RATIO`] of its estimate off (it was chosen
    /// for the decay, not for being the least busy), and it completed an answer within
    /// [`FULL_MEASURE_NS`]. Requests already in flight on it do not matter: with no answer for
    /// 1.5 half-lives they are re-tries too (a second pick during a re-try's deadline would
    /// otherwise wait the full latency). The deadline is `1.25 ×` that average `+`
    /// [`PROBE_MARGIN_NS`], at least [`PROBE_FLOOR_NS`].
    fn probe_deadline(&self, members: &[Member], chosen: &BackendState, now: u64) -> Option<u64> {
        let (v, at) = chosen.peak_ewma()?;
        let answered = chosen.ewma()?.1;
        // The decay takes 3/4 off only after log2(3) = 1.58 half-lives (the others are at most
        // a quarter of it): before 1.5, skip the scan. A member with traffic stops here.
        let idle = now.saturating_sub(at) as f64;
        if !self.probe
            || now.saturating_sub(answered) >= FULL_MEASURE_NS
            || idle < 1.5 * self.cost.idle_half_life_ns
        {
            return None;
        }
        let fastest = members
            .iter()
            .take(PROBE_SCAN)
            .filter(|m| !std::ptr::eq(&*m.state, chosen))
            .filter_map(|m| m.state.ewma())
            .fold(f64::INFINITY, |low, (e, _)| low.min(e));
        let slow = v >= PROBE_RATIO * fastest && v - fastest >= PROBE_GAP_NS;
        let decayed = fastest + (v - fastest) * (-idle / self.cost.idle_half_life_ns).exp2();
        let deadline = (1.25 * fastest + PROBE_MARGIN_NS).max(PROBE_FLOOR_NS);
        (fastest.is_finite() && slow && PROBE_RATIO * decayed <= v).then_some(deadline as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;
    use crate::balance::InflightGuard;

    const MS: u64 = 1_000_000;

    fn strategy(yaml: &str, m: &[Member]) -> Box<dyn Strategy> {
        from_params(&serde_yaml::from_str(yaml).unwrap())
            .unwrap()
            .build(m)
    }

    fn pick(s: &dyn Strategy, m: &[Member], now: u64) -> usize {
        s.pick(m, &PickRequest { hash: 0, now })
    }

    #[test]
    fn avoids_a_slow_backend() {
        let m = members(&[1, 1]);
        m[0].state.record_success(200 * MS, 1);
        m[1].state.record_success(5 * MS, 1);
        let s = strategy("{}", &m);
        for _ in 0..100 {
            assert_eq!(pick(s.as_ref(), &m, 2), 1);
        }
    }

    #[test]
    fn fast_failures_look_slow() {
        let m = members(&[1, 1]);
        // Backend 0 answers 500 in 1 ms, every time; backend 1 answers 200 in 20 ms.
        for t in 1..5 {
            m[0].state.record_failure(t * MS);
        }
        m[1].state.record_success(20 * MS, 4 * MS);
        let s = strategy("{}", &m);
        assert_eq!(pick(s.as_ref(), &m, 5 * MS), 1);
    }

    #[test]
    fn a_backend_with_a_hung_request_is_avoided_before_it_answers() {
        let m = members(&[1, 1]);
        m[0].state.record_success(5 * MS, MS);
        m[1].state.record_success(20 * MS, MS);
        let s = strategy("{}", &m);
        assert_eq!(pick(s.as_ref(), &m, 2 * MS), 0, "5 ms beats 20 ms");
        // A request sent to backend 0 at 2 ms has not answered 300 ms later.
        let _hung = InflightGuard::new(m[0].state.clone(), 2 * MS);
        assert_eq!(pick(s.as_ref(), &m, 302 * MS), 1);
    }

    /// Backend 0 was slow (250 ms) and gets no traffic; backend 1 answers in 5 ms every 2.5 ms
    /// (one request in flight on average, as under load). Returns when 0 is picked again.
    fn first_pick_of_the_idle_backend(idle_decay: &str) -> Option<u64> {
        let m = members(&[1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        let s = strategy(&format!("idle_decay: {idle_decay}"), &m);
        let mut now = MS;
        while now < 10_000 * MS {
            now += MS * 5 / 2;
            let _busy = InflightGuard::new(m[1].state.clone(), now - MS);
            if pick(s.as_ref(), &m, now) == 0 {
                return Some(now);
            }
            m[1].state.record_success(5 * MS, now);
        }
        None
    }

    #[test]
    fn an_idle_slow_backend_is_tried_again_within_a_bounded_time() {
        let at = first_pick_of_the_idle_backend("150ms").expect("never tried again");
        // log2(245 / 5) = 5.6 half-lives: 840 ms; not much before, and not much after.
        assert!(
            (700 * MS..=1_100 * MS).contains(&at),
            "tried again at {} ms",
            at / MS
        );
        let at = first_pick_of_the_idle_backend("50ms").expect("never tried again");
        assert!(
            at <= 400 * MS,
            "a shorter half-life probes sooner: {}",
            at / MS
        );
    }

    #[test]
    fn one_fast_answer_after_a_gap_brings_a_recovered_backend_back() {
        let m = members(&[1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        // Probed 1 s later, it answers in 5 ms: the estimate falls to about 95 ms, and the idle
        // decay brings it level within a few hundred ms more.
        m[0].state.record_success(5 * MS, 1_001 * MS);
        let (v, _) = m[0].state.peak_ewma().unwrap();
        assert!(v < 100e6, "estimate after a fast answer: {} ms", v / 1e6);
        let s = strategy("{}", &m);
        let mut now = 1_001 * MS;
        let mut picked = false;
        while now < 2_001 * MS && !picked {
            now += MS * 5 / 2;
            let _busy = InflightGuard::new(m[1].state.clone(), now - MS);
            picked = pick(s.as_ref(), &m, now) == 0;
            m[1].state.record_success(5 * MS, now);
        }
        assert!(picked, "picked again by {} ms", now / MS);
    }

    #[test]
    fn an_idle_backend_is_tried_again_when_the_others_are_idle_too() {
        let m = members(&[1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        let s = strategy("{}", &m);
        // No load at all: backend 1 never has a request in flight. Within 1/16 of its cost,
        // backend 0 ties, and ties go either way.
        // log2(245 / (5 / 16)) = 9.6 half-lives: 1.44 s.
        assert_eq!(pick(s.as_ref(), &m, 1_400 * MS), 1);
        let later: Vec<usize> = (0..200).map(|_| pick(s.as_ref(), &m, 1_500 * MS)).collect();
        assert!(later.contains(&0) && later.contains(&1), "a fair tie");
    }

    #[test]
    fn an_unmeasured_backend_counts_as_typical() {
        let m = members(&[1, 1]);
        m[0].state.record_success(100 * MS, 1);
        let s = strategy("default_rtt: 10ms", &m);
        // Backend 1 has no samples: it costs what 0 costs, so it wins the tie only sometimes,
        // and once 0 has a request in flight it wins.
        let _g = InflightGuard::new(m[0].state.clone(), 1);
        assert_eq!(pick(s.as_ref(), &m, 2), 1);
    }

    #[test]
    fn a_probe_of_an_idle_slow_backend_has_a_deadline() {
        let m = members(&[1, 1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        m[2].state.record_success(8 * MS, MS);
        let s = strategy("{}", &m);
        // The probe's own slot, as the proxy holds it.
        let own = InflightGuard::new(m[0].state.clone(), 1_000 * MS);
        // Idle for 1 s, 50 x the fastest other: 1.25 x 5 ms + 1 ms.
        assert_eq!(
            s.probe_deadline(&m, &m[0].state, 1_001 * MS),
            Some(7_250_000)
        );
        // Answered 100 ms ago: with a 150 ms half-life the decay took 37% off, not 75%. It
        // is chosen for being less busy than the others, not for its decay.
        assert_eq!(s.probe_deadline(&m, &m[0].state, 101 * MS), None);
        // About 314 ms is the line: after 2 half-lives 5 + 245 / 4 = 66 ms, above 250 / 4.
        assert_eq!(s.probe_deadline(&m, &m[0].state, 301 * MS), None);
        assert!(s.probe_deadline(&m, &m[0].state, 321 * MS).is_some());
        // A second pick while the first re-try waits: a deadline too (it used to get none, and
        // waited the full 250 ms in the balance benchmark).
        let other = InflightGuard::new(m[0].state.clone(), 1_000 * MS);
        assert_eq!(
            s.probe_deadline(&m, &m[0].state, 1_001 * MS),
            Some(7_250_000)
        );
        drop((own, other));
        // The fast members are never probed.
        assert_eq!(s.probe_deadline(&m, &m[1].state, 1_001 * MS), None);
        assert_eq!(s.probe_deadline(&m, &m[2].state, 1_001 * MS), None);
        let off = strategy("probe_deadline: false", &m);
        assert_eq!(off.probe_deadline(&m, &m[0].state, 1_001 * MS), None);
    }

    #[test]
    fn a_probe_needs_a_clear_gap_and_has_a_floor() {
        let m = members(&[1, 1]);
        let s = strategy("{}", &m);
        // Unmeasured: no deadline (nothing says it is slow).
        assert_eq!(s.probe_deadline(&m, &m[0].state, 10 * MS), None);
        m[1].state.record_success(MS / 2, MS);
        // 3 ms against 0.5 ms: 6 x, but only 2.5 ms apart.
        m[0].state.record_success(3 * MS, MS);
        assert_eq!(s.probe_deadline(&m, &m[0].state, 1_000 * MS), None);
        // 30 ms against 0.5 ms: 1.25 x 0.5 + 1 = 1.6 ms, raised to the 5 ms floor.
        m[0].state.record_success(30 * MS, 2 * MS);
        assert_eq!(s.probe_deadline(&m, &m[0].state, 1_000 * MS), Some(5 * MS));
        // 4 x is the line: 15 ms against 5 ms is not a probe.
        let m = members(&[1, 1]);
        m[0].state.record_success(15 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        assert_eq!(s.probe_deadline(&m, &m[0].state, 1_000 * MS), None);
    }

    #[test]
    fn a_probe_past_its_deadline_restarts_the_idle_decay() {
        let m = members(&[1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[0].state.record_still_slow(12 * MS, 1_001 * MS);
        assert_eq!(m[0].state.peak_ewma(), Some((250e6, 1_001 * MS)));
        assert_eq!(
            m[0].state.ewma(),
            Some((250e6, MS)),
            "the last complete answer"
        );
        assert_eq!(m[0].state.failures(), 0, "slow is not failed");
        m[1].state.record_success(MS, MS);
        m[1].state.record_still_slow(12 * MS, 5 * MS);
        assert_eq!(
            m[1].state.peak_ewma(),
            Some((12e6, 5 * MS)),
            "at least what it waited"
        );
    }

    #[test]
    fn a_backend_cut_short_for_10_s_is_re_tried_in_full() {
        // Recovered to 10 ms among 5 ms ones, above every deadline: the cut re-tries would keep
        // its 250 ms estimate for ever. 10 s after its last complete answer it gets none.
        let m = members(&[1, 1]);
        m[0].state.record_success(250 * MS, MS);
        m[1].state.record_success(5 * MS, MS);
        let s = strategy("{}", &m);
        let _own = InflightGuard::new(m[0].state.clone(), 9_000 * MS);
        m[0].state.record_still_slow(7 * MS, 8_000 * MS);
        assert!(s.probe_deadline(&m, &m[0].state, 9_000 * MS).is_some());
        m[0].state.record_still_slow(7 * MS, 9_500 * MS);
        assert_eq!(s.probe_deadline(&m, &m[0].state, 10_001 * MS), None);
    }

    #[test]
    fn zero_idle_decay_is_refused() {
        let e = from_params(&serde_yaml::from_str("idle_decay: 0s").unwrap()).unwrap_err();
        assert!(e.to_string().contains("idle_decay"), "{e}");
    }
}
