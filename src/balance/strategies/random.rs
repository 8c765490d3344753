//! `random`: a member drawn with probability proportional to its weight.

use crate::balance::sample::WeightTable;
use crate::balance::{Member, PickRequest, Strategy, StrategyFactory};
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Parameters: none (weights come from the backends).
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let Params {} = from_value(params)?;
    Ok(Arc::new(Factory))
}

#[derive(Debug)]
struct Factory;

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        "random"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        Box::new(WeightedRandom(WeightTable::new(
            members.iter().map(|m| m.weight),
        )))
    }
}

struct WeightedRandom(WeightTable);

impl Strategy for WeightedRandom {
    #[inline]
    fn pick(&self, _members: &[Member], _req: &PickRequest) -> usize {
        self.0.draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    #[test]
    fn follows_weights() {
        let m = members(&[1, 1, 2]);
        let s = Factory.build(&m);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[s.pick(&m, &PickRequest::default())] += 1;
        }
        let share = f64::from(counts[2]) / 40_000.0;
        assert!((share - 0.5).abs() < 0.02, "{counts:?}");
    }
}
