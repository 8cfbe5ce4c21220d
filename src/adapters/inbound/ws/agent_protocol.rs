//! The JSON protocol of `/agent/ws`: what an agent may send (parsed into
//! commands) and what the agent socket says besides the conversations'
//! events, which arrive exactly as on `/ws` with their `sessionId` added.

use serde::Serialize;
use serde_json::{Map, Value};

use super::super::errors::{content_refusal, ErrorCode};
use super::protocol::{event_value, now, parse_typing, AgentView, Refusal};
use crate::application::csat::GivenRating;
use crate::domain::conversation::{ClientMessageId, LoggedEvent, Seq};
use crate::domain::desk::DeskAgent;
use crate::domain::handoff::Handoff;
use crate::domain::time::iso_millis;
use crate::domain::{ChatContent, SessionId};

/// The `type`s an agent may send, as `/api/websocket/info` lists them.
pub const AGENT_CLIENT_MESSAGE_TYPES: &[&str] = &[
    "claim",
    "agent-message",
    "release",
    "resolve",
    "watch",
    "status",
    "ping",
    "auth",
    "typing",
];

/// The `type`s the agent socket sends: its own, then the conversation events
/// of `/ws` (each with `sessionId`).
pub const AGENT_SERVER_MESSAGE_TYPES: &[&str] = &[
    "connected",
    "queue",
    "conversation-assigned",
    "conversation-removed",
    "status",
    "ack",
    "error",
    "history-lost",
    "pong",
    "authenticated",
    "user-message",
    "stream-start",
    "stream-token",
    "stream-end",
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
    "feedback",
    // The answer's parts beside its text (the customer's `quota` is theirs alone).
    "stream-reasoning",
    "stream-status",
    "tool-activity",
    // Live only, never logged: the customer's typing, and the summary of a
    // conversation the agent took.
    "typing",
    "handoff-summary",
    // Satisfaction: `csat-request` is in the log (replayed by `watch`);
    // `csat` reaches the agent who resolved the conversation, live.
    "csat-request",
    "csat",
    // Every agent's presence and load, on every change (live only).
    "agents",
];

/// What an agent asks for.
#[derive(Debug, PartialEq)]
pub enum AgentAction {
    Claim,
    Message {
        content: ChatContent,
        client_message_id: Option<ClientMessageId>,
    },
    Release,
    Resolve,
    /// Replay what came after `last_seq`, then follow the conversation live.
    Watch {
        last_seq: Seq,
    },
}

impl AgentAction {
    /// The `action` an `ack` names.
    pub fn name(&self) -> &'static str {
        match self {
            AgentAction::Claim => "claim",
            AgentAction::Message { .. } => "agent-message",
            AgentAction::Release => "release",
            AgentAction::Resolve => "resolve",
            AgentAction::Watch { .. } => "watch",
        }
    }
}

/// A validated agent message.
#[derive(Debug, PartialEq)]
pub enum AgentCommand {
    /// An action on one conversation; `request_id` is echoed in its answer.
    Act {
        session: SessionId,
        action: AgentAction,
        request_id: Option<String>,
    },
    Ping,
    Auth {
        token: String,
    },
    /// The agent is `away` (nothing is auto-assigned to them) or available.
    Status {
        away: bool,
    },
    /// The agent started or stopped typing to the customer (no `ack`).
    Typing {
        session: SessionId,
        state: bool,
    },
}

/// An agent's status on the wire.
pub fn status_word(away: bool) -> &'static str {
    if away {
        "away"
    } else {
        "available"
    }
}

/// A refused agent frame: the refusal and the `requestId` it carried, if any.
pub type AgentRefusal = (Refusal, Option<String>);

