//! OTLP export of a finished request's span (`tracing.otlp`), from its context.

use super::context::RequestCtx;
use crate::balance::now_ns;
use crate::observe::otlp::{Otlp, RequestSpan};
use pingora::http::RequestHeader;
use std::time::{Duration, SystemTime};

/// Export the span of a finished request when its trace is sampled (`tracing.otlp`).
/// `names`: route, upstream and backend labels.
pub(super) fn export(
    otlp: &Otlp,
    ctx: &RequestCtx,
    req: &RequestHeader,
    status: u16,
    names: (&str, &str, &str),
) {
    if !otlp.sampled(ctx.trace.id()) {
        return;
    }
    let duration = Duration::from_nanos(now_ns().saturating_sub(ctx.started_ns));
    let acted: Vec<&str> = [ctx.acted_by.as_deref(), ctx.vetoed_by.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let (route, upstream, backend) = names;
    otlp.record(&RequestSpan {
        trace_id: ctx.trace.id(),
        span_id: ctx.trace.span(),
        parent_id: ctx.trace.parent(),
        start: SystemTime::now() - duration,
        duration,
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        route,
        upstream,
        backend,
        retries: ctx.retries,
        filters: &acted,
    });
}
