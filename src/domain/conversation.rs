//! A conversation as an ordered log of events: what every tab of a session
//! sees, in the same order, and what a client that comes back is replayed.
//!
//! Each event that belongs to the conversation gets a sequence number (`seq`)
//! from the event log: 1, 2, 3, … per session, never reused. A generation is
//! the run `stream-start`, tokens, at most one failure, and exactly one
//! `stream-end`; [`Generation`] is the state machine that guarantees that shape.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::agent::AgentRef;
use super::answer::{AnswerPhase, Relay, TokenUsage, ToolActivity};
use super::budget::Quota;
use super::chat::{MessageId, SessionId, StreamStatus};
use super::csat::Csat;
use super::feedback::Feedback;
use super::id::is_valid_id;
use super::queue::QueuePlace;

/// Position of an event in its session's log, starting at 1. `0` means
/// "before the first event", the natural `lastSeq` of a client that saw nothing.
pub type Seq = u64;

/// Largest piece of one token event. A bigger upstream delta is split into
/// several `stream-token` events so one delta can never exceed a client's
/// frame limit or a queue slot.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a client message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a client message id must be 1-64 characters of letters, digits, '_' or '-'")]
pub struct ClientMessageIdError;

/// The id a client gives its own chat message so that sending it again (after
/// a reconnect, when unsure it arrived) is recognised instead of answered twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn parse(raw: &str) -> Result<Self, ClientMessageIdError> {
        if is_valid_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ClientMessageIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a generation failed, as the conversation records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationFailure {
    /// The AI could not answer; `retryable` says whether the same chat sent
    /// again later may succeed (an outage, an open breaker) or not (the
    /// upstream refused this request).
    AiUnavailable {
        retryable: bool,
    },
    /// The AI answered too slowly; trying again later may help.
    AiTimeout,
    AiStreamError,
    /// The session vanished from the store while the answer ran.
    SessionExpired,
    SessionStoreUnavailable,
    /// The instance running it disappeared; another instance ended it.
    Interrupted,
}

impl GenerationFailure {
    /// The `retryable` hint of the failures that carry one (`ai_unavailable`,
    /// `ai_timeout`, `session_store_unavailable`: a store outage passes);
    /// `None` for the rest.
    pub fn retryable(self) -> Option<bool> {
        match self {
            GenerationFailure::AiUnavailable { retryable } => Some(retryable),
            GenerationFailure::AiTimeout | GenerationFailure::SessionStoreUnavailable => Some(true),
            GenerationFailure::AiStreamError
            | GenerationFailure::SessionExpired
            | GenerationFailure::Interrupted => None,
        }
    }
}

/// Why a request for a human did not reach the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// Agents exist, but none had an agent socket open.
    NoAgentOnline,
    /// Outside the office hours (`HANDOFF_HOURS`); people answer again from
    /// `opens_at`.
    Closed { opens_at: DateTime<Utc> },
}

impl Unavailability {
    /// The wire name (`handoff-unavailable`'s `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAgentOnline => "no_agent_online",
            Self::Closed { .. } => "closed",
        }
    }

    /// When people answer again, if that is why.
    pub fn opens_at(self) -> Option<DateTime<Utc>> {
        match self {
            Self::NoAgentOnline => None,
            Self::Closed { opens_at } => Some(opens_at),
        }
    }
}

