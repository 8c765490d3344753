//! `canary`: send part of a route's traffic to a canary upstream (Flagger / ingress-nginx
//! conventions).
//!
//! ```yaml
//! - kind: canary
//!   upstream: api-canary          # where canary traffic goes
//!   header: { name: x-canary }    # value `always` → canary, `never` → stable...
//!   # header: { name: x-canary, exact: "v2" }     # ...or: this value → canary
//!   # header: { name: x-user, regex: "^qa-" }     # ...or: a matching value → canary
//!   cookie: { name: canary }      # cookie value `always` → canary, `never` → stable
//!   weight: 20                    # otherwise, this percentage (0-100) goes to the canary
//!   sticky: { cookie: portcullis-canary, max_age: 1h }  # keep a client on its side
//! ```
//!
//! Order: a header or cookie match always wins; then a sticky cookie from an earlier
//! response; then the weight. With `sticky`, a client assigned by weight gets a cookie naming
//! its side (`canary` or `stable`) and keeps that side on later requests.

use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::http::{HeaderName, HeaderValue};
use portcullis_plugin::{
    BuildContext, Dur, Filter, FilterError, HeaderEdit, Hooks, RequestState, RequestView,
};
use regex::Regex;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRule {
    name: String,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieRule {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sticky {
    cookie: String,
    #[serde(default = "default_max_age")]
    max_age: Dur,
}

fn default_max_age() -> Dur {
    Dur::secs(3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    upstream: String,
    #[serde(default)]
    header: Option<HeaderRule>,
    #[serde(default)]
    cookie: Option<CookieRule>,
    #[serde(default)]
    weight: u8,
    #[serde(default)]
    sticky: Option<Sticky>,
}

enum Match {
    AlwaysNever,
    Exact(String),
    Regex(Regex),
}

/// Which side a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The canary upstream.
    Canary,
    /// The route's own upstream.
    Stable,
}

/// Set a sticky cookie on the response for this side.
#[derive(Clone, Copy)]
struct AssignCookie(Side);

/// The filter.
pub struct Canary {
    upstream: String,
    header: Option<(HeaderName, Match)>,
    cookie: Option<String>,
    weight: u8,
    sticky: Option<(String, HeaderValue, HeaderValue)>,
}

/// Factory: `kind: canary`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    let c: Config = parse_config(config)?;
    if !cx.has_upstream(&c.upstream) {
        return Err(FilterError::at(
            "upstream",
            format!(
                "unknown upstream `{}` (defined: {})",
                c.upstream,
                cx.upstream_names().join(", ")
            ),
        ));
    }
    if c.weight > 100 {
        return Err(FilterError::at(
            "weight",
            format!("must be between 0 and 100, got {}", c.weight),
        ));
    }
    let header = match c.header {
        None => None,
        Some(h) => {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                FilterError::at(
                    "header.name",
                    format!("`{}` is not a valid header name", h.name),
                )
            })?;
            let m = match (h.exact, h.regex) {
                (None, None) => Match::AlwaysNever,
                (Some(e), None) => Match::Exact(e),
                (None, Some(r)) => Match::Regex(Regex::new(&r).map_err(|e| {
                    FilterError::at("header.regex", format!("invalid regular expression: {e}"))
                })?),
                (Some(_), Some(_)) => {
                    return Err(FilterError::at(
                        "header",
                        "set at most one of `exact` and `regex`",
                    ))
                }
            };
            Some((name, m))
        }
    };
    let sticky = match c.sticky {
        None => None,
        Some(s) => {
            let cookie = |side: &str| {
                HeaderValue::from_str(&format!(
                    "{}={side}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                    s.cookie,
                    s.max_age.0.as_secs()
                ))
                .map_err(|_| FilterError::at("sticky.cookie", "not a valid cookie name"))
            };
            Some((s.cookie.clone(), cookie("canary")?, cookie("stable")?))
        }
    };
    Ok(Arc::new(Canary {
        upstream: c.upstream,
        header,
        cookie: c.cookie.map(|c| c.name),
        weight: c.weight,
        sticky,
    }))
}

fn always_never(v: &str) -> Option<Side> {
    match v {
        "always" => Some(Side::Canary),
        "never" => Some(Side::Stable),
        _ => None,
    }
}

impl Canary {
    /// The side a header or cookie rule picks, if any matches.
    fn rule(&self, req: &RequestView<'_>) -> Option<Side> {
        if let Some((name, m)) = &self.header {
            if let Some(v) = req.headers.get(name).and_then(|v| v.to_str().ok()) {
                let side = match m {
                    Match::AlwaysNever => always_never(v),
                    Match::Exact(e) => (v == e).then_some(Side::Canary).or_else(|| always_never(v)),
                    Match::Regex(r) => r
                        .is_match(v)
                        .then_some(Side::Canary)
                        .or_else(|| always_never(v)),
                };
                if side.is_some() {
                    return side;
                }
            }
        }
        self.cookie
            .as_ref()
            .and_then(|c| req.cookie(c))
            .and_then(always_never)
    }

    /// Decide the side of a request; the second value says whether to set a sticky cookie.
    pub fn decide(&self, req: &RequestView<'_>) -> (Side, bool) {
        if let Some(side) = self.rule(req) {
            return (side, false);
        }
        if let Some((cookie, _, _)) = &self.sticky {
            match req.cookie(cookie) {
                Some("canary") => return (Side::Canary, false),
                Some("stable") => return (Side::Stable, false),
                _ => {}
            }
        }
        let side = if fastrand::u8(0..100) < self.weight {
            Side::Canary
        } else {
            Side::Stable
        };
        (side, self.sticky.is_some())
    }
}

