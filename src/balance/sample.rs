//! Weighted random draws over a fixed member list, without heap allocation per draw.

/// Weighted draws of member indices in O(1): Vose's alias method. Each slot `i` keeps itself
/// with probability `keep[i] / 2^32` and otherwise gives its alias. Replaces a binary search
/// over cumulative weights, whose unpredictable branches cost more than the second random
/// number (`scripts/pick-instructions.sh`, docs/performance.md).
#[derive(Debug, Clone)]
pub struct WeightTable {
    /// Per slot: threshold below which a draw keeps the slot (out of 2^32); empty when all
    /// weights are equal.
    keep: Box<[u64]>,
    /// Per slot: the index a draw that does not keep the slot gives.
    alias: Box<[u32]>,
    len: usize,
}

/// `keep` of a slot that always keeps itself.
const ALWAYS: u64 = 1 << 32;

impl WeightTable {
    /// Build from the members' weights (each at least 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u64> = weights.into_iter().map(|w| u64::from(w.max(1))).collect();
        let len = weights.len();
        if weights.windows(2).all(|w| w[0] == w[1]) {
            return WeightTable {
                keep: Box::new([]),
                alias: Box::new([]),
                len,
            };
        }
        let total: u64 = weights.iter().sum();
        // Each slot holds `total` units; slot i starts with weight_i * len of them.
        let mut units: Vec<u64> = weights.iter().map(|w| w * len as u64).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..len).partition(|&i| units[i] < total);
        let mut keep = vec![ALWAYS; len];
        let mut alias: Vec<u32> = (0..len as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = ((u128::from(units[s]) << 32) / u128::from(total)) as u64;
            alias[s] = l as u32;
            units[l] -= total - units[s];
            if units[l] < total {
                large.pop();
                small.push(l);
            }
        }
        WeightTable {
            keep: keep.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
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
        let i = fastrand::usize(..self.len);
        if self.keep.is_empty() || u64::from(fastrand::u32(..)) < self.keep[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }

    /// Two different indices (the second drawn without replacement). `len` must be > 1.
    #[inline]
    pub fn draw_two(&self) -> (usize, usize) {
        if self.keep.is_empty() {
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
    fn many_weights_are_drawn_in_proportion() {
        let weights: Vec<u32> = (1..=20).map(|i| (i * 37) % 50 + 1).collect();
        let total: u32 = weights.iter().sum();
        let t = WeightTable::new(weights.iter().copied());
        let n = 400_000;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..n {
            counts[t.draw()] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let want = f64::from(*w) / f64::from(total);
            let got = f64::from(counts[i]) / f64::from(n);
            assert!(
                (got - want).abs() < 0.004,
                "member {i}: {got} against {want}"
            );
        }
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
