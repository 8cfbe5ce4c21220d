//! The WebSocket endpoint `/ws`: authenticates before the upgrade, then runs one
//! task per connection that reads client messages, streams generations and
//! keeps the connection alive.
//!
//! Each connection owns three kinds of work, and waits for all of them before it
//! ends: the read loop (this module's [`Connection::run`]), one writer task that
//! is the only thing touching the socket's sending half (so messages leave in
//! the order they were queued), and at most one generation task at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::errors::{ErrorBody, ErrorCode};
use super::rest::{bearer_token, UserView};
use super::{AppContext, MAX_FRAME_BYTES};
use crate::application::{AuthError, GenerationOutcome};
use crate::domain::time::iso_millis;
use crate::domain::{ChatContent, ContentError, MessageId, SessionId, StreamStatus};
use crate::telemetry::ErrorChain;

/// What the human-escalation request is answered with.
const ESCALATION_REPLY: &str = "A human agent will contact you soon.";
/// Messages queued for one client before senders wait; waiting here is what
/// slows a generation down to the pace of a slow reader.
const OUTBOUND_QUEUE: usize = 64;
/// A client that does not take a single frame for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `type`s a client may send, as `/api/websocket/info` lists them.
pub const CLIENT_MESSAGE_TYPES: &[&str] = &["chat", "stop", "human-escalation", "ping"];
/// The `type`s the server sends.
pub const SERVER_MESSAGE_TYPES: &[&str] = &[
    "connected",
    "stream-start",
    "stream-token",
    "stream-end",
    "error",
    "human-escalation-response",
    "pong",
];
/// The codes [`ws_endpoint`] can refuse an upgrade with, besides the CORS
/// refusal every route shares.
pub const UPGRADE_REFUSALS: &[ErrorCode] = &[
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::WebsocketUpgradeRequired,
    ErrorCode::ShuttingDown,
    ErrorCode::ServiceUnavailable,
    ErrorCode::SessionStoreUnavailable,
];

/// A message from the server. Field names are camelCase on the wire and every
/// message carries a `timestamp`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Connected {
        session_id: String,
        user: UserView,
        /// True when an earlier session was resumed with `?sessionId=`.
        resumed: bool,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    StreamStart {
        message_id: String,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    StreamToken {
        message_id: String,
        token: String,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    StreamEnd {
        message_id: String,
        status: &'static str,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        timestamp: String,
    },
    HumanEscalationResponse {
        message: String,
        timestamp: String,
    },
    Pong {
        timestamp: String,
    },
}

fn now() -> String {
    iso_millis(Utc::now())
}

impl From<ServerMessage> for Outbound {
    fn from(m: ServerMessage) -> Self {
        // Serialising plain strings and numbers cannot fail.
        Outbound::Message(serde_json::to_string(&m).unwrap_or_default())
    }
}

/// An `error` message with the catalogue's message for `code`.
fn error(code: ErrorCode, message_id: Option<&MessageId>) -> ServerMessage {
    error_with(code, code.message(), message_id)
}

/// An `error` message whose text says more than the catalogue's.
fn error_with(
    code: ErrorCode,
    message: impl Into<String>,
    message_id: Option<&MessageId>,
) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
        message_id: message_id.map(|m| m.as_str().to_owned()),
        timestamp: now(),
    }
}

