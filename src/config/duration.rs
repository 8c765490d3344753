//! Human-readable durations in the config: `250ms`, `5s`, `2m`, `1h` (shared with plugins).

pub use portcullis_plugin::duration::{parse_duration, Dur};
