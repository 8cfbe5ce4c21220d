//! The application layer: use cases and the ports they need. No framework,
//! driver or wire type is imported here.

pub mod access;
pub mod agent_accounts;
mod agent_standing;
pub mod attachment;
pub mod auth;
pub mod chat;
pub mod conversation;
pub mod csat;
pub mod desk;
mod generation;
pub mod handoff;
mod handoff_assign;
mod handoff_queue;
pub mod health;
pub mod limits;
pub mod loops;
pub mod metering;
pub mod ports;
pub mod replies;
mod summary;
mod traces;
pub mod transcripts;
mod typing;

pub use access::{Authorized, IssuedTicket};
pub use agent_standing::STANDING_CHECK;
pub use attachment::{Attachment, Feed, ResumeNotice};
pub use auth::{AccessPorts, AccessSettings};
pub use auth::{AuthError, AuthService, Authenticated, Registration};
pub use chat::{
    Accepted, ChatRefusal, ChatRequest, ChatService, ConnectionGuard, FeedbackRefusal,
    RegenerateRefusal, Regenerated, SessionSummary, StopRefusal, SESSIONS_LISTED,
};
pub use conversation::{
    ChatError, ChatPorts, ConversationCore, ConversationSettings, HandoffRefusal, HandoffSettings,
    SummarySettings,
};
pub use csat::CsatRefusal;
pub use handoff::{AgentMessageSent, HandoffService, ESCALATION_REPLY};
pub use limits::{LimitSettings, Limited, Limits, Rule};
pub use loops::ConversationLoops;
pub use metering::{AnswerSettings, BudgetExhausted, Metering};
pub use replies::ReplyRefusal;
pub use traces::AiLabels;
pub use transcripts::{
    RetentionSweeper, Transcript, TranscriptRefusal, TranscriptService, TRANSCRIPT_PAGE_DEFAULT,
    TRANSCRIPT_PAGE_MAX,
};
