//! `circuit_breaker`: per-backend circuit breaking (closed → open → half-open → closed).
//!
//! ```yaml
//! - kind: circuit_breaker
//!   consecutive_failures: 5     # open after this many failures in a row (0 = off; default 5)
//!   failure_ratio: 0.5          # or: open when failures / requests reach this over `window`...
//!   min_requests: 20            # ...once at least this many requests were seen (default 20)
//!   window: 10s                 # rolling window for the ratio (default 10s)
//!   failure_statuses: [502, 503] # statuses that count as failures (default: every 5xx)
//!   open_time: 5s               # first open period (default 5s); doubles with each repeated trip...
//!   max_open_time: 5m           # ...up to this (default 5m)
//!   half_open_requests: 1       # probe requests let through after the open period (default 1)
//!   max_ejection_percent: 50    # at most this share of an upstream's backends open at once (default 50)
//! ```
//!
//! Failures are connect errors, timeouts and the configured statuses; a 4xx is never a failure.
//! An open circuit takes the backend out of its upstream's rotation (the gateway's control
//! plane publishes a member list without it, for every route of that upstream, as Envoy's
//! outlier detection does), so the strategy balances over the others: a backend's outage
//! spreads its share evenly instead of doubling one neighbour's. When the open period ends
//! the backend rejoins and the breaker turns
//! half-open and lets `half_open_requests` probes through: if they all succeed it closes, if
//! one fails it opens again for twice as long (capped). A trip that would open more than
//! `max_ejection_percent` of an upstream (at least one backend) is refused, so the breaker
//! never removes the whole group; if every candidate is open anyway the client gets `503`.
//! Every transition is logged and counted (`portcullis_circuit_breaker_transitions_total`),
//! and `portcullis_circuit_breaker_state` shows 0 closed, 1 open, 2 half-open. Breaker state
//! survives reloads.

mod breaker;

pub use breaker::{Breaker, BreakerPolicy, State};

use arc_swap::ArcSwap;
use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::prometheus::{IntCounterVec, IntGaugeVec};
use portcullis_plugin::{
    BuildContext, Candidate, Dur, Ejector, Filter, FilterError, Hooks, Outcome,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_consecutive")]
    consecutive_failures: u32,
    #[serde(default)]
    failure_ratio: Option<f64>,
    #[serde(default = "default_min_requests")]
    min_requests: u32,
    #[serde(default = "default_window")]
    window: Dur,
    #[serde(default)]
    failure_statuses: Vec<u16>,
    #[serde(default = "default_open_time")]
    open_time: Dur,
    #[serde(default = "default_max_open_time")]
    max_open_time: Dur,
    #[serde(default = "default_half_open")]
    half_open_requests: u32,
    #[serde(default = "default_max_ejection")]
    max_ejection_percent: u32,
}

fn default_consecutive() -> u32 {
    5
}
fn default_min_requests() -> u32 {
    20
}
fn default_window() -> Dur {
    Dur::secs(10)
}
fn default_open_time() -> Dur {
    Dur::secs(5)
}
fn default_max_open_time() -> Dur {
    Dur::secs(300)
}
fn default_half_open() -> u32 {
    1
}
fn default_max_ejection() -> u32 {
    50
}

/// A cheap hasher for socket addresses (the map is read on every candidate check).
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
}

type AddrMap<V> = HashMap<SocketAddr, V, BuildHasherDefault<AddrHasher>>;

/// Every breaker of one filter scope, by backend address. Survives reloads.
#[derive(Default)]
struct Breakers {
    map: ArcSwap<AddrMap<Arc<Breaker>>>,
    insert: Mutex<()>,
}

impl Breakers {
    fn get(&self, addr: &SocketAddr) -> Option<Arc<Breaker>> {
        self.map.load().get(addr).cloned()
    }

    fn get_or_insert(&self, addr: SocketAddr, upstream: &str) -> Arc<Breaker> {
        if let Some(b) = self.get(&addr) {
            return b;
        }
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = self.get(&addr) {
            return b;
        }
        let b = Arc::new(Breaker::new(upstream));
        let mut next = AddrMap::clone(&self.map.load());
        next.insert(addr, Arc::clone(&b));
        self.map.store(Arc::new(next));
        b
    }

    /// Breakers not closed among the backends of `upstream`.
    fn ejected_in(&self, upstream: &str) -> usize {
        self.map
            .load()
            .values()
            .filter(|b| b.upstream() == upstream && b.state() != State::Closed)
            .count()
    }
}

/// The filter.
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    max_ejection_percent: u32,
    breakers: Arc<Breakers>,
    ejector: Arc<dyn Ejector>,
    scope: String,
    state_gauge: IntGaugeVec,
    transitions: IntCounterVec,
}

/// Factory: `kind: circuit_breaker`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    Ok(Arc::new(CircuitBreaker::build(config, cx)?))
}

