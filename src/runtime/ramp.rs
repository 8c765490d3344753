//! How an upstream's rotation bends: slow start (a member that joins ramps its share in) and
//! the panic threshold (too few healthy primaries: balance over all of them).
//!
//! Both are decided by the control plane when it builds an upstream's selector: the ramp of
//! each member is a number in the member ([`crate::balance::Member::ramp`]) that the writer
//! refreshes on a timer while any member ramps, and panic is a different member list. The
//! request path only reads them.

use crate::config::upstream::{SlowStartConfig, UpstreamConfig};
use crate::config::PathError;
use std::net::SocketAddr;
use std::time::Duration;

/// What the control plane knows about a backend beyond its own state: whether an open circuit
/// keeps it out, and how far along its ramp it is.
pub trait Rotation {
    /// Out of rotation (an open circuit's ejection).
    fn ejected(&self, addr: SocketAddr) -> bool;
    /// Share of its weight the member gets now, in (0, 1]; 1 when it does not ramp.
    fn ramp(&self, addr: SocketAddr) -> f32 {
        let _ = addr;
        1.0
    }
}

/// Nothing ejected, nobody ramping.
pub struct Steady;

impl Rotation for Steady {
    fn ejected(&self, _: SocketAddr) -> bool {
        false
    }
}

/// A compiled `slow_start` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// Length of the ramp.
    pub window: Duration,
    /// `1 / aggression`: the exponent applied to the elapsed fraction.
    exponent: f64,
    /// Share at the start, 0.01..=1.
    floor: f64,
}

/// Shortest and longest ramp accepted.
const WINDOW: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

impl SlowStart {
    /// Check and compile `c`; errors are located under `slow_start`.
    pub fn compile(c: &SlowStartConfig) -> Result<Self, PathError> {
        let at = |key: &str, msg: String| PathError::at(format!("slow_start.{key}"), msg);
        if !(WINDOW.0..=WINDOW.1).contains(&c.window.0) {
            return Err(at(
                "window",
                format!("must be between 100ms and 1h, got {:?}", c.window.0),
            ));
        }
        if !(0.1..=10.0).contains(&c.aggression) {
            return Err(at(
                "aggression",
                format!(
                    "must be between 0.1 and 10 (1 = linear), got {}",
                    c.aggression
                ),
            ));
        }
        if !(1.0..=100.0).contains(&c.min_weight_percent) {
            return Err(at(
                "min_weight_percent",
                format!("must be between 1 and 100, got {}", c.min_weight_percent),
            ));
        }
        Ok(SlowStart {
            window: c.window.0,
            exponent: 1.0 / c.aggression,
            floor: c.min_weight_percent / 100.0,
        })
    }

    /// Share of the full weight `elapsed` into the ramp: `max(floor, (elapsed/window)^(1/a))`,
    /// 1 once the window has passed.
    pub fn factor(&self, elapsed: Duration) -> f32 {
        if elapsed >= self.window {
            return 1.0;
        }
        let x = elapsed.as_secs_f64() / self.window.as_secs_f64();
        x.powf(self.exponent).max(self.floor).min(1.0) as f32
    }

    /// How often the ramp is refreshed: 1/20 of the window, between 50 ms and 1 s.
    pub fn tick(&self) -> Duration {
        (self.window / 20).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Compile an upstream's `slow_start` and `panic_threshold` (the latter as a fraction).
pub fn compile(
    u: &UpstreamConfig,
    errors: &mut Vec<PathError>,
) -> (Option<SlowStart>, Option<f64>) {
    let slow = u
        .slow_start
        .as_ref()
        .and_then(|c| SlowStart::compile(c).map_err(|e| errors.push(e)).ok());
    let panic = match u.panic_threshold {
        Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => {
            errors.push(PathError::at(
                "panic_threshold",
                format!("must be a percent between 0 and 100, got {p}"),
            ));
            None
        }
        Some(p) if p > 0.0 => Some(p / 100.0),
        _ => None,
    };
    (slow, panic)
}

/// Whether `healthy` of `total` primaries is below `threshold` (a fraction): panic.
pub fn in_panic(threshold: Option<f64>, healthy: usize, total: usize) -> bool {
    match threshold {
        Some(t) if total > 0 => (healthy as f64) < t * total as f64,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::Dur;

    fn slow(window_ms: u64, aggression: f64, floor: f64) -> SlowStart {
        SlowStart::compile(&SlowStartConfig {
            window: Dur(Duration::from_millis(window_ms)),
            aggression,
            min_weight_percent: floor,
        })
        .unwrap()
    }

    #[test]
    fn a_linear_ramp_rises_from_its_floor_to_one() {
        let s = slow(10_000, 1.0, 10.0);
        let f = |ms| s.factor(Duration::from_millis(ms));
        assert_eq!(f(0), 0.1);
        assert_eq!(f(500), 0.1);
        assert!((f(5_000) - 0.5).abs() < 1e-6);
        assert!((f(9_000) - 0.9).abs() < 1e-6);
        assert_eq!(f(10_000), 1.0);
        assert_eq!(f(60_000), 1.0);
        let mut last = 0.0;
        for ms in (0..=10_000).step_by(100) {
            assert!(f(ms) >= last);
            last = f(ms);
        }
    }

    #[test]
    fn aggression_above_one_rises_faster_early() {
        let (lin, fast) = (slow(10_000, 1.0, 1.0), slow(10_000, 2.0, 1.0));
        let at = Duration::from_secs(2);
        assert!(fast.factor(at) > lin.factor(at));
        assert!((fast.factor(at) - 0.2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn out_of_range_settings_are_refused_with_their_key() {
        let e = SlowStart::compile(&SlowStartConfig {
            window: Dur(Duration::ZERO),
            aggression: 1.0,
            min_weight_percent: 10.0,
        })
        .unwrap_err();
        assert!(e.to_string().contains("slow_start.window"), "{e}");
        let e = SlowStart::compile(&SlowStartConfig {
            window: Dur(Duration::from_secs(1)),
            aggression: 0.0,
            min_weight_percent: 10.0,
        })
        .unwrap_err();
        assert!(e.to_string().contains("aggression"), "{e}");
    }

    #[test]
    fn panic_is_below_the_threshold_and_off_without_one() {
        assert!(in_panic(Some(0.5), 1, 4));
        assert!(!in_panic(Some(0.5), 2, 4));
        assert!(!in_panic(None, 0, 4));
        assert!(!in_panic(Some(0.5), 0, 0));
    }
}
