//! What the data plane reads: the published snapshot, the backend state store and the
//! metrics. Only the control plane ([`crate::control`]) publishes snapshots; everything here
//! that changes state is called from its thread.

use crate::balance::{BackendState, StateStore, StrategyRegistry};
use crate::config::{self, ConfigErrors};
use crate::observe::events::EventLog;
use crate::observe::metrics::BackendSource;
use crate::observe::Metrics;
use crate::runtime::{compile, CompileContext, Snapshot};
use arc_swap::ArcSwap;
use portcullis_plugin::build::{NoEjector, PersistentStore, SharedMetrics};
use portcullis_plugin::{Ejector, FilterRegistry};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::SystemTime;
use tokio::sync::watch;

/// Shared state of one gateway process.
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    store: Arc<StateStore>,
    metrics: Arc<Metrics>,
    changes: watch::Sender<u64>,
    config_path: PathBuf,
    plugins: Plugins,
    reload: ArcSwap<ReloadStatus>,
    started: SystemTime,
    draining: AtomicBool,
    events: EventLog,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When it finished.
    pub at: Option<SystemTime>,
    /// What triggered it (SIGHUP, file change, admin API).
    pub trigger: String,
    /// Whether the new config went live.
    pub ok: bool,
    /// Errors of a failed reload (file:line: key path: message), or notes of a successful one.
    pub messages: Vec<String>,
}

/// What a binary can extend: the filters and the strategies a config may name, and how its
/// allocator hands freed memory back.
#[derive(Debug, Clone)]
pub struct Extensions {
    /// Filter factories by name.
    pub filters: FilterRegistry,
    /// Strategy builders by name.
    pub strategies: StrategyRegistry,
    /// Called once a second on the background thread to return memory the allocator holds
    /// freed to the operating system (the `portcullis` binary: mimalloc's `mi_collect`). An
    /// allocator that only does this when it is next called keeps a burst's memory resident
    /// while the gateway is idle. `None`: nothing is called.
    pub release_memory: Option<fn()>,
}

impl Extensions {
    /// The built-in filters and strategies.
    pub fn builtin() -> Self {
        Extensions {
            filters: crate::filters::builtin(),
            strategies: StrategyRegistry::builtin(),
            release_memory: None,
        }
    }
}

/// What filters and strategies are built with: the registries, the filters' metrics and
/// persistent state.
pub struct Plugins {
    /// Filter factories by name.
    pub registry: FilterRegistry,
    /// Strategy builders by name.
    pub strategies: StrategyRegistry,
    /// Get-or-register metrics for filters (in the gateway's registry).
    pub metrics: SharedMetrics,
    /// Filter state that survives reloads.
    pub persistent: PersistentStore,
    /// Where filters report backends to take out of rotation.
    pub ejector: Arc<dyn Ejector>,
}

impl Plugins {
    /// The filters and strategies of `ext`, filters registering their metrics in `metrics`,
    /// with empty persistent state, reporting ejections to `ejector`.
    pub fn new(ext: Extensions, metrics: &Metrics, ejector: Arc<dyn Ejector>) -> Self {
        Plugins {
            registry: ext.filters,
            strategies: ext.strategies,
            metrics: SharedMetrics::new(metrics.registry().clone()),
            persistent: PersistentStore::default(),
            ejector,
        }
    }
}

impl Gateway {
    /// Read, check and compile the config file with the filters and strategies of `ext`;
    /// nothing is started. Filters report ejections to `ejector` (the control plane's handle).
    pub fn load(
        path: &Path,
        ext: Extensions,
        ejector: Arc<dyn Ejector>,
    ) -> Result<Arc<Self>, ConfigErrors> {
        let store = StateStore::new();
        let metrics = Metrics::new();
        let plugins = Plugins::new(ext, &metrics, ejector);
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
            reload: ArcSwap::from_pointee(ReloadStatus::default()),
            started: SystemTime::now(),
            draining: AtomicBool::new(false),
            events: EventLog::default(),
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

    /// Publish `snapshot`, a new config generation (control plane only).
    pub fn install(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let old = self.current.swap(Arc::new(snapshot));
        old.access_log.flush();
        self.plugins.persistent.retain_generation(generation);
        self.metrics.config_generation.set(generation as i64);
        self.changes.send_replace(generation);
    }

    /// Publish `snapshot`, the live config with other upstream member lists (control plane
    /// only): admin changes, health transitions, ejections.
    pub fn publish_members(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        self.current.store(Arc::new(snapshot));
        self.changes.send_replace(generation);
    }

    /// Whether this process is handing over (graceful upgrade) or shutting down: responses
    /// then carry `Connection: close`, so clients move to new connections before this process
    /// closes its idle ones.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Enter the draining state (see [`Gateway::is_draining`]).
    pub fn set_draining(&self) {
        if !self.draining.swap(true, Relaxed) {
            log::info!("draining: responses now close their connections");
        }
    }

    /// When this process started serving.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The last health and circuit transitions of backends.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The outcome of the last reload.
    pub fn last_reload(&self) -> ReloadStatus {
        ReloadStatus::clone(&self.reload.load())
    }

    /// Record a reload's outcome (control plane only).
    pub fn set_last_reload(&self, status: ReloadStatus) {
        self.reload.store(Arc::new(status));
    }
}

impl crate::tls::CertSource for Gateway {
    fn certificates(&self, listener: &str) -> Option<Arc<crate::tls::CertStore>> {
        self.snapshot().certificates.get(listener).cloned()
    }
}

/// Parse, check and compile config `text` as if it were the file `name`, with the built-in
/// filters and fresh state: what `-t` does, without a file (the config fuzz target uses it).
pub fn compile_text(name: &Path, text: &str) -> Result<Snapshot, ConfigErrors> {
    let store = StateStore::new();
    let metrics = Metrics::new();
    let plugins = Plugins::new(Extensions::builtin(), &metrics, Arc::new(NoEjector));
    let parsed = config::parse_str(name, text)?;
    compile_parsed(parsed, &store, &metrics, &plugins, 1)
}

/// Read and compile `path` with the given generation number.
pub fn compile_file(
    path: &Path,
    store: &StateStore,
    metrics: &Metrics,
    plugins: &Plugins,
    generation: u64,
) -> Result<Snapshot, ConfigErrors> {
    compile_parsed(
        config::read_file(path)?,
        store,
        metrics,
        plugins,
        generation,
    )
}

fn compile_parsed(
    (cfg, source): (config::Config, config::Source),
    store: &StateStore,
    metrics: &Metrics,
    plugins: &Plugins,
    generation: u64,
) -> Result<Snapshot, ConfigErrors> {
    let cx = CompileContext {
        store,
        metrics,
        generation,
        filters: &plugins.registry,
        plugin_metrics: &plugins.metrics,
        persistent: &plugins.persistent,
        ejector: &plugins.ejector,
        strategies: &plugins.strategies,
    };
    compile(&cfg, &cx).map_err(|errs| source.locate(errs))
}

impl BackendSource for Gateway {
    fn for_each_backend(&self, f: &mut dyn FnMut(&str, &BackendState, f32)) {
        for up in self.snapshot().upstreams.iter() {
            for b in up.backends() {
                f(&up.name, &b.state, up.ramp_of(b.addr()));
            }
        }
    }

    fn for_each_upstream(&self, f: &mut dyn FnMut(&str, bool)) {
        for up in self.snapshot().upstreams.iter() {
            f(&up.name, up.in_panic());
        }
    }
}
