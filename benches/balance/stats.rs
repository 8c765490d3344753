//! Percentiles, shares and recovery times of one run, and medians over rounds.

use crate::load::Sample;

const MS: f64 = 1e6;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Requests without a 200, in %.
    pub errors: f64,
    /// Share of the answers per backend, in %.
    pub share: Vec<f64>,
    /// From half-time to the first request due after it that b0 answered (ms).
    pub first_ms: f64,
    /// From half-time to the end of the first 500 ms window in which b0 got half its fair
    /// share (ms).
    pub half_share_ms: f64,
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / MS
}

impl RunStats {
    pub fn of(samples: &[Sample], backends: usize, secs: f64) -> Self {
        let mut lat: Vec<u64> = samples.iter().map(|s| s.latency_ns).collect();
        lat.sort_unstable();
        let errors = samples.iter().filter(|s| s.status != 200).count();
        let mut counts = vec![0u64; backends];
        for b in samples.iter().filter_map(|s| s.backend) {
            if let Some(c) = counts.get_mut(usize::from(b)) {
                *c += 1;
            }
        }
        let answered: u64 = counts.iter().sum::<u64>().max(1);
        let half = (secs / 2.0 * 1e9) as u64;
        let first_ms = samples
            .iter()
            .filter(|s| s.backend == Some(0) && s.due_ns >= half)
            .map(|s| (s.due_ns - half) as f64 / MS)
            .fold(f64::INFINITY, f64::min);
        RunStats {
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
            p999: percentile(&lat, 0.999),
            errors: 100.0 * errors as f64 / samples.len().max(1) as f64,
            share: counts
                .iter()
                .map(|c| 100.0 * *c as f64 / answered as f64)
                .collect(),
            first_ms,
            half_share_ms: half_share(samples, half, backends),
        }
    }

    pub fn line(&self) -> String {
        let shares: Vec<String> = self.share.iter().map(|s| format!("{s:.1}")).collect();
        format!(
            "p50 {:.2} p99 {:.2} p99.9 {:.2} ms, errors {:.2}%, shares % [{}], b0 first {} half-share {}",
            self.p50, self.p99, self.p999, self.errors, shares.join(" "),
            ms(self.first_ms), ms(self.half_share_ms)
        )
    }

    pub fn header(recovery: bool) -> String {
        let extra = if recovery {
            " b0 first request | b0 half share |"
        } else {
            ""
        };
        let sep = if recovery { "---|---|" } else { "" };
        format!("| target | p50 ms | p99 ms | p99.9 ms | errors | share b0 | shares |{extra}\n|---|---|---|---|---|---|---|{sep}")
    }
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0} ms")
    } else {
        "never".into()
    }
}

/// End of the first 500 ms window (sliding by 50 ms, from `half`) in which b0 answered at
/// least half of 1/`backends` of the requests due in it.
fn half_share(samples: &[Sample], half: u64, backends: usize) -> f64 {
    const WINDOW: u64 = 500_000_000;
    let end = samples.last().map_or(0, |s| s.due_ns);
    let mut start = half;
    while start + WINDOW <= end {
        let inside = samples
            .iter()
            .filter(|s| (start..start + WINDOW).contains(&s.due_ns));
        let (mut all, mut b0) = (0usize, 0usize);
        for s in inside {
            all += 1;
            b0 += usize::from(s.backend == Some(0));
        }
        if all > 0 && (b0 as f64) >= 0.5 * all as f64 / backends as f64 {
            return (start + WINDOW - half) as f64 / MS;
        }
        start += 50_000_000;
    }
    f64::INFINITY
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A table row of medians over `runs`.
pub fn median_row(label: &str, runs: &[RunStats], recovery: bool) -> String {
    let m = |f: fn(&RunStats) -> f64| median(runs.iter().map(f).collect());
    let n = runs[0].share.len();
    let shares: Vec<String> = (0..n)
        .map(|i| format!("{:.1}", median(runs.iter().map(|r| r.share[i]).collect())))
        .collect();
    let mut row = format!(
        "| {label} | {:.2} | {:.2} | {:.2} | {:.2}% | {:.2}% | {} |",
        m(|r| r.p50),
        m(|r| r.p99),
        m(|r| r.p999),
        m(|r| r.errors),
        m(|r| r.share[0]),
        shares.join(" / ")
    );
    if recovery {
        row += &format!(
            " {} | {} |",
            ms(m(|r| r.first_ms)),
            ms(m(|r| r.half_share_ms))
        );
    }
    row
}
