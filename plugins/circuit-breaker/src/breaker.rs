//! One backend's circuit: the state machine, with atomics on the request path and a lock
//! only around transitions. Time is passed in (nanoseconds), so it is tested without sleeping.

use portcullis_plugin::window::SecondsWindow;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Monotonic nanoseconds since the first call.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Circuit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Traffic flows.
    Closed,
    /// The backend is skipped.
    Open,
    /// A few probe requests may pass.
    HalfOpen,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When to open and for how long.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Open after this many consecutive failures (0 = off).
    pub consecutive_failures: u32,
    /// Open when failures / requests in the window reach this...
    pub failure_ratio: Option<f64>,
    /// ...once this many requests were seen in the window.
    pub min_requests: u32,
    /// The rolling window (at most 60 s is used).
    pub window: Duration,
    /// Statuses that count as failures; empty = every 5xx.
    pub failure_statuses: Vec<u16>,
    /// First open period.
    pub open_time: Duration,
    /// Longest open period.
    pub max_open_time: Duration,
    /// Probes let through while half-open.
    pub half_open_requests: u32,
}

impl BreakerPolicy {
    /// Whether a response status counts as a failure.
    pub fn is_failure_status(&self, status: u16) -> bool {
        if self.failure_statuses.is_empty() {
            (500..600).contains(&status)
        } else {
            self.failure_statuses.contains(&status)
        }
    }

    fn open_period(&self, trips: u32) -> u64 {
        let factor = 1u64 << trips.saturating_sub(1).min(20);
        let ns = (self.open_time.as_nanos() as u64).saturating_mul(factor);
        ns.min(self.max_open_time.as_nanos() as u64)
    }
}

/// The circuit of one backend.
#[derive(Debug)]
pub struct Breaker {
    upstream: String,
    state: AtomicU8,
    open_until: AtomicU64,
    trips: AtomicU32,
    last_close: AtomicU64,
    consecutive: AtomicU32,
    probes: AtomicU32,
    probe_successes: AtomicU32,
    probe_started: AtomicU64,
    window: SecondsWindow,
    transition: Mutex<()>,
}

/// A state change: (from, to, why).
pub type Transition = (State, State, String);

impl Breaker {
    /// A closed circuit for a backend of `upstream`.
    pub fn new(upstream: &str) -> Self {
        Breaker {
            upstream: upstream.to_string(),
            state: AtomicU8::new(0),
            open_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            last_close: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            probe_started: AtomicU64::new(0),
            window: SecondsWindow::new(),
            transition: Mutex::new(()),
        }
    }

    /// The upstream the backend was first seen in.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// How long the circuit stays open from `now` (zero when the open period is over).
    pub fn open_remaining(&self, now: u64) -> Duration {
        Duration::from_nanos(self.open_until.load(Relaxed).saturating_sub(now))
    }

    /// Current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    fn set(&self, s: State) {
        self.state.store(s.code() as u8, Relaxed);
    }

    /// May a request go to this backend now? Also returns the Open → HalfOpen transition
    /// when the open period is over. `now` is only read when the circuit is not closed.
    pub fn admit(
        &self,
        p: &BreakerPolicy,
        now: impl FnOnce() -> u64,
    ) -> (bool, Option<(State, State)>) {
        let mut transition = None;
        let state = self.state();
        if state == State::Closed {
            return (true, None);
        }
        let now = now();
        match state {
            State::Closed => return (true, None),
            State::Open => {
                if now < self.open_until.load(Relaxed) {
                    return (false, None);
                }
                let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
                if self.state() == State::Open {
                    self.probes.store(0, Relaxed);
                    self.probe_successes.store(0, Relaxed);
                    self.set(State::HalfOpen);
                    transition = Some((State::Open, State::HalfOpen));
                }
            }
            State::HalfOpen => {}
        }
        if self.probes.fetch_add(1, Relaxed) < p.half_open_requests {
            self.probe_started.store(now, Relaxed);
            return (true, transition);
        }
        self.probes.fetch_sub(1, Relaxed);
        // A probe that never reported back (vetoed elsewhere, client gone) must not wedge the
        // circuit: after another open period, allow a new round of probes.
        if now.saturating_sub(self.probe_started.load(Relaxed)) > p.open_period(1) {
            self.probes.store(0, Relaxed);
            self.probe_successes.store(0, Relaxed);
        }
        (false, transition)
    }

    /// Record an outcome. `room()` says whether the upstream's ejection cap allows one more
    /// open circuit. Returns the transition it caused, if any.
    pub fn record(
        &self,
        p: &BreakerPolicy,
        failed: bool,
        now: u64,
        room: impl Fn() -> bool,
    ) -> Option<Transition> {
        match self.state() {
            State::Open => None,
            State::HalfOpen => {
                let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
                if self.state() != State::HalfOpen {
                    return None;
                }
                if failed {
                    let trips = self.trips.fetch_add(1, Relaxed) + 1;
                    self.open_until.store(now + p.open_period(trips), Relaxed);
                    self.set(State::Open);
                    let secs = p.open_period(trips) as f64 / 1e9;
                    return Some((
                        State::HalfOpen,
                        State::Open,
                        format!("probe failed; open for {secs:.1}s"),
                    ));
                }
                if self.probe_successes.fetch_add(1, Relaxed) + 1 >= p.half_open_requests {
                    self.consecutive.store(0, Relaxed);
                    self.window.clear();
                    self.last_close.store(now, Relaxed);
                    self.set(State::Closed);
                    return Some((State::HalfOpen, State::Closed, "probes succeeded".into()));
                }
                None
            }
            State::Closed => {
                self.window.add(now, 1, u32::from(failed));
                if !failed {
                    self.consecutive.store(0, Relaxed);
                    return None;
                }
                let run = self.consecutive.fetch_add(1, Relaxed) + 1;
                let why = if p.consecutive_failures > 0 && run >= p.consecutive_failures {
                    format!("{run} consecutive failures")
                } else if let Some(ratio) = p.failure_ratio {
                    let (total, failures) = self.window.sum(now, p.window);
                    if total >= u64::from(p.min_requests.max(1))
                        && failures as f64 >= ratio * total as f64
                    {
                        format!("{failures} of {total} requests failed in {:?}", p.window)
                    } else {
                        return None;
                    }
                } else {
                    return None;
                };
                let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
                if self.state() != State::Closed {
                    return None;
                }
                if !room() {
                    log::debug!(
                        "circuit_breaker: not opening ({why}): ejection cap of upstream {} reached",
                        self.upstream
                    );
                    return None;
                }
                // Trips close together back off; a circuit closed for a long time starts over.
                let recent = self.last_close.load(Relaxed) > 0
                    && now.saturating_sub(self.last_close.load(Relaxed))
                        < p.max_open_time.as_nanos() as u64;
                let trips = if recent {
                    self.trips.load(Relaxed) + 1
                } else {
                    1
                };
                self.trips.store(trips, Relaxed);
                self.open_until.store(now + p.open_period(trips), Relaxed);
                self.consecutive.store(0, Relaxed);
                self.set(State::Open);
                let secs = p.open_period(trips) as f64 / 1e9;
                Some((
                    State::Closed,
                    State::Open,
                    format!("{why}; open for {secs:.1}s"),
                ))
            }
        }
    }
}
