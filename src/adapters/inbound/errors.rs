//! The catalogue of every error code a client can receive, and the one place
//! each application error becomes one.
//!
//! A code is defined once, below, with the HTTP status it is sent with (when it
//! can be an HTTP answer: a REST error or a refused WebSocket upgrade), whether
//! it can arrive as a WebSocket `error` message, and its default message.
//! The REST error body, the WebSocket `error` message, the OpenAPI spec (the
//! `error` field is an enum of these) and `/api/websocket/info` all read it
//! from here, so no code is spelled anywhere else in `src/`.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem::http::StatusCode;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::Enum;

use super::openapi::Json;

use crate::application::ports::AiError;
use crate::application::{AuthError, ChatError, CsatRefusal, FeedbackRefusal, HandoffRefusal};
use crate::domain::conversation::GenerationFailure;
use crate::domain::csat::CsatError;
use crate::domain::feedback::FeedbackError;
use crate::domain::handoff::HandoffError;
use crate::domain::ContentError;

/// Declares [`ErrorCode`] and its table from one list, so a code cannot exist
/// without its wire name, status, channel and message.
macro_rules! error_catalogue {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $wire:literal, status: $status:expr, websocket: $ws:literal, $message:literal;
    )*) => {
        /// A stable, machine-readable error code. Codes never change meaning;
        /// messages are for people and may be reworded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
        pub enum ErrorCode {
            $(
                $(#[$doc])*
                #[oai(rename = $wire)]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as clients see it, e.g. `invalid_token`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $wire),* }
            }

            /// The HTTP status this code is sent with, if it is ever an HTTP answer.
            pub fn status(self) -> Option<StatusCode> {
                match self { $(ErrorCode::$variant => $status),* }
            }

            /// Whether the code can arrive as a WebSocket `error` message.
            pub fn on_websocket(self) -> bool {
                match self { $(ErrorCode::$variant => $ws),* }
            }

            /// The message sent when the situation needs no more detail.
            pub fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message),* }
            }
        }
    };
}

const BAD_REQUEST: Option<StatusCode> = Some(StatusCode::BAD_REQUEST);
const UNAUTHORIZED: Option<StatusCode> = Some(StatusCode::UNAUTHORIZED);
const UNAVAILABLE: Option<StatusCode> = Some(StatusCode::SERVICE_UNAVAILABLE);
const WS_ONLY: Option<StatusCode> = None;
const CONFLICT: Option<StatusCode> = Some(StatusCode::CONFLICT);

