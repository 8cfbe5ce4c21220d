//! The application layer: use cases and the ports they need. No framework,
//! driver or wire type is imported here.

pub mod access;
pub mod agent_accounts;
mod agent_standing;
pub mod attachment;
pub mod auth;
pub mod chat;
mod generation;
pub mod handoff;
pub mod health;
pub mod limits;
pub mod ports;
pub mod transcripts;

pub use access::{Authorized, IssuedTicket};
pub use agent_standing::STANDING_CHECK;
pub use attachment::{Attachment, Feed, ResumeNotice};
pub use auth::{AccessPorts, AccessSettings};
pub use auth::{AuthError, AuthService, Authenticated, Registration};
pub use chat::{
    Accepted, ChatError, ChatPorts, ChatRefusal, ChatRequest, ChatService, ConnectionGuard,
    ConversationSettings, SessionSummary, StopRefusal, ESCALATION_REPLY, SESSIONS_LISTED,
};
pub use handoff::{AgentMessageSent, HandoffRefusal, HandoffSettings};
pub use limits::{LimitSettings, Limited, Limits, Rule};
pub use transcripts::{
    RetentionSweeper, TranscriptRefusal, TRANSCRIPT_PAGE_DEFAULT, TRANSCRIPT_PAGE_MAX,
};
