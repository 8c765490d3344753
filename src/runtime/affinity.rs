//! The affinity table: key -> backend, remembered with a TTL and bounded by `max_entries`.
//!
//! Unlike consistent hashing, a mapping is remembered, so a membership change moves nobody
//! whose backend still serves. The table is live state like a backend's in-flight count: it is
//! shared by every membership version of an upstream and kept across reloads that keep its
//! settings (through the plugin API's persistent store), and its entries name addresses, so
//! a backend that still exists after a reload keeps its keys.
//!
//! It is sharded: each of up to 16 shards is an LRU map behind its own mutex, holding
//! `max_entries / shards` entries, so the total never exceeds `max_entries`. A lookup or an
//! insert locks one shard for a hash-map operation; nothing else in the request path locks.

use crate::balance::KeySource;
use crate::config::upstream::AffinityConfig;
use crate::config::PathError;
use lru::LruCache;
use pingora::http::RequestHeader;
use prometheus::{IntCounter, IntGauge};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

/// Most shards.
const SHARDS: usize = 16;
/// Bounds of `ttl` and `max_entries`.
const TTL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
const ENTRIES: (usize, usize) = (16, 10_000_000);

/// The table's counters and gauge, resolved once per upstream.
#[derive(Clone)]
pub struct AffinitySeries {
    /// Entries held.
    pub entries: IntGauge,
    /// Requests sent to their remembered backend.
    pub hits: IntCounter,
    /// Requests with no usable entry (none, expired, or its backend cannot serve).
    pub misses: IntCounter,
    /// Entries dropped for room (least recently used).
    pub evicted: IntCounter,
    /// Entries dropped because their TTL passed.
    pub expired: IntCounter,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: SocketAddr,
    expires: u64,
}

/// One upstream's table.
pub struct Affinity {
    key: KeySource,
    ttl_ns: u64,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<LruCache<u64, Entry>>]>,
    series: AffinitySeries,
}

/// Checked settings: the key, the TTL and the bound.
pub type AffinitySpec = (KeySource, Duration, usize);

/// Check `c`; errors are located under `affinity`.
pub fn check(c: &AffinityConfig) -> Result<AffinitySpec, Vec<PathError>> {
    let mut errors = Vec::new();
    let key = KeySource::parse(&c.key)
        .map_err(|e| errors.push(PathError::at("affinity.key", e.to_string())))
        .ok();
    if key == Some(KeySource::Path) {
        errors.push(PathError::at(
            "affinity.key",
            "`path` is not a client key: use client_ip, header:<name>, cookie:<name> or query:<name>",
        ));
    }
    if !(TTL.0..=TTL.1).contains(&c.ttl.0) {
        errors.push(PathError::at(
            "affinity.ttl",
            format!("must be between 1s and 7 days, got {:?}", c.ttl.0),
        ));
    }
    if !(ENTRIES.0..=ENTRIES.1).contains(&c.max_entries) {
        errors.push(PathError::at(
            "affinity.max_entries",
            format!(
                "must be between {} and {}, got {}",
                ENTRIES.0, ENTRIES.1, c.max_entries
            ),
        ));
    }
    match key {
        Some(k) if errors.is_empty() => Ok((k, c.ttl.0, c.max_entries)),
        _ => Err(errors),
    }
}

/// Upstream `name`'s table for `c`: the one the running config has when the settings are the
/// same (so a reload keeps the mappings), else a new one. Its series are get-or-register, so
/// they count on across reloads.
pub fn build(
    name: &str,
    c: &AffinityConfig,
    bc: &portcullis_plugin::BuildContext<'_>,
) -> Result<std::sync::Arc<Affinity>, Vec<PathError>> {
    let spec = check(c)?;
    let err = |e: portcullis_plugin::FilterError| vec![PathError::at("affinity", e.to_string())];
    let counter = |metric: &str, help: &str| {
        bc.int_counter_vec(metric, help, &["upstream"])
            .map(|v| v.with_label_values(&[name]))
    };
    let evictions = bc
        .int_counter_vec(
            "portcullis_affinity_evictions_total",
            "Affinity entries dropped, by reason: lru (for room) or ttl (expired).",
            &["upstream", "reason"],
        )
        .map_err(err)?;
    let series = AffinitySeries {
        entries: bc
            .int_gauge_vec(
                "portcullis_affinity_entries",
                "Keys the affinity table remembers.",
                &["upstream"],
            )
            .map_err(err)?
            .with_label_values(&[name]),
        hits: counter(
            "portcullis_affinity_hits_total",
            "Requests sent to the backend their key is remembered with.",
        )
        .map_err(err)?,
        misses: counter(
            "portcullis_affinity_misses_total",
            "Requests whose key had no entry, an expired one, or one whose backend cannot serve.",
        )
        .map_err(err)?,
        evicted: evictions.with_label_values(&[name, "lru"]),
        expired: evictions.with_label_values(&[name, "ttl"]),
    };
    let key = format!("affinity|{name}|{:?}|{:?}|{}", spec.0, spec.1, spec.2);
    Ok(bc.persistent(&key, || {
        series.entries.set(0);
        Affinity::new(&spec, series.clone())
    }))
}