/// Validates an agent frame.
pub fn parse_agent_message(text: &str, max_chars: usize) -> Result<AgentCommand, AgentRefusal> {
    let refuse = |code: ErrorCode, message: &str| (code, message.to_owned());
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Err((
            refuse(ErrorCode::InvalidJson, "Messages must be JSON objects"),
            None,
        ));
    };
    let request_id = match fields.get("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if ClientMessageId::parse(id).is_ok() => Some(id.clone()),
        Some(_) => {
            let why = "'requestId' must be 1-64 characters of letters, digits, '_' or '-'";
            return Err((refuse(ErrorCode::InvalidMessage, why), None));
        }
    };
    let kind = match fields.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            let why = "Messages need a string 'type'";
            return Err((refuse(ErrorCode::InvalidMessage, why), request_id));
        }
    };
    let simple = match kind {
        "ping" => Some(AgentCommand::Ping),
        "auth" => match fields.get("token") {
            Some(Value::String(t)) if !t.trim().is_empty() => Some(AgentCommand::Auth {
                token: t.trim().to_owned(),
            }),
            _ => {
                let why = "An auth message needs a non-empty string 'token'";
                return Err((refuse(ErrorCode::InvalidMessage, why), request_id));
            }
        },
        "status" => match fields.get("status").and_then(Value::as_str) {
            Some("available") => Some(AgentCommand::Status { away: false }),
            Some("away") => Some(AgentCommand::Status { away: true }),
            _ => {
                let why = "A status message needs a 'status' of 'available' or 'away'";
                return Err((refuse(ErrorCode::InvalidMessage, why), request_id));
            }
        },
        _ => None,
    };
    if let Some(command) = simple {
        return Ok(command);
    }
    if kind == "typing" {
        let typing = session_of(&fields).and_then(|session| {
            Ok(AgentCommand::Typing {
                session,
                state: parse_typing(&fields)?,
            })
        });
        return typing.map_err(|r| (r, request_id));
    }
    match action(kind, &fields, max_chars) {
        Ok(action) => Ok(AgentCommand::Act {
            session: session_of(&fields).map_err(|r| (r, request_id.clone()))?,
            action,
            request_id,
        }),
        Err(refusal) => Err((refusal, request_id)),
    }
}

fn action(
    kind: &str,
    fields: &Map<String, Value>,
    max_chars: usize,
) -> Result<AgentAction, Refusal> {
    match kind {
        "claim" => Ok(AgentAction::Claim),
        "release" => Ok(AgentAction::Release),
        "resolve" => Ok(AgentAction::Resolve),
        "agent-message" => Ok(AgentAction::Message {
            content: content_of(fields.get("content"), max_chars)?,
            client_message_id: match fields.get("clientMessageId") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(ClientMessageId::parse(s).map_err(|_| {
                    (
                        ErrorCode::InvalidMessage,
                        "'clientMessageId' must be 1-64 characters of letters, digits, '_' or '-'"
                            .to_owned(),
                    )
                })?),
                Some(_) => {
                    return Err((
                        ErrorCode::InvalidMessage,
                        "'clientMessageId' must be a string".to_owned(),
                    ))
                }
            },
        }),
        "watch" => match fields.get("lastSeq") {
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(AgentAction::Watch {
                last_seq: n.as_u64().unwrap_or(0),
            }),
            None | Some(Value::Null) => Ok(AgentAction::Watch { last_seq: 0 }),
            Some(_) => Err((
                ErrorCode::InvalidMessage,
                "'lastSeq' must be a whole number (the seq of the last event you saw)".to_owned(),
            )),
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            Err((
                ErrorCode::UnknownType,
                format!(
                    "Unknown message type '{shown}'; expected {}",
                    AGENT_CLIENT_MESSAGE_TYPES.join(", ")
                ),
            ))
        }
    }
}

fn session_of(fields: &Map<String, Value>) -> Result<SessionId, Refusal> {
    match fields.get("sessionId") {
        Some(Value::String(s)) => SessionId::parse(s).map_err(|_| {
            (
                ErrorCode::SessionNotFound,
                "There is no such session".to_owned(),
            )
        }),
        _ => Err((
            ErrorCode::InvalidMessage,
            "This message needs a string 'sessionId'".to_owned(),
        )),
    }
}

fn content_of(content: Option<&Value>, max_chars: usize) -> Result<ChatContent, Refusal> {
    let Some(Value::String(raw)) = content else {
        return Err((
            ErrorCode::InvalidContent,
            "An agent message needs a string 'content'".to_owned(),
        ));
    };
    ChatContent::parse(raw, max_chars).map_err(|e| content_refusal(&e))
}

/// A customer as the queue and conversations show them.
#[derive(Debug, Serialize)]
pub struct CustomerView {
    pub id: String,
    pub username: String,
}

/// A conversation in the queue; `position` 1 is next, as its customer is told.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueItem {
    pub session_id: String,
    pub user: CustomerView,
    pub position: u64,
    pub waiting_since: String,
    pub last_message: Option<String>,
}

