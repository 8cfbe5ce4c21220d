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
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::Instrument;

use super::super::api_common::UserView;
use super::super::errors::ErrorCode;
use super::super::{AppContext, RequestContext};
use super::feed::ConversationFeed;
use super::millis::Millis;
use super::protocol::{now, parse_client_message, AgentView, ClientMessage, QuotaView, Reply};
use super::transport::{close_for_read_error, write_loop, CloseReason, Outbound, OUTBOUND_QUEUE};
use crate::adapters::queue;
use crate::application::limits::ConnectionPermit;
use crate::application::ports::{Revocation, TokenClaims};
use crate::application::{
    Attachment, AuthError, ChatError, ChatRefusal, ChatRequest, ConnectionGuard, CsatRefusal,
    FeedbackRefusal, HandoffRefusal, RegenerateRefusal, ResumeNotice, StopRefusal,
};
use crate::domain::conversation::Seq;
use crate::domain::csat::Csat;
use crate::domain::feedback::Feedback;
use crate::domain::time::MAX_DURATION;
use crate::domain::{MessageId, SessionId, UserId};
use crate::telemetry::ErrorChain;

/// What `connected` tells the client besides the session: who it is, and who
/// answers the conversation (read when the socket opened).
pub(super) struct Hello {
    pub user: UserView,
    /// Whether the socket resumed an existing session.
    pub resumed: bool,
    pub mode: &'static str,
    pub agent: Option<AgentView>,
    /// The user's token usage in the budget window, when known.
    pub quota: Option<QuotaView>,
}

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

/// The token the socket holds its authority from: when it expires or is
/// revoked, the socket closes with 4001, unless an `auth` message brought a
/// fresh token of the same user first.
pub(super) struct Authority {
    claims: TokenClaims,
    deadline: Millis,
    /// Word of revocations; `None` once the store stopped announcing (shutdown).
    revocations: Option<broadcast::Receiver<Revocation>>,
}

impl Authority {
    /// The socket's user: the same for its whole life, since an `auth`
    /// message only takes a fresh token of the same user.
    fn user_id(&self) -> &UserId {
        &self.claims.user_id
    }

    pub fn new(claims: TokenClaims, revocations: broadcast::Receiver<Revocation>) -> Self {
        Self {
            deadline: deadline_of(&claims),
            claims,
            revocations: Some(revocations),
        }
    }
}

/// When a token's `exp` comes, on the monotonic clock, to the millisecond
/// (in whole seconds of "now" it could be up to a second late or early). A
/// signed `exp` may be anything up to `i64::MAX` (a token of the Node
/// server's, or one signed elsewhere with the secret): past [`MAX_DURATION`]
/// it is "never", rather than an overflow of the clock.
fn deadline_of(claims: &TokenClaims) -> Millis {
    let left = claims
        .expires_at
        .saturating_mul(1000)
        .saturating_sub(chrono::Utc::now().timestamp_millis());
    let left = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
    Millis::now().after(left.min(MAX_DURATION))
}

/// The next revocation; pending for ever once the channel has closed (the
/// loop sets it to `None` when it hears `Closed`). Not an `async fn`, whose
/// state would wrap the receiver's own in every idle socket's future.
fn next_revocation(
    rx: &mut Option<broadcast::Receiver<Revocation>>,
) -> impl std::future::Future<Output = Result<Revocation, RecvError>> + Send + '_ {
    use futures_util::future::Either;
    match rx {
        Some(receiver) => Either::Left(receiver.recv()),
        None => Either::Right(std::future::pending()),
    }
}

/// The read loop's clock readings: when to ping next, when the client was
/// last heard from, and when its session was last refreshed.
struct Clock {
    next_ping: Millis,
    last_seen: Millis,
    last_touch: Millis,
}

impl Clock {
    /// When the loop's one timer must fire: the next ping or the token's
    /// expiry, whichever comes first.
    fn next_timer(&self, authority: &Authority) -> Millis {
        self.next_ping.min(authority.deadline)
    }
}

/// What woke the read loop.
enum Wake {
    /// The writer ended, with the close reason it sent.
    WriterEnded(Option<CloseReason>),
    /// The server is stopping and its running answers have finished.
    Drained,
    Revocation(Result<Revocation, RecvError>),
    /// A ping is due, or the token's expiry came.
    Timer,
    Frame(Option<Result<Message, std::io::Error>>),
}