/// Something that happened in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationEvent {
    /// The user's chat, as stored.
    UserMessage {
        message_id: MessageId,
        client_message_id: Option<ClientMessageId>,
        content: String,
    },
    /// An answer to `reply_to` begins.
    StreamStart {
        message_id: MessageId,
        reply_to: MessageId,
    },
    StreamToken {
        message_id: MessageId,
        token: String,
    },
    /// The answer failed; a `StreamEnd { status: Failed }` follows.
    GenerationFailed {
        message_id: MessageId,
        failure: GenerationFailure,
    },
    StreamEnd {
        message_id: MessageId,
        status: StreamStatus,
        /// What the answer cost and where its user stands (boxed: most
        /// events are tokens, and an event is as large as its largest kind).
        cost: Option<Box<AnswerCost>>,
    },
    /// Reasoning text of an answer (only when reasoning is relayed).
    StreamReasoning {
        message_id: MessageId,
        token: String,
    },
    /// An answer entered a phase a page may show (once per phase).
    StreamStatus {
        message_id: MessageId,
        phase: AnswerPhase,
    },
    /// A tool call of an answer began or completed.
    ToolActivity {
        message_id: MessageId,
        activity: Box<ToolActivity>,
    },
    /// The reply to a human-escalation request.
    EscalationResponse { message: String },
    /// The conversation waits for an agent; `agents_online` were connected.
    HandoffQueued {
        agents_online: u64,
        place: QueuePlace,
    },
    /// A queued customer moved up the line (someone ahead was taken, left or
    /// timed out): at most one per change of their position.
    QueuePosition { place: QueuePlace },
    /// An agent claimed the conversation: the bot is muted while it holds it.
    AgentJoined { agent: AgentRef },
    /// An agent's reply to the user.
    AgentMessage {
        message_id: MessageId,
        content: String,
        agent: AgentRef,
    },
    /// The agent released the conversation, or was away too long.
    AgentLeft { agent: AgentRef },
    /// The agent is done: the bot answers again.
    HandoffResolved { agent: AgentRef },
    /// Nobody claimed the conversation in time: the bot answers again.
    HandoffTimeout,
    /// The user stopped waiting: the bot answers again.
    HandoffCancelled,
    /// The user asked for a human but nobody can take the conversation now;
    /// the bot keeps answering.
    HandoffUnavailable { reason: Unavailability },
    /// The user chatted while waiting for an agent: where they stand (1 =
    /// next in line), so a client can say why no answer streams.
    HandoffWaiting { position: u64, agents_online: u64 },
    /// The user rated the answer `message_id` (again: this rating replaces
    /// the earlier one).
    Feedback {
        message_id: MessageId,
        feedback: Feedback,
    },
    /// The agent resolved the conversation: the customer is asked how it
    /// went (right after `HandoffResolved`).
    CsatRequest { session: SessionId, agent: AgentRef },
    /// The customer said how it went (again: this answer replaces the
    /// earlier one).
    Csat { csat: Csat },
}

/// What an answer cost, carried by its `stream-end`: its usage when it
/// reached the AI, and its user's standing in the budget window afterwards
/// (sent to the user's tabs as a `quota` message of its own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerCost {
    pub usage: Option<TokenUsage>,
    pub quota: Option<Quota>,
}

/// An event as the log holds it: with its `seq` and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub seq: Seq,
    pub at: DateTime<Utc>,
    pub event: ConversationEvent,
}

/// Splits an upstream delta into pieces of at most [`MAX_TOKEN_BYTES`],
/// never inside a character. Most deltas are one piece.
pub fn token_pieces(delta: &str) -> impl Iterator<Item = &str> {
    let mut rest = delta;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(MAX_TOKEN_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The `stream-token` events of one delta, in order (see
/// [`Generation::tokens`]): an iterator, not a list, so the usual single
/// event costs no list of its own.
#[derive(Debug)]
pub struct TokenEvents<'a> {
    message_id: &'a MessageId,
    /// The delta; emptied once it was handed on whole.
    delta: String,
    /// How much of `delta` was handed on in pieces (a delta over
    /// [`MAX_TOKEN_BYTES`]).
    at: usize,
}

impl Iterator for TokenEvents<'_> {
    type Item = ConversationEvent;

    fn next(&mut self) -> Option<ConversationEvent> {
        let rest = &self.delta[self.at..];
        let token = if self.at == 0 && rest.len() <= MAX_TOKEN_BYTES {
            std::mem::take(&mut self.delta)
        } else {
            let piece = token_pieces(rest).next()?;
            self.at += piece.len();
            piece.to_owned()
        };
        if token.is_empty() {
            return None;
        }
        Some(ConversationEvent::StreamToken {
            message_id: self.message_id.clone(),
            token,
        })
    }
}

/// Where a generation is in its life. Every transition returns the events it
/// adds to the conversation, so the log can only ever hold the shape
/// `stream-start (token)* [failure] stream-end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    message_id: MessageId,
    ended: bool,
    /// Whether its `stream-status: thinking` was said.
    thinking: bool,
}

