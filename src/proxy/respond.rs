//! Short plain-text answers the gateway (or a filter) gives by itself.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// A response header for a local answer: status, content type and length, request id, and
/// any `extra` headers.
pub fn local_header(
    status: u16,
    body_len: usize,
    request_id: Option<&HeaderValue>,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    if let Some(id) = request_id {
        resp.insert_header(super::request_id::HEADER, id.clone())?;
    }
    if status >= 500 || status == 404 {
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    }
    for (k, v) in extra {
        resp.append_header(k.clone(), v.clone())?;
    }
    Ok(resp)
}

/// Write a local answer.
pub async fn write(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Write `status` with a one-line `body` (and the request id) to the client.
pub async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let header = local_header(status, body.len(), request_id, &[])?;
    write(session, header, body).await
}