/// A conversation an agent holds; `summary` is the AI's, once it came.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldConversation {
    pub session_id: String,
    pub user: CustomerView,
    pub assigned_at: String,
    pub waiting_since: String,
    pub last_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl HeldConversation {
    /// With the summary kept for it, if any.
    pub fn with_summary(mut self, summary: Option<String>) -> Self {
        self.summary = summary;
        self
    }
}

/// A rating of a conversation this agent resolved, as `connected` lists them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RatingView {
    pub session_id: String,
    /// The customer's name, while the user store knows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    pub rating: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub answered_at: String,
}

impl RatingView {
    /// `None` for a record without an answer.
    pub fn of(given: &GivenRating) -> Option<Self> {
        let (csat, at) = given.record.answer.as_ref()?;
        Some(Self {
            session_id: given.record.session.as_str().to_owned(),
            customer: given.customer.as_ref().map(|u| u.as_str().to_owned()),
            rating: csat.rating.get(),
            comment: csat.comment.as_ref().map(|c| c.as_str().to_owned()),
            answered_at: iso_millis(*at),
        })
    }
}

/// An agent on the desk: `status` is `available`, `away` or `offline`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeskAgentView {
    pub id: String,
    pub username: String,
    pub status: &'static str,
    pub conversations: usize,
}

impl From<&DeskAgent> for DeskAgentView {
    fn from(a: &DeskAgent) -> Self {
        Self {
            id: a.id.as_str().to_owned(),
            username: a.username.as_str().to_owned(),
            status: a.status.as_str(),
            conversations: a.conversations,
        }
    }
}

fn customer(h: &Handoff) -> CustomerView {
    CustomerView {
        id: h.user.id.as_str().to_owned(),
        username: h.user.username.as_str().to_owned(),
    }
}

impl QueueItem {
    /// The queue's item at `position` (the queue lists longest waiting first).
    pub fn at(position: u64, h: &Handoff) -> Self {
        Self {
            session_id: h.session.as_str().to_owned(),
            user: customer(h),
            position,
            waiting_since: iso_millis(h.waiting_since),
            last_message: h.last_message.clone(),
        }
    }

    /// Every item of a queue listed longest waiting first.
    pub fn all(queue: &[Handoff]) -> Vec<Self> {
        (1..).zip(queue).map(|(p, h)| Self::at(p, h)).collect()
    }
}

impl From<&Handoff> for HeldConversation {
    fn from(h: &Handoff) -> Self {
        let assigned_at = match &h.mode {
            crate::domain::handoff::Mode::Assigned { since, .. } => *since,
            _ => h.waiting_since,
        };
        Self {
            session_id: h.session.as_str().to_owned(),
            user: customer(h),
            assigned_at: iso_millis(assigned_at),
            waiting_since: iso_millis(h.waiting_since),
            last_message: h.last_message.clone(),
            summary: None,
        }
    }
}

