//! `rate_limit`: GCRA rate limiting with governor.
//!
//! ```yaml
//! - kind: rate_limit
//!   rate: 100          # requests per `per`
//!   per: second        # second (default) | minute
//!   burst: 20          # extra requests allowed at once on top of `rate` (default 0)
//!   key: client_ip     # client_ip (default) | route | header:<name> | cookie:<name>
//!   max_keys: 100000   # cap on tracked keys (default 100 000)
//! ```
//!
//! A burst of requests gets `rate + burst` through at once; after that one request per
//! `per / rate`. A refused request gets `429` with `Retry-After` and the IETF `RateLimit` /
//! `RateLimit-Policy` headers, and counts in `portcullis_rate_limited_total{route}`.
//! With a header or cookie key, a request without it is keyed by its client IP. Keys idle for
//! longer than it takes to refill their bucket are evicted every second; if more than
//! `max_keys` remain, the table is reset (every key starts again with a full bucket) and a
//! warning is logged, so memory stays bounded. Limiter state survives reloads while the
//! filter's config is unchanged.

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::http::{HeaderName, HeaderValue};
use portcullis_plugin::prometheus::IntCounter;
use portcullis_plugin::{
    BuildContext, Decision, Filter, FilterError, Hooks, RequestState, RequestView, Response,
};
use serde::Deserialize;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub mod shared;
pub mod store;

use shared::{Gcra, Shared, SyncTable, Verdict};
use store::{Conn, Mode, OnError, StoreConfig, Trouble};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
enum Per {
    #[default]
    Second,
    Minute,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: u32,
    #[serde(default)]
    per: Per,
    #[serde(default)]
    burst: u32,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    #[serde(default)]
    store: Option<StoreConfig>,
}

fn default_key() -> String {
    "client_ip".into()
}
fn default_max_keys() -> usize {
    100_000
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    ClientIp,
    Route,
    Header(HeaderName),
    Cookie(String),
}

fn parse_key(s: &str) -> Result<Key, FilterError> {
    let bad = || {
        FilterError::at(
            "key",
            format!("unknown key `{s}` (allowed: client_ip, route, header:<name>, cookie:<name>)"),
        )
    };
    match s.split_once(':') {
        None if s == "client_ip" => Ok(Key::ClientIp),
        None if s == "route" => Ok(Key::Route),
        Some(("header", n)) if !n.is_empty() => HeaderName::from_bytes(n.as_bytes())
            .map(Key::Header)
            .map_err(|_| FilterError::at("key", format!("`{n}` is not a valid header name"))),
        Some(("cookie", n)) if !n.is_empty() => Ok(Key::Cookie(n.to_string())),
        _ => Err(bad()),
    }
}

/// The limiter state, shared across reloads while the config is unchanged.
struct Limiters {
    direct: DefaultDirectRateLimiter,
    keyed: ArcSwap<DefaultKeyedRateLimiter<u128>>,
}

/// The filter.
pub struct RateLimit {
    key: Key,
    quota: Quota,
    max_keys: usize,
    limiters: Arc<Limiters>,
    hasher: RandomState,
    limited: IntCounter,
    policy: HeaderValue,
    window_secs: u64,
    shared: Option<Shared>,
    /// `{prefix:route:limit:` — the start of every Redis key of this limit.
    redis_prefix: String,
}

/// Factory: `kind: rate_limit`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    Ok(Arc::new(RateLimit::build(config, cx)?))
}

