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
    let mut buf = [0u8; 32];
    hex_into(&mut buf[..16], fastrand::u64(..));
    hex_into(&mut buf[16..], fastrand::u64(..));
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `value` as 16 lowercase hex digits into `out[..16]` (ids in headers: request, trace, span).
pub fn hex_into(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in value.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
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
