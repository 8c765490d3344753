//! What happens to a request before routing, once per request: size limits, the canonical
//! path (written back into the request, so routing, filters and the backend all see it), and
//! the client's address. And the forwarded headers sent upstream.

use crate::request::forwarded::{append_forwarded, append_xff};
use crate::request::path::{normalize, Normalized};
use crate::runtime::listener::ClientPolicy;
use http::header::{HeaderName, HOST};
use http::uri::{PathAndQuery, Uri};
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// A request refused before routing: the status and a one-line reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400, 414 or 431 with a reason.
    Status(u16, &'static str),
    /// 307 to this location (`escaped_slashes: unescape_and_redirect`).
    Redirect(Vec<u8>),
}

// Each name twice: a `&'static str` to insert (Pingora keeps a static name's bytes for the
// wire as they are, but copies a non-standard `HeaderName` into a new buffer on every insert)
// and a `HeaderName` to look up (no parsing).
const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";
const FWD: &str = "forwarded";
/// The `X-Forwarded-For` header name.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static(XFF);
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(XFP);
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static(XFH);
static FORWARDED: HeaderName = HeaderName::from_static(FWD);

/// Check the limits of `policy` on the header as received.
pub fn check_limits(req: &RequestHeader, policy: &ClientPolicy) -> Result<(), Refusal> {
    let target = req.raw_path().len();
    if target > policy.max_uri_length {
        return Err(Refusal::Status(414, "request target too long"));
    }
    if req.headers.len() > policy.max_headers {
        return Err(Refusal::Status(431, "too many request header fields"));
    }
    // Request line plus `name: value\r\n` per header line.
    let mut bytes = req.method.as_str().len() + target + 12;
    for (name, value) in req.headers.iter() {
        bytes += name.as_str().len() + value.len() + 4;
    }
    if bytes > policy.max_header_bytes {
        return Err(Refusal::Status(431, "request header fields too large"));
    }
    Ok(())
}

/// Normalise the request target's path in place (the query is kept as it is).
pub fn normalize_target(req: &mut RequestHeader, policy: &ClientPolicy) -> Result<(), Refusal> {
    let raw = req.raw_path();
    let absolute_form = raw.first() != Some(&b'/');
    if absolute_form && raw == b"*" {
        return Ok(());
    }
    // Absolute-form targets (`GET http://host/p`) carry their path in the parsed URI.
    let full: &[u8] = if absolute_form {
        req.uri
            .path_and_query()
            .map_or(b"/", |p| p.as_str().as_bytes())
    } else {
        raw
    };
    let (path, query) = match full.iter().position(|&b| b == b'?') {
        Some(i) => full.split_at(i),
        None => (full, &[][..]),
    };
    let bad = |e: crate::request::path::Refused| Refusal::Status(400, e.reason());
    if query.iter().any(|&b| b <= b' ' || b >= 0x7f) {
        return Err(Refusal::Status(
            400,
            "invalid character in the request query",
        ));
    }
    let new_path = match normalize(path, policy.path).map_err(bad)? {
        // Origin-form is stored by Pingora as the URI itself: nothing to rewrite.
        Normalized::Unchanged if !absolute_form => return Ok(()),
        // Absolute-form: forward the path in origin-form.
        Normalized::Unchanged => path.to_vec(),
        Normalized::Rewritten(p) => p,
        Normalized::Redirect(mut p) => {
            p.extend_from_slice(query);
            return Err(Refusal::Redirect(p));
        }
    };
    let mut pq = new_path;
    pq.extend_from_slice(query);
    let pq =
        PathAndQuery::try_from(pq).map_err(|_| Refusal::Status(400, "invalid request target"))?;
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    let uri = Uri::from_parts(parts).map_err(|_| Refusal::Status(400, "invalid request target"))?;
    req.set_uri(uri);
    Ok(())
}

/// The client's address: the peer, or behind a trusted proxy the forwarded client.
pub fn client_address(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    policy: &ClientPolicy,
) -> Option<IpAddr> {
    let peer = peer?;
    if policy.trusted.is_empty() {
        return Some(peer);
    }
    let values = req.headers.get_all(&X_FORWARDED_FOR);
    Some(
        policy
            .trusted
            .client(peer, values.iter().map(|v| v.as_bytes())),
    )
}

