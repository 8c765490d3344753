//! Lock-free floating-point cells for latency estimates.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A failed attempt counts as a response this slow (1 s) for latency-aware strategies.
pub const ERROR_PENALTY_NS: f64 = 1e9;

/// An `f64` stored in an `AtomicU64`.
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// A cell holding `v`.
    pub fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }

    /// Current value.
    #[inline]
    pub fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    /// Apply `f` atomically (compare-and-swap loop).
    #[inline]
    pub fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some(f(f64::from_bits(bits)).to_bits())
        });
    }
}
