//! The compiled, immutable runtime config ("snapshot") and how a config file becomes one.

pub mod address;
pub mod admission;
pub mod affinity;
pub mod compile;
pub mod compression;
pub mod listener;
pub mod mirror;
pub mod ramp;
pub mod retry;
pub mod router;
pub mod snapshot;
pub mod sticky;
pub mod tcp;
pub mod upstream;

pub use compile::{compile, CompileContext};
pub use router::{Route, Router};
pub use snapshot::{Compiled, ListenerSpec, Snapshot};
pub use upstream::{Upstream, UpstreamBackend};
