//! A limit shared by a fleet through Redis, in two modes.
//!
//! Both keep the GCRA state of a key as one Redis value, its theoretical arrival time (TAT, in
//! microseconds of Redis's own clock, so gateway clocks never matter), under a key whose whole
//! name is a hash tag: one limit key always lives on one cluster slot. Every write sets a TTL
//! of the time the bucket needs to refill plus a second, so Redis memory stays bounded.
//!
//! - `exact`: one `EVALSHA` per request runs a GCRA step atomically, with the same capacity
//!   (`rate + burst` at once) and refill (`rate` per `per`) as the local limiter.
//! - `sync`: each gateway runs the GCRA step on its own copy of the TAT and, every
//!   `sync_interval`, adds what it admitted to the shared TAT and takes the result back: one
//!   call per active key per interval. Between two syncs every gateway may admit what its copy
//!   allows, so the fleet overshoots by at most `rate × sync_interval` per gateway; the shared
//!   TAT absorbs the overshoot, and the fleet refuses until it is paid back.

use crate::store::{Conn, OnError, Trouble};
use dashmap::DashMap;
use redis::Script;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One GCRA step: ARGV = interval µs, capacity. Returns 0 (admitted) or the wait in µs.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = now
local v = redis.call('GET', KEYS[1])
if v then tat = math.max(tonumber(v) or now, now) end
local new = tat + interval
if new - tau > now then return math.ceil(new - tau - now) end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
";

/// Add ARGV[2] admissions of ARGV[1] µs each to the TAT; returns the TAT minus now, in µs.
const SYNC: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tat = now
local v = redis.call('GET', KEYS[1])
if v then tat = math.max(tonumber(v) or now, now) end
tat = tat + n * interval
if n > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return math.ceil(tat - now)
";

fn gcra_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(GCRA))
}

fn sync_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(SYNC))
}

/// Dial now and load both scripts, so that the first request does not spend its budget on
/// the connection (errors are ignored: requests report them).
pub fn warm_up(conn: &Conn) {
    let mut conn = conn.clone();
    crate::store::spawn(async move {
        for s in [gcra_script(), sync_script()] {
            if s.load_async(&mut conn).await.is_err() {
                return;
            }
        }
    });
}

/// Longest wait or debt taken from a Redis answer (a bound on a hostile or corrupt reply; a
/// real one is at most a few refills).
const MAX_AHEAD_US: i64 = 3_600_000_000;

/// The GCRA parameters, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    /// Time one admission costs.
    pub interval_us: i64,
    /// How many may pass at once (`rate + burst`).
    pub capacity: u32,
}

impl Gcra {
    fn tau(&self) -> i64 {
        self.interval_us * i64::from(self.capacity)
    }
}

/// The shared half of a `rate_limit` filter.
pub struct Shared {
    conn: Conn,
    gcra: Gcra,
    budget: Duration,
    pub on_error: OnError,
    trouble: Arc<Trouble>,
    sync: Option<Arc<SyncTable>>,
    /// After a failed call, requests skip Redis until this time (ms since `epoch`) and get
    /// `on_store_error` at once: an outage costs one budget per [`RETRY_AFTER_FAILURE`], not
    /// one per request.
    down_until: AtomicU64,
    epoch: Instant,
}

/// How long requests skip a store whose last call failed.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// What the shared store said.
pub enum Verdict {
    Admit,
    Wait(Duration),
    /// No answer within the budget, or a malformed one: apply `on_store_error`.
    Unknown,
}

impl Shared {
    pub fn new(
        conn: Conn,
        gcra: Gcra,
        budget: Duration,
        on_error: OnError,
        trouble: Arc<Trouble>,
        sync: Option<Arc<SyncTable>>,
    ) -> Self {
        Shared {
            conn,
            gcra,
            budget,
            on_error,
            trouble,
            sync,
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Check `key` (a full Redis key name) against the shared limit.
    pub async fn check(&self, id: u128, key: impl FnOnce() -> String) -> Verdict {
        if let Some(table) = &self.sync {
            // While syncs fail, `local` keeps using the table (it is a local limiter); the
            // other policies apply as in exact mode.
            if !table.healthy() && self.on_error != OnError::Local {
                return Verdict::Unknown;
            }
            return table.check(id, key, self.gcra);
        }
        if self.now_ms() < self.down_until.load(Ordering::Relaxed) {
            return self.failed(&"the last call failed; retrying Redis shortly");
        }
        let mut conn = self.conn.clone();
        let key = key();
        let mut call = gcra_script().prepare_invoke();
        call.key(&key)
            .arg(self.gcra.interval_us)
            .arg(self.gcra.capacity);
        match tokio::time::timeout(self.budget, call.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(0)) => Verdict::Admit,
            Ok(Ok(us)) if us > 0 => {
                Verdict::Wait(Duration::from_micros(us.min(MAX_AHEAD_US) as u64))
            }
            Ok(Ok(us)) => self.down(&format!("the script answered {us}")),
            Ok(Err(e)) => self.down(&e),
            Err(_) => self.down(&format!("no answer within {:?}", self.budget)),
        }
    }

    fn down(&self, e: &dyn std::fmt::Display) -> Verdict {
        let until = self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
        self.failed(e)
    }

    fn failed(&self, e: &dyn std::fmt::Display) -> Verdict {
        self.trouble.report(e, self.on_error);
        Verdict::Unknown
    }

    /// Housekeeping: forget idle sync keys.
    pub fn maintain(&self, max_keys: usize) {
        if let Some(t) = &self.sync {
            t.evict_idle(self.gcra, max_keys);
        }
    }
}

/// `sync` mode: each key's local copy of the shared TAT.
pub struct SyncTable {
    epoch: Instant,
    slots: DashMap<u128, Arc<Slot>>,
    healthy: AtomicBool,
}

struct Slot {
    redis_key: String,
    /// Local copy of the TAT, µs since `epoch`.
    tat: AtomicI64,
    /// Admissions not yet added to Redis.
    pending: AtomicU32,
    /// Last local use, µs since `epoch`.
    used: AtomicI64,
}

impl SyncTable {
    pub fn new() -> Arc<Self> {
        Arc::new(SyncTable {
            epoch: Instant::now(),
            slots: DashMap::new(),
            healthy: AtomicBool::new(true),
        })
    }

