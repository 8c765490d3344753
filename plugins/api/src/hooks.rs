//! Finding hooks a filter implements but leaves out of [`Filter::hooks`]. The chain calls only
//! the listed hooks, so such a hook would be skipped silently;
//! [`crate::testing::assert_hooks_declared`] fails a plugin's own tests instead.
//!
//! How: each default hook body records that it ran. Every hook *not* listed is called once
//! with an empty request; if the default body did not run, the filter has its own.

use crate::{Candidate, Filter, Hooks, Outcome, RequestState, RequestView};
use http::{HeaderMap, Method, Uri};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

thread_local! {
    static DEFAULTS_RAN: Cell<u8> = const { Cell::new(0) };
}

/// Called by the default body of hook `h`.
pub(crate) fn default_ran(h: Hooks) {
    DEFAULTS_RAN.with(|d| d.set(d.get() | h.0));
}

fn defaults_ran() -> Hooks {
    Hooks(DEFAULTS_RAN.with(|d| d.replace(0)))
}

/// The hooks `filter` implements without listing them in [`Filter::hooks`] (empty when all
/// are listed). Calls each unlisted hook once with an empty request: run it when a filter is
/// built, not on the request path.
pub fn undeclared_hooks(filter: &dyn Filter) -> Hooks {
    let declared = filter.hooks();
    let (method, uri, headers) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
    let req = RequestView {
        method: &method,
        uri: &uri,
        headers: &headers,
        client_ip: None,
        route: "",
    };
    let mut found = Hooks::NONE;
    for (hook, ..) in Hooks::ALL {
        if declared.contains(hook) {
            continue;
        }
        defaults_ran();
        call(filter, hook, &req);
        if !defaults_ran().contains(hook) {
            found = found | hook;
        }
    }
    found
}

fn call(filter: &dyn Filter, hook: Hooks, req: &RequestView<'_>) {
    let mut state = RequestState::default();
    let mut headers = HeaderMap::new();
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    match hook {
        Hooks::REQUEST => {
            // Defaults finish at the first poll; a filter's own body may wait: either way
            // one poll tells.
            let mut fut = filter.on_request(req, &mut state);
            let _ = poll_once(fut.as_mut());
        }
        Hooks::CHOOSE_UPSTREAM => {
            let _ = filter.choose_upstream(req, &mut state);
        }
        Hooks::ACCEPT_BACKEND => {
            let _ = filter.accept_backend(&Candidate {
                addr: nowhere,
                upstream: "",
                upstream_size: 0,
            });
        }
        Hooks::UPSTREAM_REQUEST => filter.on_upstream_request(req, &mut headers, &mut state),
        Hooks::RESPONSE => filter.on_response(req, 200, &mut headers, &mut state),
        _ => filter.on_outcome(&Outcome {
            route: "",
            upstream: "",
            upstream_size: 0,
            backend: None,
            status: 0,
            latency: Duration::ZERO,
            error: None,
            retried: false,
            attempt: 0,
        }),
    }
}

fn poll_once<F: Future + ?Sized>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{async_trait, Decision};

    struct Forgetful;

    #[async_trait]
    impl Filter for Forgetful {
        fn hooks(&self) -> Hooks {
            Hooks::OUTCOME
        }
        async fn on_request(&self, _: &RequestView<'_>, _: &mut RequestState) -> Decision {
            Decision::Continue
        }
        fn on_outcome(&self, _: &Outcome<'_>) {}
        fn accept_backend(&self, _: &Candidate<'_>) -> bool {
            false
        }
    }

    struct Honest;

    #[async_trait]
    impl Filter for Honest {
        fn hooks(&self) -> Hooks {
            Hooks::RESPONSE
        }
        fn on_response(
            &self,
            _: &RequestView<'_>,
            _: u16,
            _: &mut dyn crate::HeaderEdit,
            _: &mut RequestState,
        ) {
        }
    }

    #[test]
    fn finds_implemented_hooks_missing_from_the_set() {
        let found = undeclared_hooks(&Forgetful);
        assert_eq!(found, Hooks::REQUEST | Hooks::ACCEPT_BACKEND);
        assert_eq!(
            found.describe(),
            "on_request and accept_backend (Hooks::REQUEST | Hooks::ACCEPT_BACKEND)"
        );
        assert!(undeclared_hooks(&Honest).is_empty());
    }
}
