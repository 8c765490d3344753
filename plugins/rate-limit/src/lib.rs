//! `rate_limit`: GCRA rate limiting with governor.
//!
//! ```yaml
//! - kind: rate_limit
//!   rate: 100          # requests per `per`
//!   per: second        # second (default) | minute
//!   burst: 20          # extra requests allowed at once on top of `rate` (default 0)
//!   key: client_ip     # client_ip (default) | route | header:<name> | cookie:<name>
//!   max_keys: 100000   # cap on tracked keys (default 100 000)
//! ```
//!
//! A burst of requests gets `rate + burst` through at once; after that one request per
//! `per / rate`. A refused request gets `429` with `Retry-After` and the IETF `RateLimit` /
//! `RateLimit-Policy` headers, and counts in `portcullis_rate_limited_total{route}`.
//! With a header or cookie key, a request without it is keyed by its client IP. Keys idle for
//! longer than it takes to refill their bucket are evicted every second; if more than
//! `max_keys` remain, the table is reset (every key starts again with a full bucket) and a
//! warning is logged, so memory stays bounded. Limiter state survives reloads while the
//! filter's config is unchanged.

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::http::{HeaderName, HeaderValue};
use portcullis_plugin::prometheus::IntCounter;
use portcullis_plugin::{
    BuildContext, Decision, Filter, FilterError, Hooks, RequestState, RequestView, Response,
};
use serde::Deserialize;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
enum Per {
    #[default]
    Second,
    Minute,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: u32,
    #[serde(default)]
    per: Per,
    #[serde(default)]
    burst: u32,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

fn default_key() -> String {
    "client_ip".into()
}
fn default_max_keys() -> usize {
    100_000
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    ClientIp,
    Route,
    Header(HeaderName),
    Cookie(String),
}

fn parse_key(s: &str) -> Result<Key, FilterError> {
    let bad = || {
        FilterError::at(
            "key",
            format!("unknown key `{s}` (allowed: client_ip, route, header:<name>, cookie:<name>)"),
        )
    };
    match s.split_once(':') {
        None if s == "client_ip" => Ok(Key::ClientIp),
        None if s == "route" => Ok(Key::Route),
        Some(("header", n)) if !n.is_empty() => HeaderName::from_bytes(n.as_bytes())
            .map(Key::Header)
            .map_err(|_| FilterError::at("key", format!("`{n}` is not a valid header name"))),
        Some(("cookie", n)) if !n.is_empty() => Ok(Key::Cookie(n.to_string())),
        _ => Err(bad()),
    }
}

/// The limiter state, shared across reloads while the config is unchanged.
struct Limiters {
    direct: DefaultDirectRateLimiter,
    keyed: ArcSwap<DefaultKeyedRateLimiter<u128>>,
}

/// The filter.
pub struct RateLimit {
    key: Key,
    quota: Quota,
    max_keys: usize,
    limiters: Arc<Limiters>,
    hasher: RandomState,
    limited: IntCounter,
    policy: HeaderValue,
    window_secs: u64,
}

/// Factory: `kind: rate_limit`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    Ok(Arc::new(RateLimit::build(config, cx)?))
}

impl RateLimit {
    /// Build from config (the factory, typed).
    pub fn build(
        config: &portcullis_plugin::serde_yaml::Value,
        cx: &BuildContext<'_>,
    ) -> Result<Self, FilterError> {
        let c: Config = parse_config(config)?;
        let rate =
            NonZeroU32::new(c.rate).ok_or_else(|| FilterError::at("rate", "must be at least 1"))?;
        let key = parse_key(&c.key)?;
        if c.max_keys == 0 {
            return Err(FilterError::at("max_keys", "must be at least 1"));
        }
        let window = match c.per {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        };
        let capacity = c
            .rate
            .checked_add(c.burst)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| FilterError::at("burst", "rate + burst is too large"))?;
        let quota = Quota::with_period(window / rate.get())
            .ok_or_else(|| FilterError::at("rate", "too high for the period"))?
            .allow_burst(capacity);
        let state_key = format!(
            "rate_limit/{}/{}/{:?}/{}/{}",
            cx.scope().label(),
            c.rate,
            c.per,
            c.burst,
            c.key
        );
        let limiters = cx.persistent(&state_key, || Limiters {
            direct: RateLimiter::direct(quota),
            keyed: ArcSwap::from_pointee(RateLimiter::keyed(quota)),
        });
        let limited = cx
            .int_counter_vec(
                "portcullis_rate_limited_total",
                "Requests refused by a rate_limit filter, by route.",
                &["route"],
            )?
            .with_label_values(&[cx.scope().label()]);
        let policy = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            policy_name(cx),
            c.rate,
            window.as_secs()
        ))
        .map_err(|_| {
            FilterError::here("route name cannot be used in the RateLimit-Policy header")
        })?;
        Ok(RateLimit {
            key,
            quota,
            max_keys: c.max_keys,
            limiters,
            hasher: RandomState::new(),
            limited,
            policy,
            window_secs: window.as_secs(),
        })
    }
}