error_catalogue! {
    // --- request shape (REST)
    /// Malformed JSON, a missing field or a wrong content type.
    InvalidRequest = "invalid_request", status: BAD_REQUEST, websocket: false,
        "The request body must be a JSON object with the documented fields";
    InvalidUsername = "invalid_username", status: BAD_REQUEST, websocket: false,
        "The username must be 3-32 characters of letters, digits, '_', '.' and '-'";
    InvalidEmail = "invalid_email", status: BAD_REQUEST, websocket: false,
        "The email address is not valid";
    InvalidPassword = "invalid_password", status: BAD_REQUEST, websocket: false,
        "The password must be 8-128 characters";
    PayloadTooLarge = "payload_too_large", status: Some(StatusCode::PAYLOAD_TOO_LARGE), websocket: false,
        "The request body is larger than 64 KiB";
    /// Headers or body not received within `HTTP_HEADER_TIMEOUT` or
    /// `HTTP_BODY_TIMEOUT`; the connection is closed after this answer.
    RequestTimeout = "request_timeout", status: Some(StatusCode::REQUEST_TIMEOUT), websocket: false,
        "The request was not received in time; send it again without pausing";
    /// The request target is longer than the server reads (65534 bytes);
    /// the connection is closed after this answer.
    UriTooLong = "uri_too_long", status: Some(StatusCode::URI_TOO_LONG), websocket: false,
        "The request URI is too long";
    /// More than 100 header fields, or a request head over about 400 KiB;
    /// the connection is closed after this answer.
    HeadersTooLarge = "headers_too_large", status: Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), websocket: false,
        "The request headers are too many or too large";
    UnsupportedMediaType = "unsupported_media_type", status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), websocket: false,
        "Send the request body as application/json";
    NotFound = "not_found", status: Some(StatusCode::NOT_FOUND), websocket: false,
        "There is nothing at this path";
    MethodNotAllowed = "method_not_allowed", status: Some(StatusCode::METHOD_NOT_ALLOWED), websocket: false,
        "This path does not accept that method";
    /// An unknown session, or someone else's: the two are indistinguishable.
    SessionNotFound = "session_not_found", status: Some(StatusCode::NOT_FOUND), websocket: true,
        "There is no such session";
    OriginNotAllowed = "origin_not_allowed", status: Some(StatusCode::FORBIDDEN), websocket: false,
        "This browser origin is not allowed (CORS_ORIGIN)";

    // --- accounts and tokens
    UsernameTaken = "username_taken", status: Some(StatusCode::CONFLICT), websocket: false,
        "That username is already taken";
    EmailTaken = "email_taken", status: Some(StatusCode::CONFLICT), websocket: false,
        "An account with that email already exists";
    /// Unknown user, wrong password and inactive account, indistinguishably.
    InvalidCredentials = "invalid_credentials", status: UNAUTHORIZED, websocket: false,
        "Invalid username or password";
    MissingToken = "missing_token", status: UNAUTHORIZED, websocket: false,
        "Send the token as 'Authorization: Bearer <token>'";
    InvalidToken = "invalid_token", status: UNAUTHORIZED, websocket: true,
        "The token is invalid";
    TokenExpired = "token_expired", status: UNAUTHORIZED, websocket: true,
        "The token has expired; log in again";

    // --- access: revocation, refresh tokens, WebSocket tickets, registration
    /// The token was revoked by a logout or logout-all; on a socket, sent
    /// before the 4001 close.
    TokenRevoked = "token_revoked", status: UNAUTHORIZED, websocket: true,
        "The token has been revoked; log in again";
    /// Unknown, expired, revoked or already used refresh token.
    InvalidRefreshToken = "invalid_refresh_token", status: UNAUTHORIZED, websocket: false,
        "The refresh token is invalid, expired or already used; log in again";
    /// Unknown, spent or expired WebSocket ticket.
    InvalidTicket = "invalid_ticket", status: UNAUTHORIZED, websocket: false,
        "The WebSocket ticket is unknown, spent or expired; ask for a new one";
    RegistrationClosed = "registration_closed", status: Some(StatusCode::FORBIDDEN), websocket: false,
        "Registration is closed on this server";
    /// The route or socket is for human agents; the role is read from the
    /// user store on every request, so a demoted agent is refused at once
    /// (on an open agent socket, as the `error` answering its next action).
    AgentOnly = "agent_only", status: Some(StatusCode::FORBIDDEN), websocket: true,
        "This requires an agent account";

    // --- the WebSocket upgrade
    WebsocketUpgradeRequired = "websocket_upgrade_required", status: BAD_REQUEST, websocket: false,
        "This endpoint speaks WebSocket only";
    /// Refused upgrade: the server is stopping and takes no new connections.
    ShuttingDown = "shutting_down", status: UNAVAILABLE, websocket: false,
        "The server is shutting down";
    /// Refused upgrade: the user store did not answer while checking the token.
    ServiceUnavailable = "service_unavailable", status: UNAVAILABLE, websocket: true,
        "Authentication is unavailable right now; try again shortly";

    // --- WebSocket messages
    InvalidJson = "invalid_json", status: WS_ONLY, websocket: true,
        "Messages must be JSON objects";
    InvalidMessage = "invalid_message", status: WS_ONLY, websocket: true,
        "Messages must be JSON objects with a string 'type'";
    UnknownType = "unknown_type", status: WS_ONLY, websocket: true,
        "Unknown message type; see /api/websocket/info for the types this socket takes";
    InvalidContent = "invalid_content", status: WS_ONLY, websocket: true,
        "A chat message needs a non-blank string 'content'";
    ContentTooLong = "content_too_long", status: WS_ONLY, websocket: true,
        "'content' is longer than the server accepts";
    UnsupportedFrame = "unsupported_frame", status: WS_ONLY, websocket: true,
        "Binary frames are not supported; send JSON text";
    GenerationInProgress = "generation_in_progress", status: WS_ONLY, websocket: true,
        "Wait for the current answer to finish, or send {\"type\":\"stop\"}";
    NoActiveGeneration = "no_active_generation", status: WS_ONLY, websocket: true,
        "There is no answer being generated to stop";
    /// A chat sent while the server drains its streams before stopping.
    ServerShuttingDown = "server_shutting_down", status: WS_ONLY, websocket: true,
        "The server is shutting down; reconnect in a moment";
    SessionExpired = "session_expired", status: WS_ONLY, websocket: true,
        "This session has expired; reconnect to start a new one";
    /// The `lastSeq` a client resumed with is beyond the session's latest event.
    LastSeqAhead = "last_seq_ahead", status: WS_ONLY, websocket: true,
        "lastSeq is ahead of this session's latest event; nothing was replayed";

    // --- feedback and regenerate
    /// A `feedback` message without a string `messageId`, with a `rating`
    /// other than `up` or `down`, or a `comment` that is not a string.
    InvalidFeedback = "invalid_feedback", status: WS_ONLY, websocket: true,
        "A feedback message needs a string 'messageId', a 'rating' of 'up' or 'down', and optionally a string 'comment'";
    CommentTooLong = "comment_too_long", status: WS_ONLY, websocket: true,
        "'comment' must be at most 1000 characters";
    /// Feedback on an id no message of this session has (another session's
    /// messages included, so ids reveal nothing), or on an answer whose
    /// transcript entry is not written yet (it is, by its `stream-end`).
    MessageNotFound = "message_not_found", status: WS_ONLY, websocket: true,
        "This session has no answer with that id";
    /// Feedback on the user's own message or an agent's.
    NotAnAnswer = "not_an_answer", status: WS_ONLY, websocket: true,
        "Only the AI's answers take feedback";
    /// A `regenerate` while a human agent holds or is awaited by the conversation.
    HandoffActive = "handoff_active", status: WS_ONLY, websocket: true,
        "A human agent holds or is awaited by this conversation; the bot does not answer now";
    /// A `regenerate` before the session has a user message to answer again.
    NothingToRegenerate = "nothing_to_regenerate", status: WS_ONLY, websocket: true,
        "There is no message of yours to answer again yet";

    // --- agents' canned replies
    /// A canned reply whose `shortcut` or `content` breaks its rule.
    InvalidReply = "invalid_reply", status: BAD_REQUEST, websocket: false,
        "A canned reply needs a 'shortcut' of 1-32 lowercase letters, digits, '_' or '-', and a 'content' of 1-2000 characters";
    /// The agent already keeps the most canned replies allowed.
    TooManyReplies = "too_many_replies", status: CONFLICT, websocket: false,
        "You already keep 100 canned replies; delete one first";
    /// No canned reply of the caller has that shortcut.
    ReplyNotFound = "reply_not_found", status: Some(StatusCode::NOT_FOUND), websocket: false,
        "You have no canned reply with that shortcut";

    // --- satisfaction after a handoff
    /// A `csat` message whose `rating` is not a whole number from 1 to 5, or
    /// whose `comment` is not a string.
    InvalidCsat = "invalid_csat", status: WS_ONLY, websocket: true,
        "A csat message needs a 'rating' that is a whole number from 1 to 5, and optionally a string 'comment'";
    /// A `csat` in a conversation whose customer was not asked (no agent
    /// resolved it) in the last 24 hours.
    CsatNotRequested = "csat_not_requested", status: WS_ONLY, websocket: true,
        "No satisfaction rating was asked for in this conversation in the last 24 hours";

    // --- human handoff
    /// A claim of a conversation another agent already holds (exactly one
    /// claim wins across all instances).
    AlreadyClaimed = "already_claimed", status: CONFLICT, websocket: true,
        "Another agent already claimed this conversation";
    /// A claim (or a customer's `handoff-cancel`) of a conversation that is
    /// not waiting for an agent.
    NotQueued = "not_queued", status: CONFLICT, websocket: true,
        "This conversation is not waiting for an agent";
    /// A reply, release or resolve of a conversation this agent does not hold.
    NotAssigned = "not_assigned", status: CONFLICT, websocket: true,
        "This conversation is not assigned to you";
    /// A claim by an agent who already holds `AGENT_MAX_CONVERSATIONS`.
    AgentAtCapacity = "agent_at_capacity", status: CONFLICT, websocket: true,
        "You already hold as many conversations as one agent may; resolve or release one first";

    // --- abuse limits
    /// A rate or concurrency limit refused the request; nothing was done. HTTP
    /// answers carry `Retry-After` (seconds), WebSocket `error`s `retryAfterMs`.
    RateLimited = "rate_limited", status: Some(StatusCode::TOO_MANY_REQUESTS), websocket: true,
        "Too many requests; wait before trying again";

    // --- token budgets
    /// A chat refused before any answer began: the user's token budget for
    /// the current window is used up. The WebSocket `error` carries
    /// `resetsAt`, when the window turns over.
    BudgetExhausted = "budget_exhausted", status: WS_ONLY, websocket: true,
        "Your token budget is used up until it resets";
    /// The store that counts token usage does not answer.
    UsageUnavailable = "usage_unavailable", status: UNAVAILABLE, websocket: false,
        "Token usage is unavailable right now; try again shortly";

    // --- dependencies
    AiUnavailable = "ai_unavailable", status: WS_ONLY, websocket: true,
        "The AI service is unavailable right now; please try again";
    AiTimeout = "ai_timeout", status: WS_ONLY, websocket: true,
        "The AI service took too long to answer";
    AiStreamError = "ai_stream_error", status: WS_ONLY, websocket: true,
        "The AI service's answer was interrupted";
    /// The server instance running the answer stopped; the session can chat again.
    GenerationInterrupted = "generation_interrupted", status: WS_ONLY, websocket: true,
        "The server running this answer stopped; please ask again";
    SessionStoreUnavailable = "session_store_unavailable", status: UNAVAILABLE, websocket: true,
        "Sessions are unavailable right now; please try again shortly";
    InternalError = "internal_error", status: Some(StatusCode::INTERNAL_SERVER_ERROR), websocket: false,
        "Something went wrong on our side; please try again";
}

