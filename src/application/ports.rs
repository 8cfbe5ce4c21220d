//! The ports: what the use cases need from the outside world, and the exact
//! errors each adapter must translate its driver's failures into.
//!
//! Adapters implement these traits; services hold them as `Arc<dyn Port>` so
//! `main.rs` can pick an implementation from configuration at run time.

use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use thiserror::Error;

use crate::domain::conversation::{ClientMessageId, ConversationEvent, LoggedEvent, Seq};
use crate::domain::{
    ChatMessage, EmailAddress, FamilyId, MessageId, NewUser, Password, PasswordHash, Session,
    SessionId, TokenDigest, TokenLifetime, User, UserId, UserRole, Username,
};

/// The underlying cause of a port failure, kept for the logs: the driver's own
/// error (with its chain of sources) wherever the driver gave one. Ports cannot
/// name driver types without depending on the drivers, hence the box.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

// ---------------------------------------------------------------- users

/// Failures of a [`UserRepository`].
#[derive(Debug, Error)]
pub enum UserStoreError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error("user not found")]
    NotFound,
    /// The store did not answer or answered with something unusable. For logs
    /// only; it never reaches a client.
    #[error("user store unavailable: {context}")]
    Unavailable {
        /// What was being done, in the adapter's words.
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl UserStoreError {
    /// The store failed while doing `context`; `source` is the driver's error.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The store answered, but with data no user can be made of.
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }
}

/// Where users live (MongoDB `users` collection, or the embedded SQLite file).
///
/// # Errors
/// - `create` MUST return [`UserStoreError::UsernameTaken`] or
///   [`UserStoreError::EmailTaken`] when a unique constraint refuses the user
///   (checked atomically by the store, not by a prior lookup), and
///   [`UserStoreError::Unavailable`] for any other failure.
/// - `find_*` return `Ok(None)` for a user that does not exist, including an id
///   the store could never have issued; only failures are `Unavailable`.
/// - `record_login` MUST return [`UserStoreError::NotFound`] for an unknown id.
/// - `set_role` MUST return [`UserStoreError::NotFound`] for an unknown
///   username (matched exactly, as at login) and otherwise the user as stored
///   after the change; setting the role a user already has is not an error.
/// - `agent_count` counts the active accounts whose role is agent (`Ok(0)`
///   for none); only failures are `Unavailable`.
/// - `ping` returns `Unavailable` when the store cannot serve requests.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync {
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError>;
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, UserStoreError>;
    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, UserStoreError>;
    async fn find_by_email(&self, email: &EmailAddress) -> Result<Option<User>, UserStoreError>;
    /// Sets `lastLogin`, and replaces the password hash when `rehashed` is given
    /// (a legacy bcrypt hash being upgraded to argon2id).
    async fn record_login(
        &self,
        id: &UserId,
        at: DateTime<Utc>,
        rehashed: Option<PasswordHash>,
    ) -> Result<(), UserStoreError>;
    /// Makes `username` an agent or a plain user again. Takes effect at once:
    /// agent routes read the role from the store on every request.
    async fn set_role(&self, username: &Username, role: UserRole) -> Result<User, UserStoreError>;
    /// How many active agent accounts exist (whether handoff can be in use).
    async fn agent_count(&self) -> Result<u64, UserStoreError>;
    async fn ping(&self) -> Result<(), UserStoreError>;
}

// ------------------------------------------------------------ passwords

/// Failures of a [`PasswordHasher`].
#[derive(Debug, Error)]
pub enum PasswordHashError {
    /// The stored hash is in no format this hasher understands.
    #[error("stored password hash is malformed")]
    Malformed,
    /// As many computations as the hasher allows are running or waiting.
    #[error("password hashing is at capacity")]
    Busy,
    #[error("password hashing failed")]
    Internal(#[source] Cause),
}

/// The outcome of comparing a password with a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is right; `needs_rehash` says the hash is in a legacy or
    /// weaker format and should be replaced with a fresh one.
    Match {
        needs_rehash: bool,
    },
    Mismatch,
}

/// Hashes and verifies passwords. Implementations do the CPU-heavy work off
/// the async runtime.
///
/// # Errors
/// - `hash` returns `Internal` only if the algorithm itself fails.
/// - `verify` returns `Ok(Mismatch)` for a wrong password and `Err(Malformed)`
///   for a hash it cannot parse; it never panics on hostile input.
/// - Both return `Busy` at once, without computing, when the hasher's bounded
///   queue is full.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, PasswordHashError>;
    async fn verify(
        &self,
        password: &Password,
        hash: &PasswordHash,
    ) -> Result<PasswordCheck, PasswordHashError>;
}

