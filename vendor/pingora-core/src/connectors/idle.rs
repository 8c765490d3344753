// portcullis patch: the keep-alive pool of idle upstream streams, without a task per stream.
//
// pingora-pool watches every idle stream with a task of its own: each release wraps the
// stream in an `Arc<Mutex<_>>`, makes a oneshot channel and an LRU notifier, rebuilds the
// peer's pool node if the last take removed it, spawns the watch task and arms its timer; each
// take wakes that task, waits for it to let go of the stream, and removes the node again.
// That round trip cost about 9,000 instructions per proxied request, a tenth of the whole.
//
// Here an idle stream is only stored. What the watch task found out is found out when it
// matters:
// - at take time, the stream is tested as before (`test_reusable_stream`: a read that must
//   find nothing) and its idle deadline is checked; a stream that fails either is closed
//   and the next one is tried;
// - once a second, while the pool holds streams, a sweep closes those past their deadline
//   and those the server has closed, so idle timeouts still close idle connections.
// The pool's size limit and its order (the oldest idle stream is evicted first) are kept.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweep looks for expired and closed idle streams.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The pool of idle streams of one connector, keyed by `Peer::reuse_hash`.
pub(super) struct IdlePool {
    inner: Mutex<Inner>,
    size: usize,
    /// The connector's count of idle streams that received data.
    unexpected_data: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<u64, VecDeque<Idle>, BuildHasherDefault<KeyHasher>>,
    len: usize,
    sweeping: bool,
}

struct Idle {
    stream: Stream,
    since: Instant,
    deadline: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// The keys are already hashes (`Peer::reuse_hash`), so they are used as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl IdlePool {
    pub(super) fn new(size: usize, unexpected_data: Arc<AtomicU64>) -> Self {
        IdlePool {
            inner: Mutex::new(Inner::default()),
            size,
            unexpected_data,
        }
    }

    /// Keep `stream` for reuse under `key` for at most `idle_timeout` (`None`: until the
    /// server closes it or it is evicted). A full pool evicts its oldest idle stream, whose
    /// idle time goes to `evicted`.
    pub(super) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        evicted: Option<&PoolCallback>,
    ) {
        if self.size == 0 || idle_timeout == Some(Duration::ZERO) {
            return; // dropped: closed now
        }
        let now = Instant::now();
        let idle = Idle {
            stream,
            since: now,
            deadline: idle_timeout.and_then(|t| now.checked_add(t)),
        };
        let (oldest, start_sweep) = {
            let mut inner = self.inner.lock();
            let oldest = if inner.len >= self.size {
                inner.pop_oldest()
            } else {
                None
            };
            inner.by_key.entry(key).or_default().push_back(idle);
            inner.len += 1;
            let start_sweep = !inner.sweeping;
            inner.sweeping = true;
            (oldest, start_sweep)
        };
        if let Some(old) = oldest {
            if let Some(callback) = evicted {
                callback(old.since.elapsed());
            }
        }
        if start_sweep {
            let pool = Arc::downgrade(self);
            pingora_runtime::current_handle().spawn(sweep(pool));
        }
    }

    /// The most recently released stream under `key` that is still usable: within its idle
    /// deadline, passing `usable`, and with nothing to read. Others met on the way are closed.
    pub(super) fn take(&self, key: u64, mut usable: impl FnMut(&Stream) -> bool) -> Option<Stream> {
        loop {
            let mut idle = self.inner.lock().pop_newest(key)?;
            if idle.expired(Instant::now()) || !usable(&idle.stream) {
                continue;
            }
            if test_reusable_stream(&mut idle.stream, &self.unexpected_data) {
                return Some(idle.stream);
            }
        }
    }

    /// Close the idle streams that are past their deadline or that the server has closed.
    /// Returns whether any stream is left.
    fn sweep_once(&self) -> bool {
        let now = Instant::now();
        let mut closed = Vec::new();
        let mut inner = self.inner.lock();
        for queue in inner.by_key.values_mut() {
            let mut i = 0;
            while i < queue.len() {
                let idle = &mut queue[i];
                if idle.expired(now)
                    || !test_reusable_stream(&mut idle.stream, &self.unexpected_data)
                {
                    closed.extend(queue.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        inner.by_key.retain(|_, q| !q.is_empty());
        inner.len -= closed.len();
        let left = inner.len > 0;
        if !left {
            inner.sweeping = false;
        }
        drop(inner);
        drop(closed); // closes the streams, outside the lock
        left
    }
}

impl Inner {
    fn pop_newest(&mut self, key: u64) -> Option<Idle> {
        let queue = self.by_key.get_mut(&key)?;
        // An emptied queue stays, ready for this peer's next release (pingora-pool removed
        // its node here and built it again on the release); the sweep drops empty queues.
        let idle = queue.pop_back()?;
        self.len -= 1;
        Some(idle)
    }

    fn pop_oldest(&mut self) -> Option<Idle> {
        let key = self
            .by_key
            .iter()
            .filter_map(|(k, q)| Some((*k, q.front()?.since)))
            .min_by_key(|(_, since)| *since)?
            .0;
        let idle = self.by_key.get_mut(&key)?.pop_front()?;
        self.len -= 1;
        Some(idle)
    }
}

/// The sweep of one pool: runs while the pool holds streams, and ends with the pool.
async fn sweep(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.sweep_once() {
            return;
        }
    }
}
