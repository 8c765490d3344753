//! The PROXY protocol (HAProxy's, versions 1 and 2): reading the header a load balancer in
//! front sends, and writing one to a backend so that it sees the real client.
//!
//! Reading never takes a byte past the header: version 1 is read up to its `\n` (at most 107
//! bytes, as the spec bounds it), version 2 exactly by its length field (at most
//! [`MAX_V2_LEN`] bytes of addresses and TLVs, which are skipped).

use pingora::protocols::{GetSocketDigest, SocketDigest, UniqueID};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, `\r\n` included.
pub const MAX_V1_LEN: usize = 107;
/// Most bytes of addresses and TLVs accepted after a version 2 header's first 16.
pub const MAX_V2_LEN: usize = 2048;

/// What a header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is proxied for this client, to this destination.
    Proxied {
        /// The real client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// No address (v1 `UNKNOWN`, v2 `LOCAL` or a non-TCP family): keep the peer's.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed PROXY protocol header: {}", self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(why.into()))
}

/// Read one header (v1 or v2) from `r`.
pub async fn read_header<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Header, Malformed> {
    let io = |e: std::io::Error| Malformed(format!("connection ended in the header ({e})"));
    let mut head = [0u8; 12];
    r.read_exact(&mut head).await.map_err(io)?;
    if head == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        r.read_exact(&mut rest).await.map_err(io)?;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len > MAX_V2_LEN {
            return bad(format!("v2 length {len} is over {MAX_V2_LEN}"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.map_err(io)?;
        return parse_v2(rest[0], rest[1], &body);
    }
    if !head.starts_with(b"PROXY ") {
        return bad("neither `PROXY ` (v1) nor the v2 signature");
    }
    let mut line = head.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= MAX_V1_LEN {
            return bad(format!("v1 line longer than {MAX_V1_LEN} bytes"));
        }
        line.push(r.read_u8().await.map_err(io)?);
    }
    parse_v1(&line)
}

/// Read the PROXY header a trusted load balancer sends first, and make the address it names
/// the connection's peer (and its destination the local address), so that filters, logs and
/// keyed strategies see the real client. A `LOCAL` header keeps the socket's addresses. Any
/// protocol: TCP listeners, plain HTTP, and HTTPS before the TLS handshake.
pub async fn accept<S>(
    stream: &mut S,
    trusts: &(dyn Fn(IpAddr) -> bool + Sync),
    timeout: Duration,
) -> Result<(), String>
where
    S: AsyncRead + GetSocketDigest + UniqueID + Unpin + ?Sized,
{
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()));
    match peer {
        Some(a) if trusts(a.ip()) => {}
        _ => {
            return Err(format!(
                "PROXY header expected from a trusted peer, not {peer:?}"
            ))
        }
    }
    let header = tokio::time::timeout(timeout, read_header(stream))
        .await
        .map_err(|_| format!("no PROXY header from {peer:?} within {timeout:?}"))?
        .map_err(|e| format!("{e} (from {peer:?})"))?;
    if let Header::Proxied {
        source,
        destination,
    } = header
    {
        let digest = SocketDigest::from_raw_fd(stream.id());
        let _ = digest.peer_addr.set(Some(source.into()));
        let _ = digest.local_addr.set(Some(destination.into()));
        stream.set_socket_digest(digest);
    }
    Ok(())
}

/// Log a refused connection at most once a second, whatever the listener: a hostile peer must
/// not flood the log. The next line counts the refusals left out in between.
pub fn log_refusal(why: &str) {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    let second = crate::balance::now_ns() / 1_000_000_000 + 1;
    let last = LAST_SECOND.load(Relaxed);
    if last == second
        || LAST_SECOND
            .compare_exchange(last, second, Relaxed, Relaxed)
            .is_err()
    {
        LEFT_OUT.fetch_add(1, Relaxed);
        return;
    }
    match LEFT_OUT.swap(0, Relaxed) {
        0 => log::warn!("refused a connection: {why}"),
        n => log::warn!("refused a connection: {why} ({n} more refused since the last line)"),
    }
}

