//! Balancing quality under trouble: an open-loop client at a fixed rate, backends with
//! controllable latency, errors and concurrency, each strategy of portcullis beside nginx and
//! Envoy (where installed) in the same run, rounds interleaved. Everything on 127.0.0.1,
//! bounded in time (about `rounds x targets x scenarios x (secs + 2)` seconds).
//!
//! ```text
//! cargo build --release --bin portcullis
//! cargo bench --bench balance -- [--rounds 3] [--secs 10] [--scenarios 0,1,2] [--targets adaptive,nginx] [--slow-ms 100]
//! (`--targets`: labels containing any of the words; `=label` for one label exactly)
//! ```
//!
//! `--slow-ms N` also lists, per run, the requests slower than N ms (due time, latency,
//! backend): where a round's tail came from.
//!
//! Prints one line per run and, per scenario, a table of medians over the rounds: p50, p99,
//! p99.9 (ms, counted from each request's due time), errors, and the share of b0 (the backend
//! that misbehaves) and of every backend. Scenario 2 adds the time from the recovery to b0's
//! first request and to half its fair share (500 ms windows). See docs/performance.md.

mod load;
mod scenarios;
mod stats;
mod targets;

use portcullis::devserver::DevServer;
use scenarios::Scenario;
use stats::RunStats;
use std::collections::BTreeMap;
use std::time::Duration;
use targets::{Kind, Target};

struct Args {
    rounds: usize,
    secs: f64,
    scenarios: Option<Vec<u8>>,
    targets: Option<Vec<String>>,
    slow_ms: Option<f64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 3,
        secs: 10.0,
        scenarios: None,
        targets: None,
        slow_ms: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--secs" => a.secs = value().parse().expect("--secs S"),
            "--scenarios" => {
                a.scenarios = Some(
                    value()
                        .split(',')
                        .map(|s| s.parse().expect("ids"))
                        .collect(),
                )
            }
            "--targets" => a.targets = Some(value().split(',').map(String::from).collect()),
            "--slow-ms" => a.slow_ms = Some(value().parse().expect("--slow-ms N")),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Every target, and the scenarios it runs in (`None`: all).
fn targets() -> Vec<(Target, Option<&'static [u8]>)> {
    let p = |label: &str, strategy: &str, filters: &str| Target {
        label: label.into(),
        kind: Kind::Portcullis {
            strategy: strategy.into(),
            filters: filters.into(),
            upstream: String::new(),
        },
    };
    // A strategy with extra upstream keys and no filters.
    let with_upstream = |label: &str, strategy: &str, upstream: &str| Target {
        label: label.into(),
        kind: Kind::Portcullis {
            strategy: strategy.into(),
            filters: "[]".into(),
            upstream: upstream.into(),
        },
    };
    // An HTTP health check every 250 ms: its answer time measures idle backends.
    let health = |label: &str, strategy: &str| {
        with_upstream(
            label,
            strategy,
            "health_check: { kind: http, path: /healthz, interval: 250ms, timeout: 3s },",
        )
    };
    // The gateway holds the queue: each backend gets one request at a time (its own
    // concurrency in scenarios 5 and 7), the rest wait in the upstream's FIFO queue.
    let held = |label: &str, strategy: &str| {
        with_upstream(
            label,
            strategy,
            "max_connections: 1, queue: { size: 1000, timeout: 10s },",
        )
    };
    let t = |label: &str, kind| Target {
        label: label.into(),
        kind,
    };
    vec![
        (p("portcullis round_robin", "round_robin", "[]"), None),
        (p("portcullis least_conn", "least_conn", "[]"), None),
        (
            p(
                "portcullis least_conn in-flight only",
                "{ kind: least_conn, prefer_fast: false }",
                "[]",
            ),
            None,
        ),
        (
            p(
                "portcullis least_conn slow at 10x",
                "{ kind: least_conn, slow_factor: 10 }",
                "[]",
            ),
            None,
        ),
        (
            p(
                "portcullis least_conn p2c",
                "{ kind: least_conn, choice: p2c }",
                "[]",
            ),
            Some(&[1, 3][..]),
        ),
        (
            p("portcullis fastest_response", "fastest_response", "[]"),
            None,
        ),
        (p("portcullis adaptive", "adaptive", "[]"), None),
        (
            p(
                "portcullis adaptive no probe deadline",
                "{ kind: adaptive, probe_deadline: false }",
                "[]",
            ),
            Some(&[0, 1, 2, 3][..]),
        ),
        (health("portcullis adaptive + health", "adaptive"), None),
        (
            health("portcullis fastest_resp. + health", "fastest_response"),
            Some(&[0, 1, 2, 3][..]),
        ),
        (
            p(
                "portcullis adaptive + breaker",
                "adaptive",
                "[ { kind: circuit_breaker } ]",
            ),
            Some(&[4][..]),
        ),
        (
            held("portcullis round_robin, queue held", "round_robin"),
            Some(&[5, 7][..]),
        ),
        (
            held("portcullis least_conn, queue held", "least_conn"),
            Some(&[5, 7][..]),
        ),
        (
            held("portcullis adaptive, queue held", "adaptive"),
            Some(&[5, 7][..]),
        ),
        (
            t("nginx round robin", Kind::Nginx { least_conn: false }),
            None,
        ),
        (
            t("nginx least_conn", Kind::Nginx { least_conn: true }),
            None,
        ),
        (
            t(
                "Envoy ROUND_ROBIN",
                Kind::Envoy {
                    policy: "ROUND_ROBIN",
                },
            ),
            None,
        ),
        (
            t(
                "Envoy LEAST_REQUEST",
                Kind::Envoy {
                    policy: "LEAST_REQUEST",
                },
            ),
            None,
        ),
    ]
}

/// One run: fresh backends, the target started over them, the load, the stats.
async fn run_once(
    sc: &Scenario,
    target: &Target,
    (secs, slow_ms): (f64, Option<f64>),
    seed: u64,
) -> Result<RunStats, String> {
    let mut servers = Vec::new();
    for i in 0..sc.backends {
        let addr = "127.0.0.1:0".parse().expect("an address");
        let s = DevServer::start(&format!("b{i}"), addr)
            .await
            .map_err(|e| e.to_string())?;
        servers.push(s);
    }
    let states: Vec<_> = servers.iter().map(|s| s.state().clone()).collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
    let (t, n) = (target.clone(), sc.instances);
    let running = tokio::task::spawn_blocking(move || t.start(&addrs, n))
        .await
        .map_err(|e| e.to_string())??;
    (sc.setup)(&states);
    if let Some(halfway) = sc.halfway {
        let states = states.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
            halfway(&states);
        });
    }
    let samples = load::run(
        &running.urls,
        (sc.rate, secs, seed),
        Duration::from_secs(10),
    )
    .await;
    drop(running);
    if let Some(ms) = slow_ms {
        print_slow(&samples, ms);
    }
    Ok(RunStats::of(&samples, sc.backends, secs))
}

