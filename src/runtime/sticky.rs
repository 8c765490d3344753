//! Sticky sessions by a gateway-issued cookie: the cookie names a backend by a keyed hash, the
//! request path matches it against tokens the control plane computed when it built the
//! upstream, and the response sets it when the backend that served is not the one it names.
//!
//! The token is the first 16 bytes of HMAC-SHA256(key, upstream name, 0, address), in hex: it
//! never reveals an address, and a client cannot forge one for a backend it was not sent to.
//! A cookie that matches no eligible backend (tampered, unknown, or its backend out of
//! rotation) is ignored: the request is balanced normally and the cookie is issued again.

use crate::config::upstream::StickyConfig;
use crate::config::PathError;
use http::HeaderValue;
use once_cell::sync::Lazy;
use pingora::http::RequestHeader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A backend's token: 16 bytes of the HMAC.
pub type Token = u128;

/// A compiled `sticky` section.
#[derive(Debug, Clone)]
pub struct Sticky {
    name: Arc<str>,
    /// `; Path=/; Max-Age=...; HttpOnly; SameSite=Lax`: everything after the value.
    attributes: Arc<str>,
    key: Arc<[u8]>,
}

/// The key when the config gives none: random, once per process (kept across reloads).
static PROCESS_KEY: Lazy<Vec<u8>> = Lazy::new(|| {
    let mut k = vec![0u8; 32];
    if openssl::rand::rand_bytes(&mut k).is_err() {
        // No CSPRNG: a time-seeded key still keeps tokens opaque, not unguessable.
        log::warn!("sticky: no secure random source; set `sticky.secret`");
        k.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    k
});

/// Longest `ttl` accepted.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Printable ASCII without `;`, `,` or spaces: safe inside a `Set-Cookie` attribute.
fn valid_attribute(v: &str) -> bool {
    v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b','))
}

impl Sticky {
    /// Check and compile `c`; errors are located under `sticky`.
    pub fn compile(c: &StickyConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        let mut err = |key: &str, msg: String| {
            errors.push(PathError::at(format!("sticky.{key}"), msg));
        };
        if !valid_name(&c.cookie) {
            err(
                "cookie",
                format!(
                    "`{}` is not a cookie name: use 1-64 letters, digits, `-`, `_` or `.`",
                    c.cookie
                ),
            );
        }
        if !c.path.starts_with('/') || !valid_attribute(&c.path) {
            err(
                "path",
                format!(
                    "`{}` must start with `/` and hold no spaces, `;` or `,`",
                    c.path
                ),
            );
        }
        if let Some(d) = c
            .domain
            .as_deref()
            .filter(|d| d.is_empty() || !valid_attribute(d))
        {
            err("domain", format!("`{d}` is not a cookie domain"));
        }
        if let Some(t) = c.ttl.filter(|t| t.0.is_zero() || t.0 > MAX_TTL) {
            err(
                "ttl",
                format!("must be between 1s and 10 years, got {:?}", t.0),
            );
        }
        let same_site = match c.same_site.to_ascii_lowercase().as_str() {
            "strict" => "Strict",
            "lax" => "Lax",
            "none" if c.secure => "None",
            "none" => {
                err(
                    "same_site",
                    "`none` requires `secure: true` (browsers drop it otherwise)".into(),
                );
                "None"
            }
            other => {
                err(
                    "same_site",
                    format!("`{other}` is not allowed: strict, lax or none"),
                );
                "Lax"
            }
        };
        let key = match secret(c) {
            Ok(k) => k,
            Err((key, msg)) => {
                err(key, msg);
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut attributes = format!("; Path={}", c.path);
        if let Some(d) = &c.domain {
            attributes.push_str(&format!("; Domain={d}"));
        }
        if let Some(t) = c.ttl {
            attributes.push_str(&format!("; Max-Age={}", t.0.as_secs().max(1)));
        }
        if c.secure {
            attributes.push_str("; Secure");
        }
        if c.http_only {
            attributes.push_str("; HttpOnly");
        }
        attributes.push_str(&format!("; SameSite={same_site}"));
        Ok(Sticky {
            name: c.cookie.as_str().into(),
            attributes: attributes.into(),
            key: key.into(),
        })
    }

    /// The token of backend `addr` of upstream `upstream`.
    pub fn token(&self, upstream: &str, addr: SocketAddr) -> Token {
        let data = format!("{upstream}\0{addr}");
        let mac = openssl::pkey::PKey::hmac(&self.key)
            .and_then(|k| {
                let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &k)?;
                s.update(data.as_bytes())?;
                s.sign_to_vec()
            })
            .unwrap_or_default();
        let mut first = [0u8; 16];
        for (d, s) in first.iter_mut().zip(&mac) {
            *d = *s;
        }
        u128::from_be_bytes(first)
    }

    /// The token the request's cookie carries, if it is well formed (32 hex digits).
    #[inline]
    pub fn read(&self, req: &RequestHeader) -> Option<Token> {
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| crate::balance::key::cookie_value(v.as_bytes(), self.name.as_bytes()))
            .filter(|v| v.len() == 32)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| u128::from_str_radix(v, 16).ok())
    }

    /// The `Set-Cookie` value naming `token`.
    pub fn set_cookie(&self, token: Token) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}={token:032x}{}", self.name, self.attributes)).ok()
    }
}

