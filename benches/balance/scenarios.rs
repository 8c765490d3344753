//! The scenarios: how many backends, how they behave, how much load, how many gateways.

use portcullis::devserver::DevState;
use std::sync::Arc;
use std::time::Duration;

/// One scenario. Backend `i` is named `b<i>`; backend 0 is the one that misbehaves.
pub struct Scenario {
    pub id: u8,
    pub name: &'static str,
    pub backends: usize,
    /// Offered load, requests per second (open loop).
    pub rate: f64,
    /// Gateway processes balancing the same backends independently.
    pub instances: usize,
    /// Backend behaviour from the start.
    pub setup: fn(&[Arc<DevState>]),
    /// Backend behaviour from half-time on, if it changes.
    pub halfway: Option<fn(&[Arc<DevState>])>,
}

/// Answers, health checks included, take `ms` (a slow host is slow for everything).
fn delay(s: &DevState, ms: u64) {
    s.set_delay(Duration::from_millis(ms));
    s.set_health_delay(Duration::from_millis(ms));
}

fn all_fast(b: &[Arc<DevState>]) {
    b.iter().for_each(|s| delay(s, 5));
}

fn first_slow(b: &[Arc<DevState>]) {
    all_fast(b);
    delay(&b[0], 250);
}

fn first_at_2s(b: &[Arc<DevState>]) {
    all_fast(b);
    delay(&b[0], 2_000);
}

/// b0 answers 500 in 1 ms; its health check still passes (the black hole case).
fn first_fails_fast(b: &[Arc<DevState>]) {
    all_fast(b);
    delay(&b[0], 1);
    b[0].set_status(500);
}

/// Each backend serves one request at a time, in 10 ms on average (exponential): 100
/// requests per second each.
fn one_at_a_time(b: &[Arc<DevState>]) {
    for s in b {
        delay(s, 10);
        s.set_exponential_delay(true);
        s.set_capacity(1);
    }
}

/// 10 ms per request on average (exponential), concurrency 1, 1, 2, 2, 4: 100, 100, 200,
/// 200, 400 per second.
fn heterogeneous(b: &[Arc<DevState>]) {
    for (s, cap) in b.iter().zip([1, 1, 2, 2, 4]) {
        delay(s, 10);
        s.set_exponential_delay(true);
        s.set_capacity(cap);
    }
}

/// Every scenario of issue 15, plus the all-fast baseline (0).
pub fn all() -> Vec<Scenario> {
    let s = |id, name, backends, rate, setup| Scenario {
        id,
        name,
        backends,
        rate,
        instances: 1,
        setup,
        halfway: None,
    };
    vec![
        s(0, "all fast: 5 backends at 5 ms", 5, 400.0, all_fast),
        s(
            1,
            "one slow: b0 at 250 ms (50x), 4 at 5 ms",
            5,
            400.0,
            first_slow,
        ),
        Scenario {
            halfway: Some(all_fast),
            ..s(
                2,
                "recovery: b0 at 250 ms, then 5 ms from half-time",
                5,
                400.0,
                first_slow,
            )
        },
        s(
            3,
            "Linkerd's shape: 11 backends at 5 ms, b0 at 2 s",
            11,
            400.0,
            first_at_2s,
        ),
        s(
            4,
            "b0 answers 500 in 1 ms, 4 at 5 ms",
            5,
            400.0,
            first_fails_fast,
        ),
        s(
            5,
            "near capacity: 5 x (1 at a time, exp. 10 ms) = 500/s, offered 400/s",
            5,
            400.0,
            one_at_a_time,
        ),
        s(
            6,
            "heterogeneous: concurrency 1,1,2,2,4, exp. 10 ms = 1000/s, offered 600/s",
            5,
            600.0,
            heterogeneous,
        ),
        Scenario {
            instances: 2,
            ..s(
                7,
                "two gateways, same backends as 5, 400/s split between them",
                5,
                400.0,
                one_at_a_time,
            )
        },
    ]
}