pub(super) struct Connection {
    pub ctx: Arc<AppContext>,
    pub session_id: SessionId,
    /// The upgrade request's id and trace: every line this connection logs
    /// carries the id, and its chats continue the trace upstream.
    pub request: RequestContext,
    /// This connection's place under the per-user and per-address caps.
    pub permit: ConnectionPermit,
}

/// What a connection holds while it serves, besides the [`Connection`].
struct Serving {
    /// The client's frames; here rather than an argument of the read loop,
    /// which would keep a second copy in every idle socket's future.
    stream: SplitStream<WebSocketStream>,
    out: queue::Sender<Outbound>,
    writer: Writer,
    authority: Authority,
    counted: ConnectionGuard,
}

/// The writer task, watched through its handle (no token of its own: every
/// idle socket would pay for one).
struct Writer {
    handle: tokio::task::JoinHandle<Option<CloseReason>>,
    /// What it returned, once the read loop has seen it end.
    ended: Option<Option<CloseReason>>,
}

impl Writer {
    /// Lets the writer send what is queued and returns the close reason it
    /// sent; a client that closed first gets nothing more.
    async fn finish(self, client_closed: bool) -> Option<CloseReason> {
        match self.ended {
            Some(closed) => closed,
            None if client_closed => {
                self.handle.abort();
                None
            }
            None => self.handle.await.ok().flatten(),
        }
    }
}

impl Connection {
    /// Sets the connection up and returns what serves it until it closes.
    ///
    /// The set-up (greeting, the writer task) is done here, before any await,
    /// so that none of it (the socket before its split, the user, the
    /// greeting) takes room in the returned future: that future lives as long
    /// as the connection, and its size is what every idle socket costs.
    /// `user` is only what `connected` tells the client.
    pub fn start(
        self,
        socket: WebSocketStream,
        hello: Hello,
        attachment: Attachment,
        authority: Authority,
    ) -> impl std::future::Future<Output = ()> + Send {
        let counted = self.ctx.chat.connection_opened();
        self.span(authority.user_id())
            .in_scope(|| tracing::info!(resumed = hello.resumed, "websocket connected"));
        let (sink, stream) = socket.split();
        let (out, out_rx) = queue::bounded(OUTBOUND_QUEUE);
        self.greet(&out, hello, attachment.head, attachment.notice.as_deref());
        let feed = ConversationFeed::new(attachment);
        let writer = Writer {
            handle: tokio::spawn(write_loop(sink, out_rx, feed)),
            ended: None,
        };
        let serving = Serving {
            stream,
            out,
            writer,
            authority,
            counted,
        };
        self.serve(serving)
    }

