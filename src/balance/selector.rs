//! The one selector type: a [`Strategy`] over a member list, usable as Pingora's
//! [`BackendSelection`] and, on the request path, through [`Selector::pick`].

use super::strategies::round_robin::RoundRobinFactory;
use super::{BackendState, Member, PickRequest, Refused, StateStore, Strategy, StrategyFactory};
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a [`Selector`] is built with: the strategy and the store that owns live state.
#[derive(Debug, Clone)]
pub struct SelectorConfig {
    /// The configured strategy.
    pub factory: Arc<dyn StrategyFactory>,
    /// Live per-backend state, shared across rebuilds.
    pub store: Arc<StateStore>,
}

/// A strategy bound to a member list. Immutable; rebuilt when the list changes.
pub struct Selector {
    members: Box<[Member]>,
    strategy: Box<dyn Strategy>,
    /// Whether any member ramps (slow start): only then is a choice thinned.
    ramping: bool,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("members", &self.members.len())
            .finish()
    }
}

impl Selector {
    /// Build over `members` (in the given order).
    pub fn new(members: Vec<Member>, factory: &dyn StrategyFactory) -> Self {
        let strategy = factory.build(&members);
        Selector {
            ramping: members.iter().any(|m| m.ramp < 1.0),
            members: members.into_boxed_slice(),
            strategy,
        }
    }

    /// A selector with no members: every pick returns `None`.
    pub fn empty(factory: &dyn StrategyFactory) -> Self {
        Self::new(Vec::new(), factory)
    }

    /// The members, in selection order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The first member the strategy chooses that `accept` allows; `None` when every member is
    /// refused (or there are none). After a refusal the strategy picks again among the members
    /// not refused yet ([`Strategy::repick`]), at random by default. Does not allocate.
    ///
    /// Slow start thins the choice: a ramping member is kept with probability
    /// [`Member::ramp`], and otherwise passed over (the strategy picks afresh, then re-picks),
    /// so every strategy gives it that share of what it would have had. A member passed over only for its ramp still
    /// serves when every other member is refused.
    #[inline]
    pub fn pick(&self, req: &PickRequest, accept: impl Fn(&Member) -> bool) -> Option<&Member> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let mut i = self.strategy.pick(&self.members, req);
        let mut refused = Refused::default();
        let mut spare = None;
        for _ in 0..n {
            let m = &self.members[i];
            let thinned = self.ramping && m.ramp < 1.0 && fastrand::f32() >= m.ramp;
            if accept(m) {
                if !thinned {
                    return Some(m);
                }
                spare.get_or_insert(m);
            }
            refused.insert(i);
            // Passed over for its ramp: a fresh pick first (round robin's next turn, another
            // P2C draw), which is cheaper than a repick's scan and keeps the strategy's mix.
            let fresh = if thinned {
                Some(self.strategy.pick(&self.members, req)).filter(|j| !refused.contains(*j))
            } else {
                None
            };
            match fresh.or_else(|| self.next_choice(req, &refused)) {
                Some(j) => i = j,
                None => break,
            }
        }
        spare
    }

    /// How long (ns) to wait for `chosen`'s response header when the strategy picked it only
    /// to probe it ([`Strategy::probe_deadline`]); `None`: the upstream's read timeout.
    #[inline]
    pub fn probe_deadline(&self, chosen: &BackendState, now: u64) -> Option<u64> {
        self.strategy.probe_deadline(&self.members, chosen, now)
    }

    /// The strategy's next choice after `refused`, or a random member not refused.
    fn next_choice(&self, req: &PickRequest, refused: &Refused) -> Option<usize> {
        match self.strategy.repick(&self.members, req, refused) {
            Some(j) if j < self.members.len() && !refused.contains(j) => Some(j),
            _ => refused.random_other(self.members.len()),
        }
    }
}

impl BackendSelection for Selector {
    type Iter = SelectorIter;
    type Config = SelectorConfig;

    /// Round robin with a private state store (Pingora's config-less constructor).
    fn build(backends: &BTreeSet<Backend>) -> Self {
        let config = SelectorConfig {
            factory: Arc::new(RoundRobinFactory),
            store: StateStore::new(),
        };
        Self::build_with_config(backends, &config)
    }

