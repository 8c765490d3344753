//! Path normalisation never panics, and what it produces is canonical: normalising it again
//! changes nothing, it starts with `/` and holds no dot segment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::request::path::{normalize, EscapedSlashes, Normalized, PathOptions};

fuzz_target!(|data: &[u8]| {
    for merge_slashes in [true, false] {
        for escaped_slashes in [
            EscapedSlashes::Keep,
            EscapedSlashes::Reject,
            EscapedSlashes::UnescapeAndForward,
            EscapedSlashes::UnescapeAndRedirect,
        ] {
            let opts = PathOptions {
                merge_slashes,
                escaped_slashes,
            };
            let out = match normalize(data, opts) {
                Ok(Normalized::Rewritten(p) | Normalized::Redirect(p)) => p,
                _ => continue,
            };
            assert!(out.starts_with(b"/"), "{out:?}");
            for seg in out.split(|&b| b == b'/') {
                assert!(seg != b"." && seg != b"..", "dot segment left in {out:?}");
            }
            assert_eq!(normalize(&out, opts), Ok(Normalized::Unchanged), "not idempotent: {out:?}");
        }
    }
});
