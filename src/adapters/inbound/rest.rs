//! The REST API (poem-openapi): auth, health, stats and WebSocket info.
//!
//! Each operation has its own response enum, so the generated spec lists every
//! status the operation can return; doc comments become the spec's text.

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde::Serialize;

use super::errors::{code_sets, retry_after_secs, CodeSet, ErrorBody, ErrorCode};
use super::openapi::{
    BearerToken, DateTimeRule, Documented, EmailRule, IdRule, Json, OptionalBearerToken,
    PasswordRule, UsernameRule,
};
use super::ws::agent_protocol::{AGENT_CLIENT_MESSAGE_TYPES, AGENT_SERVER_MESSAGE_TYPES};
use super::ws::protocol::event_value;
use super::ws::transport::CloseReason;
use super::ws::{CLIENT_MESSAGE_TYPES, SERVER_MESSAGE_TYPES, UPGRADE_REFUSALS, WS_AUTHENTICATION};
use super::{client_ip, connection_authenticated, AppContext, MAX_FRAME_BYTES};
use crate::application::health::{HealthReport, Probe};
use crate::application::limits::{LimitSettings, Rule};
use crate::application::ports::LogSlice;
use crate::application::ports::{AiHealth, CircuitState};
use crate::application::{AuthError, Authenticated, Authorized, ChatError, Limited, Registration};
use crate::config::WebSocketConfig;
use crate::domain::conversation::Seq;
use crate::domain::time::iso_millis;
use crate::domain::{EmailAddress, Password, SessionId, User, Username};
use crate::telemetry::ErrorChain;

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

#[derive(Debug, Object)]
struct HealthChecks {
    /// `ok` or `unavailable`: whether the user store answers.
    database: String,
    /// `ok` (upstream answers), `unreachable`, or `echo` (built-in model, no upstream).
    ai: String,
    /// The configured AI upstreams, primary first, with their circuit
    /// breakers (empty with the echo model).
    upstreams: Vec<UpstreamHealth>,
}

/// One AI upstream and its circuit breaker.
#[derive(Debug, Object, Serialize)]
pub(super) struct UpstreamHealth {
    /// `primary` or `fallback`.
    role: String,
    /// `fastapi` or `openai`.
    provider: String,
    /// `closed` (chats go to it), `open` (chats skip it: `ai_unavailable` at
    /// once, or the fallback) or `half_open` (the next chat probes it).
    circuit: String,
}

/// Server health.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct HealthBody {
    /// `ok`, or `unavailable` when the user store does not answer.
    status: String,
    uptime_seconds: u64,
    checks: HealthChecks,
}

/// The process answers.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub(super) struct LiveBody {
    /// Always `ok`.
    status: String,
}

/// What readiness depends on, as the background probes last found it.
#[derive(Debug, Object, Serialize)]
pub(super) struct ReadyChecks {
    /// `ok`, `unavailable` or `pending` (not answered yet): the user store.
    users: String,
    /// `ok`, `unavailable` or `pending`: the session store.
    sessions: String,
    /// `ok`, `unreachable`, `echo` or `pending`: the AI service.
    ai: String,
    /// The configured AI upstreams with their circuit breakers.
    upstreams: Vec<UpstreamHealth>,
}

/// Whether this instance should get traffic.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub(super) struct ReadyBody {
    /// `ready`; `degraded` (serving, but the AI does not answer or a
    /// circuit breaker is open: chats may fail with `ai_unavailable`);
    /// `unavailable` (a store does not answer); or `shutting_down`.
    status: String,
    checks: ReadyChecks,
}

impl Example for LiveBody {
    fn example() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

impl Example for ReadyBody {
    fn example() -> Self {
        Self {
            status: "ready".into(),
            checks: ReadyChecks {
                users: "ok".into(),
                sessions: "ok".into(),
                ai: "ok".into(),
                upstreams: vec![UpstreamHealth {
                    role: "primary".into(),
                    provider: "fastapi".into(),
                    circuit: "closed".into(),
                }],
            },
        }
    }
}

impl Example for HealthBody {
    fn example() -> Self {
        Self {
            status: "ok".into(),
            uptime_seconds: 3600,
            checks: HealthChecks {
                database: "ok".into(),
                ai: "ok".into(),
                upstreams: vec![UpstreamHealth {
                    role: "primary".into(),
                    provider: "fastapi".into(),
                    circuit: "closed".into(),
                }],
            },
        }
    }
}

/// Counters since start-up.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct StatsBody {
    /// Open WebSocket connections on this instance.
    active_connections: u64,
    /// Sessions in the session store (including ones waiting to be resumed).
    active_sessions: u64,
    /// WebSocket connections accepted since start-up.
    total_connections: u64,
    /// Chat messages received since start-up.
    total_messages: u64,
    /// Sessions in the store that asked for a human.
    escalated_sessions: u64,
    uptime_seconds: u64,
}