/// What the writer task is asked to send. Messages are queued already
/// serialised: tokio's channel allocates its slots 32 at a time, and 24-byte
/// strings instead of ~184-byte enums save ~5 KiB on every idle connection.
#[derive(Debug)]
enum Outbound {
    Message(String),
    Ping,
    /// Send a close frame and stop writing.
    Close(CloseCode, &'static str),
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `GET /ws`: checks the token (query `token` or `Authorization: Bearer`),
/// opens or resumes the session, and upgrades. Every refusal happens before the
/// upgrade, as a plain HTTP error with the usual JSON body.
#[handler]
pub async fn ws_endpoint(
    req: &Request,
    ws: poem::Result<WebSocket>,
    ctx: Data<&Arc<AppContext>>,
) -> Response {
    let ctx = ctx.0.clone();
    if ctx.shutdown.is_cancelled() {
        return ErrorBody::response(ErrorCode::ShuttingDown);
    }
    let query: WsQuery = req.params().unwrap_or(WsQuery {
        token: None,
        session_id: None,
    });
    let Some(token) = query
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| bearer_token(req))
    else {
        return ErrorBody::response_with(
            ErrorCode::MissingToken,
            "Connect with ?token=<jwt> or an 'Authorization: Bearer <jwt>' header",
        );
    };
    let user = match ctx.auth.authenticate(&token).await {
        Ok(user) => user,
        // A failing user store is a passing outage, not a bad token: 503, try again.
        Err(AuthError::Internal) => return ErrorBody::response(ErrorCode::ServiceUnavailable),
        Err(e) => return ErrorBody::response(ErrorCode::from(&e)),
    };
    let Ok(ws) = ws else {
        return ErrorBody::response(ErrorCode::WebsocketUpgradeRequired);
    };
    let resume = query
        .session_id
        .as_deref()
        .and_then(|s| SessionId::parse(s).ok());
    let session = match ctx.chat.open_session(&user, resume.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not open a session");
            return ErrorBody::response(ErrorCode::SessionStoreUnavailable);
        }
    };
    let resumed = resume.as_ref() == Some(&session.id);
    // Only the id is needed from here on; the history stays in the store.
    let session_id = session.id;

    // A small read buffer is what keeps ten thousand idle connections cheap:
    // tungstenite's default reserves 128 KiB per connection up front.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_FRAME_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_FRAME_BYTES));
    let tracker = ctx.connections.clone();
    ws.config(config)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!(
                "ws",
                session_id = %session_id,
                user_id = %user.id,
            );
            let connection = Connection {
                ctx,
                user: UserView::from(&user),
                session_id,
                resumed,
            };
            tracker.track_future(connection.run(socket).instrument(span))
        })
        .into_response()
}

/// The generation currently allowed to stream on a connection.
struct Running {
    message_id: MessageId,
    cancel: CancellationToken,
    /// Set by the generation task just before it queues `stream-end`, so a chat
    /// sent in reply to that `stream-end` is never refused as "in progress".
    finished: Arc<AtomicBool>,
}

impl Running {
    fn is_active(&self) -> bool {
        !self.finished.load(Ordering::Acquire)
    }
}

/// Why the read loop stopped.
enum Exit {
    ClientClosed,
    Shutdown,
    PongTimeout,
    TooBig,
    WriterGone,
}

struct Connection {
    ctx: Arc<AppContext>,
    /// What `connected` tells the client; the stored user (hash and all) is not kept.
    user: UserView,
    session_id: SessionId,
    resumed: bool,
}

impl Connection {
    async fn run(self, socket: WebSocketStream) {
        let _counted = self.ctx.chat.connection_opened();
        tracing::info!(resumed = self.resumed, "websocket connected");
        let (sink, stream) = socket.split();
        let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let writer_gone = CancellationToken::new();
        let writer = tokio::spawn(write_loop(sink, out_rx, writer_gone.clone()).in_current_span());

        let _ = out
            .send(Outbound::from(ServerMessage::Connected {
                session_id: self.session_id.as_str().to_owned(),
                user: self.user.clone(),
                resumed: self.resumed,
                timestamp: now(),
            }))
            .await;

        let mut generations = JoinSet::new();
        let mut running = None;
        let exit = self
            .read_loop(stream, &out, &writer_gone, &mut generations, &mut running)
            .await;

        // Whatever ended the loop, nobody will read more tokens: stop what runs
        // and let each generation queue its stream-end before the close frame.
        if let Some(running) = running {
            running.cancel.cancel();
        }
        while generations.join_next().await.is_some() {}

        let close = match exit {
            Exit::Shutdown => Some((CloseCode::Away, "server shutting down")),
            Exit::PongTimeout => Some((CloseCode::Away, "ping timeout")),
            Exit::TooBig => Some((CloseCode::Size, "message too big")),
            Exit::ClientClosed | Exit::WriterGone => None,
        };
        if let Some((code, reason)) = close {
            let _ = out.send(Outbound::Close(code, reason)).await;
        }
        drop(out);
        let _ = writer.await;
        tracing::info!(reason = exit.as_str(), "websocket disconnected");
    }

