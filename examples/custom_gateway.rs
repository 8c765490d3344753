//! A custom portcullis binary: the built-in filters and strategies, plus the `api_key` filter
//! (a plugin crate) and a `priority` strategy defined below.
//!
//! `cargo run --example custom_gateway -- -c my.yaml`, then in the config:
//!
//! ```yaml
//! routes:
//!   - name: api
//!     upstream: api
//!     filters:
//!       - kind: api_key
//!         keys: [secret-1]
//! upstreams:
//!   - name: api
//!     strategy: priority      # the first backend in file order that may serve
//!     backends: [...]
//! ```

use portcullis::balance::{Member, PickRequest, Refused, Strategy, StrategyFactory};
use portcullis::config::PathError;
use std::sync::Arc;

/// Failover in file order: every request goes to the first eligible backend; when it leaves
/// the rotation (unhealthy, drained, circuit open) the next one takes over.
#[derive(Debug)]
struct Priority;

impl StrategyFactory for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }
    fn build(&self, _members: &[Member]) -> Box<dyn Strategy> {
        Box::new(Priority)
    }
}

impl Strategy for Priority {
    fn pick(&self, _members: &[Member], _req: &PickRequest) -> usize {
        0
    }
    fn repick(&self, members: &[Member], _req: &PickRequest, refused: &Refused) -> Option<usize> {
        (0..members.len()).find(|i| !refused.contains(*i))
    }
}

fn priority(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    match params {
        serde_yaml::Value::Null => Ok(Arc::new(Priority)),
        serde_yaml::Value::Mapping(m) if m.is_empty() => Ok(Arc::new(Priority)),
        _ => Err(PathError::at("", "`priority` takes no parameters")),
    }
}

fn main() {
    let mut ext = portcullis::gateway::Extensions::builtin();
    ext.filters.register("api_key", portcullis_api_key::factory);
    ext.strategies.register("priority", priority);
    std::process::exit(portcullis::run_with(ext));
}
