//! Reporting attempts to `on_outcome` filters: each attempt exactly once, and every request
//! at least once (with no backend when none was reached).

use super::context::{LocalReason, RequestCtx};
use crate::balance::now_ns;
use crate::observe::Metrics;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use portcullis_plugin::{AttemptError, Outcome};
use std::time::Duration;

fn report(ctx: &RequestCtx, status: u16, error: Option<AttemptError>, retried: bool) {
    let Some(snapshot) = ctx.snapshot.as_ref() else {
        return;
    };
    let Some(route) = ctx.route.map(|i| snapshot.router.get(i)) else {
        return;
    };
    if route.filters.outcome.is_empty() {
        return;
    }
    let upstream = ctx.upstream.map(|i| &snapshot.upstreams[i]);
    let backend = ctx.backend.as_ref().map(|g| g.state().addr());
    let latency = if backend.is_some() {
        Duration::from_nanos(now_ns().saturating_sub(ctx.attempt_started_ns))
    } else {
        Duration::ZERO
    };
    let o = Outcome {
        route: &route.name,
        upstream: upstream.map_or("", |u| &u.name),
        upstream_size: upstream.map_or(0, |u| u.size()),
        backend,
        status,
        latency,
        error,
        retried,
        attempt: u32::from(ctx.tried.count()),
    };
    for e in route.filters.outcome.iter() {
        e.filter.on_outcome(&o);
    }
}

/// A failed attempt (before any response).
pub fn report_attempt(
    ctx: &mut RequestCtx,
    status: u16,
    error: Option<AttemptError>,
    retried: bool,
) {
    report(ctx, status, error, retried);
    ctx.outcomes_reported = ctx.tried.count();
    if !retried {
        ctx.final_reported = true;
    }
}

/// The end of the request: report the last attempt unless a failure hook already did.
pub fn report_final(ctx: &mut RequestCtx, status: u16) {
    if ctx.final_reported {
        return;
    }
    ctx.final_reported = true;
    if ctx.tried.count() > 0 && ctx.outcomes_reported >= ctx.tried.count() {
        return;
    }
    let error = match (ctx.backend.is_some(), ctx.response_started) {
        (true, false) => Some(match ctx.local {
            Some(LocalReason::Timeout) => AttemptError::Timeout,
            Some(LocalReason::ConnectFailed) => AttemptError::Connect,
            _ => AttemptError::Other,
        }),
        _ => None,
    };
    let status = if ctx.response_started {
        ctx.upstream_status
    } else {
        status
    };
    report(ctx, status, error, false);
}

/// Count a failed attempt against the current backend, report it to the outcome filters,
/// and allow a retry elsewhere when the upstream's retry count and budget allow it and
/// the request is idempotent or was never sent (`sent: false`: the connection failed, so
/// no byte of it reached the backend; nginx's `proxy_next_upstream error` does the same).
pub fn attempt_failed(
    metrics: &Metrics,
    session: &Session,
    ctx: &mut RequestCtx,
    e: &mut Error,
    kind: AttemptError,
    sent: bool,
) {
    let Some(up) = super::upstream_of(ctx).cloned() else {
        return;
    };
    let now = now_ns();
    // A probe that ran out of its deadline (no response header in time; a connect timeout is a
    // failure): its retry was granted when the deadline was set.
    let deadline_passed = matches!(e.etype(), ErrorType::ReadTimedout) && !ctx.response_started;
    let probe = ctx.probe.filter(|_| deadline_passed);
    if let Some(g) = &ctx.backend {
        match probe {
            Some(waited) => g.state().record_still_slow(waited, now),
            None => g.state().record_failure(now),
        }
        if kind == AttemptError::Connect || matches!(e.etype(), ErrorType::ConnectTimedout) {
            metrics.count_connect_error(&up.name, g.state().label());
        }
    }
    let mut retry = false;
    let replayable = !sent || session.req_header().method.is_idempotent();
    if ctx.retries < up.retry.attempts && replayable {
        if probe.is_some() || up.retry.try_spend(now) {
            ctx.retries += 1;
            retry = true;
            metrics.count_retry(&up.name);
        } else {
            metrics.count_retry_refused(&up.name);
        }
    }
    e.set_retry(retry);
    report_attempt(ctx, 0, Some(kind), retry);
}