/// Parse a whole version 1 line (`\r\n` included).
pub fn parse_v1(line: &[u8]) -> Result<Header, Malformed> {
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or_else(|| Malformed("v1 line is not ASCII ending in CRLF".into()))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, Malformed> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| Malformed(format!("v1 address `{s}` is not an IP")))?;
                if ip.is_ipv4() != (*fam == "TCP4") {
                    return bad(format!("v1 address `{s}` is not {fam}"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, Malformed> {
                match s.parse::<u16>() {
                    Ok(p) if !s.starts_with('0') || s == "0" => Ok(p),
                    _ => bad(format!("v1 port `{s}` is not 0-65535")),
                }
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => bad("v1 line is not `PROXY TCP4|TCP6|UNKNOWN src dst sport dport`"),
    }
}

/// Parse a version 2 header from its version/command byte, family byte and body.
pub fn parse_v2(ver_cmd: u8, family: u8, body: &[u8]) -> Result<Header, Malformed> {
    if ver_cmd >> 4 != 2 {
        return bad(format!("v2 version {} (allowed: 2)", ver_cmd >> 4));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(Header::Local),
        1 => {}
        c => return bad(format!("v2 command {c} (allowed: 0 LOCAL, 1 PROXY)")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP or UDP over IPv4.
        0x11 | 0x12 if body.len() >= 12 => {
            let v4 = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(Header::Proxied {
                source: SocketAddr::new(v4(&body[0..4]), port(&body[8..10])),
                destination: SocketAddr::new(v4(&body[4..8]), port(&body[10..12])),
            })
        }
        0x21 | 0x22 if body.len() >= 36 => {
            let v6 = |b: &[u8]| {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(v6(&body[0..16]), port(&body[32..34])),
                destination: SocketAddr::new(v6(&body[16..32]), port(&body[34..36])),
            })
        }
        0x11 | 0x12 | 0x21 | 0x22 => bad("v2 address block shorter than its family needs"),
        // UNSPEC and UNIX sockets carry no IP address: keep the peer's.
        0x00 | 0x31 | 0x32 => Ok(Header::Local),
        f => bad(format!("v2 family byte {f:#04x}")),
    }
}

/// Both addresses in one family (an IPv4 one mapped into IPv6 when they differ).
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

/// A version 1 header for a connection from `source` to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

/// A version 2 header (command PROXY, TCP) for a connection from `source` to `destination`.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(si));
            out.extend_from_slice(&v6(di));
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    async fn read(bytes: &[u8]) -> (Result<Header, Malformed>, Vec<u8>) {
        let mut r = bytes;
        let h = read_header(&mut r).await;
        (h, r.to_vec())
    }

    #[tokio::test]
    async fn both_versions_round_trip_and_leave_the_payload() {
        for (src, dst) in [
            ("192.0.2.7:51000", "10.0.0.1:443"),
            ("[2001:db8::7]:51000", "[2001:db8::1]:443"),
        ] {
            let (s, d) = (addr(src), addr(dst));
            for enc in [encode_v1(s, d), encode_v2(s, d)] {
                let mut wire = enc.clone();
                wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
                let (h, rest) = read(&wire).await;
                assert_eq!(
                    h,
                    Ok(Header::Proxied {
                        source: s,
                        destination: d
                    })
                );
                assert_eq!(rest, b"GET / HTTP/1.1\r\n", "after {enc:?}");
            }
        }
    }

    #[tokio::test]
    async fn the_shortest_v1_header_reads_no_payload_byte() {
        let (h, rest) = read(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!(h, Ok(Header::Local));
        assert_eq!(rest, b"X");
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        for wire in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4",
            &long,
        ] {
            assert!(
                read(wire).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut v2 = encode_v2(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        v2[12] = 0x31; // version 3
        assert!(read(&v2).await.0.is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(read(&v2).await.0.unwrap_err().0.contains("length"));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(read(&v2).await.0.is_err(), "short IPv4 block");
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let h = encode_v1(addr("192.0.2.7:1"), addr("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n");
    }
}
