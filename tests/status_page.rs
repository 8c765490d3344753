//! The status page on the admin listener, read by a real browser (headless Chromium over the
//! DevTools protocol) and without JavaScript: every backend with its true state, a killed
//! backend shown down within two refresh periods, the transitions list, token-gated drain
//! buttons that really drain, and a page of bounded size and request count. A screenshot is
//! saved under the target directory.

mod support;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::chromium::Browser;
use support::*;

const TOKEN: &str = "status-page-token-0123456789";
const REFRESH: Duration = Duration::from_secs(2);

fn config(b: &Backends) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}", token: "{TOKEN}" }}
access_log: off
routes:
  - name: api
    upstream: pool
    filters:
      - {{ kind: circuit_breaker, consecutive_failures: 5, open_time: 1m }}
  - name: other
    match: {{ path: {{ prefix: /other }} }}
    upstream: other
upstreams:
  - name: pool
    strategy: least_conn
    health_check: {{ kind: http, path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
    backends:
{}  - name: other
    backends:
      - {{ address: "{}" }}
"#,
        backends_yaml(&[b.addr(0), b.addr(1), b.addr(2)]),
        b.addr(0),
    )
}

/// `[upstream, backend, health, state]` of every row the page shows.
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('tr[data-backend]')].map(r => \
    [r.closest('table').dataset.upstream, r.dataset.backend, r.dataset.health, r.cells[3].textContent]))";

fn rows(browser: &mut Browser) -> Vec<[String; 4]> {
    let text = browser.eval(ROWS);
    serde_json::from_str(text.as_str().expect("rows as JSON")).expect("rows")
}

fn row_is(upstream: &str, backend: &str, attr: &str, value: &str) -> String {
    format!(
        "(() => {{ const r = document.querySelector('table[data-upstream=\"{upstream}\"] tr[data-backend=\"{backend}\"]'); \
         return !!r && r.dataset.{attr} === '{value}'; }})()"
    )
}

#[test]
fn server_rendered_page_reads_without_javascript() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b));
    let c = client();
    assert!(poll_until(Duration::from_secs(5), || get(&c, &gw.url("/"))
        .0
        == 200));
    let r = c.get(gw.admin_url("/")).send().expect("page");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(h["x-frame-options"], "DENY");
    let html = r.text().unwrap();
    for i in 0..3 {
        let row = format!(
            "<tr data-backend=\"{}\" data-health=\"up\" data-circuit=\"closed\">",
            b.addr(i)
        );
        assert!(html.contains(&row), "no row {row} in\n{html}");
    }
    assert!(
        html.contains("<table data-upstream=\"pool\">")
            && html.contains("<table data-upstream=\"other\">")
    );
    assert!(
        !html.contains("<button>drain"),
        "no buttons without a token"
    );
    // A breaker that opens is a transition the page lists, with its reason.
    b.state(2).set_status(500);
    let bad = b.addr(2).to_string();
    let opened =
        poll_until(Duration::from_secs(10), || {
            get(&c, &gw.url("/"));
            let v: Value = c
                .get(gw.admin_url("/events"))
                .send()
                .and_then(|r| r.json())
                .unwrap_or_default();
            v["events"].as_array().into_iter().flatten().any(|e| {
                e["kind"] == "circuit" && e["backend"] == bad.as_str() && e["to"] == "open"
            })
        });
    assert!(opened, "no circuit transition in /events");
    let html = c.get(gw.admin_url("/")).send().unwrap().text().unwrap();
    let row = format!(
        "<td>circuit</td><td>api</td><td>{bad}</td><td>closed</td><td class=\"open\">open</td>"
    );
    assert!(html.contains(&row), "no transition row {row} in\n{html}");
    for asset in ["/status.js", "/status.css"] {
        let r = c.get(gw.admin_url(asset)).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.text().unwrap().len() > 500, "{asset}");
    }
}