    /// Reads client frames until the client leaves, the server stops, or the
    /// connection misbehaves. Bad messages get an `error` reply and the loop
    /// goes on: only the transport can end a connection.
    async fn read_loop(
        &self,
        mut stream: SplitStream<WebSocketStream>,
        out: &mpsc::Sender<Outbound>,
        writer_gone: &CancellationToken,
        generations: &mut JoinSet<()>,
        running: &mut Option<Running>,
    ) -> Exit {
        let settings = &self.ctx.websocket;
        let keep_alive = self.ctx.chat.keep_alive_interval();
        let mut ping = tokio::time::interval_at(
            Instant::now() + settings.ping_interval,
            settings.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        // A connected client keeps its session: refresh it well before it expires.
        let mut last_touch = Instant::now();
        // Set once shutdown begins: running streams may finish until then.
        let mut drain_deadline: Option<Instant> = None;

        loop {
            tokio::select! {
                biased;
                _ = writer_gone.cancelled() => return Exit::WriterGone,
                Some(_) = generations.join_next(), if !generations.is_empty() => {
                    if drain_deadline.is_some() && generations.is_empty() {
                        return Exit::Shutdown;
                    }
                }
                _ = self.ctx.shutdown.cancelled(), if drain_deadline.is_none() => {
                    if generations.is_empty() {
                        return Exit::Shutdown;
                    }
                    drain_deadline = Some(Instant::now() + self.ctx.shutdown_timeout);
                }
                // Unpolled (guard false) until a deadline exists.
                _ = sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {
                    return Exit::Shutdown;
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() >= settings.pong_timeout {
                        tracing::info!("no pong within the timeout; closing");
                        return Exit::PongTimeout;
                    }
                    if out.send(Outbound::Ping).await.is_err() {
                        return Exit::WriterGone;
                    }
                    if last_touch.elapsed() >= keep_alive {
                        last_touch = Instant::now();
                        if let Err(e) = self.ctx.chat.touch(&self.session_id).await {
                            tracing::warn!(error = %ErrorChain(&e), "could not refresh the session");
                        }
                    }
                }
                frame = stream.next() => {
                    last_seen = Instant::now();
                    let reply = match frame {
                        None | Some(Ok(Message::Close(_))) => return Exit::ClientClosed,
                        Some(Err(e)) if is_too_big(&e) => return Exit::TooBig,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            return Exit::ClientClosed;
                        }
                        Some(Ok(Message::Text(text))) => {
                            let draining = drain_deadline.is_some();
                            self.handle_text(&text, out, generations, running, draining).await
                        }
                        Some(Ok(Message::Binary(_))) => Some(error(ErrorCode::UnsupportedFrame, None)),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    };
                    if let Some(reply) = reply {
                        if out.send(Outbound::from(reply)).await.is_err() {
                            return Exit::WriterGone;
                        }
                    }
                }
            }
        }
    }

