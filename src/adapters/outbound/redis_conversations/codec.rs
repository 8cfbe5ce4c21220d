//! The stored form of conversation events: private JSON records, so the
//! domain types stay free of serde and the stored format can only change on
//! purpose (with the key layout's version).

use crate::application::ports::SharedEvent;
use crate::application::ports::StoreFailure;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::application::ports::ConversationStoreError;
use crate::domain::answer::{
    AnswerPhase, TokenUsage, ToolActivity, ToolCallId, ToolName, ToolState,
};
use crate::domain::budget::Quota;
use crate::domain::conversation::{
    AnswerCost, ClientMessageId, ConversationEvent, GenerationFailure, LoggedEvent, Seq,
};
use crate::domain::csat::Csat;
use crate::domain::feedback::Feedback;
use crate::domain::handoff::{AgentRef, Unavailability};
use crate::domain::queue::QueuePlace;
use crate::domain::time::{iso_millis, parse_iso};
use crate::domain::{MessageId, StreamStatus, UserId, Username};

/// One event as a log entry holds it. The seq is not stored: it follows from
/// the entry's position and the session's head.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    at: String,
    event: StoredKind,
}

/// One event as a live message carries it, in a JSON array per batch.
#[derive(Debug, Serialize, Deserialize)]
struct LiveEvent {
    seq: Seq,
    #[serde(flatten)]
    stored: StoredEvent,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StoredKind {
    UserMessage {
        message_id: String,
        client_message_id: Option<String>,
        content: String,
    },
    StreamStart {
        message_id: String,
        reply_to: String,
    },
    StreamToken {
        message_id: String,
        token: String,
    },
    GenerationFailed {
        message_id: String,
        failure: StoredFailure,
        /// The hint of `ai_unavailable`; absent from records written before
        /// it existed (read as `true`) and for every other failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retryable: Option<bool>,
    },
    StreamEnd {
        message_id: String,
        status: StoredStatus,
        /// Absent from records written before answers had a cost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<StoredUsage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quota: Option<StoredQuota>,
    },
    StreamReasoning {
        message_id: String,
        token: String,
    },
    StreamStatus {
        message_id: String,
        status: String,
    },
    ToolActivity {
        message_id: String,
        tool_call_id: String,
        name: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<String>,
    },
    EscalationResponse {
        message: String,
    },
    HandoffQueued {
        agents_online: u64,
        #[serde(default)]
        position: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    QueuePosition {
        position: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    AgentJoined {
        agent: StoredAgent,
    },
    AgentMessage {
        message_id: String,
        content: String,
        agent: StoredAgent,
    },
    AgentLeft {
        agent: StoredAgent,
    },
    HandoffResolved {
        agent: StoredAgent,
    },
    HandoffTimeout,
    HandoffCancelled,
    HandoffUnavailable {
        reason: StoredUnavailability,
    },
    HandoffWaiting {
        position: u64,
        agents_online: u64,
    },
    Feedback {
        message_id: String,
        rating: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    CsatRequest {
        session: String,
        agent: StoredAgent,
    },
    Csat {
        rating: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
}

/// An answer's usage, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredUsage {
    prompt: u64,
    completion: u64,
    reasoning: u64,
    total: u64,
    estimated: bool,
}

impl From<&TokenUsage> for StoredUsage {
    fn from(u: &TokenUsage) -> Self {
        Self {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            reasoning: u.reasoning_tokens,
            total: u.total_tokens,
            estimated: u.estimated,
        }
    }
}

impl From<StoredUsage> for TokenUsage {
    fn from(u: StoredUsage) -> Self {
        Self {
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
            reasoning_tokens: u.reasoning,
            total_tokens: u.total,
            estimated: u.estimated,
        }
    }
}

/// A user's standing after an answer, as stored (`resets_at` in Unix seconds).
#[derive(Debug, Serialize, Deserialize)]
struct StoredQuota {
    used: u64,
    limit: Option<u64>,
    resets_at: Option<i64>,
}

impl From<&Quota> for StoredQuota {
    fn from(q: &Quota) -> Self {
        Self {
            used: q.used,
            limit: q.limit,
            resets_at: q.resets_at.map(|t| t.timestamp()),
        }
    }
}

impl From<StoredQuota> for Quota {
    fn from(q: StoredQuota) -> Self {
        Self {
            used: q.used,
            limit: q.limit,
            resets_at: q
                .resets_at
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)),
        }
    }
}

fn stored_end(
    message_id: &MessageId,
    status: StreamStatus,
    cost: Option<&AnswerCost>,
) -> StoredKind {
    StoredKind::StreamEnd {
        message_id: message_id.as_str().to_owned(),
        status: status.into(),
        usage: cost.and_then(|c| c.usage.as_ref()).map(StoredUsage::from),
        quota: cost.and_then(|c| c.quota.as_ref()).map(StoredQuota::from),
    }
}

fn stored_tool(message_id: &MessageId, a: &ToolActivity) -> StoredKind {
    StoredKind::ToolActivity {
        message_id: message_id.as_str().to_owned(),
        tool_call_id: a.call_id.as_str().to_owned(),
        name: a.name.as_str().to_owned(),
        state: a.state.as_str().to_owned(),
        arguments: a.arguments.clone(),
    }
}

fn domain_tool(
    tool_call_id: &str,
    name: &str,
    state: &str,
    arguments: Option<String>,
) -> Result<ToolActivity, ConversationStoreError> {
    let bad = |what: &str| {
        ConversationStoreError::from(StoreFailure::bare(format!("stored tool {what} is invalid")))
    };
    Ok(ToolActivity {
        call_id: ToolCallId::parse(tool_call_id).map_err(|_| bad("call id"))?,
        name: ToolName::parse(name).map_err(|_| bad("name"))?,
        state: ToolState::parse(state).ok_or_else(|| bad("state"))?,
        arguments,
    })
}

fn wait_ms(place: &QueuePlace) -> Option<u64> {
    place
        .estimated_wait
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn place_back(position: u64, wait_ms: Option<u64>) -> QueuePlace {
    QueuePlace {
        position,
        estimated_wait: wait_ms.map(std::time::Duration::from_millis),
    }
}

/// Why a handoff was not offered, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredUnavailability {
    NoAgentOnline,
    /// `opens_at` in milliseconds.
    Closed {
        opens_at: i64,
    },
}

impl From<Unavailability> for StoredUnavailability {
    fn from(u: Unavailability) -> Self {
        match u {
            Unavailability::NoAgentOnline => Self::NoAgentOnline,
            Unavailability::Closed { opens_at } => Self::Closed {
                opens_at: opens_at.timestamp_millis(),
            },
        }
    }
}

impl From<StoredUnavailability> for Unavailability {
    fn from(u: StoredUnavailability) -> Self {
        match u {
            StoredUnavailability::NoAgentOnline => Self::NoAgentOnline,
            StoredUnavailability::Closed { opens_at } => Self::Closed {
                opens_at: chrono::DateTime::from_timestamp_millis(opens_at).unwrap_or_default(),
            },
        }
    }
}

/// An agent as handoff events name it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAgent {
    id: String,
    username: String,
}

impl From<&AgentRef> for StoredAgent {
    fn from(a: &AgentRef) -> Self {
        Self {
            id: a.id.as_str().to_owned(),
            username: a.username.as_str().to_owned(),
        }
    }
}

fn agent_ref(a: StoredAgent) -> Result<AgentRef, ConversationStoreError> {
    let id = UserId::parse(&a.id)
        .map_err(|e| StoreFailure::new(format!("stored agent id {:?}", a.id), e))?;
    let username = Username::parse(&a.username)
        .map_err(|e| StoreFailure::new(format!("stored agent name {:?}", a.username), e))?;
    Ok(AgentRef { id, username })
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredFailure {
    AiUnavailable,
    AiTimeout,
    AiStreamError,
    SessionExpired,
    SessionStoreUnavailable,
    Interrupted,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStatus {
    Completed,
    Failed,
    Cancelled,
}

impl From<GenerationFailure> for StoredFailure {
    fn from(f: GenerationFailure) -> Self {
        match f {
            GenerationFailure::AiUnavailable { .. } => Self::AiUnavailable,
            GenerationFailure::AiTimeout => Self::AiTimeout,
            GenerationFailure::AiStreamError => Self::AiStreamError,
            GenerationFailure::SessionExpired => Self::SessionExpired,
            GenerationFailure::SessionStoreUnavailable => Self::SessionStoreUnavailable,
            GenerationFailure::Interrupted => Self::Interrupted,
        }
    }
}

/// The stored failure and its hint back as the domain's failure.
fn domain_failure(f: StoredFailure, retryable: Option<bool>) -> GenerationFailure {
    match f {
        StoredFailure::AiUnavailable => GenerationFailure::AiUnavailable {
            retryable: retryable.unwrap_or(true),
        },
        other => other.into(),
    }
}

impl From<StoredFailure> for GenerationFailure {
    fn from(f: StoredFailure) -> Self {
        match f {
            StoredFailure::AiUnavailable => Self::AiUnavailable { retryable: true },
            StoredFailure::AiTimeout => Self::AiTimeout,
            StoredFailure::AiStreamError => Self::AiStreamError,
            StoredFailure::SessionExpired => Self::SessionExpired,
            StoredFailure::SessionStoreUnavailable => Self::SessionStoreUnavailable,
            StoredFailure::Interrupted => Self::Interrupted,
        }
    }
}

impl From<StreamStatus> for StoredStatus {
    fn from(s: StreamStatus) -> Self {
        match s {
            StreamStatus::Completed => Self::Completed,
            StreamStatus::Failed => Self::Failed,
            StreamStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<StoredStatus> for StreamStatus {
    fn from(s: StoredStatus) -> Self {
        match s {
            StoredStatus::Completed => Self::Completed,
            StoredStatus::Failed => Self::Failed,
            StoredStatus::Cancelled => Self::Cancelled,
        }
    }
}

fn stored(at: DateTime<Utc>, event: &ConversationEvent) -> StoredEvent {
    let id = |m: &MessageId| m.as_str().to_owned();
    let event = match event {
        ConversationEvent::UserMessage {
            message_id,
            client_message_id,
            content,
        } => StoredKind::UserMessage {
            message_id: id(message_id),
            client_message_id: client_message_id.as_ref().map(|c| c.as_str().to_owned()),
            content: content.clone(),
        },
        ConversationEvent::StreamStart {
            message_id,
            reply_to,
        } => StoredKind::StreamStart {
            message_id: id(message_id),
            reply_to: id(reply_to),
        },
        ConversationEvent::StreamToken { message_id, token } => StoredKind::StreamToken {
            message_id: id(message_id),
            token: token.clone(),
        },
        ConversationEvent::GenerationFailed {
            message_id,
            failure,
        } => StoredKind::GenerationFailed {
            message_id: id(message_id),
            failure: (*failure).into(),
            retryable: match failure {
                GenerationFailure::AiUnavailable { retryable } => Some(*retryable),
                _ => None,
            },
        },
        ConversationEvent::StreamEnd {
            message_id,
            status,
            cost,
        } => stored_end(message_id, *status, cost.as_deref()),
        ConversationEvent::StreamReasoning { message_id, token } => StoredKind::StreamReasoning {
            message_id: id(message_id),
            token: token.clone(),
        },
        ConversationEvent::StreamStatus { message_id, phase } => StoredKind::StreamStatus {
            message_id: id(message_id),
            status: phase.as_str().to_owned(),
        },
        ConversationEvent::ToolActivity {
            message_id,
            activity,
        } => stored_tool(message_id, activity),
        ConversationEvent::EscalationResponse { message } => StoredKind::EscalationResponse {
            message: message.clone(),
        },
        ConversationEvent::HandoffQueued {
            agents_online,
            place,
        } => StoredKind::HandoffQueued {
            agents_online: *agents_online,
            position: place.position,
            wait_ms: wait_ms(place),
        },
        ConversationEvent::QueuePosition { place } => StoredKind::QueuePosition {
            position: place.position,
            wait_ms: wait_ms(place),
        },
        ConversationEvent::AgentJoined { agent } => StoredKind::AgentJoined {
            agent: agent.into(),
        },
        ConversationEvent::AgentMessage {
            message_id,
            content,
            agent,
        } => StoredKind::AgentMessage {
            message_id: id(message_id),
            content: content.clone(),
            agent: agent.into(),
        },
        ConversationEvent::AgentLeft { agent } => StoredKind::AgentLeft {
            agent: agent.into(),
        },
        ConversationEvent::HandoffResolved { agent } => StoredKind::HandoffResolved {
            agent: agent.into(),
        },
        ConversationEvent::HandoffTimeout => StoredKind::HandoffTimeout,
        ConversationEvent::HandoffCancelled => StoredKind::HandoffCancelled,
        ConversationEvent::HandoffUnavailable { reason } => StoredKind::HandoffUnavailable {
            reason: (*reason).into(),
        },
        ConversationEvent::HandoffWaiting {
            position,
            agents_online,
        } => StoredKind::HandoffWaiting {
            position: *position,
            agents_online: *agents_online,
        },
        ConversationEvent::Feedback {
            message_id,
            feedback,
        } => StoredKind::Feedback {
            message_id: id(message_id),
            rating: feedback.rating.as_str().to_owned(),
            comment: feedback.comment().map(str::to_owned),
        },
        ConversationEvent::CsatRequest { session, agent } => StoredKind::CsatRequest {
            session: session.as_str().to_owned(),
            agent: agent.into(),
        },
        ConversationEvent::Csat { csat } => StoredKind::Csat {
            rating: i64::from(csat.rating.get()),
            comment: csat.comment.as_ref().map(|c| c.as_str().to_owned()),
        },
    };
    StoredEvent {
        at: iso_millis(at),
        event,
    }
}

fn message_id(raw: &str) -> Result<MessageId, ConversationStoreError> {
    MessageId::parse(raw).map_err(|e| {
        ConversationStoreError::from(StoreFailure::new(format!("stored message id {raw:?}"), e))
    })
}

fn domain_event(kind: StoredKind) -> Result<ConversationEvent, ConversationStoreError> {
    Ok(match kind {
        StoredKind::UserMessage {
            message_id: m,
            client_message_id,
            content,
        } => ConversationEvent::UserMessage {
            message_id: message_id(&m)?,
            client_message_id: client_message_id
                .map(|c| {
                    ClientMessageId::parse(&c).map_err(|e| {
                        ConversationStoreError::from(StoreFailure::new(
                            format!("stored client message id {c:?}"),
                            e,
                        ))
                    })
                })
                .transpose()?,
            content,
        },
        StoredKind::StreamStart {
            message_id: m,
            reply_to,
        } => ConversationEvent::StreamStart {
            message_id: message_id(&m)?,
            reply_to: message_id(&reply_to)?,
        },
        StoredKind::StreamToken {
            message_id: m,
            token,
        } => ConversationEvent::StreamToken {
            message_id: message_id(&m)?,
            token,
        },
        StoredKind::GenerationFailed {
            message_id: m,
            failure,
            retryable,
        } => ConversationEvent::GenerationFailed {
            message_id: message_id(&m)?,
            failure: domain_failure(failure, retryable),
        },
        StoredKind::StreamEnd {
            message_id: m,
            status,
            usage,
            quota,
        } => ConversationEvent::StreamEnd {
            message_id: message_id(&m)?,
            status: status.into(),
            cost: (usage.is_some() || quota.is_some()).then(|| {
                Box::new(AnswerCost {
                    usage: usage.map(Into::into),
                    quota: quota.map(Into::into),
                })
            }),
        },
        StoredKind::StreamReasoning {
            message_id: m,
            token,
        } => ConversationEvent::StreamReasoning {
            message_id: message_id(&m)?,
            token,
        },
        StoredKind::StreamStatus {
            message_id: m,
            status,
        } => ConversationEvent::StreamStatus {
            message_id: message_id(&m)?,
            phase: AnswerPhase::parse(&status).ok_or_else(|| {
                ConversationStoreError::from(StoreFailure::bare("stored stream status is invalid"))
            })?,
        },
        StoredKind::ToolActivity {
            message_id: m,
            tool_call_id,
            name,
            state,
            arguments,
        } => ConversationEvent::ToolActivity {
            message_id: message_id(&m)?,
            activity: Box::new(domain_tool(&tool_call_id, &name, &state, arguments)?),
        },
        StoredKind::EscalationResponse { message } => {
            ConversationEvent::EscalationResponse { message }
        }
        StoredKind::HandoffQueued {
            agents_online,
            position,
            wait_ms,
        } => ConversationEvent::HandoffQueued {
            agents_online,
            place: place_back(position, wait_ms),
        },
        StoredKind::QueuePosition { position, wait_ms } => ConversationEvent::QueuePosition {
            place: place_back(position, wait_ms),
        },
        StoredKind::AgentJoined { agent } => ConversationEvent::AgentJoined {
            agent: agent_ref(agent)?,
        },
        StoredKind::AgentMessage {
            message_id: m,
            content,
            agent,
        } => ConversationEvent::AgentMessage {
            message_id: message_id(&m)?,
            content,
            agent: agent_ref(agent)?,
        },
        StoredKind::AgentLeft { agent } => ConversationEvent::AgentLeft {
            agent: agent_ref(agent)?,
        },
        StoredKind::HandoffResolved { agent } => ConversationEvent::HandoffResolved {
            agent: agent_ref(agent)?,
        },
        StoredKind::HandoffTimeout => ConversationEvent::HandoffTimeout,
        StoredKind::HandoffCancelled => ConversationEvent::HandoffCancelled,
        StoredKind::HandoffUnavailable { reason } => ConversationEvent::HandoffUnavailable {
            reason: reason.into(),
        },
        StoredKind::HandoffWaiting {
            position,
            agents_online,
        } => ConversationEvent::HandoffWaiting {
            position,
            agents_online,
        },
        StoredKind::Feedback {
            message_id: m,
            rating,
            comment,
        } => ConversationEvent::Feedback {
            message_id: message_id(&m)?,
            feedback: Feedback::parse(&rating, comment.as_deref()).map_err(|e| {
                ConversationStoreError::from(StoreFailure::new(
                    format!("stored feedback {rating:?}"),
                    e,
                ))
            })?,
        },
        StoredKind::CsatRequest { session, agent } => ConversationEvent::CsatRequest {
            session: crate::domain::SessionId::parse(&session).map_err(|_| {
                ConversationStoreError::from(StoreFailure::bare(format!(
                    "stored session id {session:?}"
                )))
            })?,
            agent: agent_ref(agent)?,
        },
        StoredKind::Csat { rating, comment } => ConversationEvent::Csat {
            csat: Csat::parse(rating, comment.as_deref()).map_err(|e| {
                ConversationStoreError::from(StoreFailure::new(format!("stored csat {rating}"), e))
            })?,
        },
    })
}

fn from_stored(
    stored: StoredEvent,
) -> Result<(DateTime<Utc>, ConversationEvent), ConversationStoreError> {
    let at = parse_iso(&stored.at).ok_or_else(|| {
        ConversationStoreError::from(StoreFailure::bare(format!(
            "stored event time {:?} is not a time",
            stored.at
        )))
    })?;
    Ok((at, domain_event(stored.event)?))
}

/// A log entry for `event` at `at`.
pub(super) fn encode_entry(
    at: DateTime<Utc>,
    event: &ConversationEvent,
) -> Result<String, ConversationStoreError> {
    serde_json::to_string(&stored(at, event)).map_err(|e| {
        ConversationStoreError::from(StoreFailure::new("cannot encode a conversation event", e))
    })
}

/// Reads a log entry back as the event with the given seq.
pub(super) fn decode_entry(raw: &[u8], seq: Seq) -> Result<LoggedEvent, ConversationStoreError> {
    let stored: StoredEvent = serde_json::from_slice(raw).map_err(|e| {
        StoreFailure::new(format!("event log entry for seq {seq} is undecodable"), e)
    })?;
    let (at, event) = from_stored(stored)?;
    Ok(LoggedEvent { seq, at, event })
}

/// One live message: the publishing instance's id, a space, and the batch as
/// a JSON array (the append script builds the same form from log entries).
pub(super) fn encode_batch(
    origin: &str,
    events: &[SharedEvent],
) -> Result<String, ConversationStoreError> {
    let batch: Vec<LiveEvent> = events
        .iter()
        .map(|e| LiveEvent {
            seq: e.seq,
            stored: stored(e.at, &e.event),
        })
        .collect();
    let json = serde_json::to_string(&batch).map_err(|e| {
        ConversationStoreError::from(StoreFailure::new("cannot encode a live batch", e))
    })?;
    Ok(format!("{origin} {json}"))
}

/// The instance that published a live message, and its batch. A bare array
/// (what versions before the origin was added publish) has no origin.
pub(super) fn split_origin(raw: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if raw.first() == Some(&b'[') {
        return (None, raw);
    }
    match raw.iter().position(|&b| b == b' ') {
        Some(at) => (Some(&raw[..at]), &raw[at + 1..]),
        None => (None, raw),
    }
}

pub(super) fn decode_batch(raw: &[u8]) -> Result<Vec<LoggedEvent>, ConversationStoreError> {
    let batch: Vec<LiveEvent> = serde_json::from_slice(raw)
        .map_err(|e| StoreFailure::new("live message is undecodable", e))?;
    batch
        .into_iter()
        .map(|live| {
            let (at, event) = from_stored(live.stored)?;
            Ok(LoggedEvent {
                seq: live.seq,
                at,
                event,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(raw: &str) -> MessageId {
        MessageId::parse(raw).unwrap()
    }

    fn every_kind() -> Vec<ConversationEvent> {
        vec![
            ConversationEvent::UserMessage {
                message_id: mid("msg_u"),
                client_message_id: Some(ClientMessageId::parse("c-1").unwrap()),
                content: "héllo \"there\"\n".into(),
            },
            ConversationEvent::UserMessage {
                message_id: mid("msg_v"),
                client_message_id: None,
                content: String::new(),
            },
            ConversationEvent::StreamStart {
                message_id: mid("msg_a"),
                reply_to: mid("msg_u"),
            },
            ConversationEvent::StreamToken {
                message_id: mid("msg_a"),
                token: "tok".into(),
            },
            ConversationEvent::GenerationFailed {
                message_id: mid("msg_a"),
                failure: GenerationFailure::SessionStoreUnavailable,
            },
            ConversationEvent::StreamEnd {
                message_id: mid("msg_a"),
                status: StreamStatus::Cancelled,
                cost: None,
            },
            ConversationEvent::StreamEnd {
                message_id: mid("msg_b"),
                status: StreamStatus::Completed,
                cost: Some(Box::new(AnswerCost {
                    usage: Some(TokenUsage {
                        prompt_tokens: 12,
                        completion_tokens: 30,
                        reasoning_tokens: 20,
                        total_tokens: 42,
                        estimated: true,
                    }),
                    quota: Some(Quota {
                        used: 900,
                        limit: Some(1000),
                        resets_at: Some(parse_iso("2025-09-13T00:00:00Z").unwrap()),
                    }),
                })),
            },
            ConversationEvent::StreamEnd {
                message_id: mid("msg_c"),
                status: StreamStatus::Failed,
                cost: Some(Box::new(AnswerCost {
                    usage: None,
                    quota: Some(Quota {
                        used: 3,
                        limit: None,
                        resets_at: None,
                    }),
                })),
            },
            ConversationEvent::StreamReasoning {
                message_id: mid("msg_b"),
                token: "let me think".into(),
            },
            ConversationEvent::StreamStatus {
                message_id: mid("msg_b"),
                phase: AnswerPhase::Thinking,
            },
            ConversationEvent::ToolActivity {
                message_id: mid("msg_b"),
                activity: Box::new(ToolActivity {
                    call_id: ToolCallId::parse("call_1").unwrap(),
                    name: ToolName::parse("lookup").unwrap(),
                    state: ToolState::Finished,
                    arguments: Some("{\"q\":1}".into()),
                }),
            },
            ConversationEvent::ToolActivity {
                message_id: mid("msg_b"),
                activity: Box::new(ToolActivity {
                    call_id: ToolCallId::parse("call_2").unwrap(),
                    name: ToolName::parse("add").unwrap(),
                    state: ToolState::Started,
                    arguments: None,
                }),
            },
            ConversationEvent::EscalationResponse {
                message: "a human will answer".into(),
            },
            ConversationEvent::HandoffQueued {
                agents_online: 2,
                place: QueuePlace {
                    position: 3,
                    estimated_wait: Some(std::time::Duration::from_secs(90)),
                },
            },
            ConversationEvent::QueuePosition {
                place: QueuePlace {
                    position: 1,
                    estimated_wait: None,
                },
            },
            ConversationEvent::AgentJoined { agent: agent() },
            ConversationEvent::AgentMessage {
                message_id: mid("msg_g"),
                content: "I can help".into(),
                agent: agent(),
            },
            ConversationEvent::AgentLeft { agent: agent() },
            ConversationEvent::HandoffResolved { agent: agent() },
            ConversationEvent::HandoffTimeout,
            ConversationEvent::HandoffCancelled,
            ConversationEvent::HandoffUnavailable {
                reason: Unavailability::NoAgentOnline,
            },
            ConversationEvent::HandoffUnavailable {
                reason: Unavailability::Closed {
                    opens_at: parse_iso("2025-09-15T07:00:00Z").unwrap(),
                },
            },
            ConversationEvent::HandoffWaiting {
                position: 3,
                agents_online: 1,
            },
            ConversationEvent::Feedback {
                message_id: mid("msg_a"),
                feedback: Feedback::parse("down", Some("wrong \"date\"")).unwrap(),
            },
            ConversationEvent::Feedback {
                message_id: mid("msg_a"),
                feedback: Feedback::parse("up", None).unwrap(),
            },
            ConversationEvent::CsatRequest {
                session: crate::domain::SessionId::parse("sess_abc").unwrap(),
                agent: agent(),
            },
            ConversationEvent::Csat {
                csat: Csat::parse(4, Some("quick \"and\" kind")).unwrap(),
            },
            ConversationEvent::Csat {
                csat: Csat::parse(1, None).unwrap(),
            },
        ]
    }

    fn agent() -> AgentRef {
        AgentRef {
            id: UserId::parse("agent-1").unwrap(),
            username: Username::parse("bob").unwrap(),
        }
    }

    fn at() -> DateTime<Utc> {
        parse_iso("2025-09-12T10:30:00.123Z").unwrap()
    }

    #[test]
    fn entries_round_trip_every_kind() {
        for event in every_kind() {
            let raw = encode_entry(at(), &event).unwrap();
            let back = decode_entry(raw.as_bytes(), 7).unwrap();
            assert_eq!(
                back,
                LoggedEvent {
                    seq: 7,
                    at: at(),
                    event
                }
            );
        }
    }

    #[test]
    fn times_keep_exactly_their_milliseconds() {
        use chrono::SubsecRound;
        let at = parse_iso("2025-09-12T10:30:00.123456789Z").unwrap();
        let event = every_kind().remove(0);
        let raw = encode_entry(at, &event).unwrap();
        assert_eq!(
            decode_entry(raw.as_bytes(), 1).unwrap().at,
            at.trunc_subsecs(3)
        );
    }

    #[test]
    fn batches_round_trip_with_their_seqs() {
        let events: Vec<LoggedEvent> = every_kind()
            .into_iter()
            .zip(10..)
            .map(|(event, seq)| LoggedEvent {
                seq,
                at: at(),
                event,
            })
            .collect();
        let shared: Vec<SharedEvent> = events.iter().cloned().map(std::sync::Arc::new).collect();
        let raw = encode_batch("inst1", &shared).unwrap();
        let (origin, batch) = split_origin(raw.as_bytes());
        assert_eq!(origin, Some(&b"inst1"[..]));
        assert_eq!(decode_batch(batch).unwrap(), events);
    }

    /// The append script splices `"seq":N,` into each stored entry; that
    /// form must read back as the live form does.
    #[test]
    fn entries_with_a_spliced_seq_read_as_live_events() {
        let events = every_kind();
        let parts: Vec<String> = events
            .iter()
            .zip(7..)
            .map(|(event, seq)| {
                let entry = encode_entry(at(), event).unwrap();
                format!("{{\"seq\":{seq},{}", &entry[1..])
            })
            .collect();
        let raw = format!("[{}]", parts.join(","));
        let decoded = decode_batch(raw.as_bytes()).unwrap();
        let expected: Vec<LoggedEvent> = events
            .into_iter()
            .zip(7..)
            .map(|(event, seq)| LoggedEvent {
                seq,
                at: at(),
                event,
            })
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn origins_are_split_off_and_bare_arrays_have_none() {
        assert_eq!(split_origin(b"[1]"), (None, &b"[1]"[..]));
        assert_eq!(split_origin(b"ab [1]"), (Some(&b"ab"[..]), &b"[1]"[..]));
        assert_eq!(split_origin(b"junk"), (None, &b"junk"[..]));
    }

    #[test]
    fn every_failure_and_status_survives() {
        use GenerationFailure::*;
        for failure in [
            AiUnavailable { retryable: true },
            AiTimeout,
            AiStreamError,
            SessionExpired,
            SessionStoreUnavailable,
            Interrupted,
        ] {
            assert_eq!(
                GenerationFailure::from(StoredFailure::from(failure)),
                failure
            );
        }
        for status in [
            StreamStatus::Completed,
            StreamStatus::Failed,
            StreamStatus::Cancelled,
        ] {
            assert_eq!(StreamStatus::from(StoredStatus::from(status)), status);
        }
    }

    #[test]
    fn the_retryable_hint_survives_and_old_records_read_as_retryable() {
        for retryable in [true, false] {
            let event = ConversationEvent::GenerationFailed {
                message_id: mid("msg_a"),
                failure: GenerationFailure::AiUnavailable { retryable },
            };
            let raw = encode_entry(at(), &event).unwrap();
            assert_eq!(decode_entry(raw.as_bytes(), 1).unwrap().event, event);
        }
        // A record from before the hint; the stored name is built from its
        // parts because only the error catalogue may spell a client code.
        let stored_name = ["ai", "unavailable"].join("_");
        let old = serde_json::json!({
            "at": "2025-09-12T10:30:00.123Z",
            "event": {"type": "generation_failed", "message_id": "msg_a", "failure": stored_name},
        })
        .to_string();
        assert_eq!(
            decode_entry(old.as_bytes(), 1).unwrap().event,
            ConversationEvent::GenerationFailed {
                message_id: mid("msg_a"),
                failure: GenerationFailure::AiUnavailable { retryable: true },
            }
        );
        let timeout = ConversationEvent::GenerationFailed {
            message_id: mid("msg_a"),
            failure: GenerationFailure::AiTimeout,
        };
        let raw = encode_entry(at(), &timeout).unwrap();
        assert!(!raw.contains("retryable"), "{raw}");
    }

    #[test]
    fn undecodable_data_is_an_error() {
        let ok = r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"stream_token","message_id":"msg_a","token":"x"}}"#;
        assert!(decode_entry(ok.as_bytes(), 1).is_ok());
        for bad in [
            "not json",
            r#"{"at":"noon","event":{"type":"stream_token","message_id":"msg_a","token":"x"}}"#,
            r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"sneeze"}}"#,
            r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"stream_token","message_id":"../x","token":"x"}}"#,
            r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"stream_end","message_id":"msg_a","status":"maybe"}}"#,
            r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"user_message","message_id":"msg_a","client_message_id":"a b","content":"x"}}"#,
            r#"{"at":"2025-09-12T10:30:00.123Z","event":{"type":"feedback","message_id":"msg_a","rating":"meh"}}"#,
        ] {
            assert!(decode_entry(bad.as_bytes(), 1).is_err(), "accepted {bad}");
        }
        assert!(decode_entry(&[0xff, 0xfe], 1).is_err());
        assert!(decode_batch(b"{}").is_err());
        assert!(decode_batch(br#"[{"seq":1}]"#).is_err());
    }
}
