//! A conversation's transcript over REST: `GET /api/sessions/{id}/messages`
//! pages it for its owner and for agents; `DELETE /api/sessions/{id}` lets the
//! owner erase the whole conversation. Anyone else is told the session does
//! not exist, so probing ids reveals nothing.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::api_common::SessionsUnavailableError;
use super::api_common::{bearer_authorized, ApiTags, Refused};
use super::api_common::{BearerTokenError, InvalidRequestError, SessionNotFoundError};
use super::errors::{ErrorBody, ErrorCode};
use super::openapi::{BearerToken, DateTimeRule, Documented, IdRule, Json};
use super::AppContext;
use crate::application::{
    Transcript, TranscriptRefusal, TRANSCRIPT_PAGE_DEFAULT, TRANSCRIPT_PAGE_MAX,
};
use crate::domain::csat::CsatRecord;
use crate::domain::feedback::{Feedback, Rating};
use crate::domain::time::iso_millis;
use crate::domain::transcript::{Speaker, TranscriptCursor, TranscriptEntry};
use crate::domain::{SessionId, StreamStatus, User};
use crate::telemetry::ErrorChain;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
    Agent,
}

/// How an assistant's answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum AnswerStatus {
    /// The whole answer.
    Completed,
    /// Stopped by the user, a handoff or the server: `content` is what had
    /// been delivered.
    Cancelled,
    /// The AI or a store failed midway: `content` is what had been delivered.
    Failed,
}

/// The agent who wrote a message.
#[derive(Debug, Object)]
pub struct MessageAgent {
    pub id: Documented<IdRule>,
    pub username: String,
}

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum FeedbackRating {
    Up,
    Down,
}

/// The user's latest rating of an answer.
#[derive(Debug, Object)]
pub struct MessageFeedback {
    pub rating: FeedbackRating,
    /// What the user said about the answer, when they said something.
    #[oai(skip_serializing_if_is_none)]
    pub comment: Option<String>,
}

impl From<&Feedback> for MessageFeedback {
    fn from(f: &Feedback) -> Self {
        Self {
            rating: match f.rating {
                Rating::Up => FeedbackRating::Up,
                Rating::Down => FeedbackRating::Down,
            },
            comment: f.comment().map(str::to_owned),
        }
    }
}

/// One message of the transcript.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct TranscriptMessage {
    /// The id its event carried on the socket (`user-message`, the answer's
    /// `stream-start`, or `agent-message`).
    pub message_id: Documented<IdRule>,
    pub role: MessageRole,
    pub content: String,
    /// Its event's seq in the conversation (an answer's: its `stream-start`).
    pub seq: u64,
    /// ISO-8601 UTC, milliseconds.
    pub timestamp: Documented<DateTimeRule>,
    /// Agent messages only.
    #[oai(skip_serializing_if_is_none)]
    pub agent: Option<MessageAgent>,
    /// Assistant messages only.
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<AnswerStatus>,
    /// Assistant messages the user rated: the latest rating.
    #[oai(skip_serializing_if_is_none)]
    pub feedback: Option<MessageFeedback>,
    /// Assistant messages only, `true` once the user asked for another
    /// answer to the same message (`regenerate`): kept here, but no longer
    /// in the AI's context. Absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub superseded: Option<bool>,
}

/// How the customer rated the conversation after an agent resolved it
/// (`csat`; a second answer replaced the first).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct TranscriptCsat {
    /// 1 (very unhappy) to 5 (very happy).
    #[oai(validator(minimum(value = "1"), maximum(value = "5")))]
    pub rating: u8,
    #[oai(skip_serializing_if_is_none)]
    pub comment: Option<String>,
    /// The agent who resolved the conversation.
    pub agent: MessageAgent,
    /// When the customer was asked (`csat-request`), ISO-8601 UTC, milliseconds.
    pub requested_at: Documented<DateTimeRule>,
    /// When the customer answered, ISO-8601 UTC, milliseconds.
    pub answered_at: Documented<DateTimeRule>,
}

impl TranscriptCsat {
    fn of(record: &CsatRecord) -> Option<Self> {
        let (csat, at) = record.answer.as_ref()?;
        Some(Self {
            rating: csat.rating.get(),
            comment: csat.comment.as_ref().map(|c| c.as_str().to_owned()),
            agent: MessageAgent {
                id: Documented::new(record.agent.id.as_str()),
                username: record.agent.username.as_str().to_owned(),
            },
            requested_at: Documented::new(iso_millis(record.requested_at)),
            answered_at: Documented::new(iso_millis(*at)),
        })
    }
}

