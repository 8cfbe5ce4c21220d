//! The JSON protocol of `/ws`: what a client may send (parsed into commands),
//! and how the server's replies and the conversation's events look on the
//! wire. Field names are camelCase and every message carries a `timestamp`.

use serde::Serialize;
use serde_json::Value;

use super::super::api_common::UserView;
use super::super::errors::{content_refusal, retry_after_ms, ErrorCode};
use crate::application::ResumeNotice;
use crate::domain::answer::{TokenUsage, ToolActivity};
use crate::domain::budget::Quota;
use crate::domain::conversation::{ClientMessageId, ConversationEvent, LoggedEvent, Seq};
use crate::domain::csat::Csat;
use crate::domain::feedback::Feedback;
use crate::domain::handoff::AgentRef;
use crate::domain::time::{iso_millis, IsoMillis};
use crate::domain::{ChatContent, MessageId};

/// The `type`s a client may send, as `/api/websocket/info` lists them.
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "chat",
    "stop",
    "human-escalation",
    "handoff-cancel",
    "ping",
    "auth",
    "feedback",
    "regenerate",
    "typing",
    "csat",
];
/// The `type`s the server sends.
pub const SERVER_MESSAGE_TYPES: &[&str] = &[
    "connected",
    "user-message",
    "ack",
    "stream-start",
    "stream-token",
    "stream-end",
    "error",
    "history-lost",
    "session-lost",
    "human-escalation-response",
    "handoff-queued",
    "agent-joined",
    "agent-message",
    "agent-left",
    "handoff-resolved",
    "handoff-timeout",
    "handoff-cancelled",
    "handoff-unavailable",
    "handoff-waiting",
    "queue-position",
    "pong",
    "authenticated",
    "feedback",
    // The answer's parts beside its text, and what it cost.
    "stream-reasoning",
    "stream-status",
    "tool-activity",
    "quota",
    // Live only, never logged: the agent's typing.
    "typing",
    // Satisfaction after a handoff.
    "csat-request",
    "csat",
];

/// A client message that passed validation.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    Chat {
        content: ChatContent,
        client_message_id: Option<ClientMessageId>,
    },
    Stop,
    HumanEscalation,
    /// The user no longer waits for a human.
    HandoffCancel,
    Ping,
    /// A fresh access token to extend the socket's authority.
    Auth {
        token: String,
    },
    /// The user rates one of the AI's answers.
    Feedback {
        message_id: MessageId,
        feedback: Feedback,
    },
    /// The user asks for another answer to their last message.
    Regenerate,
    /// The user started (`true`) or stopped typing.
    Typing {
        state: bool,
    },
    /// The user says how the conversation an agent resolved went.
    Csat {
        csat: Csat,
    },
}

/// Why a client frame was refused: the `error` code and a message that says
/// exactly what was wrong with it.
pub type Refusal = (ErrorCode, String);

/// Validates a client frame.
pub fn parse_client_message(text: &str, max_chars: usize) -> Result<ClientMessage, Refusal> {
    let refuse = |code: ErrorCode, message: &str| (code, message.to_owned());
    let value: Value = serde_json::from_str(text)
        .map_err(|_| refuse(ErrorCode::InvalidJson, "Messages must be JSON objects"))?;
    let Value::Object(fields) = value else {
        return Err(refuse(
            ErrorCode::InvalidMessage,
            "Messages must be JSON objects",
        ));
    };
    let kind = match fields.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(refuse(ErrorCode::InvalidMessage, "'type' must be a string")),
        None => {
            return Err(refuse(
                ErrorCode::InvalidMessage,
                "Messages need a 'type' field",
            ))
        }
    };
    match kind {
        "chat" => Ok(ClientMessage::Chat {
            content: parse_content(fields.get("content"), max_chars)?,
            client_message_id: parse_client_message_id(fields.get("clientMessageId"))?,
        }),
        "stop" => Ok(ClientMessage::Stop),
        "human-escalation" => Ok(ClientMessage::HumanEscalation),
        "handoff-cancel" => Ok(ClientMessage::HandoffCancel),
        "ping" => Ok(ClientMessage::Ping),
        "feedback" => parse_feedback(&fields),
        "regenerate" => Ok(ClientMessage::Regenerate),
        "typing" => parse_typing(&fields).map(|state| ClientMessage::Typing { state }),
        "csat" => parse_csat(&fields),
        "auth" => match fields.get("token") {
            Some(Value::String(token)) if !token.trim().is_empty() => Ok(ClientMessage::Auth {
                token: token.trim().to_owned(),
            }),
            _ => Err(refuse(
                ErrorCode::InvalidMessage,
                "An auth message needs a non-empty string 'token'",
            )),
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            Err((
                ErrorCode::UnknownType,
                format!(
                    "Unknown message type '{shown}'; expected {}",
                    CLIENT_MESSAGE_TYPES.join(", ")
                ),
            ))
        }
    }
}

