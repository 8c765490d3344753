//! The control plane's state and how each command changes the published snapshot.

use super::discovered::Discovered;
use super::registry::{Registration, Registry};
use super::rotation::Rotations;
use super::AdminChange;
use crate::admin::overlay::Overlay;
use crate::config::ConfigErrors;
use crate::gateway::{compile_file, Gateway, ReloadStatus};
use crate::observe::events::Event;
use crate::runtime::compile::resolve_backend_addr;
use crate::runtime::{Compiled, Snapshot, Upstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Why an admin change was refused: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRefusal {
    /// 400, 404, 409...
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

impl AdminRefusal {
    /// A refusal with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        AdminRefusal {
            status,
            message: message.into(),
        }
    }
}

/// Longest ejection honoured (a filter asking for more gets this).
const MAX_EJECTION: Duration = Duration::from_secs(3600);

/// Everything only the control plane changes.
pub struct Writer {
    pub(super) gw: Arc<Gateway>,
    overlay: Overlay,
    /// Ejections and slow-start ramps.
    pub(super) rot: Rotations,
    /// The last good DNS answer of each discovering upstream.
    found: Discovered,
    /// Instances registered through the admin API.
    pub(super) registry: Registry,
}

impl Writer {
    /// The writer of `gw`; registrations kept in the admin state file are restored (startup:
    /// the file is read on the calling thread).
    pub fn new(gw: Arc<Gateway>) -> Self {
        let snapshot = gw.snapshot();
        let file = snapshot.admin.as_ref().and_then(|a| a.state_file.clone());
        let mut w = Writer {
            gw,
            overlay: Overlay::default(),
            rot: Rotations::default(),
            found: Discovered::default(),
            registry: Registry::open(file.as_deref()),
        };
        w.registry.retain(&snapshot.upstreams);
        for up in snapshot.upstreams.iter() {
            w.remerge(up);
        }
        w.count_registered();
        w
    }

    /// Every registration.
    pub fn registrations(&self) -> Vec<Registration> {
        self.registry.list()
    }

    /// `u` with its eligibility computed again (health, enablement, ejections, ramps).
    fn reselected(&self, u: &Upstream) -> Upstream {
        u.reselect(&self.rot.view(&u.name))
    }

    /// Start `addr`'s ramp in every upstream that holds it and ramps members in.
    fn ramp_everywhere(&mut self, addr: SocketAddr) {
        for u in self.gw.snapshot().upstreams.iter() {
            if u.contains(addr) {
                self.rot.start_ramp(u, addr);
            }
        }
    }

    /// Publish the live config with each upstream replaced by `change(upstream)` where that
    /// returns one.
    fn republish(&self, mut change: impl FnMut(&Upstream) -> Option<Upstream>) {
        let current = self.gw.snapshot();
        let mut changed = false;
        let upstreams = current
            .upstreams
            .iter()
            .map(|u| match change(u) {
                Some(next) => {
                    changed = true;
                    log_panic(u, &next);
                    Arc::new(next)
                }
                None => Arc::clone(u),
            })
            .collect();
        if changed {
            self.gw.publish_members(current.with_upstreams(upstreams));
        }
    }

    /// Eligibility of every upstream holding `addr` is computed again.
    fn reselect_holding(&self, addr: SocketAddr) {
        self.republish(|u| u.contains(addr).then(|| self.reselected(u)));
    }

    /// Record a health verdict; when it changes the backend's state, recompute eligibility.
    /// A backend that comes back ramps in.
    pub fn health_changed(&mut self, addr: SocketAddr, healthy: bool) {
        if self
            .gw
            .store()
            .get(&addr)
            .is_some_and(|s| s.set_healthy(healthy))
        {
            self.record_health(addr, healthy);
            if healthy {
                self.ramp_everywhere(addr);
            }
            self.reselect_holding(addr);
        }
    }