#[test]
fn browser_sees_every_backend_and_a_killed_one_go_down() {
    let mut b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b));
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, &gw.url("/")).0, 200);
    }
    let mut browser = Browser::start();
    let started = Instant::now();
    browser.navigate(&gw.admin_url("/"));
    assert!(
        browser.wait_for(
            "Number(document.body.dataset.refreshes || 0) >= 1",
            Duration::from_secs(10)
        ),
        "the page's script never refreshed it"
    );
    let shown = rows(&mut browser);
    let want: Vec<[String; 4]> = (0..3)
        .map(|i| {
            [
                "pool".into(),
                b.addr(i).to_string(),
                "up".into(),
                "in rotation".into(),
            ]
        })
        .chain([[
            "other".into(),
            b.addr(0).to_string(),
            "up".into(),
            "in rotation".into(),
        ]])
        .collect();
    assert_eq!(shown, want);

    b.stop(1);
    let killed = Instant::now();
    let down = row_is("pool", &b.addr(1).to_string(), "health", "down");
    assert!(
        browser.wait_for(&down, 2 * REFRESH),
        "backend b not shown down within 2 refresh periods"
    );
    println!("killed backend shown down after {:?}", killed.elapsed());
    let others_up = (0..3).filter(|&i| i != 1).all(|i| {
        let e = row_is("pool", &b.addr(i).to_string(), "health", "up");
        browser.eval(&e) == Value::Bool(true)
    });
    assert!(
        others_up,
        "a live backend is shown down: {:?}",
        rows(&mut browser)
    );
    let transition = format!(
        "[...document.querySelectorAll('#events tbody tr')].some(r => r.cells[1].textContent === 'health' \
         && r.cells[3].textContent === '{}' && r.cells[5].textContent === 'down')",
        b.addr(1)
    );
    assert!(
        browser.wait_for(&transition, 2 * REFRESH),
        "the transition is not listed"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browser.screenshot(&shot);
    println!("screenshot: {}", shot.display());

    // Bounded: the page is 3 requests (HTML, CSS, script) and a small download, then one
    // /overview call per refresh period.
    let requests = browser.requests();
    let (polls, page): (Vec<_>, Vec<_>) =
        requests.iter().partition(|(u, _)| u.ends_with("/overview"));
    let page_urls: Vec<&str> = page.iter().map(|(u, _)| u.as_str()).collect();
    assert!(page.len() <= 4, "page requests: {page_urls:?}");
    let bytes: f64 = page.iter().map(|(_, n)| n).sum();
    println!(
        "page: {} requests, {bytes} bytes; {} refreshes in {:?}",
        page.len(),
        polls.len(),
        started.elapsed()
    );
    assert!(
        bytes > 1000.0 && bytes < 64.0 * 1024.0,
        "page bytes {bytes}"
    );
    let most = started.elapsed().as_secs_f64() / REFRESH.as_secs_f64() + 2.0;
    assert!(
        (polls.len() as f64) <= most,
        "{} refreshes in {:?}",
        polls.len(),
        started.elapsed()
    );
}

#[test]
fn drain_buttons_need_a_token_and_drain() {
    let b = Backends::start(&["a", "b", "c"]);
    let gw = Gateway::start(&config(&b));
    let mut browser = Browser::start();
    browser.navigate(&gw.admin_url("/"));
    assert!(browser.wait_for(
        "Number(document.body.dataset.refreshes || 0) >= 1",
        Duration::from_secs(10)
    ));
    assert_eq!(
        browser.eval("document.querySelectorAll('tr[data-backend] button').length"),
        0
    );

    browser.eval(&format!(
        "document.querySelector('#auth input').value = '{TOKEN}'; document.querySelector('#auth').requestSubmit(); true"
    ));
    let buttons = "document.querySelectorAll('tr[data-backend] button').length === 4";
    assert!(
        browser.wait_for(buttons, 2 * REFRESH),
        "no buttons with a token"
    );
    let a = b.addr(0).to_string();
    browser.eval(&format!(
        "document.querySelector('table[data-upstream=\"pool\"] tr[data-backend=\"{a}\"] button').click(); true"
    ));
    let c = client();
    let drained = poll_until(2 * REFRESH, || {
        let v: Value = c
            .get(gw.admin_url("/upstreams/pool"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        v["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["address"] == a.as_str() && x["enabled"] == false)
    });
    assert!(drained, "the drain button did not drain");
    let shown = format!(
        "document.querySelector('table[data-upstream=\"pool\"] tr[data-backend=\"{a}\"]').cells[3].textContent === 'draining'"
    );
    assert!(
        browser.wait_for(&shown, 2 * REFRESH),
        "the page does not show the drain"
    );
    let other = row_is("other", &a, "health", "up");
    assert_eq!(
        browser.eval(&other),
        Value::Bool(true),
        "draining in pool left other alone"
    );
}
