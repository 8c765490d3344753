//! An open-loop client: requests are due at Poisson arrival times (exponential gaps with mean
//! `1 / rate`, from a fixed seed, so every target sees the same sequence), each is sent at its
//! due time whether or not earlier ones have answered, and its latency counts from that due
//! time. A client that
//! waits for answers before sending (wrk, most closed-loop tools) sends less when the server
//! stalls, and hides the stall from its own percentiles (coordinated omission).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One request's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Due time, ns after the start.
    pub due_ns: u64,
    /// From the due time to the end of the response body (or to the error).
    pub latency_ns: u64,
    /// HTTP status; 0 when the request failed without one.
    pub status: u16,
    /// Index of the backend that answered (its `x-backend: b<i>` header), if known.
    pub backend: Option<u16>,
}

/// Send `rate` requests per second on average for `secs` seconds, spread round-robin over
/// `urls` (one per gateway process), each with `timeout`; `seed` fixes the arrival times.
/// Returns every sample, in due order.
pub async fn run(
    urls: &[String],
    (rate, secs, seed): (f64, f64, u64),
    timeout: Duration,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(timeout)
        .build()
        .expect("an HTTP client");
    let urls: Arc<[String]> = urls.into();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at = 0.0f64;
    let dues: Vec<f64> = std::iter::from_fn(|| {
        at += -(1.0 - rng.f64()).ln() / rate;
        (at < secs).then_some(at)
    })
    .collect();
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(dues.len());
    for (i, at) in dues.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due).await;
        let (client, urls) = (client.clone(), Arc::clone(&urls));
        tasks.push(tokio::spawn(async move {
            let url = &urls[i % urls.len()];
            let (status, backend) = match client.get(url).send().await {
                Ok(r) => {
                    let backend = r
                        .headers()
                        .get("x-backend")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix('b'))
                        .and_then(|v| v.parse().ok());
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(_) => (status, backend),
                        Err(_) => (0, backend),
                    }
                }
                Err(_) => (0, None),
            };
            Sample {
                due_ns: (due - start).as_nanos() as u64,
                latency_ns: due.elapsed().as_nanos() as u64,
                status,
                backend,
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(s) = t.await {
            out.push(s);
        }
    }
    out
}