impl Example for StatsBody {
    fn example() -> Self {
        Self {
            active_connections: 12,
            active_sessions: 15,
            total_connections: 340,
            total_messages: 2210,
            escalated_sessions: 1,
            uptime_seconds: 3600,
        }
    }
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct WsMessageTypes {
    /// Messages a client may send.
    client: Vec<String>,
    /// Messages the server sends.
    server: Vec<String>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct WsLimits {
    /// Maximum characters of a chat message's `content`.
    max_message_chars: u64,
    /// Maximum bytes of one frame or message; larger closes the connection with 1009.
    max_frame_bytes: u64,
    /// Seconds between the server's WebSocket pings.
    ping_interval_seconds: u64,
    /// Seconds without a pong after which the server closes the connection.
    pong_timeout_seconds: u64,
    /// Generations that may run at once per session (over all its tabs).
    concurrent_generations: u64,
    /// Generations one user may run at once over all sessions and instances
    /// (`CHAT_MAX_CONCURRENT_PER_USER`; 0: no limit). Past it a chat gets an
    /// `error` with code `rate_limited` and `retryAfterMs`.
    concurrent_generations_per_user: u64,
    /// Chats one user may send per `chatWindowSeconds`, all at once if they
    /// like (`CHAT_MESSAGES_PER_MINUTE`; 0: no limit).
    chats_per_window: u64,
    chat_window_seconds: u64,
    /// Open connections per user and per client address, over all instances
    /// (`WS_MAX_CONNECTIONS_PER_USER`, `WS_MAX_CONNECTIONS_PER_IP`; 0: no
    /// limit). Past either, the upgrade is refused with 429 `rate_limited`.
    max_connections_per_user: u64,
    max_connections_per_ip: u64,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct WsErrorCodes {
    /// Codes that refuse the upgrade, as an HTTP error with the JSON error body.
    upgrade: Vec<ErrorCode>,
    /// Codes of the `error` messages sent on an open connection.
    messages: Vec<ErrorCode>,
}

/// How to use the WebSocket endpoint.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct WsInfoBody {
    /// The path of the WebSocket endpoint.
    endpoint: String,
    /// Accepted ways to present the JWT.
    authentication: Vec<String>,
    /// Query parameters that resume a session (`sessionId`) and replay what
    /// came after a seq (`lastSeq`).
    resume: Vec<String>,
    message_types: WsMessageTypes,
    limits: WsLimits,
    error_codes: WsErrorCodes,
    /// Close codes the server uses, besides the standard ones.
    close_codes: Vec<WsCloseCode>,
    active_connections: u64,
    agent_socket: AgentSocketInfo,
}

/// The human agents' socket. Its authentication, limits, keep-alive, error
/// codes and close codes are those of the customers' socket above.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct AgentSocketInfo {
    /// The path of the agent socket.
    endpoint: String,
    /// The role the user store must hold for the account; anyone else is
    /// refused before the upgrade with 403 `agent_only`.
    role: String,
    /// How a console resumes one conversation: a `watch` message with the
    /// conversation's `sessionId` and the last `lastSeq` it has shown.
    resume: Vec<String>,
    message_types: WsMessageTypes,
}

#[derive(Debug, Object)]
struct WsCloseCode {
    code: u16,
    reason: String,
}

code_sets! {
    /// A body (or query) that is not what the operation takes.
    InvalidRequestError = [InvalidRequest];
    /// A registration body that is not JSON, or a field that breaks its rule.
    RegisterInvalidError = [InvalidRequest, InvalidUsername, InvalidEmail, InvalidPassword];
    RegistrationClosedError = [RegistrationClosed];
    AccountTakenError = [UsernameTaken, EmailTaken];
    PayloadTooLargeError = [PayloadTooLarge];
    RateLimitedError = [RateLimited];
    InternalServerError = [InternalError];
    ServiceUnavailableError = [ServiceUnavailable];
    InvalidCredentialsError = [InvalidCredentials];
    /// A missing, invalid, expired or revoked bearer token.
    BearerTokenError = [MissingToken, InvalidToken, TokenExpired, TokenRevoked];
    InvalidRefreshTokenError = [InvalidRefreshToken];
    StatsUnavailableError = [SessionStoreUnavailable];
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

rejects_body!(
    RegisterResponse: RegisterInvalidError,
    LoginResponse: InvalidRequestError,
    VerifyResponse: InvalidRequestError
);

fn internal_error() -> Json<ErrorBody<InternalServerError>> {
    ErrorBody::new(ErrorCode::InternalError)
}

/// The `rate_limited` body and its `Retry-After` seconds.
pub(super) fn rate_limited(limited: Limited) -> (Json<ErrorBody<RateLimitedError>>, u64) {
    let secs = retry_after_secs(limited.retry_after);
    let code = ErrorCode::RateLimited;
    let body = ErrorBody::with_message(code, format!("{} (retry in {secs} s)", code.message()));
    (body, secs)
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

#[derive(ApiResponse)]
enum HealthResponse {
    /// The server and its user store answer.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// The user store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<HealthBody>),
}

#[derive(ApiResponse)]
enum LiveResponse {
    /// The process answers (nothing else is checked).
    #[oai(status = 200)]
    Ok(Json<LiveBody>),
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Ready, or degraded: the stores answer and the server is not stopping.
    #[oai(status = 200)]
    Ok(Json<ReadyBody>),
    /// A store does not answer, or the server is shutting down.
    #[oai(status = 503)]
    Unavailable(Json<ReadyBody>),
}

/// `/health/live`'s answer.
pub(super) fn liveness() -> LiveBody {
    LiveBody {
        status: "ok".to_owned(),
    }
}

fn probe_text(probe: Probe) -> &'static str {
    match probe {
        Probe::Ok => "ok",
        Probe::Failed => "unavailable",
        Probe::Pending => "pending",
    }
}

fn ai_text(ai: Option<AiHealth>) -> &'static str {
    match ai {
        Some(AiHealth::Ok) => "ok",
        Some(AiHealth::Echo) => "echo",
        Some(AiHealth::Unreachable) => "unreachable",
        None => "pending",
    }
}

fn upstreams(ctx: &AppContext) -> Vec<UpstreamHealth> {
    ctx.chat
        .ai_upstreams()
        .into_iter()
        .map(|u| UpstreamHealth {
            role: u.role.to_owned(),
            provider: u.provider.to_owned(),
            circuit: u.circuit.as_str().to_owned(),
        })
        .collect()
}

/// `/health/ready`'s answer from the last probes, and whether it is a 200.
/// Never waits on a dependency (see [`crate::application::health`]).
pub(super) async fn readiness(ctx: &AppContext) -> (bool, ReadyBody) {
    let report: HealthReport = ctx.health().await;
    let upstreams = upstreams(ctx);
    let stores_ok = report.users == Probe::Ok && report.sessions == Probe::Ok;
    let ai_down = report.ai == Some(AiHealth::Unreachable)
        || upstreams
            .iter()
            .any(|u| u.circuit != CircuitState::Closed.as_str());
    let status = if ctx.shutdown.is_cancelled() {
        ErrorCode::ShuttingDown.as_str()
    } else if !stores_ok {
        "unavailable"
    } else if ai_down {
        "degraded"
    } else {
        "ready"
    };
    let body = ReadyBody {
        status: status.to_owned(),
        checks: ReadyChecks {
            users: probe_text(report.users).to_owned(),
            sessions: probe_text(report.sessions).to_owned(),
            ai: ai_text(report.ai).to_owned(),
            upstreams,
        },
    };
    (matches!(status, "ready" | "degraded"), body)
}

#[derive(ApiResponse)]
enum StatsResponse {
    #[oai(status = 200)]
    Ok(Json<StatsBody>),
    /// The session store does not answer (`session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<StatsUnavailableError>>),
}

#[derive(ApiResponse)]
enum WsInfoResponse {
    #[oai(status = 200)]
    Ok(Json<WsInfoBody>),
}

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

/// Why a bearer-authenticated request was refused: 401, or 503 with a code
/// of `U`, the operation's 503 codes.
pub(super) enum Refused<U: CodeSet> {
    Unauthorized(Json<ErrorBody<BearerTokenError>>),
    Unavailable(Json<ErrorBody<U>>),
}

/// The user of the request's bearer token.
async fn bearer_user<U: CodeSet>(
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
                super::ws::unavailable_code(ctx).await
            } else {
                ErrorCode::ServiceUnavailable
            };
            Err(Refused::Unavailable(ErrorBody::new(code)))
        }
        Err(e) => Err(Refused::Unauthorized(ErrorBody::new(ErrorCode::from(&e)))),
    }
}

