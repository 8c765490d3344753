//! The HTTP proxy: Pingora's [`ProxyHttp`] phases wired to routing, filters, selection,
//! retries, metrics and access logs.
//!
//! Phase by phase: `request_filter` takes the live snapshot, assigns the request id, finds the
//! route (404 when none) and runs the route's `on_request` and `choose_upstream` filters;
//! `upstream_peer` picks a backend the request has not tried and no filter refuses, and takes
//! an in-flight slot on it; `fail_to_connect` / `error_while_proxy` count the failure against
//! the backend and, within the retry budget, mark idempotent requests for a retry elsewhere
//! after a backoff; `upstream_request_filter` and `response_filter` run the header filters;
//! `logging` reports the final outcome, records metrics and the access-log line and releases
//! the in-flight slot (which the slot's own `Drop` also does if the request is abandoned).

pub mod client;
pub mod connections;
pub mod context;
mod errors;
pub mod guard;
pub mod mirror;
mod outcome;
mod pick;
pub mod request_id;
pub mod respond;
mod spans;
pub mod trace;

pub use context::{LocalReason, RequestCtx};

use crate::balance::now_ns;
use crate::filters::headers::{RequestHeaders, ResponseHeaders};
use crate::gateway::Gateway;
use crate::observe::labels::{method_index, status_class};
use crate::observe::metrics::RequestLabels;
use crate::observe::AccessLogEntry;
use crate::runtime::router::{request_host, Route};
use crate::runtime::Upstream;
use async_trait::async_trait;
use bytes::Bytes;
use client::client_socket;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use portcullis_plugin::{AttemptError, Decision, RequestView};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The proxy of one listener.
pub struct Proxy {
    gateway: Arc<Gateway>,
    /// Index of the listener in the snapshot (stable across reloads: listeners change only
    /// with a graceful upgrade).
    listener: usize,
}

impl Proxy {
    /// A proxy serving `gateway`'s live config on its listener number `listener`.
    pub fn new(gateway: Arc<Gateway>, listener: usize) -> Self {
        Proxy { gateway, listener }
    }
}

/// The connection's peer address.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn upstream_of(ctx: &RequestCtx) -> Option<&Arc<Upstream>> {
    Some(&ctx.snapshot.as_ref()?.upstreams[ctx.upstream?])
}

fn route_of(ctx: &RequestCtx) -> Option<&Route> {
    Some(ctx.snapshot.as_ref()?.router.get(ctx.route?))
}

fn view<'a>(req: &'a RequestHeader, client_ip: Option<IpAddr>, route: &'a str) -> RequestView<'a> {
    RequestView {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client_ip,
        route,
    }
}

const NO_LABEL: (u32, &str) = (u32::MAX, "");

