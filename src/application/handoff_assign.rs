//! An agent takes a conversation: [`take_conversation`] is the one place
//! where that happens, whether the agent claimed it or the server assigned
//! it (`HANDOFF_ASSIGN=auto`). Whatever must happen whenever an agent takes
//! a conversation (the capacity check, the wait's metrics and estimate, the
//! moves of those behind it) goes there and nowhere else.

use chrono::Utc;

use super::conversation::{ConversationCore, HandoffRefusal};
use super::handoff_queue;
use crate::domain::conversation::Seq;
use crate::domain::handoff::{self, AgentRef, Handoff, HandoffError};
use crate::domain::SessionId;
use crate::error_chain::ErrorChain;

/// How an agent came to take a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// The agent claimed it (socket or REST).
    Claim,
    /// The server gave it to the agent (`HANDOFF_ASSIGN=auto`).
    #[allow(dead_code)] // until auto-assignment lands, in the next commit
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
/// `AGENT_MAX_CONVERSATIONS` gets [`HandoffError::AgentAtCapacity`].
/// Returns the `seq` of the `agent-joined` every tab gets.
///
/// # Errors
/// [`HandoffRefusal`]: the rule that refused it, or a failing store.
pub(super) async fn take_conversation(
    core: &ConversationCore,
    agent: &AgentRef,
    session: &SessionId,
    taking: Taking,
) -> Result<Seq, HandoffRefusal> {
    let max = core.settings.handoff.max_conversations;
    let held = core.handoffs.held_by(&agent.id, max).await?.len();
    if !handoff::has_room(held, max) {
        return Err(HandoffError::AgentAtCapacity.into());
    }
    let now = Utc::now();
    let mut taken: Option<Handoff> = None;
    let t = core
        .change(session, |current| {
            let h = current.ok_or(HandoffError::NotQueued)?;
            taken = Some(h.clone());
            h.claim(agent.clone(), now).map(Some)
        })
        .await?
        .ok_or_else(|| HandoffRefusal::from(HandoffError::NotQueued))?;
    core.stats.handoff(taking.outcome());
    let logged = core.log_and_publish(session, t.events).await?;
    if let Some(h) = taken {
        let waited = (now - h.waiting_since).to_std().unwrap_or_default();
        core.stats.handoff_wait(waited);
        handoff_queue::record_wait(core, &h, waited).await;
    }
    if let Err(e) = core.presence.note_assigned(&agent.id, now).await {
        tracing::warn!(error = %ErrorChain(&e), "could not note when an agent last took a conversation");
    }
    handoff_queue::announce_moves(core).await;
    Ok(logged.first().map_or(0, |e| e.seq))
}
