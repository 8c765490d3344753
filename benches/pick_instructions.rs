//! Picks for an instruction count: `STRATEGY N SLOW_START ITERATIONS` runs ITERATIONS picks
//! of one strategy over N members (a tenth ramping at half weight when SLOW_START is 1), with
//! the same accept check as `benches/pick.rs`. Run it twice under
//! `valgrind --tool=callgrind` with two iteration counts; the difference in instructions over
//! the difference in iterations is the cost of one pick, free of the machine's noise
//! (`scripts/pick-instructions.sh`).

#[path = "pick_support/setup.rs"]
mod setup;

use portcullis::balance::{
    build_strategy, now_ns, InflightGuard, PickRequest, Selector, StateStore,
};
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [strategy, n, slow, iterations] = &args[..] else {
        eprintln!("usage: pick_instructions STRATEGY N SLOW_START(0|1) ITERATIONS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let iterations: u64 = iterations.parse().expect("ITERATIONS");
    let store = StateStore::new();
    let mut ms = setup::members(n, &store);
    if slow == "1" {
        for m in ms.iter_mut().step_by(10) {
            m.ramp = 0.5;
        }
    }
    let _busy: Vec<InflightGuard> = ms
        .iter()
        .step_by(3)
        .map(|m| InflightGuard::new(m.state.clone(), now_ns()))
        .collect();
    let factory = build_strategy(strategy, &serde_yaml::Value::Null).expect("strategy");
    let selector = Selector::new(ms, factory.as_ref());
    let req = PickRequest {
        hash: crc32fast::hash(b"user-42"),
        now: now_ns(),
    };
    let tried = [u32::MAX; 2];
    let mut sum = 0u64;
    for _ in 0..iterations {
        let picked = selector.pick(black_box(&req), |m| {
            m.state.is_available() && !tried.contains(&m.state.id())
        });
        sum += u64::from(picked.map_or(0, |m| m.weight));
    }
    black_box(sum);
}