impl ErrorCode {
    /// The code for an error raised outside the API operations (unknown
    /// route, wrong method, body limit, CORS), from the status poem chose.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::FORBIDDEN => Self::OriginNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::URI_TOO_LONG => Self::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::HeadersTooLarge,
            s if s.is_client_error() => Self::InvalidRequest,
            _ => Self::InternalError,
        }
    }

    /// The codes that can arrive as a WebSocket `error` message.
    pub fn websocket_codes() -> impl Iterator<Item = ErrorCode> {
        Self::ALL.iter().copied().filter(|c| c.on_websocket())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client is told about a failed auth use case. Dependency failures
/// have been logged by the service; here they are only a code.
impl From<&AuthError> for ErrorCode {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::UsernameTaken => Self::UsernameTaken,
            AuthError::EmailTaken => Self::EmailTaken,
            AuthError::InvalidCredentials => Self::InvalidCredentials,
            AuthError::TokenExpired => Self::TokenExpired,
            AuthError::TokenInvalid => Self::InvalidToken,
            AuthError::TokenRevoked => Self::TokenRevoked,
            AuthError::InvalidRefreshToken => Self::InvalidRefreshToken,
            AuthError::InvalidTicket => Self::InvalidTicket,
            AuthError::RegistrationClosed => Self::RegistrationClosed,
            AuthError::AgentOnly => Self::AgentOnly,
            AuthError::RateLimited(_) => Self::RateLimited,
            AuthError::Busy => Self::ServiceUnavailable,
            AuthError::Internal => Self::InternalError,
        }
    }
}

