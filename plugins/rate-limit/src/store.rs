//! The shared store: Redis (one server or a cluster), reached from every gateway of a fleet.
//!
//! Connections are made lazily and reconnect by themselves with backoff (redis-rs's
//! `ConnectionManager` for one server, its cluster connection for a cluster). Their driver
//! tasks run on one small runtime of their own, so the request workers only send a command
//! and wait for its answer, each wait bounded by the call budget (`timeout`).

use portcullis_plugin::{Dur, FilterError};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `store:` in a `rate_limit` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub redis: RedisConfig,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub on_store_error: OnError,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

/// `redis: { url }` or `redis: { cluster: [..] }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub cluster: Vec<String>,
}

/// How the fleet shares a limit.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One atomic GCRA step in Redis per request.
    #[default]
    Exact,
    /// Admit locally, reconcile with Redis every `sync_interval`.
    Sync,
}

/// What a request gets when the store cannot answer within the budget.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Let it through.
    Allow,
    /// Refuse it (429).
    Deny,
    /// Ask the in-process limiter instead.
    #[default]
    Local,
}

fn default_sync_interval() -> Dur {
    Dur::millis(100)
}
fn default_timeout() -> Dur {
    Dur::millis(5)
}
fn default_prefix() -> String {
    "portcullis".into()
}

impl StoreConfig {
    /// Check the bounds; the error names the key below `store`.
    pub fn validate(&self) -> Result<(), FilterError> {
        let at = |k: &str, m: &str| Err(FilterError::at(format!("store.{k}"), m));
        match (&self.redis.url, self.redis.cluster.is_empty()) {
            (Some(_), false) => return at("redis", "give either `url` or `cluster`, not both"),
            (None, true) => return at("redis", "give `url: redis://host:port` or `cluster: [..]`"),
            _ => {}
        }
        for u in self.redis.url.iter().chain(&self.redis.cluster) {
            if let Err(e) = redis::parse_redis_url(u).ok_or("not a redis:// URL") {
                return at("redis", &format!("`{u}`: {e}"));
            }
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&self.timeout.0) {
            return at("timeout", "must be between 1ms and 1s");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&self.sync_interval.0) {
            return at("sync_interval", "must be between 10ms and 10s");
        }
        if self.prefix.is_empty() || self.prefix.len() > 64 || self.prefix.contains(['{', '}']) {
            return at("prefix", "1 to 64 characters, without `{` or `}`");
        }
        Ok(())
    }
}

/// The runtime that drives every Redis connection of the process (never dropped).
fn runtime() -> Result<&'static tokio::runtime::Runtime, FilterError> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-redis")
        .enable_all()
        .build()
        .map_err(|e| FilterError::here(format!("cannot start the Redis runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

/// Spawn `fut` on the store runtime.
pub fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = runtime() {
        rt.spawn(fut);
    }
}

/// A connection to one Redis or to a cluster; cheap to clone (both multiplex one socket per
/// node).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connect lazily: nothing is dialled until the first command, and no failure here
    /// depends on the server being up.
    pub fn open(c: &RedisConfig, budget: Duration) -> Result<Conn, FilterError> {
        let bad = |e: redis::RedisError| FilterError::at("store.redis", e.to_string());
        let _entered = runtime()?.enter();
        let connect = Duration::from_millis(500);
        if let Some(url) = &c.url {
            let client = redis::Client::open(url.as_str()).map_err(bad)?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(budget.max(Duration::from_millis(250))))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1))
                .set_number_of_retries(3);
            let m = ConnectionManager::new_lazy_with_config(client, cfg).map_err(bad)?;
            return Ok(Conn::Single(m));
        }
        let client = ClusterClient::builder(c.cluster.clone())
            .retries(1)
            .build()
            .map_err(bad)?;
        let cfg = ClusterConfig::new()
            .set_connection_timeout(connect)
            .set_response_timeout(budget.max(Duration::from_millis(250)));
        Ok(Conn::Cluster(
            client.get_pending_async_connection_with_config(cfg),
        ))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Store failures: counted, and logged at most once per 10 s.
pub struct Trouble {
    counter: portcullis_plugin::prometheus::IntCounter,
    last_log_ms: AtomicU64,
    born: Instant,
    what: String,
}

impl Trouble {
    pub fn new(counter: portcullis_plugin::prometheus::IntCounter, what: String) -> Self {
        Trouble {
            counter,
            last_log_ms: AtomicU64::new(0),
            born: Instant::now(),
            what,
        }
    }

    /// Count one failure; log it unless one was logged in the last 10 s.
    pub fn report(&self, e: &dyn std::fmt::Display, policy: OnError) {
        self.counter.inc();
        let now = self.born.elapsed().as_millis() as u64 + 10_000;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "rate_limit {}: Redis store failed ({e}); on_store_error: {policy:?} (logged at most every 10 s)",
                self.what
            );
        }
    }
}
