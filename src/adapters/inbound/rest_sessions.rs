//! A user's conversations without a socket: `/api/sessions` and
//! `/api/sessions/{id}/events` (transcripts are in `rest_transcripts`).

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{
    bearer_user, ApiTags, BearerTokenError, InvalidRequestError, Refused, SessionNotFoundError,
    SessionsUnavailableError,
};
use super::errors::{ErrorBody, ErrorCode};
use super::openapi::{BearerToken, DateTimeRule, Documented, IdRule, Json};
use super::ws::protocol::event_value;
use super::AppContext;
use crate::application::ports::LogSlice;
use crate::application::ChatError;
use crate::domain::conversation::Seq;
use crate::domain::time::iso_millis;
use crate::domain::SessionId;
use crate::telemetry::ErrorChain;

/// One of the caller's sessions.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct SessionView {
    id: Documented<IdRule>,
    /// ISO-8601 UTC, milliseconds.
    created_at: Documented<DateTimeRule>,
    /// ISO-8601 UTC, milliseconds.
    last_activity: Documented<DateTimeRule>,
    /// Whether a human was asked for.
    escalated: bool,
    /// The seq of the session's latest event (0 before the first).
    seq: u64,
}

/// The caller's live sessions, most recently active first (at most 100).
#[derive(Debug, Object)]
#[oai(example)]
struct SessionsBody {
    sessions: Vec<SessionView>,
}

impl Example for SessionsBody {
    fn example() -> Self {
        Self {
            sessions: vec![SessionView {
                id: Documented::new(EXAMPLE_SESSION),
                created_at: Documented::new("2026-11-25T02:03:19.292Z"),
                last_activity: Documented::new("2026-11-25T02:05:41.007Z"),
                escalated: false,
                seq: 14,
            }],
        }
    }
}

const EXAMPLE_SESSION: &str = "sess_f7f9e9c417614dafbc0bedbd5cbad1f4";

/// A stretch of a session's conversation.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct EventsBody {
    session_id: Documented<IdRule>,
    /// The events after `afterSeq`, oldest first: exactly the JSON messages
    /// the WebSocket sends (`user-message`, `stream-start`, `stream-token`,
    /// `error`, `stream-end`, `human-escalation-response`), each with its `seq`.
    events: Vec<serde_json::Value>,
    /// The session's latest seq.
    seq: u64,
    /// The oldest seq the server still holds.
    oldest_seq: u64,
    /// True when events after `afterSeq` were trimmed and are missing from
    /// `events` (a socket would say `history-lost`).
    history_lost: bool,
    /// Pass as `afterSeq` to read on; absent when `events` reaches `seq`.
    #[oai(skip_serializing_if_is_none)]
    next_after_seq: Option<u64>,
}

impl Example for EventsBody {
    fn example() -> Self {
        let message = "msg_673cc3b82d794ad493e6da1274079e7e";
        let at = "2026-11-25T02:03:19.292Z";
        Self {
            session_id: Documented::new(EXAMPLE_SESSION),
            events: vec![
                serde_json::json!({"type": "user-message", "seq": 1, "messageId": message,
                    "content": "Hello there", "timestamp": at}),
                serde_json::json!({"type": "stream-start", "seq": 2,
                    "messageId": "msg_c732374bc98d446684b4d9772e045fd5", "replyTo": message,
                    "timestamp": at}),
            ],
            seq: 14,
            oldest_seq: 1,
            history_lost: false,
            next_after_seq: Some(2),
        }
    }
}

/// Most events one `GET /api/sessions/{id}/events` returns.
const MAX_EVENTS_PAGE: u32 = 1000;

