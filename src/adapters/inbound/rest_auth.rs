//! Registration, login and token verification (`/api/auth/register`,
//! `/login`, `/verify`); refresh, logout and tickets are in `rest_tokens`.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::{
    bad_request, rate_limited, rejects_body, ApiTags, BearerTokenError, InternalServerError,
    InvalidRequestError, PayloadTooLargeError, RateLimitedError, RejectsBody,
    ServiceUnavailableError, UserView,
};
use super::errors::{code_sets, ErrorBody, ErrorCode};
use super::openapi::{
    Documented, EmailRule, Json, OptionalBearerToken, PasswordRule, UsernameRule,
};
use super::{client_ip, connection_authenticated, AppContext};
use crate::application::{AuthError, Authenticated, Registration};
use crate::domain::{EmailAddress, Password, Username};

/// A registration request.
#[derive(Debug, Object)]
#[oai(example)]
struct RegisterRequest {
    /// 3-32 characters of letters, digits, `_`, `.` and `-`.
    username: Documented<UsernameRule>,
    /// A valid email address (at most 254 characters; surrounding spaces are
    /// trimmed); stored lower-cased.
    email: Documented<EmailRule>,
    /// 8-128 characters.
    password: Documented<PasswordRule>,
}

impl Example for RegisterRequest {
    fn example() -> Self {
        Self {
            username: Documented::new("alice"),
            email: Documented::new("alice@example.com"),
            password: Documented::new("correct horse battery"),
        }
    }
}

/// A login request. Neither field has a format rule: a login that breaks
/// one is only an `invalid_credentials`.
#[derive(Debug, Object)]
#[oai(example)]
struct LoginRequest {
    /// The username, or the email address.
    username: String,
    password: String,
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self {
            username: "alice".into(),
            password: "correct horse battery".into(),
        }
    }
}

/// A token verification request (alternatively send `Authorization: Bearer`).
#[derive(Debug, Object)]
#[oai(example)]
struct VerifyRequest {
    token: String,
}

impl Example for VerifyRequest {
    fn example() -> Self {
        Self {
            token: EXAMPLE_JWT.into(),
        }
    }
}

/// What a token looks like, for the spec's examples.
pub(super) const EXAMPLE_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
    eyJ1c2VySWQiOiI2NWExYjJjM2Q0ZTVmNmE3YjhjOWQwZTEiLCJ1c2VybmFtZSI6ImFsaWNlIn0.\
    c2lnbmF0dXJl";

/// A token and the user it belongs to.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct AuthBody {
    /// An HS256 JWT; send it as `Authorization: Bearer <token>`. For the
    /// WebSocket, browsers buy a ticket with it (`POST /api/auth/ws-ticket`).
    token: String,
    /// The token lifetime as configured in `JWT_EXPIRES_IN` (e.g. `24h`).
    expires_in: String,
    /// The token lifetime in seconds.
    expires_in_seconds: u64,
    /// Opaque and single-use: `POST /api/auth/refresh` exchanges it for a new
    /// `token` and a new `refreshToken` (lifetime `REFRESH_TOKEN_TTL`).
    refresh_token: String,
    user: UserView,
}

impl Example for AuthBody {
    fn example() -> Self {
        Self {
            token: EXAMPLE_JWT.into(),
            expires_in: "24h".into(),
            expires_in_seconds: 86_400,
            refresh_token: "rt_8Jc2b0kq3yPZr6x1sWdNq4vT9aLm".into(),
            user: UserView::example(),
        }
    }
}

/// The result of a successful token verification.
#[derive(Debug, Object)]
#[oai(example)]
struct VerifyBody {
    /// Always `true` (an invalid token gets a 401).
    valid: bool,
    user: UserView,
}

impl Example for VerifyBody {
    fn example() -> Self {
        Self {
            valid: true,
            user: UserView::example(),
        }
    }
}