fn policy_name(cx: &BuildContext<'_>) -> String {
    cx.scope()
        .label()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn ip_key(ip: Option<IpAddr>) -> u128 {
    match ip {
        Some(IpAddr::V4(v4)) => u128::from(v4.to_ipv6_mapped()),
        Some(IpAddr::V6(v6)) => u128::from(v6),
        None => 0,
    }
}

impl RateLimit {
    /// The key of a request (client IP, or a hash of the header / cookie value).
    fn key_of(&self, req: &RequestView<'_>) -> u128 {
        let hashed = |bytes: &[u8]| u128::from(self.hasher.hash_one(bytes)) | (1 << 127);
        match &self.key {
            Key::ClientIp | Key::Route => ip_key(req.client_ip),
            Key::Header(name) => req
                .headers
                .get(name)
                .map_or_else(|| ip_key(req.client_ip), |v| hashed(v.as_bytes())),
            Key::Cookie(name) => req
                .cookie(name)
                .map_or_else(|| ip_key(req.client_ip), |v| hashed(v.as_bytes())),
        }
    }

    /// `Ok` to let the request through, `Err(wait)` when it must wait `wait`.
    pub fn check(&self, req: &RequestView<'_>) -> Result<(), Duration> {
        match self.key {
            Key::Route => {
                let l = &self.limiters.direct;
                l.check().map_err(|n| n.wait_time_from(l.clock().now()))
            }
            _ => {
                let l = self.limiters.keyed.load();
                l.check_key(&self.key_of(req))
                    .map_err(|n| n.wait_time_from(l.clock().now()))
            }
        }
    }

    fn refusal(&self, wait: Duration) -> Response {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let name = self
            .policy
            .to_str()
            .ok()
            .and_then(|p| p.split(';').next())
            .unwrap_or("\"default\"");
        let mut resp = Response::text(429, "rate limit exceeded\n")
            .with_header(
                portcullis_plugin::http::header::RETRY_AFTER,
                HeaderValue::from(secs),
            )
            .with_header(
                HeaderName::from_static("ratelimit-policy"),
                self.policy.clone(),
            );
        if let Ok(v) = HeaderValue::from_str(&format!("{name};r=0;t={secs}")) {
            resp = resp.with_header(HeaderName::from_static("ratelimit"), v);
        }
        resp
    }
}

#[async_trait]
impl Filter for RateLimit {
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut RequestState) -> Decision {
        match self.check(req) {
            Ok(()) => Decision::Continue,
            Err(wait) => {
                self.limited.inc();
                Decision::Respond(self.refusal(wait))
            }
        }
    }

    fn maintain(&self) {
        if self.key == Key::Route {
            return;
        }
        let keyed = self.limiters.keyed.load();
        keyed.retain_recent();
        keyed.shrink_to_fit();
        let n = keyed.len();
        if n > self.max_keys {
            log::warn!(
                "rate_limit: {n} active keys exceed max_keys {}; resetting the key table (window {}s)",
                self.max_keys,
                self.window_secs
            );
            self.limiters
                .keyed
                .store(Arc::new(RateLimiter::keyed(self.quota)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::testing::{TestEnv, TestRequest};

    #[test]
    fn declares_every_hook_it_implements() {
        let env = TestEnv::new(&[]);
        let f = build(&env, "{rate: 10, per: minute, burst: 5}").unwrap();
        portcullis_plugin::testing::assert_hooks_declared(f.as_ref());
    }

    fn build(env: &TestEnv, yaml: &str) -> Result<Arc<dyn Filter>, FilterError> {
        factory(
            &portcullis_plugin::serde_yaml::from_str(yaml).unwrap(),
            &env.context("api"),
        )
    }

    async fn run(f: &Arc<dyn Filter>, req: &TestRequest) -> Decision {
        f.on_request(&req.view("api"), &mut RequestState::default())
            .await
    }

    #[tokio::test]
    async fn a_burst_gets_rate_plus_burst_through_then_429_with_headers() {
        let env = TestEnv::new(&[]);
        let f = build(&env, "{rate: 10, per: minute, burst: 5}").unwrap();
        let req = TestRequest::get("/");
        let mut passed = 0;
        let mut refused = None;
        for _ in 0..40 {
            match run(&f, &req).await {
                Decision::Continue => passed += 1,
                Decision::Respond(r) => refused = Some(r),
            }
        }
        assert_eq!(passed, 15);
        let r = refused.unwrap();
        assert_eq!(r.status, 429);
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        let retry: u64 = h("retry-after").unwrap().parse().unwrap();
        assert!((1..=6).contains(&retry), "one request per 6 s: {retry}");
        assert_eq!(h("ratelimit-policy").unwrap(), "\"api\";q=10;w=60");
        assert_eq!(h("ratelimit").unwrap(), format!("\"api\";r=0;t={retry}"));
        assert_eq!(
            env.metric("portcullis_rate_limited_total", &[("route", "api")]),
            25.0
        );
    }

    #[tokio::test]
    async fn distinct_keys_have_separate_buckets() {
        let env = TestEnv::new(&[]);
        let f = build(&env, "{rate: 2, per: minute, key: 'header:x-user'}").unwrap();
        for user in ["a", "b", "c"] {
            let req = TestRequest::get("/").header("x-user", user);
            assert_eq!(run(&f, &req).await, Decision::Continue);
            assert_eq!(run(&f, &req).await, Decision::Continue);
            assert!(
                matches!(run(&f, &req).await, Decision::Respond(_)),
                "{user}'s own bucket is empty"
            );
        }
        // Without the header, the client IP is the key.
        let ip1 = TestRequest::get("/").from_ip("10.0.0.1");
        let ip2 = TestRequest::get("/").from_ip("10.0.0.2");
        for _ in 0..2 {
            assert_eq!(run(&f, &ip1).await, Decision::Continue);
        }
        assert!(matches!(run(&f, &ip1).await, Decision::Respond(_)));
        assert_eq!(run(&f, &ip2).await, Decision::Continue);
    }

    #[tokio::test]
    async fn route_key_shares_one_bucket() {
        let env = TestEnv::new(&[]);
        let f = build(&env, "{rate: 3, per: minute, key: route}").unwrap();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert_eq!(
                run(&f, &TestRequest::get("/").from_ip(ip)).await,
                Decision::Continue
            );
        }
        assert!(matches!(
            run(&f, &TestRequest::get("/").from_ip("10.0.0.4")).await,
            Decision::Respond(_)
        ));
    }

    #[tokio::test]
    async fn key_table_is_bounded() {
        let env = TestEnv::new(&[]);
        let f = build(&env, "{rate: 1, per: minute, max_keys: 10}").unwrap();
        let first = TestRequest::get("/").from_ip("10.1.0.0");
        assert_eq!(run(&f, &first).await, Decision::Continue);
        assert!(
            matches!(run(&f, &first).await, Decision::Respond(_)),
            "bucket empty for a minute"
        );
        for i in 1..50u8 {
            run(&f, &TestRequest::get("/").from_ip(&format!("10.1.0.{i}"))).await;
        }
        // 50 keys, none idle long enough to evict, max 10: the table is reset.
        f.maintain();
        assert_eq!(
            run(&f, &first).await,
            Decision::Continue,
            "a reset table starts every key full"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let env = TestEnv::new(&[]);
        for (yaml, path, want) in [
            ("{rate: 0}", "rate", "at least 1"),
            ("{rate: 5, key: body}", "key", "allowed: client_ip"),
            ("{rate: 5, burts: 3}", "burts", "unknown field"),
            ("{rate: 5, per: hour}", "per", "unknown variant"),
        ] {
            let e = build(&env, yaml).err().unwrap();
            assert_eq!(e.path, path, "{yaml}: {e}");
            assert!(e.message.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn state_survives_a_rebuild_with_the_same_config() {
        let env = TestEnv::new(&[]);
        let a = build(&env, "{rate: 1, per: minute}").unwrap();
        let b = build(&env, "{rate: 1, per: minute}").unwrap();
        let req = TestRequest::get("/");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(run(&a, &req).await, Decision::Continue);
            assert!(
                matches!(run(&b, &req).await, Decision::Respond(_)),
                "b shares a's bucket"
            );
        });
    }
}
