//! `fastest_response`: lowest `latency × (1 + in-flight) / weight` (nginx `least_time`).
//!
//! The latency is a time-weighted moving average of response times (time constant 300 ms;
//! failures count as 1 s). The estimate of a backend that gets no traffic decays toward its
//! competitor's with half-life `idle_decay`, so a backend that was slow is tried again
//! within a bounded time and can never be starved for good (the failure mode of an undecayed
//! mean, traefik#12306); an unmeasured backend counts as typical, not as free; and the mean
//! age of outstanding requests counts once it exceeds the estimate (see `latency.rs`).
//! Default: power of two choices; `choice: all` scans every member, `auto` scans up to 16.

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
    /// `p2c` (default), `all` or `auto`.
    #[serde(default)]
    choice: Choice,
    /// Half-life with which an idle backend's estimate moves toward its competitor's.
    /// Default `150ms`. (`decay` is the name it had before it decayed toward the competitor.)
    #[serde(default = "default_decay", alias = "decay")]
    idle_decay: Dur,
}

fn default_decay() -> Dur {
    Dur::millis(150)
}

/// Parameters: `choice: p2c | all | auto`, `idle_decay: <duration>` (default `150ms`, > 0).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    Ok(Arc::new(Factory {
        choice: p.choice,
        // default_ns is only compared with itself: with no samples anywhere, in-flight
        // counts decide.
        cost: LatencyCost::new(p.idle_decay, 1e6, true)?,
    }))
}

#[derive(Debug)]
struct Factory {
    choice: Choice,
    cost: LatencyCost,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "fastest_response"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(FastestResponse {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            choice: self.choice,
            cost: self.cost,
        })
    }
}

struct FastestResponse {
    table: WeightTable,
    choice: Choice,
    cost: LatencyCost,
}

impl Strategy for FastestResponse {
    #[inline]
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize {
        self.cost
            .pick(members, &self.table, self.choice, req, BackendState::ewma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    #[test]
    fn prefers_the_faster_backend() {
        let m = members(&[1, 1, 1]);
        m[0].state.record_success(50_000_000, 1);
        m[1].state.record_success(1_000_000, 1);
        m[2].state.record_success(20_000_000, 1);
        let f = from_params(&serde_yaml::from_str("choice: all").unwrap()).unwrap();
        let s = f.build(&m);
        assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 2 }), 1);
    }

    #[test]
    fn an_unmeasured_backend_is_not_free() {
        // Two members, one measured at 10 ms, one unmeasured with a request in flight: the
        // unmeasured one costs 10 ms x 2 and loses (an unmeasured 0 would win every pick).
        let m = members(&[1, 1]);
        m[0].state.record_success(10_000_000, 1);
        let _g = crate::balance::InflightGuard::new(m[1].state.clone(), 1);
        let f = from_params(&serde_yaml::from_str("choice: all").unwrap()).unwrap();
        let s = f.build(&m);
        assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 2 }), 0);
    }

    #[test]
    fn a_once_slow_backend_is_tried_again_after_it_decays() {
        let m = members(&[1, 1]);
        m[0].state.record_success(400_000_000, 1); // slow once
        m[1].state.record_success(10_000_000, 1);
        let f = from_params(&serde_yaml::from_str("{choice: all, idle_decay: 200ms}").unwrap())
            .unwrap();
        let s = f.build(&m);
        assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 2 }), 1);
        // Backend 1 keeps getting fresh samples; backend 0 gets none and decays.
        let mut now = 2;
        let mut picked_slow = false;
        for _ in 0..100 {
            now += 100_000_000; // 100 ms per step
            if s.pick(&m, &PickRequest { hash: 0, now }) == 0 {
                picked_slow = true;
                break;
            }
            m[1].state.record_success(10_000_000, now);
        }
        // log2(390 / (10 / 16)) = 9.3 half-lives: about 1.9 s, then ties go either way.
        assert!(picked_slow, "the slow backend must be explored again");
        assert!(
            (1_800_000_000..=4_000_000_000).contains(&now),
            "explored at {} ms",
            now / 1_000_000
        );
    }
}
