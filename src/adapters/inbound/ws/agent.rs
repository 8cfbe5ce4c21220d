//! The agent socket `/agent/ws`: the queue as it changes, the conversations
//! the agent holds (every event, with its `sessionId` and `seq`), and the
//! agent's commands (claim, reply, release, resolve, watch).
//!
//! It reuses `/ws`'s transport (the writer task, pings, close codes) and its
//! resume machinery: each followed conversation is an [`Attachment`] that
//! replays from a `lastSeq` and then follows live, forwarded by a task this
//! connection owns and aborts when it closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use poem::web::websocket::{Message, WebSocket, WebSocketStream};
use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::super::errors::{ErrorBody, ErrorCode};
use super::super::{client_ip, request_context, AppContext, RequestContext};
use super::agent_protocol::{
    agent_event_json, parse_agent_message, status_word, AgentAction, AgentCommand, AgentReply,
    HeldConversation, RatingView,
};
use super::protocol::{now, AgentView};
use super::transport::{
    close_for_read_error, socket_config, write_loop, CloseReason, FeedFrame, FrameFeed, Outbound,
    OUTBOUND_QUEUE,
};
use super::{authenticate, WsQuery, SUBPROTOCOL};
use crate::adapters::queue;
use crate::application::limits::ConnectionPermit;
use crate::application::ports::{HandoffChange, Revocation, SignalStream, TokenClaims};
use crate::application::{
    AuthError, Authorized, ChatService, Feed, HandoffRefusal, ResumeNotice, STANDING_CHECK,
};
use crate::domain::conversation::Seq;
use crate::domain::handoff::Mode;
use crate::domain::signal::{Side, Signal};
use crate::domain::{SessionId, User};
use crate::telemetry::ErrorChain;

/// Conversation frames waiting for the agent's writer.
const EVENTS_QUEUE: usize = 512;
/// Most conversations one agent socket follows at once.
const MAX_FOLLOWED: usize = 200;
/// How often presence is renewed: a third of its lease.
const PRESENCE_RENEW: Duration = Duration::from_secs(10);

/// The conversation frames the follow tasks forward, pulled by the writer.
struct AgentFeed(mpsc::Receiver<String>);

impl FrameFeed for AgentFeed {
    /// Cancel-safe: `mpsc::Receiver::recv` is.
    async fn next_frame(&mut self) -> FeedFrame {
        match self.0.recv().await {
            Some(json) => FeedFrame::Text(json),
            None => std::future::pending().await,
        }
    }
}

/// `GET /agent/ws`: the same credentials as `/ws`; only agents (per the user
/// store, read now) get the upgrade, everyone else a 403 `agent_only`.
#[handler]
pub async fn agent_ws_endpoint(
    req: &Request,
    ws: poem::Result<WebSocket>,
    ctx: Data<&Arc<AppContext>>,
) -> Response {
    let ctx = ctx.0.clone();
    if ctx.shutdown.is_cancelled() {
        return ErrorBody::response(ErrorCode::ShuttingDown);
    }
    let revocations = ctx.auth.revocations();
    let query: WsQuery = req.params().unwrap_or_default();
    let Authorized { user, claims } = match authenticate(&ctx, req, &query).await {
        Ok(authorized) => authorized,
        Err(refusal) => return refusal,
    };
    let agent = match ctx.auth.agent(&user.id).await {
        Ok(agent) => agent,
        Err(AuthError::Internal) => return ErrorBody::response(ErrorCode::ServiceUnavailable),
        Err(e) => return ErrorBody::response(ErrorCode::from(&e)),
    };
    let Ok(ws) = ws else {
        return ErrorBody::response(ErrorCode::WebsocketUpgradeRequired);
    };
    let permit = match ctx.limits.connection(&agent.id, client_ip(req)).await {
        // Given back if the upgrade never completes.
        Ok(permit) => super::held_permit::HeldPermit::new(permit, &ctx.limits, &ctx.connections),
        Err(limited) => return ErrorBody::rate_limited(limited.retry_after),
    };
    let connection = AgentConnection {
        ctx: ctx.clone(),
        agent,
        socket_id: uuid_like(),
        claims,
        request: request_context(req),
    };
    let traced = super::connection_span(req, "/agent/ws", None, &connection.agent.id);
    let tracker = ctx.connections.clone();
    let pending = std::sync::Mutex::new(Some((connection, permit, revocations)));
    ws.config(socket_config())
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| {
            let taken = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
            let (connection, permit, revocations) =
                taken.expect("an upgrade starts its connection once");
            let span = connection.span();
            let serving = connection.serve(socket, permit.take(), revocations);
            // Its own task, as a customer socket's (see `super::upgrade`).
            tracker.spawn(tracing::Instrument::instrument(
                tracing::Instrument::instrument(serving, span),
                traced,
            ));
            std::future::ready(())
        })
        .into_response()
}

