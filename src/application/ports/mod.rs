//! The ports: what the use cases need from the outside world, and the exact
//! errors each adapter must translate its driver's failures into.
//!
//! Adapters implement these traits; services hold them as `Arc<dyn Port>` so
//! `main.rs` can pick an implementation from configuration at run time. One
//! file per family of ports; every name is re-exported here, so
//! `crate::application::ports::X` is the one path to use.

mod access;
mod ai;
mod conversations;
mod failure;
mod handoff;
mod limiter;
mod sessions;
mod stats;
mod transcripts;
mod usage;
mod users;

pub use access::*;
pub use ai::*;
pub use conversations::*;
pub use failure::{Cause, StoreFailure};
pub use handoff::*;
pub use limiter::*;
pub use sessions::*;
pub use stats::*;
pub use transcripts::*;
pub use usage::*;
pub use users::*;