// --------------------------------------------------------------- tokens

/// Failures of a [`TokenService`].
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing claim, garbage: all one thing to a client.
    #[error("token is invalid")]
    Invalid,
    #[error("token could not be issued")]
    Issue(#[source] Cause),
}

/// A freshly signed token and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub lifetime: TokenLifetime,
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: UserId,
    pub username: Username,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// What revokes this one token: its `jti`, or for tokens issued without
    /// one (the Node server's) a digest of the token itself.
    pub token_id: String,
    /// Unix milliseconds: this server's tokens carry them, older tokens
    /// count from the start of their `iat` second.
    pub issued_at_ms: i64,
}

/// Issues and verifies bearer tokens.
///
/// # Errors
/// - `verify` MUST return [`TokenError::Expired`] for an expired token and
///   [`TokenError::Invalid`] for every other rejection, including a token not
///   yet valid (`nbf` in the future) or issued more than a minute ahead
///   (`iat`).
/// - `issue` returns [`TokenError::Issue`] only if signing fails.
#[cfg_attr(test, mockall::automock)]
pub trait TokenService: Send + Sync {
    fn issue(&self, user: &User) -> Result<IssuedToken, TokenError>;
    fn verify(&self, token: &str) -> Result<TokenClaims, TokenError>;
}

// ------------------------------------------------------------- sessions

/// Failures of a [`SessionStore`].
#[derive(Debug, Error)]
pub enum SessionStoreError {
    #[error("session not found")]
    NotFound,
    /// For logs only; it never reaches a client.
    #[error("session store unavailable: {context}")]
    Unavailable {
        /// What was being done, in the adapter's words.
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl SessionStoreError {
    /// The store failed while doing `context`; `source` is the driver's error.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The store answered, but with data no session can be made of.
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }
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
/// - `append`, `mark_escalated` and `touch` MUST return
///   [`SessionStoreError::NotFound`] for an unknown or expired session.
/// - `append` trims history to the limit as [`Session::push_message`] does.
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

// ------------------------------------------------------------------- AI

/// Failures of an [`AiModel`], before or during a stream.
///
/// These carry text rather than a boxed source: most are not driver errors at
/// all (a status code, a malformed event), and the adapter already flattens a
/// transport error's whole chain into the text, which stays cheap to clone.
/// The variants are fine-grained because retries, the circuit breaker and the
/// client's `retryable` hint each decide differently on them.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AiError {
    /// Could not connect (refused, reset, DNS), the connection closed before
    /// an answer, or the upstream reported an error inside its stream.
    #[error("AI service unavailable: {0}")]
    Unavailable(String),
    /// The upstream answered with a non-success HTTP status; `retry_after` is
    /// its `Retry-After`, when it sent one.
    #[error("AI service answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<std::time::Duration>,
    },
    /// The upstream answered in a way that asking again cannot fix: a success
    /// status without an event stream.
    #[error("AI service refused the request: {0}")]
    Rejected(String),
    /// The upstream was not asked: its circuit breaker is open after repeated
    /// failures.
    #[error("AI service skipped: its circuit breaker is open")]
    CircuitOpen,
    /// No answer within the connect, first-token or idle timeout.
    #[error("AI service timed out: {0}")]
    Timeout(String),
    /// The upstream sent something that is not the agreed event format, or
    /// ended the stream without its terminating `[DONE]`.
    #[error("AI service sent an invalid stream: {0}")]
    Protocol(String),
}

impl AiError {
    /// Whether the same chat, sent again later, may get an answer: true for
    /// outages, overload, timeouts and an open breaker; false for refusals of
    /// this request (a 4xx other than 408 and 429, no event stream) and for
    /// broken streams.
    pub fn retryable(&self) -> bool {
        match self {
            AiError::Unavailable(_) | AiError::Timeout(_) | AiError::CircuitOpen => true,
            AiError::Status { status, .. } => {
                !(400..500).contains(status) || matches!(status, 408 | 429)
            }
            AiError::Rejected(_) | AiError::Protocol(_) => false,
        }
    }
}

