//! Response compression per route, done by Pingora's compression module (gzip, brotli,
//! zstd): the route decides whether and how hard, the module negotiates `Accept-Encoding`,
//! leaves responses that already carry a `Content-Encoding` alone, and streams the encoding.
//!
//! The module is in every HTTP session, disabled (level 0). A route with `compression`
//! enables its encodings when the request is routed; the response then turns it off again
//! unless its media type is in the route's list and its `Content-Length` (when it has one)
//! is at least `min_size`.

use crate::config::compression::{CompressionConfig, Encoding};
use crate::config::PathError;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::Session;

/// A route's compiled `compression`.
#[derive(Debug)]
pub struct Compression {
    /// Offered encodings, in the route's order of preference.
    offered: Vec<Encoding>,
    level: u32,
    min_size: u64,
    types: Vec<String>,
    /// For each offered encoding, a request header naming it alone, handed to the module
    /// (built here once, not per request).
    accepts: Vec<RequestHeader>,
}

fn algorithm(e: Encoding) -> (Algorithm, &'static str) {
    match e {
        Encoding::Gzip => (Algorithm::Gzip, "gzip"),
        Encoding::Br => (Algorithm::Brotli, "br"),
        Encoding::Zstd => (Algorithm::Zstd, "zstd"),
    }
}