/// What a client is told about a failed chat use case.
impl From<&ChatError> for ErrorCode {
    fn from(e: &ChatError) -> Self {
        match e {
            ChatError::Ai(
                AiError::Unavailable(_)
                | AiError::Status { .. }
                | AiError::Rejected(_)
                | AiError::CircuitOpen,
            ) => Self::AiUnavailable,
            ChatError::Ai(AiError::Timeout(_)) => Self::AiTimeout,
            ChatError::Ai(AiError::Protocol(_)) => Self::AiStreamError,
            ChatError::SessionGone => Self::SessionExpired,
            ChatError::SessionStore(_) | ChatError::Conversation(_) | ChatError::Transcripts(_) => {
                Self::SessionStoreUnavailable
            }
        }
    }
}

/// What a client is told about a refused handoff request.
impl From<&HandoffRefusal> for ErrorCode {
    fn from(e: &HandoffRefusal) -> Self {
        match e {
            HandoffRefusal::Rule(HandoffError::AlreadyClaimed) => Self::AlreadyClaimed,
            HandoffRefusal::Rule(HandoffError::NotQueued) => Self::NotQueued,
            HandoffRefusal::Rule(HandoffError::NotAssigned) => Self::NotAssigned,
            HandoffRefusal::Rule(HandoffError::AgentAtCapacity) => Self::AgentAtCapacity,
            HandoffRefusal::SessionGone => Self::SessionNotFound,
            HandoffRefusal::Failed(e) => Self::from(e),
        }
    }
}

