//! Compiled routes and request matching.
//!
//! The most specific matching route wins; ties go to the route listed first. Specificity is
//! compared in this order: host (exact > wildcard, longer wildcard suffix first > any), path
//! (exact > prefix, longer prefix first > any), then the number of method and header
//! conditions.

use crate::config::model::{HeaderMatchConfig, MatchConfig, PathMatchConfig};
use crate::config::PathError;
use crate::filters::FilterChain;
use http::header::HeaderName;
use pingora::http::RequestHeader;
use prometheus::IntCounter;
use regex::bytes::Regex;
use std::sync::Arc;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: Arc<str>,
    /// Interned name (metric label cache key).
    pub label_id: u32,
    /// Index of the upstream in the snapshot.
    pub upstream: usize,
    /// Request body bytes received on this route.
    pub bytes_in: IntCounter,
    /// Response body bytes sent on this route.
    pub bytes_out: IntCounter,
    /// Global filters, then the route's own.
    pub filters: FilterChain,
    /// Where copies of some requests go, if anywhere.
    pub mirror: Option<Arc<super::mirror::Mirror>>,
    /// How its responses are compressed, if they are.
    pub compression: Option<Arc<super::compression::Compression>>,
    matcher: Matcher,
}

impl Route {
    /// A route with a compiled matcher.
    pub fn new(
        name: &str,
        upstream: usize,
        matcher: Matcher,
        bytes: (IntCounter, IntCounter),
    ) -> Self {
        Route {
            name: name.into(),
            label_id: crate::observe::labels::intern(name),
            upstream,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            filters: FilterChain::default(),
            mirror: None,
            compression: None,
            matcher,
        }
    }

    /// The same route with this filter chain.
    pub fn with_filters(mut self, filters: FilterChain) -> Self {
        self.filters = filters;
        self
    }
}

#[derive(Debug)]
enum HostMatch {
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

#[derive(Debug)]
enum PathMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    /// Exact, ignoring ASCII case.
    ExactNoCase(Box<str>),
    /// Prefix, ignoring ASCII case.
    PrefixNoCase(Box<str>),
}

#[derive(Debug)]
enum HeaderTest {
    Present(bool),
    Exact(Box<[u8]>),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    test: HeaderTest,
}

/// The compiled conditions of one route.
#[derive(Debug, Default)]
pub struct Matcher {
    hosts: Box<[HostMatch]>,
    path: Option<PathMatch>,
    /// Bitmask over [`crate::observe::labels::method_index`]; 0 = any method.
    methods: u16,
    headers: Box<[HeaderCond]>,
}

/// Specificity of a match: compared lexicographically, higher wins.
type Score = (u8, usize, u8, usize, usize);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

impl Matcher {
    /// Compile `cfg`, reporting every problem with its key path (relative to `match`).
    pub fn compile(cfg: &MatchConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        let mut hosts = Vec::new();
        for (i, h) in cfg.hosts.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if let Some(suffix) = h.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    errors.push(PathError::at(
                        format!("hosts[{i}]"),
                        "invalid wildcard host (allowed: `*.example.com`)",
                    ));
                }
                hosts.push(HostMatch::Suffix(format!(".{suffix}").into()));
            } else if h.is_empty() || h.contains('*') || h.contains('/') {
                errors.push(PathError::at(
                    format!("hosts[{i}]"),
                    format!("invalid host `{h}` (allowed: `example.com` or `*.example.com`)"),
                ));
            } else {
                hosts.push(HostMatch::Exact(h.into()));
            }
        }
        let path = match &cfg.path {
            None => None,
            Some(p) => match compile_path(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(e.under("path"));
                    None
                }
            },
        };
        let mut methods = 0u16;
        for (i, m) in cfg.methods.iter().enumerate() {
            match METHODS.iter().position(|k| k.eq_ignore_ascii_case(m)) {
                Some(_) => {
                    let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .unwrap_or_default();
                    methods |= 1 << crate::observe::labels::method_index(&method);
                }
                None => errors.push(PathError::at(
                    format!("methods[{i}]"),
                    format!("unknown method `{m}` (allowed: {})", METHODS.join(", ")),
                )),
            }
        }
        let mut headers = Vec::new();
        for (i, h) in cfg.headers.iter().enumerate() {
            match compile_header(h) {
                Ok(c) => headers.push(c),
                Err(e) => errors.push(e.under(&format!("headers[{i}]"))),
            }
        }
        if errors.is_empty() {
            Ok(Matcher {
                hosts: hosts.into(),
                path,
                methods,
                headers: headers.into(),
            })
        } else {
            Err(errors)
        }
    }

    /// The match score for `req`, or `None` when a condition fails.
    fn score(&self, req: &RequestHeader, host: &str) -> Option<Score> {
        let (host_rank, host_len) = if self.hosts.is_empty() {
            (0, 0)
        } else {
            let mut best = None;
            for h in self.hosts.iter() {
                let s = match h {
                    HostMatch::Exact(e) if host.eq_ignore_ascii_case(e) => Some((2, e.len())),
                    HostMatch::Suffix(s) if ends_with_ignore_case(host, s) => Some((1, s.len())),
                    _ => None,
                };
                best = best.max(s);
            }
            best?
        };
        let path = req.uri.path();
        let (path_rank, path_len) = match &self.path {
            None => (0, 0),
            Some(PathMatch::Exact(p)) if path == &**p => (2, p.len()),
            Some(PathMatch::Prefix(p)) if path.starts_with(&**p) => (1, p.len()),
            Some(PathMatch::ExactNoCase(p)) if path.eq_ignore_ascii_case(p) => (2, p.len()),
            Some(PathMatch::PrefixNoCase(p))
                if path.len() >= p.len()
                    && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()) =>
            {
                (1, p.len())
            }
            Some(_) => return None,
        };
        if self.methods != 0
            && self.methods & (1 << crate::observe::labels::method_index(&req.method)) == 0
        {
            return None;
        }
        for c in self.headers.iter() {
            let value = req.headers.get(&c.name);
            let ok = match (&c.test, value) {
                (HeaderTest::Present(want), v) => v.is_some() == *want,
                (HeaderTest::Exact(e), Some(v)) => v.as_bytes() == &**e,
                (HeaderTest::Regex(r), Some(v)) => r.is_match(v.as_bytes()),
                (_, None) => false,
            };
            if !ok {
                return None;
            }
        }
        let conds = usize::from(self.methods != 0) + self.headers.len();
        Some((host_rank, host_len, path_rank, path_len, conds))
    }
}

fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len()
        && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn compile_path(p: &PathMatchConfig) -> Result<PathMatch, PathError> {
    use crate::request::path::{normalize, Normalized, PathOptions};
    let check = |key: &str, v: &str| {
        if !v.starts_with('/') {
            return Err(PathError::at(key, format!("`{v}` must start with `/`")));
        }
        // Requests are normalised before routing: a pattern that is not in normal form
        // would never match.
        let strict = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        match normalize(v.as_bytes(), strict) {
            Ok(Normalized::Unchanged) => Ok(()),
            Ok(Normalized::Rewritten(n) | Normalized::Redirect(n)) => Err(PathError::at(
                key,
                format!(
                    "`{v}` is not a normalised path (requests are matched as `{}`)",
                    String::from_utf8_lossy(&n)
                ),
            )),
            Err(e) => Err(PathError::at(key, format!("`{v}`: {}", e.reason()))),
        }
    };
    let nocase = p.ignore_case;
    match (&p.exact, &p.prefix) {
        (Some(e), None) => check("exact", e).map(|_| {
            let e = e.as_str().into();
            if nocase {
                PathMatch::ExactNoCase(e)
            } else {
                PathMatch::Exact(e)
            }
        }),
        (None, Some(pre)) => check("prefix", pre).map(|_| {
            let pre = pre.as_str().into();
            if nocase {
                PathMatch::PrefixNoCase(pre)
            } else {
                PathMatch::Prefix(pre)
            }
        }),
        _ => Err(PathError::here("set exactly one of `exact` or `prefix`")),
    }
}

fn compile_header(h: &HeaderMatchConfig) -> Result<HeaderCond, PathError> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| PathError::at("name", format!("`{}` is not a valid header name", h.name)))?;
    let test = match (h.present, &h.exact, &h.regex) {
        (Some(p), None, None) => HeaderTest::Present(p),
        (None, Some(e), None) => HeaderTest::Exact(e.as_bytes().into()),
        (None, None, Some(r)) => HeaderTest::Regex(
            Regex::new(r)
                .map_err(|e| PathError::at("regex", format!("invalid regular expression: {e}")))?,
        ),
        _ => {
            return Err(PathError::here(
                "set exactly one of `present`, `exact` or `regex`",
            ))
        }
    };
    Ok(HeaderCond { name, test })
}

/// The host a request is for: the URI authority (HTTP/2, absolute form) or the Host header,
/// without the port.
pub fn request_host(req: &RequestHeader) -> &str {
    let raw = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        // [v6]:port
        return h.find(']').map_or(h, |i| &h[..=i]);
    }
    match h.rfind(':') {
        Some(i) if h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
        _ => h,
    }
}

/// All routes of a snapshot.
#[derive(Debug, Default)]
pub struct Router {
    routes: Box<[Route]>,
}

