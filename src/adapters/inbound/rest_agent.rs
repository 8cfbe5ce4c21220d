//! The agent's REST mirrors of `/agent/ws`: the queue, the conversations an
//! agent holds, and claim, release, resolve and reply. Every operation reads
//! the caller's role from the user store, so a demoted agent is refused at once.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{bad_request, bearer_authorized, ApiTags, Refused, RejectsBody};
use super::api_common::{BearerTokenError, PayloadTooLargeError, SessionNotFoundError};
use super::errors::{code_sets, content_refusal, ErrorBody, ErrorCode};
use super::openapi::{BearerToken, Json};
use super::AppContext;
use crate::application::{AuthError, ChatError, HandoffRefusal};
use crate::domain::handoff::{Handoff, Mode};
use crate::domain::time::iso_millis;
use crate::domain::{ChatContent, SessionId, User};
use crate::telemetry::ErrorChain;

code_sets! {
    /// The caller is not an agent.
    AgentOnlyError = [AgentOnly];
    /// The user store (checking the token or the role) or the session store does not answer.
    AgentUnavailableError = [ServiceUnavailable, SessionStoreUnavailable];
    /// A claim that lost, or of a conversation not waiting for an agent.
    ClaimConflictError = [AlreadyClaimed, NotQueued, AgentAtCapacity];
    /// The conversation is not assigned to the caller.
    NotAssignedError = [NotAssigned];
    /// An agent message that is not JSON, or whose content breaks its rule.
    AgentMessageInvalidError = [InvalidRequest, InvalidContent, ContentTooLong];
}

/// A customer as the queue shows them.
#[derive(Debug, Object)]
pub struct CustomerBody {
    pub id: String,
    pub username: String,
}

/// A conversation waiting for an agent.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueueItemBody {
    pub session_id: String,
    pub user: CustomerBody,
    /// Its place in line, 1 = next (as its customer is told).
    pub position: u64,
    /// ISO-8601 UTC, milliseconds: when it (last) entered the queue.
    pub waiting_since: String,
    /// The customer's latest chat while waiting (at most 200 characters).
    pub last_message: Option<String>,
}

/// The queue, longest waiting first.
#[derive(Debug, Object)]
#[oai(example)]
pub struct QueueBody {
    pub items: Vec<QueueItemBody>,
}

impl Example for QueueBody {
    fn example() -> Self {
        Self {
            items: vec![QueueItemBody {
                session_id: "sess_6bc5d1e2".into(),
                user: CustomerBody {
                    id: "65a1b2c3d4e5f6a7b8c9d0e1".into(),
                    username: "carol".into(),
                },
                position: 1,
                waiting_since: "2025-09-12T10:30:00.000Z".into(),
                last_message: Some("My order has not arrived".into()),
            }],
        }
    }
}

/// A conversation the agent holds.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ConversationBody {
    pub session_id: String,
    pub user: CustomerBody,
    /// ISO-8601 UTC, milliseconds: when this agent claimed it.
    pub assigned_at: String,
    pub waiting_since: String,
    pub last_message: Option<String>,
}

/// The conversations the caller holds.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ConversationsBody {
    pub items: Vec<ConversationBody>,
}

impl Example for ConversationsBody {
    fn example() -> Self {
        Self {
            items: vec![ConversationBody {
                session_id: "sess_6bc5d1e2".into(),
                user: CustomerBody {
                    id: "65a1b2c3d4e5f6a7b8c9d0e1".into(),
                    username: "carol".into(),
                },
                assigned_at: "2025-09-12T10:31:12.000Z".into(),
                waiting_since: "2025-09-12T10:30:00.000Z".into(),
                last_message: Some("My order has not arrived".into()),
            }],
        }
    }
}

/// Who answers the conversation after the change: `bot`, `queued` or `assigned`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct ModeBody {
    pub session_id: String,
    pub mode: String,
}

impl Example for ModeBody {
    fn example() -> Self {
        Self {
            session_id: "sess_6bc5d1e2".into(),
            mode: "assigned".into(),
        }
    }
}

/// An agent's reply to the customer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct AgentMessageRequest {
    pub content: String,
    pub client_message_id: Option<String>,
}

impl Example for AgentMessageRequest {
    fn example() -> Self {
        Self {
            content: "I have sent a courier; it arrives today.".into(),
            client_message_id: Some("a-17".into()),
        }
    }
}

/// The reply as logged: its id and its `seq` in the conversation.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct AgentMessageBody {
    pub message_id: String,
    pub seq: u64,
    pub client_message_id: Option<String>,
}

impl Example for AgentMessageBody {
    fn example() -> Self {
        Self {
            message_id: "msg_8f2a".into(),
            seq: 14,
            client_message_id: Some("a-17".into()),
        }
    }
}

fn customer(h: &Handoff) -> CustomerBody {
    CustomerBody {
        id: h.user.id.as_str().to_owned(),
        username: h.user.username.as_str().to_owned(),
    }
}

fn queue_item(position: u64, h: &Handoff) -> QueueItemBody {
    QueueItemBody {
        session_id: h.session.as_str().to_owned(),
        user: customer(h),
        position,
        waiting_since: iso_millis(h.waiting_since),
        last_message: h.last_message.clone(),
    }
}