    /// Remember a health verdict's change for the status page, with the upstreams it is in.
    fn record_health(&self, addr: SocketAddr, healthy: bool) {
        let snapshot = self.gw.snapshot();
        let upstreams: Vec<&str> = snapshot
            .upstreams
            .iter()
            .filter(|u| u.contains(addr))
            .map(|u| &*u.name)
            .collect();
        let (from, to, why) = match healthy {
            true => ("down", "up", "health check passed"),
            false => ("up", "down", "health check failed"),
        };
        let e = Event::now(
            "health",
            upstreams.join(","),
            addr.to_string(),
            from,
            to,
            why,
        );
        self.gw.events().push(e);
    }

    pub fn eject(&mut self, upstream: &str, addr: SocketAddr, duration: Duration) {
        let duration = duration.min(MAX_EJECTION);
        let known = self
            .gw
            .snapshot()
            .upstream(upstream)
            .is_some_and(|u| u.contains(addr));
        if !known || duration.is_zero() {
            return;
        }
        log::info!("backend {addr} of upstream {upstream} leaves rotation for {duration:?}");
        let name: Arc<str> = upstream.into();
        self.rot
            .eject(Arc::clone(&name), addr, Instant::now() + duration);
        self.republish(|u| (u.name == name).then(|| self.reselected(u)));
    }

    /// A discovery answer for upstream `name`: its discovered members become `found`. New
    /// addresses ramp in (after their first health check, where there is one); addresses
    /// no longer found leave, and their requests in flight finish.
    pub fn discovered(&mut self, name: &str, found: Vec<crate::discovery::Found>) {
        let snapshot = self.gw.snapshot();
        let Some(up) = snapshot.upstream(name).cloned() else {
            return;
        };
        if up.discover.is_none() || !self.found.record(&up, found) {
            return;
        }
        let members = self
            .found
            .merge(&up, up.backends().to_vec(), self.gw.store());
        let added: Vec<SocketAddr> = members
            .iter()
            .map(|b| b.addr())
            .filter(|a| !up.contains(*a))
            .collect();
        let removed = up
            .backends()
            .iter()
            .filter(|b| !members.iter().any(|m| m.addr() == b.addr()))
            .count();
        for a in &added {
            self.rot.start_ramp(&up, *a);
        }
        log::info!(
            "discovery: upstream {name} has {} member(s): {} added {added:?}, {removed} removed",
            members.len(),
            added.len()
        );
        let next = up.with_backends(members, &self.rot.view(&up.name));
        self.replace(&up, next);
    }

    /// When the next ejection ends, the ramps move on or a lease runs out.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.rot.next_deadline(), self.registry.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// End the ejections whose time is up (those backends ramp in) and move the ramps on.
    pub fn expire(&mut self, now: Instant) {
        self.expire_leases();
        let rejoined = self.rot.expire(now);
        let snapshot = self.gw.snapshot();
        for (name, addr) in &rejoined {
            if let Some(u) = snapshot.upstream(name) {
                self.rot.start_ramp(u, *addr);
            }
        }
        let mut due = self.rot.tick(now);
        due.extend(rejoined.into_iter().map(|(u, _)| u));
        if !due.is_empty() {
            self.republish(|u| due.contains(&u.name).then(|| self.reselected(u)));
        }
    }

