//! A bounded load generator for zero-failure tests: client threads send GETs to 127.0.0.1
//! until stopped (or a hard cap of requests and time), recording every outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Per-run results.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests sent.
    pub sent: u64,
    /// Answers by status.
    pub statuses: HashMap<u16, u64>,
    /// Answers by `x-backend`.
    pub backends: HashMap<String, u64>,
    /// Transport errors (no HTTP answer), with their messages.
    pub errors: Vec<String>,
}

impl LoadResult {
    /// Requests that did not get a 200.
    pub fn failures(&self) -> u64 {
        self.sent - self.statuses.get(&200).copied().unwrap_or(0)
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    result: Arc<Mutex<LoadResult>>,
}

impl Load {
    /// Start `clients` threads sending GET `url` with keep-alive, at most `max_requests` in
    /// all and for at most `max_time`.
    pub fn start(url: &str, clients: usize, max_requests: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let result = Arc::new(Mutex::new(LoadResult::default()));
        let deadline = Instant::now() + max_time;
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent, result, url) =
                    (stop.clone(), sent.clone(), result.clone(), url.to_string());
                std::thread::spawn(move || {
                    let c = super::client();
                    while !stop.load(Relaxed)
                        && Instant::now() < deadline
                        && sent.fetch_add(1, Relaxed) < max_requests
                    {
                        let outcome = c.get(&url).send();
                        let mut r = result.lock().unwrap();
                        r.sent += 1;
                        match outcome {
                            Ok(resp) => {
                                *r.statuses.entry(resp.status().as_u16()).or_default() += 1;
                                if let Some(b) = resp
                                    .headers()
                                    .get("x-backend")
                                    .and_then(|v| v.to_str().ok())
                                {
                                    *r.backends.entry(b.to_string()).or_default() += 1;
                                }
                                drop(r);
                                let _ = resp.bytes();
                            }
                            Err(e) => r.errors.push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            threads,
            result,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Stop and collect.
    pub fn finish(self) -> LoadResult {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.result)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}
