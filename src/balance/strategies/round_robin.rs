//! `round_robin`: each member in turn, ignoring weights.

use crate::balance::{Member, PickRequest, Strategy, StrategyFactory};
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Parameters: none.
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let Params {} = from_value(params)?;
    Ok(Arc::new(RoundRobinFactory))
}

/// Factory for [`RoundRobin`].
#[derive(Debug)]
pub struct RoundRobinFactory;

impl StrategyFactory for RoundRobinFactory {
    fn name(&self) -> &'static str {
        "round_robin"
    }
    fn build(&self, _members: &[Member]) -> Box<dyn Strategy> {
        // Start at a random member so that many small upstreams do not all begin at index 0.
        Box::new(RoundRobin(AtomicUsize::new(fastrand::usize(..1024))))
    }
}

/// A shared counter, modulo the member count.
pub struct RoundRobin(AtomicUsize);

impl Strategy for RoundRobin {
    #[inline]
    fn pick(&self, members: &[Member], _req: &PickRequest) -> usize {
        self.0.fetch_add(1, Relaxed) % members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    #[test]
    fn cycles_through_every_member() {
        let m = members(&[1, 5, 1]);
        let s = RoundRobinFactory.build(&m);
        let req = PickRequest::default();
        let picks: Vec<usize> = (0..6).map(|_| s.pick(&m, &req)).collect();
        for w in picks.windows(3) {
            let mut w = w.to_vec();
            w.sort();
            assert_eq!(w, vec![0, 1, 2]);
        }
    }
}