    /// Acts on one text frame; returns the immediate reply, if any.
    async fn handle_text(
        &self,
        text: &str,
        out: &mpsc::Sender<Outbound>,
        generations: &mut JoinSet<()>,
        running: &mut Option<Running>,
        draining: bool,
    ) -> Option<ServerMessage> {
        let message = match parse_client_message(text, self.ctx.websocket.max_message_chars) {
            Ok(m) => m,
            Err((code, message)) => return Some(error_with(code, message, None)),
        };
        let active = running.as_ref().filter(|r| r.is_active());
        match message {
            ClientMessage::Chat(_) if draining => Some(error(ErrorCode::ServerShuttingDown, None)),
            ClientMessage::Chat(_) if active.is_some() => Some(error(
                ErrorCode::GenerationInProgress,
                active.map(|r| &r.message_id),
            )),
            ClientMessage::Chat(content) => {
                let message_id = MessageId::generate();
                // Queued here, before the task exists, so nothing about this
                // generation (a refusal naming it, a token) can precede it.
                let start = ServerMessage::StreamStart {
                    message_id: message_id.as_str().to_owned(),
                    timestamp: now(),
                };
                if out.send(Outbound::from(start)).await.is_err() {
                    return None;
                }
                let cancel = CancellationToken::new();
                let finished = Arc::new(AtomicBool::new(false));
                generations.spawn(
                    stream_reply(
                        self.ctx.clone(),
                        self.session_id.clone(),
                        content,
                        message_id.clone(),
                        cancel.clone(),
                        finished.clone(),
                        out.clone(),
                    )
                    .in_current_span(),
                );
                *running = Some(Running {
                    message_id,
                    cancel,
                    finished,
                });
                None
            }
            ClientMessage::Stop => match active {
                Some(r) => {
                    r.cancel.cancel();
                    None
                }
                None => Some(error(ErrorCode::NoActiveGeneration, None)),
            },
            ClientMessage::HumanEscalation => {
                match self.ctx.chat.escalate(&self.session_id).await {
                    Ok(()) => {
                        tracing::info!("human escalation requested");
                        Some(ServerMessage::HumanEscalationResponse {
                            message: ESCALATION_REPLY.to_owned(),
                            timestamp: now(),
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "could not escalate");
                        Some(error(ErrorCode::from(&e), None))
                    }
                }
            }
            ClientMessage::Ping => Some(ServerMessage::Pong { timestamp: now() }),
        }
    }
}

impl Exit {
    fn as_str(&self) -> &'static str {
        match self {
            Exit::ClientClosed => "client closed",
            Exit::Shutdown => "server shutdown",
            Exit::PongTimeout => "ping timeout",
            Exit::TooBig => "frame too big",
            Exit::WriterGone => "client stopped reading",
        }
    }
}

/// A client message that passed validation.
#[derive(Debug, PartialEq)]
enum ClientMessage {
    Chat(ChatContent),
    Stop,
    HumanEscalation,
    Ping,
}

/// Why a client frame was refused: the `error` code and a message that says
/// exactly what was wrong with it.
type Refusal = (ErrorCode, String);

/// Validates a client frame.
fn parse_client_message(text: &str, max_chars: usize) -> Result<ClientMessage, Refusal> {
    let refuse = |code: ErrorCode, message: &str| (code, message.to_owned());
    let value: Value = serde_json::from_str(text)
        .map_err(|_| refuse(ErrorCode::InvalidJson, "Messages must be JSON objects"))?;
    let Value::Object(fields) = value else {
        return Err(refuse(
            ErrorCode::InvalidMessage,
            "Messages must be JSON objects",
        ));
    };
    let kind = match fields.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(refuse(ErrorCode::InvalidMessage, "'type' must be a string")),
        None => {
            return Err(refuse(
                ErrorCode::InvalidMessage,
                "Messages need a 'type' field",
            ))
        }
    };
    match kind {
        "chat" => parse_chat(fields.get("content"), max_chars).map(ClientMessage::Chat),
        "stop" => Ok(ClientMessage::Stop),
        "human-escalation" => Ok(ClientMessage::HumanEscalation),
        "ping" => Ok(ClientMessage::Ping),
        other => {
            let shown: String = other.chars().take(40).collect();
            Err((
                ErrorCode::UnknownType,
                format!(
                    "Unknown message type '{shown}'; expected {}",
                    CLIENT_MESSAGE_TYPES.join(", ")
                ),
            ))
        }
    }
}

fn parse_chat(content: Option<&Value>, max_chars: usize) -> Result<ChatContent, Refusal> {
    let raw = match content {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err((
                ErrorCode::InvalidContent,
                "'content' must be a string".to_owned(),
            ))
        }
        None => {
            return Err((
                ErrorCode::InvalidContent,
                "A chat message needs 'content'".to_owned(),
            ))
        }
    };
    ChatContent::parse(raw, max_chars).map_err(|e| match e {
        ContentError::Blank => (
            ErrorCode::InvalidContent,
            "'content' must not be blank".to_owned(),
        ),
        ContentError::TooLong { max } => (
            ErrorCode::ContentTooLong,
            format!("'content' must be at most {max} characters"),
        ),
    })
}