/// Everything the AI needs to answer one query.
#[derive(Debug, Clone, PartialEq)]
pub struct AiRequest {
    pub query: String,
    pub user_id: UserId,
    pub session_id: SessionId,
    /// The messages before this query, oldest first, at most the history limit.
    pub history: Vec<ChatMessage>,
    /// The trace the chat belongs to (the caller's `traceparent` on the
    /// WebSocket upgrade); each upstream request continues it in a span of
    /// its own, or starts a trace when there is none.
    pub trace: Option<crate::domain::TraceContext>,
}

/// The answer as it arrives: one item per text delta. The stream ends after
/// the last delta; an `Err` item ends it early. Dropping the stream MUST abort
/// the underlying request.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<String, AiError>> + Send>>;

/// What `/health` says about the AI side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiHealth {
    /// The upstream answered a probe.
    Ok,
    /// No upstream is configured; the built-in echo model answers.
    Echo,
    /// The upstream did not answer a probe.
    Unreachable,
}

/// Where an upstream's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Chats go to the upstream.
    Closed,
    /// Chats skip the upstream (`ai_unavailable` at once, or the fallback)
    /// until the cooldown ends.
    Open,
    /// The cooldown is over: the next chat is the probe that closes or reopens it.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// One configured upstream as `/health` (and later metrics) show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamState {
    /// `primary` or `fallback`.
    pub role: &'static str,
    /// `fastapi` or `openai`.
    pub provider: &'static str,
    pub circuit: CircuitState,
}

/// A source of streamed AI answers: the real upstream over SSE, the echo
/// model, or a decorator adding retries, a circuit breaker or a fallback.
///
/// # Errors
/// `stream` returns `Err` when the answer cannot start (connection refused or
/// timed out, non-2xx status, an open circuit breaker); everything after that,
/// including the first-token and idle timeouts, arrives as an `Err` item that
/// ends the stream. A decorator MAY also report a failure to start as the
/// first item, so callers treat both alike. An adapter MUST send each attempt
/// as exactly one request, never re-posting an answer that has begun.
///
/// `upstreams` lists the upstreams behind this model with their breakers'
/// states (empty for the echo model and a bare adapter); it never blocks.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AiModel: Send + Sync {
    async fn stream(&self, request: AiRequest) -> Result<TokenStream, AiError>;
    async fn health(&self) -> AiHealth;
    fn upstreams(&self) -> Vec<UpstreamState>;
}

/// What became of one request to an upstream, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The first token arrived (or a complete, empty answer).
    Ok,
    /// No connection, or it closed before the response headers.
    Refused,
    /// A non-success HTTP status.
    Status(u16),
    /// The connect or first-token timeout.
    Timeout,
    /// The upstream reported an error in its stream before the first token.
    Reported,
    /// No event stream, a malformed event, or an end before the first token.
    Protocol,
}

impl AttemptOutcome {
    /// A label for a metric: `ok`, `refused`, `status_4xx`, `status_429`,
    /// `status_5xx`, `timeout`, `reported` or `protocol_error`.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Refused => "refused",
            AttemptOutcome::Status(429) => "status_429",
            AttemptOutcome::Status(s) if (400..500).contains(&s) => "status_4xx",
            AttemptOutcome::Status(_) => "status_5xx",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Reported => "reported",
            AttemptOutcome::Protocol => "protocol_error",
        }
    }
}

/// Hears what the resilience decorators do, so it can be counted. Called on
/// the chat's path: implementations must be quick and must not block.
///
/// # Errors
/// None: observing never fails.
pub trait UpstreamObserver: Send + Sync {
    /// One request to the `role` upstream ended as `outcome`; `retried` says
    /// another attempt follows for the same chat.
    fn attempt(&self, role: &'static str, outcome: AttemptOutcome, retried: bool) {
        let _ = (role, outcome, retried);
    }
    /// A chat skipped the `role` upstream because its breaker is open.
    fn skipped(&self, role: &'static str) {
        let _ = role;
    }
    /// The `role` upstream's breaker moved to `state`.
    fn circuit_changed(&self, role: &'static str, state: CircuitState) {
        let _ = (role, state);
    }
}

/// An observer that ignores everything (until a metrics adapter listens).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl UpstreamObserver for NoObserver {}

// ---------------------------------------------------------------- stats

/// Counters since start-up, as one response reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub active_connections: u64,
    pub total_connections: u64,
    pub total_messages: u64,
}

/// How one generation ended, for counting: `outcome` is `completed`,
/// `cancelled`, `failed`, or `lost_lease` (another instance ended it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationReport {
    pub outcome: &'static str,
    /// From the start of the generation to its first token, if one came.
    pub first_token: Option<std::time::Duration>,
    pub duration: std::time::Duration,
    /// Text deltas streamed to the conversation.
    pub tokens: u64,
}

