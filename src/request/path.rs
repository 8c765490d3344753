//! Request-path normalisation: one canonical path per request, decided once, before routing.
//!
//! Route matching, every filter and the forwarded request see the same path, so two spellings
//! of one resource (`/./admin`, `/%61dmin`, `/x/%2e%2e/admin`) cannot take different routes.
//!
//! The default is RFC 3986 (sections 6.2.2.1-6.2.2.3): percent-encoded unreserved characters
//! are decoded, other escapes are kept with upper-case hex, dot segments are removed (after
//! decoding, so `%2e%2e` is `..`). Invalid escapes, control characters, spaces and non-ASCII
//! bytes are refused (400). Two choices depend on the backends, so they are listener options,
//! named as in Envoy: `merge_slashes` and `escaped_slashes` (which also decides about a literal
//! backslash). The query is never changed.

use serde::Deserialize;

/// What to do with `%2F` / `%5C` (escaped slash and backslash) and a literal `\` in a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forward them as they are (`%2F`, `%5C`; a literal `\` is sent as `%5C`). They are not
    /// separators for routing: `/a%2Fb` does not match the prefix `/a/`.
    #[default]
    Keep,
    /// Refuse the request with 400.
    Reject,
    /// Answer 307 with a `Location` where they are `/`, so the client asks again for the
    /// path every backend reads the same way.
    UnescapeAndRedirect,
    /// Turn them into `/` (then merge and remove dot segments) and forward.
    UnescapeAndForward,
}

/// Normalisation settings of a listener (`listeners[].path` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathOptions {
    /// Collapse `//` into `/`. Default: true (as nginx). Turn off only for backends that give
    /// empty path segments a meaning.
    pub merge_slashes: bool,
    /// `%2F`, `%5C` and `\`: `keep` (default), `reject` (400), `unescape_and_redirect` (307
    /// to the path with `/`) or `unescape_and_forward`.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// The outcome for a path that is acceptable.
#[derive(Debug, PartialEq, Eq)]
pub enum Normalized {
    /// Already canonical: nothing to change (the common case, no allocation).
    Unchanged,
    /// Forward this path instead.
    Rewritten(Vec<u8>),
    /// Redirect the client to this path (`unescape_and_redirect`).
    Redirect(Vec<u8>),
}

/// Why a path is refused (the client gets 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A control character, space, DEL or non-ASCII byte.
    BadByte,
    /// `%2F`, `%5C` or `\` with `escaped_slashes: reject`.
    EscapedSlash,
}

impl Refused {
    /// A short explanation for the client.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::BadEscape => "invalid percent-encoding in the request path",
            Refused::BadByte => "invalid character in the request path",
            Refused::EscapedSlash => "escaped slash or backslash in the request path",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether the path needs the slow path: any escape, backslash, dot segment or (when merging)
/// double slash. Refuses bad bytes on the way.
fn needs_work(path: &[u8], opts: PathOptions) -> Result<bool, Refused> {
    let mut work = false;
    let mut prev = b'/';
    for (i, &b) in path.iter().enumerate() {
        if b <= b' ' || b >= 0x7f {
            return Err(Refused::BadByte);
        }
        match b {
            b'%' | b'\\' => work = true,
            b'/' if prev == b'/' && opts.merge_slashes && i > 0 => work = true,
            b'.' if prev == b'/' => {
                let rest = &path[i..];
                if rest.len() == 1
                    || rest[1] == b'/'
                    || (rest[1] == b'.' && (rest.len() == 2 || rest[2] == b'/'))
                {
                    work = true;
                }
            }
            _ => {}
        }
        prev = b;
    }
    Ok(work)
}

/// Decode what RFC 3986 says is safe to decode; returns the decoded bytes and whether an
/// escaped slash or backslash was turned into `/`.
fn decode(path: &[u8], opts: PathOptions) -> Result<(Vec<u8>, bool), Refused> {
    let mut out = Vec::with_capacity(path.len());
    let mut unescaped_slash = false;
    let unescape = matches!(
        opts.escaped_slashes,
        EscapedSlashes::UnescapeAndForward | EscapedSlashes::UnescapeAndRedirect
    );
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'\\' {
            match opts.escaped_slashes {
                EscapedSlashes::Reject => return Err(Refused::EscapedSlash),
                EscapedSlashes::Keep => out.extend_from_slice(b"%5C"),
                _ => {
                    out.push(b'/');
                    unescaped_slash = true;
                }
            }
            i += 1;
            continue;
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(Refused::BadEscape);
        };
        let v = hi << 4 | lo;
        if unreserved(v) {
            out.push(v);
        } else if v == b'/' || v == b'\\' {
            match opts.escaped_slashes {
                EscapedSlashes::Reject => return Err(Refused::EscapedSlash),
                EscapedSlashes::Keep => {
                    out.push(b'%');
                    out.extend_from_slice(if v == b'/' { b"2F" } else { b"5C" });
                }
                _ => {
                    debug_assert!(unescape);
                    out.push(b'/');
                    unescaped_slash = true;
                }
            }
        } else {
            out.push(b'%');
            out.push(b"0123456789ABCDEF"[usize::from(hi)]);
            out.push(b"0123456789ABCDEF"[usize::from(lo)]);
        }
        i += 3;
    }
    Ok((out, unescaped_slash))
}