/// A typing message's `state`: `true` (typing) or `false` (stopped).
pub fn parse_typing(fields: &serde_json::Map<String, Value>) -> Result<bool, Refusal> {
    match fields.get("state") {
        Some(Value::Bool(state)) => Ok(*state),
        _ => Err((
            ErrorCode::InvalidMessage,
            "A typing message needs a boolean 'state'".to_owned(),
        )),
    }
}

/// `{rating: 1-5, comment?}`; a `null` comment is no comment.
fn parse_csat(fields: &serde_json::Map<String, Value>) -> Result<ClientMessage, Refusal> {
    let invalid = || {
        let code = ErrorCode::InvalidCsat;
        (code, code.message().to_owned())
    };
    let rating = match fields.get("rating") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(invalid)?,
        _ => return Err(invalid()),
    };
    let comment = match fields.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err(invalid()),
    };
    let csat = Csat::parse(rating, comment).map_err(|e| (ErrorCode::from(&e), e.to_string()))?;
    Ok(ClientMessage::Csat { csat })
}

/// `{messageId, rating, comment?}`; a `null` comment is no comment.
fn parse_feedback(fields: &serde_json::Map<String, Value>) -> Result<ClientMessage, Refusal> {
    let invalid = || {
        let code = ErrorCode::InvalidFeedback;
        (code, code.message().to_owned())
    };
    let Some(Value::String(id)) = fields.get("messageId") else {
        return Err(invalid());
    };
    let message_id = MessageId::parse(id).map_err(|_| invalid())?;
    let Some(Value::String(rating)) = fields.get("rating") else {
        return Err(invalid());
    };
    let comment = match fields.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err(invalid()),
    };
    let feedback =
        Feedback::parse(rating, comment).map_err(|e| (ErrorCode::from(&e), e.to_string()))?;
    Ok(ClientMessage::Feedback {
        message_id,
        feedback,
    })
}

fn parse_content(content: Option<&Value>, max_chars: usize) -> Result<ChatContent, Refusal> {
    let raw = match content {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err((
                ErrorCode::InvalidContent,
                "'content' must be a string".to_owned(),
            ))
        }
        None => {
            return Err((
                ErrorCode::InvalidContent,
                "A chat message needs 'content'".to_owned(),
            ))
        }
    };
    ChatContent::parse(raw, max_chars).map_err(|e| content_refusal(&e))
}

/// Absent or `null` means the client does not use acknowledgements.
fn parse_client_message_id(raw: Option<&Value>) -> Result<Option<ClientMessageId>, Refusal> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ClientMessageId::parse(s).map(Some).map_err(|_| {
            (
                ErrorCode::InvalidMessage,
                "'clientMessageId' must be 1-64 characters of letters, digits, '_' or '-'"
                    .to_owned(),
            )
        }),
        Some(_) => Err((
            ErrorCode::InvalidMessage,
            "'clientMessageId' must be a string".to_owned(),
        )),
    }
}

/// A reply that concerns one connection only: it takes no place in the
/// conversation's sequence.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reply {
    #[serde(rename_all = "camelCase")]
    Connected {
        session_id: String,
        user: UserView,
        /// True when an earlier session was resumed with `?sessionId=`.
        resumed: bool,
        /// The session's latest seq.
        seq: Seq,
        /// Who answers: `bot`, `queued` (waiting for a human) or `assigned`.
        mode: &'static str,
        /// The agent holding the conversation, when `assigned`.
        agent: Option<AgentView>,
        /// The user's token usage in the current budget window (absent when
        /// the usage store could not say).
        #[serde(skip_serializing_if = "Option::is_none")]
        quota: Option<QuotaView>,
        timestamp: String,
    },
    /// A chat's (with the `clientMessageId` it was sent with) or a
    /// `feedback`'s (without one: `messageId` is the rated answer).
    #[serde(rename_all = "camelCase")]
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        /// Absent from a `csat`'s ack (it answers no message).
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// The seq of the acknowledged `user-message` or `feedback` event.
        seq: Seq,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    HistoryLost {
        from_seq: Seq,
        oldest_seq: Seq,
        seq: Seq,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// With `rate_limited`: how long to wait before sending again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// With `session_store_unavailable` before a 4503 close: reconnecting
        /// later may help.
        #[serde(skip_serializing_if = "Option::is_none")]
        retryable: Option<bool>,
        /// With `budget_exhausted`: when the budget window turns over.
        #[serde(skip_serializing_if = "Option::is_none")]
        resets_at: Option<String>,
        timestamp: String,
    },
    /// Where the user stands in the budget window, right after each
    /// answer's `stream-end`.
    #[serde(rename_all = "camelCase")]
    Quota {
        #[serde(flatten)]
        quota: QuotaView,
        timestamp: String,
    },
    /// The session vanished from the store under this open socket; the
    /// server closes with 4004 next.
    #[serde(rename_all = "camelCase")]
    SessionLost {
        session_id: String,
        timestamp: String,
    },
    Pong {
        timestamp: String,
    },
    /// The agent holding the conversation started or stopped typing (live
    /// only: no `seq`); `false` also when no refresh came for 5 s.
    Typing {
        state: bool,
        timestamp: String,
    },
    /// The `auth` message's token now holds the socket, until `expiresAt`.
    #[serde(rename_all = "camelCase")]
    Authenticated {
        expires_at: String,
        timestamp: String,
    },
}

