//! Building filters from config: the registry of factories and what a factory is given.

use crate::Filter;
use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A problem in a filter's config, at a key path relative to the filter's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// Key path below the filter entry (empty = the entry itself), e.g. `burst`.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FilterError {
    /// An error about key `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        FilterError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error about the filter entry as a whole.
    pub fn here(message: impl Into<String>) -> Self {
        Self::at("", message)
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Deserialize a filter's typed config (use `#[serde(deny_unknown_fields)]` on it). The
/// entry's `kind` key has already been removed.
pub fn parse_config<C: DeserializeOwned>(config: &serde_yaml::Value) -> Result<C, FilterError> {
    let value = match config {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        v => v.clone(),
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FilterError::at(path, clean_serde_message(&e.into_inner().to_string()))
    })
}

/// A serde_yaml message without its own `path: ` prefix and ` at line L column C` suffix (the
/// gateway reports the file, line and path itself).
pub fn clean_serde_message(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let is_path = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c))
    };
    match msg.split_once(": ") {
        Some((prefix, rest)) if is_path(prefix) => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Builds a filter from its config.
pub type FilterFactory =
    fn(&serde_yaml::Value, &BuildContext<'_>) -> Result<Arc<dyn Filter>, FilterError>;

/// Filter names → factories.
#[derive(Clone, Default)]
pub struct FilterRegistry {
    factories: BTreeMap<String, FilterFactory>,
}

impl fmt::Debug for FilterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl FilterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `factory` under `name` (replacing a previous one).
    pub fn register(&mut self, name: &str, factory: FilterFactory) -> &mut Self {
        self.factories.insert(name.to_string(), factory);
        self
    }

    /// The factory registered under `name`.
    pub fn get(&self, name: &str) -> Option<FilterFactory> {
        self.factories.get(name).copied()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}

/// Where a filter instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The global chain (every route).
    Global,
    /// One route's chain.
    Route(&'a str),
}

impl Scope<'_> {
    /// `global` or the route name (useful as a metric label).
    pub fn label(&self) -> &str {
        match self {
            Scope::Global => "global",
            Scope::Route(r) => r,
        }
    }
}

/// Metrics shared by every filter of a gateway: get-or-register, so a filter rebuilt by a
/// reload keeps counting into the same series.
pub struct SharedMetrics {
    registry: Registry,
    known: Mutex<HashMap<String, Box<dyn Any + Send>>>,
}

impl SharedMetrics {
    /// Metrics registered in `registry`.
    pub fn new(registry: Registry) -> Self {
        SharedMetrics {
            registry,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn get_or_register<C>(
        &self,
        name: &str,
        make: impl FnOnce() -> prometheus::Result<C>,
    ) -> Result<C, FilterError>
    where
        C: Collector + Clone + Send + 'static,
    {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = known.get(name) {
            return c.downcast_ref::<C>().cloned().ok_or_else(|| {
                FilterError::here(format!(
                    "metric `{name}` is already registered with another type"
                ))
            });
        }
        let c = make().map_err(|e| FilterError::here(format!("metric `{name}`: {e}")))?;
        self.registry
            .register(Box::new(c.clone()))
            .map_err(|e| FilterError::here(format!("metric `{name}`: {e}")))?;
        known.insert(name.to_string(), Box::new(c.clone()));
        Ok(c)
    }
}

/// Values that survive reloads, keyed by a string the filter chooses (e.g. its kind, scope
/// and config). A reload that no longer asks for a key drops it.
#[derive(Default)]
pub struct PersistentStore {
    entries: Mutex<HashMap<String, Persisted>>,
}

/// A persistent value and the build generation that last asked for it.
type Persisted = (Arc<dyn Any + Send + Sync>, u64);

impl PersistentStore {
    /// Drop every entry not used by build `generation` (call after that build went live).
    pub fn retain_generation(&self, generation: u64) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, g)| *g == generation);
    }
}

