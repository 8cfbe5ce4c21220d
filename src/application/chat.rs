//! The chat use cases: open or resume a session, attach a connection to its
//! conversation, accept a chat and run its generation (or, while a human
//! holds the conversation, only keep it), stop it from anywhere, and drain on
//! shutdown.
//!
//! The conversation, not the socket, owns a generation: it runs to its end
//! when the tabs that asked for it close, and every tab of the session (on any
//! instance) sees the same events in the same order through the event log.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::attachment::Attachment;
use super::conversation::{ChatError, ConversationCore};
use super::generation::{self, Job};
use super::limits::{ChatPermit, Limited, Slot};
use super::ports::{
    AiPurpose, AiRequest, ConversationStoreError, LogSlice, Rated, SessionCounts,
    SessionStoreError, SharedEvent, StartOutcome, Stats,
};
use crate::domain::budget::{BudgetWindow, Quota};
use crate::domain::conversation::{ClientMessageId, ConversationEvent, Generation, Seq};
use crate::domain::feedback::Feedback;
use crate::domain::handoff::Handoff;
use crate::domain::signal::Side;
use crate::domain::transcript::{Speaker, TranscriptEntry};
use crate::domain::{
    ChatContent, ChatMessage, MessageId, Role, Session, SessionId, SessionUser, TraceContext, User,
    UserId,
};

/// Why a chat was not accepted.
#[derive(Debug, Error)]
pub enum ChatRefusal {
    /// The session already has a generation running (on any instance).
    #[error("a generation is already running")]
    InProgress { running: MessageId },
    /// The server is draining before it stops.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The user's chat rate or concurrent generations are at their limit;
    /// nothing was stored or logged.
    #[error("too many chats")]
    RateLimited(Limited),
    /// The user's token budget is used up until `resets_at`; nothing was
    /// stored or logged, and the AI was not asked.
    #[error("token budget used up")]
    BudgetExhausted { resets_at: chrono::DateTime<Utc> },
    #[error(transparent)]
    Failed(#[from] ChatError),
}

impl From<ConversationStoreError> for ChatRefusal {
    fn from(e: ConversationStoreError) -> Self {
        ChatRefusal::Failed(e.into())
    }
}

impl From<SessionStoreError> for ChatRefusal {
    fn from(e: SessionStoreError) -> Self {
        ChatRefusal::Failed(e.into())
    }
}

/// A chat as the client sent it, already validated.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub content: ChatContent,
    pub client_message_id: Option<ClientMessageId>,
    /// The trace of the connection that sent it (its upgrade's
    /// `traceparent`), continued by the upstream AI request.
    pub trace: Option<TraceContext>,
}

/// A chat the session has accepted: its `user-message`'s id and seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: MessageId,
    pub seq: Seq,
    /// True when this `clientMessageId` had been accepted before: nothing new started.
    pub duplicate: bool,
}

/// Why a stop did nothing.
#[derive(Debug, Error)]
pub enum StopRefusal {
    #[error("no generation is running")]
    NothingRunning,
    #[error(transparent)]
    Failed(#[from] ChatError),
}

/// Why an answer was not asked for again.
#[derive(Debug, Error)]
pub enum RegenerateRefusal {
    /// A human holds (or is awaited by) the conversation: the bot does not
    /// answer now.
    #[error("the conversation is not the bot's to answer now")]
    NotBotMode,
    /// The session's history holds no user message to answer again.
    #[error("the session has no user message to answer again")]
    NothingToRegenerate,
    /// Refused as a chat would be: an answer runs, the server drains, a
    /// limit, or a failing store.
    #[error(transparent)]
    Chat(#[from] ChatRefusal),
}

impl From<ChatError> for RegenerateRefusal {
    fn from(e: ChatError) -> Self {
        RegenerateRefusal::Chat(ChatRefusal::Failed(e))
    }
}

impl From<ConversationStoreError> for RegenerateRefusal {
    fn from(e: ConversationStoreError) -> Self {
        ChatError::from(e).into()
    }
}

impl From<SessionStoreError> for RegenerateRefusal {
    fn from(e: SessionStoreError) -> Self {
        ChatError::from(e).into()
    }
}

/// A new answer to the session's last user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regenerated {
    /// The new answer's id (its `stream-start`'s `messageId`).
    pub message_id: MessageId,
    /// The user message it answers, as the superseded answer did.
    pub reply_to: MessageId,
    /// The seq of its `stream-start`.
    pub seq: Seq,
}

/// Why feedback was not kept.
#[derive(Debug, Error)]
pub enum FeedbackRefusal {
    /// No message of this session has that id (another session's included).
    #[error("no message of this session has that id")]
    UnknownMessage,
    /// The message is the user's or an agent's, not the AI's answer.
    #[error("only the AI's answers take feedback")]
    NotAnAnswer,
    /// The session is not the caller's (or does not exist).
    #[error("session not found")]
    NotYourSession,
    #[error(transparent)]
    Failed(#[from] ChatError),
}

/// Most sessions `GET /api/sessions` lists.
pub const SESSIONS_LISTED: usize = 100;

/// A session as its owner's list shows it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub session: Session,
    /// The latest seq of its conversation.
    pub seq: Seq,
}

/// The chat use cases, shared by every connection.
#[derive(Clone)]
pub struct ChatService {
    core: Arc<ConversationCore>,
}

/// Keeps one connection counted as open while it lives, so a connection task
/// that ends any way at all is never left counted. Its close is counted
/// under the reason last given to [`ConnectionGuard::closing`], or
/// `aborted` when the task ended without saying.
pub struct ConnectionGuard {
    stats: Arc<dyn Stats>,
    reason: &'static str,
}

impl ConnectionGuard {
    /// Why the connection is ending, for the count of closes.
    pub fn closing(&mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.connection_closed(self.reason);
    }
}

impl ChatService {
    pub fn new(core: Arc<ConversationCore>) -> Self {
        Self { core }
    }

    /// Counts a client connection for as long as the returned guard lives.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.core.stats.connection_opened();
        ConnectionGuard {
            stats: self.core.stats.clone(),
            reason: "aborted",
        }
    }

    /// How often an open connection should [`touch`](Self::touch) its session:
    /// a quarter of the TTL gives several chances before expiry with few store
    /// writes, and never more than once a second.
    pub fn keep_alive_interval(&self) -> Duration {
        (self.core.settings.session_ttl / 4).max(Duration::from_secs(1))
    }

    /// Resumes `resume` when it names a live session of this user, otherwise
    /// starts a new one. Someone else's session id is treated as unknown, so
    /// probing ids reveals nothing.
    pub async fn open_session(
        &self,
        user: &User,
        resume: Option<&SessionId>,
    ) -> Result<Session, ChatError> {
        self.core.counted(self.open_or_create(user, resume).await)
    }

