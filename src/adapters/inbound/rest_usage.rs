//! Token usage over REST: the caller's own in the current budget window
//! (`GET /api/usage`), and any user's for agents
//! (`GET /api/agent/users/{id}/usage`).

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{bearer_user, ApiTags, BearerTokenError, InvalidRequestError, Refused};
use super::errors::{code_sets, ErrorBody, ErrorCode};
use super::openapi::{BearerToken, Json};
use super::rest_agent::{agent_of, AgentOnlyError, Gate};
use super::AppContext;
use crate::domain::time::iso_millis;
use crate::domain::UserId;

code_sets! {
    /// The user store (checking the token) or the usage store does not answer.
    UsageUnavailableError = [ServiceUnavailable, UsageUnavailable];
    /// The user store (checking the token or the role) or the usage store does not answer.
    AgentUsageUnavailableError = [ServiceUnavailable, SessionStoreUnavailable, UsageUnavailable];
}

/// A user's token usage in the current budget window.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct UsageBody {
    /// Tokens (prompt, completion and reasoning) the user's answers cost in
    /// the current window.
    pub used: u64,
    /// `USER_TOKEN_BUDGET`; `null` when no budget is set.
    #[oai(nullable)]
    pub limit: Option<u64>,
    /// ISO-8601 UTC, milliseconds: when the window turns over; `null` when
    /// no budget is set.
    #[oai(nullable)]
    pub resets_at: Option<String>,
    /// `USER_TOKEN_BUDGET_WINDOW`, as `1d`, `12h`, `30m` or `45s`.
    pub window: String,
}

impl Example for UsageBody {
    fn example() -> Self {
        Self {
            used: 1834,
            limit: Some(50_000),
            resets_at: Some("2025-09-13T00:00:00.000Z".into()),
            window: "1d".into(),
        }
    }
}

#[derive(ApiResponse)]
enum UsageResponse {
    #[oai(status = 200)]
    Ok(Json<UsageBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<UsageUnavailableError>>),
}

#[derive(ApiResponse)]
enum UserUsageResponse {
    #[oai(status = 200)]
    Ok(Json<UsageBody>),
    /// The id is not a user id (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The caller is not an agent (`agent_only`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<AgentOnlyError>>),
    /// A store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<AgentUsageUnavailableError>>),
}

/// `user`'s usage, or why it cannot be read.
async fn usage_of(ctx: &AppContext, user: &UserId) -> Option<UsageBody> {
    let quota = ctx.chat.quota(user).await?;
    Some(UsageBody {
        used: quota.used,
        limit: quota.limit,
        resets_at: quota.resets_at.map(iso_millis),
        window: ctx.chat.usage_window().label(),
    })
}

/// Token usage.
pub struct UsageApi;

#[OpenApi]
impl UsageApi {
    /// The caller's token usage in the current budget window (counted also
    /// when no budget is set).
    #[oai(
        path = "/api/usage",
        method = "get",
        tag = "ApiTags::Sessions",
        operation_id = "usage"
    )]
    async fn usage(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> UsageResponse {
        let user = match bearer_user(&ctx, req, bearer).await {
            Ok(user) => user,
            Err(Refused::Unauthorized(b)) => return UsageResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return UsageResponse::Unavailable(b),
        };
        match usage_of(&ctx, &user.id).await {
            Some(body) => UsageResponse::Ok(Json(body)),
            None => UsageResponse::Unavailable(ErrorBody::new(ErrorCode::UsageUnavailable)),
        }
    }

    /// A user's token usage in the current budget window (agents only); a
    /// user never counted reads as `0`.
    #[oai(
        path = "/api/agent/users/:id/usage",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "userUsage"
    )]
    async fn user_usage(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        id: Path<String>,
    ) -> UserUsageResponse {
        if let Err(gate) = agent_of(&ctx, req, bearer).await {
            return match gate {
                Gate::Unauthorized(b) => UserUsageResponse::Unauthorized(b),
                Gate::Forbidden(b) => UserUsageResponse::Forbidden(b),
                Gate::Unavailable(b) => UserUsageResponse::Unavailable(b.0.widen()),
            };
        }
        let Ok(user) = UserId::parse(&id.0) else {
            return UserUsageResponse::BadRequest(ErrorBody::with_message(
                ErrorCode::InvalidRequest,
                "The id is not a user id",
            ));
        };
        match usage_of(&ctx, &user).await {
            Some(body) => UserUsageResponse::Ok(Json(body)),
            None => UserUsageResponse::Unavailable(ErrorBody::new(ErrorCode::UsageUnavailable)),
        }
    }
}