impl RateLimit {
    /// Build from config (the factory, typed).
    pub fn build(
        config: &portcullis_plugin::serde_yaml::Value,
        cx: &BuildContext<'_>,
    ) -> Result<Self, FilterError> {
        let c: Config = parse_config(config)?;
        let rate =
            NonZeroU32::new(c.rate).ok_or_else(|| FilterError::at("rate", "must be at least 1"))?;
        let key = parse_key(&c.key)?;
        if c.max_keys == 0 {
            return Err(FilterError::at("max_keys", "must be at least 1"));
        }
        let window = match c.per {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        };
        let capacity = c
            .rate
            .checked_add(c.burst)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| FilterError::at("burst", "rate + burst is too large"))?;
        let quota = Quota::with_period(window / rate.get())
            .ok_or_else(|| FilterError::at("rate", "too high for the period"))?
            .allow_burst(capacity);
        let state_key = format!(
            "rate_limit/{}/{}/{:?}/{}/{}",
            cx.scope().label(),
            c.rate,
            c.per,
            c.burst,
            c.key
        );
        let limiters = cx.persistent(&state_key, || Limiters {
            direct: RateLimiter::direct(quota),
            keyed: ArcSwap::from_pointee(RateLimiter::keyed(quota)),
        });
        let limited = cx
            .int_counter_vec(
                "portcullis_rate_limited_total",
                "Requests refused by a rate_limit filter, by route.",
                &["route"],
            )?
            .with_label_values(&[cx.scope().label()]);
        let policy = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            policy_name(cx),
            c.rate,
            window.as_secs()
        ))
        .map_err(|_| {
            FilterError::here("route name cannot be used in the RateLimit-Policy header")
        })?;
        let gcra = Gcra {
            interval_us: (window / rate.get()).as_micros() as i64,
            capacity: capacity.get(),
        };
        let redis_prefix = format!(
            "{{{}:{}:{}/{:?}/{}:",
            c.store.as_ref().map_or("", |s| s.prefix.as_str()),
            cx.scope().label(),
            c.rate,
            c.per,
            c.burst
        );
        let shared = match &c.store {
            Some(store) => Some(build_shared(store, gcra, &state_key, cx)?),
            None => None,
        };
        Ok(RateLimit {
            key,
            quota,
            shared,
            redis_prefix,
            max_keys: c.max_keys,
            limiters,
            hasher: RandomState::new(),
            limited,
            policy,
            window_secs: window.as_secs(),
        })
    }
}

/// The shared store of a limit: its connection and, in sync mode, its table and sync task
/// survive reloads that keep the same limit and store.
fn build_shared(
    store: &StoreConfig,
    gcra: Gcra,
    state_key: &str,
    cx: &BuildContext<'_>,
) -> Result<Shared, FilterError> {
    store.validate()?;
    let budget = store.timeout.0;
    // One connection per Redis and budget, kept across reloads and shared by routes: a
    // reload does not dial again.
    let conn = cx.persistent(&format!("redis-conn/{:?}/{budget:?}", store.redis), || {
        let c = Conn::open(&store.redis, budget);
        if let Ok(c) = &c {
            shared::warm_up(c);
        }
        c
    });
    let conn = (*conn).clone()?;
    let errors = cx
        .int_counter_vec(
            "portcullis_rate_limit_store_errors_total",
            "Calls to a rate_limit filter's shared store that failed or ran out of time, by route.",
            &["route"],
        )?
        .with_label_values(&[cx.scope().label()]);
    let what = format!("on route {}", cx.scope().label());
    let trouble = Arc::new(Trouble::new(errors, what));
    let sync = match store.mode {
        Mode::Exact => None,
        Mode::Sync => Some(cx.persistent(&format!("{state_key}/{store:?}"), || {
            let table = SyncTable::new();
            spawn_sync(&table, conn.clone(), gcra, store, Arc::clone(&trouble));
            table
        }))
        .map(|t: Arc<Arc<SyncTable>>| Arc::clone(&*t)),
    };
    Ok(Shared::new(
        conn,
        gcra,
        budget,
        store.on_store_error,
        trouble,
        sync,
    ))
}

/// Reconcile `table` every `sync_interval` until the table is dropped.
fn spawn_sync(
    table: &Arc<SyncTable>,
    conn: Conn,
    gcra: Gcra,
    store: &StoreConfig,
    trouble: Arc<Trouble>,
) {
    let weak = Arc::downgrade(table);
    let every = store.sync_interval.0;
    let budget = store.timeout.0;
    store::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(table) = weak.upgrade() else { return };
            table.sync(&conn, gcra, budget, &trouble).await;
        }
    });
}

