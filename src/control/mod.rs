//! The control plane: the one writer of the running state.
//!
//! Every change arrives here as a [`Command`] on one channel and is applied in order on one
//! thread (`portcullis-control`): a reload (read the file, compile, load certificates), an
//! admin change, a health verdict, a circuit opening. It is the only writer of a backend's
//! health and enablement as well as of the snapshots. Each produces a new immutable
//! [`Snapshot`](crate::runtime::Snapshot), published with ArcSwap; requests only read
//! snapshots. Because there is one writer, an admin change made during a reload is in the
//! next snapshot, and a reload re-applies every admin change made since startup. File reads,
//! name resolution and certificate loading happen on this thread, never on an async worker.

mod discovered;
mod leases;
mod members;
pub mod registry;
mod rotation;
mod writer;

pub use discovered::DiscoveryLink;
pub use writer::AdminRefusal;

use crate::admin::overlay::AddedBackend;
use crate::balance::BackendState;
use crate::config::ConfigErrors;
use crate::gateway::Gateway;
use crate::health::{HealthHost, HealthTarget};
use crate::observe::events::Event;
use portcullis_plugin::Ejector;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// An admin API change to an upstream's members.
#[derive(Debug, Clone)]
pub enum AdminChange {
    /// Add a backend (`address` is resolved by the control plane).
    Add {
        /// Upstream name.
        upstream: String,
        /// `host:port` or `ip:port`.
        address: String,
        /// Weight, backup flag, labels.
        backend: AddedBackend,
    },
    /// Remove a backend.
    Remove {
        /// Upstream name.
        upstream: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// Register an instance in the registry (`address` is resolved by the control plane).
    Register {
        /// Upstream name.
        upstream: String,
        /// `host:port` or `ip:port`.
        address: String,
        /// Weight, backup flag, labels.
        backend: AddedBackend,
        /// Lease; `None`: until deregistered.
        ttl: Option<Duration>,
    },
    /// Renew a registration's lease.
    Heartbeat {
        /// Upstream name.
        upstream: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// Deregister an instance.
    Deregister {
        /// Upstream name.
        upstream: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// Drain (`enabled: false`) or enable a backend.
    SetEnabled {
        /// Upstream name.
        upstream: String,
        /// Its address.
        addr: SocketAddr,
        /// Take new requests.
        enabled: bool,
    },
}

/// What the control plane is asked to do.
enum Command {
    Reload {
        trigger: &'static str,
        reply: Option<oneshot::Sender<Result<u64, ConfigErrors>>>,
    },
    Admin {
        change: AdminChange,
        reply: oneshot::Sender<Result<(), AdminRefusal>>,
    },
    Health(SocketAddr, bool),
    Eject {
        upstream: String,
        addr: SocketAddr,
        duration: Duration,
    },
    Discovered {
        upstream: String,
        found: Vec<crate::discovery::Found>,
    },
    Registrations(oneshot::Sender<Vec<registry::Registration>>),
    Transition(Event),
}

/// A sender of commands to the control plane. Cheap to clone; every service that changes
/// state holds one instead of writing itself.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
}

/// The receiving end, handed to [`spawn`].
pub struct ControlQueue(mpsc::Receiver<Command>);

/// A handle and the queue it feeds. Commands sent before [`spawn`] wait in the queue.
pub fn channel() -> (ControlHandle, ControlQueue) {
    let (tx, rx) = mpsc::channel();
    (ControlHandle { tx }, ControlQueue(rx))
}

impl ControlHandle {
    /// Re-read the config file and make it live if it is valid; the new generation, or why
    /// not.
    pub async fn reload(&self, trigger: &'static str) -> Result<u64, ConfigErrors> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            ConfigErrors::file_level(
                std::path::Path::new("-"),
                "the control plane is not running".to_string(),
            )
        };
        self.tx
            .send(Command::Reload {
                trigger,
                reply: Some(reply),
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Apply an admin change; `Err` says why it was refused (status and message).
    pub async fn admin(&self, change: AdminChange) -> Result<(), AdminRefusal> {
        let (reply, answer) = oneshot::channel();
        let gone = || AdminRefusal::new(503, "the control plane is not running");
        self.tx
            .send(Command::Admin { change, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Every registration of the registry.
    pub async fn registrations(&self) -> Vec<registry::Registration> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Registrations(reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// DNS discovery found `found` (sorted, not empty) for `upstream`.
    pub fn discovered(&self, upstream: &str, found: Vec<crate::discovery::Found>) {
        let _ = self.tx.send(Command::Discovered {
            upstream: upstream.to_string(),
            found,
        });
    }

    /// A backend's health verdict changed to `healthy`.
    pub fn health_changed(&self, addr: SocketAddr, healthy: bool) {
        let _ = self.tx.send(Command::Health(addr, healthy));
    }
}

impl Ejector for ControlHandle {
    fn eject(&self, upstream: &str, backend: SocketAddr, duration: Duration) {
        let _ = self.tx.send(Command::Eject {
            upstream: upstream.to_string(),
            addr: backend,
            duration,
        });
    }

    fn transition(&self, scope: &str, backend: SocketAddr, from: &str, to: &str, why: &str) {
        let e = Event::now(
            "circuit",
            scope.to_string(),
            backend.to_string(),
            from,
            to,
            why,
        );
        let _ = self.tx.send(Command::Transition(e));
    }
}

/// Start the control plane's thread for `gateway`, serving the commands of `queue`.
pub fn spawn(gateway: Arc<Gateway>, queue: ControlQueue) -> std::io::Result<()> {
    let mut w = writer::Writer::new(gateway);
    std::thread::Builder::new()
        .name("portcullis-control".into())
        .spawn(move || run(&mut w, queue.0))
        .map(|_| ())
}

fn run(w: &mut writer::Writer, rx: mpsc::Receiver<Command>) {
    loop {
        let next = match w.next_deadline() {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        if let Some(cmd) = next {
            // A filter factory is outside code: a panic in it must not stop the one writer.
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(w, cmd)));
            if handled.is_err() {
                log::error!("control plane: a command panicked; the running config is unchanged");
            }
        }
        w.expire(Instant::now());
    }
}

fn handle(w: &mut writer::Writer, cmd: Command) {
    match cmd {
        Command::Reload { trigger, reply } => {
            let result = w.reload(trigger);
            if let Some(r) = reply {
                let _ = r.send(result);
            }
        }
        Command::Admin { change, reply } => {
            let _ = reply.send(w.admin(change));
        }
        Command::Health(addr, healthy) => w.health_changed(addr, healthy),
        Command::Eject {
            upstream,
            addr,
            duration,
        } => w.eject(&upstream, addr, duration),
        Command::Discovered { upstream, found } => w.discovered(&upstream, found),
        Command::Registrations(reply) => {
            let _ = reply.send(w.registrations());
        }
        Command::Transition(e) => w.gw.events().push(e),
    }
}

/// What the health checks see of the gateway: the targets, change notices, and where to
/// report a transition.
pub struct HealthLink {
    gateway: Arc<Gateway>,
    control: ControlHandle,
}

impl HealthLink {
    /// Health checks of `gateway`'s live config, reporting to `control`.
    pub fn new(gateway: Arc<Gateway>, control: ControlHandle) -> Self {
        HealthLink { gateway, control }
    }
}

impl HealthHost for HealthLink {
    fn targets(&self) -> Vec<HealthTarget> {
        self.gateway.snapshot().health_targets()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.gateway.subscribe()
    }

    fn state(&self, addr: &SocketAddr) -> Option<Arc<BackendState>> {
        self.gateway.store().get(addr)
    }

    fn transition(&self, target: &HealthTarget, healthy: bool) {
        self.gateway.metrics().count_health_transition(
            &target.upstream,
            target.state.label(),
            healthy,
        );
        self.control.health_changed(target.addr, healthy);
    }

    fn forgotten(&self, addr: SocketAddr) {
        self.control.health_changed(addr, true);
    }
}