#[derive(ApiResponse)]
enum SessionsResponse {
    #[oai(status = 200)]
    Ok(Json<SessionsBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// A store does not answer (`service_unavailable`, `session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "events_bad_request")]
enum EventsResponse {
    #[oai(status = 200)]
    Ok(Json<EventsBody>),
    /// `afterSeq` or `limit` is not a whole number, or `limit` is 0 or over
    /// 1000 (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// No such session, or not the caller's (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// A store does not answer (`service_unavailable`, `session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

fn events_bad_request(err: poem::Error) -> EventsResponse {
    let code = ErrorCode::InvalidRequest;
    EventsResponse::BadRequest(ErrorBody::with_message(
        code,
        format!("{} ({err})", code.message()),
    ))
}

/// Store failures of the session routes: logged, then a stable 503 body.
fn store_failure(e: &ChatError) -> Json<ErrorBody<SessionsUnavailableError>> {
    tracing::warn!(error = %ErrorChain(e), "session routes: a store failed");
    ErrorBody::new(ErrorCode::SessionStoreUnavailable)
}

/// The caller's sessions and their events.
pub struct SessionsApi;

#[OpenApi]
impl SessionsApi {
    /// The caller's live sessions, with the latest seq of each.
    #[oai(
        path = "/api/sessions",
        method = "get",
        tag = "ApiTags::Sessions",
        operation_id = "listSessions"
    )]
    async fn sessions(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> SessionsResponse {
        let user = match bearer_user(&ctx, req, bearer).await {
            Ok(user) => user,
            Err(Refused::Unauthorized(b)) => return SessionsResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return SessionsResponse::Unavailable(b),
        };
        match ctx.chat.sessions_of(&user).await {
            Ok(list) => SessionsResponse::Ok(Json(SessionsBody {
                sessions: list
                    .into_iter()
                    .map(|s| SessionView {
                        id: Documented::new(s.session.id.as_str()),
                        created_at: Documented::new(iso_millis(s.session.created_at)),
                        last_activity: Documented::new(iso_millis(s.session.last_activity)),
                        escalated: s.session.escalated,
                        seq: s.seq,
                    })
                    .collect(),
            })),
            Err(e) => SessionsResponse::Unavailable(store_failure(&e)),
        }
    }

    /// A session's events after `afterSeq` (default 0: from the start), at
    /// most `limit` (default 100, at most 1000): the same events, with the same
    /// JSON, as a WebSocket resuming with `lastSeq` would get, so a client can
    /// rebuild a conversation without a socket.
    #[oai(
        path = "/api/sessions/:id/events",
        method = "get",
        tag = "ApiTags::Sessions",
        operation_id = "sessionEvents"
    )]
    async fn session_events(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
        #[oai(name = "afterSeq")] after_seq: Query<Option<u64>>,
        // 1..=MAX_EVENTS_PAGE, in the spec too; out of range is the same 400.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
    ) -> EventsResponse {
        let user = match bearer_user(&ctx, req, bearer).await {
            Ok(user) => user,
            Err(Refused::Unauthorized(b)) => return EventsResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return EventsResponse::Unavailable(b),
        };
        let limit = limit.0.unwrap_or(100);
        if limit == 0 || limit > MAX_EVENTS_PAGE {
            return events_bad_request(poem::Error::from_string(
                format!("limit must be 1-{MAX_EVENTS_PAGE}"),
                poem::http::StatusCode::BAD_REQUEST,
            ));
        }
        let Ok(session) = SessionId::parse(&id.0) else {
            return EventsResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
        };
        let after = after_seq.0.unwrap_or(0);
        match ctx
            .chat
            .events(&user, &session, after, limit as usize)
            .await
        {
            Ok(slice) => EventsResponse::Ok(Json(events_body(&session, after, slice))),
            Err(ChatError::SessionGone) => {
                EventsResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound))
            }
            Err(e) => EventsResponse::Unavailable(store_failure(&e)),
        }
    }
}

fn events_body(session: &SessionId, after: Seq, slice: LogSlice) -> EventsBody {
    let last = slice.events.last().map_or(after, |e| e.seq);
    EventsBody {
        session_id: Documented::new(session.as_str()),
        history_lost: slice.lost_after(after),
        events: slice.events.iter().map(|e| event_value(e)).collect(),
        seq: slice.head,
        oldest_seq: slice.oldest,
        next_after_seq: (last < slice.head).then_some(last),
    }
}