/// Store failures of the session routes: logged, then a stable 503 body.
fn store_failure(e: &ChatError) -> Json<ErrorBody<SessionsUnavailableError>> {
    tracing::warn!(error = %ErrorChain(e), "session routes: a store failed");
    ErrorBody::new(ErrorCode::SessionStoreUnavailable)
}

/// The REST operations. Stateless: the shared [`AppContext`] arrives through
/// poem's `Data`, so the spec can be generated without a running server.
pub struct Api;

#[OpenApi]
impl Api {
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

    /// Dependency health, as the background probes last found it (every
    /// `HEALTH_PROBE_INTERVAL`): answers at once, however slow a dependency.
    #[oai(
        path = "/health",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "health"
    )]
    async fn health(&self, ctx: Data<&Arc<AppContext>>) -> HealthResponse {
        let report = ctx.health().await;
        let database_ok = report.users == Probe::Ok;
        let database = if database_ok { "ok" } else { "unavailable" };
        let body = HealthBody {
            status: database.to_owned(),
            uptime_seconds: ctx.uptime_seconds(),
            checks: HealthChecks {
                database: database.to_owned(),
                // Not answered yet counts as not answering.
                ai: match report.ai {
                    None => "unreachable",
                    ai => ai_text(ai),
                }
                .to_owned(),
                upstreams: upstreams(&ctx),
            },
        };
        if database_ok {
            HealthResponse::Ok(Json(body))
        } else {
            HealthResponse::Unavailable(Json(body))
        }
    }

    /// Liveness: the process answers. Checks nothing else, so a slow
    /// dependency never gets the process restarted.
    #[oai(
        path = "/health/live",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "healthLive"
    )]
    async fn live(&self) -> LiveResponse {
        LiveResponse::Ok(Json(liveness()))
    }

    /// Readiness: the user and session stores answer and the server is not
    /// shutting down (503 otherwise). An AI that does not answer, or an open
    /// circuit breaker, makes it `degraded` but still 200: chats fail fast
    /// with `ai_unavailable` (or go to the fallback), everything else works.
    /// Reports the background probes' last answers without waiting.
    #[oai(
        path = "/health/ready",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "healthReady"
    )]
    async fn ready(&self, ctx: Data<&Arc<AppContext>>) -> ReadyResponse {
        match readiness(&ctx).await {
            (true, body) => ReadyResponse::Ok(Json(body)),
            (false, body) => ReadyResponse::Unavailable(Json(body)),
        }
    }

    /// Server statistics.
    #[oai(
        path = "/api/stats",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "stats"
    )]
    async fn stats(&self, ctx: Data<&Arc<AppContext>>) -> StatsResponse {
        let counts = match ctx.chat.session_counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "session counts unavailable");
                return StatsResponse::Unavailable(ErrorBody::new(ErrorCode::from(&e)));
            }
        };
        let s = ctx.chat.stats();
        StatsResponse::Ok(Json(StatsBody {
            active_connections: s.active_connections,
            active_sessions: counts.active,
            total_connections: s.total_connections,
            total_messages: s.total_messages,
            escalated_sessions: counts.escalated,
            uptime_seconds: ctx.uptime_seconds(),
        }))
    }

    /// How to connect to and talk over the WebSocket endpoints: `/ws` for
    /// customers, and `/agent/ws` for human agents (`agentSocket`).
    #[oai(
        path = "/api/websocket/info",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "websocketInfo"
    )]
    async fn websocket_info(&self, ctx: Data<&Arc<AppContext>>) -> WsInfoResponse {
        let active = ctx.chat.stats().active_connections;
        WsInfoResponse::Ok(Json(ws_info(
            &ctx.websocket,
            ctx.chat.limit_settings(),
            active,
        )))
    }

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

