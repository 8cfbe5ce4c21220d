//! Human handoff use cases: the user asks for a human or stops waiting; an
//! agent claims, answers, releases or resolves; timers give unclaimed and
//! abandoned conversations back. Each change is one compare-and-set of the
//! conversation's [`Handoff`] (atomic across instances) followed by the events
//! the transition produced, so every tab and agent sees it in `seq` order.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::conversation::{ChatError, ConversationCore};
use super::handoff_assign::{assign_waiting, take_conversation, Taking};
use super::handoff_queue;
use super::ports::{ConversationStoreError, HandoffChange, StoreFailure, Swap};
use crate::domain::conversation::{ConversationEvent, Seq};
use crate::domain::handoff::{
    self, AgentRef, EscalationRoute, Handoff, HandoffError, HandoffSwitch, Mode, Transition,
    Unavailability,
};
use crate::domain::transcript::{Speaker, TranscriptEntry};
use crate::domain::{ChatContent, ChatMessage, MessageId, Role, Session, SessionId, User, UserId};
use crate::error_chain::ErrorChain;

pub use super::conversation::{HandoffRefusal, HandoffSettings, HANDOFF_LISTED};

/// What the human-escalation request is answered with.
pub const ESCALATION_REPLY: &str = "A human agent will contact you soon.";

/// How long an agent socket's presence lease lasts without renewal: an
/// instance that dies takes its agents offline within this.
pub const PRESENCE_LEASE: Duration = Duration::from_secs(30);

/// How often the timers look for timed-out queues and absent agents: the
/// issue's "within 2 s" of the timeout, with a margin.
const TIMER_TICK: Duration = Duration::from_secs(1);

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

/// The human handoff use cases, shared by every connection and agent.
#[derive(Clone)]
pub struct HandoffService {
    pub(super) core: Arc<ConversationCore>,
}

impl HandoffService {
    pub fn new(core: Arc<ConversationCore>) -> Self {
        Self { core }
    }

    /// The conversation's handoff state (`None`: the bot answers).
    pub async fn handoff(&self, session: &SessionId) -> Result<Option<Handoff>, ChatError> {
        Ok(self.core.handoffs.get(session).await?)
    }

    /// The user asks for a human. Where handoff is in use and a person can
    /// take the conversation, a running answer is cancelled, then every tab
    /// gets the `human-escalation-response` (for old clients) and, the first
    /// time, `handoff-queued`; asking again changes nothing but is answered
    /// again. Where nobody could take it, the request is only answered (and
    /// `handoff-unavailable` says why, when handoff is in use): the bot keeps
    /// answering, as on the Node.js server.
    pub async fn escalate(&self, session: &SessionId) -> Result<(), ChatError> {
        let core = &self.core;
        let stored = core
            .sessions
            .get(session)
            .await?
            .ok_or(ChatError::SessionGone)?;
        if core.sessions.mark_escalated(session).await? {
            tracing::info!(session_id = %session, "session escalated to a human");
        }
        let online = core.presence.online_count().await.unwrap_or(0);
        if core.handoffs.get(session).await?.is_none() {
            let route = self.escalation_route(online).await;
            if let Some((outcome, events)) = self.answer_only(route) {
                core.stats.handoff(outcome);
                core.log_and_publish(session, events).await?;
                return Ok(());
            }
        }
        self.enqueue(stored, online).await
    }

    /// The metric outcome and the events of a request that stays with the
    /// bot; `None` when it goes to the queue.
    fn answer_only(
        &self,
        route: EscalationRoute,
    ) -> Option<(&'static str, Vec<ConversationEvent>)> {
        let reply = |message: &str| ConversationEvent::EscalationResponse {
            message: message.to_owned(),
        };
        match route {
            EscalationRoute::Queue => None,
            EscalationRoute::Answer => Some(("not_offered", vec![reply(ESCALATION_REPLY)])),
            EscalationRoute::Unavailable(reason) => {
                let settings = &self.core.settings.handoff;
                let (outcome, message) = match reason {
                    Unavailability::Closed { .. } => ("closed", &settings.closed_message),
                    Unavailability::NoAgentOnline => ("unavailable", &settings.offline_message),
                };
                Some((
                    outcome,
                    vec![
                        reply(message),
                        ConversationEvent::HandoffUnavailable { reason },
                    ],
                ))
            }
        }
    }

