//! One DNS resolution with hickory-resolver: A, AAAA or SRV records to addresses, weights
//! and the time the answer stays valid.

use super::{DiscoverSpec, Found};
use crate::config::discover::RecordType;
use crate::config::upstream::MAX_WEIGHT;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most addresses taken from one answer (a hostile or broken server cannot grow an upstream
/// without bound).
pub const MAX_FOUND: usize = 256;

/// A resolver for `spec`: its own name servers, or the system's (read when the config was
/// compiled, on the control thread).
pub fn resolver(spec: &DiscoverSpec) -> TokioResolver {
    let (config, mut opts) = match &spec.servers {
        Some(servers) => {
            let mut group = NameServerConfigGroup::new();
            for s in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[s.ip()],
                    s.port(),
                    true,
                ));
            }
            (
                ResolverConfig::from_parts(None, vec![], group),
                ResolverOpts::default(),
            )
        }
        None => spec.system.clone(),
    };
    opts.timeout = spec.timeout;
    opts.attempts = 1;
    // We schedule by TTL ourselves; the cache would only hide a change.
    opts.cache_size = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// Resolve `spec.name`: the addresses found and how long the answer is valid.
pub async fn resolve(
    r: &TokioResolver,
    spec: &DiscoverSpec,
) -> Result<(Vec<Found>, Duration), String> {
    let name = spec.name.as_str();
    let (mut found, until) = match spec.record {
        RecordType::A => {
            let l = r.ipv4_lookup(name).await.map_err(|e| e.to_string())?;
            let ips = l.iter().map(|a| IpAddr::V4(a.0));
            (spec.with_port(ips), l.valid_until())
        }
        RecordType::AAAA => {
            let l = r.ipv6_lookup(name).await.map_err(|e| e.to_string())?;
            let ips = l.iter().map(|a| IpAddr::V6(a.0));
            (spec.with_port(ips), l.valid_until())
        }
        RecordType::SRV => srv(r, name).await?,
    };
    found.sort();
    found.dedup_by_key(|f| f.addr);
    found.truncate(MAX_FOUND);
    Ok((found, until.saturating_duration_since(Instant::now())))
}

/// SRV records, each target resolved to its IPv4 and IPv6 addresses. Records of the lowest
/// priority are primaries, the others backups; SRV weight 0 counts as 1.
async fn srv(r: &TokioResolver, name: &str) -> Result<(Vec<Found>, Instant), String> {
    let l = r.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut until = l.as_lookup().valid_until();
    let best = l.iter().map(|s| s.priority()).min().unwrap_or(0);
    let mut found = Vec::new();
    for s in l.iter().take(MAX_FOUND) {
        let ips = r
            .lookup_ip(s.target().clone())
            .await
            .map_err(|e| format!("SRV target {}: {e}", s.target()))?;
        until = until.min(ips.valid_until());
        for ip in ips.iter() {
            found.push(Found {
                addr: SocketAddr::new(ip, s.port()),
                weight: u32::from(s.weight()).clamp(1, MAX_WEIGHT),
                backup: s.priority() > best,
            });
        }
    }
    Ok((found, until))
}