/// `/api/websocket/info` for these settings.
fn ws_info(settings: &WebSocketConfig, limits: &LimitSettings, active: u64) -> WsInfoBody {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    WsInfoBody {
        endpoint: "/ws".into(),
        authentication: strings(WS_AUTHENTICATION),
        resume: strings(&["query:sessionId", "query:lastSeq"]),
        message_types: WsMessageTypes {
            client: strings(CLIENT_MESSAGE_TYPES),
            server: strings(SERVER_MESSAGE_TYPES),
        },
        limits: WsLimits {
            max_message_chars: settings.max_message_chars as u64,
            max_frame_bytes: MAX_FRAME_BYTES as u64,
            ping_interval_seconds: settings.ping_interval.as_secs(),
            pong_timeout_seconds: settings.pong_timeout.as_secs(),
            concurrent_generations: 1,
            concurrent_generations_per_user: limits.chat_concurrent_per_user.map_or(0, u64::from),
            chats_per_window: limits.chats_per_user.map_or(0, |r| r.max.into()),
            chat_window_seconds: limits.chats_per_user.map_or(0, |r| r.window.as_secs()),
            max_connections_per_user: limits.ws_connections_per_user.map_or(0, u64::from),
            max_connections_per_ip: limits.ws_connections_per_ip.map_or(0, u64::from),
        },
        error_codes: WsErrorCodes {
            upgrade: UPGRADE_REFUSALS.to_vec(),
            messages: ErrorCode::websocket_codes().collect(),
        },
        close_codes: CloseReason::ALL
            .iter()
            .map(|r| WsCloseCode {
                code: r.code().into(),
                reason: r.text().to_owned(),
            })
            .collect(),
        active_connections: active,
        agent_socket: AgentSocketInfo {
            endpoint: "/agent/ws".into(),
            role: "agent".into(),
            resume: strings(&["message:watch.sessionId", "message:watch.lastSeq"]),
            message_types: WsMessageTypes {
                client: strings(AGENT_CLIENT_MESSAGE_TYPES),
                server: strings(AGENT_SERVER_MESSAGE_TYPES),
            },
        },
    }
}

