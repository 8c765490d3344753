//! Where a hashing strategy takes its key from: client IP, a header, a cookie, the path, or a
//! query parameter. Extraction borrows from the request; nothing is allocated.

use crate::config::PathError;
use http::header::HeaderName;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// The part of the request a consistent-hash key is read from.
///
/// Written in the config as `client_ip`, `path`, `header:<name>`, `cookie:<name>` or
/// `query:<name>`. When the named header, cookie or parameter is missing, the client IP is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
    /// The value of a request header.
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(String),
    /// The value of a query parameter.
    Query(String),
}

const ALLOWED: &str = "allowed: client_ip, path, header:<name>, cookie:<name>, query:<name>";

impl KeySource {
    /// Parse the config form.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a.trim())),
            None => (s, None),
        };
        match (kind, arg) {
            ("client_ip", None) => Ok(KeySource::ClientIp),
            ("path", None) => Ok(KeySource::Path),
            ("header", Some(name)) if !name.is_empty() => HeaderName::from_bytes(name.as_bytes())
                .map(KeySource::Header)
                .map_err(|_| PathError::here(format!("`{name}` is not a valid header name"))),
            ("cookie", Some(name)) if !name.is_empty() => Ok(KeySource::Cookie(name.to_string())),
            ("query", Some(name)) if !name.is_empty() => Ok(KeySource::Query(name.to_string())),
            _ => Err(PathError::here(format!(
                "unknown hash key `{s}` ({ALLOWED})"
            ))),
        }
    }

    /// The key bytes for this request. `ip_buf` holds the client IP when that is the key.
    pub fn extract<'a>(
        &self,
        req: &'a RequestHeader,
        client: Option<IpAddr>,
        ip_buf: &'a mut [u8; 16],
    ) -> &'a [u8] {
        let found = match self {
            KeySource::ClientIp => None,
            KeySource::Path => Some(req.uri.path().as_bytes()),
            KeySource::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
            KeySource::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes())),
            KeySource::Query(name) => req
                .uri
                .query()
                .and_then(|q| query_value(q.as_bytes(), name.as_bytes())),
        };
        match found {
            Some(k) => k,
            None => ip_bytes(client, ip_buf),
        }
    }
}

/// The bytes of `client` (4 or 16; none without an address): the client-IP hash key.
pub fn ip_bytes(client: Option<IpAddr>, buf: &mut [u8; 16]) -> &[u8] {
    match client {
        Some(IpAddr::V4(v4)) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        Some(IpAddr::V6(v6)) => {
            *buf = v6.octets();
            &buf[..]
        }
        None => &[],
    }
}

/// The value of cookie `name` in one `Cookie` header value.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// The (raw, undecoded) value of parameter `name` in a query string.
pub fn query_value<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn parses_all_forms() {
        assert_eq!(KeySource::parse("client_ip").unwrap(), KeySource::ClientIp);
        assert_eq!(KeySource::parse("path").unwrap(), KeySource::Path);
        assert!(matches!(
            KeySource::parse("header:x-user").unwrap(),
            KeySource::Header(_)
        ));
        assert_eq!(
            KeySource::parse("cookie:sid").unwrap(),
            KeySource::Cookie("sid".into())
        );
        assert_eq!(
            KeySource::parse("query:u").unwrap(),
            KeySource::Query("u".into())
        );
        let e = KeySource::parse("body").unwrap_err();
        assert!(e.message.contains("allowed"), "{e}");
        assert!(KeySource::parse("header:").is_err());
    }

    #[test]
    fn extracts_each_source() {
        let r = req(
            "/a/b?x=1&u=alice",
            &[("x-user", "bob"), ("cookie", "a=1; sid=s3cr3t")],
        );
        let ip = Some(IpAddr::from([10, 0, 0, 7]));
        let mut buf = [0; 16];
        assert_eq!(KeySource::Path.extract(&r, ip, &mut buf), b"/a/b");
        let h = KeySource::parse("header:x-user").unwrap();
        assert_eq!(h.extract(&r, ip, &mut buf), b"bob");
        let c = KeySource::parse("cookie:sid").unwrap();
        assert_eq!(c.extract(&r, ip, &mut buf), b"s3cr3t");
        let q = KeySource::parse("query:u").unwrap();
        assert_eq!(q.extract(&r, ip, &mut buf), b"alice");
        assert_eq!(
            KeySource::ClientIp.extract(&r, ip, &mut buf),
            &[10, 0, 0, 7]
        );
    }

    #[test]
    fn missing_key_falls_back_to_client_ip() {
        let r = req("/", &[]);
        let ip = Some(IpAddr::from([10, 0, 0, 9]));
        let mut buf = [0; 16];
        let h = KeySource::parse("header:x-user").unwrap();
        assert_eq!(h.extract(&r, ip, &mut buf), &[10, 0, 0, 9]);
    }
}