/// What a client is told about feedback that was not kept.
impl From<&FeedbackRefusal> for ErrorCode {
    fn from(e: &FeedbackRefusal) -> Self {
        match e {
            FeedbackRefusal::UnknownMessage => Self::MessageNotFound,
            FeedbackRefusal::NotAnAnswer => Self::NotAnAnswer,
            FeedbackRefusal::NotYourSession => Self::SessionNotFound,
            FeedbackRefusal::Failed(e) => Self::from(e),
        }
    }
}

/// What a client is told about feedback the domain refused.
impl From<&FeedbackError> for ErrorCode {
    fn from(e: &FeedbackError) -> Self {
        match e {
            FeedbackError::Rating => Self::InvalidFeedback,
            FeedbackError::CommentTooLong { .. } => Self::CommentTooLong,
        }
    }
}

/// What a customer is told about a satisfaction answer the domain refused.
impl From<&CsatError> for ErrorCode {
    fn from(e: &CsatError) -> Self {
        match e {
            CsatError::Rating => Self::InvalidCsat,
            CsatError::CommentTooLong { .. } => Self::CommentTooLong,
        }
    }
}

/// What a customer is told about a satisfaction answer that was not kept.
impl From<&CsatRefusal> for ErrorCode {
    fn from(e: &CsatRefusal) -> Self {
        match e {
            CsatRefusal::NotRequested => Self::CsatNotRequested,
            CsatRefusal::Failed(e) => Self::from(e),
        }
    }
}

/// The code of the `error` event a failed generation logs.
impl From<GenerationFailure> for ErrorCode {
    fn from(f: GenerationFailure) -> Self {
        match f {
            GenerationFailure::AiUnavailable { .. } => Self::AiUnavailable,
            GenerationFailure::AiTimeout => Self::AiTimeout,
            GenerationFailure::AiStreamError => Self::AiStreamError,
            GenerationFailure::SessionExpired => Self::SessionExpired,
            GenerationFailure::SessionStoreUnavailable => Self::SessionStoreUnavailable,
            GenerationFailure::Interrupted => Self::GenerationInterrupted,
        }
    }
}

