//! Retry policy: how many attempts, the backoff between them, and the budget that caps them.

use crate::config::model::{BackoffConfig, BudgetConfig, RetryConfig};
use crate::config::PathError;
use portcullis_plugin::window::SecondsWindow;
use std::time::Duration;

/// Largest retry count.
pub const MAX_RETRIES: u32 = 10;

/// A compiled retry policy.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    backoff: Option<(Duration, Duration)>,
    budget: Option<RetryBudget>,
}

impl RetryPolicy {
    /// Compile the `retry` section (errors relative to it).
    pub fn compile(c: &RetryConfig) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        if c.attempts > MAX_RETRIES {
            errors.push(PathError::at(
                "attempts",
                format!("must be between 0 and {}, got {}", MAX_RETRIES, c.attempts),
            ));
        }
        if let Some(BackoffConfig { base, max }) = &c.backoff {
            if base.0.is_zero() || max.0 < base.0 {
                errors.push(PathError::at("backoff", "base must be > 0 and max >= base"));
            }
        }
        if let Some(b) = &c.budget {
            if !(0.0..=10.0).contains(&b.ratio) {
                errors.push(PathError::at(
                    "budget.ratio",
                    format!("must be between 0 and 10, got {}", b.ratio),
                ));
            }
            if !(1..=60).contains(&b.window.0.as_secs()) {
                errors.push(PathError::at("budget.window", "must be between 1s and 60s"));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RetryPolicy {
            attempts: c.attempts,
            backoff: c.backoff.as_ref().map(|b| (b.base.0, b.max.0)),
            budget: c.budget.as_ref().map(RetryBudget::new),
        })
    }

    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            backoff: None,
            budget: None,
        }
    }

    /// Count a new request (deposits into the budget).
    #[inline]
    pub fn on_request(&self, now_ns: u64) {
        if let Some(b) = &self.budget {
            b.add_request(now_ns);
        }
    }

    /// Whether the budget allows one more retry now (and if so, spends it).
    pub fn try_spend(&self, now_ns: u64) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_spend(now_ns))
    }

    /// How long to wait before retry number `n` (1-based): uniform in
    /// `[0, min(max, base * 2^(n-1)))`.
    pub fn backoff(&self, n: u32) -> Duration {
        match self.backoff {
            None => Duration::ZERO,
            Some((base, max)) => {
                let cap = base
                    .saturating_mul(1 << (n.saturating_sub(1)).min(16))
                    .min(max);
                let nanos = cap.as_nanos() as u64;
                Duration::from_nanos(if nanos == 0 {
                    0
                } else {
                    fastrand::u64(..nanos)
                })
            }
        }
    }
}

/// Retries allowed over a sliding window: `ratio * requests + min_per_second * window`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    window: std::time::Duration,
    /// Requests and retries per second.
    counts: SecondsWindow,
}

impl RetryBudget {
    /// A budget with these parameters.
    pub fn new(c: &BudgetConfig) -> Self {
        RetryBudget {
            ratio: c.ratio,
            min_per_second: c.min_per_second,
            window: c.window.0,
            counts: SecondsWindow::new(),
        }
    }

    /// Count a request (retries are counted by [`Self::try_spend`]).
    fn add_request(&self, now_ns: u64) {
        self.counts.add(now_ns, 1, 0);
    }

    /// Spend one retry if the budget has room. The promise: over any `window`, retries never
    /// exceed `ratio * requests + min_per_second * window` (a fixed allowance per window, not
    /// per elapsed second), also when many threads spend at once.
    pub fn try_spend(&self, now_ns: u64) -> bool {
        let floor = f64::from(self.min_per_second) * self.window.as_secs() as f64;
        self.counts
            .add_b_if(now_ns, self.window, |requests, retries| {
                (retries as f64) < self.ratio * requests as f64 + floor
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::Dur;

    #[test]
    fn budget_allows_ratio_of_requests_plus_a_floor() {
        let b = RetryBudget::new(&BudgetConfig {
            ratio: 0.2,
            min_per_second: 1,
            window: Dur::secs(10),
        });
        const SEC: u64 = 1_000_000_000;
        let now = 100 * SEC;
        for _ in 0..100 {
            b.add_request(now);
        }
        let granted = (0..1000).filter(|_| b.try_spend(now)).count();
        assert_eq!(granted, 30, "0.2 * 100 + 1/s * 10 s");
        // Outside the window everything has expired: only the floor is left.
        let later = now + 20 * SEC;
        assert_eq!((0..1000).filter(|_| b.try_spend(later)).count(), 10);
    }

    #[test]
    fn backoff_is_full_jitter_capped() {
        let p = RetryPolicy::compile(&RetryConfig::default()).unwrap();
        for n in 1..8 {
            let cap = Duration::from_millis(25 * (1 << (n - 1))).min(Duration::from_millis(250));
            for _ in 0..200 {
                assert!(p.backoff(n) < cap);
            }
        }
        let off = RetryPolicy::compile(&RetryConfig {
            backoff: None,
            ..RetryConfig::default()
        })
        .unwrap();
        assert_eq!(off.backoff(3), Duration::ZERO);
    }
}
