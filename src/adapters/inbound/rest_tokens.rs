//! The REST operations of access beyond the password: refreshing tokens,
//! logging out (one token or everywhere) and buying WebSocket tickets.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{
    bad_request, bearer_authorized, rate_limited, rejects_body, unavailable_code, ApiTags,
    BearerTokenError, InternalServerError, InvalidRequestError, PayloadTooLargeError,
    RateLimitedError, Refused, RejectsBody, ServiceUnavailableError, SessionsUnavailableError,
};
use super::errors::{code_sets, ErrorBody, ErrorCode};
use super::openapi::{BearerToken, Json};
use super::rest_auth::{auth_body, AuthBody};
use super::{client_ip, connection_authenticated, AppContext};
use crate::application::AuthError;

code_sets! {
    InvalidRefreshTokenError = [InvalidRefreshToken];
}

/// A refresh request.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct RefreshRequest {
    /// The `refreshToken` from login, register or the last refresh.
    refresh_token: String,
}

/// What a refresh token looks like, for the spec's examples.
const EXAMPLE_REFRESH_TOKEN: &str = "rt_8Jc2b0kq3yPZr6x1sWdNq4vT9aLm";

impl Example for RefreshRequest {
    fn example() -> Self {
        Self {
            refresh_token: EXAMPLE_REFRESH_TOKEN.into(),
        }
    }
}

/// A logout request; the body is optional.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct LogoutRequest {
    /// The refresh token to revoke with the access token (its whole chain).
    #[oai(nullable)]
    refresh_token: Option<String>,
}

impl Example for LogoutRequest {
    fn example() -> Self {
        Self {
            refresh_token: Some(EXAMPLE_REFRESH_TOKEN.into()),
        }
    }
}

/// A WebSocket ticket.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct TicketBody {
    /// Opaque and single-use: open `/ws?ticket=<ticket>` with it, on any instance.
    ticket: String,
    /// Seconds the ticket can be redeemed (`WS_TICKET_TTL`, default 30).
    expires_in_seconds: u64,
}

