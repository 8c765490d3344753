//! Config reload triggers: SIGHUP, and a watch on the config file (on by default).
//!
//! The watch polls the file once a second: when its modification time or size changed, it
//! reads it and reloads if the content differs from the last content seen. A half-written file
//! fails validation and changes nothing; the next poll sees the finished file.

use crate::config::bounds;
use crate::control::ControlHandle;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the file watch looks at the config file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The background service that reloads on SIGHUP and on file changes.
pub struct ConfigWatcher {
    path: PathBuf,
    control: ControlHandle,
    watch_file: bool,
}

impl ConfigWatcher {
    /// A watcher for the config file at `path` that asks `control` to reload;
    /// `watch_file: false` reacts to SIGHUP only.
    pub fn new(path: &Path, control: ControlHandle, watch_file: bool) -> Self {
        ConfigWatcher {
            path: path.to_path_buf(),
            control,
            watch_file,
        }
    }
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// A hash of the file's first [`bounds::MAX_BYTES`] + 1 bytes: a larger file is refused by
/// the reload anyway, so a hostile file costs at most one bounded read per change.
fn content_hash(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(bounds::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// `f(path)` on the blocking pool: a file system call can block, and the watch shares its
/// runtime thread with the other background jobs.
async fn off_worker<T: Send + 'static>(path: &Path, f: fn(&Path) -> Option<T>) -> Option<T> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || f(&path))
        .await
        .ok()
        .flatten()
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let path = self.path.clone();
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot watch SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let mut last_stamp = off_worker(&path, stamp).await;
        let mut last_hash = off_worker(&path, content_hash).await;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if self.watch_file {
            log::info!(
                "watching {} for changes (disable with --no-watch)",
                path.display()
            );
        }
        loop {
            tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.control.reload("SIGHUP").await;
                    last_stamp = off_worker(&path, stamp).await;
                    last_hash = off_worker(&path, content_hash).await;
                }
                _ = tick.tick(), if self.watch_file => {
                    let now = off_worker(&path, stamp).await;
                    if now == last_stamp {
                        continue;
                    }
                    last_stamp = now;
                    let hash = off_worker(&path, content_hash).await;
                    if hash.is_some() && hash != last_hash {
                        last_hash = hash;
                        let _ = self.control.reload("file change").await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