fn conversation(h: &Handoff) -> ConversationBody {
    let assigned_at = match &h.mode {
        Mode::Assigned { since, .. } => *since,
        Mode::Bot | Mode::Queued => h.waiting_since,
    };
    ConversationBody {
        session_id: h.session.as_str().to_owned(),
        user: customer(h),
        assigned_at: iso_millis(assigned_at),
        waiting_since: iso_millis(h.waiting_since),
        last_message: h.last_message.clone(),
    }
}

#[derive(ApiResponse)]
enum QueueResponse {
    #[oai(status = 200)]
    Ok(Json<QueueBody>),
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
enum ConversationsResponse {
    #[oai(status = 200)]
    Ok(Json<ConversationsBody>),
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
enum ClaimResponse {
    #[oai(status = 200)]
    Ok(Json<ModeBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// No such session (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// Another agent won (`already_claimed`), nobody waits (`not_queued`),
    /// or the caller holds `AGENT_MAX_CONVERSATIONS` (`agent_at_capacity`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody<ClaimConflictError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

#[derive(ApiResponse)]
enum HeldResponse {
    #[oai(status = 200)]
    Ok(Json<ModeBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// No such session (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// The caller does not hold the conversation (`not_assigned`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody<NotAssignedError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
enum SendResponse {
    #[oai(status = 201)]
    Created(Json<AgentMessageBody>),
    /// Not the JSON this takes (`invalid_request`), or blank
    /// (`invalid_content`) or too long (`content_too_long`) content.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<AgentMessageInvalidError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// No such session (`session_not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    /// The body is larger than 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// The caller does not hold the conversation (`not_assigned`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody<NotAssignedError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

impl RejectsBody for SendResponse {
    type Invalid = AgentMessageInvalidError;

    fn too_large(body: Json<ErrorBody<PayloadTooLargeError>>) -> Self {
        Self::TooLarge(body)
    }

    fn invalid(body: Json<ErrorBody<AgentMessageInvalidError>>) -> Self {
        Self::BadRequest(body)
    }
}

/// Why a request did not get as far as its operation.
pub(super) enum Gate {
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
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

/// The caller, if its token is good and the store says it is an agent now.
pub(super) async fn agent_of(
    ctx: &AppContext,
    req: &Request,
    bearer: BearerToken,
) -> Result<User, Gate> {
    let user = match bearer_authorized::<AgentUnavailableError>(ctx, req, bearer).await {
        Ok(authorized) => authorized.user,
        Err(Refused::Unauthorized(b)) => return Err(Gate::Unauthorized(b)),
        Err(Refused::Unavailable(b)) => return Err(Gate::Unavailable(b)),
    };
    match ctx.auth.agent(&user.id).await {
        Ok(agent) => Ok(agent),
        Err(AuthError::AgentOnly) => Err(Gate::Forbidden(ErrorBody::new(ErrorCode::AgentOnly))),
        Err(AuthError::Internal) => Err(Gate::Unavailable(ErrorBody::new(
            ErrorCode::ServiceUnavailable,
        ))),
        Err(e) => Err(Gate::Unauthorized(ErrorBody::new(ErrorCode::from(&e)))),
    }
}

fn unavailable(e: &ChatError) -> Json<ErrorBody<AgentUnavailableError>> {
    tracing::warn!(error = %ErrorChain(e), "agent routes: a store failed");
    ErrorBody::new(ErrorCode::SessionStoreUnavailable)
}

/// What a handoff refusal is on an operation whose conflicts are `C`.
enum Outcome<C: super::errors::CodeSet> {
    NotFound(Json<ErrorBody<SessionNotFoundError>>),
    Conflict(Json<ErrorBody<C>>),
    Unavailable(Json<ErrorBody<AgentUnavailableError>>),
}

fn refused<C: super::errors::CodeSet>(e: &HandoffRefusal) -> Outcome<C> {
    match e {
        HandoffRefusal::SessionGone => {
            Outcome::NotFound(ErrorBody::new(ErrorCode::SessionNotFound))
        }
        HandoffRefusal::Failed(cause) => Outcome::Unavailable(unavailable(cause)),
        HandoffRefusal::Rule(_) => Outcome::Conflict(ErrorBody::new(ErrorCode::from(e))),
    }
}

fn mode_body(session: &SessionId, mode: &'static str) -> Json<ModeBody> {
    Json(ModeBody {
        session_id: session.as_str().to_owned(),
        mode: mode.to_owned(),
    })
}

/// The agent operations.
pub struct AgentApi;

#[OpenApi]
impl AgentApi {
    /// The conversations waiting for an agent, longest waiting first (agents only).
    #[oai(
        path = "/api/agent/queue",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "agentQueue"
    )]
    async fn queue(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> QueueResponse {
        if let Err(gate) = agent_of(&ctx, req, bearer).await {
            return gated!(QueueResponse, gate);
        }
        match ctx.handoff.handoff_queue().await {
            Ok(queue) => QueueResponse::Ok(Json(QueueBody {
                items: (1..).zip(&queue).map(|(p, h)| queue_item(p, h)).collect(),
            })),
            Err(e) => QueueResponse::Unavailable(unavailable(&e)),
        }
    }

    /// The conversations the caller holds (agents only).
    #[oai(
        path = "/api/agent/conversations",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "agentConversations"
    )]
    async fn conversations(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> ConversationsResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(ConversationsResponse, gate),
        };
        match ctx.handoff.held_by(&agent.id).await {
            Ok(held) => ConversationsResponse::Ok(Json(ConversationsBody {
                items: held.iter().map(conversation).collect(),
            })),
            Err(e) => ConversationsResponse::Unavailable(unavailable(&e)),
        }
    }

    /// Claim a queued conversation: exactly one claim wins, over all
    /// instances; the bot stays muted while the caller holds it.
    #[oai(
        path = "/api/agent/conversations/:id/claim",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "claimConversation"
    )]
    async fn claim(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
    ) -> ClaimResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(ClaimResponse, gate),
        };
        let Ok(session) = SessionId::parse(&id.0) else {
            return ClaimResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
        };
        match ctx.handoff.claim(&agent, &session).await {
            Ok(_) => ClaimResponse::Ok(mode_body(&session, "assigned")),
            Err(e) => match refused(&e) {
                Outcome::NotFound(b) => ClaimResponse::NotFound(b),
                Outcome::Conflict(b) => ClaimResponse::Conflict(b),
                Outcome::Unavailable(b) => ClaimResponse::Unavailable(b),
            },
        }
    }