/// The requests slower than `ms`: due time (s), latency (ms), status and backend.
fn print_slow(samples: &[load::Sample], ms: f64) {
    let slow = samples.iter().filter(|s| s.latency_ns as f64 / 1e6 > ms);
    for s in slow {
        println!(
            "#   slow: due {:.3} s, {:.1} ms, status {}, backend {:?}",
            s.due_ns as f64 / 1e9,
            s.latency_ns as f64 / 1e6,
            s.status,
            s.backend
        );
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let scenarios: Vec<Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| {
            args.scenarios
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.id))
        })
        .collect();
    let targets: Vec<_> = targets()
        .into_iter()
        .filter(|(t, _)| {
            let wanted = args.targets.as_ref().is_none_or(|f| {
                f.iter().any(|w| match w.strip_prefix('=') {
                    Some(exact) => t.label == exact,
                    None => t.label.contains(w.as_str()),
                })
            });
            if wanted && !t.available() {
                println!("# {}: not installed, left out", t.label);
            }
            wanted && t.available()
        })
        .collect();
    println!(
        "# balance benchmark: {} rounds x {} s, open loop",
        args.rounds, args.secs
    );
    let mut results: BTreeMap<(u8, usize), Vec<RunStats>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for sc in &scenarios {
            for (ti, (t, only)) in targets.iter().enumerate() {
                if only.is_some_and(|o| !o.contains(&sc.id)) {
                    continue;
                }
                match rt.block_on(run_once(sc, t, (args.secs, args.slow_ms), round as u64)) {
                    Ok(s) => {
                        println!(
                            "round {round} scenario {} {:<32} {}",
                            sc.id,
                            t.label,
                            s.line()
                        );
                        results.entry((sc.id, ti)).or_default().push(s);
                    }
                    Err(e) => println!(
                        "round {round} scenario {} {:<32} FAILED: {e}",
                        sc.id, t.label
                    ),
                }
            }
        }
    }
    for sc in &scenarios {
        println!(
            "\n### Scenario {}: {} ({}/s{})",
            sc.id,
            sc.name,
            sc.rate,
            if sc.instances > 1 {
                format!(", {} gateways", sc.instances)
            } else {
                String::new()
            }
        );
        println!("\n{}", RunStats::header(sc.halfway.is_some()));
        for (ti, (t, _)) in targets.iter().enumerate() {
            if let Some(runs) = results.get(&(sc.id, ti)) {
                println!(
                    "{}",
                    stats::median_row(&t.label, runs, sc.halfway.is_some())
                );
            }
        }
    }
}
