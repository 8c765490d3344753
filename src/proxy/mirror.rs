//! Request mirroring (shadowing): a sampled request's header and body are copied as they pass,
//! and once the real request is over, a task sends the copy to the route's mirror upstream and
//! discards the answer.
//!
//! The real request never waits for the copy and never fails because of it: the copy is sent
//! after the real exchange ended, on its own task, bounded in count (`max_concurrent`), size
//! (`max_body`) and time (`timeout`). A request that is not sampled costs one random draw.

use crate::balance::{now_ns, InflightGuard, PickRequest};
use crate::runtime::mirror::{connector, Mirror, MirrorSlot};
use crate::runtime::{Route, Snapshot};
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

/// Header added to every copy, so a mirror backend can tell shadow traffic apart.
pub const HEADER: &str = "x-portcullis-mirror";

/// The copy of one request, built while it passes.
pub struct Copy {
    mirror: Arc<Mirror>,
    header: Box<RequestHeader>,
    body: BytesMut,
    /// The whole body was seen.
    complete: bool,
    /// The body outgrew `max_body`: the copy will not be sent.
    too_big: bool,
}

/// Start a copy of `req` if `route` mirrors and this request is sampled.
#[inline]
pub fn begin(route: &Route, req: &RequestHeader) -> Option<Box<Copy>> {
    let mirror = route.mirror.as_ref().filter(|m| m.sampled())?;
    let mut header = Box::new(req.clone());
    let _ = header.insert_header(HEADER, "1");
    let declared = req.headers.get(http::header::CONTENT_LENGTH);
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let empty = !chunked && declared.is_none_or(|v| v.as_bytes() == b"0");
    let too_big = declared
        .and_then(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()?
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|n| n > mirror.max_body);
    Some(Box::new(Copy {
        mirror: Arc::clone(mirror),
        header,
        body: BytesMut::new(),
        complete: empty,
        too_big,
    }))
}

/// Add a chunk of the request body to the copy.
#[inline]
pub fn body(copy: &mut Copy, chunk: Option<&Bytes>, end: bool) {
    if let Some(c) = chunk.filter(|_| !copy.too_big) {
        if copy.body.len() + c.len() > copy.mirror.max_body {
            copy.too_big = true;
            copy.body = BytesMut::new();
        } else {
            copy.body.extend_from_slice(c);
        }
    }
    copy.complete |= end;
}

/// The real request is over: send the copy on its own task, or count it dropped.
pub fn finish(copy: Box<Copy>, snapshot: &Snapshot) {
    let m = Arc::clone(&copy.mirror);
    let ready = copy.complete && !copy.too_big;
    let Some(slot) = ready.then(|| m.slot()).flatten() else {
        m.series.dropped.inc();
        return;
    };
    let up = &snapshot.upstreams[m.upstream];
    let now = now_ns();
    let Some(state) = up.pick(&PickRequest { hash: 0, now }, |_| true) else {
        m.series.dropped.inc();
        return;
    };
    let peer = up.peer_for(state.addr());
    let guard = InflightGuard::new(state, now);
    tokio::spawn(send(copy, peer, guard, slot));
}

async fn send(copy: Box<Copy>, peer: HttpPeer, guard: InflightGuard, slot: MirrorSlot) {
    let Copy {
        mirror,
        mut header,
        body,
        ..
    } = *copy;
    let body = body.freeze();
    let _ = header.remove_header(&http::header::TRANSFER_ENCODING);
    let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len());
    let done = tokio::time::timeout(mirror.timeout, exchange(&peer, header, body)).await;
    match done {
        Ok(Ok(())) => mirror.series.mirrored.inc(),
        _ => mirror.series.failed.inc(),
    }
    drop((guard, slot));
}

/// One request and its (discarded) answer; the connection goes back to the pool after.
async fn exchange(peer: &HttpPeer, header: Box<RequestHeader>, body: Bytes) -> pingora::Result<()> {
    let (mut s, _) = connector().get_http_session(peer).await?;
    s.write_request_header(header).await?;
    if !body.is_empty() {
        s.write_request_body(body, true).await?;
    }
    s.finish_request_body().await?;
    loop {
        s.read_response_header().await?;
        match s.response_header() {
            Some(h) if h.status.as_u16() < 200 => continue,
            _ => break,
        }
    }
    while s.read_response_body().await?.is_some() {}
    let idle = peer.options.idle_timeout.or(Some(Duration::from_secs(60)));
    connector().release_http_session(s, peer, idle).await;
    Ok(())
}