/// A page of a conversation's transcript: every message of the
/// conversation, kept beyond the AI's context and the event log.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct TranscriptBody {
    pub session_id: Documented<IdRule>,
    /// Oldest first: the newest `limit` messages before `before` (the newest
    /// of all on the first page).
    pub messages: Vec<TranscriptMessage>,
    /// Pass as `before` for the page of older messages; absent on the oldest page.
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
    /// The customer's satisfaction rating of the conversation, on every
    /// page once they gave one; absent before.
    #[oai(skip_serializing_if_is_none)]
    pub csat: Option<TranscriptCsat>,
}

impl Example for TranscriptBody {
    fn example() -> Self {
        let at = |t: &str| Documented::new(format!("2026-11-25T02:{t}Z"));
        Self {
            session_id: Documented::new("sess_f7f9e9c417614dafbc0bedbd5cbad1f4"),
            messages: vec![
                TranscriptMessage {
                    message_id: Documented::new("msg_673cc3b82d794ad493e6da1274079e7e"),
                    role: MessageRole::User,
                    content: "Where is my order?".into(),
                    seq: 41,
                    timestamp: at("03:19.292"),
                    agent: None,
                    status: None,
                    feedback: None,
                    superseded: None,
                },
                TranscriptMessage {
                    message_id: Documented::new("msg_c732374bc98d446684b4d9772e045fd5"),
                    role: MessageRole::Assistant,
                    content: "Let me check that for you.".into(),
                    seq: 42,
                    timestamp: at("03:21.007"),
                    agent: None,
                    status: Some(AnswerStatus::Completed),
                    feedback: Some(MessageFeedback {
                        rating: FeedbackRating::Up,
                        comment: Some("Quick and clear".into()),
                    }),
                    superseded: None,
                },
                TranscriptMessage {
                    message_id: Documented::new("msg_8f2a0c51d7e94f0b9a3c2e61b4d7a915"),
                    role: MessageRole::Agent,
                    content: "I have sent a courier; it arrives today.".into(),
                    seq: 51,
                    timestamp: at("05:02.118"),
                    agent: Some(MessageAgent {
                        id: Documented::new("65a1b2c3d4e5f6a7b8c9d0e2"),
                        username: "agent_bob".into(),
                    }),
                    status: None,
                    feedback: None,
                    superseded: None,
                },
            ],
            next: Some("1795572199292-41".into()),
            csat: Some(TranscriptCsat {
                rating: 5,
                comment: Some("Sorted in five minutes".into()),
                agent: MessageAgent {
                    id: Documented::new("65a1b2c3d4e5f6a7b8c9d0e2"),
                    username: "agent_bob".into(),
                },
                requested_at: at("06:40.500"),
                answered_at: at("07:02.931"),
            }),
        }
    }
}

fn message(e: &TranscriptEntry) -> TranscriptMessage {
    let (role, agent, status) = match &e.speaker {
        Speaker::User => (MessageRole::User, None, None),
        Speaker::Assistant { ending } => (
            MessageRole::Assistant,
            None,
            Some(match ending {
                StreamStatus::Completed => AnswerStatus::Completed,
                StreamStatus::Cancelled => AnswerStatus::Cancelled,
                StreamStatus::Failed => AnswerStatus::Failed,
            }),
        ),
        Speaker::Agent(a) => (
            MessageRole::Agent,
            Some(MessageAgent {
                id: Documented::new(a.id.as_str()),
                username: a.username.as_str().to_owned(),
            }),
            None,
        ),
    };
    TranscriptMessage {
        message_id: Documented::new(e.message_id.as_str()),
        role,
        content: e.content.clone(),
        seq: e.seq,
        timestamp: Documented::new(iso_millis(e.at)),
        agent,
        status,
        feedback: e.feedback.as_ref().map(MessageFeedback::from),
        superseded: e.superseded.then_some(true),
    }
}

