//! The registry's calls applied by the control plane: register, heartbeat, deregister, and
//! the leases that run out. The state itself is [`super::registry::Registry`].

use super::registry::{Registration, MAX_REGISTRATIONS};
use super::writer::{AdminRefusal, Writer};
use super::AdminChange;
use crate::admin::overlay::AddedBackend;
use crate::runtime::compile::resolve_backend_addr;
use crate::runtime::upstream::BackendOrigin;
use crate::runtime::Upstream;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

impl Writer {
    /// Apply a registry call of the admin API to `up`.
    pub(super) fn registry_change(
        &mut self,
        up: &Arc<Upstream>,
        change: AdminChange,
    ) -> Result<(), AdminRefusal> {
        match change {
            AdminChange::Register {
                address,
                backend,
                ttl,
                ..
            } => {
                let addr = resolve_backend_addr(&address).map_err(|e| AdminRefusal::new(400, e))?;
                self.register(up, addr, backend, ttl)?;
            }
            AdminChange::Heartbeat { addr, .. } => return self.heartbeat(up, addr),
            AdminChange::Deregister { addr, .. } => self.deregister(up, addr)?,
            _ => return Err(AdminRefusal::new(400, "not a registry call")),
        }
        self.count_registered();
        Ok(())
    }

    /// Register (or re-register) an instance; its lease starts now.
    fn register(
        &mut self,
        up: &Arc<Upstream>,
        addr: SocketAddr,
        b: AddedBackend,
        ttl: Option<Duration>,
    ) -> Result<(), AdminRefusal> {
        let known = up.backends().iter().find(|m| m.addr() == addr);
        if known.is_some_and(|m| m.origin != BackendOrigin::Registered) {
            return Err(AdminRefusal::new(
                409,
                format!(
                    "{addr} is already a backend of `{}` (not a registration)",
                    up.name
                ),
            ));
        }
        let key = (up.name.to_string(), addr);
        if known.is_none()
            && !self.registry.entries.contains_key(&key)
            && self.registry.entries.len() >= MAX_REGISTRATIONS
        {
            return Err(AdminRefusal::new(
                409,
                format!("the registry is full ({MAX_REGISTRATIONS} registrations)"),
            ));
        }
        let mut reg = Registration {
            upstream: up.name.to_string(),
            address: addr,
            weight: b.weight,
            backup: b.backup,
            metadata: b.metadata,
            ttl,
            expires_at_ms: None,
        };
        reg.renew();
        log::info!(
            "registry: {addr} registered in upstream {} (lease {ttl:?})",
            up.name
        );
        self.registry.entries.insert(key, reg);
        self.registry.save();
        if known.is_none() {
            self.rot.start_ramp(up, addr);
        }
        self.remerge(up);
        Ok(())
    }

    /// Renew a lease.
    fn heartbeat(&mut self, up: &Upstream, addr: SocketAddr) -> Result<(), AdminRefusal> {
        let reg = self.registration(up, addr)?;
        reg.renew();
        self.registry.save();
        Ok(())
    }

    /// Deregister an instance: it leaves and drains.
    fn deregister(&mut self, up: &Arc<Upstream>, addr: SocketAddr) -> Result<(), AdminRefusal> {
        self.registration(up, addr)?;
        self.registry.entries.remove(&(up.name.to_string(), addr));
        self.registry.save();
        log::info!("registry: {addr} deregistered from upstream {}", up.name);
        self.remerge(up);
        Ok(())
    }

    fn registration(
        &mut self,
        up: &Upstream,
        addr: SocketAddr,
    ) -> Result<&mut Registration, AdminRefusal> {
        self.registry
            .entries
            .get_mut(&(up.name.to_string(), addr))
            .ok_or_else(|| {
                AdminRefusal::new(404, format!("{addr} is not registered in `{}`", up.name))
            })
    }

    /// End the leases that ran out, and republish the upstreams they leave.
    pub fn expire_leases(&mut self) {
        let left = self.registry.expire();
        if left.is_empty() {
            return;
        }
        for name in &left {
            self.gw.metrics().fleet().count_expired(name);
        }
        let snapshot = self.gw.snapshot();
        for name in left.into_iter().collect::<BTreeSet<_>>() {
            if let Some(up) = snapshot.upstream(&name) {
                self.remerge(up);
            }
        }
        self.count_registered();
    }

    /// Set the registered-instances gauge of every upstream.
    pub(super) fn count_registered(&self) {
        let list = self.registry.list();
        for up in self.gw.snapshot().upstreams.iter() {
            let n = list.iter().filter(|r| r.upstream == *up.name).count();
            self.gw.metrics().fleet().set_registered(&up.name, n);
        }
    }

    /// Publish `up` with its registered members merged again.
    pub(super) fn remerge(&self, up: &Arc<Upstream>) {
        let members = self
            .registry
            .merge(up, up.backends().to_vec(), self.gw.store());
        let next = up.with_backends(members, &self.rot.view(&up.name));
        self.replace(up, next);
    }
}
