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

use super::latency::LatencyCost;
use super::Choice;
use crate::balance::sample::WeightTable;
use crate::balance::{BackendState, Member, PickRequest, Strategy, StrategyFactory};
use crate::config::duration::Dur;
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

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
}

fn default_rtt() -> Dur {
    Dur::millis(30)
}

fn default_idle_decay() -> Dur {
    Dur::millis(150)
}

/// Parameters: `default_rtt: <duration>` (default `30ms`), `idle_decay: <duration>`
/// (default `150ms`, greater than 0).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    let default_ns = p.default_rtt.0.as_nanos() as f64;
    Ok(Arc::new(Factory {
        cost: LatencyCost::new(p.idle_decay, default_ns, false)?,
    }))
}

#[derive(Debug)]
struct Factory {
    cost: LatencyCost,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(PeakEwma {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            cost: self.cost,
        })
    }
}

struct PeakEwma {
    table: WeightTable,
    cost: LatencyCost,
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
    fn zero_idle_decay_is_refused() {
        let e = from_params(&serde_yaml::from_str("idle_decay: 0s").unwrap()).unwrap_err();
        assert!(e.to_string().contains("idle_decay"), "{e}");
    }
}
