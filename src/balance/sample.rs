//! Weighted random draws over a fixed member list, without heap allocation per draw.

/// Cumulative weights for drawing member indices in proportion to their weight.
#[derive(Debug, Clone)]
pub struct WeightTable {
    /// `cumulative[i]` = sum of weights `0..=i`; empty when all weights are equal.
    cumulative: Box<[u64]>,
    total: u64,
    len: usize,
}

impl WeightTable {
    /// Build from the members' weights (each at least 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u64> = weights.into_iter().map(|w| u64::from(w.max(1))).collect();
        let len = weights.len();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let mut acc = 0;
        let cumulative: Box<[u64]> = if uniform {
            Box::new([])
        } else {
            weights
                .iter()
                .map(|w| {
                    acc += w;
                    acc
                })
                .collect()
        };
        let total = if uniform { len as u64 } else { acc };
        WeightTable {
            cumulative,
            total,
            len,
        }
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no members.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One index, drawn with probability proportional to weight. `len` must be > 0.
    #[inline]
    pub fn draw(&self) -> usize {
        if self.cumulative.is_empty() {
            return fastrand::usize(..self.len);
        }
        let r = fastrand::u64(..self.total);
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// Two different indices (the second drawn without replacement). `len` must be > 1.
    #[inline]
    pub fn draw_two(&self) -> (usize, usize) {
        if self.cumulative.is_empty() {
            let a = fastrand::usize(..self.len);
            let mut b = fastrand::usize(..self.len - 1);
            if b >= a {
                b += 1;
            }
            return (a, b);
        }
        let a = self.draw();
        for _ in 0..4 {
            let b = self.draw();
            if b != a {
                return (a, b);
            }
        }
        // One member holds nearly all the weight: take any other one.
        (a, (a + 1 + fastrand::usize(..self.len - 1)) % self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_in_proportion_to_weight() {
        let t = WeightTable::new([1, 3]);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[t.draw()] += 1;
        }
        let share = f64::from(counts[1]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "share {share}");
    }

    #[test]
    fn draw_two_never_repeats() {
        for weights in [vec![1, 1], vec![1, 1, 1], vec![1000, 1], vec![5, 1, 1]] {
            let t = WeightTable::new(weights);
            for _ in 0..10_000 {
                let (a, b) = t.draw_two();
                assert_ne!(a, b);
                assert!(a < t.len() && b < t.len());
            }
        }
    }
}
