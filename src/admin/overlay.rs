//! Runtime changes made through the admin API, kept apart from the file so that a reload can
//! re-apply them: backends added or removed per upstream, and drained addresses.
//!
//! Semantics (documented in docs/operations.md): admin changes survive file reloads, not
//! restarts or binary upgrades. A backend added through the API that the file now lists too
//! keeps the file's settings. Changes to an upstream the file no longer has are dropped.

use crate::balance::StateStore;
use crate::runtime::upstream::{BackendOrigin, UpstreamBackend};
use crate::runtime::{Snapshot, Upstream};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// A backend added through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedBackend {
    /// Weight (1-1000).
    pub weight: u32,
    /// Backup flag.
    pub backup: bool,
    /// Labels such as `zone`.
    pub metadata: BTreeMap<String, String>,
}

/// The runtime changes.
#[derive(Debug, Default)]
pub struct Overlay {
    added: BTreeMap<(String, SocketAddr), AddedBackend>,
    removed: BTreeSet<(String, SocketAddr)>,
    drained: BTreeSet<SocketAddr>,
}

impl Overlay {
    /// Record an addition.
    pub fn add(&mut self, upstream: &str, addr: SocketAddr, b: AddedBackend) {
        self.removed.remove(&(upstream.to_string(), addr));
        self.added.insert((upstream.to_string(), addr), b);
    }

    /// Record a removal.
    pub fn remove(&mut self, upstream: &str, addr: SocketAddr) {
        let key = (upstream.to_string(), addr);
        if self.added.remove(&key).is_none() {
            self.removed.insert(key);
        }
    }

    /// Record a drain (`true`) or an enable (`false`).
    pub fn set_drained(&mut self, addr: SocketAddr, drained: bool) {
        if drained {
            self.drained.insert(addr);
        } else {
            self.drained.remove(&addr);
        }
    }

    /// The backend to insert for an addition.
    pub fn backend(store: &StateStore, addr: SocketAddr, b: &AddedBackend) -> UpstreamBackend {
        let mut ub = Upstream::backend_from(store, addr, b.weight, b.backup);
        ub.metadata = Arc::new(b.metadata.clone());
        ub.origin = BackendOrigin::Admin;
        ub
    }

    /// Every change applied to a freshly compiled snapshot (before it goes live): the
    /// members of each of its upstreams, in order. Changes to upstreams the file no longer
    /// has are forgotten; drained addresses are drained again.
    pub fn apply(&mut self, snapshot: &Snapshot, store: &StateStore) -> Vec<Vec<UpstreamBackend>> {
        let known: BTreeSet<&str> = snapshot.upstreams.iter().map(|u| &*u.name).collect();
        self.added.retain(|(u, _), _| known.contains(u.as_str()));
        self.removed.retain(|(u, _)| known.contains(u.as_str()));
        for addr in &self.drained {
            if let Some(state) = store.get(addr) {
                state.set_enabled(false);
            }
        }
        snapshot
            .upstreams
            .iter()
            .map(|up| self.members(up, store))
            .collect()
    }

    fn members(&self, up: &Upstream, store: &StateStore) -> Vec<UpstreamBackend> {
        let name = &*up.name;
        let removed = |addr: SocketAddr| self.removed.contains(&(name.to_string(), addr));
        let mut out: Vec<UpstreamBackend> = up
            .backends()
            .iter()
            .filter(|b| !removed(b.addr()))
            .cloned()
            .collect();
        for ((_, addr), b) in self.added.iter().filter(|((u, _), _)| u == name) {
            if !out.iter().any(|x| x.addr() == *addr) {
                out.push(Self::backend(store, *addr, b));
            }
        }
        out
    }
}