/// A random id for this socket's presence lease.
fn uuid_like() -> String {
    crate::domain::MessageId::generate()
        .as_str()
        .replace("msg_", "sock_")
}

struct AgentConnection {
    ctx: Arc<AppContext>,
    agent: User,
    socket_id: String,
    claims: TokenClaims,
    request: RequestContext,
}

/// The conversations this socket follows, each by a forwarding task.
struct Follows {
    chat: ChatService,
    tx: mpsc::Sender<String>,
    tasks: tokio::task::JoinSet<()>,
    by_session: HashMap<SessionId, AbortHandle>,
}

impl Follows {
    /// Follows `session` from after `from` (live from now when `None`),
    /// replacing any earlier follow of it.
    fn follow(&mut self, session: &SessionId, from: Option<Seq>) -> bool {
        if let Some(old) = self.by_session.remove(session) {
            old.abort();
        } else if self.by_session.len() >= MAX_FOLLOWED {
            return false;
        }
        let task = forward(self.chat.clone(), session.clone(), from, self.tx.clone());
        let handle = self.tasks.spawn(task);
        self.by_session.insert(session.clone(), handle);
        true
    }

    fn follows(&self, session: &SessionId) -> bool {
        self.by_session.contains_key(session)
    }

    fn unfollow(&mut self, session: &SessionId) -> bool {
        self.by_session.remove(session).map(|h| h.abort()).is_some()
    }

