//! Picks for an instruction count: `STRATEGY N SLOW_START ITERATIONS` runs ITERATIONS picks
//! of one strategy over N members (a tenth ramping at half weight when SLOW_START is 1), with
//! the same accept check as `benches/pick.rs`. Run it twice under
//! `valgrind --tool=callgrind` with two iteration counts; the difference in instructions over
//! the difference in iterations is the cost of one pick, free of the machine's noise
//! (`scripts/pick-instructions.sh`).

#[path = "pick_support/setup.rs"]
mod setup;

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
    let b = setup::bench(strategy, &serde_yaml::Value::Null, n, slow == "1");
    let mut sum = 0u64;
    for _ in 0..iterations {
        let picked = b.selector.pick(black_box(&b.req), setup::accept);
        sum += u64::from(picked.map_or(0, |m| m.weight));
    }
    black_box(sum);
}