    pub fn admin(&mut self, change: AdminChange) -> Result<(), AdminRefusal> {
        let snapshot = self.gw.snapshot();
        let name = match &change {
            AdminChange::Add { upstream, .. }
            | AdminChange::Remove { upstream, .. }
            | AdminChange::SetEnabled { upstream, .. }
            | AdminChange::Register { upstream, .. }
            | AdminChange::Heartbeat { upstream, .. }
            | AdminChange::Deregister { upstream, .. } => upstream.clone(),
        };
        let Some(up) = snapshot.upstream(&name).cloned() else {
            return Err(AdminRefusal::new(404, format!("no upstream `{name}`")));
        };
        match change {
            AdminChange::Add {
                address, backend, ..
            } => {
                let addr = resolve_backend_addr(&address).map_err(|e| AdminRefusal::new(400, e))?;
                let member = Overlay::backend(self.gw.store(), addr, &backend);
                // Refused before the ramp starts, so a member already there keeps its own.
                if up.contains(addr) {
                    return Err(already_member(addr, &name));
                }
                self.rot.start_ramp(&up, addr);
                let Some(next) = up.with_added(member, &self.rot.view(&up.name)) else {
                    return Err(already_member(addr, &name));
                };
                self.overlay.add(&name, addr, backend);
                self.replace(&up, next);
                log::info!("admin: added backend {addr} to upstream {name}");
            }
            AdminChange::Remove { addr, .. } => {
                let Some(next) = up.with_removed(addr, &self.rot.view(&up.name)) else {
                    return Err(not_member(addr, &name));
                };
                self.overlay.remove(&name, addr);
                self.replace(&up, next);
                log::info!("admin: removed backend {addr} from upstream {name}");
            }
            registry @ (AdminChange::Register { .. }
            | AdminChange::Heartbeat { .. }
            | AdminChange::Deregister { .. }) => self.registry_change(&up, registry)?,
            AdminChange::SetEnabled { addr, enabled, .. } => {
                let Some(b) = up.backends().iter().find(|b| b.addr() == addr) else {
                    return Err(not_member(addr, &name));
                };
                self.overlay.set_drained(addr, !enabled);
                if b.state.set_enabled(enabled) {
                    if enabled {
                        self.ramp_everywhere(addr);
                    }
                    self.reselect_holding(addr);
                    let what = if enabled { "enabled" } else { "draining" };
                    log::info!("admin: backend {addr} {what}");
                }
            }
        }
        Ok(())
    }

    pub(super) fn replace(&self, old: &Arc<Upstream>, next: Upstream) {
        let mut next = Some(next);
        self.republish(|u| {
            if std::ptr::eq(u, &**old) {
                next.take()
            } else {
                None
            }
        });
    }

    /// Re-read the config file and, if it is valid, make it live with every admin change and
    /// ejection applied; otherwise keep serving the current config and report why. Listener
    /// addresses cannot change without new sockets: such changes are logged and left for a
    /// graceful upgrade.
    pub fn reload(&mut self, trigger: &str) -> Result<u64, ConfigErrors> {
        let gw = Arc::clone(&self.gw);
        let current = gw.snapshot();
        let generation = current.generation + 1;
        let plugins = gw.plugins();
        let result = compile_file(
            gw.config_path(),
            gw.store(),
            gw.metrics(),
            plugins,
            generation,
        );
        let mut status = ReloadStatus {
            at: Some(SystemTime::now()),
            trigger: trigger.to_string(),
            ..Default::default()
        };
        let outcome = match result {
            Ok(next) => {
                let notes = self.go_live(&current, next, trigger);
                status.ok = true;
                status.messages = notes;
                Ok(generation)
            }
            Err(errors) => {
                for e in errors.iter() {
                    log::error!("reload ({trigger}) rejected: {e}");
                }
                log::error!(
                    "reload ({trigger}): keeping generation {} ({} problem(s) in {})",
                    current.generation,
                    errors.0.len(),
                    gw.config_path().display()
                );
                gw.metrics().count_reload(false);
                status.messages = errors.iter().map(|e| e.to_string()).collect();
                Err(errors)
            }
        };
        gw.set_last_reload(status);
        outcome
    }

