//! The built-in strategies. Each file: typed parameters, a factory, the strategy, its tests.

pub mod adaptive;
pub mod consistent_hash;
pub mod fastest_response;
mod latency;
pub mod least_conn;
pub mod random;
pub mod ring;
pub mod round_robin;
pub mod weighted_round_robin;

use super::Member;
use serde::Deserialize;

/// How many candidates a scoring strategy compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Power of two choices: two candidates drawn by weight, without replacement.
    #[default]
    P2c,
    /// Scan every member.
    All,
    /// Scan every member up to [`SCAN_UP_TO`] members, power of two choices above.
    Auto,
}

impl Choice {
    /// Whether a pick among `n` members scans them all.
    #[inline]
    pub fn scans(self, n: usize) -> bool {
        match self {
            Choice::All => true,
            Choice::Auto => n <= SCAN_UP_TO,
            Choice::P2c => false,
        }
    }
}

/// Largest group that [`Choice::Auto`] scans in full. The scan of 16 members stays within the
/// 100 ns pick budget (76-85 ns against P2C's 49 ns; 553 ns at 100 members: `cargo bench
/// --bench pick`, docs/performance.md) and sees the whole group instead of two of it.
pub const SCAN_UP_TO: usize = 16;

/// The member with the lowest `score`, scanning all; ties are broken uniformly at random
/// (the k-th member seen with the best score replaces the choice with probability 1/k).
/// `members` must not be empty.
#[inline]
pub(crate) fn scan_lowest<K: PartialOrd>(
    members: &[Member],
    score: impl Fn(usize, &Member) -> K,
) -> usize {
    let mut best = 0;
    let mut best_score = score(0, &members[0]);
    let mut ties = 1u32;
    for (idx, m) in members.iter().enumerate().skip(1) {
        let s = score(idx, m);
        if s < best_score {
            best = idx;
            best_score = s;
            ties = 1;
        } else if s == best_score {
            ties += 1;
            if fastrand::u32(..ties) == 0 {
                best = idx;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scan_breaks_ties_uniformly() {
        let m = test_support::members(&[1, 1, 1, 1]);
        // Members 1 and 3 tie for the lowest score; 0 and 2 score higher.
        let score = |_: usize, m: &Member| {
            if m.state.addr().port() % 2 == 0 {
                0.0
            } else {
                1.0
            }
        };
        let mut counts = [0u32; 4];
        for _ in 0..20_000 {
            counts[scan_lowest(&m, score)] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0);
        let share = f64::from(counts[1]) / 20_000.0;
        assert!((share - 0.5).abs() < 0.02, "{counts:?}");
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