pub fn now() -> String {
    iso_millis(chrono::Utc::now())
}

impl Reply {
    /// An `error` reply with the catalogue's message for `code`.
    pub fn error(code: ErrorCode, message_id: Option<&MessageId>) -> Self {
        Self::error_with(code, code.message(), message_id)
    }

    /// An `error` reply whose text says more than the catalogue's.
    pub fn error_with(
        code: ErrorCode,
        message: impl Into<String>,
        message_id: Option<&MessageId>,
    ) -> Self {
        Reply::Error {
            code,
            message: message.into(),
            message_id: message_id.map(|m| m.as_str().to_owned()),
            retry_after_ms: None,
            retryable: None,
            resets_at: None,
            timestamp: now(),
        }
    }

    /// The `rate_limited` error, saying how long to wait.
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let code = ErrorCode::RateLimited;
        Reply::Error {
            code,
            message: code.message().to_owned(),
            message_id: None,
            retry_after_ms: Some(retry_after_ms(retry_after)),
            retryable: None,
            resets_at: None,
            timestamp: now(),
        }
    }

    /// Said before the 4503 close: the conversation store stopped delivering
    /// to this socket, and resuming once it is back may help.
    pub fn store_unavailable() -> Self {
        let code = ErrorCode::SessionStoreUnavailable;
        Reply::Error {
            code,
            message: code.message().to_owned(),
            message_id: None,
            retry_after_ms: None,
            retryable: Some(true),
            resets_at: None,
            timestamp: now(),
        }
    }

    /// The `budget_exhausted` error, saying when the budget turns over.
    pub fn budget_exhausted(resets_at: chrono::DateTime<chrono::Utc>) -> Self {
        let code = ErrorCode::BudgetExhausted;
        Reply::Error {
            code,
            message: code.message().to_owned(),
            message_id: None,
            retry_after_ms: None,
            retryable: None,
            resets_at: Some(iso_millis(resets_at)),
            timestamp: now(),
        }
    }

    /// The `quota` message.
    pub fn quota(quota: &Quota) -> Self {
        Reply::Quota {
            quota: quota.into(),
            timestamp: now(),
        }
    }

    /// What a resuming client is told before its replay.
    pub fn for_notice(notice: &ResumeNotice) -> Self {
        match *notice {
            ResumeNotice::HistoryLost {
                from_seq,
                oldest_seq,
                seq,
            } => Reply::HistoryLost {
                from_seq,
                oldest_seq,
                seq,
                timestamp: now(),
            },
            ResumeNotice::LastSeqAhead { .. } => Self::error(ErrorCode::LastSeqAhead, None),
        }
    }

    pub fn to_json(&self) -> String {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A conversation event as clients see it, with its `seq`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum EventMessage<'a> {
    #[serde(rename_all = "camelCase")]
    UserMessage {
        seq: Seq,
        message_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<&'a str>,
        content: &'a str,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    StreamStart {
        seq: Seq,
        message_id: &'a str,
        reply_to: &'a str,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    StreamToken {
        seq: Seq,
        message_id: &'a str,
        token: &'a str,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        seq: Seq,
        code: ErrorCode,
        message: &'a str,
        message_id: &'a str,
        /// With `ai_unavailable` and `ai_timeout`: whether sending the chat
        /// again later may help.
        #[serde(skip_serializing_if = "Option::is_none")]
        retryable: Option<bool>,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    StreamEnd {
        seq: Seq,
        message_id: &'a str,
        status: &'a str,
        /// What the answer cost, when it reached the AI.
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<UsageView>,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    StreamReasoning {
        seq: Seq,
        message_id: &'a str,
        token: &'a str,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    StreamStatus {
        seq: Seq,
        message_id: &'a str,
        status: &'static str,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    ToolActivity {
        seq: Seq,
        message_id: &'a str,
        tool_call_id: &'a str,
        name: &'a str,
        state: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        arguments: Option<&'a str>,
        timestamp: Stamp,
    },
    HumanEscalationResponse {
        seq: Seq,
        message: &'a str,
        timestamp: Stamp,
    },
    /// `position` 1 is next; `estimatedWaitSeconds` is `null` until a
    /// conversation has been claimed recently.
    #[serde(rename_all = "camelCase")]
    HandoffQueued {
        seq: Seq,
        agents_online: u64,
        position: u64,
        estimated_wait_seconds: Option<u64>,
        timestamp: Stamp,
    },
    /// The waiting customer moved up the line.
    #[serde(rename_all = "camelCase")]
    QueuePosition {
        seq: Seq,
        position: u64,
        estimated_wait_seconds: Option<u64>,
        timestamp: Stamp,
    },
    AgentJoined {
        seq: Seq,
        agent: AgentView,
        timestamp: Stamp,
    },
    #[serde(rename_all = "camelCase")]
    AgentMessage {
        seq: Seq,
        message_id: &'a str,
        content: &'a str,
        agent: AgentView,
        timestamp: Stamp,
    },
    AgentLeft {
        seq: Seq,
        agent: AgentView,
        timestamp: Stamp,
    },
    HandoffResolved {
        seq: Seq,
        agent: AgentView,
        timestamp: Stamp,
    },
    HandoffTimeout {
        seq: Seq,
        timestamp: Stamp,
    },
    HandoffCancelled {
        seq: Seq,
        timestamp: Stamp,
    },
    /// Nobody can take the conversation now; the bot keeps answering.
    #[serde(rename_all = "camelCase")]
    HandoffUnavailable {
        seq: Seq,
        reason: &'static str,
        /// With `reason: closed`: when people answer again.
        #[serde(skip_serializing_if = "Option::is_none")]
        opens_at: Option<String>,
        timestamp: Stamp,
    },
    /// The customer chatted while queued: where they stand (1 = next).
    #[serde(rename_all = "camelCase")]
    HandoffWaiting {
        seq: Seq,
        position: u64,
        agents_online: u64,
        timestamp: Stamp,
    },
    /// The customer is asked how the conversation an agent resolved went.
    #[serde(rename_all = "camelCase")]
    CsatRequest {
        seq: Seq,
        session_id: &'a str,
        agent: AgentView,
        timestamp: Stamp,
    },
    /// The customer said how it went (this answer replaces any earlier one).
    Csat {
        seq: Seq,
        rating: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        comment: Option<&'a str>,
        timestamp: Stamp,
    },
    /// The user rated an answer (this rating replaces any earlier one).
    #[serde(rename_all = "camelCase")]
    Feedback {
        seq: Seq,
        message_id: &'a str,
        rating: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        comment: Option<&'a str>,
        timestamp: Stamp,
    },
}

/// An answer's usage on the wire.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub estimated: bool,
}

impl From<&TokenUsage> for UsageView {
    fn from(u: &TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.reasoning_tokens,
            total_tokens: u.total_tokens,
            estimated: u.estimated,
        }
    }
}

