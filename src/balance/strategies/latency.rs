//! What the latency-aware strategies (`adaptive`, `fastest_response`) share: how a backend's
//! latency estimate ages while it gets no traffic, and the pick over those costs.
//!
//! - **Idle decay toward the competitor.** The estimate of a backend that has not answered
//!   for a while moves toward the other candidate's estimate (P2C) or a random member's (full
//!   scan), with half-life `idle_half_life`. A backend that was slow and stopped getting
//!   traffic is therefore tried again within a bounded time: about `idle_half_life` ×
//!   log2(slow / fast) when the others are busy, × log2(16 × slow / fast) when they are idle
//!   (within 1/16 counts as level, so ties go either way). Decaying toward zero instead
//!   (Finagle, tower: 10 s constant) takes tens of seconds, and can send a herd to a
//!   long-idle backend.
//! - **Unmeasured is typical.** A backend without samples costs what its competitor costs
//!   (`default_ns` when neither has samples), never zero: a zero would send it every request
//!   until its first answer.
//! - **Peak on outstanding requests.** The latency used is at least the mean age of the
//!   backend's in-flight requests, so a backend that hangs is avoided before it answers.
//!
//! Failures are recorded as 1 s samples by the proxy, so a backend that fails fast does not
//! look fast.

use super::{scan_lowest, Choice};
use crate::balance::sample::WeightTable;
use crate::balance::{BackendState, Member, PickRequest};
use crate::config::duration::Dur;
use crate::config::PathError;

/// A stored estimate: latency (ns) and the time of its last sample; `None` before the first.
pub(crate) type Estimate = Option<(f64, u64)>;

/// How a latency-aware strategy turns estimates into costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyCost {
    /// Half-life of the idle decay toward the competitor (ns, > 0).
    pub idle_half_life_ns: f64,
    /// Latency assumed when no candidate has samples (ns).
    pub default_ns: f64,
    /// Divide the cost by the member's weight (`fastest_response`, nginx `least_time`).
    pub per_weight: bool,
}

impl LatencyCost {
    /// A cost with the `idle_decay` parameter checked (greater than 0).
    pub fn new(idle_decay: Dur, default_ns: f64, per_weight: bool) -> Result<Self, PathError> {
        if idle_decay.0.is_zero() {
            return Err(PathError::at(
                "idle_decay",
                "must be greater than 0 (e.g. 150ms)",
            ));
        }
        Ok(LatencyCost {
            idle_half_life_ns: idle_decay.0.as_nanos() as f64,
            default_ns,
            per_weight,
        })
    }

    /// The latency to use for `m`, whose own estimate is `own`, against `typical` (ns).
    #[inline]
    pub fn latency(&self, m: &Member, own: Estimate, typical: f64, now: u64) -> f64 {
        let rtt = match own {
            Some((v, at)) if v > typical => {
                let idle = now.saturating_sub(at) as f64;
                let excess = (v - typical) * (-idle / self.idle_half_life_ns).exp2();
                if excess < typical / 16.0 {
                    typical
                } else {
                    typical + excess
                }
            }
            Some((v, _)) => v,
            None => typical,
        };
        rtt.max(m.state.outstanding_age_ns(now))
    }

    /// `latency × (in-flight + 1)`, per unit of weight if configured.
    #[inline]
    fn cost(&self, m: &Member, own: Estimate, typical: f64, now: u64) -> f64 {
        let c = self.latency(m, own, typical, now) * (f64::from(m.state.inflight()) + 1.0);
        if self.per_weight {
            c / f64::from(m.weight)
        } else {
            c
        }
    }

    /// The raw estimate of `e`, else of `other`, else the default.
    #[inline]
    fn raw(&self, e: Estimate, other: Estimate) -> f64 {
        e.or(other).map_or(self.default_ns, |(v, _)| v)
    }

    /// The member with the lowest cost, by `choice`; `estimate` reads a member's estimate.
    #[inline]
    pub fn pick(
        &self,
        members: &[Member],
        table: &WeightTable,
        choice: Choice,
        req: &PickRequest,
        estimate: impl Fn(&BackendState) -> Estimate,
    ) -> usize {
        let n = members.len();
        if n == 1 {
            return 0;
        }
        if choice.scans(n) {
            // Typical: the estimate of a random measured member.
            let start = fastrand::usize(..n);
            let probe = (0..n).find_map(|i| estimate(&members[(start + i) % n].state));
            return scan_lowest(members, |_, m| {
                let own = estimate(&m.state);
                self.cost(m, own, self.raw(probe, own), req.now)
            });
        }
        let (a, b) = table.draw_two();
        let (ea, eb) = (estimate(&members[a].state), estimate(&members[b].state));
        let ca = self.cost(&members[a], ea, self.raw(eb, ea), req.now);
        let cb = self.cost(&members[b], eb, self.raw(ea, eb), req.now);
        if cb < ca {
            b
        } else {
            a
        }
    }
}
