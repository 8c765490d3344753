//! `weighted_round_robin`: nginx's smooth weighted round robin, precomputed.
//!
//! Each step adds every member's weight to its running value, picks the largest, and
//! subtracts the total from the winner. Weights 5,1,1 give `a a b a c a a`: never 5 in a row.
//! The sequence of one full cycle is computed when the selector is built, so a pick is one
//! atomic increment and one array read. Cycles longer than 65536 picks are scaled down
//! proportionally (weights stay within 0.1% of the configured ratio).

use crate::balance::{Member, PickRequest, Strategy, StrategyFactory};
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

const MAX_CYCLE: u64 = 65_536;

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
        "weighted_round_robin"
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        let schedule = smooth_schedule(&weights);
        let start = if schedule.is_empty() {
            0
        } else {
            fastrand::usize(..schedule.len())
        };
        Box::new(SmoothWrr {
            schedule,
            next: AtomicUsize::new(start),
        })
    }
}

struct SmoothWrr {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl Strategy for SmoothWrr {
    #[inline]
    fn pick(&self, members: &[Member], _req: &PickRequest) -> usize {
        let i = self.next.fetch_add(1, Relaxed) % self.schedule.len().max(1);
        self.schedule.get(i).map_or(0, |&m| m as usize) % members.len()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One full cycle of nginx's smooth weighted round robin over `weights`.
pub fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    if weights.is_empty() {
        return Box::new([]);
    }
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w.max(1))));
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x.max(1)) / g).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_CYCLE {
        for x in &mut w {
            *x = ((*x * MAX_CYCLE) / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    #[test]
    fn matches_nginx_sequence_for_5_1_1() {
        assert_eq!(&*smooth_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn never_sends_five_in_a_row_and_keeps_ratio() {
        let m = members(&[5, 1, 1]);
        let s = Factory.build(&m);
        let req = PickRequest::default();
        let picks: Vec<usize> = (0..7000).map(|_| s.pick(&m, &req)).collect();
        let longest = picks
            .chunk_by(|a, b| a == b)
            .map(|c| c.len())
            .max()
            .unwrap();
        assert!(longest < 5, "longest run {longest}");
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5000);
    }

    #[test]
    fn large_weights_are_scaled_not_lost() {
        let weights: Vec<u32> = (0..100).map(|i| 1000 - i).collect();
        let s = smooth_schedule(&weights);
        assert!(s.len() as u64 <= MAX_CYCLE + 100);
        let first = s.iter().filter(|&&m| m == 0).count() as f64;
        let last = s.iter().filter(|&&m| m == 99).count() as f64;
        assert!((first / last - 1000.0 / 901.0).abs() < 0.01);
    }
}