/// Set the forwarded headers on the request sent upstream.
pub fn forward_headers(
    up: &mut RequestHeader,
    peer: Option<IpAddr>,
    policy: &ClientPolicy,
) -> pingora::Result<()> {
    let Some(peer) = peer else { return Ok(()) };
    let trusted = policy.trusted.contains(peer);
    let host = if policy.x_forwarded_host || policy.forwarded {
        up.headers.get(HOST).cloned()
    } else {
        None
    };
    if policy.x_forwarded_for {
        let xff = join(
            up.headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(|v| v.as_bytes()),
        );
        let v = append_xff(xff.as_deref(), peer);
        up.insert_header(XFF, header_value(v)?)?;
    }
    if policy.x_forwarded_proto && !(trusted && up.headers.contains_key(&X_FORWARDED_PROTO)) {
        up.insert_header(XFP, policy.scheme)?;
    }
    if !(trusted && up.headers.contains_key(&X_FORWARDED_HOST)) {
        match (&host, policy.x_forwarded_host) {
            (Some(h), true) => up.insert_header(XFH, h.clone())?,
            _ => {
                // Never pass on an untrusted client's own claim.
                if up.headers.contains_key(&X_FORWARDED_HOST) {
                    up.remove_header(&X_FORWARDED_HOST);
                }
            }
        }
    }
    if policy.forwarded {
        let existing = if trusted {
            join(up.headers.get_all(&FORWARDED).iter().map(|v| v.as_bytes()))
        } else {
            None
        };
        let host = host.as_ref().and_then(|h| h.to_str().ok());
        let v = append_forwarded(existing.as_deref(), peer, policy.scheme, host);
        up.insert_header(FWD, header_value(v)?)?;
    }
    Ok(())
}

/// The values of a repeated header as one list (borrowed when there is just one).
fn join<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<std::borrow::Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(std::borrow::Cow::Borrowed(first));
    };
    let mut out = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v);
    }
    Some(std::borrow::Cow::Owned(out))
}

/// A header value built by the gateway (its bytes become the value, without a copy).
fn header_value(v: Vec<u8>) -> pingora::Result<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "header value", e))
}

impl super::Proxy {
    /// Everything decided once per request before routing: deadlines, client address, limits
    /// and the canonical path. `Some` when the request is refused.
    pub(super) fn admit(
        &self,
        session: &mut pingora::proxy::Session,
        ctx: &mut super::RequestCtx,
        snapshot: &crate::runtime::Snapshot,
    ) -> Option<Refusal> {
        let policy = snapshot.listener_policy(self.listener);
        let guarded = match super::guard::of(session.stream()) {
            Some(g) => {
                g.request_started();
                true
            }
            None => false,
        };
        session.set_read_timeout(Some(policy.body_timeout));
        if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream_mut() {
            // RFC 9112 section 9.3.2: answer pipelined requests in order (Pingora's
            // sequential pipelining), instead of closing after the first.
            h1.set_pipelining_enabled(true);
        }
        if self.gateway.is_draining() {
            // Handing over or shutting down: move the client to a new connection.
            session.set_keepalive(None);
        } else if guarded {
            // The guard enforces the header and idle deadlines; Pingora's own per-read
            // timeout on top (`Some(n)`) cost ~1.5k instructions per request (measured), so
            // it is off (`Some(0)` = keep-alive without a timeout of Pingora's).
            session.set_keepalive(Some(0));
        } else {
            let secs = policy.deadlines.idle.as_secs_f64().ceil() as u64;
            session.set_keepalive(Some(secs.max(1)));
        }
        // Limits first: nothing else reads a header (X-Forwarded-For included) before they hold.
        if let Err(r) = check_limits(session.req_header(), policy) {
            ctx.client_ip = super::peer_ip(session);
            return Some(r);
        }
        ctx.client_ip = client_address(session.req_header(), super::peer_ip(session), policy);
        normalize_target(session.req_header_mut(), policy).err()
    }

    /// Answer a request refused before routing; the connection is not reused after a 4xx.
    pub(super) async fn refuse(
        session: &mut pingora::proxy::Session,
        ctx: &mut super::RequestCtx,
        refusal: Refusal,
    ) -> pingora::Result<bool> {
        ctx.local = Some(super::LocalReason::Refused);
        let (status, body, extra) = match refusal {
            Refusal::Status(code, reason) => {
                session.set_keepalive(None);
                (code, bytes::Bytes::from(format!("{reason}\n")), None)
            }
            Refusal::Redirect(location) => {
                let v = header_value(location)?;
                (
                    307,
                    bytes::Bytes::from_static(b"see the normalised path\n"),
                    Some((http::header::LOCATION, v)),
                )
            }
        };
        let extra: &[(HeaderName, http::HeaderValue)] = match &extra {
            Some(e) => std::slice::from_ref(e),
            None => &[],
        };
        let header =
            super::respond::local_header(status, body.len(), ctx.request_id.as_ref(), extra)?;
        super::respond::write(session, header, body).await?;
        Ok(true)
    }
}

/// The client as the access log shows it: the peer's socket address, or the forwarded
/// client's address (port 0) behind a trusted proxy.
pub fn client_socket(
    session: &pingora::proxy::Session,
    client: Option<IpAddr>,
) -> Option<std::net::SocketAddr> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
    match (peer, client) {
        (Some(p), Some(c)) if p.ip() != c => Some(std::net::SocketAddr::new(c, 0)),
        (p, _) => p,
    }
}