    fn build_with_config(backends: &BTreeSet<Backend>, config: &SelectorConfig) -> Self {
        let members = backends
            .iter()
            .filter_map(|b| Member::new(b.clone(), &config.store))
            .collect();
        Selector::new(members, config.factory.as_ref())
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> SelectorIter {
        SelectorIter {
            selector: Arc::clone(self),
            req: PickRequest {
                hash: crc32fast::hash(key),
                now: super::now_ns(),
            },
            last: None,
            refused: Refused::default(),
            attempt: 0,
        }
    }
}

/// Pingora-facing iterator: the strategy's choice, then its re-picks, each member once.
pub struct SelectorIter {
    selector: Arc<Selector>,
    req: PickRequest,
    last: Option<usize>,
    refused: Refused,
    attempt: usize,
}

impl BackendIter for SelectorIter {
    fn next(&mut self) -> Option<&Backend> {
        let sel = &self.selector;
        let n = sel.members.len();
        if self.attempt >= n {
            return None;
        }
        let idx = match self.last {
            None => sel.strategy.pick(&sel.members, &self.req),
            Some(prev) => {
                self.refused.insert(prev);
                sel.next_choice(&self.req, &self.refused)?
            }
        };
        self.last = Some(idx);
        self.attempt += 1;
        Some(&sel.members[idx].backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::lb::discovery;
    use pingora::lb::{Backends, LoadBalancer};

    #[test]
    fn works_as_a_pingora_load_balancer_selector() {
        let lb =
            LoadBalancer::<Selector>::try_from_iter(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
                .unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            seen.insert(lb.select(b"", 3).unwrap().addr.to_string());
        }
        assert_eq!(seen.len(), 3, "round robin through Pingora's LoadBalancer");
    }

    #[test]
    fn pingora_iteration_visits_every_member_once() {
        let backends: BTreeSet<Backend> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| Backend::new(a).unwrap())
            .collect();
        let sel = Arc::new(Selector::build(&backends));
        let mut it = sel.iter(b"k");
        let mut seen = Vec::new();
        while let Some(b) = it.next() {
            seen.push(b.addr.to_string());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        let _ = Backends::new(discovery::Static::new(backends));
    }

    /// Round robin over members on 127.0.0.1 ports 1..=n.
    fn round_robin_over(n: u16) -> Selector {
        let store = StateStore::new();
        let members: Vec<Member> = (1..=n)
            .map(|p| Member::new(Backend::new(&format!("127.0.0.1:{p}")).unwrap(), &store).unwrap())
            .collect();
        Selector::new(members, &RoundRobinFactory)
    }

    #[test]
    fn a_vetoed_members_share_spreads_over_the_rest() {
        let sel = round_robin_over(4);
        let req = PickRequest::default();
        let mut counts = [0u32; 5];
        for _ in 0..12_000 {
            let m = sel.pick(&req, |m| m.state.addr().port() != 1).unwrap();
            counts[m.state.addr().port() as usize] += 1;
        }
        // Round robin gives 3,000 to each; member 1's 3,000 spread over the other three.
        for (port, &c) in counts.iter().enumerate().skip(2) {
            assert!((3_700..=4_300).contains(&c), "port {port}: {counts:?}");
        }
    }

    #[test]
    fn a_ramping_member_gets_its_ramp_of_its_share() {
        let store = StateStore::new();
        let members: Vec<Member> = (1..=4u16)
            .map(|p| {
                let mut m =
                    Member::new(Backend::new(&format!("127.0.0.1:{p}")).unwrap(), &store).unwrap();
                m.ramp = if p == 1 { 0.25 } else { 1.0 };
                m
            })
            .collect();
        let sel = Selector::new(members, &RoundRobinFactory);
        let req = PickRequest::default();
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[sel.pick(&req, |_| true).unwrap().state.addr().port() as usize] += 1;
        }
        // As if its weight were a quarter: 0.25 / 3.25 of 40,000 = 3,077.
        assert!((2_800..=3_350).contains(&counts[1]), "{counts:?}");
        // Alone, it still serves: thinning never refuses the last acceptable member.
        for _ in 0..100 {
            let m = sel.pick(&req, |m| m.state.addr().port() == 1).unwrap();
            assert_eq!(m.state.addr().port(), 1);
        }
    }

    #[test]
    fn pick_skips_refused_members_and_gives_up_when_all_refused() {
        let sel = round_robin_over(3);
        let req = PickRequest::default();
        for _ in 0..10 {
            let m = sel.pick(&req, |m| m.state.addr().port() != 2).unwrap();
            assert_ne!(m.state.addr().port(), 2);
        }
        assert!(sel.pick(&req, |_| false).is_none());
    }
}
