//! `compression:` of a route: compress responses for clients that accept it.

use serde::Deserialize;

/// Which encodings, how hard, and what is worth compressing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Encodings offered, in the gateway's order of preference when a client accepts several
    /// equally: `gzip`, `br`, `zstd`. Default: all three.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Encoding>,
    /// Compression level (1-9; brotli and zstd take the same number). Default: 5.
    #[serde(default = "default_level")]
    pub level: u32,
    /// Responses with a smaller `Content-Length` are sent as they are. Default: 1024 bytes.
    #[serde(default = "default_min_size")]
    pub min_size: u64,
    /// Media types to compress (a type, or a prefix ending in `/`). Default: `text/`,
    /// `application/json`, `application/javascript`, `application/xml`, `image/svg+xml`.
    #[serde(default = "default_types")]
    pub content_types: Vec<String>,
}

/// A content coding.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `br` (brotli).
    Br,
    /// `zstd`.
    Zstd,
}

fn default_algorithms() -> Vec<Encoding> {
    vec![Encoding::Gzip, Encoding::Br, Encoding::Zstd]
}
fn default_level() -> u32 {
    5
}
fn default_min_size() -> u64 {
    1024
}
fn default_types() -> Vec<String> {
    [
        "text/",
        "application/json",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}
