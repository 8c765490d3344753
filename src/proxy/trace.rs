//! W3C Trace Context (`traceparent`): a request keeps the trace it arrived in, or starts one.
//! The gateway's handling of the request is one span of it, with an id of its own: every
//! attempt to a backend carries that id as its parent id, and it is the span exported with
//! OTLP (`tracing.otlp`). `tracestate` is passed through untouched. The trace id goes into
//! the access log.

use super::request_id::hex_into;
use http::HeaderValue;

/// Header name.
pub const HEADER: &str = "traceparent";

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trace {
    /// 32 lowercase hex digits; all zero until accepted or started.
    id: [u8; 32],
    /// Trace flags, 2 hex digits (`01`: sampled).
    flags: [u8; 2],
    /// The gateway's span id, 16 hex digits.
    span: [u8; 16],
    /// The client's span id, 16 hex digits; all zero when the trace started here.
    parent: [u8; 16],
}

fn is_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl Trace {
    /// The incoming `traceparent`'s trace when it is a valid version-00 header (or a later
    /// version, read by its version-00 prefix); otherwise a new trace, sampled.
    pub fn accept_or_start(incoming: Option<&HeaderValue>) -> Trace {
        let mut t = match incoming.and_then(|v| Self::parse(v.as_bytes())) {
            Some(t) => t,
            None => {
                let mut t = Trace {
                    flags: *b"01",
                    ..Trace::default()
                };
                hex_into(&mut t.id[..16], fastrand::u64(..));
                hex_into(&mut t.id[16..], fastrand::u64(1..));
                t
            }
        };
        hex_into(&mut t.span, fastrand::u64(1..));
        t
    }

    fn parse(b: &[u8]) -> Option<Trace> {
        // version "-" trace-id(32) "-" parent-id(16) "-" flags(2)
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let (version, id, parent, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
        let later = version != b"00";
        if !is_hex(version) || version == b"ff" || (!later && b.len() != 55) {
            return None;
        }
        if later && b.len() > 55 && b[55] != b'-' {
            return None;
        }
        let zero = |s: &[u8]| s.iter().all(|&c| c == b'0');
        if !is_hex(id) || !is_hex(parent) || !is_hex(flags) || zero(id) || zero(parent) {
            return None;
        }
        let mut t = Trace::default();
        t.id.copy_from_slice(id);
        t.flags.copy_from_slice(flags);
        t.parent.copy_from_slice(parent);
        Some(t)
    }

    /// The trace id (empty before the request was seen).
    pub fn id(&self) -> &[u8] {
        if self.id == [0; 32] {
            &[]
        } else {
            &self.id
        }
    }

    /// The gateway's span id (16 hex digits).
    pub fn span(&self) -> &[u8] {
        &self.span
    }

    /// The client's span id, when the request came with a valid `traceparent`.
    pub fn parent(&self) -> Option<&[u8]> {
        (self.parent != [0; 16]).then_some(&self.parent[..])
    }

    /// The `traceparent` of an attempt to a backend: this trace, the gateway's span as parent.
    pub fn child(&self) -> HeaderValue {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        buf[3..35].copy_from_slice(&self.id);
        buf[36..52].copy_from_slice(&self.span);
        buf[53..55].copy_from_slice(&self.flags);
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn keeps_a_valid_trace_and_makes_the_gateway_span_the_parent() {
        let t = Trace::accept_or_start(Some(&HeaderValue::from_static(GOOD)));
        assert_eq!(t.id(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent(),
            Some(&b"00f067aa0ba902b7"[..]),
            "the client's span"
        );
        let (a, b) = (t.child(), t.child());
        let a = a.to_str().unwrap();
        assert_eq!(&a[..36], &GOOD[..36], "same version and trace id");
        assert_eq!(&a[52..], "-01", "same flags");
        assert_ne!(&a[36..52], &GOOD[36..52], "a new parent id");
        assert_eq!(a.as_bytes()[36..52], *t.span(), "the gateway's span");
        assert_eq!(
            a,
            b.to_str().unwrap(),
            "every attempt is a child of the same span"
        );
        let other = Trace::accept_or_start(Some(&HeaderValue::from_static(GOOD)));
        assert_ne!(other.span(), t.span(), "each request is a span of its own");
        assert_eq!(Trace::accept_or_start(None).parent(), None);
    }

    #[test]
    fn starts_a_trace_when_absent_or_malformed() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let t = Trace::accept_or_start(Some(&HeaderValue::from_str(bad).unwrap()));
            assert_ne!(t.id(), b"4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.id().len(), 32);
            assert!(is_hex(t.id()));
            let child = t.child();
            assert_eq!(
                Trace::parse(child.as_bytes()).map(|c| c.id),
                Some(t.id),
                "{bad}"
            );
        }
        let none = Trace::accept_or_start(None);
        assert_eq!(none.child().to_str().unwrap()[53..].to_string(), "01");
        // A later version is read by its version-00 prefix.
        let v1 = format!("01{}-more", &GOOD[2..]);
        let t = Trace::accept_or_start(Some(&HeaderValue::from_str(&v1).unwrap()));
        assert_eq!(t.id(), b"4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
