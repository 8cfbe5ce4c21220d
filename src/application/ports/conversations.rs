//! The conversation ports: each session's replayable event log, the live
//! delivery of its new events to every instance, and the registry that keeps
//! one running generation per session; and the signals that are live only.

use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use thiserror::Error;

use super::StoreFailure;
use crate::domain::conversation::{ClientMessageId, ConversationEvent, LoggedEvent, Seq};
use crate::domain::signal::{Signal, SignalTopic};
use crate::domain::{MessageId, SessionId};

/// Failures of the conversation ports ([`EventLog`], [`LiveDelivery`],
/// [`GenerationRegistry`], and the handoff ports): the backing store did not
/// answer or answered with something unusable. For logs only; clients see a
/// stable code.
#[derive(Debug, Error)]
#[error("conversation store unavailable")]
pub struct ConversationStoreError(#[from] pub StoreFailure);

/// A logged event as every holder shares it: the log, the live delivery and
/// each connection's queue point at one allocation instead of copying tokens.
pub type SharedEvent = std::sync::Arc<LoggedEvent>;

/// A stretch of a session's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSlice {
    /// The events after the requested seq that the log still holds, oldest
    /// first, at most the requested number.
    pub events: Vec<SharedEvent>,
    /// The session's latest seq when the read was made (0 for an empty log).
    pub head: Seq,
    /// The oldest seq the log still holds (`head + 1` when it holds nothing).
    pub oldest: Seq,
}

impl LogSlice {
    /// True when events after `after` were trimmed and cannot be replayed.
    pub fn lost_after(&self, after: Seq) -> bool {
        after < self.head && after + 1 < self.oldest
    }
}

/// A client message id the session already accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedClientMessage {
    pub message_id: MessageId,
    /// The seq of its `user-message`.
    pub seq: Seq,
}

/// How many client message ids a session remembers for de-duplication.
pub const CLIENT_MESSAGE_IDS_KEPT: usize = 100;

/// The ordered, replayable log of each session's conversation events.
///
/// Retention: an adapter keeps at least the last `limit` events of a session
/// (its configured `EVENT_LOG_LIMIT`) and at most twice that, and forgets a
/// session's log when the session has been idle for the session TTL.
///
/// # Errors
/// Every method returns [`ConversationStoreError`] when the store fails, and
/// nothing else.
/// - `append` MUST assign consecutive seqs (previous head + 1, + 2, …) to the
///   events in the order given, atomically with respect to every other append
///   to the same session on any instance, and return them as stored.
/// - `append` MUST remember the `client_message_id` of a `UserMessage` (the
///   last [`CLIENT_MESSAGE_IDS_KEPT`] of the session) for `accepted_client_message`.
/// - `read_after` of an unknown session is an empty slice with head 0, oldest 1.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync {
    async fn append(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Vec<SharedEvent>, ConversationStoreError>;
    /// Up to `limit` events with a seq greater than `after`.
    async fn read_after(
        &self,
        session: &SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<LogSlice, ConversationStoreError>;
    /// The session's latest seq (0 for a session with no events).
    async fn head(&self, session: &SessionId) -> Result<Seq, ConversationStoreError>;
    async fn accepted_client_message(
        &self,
        session: &SessionId,
        id: &ClientMessageId,
    ) -> Result<Option<AcceptedClientMessage>, ConversationStoreError>;
    /// Forgets the session's log (its owner erased the conversation), its
    /// client message ids and its head: an erased session reads like one
    /// that never existed. Erasing an unknown session is not an error.
    async fn erase(&self, session: &SessionId) -> Result<(), ConversationStoreError>;
}

/// What a live subscription yields: the session's next event, or word that
/// this subscriber fell too far behind and missed some (it can catch up from
/// the log).
#[derive(Debug, Clone)]
pub enum LiveItem {
    Event(SharedEvent),
    /// Events were dropped for this subscriber; `missed` is how many, if known.
    Lagged {
        missed: u64,
    },
}

/// A session's live events, in publish order. Dropping it unsubscribes.
pub type LiveStream = Pin<Box<dyn Stream<Item = LiveItem> + Send>>;

/// Delivers each session's new events to every subscriber, on every instance.
///
/// # Errors
/// - `subscribe` and `publish` return [`ConversationStoreError`] when the
///   transport fails. A subscription that is cut later (its transport
///   lost, so events published meanwhile cannot reach it) MUST end, after
///   what it already holds, rather than wait for events that cannot come.
/// - Delivery is at most once and in publish order per publisher; subscribers
///   detect gaps by `seq` and fill them from the [`EventLog`].
/// - A slow subscriber MUST NOT slow the publisher or other subscribers: it
///   gets [`LiveItem::Lagged`] instead, from its own bounded buffer.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LiveDelivery: Send + Sync {
    async fn subscribe(&self, session: &SessionId) -> Result<LiveStream, ConversationStoreError>;
    async fn publish(
        &self,
        session: &SessionId,
        events: &[SharedEvent],
    ) -> Result<(), ConversationStoreError>;
    /// How many subscriptions the session has, over all instances (may lag
    /// reality by a few seconds where instances share it).
    async fn watchers(&self, session: &SessionId) -> Result<u64, ConversationStoreError>;
}