/// A user's standing in the budget window on the wire: `limit` and
/// `resetsAt` are `null` without a budget.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub used: u64,
    pub limit: Option<u64>,
    pub resets_at: Option<String>,
}

impl From<&Quota> for QuotaView {
    fn from(q: &Quota) -> Self {
        Self {
            used: q.used,
            limit: q.limit,
            resets_at: q.resets_at.map(iso_millis),
        }
    }
}

/// The `quota` message that follows this event on a user's socket: the
/// standing a `stream-end` carries.
pub fn quota_after(logged: &LoggedEvent) -> Option<String> {
    match &logged.event {
        ConversationEvent::StreamEnd {
            cost: Some(cost), ..
        } => cost.quota.as_ref().map(|q| Reply::quota(q).to_json()),
        _ => None,
    }
}

/// An agent as handoff messages name it: `{id, username}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentView {
    pub id: String,
    pub username: String,
}

impl From<&AgentRef> for AgentView {
    fn from(a: &AgentRef) -> Self {
        Self {
            id: a.id.as_str().to_owned(),
            username: a.username.as_str().to_owned(),
        }
    }
}

/// The wire JSON of a logged event: the same whether sent live, replayed on
/// the socket or read over REST.
pub fn event_value(logged: &LoggedEvent) -> Value {
    serde_json::to_value(event_message(logged)).unwrap_or_default()
}

/// [`event_value`] as text, for the socket.
pub fn event_json(logged: &LoggedEvent) -> String {
    exact_json(&event_message(logged))
}

/// An event's time as its message carries it: written straight into the
/// message's text, not made a string of its own first (one per token).
#[derive(Debug, Clone, Copy)]
struct Stamp(IsoMillis);

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// Most a thread's JSON buffer keeps between messages: a token's frame
/// needs a few hundred bytes; a rare long message's are let go.
const KEPT_JSON_BYTES: usize = 16 << 10;

/// `message` as JSON text exactly as long as it is, so the frame takes the
/// text as its bytes as it is (a `Message::Text` whose string has spare room
/// costs another allocation for a shared header) and no string grows while
/// it is written: written first into a buffer each thread keeps, then
/// copied once.
fn exact_json(message: &impl Serialize) -> String {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        // Never re-entered (serialising calls nothing that writes frames);
        // if it were, a string of its own would do.
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            return serde_json::to_string(message).unwrap_or_default();
        };
        buffer.clear();
        // Plain strings and numbers: serialising cannot fail.
        let json = match serde_json::to_writer(&mut *buffer, message) {
            Ok(()) => std::str::from_utf8(&buffer).map_or_else(|_| String::new(), str::to_owned),
            Err(_) => String::new(),
        };
        if buffer.capacity() > KEPT_JSON_BYTES {
            *buffer = Vec::new();
        }
        json
    })
}

