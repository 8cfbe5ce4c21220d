//! The domain: pure types and rules, free of frameworks, drivers and wire formats.

pub mod access;
pub mod agent;
pub mod answer;
pub mod budget;
pub mod canned;
pub mod chat;
pub mod client_ip;
pub mod conversation;
pub mod csat;
pub mod desk;
pub mod feedback;
pub mod handoff;
pub mod id;
pub mod office_hours;
pub mod queue;
pub mod signal;
pub mod time;
pub mod trace;
pub mod transcript;
pub mod user;

#[cfg(test)]
pub mod fixtures;

pub use access::{FamilyId, OpaqueTokenError, RefreshToken, TokenDigest, WsTicket};
pub use chat::{
    ChatContent, ChatMessage, ContentError, IdError, LastQuestion, MessageId, Role, Session,
    SessionId, SessionUser, StreamStatus, HISTORY_LIMIT,
};
pub use client_ip::{ClientIp, TrustedProxies, TrustedProxyError};
pub use time::{TokenLifetime, TokenLifetimeError};
pub use trace::{RequestId, RequestIdError, TraceContext, TraceParentError, TRACE_TARGET};
pub use user::{
    EmailAddress, EmailAddressError, LoginName, NewUser, Password, PasswordError, PasswordHash,
    RoleError, User, UserId, UserIdError, UserRole, Username, UsernameError,
};
