//! What the REST operations and the sockets share: the spec's tags, the
//! user as clients see it, the error code sets and refusals of more than one
//! area, and checking a bearer token.

use poem::Request;
use poem_openapi::types::Example;
use poem_openapi::{Object, Tags};
use serde::Serialize;

use super::errors::{code_sets, retry_after_secs, CodeSet, ErrorBody, ErrorCode};
use super::openapi::{
    BearerToken, DateTimeRule, Documented, EmailRule, IdRule, Json, UsernameRule,
};
use super::{connection_authenticated, AppContext};
use crate::application::{AuthError, Authorized, Limited};
use crate::domain::time::iso_millis;
use crate::domain::User;

#[derive(Tags)]
pub(super) enum ApiTags {
    /// Registration, login and token verification.
    Auth,
    /// Health, statistics and connection information.
    Server,
    /// A user's conversations, readable without a socket.
    Sessions,
    /// Human agents: the handoff queue and the conversations they hold
    /// (agent accounts only; see `chatbot-server users set-role`).
    Agents,
}

/// A user as clients see it; the password hash never leaves the server.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Documented<IdRule>,
    pub username: Documented<UsernameRule>,
    /// Lower-cased.
    pub email: Documented<EmailRule>,
    /// ISO-8601 UTC, milliseconds.
    pub created_at: Documented<DateTimeRule>,
    /// ISO-8601 UTC, milliseconds; `null` before the first login.
    #[oai(nullable)]
    pub last_login: Option<Documented<DateTimeRule>>,
    pub is_active: bool,
}

impl Example for UserView {
    fn example() -> Self {
        Self {
            id: Documented::new("65a1b2c3d4e5f6a7b8c9d0e1"),
            username: Documented::new("alice"),
            email: Documented::new("alice@example.com"),
            created_at: Documented::new("2025-09-12T10:30:00.000Z"),
            last_login: Some(Documented::new("2025-09-14T08:02:11.418Z")),
            is_active: true,
        }
    }
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: Documented::new(u.id.as_str()),
            username: Documented::new(u.username.as_str()),
            email: Documented::new(u.email.as_str()),
            created_at: Documented::new(iso_millis(u.created_at)),
            last_login: u.last_login.map(|at| Documented::new(iso_millis(at))),
            is_active: u.is_active,
        }
    }
}

code_sets! {
    /// A body (or query) that is not what the operation takes.
    InvalidRequestError = [InvalidRequest];
    PayloadTooLargeError = [PayloadTooLarge];
    RateLimitedError = [RateLimited];
    InternalServerError = [InternalError];
    ServiceUnavailableError = [ServiceUnavailable];
    /// A missing, invalid, expired or revoked bearer token.
    BearerTokenError = [MissingToken, InvalidToken, TokenExpired, TokenRevoked];
    /// The user store (checking the token) or the session store does not answer.
    SessionsUnavailableError = [ServiceUnavailable, SessionStoreUnavailable];
    SessionNotFoundError = [SessionNotFound];
}

/// An operation whose response can say "this body was not what I take":
/// too large, or not the JSON it expects.
pub(super) trait RejectsBody {
    /// The codes of its 400 response.
    type Invalid: CodeSet;

    fn too_large(body: Json<ErrorBody<PayloadTooLargeError>>) -> Self;
    fn invalid(body: Json<ErrorBody<Self::Invalid>>) -> Self;
}

/// The one `bad_request_handler` of every operation with a JSON body.
/// Oversized bodies are normally refused by the server's body limit before the
/// operation runs; this keeps the answer the same if one gets here.
pub(super) fn bad_request<R: RejectsBody>(err: poem::Error) -> R {
    if err.status() == poem::http::StatusCode::PAYLOAD_TOO_LARGE {
        return R::too_large(ErrorBody::new(ErrorCode::PayloadTooLarge));
    }
    let code = ErrorCode::InvalidRequest;
    R::invalid(ErrorBody::with_message(
        code,
        format!("{} ({err})", code.message()),
    ))
}

/// Implements [`RejectsBody`] for response enums with `PayloadTooLarge` and
/// `BadRequest` variants, whose 400 carries the codes `$invalid`.
macro_rules! rejects_body {
    ($($response:ty: $invalid:ty),*) => {$(
        impl RejectsBody for $response {
            type Invalid = $invalid;

            fn too_large(body: Json<ErrorBody<PayloadTooLargeError>>) -> Self {
                Self::PayloadTooLarge(body)
            }
            fn invalid(body: Json<ErrorBody<$invalid>>) -> Self {
                Self::BadRequest(body)
            }
        }
    )*};
}
pub(super) use rejects_body;

/// The `rate_limited` body and its `Retry-After` seconds.
pub(super) fn rate_limited(limited: Limited) -> (Json<ErrorBody<RateLimitedError>>, u64) {
    let secs = retry_after_secs(limited.retry_after);
    let code = ErrorCode::RateLimited;
    let body = ErrorBody::with_message(code, format!("{} (retry in {secs} s)", code.message()));
    (body, secs)
}

/// Why a bearer-authenticated request was refused: 401, or 503 with a code
/// of `U`, the operation's 503 codes.
pub(super) enum Refused<U: CodeSet> {
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    Unavailable(Json<ErrorBody<U>>),
}

/// The user of the request's bearer token.
pub(super) async fn bearer_user<U: CodeSet>(
    ctx: &AppContext,
    req: &Request,
    token: BearerToken,
) -> Result<User, Refused<U>> {
    bearer_authorized(ctx, req, token).await.map(|a| a.user)
}

/// The request's bearer token, verified, with its user.
pub(super) async fn bearer_authorized<U: CodeSet>(
    ctx: &AppContext,
    req: &Request,
    token: BearerToken,
) -> Result<Authorized, Refused<U>> {
    let Some(token) = token.0 else {
        return Err(Refused::Unauthorized(ErrorBody::new(
            ErrorCode::MissingToken,
        )));
    };
    match ctx.auth.authorize(&token).await {
        Ok(authorized) => {
            connection_authenticated(req);
            Ok(authorized)
        }
        Err(AuthError::Internal) => {
            // Which store failed, where the operation can say so.
            let code = if U::CODES.contains(&ErrorCode::SessionStoreUnavailable) {
                unavailable_code(ctx).await
            } else {
                ErrorCode::ServiceUnavailable
            };
            Err(Refused::Unavailable(ErrorBody::new(code)))
        }
        Err(e) => Err(Refused::Unauthorized(ErrorBody::new(ErrorCode::from(&e)))),
    }
}

/// The 503 code for a token that could not be checked. With Redis the
/// revocations and tickets live beside the sessions: when the session store
/// does not answer either, that outage is the one to wait out, and the
/// client hears `session_store_unavailable` as from any other Redis-backed
/// request; otherwise the user store failed (`service_unavailable`).
pub(super) async fn unavailable_code(ctx: &AppContext) -> ErrorCode {
    if ctx.chat.session_store_answers().await {
        ErrorCode::ServiceUnavailable
    } else {
        ErrorCode::SessionStoreUnavailable
    }
}
