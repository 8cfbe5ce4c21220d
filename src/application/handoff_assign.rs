//! An agent takes a conversation: [`take_conversation`] is the one place
//! where that happens, whether the agent claimed it or the server assigned
//! it (`HANDOFF_ASSIGN=auto`). Whatever must happen whenever an agent takes
//! a conversation (the capacity check, the wait's metrics and estimate, the
//! moves of those behind it, the agent's summary) goes there and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::conversation::{ConversationCore, HandoffRefusal, HANDOFF_LISTED};
use super::handoff_queue;
use super::ports::{ConversationStoreError, StoreFailure};
use crate::domain::conversation::Seq;
use crate::domain::handoff::{
    self, AgentRef, AssignMode, Candidate, Handoff, HandoffError, Transition,
};
use crate::domain::{MessageId, SessionId, UserId};
use crate::error_chain::ErrorChain;

/// How long one instance may run auto-assignment before another may take
/// over (a round normally takes milliseconds; this only covers a crash).
const ASSIGN_LEASE: Duration = Duration::from_secs(10);

/// Most agents one round of auto-assignment weighs.
const ROSTER_LIMIT: usize = 500;

/// How long one taking may hold its agent's lease: a capacity check and its
/// claim take milliseconds; this only covers an instance that died (or a
/// claim dropped) in between.
const TAKING_LEASE: Duration = Duration::from_secs(2);

/// How long a taking waits for another one of the same agent to finish.
const TAKING_WAIT: Duration = Duration::from_secs(3);

/// How often a waiting taking asks for the lease again.
const TAKING_RETRY: Duration = Duration::from_millis(20);

/// How an agent came to take a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// The agent claimed it (socket or REST).
    Claim,
    /// The server gave it to the agent (`HANDOFF_ASSIGN=auto`).
    Auto,
}

impl Taking {
    /// The metric outcome.
    pub fn outcome(self) -> &'static str {
        match self {
            Taking::Claim => "claimed",
            Taking::Auto => "auto",
        }
    }
}

/// `agent` takes the queued conversation `session`. Exactly one taking wins
/// over all instances (the store's compare-and-set): another agent's claim,
/// or a second instance assigning the same conversation, gets
/// [`HandoffError::AlreadyClaimed`]. An agent already holding
/// `AGENT_MAX_CONVERSATIONS` gets [`HandoffError::AgentAtCapacity`]: the
/// count and the claim are one step under the agent's taking lease in the
/// store, so two claims of one agent on two instances cannot both pass it.
/// A taking dropped between the two (its socket closed) leaves the lease
/// to lapse in [`TAKING_LEASE`]; the agent's next taking waits for it.
/// Returns the `seq` of the `agent-joined` every tab gets.
///
/// # Errors
/// [`HandoffRefusal`]: the rule that refused it, or a failing store.
pub(super) async fn take_conversation(
    core: &Arc<ConversationCore>,
    agent: &AgentRef,
    session: &SessionId,
    taking: Taking,
) -> Result<Seq, HandoffRefusal> {
    let span = super::traces::claim_span(session, agent.id.as_str(), taking.outcome());
    let taken =
        tracing::Instrument::instrument(take(core, agent, session, taking), span.clone()).await;
    super::traces::claimed(&span, taken.as_ref().err());
    taken
}

/// [`take_conversation`] inside its span.
async fn take(
    core: &Arc<ConversationCore>,
    agent: &AgentRef,
    session: &SessionId,
    taking: Taking,
) -> Result<Seq, HandoffRefusal> {
    let now = Utc::now();
    let holder = lease_holder("taker_");
    lease_for_taking(core, &agent.id, &holder).await?;
    // Under the agent's lease: no other taking of theirs, on any instance,
    // counts between this count and this claim.
    let claimed = claim_with_room(core, agent, session, now).await;
    if let Err(e) = core.handoffs.end_taking(&agent.id, &holder).await {
        tracing::warn!(error = %ErrorChain(&e), "could not end an agent's taking lease");
    }
    let (t, taken) = claimed?;
    core.stats.handoff(taking.outcome());
    let logged = core.log_and_publish(session, t.events).await?;
    if let Some(h) = taken {
        let waited = (now - h.waiting_since).to_std().unwrap_or_default();
        core.stats.handoff_wait(taking.outcome(), waited);
        handoff_queue::record_wait(core, &h, waited).await;
    }
    if let Err(e) = core.presence.note_assigned(&agent.id, now).await {
        tracing::warn!(error = %ErrorChain(&e), "could not note when an agent last took a conversation");
    }
    handoff_queue::announce_moves(core).await;
    super::summary::start(core, &agent.id, session);
    Ok(logged.first().map_or(0, |e| e.seq))
}

/// A fresh lease holder's name.
fn lease_holder(kind: &str) -> String {
    MessageId::generate().as_str().replace("msg_", kind)
}

