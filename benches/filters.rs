//! Hot paths of the built-in filters. Targets: <= 100 ns each.
//!
//! * `rate_limit/check`: one GCRA check on a keyed limiter (client IP), limit far above the
//!   load, so every check passes (the common case).
//! * `circuit_breaker/accept`: the accept path for a backend whose circuit is closed (map
//!   lookup + state load), and for an unknown backend.
//!
//! `cargo bench --bench filters`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::plugin::testing::{TestEnv, TestRequest};
use portcullis::plugin::{Candidate, Filter, Outcome};
use portcullis_circuit_breaker::CircuitBreaker;
use portcullis_rate_limit::RateLimit;
use std::net::SocketAddr;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let env = TestEnv::new(&["pool"]);
    let mut group = c.benchmark_group("filters");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    let rl = RateLimit::build(
        &serde_yaml::from_str("{rate: 1000000000, per: second}").unwrap(),
        &env.context("bench"),
    )
    .unwrap();
    let reqs: Vec<TestRequest> = (0..64)
        .map(|i| TestRequest::get("/").from_ip(&format!("10.0.0.{i}")))
        .collect();
    let mut i = 0usize;
    group.bench_function("rate_limit/check", |b| {
        b.iter(|| {
            i = (i + 1) % reqs.len();
            black_box(rl.check(&reqs[i].view("bench")).is_ok())
        })
    });

    let cb = CircuitBreaker::build(
        &serde_yaml::from_str("{consecutive_failures: 5}").unwrap(),
        &env.context("bench"),
    )
    .unwrap();
    let addrs: Vec<SocketAddr> = (1..=16)
        .map(|i| format!("10.1.0.{i}:80").parse().unwrap())
        .collect();
    for a in &addrs {
        // Make the breaker know every backend (closed).
        cb.on_outcome(&Outcome {
            route: "bench",
            upstream: "pool",
            upstream_size: addrs.len(),
            backend: Some(*a),
            status: 200,
            latency: Duration::from_millis(1),
            error: None,
            retried: false,
            attempt: 1,
        });
    }
    let mut j = 0usize;
    group.bench_function("circuit_breaker/accept", |b| {
        b.iter(|| {
            j = (j + 1) % addrs.len();
            black_box(cb.accept_backend(&Candidate {
                addr: addrs[j],
                upstream: "pool",
                upstream_size: addrs.len(),
            }))
        })
    });
    let unknown: SocketAddr = "10.9.9.9:80".parse().unwrap();
    group.bench_function("circuit_breaker/accept_unknown", |b| {
        b.iter(|| {
            black_box(cb.accept_backend(&Candidate {
                addr: unknown,
                upstream: "pool",
                upstream_size: 16,
            }))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
