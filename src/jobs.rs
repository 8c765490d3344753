//! The gateway's background jobs, all on one runtime thread: the control plane's start,
//! the lifecycle watch, health checks, DNS discovery, the config-file watch and housekeeping.
//!
//! Pingora gives each background service a runtime with its own thread, I/O driver and timer.
//! These jobs are idle almost all the time, so one runtime serves them all. A job's blocking
//! work (files, the access log) goes to that runtime's blocking pool, so it delays none of
//! the others.

use crate::cli::Cli;
use crate::control::{self, ControlHandle, ControlQueue, DiscoveryLink, HealthLink};
use crate::discovery::DiscoveryService;
use crate::gateway::Gateway;
use crate::health::HealthService;
use crate::reload::ConfigWatcher;
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Every background job of a gateway, run together by one Pingora background service.
pub struct Background {
    control: ControlService,
    lifecycle: Lifecycle,
    health: HealthService,
    discovery: DiscoveryService,
    watcher: ConfigWatcher,
    housekeeping: Housekeeping,
}

impl Background {
    /// The jobs of `gateway`: `control` and `queue` are the control plane's handle and queue,
    /// `phases` Pingora's execution phases.
    pub fn new(
        gateway: &Arc<Gateway>,
        control: ControlHandle,
        queue: ControlQueue,
        phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
        cli: &Cli,
    ) -> Self {
        Background {
            control: ControlService {
                gateway: Arc::clone(gateway),
                queue: std::sync::Mutex::new(Some(queue)),
            },
            lifecycle: Lifecycle {
                gateway: Arc::clone(gateway),
                phases: std::sync::Mutex::new(Some(phases)),
            },
            health: HealthService::new(Arc::new(HealthLink::new(
                Arc::clone(gateway),
                control.clone(),
            ))),
            discovery: DiscoveryService::new(Arc::new(DiscoveryLink::new(
                Arc::clone(gateway),
                control.clone(),
            ))),
            watcher: ConfigWatcher::new(gateway.config_path(), control, !cli.no_watch),
            housekeeping: Housekeeping {
                gateway: Arc::clone(gateway),
                release_memory: None,
            },
        }
    }

    /// Housekeeping calls `release` once a second (see `Extensions::release_memory`).
    pub fn release_memory(mut self, release: Option<fn()>) -> Self {
        self.housekeeping.release_memory = release;
        self
    }
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(
            self.control.start(shutdown.clone()),
            self.lifecycle.start(shutdown.clone()),
            self.health.start(shutdown.clone()),
            self.discovery.start(shutdown.clone()),
            self.watcher.start(shutdown.clone()),
            self.housekeeping.start(shutdown),
        );
    }
}

/// Periodic chores: write out buffered access-log lines (every 100 ms), let filters do their
/// housekeeping and return freed memory to the system (every second).
struct Housekeeping {
    gateway: Arc<Gateway>,
    release_memory: Option<fn()>,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let snapshot = self.gateway.snapshot();
                    // A write to the log file blocks: it runs on the blocking pool, and only
                    // when there is something to write (an idle pool thread ends after 10 s).
                    if snapshot.access_log.has_pending() {
                        let log = Arc::clone(&snapshot);
                        let _ = tokio::task::spawn_blocking(move || log.access_log.flush()).await;
                    }
                    n += 1;
                    if n % 10 == 0 {
                        maintain_filters(&snapshot);
                        if let Some(release) = self.release_memory {
                            release();
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        // Inline at shutdown: the runtime may be stopping, and the last lines must not wait
        // for a pool thread that never runs.
        self.gateway.snapshot().access_log.flush();
    }
}

/// Starts the control plane's thread once the server runs (a thread started before Pingora
/// daemonizes would not survive the fork).
struct ControlService {
    gateway: Arc<Gateway>,
    queue: std::sync::Mutex<Option<ControlQueue>>,
}

#[async_trait]
impl BackgroundService for ControlService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(queue) = queue {
            if let Err(e) = control::spawn(Arc::clone(&self.gateway), queue) {
                log::error!(
                    "cannot start the control plane: {e}; reloads and admin changes will not apply"
                );
            }
        }
    }
}

/// Follows Pingora's execution phases: once a graceful upgrade or shutdown begins, the
/// gateway drains (responses close their connections).
struct Lifecycle {
    gateway: Arc<Gateway>,
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        loop {
            tokio::select! {
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::GracefulUpgradeTransferringFds
                        | ExecutionPhase::GracefulUpgradeCloseTimeout
                        | ExecutionPhase::GracefulTerminate
                        | ExecutionPhase::ShutdownStarted) => self.gateway.set_draining(),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = shutdown.changed() => {
                    self.gateway.set_draining();
                    break;
                }
            }
        }
    }
}

/// Call `maintain` once on every distinct filter instance of the snapshot.
fn maintain_filters(snapshot: &crate::runtime::Snapshot) {
    let mut seen = std::collections::HashSet::new();
    for e in snapshot.filters() {
        if seen.insert(Arc::as_ptr(&e.filter) as *const () as usize) {
            e.filter.maintain();
        }
    }
}