/// Where the use cases (and the inbound adapters, for HTTP) count what
/// happens: in-process counters for `/api/stats` and the Prometheus
/// exposition behind `/metrics`. Called on hot paths, so methods are
/// synchronous and must not block.
///
/// Every label a method takes is one of a fixed set named by the caller
/// (`&'static str`), so no client can grow the number of series.
///
/// # Errors
/// None: counting never fails. An adapter whose backend is unreachable drops
/// the count rather than slowing a connection down.
#[cfg_attr(test, mockall::automock)]
pub trait Stats: Send + Sync {
    /// A client connection was accepted.
    fn connection_opened(&self);
    /// A connection counted by `connection_opened` ended (exactly once each),
    /// for `reason` (`client_closed`, `ping_timeout`, `shutting_down`, ...).
    fn connection_closed(&self, reason: &'static str);
    /// A chat message was accepted for generation.
    fn message_received(&self);
    fn snapshot(&self) -> StatsSnapshot;
    /// A generation ended.
    fn generation_ended(&self, report: &GenerationReport) {
        let _ = report;
    }
    /// An HTTP request was answered; `route` is the route's template.
    fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let _ = (method, route, status, elapsed);
    }
    /// A login attempt ended as `outcome` (`success`, `bad_credentials`,
    /// `throttled` by a login limit, `busy`, `error`).
    fn login(&self, outcome: &'static str) {
        let _ = outcome;
    }
    /// A request was refused by the abuse limit `limit`.
    fn rate_limited(&self, limit: &'static str) {
        let _ = limit;
    }
    /// A store failed (`users`, `sessions`, `conversations`, `transcripts`,
    /// `access`, `limiter`).
    fn store_error(&self, store: &'static str) {
        let _ = store;
    }
    /// Everything counted, in the Prometheus text exposition format; `None`
    /// from an adapter that keeps only the snapshot.
    fn exposition(&self) -> Option<String> {
        None
    }
    /// A handoff reached `outcome` (`queued`, `claimed`, `released`,
    /// `resolved`, `cancelled`, `timeout`, `agent_away`; `unavailable` when
    /// nobody was online to take it, `not_offered` when handoff is not in use).
    fn handoff(&self, outcome: &'static str) {
        let _ = outcome;
    }
    /// How long a conversation waited in the queue before an agent claimed it.
    fn handoff_wait(&self, waited: std::time::Duration) {
        let _ = waited;
    }
    /// How many conversations wait in the queue now.
    fn handoff_queue_length(&self, queued: u64) {
        let _ = queued;
    }
}

// ---------------------------------------------------------- conversations

