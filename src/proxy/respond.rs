//! Short plain-text answers the gateway gives by itself (404, 503, 502, 504...).

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Write `status` with a one-line `body` (and the request id) to the client.
pub async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some(id) = request_id {
        resp.insert_header(super::request_id::HEADER, id.clone())?;
    }
    if status >= 500 || status == 404 {
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