    /// Forgets finished tasks, so the set does not grow.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

/// Forwards one conversation's events to the agent's writer: the replay after
/// `from`, then live; when the live side breaks (fell behind, transport
/// closed), it attaches again after the last seq it forwarded.
async fn forward(
    chat: ChatService,
    session: SessionId,
    from: Option<Seq>,
    tx: mpsc::Sender<String>,
) {
    let mut last = from;
    loop {
        let mut attachment = match chat.attach(&session, last, Side::Agent).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "agent socket could not attach to a conversation");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(notice) = attachment.notice.take() {
            if tx.send(notice_json(&session, &notice)).await.is_err() {
                return;
            }
        }
        last = Some(last.unwrap_or(attachment.head));
        loop {
            let json = match attachment.next().await {
                Ok(Feed::Event(event)) => {
                    last = Some(event.seq);
                    agent_event_json(&session, &event)
                }
                Ok(Feed::Typing { state }) => AgentReply::Typing {
                    session_id: session.as_str().to_owned(),
                    state,
                    timestamp: now(),
                }
                .to_json(),
                _ => break,
            };
            if tx.send(json).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Forwards each new reading of the desk to the writer.
async fn say_desk(
    mut desk: tokio::sync::watch::Receiver<crate::domain::desk::Desk>,
    tx: mpsc::Sender<String>,
) {
    while desk.changed().await.is_ok() {
        let shown = AgentReply::agents(&desk.borrow_and_update()).to_json();
        if tx.send(shown).await.is_err() {
            return;
        }
    }
}

/// Forwards what is said to this agent alone (a summary) to the writer.
async fn say_signals(mut signals: SignalStream, tx: mpsc::Sender<String>) {
    while let Some(signal) = signals.next().await {
        let said = match signal {
            Signal::HandoffSummary { session, summary } => AgentReply::HandoffSummary {
                session_id: session.as_str().to_owned(),
                summary,
                timestamp: now(),
            },
            Signal::Csat { session, csat } => AgentReply::CsatGiven {
                session_id: session.as_str().to_owned(),
                rating: csat.rating.get(),
                comment: csat.comment.map(|c| c.as_str().to_owned()),
                timestamp: now(),
            },
            Signal::Typing { .. } | Signal::DeskChanged => continue,
        };
        if tx.send(said.to_json()).await.is_err() {
            return;
        }
    }
}

fn notice_json(session: &SessionId, notice: &ResumeNotice) -> String {
    match *notice {
        ResumeNotice::HistoryLost {
            from_seq,
            oldest_seq,
            seq,
        } => AgentReply::HistoryLost {
            session_id: session.as_str().to_owned(),
            from_seq,
            oldest_seq,
            seq,
            timestamp: now(),
        },
        ResumeNotice::LastSeqAhead { .. } => AgentReply::error(
            ErrorCode::LastSeqAhead,
            ErrorCode::LastSeqAhead.message(),
            Some(session),
            None,
        ),
    }
    .to_json()
}

/// When the agent loop next has something to do besides frames.
struct Timers {
    ping_interval: Duration,
    /// When the socket's token expires.
    deadline: Instant,
    next_ping: Instant,
    next_presence: Instant,
    next_standing: Instant,
    /// The client's last frame.
    last_seen: Instant,
}

impl Timers {
    fn new(ping_interval: Duration, deadline: Instant) -> Self {
        let now = Instant::now();
        Self {
            ping_interval,
            deadline,
            next_ping: now + ping_interval,
            next_presence: now + PRESENCE_RENEW,
            next_standing: now + STANDING_CHECK,
            last_seen: now,
        }
    }

    fn wake(&self) -> Instant {
        self.next_ping
            .min(self.next_presence)
            .min(self.next_standing)
            .min(self.deadline)
    }
}

/// Why the agent loop ended.
enum End {
    ClientClosed,
    WriterGone,
    Close(CloseReason),
    /// Close, and give back every conversation the agent holds: they may no
    /// longer hold any (demoted, deactivated, logged out everywhere).
    Withdrawn(CloseReason),
}

impl AgentConnection {
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "agent_ws",
            request_id = %self.request.id,
            user_id = %self.agent.id,
        )
    }

    async fn serve(
        self,
        socket: WebSocketStream,
        permit: ConnectionPermit,
        revocations: tokio::sync::broadcast::Receiver<Revocation>,
    ) {
        let mut counted = self.ctx.chat.connection_opened();
        tracing::info!("agent websocket connected");
        let (sink, stream) = socket.split();
        let (out, out_rx) = queue::bounded(OUTBOUND_QUEUE);
        let (tx, rx) = mpsc::channel(EVENTS_QUEUE);
        let mut writer = tokio::spawn(write_loop(sink, out_rx, AgentFeed(rx)));
        let mut follows = Follows {
            chat: self.ctx.chat.clone(),
            tx,
            tasks: tokio::task::JoinSet::new(),
            by_session: HashMap::new(),
        };
        let changes = self.ctx.handoff.handoff_changes();
        // Before `connected`, so a summary of a claim made right after is heard.
        let signals = self.ctx.handoff.agent_signals(&self.agent.id);
        follows
            .tasks
            .spawn(say_signals(signals, follows.tx.clone()));
        self.ctx
            .handoff
            .agent_arrived(&self.agent.id, &self.socket_id)
            .await;
        self.greet(&out, &mut follows).await;
        let end = self
            .run(
                stream,
                &out,
                &mut writer,
                &mut follows,
                changes,
                revocations,
                &permit,
            )
            .await;
        if let End::Close(reason) | End::Withdrawn(reason) = end {
            let _ = out.push(Outbound::Close(reason)).await;
        }
        out.close();
        follows.tasks.abort_all();
        let closed = match end {
            End::ClientClosed => {
                writer.abort();
                None
            }
            _ => tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
        };
        counted.closing(closed.map_or("client_closed", CloseReason::label));
        drop(counted);
        self.ctx
            .handoff
            .agent_gone(&self.agent.id, &self.socket_id)
            .await;
        if matches!(end, End::Withdrawn(_)) {
            self.give_back_held().await;
        }
        self.ctx.limits.release_connection(permit).await;
        tracing::info!("agent websocket disconnected");
    }

    /// After the socket closed because its agent may no longer hold
    /// conversations: they go back to the queue now, not after the grace.
    async fn give_back_held(&self) {
        match self.ctx.handoff.give_back_held(&self.agent.id).await {
            Ok(given) => tracing::info!(given, "gave back the conversations of a withdrawn agent"),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not give back a withdrawn agent's conversations");
            }
        }
    }