    async fn open_or_create(
        &self,
        user: &User,
        resume: Option<&SessionId>,
    ) -> Result<Session, ChatError> {
        let sessions = &self.core.sessions;
        let now = Utc::now();
        if let Some(id) = resume {
            if let Some(session) = sessions.get(id).await? {
                if session.user.id == user.id {
                    sessions.touch(id, now).await?;
                    return Ok(session);
                }
            }
        }
        let session = Session::new(
            SessionId::generate(),
            SessionUser {
                id: user.id.clone(),
                username: user.username.clone(),
            },
            now,
        );
        sessions.create(&session).await?;
        Ok(session)
    }

    /// Attaches a connection to the session's conversation; with `last_seq`,
    /// what it missed after that seq is replayed first. `side` says who
    /// attaches: they hear the other side's typing.
    pub async fn attach(
        &self,
        session: &SessionId,
        last_seq: Option<Seq>,
        side: Side,
    ) -> Result<Attachment, ChatError> {
        self.core.counted(
            async {
                let live = self.core.live.subscribe(session).await?;
                let attachment =
                    Attachment::open(session.clone(), self.core.log.clone(), live, last_seq)
                        .await?;
                // Read after the head: see `Attachment::with_signals`.
                let held = match side {
                    Side::Agent => true,
                    Side::Customer => self
                        .core
                        .handoffs
                        .get(session)
                        .await?
                        .is_some_and(|h| h.mode.agent().is_some()),
                };
                Ok(attachment.with_signals(self.core.signals.clone(), side, held))
            }
            .await,
        )
    }

    /// Accepts a chat of `user`: stores it, logs its `user-message` and the
    /// answer's `stream-start`, and starts the generation. A `clientMessageId`
    /// the session already accepted starts nothing and is acknowledged again.
    /// The user's chat rate and concurrent generations are checked before
    /// anything is stored; a chat that is not accepted does not count.
    pub async fn submit(
        &self,
        session: &SessionId,
        user: &UserId,
        chat: ChatRequest,
    ) -> Result<Accepted, ChatRefusal> {
        let core = &self.core;
        if core.draining.is_cancelled() {
            return Err(ChatRefusal::ShuttingDown);
        }
        if let Some(seen) = self.already_accepted(session, &chat).await? {
            return Ok(seen);
        }
        let mut permit = core
            .limits
            .chat(user, core.settings.lease)
            .await
            .map_err(ChatRefusal::RateLimited)?;
        let started = self.start_once(session, user, chat, &mut permit).await;
        if let Err(ChatRefusal::Failed(e)) = &started {
            core.count_failure(e);
        }
        if !matches!(&started, Ok(a) if !a.duplicate) {
            core.limits.chat_not_accepted(permit).await;
        }
        started
    }

    /// Takes the session's generation slot and starts the chat, unless it
    /// turns out to be a copy of one already accepted.
    async fn start_once(
        &self,
        session: &SessionId,
        user: &UserId,
        chat: ChatRequest,
        permit: &mut ChatPermit,
    ) -> Result<Accepted, ChatRefusal> {
        let core = &self.core;
        let answer = MessageId::generate();
        let lease = core.settings.lease;
        if let StartOutcome::Busy { running } =
            core.registry.try_start(session, &answer, lease).await?
        {
            return Err(ChatRefusal::InProgress { running });
        }
        // Holding the session's one generation slot, nobody else can accept a
        // chat now; check again so two copies sent at once start one answer.
        let started = match self.already_accepted(session, &chat).await {
            Ok(None) => match core.muted(session).await {
                Ok(None) => self.start(session, chat, answer.clone(), permit).await,
                Ok(Some(handoff)) => {
                    let logged = self.log_muted(&handoff, user, chat, permit).await;
                    // No answer follows: the slot taken above is not a generation.
                    let _ = core.registry.finish(session, &answer).await;
                    logged
                }
                Err(e) => Err(e.into()),
            },
            Ok(Some(seen)) => Ok(seen),
            Err(e) => Err(e),
        };
        if started.as_ref().map_or(true, |a| a.duplicate) {
            let _ = core.registry.finish(session, &answer).await;
        }
        started
    }

    async fn already_accepted(
        &self,
        session: &SessionId,
        chat: &ChatRequest,
    ) -> Result<Option<Accepted>, ChatRefusal> {
        let Some(id) = &chat.client_message_id else {
            return Ok(None);
        };
        let seen = self.core.log.accepted_client_message(session, id).await?;
        Ok(seen.map(|seen| Accepted {
            message_id: seen.message_id,
            seq: seen.seq,
            duplicate: true,
        }))
    }

    /// Keeps the user's chat, then spawns its generation, unless the user's
    /// token budget is used up.
    async fn start(
        &self,
        session_id: &SessionId,
        chat: ChatRequest,
        answer: MessageId,
        permit: &mut ChatPermit,
    ) -> Result<Accepted, ChatRefusal> {
        let session = self
            .core
            .sessions
            .get(session_id)
            .await?
            .ok_or(ChatError::SessionGone)?;
        if let Err(over) = self.core.metering.admit(&session.user.id).await {
            return Err(ChatRefusal::BudgetExhausted {
                resets_at: over.resets_at,
            });
        }
        let query = chat.content.into_string();
        let user_message = MessageId::generate();
        let (generation, start) = Generation::start(answer, user_message.clone());
        let said = UserChat {
            session: session_id,
            owner: &session.user.id,
            message_id: &user_message,
            client_message_id: chat.client_message_id,
            content: &query,
        };
        let logged = self.keep_chat(said, vec![start]).await?;
        let accepted = Accepted {
            message_id: user_message,
            seq: logged[0].seq,
            duplicate: false,
        };
        // The answer stands at its stream-start, right after the chat.
        let answer_seq = logged.get(1).map_or(accepted.seq + 1, |e| e.seq);
        let request = AiRequest {
            query,
            user_id: session.user.id,
            session_id: session.id,
            history: session.history,
            trace: chat.trace,
            purpose: AiPurpose::Answer,
        };
        // Stoppable before anyone can see its stream-start; should its first
        // tokens be published before these two events, watchers fill the gap
        // from the log.
        self.spawn_generation(generation, answer_seq, request, permit.slot.take());
        self.core.publish(session_id, &logged).await;
        Ok(accepted)
    }

    /// Keeps a chat while a human holds (or is awaited by) the conversation:
    /// the agent sees it, the bot stays silent. While nobody has claimed it
    /// yet, `handoff-waiting` follows at once, so the customer is never met
    /// with silence.
    async fn log_muted(
        &self,
        handoff: &Handoff,
        owner: &UserId,
        chat: ChatRequest,
        permit: &mut ChatPermit,
    ) -> Result<Accepted, ChatRefusal> {
        let core = &self.core;
        let session_id = &handoff.session;
        core.limits.release(permit.slot.take()).await;
        let query = chat.content.into_string();
        let message_id = MessageId::generate();
        let waiting = core.waiting(handoff).await;
        let said = UserChat {
            session: session_id,
            owner,
            message_id: &message_id,
            client_message_id: chat.client_message_id,
            content: &query,
        };
        let logged = self.keep_chat(said, waiting.into_iter().collect()).await?;
        core.publish(session_id, &logged).await;
        core.note_last_message(session_id, &query).await;
        Ok(Accepted {
            message_id,
            seq: logged[0].seq,
            duplicate: false,
        })
    }

