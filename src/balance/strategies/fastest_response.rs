//! `fastest_response`: lowest `decayed latency × (1 + in-flight) / weight` (nginx `least_time`).
//!
//! The latency is a time-weighted moving average of response times (time constant 1 s) that
//! *halves for every `decay` without a new sample*. A backend that was slow and then stopped getting traffic therefore looks
//! faster and faster until it is tried again: it can never be starved for good (the failure
//! mode of an undecayed mean, traefik#12306). Unmeasured backends score 0 and are tried first.
//! Default: power of two choices; `choice: all` scans every member.

use super::{lowest_score, Choice};
use crate::balance::sample::WeightTable;
use crate::balance::{Member, PickRequest, Strategy, StrategyFactory};
use crate::config::duration::Dur;
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `p2c` (default) or `all`.
    #[serde(default)]
    choice: Choice,
    /// Half-life of an unrefreshed latency estimate. Default `5s`.
    #[serde(default = "default_decay")]
    decay: Dur,
}

fn default_decay() -> Dur {
    Dur::secs(5)
}

/// Parameters: `choice: p2c | all`, `decay: <duration>` (default `5s`).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    if p.decay.0.is_zero() {
        return Err(PathError::at("decay", "must be greater than 0 (e.g. 5s)"));
    }
    Ok(Arc::new(Factory {
        choice: p.choice,
        half_life_ns: p.decay.0.as_nanos() as f64,
    }))
}

#[derive(Debug)]
struct Factory {
    choice: Choice,
    half_life_ns: f64,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "fastest_response"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(FastestResponse {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            choice: self.choice,
            half_life_ns: self.half_life_ns,
        })
    }
}

struct FastestResponse {
    table: WeightTable,
    choice: Choice,
    half_life_ns: f64,
}

impl Strategy for FastestResponse {
    #[inline]
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize {
        let hl = self.half_life_ns;
        lowest_score(members, &self.table, self.choice, req, |m, r| {
            let latency = m.state.decayed_ewma_ns(r.now, hl);
            latency * (1.0 + f64::from(m.state.inflight())) / f64::from(m.weight)
        })
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
    fn a_once_slow_backend_is_tried_again_after_it_decays() {
        let m = members(&[1, 1]);
        m[0].state.record_success(400_000_000, 1); // slow once
        m[1].state.record_success(10_000_000, 1);
        let f = from_params(&serde_yaml::from_str("{choice: all, decay: 1s}").unwrap()).unwrap();
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
        assert!(picked_slow, "the slow backend must be explored again");
    }
}