/// Failures of the conversation ports ([`EventLog`], [`LiveDelivery`],
/// [`GenerationRegistry`]): the backing store did not answer or answered with
/// something unusable. For logs only; clients see a stable code.
#[derive(Debug, Error)]
#[error("conversation store unavailable: {context}")]
pub struct ConversationStoreError {
    /// What was being done, in the adapter's words.
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl ConversationStoreError {
    pub fn new(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error (a timeout, a malformed record).
    pub fn bare(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

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
///   transport fails. A subscription that is cut later simply ends.
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

// ---------------------------------------------------------------- access

/// The result of presenting a refresh token to [`RefreshTokenStore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now rotated and its successor stored.
    Rotated { user_id: UserId },
    /// The token was rotated less than the grace period ago (two tabs
    /// refreshing at once): its successor, already stored, stands.
    AlreadyRotated { user_id: UserId },
    /// The token was rotated longer ago: a reuse. Its whole family is now revoked.
    Reused { user_id: UserId },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

/// A refresh token as stored: its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub digest: TokenDigest,
    pub family: FamilyId,
    pub user_id: UserId,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Refresh tokens, kept by the user store (SQLite table or MongoDB
/// collection `refresh_tokens`), so they live as long as the accounts do.
///
/// # Errors
/// Every method returns [`UserStoreError::Unavailable`] when the store fails,
/// and nothing else.
/// - `rotate` MUST be atomic across instances: of two concurrent rotations
///   of one token exactly one gets `Rotated`; the other gets
///   `AlreadyRotated` (within `grace`) or `Reused`.
/// - `rotate` stores `successor` in the presented token's family, for its user.
/// - A `Reused` answer has revoked the family before it returns.
/// - Expired tokens are `Invalid`; stores may delete them at any time.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    async fn insert(&self, record: &RefreshRecord) -> Result<(), UserStoreError>;
    async fn rotate(
        &self,
        presented: &TokenDigest,
        successor: &TokenDigest,
        now: DateTime<Utc>,
        successor_expires_at: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<Rotation, UserStoreError>;
    /// Revokes the family of `digest` if it belongs to `user`; otherwise does nothing.
    async fn revoke_family(
        &self,
        digest: &TokenDigest,
        user: &UserId,
    ) -> Result<(), UserStoreError>;
    /// Revokes every refresh token of `user`.
    async fn revoke_user(&self, user: &UserId) -> Result<(), UserStoreError>;
}

/// Failures of the [`TicketStore`] and [`RevocationStore`]. For logs only.
#[derive(Debug, Error)]
pub enum AccessStoreError {
    #[error("access store unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// An in-process store reached its bound.
    #[error("access store is full")]
    Full,
}

impl AccessStoreError {
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }
}

/// Single-use WebSocket tickets, each standing for the access token it was
/// bought with (Redis when set, so any instance can redeem it).
///
/// # Errors
/// - `take` MUST be atomic across instances: a ticket is returned once, then
///   never again; an expired or unknown ticket is `Ok(None)`.
/// - `put` returns [`AccessStoreError::Full`] when an in-process store is at
///   its bound; every store failure is `Unavailable`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TicketStore: Send + Sync {
    async fn put(
        &self,
        ticket: &TokenDigest,
        claims: &TokenClaims,
        ttl: std::time::Duration,
    ) -> Result<(), AccessStoreError>;
    async fn take(&self, ticket: &TokenDigest) -> Result<Option<TokenClaims>, AccessStoreError>;
}

/// A revocation as every instance hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One access token (by [`TokenClaims::token_id`]).
    Token { token_id: String },
    /// Every token of the user issued before this Unix millisecond.
    User { user_id: UserId, before_ms: i64 },
    /// Revocations may have been missed (a reconnect): re-check.
    Resync,
}

/// Revoked access tokens, shared by every instance (Redis when set), and
/// live word of each new revocation.
///
/// # Errors
/// Every store failure is [`AccessStoreError::Unavailable`]; an in-process
/// store at its bound answers `Full` rather than forget a revocation.
/// - A revocation MUST be visible to `is_revoked` on every instance once the
///   call returns, and announced to every `subscribe`r (on every instance)
///   shortly after.
/// - `revoke_token` lasts until `claims.expires_at`; `revoke_user` for `keep`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RevocationStore: Send + Sync {
    async fn revoke_token(&self, claims: &TokenClaims) -> Result<(), AccessStoreError>;
    async fn revoke_user(
        &self,
        user: &UserId,
        before_ms: i64,
        keep: std::time::Duration,
    ) -> Result<(), AccessStoreError>;
    async fn is_revoked(&self, claims: &TokenClaims) -> Result<bool, AccessStoreError>;
    /// Revocations from now on; a lagging receiver should re-check, as for `Resync`.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revocation>;
}

impl Revocation {
    /// Whether this revocation ends the token with `claims`.
    pub fn covers(&self, claims: &TokenClaims) -> bool {
        match self {
            Revocation::Token { token_id } => *token_id == claims.token_id,
            Revocation::User { user_id, before_ms } => {
                *user_id == claims.user_id && claims.issued_at_ms < *before_ms
            }
            Revocation::Resync => false,
        }
    }
}

// ---------------------------------------------------------- rate limits

/// Failures of a [`RateLimiter`]: its store did not answer or answered with
/// something unusable. For logs only; a client never sees it.
#[derive(Debug, Error)]
#[error("rate limiter unavailable: {context}")]
pub struct RateLimitError {
    /// What was being done, in the adapter's words.
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl RateLimitError {
    pub fn new(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error (an unexpected reply).
    pub fn bare(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

/// A sliding-window quota: at most `max` events under `key` in any `window`.
/// All `max` may arrive at once; the next is refused until the oldest of them
/// is `window` old.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// What is counted, in the application's words (`chat:user:<id>`).
    pub key: String,
    pub max: u32,
    pub window: std::time::Duration,
}

/// One counted event, so it can be taken back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(pub String);

/// The answer to [`RateLimiter::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted against every quota.
    Admitted(EventId),
    /// At least one quota is full; nothing was counted. `retry_after` is when
    /// every full quota will have room again (at least one millisecond).
    Refused { retry_after: std::time::Duration },
}

/// One held slot of a concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotId(pub String);

/// Counts events in sliding windows and holds concurrency slots, for one
/// instance (in process) or for all of them (Redis). Slots are leases: one
/// its holder stops renewing (its instance crashed) frees itself when the
/// lease runs out.
///
/// # Errors
/// Every method returns [`RateLimitError`] when the store fails, and nothing
/// else; a refusal is an answer, not an error.
/// - `admit` MUST be atomic over all its quotas and across instances: either
///   the event is counted in every quota, or in none and it answers
///   `Refused` with the longest wait among the full ones.
/// - `withdraw` of an event that was never counted (or has left the window)
///   is not an error; neither is `reset` of an unknown key.
/// - `acquire` MUST be atomic across instances: of `max + 1` concurrent calls
///   for one key, exactly `max` get a slot. Expired slots never count.
/// - `renew` returns `false` when the slot is no longer held (released or
///   expired); `release` of a slot not held is not an error.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn admit(&self, quotas: &[Quota]) -> Result<Admission, RateLimitError>;
    /// Takes a counted event back out of the given keys' windows.
    async fn withdraw(&self, keys: &[String], event: &EventId) -> Result<(), RateLimitError>;
    /// Forgets every event counted under `key`.
    async fn reset(&self, key: &str) -> Result<(), RateLimitError>;
    /// One of `max` slots of `key`, held for `lease`; `None` when all are held.
    async fn acquire(
        &self,
        key: &str,
        max: u32,
        lease: std::time::Duration,
    ) -> Result<Option<SlotId>, RateLimitError>;
    async fn renew(
        &self,
        key: &str,
        slot: &SlotId,
        lease: std::time::Duration,
    ) -> Result<bool, RateLimitError>;
    async fn release(&self, key: &str, slot: &SlotId) -> Result<(), RateLimitError>;
}

// ---------------------------------------------------------------- handoff

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
    /// Changes from now on, from every instance. A lagging receiver should
    /// re-read what it shows.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<HandoffChange>;
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
}

// ------------------------------------------------------------ transcripts

/// Failures of a [`TranscriptStore`]: the store did not answer or answered
/// with something unusable. For logs only; clients see a stable code.
#[derive(Debug, Error)]
#[error("transcript store unavailable: {context}")]
pub struct TranscriptStoreError {
    /// What was being done, in the adapter's words.
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl TranscriptStoreError {
    pub fn new(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error (a malformed row, a timeout).
    pub fn bare(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

/// One page of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptPage {
    /// The newest entries before the requested position, oldest first.
    pub entries: Vec<crate::domain::transcript::TranscriptEntry>,
    /// The position of the oldest entry of this page when older entries
    /// exist: pass it as `before` for the page before this one.
    pub next: Option<crate::domain::transcript::TranscriptCursor>,
}

/// Every message of every conversation (the embedded SQLite file beside the
/// users, or MongoDB's `messages` collection), kept until erased or expired.
/// Entries are ordered by their [`TranscriptCursor`] position: time in
/// milliseconds, then seq.
///
/// [`TranscriptCursor`]: crate::domain::transcript::TranscriptCursor
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TranscriptStore: Send + Sync {
    /// Keeps `entry`.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails. Appending an entry whose
    /// `message_id` is already kept is not an error and changes nothing.
    async fn append(
        &self,
        entry: &crate::domain::transcript::TranscriptEntry,
    ) -> Result<(), TranscriptStoreError>;

    /// The newest `limit` entries of `session` strictly before `before`
    /// (before the end when `None`), oldest first, and where the page before
    /// them starts. An unknown session is an empty page.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails or holds an entry that
    /// does not parse.
    async fn page(
        &self,
        session: &SessionId,
        before: Option<crate::domain::transcript::TranscriptCursor>,
        limit: usize,
    ) -> Result<TranscriptPage, TranscriptStoreError>;

    /// The customer whose conversation `session` is, if any entry of it is kept.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn owner(&self, session: &SessionId) -> Result<Option<UserId>, TranscriptStoreError>;

    /// Forgets every entry of `session`; returns how many there were.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn erase(&self, session: &SessionId) -> Result<u64, TranscriptStoreError>;

    /// Forgets every entry said before `older_than`, of every session;
    /// returns how many.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn expire(&self, older_than: DateTime<Utc>) -> Result<u64, TranscriptStoreError>;
}
