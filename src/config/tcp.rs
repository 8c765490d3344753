//! The config of L4 proxying: `protocol: tcp` listeners, connection limits and their queue,
//! and the PROXY protocol (accepted on any listener, sent to an upstream's backends).

use super::duration::Dur;
use serde::Deserialize;

/// Settings of a `protocol: tcp` listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpOptions {
    /// Most client connections open at once on this listener; more are closed at once
    /// (counted). Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Close a connection when neither side sent a byte for this long. Default 1h.
    #[serde(default = "default_idle")]
    pub idle_timeout: Dur,
    /// Close a connection this long after it opened, whatever it does. Default: none.
    #[serde(default)]
    pub max_lifetime: Option<Dur>,
    /// Backends tried when connecting fails (refused, timed out), each a fresh pick among
    /// the eligible ones not tried yet. Nothing was sent, so this is always safe. Default 3.
    #[serde(default = "default_attempts")]
    pub connect_attempts: u32,
}

fn default_max_connections() -> u32 {
    10_000
}
fn default_idle() -> Dur {
    Dur::secs(3600)
}
fn default_attempts() -> u32 {
    3
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            max_connections: default_max_connections(),
            idle_timeout: default_idle(),
            max_lifetime: None,
            connect_attempts: default_attempts(),
        }
    }
}

/// Where requests or connections wait while every eligible backend of an upstream is at its
/// `max_connections`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most waiting at once; one more is refused at once (TCP: closed; HTTP: 503). Default 128.
    #[serde(default = "default_queue_size")]
    pub size: u32,
    /// Longest wait for a slot; then refused the same way. Default 5s.
    #[serde(default = "default_queue_timeout")]
    pub timeout: Dur,
}

fn default_queue_size() -> u32 {
    128
}
fn default_queue_timeout() -> Dur {
    Dur::secs(5)
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: default_queue_size(),
            timeout: default_queue_timeout(),
        }
    }
}

/// Accepting a PROXY protocol header (v1 or v2, detected) from a load balancer in front.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyAcceptConfig {
    /// Expect the header on every connection. Default true.
    #[serde(default = "yes")]
    pub accept: bool,
    /// Peers allowed to send it (CIDRs or addresses). A connection from any other peer is
    /// refused, as is one whose header is malformed or missing.
    pub trusted: Vec<String>,
    /// Time to receive the whole header. Default 5s.
    #[serde(default = "default_header_timeout")]
    pub timeout: Dur,
}

fn yes() -> bool {
    true
}
fn default_header_timeout() -> Dur {
    Dur::secs(5)
}

/// Which PROXY protocol version to send to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}