impl Generation {
    /// Starts an answer to `reply_to`; the first event is its `stream-start`.
    pub fn start(message_id: MessageId, reply_to: MessageId) -> (Self, ConversationEvent) {
        let start = ConversationEvent::StreamStart {
            message_id: message_id.clone(),
            reply_to,
        };
        (
            Self {
                message_id,
                ended: false,
                thinking: false,
            },
            start,
        )
    }

    pub fn message_id(&self) -> &MessageId {
        &self.message_id
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The token events for one upstream delta (none once ended, or for an
    /// empty delta). A delta that fits one event becomes that event's text
    /// as it is, moved rather than copied: this runs once per token.
    pub fn tokens(&self, delta: String) -> TokenEvents<'_> {
        TokenEvents {
            message_id: &self.message_id,
            delta: if self.ended { String::new() } else { delta },
            at: 0,
        }
    }

    /// The events for a piece of reasoning: `stream-status: thinking` the
    /// first time, then the reasoning itself when `relay` says so.
    pub fn reasoning(&mut self, delta: &str, relay: Relay) -> Vec<ConversationEvent> {
        if self.ended || delta.is_empty() {
            return Vec::new();
        }
        let mut events = Vec::new();
        if !std::mem::replace(&mut self.thinking, true) {
            events.push(ConversationEvent::StreamStatus {
                message_id: self.message_id.clone(),
                phase: AnswerPhase::Thinking,
            });
        }
        if relay.reasoning {
            events.extend(
                token_pieces(delta).map(|piece| ConversationEvent::StreamReasoning {
                    message_id: self.message_id.clone(),
                    token: piece.to_owned(),
                }),
            );
        }
        events
    }

    /// The event for a tool call's progress; its arguments only when
    /// `relay` says so.
    pub fn tool(&self, mut activity: ToolActivity, relay: Relay) -> Vec<ConversationEvent> {
        if self.ended {
            return Vec::new();
        }
        if !relay.tool_arguments {
            activity.arguments = None;
        }
        vec![ConversationEvent::ToolActivity {
            message_id: self.message_id.clone(),
            activity: Box::new(activity),
        }]
    }

    /// Ends the generation: a failure adds its `GenerationFailed` before the
    /// `stream-end`. Ending twice adds nothing, so a stop that races a
    /// completion cannot produce a second `stream-end`.
    pub fn end(
        &mut self,
        outcome: Result<StreamStatus, GenerationFailure>,
    ) -> Vec<ConversationEvent> {
        self.end_with(outcome, None)
    }

    /// [`Generation::end`] with what the answer cost.
    pub fn end_with(
        &mut self,
        outcome: Result<StreamStatus, GenerationFailure>,
        cost: Option<AnswerCost>,
    ) -> Vec<ConversationEvent> {
        let cost = cost.map(Box::new);
        if std::mem::replace(&mut self.ended, true) {
            return Vec::new();
        }
        let id = self.message_id.clone();
        match outcome {
            Ok(status) => vec![ConversationEvent::StreamEnd {
                message_id: id,
                status,
                cost,
            }],
            Err(failure) => vec![
                ConversationEvent::GenerationFailed {
                    message_id: id.clone(),
                    failure,
                },
                ConversationEvent::StreamEnd {
                    message_id: id,
                    status: StreamStatus::Failed,
                    cost,
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_ids_follow_the_id_rule() {
        assert!(ClientMessageId::parse("c-1_A").is_ok());
        assert!(ClientMessageId::parse("").is_err());
        assert!(ClientMessageId::parse("has space").is_err());
        assert!(ClientMessageId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_huge_delta_is_split_on_character_boundaries() {
        let delta = "é".repeat(150_000);
        let pieces: Vec<&str> = token_pieces(&delta).collect();
        assert!(pieces.len() > 1);
        assert!(pieces
            .iter()
            .all(|p| p.len() <= MAX_TOKEN_BYTES && !p.is_empty()));
        assert_eq!(pieces.concat(), delta);
        assert_eq!(token_pieces("hi").collect::<Vec<_>>(), vec!["hi"]);
        assert_eq!(token_pieces("").count(), 0);
    }

    #[test]
    fn a_delta_is_one_token_event_or_its_pieces_in_order() {
        let (g, _) = Generation::start(MessageId::generate(), MessageId::generate());
        let tokens = |delta: &str| -> Vec<String> {
            g.tokens(delta.to_owned())
                .map(|e| match e {
                    ConversationEvent::StreamToken { token, message_id } => {
                        assert_eq!(&message_id, g.message_id());
                        token
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(tokens("hi"), vec!["hi"]);
        assert!(tokens("").is_empty());
        let fits = "x".repeat(MAX_TOKEN_BYTES);
        assert_eq!(tokens(&fits), vec![fits.clone()]);
        let huge = "é".repeat(150_000);
        let pieces = tokens(&huge);
        assert_eq!(
            pieces,
            token_pieces(&huge).map(str::to_owned).collect::<Vec<_>>()
        );
        assert!(pieces.len() > 1);
    }

    #[test]
    fn a_generation_ends_exactly_once() {
        let (mut g, start) = Generation::start(MessageId::generate(), MessageId::generate());
        assert!(matches!(start, ConversationEvent::StreamStart { .. }));
        assert_eq!(g.tokens("a".into()).count(), 1);
        let end = g.end(Err(GenerationFailure::AiTimeout));
        assert!(matches!(
            end.as_slice(),
            [
                ConversationEvent::GenerationFailed { .. },
                ConversationEvent::StreamEnd {
                    status: StreamStatus::Failed,
                    ..
                }
            ]
        ));
        assert!(g.end(Ok(StreamStatus::Cancelled)).is_empty());
        assert_eq!(g.tokens("late".into()).count(), 0);
    }

    #[test]
    fn thinking_is_said_once_and_reasoning_only_when_relayed() {
        let (mut g, _) = Generation::start(MessageId::generate(), MessageId::generate());
        let quiet = Relay::default();
        let first = g.reasoning("hmm", quiet);
        assert!(matches!(
            first.as_slice(),
            [ConversationEvent::StreamStatus {
                phase: AnswerPhase::Thinking,
                ..
            }]
        ));
        assert!(g.reasoning("more", quiet).is_empty());
        let loud = Relay {
            reasoning: true,
            tool_arguments: false,
        };
        assert!(matches!(
            g.reasoning("aloud", loud).as_slice(),
            [ConversationEvent::StreamReasoning { token, .. }] if token == "aloud"
        ));
    }

    #[test]
    fn tool_arguments_only_when_relayed() {
        use super::super::answer::{ToolCallId, ToolName, ToolState};
        let (g, _) = Generation::start(MessageId::generate(), MessageId::generate());
        let call = ToolActivity {
            call_id: ToolCallId::parse("c1").unwrap(),
            name: ToolName::parse("lookup").unwrap(),
            state: ToolState::Finished,
            arguments: Some("{\"secret\":1}".into()),
        };
        let hidden = g.tool(call.clone(), Relay::default());
        assert!(matches!(
            hidden.as_slice(),
            [ConversationEvent::ToolActivity { activity, .. }] if activity.arguments.is_none()
        ));
        let shown = g.tool(
            call,
            Relay {
                reasoning: false,
                tool_arguments: true,
            },
        );
        assert!(matches!(
            shown.as_slice(),
            [ConversationEvent::ToolActivity { activity, .. }] if activity.arguments.is_some()
        ));
    }
}