    /// Keeps what the user said: in the session's history (what the AI sees
    /// next), counted, logged as its `user-message` followed by `then`, and
    /// in the transcript. Recorded before anyone sees the chat, so a
    /// transcript read after its `user-message` arrived always holds it.
    async fn keep_chat(
        &self,
        chat: UserChat<'_>,
        then: Vec<ConversationEvent>,
    ) -> Result<Vec<SharedEvent>, ChatRefusal> {
        let core = &self.core;
        let now = Utc::now();
        let stored = ChatMessage {
            role: Role::User,
            content: chat.content.to_owned(),
            timestamp: now,
            message_id: Some(chat.message_id.clone()),
        };
        core.sessions.append(chat.session, stored).await?;
        core.stats.message_received();
        let asked = ConversationEvent::UserMessage {
            message_id: chat.message_id.clone(),
            client_message_id: chat.client_message_id,
            content: chat.content.to_owned(),
        };
        let events = std::iter::once(asked).chain(then).map(|e| (now, e));
        let logged = core.log.append(chat.session, events.collect()).await?;
        core.record(TranscriptEntry::new(
            chat.session.clone(),
            chat.owner.clone(),
            chat.message_id.clone(),
            Speaker::User,
            chat.content.to_owned(),
            logged[0].seq,
            now,
        ))
        .await;
        Ok(logged)
    }

    /// Where `user` stands in the current budget window; `None` when the
    /// usage store cannot say (logged).
    pub async fn quota(&self, user: &UserId) -> Option<Quota> {
        match self.core.metering.quota(user).await {
            Ok(quota) => Some(quota),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&e), "could not read a user's token usage");
                None
            }
        }
    }

    /// What answers show beside their text, and the token budget.
    pub fn answer_settings(&self) -> crate::application::AnswerSettings {
        self.core.settings.answers
    }

    /// The length of the budget window usage is counted in.
    pub fn usage_window(&self) -> BudgetWindow {
        self.core.metering.window()
    }

    /// Runs the generation as a task the core owns, stoppable locally.
    fn spawn_generation(
        &self,
        generation: Generation,
        start_seq: Seq,
        request: AiRequest,
        slot: Option<Slot>,
    ) {
        let core = &self.core;
        let session = request.session_id.clone();
        let cancel = CancellationToken::new();
        let message_id = generation.message_id().clone();
        core.track_local(session.clone(), message_id, cancel.clone());
        // Inside the span of whatever accepted the chat (the connection's,
        // with its request id), so the generation's log lines carry it too.
        let span = tracing::info_span!(
            "generation",
            session_id = %session,
            message_id = %generation.message_id()
        );
        // And in a trace, a child of whatever accepted the chat (the
        // socket's span, or the request's).
        let traced = super::traces::answer_span(
            &core.settings.ai,
            request.purpose,
            &session,
            Some(generation.message_id()),
        );
        let job = Job {
            session,
            generation,
            start_seq,
            request,
            cancel,
            slot,
            traced: traced.clone(),
        };
        let run = tracing::Instrument::instrument(generation::run(core.clone(), job), span);
        core.tasks
            .spawn(tracing::Instrument::instrument(run, traced));
    }

    /// The user's live sessions, most recently active first, each with its
    /// latest seq.
    pub async fn sessions_of(&self, user: &User) -> Result<Vec<SessionSummary>, ChatError> {
        self.core.counted(
            async {
                let sessions = self
                    .core
                    .sessions
                    .list_for_user(&user.id, SESSIONS_LISTED)
                    .await?;
                let mut out = Vec::with_capacity(sessions.len());
                for session in sessions {
                    let seq = self.core.log.head(&session.id).await?;
                    out.push(SessionSummary { session, seq });
                }
                Ok(out)
            }
            .await,
        )
    }

    /// The session's events after `after`, as a socket would replay them.
    /// Someone else's session is [`ChatError::SessionGone`], exactly like an
    /// unknown one.
    pub async fn events(
        &self,
        user: &User,
        session: &SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<LogSlice, ChatError> {
        self.core.counted(
            async {
                match self.core.sessions.get(session).await? {
                    Some(s) if s.user.id == user.id => {}
                    _ => return Err(ChatError::SessionGone),
                }
                Ok(self.core.log.read_after(session, after, limit).await?)
            }
            .await,
        )
    }

    /// Stops the session's running generation, wherever it runs; every tab
    /// sees it end as `cancelled`.
    pub async fn stop(&self, session: &SessionId) -> Result<(), StopRefusal> {
        match self.core.stop(session).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StopRefusal::NothingRunning),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the AI again for the session's last user message. The answers it
    /// had stay in the log and the transcript (marked superseded there) and
    /// leave the AI's context; the new one is a new `stream-start` replying
    /// to the same message. Refused while an answer runs, while a human holds
    /// or is awaited by the conversation, and before any user message. It
    /// costs an upstream request, so it counts against the user's chat limits.
    pub async fn regenerate(
        &self,
        session: &SessionId,
        user: &UserId,
        trace: Option<TraceContext>,
    ) -> Result<Regenerated, RegenerateRefusal> {
        let core = &self.core;
        if core.draining.is_cancelled() {
            return Err(ChatRefusal::ShuttingDown.into());
        }
        let mut permit = core
            .limits
            .chat(user, core.settings.lease)
            .await
            .map_err(ChatRefusal::RateLimited)?;
        let started = self.regenerate_once(session, trace, &mut permit).await;
        if let Err(RegenerateRefusal::Chat(ChatRefusal::Failed(e))) = &started {
            core.count_failure(e);
        }
        if started.is_err() {
            core.limits.chat_not_accepted(permit).await;
        }
        started
    }

    /// Takes the session's generation slot and answers again, releasing the
    /// slot when nothing started.
    async fn regenerate_once(
        &self,
        session: &SessionId,
        trace: Option<TraceContext>,
        permit: &mut ChatPermit,
    ) -> Result<Regenerated, RegenerateRefusal> {
        let core = &self.core;
        let answer = MessageId::generate();
        if let StartOutcome::Busy { running } = core
            .registry
            .try_start(session, &answer, core.settings.lease)
            .await?
        {
            return Err(ChatRefusal::InProgress { running }.into());
        }
        let started = self
            .answer_again(session, answer.clone(), trace, permit)
            .await;
        if started.is_err() {
            let _ = core.registry.finish(session, &answer).await;
        }
        started
    }

    /// Holding the generation slot: checks the bot may answer, forgets the
    /// last answers from the AI's context, and starts the new one.
    async fn answer_again(
        &self,
        session_id: &SessionId,
        answer: MessageId,
        trace: Option<TraceContext>,
        permit: &mut ChatPermit,
    ) -> Result<Regenerated, RegenerateRefusal> {
        let core = &self.core;
        if core.muted(session_id).await?.is_some() {
            return Err(RegenerateRefusal::NotBotMode);
        }
        let session = core
            .sessions
            .get(session_id)
            .await?
            .ok_or(ChatError::SessionGone)?;
        let question = session
            .last_question()
            .ok_or(RegenerateRefusal::NothingToRegenerate)?;
        core.sessions
            .forget_after(session_id, &question.message_id)
            .await?;
        core.supersede(session_id, &question.message_id).await;
        let (generation, start) = Generation::start(answer.clone(), question.message_id.clone());
        let logged = core
            .log
            .append(session_id, vec![(Utc::now(), start)])
            .await?;
        let seq = logged.first().map_or(0, |e| e.seq);
        let request = AiRequest {
            query: question.query,
            user_id: session.user.id,
            session_id: session.id,
            history: question.context,
            trace,
            purpose: AiPurpose::Answer,
        };
        self.spawn_generation(generation, seq, request, permit.slot.take());
        core.publish(session_id, &logged).await;
        Ok(Regenerated {
            message_id: answer,
            reply_to: question.message_id,
            seq,
        })
    }

    /// Keeps `user`'s rating of the answer `message` of their session with
    /// its transcript entry (replacing an earlier one), tells every tab with
    /// a `feedback` event, and counts it. Returns that event's seq.
    pub async fn feedback(
        &self,
        session: &SessionId,
        user: &UserId,
        message: &MessageId,
        feedback: Feedback,
    ) -> Result<Seq, FeedbackRefusal> {
        let core = &self.core;
        match core.counted(core.owner_of(session).await)? {
            Some(owner) if owner == *user => {}
            _ => return Err(FeedbackRefusal::NotYourSession),
        }
        let rated = core.transcripts.rate(session, message, &feedback).await;
        match core.counted(rated.map_err(ChatError::from))? {
            Rated::Done => {}
            Rated::NotFound => return Err(FeedbackRefusal::UnknownMessage),
            Rated::NotAnAnswer => return Err(FeedbackRefusal::NotAnAnswer),
        }
        core.stats.feedback(feedback.rating.as_str());
        let said = ConversationEvent::Feedback {
            message_id: message.clone(),
            feedback,
        };
        let logged = core.counted(core.log_and_publish(session, vec![said]).await)?;
        Ok(logged.first().map_or(0, |e| e.seq))
    }

    /// Records activity so an open but quiet connection keeps its session alive.
    pub async fn touch(&self, session: &SessionId) -> Result<(), ChatError> {
        let touched = self.core.sessions.touch(session, Utc::now()).await;
        self.core.counted(touched.map_err(ChatError::from))
    }

    /// How many sessions exist and how many are escalated.
    pub async fn session_counts(&self) -> Result<SessionCounts, ChatError> {
        let counts = self.core.sessions.counts().await;
        self.core.counted(counts.map_err(ChatError::from))
    }

    /// Whether the session store answers now (a failure is counted). For
    /// telling a client which outage refused it.
    pub async fn session_store_answers(&self) -> bool {
        self.session_counts().await.is_ok()
    }

    /// True once shutdown began: chats are refused, running answers finish.
    pub fn is_draining(&self) -> bool {
        self.core.draining.is_cancelled()
    }

    /// Resolves when every generation of this instance has ended after
    /// shutdown began, so connections can close with nothing left to say.
    ///
    /// The token's own future, not an `async fn` around it: every idle
    /// socket holds one, and a wrapper would add its own room to each.
    pub fn drained(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.core.drained.cancelled()
    }

    /// Refuses new chats, lets running generations finish for up to `grace`,
    /// and cancels the rest (each still writes its `stream-end`). The
    /// background loops have an owner of their own, which stops them.
    pub async fn drain(&self, grace: Duration) {
        let core = &self.core;
        core.draining.cancel();
        let deadline = Instant::now() + grace;
        while !core.local_is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        core.cancel_all_local();
        core.shut_down.cancel();
        core.tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), core.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = core.tasks.len(),
                "some generations did not end in time"
            );
        }
        core.drained.cancel();
    }
}

