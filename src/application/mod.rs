//! The application layer: use cases and the ports they need. No framework,
//! driver or wire type is imported here.

pub mod auth;
pub mod chat;
pub mod ports;

pub use auth::{AuthError, AuthService, Authenticated, Registration};
pub use chat::{ChatError, ChatService, ConnectionGuard, GenerationOutcome};
