//! JSON string literals for the access log and other hand-written JSON.

use std::io::Write;

/// Append `s` as a JSON string literal.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    json_bytes(out, s.as_bytes());
}

/// Append bytes (UTF-8, invalid sequences replaced) as a JSON string literal.
pub fn json_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    if is_plain(s) {
        out.extend_from_slice(s);
    } else {
        for c in String::from_utf8_lossy(s).chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Whether a byte goes into a JSON string as it is: printable ASCII other than `"` and `\`.
fn plain_byte(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte of `s` is a [`plain_byte`], eight bytes at a time: the access log
/// writes a few such strings per request, and a byte-by-byte test cost about 15
/// instructions per byte. Each test below is exact for "some byte of the word" (a borrow
/// can only spread upward from a byte that already matched).
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let x = u64::from_le_bytes(a);
        let non_ascii = x & HIGH;
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let quote = has_zero_byte(x ^ (ONES * u64::from(b'"')));
        let backslash = has_zero_byte(x ^ (ONES * u64::from(b'\\')));
        if non_ascii | control | quote | backslash != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_test_agrees_with_the_byte_test_for_every_byte_at_every_place() {
        for len in [1usize, 7, 8, 9, 16, 17, 24] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        is_plain(&s),
                        plain_byte(b),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
        // Bytes next to a match, where a borrow could spread, in both orders.
        for pair in [
            [0x00, 0x20],
            [0x20, 0x00],
            [0x1f, 0x21],
            [0x22, 0x23],
            [0x5c, 0x5d],
        ] {
            let mut s = vec![b'a'; 16];
            s[3..5].copy_from_slice(&pair);
            assert!(!is_plain(&s), "{pair:?}");
        }
        assert!(is_plain(b""));
        assert!(is_plain(b"/api/items?x=1&y=%20 ~}{|`_^]["));
    }

    #[test]
    fn escapes_only_what_json_needs() {
        let mut out = Vec::new();
        json_str(&mut out, "plain/path?q=1");
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        json_bytes(&mut out, b"long plain value, then a quote: \"");
        json_bytes(&mut out, b"bad \xff utf-8");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"plain/path?q=1\"\"a\\\"b\\\\c\\nd\\u0001é\"\
             \"long plain value, then a quote: \\\"\"\"bad \u{fffd} utf-8\""
        );
    }
}
