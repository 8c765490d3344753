//! Editing headers without knowing the server's header type.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A mutable set of headers. The gateway implements it for its own request and response
/// headers; `http::HeaderMap` implements it for tests.
pub trait HeaderEdit {
    /// The first value of `name`.
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Replace every value of `name` with `value`.
    fn set(&mut self, name: HeaderName, value: HeaderValue);
    /// Add `value` to `name`, keeping existing values.
    fn append(&mut self, name: HeaderName, value: HeaderValue);
    /// Remove every value of `name`.
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderEdit for HeaderMap {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        HeaderMap::get(self, name)
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}
