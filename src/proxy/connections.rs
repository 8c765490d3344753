//! Counting accepted client connections per listener (Pingora's connection filter hook).

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use prometheus::IntCounter;
use std::net::SocketAddr;

/// Counts every accepted connection; accepts all.
pub struct ConnectionCounter(pub IntCounter);

impl std::fmt::Debug for ConnectionCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionCounter")
    }
}

#[async_trait]
impl ConnectionFilter for ConnectionCounter {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        self.0.inc();
        true
    }
}