    fn now(&self) -> i64 {
        self.epoch.elapsed().as_micros() as i64
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn check(&self, id: u128, key: impl FnOnce() -> String, g: Gcra) -> Verdict {
        let now = self.now();
        let slot = match self.slots.get(&id) {
            Some(s) => Arc::clone(&s),
            None => Arc::clone(&self.slots.entry(id).or_insert_with(|| {
                Arc::new(Slot {
                    redis_key: key(),
                    tat: AtomicI64::new(now),
                    pending: AtomicU32::new(0),
                    used: AtomicI64::new(now),
                })
            })),
        };
        slot.used.store(now, Ordering::Relaxed);
        let mut cur = slot.tat.load(Ordering::Relaxed);
        loop {
            let new = cur.max(now) + g.interval_us;
            if new - g.tau() > now {
                return Verdict::Wait(Duration::from_micros((new - g.tau() - now) as u64));
            }
            match slot
                .tat
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        slot.pending.fetch_add(1, Ordering::Relaxed);
        Verdict::Admit
    }

    /// One reconciliation: every key used in the last second sends what it admitted and
    /// takes the shared TAT back. Calls run concurrently on the multiplexed connection.
    pub async fn sync(self: &Arc<Self>, conn: &Conn, g: Gcra, budget: Duration, trouble: &Trouble) {
        let now = self.now();
        let active: Vec<Arc<Slot>> = self
            .slots
            .iter()
            .filter(|s| now - s.used.load(Ordering::Relaxed) < 1_000_000)
            .map(|s| Arc::clone(&s))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for slot in active {
            let mut conn = conn.clone();
            let sent = slot.pending.swap(0, Ordering::AcqRel);
            let this = Arc::clone(self);
            calls.spawn(async move {
                let mut call = sync_script().prepare_invoke();
                call.key(&slot.redis_key).arg(g.interval_us).arg(sent);
                let res = tokio::time::timeout(
                    budget.max(Duration::from_millis(250)),
                    call.invoke_async::<i64>(&mut conn),
                )
                .await;
                match res {
                    Ok(Ok(ahead)) => {
                        // The shared TAT counts `sent`; admissions since then are still ours.
                        let since = i64::from(slot.pending.load(Ordering::Acquire));
                        let tat = this.now()
                            + ahead.clamp(0, MAX_AHEAD_US)
                            + since.saturating_mul(g.interval_us);
                        slot.tat.store(tat, Ordering::Release);
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        slot.pending.fetch_add(sent, Ordering::AcqRel);
                        Err(e.to_string())
                    }
                    Err(_) => {
                        slot.pending.fetch_add(sent, Ordering::AcqRel);
                        Err("no answer in time".to_string())
                    }
                }
            });
        }
        let mut ok = true;
        while let Some(r) = calls.join_next().await {
            if let Ok(Err(e)) = r {
                if ok {
                    trouble.report(&e, OnError::Local);
                }
                ok = false;
            }
        }
        self.healthy.store(ok, Ordering::Relaxed);
    }

    /// Forget keys idle for longer than a full refill (they start full again, as in Redis);
    /// above `max_keys`, forget them all (each restarts from the shared state at its next
    /// sync).
    pub fn evict_idle(&self, g: Gcra, max_keys: usize) {
        let now = self.now();
        let idle = g.tau() + 1_000_000;
        self.slots.retain(|_, s| {
            now - s.used.load(Ordering::Relaxed) < idle || s.pending.load(Ordering::Relaxed) > 0
        });
        if self.slots.len() > max_keys {
            log::warn!(
                "rate_limit: {} active keys exceed max_keys {max_keys}; resetting the sync table",
                self.slots.len()
            );
            self.slots.clear();
        }
    }
}