code_sets! {
    /// A registration body that is not JSON, or a field that breaks its rule.
    RegisterInvalidError = [InvalidRequest, InvalidUsername, InvalidEmail, InvalidPassword];
    RegistrationClosedError = [RegistrationClosed];
    AccountTakenError = [UsernameTaken, EmailTaken];
    InvalidCredentialsError = [InvalidCredentials];
}

rejects_body!(
    RegisterResponse: RegisterInvalidError,
    LoginResponse: InvalidRequestError,
    VerifyResponse: InvalidRequestError
);

fn internal_error() -> Json<ErrorBody<InternalServerError>> {
    ErrorBody::new(ErrorCode::InternalError)
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request::<RegisterResponse>")]
enum RegisterResponse {
    /// The account was created; here is a token for it.
    #[oai(status = 201)]
    Created(Json<AuthBody>),
    /// Malformed JSON, or a field breaks its rule (`invalid_request`,
    /// `invalid_username`, `invalid_email`, `invalid_password`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<RegisterInvalidError>>),
    /// Registration is turned off (`ALLOW_REGISTRATION=false`): `registration_closed`.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody<RegistrationClosedError>>),
    /// The username (`username_taken`, also for another capitalisation of a
    /// taken name) or email (`email_taken`) is already registered.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody<AccountTakenError>>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// Too many registrations from this address (`rate_limited`,
    /// `REGISTER_PER_IP_PER_HOUR`); `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody<RateLimitedError>>,
        #[oai(header = "Retry-After")] u64,
    ),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody<InternalServerError>>),
    /// Password hashing is at capacity (`service_unavailable`); try again shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<ServiceUnavailableError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request::<LoginResponse>")]
enum LoginResponse {
    /// Logged in; `lastLogin` is updated.
    #[oai(status = 200)]
    Ok(Json<AuthBody>),
    /// Malformed JSON or missing fields (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// Unknown user, wrong password or inactive account, indistinguishably
    /// (`invalid_credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<InvalidCredentialsError>>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// Too many failed logins (`rate_limited`): for this account from this
    /// address (`LOGIN_MAX_FAILURES_PER_ACCOUNT`), from this address
    /// (`LOGIN_MAX_FAILURES_PER_IP`) or for this account
    /// (`LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY`). Answered without checking
    /// the password, even a right one; `Retry-After` says when to try again.
    /// Unknown accounts are throttled the same way.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody<RateLimitedError>>,
        #[oai(header = "Retry-After")] u64,
    ),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody<InternalServerError>>),
    /// Password hashing is at capacity (`service_unavailable`); try again shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<ServiceUnavailableError>>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request::<VerifyResponse>")]
enum VerifyResponse {
    /// The token is valid and its user exists and is active.
    #[oai(status = 200)]
    Ok(Json<VerifyBody>),
    /// The body is not valid JSON (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody<InvalidRequestError>>),
    /// No token (`missing_token`), an invalid (`invalid_token`), expired
    /// (`token_expired`) or revoked one (`token_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody<PayloadTooLargeError>>),
    /// Too many verifications from this address (`rate_limited`,
    /// `VERIFY_PER_IP_PER_MINUTE`); `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody<RateLimitedError>>,
        #[oai(header = "Retry-After")] u64,
    ),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody<InternalServerError>>),
}

/// Registration, login and token verification.
pub struct AuthApi;

