//! Sticky sessions by a gateway-issued cookie, end to end: 1,000 clients keep their backend,
//! move once when it is drained and stay, and a forged cookie gets normal balancing.

mod support;
use std::collections::HashMap;
use std::sync::Mutex;
use support::*;

const TOKEN: &str = "test-token-0123456789";

fn config(b: &Backends, sticky: &str) -> String {
    let addrs: Vec<_> = (0..b.len()).map(|i| b.addr(i)).collect();
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
admin: {{ address: "{{admin}}", token: "{TOKEN}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams:
  - name: pool
    strategy: round_robin
    sticky: {sticky}
    backends:
{}"#,
        backends_yaml(&addrs)
    )
}

/// One answer: the backend that served it and the `srv` cookie it set, if any.
fn send(
    c: &reqwest::blocking::Client,
    url: &str,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let mut r = c.get(url);
    if let Some(v) = cookie {
        r = r.header("cookie", format!("theme=dark; srv={v}"));
    }
    let resp = r.send().expect("answer");
    assert_eq!(resp.status(), 200);
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("srv="))
        .map(|v| v.split(';').next().unwrap_or("").to_string());
    let backend = resp.headers()["x-backend"].to_str().unwrap().to_string();
    (backend, set)
}

/// Each client's cookie and backend after `rounds` requests, checking that every request after
/// the first change of backend stays put. `clients` carries the cookies in and out.
fn run_clients(url: &str, clients: &mut [(Option<String>, String)], rounds: usize) -> usize {
    let moves = Mutex::new(0usize);
    let threads = 8;
    let chunk = clients.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in clients.chunks_mut(chunk) {
            let moves = &moves;
            s.spawn(move || {
                let c = client();
                for (cookie, backend) in part.iter_mut() {
                    for i in 0..rounds {
                        let (served, set) = send(&c, url, cookie.as_deref());
                        if let Some(v) = set {
                            // Issued on a first request or a move, never while staying.
                            assert!(i == 0, "cookie reissued on request {i}");
                            if cookie.is_some() {
                                *moves.lock().unwrap() += 1;
                            }
                            *cookie = Some(v);
                        } else {
                            assert_eq!(&served, backend, "left its backend without a new cookie");
                        }
                        *backend = served;
                    }
                }
            });
        }
    });
    moves.into_inner().unwrap()
}

#[test]
fn a_thousand_clients_stay_move_once_when_drained_and_forgeries_are_balanced() {
    let b = Backends::start(&["a", "b", "c", "d"]);
    let gw = Gateway::start(&config(
        &b,
        "{ cookie: srv, ttl: 1h, secret: a-shared-secret-of-32-bytes-0000 }",
    ));
    let url = gw.url("/");
    let mut clients: Vec<(Option<String>, String)> = vec![(None, String::new()); 1000];
    assert_eq!(run_clients(&url, &mut clients, 20), 0);
    let mut per_backend: HashMap<&str, usize> = HashMap::new();
    for (cookie, backend) in &clients {
        let v = cookie.as_deref().expect("every client got a cookie");
        assert_eq!(v.len(), 32, "an opaque token: {v}");
        assert!(!v.contains("127.0.0.1"));
        *per_backend.entry(backend).or_default() += 1;
    }
    // Round robin spread the first requests: 250 each.
    assert!(
        per_backend.values().all(|&n| (230..=270).contains(&n)),
        "{per_backend:?}"
    );

    // Drain `a`: its clients move once (a new cookie), everyone else keeps theirs.
    let on_a = clients.iter().filter(|(_, b)| b == "a").count();
    let before: Vec<(Option<String>, String)> = clients.clone();
    let drained = client()
        .post(gw.admin_url(&format!("/upstreams/pool/backends/{}/drain", b.addr(0))))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(drained.status(), 200);
    assert_eq!(run_clients(&url, &mut clients, 5), on_a);
    for ((c0, b0), (c1, b1)) in before.iter().zip(&clients) {
        assert_ne!(b1, "a");
        if b0 != "a" {
            assert_eq!((c0, b0), (c1, b1), "a client off the drained backend moved");
        }
    }

    // Forged cookies: a well-formed unknown token and an address. Balanced, and reissued.
    let c = client();
    let mut spread: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let forged = if i % 2 == 0 {
            format!("{:032x}", 0x1234_5678_9abc_def0_u128 + i)
        } else {
            b.addr(1).to_string()
        };
        let (served, set) = send(&c, &url, Some(&forged));
        assert!(set.is_some(), "a forged cookie is replaced");
        *spread.entry(served).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(
        spread.values().all(|&n| (80..=120).contains(&n)),
        "{spread:?}"
    );
}

#[test]
fn a_gateway_with_the_same_secret_honours_the_cookie() {
    let b = Backends::start(&["a", "b", "c"]);
    let sticky = "{ cookie: srv, secret: a-shared-secret-of-32-bytes-0000 }";
    let (one, two) = (
        Gateway::start(&config(&b, sticky)),
        Gateway::start(&config(&b, sticky)),
    );
    let c = client();
    for _ in 0..6 {
        let (served, set) = send(&c, &one.url("/"), None);
        let cookie = set.expect("cookie issued");
        for _ in 0..5 {
            assert_eq!(
                send(&c, &two.url("/"), Some(&cookie)),
                (served.clone(), None)
            );
        }
    }
}

#[test]
fn sticky_settings_are_checked() {
    let b = Backends::start(&["a"]);
    let (code, out) = check_config(&config(&b, "{ cookie: 'bad name', same_site: none }"));
    assert_ne!(code, 0);
    assert!(out.contains("upstreams[0].sticky.cookie"), "{out}");
    assert!(out.contains("upstreams[0].sticky.same_site"), "{out}");
}
