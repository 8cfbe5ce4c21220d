//! Adapters: everything that speaks a wire format, a driver or a framework.

pub mod inbound;
pub mod outbound;
pub mod queue;
