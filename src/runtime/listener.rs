//! A listener's compiled client policy: path normalisation, deadlines, size limits and the
//! forwarded-header settings. It is part of the snapshot, so a reload changes it for new
//! requests (the socket itself stays until a graceful upgrade).

use crate::config::client::{ClientConfig, ForwardedConfig};
use crate::config::model::{ListenerConfig, Protocol};
use crate::config::PathError;
use crate::request::forwarded::TrustedProxies;
use crate::request::path::PathOptions;
use std::time::Duration;

/// Pingora refuses more header lines than this (400) before we see them.
pub const PINGORA_MAX_HEADERS: usize = 256;
/// Pingora refuses request headers larger than this.
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;

/// The two deadlines of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Time to receive a whole request header.
    pub header: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle: Duration,
}

/// How a listener treats its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Path normalisation.
    pub path: PathOptions,
    /// Header and keep-alive deadlines.
    pub deadlines: Deadlines,
    /// Wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Largest request header in bytes (431 above).
    pub max_header_bytes: usize,
    /// Most header lines (431 above).
    pub max_headers: usize,
    /// Longest request target (414 above).
    pub max_uri_length: usize,
    /// Append to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto`.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host`.
    pub x_forwarded_host: bool,
    /// Send `Forwarded`.
    pub forwarded: bool,
    /// Peers whose forwarded headers are believed.
    pub trusted: TrustedProxies,
    /// The scheme clients used (`http` or `https`).
    pub scheme: &'static str,
}

impl ClientPolicy {
    /// The policy of checked settings.
    fn new(
        path: PathOptions,
        c: &ClientConfig,
        f: &ForwardedConfig,
        trusted: TrustedProxies,
        protocol: Protocol,
    ) -> Self {
        ClientPolicy {
            path,
            deadlines: Deadlines {
                header: c.header_timeout.0,
                idle: c.idle_timeout.0,
            },
            body_timeout: c.body_timeout.0,
            max_header_bytes: c.max_header_bytes,
            max_headers: c.max_headers,
            max_uri_length: c.max_uri_length,
            x_forwarded_for: f.x_forwarded_for,
            x_forwarded_proto: f.x_forwarded_proto,
            x_forwarded_host: f.x_forwarded_host,
            forwarded: f.forwarded,
            trusted,
            scheme: if protocol == Protocol::Https {
                "https"
            } else {
                "http"
            },
        }
    }
}

impl Default for ClientPolicy {
    /// The documented defaults, for an `http` listener.
    fn default() -> Self {
        ClientPolicy::new(
            PathOptions::default(),
            &ClientConfig::default(),
            &ForwardedConfig::default(),
            TrustedProxies::default(),
            Protocol::Http,
        )
    }
}

fn check_timeout(errors: &mut Vec<PathError>, key: &str, d: Duration) {
    if d.is_zero() || d > Duration::from_secs(3600) {
        errors.push(PathError::at(
            key,
            format!("must be between 1ms and 1h, got {d:?}"),
        ));
    }
}

fn check_range(errors: &mut Vec<PathError>, key: &str, v: usize, lo: usize, hi: usize) {
    if !(lo..=hi).contains(&v) {
        errors.push(PathError::at(
            key,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
}

/// Largest L4 buffer of a client connection (each open connection holds one of each).
const MAX_BUFFER: usize = 1 << 20;

/// Compile the client settings of `l` (errors relative to the listener).
pub fn compile_policy(l: &ListenerConfig) -> Result<ClientPolicy, Vec<PathError>> {
    let mut errors = Vec::new();
    let c = &l.client;
    check_timeout(&mut errors, "client.header_timeout", c.header_timeout.0);
    check_timeout(&mut errors, "client.idle_timeout", c.idle_timeout.0);
    check_timeout(&mut errors, "client.body_timeout", c.body_timeout.0);
    check_range(
        &mut errors,
        "client.max_header_bytes",
        c.max_header_bytes,
        1024,
        PINGORA_MAX_HEADER_BYTES,
    );
    check_range(
        &mut errors,
        "client.max_headers",
        c.max_headers,
        1,
        PINGORA_MAX_HEADERS,
    );
    check_range(
        &mut errors,
        "client.max_uri_length",
        c.max_uri_length,
        16,
        PINGORA_MAX_HEADER_BYTES,
    );
    let read = l.buffers.read.unwrap_or(0);
    check_range(&mut errors, "buffers.read", read, 0, MAX_BUFFER);
    check_range(&mut errors, "buffers.write", l.buffers.write, 0, MAX_BUFFER);
    let trusted = TrustedProxies::parse(&l.forwarded.trusted_proxies).unwrap_or_else(|(i, e)| {
        errors.push(PathError::at(format!("forwarded.trusted_proxies[{i}]"), e));
        TrustedProxies::default()
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ClientPolicy::new(
        l.path,
        c,
        &l.forwarded,
        trusted,
        l.protocol,
    ))
}
