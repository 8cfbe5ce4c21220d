//! The domain: pure types and rules, free of frameworks, drivers and wire formats.

pub mod chat;
pub mod user;

pub use chat::{
    ChatContent, ChatMessage, ContentError, IdError, MessageId, Role, Session, SessionId,
    SessionUser, StreamStatus, HISTORY_LIMIT,
};
pub use user::{
    EmailAddress, EmailAddressError, LoginName, NewUser, Password, PasswordError, PasswordHash,
    User, UserId, UserIdError, Username, UsernameError,
};
