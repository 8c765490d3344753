//! Active health checks, run as a Pingora background service.
//!
//! One probe loop per backend address (a backend listed in several upstreams is probed once,
//! with the first upstream's settings). A verdict flips after `healthy_threshold` consecutive
//! successes or `unhealthy_threshold` consecutive failures; the very first probe of a new
//! backend decides at once, so a backend that is down at start leaves rotation after one probe. Every
//! flip is logged and reported to the [`HealthHost`] (the control plane, which publishes the
//! upstreams holding the backend with their eligibility recomputed). The service re-reads the
//! targets whenever the live config changes (reloads, admin calls), starting probes for new
//! backends and stopping those of removed ones.

pub mod probe;
pub mod spec;

pub use spec::{HealthSpec, HttpProbeSpec};

use crate::balance::{now_ns, BackendState};
use async_trait::async_trait;
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the health checks need from the gateway, and nothing more.
pub trait HealthHost: Send + Sync + 'static {
    /// Every backend to probe in the live config, in config order.
    fn targets(&self) -> Vec<HealthTarget>;
    /// Notified whenever the live config or membership changes.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// The live state of `addr`, if any upstream has it.
    fn state(&self, addr: &SocketAddr) -> Option<Arc<BackendState>>;
    /// `target`'s verdict flipped to `healthy`: the host records it in the backend's state
    /// (the probe only reads that state).
    fn transition(&self, target: &HealthTarget, healthy: bool);
    /// `addr` is no longer checked and is to count as healthy again.
    fn forgotten(&self, addr: SocketAddr);
}

/// One backend to probe, as the live config describes it.
#[derive(Clone)]
pub struct HealthTarget {
    /// The address.
    pub addr: SocketAddr,
    /// How to probe it.
    pub spec: HealthSpec,
    /// Its live state.
    pub state: Arc<BackendState>,
    /// Name of the upstream whose settings apply (for logs and metrics).
    pub upstream: Arc<str>,
}

/// The background service that runs every probe loop.
pub struct HealthService {
    host: Arc<dyn HealthHost>,
}

impl HealthService {
    /// A service probing the targets of `host`.
    pub fn new(host: Arc<dyn HealthHost>) -> Self {
        HealthService { host }
    }
}

struct Running {
    spec: HealthSpec,
    task: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.host.subscribe();
        let mut running: HashMap<SocketAddr, Running> = HashMap::new();
        loop {
            reconcile(&self.host, &mut running);
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        for (_, r) in running {
            r.task.abort();
        }
    }
}

fn reconcile(host: &Arc<dyn HealthHost>, running: &mut HashMap<SocketAddr, Running>) {
    let mut wanted: HashMap<SocketAddr, HealthTarget> = HashMap::new();
    for t in host.targets() {
        wanted.entry(t.addr).or_insert(t);
    }
    running.retain(|addr, r| {
        let keep = wanted.get(addr).is_some_and(|t| t.spec == r.spec);
        if !keep {
            r.task.abort();
            if !wanted.contains_key(addr) {
                // No longer checked: an unchecked backend counts as healthy.
                if host.state(addr).is_some_and(|s| !s.is_healthy()) {
                    host.forgotten(*addr);
                }
            }
        }
        keep
    });
    for (addr, target) in wanted {
        if running.contains_key(&addr) {
            continue;
        }
        let spec = target.spec.clone();
        let task = tokio::spawn(probe_loop(Arc::clone(host), target));
        running.insert(addr, Running { spec, task });
    }
}

async fn probe_loop(host: Arc<dyn HealthHost>, t: HealthTarget) {
    if t.spec.http.is_some() {
        probe::prepare_connector().await;
    }
    let probe = probe::probe_for(&t.spec);
    let mut probe_addr = t.addr;
    if let Some(port) = t.spec.port {
        probe_addr.set_port(port);
    }
    let backend = Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(probe_addr),
        weight: 1,
        ext: Default::default(),
    };
    let mut verdict = t.state.is_healthy();
    let mut streak: (bool, usize) = (verdict, 0);
    let mut first = !t.state.mark_probed();
    let idle_after = t.spec.interval.as_nanos() as u64;
    loop {
        let started = now_ns();
        let result = match tokio::time::timeout(t.spec.timeout, probe.check(&backend)).await {
            Ok(Ok(())) => {
                // An HTTP probe's answer time is a latency sample for an idle backend (a TCP
                // probe's connect time is not comparable to a request's).
                if t.spec.http.is_some() {
                    let now = now_ns();
                    t.state
                        .record_probe(now.saturating_sub(started), now, idle_after);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {:?}", t.spec.timeout)),
        };
        let ok = result.is_ok();
        if ok == streak.0 {
            streak.1 += 1;
        } else {
            streak = (ok, 1);
        }
        let threshold = probe.health_threshold(ok);
        if ok != verdict && (first || streak.1 >= threshold) {
            verdict = ok;
            match &result {
                Ok(()) => log::info!(
                    "backend {} of upstream {} is healthy again",
                    t.addr,
                    t.upstream
                ),
                Err(why) => log::warn!(
                    "backend {} of upstream {} is unhealthy: {why}",
                    t.addr,
                    t.upstream
                ),
            }
            host.transition(&t, ok);
        }
        first = false;
        tokio::time::sleep(t.spec.interval).await;
    }
}
