//! DNS service discovery: a background service that resolves each discovering upstream's name
//! on its own schedule (the answer's TTL, clamped to `refresh.min..refresh.max`) and reports
//! what it found to the control plane, which makes it the upstream's discovered members.
//!
//! Like the health checks, it knows the gateway only through [`DiscoveryHost`]: the jobs of the
//! live config, a change notice, and where to report. Resolution is async (hickory-resolver) on
//! the background service's runtime, never on a request worker. A failed, timed-out or empty
//! answer reports nothing: the upstream keeps its last good set, and the failure is counted
//! and logged.

pub mod dns;

use crate::config::discover::{DiscoverConfig, RecordType};
use crate::config::upstream::MAX_WEIGHT;
use crate::config::PathError;
use async_trait::async_trait;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One backend found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Address and port.
    pub addr: SocketAddr,
    /// Weight (A/AAAA: the configured one; SRV: the record's).
    pub weight: u32,
    /// SRV records of a higher priority number than the lowest serve as backups.
    pub backup: bool,
}

/// A compiled `discover:` section.
#[derive(Debug, Clone)]
pub struct DiscoverSpec {
    /// Fully qualified name (a trailing dot added).
    pub name: String,
    /// What to ask for.
    pub record: RecordType,
    /// Port of A/AAAA addresses.
    pub port: u16,
    /// Weight of A/AAAA addresses.
    pub weight: u32,
    /// Refresh bounds.
    pub min: Duration,
    /// Refresh bounds.
    pub max: Duration,
    /// One resolution's limit.
    pub timeout: Duration,
    /// Name servers given in the config (`None`: the system's, below).
    pub servers: Option<Vec<SocketAddr>>,
    /// The system's resolver settings, read at compile time when `servers` is `None`.
    pub system: (ResolverConfig, ResolverOpts),
}

impl PartialEq for DiscoverSpec {
    fn eq(&self, o: &Self) -> bool {
        (&self.name, self.record, self.port, self.weight) == (&o.name, o.record, o.port, o.weight)
            && (self.min, self.max, self.timeout) == (o.min, o.max, o.timeout)
            && self.servers == o.servers
    }
}

impl DiscoverSpec {
    /// Check and compile `c` (reads `/etc/resolv.conf` when no `resolvers` are given: call
    /// it on the control thread).
    pub fn compile(c: &DiscoverConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        let name = c.dns.trim_end_matches('.');
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            errors.push(PathError::at(
                "dns",
                format!("`{}` is not a DNS name", c.dns),
            ));
        }
        let port = match (c.record, c.port) {
            (RecordType::SRV, None) => 0,
            (RecordType::SRV, Some(_)) => {
                errors.push(PathError::at("port", "SRV records carry their own ports"));
                0
            }
            (_, Some(p)) if p > 0 => p,
            _ => {
                errors.push(PathError::at(
                    "port",
                    "A and AAAA discovery needs a port (1-65535)",
                ));
                0
            }
        };
        if !(1..=MAX_WEIGHT).contains(&c.weight) {
            errors.push(PathError::at(
                "weight",
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        let (min, max) = (c.refresh.min.0, c.refresh.max.0);
        if min < Duration::from_millis(100) || max > Duration::from_secs(86_400) || min > max {
            errors.push(PathError::at("refresh", "need 100ms <= min <= max <= 24h"));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(30)).contains(&c.timeout.0) {
            errors.push(PathError::at("timeout", "must be between 10ms and 30s"));
        }
        let servers = servers(&c.resolvers, &mut errors);
        let system = match &servers {
            Some(_) => (ResolverConfig::default(), ResolverOpts::default()),
            None => hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
                errors.push(PathError::at(
                    "resolvers",
                    format!("no `resolvers` given and the system's cannot be read ({e})"),
                ));
                (ResolverConfig::default(), ResolverOpts::default())
            }),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(DiscoverSpec {
            name: format!("{name}."),
            record: c.record,
            port,
            weight: c.weight,
            min,
            max,
            timeout: c.timeout.0,
            servers,
            system,
        })
    }

    fn with_port(&self, ips: impl Iterator<Item = std::net::IpAddr>) -> Vec<Found> {
        ips.map(|ip| Found {
            addr: SocketAddr::new(ip, self.port),
            weight: self.weight,
            backup: false,
        })
        .collect()
    }
}

fn servers(list: &[String], errors: &mut Vec<PathError>) -> Option<Vec<SocketAddr>> {
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match s.parse::<SocketAddr>().or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        }) {
            Ok(a) => out.push(a),
            Err(_) => errors.push(PathError::at(
                format!("resolvers[{i}]"),
                format!("`{s}` is not an IP address or ip:port"),
            )),
        }
    }
    Some(out)
}

/// An upstream that discovers, with its spec.
#[derive(Debug, Clone)]
pub struct Job {
    /// Upstream name.
    pub upstream: Arc<str>,
    /// What to resolve.
    pub spec: Arc<DiscoverSpec>,
}

/// What discovery sees of the gateway.
pub trait DiscoveryHost: Send + Sync + 'static {
    /// The jobs of the live config.
    fn jobs(&self) -> Vec<Job>;
    /// Fires when the live config (or its members) change.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// A resolution of `upstream` found `found` (never empty).
    fn found(&self, upstream: &str, found: Vec<Found>);
    /// A resolution of `upstream` failed (`why`); the last good set stays.
    fn failed(&self, upstream: &str, why: &str);
}

/// The background service.
pub struct DiscoveryService {
    host: Arc<dyn DiscoveryHost>,
}

impl DiscoveryService {
    /// Discovery for `host`'s jobs.
    pub fn new(host: Arc<dyn DiscoveryHost>) -> Self {
        DiscoveryService { host }
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.host.subscribe();
        let mut running: HashMap<Arc<str>, (Arc<DiscoverSpec>, JoinHandle<()>)> = HashMap::new();
        loop {
            let jobs = self.host.jobs();
            running.retain(|name, (spec, task)| {
                let keep = jobs.iter().any(|j| j.upstream == *name && j.spec == *spec);
                if !keep {
                    task.abort();
                }
                keep
            });
            for j in jobs {
                if let Entry::Vacant(slot) = running.entry(Arc::clone(&j.upstream)) {
                    let spec = Arc::clone(&j.spec);
                    slot.insert((spec, tokio::spawn(resolve_loop(Arc::clone(&self.host), j))));
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        for (_, (_, task)) in running {
            task.abort();
        }
    }
}

/// Resolve `job` until aborted: after an answer, wait its TTL (clamped); after a failure,
/// `refresh.min`.
async fn resolve_loop(host: Arc<dyn DiscoveryHost>, job: Job) {
    let resolver = dns::resolver(&job.spec);
    let spec = &job.spec;
    loop {
        let answer = tokio::time::timeout(spec.timeout, dns::resolve(&resolver, spec)).await;
        let wait = match answer {
            Ok(Ok((found, ttl))) if !found.is_empty() => {
                host.found(&job.upstream, found);
                ttl.clamp(spec.min, spec.max)
            }
            Ok(Ok(_)) => {
                host.failed(&job.upstream, "the answer has no records");
                spec.min
            }
            Ok(Err(e)) => {
                host.failed(&job.upstream, &e);
                spec.min
            }
            Err(_) => {
                host.failed(
                    &job.upstream,
                    &format!("no answer within {:?}", spec.timeout),
                );
                spec.min
            }
        };
        tokio::time::sleep(wait).await;
    }
}