/// RFC 3986 section 5.2.4 on an absolute path (starting with `/`), plus optional merging of
/// empty segments.
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Vec<u8> {
    let body = &path[1..];
    let n = body.split(|&b| b == b'/').count();
    let mut segs: Vec<&[u8]> = Vec::with_capacity(n);
    for (i, seg) in body.split(|&b| b == b'/').enumerate() {
        let last = i + 1 == n;
        match seg {
            b"." => {}
            b".." => {
                segs.pop();
            }
            b"" if merge_slashes && !last => continue,
            s => {
                segs.push(s);
                continue;
            }
        }
        if last {
            segs.push(b"");
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Normalise an origin-form path (the part before `?`). Paths that do not start with `/`
/// (`*` in `OPTIONS *`) are left alone.
pub fn normalize(path: &[u8], opts: PathOptions) -> Result<Normalized, Refused> {
    if path.first() != Some(&b'/') {
        return if path == b"*" {
            Ok(Normalized::Unchanged)
        } else {
            Err(Refused::BadByte)
        };
    }
    if !needs_work(path, opts)? {
        return Ok(Normalized::Unchanged);
    }
    let (decoded, unescaped_slash) = decode(path, opts)?;
    let out = remove_dot_segments(&decoded, opts.merge_slashes);
    if unescaped_slash && opts.escaped_slashes == EscapedSlashes::UnescapeAndRedirect {
        return Ok(Normalized::Redirect(out));
    }
    Ok(if out == path {
        Normalized::Unchanged
    } else {
        Normalized::Rewritten(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        norm_with(p, PathOptions::default())
    }

    fn norm_with(p: &str, o: PathOptions) -> String {
        match normalize(p.as_bytes(), o) {
            Ok(Normalized::Unchanged) => p.to_string(),
            Ok(Normalized::Rewritten(v)) => String::from_utf8(v).unwrap(),
            Ok(Normalized::Redirect(v)) => format!("redirect {}", String::from_utf8(v).unwrap()),
            Err(e) => format!("refused {e:?}"),
        }
    }

    #[test]
    fn equivalent_spellings_of_admin_become_admin() {
        for p in [
            "/./admin",
            "/x/../admin",
            "/%61dmin",
            "/%2e/admin",
            "/x/%2e%2e/admin",
            "/.%2e/admin",
            "/%2E%2E/admin",
            "//admin",
            "/admin/.",
            "/../../admin",
        ] {
            let n = norm(p);
            assert!(n == "/admin" || n == "/admin/", "{p} -> {n}");
        }
        assert_eq!(norm("/x/./../admin/x"), "/admin/x");
        assert_eq!(norm("/adm%69n/x"), "/admin/x");
    }

    #[test]
    fn canonical_paths_are_untouched() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e",
            "/a%20b",
            "/a%2Fb",
            "*",
            "/~x-_.y",
        ] {
            assert_eq!(
                normalize(p.as_bytes(), PathOptions::default()),
                Ok(Normalized::Unchanged),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_follow_rfc3986() {
        // RFC 3986 section 5.4 examples, applied to absolute paths.
        assert_eq!(norm("/a/b/c/./../../g"), "/a/g");
        assert_eq!(norm("/mid/content=5/../6"), "/mid/6");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/../"), "/a/");
        assert_eq!(norm("/a/..b/c"), "/a/..b/c");
    }

    #[test]
    fn escapes_are_normalised_not_over_decoded() {
        assert_eq!(norm("/a%7e%2d"), "/a~-");
        assert_eq!(norm("/a%3f%3a"), "/a%3F%3A");
        assert_eq!(norm("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(norm("/a%00b"), "/a%00b");
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(norm("/a%2"), "refused BadEscape");
        assert_eq!(norm("/a%zz"), "refused BadEscape");
        assert_eq!(norm("/a b"), "refused BadByte");
        assert_eq!(norm("/x /../admin"), "refused BadByte");
        assert_eq!(norm("/a\tb"), "refused BadByte");
        assert_eq!(norm("/a\u{7f}"), "refused BadByte");
        assert_eq!(norm("/caf\u{e9}"), "refused BadByte");
        assert_eq!(norm("admin"), "refused BadByte");
    }

    #[test]
    fn merge_slashes_is_an_option() {
        let keep = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        assert_eq!(norm_with("//admin", keep), "//admin");
        assert_eq!(norm_with("/a//../b", keep), "/a/b");
        assert_eq!(norm("/a//b///c/"), "/a/b/c/");
    }

    #[test]
    fn each_escaped_slash_action() {
        let with = |e| PathOptions {
            merge_slashes: true,
            escaped_slashes: e,
        };
        let keep = with(EscapedSlashes::Keep);
        assert_eq!(norm_with("/%2fadmin", keep), "/%2Fadmin");
        assert_eq!(norm_with("/a\\..\\admin", keep), "/a%5C..%5Cadmin");
        assert_eq!(norm_with("/a%2F..%2Fadmin", keep), "/a%2F..%2Fadmin");
        let reject = with(EscapedSlashes::Reject);
        assert_eq!(norm_with("/%2fadmin", reject), "refused EscapedSlash");
        assert_eq!(norm_with("/%5cadmin", reject), "refused EscapedSlash");
        assert_eq!(norm_with("/\\admin", reject), "refused EscapedSlash");
        let fwd = with(EscapedSlashes::UnescapeAndForward);
        assert_eq!(norm_with("/%2fadmin", fwd), "/admin");
        assert_eq!(norm_with("/x%2F..%2Fadmin", fwd), "/admin");
        assert_eq!(norm_with("/x\\..\\admin", fwd), "/admin");
        let redirect = with(EscapedSlashes::UnescapeAndRedirect);
        assert_eq!(norm_with("/%2fadmin", redirect), "redirect /admin");
        assert_eq!(norm_with("/x/../admin", redirect), "/admin");
    }
}
