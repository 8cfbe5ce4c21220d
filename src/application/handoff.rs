//! Human handoff use cases: the user asks for a human or stops waiting; an
//! agent claims, answers, releases or resolves; timers give unclaimed and
//! abandoned conversations back. Each change is one compare-and-set of the
//! conversation's [`Handoff`] (atomic across instances) followed by the events
//! the transition produced, so every tab and agent sees it in `seq` order.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;

use super::chat::{ChatError, ChatService, Inner, ESCALATION_REPLY};
use super::ports::{ConversationStoreError, SharedEvent, StoreFailure, Swap};
use crate::domain::conversation::{ConversationEvent, Seq};
use crate::domain::handoff::{
    self, AgentRef, EscalationRoute, Handoff, HandoffError, HandoffSwitch, Mode, Transition,
    WhenNoAgentOnline, DEFAULT_OFFLINE_MESSAGE,
};
use crate::domain::transcript::{Speaker, TranscriptEntry};
use crate::domain::{ChatContent, ChatMessage, MessageId, Role, Session, SessionId, User, UserId};
use crate::error_chain::ErrorChain;

/// How long an agent socket's presence lease lasts without renewal: an
/// instance that dies takes its agents offline within this.
pub const PRESENCE_LEASE: Duration = Duration::from_secs(30);

/// Most conversations the queue, an agent's list or a timer pass looks at.
pub const HANDOFF_LISTED: usize = 500;

/// How often the timers look for timed-out queues and absent agents: the
/// issue's "within 2 s" of the timeout, with a margin.
const TIMER_TICK: Duration = Duration::from_secs(1);

/// Compare-and-set attempts before a change gives up as a store failure: each
/// conflict means someone else's change landed, so a few always suffice.
const SWAP_ATTEMPTS: usize = 8;

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
}

impl Default for HandoffSettings {
    fn default() -> Self {
        Self {
            switch: HandoffSwitch::Auto,
            when_no_agent_online: WhenNoAgentOnline::Bot,
            offline_message: DEFAULT_OFFLINE_MESSAGE.to_owned(),
            queue_timeout: Duration::from_secs(600),
            away_grace: Duration::from_secs(120),
        }
    }
}

/// Why a handoff request was refused.
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

/// An agent's message as it was logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMessageSent {
    pub message_id: MessageId,
    pub seq: Seq,
}

/// The agent as events name it.
pub fn agent_ref(user: &User) -> AgentRef {
    AgentRef {
        id: user.id.clone(),
        username: user.username.clone(),
    }
}

impl ChatService {
    /// The conversation's handoff state (`None`: the bot answers).
    pub async fn handoff(&self, session: &SessionId) -> Result<Option<Handoff>, ChatError> {
        Ok(self.inner().handoffs.get(session).await?)
    }

    /// The user asks for a human. Where handoff is in use and a person can
    /// take the conversation, a running answer is cancelled, then every tab
    /// gets the `human-escalation-response` (for old clients) and, the first
    /// time, `handoff-queued`; asking again changes nothing but is answered
    /// again. Where nobody could take it, the request is only answered (and
    /// `handoff-unavailable` says why, when handoff is in use): the bot keeps
    /// answering, as on the Node.js server.
    pub async fn escalate(&self, session: &SessionId) -> Result<(), ChatError> {
        let inner = self.inner();
        let stored = inner
            .sessions
            .get(session)
            .await?
            .ok_or(ChatError::SessionGone)?;
        if inner.sessions.mark_escalated(session).await? {
            tracing::info!(session_id = %session, "session escalated to a human");
        }
        let online = inner.presence.online_count().await.unwrap_or(0);
        if inner.handoffs.get(session).await?.is_none() {
            match self.escalation_route(online).await {
                EscalationRoute::Queue => {}
                EscalationRoute::Answer => {
                    inner.stats.handoff("not_offered");
                    let reply = ConversationEvent::EscalationResponse {
                        message: ESCALATION_REPLY.to_owned(),
                    };
                    inner.log_and_publish(session, vec![reply]).await?;
                    return Ok(());
                }
                EscalationRoute::Unavailable(reason) => {
                    inner.stats.handoff("unavailable");
                    let reply = ConversationEvent::EscalationResponse {
                        message: inner.settings.handoff.offline_message.clone(),
                    };
                    let why = ConversationEvent::HandoffUnavailable { reason };
                    inner.log_and_publish(session, vec![reply, why]).await?;
                    return Ok(());
                }
            }
        }
        self.enqueue(stored, online).await
    }

