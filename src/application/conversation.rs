//! The conversation core: the state and ports every conversation use case
//! shares (chat, generation, handoff, transcripts), its settings, and the
//! errors they report. The use cases build on this module; it builds on none
//! of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::agent_accounts::AgentAccounts;
use super::limits::Limits;
use super::metering::{AnswerSettings, Metering};
use super::ports::{
    AgentPresence, AiError, AiModel, Backplane, ConversationStoreError, EventLog,
    GenerationRegistry, HandoffStore, LiveDelivery, SessionStore, SessionStoreError, SharedEvent,
    SignalBus, Stats, StoreFailure, Swap, TokenCounter, TranscriptStore, TranscriptStoreError,
    UsageStore, UserRepository,
};
use crate::domain::conversation::ConversationEvent;
use crate::domain::handoff::{
    AssignMode, Handoff, HandoffError, HandoffSwitch, Mode, Transition, WhenNoAgentOnline,
    DEFAULT_CLOSED_MESSAGE, DEFAULT_OFFLINE_MESSAGE,
};
use crate::domain::office_hours::OfficeHours;
use crate::domain::transcript::TranscriptEntry;
use crate::domain::{MessageId, SessionId, UserId};
use crate::error_chain::ErrorChain;

/// Most conversations the queue, an agent's list or a timer pass looks at.
pub const HANDOFF_LISTED: usize = 500;

/// How long a recording may take before the chat goes on without it: a
/// store that hangs must not hold up the answers.
const RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-set attempts before a change gives up as a store failure: each
/// conflict means someone else's change landed, so a few always suffice.
const SWAP_ATTEMPTS: usize = 8;

