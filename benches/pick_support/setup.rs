//! The member lists the pick benchmarks use (shared by `pick` and `pick_instructions`).

use pingora::lb::Backend;
use portcullis::balance::{now_ns, Member, StateStore};

/// `n` members with weights 1-3 and latency samples from 1 to 6 ms, so that every strategy
/// has something to compare.
pub fn members(n: usize, store: &StateStore) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let b = Backend::new_with_weight(
                &format!("10.0.{}.{}:8080", i / 250, i % 250 + 1),
                1 + i % 3,
            )
            .unwrap();
            let m = Member::new(b, store).unwrap();
            // Give latency-aware strategies something to compare.
            m.state
                .record_success(1_000_000 + (i as u64 * 7919) % 5_000_000, now_ns());
            m
        })
        .collect()
}
