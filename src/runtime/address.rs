//! Addresses in the config: listen addresses (literal) and backend addresses (resolved).

use std::net::{SocketAddr, ToSocketAddrs};

/// A listen address must be a literal `ip:port`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not a valid listen address (allowed: ip:port, e.g. 0.0.0.0:8080 or [::]:8080)"))
}

/// A backend address: `ip:port`, or `hostname:port` resolved now.
pub fn resolve_backend_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("`{s}` is not a valid address (allowed: ip:port or hostname:port)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    // Looks like an IP but did not parse as one: invalid, and not worth a DNS query.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || host.contains(':')
        || host.starts_with('[')
    {
        return Err(format!(
            "`{s}` is not a valid IP address and port (e.g. 10.0.0.5:8080 or [::1]:8080)"
        ));
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}`: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}