/// Waits (at most [`TAKING_WAIT`]) for `agent`'s taking lease.
///
/// # Errors
/// A failing store, or another taking that held it all that time.
async fn lease_for_taking(
    core: &ConversationCore,
    agent: &UserId,
    holder: &str,
) -> Result<(), HandoffRefusal> {
    let until = tokio::time::Instant::now() + TAKING_WAIT;
    while !core
        .handoffs
        .begin_taking(agent, holder, TAKING_LEASE)
        .await?
    {
        if tokio::time::Instant::now() >= until {
            let busy = StoreFailure::bare("another claim of this agent did not finish in time");
            return Err(ConversationStoreError::from(busy).into());
        }
        tokio::time::sleep(TAKING_RETRY).await;
    }
    Ok(())
}

/// The capacity check and the claim; what the conversation was before.
async fn claim_with_room(
    core: &ConversationCore,
    agent: &AgentRef,
    session: &SessionId,
    now: chrono::DateTime<Utc>,
) -> Result<(Transition, Option<Handoff>), HandoffRefusal> {
    let max = core.settings.handoff.max_conversations;
    let held = core.handoffs.held_by(&agent.id, max).await?.len();
    if !handoff::has_room(held, max) {
        return Err(HandoffError::AgentAtCapacity.into());
    }
    let mut taken: Option<Handoff> = None;
    let t = core
        .change(session, |current| {
            let h = current.ok_or(HandoffError::NotQueued)?;
            taken = Some(h.clone());
            h.claim(agent.clone(), now).map(Some)
        })
        .await?
        .ok_or_else(|| HandoffRefusal::from(HandoffError::NotQueued))?;
    Ok((t, taken))
}

/// With `HANDOFF_ASSIGN=auto`, gives waiting conversations, longest waiting
/// first, to available agents with room, until either runs out. One
/// instance at a time (the store's assignment lease), so the loads it weighs
/// are not changed by another instance's round meanwhile; a round that
/// finds the lease taken does nothing (the holder's round, or the next tick
/// of any instance's timers, within a second, assigns what this one would
/// have). Each assignment is [`take_conversation`], so a conversation a
/// claim got to first is skipped, never assigned twice.
pub(super) async fn assign_waiting(core: &Arc<ConversationCore>) {
    if core.settings.handoff.assign != AssignMode::Auto {
        return;
    }
    let holder = lease_holder("assigner_");
    match core.handoffs.lead_assignment(&holder, ASSIGN_LEASE).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not take the auto-assignment lease");
            return;
        }
    }
    if let Err(e) = assign_round(core).await {
        tracing::warn!(error = %ErrorChain(&e), "auto-assignment stopped early");
    }
    if let Err(e) = core.handoffs.end_assignment(&holder).await {
        tracing::warn!(error = %ErrorChain(&e), "could not end the auto-assignment lease");
    }
}

async fn assign_round(core: &Arc<ConversationCore>) -> Result<(), HandoffRefusal> {
    let queued = core.handoffs.queue(HANDOFF_LISTED).await?;
    if queued.is_empty() {
        return Ok(());
    }
    let mut candidates = candidates(core).await?;
    let max = core.settings.handoff.max_conversations;
    let mut waiting = queued.iter().peekable();
    while let Some(h) = waiting.peek() {
        let Some(i) = handoff::pick_agent(&candidates, max) else {
            break;
        };
        let Some(agent) = agent_ref_of(core, &candidates[i].id).await else {
            // No longer an agent: never a candidate again this round.
            candidates.swap_remove(i);
            continue;
        };
        match take_conversation(core, &agent, &h.session, Taking::Auto).await {
            Ok(_) => {
                core.stats.handoff_auto_assigned();
                tracing::info!(session_id = %h.session, agent_id = %agent.id, "conversation assigned");
                candidates[i].held += 1;
                candidates[i].last_assigned = Some(Utc::now());
                waiting.next();
            }
            // Claimed, cancelled or timed out meanwhile: the next one.
            Err(HandoffRefusal::Rule(HandoffError::AlreadyClaimed | HandoffError::NotQueued))
            | Err(HandoffRefusal::SessionGone) => {
                waiting.next();
            }
            // The agent claimed some meanwhile: weigh them as full.
            Err(HandoffRefusal::Rule(_)) => candidates[i].held = max,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The agents online and not away, with their loads.
async fn candidates(core: &ConversationCore) -> Result<Vec<Candidate>, HandoffRefusal> {
    let max = core.settings.handoff.max_conversations;
    let mut out = Vec::new();
    for agent in core.presence.roster(ROSTER_LIMIT).await? {
        if agent.away {
            continue;
        }
        let held = core.handoffs.held_by(&agent.id, max).await?.len();
        out.push(Candidate {
            id: agent.id,
            held,
            last_assigned: agent.last_assigned,
        });
    }
    Ok(out)
}

/// The agent as events name them, if the user store still knows them as an
/// active agent (a demoted one may still hold a socket for a few seconds).
async fn agent_ref_of(core: &ConversationCore, id: &UserId) -> Option<AgentRef> {
    match core.users.find_by_id(id).await {
        Ok(Some(user)) if user.may_hold_conversations() => Some(AgentRef {
            id: user.id,
            username: user.username,
        }),
        Ok(_) => None,
        Err(e) => {
            core.stats.store_error("users");
            tracing::warn!(error = %ErrorChain(&e), "could not read an agent to assign to");
            None
        }
    }
}