fn event_message(logged: &LoggedEvent) -> EventMessage<'_> {
    let seq = logged.seq;
    let timestamp = Stamp(IsoMillis(logged.at));
    match &logged.event {
        ConversationEvent::UserMessage {
            message_id,
            client_message_id,
            content,
        } => EventMessage::UserMessage {
            seq,
            message_id: message_id.as_str(),
            client_message_id: client_message_id.as_ref().map(ClientMessageId::as_str),
            content,
            timestamp,
        },
        ConversationEvent::StreamStart {
            message_id,
            reply_to,
        } => EventMessage::StreamStart {
            seq,
            message_id: message_id.as_str(),
            reply_to: reply_to.as_str(),
            timestamp,
        },
        ConversationEvent::StreamToken { message_id, token } => EventMessage::StreamToken {
            seq,
            message_id: message_id.as_str(),
            token,
            timestamp,
        },
        ConversationEvent::GenerationFailed {
            message_id,
            failure,
        } => {
            let code = ErrorCode::from(*failure);
            EventMessage::Error {
                seq,
                code,
                message: code.message(),
                message_id: message_id.as_str(),
                retryable: failure.retryable(),
                timestamp,
            }
        }
        ConversationEvent::StreamEnd {
            message_id,
            status,
            cost,
        } => EventMessage::StreamEnd {
            seq,
            message_id: message_id.as_str(),
            status: status.as_str(),
            usage: cost
                .as_ref()
                .and_then(|c| c.usage.as_ref())
                .map(UsageView::from),
            timestamp,
        },
        ConversationEvent::StreamReasoning { message_id, token } => EventMessage::StreamReasoning {
            seq,
            message_id: message_id.as_str(),
            token,
            timestamp,
        },
        ConversationEvent::StreamStatus { message_id, phase } => EventMessage::StreamStatus {
            seq,
            message_id: message_id.as_str(),
            status: phase.as_str(),
            timestamp,
        },
        ConversationEvent::ToolActivity {
            message_id,
            activity,
        } => tool_message(seq, message_id, activity, timestamp),
        ConversationEvent::EscalationResponse { message } => {
            EventMessage::HumanEscalationResponse {
                seq,
                message,
                timestamp,
            }
        }
        ConversationEvent::Feedback {
            message_id,
            feedback,
        } => EventMessage::Feedback {
            seq,
            message_id: message_id.as_str(),
            rating: feedback.rating.as_str(),
            comment: feedback.comment(),
            timestamp,
        },
        other => handoff_message(seq, other, timestamp),
    }
}

fn tool_message<'a>(
    seq: Seq,
    message_id: &'a MessageId,
    activity: &'a ToolActivity,
    timestamp: Stamp,
) -> EventMessage<'a> {
    EventMessage::ToolActivity {
        seq,
        message_id: message_id.as_str(),
        tool_call_id: activity.call_id.as_str(),
        name: activity.name.as_str(),
        state: activity.state.as_str(),
        arguments: activity.arguments.as_deref(),
        timestamp,
    }
}

