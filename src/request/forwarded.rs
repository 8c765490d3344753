//! The client's address behind trusted proxies, and the `X-Forwarded-*` / `Forwarded` headers
//! sent to backends.
//!
//! As nginx's `realip` module with `real_ip_recursive on`: only when the connection's peer is a
//! trusted proxy is `X-Forwarded-For` read, from the right; the client is the right-most
//! address that is not itself a trusted proxy. A header from an untrusted peer is never
//! believed (the gateway still appends to it, so backends see the whole chain).

use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse CIDRs (`10.0.0.0/8`) or single addresses; the error names the bad entry.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, (usize, String)> {
        let mut nets = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let s = s.as_ref().trim();
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    (
                        i,
                        format!("`{s}` is not an IP address or CIDR (e.g. 10.0.0.0/8, ::1)"),
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: `peer` unless `peer` is trusted, else the right-most untrusted
    /// hop of the `X-Forwarded-For` values (in header order). An unparsable hop stops the walk
    /// at the last trusted one.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        xff: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for value in xff.rev() {
            for hop in value.rsplit(|&b| b == b',') {
                let Some(ip) = parse_hop(hop) else {
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` element: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(hop).ok()?.trim();
    if s.len() > 64 {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(canonical);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<IpAddr>().ok().map(canonical)
}

/// `existing, peer` (or `peer` alone), the value of the `X-Forwarded-For` sent upstream.
pub fn append_xff(existing: Option<&[u8]>, peer: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.map_or(0, |e| e.len() + 2) + 40);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        out.extend_from_slice(e);
        out.extend_from_slice(b", ");
    }
    write_ip(&mut out, canonical(peer));
    out
}

/// Append `ip` in its text form (`192.0.2.1`, `2001:db8::1`). IPv4, the usual case, is
/// written octet by octet rather than through `fmt`: this runs for every proxied request
/// (`X-Forwarded-For`, the access log).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(*octet).as_bytes());
            }
        }
        // io::Write on a Vec formats in place, with no intermediate String.
        IpAddr::V6(v6) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// One RFC 7239 `Forwarded` element for this hop, appended to `existing`.
pub fn append_forwarded(
    existing: Option<&[u8]>,
    peer: IpAddr,
    proto: &str,
    host: Option<&str>,
) -> Vec<u8> {
    let mut s = String::with_capacity(96);
    match canonical(peer) {
        IpAddr::V4(v4) => {
            let _ = write!(s, "for={v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(s, "for=\"[{v6}]\"");
        }
    }
    let _ = write!(s, ";proto={proto}");
    if let Some(h) = host.filter(|h| is_token_safe(h)) {
        let _ = write!(s, ";host=\"{h}\"");
    }
    let mut out = Vec::with_capacity(existing.map_or(0, |e| e.len() + 2) + s.len());
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        out.extend_from_slice(e);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(s.as_bytes());
    out
}

/// A host that can sit in a quoted-string without escaping.
fn is_token_safe(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let xff: [&[u8]; 1] = [b"1.2.3.4"];
        assert_eq!(t.client(ip("192.0.2.9"), xff.into_iter()), ip("192.0.2.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), xff.into_iter()), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        let xff: [&[u8]; 2] = [b"6.6.6.6, 203.0.113.7", b"10.1.1.1"];
        assert_eq!(t.client(ip("10.0.0.1"), xff.into_iter()), ip("203.0.113.7"));
        let all_trusted: [&[u8]; 1] = [b"10.9.9.9 , 10.8.8.8"];
        assert_eq!(t.client(ip("::1"), all_trusted.into_iter()), ip("10.9.9.9"));
        let with_port: [&[u8]; 1] = [b"[2001:db8::1]:443, 198.51.100.1:80"];
        assert_eq!(
            t.client(ip("10.0.0.1"), with_port.into_iter()),
            ip("198.51.100.1")
        );
        let junk: [&[u8]; 1] = [b"1.2.3.4, garbage, 10.2.2.2"];
        assert_eq!(t.client(ip("10.0.0.1"), junk.into_iter()), ip("10.2.2.2"));
        let empty: [&[u8]; 0] = [];
        assert_eq!(t.client(ip("10.0.0.1"), empty.into_iter()), ip("10.0.0.1"));
        let mapped = ip("::ffff:10.0.0.5");
        assert!(t.contains(mapped));
    }

    #[test]
    fn write_ip_is_the_display_form() {
        for s in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "2001:db8::1",
            "::ffff:10.0.0.5",
        ] {
            let mut out = b"x".to_vec();
            write_ip(&mut out, ip(s));
            assert_eq!(out, format!("x{}", ip(s)).as_bytes(), "{s}");
        }
    }

    #[test]
    fn headers_are_appended() {
        assert_eq!(append_xff(None, ip("127.0.0.1")), b"127.0.0.1");
        assert_eq!(append_xff(Some(b"1.1.1.1"), ip("::1")), b"1.1.1.1, ::1");
        assert_eq!(
            append_forwarded(None, ip("::1"), "https", Some("a.example")),
            b"for=\"[::1]\";proto=https;host=\"a.example\"".to_vec()
        );
        assert_eq!(
            append_forwarded(
                Some(b"for=1.1.1.1"),
                ip("10.0.0.1"),
                "http",
                Some("bad\"host")
            ),
            b"for=1.1.1.1, for=10.0.0.1;proto=http".to_vec()
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/8", "nope"]).is_err());
    }
}