impl Proxy {
    /// Run the route's response filters on a header the gateway built itself.
    fn filter_local_response(session: &Session, ctx: &mut RequestCtx, header: &mut ResponseHeader) {
        let RequestCtx {
            snapshot,
            route,
            filter_state,
            client_ip,
            ..
        } = ctx;
        let (Some(snapshot), Some(route)) = (snapshot.as_ref(), route) else {
            return;
        };
        let route = snapshot.router.get(*route);
        if route.filters.response.is_empty() {
            return;
        }
        let v = view(session.req_header(), *client_ip, &route.name);
        let status = header.status.as_u16();
        for e in route.filters.response.iter() {
            e.filter
                .on_response(&v, status, &mut ResponseHeaders(header), filter_state);
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started_ns = now_ns();
        let snapshot = self.gateway.snapshot();
        ctx.request_id = Some(request_id::accept_or_generate(
            session.req_header().headers.get(request_id::HEADER),
        ));
        ctx.trace = trace::Trace::accept_or_start(session.req_header().headers.get(trace::HEADER));
        if let Some(refusal) = self.admit(session, ctx, &snapshot) {
            ctx.snapshot = Some(snapshot);
            return Self::refuse(session, ctx, refusal).await;
        }
        let req = session.req_header();
        let Some(i) = snapshot.router.find(req) else {
            ctx.snapshot = Some(snapshot);
            ctx.local = Some(LocalReason::NoRoute);
            let body = Bytes::from_static(b"no route matches this request\n");
            respond::respond(session, 404, body, ctx.request_id.as_ref()).await?;
            return Ok(true);
        };
        let route = snapshot.router.get(i);
        ctx.route = Some(i);
        ctx.upstream = Some(route.upstream);
        let filters = &route.filters;
        let mut answer = None;
        if !filters.request.is_empty() || !filters.choose_upstream.is_empty() {
            let v = view(req, ctx.client_ip, &route.name);
            for e in filters.request.iter() {
                if let Decision::Respond(r) = e.filter.on_request(&v, &mut ctx.filter_state).await {
                    answer = Some(r);
                    ctx.acted_by = Some(Arc::clone(&e.kind));
                    break;
                }
            }
            if answer.is_none() {
                for e in filters.choose_upstream.iter() {
                    let Some(name) = e.filter.choose_upstream(&v, &mut ctx.filter_state) else {
                        continue;
                    };
                    match snapshot.upstream_index.get(name) {
                        Some(&u) => {
                            ctx.upstream = Some(u);
                            ctx.acted_by = Some(Arc::clone(&e.kind));
                            break;
                        }
                        None => log::warn!("filter {} chose unknown upstream {name}", e.kind),
                    }
                }
            }
        }
        let Some(r) = answer else {
            ctx.mirror = mirror::begin(route, session.req_header());
            if let Some(c) = &route.compression {
                c.enable(session);
            }
            ctx.snapshot = Some(snapshot);
            return Ok(false);
        };
        ctx.snapshot = Some(snapshot);
        ctx.local = Some(LocalReason::Filter);
        let mut header =
            respond::local_header(r.status, r.body.len(), ctx.request_id.as_ref(), &r.headers)?;
        Self::filter_local_response(session, ctx, &mut header);
        respond::write(session, header, r.body).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let up = upstream_of(ctx)
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        // A pooled connection the backend had closed: the same backend again, same slot.
        let reuse = if ctx.retry_same {
            ctx.retry_same = false;
            ctx.backend.take()
        } else {
            None
        };
        let slot = match reuse {
            Some(slot) => slot,
            None => {
                if ctx.tried.count() == 0 {
                    up.retry.on_request(now_ns());
                } else {
                    // After any probe attempt (cut at its deadline or failed otherwise), no
                    // backoff: its backend was picked for a decayed estimate, not as the least
                    // loaded, and the retry goes to another one.
                    let wait = if ctx.probe.is_some() {
                        Duration::ZERO
                    } else {
                        up.retry.backoff(ctx.retries)
                    };
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                pick::take_backend(session, ctx, &up).await?
            }
        };
        ctx.tried.push(slot.state().id());
        ctx.attempt_started_ns = now_ns();
        let mut peer = up.peer_for(slot.state().addr());
        ctx.probe = pick::probe_deadline(session, ctx, &up, slot.state());
        peer.options.response_header_timeout = ctx.probe.map(Duration::from_nanos);
        ctx.backend = Some(slot);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timeout = matches!(e.etype(), ErrorType::ConnectTimedout);
        ctx.local = Some(if timeout {
            LocalReason::Timeout
        } else {
            LocalReason::ConnectFailed
        });
        let kind = if timeout {
            AttemptError::Timeout
        } else {
            AttemptError::Connect
        };
        outcome::attempt_failed(self.gateway.metrics(), session, ctx, &mut e, kind, false);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !pick::replayable(session) || ctx.response_started {
            e.set_retry(false);
        } else if matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) {
            // No response byte yet: the backend is slow. Count it and try another one.
            ctx.local = Some(LocalReason::Timeout);
            outcome::attempt_failed(
                self.gateway.metrics(),
                session,
                ctx,
                &mut e,
                AttemptError::Timeout,
                true,
            );
        } else {
            // A pooled connection may have been closed by the backend: Pingora retries such
            // errors on a fresh connection, and we keep the same backend for it.
            e.retry.decide_reuse(client_reused);
            ctx.retry_same = e.retry();
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(request_id::HEADER, id.clone())?;
        }
        upstream_request.insert_header(trace::HEADER, ctx.trace.child())?;
        if upstream_of(ctx).is_some_and(|u| !u.keepalive()) {
            upstream_request.insert_header(http::header::CONNECTION, "close")?;
        }
        let RequestCtx {
            snapshot,
            route,
            filter_state,
            client_ip,
            ..
        } = ctx;
        if let Some(snapshot) = snapshot.as_ref() {
            client::forward_headers(
                upstream_request,
                peer_ip(session),
                snapshot.listener_policy(self.listener),
            )?;
        }
        if let (Some(snapshot), Some(route)) = (snapshot.as_ref(), route) {
            let route = snapshot.router.get(*route);
            if !route.filters.upstream_request.is_empty() {
                let v = view(session.req_header(), *client_ip, &route.name);
                for e in route.filters.upstream_request.iter() {
                    e.filter.on_upstream_request(
                        &v,
                        &mut RequestHeaders(upstream_request),
                        filter_state,
                    );
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if status == 101 && !session.is_upgrade_req() {
            // A protocol switch the client never asked for: refuse it (502).
            ctx.local = Some(LocalReason::BadUpstreamResponse);
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "upstream answered 101 to a request without Upgrade",
            ));
        }
        if status < 200 {
            return Ok(());
        }
        let now = now_ns();
        let latency = now.saturating_sub(ctx.attempt_started_ns);
        ctx.upstream_latency_ns = Some(latency);
        ctx.upstream_status = status;
        ctx.response_started = true;
        if let Some(g) = &ctx.backend {
            if status >= 500 {
                g.state().record_failure(now);
            } else {
                g.state().record_success(latency, now);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            response.insert_header(request_id::HEADER, id.clone())?;
        }
        if let (Some(up), Some(slot)) = (upstream_of(ctx), &ctx.backend) {
            let sticky = up.sticky();
            if let Some(cookie) = sticky.and_then(|t| t.cookie(slot.state().addr(), ctx.sticky)) {
                response.append_header(http::header::SET_COOKIE, cookie)?;
            }
        }
        if self.gateway.is_draining() {
            // Shutting down or handing over since this request arrived: Pingora then answers
            // `Connection: close`, so the client sends its next request on a new connection
            // instead of one this process is about to close.
            session.set_keepalive(None);
        }
        if let Some(c) = route_of(ctx).and_then(|r| r.compression.as_ref()) {
            c.decide(session, response);
        }
        Self::filter_local_response(session, ctx, response);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, body) = errors::answer(ctx.local, ctx.vetoed_by.as_deref(), upstream_of(ctx), e);
        if code > 0 && session.response_written().is_none() {
            // The connection is not reused after a failure: say so, or a client may send its
            // next request on a socket that is about to close.
            session.set_keepalive(None);
            match respond::local_header(code, body.len(), ctx.request_id.as_ref(), &[]) {
                Ok(mut header) => {
                    Self::filter_local_response(session, ctx, &mut header);
                    if let Err(err) = respond::write(session, header, body).await {
                        log::debug!("cannot send error response: {err}");
                    }
                }
                Err(err) => log::debug!("cannot build error response: {err}"),
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(copy) = &mut ctx.mirror {
            mirror::body(copy, body.as_ref(), end_of_stream);
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        outcome::report_final(ctx, status);
        let backend = ctx.backend.take();
        let Some(snapshot) = ctx.snapshot.take() else {
            return;
        };
        if let Some(copy) = ctx.mirror.take() {
            mirror::finish(copy, &snapshot);
        }
        let route = ctx.route.map(|i| snapshot.router.get(i));
        let upstream = ctx.upstream.map(|i| &snapshot.upstreams[i]);
        let req = session.req_header();
        let upstream_label = upstream.map_or(NO_LABEL, |u| (u.label_id, &*u.name));
        let backend_label = backend
            .as_ref()
            .map_or(NO_LABEL, |g| (g.state().id(), g.state().label()));
        let metrics = self.gateway.metrics();
        metrics.count_request(&RequestLabels {
            route: route.map_or(NO_LABEL, |r| (r.label_id, &*r.name)),
            upstream: upstream_label,
            backend: backend_label,
            method: method_index(&req.method),
            status_class: status_class(status),
        });
        if let (Some(lat), true) = (ctx.upstream_latency_ns, backend.is_some()) {
            metrics.observe_upstream_latency(upstream_label, backend_label, lat as f64 / 1e9);
        }
        if let Some(g) = guard::of(session.stream()) {
            g.request_done();
        }
        let (bytes_in, bytes_out) = (session.body_bytes_read(), session.body_bytes_sent());
        if let Some(r) = route {
            r.bytes_in.inc_by(bytes_in as u64);
            r.bytes_out.inc_by(bytes_out as u64);
        }
        if snapshot.access_log.is_on() {
            let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
            snapshot.access_log.log(&AccessLogEntry {
                time: None,
                request_id: ctx.request_id.as_ref().map_or(&[][..], |v| v.as_bytes()),
                trace_id: ctx.trace.id(),
                client: client_socket(session, ctx.client_ip),
                method: req.method.as_str(),
                host: request_host(req),
                path,
                status,
                route: route.map_or("", |r| &r.name),
                upstream: upstream_label.1,
                backend: backend_label.1,
                duration_us: now_ns().saturating_sub(ctx.started_ns) / 1000,
                upstream_us: ctx.upstream_latency_ns.map(|n| n / 1000),
                bytes_in,
                bytes_out,
                attempts: ctx.tried.count(),
            });
        }
        if let Some(otlp) = &snapshot.otlp {
            let names = (
                route.map_or("", |r| &r.name),
                upstream_label.1,
                backend_label.1,
            );
            spans::export(otlp, ctx, req, status, names);
        }
        drop(backend);
    }
}
