//! Backend selection: one [`Strategy`] trait, one selector type, a registry of strategies.
//!
//! A strategy sees the *eligible* members of an upstream (healthy, enabled, primary tier
//! first) and their live state, and names the first choice; on a veto (already tried, an open
//! circuit) the [`Selector`] asks it to pick again among the rest ([`Strategy::repick`]). Strategies hold no per-backend state of
//! their own: that lives in the [`StateStore`], so a rebuilt selector loses nothing.
//!
//! Adding a strategy is one file in `strategies/` and one line in [`registry::STRATEGIES`]; a
//! custom binary registers its own in a [`StrategyRegistry`].

pub mod ewma;
pub mod key;
pub mod registry;
pub mod sample;
pub mod selector;
pub mod state;
pub mod strategies;

pub use key::KeySource;
pub use registry::{build_strategy, StrategyBuilder, StrategyRegistry};
pub use selector::{Selector, SelectorConfig, SelectorIter};
pub use state::{now_ns, BackendState, InflightGuard, StateStore};

use pingora::lb::Backend;
use std::fmt;
use std::sync::Arc;

/// One selectable backend: Pingora's [`Backend`] plus its live state.
#[derive(Debug, Clone)]
pub struct Member {
    /// Address and weight, as Pingora sees them.
    pub backend: Backend,
    /// Live state shared with requests and health checks.
    pub state: Arc<BackendState>,
    /// The weight (1..=1000), copied for fast access.
    pub weight: u32,
    /// Share of its weight the member gets while it ramps in (slow start), in (0, 1]; 1 when
    /// it does not ramp. The [`Selector`] keeps a strategy's choice of a ramping member with
    /// this probability and otherwise lets the strategy choose again among the others.
    pub ramp: f32,
}

impl Member {
    /// A member for `backend`, with state taken from `store`.
    pub fn new(backend: Backend, store: &StateStore) -> Option<Self> {
        let addr = backend.addr.as_inet().copied()?;
        let weight = u32::try_from(backend.weight).unwrap_or(u32::MAX).max(1);
        Some(Member {
            state: store.get_or_create(addr),
            backend,
            weight,
            ramp: 1.0,
        })
    }
}

/// Per-request input to a pick. Cheap to copy; built without allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickRequest {
    /// Hash of the request's key (only strategies that use a [`KeySource`] look at it).
    pub hash: u32,
    /// Monotonic time in nanoseconds ([`now_ns`]).
    pub now: u64,
}

/// A balancing algorithm over a fixed list of members.
///
/// Built by a [`StrategyFactory`] each time the eligible member list changes. `pick` runs on
/// every request: it must not allocate, lock or log.
pub trait Strategy: Send + Sync {
    /// Index of the first-choice member. `members` is never empty.
    fn pick(&self, members: &[Member], req: &PickRequest) -> usize;

    /// Choose again after the members in `refused` were vetoed for this request (already
    /// tried, a half-open circuit out of probes, a filter's veto). Return a member not in
    /// `refused` by the strategy's own rule, or `None` to let the selector pick one of the
    /// remaining members uniformly at random: the default, so a vetoed member's share spreads
    /// evenly instead of landing on its neighbour in the list.
    fn repick(&self, members: &[Member], req: &PickRequest, refused: &Refused) -> Option<usize> {
        let _ = (members, req, refused);
        None
    }

    /// How long (ns) the proxy should wait for the response header of `chosen`, the member
    /// this strategy picked, when it picked it only to probe it (e.g. a backend measured slow
    /// whose estimate decayed while it was idle). After that long an idempotent request is
    /// tried on another member. `None` (the default): the upstream's read timeout.
    fn probe_deadline(&self, members: &[Member], chosen: &BackendState, now: u64) -> Option<u64> {
        let _ = (members, chosen, now);
        None
    }
}

/// The members one pick has refused so far: a bit per member, for the first
/// [`Refused::TRACKED`] members (a pick among more may revisit an untracked one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Refused {
    bits: [u64; 4],
    count: usize,
}

impl Refused {
    /// How many members are tracked.
    pub const TRACKED: usize = 256;

    /// Whether member `i` was refused.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        i < Self::TRACKED && self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// Mark member `i` refused.
    #[inline]
    pub fn insert(&mut self, i: usize) {
        if i < Self::TRACKED && !self.contains(i) {
            self.bits[i / 64] |= 1 << (i % 64);
            self.count += 1;
        }
    }

    /// How many members were refused.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// One of the `n` members not refused, uniformly at random; `None` when none is left.
    pub fn random_other(&self, n: usize) -> Option<usize> {
        let free = n.checked_sub(self.count).filter(|f| *f > 0)?;
        let mut k = fastrand::usize(..free);
        for i in 0..n {
            if !self.contains(i) {
                if k == 0 {
                    return Some(i);
                }
                k -= 1;
            }
        }
        None
    }
}

/// A configured strategy: builds [`Strategy`] instances for member lists.
pub trait StrategyFactory: Send + Sync + fmt::Debug {
    /// The registered name.
    fn name(&self) -> &'static str;
    /// Build the strategy for these members (called on membership or health changes).
    fn build(&self, members: &[Member]) -> Box<dyn Strategy>;
    /// Which part of the request to hash, for strategies that use a key.
    fn key_source(&self) -> Option<&KeySource> {
        None
    }
}
