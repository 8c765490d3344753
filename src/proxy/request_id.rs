//! `x-request-id`: kept when the client sends a sane one, otherwise generated.

use http::HeaderValue;

/// Header name.
pub const HEADER: &str = "x-request-id";

/// The client's id if it is 1-128 visible ASCII characters, else a new random one.
pub fn accept_or_generate(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    generate()
}

/// 32 random hex digits (128 bits).
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_a_bad_one() {
        let good = HeaderValue::from_static("abc-123");
        assert_eq!(accept_or_generate(Some(&good)), good);
        let bad = HeaderValue::from_static("has space");
        let generated = accept_or_generate(Some(&bad));
        assert_eq!(generated.len(), 32);
        assert_ne!(generate(), generate());
    }
}