    /// Reads until the connection ends, then lets the writer finish.
    ///
    /// Not an `async fn`: one keeps its arguments twice for its whole life
    /// (as passed, and moved into its body), and destructuring them would
    /// keep a third copy. This block uses what it captured in place:
    /// measured, ~300 B less in every idle socket's task.
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    fn serve(self, mut serving: Serving) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let exit = self.read_loop(&mut serving).await;
            if let Exit::Close(reason) = exit {
                // The writer sends what the conversation already has, then this.
                let _ = serving.out.push(Outbound::Close(reason)).await;
            }
            // Nothing more to queue: the writer ends once it has sent the rest.
            serving.out.close();
            let client_closed = matches!(exit, Exit::ClientClosed);
            let closed = serving.writer.finish(client_closed).await;
            let reason = closed.map_or(exit.as_str(), CloseReason::text);
            let label = closed.map_or(exit.label(), CloseReason::label);
            // The connection's span in a trace, when there is one (see `connection_span`).
            tracing::Span::current().record("chatbot.close_reason", label);
            serving.counted.closing(label);
            drop(serving.counted);
            self.span(serving.authority.user_id())
                .in_scope(|| tracing::info!(reason, "websocket disconnected"));
            // Boxed: awaited once, at the end, and not worth room in every idle socket.
            Box::pin(self.ctx.limits.release_connection(self.permit)).await;
        }
    }

    /// The context of this connection's log lines. Made for each piece of
    /// work rather than held for the connection's life: a live span costs
    /// every idle connection half a kilobyte in the subscriber's registry.
    fn span(&self, user_id: &UserId) -> tracing::Span {
        let trace_id = self.request.trace.map(|t| t.trace_id());
        tracing::info_span!(
            "ws",
            request_id = %self.request.id,
            session_id = %self.session_id,
            user_id = %user_id,
            trace_id = trace_id.as_deref()
        )
    }

    /// Says `connected`, and any resume notice, before the first event. The
    /// queue is new and longer than two, so neither push can wait.
    fn greet(
        &self,
        out: &queue::Sender<Outbound>,
        hello: Hello,
        head: Seq,
        notice: Option<&ResumeNotice>,
    ) {
        let hello = Reply::Connected {
            session_id: self.session_id.as_str().to_owned(),
            user: hello.user,
            resumed: hello.resumed,
            seq: head,
            mode: hello.mode,
            agent: hello.agent,
            quota: hello.quota,
            timestamp: now(),
        };
        let _ = out.try_push(Outbound::Message(hello.to_json()));
        if let Some(notice) = notice {
            let _ = out.try_push(Outbound::Message(Reply::for_notice(notice).to_json()));
        }
    }

    /// Reads client frames until the client leaves, the server stops, or the
    /// connection misbehaves. Bad messages get an `error` reply and the loop
    /// goes on: only the transport can end a connection.
    ///
    /// Not an `async fn`, which would keep both references twice (as passed
    /// and moved into its body) for the connection's whole life.
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    fn read_loop<'a>(
        &'a self,
        serving: &'a mut Serving,
    ) -> impl std::future::Future<Output = Exit> + Send + 'a {
        async move {
            // Every local here is room in every idle socket's future for its
            // whole life: the ping interval is read again when needed, and
            // `serving` is borrowed whole rather than field by field.
            let mut clock = Clock {
                next_ping: Millis::now().after(self.ctx.websocket.ping_interval),
                last_seen: Millis::now(),
                last_touch: Millis::now(),
            };
            // One pinned sleep serves both the pings and the token's expiry: each
            // timer here is room in every idle socket's future (and an `Interval`
            // would box its own).
            let timer = tokio::time::sleep_until(clock.next_timer(&serving.authority).instant());
            tokio::pin!(timer);
            loop {
                // Nothing is done inside the select but the wait, so that what
                // it holds (the futures it polls) and what handling holds are
                // never in this future at once.
                let wake = tokio::select! {
                    biased;
                    closed = &mut serving.writer.handle, if serving.writer.ended.is_none() => {
                        Wake::WriterEnded(closed.ok().flatten())
                    }
                    () = self.ctx.chat.drained() => Wake::Drained,
                    notice = next_revocation(&mut serving.authority.revocations) => {
                        Wake::Revocation(notice)
                    }
                    () = &mut timer => Wake::Timer,
                    frame = serving.stream.next() => Wake::Frame(frame),
                };
                // Boxed: what handling awaits, inline, would take room in
                // this future for the connection's whole life, beside the
                // wait's own.
                if let Some(exit) = Box::pin(self.on_wake(wake, serving, &mut clock)).await {
                    return exit;
                }
                // An `auth` message may have moved the deadline.
                timer
                    .as_mut()
                    .reset(clock.next_timer(&serving.authority).instant());
            }
        }
    }

    /// Acts on what woke the read loop; `Some` when the connection must end.
    async fn on_wake(&self, wake: Wake, serving: &mut Serving, clock: &mut Clock) -> Option<Exit> {
        match wake {
            Wake::WriterEnded(closed) => {
                serving.writer.ended = Some(closed);
                Some(Exit::WriterGone)
            }
            // Running answers finish first; then there is nothing left to say.
            Wake::Drained => Some(Exit::Close(CloseReason::ShuttingDown)),
            Wake::Revocation(notice) => {
                if matches!(notice, Err(RecvError::Closed)) {
                    serving.authority.revocations = None;
                }
                if self.is_revoked(notice, &serving.authority.claims).await {
                    Some(lapsed(&serving.out, CloseReason::TokenRevoked).await)
                } else {
                    None
                }
            }
            Wake::Timer => {
                let now = Millis::now();
                if now >= serving.authority.deadline {
                    Some(lapsed(&serving.out, CloseReason::TokenExpired).await)
                } else if now >= clock.next_ping {
                    clock.next_ping = now.after(self.ctx.websocket.ping_interval);
                    self.on_ping_tick(clock, &serving.out)
                        .instrument(self.span(serving.authority.user_id()))
                        .await
                } else {
                    None
                }
            }
            Wake::Frame(frame) => {
                clock.last_seen = Millis::now();
                self.on_client_frame(frame, &serving.out, &mut serving.authority)
                    .await
            }
        }
    }

    /// Handles one frame from the client and sends this socket's reply;
    /// `Some` when the connection must end.
    async fn on_client_frame(
        &self,
        frame: Option<Result<Message, std::io::Error>>,
        out: &queue::Sender<Outbound>,
        authority: &mut Authority,
    ) -> Option<Exit> {
        let reply = match self.on_frame(frame, authority).await {
            Ok(reply) => reply?,
            Err(Stop::Exit(exit)) => return Some(exit),
            Err(Stop::SessionGone) => {
                let span = self.span(authority.user_id());
                return Some(self.session_lost(out).instrument(span).await);
            }
        };
        if out.push(Outbound::Message(reply.to_json())).await.is_err() {
            return Some(Exit::WriterGone);
        }
        None
    }

    /// Whether a revocation ends this socket's token; after missed ones (a
    /// lag, a reconnect) the store is asked. A store that does not answer
    /// leaves the socket open: the next word, or the token's expiry, decides.
    async fn is_revoked(
        &self,
        notice: Result<Revocation, RecvError>,
        claims: &TokenClaims,
    ) -> bool {
        match notice {
            Ok(Revocation::Resync) | Err(RecvError::Lagged(_)) => {
                matches!(
                    self.ctx.auth.still_valid(claims).await,
                    Err(AuthError::TokenRevoked)
                )
            }
            Ok(revocation) => revocation.covers(claims),
            Err(RecvError::Closed) => false,
        }
    }

    /// An `auth` message: a fresh token of the same user extends the socket's
    /// authority; anything else is refused and the current one stands.
    async fn reauthorize(&self, token: &str, authority: &mut Authority) -> Reply {
        match self.ctx.auth.authorize(token).await {
            Ok(fresh) if fresh.claims.user_id == authority.claims.user_id => {
                authority.deadline = deadline_of(&fresh.claims);
                let expires_at = chrono::DateTime::from_timestamp(fresh.claims.expires_at, 0)
                    .unwrap_or_default();
                authority.claims = fresh.claims;
                Reply::Authenticated {
                    expires_at: crate::domain::time::iso_millis(expires_at),
                    timestamp: now(),
                }
            }
            Ok(_) => Reply::error_with(
                ErrorCode::InvalidToken,
                "The token belongs to another user",
                None,
            ),
            Err(AuthError::Internal) => Reply::error(ErrorCode::ServiceUnavailable, None),
            Err(e) => Reply::error(ErrorCode::from(&e), None),
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
    async fn on_ping_tick(&self, alive: &mut Clock, out: &queue::Sender<Outbound>) -> Option<Exit> {
        if alive.last_seen.elapsed() >= self.ctx.websocket.pong_timeout {
            tracing::info!("no pong within the timeout; closing");
            return Some(Exit::Close(CloseReason::PingTimeout));
        }
        if out.push(Outbound::Ping).await.is_err() {
            return Some(Exit::WriterGone);
        }
        self.ctx.limits.renew_connection(&self.permit).await;
        if alive.last_touch.elapsed() >= self.ctx.chat.keep_alive_interval() {
            alive.last_touch = Millis::now();
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
        authority: &mut Authority,
    ) -> Result<Option<Reply>, Stop> {
        match frame {
            None | Some(Ok(Message::Close(_))) => Err(Stop::Exit(Exit::ClientClosed)),
            // A frame the protocol forbids is answered with its close code
            // before the socket is dropped (RFC 6455 §7.1.7); tungstenite
            // leaves the connection able to send it.
            Some(Err(e)) => match close_for_read_error(&e) {
                Some(reason) => {
                    tracing::info!(error = %e, reason = reason.text(), "closing on a bad frame");
                    Err(Stop::Exit(Exit::Close(reason)))
                }
                None => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Err(Stop::Exit(Exit::ClientClosed))
                }
            },
            Some(Ok(Message::Text(text))) => {
                let span = self.span(authority.user_id());
                self.handle_text(&text, authority).instrument(span).await
            }
            Some(Ok(Message::Binary(_))) => {
                Ok(Some(Reply::error(ErrorCode::UnsupportedFrame, None)))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        }
    }

    /// Acts on one text frame; returns the reply for this socket, if any.
    /// Everything else the client sees arrives through the feed.
    async fn handle_text(
        &self,
        text: &str,
        authority: &mut Authority,
    ) -> Result<Option<Reply>, Stop> {
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
                    trace: self.request.trace,
                };
                return self.chat(request, authority.user_id()).await;
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
                match self.ctx.handoff.escalate(&self.session_id).await {
                    Ok(()) => None,
                    Err(ChatError::SessionGone) => return Err(Stop::SessionGone),
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "could not escalate");
                        Some(Reply::error(ErrorCode::from(&e), None))
                    }
                }
            }
            ClientMessage::HandoffCancel => {
                match self.ctx.handoff.cancel_handoff(&self.session_id).await {
                    Ok(()) => None,
                    Err(HandoffRefusal::SessionGone) => return Err(Stop::SessionGone),
                    Err(e) => {
                        if let HandoffRefusal::Failed(e) = &e {
                            tracing::warn!(error = %ErrorChain(e), "could not cancel a handoff");
                        }
                        Some(Reply::error(ErrorCode::from(&e), None))
                    }
                }
            }
            ClientMessage::Ping => Some(Reply::Pong { timestamp: now() }),
            ClientMessage::Auth { token } => Some(self.reauthorize(&token, authority).await),
            ClientMessage::Feedback {
                message_id,
                feedback,
            } => {
                return self
                    .feedback(message_id, feedback, authority.user_id())
                    .await
            }
            ClientMessage::Regenerate => return self.regenerate(authority.user_id()).await,
            ClientMessage::Typing { state } => return Ok(self.typing(state).await),
            ClientMessage::Csat { csat } => {
                return Ok(Some(self.csat(csat, authority.user_id()).await))
            }
        };
        Ok(reply)
    }

    /// The customer is (not) typing: the agent holding the conversation
    /// hears it; nothing is answered unless the store failed.
    async fn typing(&self, state: bool) -> Option<Reply> {
        let said = self.ctx.handoff.customer_typing(&self.session_id, state);
        match said.await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not pass on typing");
                Some(Reply::error(ErrorCode::from(&e), None))
            }
        }
    }

    /// Says how a resolved conversation went; the sender gets the `ack`
    /// (the `csat` event reaches every tab through the feed).
    async fn csat(&self, csat: Csat, user_id: &UserId) -> Reply {
        let kept = self.ctx.handoff.csat(&self.session_id, user_id, csat);
        match kept.await {
            Ok(seq) => Reply::Ack {
                client_message_id: None,
                message_id: None,
                seq,
                duplicate: false,
                timestamp: now(),
            },
            Err(e) => {
                if let CsatRefusal::Failed(cause) = &e {
                    tracing::warn!(error = %ErrorChain(cause), "could not keep a satisfaction answer");
                }
                Reply::error(ErrorCode::from(&e), None)
            }
        }
    }

    /// Rates an answer; the sender gets the `ack` (the `feedback` event
    /// reaches every tab through the feed).
    async fn feedback(
        &self,
        message_id: MessageId,
        feedback: Feedback,
        user_id: &UserId,
    ) -> Result<Option<Reply>, Stop> {
        let rated = self
            .ctx
            .chat
            .feedback(&self.session_id, user_id, &message_id, feedback);
        let reply = match rated.await {
            Ok(seq) => Reply::Ack {
                client_message_id: None,
                message_id: Some(message_id.as_str().to_owned()),
                seq,
                duplicate: false,
                timestamp: now(),
            },
            Err(FeedbackRefusal::Failed(ChatError::SessionGone)) => return Err(Stop::SessionGone),
            Err(e) => {
                if let FeedbackRefusal::Failed(e) = &e {
                    tracing::warn!(error = %ErrorChain(e), "could not keep feedback");
                }
                Reply::error(ErrorCode::from(&e), Some(&message_id))
            }
        };
        Ok(Some(reply))
    }

    /// Asks for another answer to the last message; the new `stream-start`
    /// reaches every tab through the feed, so only a refusal is answered here.
    async fn regenerate(&self, user_id: &UserId) -> Result<Option<Reply>, Stop> {
        let asked = self
            .ctx
            .chat
            .regenerate(&self.session_id, user_id, self.request.trace);
        match asked.await {
            Ok(_) => Ok(None),
            Err(RegenerateRefusal::NotBotMode) => {
                Ok(Some(Reply::error(ErrorCode::HandoffActive, None)))
            }
            Err(RegenerateRefusal::NothingToRegenerate) => {
                Ok(Some(Reply::error(ErrorCode::NothingToRegenerate, None)))
            }
            Err(RegenerateRefusal::Chat(refusal)) => refused(refusal, "answer again"),
        }
    }

    /// Submits a chat; the sender alone gets the `ack` when it asked for one.
    async fn chat(&self, request: ChatRequest, user_id: &UserId) -> Result<Option<Reply>, Stop> {
        let client_id = request.client_message_id.clone();
        let submitted = self.ctx.chat.submit(&self.session_id, user_id, request);
        match submitted.await {
            Ok(accepted) => Ok(client_id.map(|id| Reply::Ack {
                client_message_id: Some(id.as_str().to_owned()),
                message_id: Some(accepted.message_id.as_str().to_owned()),
                seq: accepted.seq,
                duplicate: accepted.duplicate,
                timestamp: now(),
            })),
            Err(refusal) => refused(refusal, "accept the chat"),
        }
    }
}

