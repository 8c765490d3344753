//! Discovery results as an input of the control plane: the last good set found for each
//! discovering upstream, merged into its members beside the file's and the admin API's.
//!
//! An address the file or the admin API already lists keeps their settings. The first answer
//! of an upstream joins as file backends do at startup: healthy until a check says otherwise.
//! After that, a new address of an upstream with a health check joins *unhealthy* (its first
//! probe decides, and a pass then ramps it in through slow start); without a health check it
//! joins at once and ramps in. An address that is no longer found leaves the members: new requests stop going
//! there, and those in flight finish (the drain).

use super::members::{merge_origin, Wanted};
use crate::balance::StateStore;
use crate::discovery::{DiscoveryHost, Found, Job};
use crate::gateway::Gateway;
use crate::runtime::upstream::{BackendOrigin, UpstreamBackend};
use crate::runtime::Upstream;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The last good set of each discovering upstream.
#[derive(Debug, Default)]
pub struct Discovered {
    sets: HashMap<Arc<str>, Vec<Found>>,
    /// Upstreams past their first answer: their new addresses wait for a health check.
    cautious: HashSet<Arc<str>>,
}

impl Discovered {
    /// Record `found` (sorted) for `up`; whether it differs from the last set.
    pub fn record(&mut self, up: &Upstream, found: Vec<Found>) -> bool {
        if self.sets.get(&up.name) == Some(&found) {
            return false;
        }
        if self.sets.insert(Arc::clone(&up.name), found).is_some() {
            self.cautious.insert(Arc::clone(&up.name));
        }
        true
    }

    /// Forget the sets of upstreams that no longer discover.
    pub fn retain(&mut self, upstreams: &[Arc<Upstream>]) {
        self.sets.retain(|name, _| {
            upstreams
                .iter()
                .any(|u| u.name == *name && u.discover.is_some())
        });
        self.cautious.retain(|name| self.sets.contains_key(name));
    }

    /// `members` (the file's and the admin API's, without discovered ones) with `up`'s
    /// discovered set added.
    pub fn merge(
        &self,
        up: &Upstream,
        members: Vec<UpstreamBackend>,
        store: &StateStore,
    ) -> Vec<UpstreamBackend> {
        let found = self.sets.get(&up.name).map_or(&[][..], Vec::as_slice);
        let wanted = found.iter().map(|f| Wanted {
            addr: f.addr,
            weight: f.weight,
            backup: f.backup,
            metadata: None,
        });
        let wait_for_check = up.health.is_some() && self.cautious.contains(&up.name);
        merge_origin(members, BackendOrigin::Discovered, wanted, store, |b| {
            if wait_for_check {
                b.state.set_healthy(false);
            }
        })
    }
}

/// What the discovery service sees of the gateway: the jobs of the live config, its change
/// notice, and the control plane to report to.
pub struct DiscoveryLink {
    gateway: Arc<Gateway>,
    control: super::ControlHandle,
    /// Upstreams whose last resolution failed (a failure is logged when it starts, then
    /// every 30th time).
    failing: Mutex<HashMap<String, u64>>,
}

impl DiscoveryLink {
    /// Discovery for `gateway`'s live config, reporting to `control`.
    pub fn new(gateway: Arc<Gateway>, control: super::ControlHandle) -> Self {
        DiscoveryLink {
            gateway,
            control,
            failing: Mutex::new(HashMap::new()),
        }
    }
}

impl DiscoveryHost for DiscoveryLink {
    fn jobs(&self) -> Vec<Job> {
        self.gateway
            .snapshot()
            .upstreams
            .iter()
            .filter_map(|u| {
                Some(Job {
                    upstream: Arc::clone(&u.name),
                    spec: Arc::clone(u.discover.as_ref()?),
                })
            })
            .collect()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.gateway.subscribe()
    }

    fn found(&self, upstream: &str, found: Vec<Found>) {
        let m = self.gateway.metrics();
        m.fleet().count_discovery(upstream, "ok", found.len());
        let recovered = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(upstream);
        if let Some(n) = recovered {
            log::info!("discovery for upstream {upstream} answers again after {n} failure(s)");
        }
        self.control.discovered(upstream, found);
    }

    fn failed(&self, upstream: &str, why: &str) {
        self.gateway
            .metrics()
            .fleet()
            .count_discovery(upstream, "error", 0);
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let n = failing.entry(upstream.to_string()).or_insert(0);
        *n += 1;
        if *n % 30 == 1 {
            log::warn!(
                "discovery for upstream {upstream} failed ({why}); keeping its last good set ({} failure(s) in a row)",
                n
            );
        }
    }
}