/// The handoff events' messages (the rest are [`event_message`]'s).
fn handoff_message(seq: Seq, event: &ConversationEvent, timestamp: Stamp) -> EventMessage<'_> {
    match event {
        ConversationEvent::HandoffQueued {
            agents_online,
            place,
        } => EventMessage::HandoffQueued {
            seq,
            agents_online: *agents_online,
            position: place.position,
            estimated_wait_seconds: place.estimated_wait_seconds(),
            timestamp,
        },
        ConversationEvent::QueuePosition { place } => EventMessage::QueuePosition {
            seq,
            position: place.position,
            estimated_wait_seconds: place.estimated_wait_seconds(),
            timestamp,
        },
        ConversationEvent::AgentJoined { agent } => EventMessage::AgentJoined {
            seq,
            agent: agent.into(),
            timestamp,
        },
        ConversationEvent::AgentMessage {
            message_id,
            content,
            agent,
        } => EventMessage::AgentMessage {
            seq,
            message_id: message_id.as_str(),
            content,
            agent: agent.into(),
            timestamp,
        },
        ConversationEvent::AgentLeft { agent } => EventMessage::AgentLeft {
            seq,
            agent: agent.into(),
            timestamp,
        },
        ConversationEvent::HandoffResolved { agent } => EventMessage::HandoffResolved {
            seq,
            agent: agent.into(),
            timestamp,
        },
        ConversationEvent::HandoffTimeout => EventMessage::HandoffTimeout { seq, timestamp },
        ConversationEvent::HandoffUnavailable { reason } => EventMessage::HandoffUnavailable {
            seq,
            reason: reason.as_str(),
            opens_at: reason.opens_at().map(iso_millis),
            timestamp,
        },
        ConversationEvent::HandoffWaiting {
            position,
            agents_online,
        } => EventMessage::HandoffWaiting {
            seq,
            position: *position,
            agents_online: *agents_online,
            timestamp,
        },
        ConversationEvent::CsatRequest { session, agent } => EventMessage::CsatRequest {
            seq,
            session_id: session.as_str(),
            agent: agent.into(),
            timestamp,
        },
        ConversationEvent::Csat { csat } => EventMessage::Csat {
            seq,
            rating: csat.rating.get(),
            comment: csat.comment.as_ref().map(|c| c.as_str()),
            timestamp,
        },
        // The chat events are all matched in `event_message`.
        _ => EventMessage::HandoffCancelled { seq, timestamp },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StreamStatus;
    use chrono::TimeZone;

    fn code(text: &str) -> ErrorCode {
        parse_client_message(text, 10).unwrap_err().0
    }

    #[test]
    fn bad_input_gets_specific_codes() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("{}"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type": 5}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type": "dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type": "chat"}"#), ErrorCode::InvalidContent);
        assert_eq!(
            code(r#"{"type": "chat", "content": 42}"#),
            ErrorCode::InvalidContent
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "   "}"#),
            ErrorCode::InvalidContent
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "12345678901"}"#),
            ErrorCode::ContentTooLong
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "hi", "clientMessageId": "a b"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "hi", "clientMessageId": 7}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn good_input_parses() {
        assert_eq!(
            parse_client_message(r#"{"type":"chat","content":"hi"}"#, 10).unwrap(),
            ClientMessage::Chat {
                content: ChatContent::parse("hi", 10).unwrap(),
                client_message_id: None
            }
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"chat","content":"hi","clientMessageId":"c1"}"#,
                10
            )
            .unwrap(),
            ClientMessage::Chat {
                content: ChatContent::parse("hi", 10).unwrap(),
                client_message_id: Some(ClientMessageId::parse("c1").unwrap())
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"stop"}"#, 10).unwrap(),
            ClientMessage::Stop
        );
        assert_eq!(
            parse_client_message(r#"{"type":"human-escalation","message":"help"}"#, 10).unwrap(),
            ClientMessage::HumanEscalation
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#, 10).unwrap(),
            ClientMessage::Ping
        );
        assert_eq!(
            parse_client_message(r#"{"type":"auth","token":" a.b.c "}"#, 10).unwrap(),
            ClientMessage::Auth {
                token: "a.b.c".into()
            }
        );
    }

    #[test]
    fn feedback_and_regenerate_parse_and_bad_feedback_says_why() {
        assert_eq!(
            parse_client_message(r#"{"type":"regenerate"}"#, 10).unwrap(),
            ClientMessage::Regenerate
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"feedback","messageId":"msg_1","rating":"down","comment":"wrong"}"#,
                10
            )
            .unwrap(),
            ClientMessage::Feedback {
                message_id: MessageId::parse("msg_1").unwrap(),
                feedback: Feedback::parse("down", Some("wrong")).unwrap(),
            }
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"feedback","messageId":"msg_1","rating":"up","comment":null}"#,
                10
            )
            .unwrap(),
            ClientMessage::Feedback {
                message_id: MessageId::parse("msg_1").unwrap(),
                feedback: Feedback::parse("up", None).unwrap(),
            }
        );
        for bad in [
            r#"{"type":"feedback","rating":"up"}"#,
            r#"{"type":"feedback","messageId":"a b","rating":"up"}"#,
            r#"{"type":"feedback","messageId":"msg_1"}"#,
            r#"{"type":"feedback","messageId":"msg_1","rating":"meh"}"#,
            r#"{"type":"feedback","messageId":"msg_1","rating":"up","comment":5}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::InvalidFeedback, "{bad}");
        }
        let long = serde_json::json!({"type": "feedback", "messageId": "msg_1", "rating": "up",
            "comment": "x".repeat(crate::domain::feedback::COMMENT_MAX_CHARS + 1)});
        let (code, message) = parse_client_message(&long.to_string(), 10).unwrap_err();
        assert_eq!(code, ErrorCode::CommentTooLong);
        assert!(message.contains("1000"), "{message}");
    }

    #[test]
    fn feedback_events_carry_the_rating_and_the_comment_when_there_is_one() {
        let at = chrono::Utc
            .with_ymd_and_hms(2025, 9, 12, 10, 30, 0)
            .unwrap();
        let rated = |comment| LoggedEvent {
            seq: 5,
            at,
            event: ConversationEvent::Feedback {
                message_id: MessageId::parse("msg_1").unwrap(),
                feedback: Feedback::parse("down", comment).unwrap(),
            },
        };
        assert_eq!(
            event_value(&rated(Some("too vague"))),
            serde_json::json!({"type": "feedback", "seq": 5, "messageId": "msg_1", "rating": "down", "comment": "too vague", "timestamp": "2025-09-12T10:30:00.000Z"})
        );
        assert!(event_value(&rated(None)).get("comment").is_none());
    }

    #[test]
    fn an_auth_message_needs_a_token() {
        for bad in [
            r#"{"type":"auth"}"#,
            r#"{"type":"auth","token":""}"#,
            r#"{"type":"auth","token":42}"#,
        ] {
            let (code, _) = parse_client_message(bad, 10).unwrap_err();
            assert_eq!(code, ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn events_serialise_to_the_node_wire_format_plus_seq() {
        let at = chrono::Utc
            .with_ymd_and_hms(2025, 9, 12, 10, 30, 0)
            .unwrap();
        let logged = LoggedEvent {
            seq: 7,
            at,
            event: ConversationEvent::StreamToken {
                message_id: MessageId::parse("msg_1").unwrap(),
                token: "Hello".into(),
            },
        };
        assert_eq!(
            event_value(&logged),
            serde_json::json!({"type": "stream-token", "seq": 7, "messageId": "msg_1", "token": "Hello", "timestamp": "2025-09-12T10:30:00.000Z"})
        );
        // On the socket: byte for byte, in this field order, with no spare room.
        let frame = event_json(&logged);
        assert_eq!(
            frame,
            r#"{"type":"stream-token","seq":7,"messageId":"msg_1","token":"Hello","timestamp":"2025-09-12T10:30:00.000Z"}"#
        );
        assert_eq!(frame.capacity(), frame.len());
        // A frame longer than the buffer keeps, then a short one again.
        for token in ["\"quoted\"\n".repeat(4000), "é".into()] {
            let logged = LoggedEvent {
                event: ConversationEvent::StreamToken {
                    message_id: MessageId::parse("msg_1").unwrap(),
                    token,
                },
                ..logged.clone()
            };
            assert_eq!(
                event_json(&logged),
                serde_json::to_string(&event_message(&logged)).unwrap()
            );
        }
        let end = LoggedEvent {
            seq: 8,
            at,
            event: ConversationEvent::StreamEnd {
                message_id: MessageId::parse("msg_1").unwrap(),
                status: StreamStatus::Completed,
                cost: None,
            },
        };
        assert_eq!(event_value(&end)["status"], "completed");
        assert!(event_value(&end).get("usage").is_none(), "additive only");
        let err = Reply::error(ErrorCode::InvalidJson, None).to_json();
        assert!(!err.contains("messageId"), "{err}");
    }

    #[test]
    fn handoff_unavailable_and_waiting_say_why_the_bot_is_or_is_not_answering() {
        use crate::domain::handoff::Unavailability;
        let at = chrono::Utc
            .with_ymd_and_hms(2025, 9, 12, 10, 30, 0)
            .unwrap();
        let unavailable = LoggedEvent {
            seq: 4,
            at,
            event: ConversationEvent::HandoffUnavailable {
                reason: Unavailability::NoAgentOnline,
            },
        };
        assert_eq!(
            event_value(&unavailable),
            serde_json::json!({"type": "handoff-unavailable", "seq": 4, "reason": "no_agent_online", "timestamp": "2025-09-12T10:30:00.000Z"})
        );
        let waiting = LoggedEvent {
            seq: 9,
            at,
            event: ConversationEvent::HandoffWaiting {
                position: 2,
                agents_online: 0,
            },
        };
        assert_eq!(
            event_value(&waiting),
            serde_json::json!({"type": "handoff-waiting", "seq": 9, "position": 2, "agentsOnline": 0, "timestamp": "2025-09-12T10:30:00.000Z"})
        );
    }

    #[test]
    fn the_answers_parts_and_cost_on_the_wire() {
        use crate::domain::answer::{AnswerPhase, ToolCallId, ToolName, ToolState};
        use crate::domain::conversation::AnswerCost;
        let at = chrono::Utc
            .with_ymd_and_hms(2025, 9, 12, 10, 30, 0)
            .unwrap();
        let m = || MessageId::parse("msg_1").unwrap();
        let logged = |seq, event| LoggedEvent { seq, at, event };
        let ts = "2025-09-12T10:30:00.000Z";
        assert_eq!(
            event_value(&logged(
                3,
                ConversationEvent::StreamStatus {
                    message_id: m(),
                    phase: AnswerPhase::Thinking
                }
            )),
            serde_json::json!({"type": "stream-status", "seq": 3, "messageId": "msg_1", "status": "thinking", "timestamp": ts})
        );
        assert_eq!(
            event_value(&logged(
                4,
                ConversationEvent::StreamReasoning {
                    message_id: m(),
                    token: "hmm".into()
                }
            )),
            serde_json::json!({"type": "stream-reasoning", "seq": 4, "messageId": "msg_1", "token": "hmm", "timestamp": ts})
        );
        let tool = |arguments: Option<&str>| {
            event_value(&logged(
                5,
                ConversationEvent::ToolActivity {
                    message_id: m(),
                    activity: Box::new(ToolActivity {
                        call_id: ToolCallId::parse("call_1").unwrap(),
                        name: ToolName::parse("lookup").unwrap(),
                        state: ToolState::Finished,
                        arguments: arguments.map(str::to_owned),
                    }),
                },
            ))
        };
        assert_eq!(
            tool(None),
            serde_json::json!({"type": "tool-activity", "seq": 5, "messageId": "msg_1", "toolCallId": "call_1", "name": "lookup", "state": "finished", "timestamp": ts})
        );
        assert_eq!(tool(Some("{}"))["arguments"], "{}");
        let quota = Quota {
            used: 42,
            limit: Some(100),
            resets_at: Some(chrono::Utc.with_ymd_and_hms(2025, 9, 13, 0, 0, 0).unwrap()),
        };
        let end = logged(
            6,
            ConversationEvent::StreamEnd {
                message_id: m(),
                status: StreamStatus::Completed,
                cost: Some(Box::new(AnswerCost {
                    usage: Some(TokenUsage {
                        prompt_tokens: 10,
                        completion_tokens: 30,
                        reasoning_tokens: 2,
                        total_tokens: 40,
                        estimated: true,
                    }),
                    quota: Some(quota),
                })),
            },
        );
        assert_eq!(
            event_value(&end)["usage"],
            serde_json::json!({"promptTokens": 10, "completionTokens": 30, "reasoningTokens": 2, "totalTokens": 40, "estimated": true})
        );
        let after: Value = serde_json::from_str(&quota_after(&end).unwrap()).unwrap();
        assert_eq!(after["type"], "quota");
        assert_eq!(after["used"], 42);
        assert_eq!(after["limit"], 100);
        assert_eq!(after["resetsAt"], "2025-09-13T00:00:00.000Z");
        let unlimited: Value = serde_json::from_str(
            &Reply::quota(&Quota {
                used: 1,
                limit: None,
                resets_at: None,
            })
            .to_json(),
        )
        .unwrap();
        assert!(unlimited["limit"].is_null() && unlimited["resetsAt"].is_null());
    }

    #[test]
    fn ai_failures_say_whether_trying_again_can_help() {
        use crate::domain::conversation::GenerationFailure;
        let failed = |failure| LoggedEvent {
            seq: 3,
            at: chrono::Utc::now(),
            event: ConversationEvent::GenerationFailed {
                message_id: MessageId::parse("msg_1").unwrap(),
                failure,
            },
        };
        let v = event_value(&failed(GenerationFailure::AiUnavailable {
            retryable: false,
        }));
        assert_eq!(v["code"], ErrorCode::AiUnavailable.as_str());
        assert_eq!(v["retryable"], false);
        let v = event_value(&failed(GenerationFailure::AiUnavailable {
            retryable: true,
        }));
        assert_eq!(v["retryable"], true);
        let v = event_value(&failed(GenerationFailure::AiTimeout));
        assert_eq!(v["code"], ErrorCode::AiTimeout.as_str());
        assert_eq!(v["retryable"], true);
        let v = event_value(&failed(GenerationFailure::AiStreamError));
        assert!(v.get("retryable").is_none(), "{v}");
        let v = event_value(&failed(GenerationFailure::SessionStoreUnavailable));
        assert_eq!(v["code"], ErrorCode::SessionStoreUnavailable.as_str());
        assert_eq!(v["retryable"], true, "a store outage passes");
    }
}

/// Client frames as a hostile client writes them: any text, any JSON.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::domain::ContentError;
    use proptest::prelude::*;

    /// The codes a refused frame may get; anything else is a bug.
    const REFUSALS: &[ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::InvalidContent,
        ErrorCode::ContentTooLong,
        ErrorCode::InvalidFeedback,
        ErrorCode::CommentTooLong,
    ];

    /// Any JSON value, nested a few levels, with the protocol's own words
    /// (`type`, `content`, the message types) common among the keys and strings.
    fn json() -> impl Strategy<Value = Value> {
        let word = prop_oneof![
            3 => prop::sample::select(vec![
                "type", "content", "clientMessageId", "token", "chat", "stop",
                "human-escalation", "ping", "auth", "feedback", "regenerate",
                "messageId", "rating", "comment", "up", "down", "",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            word.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(word.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check(text: &str, max: usize) -> Result<(), TestCaseError> {
        match parse_client_message(text, max) {
            Ok(ClientMessage::Chat { content, .. }) => {
                let chars = content.as_str().chars().count();
                prop_assert!(chars >= 1 && chars <= max, "{} chars", chars);
                prop_assert!(ChatContent::parse(content.as_str(), max).is_ok());
            }
            Ok(ClientMessage::Auth { token }) => {
                prop_assert!(!token.is_empty() && token.trim() == token);
            }
            Ok(_) => {}
            Err((code, message)) => {
                prop_assert!(REFUSALS.contains(&code), "{:?}", code);
                // Says what was wrong without echoing a long frame back.
                prop_assert!(message.chars().count() <= 200, "{}", message);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_a_command_or_a_typed_refusal(text in any::<String>(), max in 1usize..50) {
            check(&text, max)?;
        }

        #[test]
        fn any_json_is_a_command_or_a_typed_refusal(v in json(), max in 1usize..50) {
            check(&v.to_string(), max)?;
        }

        #[test]
        fn a_chat_is_accepted_exactly_when_its_content_is(
            content in any::<String>(),
            id in prop::option::of("[A-Za-z0-9_-]{1,64}"),
            max in 1usize..50,
        ) {
            let frame = serde_json::json!({"type": "chat", "content": content, "clientMessageId": id});
            let parsed = parse_client_message(&frame.to_string(), max);
            match ChatContent::parse(&content, max) {
                Ok(expected) => prop_assert_eq!(
                    parsed.unwrap(),
                    ClientMessage::Chat {
                        content: expected,
                        client_message_id: id.map(|i| ClientMessageId::parse(&i).unwrap()),
                    }
                ),
                Err(ContentError::Blank) => {
                    prop_assert_eq!(parsed.unwrap_err().0, ErrorCode::InvalidContent);
                }
                Err(ContentError::TooLong { .. }) => {
                    prop_assert_eq!(parsed.unwrap_err().0, ErrorCode::ContentTooLong);
                }
            }
        }
    }
}