/// The reply to a chat (or a regenerate) that did not start; `doing` names
/// it in the warning a failing store logs.
fn refused(refusal: ChatRefusal, doing: &'static str) -> Result<Option<Reply>, Stop> {
    let reply = match refusal {
        ChatRefusal::InProgress { running } => {
            Reply::error(ErrorCode::GenerationInProgress, Some(&running))
        }
        ChatRefusal::ShuttingDown => Reply::error(ErrorCode::ServerShuttingDown, None),
        ChatRefusal::RateLimited(limited) => Reply::rate_limited(limited.retry_after),
        ChatRefusal::BudgetExhausted { resets_at } => Reply::budget_exhausted(resets_at),
        ChatRefusal::Failed(ChatError::SessionGone) => return Err(Stop::SessionGone),
        ChatRefusal::Failed(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not {doing}");
            Reply::error(ErrorCode::from(&e), None)
        }
    };
    Ok(Some(reply))
}

/// The socket's token expired or was revoked: say so, then close with 4001.
async fn lapsed(out: &queue::Sender<Outbound>, reason: CloseReason) -> Exit {
    let code = match reason {
        CloseReason::TokenRevoked => ErrorCode::TokenRevoked,
        _ => ErrorCode::TokenExpired,
    };
    tracing::info!(reason = reason.text(), "closing: the socket's token lapsed");
    let _ = out
        .push(Outbound::Message(Reply::error(code, None).to_json()))
        .await;
    Exit::Close(reason)
}