    /// Where a request for a human from bot mode goes now.
    async fn escalation_route(&self, agents_online: u64) -> EscalationRoute {
        let settings = &self.inner().settings.handoff;
        // The user store is read only when its answer matters.
        let accounts =
            settings.switch == HandoffSwitch::Auto && self.inner().agent_accounts.exist().await;
        handoff::route_escalation(
            settings.switch,
            accounts,
            agents_online,
            settings.when_no_agent_online,
        )
    }

    /// Puts the conversation in the queue (or answers again when it is
    /// already queued or assigned).
    async fn enqueue(&self, stored: Session, online: u64) -> Result<(), ChatError> {
        let inner = self.inner();
        let session = &stored.id;
        // The queue shows what the customer last said, so an agent sees why
        // they asked before claiming.
        let said = stored
            .history
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone());
        let owner = stored.user;
        let now = Utc::now();
        let transition = change(inner, session, |current| {
            let t = Handoff::escalate(current, session.clone(), owner.clone(), online, now);
            Ok(t.map(|t| Transition {
                next: match (t.next, &said) {
                    (Some(h), Some(said)) => Some(h.with_last_message(said)),
                    (next, _) => next,
                },
                events: t.events,
            }))
        })
        .await
        .map_err(refusal_to_chat)?;
        let mut events = vec![ConversationEvent::EscalationResponse {
            message: ESCALATION_REPLY.to_owned(),
        }];
        if let Some(t) = transition {
            // Muted from the swap on; what was already running ends first.
            self.stop_and_wait(session).await;
            inner.stats.handoff("queued");
            events.extend(t.events);
        }
        inner.log_and_publish(session, events).await?;
        Ok(())
    }

    /// The user stops waiting for a human: the bot answers again.
    pub async fn cancel_handoff(&self, session: &SessionId) -> Result<(), HandoffRefusal> {
        let inner = self.inner();
        let t = change(inner, session, |current| match current {
            Some(h) => h.cancel().map(Some),
            None => Err(HandoffError::NotQueued),
        })
        .await
        .required()?;
        inner.stats.handoff("cancelled");
        self.apply(session, t).await
    }

    /// The queue, longest waiting first.
    pub async fn handoff_queue(&self) -> Result<Vec<Handoff>, ChatError> {
        Ok(self.inner().handoffs.queue(HANDOFF_LISTED).await?)
    }

    /// The conversations `agent` holds.
    pub async fn held_by(&self, agent: &UserId) -> Result<Vec<Handoff>, ChatError> {
        Ok(self.inner().handoffs.held_by(agent, HANDOFF_LISTED).await?)
    }

    /// `agent` takes a queued conversation; exactly one claim wins over all
    /// instances, the others are [`HandoffError::AlreadyClaimed`].
    pub async fn claim(&self, agent: &User, session: &SessionId) -> Result<Seq, HandoffRefusal> {
        let inner = self.inner();
        self.require_session(session).await?;
        let now = Utc::now();
        let who = agent_ref(agent);
        let mut waited = None;
        let t = change(inner, session, |current| {
            let h = current.ok_or(HandoffError::NotQueued)?;
            waited = (now - h.waiting_since).to_std().ok();
            h.claim(who.clone(), now).map(Some)
        })
        .await
        .required()?;
        inner.stats.handoff("claimed");
        if let Some(waited) = waited {
            inner.stats.handoff_wait(waited);
        }
        let logged = inner.log_and_publish(session, t.events).await?;
        Ok(logged.first().map_or(0, |e| e.seq))
    }

    /// The holding agent gives the conversation back to the queue.
    pub async fn release(&self, agent: &User, session: &SessionId) -> Result<(), HandoffRefusal> {
        self.require_session(session).await?;
        let online = self.inner().presence.online_count().await.unwrap_or(0);
        let now = Utc::now();
        let t = change(self.inner(), session, |current| {
            let h = current.ok_or(HandoffError::NotAssigned)?;
            h.release(&agent.id, online, now).map(Some)
        })
        .await
        .required()?;
        self.inner().stats.handoff("released");
        self.apply(session, t).await
    }

    /// The holding agent is done: the user's next chat goes to the AI.
    pub async fn resolve(&self, agent: &User, session: &SessionId) -> Result<(), HandoffRefusal> {
        self.require_session(session).await?;
        let t = change(self.inner(), session, |current| {
            let h = current.ok_or(HandoffError::NotAssigned)?;
            h.resolve(&agent.id).map(Some)
        })
        .await
        .required()?;
        self.inner().stats.handoff("resolved");
        self.apply(session, t).await
    }

    /// The holding agent answers the user. The answer joins the session's
    /// history as an `assistant` turn, so the AI knows what was said once it
    /// answers again.
    pub async fn agent_message(
        &self,
        agent: &User,
        session: &SessionId,
        content: ChatContent,
    ) -> Result<AgentMessageSent, HandoffRefusal> {
        let inner = self.inner();
        let customer = self.require_session(session).await?.user.id;
        match inner.handoffs.get(session).await? {
            Some(h) if h.mode.agent().is_some_and(|a| a.id == agent.id) => {}
            _ => return Err(HandoffError::NotAssigned.into()),
        }
        let content = content.into_string();
        let turn = ChatMessage {
            role: Role::Assistant,
            content: content.clone(),
            timestamp: Utc::now(),
        };
        inner
            .sessions
            .append(session, turn)
            .await
            .map_err(ChatError::from)?;
        let message_id = MessageId::generate();
        let said = ConversationEvent::AgentMessage {
            message_id: message_id.clone(),
            content: content.clone(),
            agent: agent_ref(agent),
        };
        let logged = inner.log_and_publish(session, vec![said]).await?;
        let (seq, at) = logged.first().map_or((0, Utc::now()), |e| (e.seq, e.at));
        inner
            .record(TranscriptEntry::new(
                session.clone(),
                customer,
                message_id.clone(),
                Speaker::Agent(agent_ref(agent)),
                content,
                seq,
                at,
            ))
            .await;
        Ok(AgentMessageSent { message_id, seq })
    }

    /// Holds (renews) an agent socket's presence lease.
    pub async fn agent_present(&self, agent: &UserId, socket: &str) {
        let renewed = self
            .inner()
            .presence
            .renew(agent, socket, PRESENCE_LEASE)
            .await;
        if let Err(e) = renewed {
            self.inner().stats.store_error("conversations");
            tracing::warn!(error = %ErrorChain(&e), "could not renew an agent's presence");
        }
    }

    /// The agent socket closed.
    pub async fn agent_gone(&self, agent: &UserId, socket: &str) {
        if let Err(e) = self.inner().presence.leave(agent, socket).await {
            tracing::warn!(error = %ErrorChain(&e), "could not record an agent leaving");
        }
    }

    /// Every handoff change, from every instance, from now on.
    pub fn handoff_changes(&self) -> tokio::sync::broadcast::Receiver<super::ports::HandoffChange> {
        self.inner().handoffs.changes()
    }

    async fn require_session(&self, session: &SessionId) -> Result<Session, HandoffRefusal> {
        match self.inner().sessions.get(session).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(HandoffRefusal::SessionGone),
            Err(e) => Err(ChatError::from(e).into()),
        }
    }

    async fn apply(&self, session: &SessionId, t: Transition) -> Result<(), HandoffRefusal> {
        self.inner().log_and_publish(session, t.events).await?;
        Ok(())
    }

    /// Stops the session's running generation, if any, and waits (bounded)
    /// until its `stream-end` is written, so what follows is logged after it.
    pub(super) async fn stop_and_wait(&self, session: &SessionId) {
        if self.stop(session).await.is_err() {
            return;
        }
        let inner = self.inner();
        let deadline = tokio::time::Instant::now() + inner.settings.lease * 2;
        while tokio::time::Instant::now() < deadline {
            match inner.registry.running(session).await {
                Ok(None) | Err(_) => return,
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

fn refusal_to_chat(e: HandoffRefusal) -> ChatError {
    match e {
        HandoffRefusal::Failed(e) => e,
        HandoffRefusal::SessionGone => ChatError::SessionGone,
        // Escalating has no refusals of its own; a conflict storm is a store fault.
        HandoffRefusal::Rule(e) => ChatError::Conversation(ConversationStoreError::from(
            StoreFailure::bare(format!("handoff change refused: {e}")),
        )),
    }
}

/// Reads the conversation's handoff, applies `step`, and stores the result
/// with a compare-and-set, again on conflict. `Ok(None)` when `step` changed
/// nothing.
pub(super) async fn change<F>(
    inner: &Inner,
    session: &SessionId,
    mut step: F,
) -> Result<Option<Transition>, HandoffRefusal>
where
    F: FnMut(Option<&Handoff>) -> Result<Option<Transition>, HandoffError> + Send,
{
    for _ in 0..SWAP_ATTEMPTS {
        let current = inner.handoffs.get(session).await?;
        let Some(t) = step(current.as_ref())? else {
            return Ok(None);
        };
        let expected = current.as_ref().map_or(0, |h| h.version);
        if inner
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

/// [`change`]'s result for the transitions that always produce one (or fail).
trait Required {
    fn required(self) -> Result<Transition, HandoffRefusal>;
}

impl Required for Result<Option<Transition>, HandoffRefusal> {
    fn required(self) -> Result<Transition, HandoffRefusal> {
        self?.ok_or_else(|| {
            ConversationStoreError::from(StoreFailure::bare("no handoff change")).into()
        })
    }
}

impl Inner {
    /// Appends to the log and publishes; a failure is the caller's to report.
    pub(super) async fn log_and_publish(
        &self,
        session: &SessionId,
        events: Vec<ConversationEvent>,
    ) -> Result<Vec<SharedEvent>, ChatError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let stamped = events.into_iter().map(|e| (now, e)).collect();
        let logged = self.log.append(session, stamped).await?;
        self.publish(session, &logged).await;
        Ok(logged)
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
        change(self, session, |current| {
            Ok(current.map(|_| Transition {
                next: None,
                events: Vec::new(),
            }))
        })
        .await
        .map(drop)
        .map_err(refusal_to_chat)
    }

    /// Records the customer's chat in the queue item, best effort.
    pub(super) async fn note_last_message(&self, session: &SessionId, content: &str) {
        let noted = change(self, session, |current| {
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

/// Gives unclaimed conversations back to the bot after the queue timeout, and
/// conversations whose agent is away past the grace (or no longer an active
/// agent at all) back to the queue.
pub(super) async fn run_timers(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut standing = super::agent_standing::StandingCheck::new();
    loop {
        tokio::select! {
            _ = inner.stop_background.cancelled() => return,
            _ = tick.tick() => {}
        }
        match inner.handoffs.active(HANDOFF_LISTED).await {
            Ok(active) => {
                let queued = active.iter().filter(|h| h.mode == Mode::Queued).count();
                inner.stats.handoff_queue_length(queued as u64);
                super::agent_standing::reclaim_from_former_agents(&inner, &active, &mut standing)
                    .await;
                for h in active {
                    expire(&inner, h).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not read the handoff queue");
            }
        }
    }
}

/// Applies the timer's transition to one conversation, if one is due. The
/// compare-and-set against the version read means that of all instances'
/// timers, one acts, and not on a conversation that changed meanwhile.
async fn expire(inner: &Inner, h: Handoff) {
    let now = Utc::now();
    let settings = &inner.settings.handoff;
    let (t, outcome) = match &h.mode {
        Mode::Queued => match h.time_out(settings.queue_timeout, now) {
            Some(t) => (t, "timeout"),
            None => return,
        },
        Mode::Assigned { agent, .. } => {
            let (online, seen) = match presence_of(inner, &agent.id).await {
                Some(p) => p,
                None => return,
            };
            if !handoff::agent_away_too_long(&h.mode, seen, online, settings.away_grace, now) {
                return;
            }
            let agents_online = inner.presence.online_count().await.unwrap_or(0);
            match h.release(&agent.id, agents_online, now) {
                Ok(t) => (t, "agent_away"),
                Err(_) => return,
            }
        }
        Mode::Bot => return,
    };
    match inner.handoffs.swap(&h.session, h.version, t.next).await {
        Ok(Swap::Done) => {
            inner.stats.handoff(outcome);
            tracing::info!(session_id = %h.session, outcome, "handoff timer fired");
            if let Err(e) = inner.log_and_publish(&h.session, t.events).await {
                tracing::error!(session_id = %h.session, error = %ErrorChain(&e), "could not log a handoff timer's events");
            }
        }
        Ok(Swap::Conflict) => {}
        Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not apply a handoff timer"),
    }
}

async fn presence_of(
    inner: &Inner,
    agent: &UserId,
) -> Option<(bool, Option<chrono::DateTime<Utc>>)> {
    let online = inner.presence.online(agent).await.ok()?;
    let seen = inner.presence.last_seen(agent).await.ok()?;
    Some((online, seen))
}