#[OpenApi]
impl AuthApi {
    /// Register a new account.
    #[oai(
        path = "/api/auth/register",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "register"
    )]
    async fn register(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        body: Json<RegisterRequest>,
    ) -> RegisterResponse {
        let closed = || RegisterResponse::Forbidden(ErrorBody::new(ErrorCode::RegistrationClosed));
        // Closed before any field is judged, so the rules reveal nothing.
        if !ctx.auth.registration_open() {
            return closed();
        }
        let registration = match parse_registration(&body.0) {
            Ok(r) => r,
            Err(e) => return RegisterResponse::BadRequest(e),
        };
        match ctx.auth.register(registration, client_ip(req)).await {
            Ok(auth) => {
                connection_authenticated(req);
                RegisterResponse::Created(Json(auth_body(auth)))
            }
            Err(e @ (AuthError::UsernameTaken | AuthError::EmailTaken)) => {
                RegisterResponse::Conflict(ErrorBody::new(ErrorCode::from(&e)))
            }
            Err(AuthError::RegistrationClosed) => closed(),
            Err(AuthError::RateLimited(limited)) => {
                let (body, secs) = rate_limited(limited);
                RegisterResponse::TooManyRequests(body, secs)
            }
            Err(e @ AuthError::Busy) => {
                RegisterResponse::Unavailable(ErrorBody::new(ErrorCode::from(&e)))
            }
            Err(_) => RegisterResponse::Internal(internal_error()),
        }
    }

    /// Log in with a username (or email) and password.
    #[oai(
        path = "/api/auth/login",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "login"
    )]
    async fn login(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> LoginResponse {
        let password = Password::for_login(&body.password);
        let login = ctx
            .auth
            .login(body.username.trim(), &password, client_ip(req));
        match login.await {
            Ok(auth) => {
                connection_authenticated(req);
                LoginResponse::Ok(Json(auth_body(auth)))
            }
            Err(AuthError::Internal) => LoginResponse::Internal(internal_error()),
            Err(AuthError::RateLimited(limited)) => {
                let (body, secs) = rate_limited(limited);
                LoginResponse::TooManyRequests(body, secs)
            }
            Err(e @ AuthError::Busy) => {
                LoginResponse::Unavailable(ErrorBody::new(ErrorCode::from(&e)))
            }
            Err(_) => LoginResponse::Unauthorized(ErrorBody::new(ErrorCode::InvalidCredentials)),
        }
    }

    /// Check a token, sent as `Authorization: Bearer <token>` or as `{"token": ...}`.
    #[oai(
        path = "/api/auth/verify",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "verify"
    )]
    async fn verify(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        bearer: OptionalBearerToken,
        body: Json<Option<VerifyRequest>>,
    ) -> VerifyResponse {
        let token = bearer.0.or(body.0.map(|b| b.token));
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            return VerifyResponse::Unauthorized(ErrorBody::with_message(
                ErrorCode::MissingToken,
                "Send the token as 'Authorization: Bearer <token>' or in the body as {\"token\": ...}",
            ));
        };
        match ctx.auth.verify(token.trim(), client_ip(req)).await {
            Ok(user) => {
                connection_authenticated(req);
                VerifyResponse::Ok(Json(VerifyBody {
                    valid: true,
                    user: UserView::from(&user),
                }))
            }
            Err(AuthError::Internal) => VerifyResponse::Internal(internal_error()),
            Err(AuthError::RateLimited(limited)) => {
                let (body, secs) = rate_limited(limited);
                VerifyResponse::TooManyRequests(body, secs)
            }
            Err(e) => VerifyResponse::Unauthorized(ErrorBody::new(ErrorCode::from(&e))),
        }
    }
}

fn parse_registration(
    body: &RegisterRequest,
) -> Result<Registration, Json<ErrorBody<RegisterInvalidError>>> {
    // The domain's own words say which rule the field broke.
    let invalid = |code, e: &dyn std::fmt::Display| ErrorBody::with_message(code, e.to_string());
    let username = Username::parse(body.username.as_str())
        .map_err(|e| invalid(ErrorCode::InvalidUsername, &e))?;
    let email = EmailAddress::parse(body.email.as_str())
        .map_err(|e| invalid(ErrorCode::InvalidEmail, &e))?;
    let password = Password::parse(body.password.as_str())
        .map_err(|e| invalid(ErrorCode::InvalidPassword, &e))?;
    Ok(Registration {
        username,
        email,
        password,
    })
}

pub(super) fn auth_body(auth: Authenticated) -> AuthBody {
    AuthBody {
        expires_in: auth.token.lifetime.as_str().to_owned(),
        expires_in_seconds: auth.token.lifetime.seconds(),
        token: auth.token.token,
        refresh_token: auth.refresh_token.expose().to_owned(),
        user: UserView::from(&auth.user),
    }
}
