//! A Ketama consistent-hash ring over member indices.
//!
//! Like nginx and Pingora's `pingora-ketama`: 160 points per unit of weight, each point the
//! CRC32 of `"<ip>\0<port>"` chained with the previous point's hash, and keys hashed with CRC32.
//! Points map straight to member indices, so a lookup is one binary search.

use std::net::SocketAddr;

/// Points per unit of weight (nginx's value).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// The ring: sorted `(hash, member index)` points.
#[derive(Debug, Default)]
pub struct Ring {
    points: Box<[(u32, u32)]>,
}

impl Ring {
    /// Build from `(address, weight)` per member, in member order.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a SocketAddr, u32)>) -> Self {
        let mut points = Vec::new();
        for (idx, (addr, weight)) in nodes.into_iter().enumerate() {
            let mut seed = crc32fast::Hasher::new();
            seed.update(addr.ip().to_string().as_bytes());
            seed.update(b"\0");
            seed.update(addr.port().to_string().as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..weight.max(1) * POINTS_PER_WEIGHT {
                let mut h = seed.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, idx as u32));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    /// Position of the first point at or after `hash` (wrapping).
    #[inline]
    pub fn position(&self, hash: u32) -> usize {
        let i = self.points.partition_point(|p| p.0 < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// Member index at ring position `pos` (taken modulo the ring size).
    #[inline]
    pub fn member_at(&self, pos: usize) -> usize {
        self.points[pos % self.points.len()].1 as usize
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}
