//! The REST API (poem-openapi): auth, health, stats and WebSocket info.
//!
//! Each operation has its own response enum, so the generated spec lists every
//! status the operation can return; doc comments become the spec's text.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde::Serialize;

use super::{timestamp, AppContext, MAX_FRAME_BYTES};
use crate::application::ports::AiHealth;
use crate::application::{AuthError, Authenticated, Registration};
use crate::domain::{EmailAddress, Password, User, Username};

#[derive(Tags)]
enum ApiTags {
    /// Registration, login and token verification.
    Auth,
    /// Health, statistics and connection information.
    Server,
}

/// The error body of every failed request.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_credentials`.
    pub error: String,
    /// A description for people; wording may change, codes do not.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Json<Self> {
        Json(Self {
            error: code.to_owned(),
            message: message.into(),
        })
    }

    /// The same body as a complete response, for errors raised outside the
    /// API operations (WebSocket refusals, unknown routes, middleware).
    pub fn response(status: poem::http::StatusCode, code: &str, message: &str) -> poem::Response {
        use poem::IntoResponse as _;
        Self::new(code, message).with_status(status).into_response()
    }
}

/// A user as clients see it; the password hash never leaves the server.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: String,
    /// ISO-8601 UTC, milliseconds.
    pub created_at: String,
    /// ISO-8601 UTC, milliseconds; `null` before the first login.
    pub last_login: Option<String>,
    pub is_active: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.as_str().to_owned(),
            username: u.username.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            created_at: timestamp(u.created_at),
            last_login: u.last_login.map(timestamp),
            is_active: u.is_active,
        }
    }
}

/// A registration request.
#[derive(Debug, Object)]
struct RegisterRequest {
    /// 3-32 characters of letters, digits, `_`, `.` and `-`.
    username: String,
    /// A valid email address; stored lower-cased.
    email: String,
    /// 8-128 characters.
    password: String,
}

/// A login request.
#[derive(Debug, Object)]
struct LoginRequest {
    /// The username, or the email address.
    username: String,
    password: String,
}

/// A token verification request (alternatively send `Authorization: Bearer`).
#[derive(Debug, Object)]
struct VerifyRequest {
    token: String,
}

/// A token and the user it belongs to.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct AuthBody {
    /// An HS256 JWT; send it as `Authorization: Bearer <token>` or `?token=` on `/ws`.
    token: String,
    /// The token lifetime as configured in `JWT_EXPIRES_IN` (e.g. `24h`).
    expires_in: String,
    /// The token lifetime in seconds.
    expires_in_seconds: u64,
    user: UserView,
}

/// The result of a successful token verification.
#[derive(Debug, Object)]
struct VerifyBody {
    /// Always `true` (an invalid token gets a 401).
    valid: bool,
    user: UserView,
}

#[derive(Debug, Object)]
struct HealthChecks {
    /// `ok` or `unavailable`: whether the user store answers.
    database: String,
    /// `ok` (upstream answers), `unreachable`, or `echo` (built-in model, no upstream).
    ai: String,
}

/// Server health.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct HealthBody {
    /// `ok`, or `unavailable` when the user store does not answer.
    status: String,
    uptime_seconds: u64,
    checks: HealthChecks,
}

/// Counters since start-up.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
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
    /// Generations that may run at once per connection.
    concurrent_generations: u64,
}

/// How to use the WebSocket endpoint.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct WsInfoBody {
    /// The path of the WebSocket endpoint.
    endpoint: String,
    /// Accepted ways to present the JWT.
    authentication: Vec<String>,
    message_types: WsMessageTypes,
    limits: WsLimits,
    active_connections: u64,
}

/// A request body the operation could not take: too large, or not the JSON it
/// expects. Oversized bodies are normally refused by the server's body limit
/// before the operation runs; this keeps the answer the same if one gets here.
enum Rejected {
    TooLarge(Json<ErrorBody>),
    Invalid(Json<ErrorBody>),
}

fn rejected_body(err: &poem::Error) -> Rejected {
    if err.status() == poem::http::StatusCode::PAYLOAD_TOO_LARGE {
        return Rejected::TooLarge(ErrorBody::new(
            "payload_too_large",
            "The request body is larger than 64 KiB",
        ));
    }
    Rejected::Invalid(ErrorBody::new(
        "invalid_request",
        format!("The request body must be a JSON object with the documented fields ({err})"),
    ))
}

