//! Per-listener client settings: path normalisation, client timeouts and size limits, and
//! forwarded headers with trusted proxies. Defaults are documented on each field and in
//! `docs/configuration.md`; the README's security section lists them all.

use super::duration::Dur;
pub use crate::request::path::{EscapedSlashes, PathOptions};
use serde::Deserialize;

/// Client timeouts and limits (`listeners[].client`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Time to receive a whole request header, from the connection's start or the first byte
    /// after an idle period. Past it: 408 (when part of a header arrived) and close.
    /// Default: `30s` (nginx `client_header_timeout` 60s, HAProxy `timeout http-request`
    /// commonly 10s).
    pub header_timeout: Dur,
    /// How long a keep-alive connection may wait for its next request. Default: `60s`.
    pub idle_timeout: Dur,
    /// Longest wait for the next piece of a request body. Default: `60s` (nginx
    /// `client_body_timeout`).
    pub body_timeout: Dur,
    /// Largest request header (request line plus every header line), in bytes; more gets
    /// 431. Default: 65536 (Envoy's 60 KiB). Pingora reads at most 1 MiB in any case.
    pub max_header_bytes: usize,
    /// Most header lines in a request; more gets 431. Default: 100 (Envoy's).
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes; longer gets 414. Default: 8192
    /// (nginx `large_client_header_buffers`).
    pub max_uri_length: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            header_timeout: Dur::secs(30),
            idle_timeout: Dur::secs(60),
            body_timeout: Dur::secs(60),
            max_header_bytes: 65536,
            max_headers: 100,
            max_uri_length: 8192,
        }
    }
}

/// The client address and the headers that carry it (`listeners[].forwarded`). Defaults
/// follow Envoy: `X-Forwarded-For` and `X-Forwarded-Proto` on, `X-Forwarded-Host` and
/// `Forwarded` off (each added header costs about 3k instructions per request in Pingora's
/// case-preserving header map, measured).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardedConfig {
    /// Append the peer's address to `X-Forwarded-For`. Default: true.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto` (`http` / `https`). Default: true.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` from `Host`. Default: false.
    pub x_forwarded_host: bool,
    /// Append an RFC 7239 `Forwarded` element. Default: false.
    pub forwarded: bool,
    /// Peers whose `X-Forwarded-For` (and `X-Forwarded-Proto` / `-Host`, `Forwarded`) are
    /// believed: addresses or CIDRs. The client is then the right-most untrusted hop, and
    /// that address is what filters, keys, `ip_hash` and the access log use. Default: none.
    pub trusted_proxies: Vec<String>,
}

impl Default for ForwardedConfig {
    fn default() -> Self {
        ForwardedConfig {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: false,
            forwarded: false,
            trusted_proxies: Vec::new(),
        }
    }
}