impl Compression {
    /// Check and compile `c`.
    pub fn compile(c: &CompressionConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        if c.algorithms.is_empty() {
            errors.push(PathError::at(
                "compression.algorithms",
                "list at least one of gzip, br, zstd",
            ));
        }
        if !(1..=9).contains(&c.level) {
            errors.push(PathError::at(
                "compression.level",
                format!("must be between 1 and 9, got {}", c.level),
            ));
        }
        if c.content_types.is_empty() || c.content_types.iter().any(|t| !valid_type(t)) {
            errors.push(PathError::at(
                "compression.content_types",
                "list media types such as `application/json` or prefixes such as `text/`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut offered = c.algorithms.clone();
        offered.dedup();
        let accepts = offered
            .iter()
            .map(|&e| {
                let mut req = RequestHeader::build("GET", b"/", Some(1))?;
                req.insert_header(http::header::ACCEPT_ENCODING, algorithm(e).1)?;
                Ok(req)
            })
            .collect::<pingora::Result<Vec<_>>>()
            .map_err(|e| vec![PathError::at("compression", e.to_string())])?;
        Ok(Compression {
            accepts,
            offered,
            level: c.level,
            min_size: c.min_size,
            types: c
                .content_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        })
    }

    /// The encoding to use for a client's `Accept-Encoding`: the offered one with the highest
    /// q-value (`*` stands for those not named; q=0 refuses), ties going to the route's order.
    pub fn negotiate(&self, accept: &[u8]) -> Option<Encoding> {
        self.negotiate_index(accept).map(|i| self.offered[i])
    }

    fn negotiate_index(&self, accept: &[u8]) -> Option<usize> {
        let accept = std::str::from_utf8(accept).ok()?;
        let q_of = |name: &str| -> Option<f32> {
            let mut star = None;
            for item in accept.split(',').take(32) {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |v| v.trim().parse::<f32>().ok())
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
                if coding.eq_ignore_ascii_case(name) {
                    return Some(q);
                }
                if coding == "*" {
                    star = Some(q);
                }
            }
            star
        };
        let mut best: Option<(usize, f32)> = None;
        for (i, &e) in self.offered.iter().enumerate() {
            let q = q_of(algorithm(e).1).unwrap_or(0.0);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((i, q));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Enable the negotiated encoding for the session (request phase). The module saw the
    /// request header while it was still disabled (modules run before routing), so it is
    /// handed the one encoding chosen here.
    pub fn enable(&self, session: &mut Session) {
        let chosen = session
            .req_header()
            .headers
            .get(http::header::ACCEPT_ENCODING)
            .and_then(|v| self.negotiate_index(v.as_bytes()));
        let Some(chosen) = chosen else { return };
        let Some(m) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        else {
            return;
        };
        if !m.is_header_phase() {
            return;
        }
        m.adjust_algorithm_level(algorithm(self.offered[chosen]).0, self.level);
        m.request_filter(&self.accepts[chosen]);
    }

    /// Whether `resp` is worth compressing (media type listed, large enough).
    pub fn wants(&self, resp: &ResponseHeader) -> bool {
        let header = |n| resp.headers.get(n).and_then(|v| v.to_str().ok());
        let small = header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n < self.min_size);
        let Some(ct) = header(http::header::CONTENT_TYPE) else {
            return false;
        };
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        !small
            && self.types.iter().any(|t| {
                if t.ends_with('/') {
                    media.starts_with(t.as_str())
                } else {
                    media == *t
                }
            })
    }

    /// Response phase: turn compression off for this response unless it is wanted.
    pub fn decide(&self, session: &mut Session, resp: &ResponseHeader) {
        if self.wants(resp) {
            return;
        }
        if let Some(m) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            if m.is_header_phase() {
                m.adjust_level(0);
            }
        }
    }
}

fn valid_type(t: &str) -> bool {
    let (kind, sub) = match t.split_once('/') {
        Some(p) => p,
        None => return false,
    };
    let token = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    !kind.is_empty() && token(kind) && token(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> Compression {
        let c: CompressionConfig = serde_yaml::from_str(yaml).unwrap();
        Compression::compile(&c).unwrap()
    }

    fn resp(ct: Option<&str>, len: Option<u64>) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        if let Some(ct) = ct {
            r.insert_header("content-type", ct).unwrap();
        }
        if let Some(n) = len {
            r.insert_header("content-length", n.to_string()).unwrap();
        }
        r
    }

    #[test]
    fn media_type_and_size_decide() {
        let c = compiled("{}");
        assert!(c.wants(&resp(Some("text/html; charset=utf-8"), Some(5000))));
        assert!(
            c.wants(&resp(Some("application/json"), None)),
            "chunked: size unknown"
        );
        assert!(
            !c.wants(&resp(Some("application/json"), Some(100))),
            "below min_size"
        );
        assert!(!c.wants(&resp(Some("image/png"), Some(5000))));
        assert!(
            !c.wants(&resp(Some("application/jsonx"), Some(5000))),
            "exact type, not a prefix"
        );
        assert!(!c.wants(&resp(None, Some(5000))), "no media type");
    }

    #[test]
    fn negotiation_follows_q_values_then_the_route_order() {
        let c = compiled("{algorithms: [zstd, br, gzip]}");
        let pick = |a: &str| c.negotiate(a.as_bytes());
        assert_eq!(pick("gzip"), Some(Encoding::Gzip));
        assert_eq!(
            pick("gzip, br"),
            Some(Encoding::Br),
            "equal q: the route's order"
        );
        assert_eq!(pick("br;q=0.5, gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("zstd;q=0, br;q=0"), None, "q=0 refuses");
        assert_eq!(pick("*"), Some(Encoding::Zstd));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=bad"), None);
        assert_eq!(pick("GZIP ; q=0.3"), Some(Encoding::Gzip));
        let only_gzip = compiled("{algorithms: [gzip]}");
        assert_eq!(only_gzip.negotiate(b"br, zstd"), None);
        assert_eq!(only_gzip.negotiate(b"br, gzip;q=0.1"), Some(Encoding::Gzip));
    }

    #[test]
    fn bad_settings_are_located() {
        for (yaml, path) in [
            ("{algorithms: []}", "compression.algorithms"),
            ("{level: 0}", "compression.level"),
            ("{content_types: ['html']}", "compression.content_types"),
        ] {
            let c: CompressionConfig = serde_yaml::from_str(yaml).unwrap();
            let e = Compression::compile(&c).unwrap_err();
            assert_eq!(e[0].path, path, "{yaml}");
        }
    }
}