/// A user's chat as [`ChatService::keep_chat`] keeps it.
struct UserChat<'a> {
    session: &'a SessionId,
    /// Whose conversation it is, for the transcript.
    owner: &'a UserId,
    message_id: &'a MessageId,
    client_message_id: Option<ClientMessageId>,
    content: &'a str,
}

#[cfg(test)]
mod tests {
    //! The policy of the chat use cases, against mocked ports.

    use super::*;
    use crate::adapters::outbound::log_then_publish::LogThenPublish;
    use crate::application::conversation::{ChatPorts, ConversationSettings, HandoffSettings};
    use crate::application::limits::Limits;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        AcceptedClientMessage, AiError, EventLog, LiveDelivery, MockAgentPresence, MockAiModel,
        MockEventLog, MockGenerationRegistry, MockHandoffStore, MockLiveDelivery, MockSessionStore,
        MockStats, MockTranscriptStore, MockUserRepository, TokenStream, TranscriptStoreError,
    };
    use crate::domain::answer::AnswerDelta;
    use crate::domain::conversation::GenerationFailure;
    use crate::domain::fixtures;
    use crate::domain::StreamStatus;
    use chrono::DateTime;
    use std::sync::Mutex as StdMutex;

    /// Stats that take what these tests do not look at (generation
    /// reports, store failures) without complaint.
    fn quiet_stats() -> MockStats {
        let mut stats = MockStats::new();
        stats.expect_generation_ended().returning(|_| ());
        stats.expect_tokens().returning(|_, _, _| ());
        stats.expect_store_error().returning(|_| ());
        stats.expect_handoff_queue_length().returning(|_| ());
        stats
    }

    /// A registry whose background calls (stop listening, reaping) are quiet.
    fn registry() -> MockGenerationRegistry {
        let mut r = MockGenerationRegistry::new();
        r.expect_stop_requests()
            .returning(|| Box::pin(futures_util::stream::pending()));
        r.expect_reap_expired().returning(|| Ok(Vec::new()));
        r
    }

    struct Mocks {
        sessions: MockSessionStore,
        ai: MockAiModel,
        stats: MockStats,
        log: MockEventLog,
        live: MockLiveDelivery,
        registry: MockGenerationRegistry,
        transcripts: MockTranscriptStore,
        handoffs: MockHandoffStore,
        usage: Option<crate::application::ports::MockUsageStore>,
        answers: crate::application::AnswerSettings,
    }

    /// A transcript store that keeps whatever it is given.
    fn keeping(kept: Arc<StdMutex<Vec<TranscriptEntry>>>) -> MockTranscriptStore {
        let mut t = MockTranscriptStore::new();
        t.expect_append().returning(move |e| {
            kept.lock().unwrap().push(e.clone());
            Ok(())
        });
        t
    }

    /// No conversation is ever handed off: the bot answers everything.
    fn bot_only() -> MockHandoffStore {
        let mut handoffs = MockHandoffStore::new();
        handoffs.expect_get().returning(|_| Ok(None));
        handoffs.expect_active().returning(|_| Ok(Vec::new()));
        handoffs
    }

    impl Mocks {
        fn new() -> Self {
            Self {
                sessions: MockSessionStore::new(),
                ai: MockAiModel::new(),
                stats: quiet_stats(),
                log: MockEventLog::new(),
                live: MockLiveDelivery::new(),
                registry: registry(),
                transcripts: keeping(Arc::default()),
                handoffs: bot_only(),
                usage: None,
                answers: crate::application::AnswerSettings::default(),
            }
        }

        fn service(self) -> ChatService {
            self.service_with(Limits::off())
        }

        fn service_with(mut self, limits: Limits) -> ChatService {
            let log = std::mem::take(&mut self.log);
            self.build(Arc::new(log), limits)
        }

        /// The service on these mocks, with a log of the test's own.
        fn service_with_log(self, log: Arc<dyn EventLog>) -> ChatService {
            self.build(log, Limits::off())
        }

        fn build(self, log: Arc<dyn EventLog>, limits: Limits) -> ChatService {
            let live: Arc<dyn LiveDelivery> = Arc::new(self.live);
            let ports = ChatPorts {
                sessions: Arc::new(self.sessions),
                ai: Arc::new(self.ai),
                stats: Arc::new(self.stats),
                backplane: Arc::new(LogThenPublish::new(log.clone(), live.clone())),
                log,
                live,
                handoffs: Arc::new(self.handoffs),
                presence: Arc::new(MockAgentPresence::new()),
                signals: Arc::new(
                    crate::adapters::outbound::local_signals::LocalSignals::default(),
                ),
                registry: Arc::new(self.registry),
                transcripts: Arc::new(self.transcripts),
                users: Arc::new(MockUserRepository::new()),
                usage: match self.usage {
                    Some(usage) => Arc::new(usage),
                    None => Arc::new(
                        crate::adapters::outbound::memory_usage::InMemoryUsageStore::default(),
                    ),
                },
                token_counter: Arc::new(crate::adapters::outbound::o200k::O200kCounter),
            };
            let settings = ConversationSettings {
                session_ttl: Duration::from_secs(3600),
                lease: Duration::from_secs(10),
                unattended_timeout: Duration::from_secs(60),
                handoff: HandoffSettings::default(),
                answers: self.answers,
                ai: crate::application::AiLabels::default(),
            };
            ChatService::new(Arc::new(ConversationCore::new(ports, settings, limits)))
        }
    }

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn chat(client_id: Option<&str>) -> ChatRequest {
        ChatRequest {
            content: ChatContent::parse("hello", 100).unwrap(),
            client_message_id: client_id.map(|c| ClientMessageId::parse(c).unwrap()),
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_second_chat_while_one_runs_is_refused_with_the_running_id() {
        let mut m = Mocks::new();
        let running = MessageId::generate();
        let busy = running.clone();
        m.registry.expect_try_start().returning(move |_, _, _| {
            Ok(StartOutcome::Busy {
                running: busy.clone(),
            })
        });
        m.log.expect_append().never();
        let refused = m
            .service()
            .submit(&SessionId::generate(), &user(), chat(None))
            .await;
        assert!(
            matches!(&refused, Err(ChatRefusal::InProgress { running: r }) if *r == running),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_known_client_message_id_is_acknowledged_again_and_starts_nothing() {
        let mut m = Mocks::new();
        let earlier = MessageId::generate();
        let known = earlier.clone();
        m.log
            .expect_accepted_client_message()
            .returning(move |_, _| {
                Ok(Some(AcceptedClientMessage {
                    message_id: known.clone(),
                    seq: 7,
                }))
            });
        m.registry.expect_try_start().never();
        m.log.expect_append().never();
        let accepted = m
            .service()
            .submit(&SessionId::generate(), &user(), chat(Some("c1")))
            .await
            .unwrap();
        assert_eq!(
            accepted,
            Accepted {
                message_id: earlier,
                seq: 7,
                duplicate: true
            }
        );
    }

    #[tokio::test]
    async fn a_chat_for_a_vanished_session_fails_and_releases_the_slot() {
        let mut m = Mocks::new();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        m.sessions.expect_get().returning(|_| Ok(None));
        m.ai.expect_stream().never();
        let refused = m
            .service()
            .submit(&SessionId::generate(), &user(), chat(None))
            .await;
        assert!(
            matches!(refused, Err(ChatRefusal::Failed(ChatError::SessionGone))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_chat_over_the_rate_is_refused_before_anything_is_stored() {
        use crate::application::limits::{LimitSettings, Rule};
        use crate::application::ports::{Admission, MockRateLimiter};
        let mut m = Mocks::new();
        m.registry.expect_try_start().never();
        m.sessions.expect_append().never();
        m.log.expect_append().never();
        m.stats.expect_message_received().never();
        let mut limiter = MockRateLimiter::new();
        limiter.expect_admit().returning(|_| {
            Ok(Admission::Refused {
                retry_after: Duration::from_millis(1500),
            })
        });
        let limits = Limits::new(
            Arc::new(limiter),
            LimitSettings {
                chats_per_user: Some(Rule {
                    max: 20,
                    window: Duration::from_secs(60),
                }),
                ..LimitSettings::default()
            },
        );
        let service = m.service_with(limits);
        let refused = service
            .submit(&SessionId::generate(), &user(), chat(None))
            .await;
        assert!(
            matches!(refused, Err(ChatRefusal::RateLimited(l)) if l.retry_after.as_millis() == 1500),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_chat_over_the_token_budget_is_refused_before_the_ai_is_asked() {
        use crate::domain::budget::{BudgetWindow, TokenBudget};
        let mut m = Mocks::new();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        m.sessions
            .expect_get()
            .returning(|id| Ok(Some(fixtures::session(id))));
        m.ai.expect_stream().never();
        m.log.expect_append().never();
        m.stats.expect_budget_exhausted().times(1).return_const(());
        let mut usage = crate::application::ports::MockUsageStore::new();
        usage.expect_used().returning(|_, _| Ok(1_000));
        usage.expect_add().never();
        m.usage = Some(usage);
        m.answers.budget = TokenBudget {
            limit: Some(1_000),
            window: BudgetWindow::parse(Duration::from_secs(86_400)).unwrap(),
        };
        let refused = m
            .service()
            .submit(&SessionId::generate(), &user(), chat(None))
            .await;
        let Err(ChatRefusal::BudgetExhausted { resets_at }) = refused else {
            panic!("{refused:?}");
        };
        let now = Utc::now();
        assert!(
            resets_at > now && resets_at <= now + chrono::Duration::days(1),
            "the window's end, within a day: {resets_at}"
        );
    }

    #[tokio::test]
    async fn draining_refuses_chats() {
        let m = Mocks::new();
        let service = m.service();
        service.drain(Duration::from_millis(10)).await;
        assert!(service.is_draining());
        let refused = service
            .submit(&SessionId::generate(), &user(), chat(None))
            .await;
        assert!(
            matches!(refused, Err(ChatRefusal::ShuttingDown)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn stop_with_nothing_running_anywhere_says_so() {
        let mut m = Mocks::new();
        m.registry.expect_request_stop().returning(|_| Ok(None));
        let refused = m.service().stop(&SessionId::generate()).await;
        assert!(
            matches!(refused, Err(StopRefusal::NothingRunning)),
            "{refused:?}"
        );
    }

    /// Mocks for one chat answered with `tokens`: a session that exists, a
    /// log that numbers what it is given, and a quiet registry and delivery.
    fn answering(tokens: &'static [&'static str]) -> (Mocks, Session) {
        let mut m = Mocks::new();
        let session = fixtures::session(&SessionId::generate());
        let stored = session.clone();
        m.sessions
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        m.sessions.expect_append().returning(|_, _| Ok(()));
        m.stats.expect_message_received().returning(|| ());
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().returning(|_, _| Ok(()));
        m.registry.expect_renew().returning(|_, _, _| Ok(true));
        m.live.expect_watchers().returning(|_| Ok(1));
        m.live.expect_publish().returning(|_, _| Ok(()));
        let head = Arc::new(StdMutex::new(0));
        m.log.expect_append().returning(move |_, events| {
            let mut head = head.lock().unwrap();
            Ok(events
                .into_iter()
                .map(|(at, event)| {
                    *head += 1;
                    Arc::new(crate::domain::conversation::LoggedEvent {
                        seq: *head,
                        at,
                        event,
                    })
                })
                .collect())
        });
        m.ai.expect_stream().returning(move |_| {
            let items = tokens
                .iter()
                .map(|t| Ok(AnswerDelta::Text((*t).to_owned())))
                .collect::<Vec<_>>();
            let stream: TokenStream = Box::pin(futures_util::stream::iter(items));
            Ok(stream)
        });
        (m, session)
    }

    /// An event log that takes a while to answer, as Redis does under load,
    /// and remembers how many events each append carried.
    struct SlowLog {
        log: crate::adapters::outbound::memory_conversations::InMemoryEventLog,
        batches: Arc<StdMutex<Vec<Vec<ConversationEvent>>>>,
    }

    #[async_trait::async_trait]
    impl EventLog for SlowLog {
        async fn append(
            &self,
            session: &SessionId,
            events: Vec<(DateTime<Utc>, ConversationEvent)>,
        ) -> Result<Vec<SharedEvent>, ConversationStoreError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let batch = events.iter().map(|(_, e)| e.clone()).collect();
            self.batches.lock().unwrap().push(batch);
            self.log.append(session, events).await
        }
        async fn read_after(
            &self,
            session: &SessionId,
            after: Seq,
            limit: usize,
        ) -> Result<LogSlice, ConversationStoreError> {
            self.log.read_after(session, after, limit).await
        }
        async fn head(&self, session: &SessionId) -> Result<Seq, ConversationStoreError> {
            self.log.head(session).await
        }
        async fn accepted_client_message(
            &self,
            session: &SessionId,
            id: &ClientMessageId,
        ) -> Result<Option<crate::application::ports::AcceptedClientMessage>, ConversationStoreError>
        {
            self.log.accepted_client_message(session, id).await
        }
        async fn erase(&self, session: &SessionId) -> Result<(), ConversationStoreError> {
            self.log.erase(session).await
        }
    }

    /// Tokens that arrive while a batch is on its way to a slow store leave
    /// together when it lands: one round trip per batch, not per token,
    /// each token logged once and in order; the first leaves at once.
    #[tokio::test(start_paused = true)]
    async fn tokens_ready_together_go_to_the_log_in_one_append() {
        const WORDS: &[&str] = &["one ", "two ", "three ", "four ", "five ", "six ", "seven "];
        let (m, session) = answering(WORDS);
        let batches = Arc::new(StdMutex::new(Vec::new()));
        let slow = SlowLog {
            log: crate::adapters::outbound::memory_conversations::InMemoryEventLog::new(
                1000,
                Duration::from_secs(600),
            ),
            batches: batches.clone(),
        };
        let service = m.service_with_log(Arc::new(slow));
        service
            .submit(&session.id, &user(), chat(None))
            .await
            .unwrap();
        service.drain(Duration::from_secs(5)).await;
        let batches = batches.lock().unwrap().clone();
        let token_batches: Vec<Vec<String>> = batches
            .iter()
            .map(|b| {
                b.iter()
                    .filter_map(|e| match e {
                        ConversationEvent::StreamToken { token, .. } => Some(token.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|b| !b.is_empty())
            .collect();
        assert_eq!(
            token_batches,
            vec![
                vec!["one ".to_owned()],
                WORDS[1..].iter().map(|w| (*w).to_owned()).collect()
            ],
            "the first token at once, the rest together: {batches:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_transcript_store_costs_only_its_entries() {
        let (mut m, session) = answering(&["still", " answered"]);
        let mut transcripts = MockTranscriptStore::new();
        transcripts
            .expect_append()
            .times(2)
            .returning(|_| Err(TranscriptStoreError::from(StoreFailure::bare("disk full"))));
        m.transcripts = transcripts;
        let failures = Arc::new(StdMutex::new(Vec::new()));
        let counted = failures.clone();
        m.stats = MockStats::new();
        m.stats.expect_message_received().returning(|| ());
        m.stats.expect_generation_ended().returning(|_| ());
        m.stats.expect_tokens().returning(|_, _, _| ());
        m.stats
            .expect_store_error()
            .returning(move |s| counted.lock().unwrap().push(s));
        let service = m.service();
        let accepted = service
            .submit(&session.id, &user(), chat(None))
            .await
            .expect("the chat is accepted all the same");
        assert!(!accepted.duplicate);
        service.drain(Duration::from_secs(2)).await;
        assert_eq!(
            *failures.lock().unwrap(),
            vec!["transcripts", "transcripts"],
            "the chat's entry and the answer's, each counted"
        );
    }

    /// A log that takes the chat, then refuses everything while `down`,
    /// keeping what it took.
    fn log_going_down(
        down: Arc<std::sync::atomic::AtomicBool>,
        kept: Arc<StdMutex<Vec<ConversationEvent>>>,
    ) -> MockEventLog {
        use std::sync::atomic::Ordering;
        let mut log = MockEventLog::new();
        log.expect_append().returning(move |_, events| {
            let mut all = kept.lock().unwrap();
            if !all.is_empty() && down.load(Ordering::SeqCst) {
                return Err(ConversationStoreError::from(StoreFailure::bare(
                    "connection refused",
                )));
            }
            let first = all.len() as Seq + 1;
            Ok(events
                .into_iter()
                .enumerate()
                .map(|(i, (at, event))| {
                    all.push(event.clone());
                    Arc::new(crate::domain::conversation::LoggedEvent {
                        seq: first + i as Seq,
                        at,
                        event,
                    })
                })
                .collect())
        });
        log
    }

    #[tokio::test]
    async fn an_end_the_store_refused_is_logged_once_it_is_back() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (mut m, session) = answering(&["lost"]);
        let down = Arc::new(AtomicBool::new(true));
        let kept = Arc::new(StdMutex::new(Vec::new()));
        m.log = log_going_down(down.clone(), kept.clone());
        m.registry = registry();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        // The store answers again, and the lease is still this answer's.
        m.registry.expect_renew().returning(move |_, _, _| {
            down.store(false, Ordering::SeqCst);
            Ok(true)
        });
        let service = m.service();
        service
            .submit(&session.id, &user(), chat(None))
            .await
            .unwrap();
        service.drain(Duration::from_secs(5)).await;
        let kept = kept.lock().unwrap().clone();
        assert!(
            matches!(
                &kept[2..],
                [
                    ConversationEvent::GenerationFailed {
                        failure: GenerationFailure::SessionStoreUnavailable,
                        ..
                    },
                    ConversationEvent::StreamEnd {
                        status: StreamStatus::Failed,
                        ..
                    }
                ]
            ),
            "the chat, its start, then the end the tabs were told of: {kept:?}"
        );
    }

    #[tokio::test]
    async fn an_end_is_left_alone_once_the_lease_is_no_longer_its_own() {
        use std::sync::atomic::AtomicBool;
        let (mut m, session) = answering(&["lost"]);
        let kept = Arc::new(StdMutex::new(Vec::new()));
        m.log = log_going_down(Arc::new(AtomicBool::new(true)), kept.clone());
        m.registry = registry();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        // The store came back empty, or another instance ended it.
        let renewals = Arc::new(StdMutex::new(0));
        let counted = renewals.clone();
        m.registry.expect_renew().returning(move |_, _, _| {
            *counted.lock().unwrap() += 1;
            Ok(false)
        });
        let service = m.service();
        service
            .submit(&session.id, &user(), chat(None))
            .await
            .unwrap();
        // Drain waits for the answer to end: at once, or only when cut short.
        service.drain(Duration::from_secs(5)).await;
        assert_eq!(kept.lock().unwrap().len(), 2, "nothing after the chat");
        assert_eq!(
            *renewals.lock().unwrap(),
            1,
            "no try after the lease was lost"
        );
    }

    #[tokio::test]
    async fn a_failing_answer_keeps_what_was_delivered_in_the_transcript() {
        let (mut m, session) = answering(&[]);
        m.ai.checkpoint();
        m.ai.expect_stream().returning(|_| {
            let items: Vec<Result<AnswerDelta, AiError>> = vec![
                Ok(AnswerDelta::Text("half an ".into())),
                Err(AiError::Unavailable("reset".into())),
            ];
            let stream: TokenStream = Box::pin(futures_util::stream::iter(items));
            Ok(stream)
        });
        let recorded = Arc::new(StdMutex::new(Vec::new()));
        m.transcripts = keeping(recorded.clone());
        let service = m.service();
        service
            .submit(&session.id, &user(), chat(None))
            .await
            .unwrap();
        service.drain(Duration::from_secs(2)).await;
        let recorded = recorded.lock().unwrap().clone();
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert_eq!(
            recorded[1].speaker,
            Speaker::Assistant {
                ending: StreamStatus::Failed
            }
        );
        assert_eq!(recorded[1].content, "half an ");
    }

    #[tokio::test]
    async fn a_completed_answer_is_logged_in_order_and_stored() {
        let mut m = Mocks::new();
        let session = fixtures::session(&SessionId::generate());
        let stored = session.clone();
        m.sessions
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        let history = Arc::new(StdMutex::new(Vec::new()));
        let kept = history.clone();
        m.sessions.expect_append().returning(move |_, msg| {
            kept.lock().unwrap().push((msg.role, msg.content));
            Ok(())
        });
        // Its own stats, to see the generation's report.
        m.stats = MockStats::new();
        m.stats.expect_message_received().times(1).returning(|| ());
        let reports = Arc::new(StdMutex::new(Vec::new()));
        let reported = reports.clone();
        m.stats
            .expect_generation_ended()
            .returning(move |r| reported.lock().unwrap().push(*r));
        m.stats.expect_tokens().returning(|_, _, _| ());
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        let finished = Arc::new(StdMutex::new(0));
        let count = finished.clone();
        m.registry.expect_finish().returning(move |_, _| {
            *count.lock().unwrap() += 1;
            Ok(())
        });
        m.registry.expect_renew().returning(|_, _, _| Ok(true));
        m.live.expect_watchers().returning(|_| Ok(1));
        m.live.expect_publish().returning(|_, _| Ok(()));
        let logged = Arc::new(StdMutex::new(Vec::<ConversationEvent>::new()));
        let log = logged.clone();
        m.log.expect_append().returning(move |_, events| {
            let mut all = log.lock().unwrap();
            let first = all.len() as Seq + 1;
            let out = events
                .into_iter()
                .enumerate()
                .map(|(i, (at, event))| {
                    all.push(event.clone());
                    Arc::new(crate::domain::conversation::LoggedEvent {
                        seq: first + i as Seq,
                        at,
                        event,
                    })
                })
                .collect();
            Ok(out)
        });
        m.ai.expect_stream().times(1).returning(|_| {
            let tokens: TokenStream = Box::pin(futures_util::stream::iter(vec![
                Ok(AnswerDelta::Text("fine".into())),
                Ok(AnswerDelta::Text(", thanks".into())),
            ]));
            Ok(tokens)
        });
        let recorded = Arc::new(StdMutex::new(Vec::new()));
        m.transcripts = keeping(recorded.clone());
        let service = m.service();
        let accepted = service
            .submit(&session.id, &user(), chat(None))
            .await
            .unwrap();
        assert_eq!((accepted.seq, accepted.duplicate), (1, false));
        service.drain(Duration::from_secs(2)).await;

        let events = logged.lock().unwrap().clone();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                ConversationEvent::UserMessage { .. } => "user",
                ConversationEvent::StreamStart { .. } => "start",
                ConversationEvent::StreamToken { .. } => "token",
                ConversationEvent::StreamEnd {
                    status: StreamStatus::Completed,
                    ..
                } => "end",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["user", "start", "token", "token", "end"]);
        assert_eq!(
            *history.lock().unwrap(),
            vec![
                (Role::User, "hello".to_owned()),
                (Role::Assistant, "fine, thanks".to_owned())
            ]
        );
        let recorded = recorded.lock().unwrap().clone();
        let said: Vec<_> = recorded
            .iter()
            .map(|e| (e.speaker.clone(), e.content.as_str(), e.seq))
            .collect();
        assert_eq!(
            said,
            vec![
                (Speaker::User, "hello", 1),
                (
                    Speaker::Assistant {
                        ending: StreamStatus::Completed
                    },
                    "fine, thanks",
                    2
                )
            ],
            "the transcript holds the chat and the answer at its stream-start"
        );
        assert!(recorded.iter().all(|e| e.session == session.id));
        assert_eq!(*finished.lock().unwrap(), 1, "the slot is released once");
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 1, "one report per generation");
        assert_eq!(reports[0].outcome, "completed");
        assert_eq!(reports[0].tokens, 2);
        assert!(reports[0].first_token.is_some());
        assert!(reports[0].first_token.unwrap() <= reports[0].duration);
    }

    fn said(role: Role, content: &str, id: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            timestamp: Utc::now(),
            message_id: Some(MessageId::parse(id).unwrap()),
        }
    }

    /// A session whose history holds two questions and their answers.
    fn asked_twice() -> Session {
        let mut session = fixtures::session(&SessionId::generate());
        session.history = vec![
            said(Role::User, "q1", "msg_q1"),
            said(Role::Assistant, "a1", "msg_a1"),
            said(Role::User, "q2", "msg_q2"),
            said(Role::Assistant, "a2", "msg_a2"),
        ];
        session
    }

    #[tokio::test]
    async fn regenerate_asks_the_last_question_again_without_its_old_answer() {
        let (mut m, _) = answering(&["again"]);
        let session = asked_twice();
        let stored = session.clone();
        m.sessions.checkpoint();
        m.sessions
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        m.sessions.expect_append().returning(|_, _| Ok(()));
        m.sessions
            .expect_forget_after()
            .withf(|_, asked| asked.as_str() == "msg_q2")
            .times(1)
            .returning(|_, _| Ok(true));
        let mut transcripts = keeping(Arc::default());
        transcripts
            .expect_supersede_after()
            .withf(|_, asked| asked.as_str() == "msg_q2")
            .times(1)
            .returning(|_, _| Ok(1));
        m.transcripts = transcripts;
        let asked = Arc::new(StdMutex::new(Vec::new()));
        let seen = asked.clone();
        m.ai.checkpoint();
        m.ai.expect_stream().times(1).returning(move |request| {
            seen.lock().unwrap().push(request);
            let stream: TokenStream = Box::pin(futures_util::stream::iter(vec![Ok(
                AnswerDelta::Text("again".to_owned()),
            )]));
            Ok(stream)
        });
        let service = m.service();
        let again = service
            .regenerate(&session.id, &user(), None)
            .await
            .unwrap();
        service.drain(Duration::from_secs(2)).await;
        assert_eq!(again.reply_to.as_str(), "msg_q2");
        assert_eq!(again.seq, 1, "its stream-start is the only new event");
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked[0].query, "q2");
        let context: Vec<_> = asked[0]
            .history
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(
            context,
            ["q1", "a1"],
            "the superseded answer left the context"
        );
    }

    #[tokio::test]
    async fn regenerate_in_handoff_is_refused_before_anything_changes() {
        let mut m = Mocks::new();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        let session = asked_twice();
        let customer = session.user.clone();
        let id = session.id.clone();
        m.handoffs = MockHandoffStore::new();
        m.handoffs.expect_get().returning(move |_| {
            let queued = Handoff::escalate(None, id.clone(), customer.clone(), 0, Utc::now());
            Ok(queued.and_then(|t| t.next))
        });
        m.sessions.expect_forget_after().never();
        m.log.expect_append().never();
        m.ai.expect_stream().never();
        let refused = m.service().regenerate(&session.id, &user(), None).await;
        assert!(
            matches!(refused, Err(RegenerateRefusal::NotBotMode)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn regenerate_before_any_question_or_while_one_runs_is_refused() {
        let mut m = Mocks::new();
        m.registry
            .expect_try_start()
            .returning(|_, _, _| Ok(StartOutcome::Started));
        m.registry.expect_finish().times(1).returning(|_, _| Ok(()));
        m.sessions
            .expect_get()
            .returning(|id| Ok(Some(fixtures::session(id))));
        m.sessions.expect_forget_after().never();
        m.log.expect_append().never();
        let refused = m
            .service()
            .regenerate(&SessionId::generate(), &user(), None)
            .await;
        assert!(
            matches!(refused, Err(RegenerateRefusal::NothingToRegenerate)),
            "{refused:?}"
        );

        let mut m = Mocks::new();
        let running = MessageId::generate();
        let busy = running.clone();
        m.registry.expect_try_start().returning(move |_, _, _| {
            Ok(StartOutcome::Busy {
                running: busy.clone(),
            })
        });
        m.sessions.expect_get().never();
        let refused = m
            .service()
            .regenerate(&SessionId::generate(), &user(), None)
            .await;
        assert!(
            matches!(&refused, Err(RegenerateRefusal::Chat(ChatRefusal::InProgress { running: r })) if *r == running),
            "{refused:?}"
        );
    }

    /// Mocks for feedback on `session`, whose rating comes to `rated`.
    fn rating(rated: Rated) -> (Mocks, Session) {
        let mut m = Mocks::new();
        let session = fixtures::session(&SessionId::generate());
        let stored = session.clone();
        m.sessions
            .expect_get()
            .returning(move |_| Ok(Some(stored.clone())));
        m.transcripts
            .expect_rate()
            .times(1)
            .returning(move |_, _, _| Ok(rated));
        (m, session)
    }

    fn down() -> Feedback {
        Feedback::parse("down", Some("wrong")).unwrap()
    }

    #[tokio::test]
    async fn feedback_is_kept_logged_for_every_tab_and_counted() {
        let (mut m, session) = rating(Rated::Done);
        m.stats
            .expect_feedback()
            .withf(|r| r == "down")
            .times(1)
            .returning(|_| ());
        let logged = Arc::new(StdMutex::new(Vec::new()));
        let kept = logged.clone();
        m.log.expect_append().times(1).returning(move |_, events| {
            kept.lock()
                .unwrap()
                .extend(events.iter().map(|(_, e)| e.clone()));
            Ok(events
                .into_iter()
                .map(|(at, event)| {
                    Arc::new(crate::domain::conversation::LoggedEvent { seq: 9, at, event })
                })
                .collect())
        });
        m.live.expect_publish().times(1).returning(|_, _| Ok(()));
        let answer = MessageId::generate();
        let seq = m
            .service()
            .feedback(&session.id, &user(), &answer, down())
            .await
            .unwrap();
        assert_eq!(seq, 9);
        assert_eq!(
            *logged.lock().unwrap(),
            vec![ConversationEvent::Feedback {
                message_id: answer,
                feedback: down()
            }]
        );
    }

    #[tokio::test]
    async fn feedback_on_what_is_not_an_answer_of_ones_own_session_is_refused() {
        for (rated, want) in [
            (Rated::NotFound, "unknown"),
            (Rated::NotAnAnswer, "not an answer"),
        ] {
            let (mut m, session) = rating(rated);
            m.log.expect_append().never();
            m.stats.expect_feedback().never();
            let refused = m
                .service()
                .feedback(&session.id, &user(), &MessageId::generate(), down())
                .await;
            let got = match refused {
                Err(FeedbackRefusal::UnknownMessage) => "unknown",
                Err(FeedbackRefusal::NotAnAnswer) => "not an answer",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want);
        }
        let mut m = Mocks::new();
        m.sessions
            .expect_get()
            .returning(|id| Ok(Some(fixtures::session(id))));
        m.transcripts.expect_rate().never();
        let someone_else = UserId::parse("u2").unwrap();
        let refused = m
            .service()
            .feedback(
                &SessionId::generate(),
                &someone_else,
                &MessageId::generate(),
                down(),
            )
            .await;
        assert!(
            matches!(refused, Err(FeedbackRefusal::NotYourSession)),
            "{refused:?}"
        );
    }
}