    /// Where a request for a human from bot mode goes now.
    async fn escalation_route(&self, agents_online: u64) -> EscalationRoute {
        let settings = &self.core.settings.handoff;
        // The user store is read only when its answer matters.
        let accounts =
            settings.switch == HandoffSwitch::Auto && self.core.agent_accounts.exist().await;
        handoff::route_escalation(
            settings.switch,
            accounts,
            agents_online,
            settings.when_no_agent_online,
            settings.closed_until(Utc::now()),
        )
    }

    /// Puts the conversation in the queue (or answers again when it is
    /// already queued or assigned).
    async fn enqueue(&self, stored: Session, online: u64) -> Result<(), ChatError> {
        let core = &self.core;
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
        let entering = handoff_queue::entering_place(core).await;
        let transition = core
            .change(session, |current| {
                let t = Handoff::escalate(current, session.clone(), owner.clone(), online, now);
                Ok(t.map(|t| Transition {
                    next: t.next.map(|h| {
                        let h = h.entering_at(entering);
                        match &said {
                            Some(said) => h.with_last_message(said),
                            None => h,
                        }
                    }),
                    events: t.events,
                }))
            })
            .await
            .map_err(HandoffRefusal::into_chat_error)?;
        let mut events = vec![ConversationEvent::EscalationResponse {
            message: ESCALATION_REPLY.to_owned(),
        }];
        if let Some(t) = transition {
            // Muted from the swap on; what was already running ends first.
            core.stop_and_wait(session).await;
            core.stats.handoff("queued");
            events.extend(handoff_queue::placed(core, session, t).await.events);
        }
        core.log_and_publish(session, events).await?;
        assign_waiting(core).await;
        Ok(())
    }

    /// The user stops waiting for a human: the bot answers again.
    pub async fn cancel_handoff(&self, session: &SessionId) -> Result<(), HandoffRefusal> {
        let core = &self.core;
        let mut since = None;
        let t = core
            .change(session, |current| match current {
                Some(h) => {
                    since = Some(h.waiting_since);
                    h.cancel().map(Some)
                }
                None => Err(HandoffError::NotQueued),
            })
            .await
            .required()?;
        core.stats.handoff("cancelled");
        if let Some(since) = since {
            let waited = (Utc::now() - since).to_std().unwrap_or_default();
            core.stats.handoff_wait("cancelled", waited);
        }
        self.apply(session, t).await?;
        handoff_queue::announce_moves(core).await;
        Ok(())
    }

    /// The queue, longest waiting first.
    pub async fn handoff_queue(&self) -> Result<Vec<Handoff>, ChatError> {
        Ok(self.core.handoffs.queue(HANDOFF_LISTED).await?)
    }

    /// The conversations `agent` holds.
    pub async fn held_by(&self, agent: &UserId) -> Result<Vec<Handoff>, ChatError> {
        Ok(self.core.handoffs.held_by(agent, HANDOFF_LISTED).await?)
    }

    /// The AI's summary kept with a conversation its agent holds, if any
    /// (a store that cannot say: none, logged).
    pub async fn summary_of(&self, session: &SessionId) -> Option<String> {
        self.core
            .handoffs
            .summary(session)
            .await
            .unwrap_or_else(|e| {
                tracing::info!(error = %ErrorChain(&e), "could not read a summary");
                None
            })
    }

    /// `agent` takes a queued conversation; exactly one claim wins over all
    /// instances, the others are [`HandoffError::AlreadyClaimed`].
    /// Goes through [`take_conversation`], as auto-assignment does. An agent
    /// holding `AGENT_MAX_CONVERSATIONS` is refused.
    pub async fn claim(&self, agent: &User, session: &SessionId) -> Result<Seq, HandoffRefusal> {
        self.require_session(session).await?;
        take_conversation(&self.core, &agent_ref(agent), session, Taking::Claim).await
    }

    /// The holding agent gives the conversation back to the queue.
    pub async fn release(&self, agent: &User, session: &SessionId) -> Result<(), HandoffRefusal> {
        self.require_session(session).await?;
        let online = self.core.presence.online_count().await.unwrap_or(0);
        let now = Utc::now();
        let entering = handoff_queue::entering_place(&self.core).await;
        let t = self
            .core
            .change(session, |current| {
                let h = current.ok_or(HandoffError::NotAssigned)?;
                h.release(&agent.id, online, now)
                    .map(|t| t.entering_at(entering))
                    .map(Some)
            })
            .await
            .required()?;
        self.core.stats.handoff("released");
        let t = handoff_queue::placed(&self.core, session, t).await;
        self.apply(session, t).await?;
        assign_waiting(&self.core).await;
        Ok(())
    }