/// A sticky upstream's settings and each backend's token, computed by the control plane when it
/// builds the upstream (and kept while the backends stay the same).
#[derive(Debug, Clone)]
pub struct StickyTable {
    sticky: Sticky,
    tokens: Arc<[(SocketAddr, Token)]>,
}

impl StickyTable {
    /// The tokens of `addrs` in `upstream`.
    pub fn new(sticky: Sticky, upstream: &str, addrs: &[SocketAddr]) -> Self {
        let tokens = addrs
            .iter()
            .map(|a| (*a, sticky.token(upstream, *a)))
            .collect();
        StickyTable { sticky, tokens }
    }

    /// The table for members `addrs`: this one when they are the same backends.
    pub fn for_members(&self, upstream: &str, addrs: &[SocketAddr]) -> Self {
        let same = self.tokens.len() == addrs.len()
            && addrs
                .iter()
                .all(|a| self.tokens.iter().any(|(t, _)| t == a));
        if same {
            self.clone()
        } else {
            Self::new(self.sticky.clone(), upstream, addrs)
        }
    }

    /// The token of the request's cookie, when it carries a well-formed one, and the backend it
    /// names, if it is one of ours.
    #[inline]
    pub fn target(&self, req: &RequestHeader) -> Option<(Token, Option<SocketAddr>)> {
        let t = self.sticky.read(req)?;
        Some((
            t,
            self.tokens.iter().find(|(_, k)| *k == t).map(|(a, _)| *a),
        ))
    }

    /// The `Set-Cookie` value for an answer from `addr`, unless the request's cookie
    /// (`carried`) already names it.
    pub fn cookie(&self, addr: SocketAddr, carried: Option<Token>) -> Option<HeaderValue> {
        let t = self.tokens.iter().find(|(a, _)| *a == addr)?.1;
        (carried != Some(t))
            .then(|| self.sticky.set_cookie(t))
            .flatten()
    }
}

/// The HMAC key: `secret`, `secret_env`, or the process's random key.
fn secret(c: &StickyConfig) -> Result<Vec<u8>, (&'static str, String)> {
    let given = match (&c.secret, &c.secret_env) {
        (Some(_), Some(_)) => {
            return Err(("secret", "set `secret` or `secret_env`, not both".into()))
        }
        (Some(s), None) => Some((s.clone(), "secret")),
        (None, Some(var)) => match std::env::var(var) {
            Ok(s) => Some((s, "secret_env")),
            Err(_) => {
                return Err((
                    "secret_env",
                    format!("environment variable `{var}` is not set"),
                ))
            }
        },
        (None, None) => None,
    };
    match given {
        Some((s, key)) if s.len() < 16 => {
            Err((key, format!("must be at least 16 bytes, got {}", s.len())))
        }
        Some((s, _)) => Ok(s.into_bytes()),
        None => Ok(PROCESS_KEY.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> StickyConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_cookie_carries_every_attribute_and_an_opaque_token() {
        let s = Sticky::compile(&config(
            "{ cookie: srv, ttl: 1h, domain: example.com, secure: true, same_site: none, secret: 0123456789abcdef }",
        ))
        .unwrap();
        let addr: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let t = s.token("api", addr);
        let v = s.set_cookie(t).unwrap();
        let v = v.to_str().unwrap();
        assert_eq!(
            v,
            format!("srv={t:032x}; Path=/; Domain=example.com; Max-Age=3600; Secure; HttpOnly; SameSite=None")
        );
        assert!(!v.contains("10.0.0.5"));
        // The same key gives the same token (a fleet, a restart); another key does not.
        let again = Sticky::compile(&config("{ cookie: srv, secret: 0123456789abcdef }")).unwrap();
        assert_eq!(again.token("api", addr), t);
        let other = Sticky::compile(&config("{ cookie: srv, secret: fedcba9876543210 }")).unwrap();
        assert_ne!(other.token("api", addr), t);
        assert_ne!(s.token("web", addr), t, "keyed by upstream too");
    }

    #[test]
    fn reads_only_a_well_formed_token() {
        let s = Sticky::compile(&config("{ cookie: srv }")).unwrap();
        let t = s.token("api", "127.0.0.1:1".parse().unwrap());
        let req = |cookie: &str| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.append_header("cookie", cookie).unwrap();
            r
        };
        assert_eq!(s.read(&req(&format!("a=1; srv={t:032x}"))), Some(t));
        assert_eq!(s.read(&req("srv=10.0.0.5:8080")), None);
        assert_eq!(s.read(&req("srv=zz")), None);
        assert_eq!(s.read(&req(&format!("srvx={t:032x}"))), None);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = Sticky::compile(&config(
            "{ cookie: 'a b', path: x, same_site: none, secret: short, ttl: 0s }",
        ))
        .unwrap_err();
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        for key in [
            "sticky.cookie",
            "sticky.path",
            "sticky.same_site",
            "sticky.secret",
            "sticky.ttl",
        ] {
            assert!(text.iter().any(|t| t.starts_with(key)), "{key}: {text:?}");
        }
    }
}
