//! The pick path allocates nothing: every strategy, 3 and 100 backends, 10 000 picks each,
//! counted by a global allocator that tallies allocations made on this thread.

use pingora::lb::Backend;
use portcullis::balance::registry::STRATEGIES;
use portcullis::balance::{build_strategy, now_ns, Member, PickRequest, Selector, StateStore};

#[path = "support/alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

#[test]
fn picking_allocates_nothing() {
    let params = [
        serde_yaml::Value::Null,
        serde_yaml::from_str("choice: all").unwrap(),
    ];
    for (name, _) in STRATEGIES {
        for p in &params {
            let Ok(factory) = build_strategy(name, p) else {
                continue;
            };
            for n in [3usize, 100] {
                let store = StateStore::new();
                let members: Vec<Member> = (0..n)
                    .map(|i| {
                        let b = Backend::new_with_weight(
                            &format!("10.1.{}.{}:80", i / 200, i % 200 + 1),
                            1 + i % 4,
                        )
                        .unwrap();
                        let m = Member::new(b, &store).unwrap();
                        m.state
                            .record_success(1_000_000 + i as u64 * 1000, now_ns());
                        m
                    })
                    .collect();
                let selector = Selector::new(members, factory.as_ref());
                let tried = [selector.members()[0].state.id()];
                let mut picks = 0u64;
                // Warm up (thread-local RNG state, lazy statics).
                for _ in 0..100 {
                    selector.pick(
                        &PickRequest {
                            hash: 7,
                            now: now_ns(),
                        },
                        |_| true,
                    );
                }
                let before = allocations();
                for i in 0..10_000u32 {
                    let req = PickRequest {
                        hash: i.wrapping_mul(2_654_435_761),
                        now: now_ns(),
                    };
                    if selector
                        .pick(&req, |m| {
                            m.state.is_available() && !tried.contains(&m.state.id())
                        })
                        .is_some()
                    {
                        picks += 1;
                    }
                }
                let made = allocations() - before;
                assert_eq!(
                    made, 0,
                    "{name} {p:?} with {n} backends allocated {made} times"
                );
                assert_eq!(picks, 10_000);
            }
        }
    }
}