impl Router {
    /// Routes in config order.
    pub fn new(routes: Vec<Route>) -> Self {
        Router {
            routes: routes.into(),
        }
    }

    /// The winning route for `req` (see the module docs), as an index.
    pub fn find(&self, req: &RequestHeader) -> Option<usize> {
        let host = request_host(req);
        let mut best: Option<(Score, usize)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(s) = r.matcher.score(req, host) {
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Route by index.
    pub fn get(&self, i: usize) -> &Route {
        &self.routes[i]
    }

    /// All routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, yaml: &str) -> Route {
        let cfg: MatchConfig = serde_yaml::from_str(yaml).unwrap();
        let c = || IntCounter::new("x", "x").unwrap();
        Route::new(name, 0, Matcher::compile(&cfg).unwrap(), (c(), c()))
    }

    fn req(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn winner(router: &Router, r: &RequestHeader) -> Option<String> {
        router.find(r).map(|i| router.get(i).name.to_string())
    }

    #[test]
    fn most_specific_route_wins_regardless_of_order() {
        let router = Router::new(vec![
            route("any", "{}"),
            route("api", "{path: {prefix: /api}}"),
            route("api-v2", "{path: {prefix: /api/v2}}"),
            route("health", "{path: {exact: /api/health}}"),
            route("wild", "{hosts: ['*.example.com']}"),
            route("exact-host", "{hosts: [shop.example.com]}"),
        ]);
        let w = |m, h, p| winner(&router, &req(m, h, p, &[]));
        assert_eq!(w("GET", "x.test", "/"), Some("any".into()));
        assert_eq!(w("GET", "x.test", "/api/v1"), Some("api".into()));
        assert_eq!(w("GET", "x.test", "/api/v2/x"), Some("api-v2".into()));
        assert_eq!(w("GET", "x.test", "/api/health"), Some("health".into()));
        assert_eq!(
            w("GET", "a.example.com", "/api"),
            Some("wild".into()),
            "host outranks path"
        );
        assert_eq!(
            w("GET", "SHOP.example.com:8080", "/"),
            Some("exact-host".into())
        );
    }

    #[test]
    fn ties_go_to_the_first_listed() {
        let router = Router::new(vec![
            route("first", "{path: {prefix: /a}}"),
            route("second", "{path: {prefix: /b}}"),
            route("third", "{path: {prefix: /a}}"),
        ]);
        assert_eq!(
            winner(&router, &req("GET", "h", "/a", &[])),
            Some("first".into())
        );
    }

    #[test]
    fn methods_and_headers_filter_and_add_specificity() {
        let router = Router::new(vec![
            route("all", "{path: {prefix: /}}"),
            route("writes", "{path: {prefix: /}, methods: [POST, PUT]}"),
            route("canary", "{path: {prefix: /}, headers: [{name: x-canary, exact: 'yes'}]}"),
            route("debug", "{path: {prefix: /}, headers: [{name: x-debug, present: true}, {name: x-user, regex: '^adm'}]}"),
        ]);
        assert_eq!(
            winner(&router, &req("GET", "h", "/", &[])),
            Some("all".into())
        );
        assert_eq!(
            winner(&router, &req("POST", "h", "/", &[])),
            Some("writes".into())
        );
        assert_eq!(
            winner(&router, &req("GET", "h", "/", &[("x-canary", "yes")])),
            Some("canary".into())
        );
        assert_eq!(
            winner(&router, &req("GET", "h", "/", &[("x-canary", "no")])),
            Some("all".into())
        );
        assert_eq!(
            winner(
                &router,
                &req("GET", "h", "/", &[("x-debug", "1"), ("x-user", "admin")])
            ),
            Some("debug".into())
        );
        assert_eq!(
            winner(
                &router,
                &req("GET", "h", "/", &[("x-debug", "1"), ("x-user", "bob")])
            ),
            Some("all".into())
        );
    }

    #[test]
    fn no_match_is_none() {
        let router = Router::new(vec![route("api", "{hosts: [api.test]}")]);
        assert_eq!(winner(&router, &req("GET", "other.test", "/", &[])), None);
        assert_eq!(winner(&router, &req("GET", "test", "/", &[])), None);
    }

    #[test]
    fn bad_conditions_are_reported_with_paths() {
        let cfg: MatchConfig = serde_yaml::from_str(
            "{hosts: ['a*b'], path: {exact: x, prefix: /y}, methods: [FETCH], headers: [{name: x, regex: '('}]}",
        )
        .unwrap();
        let errs = Matcher::compile(&cfg).unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["hosts[0]", "path", "methods[0]", "headers[0].regex"]
        );
    }
}
