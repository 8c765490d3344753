//! The member lists the pick benchmarks use (shared by `pick` and `pick_instructions`).

use pingora::lb::Backend;
use portcullis::balance::{
    build_strategy, now_ns, InflightGuard, Member, PickRequest, Selector, StateStore,
};

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

/// What one benchmarked pick runs on: the selector, the request, and the in-flight slots
/// that give a third of the members some load (held as long as the bench runs).
pub struct Bench {
    pub selector: Selector,
    pub req: PickRequest,
    _busy: Vec<InflightGuard>,
}

/// Strategy `kind` with `params` over `n` members, a tenth ramping at half weight when
/// `slow_start`.
pub fn bench(kind: &str, params: &serde_yaml::Value, n: usize, slow_start: bool) -> Bench {
    let store = StateStore::new();
    let mut ms = members(n, &store);
    if slow_start {
        for m in ms.iter_mut().step_by(10) {
            m.ramp = 0.5;
        }
    }
    // A little load on a third of the backends, so scores differ.
    let busy = ms
        .iter()
        .step_by(3)
        .map(|m| InflightGuard::new(m.state.clone(), now_ns()))
        .collect();
    let factory = build_strategy(kind, params).expect("strategy");
    Bench {
        selector: Selector::new(ms, factory.as_ref()),
        req: PickRequest {
            hash: crc32fast::hash(b"user-42"),
            now: now_ns(),
        },
        _busy: busy,
    }
}

/// The proxy's accept check: available and not tried yet.
#[inline]
pub fn accept(m: &Member) -> bool {
    const TRIED: [u32; 2] = [u32::MAX; 2];
    m.state.is_available() && !TRIED.contains(&m.state.id())
}
