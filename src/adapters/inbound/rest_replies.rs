//! `GET/POST /api/agent/replies` and `DELETE /api/agent/replies/{shortcut}`:
//! each agent's canned replies (agents only; the role is read from the user
//! store on every request).

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{
    bad_request, ApiTags, BearerTokenError, PayloadTooLargeError, RejectsBody,
};
use super::errors::{code_sets, ErrorBody, ErrorCode};
use super::openapi::{BearerToken, Json};
use super::rest_agent::{agent_of, AgentOnlyError, AgentUnavailableError, Gate};
use super::AppContext;
use crate::application::ReplyRefusal;
use crate::domain::canned::{CannedReply, Shortcut};

code_sets! {
    /// A body that is not the JSON this takes, or a reply that breaks its rule.
    ReplyInvalidError = [InvalidRequest, InvalidReply];
    /// The caller keeps the most replies allowed.
    TooManyRepliesError = [TooManyReplies];
    /// No reply of the caller has that shortcut.
    ReplyNotFoundError = [ReplyNotFound];
}

/// A canned reply: what the console inserts when the agent types `/` and
/// its shortcut.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ReplyBody {
    /// 1-32 characters: lowercase letters, digits, `_`, `-` (a leading `/`
    /// is dropped).
    pub shortcut: String,
    /// 1-2000 characters, not blank.
    pub content: String,
}

impl Example for ReplyBody {
    fn example() -> Self {
        Self {
            shortcut: "refund".into(),
            content: "Your refund is on its way: it reaches your account within 5 working days."
                .into(),
        }
    }
}

impl From<&CannedReply> for ReplyBody {
    fn from(r: &CannedReply) -> Self {
        Self {
            shortcut: r.shortcut.as_str().to_owned(),
            content: r.content().to_owned(),
        }
    }
}

/// The caller's canned replies, by shortcut (at most 100).
#[derive(Debug, Object)]
#[oai(example)]
pub struct RepliesBody {
    pub replies: Vec<ReplyBody>,
}

impl Example for RepliesBody {
    fn example() -> Self {
        Self {
            replies: vec![ReplyBody::example()],
        }
    }
}

#[derive(ApiResponse)]
enum ListResponse {
    #[oai(status = 200)]
    Ok(Json<RepliesBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
enum SaveResponse {
    /// Replaced the reply with that shortcut.
    #[oai(status = 200)]
    Replaced(Json<ReplyBody>),
    /// Added.
    #[oai(status = 201)]
    Created(Json<ReplyBody>),
    /// Not the JSON this takes (`invalid_request`), or a `shortcut` or
    /// `content` that breaks its rule (`invalid_reply`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<ReplyInvalidError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// The caller already keeps 100 replies (`too_many_replies`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody<TooManyRepliesError>>),
    /// The body is larger than 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

impl RejectsBody for SaveResponse {
    type Invalid = ReplyInvalidError;

    fn too_large(body: Json<ErrorBody<PayloadTooLargeError>>) -> Self {
        Self::TooLarge(body)
    }

    fn invalid(body: Json<ErrorBody<ReplyInvalidError>>) -> Self {
        Self::BadRequest(body)
    }
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// No reply of the caller has that shortcut (`reply_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<ReplyNotFoundError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

/// Each response's three gate answers.
macro_rules! gated {
    ($response:ident, $gate:expr) => {
        match $gate {
            Gate::Unauthorized(b) => $response::Unauthorized(b),
            Gate::Forbidden(b) => $response::Forbidden(b),
            Gate::Unavailable(b) => $response::Unavailable(b),
        }
    };
}

fn unavailable() -> Json<ErrorBody<AgentUnavailableError>> {
    ErrorBody::new(ErrorCode::ServiceUnavailable)
}

/// The agents' canned replies.
pub struct RepliesApi;

#[OpenApi]
impl RepliesApi {
    /// The caller's canned replies, by shortcut (agents only).
    #[oai(
        path = "/api/agent/replies",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "listReplies"
    )]
    async fn list(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> ListResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(ListResponse, gate),
        };
        match ctx.auth.replies(&agent.id).await {
            Ok(replies) => ListResponse::Ok(Json(RepliesBody {
                replies: replies.iter().map(ReplyBody::from).collect(),
            })),
            Err(_) => ListResponse::Unavailable(unavailable()),
        }
    }

    /// Add a canned reply, or replace the caller's reply with the same
    /// shortcut (agents only; at most 100 per agent).
    #[oai(
        path = "/api/agent/replies",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "saveReply"
    )]
    async fn save(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        body: Json<ReplyBody>,
    ) -> SaveResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(SaveResponse, gate),
        };
        let reply = match CannedReply::parse(&body.0.shortcut, &body.0.content) {
            Ok(reply) => reply,
            Err(e) => {
                return SaveResponse::BadRequest(ErrorBody::with_message(
                    ErrorCode::InvalidReply,
                    e.to_string(),
                ))
            }
        };
        match ctx.auth.save_reply(&agent.id, &reply).await {
            Ok(true) => SaveResponse::Created(Json(ReplyBody::from(&reply))),
            Ok(false) => SaveResponse::Replaced(Json(ReplyBody::from(&reply))),
            Err(ReplyRefusal::TooMany) => {
                SaveResponse::Conflict(ErrorBody::new(ErrorCode::TooManyReplies))
            }
            Err(_) => SaveResponse::Unavailable(unavailable()),
        }
    }

    /// Delete one of the caller's canned replies (agents only).
    #[oai(
        path = "/api/agent/replies/:shortcut",
        method = "delete",
        tag = "ApiTags::Agents",
        operation_id = "deleteReply"
    )]
    async fn delete(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        shortcut: Path<String>,
    ) -> DeleteResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(DeleteResponse, gate),
        };
        let Ok(shortcut) = Shortcut::parse(&shortcut.0) else {
            return DeleteResponse::NotFound(ErrorBody::new(ErrorCode::ReplyNotFound));
        };
        match ctx.auth.delete_reply(&agent.id, &shortcut).await {
            Ok(()) => DeleteResponse::NoContent,
            Err(ReplyRefusal::NotFound) => {
                DeleteResponse::NotFound(ErrorBody::new(ErrorCode::ReplyNotFound))
            }
            Err(_) => DeleteResponse::Unavailable(unavailable()),
        }
    }
}
