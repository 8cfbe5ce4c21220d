//! `/api/websocket/info`: how to connect to both sockets and talk over them,
//! read from the same constants the sockets use.

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::super::api_common::ApiTags;
use super::super::errors::ErrorCode;
use super::super::openapi::Json;
use super::super::{AppContext, MAX_FRAME_BYTES};
use super::agent_protocol::{AGENT_CLIENT_MESSAGE_TYPES, AGENT_SERVER_MESSAGE_TYPES};
use super::protocol::{CLIENT_MESSAGE_TYPES, SERVER_MESSAGE_TYPES};
use super::transport::CloseReason;
use super::{UPGRADE_REFUSALS, WS_AUTHENTICATION};
use crate::application::limits::{LimitSettings, Rule};
use crate::application::{AnswerSettings, HandoffSettings};
use crate::config::WebSocketConfig;
use crate::domain::feedback::COMMENT_MAX_CHARS;

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
    /// Maximum characters of a `feedback` message's `comment`; longer is
    /// refused with `comment_too_long`.
    max_feedback_comment_chars: u64,
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
    answers: AnswerInfo,
}

/// What answers show beside their text, and the token budget.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct AnswerInfo {
    /// `RELAY_REASONING`: `stream-reasoning` carries the model's reasoning;
    /// otherwise only `stream-status: thinking` says it reasons.
    relay_reasoning: bool,
    /// `RELAY_TOOL_ARGUMENTS`: a finished `tool-activity` carries its arguments.
    relay_tool_arguments: bool,
    /// `USER_TOKEN_BUDGET`: tokens a user's answers may cost per window (0:
    /// no budget). Past it a chat gets an `error` with code
    /// `budget_exhausted` and `resetsAt`.
    token_budget: u64,
    /// `USER_TOKEN_BUDGET_WINDOW`, fixed from the Unix epoch (`1d`, `12h`, ...).
    token_budget_window: String,
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
    handoff: HandoffInfo,
}

/// How conversations reach agents.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct HandoffInfo {
    /// `HANDOFF_ASSIGN`: `manual` (agents claim) or `auto` (the longest
    /// waiting goes to the available agent with the fewest conversations).
    assign: String,
    /// `AGENT_MAX_CONVERSATIONS`: past it a claim gets `agent_at_capacity`.
    max_conversations: u64,
    /// `HANDOFF_HOURS`, as configured; absent: people answer at any hour.
    #[oai(skip_serializing_if_is_none)]
    office_hours: Option<String>,
    /// `HANDOFF_TIMEZONE`, the IANA zone of `officeHours`; absent with it
    /// (without hours the zone changes nothing).
    #[oai(skip_serializing_if_is_none)]
    time_zone: Option<String>,
}

#[derive(Debug, Object)]
struct WsCloseCode {
    code: u16,
    reason: String,
}

#[derive(ApiResponse)]
enum WsInfoResponse {
    #[oai(status = 200)]
    Ok(Json<WsInfoBody>),
}

/// The WebSocket information operation.
pub struct WsInfoApi;

#[OpenApi]
impl WsInfoApi {
    /// How to connect to and talk over the WebSocket endpoints: `/ws` for
    /// customers, and `/agent/ws` for human agents (`agentSocket`).
    #[oai(
        path = "/api/websocket/info",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "websocketInfo"
    )]
    async fn websocket_info(&self, ctx: Data<&Arc<AppContext>>) -> WsInfoResponse {
        let active = ctx.metrics.snapshot().active_connections;
        let answers = ctx.chat.answer_settings();
        let handoff = ctx.handoff.settings();
        WsInfoResponse::Ok(Json(ws_info(
            &ctx.websocket,
            ctx.limits.settings(),
            &answers,
            handoff,
            active,
        )))
    }
}

/// `/api/websocket/info` for these settings.
fn ws_info(
    settings: &WebSocketConfig,
    limits: &LimitSettings,
    answers: &AnswerSettings,
    handoff: &HandoffSettings,
    active: u64,
) -> WsInfoBody {
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
            max_feedback_comment_chars: COMMENT_MAX_CHARS as u64,
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
            handoff: HandoffInfo {
                assign: handoff.assign.as_str().to_owned(),
                max_conversations: handoff.max_conversations as u64,
                office_hours: handoff.hours.as_ref().map(|h| h.spec().to_owned()),
                time_zone: handoff.hours.as_ref().map(|h| h.zone_name().to_owned()),
            },
        },
        answers: AnswerInfo {
            relay_reasoning: answers.relay.reasoning,
            relay_tool_arguments: answers.relay.tool_arguments,
            token_budget: answers.budget.limit.unwrap_or(0),
            token_budget_window: answers.budget.window.label(),
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
        ws_info(
            &settings,
            &limits,
            &AnswerSettings::default(),
            &HandoffSettings::default(),
            12,
        )
    }
}