#[async_trait]
impl Filter for Canary {
    fn hooks(&self) -> Hooks {
        if self.sticky.is_some() {
            Hooks::CHOOSE_UPSTREAM | Hooks::RESPONSE
        } else {
            Hooks::CHOOSE_UPSTREAM
        }
    }

    fn choose_upstream<'a>(
        &'a self,
        req: &RequestView<'_>,
        state: &mut RequestState,
    ) -> Option<&'a str> {
        let (side, set_cookie) = self.decide(req);
        if set_cookie {
            state.insert(AssignCookie(side));
        }
        (side == Side::Canary).then_some(self.upstream.as_str())
    }

    fn on_response(
        &self,
        _req: &RequestView<'_>,
        _status: u16,
        headers: &mut dyn HeaderEdit,
        state: &mut RequestState,
    ) {
        if let (Some(AssignCookie(side)), Some((_, canary, stable))) =
            (state.remove::<AssignCookie>(), &self.sticky)
        {
            let value = if side == Side::Canary { canary } else { stable };
            headers.append(portcullis_plugin::http::header::SET_COOKIE, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::testing::{TestEnv, TestRequest};

    #[test]
    fn a_full_config_declares_every_hook_it_implements() {
        let f = build("{upstream: canary, weight: 50, header: {name: x-canary}, sticky: {cookie: pc, max_age: 10m}}").unwrap();
        portcullis_plugin::testing::assert_hooks_declared(f.as_ref());
    }

    fn build(yaml: &str) -> Result<Arc<dyn Filter>, FilterError> {
        let env = TestEnv::new(&["stable", "canary"]);
        factory(
            &portcullis_plugin::serde_yaml::from_str(yaml).unwrap(),
            &env.context("r"),
        )
    }

    fn side(f: &Arc<dyn Filter>, req: &TestRequest) -> Option<String> {
        f.choose_upstream(&req.view("r"), &mut RequestState::default())
            .map(str::to_string)
    }

    #[test]
    fn header_rules_override_the_weight() {
        let f = build("{upstream: canary, header: {name: x-canary}, weight: 0}").unwrap();
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-canary", "always")).as_deref(),
            Some("canary")
        );
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-canary", "never")),
            None
        );
        let f = build("{upstream: canary, header: {name: x-canary}, weight: 100}").unwrap();
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-canary", "never")),
            None,
            "never beats weight 100"
        );
        let f = build("{upstream: canary, header: {name: x-v, exact: '2'}}").unwrap();
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-v", "2")).as_deref(),
            Some("canary")
        );
        assert_eq!(side(&f, &TestRequest::get("/").header("x-v", "3")), None);
        let f = build("{upstream: canary, header: {name: x-user, regex: '^qa-'}}").unwrap();
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-user", "qa-7")).as_deref(),
            Some("canary")
        );
        assert_eq!(
            side(&f, &TestRequest::get("/").header("x-user", "bob")),
            None
        );
    }

    #[test]
    fn cookie_rule_and_weight_split() {
        let f = build("{upstream: canary, cookie: {name: canary}, weight: 20}").unwrap();
        assert_eq!(
            side(
                &f,
                &TestRequest::get("/").header("cookie", "a=1; canary=always")
            )
            .as_deref(),
            Some("canary")
        );
        assert_eq!(
            side(&f, &TestRequest::get("/").header("cookie", "canary=never")),
            None
        );
        let n = (0..10_000)
            .filter(|_| side(&f, &TestRequest::get("/")).is_some())
            .count();
        assert!((1700..2300).contains(&n), "20% of 10 000 (sd 40): {n}");
    }

    #[test]
    fn sticky_assignment_sets_and_honours_a_cookie() {
        let f =
            build("{upstream: canary, weight: 50, sticky: {cookie: pc, max_age: 10m}}").unwrap();
        let mut state = RequestState::default();
        let req = TestRequest::get("/");
        let first = f
            .choose_upstream(&req.view("r"), &mut state)
            .map(str::to_string);
        let mut headers = portcullis_plugin::http::HeaderMap::new();
        f.on_response(&req.view("r"), 200, &mut headers, &mut state);
        let cookie = headers[portcullis_plugin::http::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        let value = cookie.split(';').next().unwrap().to_string();
        assert_eq!(value == "pc=canary", first.is_some(), "{cookie}");
        assert!(cookie.contains("Max-Age=600"));
        let again = TestRequest::get("/").header("cookie", &value);
        for _ in 0..50 {
            let mut s = RequestState::default();
            assert_eq!(
                f.choose_upstream(&again.view("r"), &mut s)
                    .map(str::to_string),
                first,
                "sticky"
            );
            let mut h = portcullis_plugin::http::HeaderMap::new();
            f.on_response(&again.view("r"), 200, &mut h, &mut s);
            assert!(h.is_empty(), "no new cookie for a sticky client");
        }
    }

    #[test]
    fn bad_config_names_the_key() {
        for (yaml, path) in [
            ("{upstream: nope}", "upstream"),
            ("{upstream: canary, weight: 101}", "weight"),
            (
                "{upstream: canary, header: {name: x, regex: '('}}",
                "header.regex",
            ),
            ("{upstream: canary, wieght: 5}", "wieght"),
        ] {
            let e = build(yaml).err().unwrap();
            assert_eq!(e.path, path, "{yaml}: {e}");
        }
    }
}