    /// The holding agent is done: the user's next chat goes to the AI.
    /// The customer is then asked how it went (`csat-request`).
    pub async fn resolve(&self, agent: &User, session: &SessionId) -> Result<(), HandoffRefusal> {
        let owner = self.require_session(session).await?.user.id;
        let mut t = self
            .core
            .change(session, |current| {
                let h = current.ok_or(HandoffError::NotAssigned)?;
                h.resolve(&agent.id).map(Some)
            })
            .await
            .required()?;
        self.core.stats.handoff("resolved");
        let who = agent_ref(agent);
        self.ask_satisfaction(session, owner, who.clone(), Utc::now())
            .await;
        t.events.push(ConversationEvent::CsatRequest {
            session: session.clone(),
            agent: who,
        });
        self.apply(session, t).await?;
        // The agent has room again.
        assign_waiting(&self.core).await;
        Ok(())
    }

    /// An agent says they are `away` (nothing is auto-assigned to them) or
    /// available again (which may assign them what waits now).
    ///
    /// # Errors
    /// [`ChatError`] when the store cannot keep it.
    pub async fn set_away(&self, agent: &UserId, away: bool) -> Result<(), ChatError> {
        self.core.presence.set_away(agent, away).await?;
        tracing::info!(agent_id = %agent, away, "agent status changed");
        super::desk::announce(&self.core).await;
        if !away {
            assign_waiting(&self.core).await;
        }
        Ok(())
    }

    /// Whether the agent said they are away (a store that cannot say: no).
    pub async fn is_away(&self, agent: &UserId) -> bool {
        self.core.presence.away(agent).await.unwrap_or(false)
    }

    /// With `HANDOFF_ASSIGN=auto`, gives what waits to available agents
    /// with room (an agent who just came online, say).
    pub async fn assign_waiting(&self) {
        assign_waiting(&self.core).await;
    }

    /// How agents get conversations (`HANDOFF_ASSIGN`) and how many one may hold.
    pub fn assignment(&self) -> (crate::domain::handoff::AssignMode, usize) {
        let settings = &self.core.settings.handoff;
        (settings.assign, settings.max_conversations)
    }