impl CircuitBreaker {
    /// Build from config (the factory, typed).
    pub fn build(
        config: &portcullis_plugin::serde_yaml::Value,
        cx: &BuildContext<'_>,
    ) -> Result<Self, FilterError> {
        let c: Config = parse_config(config)?;
        if let Some(r) = c.failure_ratio {
            if !(r > 0.0 && r <= 1.0) {
                return Err(FilterError::at(
                    "failure_ratio",
                    format!("must be in (0, 1], got {r}"),
                ));
            }
        }
        if c.consecutive_failures == 0 && c.failure_ratio.is_none() {
            return Err(FilterError::here(
                "set `consecutive_failures` > 0 or a `failure_ratio`, or the breaker never opens",
            ));
        }
        for (i, s) in c.failure_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(FilterError::at(
                    format!("failure_statuses[{i}]"),
                    "must be an HTTP status (100-599)",
                ));
            }
            if (400..500).contains(s) {
                return Err(FilterError::at(
                    format!("failure_statuses[{i}]"),
                    "a 4xx is the client's fault and never a backend failure",
                ));
            }
        }
        if c.window.0 < Duration::from_secs(1) {
            return Err(FilterError::at("window", "must be at least 1s"));
        }
        if c.open_time.0.is_zero() || c.max_open_time.0 < c.open_time.0 {
            return Err(FilterError::at(
                "max_open_time",
                "open_time must be > 0 and max_open_time >= open_time",
            ));
        }
        if c.half_open_requests == 0 {
            return Err(FilterError::at("half_open_requests", "must be at least 1"));
        }
        if c.max_ejection_percent > 100 {
            return Err(FilterError::at(
                "max_ejection_percent",
                "must be between 0 and 100",
            ));
        }
        let scope = cx.scope().label().to_string();
        let breakers = cx.persistent(&format!("circuit_breaker/{scope}"), Breakers::default);
        let state_gauge = cx.int_gauge_vec(
            "portcullis_circuit_breaker_state",
            "Circuit state per backend: 0 closed, 1 open, 2 half-open.",
            &["route", "backend"],
        )?;
        let transitions = cx.int_counter_vec(
            "portcullis_circuit_breaker_transitions_total",
            "Circuit state changes, by route, backend and new state.",
            &["route", "backend", "to"],
        )?;
        Ok(CircuitBreaker {
            policy: BreakerPolicy {
                consecutive_failures: c.consecutive_failures,
                failure_ratio: c.failure_ratio,
                min_requests: c.min_requests,
                window: c.window.0,
                failure_statuses: c.failure_statuses,
                open_time: c.open_time.0,
                max_open_time: c.max_open_time.0,
                half_open_requests: c.half_open_requests,
            },
            max_ejection_percent: c.max_ejection_percent,
            breakers,
            ejector: cx.ejector(),
            scope,
            state_gauge,
            transitions,
        })
    }
}

impl CircuitBreaker {
    fn report(&self, addr: SocketAddr, from: State, to: State, why: &str) {
        let backend = addr.to_string();
        match to {
            State::Open => log::warn!(
                "circuit_breaker[{}]: {backend} {from} -> open ({why})",
                self.scope
            ),
            _ => log::info!(
                "circuit_breaker[{}]: {backend} {from} -> {to} ({why})",
                self.scope
            ),
        }
        self.ejector
            .transition(&self.scope, addr, from.name(), to.name(), why);
        self.state_gauge
            .with_label_values(&[&self.scope, &backend])
            .set(to.code());
        self.transitions
            .with_label_values(&[&self.scope, &backend, to.name()])
            .inc();
    }

    /// How many backends of an upstream of `size` may be open at once.
    fn ejection_cap(&self, size: usize) -> usize {
        ((size * self.max_ejection_percent as usize) / 100)
            .max(1)
            .min(size)
    }
}

#[async_trait]
impl Filter for CircuitBreaker {
    fn hooks(&self) -> Hooks {
        Hooks::ACCEPT_BACKEND | Hooks::OUTCOME
    }

    fn accept_backend(&self, c: &Candidate<'_>) -> bool {
        let Some(b) = self.breakers.get(&c.addr) else {
            return true;
        };
        let (ok, transition) = b.admit(&self.policy, breaker::now_ns);
        if let Some((from, to)) = transition {
            self.report(c.addr, from, to, "open period over, probing");
        }
        ok
    }

    fn on_outcome(&self, o: &Outcome<'_>) {
        let Some(addr) = o.backend else { return };
        let failed = o.error.is_some() || self.policy.is_failure_status(o.status);
        if !failed && o.status == 0 {
            return; // no verdict (e.g. the client went away)
        }
        let b = self.breakers.get_or_insert(addr, o.upstream);
        let now = breaker::now_ns();
        let cap = self.ejection_cap(o.upstream_size.max(1));
        let room = || self.breakers.ejected_in(o.upstream) < cap;
        if let Some((from, to, why)) = b.record(&self.policy, failed, now, room) {
            if to == State::Open {
                self.ejector.eject(o.upstream, addr, b.open_remaining(now));
            }
            self.report(addr, from, to, &why);
        }
    }

    fn describe_backend(&self, backend: SocketAddr) -> Option<(&'static str, String)> {
        let state = self
            .breakers
            .get(&backend)
            .map_or(State::Closed, |b| b.state());
        Some(("circuit", state.name().to_string()))
    }
}

#[cfg(test)]
mod tests;