/// Takes a backend out of an upstream's rotation: the gateway's control plane, which
/// publishes a member list without it. A filter that judges backends (a circuit breaker, an
/// outlier detector) reports here, so the strategy balances over the backends that may serve
/// instead of having its picks vetoed one request at a time.
pub trait Ejector: Send + Sync {
    /// Leave `backend` out of `upstream`'s members for `duration`; it rejoins by itself once
    /// that has passed. A later call replaces the time left.
    fn eject(&self, upstream: &str, backend: SocketAddr, duration: Duration);

    /// Tell operators that `backend` went from state `from` to `to` in the filter of `scope`
    /// (a route or the global chain), and why: the status page lists these. Call it on
    /// transitions only, not per request.
    fn transition(&self, _scope: &str, _backend: SocketAddr, _from: &str, _to: &str, _why: &str) {}
}

/// An [`Ejector`] that does nothing (`-t`, tests that do not look).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEjector;

impl Ejector for NoEjector {
    fn eject(&self, _: &str, _: SocketAddr, _: Duration) {}
}

/// What a factory gets besides its config.
pub struct BuildContext<'a> {
    scope: Scope<'a>,
    upstreams: &'a [&'a str],
    metrics: &'a SharedMetrics,
    persistent: &'a PersistentStore,
    generation: u64,
    ejector: Arc<dyn Ejector>,
}

impl<'a> BuildContext<'a> {
    /// A context (the gateway creates these; tests can too).
    pub fn new(
        scope: Scope<'a>,
        upstreams: &'a [&'a str],
        metrics: &'a SharedMetrics,
        persistent: &'a PersistentStore,
        generation: u64,
    ) -> Self {
        BuildContext {
            scope,
            upstreams,
            metrics,
            persistent,
            generation,
            ejector: Arc::new(NoEjector),
        }
    }

    /// Report ejections to `ejector` (the gateway passes its control plane).
    pub fn with_ejector(mut self, ejector: Arc<dyn Ejector>) -> Self {
        self.ejector = ejector;
        self
    }

    /// Where to report that a backend should leave its upstream's rotation for a while.
    pub fn ejector(&self) -> Arc<dyn Ejector> {
        Arc::clone(&self.ejector)
    }

    /// Global chain or which route.
    pub fn scope(&self) -> Scope<'a> {
        self.scope
    }

    /// Whether an upstream called `name` exists in this config.
    pub fn has_upstream(&self, name: &str) -> bool {
        self.upstreams.contains(&name)
    }

    /// The upstream names of this config.
    pub fn upstream_names(&self) -> &[&str] {
        self.upstreams
    }

    /// A counter family in the gateway's registry (created on first use).
    pub fn int_counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, FilterError> {
        self.metrics
            .get_or_register(name, || IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A gauge family in the gateway's registry (created on first use).
    pub fn int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, FilterError> {
        self.metrics
            .get_or_register(name, || IntGaugeVec::new(Opts::new(name, help), labels))
    }

    /// State that outlives this filter instance: the same `key` gets the same value in the
    /// next build (after a reload), created by `init` the first time.
    pub fn persistent<T: Send + Sync + 'static>(
        &self,
        key: &str,
        init: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut entries = self
            .persistent
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((v, g)) = entries.get_mut(key) {
            if let Ok(t) = Arc::clone(v).downcast::<T>() {
                *g = self.generation;
                return t;
            }
        }
        let t = Arc::new(init());
        entries.insert(
            key.to_string(),
            (
                Arc::clone(&t) as Arc<dyn Any + Send + Sync>,
                self.generation,
            ),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_serde_yaml_path_and_position() {
        assert_eq!(
            clean_serde_message("upstreams[0].backends[0]: unknown field `x`, expected one of `a` at line 3 column 9"),
            "unknown field `x`, expected one of `a`"
        );
        assert_eq!(
            clean_serde_message("invalid type: string \"a\", expected u32"),
            "invalid type: string \"a\", expected u32"
        );
    }

    #[test]
    fn null_reads_as_an_empty_map_and_paths_are_reported() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct C {
            #[serde(default)]
            n: u32,
        }
        assert_eq!(parse_config::<C>(&serde_yaml::Value::Null).unwrap().n, 0);
        let e = parse_config::<C>(&serde_yaml::from_str("{m: 1}").unwrap()).unwrap_err();
        assert_eq!(e.path, "m");
    }
}