    /// Install a compiled config: sockets kept, admin changes and ejections applied.
    fn go_live(&mut self, current: &Snapshot, mut next: Snapshot, trigger: &str) -> Vec<String> {
        let notes = match next.compiled_mut() {
            Some(c) => keep_sockets(current, c),
            None => Vec::new(),
        };
        for n in &notes {
            log::warn!("reload ({trigger}): {n}");
        }
        self.rot.retain(&next.upstreams);
        self.found.retain(&next.upstreams);
        self.registry.retain(&next.upstreams);
        let store = self.gw.store();
        let members: Vec<_> = self
            .overlay
            .apply(&next, store)
            .into_iter()
            .zip(next.upstreams.iter())
            .map(|(m, u)| self.found.merge(u, m, store))
            .zip(next.upstreams.iter())
            .map(|(m, u)| self.registry.merge(u, m, store))
            .collect();
        // Members new to an upstream that was already serving ramp in.
        for (u, m) in next.upstreams.iter().zip(&members) {
            if let Some(old) = current.upstream(&u.name) {
                for b in m.iter().filter(|b| !old.contains(b.addr())) {
                    self.rot.start_ramp(u, b.addr());
                }
            }
        }
        let upstreams = next
            .upstreams
            .iter()
            .zip(members)
            .map(|(u, m)| {
                let fresh = u.with_backends(m, &self.rot.view(&u.name));
                if let Some(old) = current.upstream(&u.name) {
                    log_panic(old, &fresh);
                }
                Arc::new(fresh)
            })
            .collect();
        let next = next.with_upstreams(upstreams);
        let generation = next.generation;
        self.gw.install(next);
        self.gw.metrics().count_reload(true);
        log::info!(
            "reload ({trigger}): {} is live as generation {generation}",
            self.gw.config_path().display()
        );
        notes
    }
}

/// Sockets are bound once: keep the running listeners, metrics and admin addresses in `next`
/// and say what a graceful upgrade would change.
fn keep_sockets(current: &Compiled, next: &mut Compiled) -> Vec<String> {
    let mut notes = Vec::new();
    if next.listeners != current.listeners {
        notes.push(
            "listener changes need new sockets and are not applied by a reload; \
             use a graceful upgrade (start `portcullis -u`, then SIGQUIT the old process)"
                .to_string(),
        );
        // The sockets stay; each kept listener takes the new file's client policy.
        let mut kept = current.listeners.clone();
        for l in &mut kept {
            if let Some(n) = next.listeners.iter().find(|n| n.name == l.name) {
                l.policy = Arc::clone(&n.policy);
            }
        }
        next.listeners = kept;
    }
    if next.metrics_addr != current.metrics_addr {
        notes.push("the metrics address changes only with a graceful upgrade".to_string());
        next.metrics_addr = current.metrics_addr;
    }
    if next.admin.as_ref().map(|a| a.addr) != current.admin.as_ref().map(|a| a.addr) {
        notes.push("the admin address changes only with a graceful upgrade".to_string());
        match (&mut next.admin, &current.admin) {
            (Some(n), Some(c)) => n.addr = c.addr,
            (n, c) => *n = c.clone(),
        }
    }
    let (a, b) = (&current.server, &next.server);
    if a.threads != b.threads
        || a.work_stealing != b.work_stealing
        || a.upstream_keepalive_pool_size != b.upstream_keepalive_pool_size
    {
        notes.push("`server` settings take effect at the next graceful upgrade".to_string());
    }
    notes
}

/// Say when an upstream enters or leaves panic.
fn log_panic(old: &Upstream, new: &Upstream) {
    match (old.in_panic(), new.in_panic()) {
        (false, true) => log::warn!(
            "upstream {} is in panic: fewer than {:.0}% of its primaries are healthy; balancing over all of them",
            new.name,
            new.panic_threshold.unwrap_or(0.0) * 100.0
        ),
        (true, false) => log::info!("upstream {} leaves panic", new.name),
        _ => {}
    }
}

fn already_member(addr: SocketAddr, upstream: &str) -> AdminRefusal {
    AdminRefusal::new(409, format!("{addr} is already a backend of `{upstream}`"))
}

fn not_member(addr: SocketAddr, upstream: &str) -> AdminRefusal {
    AdminRefusal::new(404, format!("{addr} is not a backend of `{upstream}`"))
}