/// What the agent socket says on its own.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentReply {
    /// `status` is `available` or `away`; `assign` is `manual` or `auto`.
    #[serde(rename_all = "camelCase")]
    Connected {
        agent: AgentView,
        conversations: Vec<HeldConversation>,
        status: &'static str,
        assign: &'static str,
        max_conversations: usize,
        /// The latest ratings of conversations this agent resolved.
        ratings: Vec<RatingView>,
        timestamp: String,
    },
    /// Every agent seen lately: available, away or offline, and how many
    /// conversations each holds.
    Agents {
        agents: Vec<DeskAgentView>,
        timestamp: String,
    },
    /// The agent's status, as they last set it.
    Status {
        status: &'static str,
        timestamp: String,
    },
    Queue {
        items: Vec<QueueItem>,
        timestamp: String,
    },
    ConversationAssigned {
        conversation: HeldConversation,
        timestamp: String,
    },
    /// The agent no longer holds the conversation; `mode` says who answers now.
    /// What the conversation the agent just took was about, from the AI
    /// (live only: no `seq`, not replayed).
    #[serde(rename_all = "camelCase")]
    HandoffSummary {
        session_id: String,
        summary: String,
        timestamp: String,
    },
    /// The customer of a conversation this agent resolved said how it went
    /// (live only; the answer is kept with the transcript).
    #[serde(rename = "csat", rename_all = "camelCase")]
    CsatGiven {
        session_id: String,
        rating: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        timestamp: String,
    },
    /// The customer started or stopped typing (live only: no `seq`);
    /// `false` also when no refresh came for 5 s.
    #[serde(rename_all = "camelCase")]
    Typing {
        session_id: String,
        state: bool,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    ConversationRemoved {
        session_id: String,
        mode: &'static str,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Ack {
        action: &'static str,
        session_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<Seq>,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        timestamp: String,
    },
    /// A `watch` asked for events the log no longer holds; the rest follow.
    #[serde(rename_all = "camelCase")]
    HistoryLost {
        session_id: String,
        from_seq: Seq,
        oldest_seq: Seq,
        seq: Seq,
        timestamp: String,
    },
    Pong {
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Authenticated {
        expires_at: String,
        timestamp: String,
    },
}

impl AgentReply {
    pub fn error(
        code: ErrorCode,
        message: impl Into<String>,
        session: Option<&SessionId>,
        request_id: Option<String>,
    ) -> Self {
        AgentReply::Error {
            code,
            message: message.into(),
            session_id: session.map(|s| s.as_str().to_owned()),
            request_id,
            timestamp: now(),
        }
    }

    pub fn agents(desk: &[DeskAgent]) -> Self {
        AgentReply::Agents {
            agents: desk.iter().map(DeskAgentView::from).collect(),
            timestamp: now(),
        }
    }

    pub fn queue(queue: &[Handoff]) -> Self {
        AgentReply::Queue {
            items: QueueItem::all(queue),
            timestamp: now(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A conversation event as the agent socket sends it: the `/ws` JSON with the
/// conversation's `sessionId`.
pub fn agent_event_json(session: &SessionId, logged: &LoggedEvent) -> String {
    let mut value = event_value(logged);
    if let Value::Object(fields) = &mut value {
        fields.insert(
            "sessionId".to_owned(),
            Value::String(session.as_str().to_owned()),
        );
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentCommand, AgentRefusal> {
        parse_agent_message(text, 20)
    }

    #[test]
    fn actions_parse_with_their_session_and_request_id() {
        let claim = parse(r#"{"type":"claim","sessionId":"sess_1","requestId":"r1"}"#).unwrap();
        assert_eq!(
            claim,
            AgentCommand::Act {
                session: SessionId::parse("sess_1").unwrap(),
                action: AgentAction::Claim,
                request_id: Some("r1".into()),
            }
        );
        let watch = parse(r#"{"type":"watch","sessionId":"sess_1","lastSeq":7}"#).unwrap();
        assert!(matches!(
            watch,
            AgentCommand::Act {
                action: AgentAction::Watch { last_seq: 7 },
                ..
            }
        ));
        let said = parse(
            r#"{"type":"agent-message","sessionId":"s","content":"hi","clientMessageId":"c1"}"#,
        )
        .unwrap();
        assert!(matches!(
            said,
            AgentCommand::Act {
                action: AgentAction::Message { .. },
                ..
            }
        ));
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap(), AgentCommand::Ping);
        assert_eq!(
            parse(r#"{"type":"status","status":"away"}"#).unwrap(),
            AgentCommand::Status { away: true }
        );
        assert_eq!(
            parse(r#"{"type":"status","status":"available"}"#).unwrap(),
            AgentCommand::Status { away: false }
        );
        let (refusal, _) = parse(r#"{"type":"status","status":"busy"}"#).unwrap_err();
        assert_eq!(refusal.0, ErrorCode::InvalidMessage);
    }

    #[test]
    fn bad_frames_get_codes_and_keep_their_request_id() {
        let code = |t: &str| parse(t).unwrap_err();
        assert_eq!(code("nope").0 .0, ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"type":"claim"}"#).0 .0, ErrorCode::InvalidMessage);
        let (refusal, id) = code(r#"{"type":"dance","sessionId":"s","requestId":"r9"}"#);
        assert_eq!(
            (refusal.0, id.as_deref()),
            (ErrorCode::UnknownType, Some("r9"))
        );
        assert_eq!(
            code(r#"{"type":"agent-message","sessionId":"s","content":"  "}"#)
                .0
                 .0,
            ErrorCode::InvalidContent
        );
        assert_eq!(
            code(r#"{"type":"agent-message","sessionId":"s","content":"123456789012345678901"}"#)
                .0
                 .0,
            ErrorCode::ContentTooLong
        );
        assert_eq!(
            code(r#"{"type":"watch","sessionId":"s","lastSeq":-1}"#)
                .0
                 .0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"claim","sessionId":"bad id!"}"#).0 .0,
            ErrorCode::SessionNotFound
        );
        assert_eq!(
            code(r#"{"type":"claim","requestId":5}"#).0 .0,
            ErrorCode::InvalidMessage
        );
    }
}
