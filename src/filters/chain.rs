//! A route's compiled filter chain: the global filters, then the route's, split by hook so that
//! each phase calls only the filters that implement it.

use crate::config::model::FilterSpec;
use crate::config::PathError;
use portcullis_plugin::{BuildContext, Filter, FilterRegistry, Hooks};
use std::net::SocketAddr;
use std::sync::Arc;

/// One filter instance and its registered name.
#[derive(Clone)]
pub struct Entry {
    /// Registered name (`kind`).
    pub kind: Arc<str>,
    /// The instance.
    pub filter: Arc<dyn Filter>,
}

/// Filters by hook, in chain order. Empty lists cost nothing on the request path.
#[derive(Clone, Default)]
pub struct FilterChain {
    /// `on_request`.
    pub request: Box<[Entry]>,
    /// `choose_upstream`.
    pub choose_upstream: Box<[Entry]>,
    /// `accept_backend`.
    pub accept_backend: Box<[Entry]>,
    /// `on_upstream_request`.
    pub upstream_request: Box<[Entry]>,
    /// `on_response`.
    pub response: Box<[Entry]>,
    /// `on_outcome`.
    pub outcome: Box<[Entry]>,
    /// Every filter (for housekeeping and the admin API).
    pub all: Box<[Entry]>,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|e| &*e.kind))
            .finish()
    }
}

impl FilterChain {
    /// A chain of these entries.
    pub fn new(entries: Vec<Entry>) -> Self {
        let pick = |h: Hooks| -> Box<[Entry]> {
            entries
                .iter()
                .filter(|e| e.filter.hooks().contains(h))
                .cloned()
                .collect()
        };
        FilterChain {
            request: pick(Hooks::REQUEST),
            choose_upstream: pick(Hooks::CHOOSE_UPSTREAM),
            accept_backend: pick(Hooks::ACCEPT_BACKEND),
            upstream_request: pick(Hooks::UPSTREAM_REQUEST),
            response: pick(Hooks::RESPONSE),
            outcome: pick(Hooks::OUTCOME),
            all: entries.into(),
        }
    }

    /// Whether the chain has no filters.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Status lines of every filter that tracks `backend` (for the admin API).
    pub fn describe_backend(&self, backend: SocketAddr) -> Vec<(&'static str, String)> {
        self.all
            .iter()
            .filter_map(|e| e.filter.describe_backend(backend))
            .collect()
    }
}

/// Build the filters listed at `path` (e.g. `routes[2].filters`) in `scope`. Errors name the
/// entry's key path and say which filter and route they are about.
pub fn build_filters(
    specs: &[FilterSpec],
    path: &str,
    registry: &FilterRegistry,
    cx: &BuildContext<'_>,
) -> Result<Vec<Entry>, Vec<PathError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let scope = match cx.scope() {
        portcullis_plugin::Scope::Global => "global filters".to_string(),
        portcullis_plugin::Scope::Route(r) => format!("route `{r}`"),
    };
    for (i, spec) in specs.iter().enumerate() {
        let entry_path = format!("{path}[{i}]");
        let Some(factory) = registry.get(&spec.kind) else {
            errors.push(PathError::at(
                format!("{entry_path}.kind"),
                format!(
                    "unknown filter `{}` on {scope} (registered: {})",
                    spec.kind,
                    registry.names().collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        };
        match factory(&spec.config, cx) {
            Ok(filter) => out.push(Entry {
                kind: spec.kind.as_str().into(),
                filter,
            }),
            Err(e) => errors.push(PathError::at(
                crate::config::error::join_path(&entry_path, &e.path),
                format!("filter `{}` on {scope}: {}", spec.kind, e.message),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