    /// Give a conversation the caller holds back to the queue.
    #[oai(
        path = "/api/agent/conversations/:id/release",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "releaseConversation"
    )]
    async fn release(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
    ) -> HeldResponse {
        held_action(&ctx, req, bearer, &id.0, false).await
    }

    /// Resolve a conversation the caller holds: the bot answers the
    /// customer's next chat.
    #[oai(
        path = "/api/agent/conversations/:id/resolve",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "resolveConversation"
    )]
    async fn resolve(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
    ) -> HeldResponse {
        held_action(&ctx, req, bearer, &id.0, true).await
    }

    /// Answer the customer of a conversation the caller holds; every tab of
    /// the customer gets it as `agent-message` with its `seq`.
    #[oai(
        path = "/api/agent/conversations/:id/messages",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "sendAgentMessage"
    )]
    async fn send(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
        body: Json<AgentMessageRequest>,
    ) -> SendResponse {
        let agent = match agent_of(&ctx, req, bearer).await {
            Ok(agent) => agent,
            Err(gate) => return gated!(SendResponse, gate),
        };
        let Ok(session) = SessionId::parse(&id.0) else {
            return SendResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
        };
        let client_message_id = match &body.0.client_message_id {
            Some(raw) if crate::domain::conversation::ClientMessageId::parse(raw).is_err() => {
                return SendResponse::BadRequest(ErrorBody::with_message(
                    ErrorCode::InvalidRequest,
                    "'clientMessageId' must be 1-64 characters of letters, digits, '_' or '-'",
                ))
            }
            other => other.clone(),
        };
        let content = match ChatContent::parse(&body.0.content, ctx.websocket.max_message_chars) {
            Ok(c) => c,
            Err(e) => {
                let (code, message) = content_refusal(&e);
                return SendResponse::BadRequest(ErrorBody::with_message(code, message));
            }
        };
        match ctx.handoff.agent_message(&agent, &session, content).await {
            Ok(sent) => SendResponse::Created(Json(AgentMessageBody {
                message_id: sent.message_id.as_str().to_owned(),
                seq: sent.seq,
                client_message_id,
            })),
            Err(e) => match refused(&e) {
                Outcome::NotFound(b) => SendResponse::NotFound(b),
                Outcome::Conflict(b) => SendResponse::Conflict(b),
                Outcome::Unavailable(b) => SendResponse::Unavailable(b),
            },
        }
    }
}

/// Release (`resolve == false`) or resolve a held conversation.
async fn held_action(
    ctx: &AppContext,
    req: &Request,
    bearer: BearerToken,
    id: &str,
    resolve: bool,
) -> HeldResponse {
    let agent = match agent_of(ctx, req, bearer).await {
        Ok(agent) => agent,
        Err(gate) => return gated!(HeldResponse, gate),
    };
    let Ok(session) = SessionId::parse(id) else {
        return HeldResponse::NotFound(ErrorBody::new(ErrorCode::SessionNotFound));
    };
    let (done, mode) = if resolve {
        (ctx.handoff.resolve(&agent, &session).await, "bot")
    } else {
        (ctx.handoff.release(&agent, &session).await, "queued")
    };
    match done {
        Ok(()) => HeldResponse::Ok(mode_body(&session, mode)),
        Err(e) => match refused(&e) {
            Outcome::NotFound(b) => HeldResponse::NotFound(b),
            Outcome::Conflict(b) => HeldResponse::Conflict(b),
            Outcome::Unavailable(b) => HeldResponse::Unavailable(b),
        },
    }
}