/// Why a conversation use case failed. Whoever handles it logs it (with
/// [`crate::error_chain::ErrorChain`] for the store's own cause).
#[derive(Debug, Error)]
pub enum ChatError {
    #[error(transparent)]
    Ai(#[from] AiError),
    /// The session expired or vanished from the store mid-conversation.
    #[error("session not found")]
    SessionGone,
    /// The session store failed.
    #[error("session store failed")]
    SessionStore(#[source] SessionStoreError),
    /// The event log, live delivery or generation registry failed.
    #[error("conversation store failed")]
    Conversation(#[from] ConversationStoreError),
    /// The transcript store failed (reading or erasing; a failed recording
    /// is only logged).
    #[error("transcript store failed")]
    Transcripts(#[from] TranscriptStoreError),
}

impl From<SessionStoreError> for ChatError {
    fn from(e: SessionStoreError) -> Self {
        match e {
            SessionStoreError::NotFound => ChatError::SessionGone,
            other => ChatError::SessionStore(other),
        }
    }
}

/// Why a change of a conversation's handoff was refused.
#[derive(Debug, Error)]
pub enum HandoffRefusal {
    /// The transition is not allowed from the conversation's mode.
    #[error(transparent)]
    Rule(#[from] HandoffError),
    /// No such session (or, for a customer, someone else's).
    #[error("session not found")]
    SessionGone,
    #[error(transparent)]
    Failed(#[from] ChatError),
}

impl From<ConversationStoreError> for HandoffRefusal {
    fn from(e: ConversationStoreError) -> Self {
        HandoffRefusal::Failed(e.into())
    }
}

impl HandoffRefusal {
    /// The refusal of a change that has no refusals of its own (escalating,
    /// forgetting): a conflict storm there is a store fault.
    pub(super) fn into_chat_error(self) -> ChatError {
        match self {
            HandoffRefusal::Failed(e) => e,
            HandoffRefusal::SessionGone => ChatError::SessionGone,
            HandoffRefusal::Rule(e) => ChatError::Conversation(ConversationStoreError::from(
                StoreFailure::bare(format!("handoff change refused: {e}")),
            )),
        }
    }
}

/// Whether handoff is in use, and its timings.
#[derive(Debug, Clone)]
pub struct HandoffSettings {
    /// Whether a request for a human can reach the queue (`HANDOFF`).
    pub switch: HandoffSwitch,
    /// What a request does when agents exist but none is online.
    pub when_no_agent_online: WhenNoAgentOnline,
    /// The `human-escalation-response` then.
    pub offline_message: String,
    /// A queued conversation nobody claims goes back to the bot after this.
    pub queue_timeout: Duration,
    /// An assigned conversation whose agent has had no socket open this
    /// long goes back to the queue.
    pub away_grace: Duration,
    /// Conversations one agent may hold at once (`AGENT_MAX_CONVERSATIONS`).
    pub max_conversations: usize,
    /// Whether agents claim or the server assigns (`HANDOFF_ASSIGN`).
    pub assign: AssignMode,
    /// When people answer (`HANDOFF_HOURS`); `None`: always.
    pub hours: Option<OfficeHours>,
    /// The `human-escalation-response` outside those hours.
    pub closed_message: String,
    /// How the agent taking a conversation gets its summary; `None`: no
    /// summary (`HANDOFF_SUMMARY=false`, and the default here, so a test
    /// asks for one when it wants one).
    pub summary: Option<SummarySettings>,
}

impl HandoffSettings {
    /// When the desk opens again, if it is closed at `now`.
    pub fn closed_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let hours = self.hours.as_ref()?;
        if hours.is_open(now) {
            return None;
        }
        hours.next_opening(now)
    }
}

/// How an agent's summary is asked for (`HANDOFF_SUMMARY`,
/// `HANDOFF_SUMMARY_PROMPT`).
#[derive(Debug, Clone)]
pub struct SummarySettings {
    /// What the AI is asked after the conversation so far.
    pub prompt: String,
    /// The longest the whole request may take: the AI's own first-token
    /// and idle timeouts end a stuck stream sooner.
    pub timeout: Duration,
}

impl Default for HandoffSettings {
    fn default() -> Self {
        Self {
            switch: HandoffSwitch::Auto,
            when_no_agent_online: WhenNoAgentOnline::Bot,
            offline_message: DEFAULT_OFFLINE_MESSAGE.to_owned(),
            queue_timeout: Duration::from_secs(600),
            away_grace: Duration::from_secs(120),
            max_conversations: 5,
            assign: AssignMode::Manual,
            hours: None,
            closed_message: DEFAULT_CLOSED_MESSAGE.to_owned(),
            summary: None,
        }
    }
}

/// Timings of the conversation rules.
#[derive(Debug, Clone)]
pub struct ConversationSettings {
    /// How long an untouched session lives in the store.
    pub session_ttl: Duration,
    /// How long a generation's owner holds it without renewing; another
    /// instance ends it within twice this after the owner dies.
    pub lease: Duration,
    /// A generation nobody has watched for this long is cancelled.
    pub unattended_timeout: Duration,
    /// Human handoff timings.
    pub handoff: HandoffSettings,
    /// What answers show of reasoning and tools, and the token budget.
    pub answers: AnswerSettings,
    /// What traces say the answers come from.
    pub ai: super::AiLabels,
}

/// The ports the conversation use cases run on.
pub struct ChatPorts {
    pub sessions: Arc<dyn SessionStore>,
    pub ai: Arc<dyn AiModel>,
    pub stats: Arc<dyn Stats>,
    pub log: Arc<dyn EventLog>,
    pub live: Arc<dyn LiveDelivery>,
    /// The log and live delivery written as one step (an answer's tokens,
    /// handoff events): one round trip per batch where the store allows.
    pub backplane: Arc<dyn Backplane>,
    pub registry: Arc<dyn GenerationRegistry>,
    /// Queued and assigned conversations (human handoff).
    pub handoffs: Arc<dyn HandoffStore>,
    /// Which agents have a socket open.
    pub presence: Arc<dyn AgentPresence>,
    /// Live-only messages: typing, an agent's summary.
    pub signals: Arc<dyn SignalBus>,
    /// Every message of every conversation, kept beyond the history and the log.
    pub transcripts: Arc<dyn TranscriptStore>,
    /// The user store: whether agent accounts exist (`HANDOFF=auto`), and
    /// whether who holds a conversation still is an active agent (one who no
    /// longer is gives it back to the queue).
    pub users: Arc<dyn UserRepository>,
    /// Each user's token count per budget window.
    pub usage: Arc<dyn UsageStore>,
    /// Counts the tokens of answers whose upstream did not say.
    pub token_counter: Arc<dyn TokenCounter>,
}

/// A generation this instance runs.
struct Local {
    message_id: MessageId,
    cancel: CancellationToken,
}

/// The state shared by the conversation services, their generation tasks
/// and their background loops. Built once (by `startup`) and shared.
pub struct ConversationCore {
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) ai: Arc<dyn AiModel>,
    pub(super) stats: Arc<dyn Stats>,
    pub(super) log: Arc<dyn EventLog>,
    pub(super) live: Arc<dyn LiveDelivery>,
    pub(super) backplane: Arc<dyn Backplane>,
    pub(super) registry: Arc<dyn GenerationRegistry>,
    pub(super) handoffs: Arc<dyn HandoffStore>,
    pub(super) presence: Arc<dyn AgentPresence>,
    pub(super) signals: Arc<dyn SignalBus>,
    pub(super) transcripts: Arc<dyn TranscriptStore>,
    pub(super) users: Arc<dyn UserRepository>,
    pub(super) agent_accounts: AgentAccounts,
    /// Answers' token usage and the budgets.
    pub(super) metering: Metering,
    pub(super) settings: ConversationSettings,
    pub(super) limits: Limits,
    local: Mutex<HashMap<SessionId, Local>>,
    /// Owns every generation task.
    pub(super) tasks: TaskTracker,
    /// Set when shutdown begins: no new chats.
    pub(super) draining: CancellationToken,
    /// Set when every local generation has ended after shutdown began.
    pub(super) drained: CancellationToken,
    /// Set once shutdown has cancelled what was still running: what is
    /// still retried (an answer's end) gives up.
    pub(super) shut_down: CancellationToken,
    /// Every typist's rate on this instance, whatever socket they type in.
    pub(super) typists: Mutex<crate::domain::signal::TypingThrottles>,
    /// The desk (agents' presence and loads) as this instance last read it,
    /// for its agent sockets; kept by the desk loop.
    pub(super) desk: tokio::sync::watch::Sender<crate::domain::desk::Desk>,
}

impl ConversationCore {
    /// The core on `ports`; nothing runs until a service uses it (the
    /// background loops are started apart, by their owner).
    pub fn new(ports: ChatPorts, settings: ConversationSettings, limits: Limits) -> Self {
        Self {
            sessions: ports.sessions,
            ai: ports.ai,
            stats: ports.stats.clone(),
            log: ports.log,
            live: ports.live,
            backplane: ports.backplane,
            registry: ports.registry,
            handoffs: ports.handoffs,
            presence: ports.presence,
            signals: ports.signals,
            transcripts: ports.transcripts,
            users: ports.users.clone(),
            agent_accounts: AgentAccounts::new(ports.users),
            metering: Metering::new(
                ports.usage,
                ports.token_counter,
                ports.stats.clone(),
                settings.answers.budget,
            ),
            settings,
            limits,
            local: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            draining: CancellationToken::new(),
            drained: CancellationToken::new(),
            shut_down: CancellationToken::new(),
            typists: Mutex::new(crate::domain::signal::TypingThrottles::default()),
            desk: tokio::sync::watch::Sender::new(crate::domain::desk::Desk::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The generations this instance runs, each stoppable here.
impl ConversationCore {
    /// Keeps `message_id` stoppable (by `cancel`) as the session's local
    /// generation.
    pub(super) fn track_local(
        &self,
        session: SessionId,
        message_id: MessageId,
        cancel: CancellationToken,
    ) {
        lock(&self.local).insert(session, Local { message_id, cancel });
    }

    pub(super) fn forget_local(&self, session: &SessionId, message_id: &MessageId) {
        let mut local = lock(&self.local);
        if local
            .get(session)
            .is_some_and(|l| l.message_id == *message_id)
        {
            local.remove(session);
        }
    }

    /// Cancels the session's local generation, if it runs here; with
    /// `only`, only when it is that one.
    pub(super) fn cancel_local(&self, session: &SessionId, only: Option<&MessageId>) -> bool {
        match lock(&self.local).get(session) {
            Some(local) if only.is_none_or(|m| *m == local.message_id) => {
                local.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    pub(super) fn local_is_empty(&self) -> bool {
        lock(&self.local).is_empty()
    }

    pub(super) fn cancel_all_local(&self) {
        for local in lock(&self.local).values() {
            local.cancel.cancel();
        }
    }

    /// Stops the session's running generation, wherever it runs: `false`
    /// when none runs anywhere. A failed store is counted.
    pub(super) async fn stop(&self, session: &SessionId) -> Result<bool, ChatError> {
        if self.cancel_local(session, None) {
            return Ok(true);
        }
        match self.registry.request_stop(session).await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => {
                let e = ChatError::from(e);
                self.count_failure(&e);
                Err(e)
            }
        }
    }

    /// Stops the session's running generation, if any, and waits (bounded)
    /// until its `stream-end` is written, so what follows is logged after it.
    pub(super) async fn stop_and_wait(&self, session: &SessionId) {
        if !matches!(self.stop(session).await, Ok(true)) {
            return;
        }
        let deadline = Instant::now() + self.settings.lease * 2;
        while Instant::now() < deadline {
            match self.registry.running(session).await {
                Ok(None) | Err(_) => return,
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Renews the lease; `false` when it is no longer ours. A store that does
    /// not answer is not proof of a lost lease: keep going and retry.
    pub(super) async fn renew(&self, session: &SessionId, message_id: &MessageId) -> bool {
        match self
            .registry
            .renew(session, message_id, self.settings.lease)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                self.stats.store_error("conversations");
                tracing::warn!(error = %ErrorChain(&e), "could not renew the generation lease");
                true
            }
        }
    }

    /// True once the session has had no watcher for the unattended timeout.
    pub(super) async fn unattended_for_too_long(
        &self,
        session: &SessionId,
        since: &mut Option<Instant>,
    ) -> bool {
        let watched = match self.live.watchers(session).await {
            Ok(n) => n > 0,
            // Unknown counts as watched: never cancel on a store hiccup.
            Err(_) => true,
        };
        if watched {
            *since = None;
            return false;
        }
        let since = since.get_or_insert_with(Instant::now);
        since.elapsed() >= self.settings.unattended_timeout
    }
}

/// The event log and live delivery.
impl ConversationCore {
    /// Appends to the log; a failure is logged here and reported as `None`.
    pub(super) async fn append(
        &self,
        session: &SessionId,
        events: Vec<ConversationEvent>,
    ) -> Option<Vec<SharedEvent>> {
        if events.is_empty() {
            return Some(Vec::new());
        }
        let at: DateTime<Utc> = Utc::now();
        let stamped = events.into_iter().map(|e| (at, e)).collect();
        match self.log.append(session, stamped).await {
            Ok(logged) => Some(logged),
            Err(e) => {
                self.stats.store_error("conversations");
                tracing::error!(session_id = %session, error = %ErrorChain(&e), "could not append to the event log");
                None
            }
        }
    }

    /// Publishes; a failure only delays delivery (watchers catch up from the log).
    pub(super) async fn publish(&self, session: &SessionId, events: &[SharedEvent]) {
        if let Err(e) = self.live.publish(session, events).await {
            self.stats.store_error("conversations");
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not publish events");
        }
    }

    /// Appends to the log and publishes; a failure to append is the
    /// caller's to report (one to publish only delays delivery).
    pub(super) async fn log_and_publish(
        &self,
        session: &SessionId,
        events: Vec<ConversationEvent>,
    ) -> Result<Vec<SharedEvent>, ChatError> {
        let now = Utc::now();
        let stamped = events.into_iter().map(|e| (now, e)).collect();
        self.log_and_publish_stamped(session, stamped).await
    }

    /// [`Self::log_and_publish`] of events already stamped with their time.
    pub(super) async fn log_and_publish_stamped(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Vec<SharedEvent>, ChatError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let written = self.backplane.write(session, events).await?;
        if let Some(e) = written.unpublished {
            self.stats.store_error("conversations");
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not publish events");
        }
        Ok(written.events)
    }

    /// Counts a failed store behind `e` (a vanished session is no failure).
    pub(super) fn count_failure(&self, e: &ChatError) {
        match e {
            ChatError::SessionStore(_) => self.stats.store_error("sessions"),
            ChatError::Conversation(_) => self.stats.store_error("conversations"),
            ChatError::Transcripts(_) => self.stats.store_error("transcripts"),
            ChatError::Ai(_) | ChatError::SessionGone => {}
        }
    }

    /// Counts the store failure behind `result`, if any, and passes it on.
    pub(super) fn counted<T>(&self, result: Result<T, ChatError>) -> Result<T, ChatError> {
        if let Err(e) = &result {
            self.count_failure(e);
        }
        result
    }
}

/// The transcript: what was said, kept beyond the session.
impl ConversationCore {
    /// Keeps `entry` in the transcript. A failure (or no answer within
    /// [`RECORD_TIMEOUT`]) is counted and logged without the content, and
    /// the conversation goes on.
    pub(super) async fn record(&self, entry: TranscriptEntry) {
        let written = tokio::time::timeout(RECORD_TIMEOUT, self.transcripts.append(&entry)).await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => ErrorChain(&e).to_string(),
            Err(_) => format!("no answer within {RECORD_TIMEOUT:?}"),
        };
        self.stats.store_error("transcripts");
        tracing::warn!(
            session_id = %entry.session,
            message_id = %entry.message_id,
            role = entry.speaker.role().as_str(),
            %error,
            "could not record a message in the transcript"
        );
    }

    /// Marks superseded the answers to `asked` in the transcript (it is being
    /// asked again). Best effort, as recording is: a failure is counted and
    /// logged, and the new answer goes ahead.
    pub(super) async fn supersede(&self, session: &SessionId, asked: &MessageId) {
        let marked = tokio::time::timeout(
            RECORD_TIMEOUT,
            self.transcripts.supersede_after(session, asked),
        )
        .await;
        let error = match marked {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => ErrorChain(&e).to_string(),
            Err(_) => format!("no answer within {RECORD_TIMEOUT:?}"),
        };
        self.stats.store_error("transcripts");
        tracing::warn!(session_id = %session, message_id = %asked, %error, "could not mark superseded answers in the transcript");
    }

    /// Whose conversation `session` is: its live session's user, or, once the
    /// session has expired, the owner its transcript remembers.
    pub(super) async fn owner_of(&self, session: &SessionId) -> Result<Option<UserId>, ChatError> {
        if let Some(live) = self.sessions.get(session).await? {
            return Ok(Some(live.user.id));
        }
        Ok(self.transcripts.owner(session).await?)
    }
}

/// The conversation's handoff state, as the bot and the humans share it.
impl ConversationCore {
    /// Reads the conversation's handoff, applies `step`, and stores the result
    /// with a compare-and-set, again on conflict. `Ok(None)` when `step`
    /// changed nothing.
    pub(super) async fn change<F>(
        &self,
        session: &SessionId,
        mut step: F,
    ) -> Result<Option<Transition>, HandoffRefusal>
    where
        F: FnMut(Option<&Handoff>) -> Result<Option<Transition>, HandoffError> + Send,
    {
        for _ in 0..SWAP_ATTEMPTS {
            let current = self.handoffs.get(session).await?;
            let Some(t) = step(current.as_ref())? else {
                return Ok(None);
            };
            let expected = current.as_ref().map_or(0, |h| h.version);
            if self
                .handoffs
                .swap(session, expected, t.next.clone())
                .await?
                == Swap::Done
            {
                return Ok(Some(t));
            }
        }
        Err(ConversationStoreError::from(StoreFailure::bare(
            "handoff kept changing under a compare-and-set",
        ))
        .into())
    }

    /// Whether the bot may answer now: only in bot mode. Unknown (a failing
    /// store) is "no", so a store hiccup never lets the bot talk over an agent.
    pub(super) async fn muted(&self, session: &SessionId) -> Result<Option<Handoff>, ChatError> {
        Ok(self.handoffs.get(session).await?)
    }

    /// Where a queued customer stands, as the `handoff-waiting` that answers
    /// their chat (`None` unless queued). A store that cannot say is logged
    /// and the chat goes on without it.
    pub(super) async fn waiting(&self, handoff: &Handoff) -> Option<ConversationEvent> {
        if handoff.mode != Mode::Queued {
            return None;
        }
        let position = match self.handoffs.position(&handoff.session).await {
            Ok(Some(p)) => p,
            // Claimed or given back meanwhile: the next events say so.
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(session_id = %handoff.session, error = %ErrorChain(&e), "could not read a place in the queue");
                return None;
            }
        };
        let agents_online = self.presence.online_count().await.unwrap_or(0);
        Some(ConversationEvent::HandoffWaiting {
            position,
            agents_online,
        })
    }

    /// Forgets the conversation's handoff (an erased conversation waits for
    /// nobody); every instance hears it is the bot's again.
    pub(super) async fn forget_handoff(&self, session: &SessionId) -> Result<(), ChatError> {
        self.change(session, |current| {
            Ok(current.map(|_| Transition {
                next: None,
                events: Vec::new(),
            }))
        })
        .await
        .map(drop)
        .map_err(HandoffRefusal::into_chat_error)
    }

    /// Records the customer's chat in the queue item, best effort.
    pub(super) async fn note_last_message(&self, session: &SessionId, content: &str) {
        let noted = self
            .change(session, |current| {
                Ok(current.map(|h| Transition {
                    next: Some(h.with_last_message(content)),
                    events: Vec::new(),
                }))
            })
            .await;
        if let Err(e) = noted {
            tracing::warn!(session_id = %session, error = %e, "could not note the queue's last message");
        }
    }
}
