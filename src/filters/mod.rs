//! Plugin filters: the built-in registry, compiled chains, and adapters between the plugin API
//! (plain `http` types) and Pingora's.
//!
//! The API itself is the `portcullis-plugin` crate, re-exported as [`crate::plugin`]; the
//! built-in filters are crates under `plugins/` that use only that API.

pub mod chain;
pub mod headers;

pub use chain::FilterChain;
pub use portcullis_plugin::{FilterFactory, FilterRegistry};

/// A registry with every built-in filter: `rate_limit`, `circuit_breaker`, `canary`,
/// `headers`, `ip_acl`.
pub fn builtin() -> FilterRegistry {
    let mut r = FilterRegistry::new();
    r.register("rate_limit", portcullis_rate_limit::factory)
        .register("circuit_breaker", portcullis_circuit_breaker::factory)
        .register("canary", portcullis_canary::factory)
        .register("headers", portcullis_headers::factory)
        .register("ip_acl", portcullis_ip_acl::factory);
    r
}
