//! The AI port: a source of streamed answers (an upstream, the echo model,
//! or a decorator around one), its failures, and what `/health` says of it.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use thiserror::Error;

use crate::domain::answer::AnswerDelta;
use crate::domain::{ChatMessage, SessionId, UserId};

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

/// What a request to the AI is for. The upstream is asked the same way
/// either way (its usual streaming endpoint, the prompt as the query); the
/// echo model answers each in its own deterministic way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AiPurpose {
    /// An answer to the customer's chat.
    #[default]
    Answer,
    /// A summary of the conversation so far for the agent taking it.
    Summary,
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
    pub purpose: AiPurpose,
}

/// The answer as it arrives: one item per delta (text, reasoning, tool
/// activity, usage), never an empty text or reasoning. The stream ends after
/// the last delta; an `Err` item ends it early. Dropping the stream MUST abort
/// the underlying request.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<AnswerDelta, AiError>> + Send>>;

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

/// Counts tokens the way a model's tokenizer would, for answers whose
/// upstream did not say what they cost.
///
/// # Errors
/// None: counting cannot fail. `count` MUST NOT block the runtime (a long
/// text takes milliseconds); it returns one count per text, in order.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TokenCounter: Send + Sync {
    async fn count(&self, texts: Vec<String>) -> Vec<u64>;
}