/// What a client is told about chat content the domain refused: the code and
/// the rule it broke. The customers' socket, the agents' socket and the
/// agents' REST reply all say the same.
pub fn content_refusal(e: &ContentError) -> (ErrorCode, String) {
    match e {
        ContentError::Blank => (
            ErrorCode::InvalidContent,
            "'content' must not be blank".to_owned(),
        ),
        ContentError::TooLong { max } => (
            ErrorCode::ContentTooLong,
            format!("'content' must be at most {max} characters"),
        ),
    }
}

/// The codes one response can carry. The spec documents that response's body
/// as its own schema whose `error` enum lists exactly these, and (in debug
/// builds, so every test checks it) a body with any other code panics.
pub trait CodeSet: Send + Sync + 'static {
    /// The schema's name in the spec.
    const NAME: &'static str;
    const CODES: &'static [ErrorCode];
}

/// Declares [`CodeSet`]s: `Name = [Variant, ...];`.
macro_rules! code_sets {
    ($( $(#[$doc:meta])* $name:ident = [$($code:ident),+ $(,)?]; )*) => {$(
        $(#[$doc])*
        pub enum $name {}

        impl $crate::adapters::inbound::errors::CodeSet for $name {
            const NAME: &'static str = stringify!($name);
            const CODES: &'static [$crate::adapters::inbound::errors::ErrorCode] =
                &[$($crate::adapters::inbound::errors::ErrorCode::$code),+];
        }
    )*};
}
pub(crate) use code_sets;

/// Any code: the answers outside the REST operations (unknown routes,
/// refused upgrades, raw HTTP errors), which the spec describes in prose.
pub enum AnyCode {}

impl CodeSet for AnyCode {
    const NAME: &'static str = "ErrorBody";
    const CODES: &'static [ErrorCode] = ErrorCode::ALL;
}

/// The error body of every failed request: `{"error": code, "message": text}`.
/// `C` is the set of codes the response it is sent in can carry.
pub struct ErrorBody<C: CodeSet = AnyCode> {
    /// A stable, machine-readable code such as `invalid_credentials`.
    pub error: ErrorCode,
    /// A description for people; wording may change, codes do not.
    pub message: String,
    codes: PhantomData<fn() -> C>,
}

impl<C: CodeSet> std::fmt::Debug for ErrorBody<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(C::NAME)
            .field("error", &self.error)
            .field("message", &self.message)
            .finish()
    }
}

impl<C: CodeSet> ErrorBody<C> {
    /// The code with its catalogue message.
    pub fn new(code: ErrorCode) -> Json<Self> {
        Self::with_message(code, code.message())
    }

    /// The code with a message that says more than the catalogue's (which
    /// field broke which rule).
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Json<Self> {
        debug_assert!(
            C::CODES.contains(&code),
            "{code} is not among the codes the spec lists for this response ({}: {:?})",
            C::NAME,
            C::CODES
        );
        Json(Self {
            error: code,
            message: message.into(),
            codes: PhantomData,
        })
    }

    /// The same body in a response whose set `D` is wider.
    pub fn widen<D: CodeSet>(self) -> Json<ErrorBody<D>> {
        ErrorBody::with_message(self.error, self.message)
    }
}

impl ErrorBody {
    /// The body as a complete response with the code's own status, for errors
    /// raised outside the API operations (WebSocket refusals, unknown routes).
    pub fn response(code: ErrorCode) -> poem::Response {
        Self::response_with(code, code.message())
    }

    /// The 429 `rate_limited` response, with `Retry-After` in whole seconds
    /// (rounded up, at least one).
    pub fn rate_limited(retry_after: std::time::Duration) -> poem::Response {
        let mut resp = Self::response(ErrorCode::RateLimited);
        resp.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            poem::http::HeaderValue::from(retry_after_secs(retry_after)),
        );
        resp
    }

    /// [`ErrorBody::response`] with a more specific message.
    pub fn response_with(code: ErrorCode, message: &str) -> poem::Response {
        use poem::IntoResponse as _;
        let status = code.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::with_message(code, message)
            .with_status(status)
            .into_response()
    }
}

