//! An agent as conversations, events and the handoff name them: below both
//! the conversation's events and the handoff state machine, which use it.

use super::user::{UserId, Username};

/// An agent as conversations and events name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    pub id: UserId,
    pub username: Username,
}
