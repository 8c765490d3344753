//! `max_connections` on an HTTP upstream (issue 11): in-flight requests per backend are
//! capped; a request waits in the bounded queue for a slot, and gets 503 with a reason when
//! the queue is full or the wait times out.

mod support;

use std::time::{Duration, Instant};
use support::{client, poll_until, Backends, Gateway};

const WAIT: Duration = Duration::from_secs(10);

/// GET `url`: status and body.
fn get(url: &str) -> (u16, String) {
    let r = client()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn config(b: &Backends, queue: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes:
  - {{ name: all, upstream: pool }}
upstreams:
  - name: pool
    backends: [{{ address: "{a}" }}]
    max_connections: 1
    queue: {queue}
    timeouts: {{ read: 10s }}
"#,
        a = b.addr(0)
    )
}

/// GET `url` on another thread.
fn get_in_background(url: &str) -> std::thread::JoinHandle<(u16, String)> {
    let url = url.to_string();
    std::thread::spawn(move || get(&url))
}

#[test]
fn a_request_past_the_cap_waits_for_the_slot_and_is_served() {
    let b = Backends::start(&["a"]);
    b.state(0).set_delay(Duration::from_millis(600));
    let gw = Gateway::start(&config(&b, "{ size: 4, timeout: 5s }"));
    let url = gw.url("/");
    let first = get_in_background(&url);
    assert!(poll_until(WAIT, || b.state(0).max_inflight() == 1));
    let t = Instant::now();
    let (status, body) = get(&url);
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "it waited for the first one's slot"
    );
    assert_eq!(first.join().unwrap().0, 200);
    assert_eq!(
        b.state(0).max_inflight(),
        1,
        "the backend never saw two at once"
    );
    let served = gw.metric_sum(
        "portcullis_upstream_queue_total",
        &[("upstream", "pool"), ("result", "served")],
    );
    assert_eq!(served, 1.0);
}

#[test]
fn a_full_queue_and_a_timed_out_wait_get_503_with_the_reason() {
    let b = Backends::start(&["a"]);
    b.state(0).set_delay(Duration::from_secs(2));
    let gw = Gateway::start(&config(&b, "{ size: 1, timeout: 500ms }"));
    let url = gw.url("/");
    let first = get_in_background(&url);
    assert!(poll_until(WAIT, || b.state(0).max_inflight() == 1));
    let second = get_in_background(&url);
    assert!(poll_until(WAIT, || gw.metric_sum(
        "portcullis_upstream_queue_depth",
        &[("upstream", "pool")]
    ) == 1.0));
    let (status, body) = get(&url);
    assert_eq!(status, 503);
    assert!(
        body.contains("at max_connections (1) and the queue is full"),
        "{body}"
    );
    let (status, body) = second.join().unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("within the queue timeout"), "{body}");
    assert_eq!(first.join().unwrap().0, 200);
    let count = |r: &str| {
        gw.metric_sum(
            "portcullis_upstream_queue_total",
            &[("upstream", "pool"), ("result", r)],
        )
    };
    assert_eq!(
        (count("full"), count("timeout"), count("served")),
        (1.0, 1.0, 0.0)
    );
}
