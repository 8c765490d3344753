//! The built-in strategies. Each file: typed parameters, a factory, the strategy, its tests.

pub mod adaptive;
pub mod consistent_hash;
pub mod fastest_response;
pub mod least_conn;
pub mod random;
pub mod ring;
pub mod round_robin;
pub mod weighted_round_robin;

use super::sample::WeightTable;
use super::{Member, PickRequest};
use serde::Deserialize;

/// How many candidates a scoring strategy compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Power of two choices: two candidates drawn by weight, without replacement (default).
    #[default]
    P2c,
    /// Scan every member.
    All,
}

/// Pick the member with the lowest `score`: P2C over weighted draws, or a full scan that
/// starts at a random offset so ties do not always favour the first member.
#[inline]
pub(crate) fn lowest_score(
    members: &[Member],
    table: &WeightTable,
    choice: Choice,
    req: &PickRequest,
    score: impl Fn(&Member, &PickRequest) -> f64,
) -> usize {
    let n = members.len();
    if n == 1 {
        return 0;
    }
    match choice {
        Choice::P2c => {
            let (a, b) = table.draw_two();
            if score(&members[b], req) < score(&members[a], req) {
                b
            } else {
                a
            }
        }
        Choice::All => {
            let start = fastrand::usize(..n);
            let mut best = start;
            let mut best_score = score(&members[start], req);
            for i in 1..n {
                let idx = (start + i) % n;
                let s = score(&members[idx], req);
                if s < best_score {
                    best = idx;
                    best_score = s;
                }
            }
            best
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::balance::{Member, StateStore};
    use pingora::lb::Backend;

    /// Members on 127.0.0.1 ports 1.. with the given weights (fresh store).
    pub fn members(weights: &[u32]) -> Vec<Member> {
        let store = StateStore::new();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let b =
                    Backend::new_with_weight(&format!("127.0.0.1:{}", i + 1), *w as usize).unwrap();
                Member::new(b, &store).unwrap()
            })
            .collect()
    }
}