impl Affinity {
    /// An empty table for `spec`, counting into `series`.
    pub fn new(spec: &AffinitySpec, series: AffinitySeries) -> Self {
        let (key, ttl, max) = spec;
        let shards = SHARDS.min(*max).max(1);
        let per_shard = NonZeroUsize::new(max / shards).unwrap_or(NonZeroUsize::MIN);
        Affinity {
            key: key.clone(),
            ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            hasher: Default::default(),
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            series,
        }
    }

    /// The hash of the request's key.
    #[inline]
    pub fn key_of(&self, req: &RequestHeader, client: Option<IpAddr>) -> u64 {
        let mut buf = [0u8; 16];
        self.hasher
            .hash_one(self.key.extract(req, client, &mut buf))
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, LruCache<u64, Entry>> {
        let i = (h >> 48) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend remembered for `h`, unless its TTL has passed (then it is dropped).
    #[inline]
    pub fn lookup(&self, h: u64, now: u64) -> Option<SocketAddr> {
        let mut shard = self.shard(h);
        let e = *shard.get(&h)?;
        if e.expires > now {
            return Some(e.addr);
        }
        shard.pop(&h);
        self.series.entries.dec();
        self.series.expired.inc();
        None
    }

    /// Count a request sent to its remembered backend, or one that was not.
    #[inline]
    pub fn count(&self, hit: bool) {
        if hit {
            self.series.hits.inc();
        } else {
            self.series.misses.inc();
        }
    }

    /// Remember (or refresh) `h` -> `addr` for the TTL from `now`. A new key takes the place of
    /// the least recently used one when the shard is full, and an expired tail is swept.
    pub fn remember(&self, h: u64, addr: SocketAddr, now: u64) {
        let entry = Entry {
            addr,
            expires: now.saturating_add(self.ttl_ns),
        };
        let mut shard = self.shard(h);
        if let Some(e) = shard.get_mut(&h) {
            *e = entry;
            return;
        }
        if shard.peek_lru().is_some_and(|(_, e)| e.expires <= now) {
            shard.pop_lru();
            self.series.entries.dec();
            self.series.expired.inc();
        }
        match shard.push(h, entry) {
            Some(_) => self.series.evicted.inc(),
            None => self.series.entries.inc(),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> AffinitySeries {
        let c = |n: &str| IntCounter::new(n, "t").unwrap();
        AffinitySeries {
            entries: IntGauge::new("e", "t").unwrap(),
            hits: c("h"),
            misses: c("m"),
            evicted: c("v"),
            expired: c("x"),
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn holds_at_most_max_entries_and_counts_what_it_drops() {
        let t = Affinity::new(
            &(KeySource::ClientIp, Duration::from_secs(60), 1000),
            series(),
        );
        for k in 0..5_000u64 {
            t.remember(t.hasher.hash_one(k), addr(1), 0);
        }
        assert!(t.len() <= 1000, "{}", t.len());
        assert!(t.len() >= 900, "{}", t.len());
        assert_eq!(t.series.entries.get() as usize, t.len());
        assert_eq!(t.series.evicted.get() as usize, 5_000 - t.len());
    }

    #[test]
    fn an_entry_expires_after_its_ttl_and_a_use_refreshes_it() {
        let t = Affinity::new(
            &(KeySource::ClientIp, Duration::from_secs(1), 100),
            series(),
        );
        let s = 1_000_000_000;
        t.remember(7, addr(1), 0);
        assert_eq!(t.lookup(7, s / 2), Some(addr(1)));
        t.remember(7, addr(1), s / 2);
        assert_eq!(t.lookup(7, s + s / 4), Some(addr(1)), "refreshed at 0.5 s");
        assert_eq!(t.lookup(7, 2 * s), None);
        assert_eq!(t.series.expired.get(), 1);
        assert_eq!(t.series.entries.get(), 0);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let c: AffinityConfig =
            serde_yaml::from_str("{ key: path, ttl: 0s, max_entries: 1 }").unwrap();
        let text: Vec<String> = check(&c)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        for key in ["affinity.key", "affinity.ttl", "affinity.max_entries"] {
            assert!(text.iter().any(|t| t.starts_with(key)), "{key}: {text:?}");
        }
    }
}