/// What [`Backplane::write`] did: the events as the log stored them, and
/// whether live delivery failed after they were logged.
#[derive(Debug)]
pub struct Written {
    pub events: Vec<SharedEvent>,
    /// The events are logged but were not published: watchers learn of them
    /// only at their next event or resume (they fill the gap from the log).
    pub unpublished: Option<ConversationStoreError>,
}

/// Appends a session's new events to its [`EventLog`] and publishes them to
/// its [`LiveDelivery`] as one step, so a store that is also the live
/// transport (Redis) needs one round trip per batch instead of two awaited
/// one after the other.
///
/// # Errors
/// - `write` MUST return [`ConversationStoreError`] when the append failed,
///   and then MUST NOT have published anything.
/// - `write` MUST keep [`EventLog::append`]'s contract (consecutive seqs,
///   atomic per session across instances, client message ids remembered) and
///   publish exactly the events it logged, in seq order, once.
/// - A publish that fails after a successful append is not an error: it is
///   reported in [`Written::unpublished`].
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Backplane: Send + Sync {
    async fn write(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Written, ConversationStoreError>;
}

/// Whether a generation could be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    /// Another generation of the session is running (on any instance).
    Busy {
        running: MessageId,
    },
}

/// A generation whose owner stopped renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedGeneration {
    pub session: SessionId,
    pub message_id: MessageId,
}

/// Stop requests for generations this instance runs.
pub type StopStream = Pin<Box<dyn Stream<Item = (SessionId, MessageId)> + Send>>;

/// At most one running generation per session across all instances, held as
/// a lease its owner renews; stop from anywhere; abandoned leases found.
///
/// # Errors
/// Every method returns [`ConversationStoreError`] when the store fails.
/// - `try_start` MUST be atomic across instances: of two concurrent calls for
///   one session, exactly one gets `Started`.
/// - `renew` returns `false` when the lease is no longer this generation's
///   (it expired and was reaped); the owner must then stop without writing.
/// - `finish` of a lease that is not held is not an error.
/// - `request_stop` returns the running generation it asked to stop, or `None`.
/// - `reap_expired` returns each expired lease to exactly one caller, over all
///   instances, and releases it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait GenerationRegistry: Send + Sync {
    async fn try_start(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: std::time::Duration,
    ) -> Result<StartOutcome, ConversationStoreError>;
    async fn renew(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: std::time::Duration,
    ) -> Result<bool, ConversationStoreError>;
    async fn finish(
        &self,
        session: &SessionId,
        message_id: &MessageId,
    ) -> Result<(), ConversationStoreError>;
    async fn running(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError>;
    async fn request_stop(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError>;
    /// Stop requests addressed to whichever instance runs the generation; the
    /// owner listens and cancels its own. Called once, at start-up.
    fn stop_requests(&self) -> StopStream;
    async fn reap_expired(&self) -> Result<Vec<AbandonedGeneration>, ConversationStoreError>;
}

/// A topic's signals, in publish order. Dropping it unsubscribes.
pub type SignalStream = Pin<Box<dyn Stream<Item = Signal> + Send>>;

/// Delivers live-only [`Signal`]s (typing, an agent's summary) to whoever
/// listens to their topic now, on every instance; nothing is logged.
///
/// # Errors
/// - `publish` returns [`ConversationStoreError`] when the transport fails.
///   Delivery is at most once: a subscriber that falls behind, or whose
///   instance lost the transport for a moment, misses signals rather than
///   slowing anyone (a signal is only worth something now).
/// - `subscribe` cannot fail: a subscription made while the transport is
///   down starts hearing signals once it is back, and never ends while the
///   adapter lives.
/// - A subscriber hears every signal published to its topic after
///   `subscribe` returned, from any instance, in publish order per publisher.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SignalBus: Send + Sync {
    async fn publish(
        &self,
        topic: &SignalTopic,
        signal: Signal,
    ) -> Result<(), ConversationStoreError>;
    fn subscribe(&self, topic: &SignalTopic) -> SignalStream;
}
