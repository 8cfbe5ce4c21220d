//! The session port: each chat session's user, recent history, timestamps
//! and escalation flag, forgotten after an idle time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::StoreFailure;
use crate::domain::{ChatMessage, MessageId, Session, SessionId, UserId};

/// Failures of a [`SessionStore`].
#[derive(Debug, Error)]
pub enum SessionStoreError {
    #[error("session not found")]
    NotFound,
    /// The store did not answer or answered with something unusable.
    #[error("session store unavailable")]
    Unavailable(#[from] StoreFailure),
}

/// How many sessions a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub active: u64,
    pub escalated: u64,
}

/// Chat sessions: the user, the last [`crate::domain::HISTORY_LIMIT`] messages,
/// timestamps and the escalation flag. Sessions expire after a configured idle
/// time; an expired session behaves exactly like one that never existed.
///
/// # Errors
/// - `get` returns `Ok(None)` for an unknown or expired session.
/// - `append`, `forget_after`, `mark_escalated` and `touch` MUST return
///   [`SessionStoreError::NotFound`] for an unknown or expired session.
/// - `append` trims history to the limit as [`Session::push_message`] does.
/// - `forget_after` forgets as [`Session::forget_after`] does, atomically, and
///   returns `Ok(false)` (changing nothing) when the history does not hold
///   the message.
/// - A store built with a per-user bound (`SESSIONS_MAX_PER_USER`) MUST, in
///   `create`, remove that user's least recently active live sessions beyond
///   the bound (never the one created), atomically with the creation.
/// - Every other failure is `Unavailable`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session, replacing any session with the same id.
    async fn create(&self, session: &Session) -> Result<(), SessionStoreError>;
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionStoreError>;
    async fn append(&self, id: &SessionId, message: ChatMessage) -> Result<(), SessionStoreError>;
    /// Forgets the history after `message` (its answers, when it is asked again).
    async fn forget_after(
        &self,
        id: &SessionId,
        message: &MessageId,
    ) -> Result<bool, SessionStoreError>;
    /// Marks the session escalated; returns `true` if it was not escalated before.
    async fn mark_escalated(&self, id: &SessionId) -> Result<bool, SessionStoreError>;
    /// Records activity, pushing the session's expiry back.
    async fn touch(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), SessionStoreError>;
    /// Removes a session; removing an unknown one is not an error.
    async fn remove(&self, id: &SessionId) -> Result<(), SessionStoreError>;
    /// The user's live sessions, most recently active first, at most `limit`.
    async fn list_for_user(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<Session>, SessionStoreError>;
    async fn counts(&self) -> Result<SessionCounts, SessionStoreError>;
}