    /// The handoff settings, as configured.
    pub fn settings(&self) -> &HandoffSettings {
        &self.core.settings.handoff
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
        let core = &self.core;
        let customer = self.require_session(session).await?.user.id;
        match core.handoffs.get(session).await? {
            Some(h) if h.mode.agent().is_some_and(|a| a.id == agent.id) => {}
            _ => return Err(HandoffError::NotAssigned.into()),
        }
        let content = content.into_string();
        let message_id = MessageId::generate();
        let turn = ChatMessage {
            role: Role::Assistant,
            content: content.clone(),
            timestamp: Utc::now(),
            message_id: Some(message_id.clone()),
        };
        core.sessions
            .append(session, turn)
            .await
            .map_err(ChatError::from)?;
        let said = ConversationEvent::AgentMessage {
            message_id: message_id.clone(),
            content: content.clone(),
            agent: agent_ref(agent),
        };
        let logged = core.log_and_publish(session, vec![said]).await?;
        let (seq, at) = logged.first().map_or((0, Utc::now()), |e| (e.seq, e.at));
        core.record(TranscriptEntry::new(
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
            .core
            .presence
            .renew(agent, socket, PRESENCE_LEASE)
            .await;
        if let Err(e) = renewed {
            self.core.stats.store_error("conversations");
            tracing::warn!(error = %ErrorChain(&e), "could not renew an agent's presence");
        }
    }

    /// An agent socket opened: its presence lease, and every desk is told.
    pub async fn agent_arrived(&self, agent: &UserId, socket: &str) {
        self.agent_present(agent, socket).await;
        super::desk::announce(&self.core).await;
    }

    /// The agent socket closed.
    pub async fn agent_gone(&self, agent: &UserId, socket: &str) {
        if let Err(e) = self.core.presence.leave(agent, socket).await {
            tracing::warn!(error = %ErrorChain(&e), "could not record an agent leaving");
        }
        super::desk::announce(&self.core).await;
    }

    /// The desk as this instance last read it, and its changes from now on.
    pub fn desk(&self) -> tokio::sync::watch::Receiver<crate::domain::desk::Desk> {
        self.core.desk.subscribe()
    }

    /// Gives every conversation `agent` holds back to the queue now
    /// (`agent-left`, then `handoff-queued`), whatever their presence: for
    /// an agent who was demoted, deactivated or logged out everywhere.
    /// Returns how many went back; one another change got to first is not
    /// counted.
    ///
    /// # Errors
    /// [`ChatError`] when the conversations held cannot be listed.
    pub async fn give_back_held(&self, agent: &UserId) -> Result<usize, ChatError> {
        super::agent_standing::give_back(&self.core, agent).await
    }

    /// Every handoff change, from every instance, from now on.
    pub fn handoff_changes(&self) -> tokio::sync::broadcast::Receiver<HandoffChange> {
        self.core.handoffs.changes()
    }

    async fn require_session(&self, session: &SessionId) -> Result<Session, HandoffRefusal> {
        match self.core.sessions.get(session).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(HandoffRefusal::SessionGone),
            Err(e) => Err(ChatError::from(e).into()),
        }
    }

    async fn apply(&self, session: &SessionId, t: Transition) -> Result<(), HandoffRefusal> {
        self.core.log_and_publish(session, t.events).await?;
        Ok(())
    }
}

/// [`ConversationCore::change`]'s result for the transitions that always
/// produce one (or fail).
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

/// Gives unclaimed conversations back to the bot after the queue timeout, and
/// conversations whose agent is away past the grace (or no longer an active
/// agent at all) back to the queue.
pub(super) async fn run_timers(core: Arc<ConversationCore>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut standing = super::agent_standing::StandingCheck::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match core.handoffs.active(HANDOFF_LISTED).await {
            Ok(active) => {
                let queued = active.iter().filter(|h| h.mode == Mode::Queued).count();
                core.stats.handoff_queue_length(queued as u64);
                // Moves another instance noticed but could not tell (it
                // stopped, or its store call failed) are told here.
                handoff_queue::announce(&core, &active).await;
                super::agent_standing::reclaim_from_former_agents(&core, &active, &mut standing)
                    .await;
                for h in active {
                    expire(&core, h).await;
                }
                // Room that opened on any instance, agents who came online
                // or back: what waits is assigned within a tick.
                assign_waiting(&core).await;
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
async fn expire(core: &ConversationCore, h: Handoff) {
    let now = Utc::now();
    let settings = &core.settings.handoff;
    let closed = settings.closed_until(now).is_some();
    let (t, outcome) = match &h.mode {
        // Still waiting at closing time: back to the bot.
        Mode::Queued if closed => match h.close_out() {
            Some(t) => (t, "closed"),
            None => return,
        },
        Mode::Queued => match h.time_out(settings.queue_timeout, now) {
            Some(t) => (t, "timeout"),
            None => return,
        },
        Mode::Assigned { agent, .. } => {
            let (online, seen) = match presence_of(core, &agent.id).await {
                Some(p) => p,
                None => return,
            };
            if !handoff::agent_away_too_long(&h.mode, seen, online, settings.away_grace, now) {
                return;
            }
            let agents_online = core.presence.online_count().await.unwrap_or(0);
            let entering = handoff_queue::entering_place(core).await;
            match h.release(&agent.id, agents_online, now) {
                Ok(t) => (t.entering_at(entering), "agent_away"),
                Err(_) => return,
            }
        }
        Mode::Bot => return,
    };
    match core
        .handoffs
        .swap(&h.session, h.version, t.next.clone())
        .await
    {
        Ok(Swap::Done) => {
            core.stats.handoff(outcome);
            if h.mode == Mode::Queued {
                let waited = (now - h.waiting_since).to_std().unwrap_or_default();
                core.stats.handoff_wait(outcome, waited);
            }
            tracing::info!(session_id = %h.session, outcome, "handoff timer fired");
            let requeued = t.next.is_some();
            let t = if requeued {
                handoff_queue::placed(core, &h.session, t).await
            } else {
                t
            };
            if let Err(e) = core.log_and_publish(&h.session, t.events).await {
                tracing::error!(session_id = %h.session, error = %ErrorChain(&e), "could not log a handoff timer's events");
            }
            if !requeued {
                handoff_queue::announce_moves(core).await;
            }
        }
        Ok(Swap::Conflict) => {}
        Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not apply a handoff timer"),
    }
}

async fn presence_of(
    core: &ConversationCore,
    agent: &UserId,
) -> Option<(bool, Option<chrono::DateTime<Utc>>)> {
    let online = core.presence.online(agent).await.ok()?;
    let seen = core.presence.last_seen(agent).await.ok()?;
    Some((online, seen))
}

impl HandoffService {
    /// What is said to one agent alone, live, on any instance: the summary
    /// of a conversation they took.
    pub fn agent_signals(&self, agent: &UserId) -> super::ports::SignalStream {
        self.core
            .signals
            .subscribe(&crate::domain::signal::SignalTopic::Agent(agent.clone()))
    }
}