impl Example for WsInfoBody {
    /// What a server with the default settings answers.
    fn example() -> Self {
        let settings = WebSocketConfig {
            max_message_chars: 10_000,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
        };
        let limits = LimitSettings {
            chats_per_user: Some(Rule {
                max: 20,
                window: Duration::from_secs(60),
            }),
            chat_concurrent_per_user: Some(3),
            ws_connections_per_user: Some(20),
            ws_connections_per_ip: Some(100),
            ..LimitSettings::default()
        };
        ws_info(&settings, &limits, 12)
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

/// The token from `Authorization: Bearer <token>`, if that header is present.
pub fn bearer_token(req: &Request) -> Option<String> {
    let value = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    //! Failure paths a real store will not produce on demand, checked through
    //! the full route stack with mocked ports.

    use std::collections::HashMap;
    use std::time::Duration;

    use poem::http::StatusCode;
    use poem::test::TestClient;
    use serde_json::json;

    use super::*;
    use crate::adapters::outbound::memory_access::{InMemoryRevocationStore, InMemoryTicketStore};
    use crate::adapters::outbound::memory_conversations::{
        InMemoryEventLog, InMemoryGenerationRegistry, InMemoryLiveDelivery,
    };
    use crate::adapters::outbound::memory_handoff::{MemoryHandoffs, MemoryPresence};
    use crate::adapters::outbound::memory_limiter::InMemoryRateLimiter;
    use crate::adapters::outbound::memory_stats::AtomicStats;
    use crate::application::ports::MockRefreshTokenStore;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        CircuitState, MockAiModel, MockPasswordHasher, MockSessionStore, MockTokenService,
        MockUserRepository, SessionStoreError, UpstreamState, UserStoreError,
    };
    use crate::application::{AccessPorts, ChatPorts};
    use crate::config::Config;
    use crate::domain::PasswordHash;
    use crate::startup::{Adapters, Application};

    /// The application on mocked ports, on a loopback port it never serves.
    async fn app(
        users: MockUserRepository,
        sessions: MockSessionStore,
        ai: MockAiModel,
    ) -> Application {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::new("$argon2id$mock")));
        let vars = HashMap::from([("HOST", "127.0.0.1"), ("PORT", "0")]);
        let config = Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        let users: Arc<dyn crate::application::ports::UserRepository> = Arc::new(users);
        let adapters = Adapters {
            users: users.clone(),
            hasher: Arc::new(hasher),
            tokens: Arc::new(MockTokenService::new()),
            access: AccessPorts {
                refresh: Arc::new(MockRefreshTokenStore::new()),
                tickets: Arc::new(InMemoryTicketStore::default()),
                revocations: Arc::new(InMemoryRevocationStore::default()),
            },
            chat: ChatPorts {
                sessions: Arc::new(sessions),
                ai: Arc::new(ai),
                stats: Arc::new(AtomicStats::default()),
                // Not what these tests are about: the real in-memory ones.
                log: Arc::new(InMemoryEventLog::new(10, Duration::from_secs(60))),
                live: Arc::new(InMemoryLiveDelivery::default()),
                registry: Arc::new(InMemoryGenerationRegistry::default()),
                handoffs: Arc::new(MemoryHandoffs::default()),
                presence: Arc::new(MemoryPresence::default()),
                transcripts: Arc::new(crate::application::ports::MockTranscriptStore::new()),
                users: users.clone(),
            },
            limiter: Arc::new(InMemoryRateLimiter::default()),
        };
        Application::build_with(config, adapters).await.unwrap()
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    fn failing_users() -> MockUserRepository {
        let mut users = MockUserRepository::new();
        users
            .expect_ping()
            .returning(|| Err(UserStoreError::from(StoreFailure::new("ping", refused()))));
        users
            .expect_create()
            .returning(|_| Err(UserStoreError::from(StoreFailure::new("insert", refused()))));
        users
    }