impl Example for TicketBody {
    fn example() -> Self {
        Self {
            ticket: "wst_Qm3x8ZbV1pL0sK7dT2rN5yHc".into(),
            expires_in_seconds: 30,
        }
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request::<RefreshResponse>")]
enum RefreshResponse {
    /// A new access token and the refresh token's successor (the same body
    /// as login). Within `REFRESH_REUSE_GRACE` of a rotation, the same
    /// refresh token again gets the same successor.
    #[oai(status = 200)]
    Ok(Json<AuthBody>),
    /// Malformed JSON or a missing `refreshToken` (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// Unknown, expired, revoked or reused refresh token
    /// (`invalid_refresh_token`); a reuse after the grace also revokes every
    /// refresh token descended from the same login.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<InvalidRefreshTokenError>>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody<InternalServerError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request::<LogoutResponse>")]
enum LogoutResponse {
    /// The access token is revoked until it expires (refused everywhere;
    /// sockets opened with it close with 4001), and so is the given refresh
    /// token with its chain.
    #[oai(status = 204)]
    NoContent,
    /// The body is not valid JSON (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or already revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// A store does not answer (`service_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<ServiceUnavailableError>>),
}

#[derive(ApiResponse)]
enum LogoutAllResponse {
    /// Every token of the user issued before now is revoked: access tokens
    /// (including ones without `jti`, from the Node server) and refresh tokens.
    #[oai(status = 204)]
    NoContent,
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// A store does not answer (`service_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<ServiceUnavailableError>>),
}

#[derive(ApiResponse)]
enum TicketResponse {
    /// A single-use ticket for `/ws?ticket=`, bound to the caller and to the
    /// token it was bought with (the socket ends when that token does).
    #[oai(status = 200)]
    Ok(Json<TicketBody>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// Too many tickets for this user (`WS_TICKETS_PER_USER_PER_MINUTE`), or
    /// the user or this address already holds as many WebSockets as allowed
    /// (`WS_MAX_CONNECTIONS_PER_USER`, `WS_MAX_CONNECTIONS_PER_IP`):
    /// `rate_limited`; `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody<RateLimitedError>>,
        #[oai(header = "Retry-After")] u64,
    ),
    /// A store does not answer: `session_store_unavailable` while the
    /// session store (with Redis, where tickets live too) is down, else
    /// `service_unavailable`.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<SessionsUnavailableError>>),
}

rejects_body!(
    RefreshResponse: InvalidRequestError,
    LogoutResponse: InvalidRequestError
);

fn unavailable() -> Json<ErrorBody<ServiceUnavailableError>> {
    ErrorBody::new(ErrorCode::ServiceUnavailable)
}

/// A ticket that could not be had: the same 503 code the upgrade would get.
async fn ticket_unavailable(ctx: &AppContext) -> TicketResponse {
    let code = unavailable_code(ctx).await;
    TicketResponse::Unavailable(ErrorBody::new(code))
}

/// Token refresh, logout and WebSocket tickets.
pub struct TokenApi;

#[OpenApi]
impl TokenApi {
    /// Exchange a refresh token for a new access token and a new refresh token.
    #[oai(
        path = "/api/auth/refresh",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "refresh"
    )]
    async fn refresh(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        body: Json<RefreshRequest>,
    ) -> RefreshResponse {
        match ctx.auth.refresh(body.refresh_token.trim()).await {
            Ok(auth) => {
                connection_authenticated(req);
                RefreshResponse::Ok(Json(auth_body(auth)))
            }
            Err(AuthError::Internal) => {
                RefreshResponse::Internal(ErrorBody::new(ErrorCode::InternalError))
            }
            Err(_) => RefreshResponse::Unauthorized(ErrorBody::new(ErrorCode::InvalidRefreshToken)),
        }
    }

    /// Log out: revoke the Bearer access token, and the refresh token if given.
    #[oai(
        path = "/api/auth/logout",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "logout"
    )]
    async fn logout(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
        body: Json<Option<LogoutRequest>>,
    ) -> LogoutResponse {
        let who = match bearer_authorized(&ctx, req, bearer).await {
            Ok(who) => who,
            Err(Refused::Unauthorized(b)) => return LogoutResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return LogoutResponse::Unavailable(b),
        };
        let refresh = body.0.and_then(|b| b.refresh_token);
        match ctx
            .auth
            .logout(&who, refresh.as_deref().map(str::trim))
            .await
        {
            Ok(()) => LogoutResponse::NoContent,
            Err(_) => LogoutResponse::Unavailable(unavailable()),
        }
    }

    /// Log out everywhere: revoke every token of the Bearer token's user
    /// issued before now.
    #[oai(
        path = "/api/auth/logout-all",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "logoutAll"
    )]
    async fn logout_all(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> LogoutAllResponse {
        let who = match bearer_authorized(&ctx, req, bearer).await {
            Ok(who) => who,
            Err(Refused::Unauthorized(b)) => return LogoutAllResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return LogoutAllResponse::Unavailable(b),
        };
        match ctx.auth.logout_all(&who).await {
            Ok(()) => {
                if who.user.is_agent() {
                    // An agent who left everywhere answers nobody: what they
                    // held goes back to the queue now, not after the grace.
                    if let Err(e) = ctx.handoff.give_back_held(&who.user.id).await {
                        tracing::warn!(error = %crate::telemetry::ErrorChain(&e), "could not give back the conversations of an agent who logged out everywhere");
                    }
                }
                LogoutAllResponse::NoContent
            }
            Err(_) => LogoutAllResponse::Unavailable(unavailable()),
        }
    }

    /// Buy a single-use WebSocket ticket with the Bearer token, so a browser
    /// sees a bad login here, as JSON, and no token appears in a URL.
    #[oai(
        path = "/api/auth/ws-ticket",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "createWsTicket"
    )]
    async fn ws_ticket(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: BearerToken,
    ) -> TicketResponse {
        let who = match bearer_authorized::<SessionsUnavailableError>(&ctx, req, bearer).await {
            Ok(who) => who,
            Err(Refused::Unauthorized(b)) => return TicketResponse::Unauthorized(b),
            Err(Refused::Unavailable(b)) => return TicketResponse::Unavailable(b),
        };
        // Refused here, as JSON a browser can read, rather than as a failed
        // upgrade later.
        let user = who.user.id.clone();
        let allowed = match ctx.auth.ws_ticket_allowed(&user).await {
            Ok(()) => ctx.limits.connection_room(&user, client_ip(req)).await,
            Err(AuthError::RateLimited(limited)) => Err(limited),
            Err(_) => return ticket_unavailable(&ctx).await,
        };
        if let Err(limited) = allowed {
            let (body, secs) = rate_limited(limited);
            return TicketResponse::TooManyRequests(body, secs);
        }
        match ctx.auth.issue_ticket(&who).await {
            Ok(issued) => TicketResponse::Ok(Json(TicketBody {
                ticket: issued.ticket.expose().to_owned(),
                expires_in_seconds: issued.ttl.as_secs(),
            })),
            Err(_) => ticket_unavailable(&ctx).await,
        }
    }
}