fn body(session: &SessionId, transcript: &Transcript) -> TranscriptBody {
    let page = &transcript.page;
    TranscriptBody {
        session_id: Documented::new(session.as_str()),
        messages: page.entries.iter().map(message).collect(),
        next: page.next.map(|c| c.to_string()),
        csat: transcript.csat.as_ref().and_then(TranscriptCsat::of),
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "messages_bad_request")]
enum MessagesResponse {
    #[oai(status = 200)]
    Ok(Json<TranscriptBody>),
    /// `limit` is not a whole number from 1 to 200, or `before` is not a
    /// cursor this server returned (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// No such conversation, or neither the caller's nor the caller an
    /// agent (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// A store does not answer (`service_unavailable`, `session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

fn messages_bad_request(err: poem::Error) -> MessagesResponse {
    invalid(format!("{} ({err})", ErrorCode::InvalidRequest.message()))
}

fn invalid(message: impl Into<String>) -> MessagesResponse {
    MessagesResponse::BadRequest(ErrorBody::with_message(
        ErrorCode::InvalidRequest,
        message.into(),
    ))
}

#[derive(ApiResponse)]
enum EraseResponse {
    /// The conversation is gone: its transcript, its event log and its session.
    #[oai(status = 204)]
    NoContent,
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// No such conversation, or not the caller's (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// A store does not answer (`service_unavailable`,
    /// `session_store_unavailable`); send it again, what is left is erased then.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

/// What a refused transcript request answers, besides its own 200/204.
enum Refusal {
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

fn refusal(e: &TranscriptRefusal) -> Refusal {
    match e {
        TranscriptRefusal::SessionGone => {
            Refusal::NotFound(ErrorBody::new(ErrorCode::SessionNotFound))
        }
        TranscriptRefusal::Failed(cause) => {
            tracing::warn!(error = %ErrorChain(cause), "transcript routes: a store failed");
            Refusal::Unavailable(ErrorBody::new(ErrorCode::SessionStoreUnavailable))
        }
    }
}

/// The caller of a bearer-authenticated request, as the user store has it now
/// (so a demoted agent reads no more transcripts).
async fn caller(
    ctx: &AppContext,
    req: &Request,
    bearer: BearerToken,
) -> Result<User, Refused<SessionsUnavailableError>> {
    bearer_authorized(ctx, req, bearer).await.map(|a| a.user)
}

/// The transcript operations.
pub struct TranscriptApi;

#[OpenApi]
impl TranscriptApi {
    /// A page of the conversation's transcript: every message, with role
    /// `user`, `assistant` or `agent`, kept beyond the AI's context and the
    /// event log's retention (and after the session itself expired). Pages
    /// go back in time: the first holds the newest `limit` messages
    /// (default 50, at most 200), oldest first; pass its `next` as `before`
    /// for the page before it. The conversation's owner and agents may read
    /// it. Once the customer rated the conversation after an agent resolved
    /// it, `csat` holds that rating on every page.
    #[oai(
        path = "/api/sessions/:id/messages",
        method = "get",
        tag = "ApiTags::Sessions",
        operation_id = "sessionMessages"
    )]
    async fn messages(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
        /// A `next` from an earlier page.
        before: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> MessagesResponse {
        let user = match caller(&ctx, req, bearer).await {
            Ok(user) => user,
            Err(Refused::Unauthorized(b)) => return MessagesResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return MessagesResponse::Unavailable(b),
        };
        let limit = limit.0.map_or(TRANSCRIPT_PAGE_DEFAULT, |n| n as usize);
        if limit == 0 || limit > TRANSCRIPT_PAGE_MAX {
            return invalid(format!("'limit' must be 1-{TRANSCRIPT_PAGE_MAX}"));
        }
        let before = match before.0.as_deref().map(TranscriptCursor::parse).transpose() {
            Ok(before) => before,
            Err(e) => return invalid(e.to_string()),
        };
        let Ok(session) = SessionId::parse(&id.0) else {
            return MessagesResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
        };
        match ctx
            .transcripts
            .transcript(&user, &session, before, limit)
            .await
        {
            Ok(transcript) => MessagesResponse::Ok(Json(body(&session, &transcript))),
            Err(e) => match refusal(&e) {
                Refusal::NotFound(b) => MessagesResponse::NotFound(b),
                Refusal::Unavailable(b) => MessagesResponse::Unavailable(b),
            },
        }
    }

    /// Erase one of the caller's conversations for good: its transcript,
    /// its event log and its session (a running answer is stopped first).
    #[oai(
        path = "/api/sessions/:id",
        method = "delete",
        tag = "ApiTags::Sessions",
        operation_id = "deleteSession"
    )]
    async fn erase(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
    ) -> EraseResponse {
        let user = match caller(&ctx, req, bearer).await {
            Ok(user) => user,
            Err(Refused::Unauthorized(b)) => return EraseResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return EraseResponse::Unavailable(b),
        };
        let Ok(session) = SessionId::parse(&id.0) else {
            return EraseResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
        };
        match ctx.transcripts.erase_conversation(&user, &session).await {
            Ok(()) => EraseResponse::NoContent,
            Err(e) => match refusal(&e) {
                Refusal::NotFound(b) => EraseResponse::NotFound(b),
                Refusal::Unavailable(b) => EraseResponse::Unavailable(b),
            },
        }
    }
}
