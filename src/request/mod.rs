//! Pure functions over what a client sent: the canonical request path and the client's
//! address behind trusted proxies. No I/O and no gateway state, so they are unit-tested and
//! fuzzed on their own.

pub mod forwarded;
pub mod path;
