//! The pick of every strategy at 3, 16 (the largest group `choice: auto` scans in full) and 100
//! backends: `Selector::pick` with the same accept check the proxy uses (available and not yet
//! tried). Target: <= 100 ns median. Each default strategy is also measured at 100 backends
//! with slow start active (`<name>+slow_start`): a tenth of the members ramping at half weight.
//!
//! `probe_deadline/adaptive` measures the check the proxy runs once per request after the pick
//! of `adaptive` (`Selector::probe_deadline`): on a member with traffic (`traffic`: returns
//! after the idle test) and on an idle member that was slow (`re-try`: reads up to 16 other
//! members' averages and computes a deadline).
//!
//! `cargo bench --bench pick` (or `make bench`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::balance::registry::STRATEGIES;
use std::time::Duration;

#[path = "pick_support/setup.rs"]
mod setup;

/// Strategy configs to measure: every registered strategy with defaults, plus the full-scan
/// variants of the scoring strategies.
fn variants() -> Vec<(String, serde_yaml::Value)> {
    let mut v: Vec<(String, serde_yaml::Value)> = STRATEGIES
        .iter()
        .map(|(n, _)| (n.to_string(), serde_yaml::Value::Null))
        .collect();
    for (n, choice) in [
        ("least_conn", "all"),
        ("least_conn", "p2c"),
        ("fastest_response", "all"),
    ] {
        v.push((
            format!("{n}(choice={choice})"),
            serde_yaml::from_str(&format!("choice: {choice}")).unwrap(),
        ));
    }
    v
}

fn bench_picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let ramping = STRATEGIES
        .iter()
        .map(|(n, _)| (format!("{n}+slow_start"), serde_yaml::Value::Null));
    for (label, params) in variants().into_iter().chain(ramping) {
        let kind = label.split(['(', '+']).next().unwrap().to_string();
        let slow_start = label.ends_with("+slow_start");
        let sizes: &[usize] = if slow_start { &[100] } else { &[3, 16, 100] };
        for &n in sizes {
            let setup::Bench { selector, req, .. } = &setup::bench(&kind, &params, n, slow_start);
            group.bench_with_input(BenchmarkId::new(&label, n), &n, |b, _| {
                b.iter(|| {
                    let picked = selector.pick(black_box(req), setup::accept);
                    black_box(picked.map(|m| m.weight))
                })
            });
        }
    }
    group.finish();
}

fn bench_probe_deadline(c: &mut Criterion) {
    let mut group = c.benchmark_group("probe_deadline");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &n in &[3, 16, 100] {
        let setup::Bench { selector, req, .. } =
            &setup::bench("adaptive", &serde_yaml::Value::Null, n, false);
        // Member 1 (not held busy): a 250 ms answer 2 s ago, idle since, so the decay chose it.
        let slow = &selector.members()[1].state;
        slow.record_success(250_000_000, req.now - 2_000_000_000);
        assert!(selector.probe_deadline(slow, req.now).is_some());
        let busy = &selector.members()[0].state;
        assert!(selector.probe_deadline(busy, req.now).is_none());
        for (label, s) in [("adaptive/traffic", busy), ("adaptive/re-try", slow)] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| selector.probe_deadline(black_box(s), black_box(req.now)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_picks, bench_probe_deadline);
criterion_main!(benches);
