//! The handoff ports: the conversations that are not the bot's alone
//! (queued or assigned to an agent), and which agents are online.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::ConversationStoreError;
use crate::domain::{SessionId, UserId};

/// A handoff change, as every instance hears of it: which conversation, and
/// its mode afterwards (with the agent holding it, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffChange {
    pub session: SessionId,
    pub mode: crate::domain::handoff::Mode,
}

/// What a compare-and-set found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The change is stored (its version is the expected one + 1).
    Done,
    /// Someone changed the conversation since it was read: read it again.
    Conflict,
}

/// The conversations that are not the bot's alone (queued or assigned), shared
/// by every instance. A session with no record is in bot mode.
///
/// # Errors
/// Every method returns [`ConversationStoreError`] when the store fails, and
/// nothing else.
/// - `swap` MUST be atomic across instances: it stores `next` (or deletes the
///   record when `next` is `None`) only if the stored version is still
///   `expected` (0: no record), and then announces a [`HandoffChange`] to
///   every instance's `changes()`. Of two swaps from the same version, exactly
///   one is `Done`. `next.version` is set by the store to `expected + 1`.
/// - `queue` lists the queued conversations, longest waiting first, at most `limit`.
/// - `position` is the session's place in that order (1 = next in line), or
///   `None` when it is not queued.
/// - `held_by` lists the conversations assigned to `agent`, at most `limit`.
/// - `active` lists every queued or assigned conversation, at most `limit`
///   (for the timers).
/// - `queue_length` counts the queued conversations.
/// - `note_entry` remembers `position` as the one the queued `session` was
///   last told (its `handoff-queued`); nothing when it is not queued.
///   Leaving the queue forgets it.
/// - `note_moves` lowers the remembered positions of those of `places` that
///   have one and are still queued, and returns those it lowered: atomic
///   across instances, so of two instances noting the same move exactly one
///   gets the session back (one `queue-position` per change), and a
///   position read before a later move never overwrites that move's.
/// - `lead_assignment` takes (or, when `holder` has it, extends) the one
///   lease of auto-assignment over all instances for `ttl`: `true` when
///   `holder` holds it; `end_assignment` gives it up if `holder` holds it.
/// - `begin_taking` takes (or, when `holder` has it, extends) `agent`'s
///   lease of taking conversations for `ttl`: `true` when `holder` holds
///   it. While one holder has it no other gets it, over all instances, so an
///   agent's capacity check and the claim it allows are one step;
///   `end_taking` gives it up if `holder` holds it. A lease is forgotten
///   once it lapsed or ended.
/// - `keep_summary` keeps `summary` with the conversation while `agent`
///   holds it (`false`, nothing kept, when they do not); `summary` gives it
///   back. A swap that gives the conversation to another agent, or back to
///   the queue or the bot, forgets it.
/// - `record_wait` keeps one claimed conversation's wait per place in line
///   among the last [`crate::domain::queue::WAIT_WINDOW`] (older ones go);
///   `recent_waits` returns them, over all instances.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait HandoffStore: Send + Sync {
    async fn get(
        &self,
        session: &SessionId,
    ) -> Result<Option<crate::domain::handoff::Handoff>, ConversationStoreError>;
    async fn swap(
        &self,
        session: &SessionId,
        expected: u64,
        next: Option<crate::domain::handoff::Handoff>,
    ) -> Result<Swap, ConversationStoreError>;
    async fn queue(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::domain::handoff::Handoff>, ConversationStoreError>;
    async fn position(&self, session: &SessionId) -> Result<Option<u64>, ConversationStoreError>;
    async fn held_by(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<crate::domain::handoff::Handoff>, ConversationStoreError>;
    async fn active(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::domain::handoff::Handoff>, ConversationStoreError>;
    async fn queue_length(&self) -> Result<u64, ConversationStoreError>;
    async fn note_entry(
        &self,
        session: &SessionId,
        position: u64,
    ) -> Result<(), ConversationStoreError>;
    async fn note_moves(
        &self,
        places: &[(SessionId, u64)],
    ) -> Result<Vec<SessionId>, ConversationStoreError>;
    async fn record_wait(
        &self,
        per_place: std::time::Duration,
    ) -> Result<(), ConversationStoreError>;
    async fn recent_waits(&self) -> Result<Vec<std::time::Duration>, ConversationStoreError>;
    async fn lead_assignment(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, ConversationStoreError>;
    async fn end_assignment(&self, holder: &str) -> Result<(), ConversationStoreError>;
    async fn begin_taking(
        &self,
        agent: &UserId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, ConversationStoreError>;
    async fn end_taking(&self, agent: &UserId, holder: &str) -> Result<(), ConversationStoreError>;
    async fn keep_summary(
        &self,
        session: &SessionId,
        agent: &UserId,
        summary: &str,
    ) -> Result<bool, ConversationStoreError>;
    async fn summary(&self, session: &SessionId) -> Result<Option<String>, ConversationStoreError>;
    /// Changes from now on, from every instance. A lagging receiver should
    /// re-read what it shows.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<HandoffChange>;
}

/// An online agent as auto-assignment weighs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOnline {
    pub id: UserId,
    /// The agent said they are away: nothing is assigned to them.
    pub away: bool,
    /// When they last took a conversation (`None`: not since the store knows).
    pub last_assigned: Option<DateTime<Utc>>,
}

/// An agent as the desk shows them: online or when last seen, and their status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSeen {
    pub id: UserId,
    /// At least one socket lease of theirs is open.
    pub online: bool,
    /// The status they chose.
    pub away: bool,
}

/// Which agents have an agent socket open, on any instance. Each socket holds
/// a lease it renews; a socket whose instance died lapses with its lease.
///
/// # Errors
/// Every method returns [`ConversationStoreError`] when the store fails.
/// - `online` MUST count an agent with at least one unexpired socket lease.
/// - `last_seen` is when the agent's last socket lease ended (closed or
///   lapsed), `None` when it never had one (or the record expired); it is
///   meaningless while the agent is online.
/// - `set_away` / `away`: the status the agent chose (`away` or not), kept
///   across their sockets and instances until they change it.
/// - `note_assigned` remembers when the agent last took a conversation.
/// - `roster` lists the agents online now (at most `limit`) with their
///   status and last taking, over all instances.
/// - `seen` lists the agents online now or last seen at `since` or later
///   (at most `limit`, the most recently seen first), over all instances.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AgentPresence: Send + Sync {
    /// Holds (or renews) `socket`'s lease of `agent` for `lease`.
    async fn renew(
        &self,
        agent: &UserId,
        socket: &str,
        lease: std::time::Duration,
    ) -> Result<(), ConversationStoreError>;
    /// The socket closed: its lease ends now.
    async fn leave(&self, agent: &UserId, socket: &str) -> Result<(), ConversationStoreError>;
    async fn online(&self, agent: &UserId) -> Result<bool, ConversationStoreError>;
    async fn last_seen(
        &self,
        agent: &UserId,
    ) -> Result<Option<DateTime<Utc>>, ConversationStoreError>;
    /// How many agents are online.
    async fn online_count(&self) -> Result<u64, ConversationStoreError>;
    async fn set_away(&self, agent: &UserId, away: bool) -> Result<(), ConversationStoreError>;
    async fn away(&self, agent: &UserId) -> Result<bool, ConversationStoreError>;
    async fn note_assigned(
        &self,
        agent: &UserId,
        at: DateTime<Utc>,
    ) -> Result<(), ConversationStoreError>;
    async fn roster(&self, limit: usize) -> Result<Vec<AgentOnline>, ConversationStoreError>;
    async fn seen(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentSeen>, ConversationStoreError>;
}