fn internal_error() -> Json<ErrorBody> {
    ErrorBody::new(
        "internal_error",
        "Something went wrong on our side; please try again",
    )
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "register_bad_request")]
enum RegisterResponse {
    /// The account was created; here is a token for it.
    #[oai(status = 201)]
    Created(Json<AuthBody>),
    /// Malformed JSON, or a field breaks its rule (`invalid_request`,
    /// `invalid_username`, `invalid_email`, `invalid_password`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The username (`username_taken`) or email (`email_taken`) is already registered.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

fn register_bad_request(err: poem::Error) -> RegisterResponse {
    match rejected_body(&err) {
        Rejected::TooLarge(body) => RegisterResponse::PayloadTooLarge(body),
        Rejected::Invalid(body) => RegisterResponse::BadRequest(body),
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "login_bad_request")]
enum LoginResponse {
    /// Logged in; `lastLogin` is updated.
    #[oai(status = 200)]
    Ok(Json<AuthBody>),
    /// Malformed JSON or missing fields (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Unknown user, wrong password or inactive account, indistinguishably
    /// (`invalid_credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

fn login_bad_request(err: poem::Error) -> LoginResponse {
    match rejected_body(&err) {
        Rejected::TooLarge(body) => LoginResponse::PayloadTooLarge(body),
        Rejected::Invalid(body) => LoginResponse::BadRequest(body),
    }
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "verify_bad_request")]
enum VerifyResponse {
    /// The token is valid and its user exists and is active.
    #[oai(status = 200)]
    Ok(Json<VerifyBody>),
    /// The body is not valid JSON (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No token (`missing_token`), an invalid one (`invalid_token`) or an expired
    /// one (`token_expired`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A dependency failed (`internal_error`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

fn verify_bad_request(err: poem::Error) -> VerifyResponse {
    match rejected_body(&err) {
        Rejected::TooLarge(body) => VerifyResponse::PayloadTooLarge(body),
        Rejected::Invalid(body) => VerifyResponse::BadRequest(body),
    }
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
enum StatsResponse {
    #[oai(status = 200)]
    Ok(Json<StatsBody>),
    /// The session store does not answer (`session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum WsInfoResponse {
    #[oai(status = 200)]
    Ok(Json<WsInfoBody>),
}

/// The REST operations. Stateless: the shared [`AppContext`] arrives through
/// poem's `Data`, so the spec can be generated without a running server.
pub struct Api;

#[OpenApi]
impl Api {
    /// Register a new account.
    #[oai(path = "/api/auth/register", method = "post", tag = "ApiTags::Auth")]
    async fn register(
        &self,
        ctx: Data<&Arc<AppContext>>,
        body: Json<RegisterRequest>,
    ) -> RegisterResponse {
        let body = body.0;
        let registration = match parse_registration(&body) {
            Ok(r) => r,
            Err(e) => return RegisterResponse::BadRequest(e),
        };
        match ctx.auth.register(registration).await {
            Ok(auth) => RegisterResponse::Created(Json(auth_body(&ctx, auth))),
            Err(AuthError::UsernameTaken) => RegisterResponse::Conflict(ErrorBody::new(
                "username_taken",
                "That username is already taken",
            )),
            Err(AuthError::EmailTaken) => RegisterResponse::Conflict(ErrorBody::new(
                "email_taken",
                "An account with that email already exists",
            )),
            Err(_) => RegisterResponse::Internal(internal_error()),
        }
    }

    /// Log in with a username (or email) and password.
    #[oai(path = "/api/auth/login", method = "post", tag = "ApiTags::Auth")]
    async fn login(&self, ctx: Data<&Arc<AppContext>>, body: Json<LoginRequest>) -> LoginResponse {
        let password = Password::for_login(&body.password);
        match ctx.auth.login(body.username.trim(), &password).await {
            Ok(auth) => LoginResponse::Ok(Json(auth_body(&ctx, auth))),
            Err(AuthError::Internal) => LoginResponse::Internal(internal_error()),
            Err(_) => LoginResponse::Unauthorized(ErrorBody::new(
                "invalid_credentials",
                "Invalid username or password",
            )),
        }
    }

    /// Check a token, sent as `Authorization: Bearer <token>` or as `{"token": ...}`.
    #[oai(path = "/api/auth/verify", method = "post", tag = "ApiTags::Auth")]
    async fn verify(
        &self,
        ctx: Data<&Arc<AppContext>>,
        req: &Request,
        body: Json<Option<VerifyRequest>>,
    ) -> VerifyResponse {
        let token = bearer_token(req).or(body.0.map(|b| b.token));
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            return VerifyResponse::Unauthorized(ErrorBody::new(
                "missing_token",
                "Send the token as 'Authorization: Bearer <token>' or in the body as {\"token\": ...}",
            ));
        };
        match ctx.auth.authenticate(token.trim()).await {
            Ok(user) => VerifyResponse::Ok(Json(VerifyBody {
                valid: true,
                user: UserView::from(&user),
            })),
            Err(AuthError::Internal) => VerifyResponse::Internal(internal_error()),
            Err(e) => {
                let (code, message) = token_error(&e);
                VerifyResponse::Unauthorized(ErrorBody::new(code, message))
            }
        }
    }

    /// Liveness and dependency health.
    #[oai(path = "/health", method = "get", tag = "ApiTags::Server")]
    async fn health(&self, ctx: Data<&Arc<AppContext>>) -> HealthResponse {
        let (database_ok, ai) = tokio::join!(ctx.auth.store_is_healthy(), ctx.chat.ai_health());
        let body = HealthBody {
            status: if database_ok { "ok" } else { "unavailable" }.to_owned(),
            uptime_seconds: ctx.uptime_seconds(),
            checks: HealthChecks {
                database: if database_ok { "ok" } else { "unavailable" }.to_owned(),
                ai: match ai {
                    AiHealth::Ok => "ok",
                    AiHealth::Echo => "echo",
                    AiHealth::Unreachable => "unreachable",
                }
                .to_owned(),
            },
        };
        if database_ok {
            HealthResponse::Ok(Json(body))
        } else {
            HealthResponse::Unavailable(Json(body))
        }
    }

    /// Server statistics.
    #[oai(path = "/api/stats", method = "get", tag = "ApiTags::Server")]
    async fn stats(&self, ctx: Data<&Arc<AppContext>>) -> StatsResponse {
        let counts = match ctx.chat.session_counts().await {
            Ok(c) => c,
            Err(_) => {
                return StatsResponse::Unavailable(ErrorBody::new(
                    "session_store_unavailable",
                    "Session statistics are unavailable right now",
                ))
            }
        };
        let s = ctx.stats.snapshot();
        StatsResponse::Ok(Json(StatsBody {
            active_connections: s.active_connections,
            active_sessions: counts.active,
            total_connections: s.total_connections,
            total_messages: s.total_messages,
            escalated_sessions: counts.escalated,
            uptime_seconds: ctx.uptime_seconds(),
        }))
    }

    /// How to connect to and talk over the WebSocket endpoint.
    #[oai(path = "/api/websocket/info", method = "get", tag = "ApiTags::Server")]
    async fn websocket_info(&self, ctx: Data<&Arc<AppContext>>) -> WsInfoResponse {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        WsInfoResponse::Ok(Json(WsInfoBody {
            endpoint: "/ws".into(),
            authentication: strings(&["query:token", "header:Authorization: Bearer <token>"]),
            message_types: WsMessageTypes {
                client: strings(&["chat", "stop", "human-escalation", "ping"]),
                server: strings(&[
                    "connected",
                    "stream-start",
                    "stream-token",
                    "stream-end",
                    "error",
                    "human-escalation-response",
                    "pong",
                ]),
            },
            limits: WsLimits {
                max_message_chars: ctx.ws.max_message_chars as u64,
                max_frame_bytes: MAX_FRAME_BYTES as u64,
                ping_interval_seconds: ctx.ws.ping_interval.as_secs(),
                pong_timeout_seconds: ctx.ws.pong_timeout.as_secs(),
                concurrent_generations: 1,
            },
            active_connections: ctx.stats.active_connections(),
        }))
    }
}

fn parse_registration(body: &RegisterRequest) -> Result<Registration, Json<ErrorBody>> {
    let username = Username::parse(&body.username)
        .map_err(|e| ErrorBody::new("invalid_username", e.to_string()))?;
    let email = EmailAddress::parse(&body.email)
        .map_err(|e| ErrorBody::new("invalid_email", e.to_string()))?;
    let password = Password::parse(&body.password)
        .map_err(|e| ErrorBody::new("invalid_password", e.to_string()))?;
    Ok(Registration {
        username,
        email,
        password,
    })
}

fn auth_body(ctx: &AppContext, auth: Authenticated) -> AuthBody {
    AuthBody {
        token: auth.token.token,
        expires_in: ctx.token_lifetime_text.clone(),
        expires_in_seconds: auth.token.expires_in_seconds,
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

/// The stable code and message for a rejected token.
pub fn token_error(e: &AuthError) -> (&'static str, &'static str) {
    match e {
        AuthError::TokenExpired => ("token_expired", "The token has expired; log in again"),
        _ => ("invalid_token", "The token is invalid"),
    }
}

#[cfg(test)]
mod tests {
    //! Failure paths a real store will not produce on demand, checked through
    //! the full route stack with mocked ports.

    use std::time::{Duration, Instant};

    use poem::http::StatusCode;
    use poem::test::TestClient;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::adapters::inbound::http::app;
    use crate::adapters::inbound::WsSettings;
    use crate::application::ports::{
        MockAiModel, MockPasswordHasher, MockSessionStore, MockTokenService, MockUserRepository,
        SessionStoreError, UserStoreError,
    };
    use crate::application::{AuthService, ChatService, Stats};
    use crate::domain::PasswordHash;

    async fn context(
        users: MockUserRepository,
        sessions: MockSessionStore,
        ai: MockAiModel,
    ) -> Arc<AppContext> {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::new("$argon2id$mock")));
        let auth = AuthService::new(
            Arc::new(users),
            Arc::new(hasher),
            Arc::new(MockTokenService::new()),
        )
        .await
        .unwrap();
        let stats = Arc::new(Stats::default());
        Arc::new(AppContext {
            auth,
            chat: ChatService::new(Arc::new(sessions), Arc::new(ai), stats.clone()),
            stats,
            ws: WsSettings {
                max_message_chars: 100,
                ping_interval: Duration::from_secs(20),
                pong_timeout: Duration::from_secs(60),
                shutdown_timeout: Duration::from_secs(1),
                session_refresh: Duration::from_secs(60),
            },
            token_lifetime_text: "24h".into(),
            started_at: Instant::now(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        })
    }

    fn failing_users() -> MockUserRepository {
        let mut users = MockUserRepository::new();
        users
            .expect_ping()
            .returning(|| Err(UserStoreError::Unavailable("connection refused".into())));
        users
            .expect_create()
            .returning(|_| Err(UserStoreError::Unavailable("connection refused".into())));
        users
    }

    #[tokio::test]
    async fn health_is_503_when_the_user_store_does_not_answer() {
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Unreachable);
        let cli = TestClient::new(app(
            context(failing_users(), MockSessionStore::new(), ai).await,
            None,
        ));
        let resp = cli.get("/health").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        resp.assert_json(json!({
            "status": "unavailable",
            "uptimeSeconds": 0,
            "checks": {"database": "unavailable", "ai": "unreachable"}
        }))
        .await;
    }

    #[tokio::test]
    async fn a_failing_store_is_a_500_without_internals() {
        let cli = TestClient::new(app(
            context(failing_users(), MockSessionStore::new(), MockAiModel::new()).await,
            None,
        ));
        let resp = cli
            .post("/api/auth/register")
            .body_json(
                &json!({"username": "alice", "email": "a@example.com", "password": "password123"}),
            )
            .send()
            .await;
        resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.json().await;
        body.value()
            .object()
            .get("error")
            .assert_string("internal_error");
        let text = body.value().object().get("message").string().to_owned();
        assert!(!text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn stats_are_503_when_the_session_store_does_not_answer() {
        let mut sessions = MockSessionStore::new();
        sessions
            .expect_counts()
            .returning(|| Err(SessionStoreError::Unavailable("redis down".into())));
        let cli = TestClient::new(app(
            context(MockUserRepository::new(), sessions, MockAiModel::new()).await,
            None,
        ));
        let resp = cli.get("/api/stats").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        resp.assert_json(json!({
            "error": "session_store_unavailable",
            "message": "Session statistics are unavailable right now"
        }))
        .await;
    }
}
