//! The service registry: instances registered through the admin API, each with an optional
//! lease renewed by heartbeat. An expired lease deregisters its instance, which leaves the
//! upstream's members and drains (requests in flight finish).
//!
//! Registrations survive reloads (like other admin changes) and also restarts and graceful
//! upgrades: with `admin.state_file`, every change is written to that file (atomically: a
//! temporary file renamed), and a starting process reads it back. Leases are kept as wall-clock
//! deadlines, so an instance registered with a 30 s lease 10 s before an upgrade has 20 s left
//! in the new process. Entries whose upstream no longer exists, or whose lease ran out while
//! no process was running, are dropped on load.

use super::members::{merge_origin, Wanted};
use crate::balance::StateStore;
use crate::runtime::upstream::{BackendOrigin, UpstreamBackend};
use crate::runtime::Upstream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most registrations a gateway holds.
pub const MAX_REGISTRATIONS: usize = 10_000;

/// Largest state file read back (10,000 registrations with full metadata fit well below).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Shortest and longest lease.
pub const LEASE_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));

/// One registered instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    /// Upstream name.
    pub upstream: String,
    /// The instance.
    pub address: SocketAddr,
    /// Weight (1-1000).
    pub weight: u32,
    /// Serves only while no primary may.
    #[serde(default)]
    pub backup: bool,
    /// Labels such as `zone` or `version`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Lease length; `None`: registered until deregistered.
    #[serde(default, with = "opt_ms")]
    pub ttl: Option<Duration>,
    /// When the lease runs out, in ms since the Unix epoch (wall clock: it must mean the same
    /// in the next process).
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registration {
    /// Milliseconds of lease left (`None`: no lease).
    pub fn left_ms(&self) -> Option<u64> {
        self.expires_at_ms.map(|e| e.saturating_sub(now_ms()))
    }

    pub(super) fn renew(&mut self) {
        self.expires_at_ms = self.ttl.map(|t| now_ms() + t.as_millis() as u64);
    }

    /// The monotonic instant the lease runs out.
    fn deadline(&self) -> Option<Instant> {
        self.left_ms()
            .map(|ms| Instant::now() + Duration::from_millis(ms))
    }
}

/// Every registration, and where they are kept.
#[derive(Debug, Default)]
pub struct Registry {
    pub(super) entries: BTreeMap<(String, SocketAddr), Registration>,
    file: Option<PathBuf>,
}

impl Registry {
    /// Keep registrations in `file` from now on; the entries it holds (read at startup).
    pub fn open(file: Option<&Path>) -> Self {
        let mut r = Registry {
            entries: BTreeMap::new(),
            file: file.map(Path::to_path_buf),
        };
        let Some(path) = file else { return r };
        if let Ok(m) = std::fs::metadata(path) {
            if m.len() > MAX_FILE_BYTES {
                log::error!(
                    "registry: {} is larger than {MAX_FILE_BYTES} bytes; starting empty",
                    path.display()
                );
                return r;
            }
        }
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return r,
            Err(e) => {
                log::error!(
                    "registry: cannot read {}: {e}; starting empty",
                    path.display()
                );
                return r;
            }
        };
        match serde_json::from_slice::<Vec<Registration>>(&text) {
            Ok(list) => {
                let live = list.into_iter().filter(|r| r.left_ms() != Some(0));
                for reg in live.take(MAX_REGISTRATIONS) {
                    r.entries.insert((reg.upstream.clone(), reg.address), reg);
                }
                log::info!(
                    "registry: {} registration(s) restored from {}",
                    r.entries.len(),
                    path.display()
                );
            }
            Err(e) => log::error!(
                "registry: {} is not a registry file ({e}); starting empty",
                path.display()
            ),
        }
        r
    }

    /// Every registration.
    pub fn list(&self) -> Vec<Registration> {
        self.entries.values().cloned().collect()
    }

    /// Write the file, if there is one (a temporary file renamed over it).
    pub(super) fn save(&self) {
        let Some(path) = &self.file else { return };
        let list = self.list();
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            log::error!("registry: cannot write {}: {e}", path.display());
        }
    }

    /// The earliest lease deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(Registration::deadline)
            .min()
    }

    /// Remove the registrations whose lease ran out; the upstream of each.
    pub(super) fn expire(&mut self) -> Vec<String> {
        let gone: Vec<(String, SocketAddr)> = self
            .entries
            .iter()
            .filter(|(_, r)| r.left_ms() == Some(0))
            .map(|(k, _)| k.clone())
            .collect();
        for (u, a) in &gone {
            log::warn!("registry: the lease of {a} in upstream {u} ran out; it leaves and drains");
            self.entries.remove(&(u.clone(), *a));
        }
        if !gone.is_empty() {
            self.save();
        }
        gone.into_iter().map(|(u, _)| u).collect()
    }

    /// Forget registrations of upstreams that no longer exist.
    pub fn retain(&mut self, upstreams: &[Arc<Upstream>]) {
        let before = self.entries.len();
        self.entries
            .retain(|(u, _), _| upstreams.iter().any(|x| &*x.name == u));
        if self.entries.len() != before {
            self.save();
        }
    }

    /// `members` with `up`'s registered instances added (members already there win).
    pub fn merge(
        &self,
        up: &Upstream,
        members: Vec<UpstreamBackend>,
        store: &StateStore,
    ) -> Vec<UpstreamBackend> {
        let wanted = self
            .entries
            .values()
            .filter(|r| r.upstream == *up.name)
            .map(|r| Wanted {
                addr: r.address,
                weight: r.weight,
                backup: r.backup,
                metadata: Some(&r.metadata),
            });
        merge_origin(members, BackendOrigin::Registered, wanted, store, |_| {})
    }
}
