//! A route's `mirror` section: send a copy of some requests to another upstream.

use super::duration::Dur;
use serde::Deserialize;

/// `mirror:` of a route (request shadowing): a copy of `percent` of the requests, with their
/// body up to `max_body`, goes to `upstream`; its answer is discarded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream that gets the copies.
    pub upstream: String,
    /// Share of the requests copied, 0-100. Default: 100.
    #[serde(default = "default_percent")]
    pub percent: f64,
    /// A request whose body is larger is not copied (counted as dropped). Default: 64KiB
    /// (in bytes; at most 16 MiB).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Copies in flight at once; more are dropped. Default: 64 (1-10,000).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// How long one copy may take in all. Default: 5s.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_percent() -> f64 {
    100.0
}

fn default_max_body() -> usize {
    64 * 1024
}

fn default_max_concurrent() -> usize {
    64
}

fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