impl Exit {
    fn as_str(&self) -> &'static str {
        match self {
            Exit::ClientClosed => "client closed",
            Exit::WriterGone => "client stopped reading",
            Exit::Close(reason) => reason.text(),
        }
    }

    /// As a metric label.
    fn label(&self) -> &'static str {
        match self {
            Exit::ClientClosed => "client_closed",
            Exit::WriterGone => "client_stopped_reading",
            Exit::Close(reason) => reason.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Username;

    /// The metrics show every close label at zero from start-up; a label
    /// not in that list would appear only after its first close.
    #[test]
    fn every_close_is_counted_under_a_known_label() {
        let known: Vec<&str> = super::super::close_labels().collect();
        let exits = [Exit::ClientClosed, Exit::WriterGone]
            .into_iter()
            .chain(CloseReason::ALL.iter().map(|r| Exit::Close(*r)));
        for exit in exits {
            assert!(known.contains(&exit.label()), "{}", exit.label());
        }
    }

    fn claims(expires_at: i64) -> TokenClaims {
        TokenClaims {
            user_id: UserId::parse("u1").unwrap(),
            username: Username::parse("alice").unwrap(),
            issued_at: 0,
            expires_at,
            token_id: "t1".into(),
            issued_at_ms: 0,
        }
    }

    #[test]
    fn a_token_that_never_expires_gives_a_far_deadline_not_a_panic() {
        let now = tokio::time::Instant::now();
        let far = deadline_of(&claims(i64::MAX)).instant();
        assert!(far > now + std::time::Duration::from_secs(86_400 * 365));
        assert!(deadline_of(&claims(i64::MIN)) <= Millis::now());
        assert!(deadline_of(&claims(0)) <= Millis::now());
    }

    #[test]
    fn the_deadline_is_the_exp_second_to_the_millisecond() {
        // Whatever part of a second has gone by, the socket lapses when `exp`
        // comes, not a fraction of a second before or after it.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let before = tokio::time::Instant::now();
        let exp = now_ms.div_euclid(1000) + 2;
        let left = deadline_of(&claims(exp)).instant() - before;
        let expected =
            std::time::Duration::from_millis(u64::try_from(exp * 1000 - now_ms).unwrap());
        let off = left.abs_diff(expected);
        assert!(
            off < std::time::Duration::from_millis(50),
            "{left:?} against {expected:?}"
        );
    }
}