fn policy_name(cx: &BuildContext<'_>) -> String {
    cx.scope()
        .label()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn ip_key(ip: Option<IpAddr>) -> u128 {
    match ip {
        Some(IpAddr::V4(v4)) => u128::from(v4.to_ipv6_mapped()),
        Some(IpAddr::V6(v6)) => u128::from(v6),
        None => 0,
    }
}

impl RateLimit {
    /// The key of a request (client IP, or a hash of the header / cookie value).
    fn key_of(&self, req: &RequestView<'_>) -> u128 {
        match self.key_value(req) {
            Some(v) => u128::from(self.hasher.hash_one(v)) | (1 << 127),
            None => ip_key(req.client_ip),
        }
    }

    /// The header or cookie value that keys `req`, if the key is one and the request has it
    /// (otherwise the client IP, or the route, keys it).
    fn key_value<'r>(&self, req: &RequestView<'r>) -> Option<&'r [u8]> {
        match &self.key {
            Key::ClientIp | Key::Route => None,
            Key::Header(n) => req.headers.get(n).map(|v| v.as_bytes()),
            Key::Cookie(n) => req.cookie(n).map(str::as_bytes),
        }
    }

    /// `Ok` to let the request through, `Err(wait)` when it must wait `wait`.
    pub fn check(&self, req: &RequestView<'_>) -> Result<(), Duration> {
        match self.key {
            Key::Route => {
                let l = &self.limiters.direct;
                l.check().map_err(|n| n.wait_time_from(l.clock().now()))
            }
            _ => {
                let l = self.limiters.keyed.load();
                l.check_key(&self.key_of(req))
                    .map_err(|n| n.wait_time_from(l.clock().now()))
            }
        }
    }

    /// The Redis key of a request: stable across gateways (the IP, or a fixed SipHash of
    /// the header or cookie value, never the value itself).
    fn redis_key(&self, req: &RequestView<'_>) -> String {
        use std::fmt::Write;
        use std::hash::{DefaultHasher, Hasher};
        let mut k = self.redis_prefix.clone();
        let hashed = |k: &mut String, bytes: &[u8]| {
            let mut h = DefaultHasher::new();
            h.write(bytes);
            let _ = write!(k, "h{:016x}}}", h.finish());
        };
        match (self.key_value(req), &self.key) {
            (Some(v), _) => hashed(&mut k, v),
            (None, Key::Route) => k.push_str("route}"),
            (None, _) => match req.client_ip {
                Some(ip) => {
                    let _ = write!(k, "{ip}}}");
                }
                None => k.push_str("-}"),
            },
        }
        k
    }

    /// The decision with a shared store.
    async fn check_shared(&self, shared: &Shared, req: &RequestView<'_>) -> Result<(), Duration> {
        let id = match self.key {
            Key::Route => 0,
            _ => self.key_of(req),
        };
        match shared.check(id, || self.redis_key(req)).await {
            Verdict::Admit => Ok(()),
            Verdict::Wait(w) => Err(w),
            Verdict::Unknown => match shared.on_error {
                OnError::Allow => Ok(()),
                OnError::Deny => Err(Duration::from_secs(1)),
                OnError::Local => self.check(req),
            },
        }
    }

    fn refusal(&self, wait: Duration) -> Response {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let name = self
            .policy
            .to_str()
            .ok()
            .and_then(|p| p.split(';').next())
            .unwrap_or("\"default\"");
        let mut resp = Response::text(429, "rate limit exceeded\n")
            .with_header(
                portcullis_plugin::http::header::RETRY_AFTER,
                HeaderValue::from(secs),
            )
            .with_header(
                HeaderName::from_static("ratelimit-policy"),
                self.policy.clone(),
            );
        if let Ok(v) = HeaderValue::from_str(&format!("{name};r=0;t={secs}")) {
            resp = resp.with_header(HeaderName::from_static("ratelimit"), v);
        }
        resp
    }
}

#[async_trait]
impl Filter for RateLimit {
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut RequestState) -> Decision {
        let verdict = match &self.shared {
            Some(shared) => self.check_shared(shared, req).await,
            None => self.check(req),
        };
        match verdict {
            Ok(()) => Decision::Continue,
            Err(wait) => {
                self.limited.inc();
                Decision::Respond(self.refusal(wait))
            }
        }
    }

    fn maintain(&self) {
        if let Some(s) = &self.shared {
            s.maintain(self.max_keys);
        }
        if self.key == Key::Route {
            return;
        }
        let keyed = self.limiters.keyed.load();
        keyed.retain_recent();
        keyed.shrink_to_fit();
        let n = keyed.len();
        if n > self.max_keys {
            log::warn!(
                "rate_limit: {n} active keys exceed max_keys {}; resetting the key table (window {}s)",
                self.max_keys,
                self.window_secs
            );
            self.limiters
                .keyed
                .store(Arc::new(RateLimiter::keyed(self.quota)));
        }
    }
}

#[cfg(test)]
mod tests;
