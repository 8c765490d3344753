//! `adaptive`: Peak-EWMA latency × (in-flight + 1), power of two choices (Finagle, Linkerd,
//! tower). A slow response raises a backend's estimate at once; it comes down with a 10 s time
//! constant. Failures count as 1 s responses, so a backend that fails fast does not attract
//! traffic. A backend without samples is assumed to answer in `default_rtt`.

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
    /// RTT assumed for a backend with no samples yet. Default `30ms` (linkerd2-proxy).
    #[serde(default = "default_rtt")]
    default_rtt: Dur,
}

fn default_rtt() -> Dur {
    Dur::millis(30)
}

/// Parameters: `default_rtt: <duration>` (default `30ms`).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    Ok(Arc::new(Factory {
        default_rtt_ns: p.default_rtt.0.as_nanos() as f64,
    }))
}

#[derive(Debug)]
struct Factory {
    default_rtt_ns: f64,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(PeakEwma {
            table: WeightTable::new(members.iter().map(|m| m.weight)),
            default_rtt_ns: self.default_rtt_ns,
        })
    }
}

struct PeakEwma {
    table: WeightTable,
    default_rtt_ns: f64,
}

impl Strategy for PeakEwma {
    #[inline]
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize {
        let default_rtt = self.default_rtt_ns;
        lowest_score(members, &self.table, Choice::P2c, req, |m, r| {
            let rtt = m.state.peak_ewma_ns(r.now).unwrap_or(default_rtt);
            rtt * (f64::from(m.state.inflight()) + 1.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    #[test]
    fn avoids_a_slow_backend() {
        let m = members(&[1, 1]);
        m[0].state.record_success(200_000_000, 1);
        m[1].state.record_success(5_000_000, 1);
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        for _ in 0..100 {
            assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 2 }), 1);
        }
    }

    #[test]
    fn failures_look_slow() {
        let m = members(&[1, 1]);
        m[0].state.record_success(5_000_000, 1);
        m[0].state.record_failure(2);
        m[1].state.record_success(20_000_000, 1);
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 3 }), 1);
    }

    #[test]
    fn unmeasured_backends_use_the_default_rtt() {
        let m = members(&[1, 1]);
        m[0].state.record_success(100_000_000, 1); // 100 ms measured
        let s = from_params(&serde_yaml::from_str("default_rtt: 10ms").unwrap())
            .unwrap()
            .build(&m);
        assert_eq!(s.pick(&m, &PickRequest { hash: 0, now: 2 }), 1);
    }
}
