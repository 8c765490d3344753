//! What filters see of a request, and what they can answer.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::net::{IpAddr, SocketAddr};

/// A read-only view of the client's request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// URI (path and query; authority for HTTP/2).
    pub uri: &'a Uri,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The client's IP address (the TCP peer).
    pub client_ip: Option<IpAddr>,
    /// Name of the matched route.
    pub route: &'a str,
}

impl<'a> RequestView<'a> {
    /// A header value as text, if present and valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of cookie `name`, if sent.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|h| h.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim())
            })
    }
}

/// A response a filter gives instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (content-type and content-length are set by the gateway).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A response with a short plain-text body.
    pub fn text(status: u16, body: &'static str) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    /// Add a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// What [`crate::Filter::on_request`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next filter and then the backend.
    Continue,
    /// Answer now with this response.
    Respond(Response),
}

/// A backend the balancer is about to use.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its address.
    pub addr: SocketAddr,
    /// The upstream it belongs to.
    pub upstream: &'a str,
    /// Number of backends the upstream has (primary and backup).
    pub upstream_size: usize,
}

/// Per-request scratch space shared by the hooks of one request, keyed by type. Use a private
/// type as the key so filters cannot collide. Nothing is allocated until something is stored.
#[derive(Debug, Default)]
pub struct RequestState {
    ext: http::Extensions,
}

impl RequestState {
    /// Store a value (replacing one of the same type).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.ext.insert(value);
    }

    /// The stored value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.ext.get::<T>()
    }

    /// Take the stored value of type `T` out.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.ext.remove::<T>()
    }
}
