//! What the client is told when a request fails: a status and a short plain-text reason.

use super::context::LocalReason;
use crate::runtime::Upstream;
use bytes::Bytes;
use pingora::{Error, ErrorSource, ErrorType};

/// The answer to a failed request: status (0 = none, the client is gone) and body.
pub fn answer(
    local: Option<LocalReason>,
    vetoed_by: Option<&str>,
    upstream: Option<&std::sync::Arc<Upstream>>,
    e: &Error,
) -> (u16, Bytes) {
    match (local, e.etype()) {
        (Some(LocalReason::Vetoed), _) => {
            let by = vetoed_by.unwrap_or("a filter");
            let name = upstream.map_or("", |u| &u.name);
            (
                503,
                Bytes::from(format!(
                    "every backend of upstream {name} is refused by {by} (circuit open?)\n"
                )),
            )
        }
        (Some(r @ (LocalReason::QueueFull | LocalReason::QueueTimeout)), _) => {
            let (name, a) = upstream.map_or(("", None), |u| (&*u.name, Some(&u.admission)));
            let (cap, size, timeout) = a.map_or((0, 0, Default::default()), |a| {
                (a.cap, a.queue_size, a.timeout)
            });
            let why = if r == LocalReason::QueueFull {
                format!("every backend of upstream {name} is at max_connections ({cap}) and the queue is full ({size} waiting)\n")
            } else {
                format!("no backend of upstream {name} had a free slot (max_connections {cap}) within the queue timeout ({timeout:?})\n")
            };
            (503, Bytes::from(why))
        }
        (Some(LocalReason::NoBackend), _) => {
            let why = upstream.map_or_else(String::new, |u| u.why_none());
            (503, Bytes::from(why + "\n"))
        }
        (_, ErrorType::ReadTimedout) if matches!(e.esource(), ErrorSource::Downstream) => {
            // The client stopped sending its body (`client.body_timeout`).
            (408, Bytes::from_static(b"request body timeout\n"))
        }
        (_, ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout)
        | (Some(LocalReason::Timeout), _) => (504, Bytes::from_static(b"upstream timed out\n")),
        (Some(LocalReason::ConnectFailed), _) => {
            (502, Bytes::from_static(b"cannot connect to upstream\n"))
        }
        (Some(LocalReason::BadUpstreamResponse), _) => (
            502,
            Bytes::from_static(b"upstream sent an unexpected response\n"),
        ),
        (_, ErrorType::HTTPStatus(c)) => (*c, Bytes::from_static(b"request failed\n")),
        _ => match e.esource() {
            ErrorSource::Upstream => (502, Bytes::from_static(b"upstream error\n")),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, Bytes::new())
                }
                _ => (400, Bytes::from_static(b"bad request\n")),
            },
            _ => (500, Bytes::from_static(b"internal error\n")),
        },
    }
}
