//! Helpers to unit-test a filter without a server.
//!
//! ```
//! use portcullis_plugin::testing::{TestEnv, TestRequest};
//! let env = TestEnv::new(&["api", "api-canary"]);
//! let cx = env.context("my-route");
//! let req = TestRequest::get("/x").header("x-canary", "always");
//! let view = req.view("my-route");
//! assert_eq!(view.header_str("x-canary"), Some("always"));
//! # let _ = cx;
//! ```

use crate::build::{BuildContext, Ejector, PersistentStore, Scope, SharedMetrics};
use crate::RequestView;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An owned request to build [`RequestView`]s from.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// Method.
    pub method: Method,
    /// URI.
    pub uri: Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// Client IP.
    pub client_ip: Option<IpAddr>,
}

impl TestRequest {
    /// `GET path` from 127.0.0.1.
    pub fn get(path: &str) -> Self {
        TestRequest {
            method: Method::GET,
            uri: path.parse().unwrap_or_else(|_| Uri::from_static("/")),
            headers: HeaderMap::new(),
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(n, v);
        }
        self
    }

    /// Set the client IP.
    pub fn from_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.parse().ok();
        self
    }

    /// A view of this request on `route`.
    pub fn view<'a>(&'a self, route: &'a str) -> RequestView<'a> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            client_ip: self.client_ip,
            route,
        }
    }
}

/// What a [`BuildContext`] borrows: a metrics registry, a persistent store, upstream names.
pub struct TestEnv {
    /// The metrics (inspect with `metrics.registry().gather()` via [`TestEnv::registry`]).
    metrics: SharedMetrics,
    registry: prometheus::Registry,
    persistent: PersistentStore,
    upstreams: Vec<&'static str>,
    ejections: Arc<Ejections>,
}

/// Records every ejection a filter reports.
#[derive(Debug, Default)]
pub struct Ejections(Mutex<Vec<(String, SocketAddr, Duration)>>);

impl Ejector for Ejections {
    fn eject(&self, upstream: &str, backend: SocketAddr, duration: Duration) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            upstream.to_string(),
            backend,
            duration,
        ));
    }
}

impl TestEnv {
    /// An environment whose config has these upstreams.
    pub fn new(upstreams: &[&'static str]) -> Self {
        let registry = prometheus::Registry::new();
        TestEnv {
            metrics: SharedMetrics::new(registry.clone()),
            registry,
            persistent: PersistentStore::default(),
            upstreams: upstreams.to_vec(),
            ejections: Arc::default(),
        }
    }

    /// A build context for a filter on `route` ("global" for the global chain).
    pub fn context<'a>(&'a self, route: &'a str) -> BuildContext<'a> {
        let scope = if route == "global" {
            Scope::Global
        } else {
            Scope::Route(route)
        };
        BuildContext::new(scope, &self.upstreams, &self.metrics, &self.persistent, 1)
            .with_ejector(Arc::clone(&self.ejections) as Arc<dyn Ejector>)
    }

    /// The ejections filters built from this environment reported: (upstream, backend,
    /// duration), oldest first.
    pub fn ejections(&self) -> Vec<(String, SocketAddr, Duration)> {
        self.ejections
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Prometheus registry the filters registered their metrics in.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// Sum of the samples of counter or gauge `name` carrying the label pairs `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let ok = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if ok {
                    // A family is either a counter or a gauge; the other value reads 0.
                    sum += m.get_counter().get_value() + m.get_gauge().get_value();
                }
            }
        }
        sum
    }
}

/// Fail (panic) when `filter` implements a hook that its [`crate::Filter::hooks`] leaves out:
/// the gateway would never call it, and refuses such a filter at config time. Call it in a
/// plugin's tests on a built filter.
pub fn assert_hooks_declared(filter: &dyn crate::Filter) {
    let missing = crate::hooks::undeclared_hooks(filter);
    assert!(
        missing.is_empty(),
        "the filter implements {} but hooks() leaves them out",
        missing.describe()
    );
}