    /// Whether the socket's user still is an agent, read from the store now
    /// (a demotion may come from another process, the operator's command):
    /// if not, the socket is told why and withdrawn. A store that fails
    /// withdraws nobody.
    async fn standing(&self, out: &queue::Sender<Outbound>) -> Option<End> {
        let (code, reason) = match self.ctx.auth.agent(&self.agent.id).await {
            Ok(_) | Err(AuthError::Internal) => return None,
            Err(AuthError::AgentOnly) => (ErrorCode::AgentOnly, CloseReason::NotAnAgent),
            Err(e) => (ErrorCode::from(&e), CloseReason::TokenInvalid),
        };
        tracing::info!(
            reason = reason.text(),
            "closing: the agent may no longer hold conversations"
        );
        let refusal = AgentReply::error(code, code.message(), None, None);
        let _ = out.push(Outbound::Message(refusal.to_json())).await;
        Some(End::Withdrawn(reason))
    }

    /// `connected` with the conversations the agent holds (followed live from
    /// now; `watch` replays what the console missed), each with its summary,
    /// and the agent's latest ratings; then the queue and the desk, whose
    /// changes follow from then on.
    async fn greet(&self, out: &queue::Sender<Outbound>, follows: &mut Follows) {
        let handoff = &self.ctx.handoff;
        let held = handoff.held_by(&self.agent.id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %ErrorChain(&e), "could not list an agent's conversations");
            Vec::new()
        });
        let mut conversations = Vec::with_capacity(held.len());
        for h in &held {
            follows.follow(&h.session, None);
            let summary = handoff.summary_of(&h.session).await;
            conversations.push(HeldConversation::from(h).with_summary(summary));
        }
        let (assign, max_conversations) = handoff.assignment();
        let ratings = handoff.ratings_of(&self.agent.id).await;
        let hello = AgentReply::Connected {
            agent: AgentView::from(&crate::application::handoff::agent_ref(&self.agent)),
            conversations,
            status: status_word(handoff.is_away(&self.agent.id).await),
            assign: assign.as_str(),
            max_conversations,
            ratings: ratings.iter().filter_map(RatingView::of).collect(),
            timestamp: now(),
        };
        let _ = out.push(Outbound::Message(hello.to_json())).await;
        self.send_queue(out).await;
        let mut desk = handoff.desk();
        let shown = AgentReply::agents(&desk.borrow_and_update());
        let _ = out.push(Outbound::Message(shown.to_json())).await;
        follows.tasks.spawn(say_desk(desk, follows.tx.clone()));
        // An agent who came online may be given what waits.
        handoff.assign_waiting().await;
    }

    async fn send_queue(&self, out: &queue::Sender<Outbound>) {
        match self.ctx.handoff.handoff_queue().await {
            Ok(queue) => {
                let _ = out
                    .push(Outbound::Message(AgentReply::queue(&queue).to_json()))
                    .await;
            }
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not read the handoff queue"),
        }
    }

    /// Serves until the agent leaves, the token lapses or the server stops.
    #[allow(clippy::too_many_arguments)] // the connection's parts, split to borrow each
    async fn run(
        &self,
        mut stream: SplitStream<WebSocketStream>,
        out: &queue::Sender<Outbound>,
        writer: &mut tokio::task::JoinHandle<Option<CloseReason>>,
        follows: &mut Follows,
        mut changes: tokio::sync::broadcast::Receiver<HandoffChange>,
        mut revocations: tokio::sync::broadcast::Receiver<Revocation>,
        permit: &ConnectionPermit,
    ) -> End {
        let mut claims = self.claims.clone();
        let mut timers = Timers::new(self.ctx.websocket.ping_interval, deadline_of(&claims));
        loop {
            tokio::select! {
                biased;
                _ = &mut *writer => return End::WriterGone,
                _ = self.ctx.chat.drained() => return End::Close(CloseReason::ShuttingDown),
                notice = revocations.recv() => {
                    if let Some(end) = self.on_revocation(notice, &claims, out).await {
                        return end;
                    }
                }
                change = changes.recv() => self.on_change(change, out, follows).await,
                () = tokio::time::sleep_until(timers.wake()) => {
                    if let Some(end) = self.on_timer(&mut timers, out, follows, permit).await {
                        return end;
                    }
                }
                frame = stream.next() => {
                    timers.last_seen = Instant::now();
                    match self.on_frame(frame, out, follows, &mut claims).await {
                        Ok(()) => timers.deadline = deadline_of(&claims),
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// The socket's token lapsed (`token_revoked`, then 4001), if `notice`
    /// covers it. Logged out everywhere, the agent has no socket left to
    /// answer from: what they hold goes back. One token's logout leaves the
    /// others.
    async fn on_revocation(
        &self,
        notice: Result<Revocation, RecvError>,
        claims: &TokenClaims,
        out: &queue::Sender<Outbound>,
    ) -> Option<End> {
        let everywhere = matches!(&notice, Ok(Revocation::User { .. }));
        if !self.revoked(notice, claims).await {
            return None;
        }
        let code = ErrorCode::TokenRevoked;
        let refusal = AgentReply::error(code, code.message(), None, None);
        let _ = out.push(Outbound::Message(refusal.to_json())).await;
        Some(if everywhere {
            End::Withdrawn(CloseReason::TokenRevoked)
        } else {
            End::Close(CloseReason::TokenRevoked)
        })
    }

    /// Whatever is due: the token's end, the agent's standing, presence,
    /// the ping.
    async fn on_timer(
        &self,
        t: &mut Timers,
        out: &queue::Sender<Outbound>,
        follows: &mut Follows,
        permit: &ConnectionPermit,
    ) -> Option<End> {
        let now = Instant::now();
        if now >= t.deadline {
            let code = ErrorCode::TokenExpired;
            let refusal = AgentReply::error(code, code.message(), None, None);
            let _ = out.push(Outbound::Message(refusal.to_json())).await;
            return Some(End::Close(CloseReason::TokenExpired));
        }
        if now >= t.next_standing {
            t.next_standing = now + STANDING_CHECK;
            if let Some(end) = self.standing(out).await {
                return Some(end);
            }
        }
        if now >= t.next_presence {
            t.next_presence = now + PRESENCE_RENEW;
            self.ctx
                .handoff
                .agent_present(&self.agent.id, &self.socket_id)
                .await;
            follows.reap();
        }
        if now >= t.next_ping {
            t.next_ping = now + t.ping_interval;
            if t.last_seen.elapsed() >= self.ctx.websocket.pong_timeout {
                return Some(End::Close(CloseReason::PingTimeout));
            }
            if out.push(Outbound::Ping).await.is_err() {
                return Some(End::WriterGone);
            }
            self.ctx.limits.renew_connection(permit).await;
        }
        None
    }

    async fn revoked(&self, notice: Result<Revocation, RecvError>, claims: &TokenClaims) -> bool {
        match notice {
            Ok(Revocation::Resync) | Err(RecvError::Lagged(_)) => matches!(
                self.ctx.auth.still_valid(claims).await,
                Err(AuthError::TokenRevoked)
            ),
            Ok(revocation) => revocation.covers(claims),
            Err(RecvError::Closed) => {
                std::future::pending::<()>().await;
                false
            }
        }
    }

    /// A handoff changed somewhere: the queue is sent again, and a
    /// conversation assigned to or taken from this agent is followed or dropped.
    async fn on_change(
        &self,
        change: Result<HandoffChange, RecvError>,
        out: &queue::Sender<Outbound>,
        follows: &mut Follows,
    ) {
        let change = match change {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => return self.resync(out, follows).await,
            Err(RecvError::Closed) => return std::future::pending().await,
        };
        let mine =
            matches!(&change.mode, Mode::Assigned { agent, .. } if agent.id == self.agent.id);
        if mine && !follows.follows(&change.session) {
            self.assigned(&change.session, out, follows).await;
        } else if !mine && follows.unfollow(&change.session) {
            let removed = AgentReply::ConversationRemoved {
                session_id: change.session.as_str().to_owned(),
                mode: change.mode.as_str(),
                timestamp: now(),
            };
            let _ = out.push(Outbound::Message(removed.to_json())).await;
        }
        self.send_queue(out).await;
    }

    async fn assigned(
        &self,
        session: &SessionId,
        out: &queue::Sender<Outbound>,
        follows: &mut Follows,
    ) {
        let Ok(Some(h)) = self.ctx.handoff.handoff(session).await else {
            return;
        };
        if follows.follow(session, None) {
            let summary = self.ctx.handoff.summary_of(session).await;
            let assigned = AgentReply::ConversationAssigned {
                conversation: HeldConversation::from(&h).with_summary(summary),
                timestamp: now(),
            };
            let _ = out.push(Outbound::Message(assigned.to_json())).await;
        }
    }

    /// After missed changes: follow exactly what the agent holds now.
    async fn resync(&self, out: &queue::Sender<Outbound>, follows: &mut Follows) {
        if let Ok(held) = self.ctx.handoff.held_by(&self.agent.id).await {
            let keep: Vec<SessionId> = held.iter().map(|h| h.session.clone()).collect();
            let gone: Vec<SessionId> = follows
                .by_session
                .keys()
                .filter(|s| !keep.contains(s))
                .cloned()
                .collect();
            for s in gone {
                follows.unfollow(&s);
            }
            for s in keep {
                if !follows.follows(&s) {
                    self.assigned(&s, out, follows).await;
                }
            }
        }
        self.send_queue(out).await;
    }

    async fn on_frame(
        &self,
        frame: Option<Result<Message, std::io::Error>>,
        out: &queue::Sender<Outbound>,
        follows: &mut Follows,
        claims: &mut TokenClaims,
    ) -> Result<(), End> {
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => return Err(End::ClientClosed),
            Some(Err(e)) => {
                return Err(close_for_read_error(&e).map_or(End::ClientClosed, End::Close))
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let refusal = AgentReply::error(
                    ErrorCode::UnsupportedFrame,
                    ErrorCode::UnsupportedFrame.message(),
                    None,
                    None,
                );
                return push(out, refusal).await;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
        };
        let reply = match parse_agent_message(&text, self.ctx.websocket.max_message_chars) {
            Err(((code, message), request_id)) => {
                AgentReply::error(code, message, None, request_id)
            }
            Ok(AgentCommand::Ping) => AgentReply::Pong { timestamp: now() },
            Ok(AgentCommand::Auth { token }) => self.reauthorize(&token, claims).await,
            Ok(AgentCommand::Status { away }) => self.set_status(away).await,
            Ok(AgentCommand::Typing { session, state }) => {
                match self.typing(&session, state, follows).await {
                    Some(refusal) => refusal,
                    None => return Ok(()),
                }
            }
            Ok(AgentCommand::Act {
                session,
                action,
                request_id,
            }) => self.act(session, action, request_id, follows).await,
        };
        push(out, reply).await
    }

    /// The agent says they are away or available again.
    async fn set_status(&self, away: bool) -> AgentReply {
        match self.ctx.handoff.set_away(&self.agent.id, away).await {
            Ok(()) => AgentReply::Status {
                status: status_word(away),
                timestamp: now(),
            },
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not keep an agent's status");
                let code = ErrorCode::from(&e);
                AgentReply::error(code, code.message(), None, None)
            }
        }
    }

    /// The agent is (not) typing to the customer; answered only when refused.
    async fn typing(
        &self,
        session: &SessionId,
        state: bool,
        follows: &mut Follows,
    ) -> Option<AgentReply> {
        let refused =
            |code: ErrorCode| AgentReply::error(code, code.message(), Some(session), None);
        if !follows.follows(session) {
            return Some(refused(ErrorCode::NotAssigned));
        }
        let said = self.ctx.handoff.agent_typing(&self.agent, session, state);
        match said.await {
            Ok(()) => None,
            Err(e) => {
                if let HandoffRefusal::Failed(cause) = &e {
                    tracing::warn!(error = %ErrorChain(cause), "could not pass on typing");
                }
                Some(refused(ErrorCode::from(&e)))
            }
        }
    }

    /// A fresh token of the same agent extends the socket's authority.
    async fn reauthorize(&self, token: &str, claims: &mut TokenClaims) -> AgentReply {
        match self.ctx.auth.authorize(token).await {
            Ok(fresh) if fresh.claims.user_id == self.agent.id => {
                let expires_at = chrono::DateTime::from_timestamp(fresh.claims.expires_at, 0)
                    .unwrap_or_default();
                *claims = fresh.claims;
                AgentReply::Authenticated {
                    expires_at: crate::domain::time::iso_millis(expires_at),
                    timestamp: now(),
                }
            }
            Ok(_) => AgentReply::error(
                ErrorCode::InvalidToken,
                "The token belongs to another user",
                None,
                None,
            ),
            Err(AuthError::Internal) => AgentReply::error(
                ErrorCode::ServiceUnavailable,
                ErrorCode::ServiceUnavailable.message(),
                None,
                None,
            ),
            Err(e) => {
                let code = ErrorCode::from(&e);
                AgentReply::error(code, code.message(), None, None)
            }
        }
    }

    /// One action on one conversation, by an agent whose role is read from
    /// the store now (a demoted agent is refused at once).
    async fn act(
        &self,
        session: SessionId,
        action: AgentAction,
        request_id: Option<String>,
        follows: &mut Follows,
    ) -> AgentReply {
        let name = action.name();
        let agent = match self.ctx.auth.agent(&self.agent.id).await {
            Ok(agent) => agent,
            Err(e) => {
                let code = match e {
                    AuthError::Internal => ErrorCode::ServiceUnavailable,
                    other => ErrorCode::from(&other),
                };
                return AgentReply::error(code, code.message(), Some(&session), request_id);
            }
        };
        let done = self.perform(&agent, &session, action, follows).await;
        match done {
            Ok(acked) => AgentReply::Ack {
                action: name,
                session_id: session.as_str().to_owned(),
                request_id,
                message_id: acked.message_id,
                client_message_id: acked.client_message_id,
                seq: acked.seq,
                timestamp: now(),
            },
            Err(e) => {
                if let HandoffRefusal::Failed(cause) = &e {
                    tracing::warn!(action = name, error = %ErrorChain(cause), "agent action failed");
                }
                let code = ErrorCode::from(&e);
                AgentReply::error(code, code.message(), Some(&session), request_id)
            }
        }
    }

    async fn perform(
        &self,
        agent: &User,
        session: &SessionId,
        action: AgentAction,
        follows: &mut Follows,
    ) -> Result<Acked, HandoffRefusal> {
        let handoff = &self.ctx.handoff;
        match action {
            AgentAction::Claim => {
                let seq = handoff.claim(agent, session).await?;
                // From just before `agent-joined`, so this socket sees it too.
                follows.follow(session, Some(seq.saturating_sub(1)));
                Ok(Acked::seq(seq))
            }
            AgentAction::Message {
                content,
                client_message_id,
            } => {
                let sent = handoff.agent_message(agent, session, content).await?;
                Ok(Acked {
                    message_id: Some(sent.message_id.as_str().to_owned()),
                    client_message_id: client_message_id.map(|c| c.as_str().to_owned()),
                    seq: Some(sent.seq),
                })
            }
            AgentAction::Release => {
                handoff.release(agent, session).await?;
                follows.unfollow(session);
                Ok(Acked::default())
            }
            AgentAction::Resolve => {
                handoff.resolve(agent, session).await?;
                follows.unfollow(session);
                Ok(Acked::default())
            }
            AgentAction::Watch { last_seq } => {
                let held = handoff
                    .handoff(session)
                    .await
                    .map_err(HandoffRefusal::Failed)?;
                if !held.is_some_and(|h| h.mode.agent().is_some_and(|a| a.id == agent.id)) {
                    return Err(crate::domain::handoff::HandoffError::NotAssigned.into());
                }
                follows.follow(session, Some(last_seq));
                Ok(Acked::default())
            }
        }
    }
}

/// What an `ack` carries besides the action.
#[derive(Default)]
struct Acked {
    message_id: Option<String>,
    client_message_id: Option<String>,
    seq: Option<Seq>,
}

impl Acked {
    fn seq(seq: Seq) -> Self {
        Self {
            seq: Some(seq),
            ..Self::default()
        }
    }
}

async fn push(out: &queue::Sender<Outbound>, reply: AgentReply) -> Result<(), End> {
    out.push(Outbound::Message(reply.to_json()))
        .await
        .map_err(|_| End::WriterGone)
}

fn deadline_of(claims: &TokenClaims) -> Instant {
    let left = claims
        .expires_at
        .saturating_sub(chrono::Utc::now().timestamp());
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
    Instant::now() + left.min(crate::domain::time::MAX_DURATION)
}
