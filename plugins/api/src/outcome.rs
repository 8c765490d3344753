//! What happened to one attempt of a request.

use std::net::SocketAddr;
use std::time::Duration;

/// Why an attempt failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// The connection could not be made (refused, unreachable, TLS failure).
    Connect,
    /// The backend did not answer in time (connect or read timeout).
    Timeout,
    /// Another error while proxying (connection reset, protocol error).
    Other,
}

/// One attempt of one request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The route.
    pub route: &'a str,
    /// The upstream used ("" when none was reached).
    pub upstream: &'a str,
    /// Number of backends in that upstream.
    pub upstream_size: usize,
    /// The backend tried, if any.
    pub backend: Option<SocketAddr>,
    /// The backend's status (0 when it sent none).
    pub status: u16,
    /// Time from sending to the backend until its response header or the failure.
    pub latency: Duration,
    /// Why the attempt failed, when it got no response.
    pub error: Option<AttemptError>,
    /// Another attempt follows this one.
    pub retried: bool,
    /// 1 for the first attempt.
    pub attempt: u32,
}
