//! One client's connection: reads its frames, turns each message into a
//! command for the chat use cases, answers what concerns only this socket, and
//! keeps the connection (and its session) alive. The conversation's events
//! reach the socket through the [`feed`](super::feed), not through here.
//!
//! A connection is two tasks: this read loop, and the writer, the only thing
//! touching the socket's sending half, which also pulls the conversation's
//! events from the [`feed`](super::feed).

use std::sync::Arc;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use poem::web::websocket::{Message, WebSocketStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::super::errors::ErrorCode;
use super::super::rest::UserView;
use super::super::AppContext;
use super::feed::ConversationFeed;
use super::protocol::{now, parse_client_message, ClientMessage, Reply};
use super::transport::{is_too_big, write_loop, CloseReason, Outbound, OUTBOUND_QUEUE};
use crate::adapters::queue;
use crate::application::limits::ConnectionPermit;
use crate::application::{
    Attachment, ChatError, ChatRefusal, ChatRequest, ResumeNotice, StopRefusal,
};
use crate::domain::conversation::Seq;
use crate::domain::{SessionId, UserId};
use crate::telemetry::ErrorChain;

/// Why the read loop stopped.
enum Exit {
    ClientClosed,
    /// The writer stopped: the client is gone, or the feed closed the socket.
    WriterGone,
    Close(CloseReason),
}

/// Why reading one frame ends the read loop.
enum Stop {
    Exit(Exit),
    /// The session vanished from the store under this socket.
    SessionGone,
}

/// When the client was last heard from, and its session last refreshed.
struct KeepAlive {
    last_seen: Instant,
    last_touch: Instant,
}

pub(super) struct Connection {
    pub ctx: Arc<AppContext>,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub resumed: bool,
    /// This connection's place under the per-user and per-address caps.
    pub permit: ConnectionPermit,
}

impl Connection {
    /// Serves the socket until it closes. `user` is only what `connected`
    /// tells the client: it is not kept for the connection's life.
    pub async fn run(self, socket: WebSocketStream, user: UserView, attachment: Attachment) {
        let _counted = self.ctx.chat.connection_opened();
        tracing::info!(resumed = self.resumed, "websocket connected");
        let (sink, stream) = socket.split();
        let (out, out_rx) = queue::bounded(OUTBOUND_QUEUE);
        self.greet(&out, user, attachment.head, attachment.notice.clone())
            .await;
        let writer_gone = CancellationToken::new();
        let feed = ConversationFeed(attachment);
        let writer =
            tokio::spawn(write_loop(sink, out_rx, feed, writer_gone.clone()).in_current_span());

        let exit = self.read_loop(stream, &out, &writer_gone).await;
        if let Exit::Close(reason) = exit {
            // The writer sends what the conversation already has, then this.
            let _ = out.push(Outbound::Close(reason)).await;
        }
        // Nothing more to queue: the writer ends once it has sent the rest.
        out.close();
        let closed = match exit {
            Exit::ClientClosed => {
                writer.abort();
                None
            }
            _ => writer.await.ok().flatten(),
        };
        let reason = closed.map_or(exit.as_str(), CloseReason::text);
        tracing::info!(reason, "websocket disconnected");
        self.ctx.chat.release_connection(self.permit).await;
    }

    /// Says `connected`, and any resume notice, before the first event.
    async fn greet(
        &self,
        out: &queue::Sender<Outbound>,
        user: UserView,
        head: Seq,
        notice: Option<ResumeNotice>,
    ) {
        let hello = Reply::Connected {
            session_id: self.session_id.as_str().to_owned(),
            user,
            resumed: self.resumed,
            seq: head,
            timestamp: now(),
        };
        let _ = out.push(Outbound::Message(hello.to_json())).await;
        if let Some(notice) = &notice {
            let _ = out
                .push(Outbound::Message(Reply::for_notice(notice).to_json()))
                .await;
        }
    }

    /// Reads client frames until the client leaves, the server stops, or the
    /// connection misbehaves. Bad messages get an `error` reply and the loop
    /// goes on: only the transport can end a connection.
    async fn read_loop(
        &self,
        mut stream: SplitStream<WebSocketStream>,
        out: &queue::Sender<Outbound>,
        writer_gone: &CancellationToken,
    ) -> Exit {
        let interval = self.ctx.websocket.ping_interval;
        // A pinned sleep rather than an `Interval`, which boxes its own: one
        // allocation less on every idle connection.
        let ping = tokio::time::sleep_until(Instant::now() + interval);
        tokio::pin!(ping);
        let mut alive = KeepAlive {
            last_seen: Instant::now(),
            last_touch: Instant::now(),
        };
        loop {
            let reply = tokio::select! {
                biased;
                _ = writer_gone.cancelled() => return Exit::WriterGone,
                // Running answers finish first; then there is nothing left to say.
                _ = self.ctx.chat.drained() => return Exit::Close(CloseReason::ShuttingDown),
                () = &mut ping => {
                    ping.as_mut().reset(Instant::now() + interval);
                    match Box::pin(self.on_ping_tick(&mut alive, out)).await {
                        Some(exit) => return exit,
                        None => continue,
                    }
                }
                frame = stream.next() => {
                    alive.last_seen = Instant::now();
                    match self.on_frame(frame).await {
                        Ok(reply) => reply,
                        Err(Stop::Exit(exit)) => return exit,
                        Err(Stop::SessionGone) => return self.session_lost(out).await,
                    }
                }
            };
            if let Some(reply) = reply {
                if out.push(Outbound::Message(reply.to_json())).await.is_err() {
                    return Exit::WriterGone;
                }
            }
        }
    }

    /// Tells the client its session is gone (the `session_expired` error old
    /// clients know, then `session-lost`), rather than answering
    /// `session_expired` to every message for ever, and closes with 4004.
    async fn session_lost(&self, out: &queue::Sender<Outbound>) -> Exit {
        tracing::info!("session vanished under an open connection");
        let expired = Reply::error(ErrorCode::SessionExpired, None);
        let _ = out.push(Outbound::Message(expired.to_json())).await;
        let lost = Reply::SessionLost {
            session_id: self.session_id.as_str().to_owned(),
            timestamp: now(),
        };
        let _ = out.push(Outbound::Message(lost.to_json())).await;
        Exit::Close(CloseReason::SessionLost)
    }

    /// Pings the client, closes it if it stopped answering, and keeps its
    /// session alive while it is connected.
    async fn on_ping_tick(
        &self,
        alive: &mut KeepAlive,
        out: &queue::Sender<Outbound>,
    ) -> Option<Exit> {
        if alive.last_seen.elapsed() >= self.ctx.websocket.pong_timeout {
            tracing::info!("no pong within the timeout; closing");
            return Some(Exit::Close(CloseReason::PingTimeout));
        }
        if out.push(Outbound::Ping).await.is_err() {
            return Some(Exit::WriterGone);
        }
        self.ctx.chat.renew_connection(&self.permit).await;
        if alive.last_touch.elapsed() >= self.ctx.chat.keep_alive_interval() {
            alive.last_touch = Instant::now();
            match self.ctx.chat.touch(&self.session_id).await {
                Ok(()) => {}
                Err(ChatError::SessionGone) => return Some(self.session_lost(out).await),
                Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not refresh the session"),
            }
        }
        None
    }

    /// One frame from the client: the reply to send, or why to stop reading.
    async fn on_frame(
        &self,
        frame: Option<Result<Message, std::io::Error>>,
    ) -> Result<Option<Reply>, Stop> {
        match frame {
            None | Some(Ok(Message::Close(_))) => Err(Stop::Exit(Exit::ClientClosed)),
            Some(Err(e)) if is_too_big(&e) => Err(Stop::Exit(Exit::Close(CloseReason::TooBig))),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                Err(Stop::Exit(Exit::ClientClosed))
            }
            // Boxed: handling a message awaits deep into the use cases, and an
            // idle connection should not carry that state machine inline.
            Some(Ok(Message::Text(text))) => Box::pin(self.handle_text(&text)).await,
            Some(Ok(Message::Binary(_))) => {
                Ok(Some(Reply::error(ErrorCode::UnsupportedFrame, None)))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        }
    }

    /// Acts on one text frame; returns the reply for this socket, if any.
    /// Everything else the client sees arrives through the feed.
    async fn handle_text(&self, text: &str) -> Result<Option<Reply>, Stop> {
        let message = match parse_client_message(text, self.ctx.websocket.max_message_chars) {
            Ok(m) => m,
            Err((code, message)) => return Ok(Some(Reply::error_with(code, message, None))),
        };
        let reply = match message {
            ClientMessage::Chat {
                content,
                client_message_id,
            } => {
                let request = ChatRequest {
                    content,
                    client_message_id,
                };
                return self.chat(request).await;
            }
            ClientMessage::Stop => match self.ctx.chat.stop(&self.session_id).await {
                Ok(()) => None,
                Err(StopRefusal::NothingRunning) => {
                    Some(Reply::error(ErrorCode::NoActiveGeneration, None))
                }
                Err(StopRefusal::Failed(e)) => {
                    tracing::warn!(error = %ErrorChain(&e), "could not stop the generation");
                    Some(Reply::error(ErrorCode::from(&e), None))
                }
            },
            ClientMessage::HumanEscalation => {
                match self.ctx.chat.escalate(&self.session_id).await {
                    Ok(()) => None,
                    Err(ChatError::SessionGone) => return Err(Stop::SessionGone),
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "could not escalate");
                        Some(Reply::error(ErrorCode::from(&e), None))
                    }
                }
            }
            ClientMessage::Ping => Some(Reply::Pong { timestamp: now() }),
        };
        Ok(reply)
    }

    /// Submits a chat; the sender alone gets the `ack` when it asked for one.
    async fn chat(&self, request: ChatRequest) -> Result<Option<Reply>, Stop> {
        let client_id = request.client_message_id.clone();
        let submitted = self
            .ctx
            .chat
            .submit(&self.session_id, &self.user_id, request);
        let reply = match submitted.await {
            Ok(accepted) => client_id.map(|id| Reply::Ack {
                client_message_id: id.as_str().to_owned(),
                message_id: accepted.message_id.as_str().to_owned(),
                seq: accepted.seq,
                duplicate: accepted.duplicate,
                timestamp: now(),
            }),
            Err(ChatRefusal::InProgress { running }) => Some(Reply::error(
                ErrorCode::GenerationInProgress,
                Some(&running),
            )),
            Err(ChatRefusal::ShuttingDown) => {
                Some(Reply::error(ErrorCode::ServerShuttingDown, None))
            }
            Err(ChatRefusal::RateLimited(limited)) => {
                Some(Reply::rate_limited(limited.retry_after))
            }
            Err(ChatRefusal::Failed(ChatError::SessionGone)) => return Err(Stop::SessionGone),
            Err(ChatRefusal::Failed(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "could not accept the chat");
                Some(Reply::error(ErrorCode::from(&e), None))
            }
        };
        Ok(reply)
    }
}

impl Exit {
    fn as_str(&self) -> &'static str {
        match self {
            Exit::ClientClosed => "client closed",
            Exit::WriterGone => "client stopped reading",
            Exit::Close(reason) => reason.text(),
        }
    }
}
