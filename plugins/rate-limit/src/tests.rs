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

#[test]
fn bad_store_config_names_the_key() {
    let env = TestEnv::new(&[]);
    for (yaml, path, want) in [
        ("{rate: 5, store: {}}", "store", "missing field `redis`"),
        (
            "{rate: 5, store: {redis: {}}}",
            "store.redis",
            "url: redis://",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a', cluster: ['redis://b']}}}",
            "store.redis",
            "not both",
        ),
        (
            "{rate: 5, store: {redis: {url: 'http://a'}}}",
            "store.redis",
            "not a redis:// URL",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a'}, timeout: 5s}}",
            "store.timeout",
            "1ms and 1s",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a'}, mode: eventual}}",
            "store.mode",
            "unknown variant",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a'}, on_store_error: retry}}",
            "store.on_store_error",
            "unknown variant",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a'}, sync_interval: 1ms}}",
            "store.sync_interval",
            "10ms and 10s",
        ),
        (
            "{rate: 5, store: {redis: {url: 'redis://a'}, prefix: 'a{b'}}",
            "store.prefix",
            "without",
        ),
    ] {
        let e = build(&env, yaml).err().unwrap();
        assert_eq!(e.path, path, "{yaml}: {e}");
        assert!(e.message.contains(want), "{yaml}: {e}");
    }
}

#[tokio::test]
async fn an_unreachable_store_applies_on_store_error_within_the_budget() {
    let env = TestEnv::new(&[]);
    // A port nobody listens on: each call fails at once or at the 5 ms budget.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    for (policy, want_pass) in [("allow", 3), ("deny", 0), ("local", 2)] {
        let yaml = format!(
            "{{rate: 2, per: minute, key: route, store: {{redis: {{url: '{url}'}}, on_store_error: {policy}}}}}"
        );
        let f = build(&env, &yaml).unwrap();
        let req = TestRequest::get("/");
        let t0 = std::time::Instant::now();
        let mut passed = 0;
        for _ in 0..3 {
            if run(&f, &req).await == Decision::Continue {
                passed += 1;
            }
        }
        assert_eq!(passed, want_pass, "{policy}");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{policy}: {:?}",
            t0.elapsed()
        );
    }
    assert_eq!(
        env.metric(
            "portcullis_rate_limit_store_errors_total",
            &[("route", "api")]
        ),
        9.0
    );
}