impl<C: CodeSet> Type for ErrorBody<C> {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        C::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(C::NAME.to_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(C::NAME.to_owned(), |_| error_body_schema(C::CODES));
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<C: CodeSet> ToJSON for ErrorBody<C> {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"error": self.error.as_str(), "message": self.message}))
    }
}

/// The schema of an error body that can carry `codes`, with the first as
/// its example.
fn error_body_schema(codes: &'static [ErrorCode]) -> MetaSchema {
    let code = MetaSchema {
        description: Some("A stable, machine-readable code; codes never change meaning."),
        enum_items: codes.iter().map(|c| c.as_str().into()).collect(),
        ..MetaSchema::new("string")
    };
    let message = MetaSchema {
        description: Some("A description for people; wording may change, codes do not."),
        ..MetaSchema::new("string")
    };
    let example = codes
        .first()
        .map(|c| serde_json::json!({"error": c.as_str(), "message": c.message()}));
    MetaSchema {
        description: Some("`{\"error\": code, \"message\": text}`"),
        required: vec!["error", "message"],
        properties: vec![
            ("error", MetaSchemaRef::Inline(Box::new(code))),
            ("message", MetaSchemaRef::Inline(Box::new(message))),
        ],
        example,
        ..MetaSchema::new("object")
    }
}
/// `Retry-After` in whole seconds: rounded up, at least one.
pub fn retry_after_secs(d: std::time::Duration) -> u64 {
    d.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// `retryAfterMs`: at least one.
pub fn retry_after_ms(d: std::time::Duration) -> u64 {
    d.as_millis().max(1).try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(900)), 900);
        assert_eq!(retry_after_ms(Duration::ZERO), 1);
        let resp = ErrorBody::rate_limited(Duration::from_millis(2500));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "3");
    }

    #[test]
    fn codes_are_unique_snake_case_and_complete() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(!code.message().is_empty(), "{s}");
            assert!(
                code.status().is_some() || code.on_websocket(),
                "{s} can reach no client"
            );
            // The spec's enum value is the same text.
            assert_eq!(
                poem_openapi::types::ToJSON::to_json(code),
                Some(serde_json::Value::String(s.to_owned()))
            );
        }
    }

    #[test]
    fn no_code_is_spelled_anywhere_else_in_src() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![];
        collect_rs(&src, &mut files);
        for code in ErrorCode::ALL {
            let quoted = format!("\"{}\"", code.as_str());
            let places: Vec<_> = files
                .iter()
                .filter(|(_, text)| text.contains(&quoted))
                .map(|(path, text)| (path.clone(), text.matches(&quoted).count()))
                .collect();
            let total: usize = places.iter().map(|(_, n)| n).sum();
            assert_eq!(total, 1, "{quoted} is spelled in {places:?}");
        }
    }

    fn collect_rs(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect_rs(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn refused_content_names_the_rule_it_broke() {
        assert_eq!(
            content_refusal(&ContentError::Blank),
            (
                ErrorCode::InvalidContent,
                "'content' must not be blank".to_owned()
            )
        );
        assert_eq!(
            content_refusal(&ContentError::TooLong { max: 20 }),
            (
                ErrorCode::ContentTooLong,
                "'content' must be at most 20 characters".to_owned()
            )
        );
    }

    #[test]
    fn catch_all_statuses_have_their_codes() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RequestTimeout,
            ErrorCode::OriginNotAllowed,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::UriTooLong,
            ErrorCode::HeadersTooLarge,
        ] {
            assert_eq!(ErrorCode::for_status(code.status().unwrap()), code);
        }
        assert_eq!(
            ErrorCode::for_status(StatusCode::IM_A_TEAPOT),
            ErrorCode::InvalidRequest
        );
    }
}
