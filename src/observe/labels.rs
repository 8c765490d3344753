//! Small integer ids for label values, so hot-path metric handles can be cached by id.

use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

static INTERNED: Lazy<Mutex<HashMap<Box<str>, u32>>> = Lazy::new(Default::default);

/// The id of a label value (route or upstream name). Stable for the life of the process, so
/// a route keeps its cached metric handles across reloads. Called at config compile time only.
pub fn intern(value: &str) -> u32 {
    let mut map = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    let next = map.len() as u32;
    *map.entry(value.into()).or_insert(next)
}

/// A multiply-shift hasher for integer keys (the cache keys are packed integers).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// `HashMap` with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The method label: one of the standard methods, else `OTHER` (bounded cardinality).
pub fn method_index(method: &http::Method) -> u8 {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// Label text of a [`method_index`].
pub const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// The status-class label index: 1..=5 for `1xx`..`5xx`, 0 when no response was sent.
pub fn status_class(status: u16) -> u8 {
    match status {
        100..=599 => (status / 100) as u8,
        _ => 0,
    }
}

/// Label text of a [`status_class`].
pub const STATUS_LABELS: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable() {
        let a = intern("route-a");
        assert_eq!(intern("route-a"), a);
        assert_ne!(intern("route-b"), a);
    }

    #[test]
    fn classes() {
        assert_eq!(STATUS_LABELS[status_class(204) as usize], "2xx");
        assert_eq!(STATUS_LABELS[status_class(503) as usize], "5xx");
        assert_eq!(STATUS_LABELS[status_class(0) as usize], "none");
        assert_eq!(
            METHOD_LABELS[method_index(&http::Method::from_bytes(b"PURGE").unwrap()) as usize],
            "OTHER"
        );
    }
}