    fn answering_sessions() -> MockSessionStore {
        let mut sessions = MockSessionStore::new();
        sessions
            .expect_counts()
            .returning(|| Ok(crate::application::ports::SessionCounts::default()));
        sessions
    }

    fn ai_with_circuit(circuit: CircuitState) -> MockAiModel {
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Ok);
        ai.expect_upstreams().returning(move || {
            vec![UpstreamState {
                role: "primary",
                provider: "fastapi",
                circuit,
            }]
        });
        ai
    }

    #[tokio::test]
    async fn readiness_needs_the_stores_and_an_open_circuit_only_degrades_it() {
        let mut users = MockUserRepository::new();
        users.expect_ping().returning(|| Ok(()));
        let degraded = app(
            users,
            answering_sessions(),
            ai_with_circuit(CircuitState::Open),
        )
        .await;
        let cli = TestClient::new(degraded.endpoint());
        let resp = cli.get("/health/ready").send().await;
        resp.assert_status_is_ok();
        resp.assert_json(json!({
            "status": "degraded",
            "checks": {
                "users": "ok",
                "sessions": "ok",
                "ai": "ok",
                "upstreams": [{"role": "primary", "provider": "fastapi", "circuit": "open"}]
            }
        }))
        .await;

        let down = app(
            failing_users(),
            answering_sessions(),
            ai_with_circuit(CircuitState::Closed),
        )
        .await;
        let cli = TestClient::new(down.endpoint());
        let resp = cli.get("/health/ready").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.json().await;
        let value: serde_json::Value = body.value().deserialize();
        assert_eq!(value["status"], "unavailable");
        assert_eq!(value["checks"]["users"], "unavailable");
        // Liveness checks nothing.
        cli.get("/health/live").send().await.assert_status_is_ok();
    }

    fn error_code(code: ErrorCode) -> serde_json::Value {
        json!(code.as_str())
    }

    #[tokio::test]
    async fn health_is_503_when_the_user_store_does_not_answer() {
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Unreachable);
        ai.expect_upstreams().returning(|| {
            vec![UpstreamState {
                role: "primary",
                provider: "openai",
                circuit: CircuitState::Open,
            }]
        });
        let app = app(failing_users(), answering_sessions(), ai).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli.get("/health").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        resp.assert_json(json!({
            "status": "unavailable",
            "uptimeSeconds": 0,
            "checks": {
                "database": "unavailable",
                "ai": "unreachable",
                "upstreams": [{"role": "primary", "provider": "openai", "circuit": "open"}]
            }
        }))
        .await;
    }

    #[tokio::test]
    async fn a_failing_store_is_a_500_without_internals() {
        let app = app(failing_users(), MockSessionStore::new(), MockAiModel::new()).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli
            .post("/api/auth/register")
            .body_json(
                &json!({"username": "alice", "email": "a@example.com", "password": "password123"}),
            )
            .send()
            .await;
        resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.json().await;
        let value: serde_json::Value = body.value().deserialize();
        assert_eq!(value["error"], error_code(ErrorCode::InternalError));
        let text = value["message"].as_str().unwrap();
        assert!(!text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn stats_are_503_when_the_session_store_does_not_answer() {
        let mut sessions = MockSessionStore::new();
        sessions.expect_counts().returning(|| {
            Err(SessionStoreError::from(StoreFailure::new(
                "counts",
                refused(),
            )))
        });
        let app = app(MockUserRepository::new(), sessions, MockAiModel::new()).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli.get("/api/stats").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let code = ErrorCode::SessionStoreUnavailable;
        resp.assert_json(json!({"error": code.as_str(), "message": code.message()}))
            .await;
    }
}
