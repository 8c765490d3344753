//! [`HeaderEdit`] over Pingora's request and response headers.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use portcullis_plugin::HeaderEdit;

/// Edits a Pingora [`RequestHeader`].
pub struct RequestHeaders<'a>(pub &'a mut RequestHeader);

/// Edits a Pingora [`ResponseHeader`].
pub struct ResponseHeaders<'a>(pub &'a mut ResponseHeader);

macro_rules! impl_edit {
    ($t:ident) => {
        impl HeaderEdit for $t<'_> {
            fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
                self.0.headers.get(name)
            }
            fn set(&mut self, name: HeaderName, value: HeaderValue) {
                if let Err(e) = self.0.insert_header(name, value) {
                    log::debug!("filter header set failed: {e}");
                }
            }
            fn append(&mut self, name: HeaderName, value: HeaderValue) {
                if let Err(e) = self.0.append_header(name, value) {
                    log::debug!("filter header append failed: {e}");
                }
            }
            fn remove(&mut self, name: &HeaderName) {
                self.0.remove_header(name);
            }
        }
    };
}

impl_edit!(RequestHeaders);
impl_edit!(ResponseHeaders);