/// Runs one generation whose stream-start is already queued, and reports it
/// as tokens, an `error` if it failed, and exactly one stream-end.
async fn stream_reply(
    ctx: Arc<AppContext>,
    session_id: SessionId,
    content: ChatContent,
    message_id: MessageId,
    cancel: CancellationToken,
    finished: Arc<AtomicBool>,
    out: mpsc::Sender<Outbound>,
) {
    let id = message_id.as_str().to_owned();
    let (tokens_tx, mut tokens_rx) = mpsc::channel::<String>(16);
    let produce = async {
        let tokens_tx = tokens_tx;
        ctx.chat
            .generate(&session_id, content, &cancel, &tokens_tx)
            .await
    };
    let forward = async {
        while let Some(token) = tokens_rx.recv().await {
            let msg = ServerMessage::StreamToken {
                message_id: id.clone(),
                token,
                timestamp: now(),
            };
            if out.send(Outbound::from(msg)).await.is_err() {
                break;
            }
        }
    };
    let (outcome, ()) = tokio::join!(produce, forward);

    let status = match outcome {
        GenerationOutcome::Completed => StreamStatus::Completed,
        GenerationOutcome::Cancelled => StreamStatus::Cancelled,
        GenerationOutcome::Failed(e) => {
            tracing::warn!(message_id = %id, error = %ErrorChain(&e), "generation failed");
            let _ = out
                .send(Outbound::from(error(
                    ErrorCode::from(&e),
                    Some(&message_id),
                )))
                .await;
            StreamStatus::Failed
        }
    };
    tracing::debug!(message_id = %id, status = status.as_str(), "generation ended");
    finished.store(true, Ordering::Release);
    let _ = out
        .send(Outbound::from(ServerMessage::StreamEnd {
            message_id: id,
            status: status.as_str(),
            timestamp: now(),
        }))
        .await;
}

/// The only place that writes to the socket, so frames leave in queue order.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    gone: CancellationToken,
) {
    while let Some(item) = queue.recv().await {
        let (frame, last) = match item {
            Outbound::Message(json) => (Message::Text(json), false),
            Outbound::Ping => (Message::Ping(Vec::new()), false),
            Outbound::Close(code, reason) => (Message::close_with(code, reason), true),
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                break;
            }
            Err(_) => {
                tracing::info!("client stopped reading for {WRITE_TIMEOUT:?}; dropping it");
                break;
            }
        }
        if last {
            break;
        }
    }
    gone.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// tungstenite refuses frames over the configured size with a capacity error;
/// poem passes it on only as the text of an `io::Error`, so the text is all
/// there is to recognise it by.
fn is_too_big(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("too big")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client_message(text, 10).unwrap_err().0
    }

    #[test]
    fn bad_input_gets_specific_codes() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("{}"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type": 5}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type": "dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type": "chat"}"#), ErrorCode::InvalidContent);
        assert_eq!(
            code(r#"{"type": "chat", "content": 42}"#),
            ErrorCode::InvalidContent
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "   "}"#),
            ErrorCode::InvalidContent
        );
        assert_eq!(
            code(r#"{"type": "chat", "content": "12345678901"}"#),
            ErrorCode::ContentTooLong
        );
    }

    #[test]
    fn good_input_parses() {
        assert_eq!(
            parse_client_message(r#"{"type":"chat","content":"hi"}"#, 10).unwrap(),
            ClientMessage::Chat(ChatContent::parse("hi", 10).unwrap())
        );
        assert_eq!(
            parse_client_message(r#"{"type":"stop"}"#, 10).unwrap(),
            ClientMessage::Stop
        );
        assert_eq!(
            parse_client_message(r#"{"type":"human-escalation","message":"help"}"#, 10).unwrap(),
            ClientMessage::HumanEscalation
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#, 10).unwrap(),
            ClientMessage::Ping
        );
    }

    #[test]
    fn server_messages_serialise_to_the_node_wire_format() {
        let msg = ServerMessage::StreamToken {
            message_id: "msg_1".into(),
            token: "Hello".into(),
            timestamp: "2025-09-12T10:30:00.000Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            serde_json::json!({"type": "stream-token", "messageId": "msg_1", "token": "Hello", "timestamp": "2025-09-12T10:30:00.000Z"})
        );
        let msg = ServerMessage::HumanEscalationResponse {
            message: ESCALATION_REPLY.into(),
            timestamp: "t".into(),
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap()["type"],
            "human-escalation-response"
        );
        let err = error(ErrorCode::InvalidJson, None);
        assert!(serde_json::to_value(&err)
            .unwrap()
            .get("messageId")
            .is_none());
    }
}
