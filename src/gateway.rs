//! The running gateway's shared core: the live config snapshot, the backend state store and
//! the metrics. Every service (listeners, health checks, metrics, admin) holds an
//! `Arc<Gateway>`.

use crate::balance::{BackendState, StateStore};
use crate::config::{self, ConfigErrors};
use crate::observe::metrics::BackendSource;
use crate::observe::Metrics;
use crate::runtime::{compile, CompileContext, Snapshot};
use arc_swap::ArcSwap;
use portcullis_plugin::build::{PersistentStore, SharedMetrics};
use portcullis_plugin::FilterRegistry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tokio::sync::watch;

/// Shared state of one gateway process.
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    store: Arc<StateStore>,
    metrics: Arc<Metrics>,
    changes: watch::Sender<u64>,
    config_path: PathBuf,
    plugins: Plugins,
}

/// What filters are built with: the registry, their metrics, their persistent state.
pub struct Plugins {
    /// Filter factories by name.
    pub registry: FilterRegistry,
    /// Get-or-register metrics for filters (in the gateway's registry).
    pub metrics: SharedMetrics,
    /// Filter state that survives reloads.
    pub persistent: PersistentStore,
}

impl Gateway {
    /// Read, check and compile the config file with the filters of `registry`; nothing is
    /// started.
    pub fn load(path: &Path, registry: FilterRegistry) -> Result<Arc<Self>, ConfigErrors> {
        let store = StateStore::new();
        let metrics = Metrics::new();
        let plugins = Plugins {
            registry,
            metrics: SharedMetrics::new(metrics.registry().clone()),
            persistent: PersistentStore::default(),
        };
        let snapshot = compile_file(path, &store, &metrics, &plugins, 1)?;
        plugins.persistent.retain_generation(1);
        metrics.config_generation.set(1);
        let gw = Arc::new(Gateway {
            current: ArcSwap::from_pointee(snapshot),
            store,
            metrics,
            changes: watch::channel(1).0,
            config_path: path.to_path_buf(),
            plugins,
        });
        let source: Weak<dyn BackendSource> = Arc::downgrade(&gw) as Weak<dyn BackendSource>;
        gw.metrics.register_backend_gauges(source);
        Ok(gw)
    }

    /// The live config. Requests keep the snapshot they started with.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Live per-backend state.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The config file this gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Notified with the generation whenever the live config or membership changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The filter registry, metrics and persistent state.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// Make `snapshot` the live config.
    pub fn install(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let old = self.current.swap(Arc::new(snapshot));
        old.access_log.flush();
        self.plugins.persistent.retain_generation(generation);
        self.metrics.config_generation.set(generation as i64);
        self.changes.send_replace(generation);
    }

    /// A backend's health or enablement changed: rebuild the selectors that hold it.
    pub fn on_health_change(&self, addr: SocketAddr) {
        for up in self
            .snapshot()
            .upstreams
            .iter()
            .filter(|u| u.contains(addr))
        {
            up.rebuild();
        }
    }
}

/// Read and compile `path` with the given generation number.
pub fn compile_file(
    path: &Path,
    store: &StateStore,
    metrics: &Metrics,
    plugins: &Plugins,
    generation: u64,
) -> Result<Snapshot, ConfigErrors> {
    let (cfg, source) = config::read_file(path)?;
    let cx = CompileContext {
        store,
        metrics,
        generation,
        filters: &plugins.registry,
        plugin_metrics: &plugins.metrics,
        persistent: &plugins.persistent,
    };
    compile(&cfg, &cx).map_err(|errs| source.locate(errs))
}

impl BackendSource for Gateway {
    fn for_each_backend(&self, f: &mut dyn FnMut(&str, &BackendState)) {
        for up in &self.snapshot().upstreams {
            for b in up.backends() {
                f(&up.name, &b.state);
            }
        }
    }
}
