//! Agents who stop being agents (demoted, deactivated, deleted, or logged out
//! everywhere) give back what they hold at once: a conversation held by
//! someone who can no longer answer it would leave the customer muted and
//! unheard until `AGENT_AWAY_GRACE`, or for ever while their socket stays open.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::conversation::{ChatError, ConversationCore, HandoffRefusal, HANDOFF_LISTED};
use crate::domain::handoff::{Handoff, HandoffError};
use crate::domain::{SessionId, UserId};
use crate::error_chain::ErrorChain;

/// How often the timers check the holders of assigned conversations against
/// the user store: a demotion made by another process (the operator's
/// command) is noticed within this and a timer tick.
pub const STANDING_CHECK: Duration = Duration::from_secs(5);

/// The metric outcome of a conversation given back this way.
const OUTCOME: &str = "agent_revoked";

/// Gives every conversation `agent` holds back to the queue; how many went.
pub(super) async fn give_back(core: &ConversationCore, agent: &UserId) -> Result<usize, ChatError> {
    let held = core.handoffs.held_by(agent, HANDOFF_LISTED).await?;
    let mut given = 0;
    for h in held {
        if give_back_one(core, &h.session, agent).await {
            given += 1;
        }
    }
    Ok(given)
}

/// One conversation back to the queue, if `agent` still holds it.
async fn give_back_one(core: &ConversationCore, session: &SessionId, agent: &UserId) -> bool {
    let online = core.presence.online_count().await.unwrap_or(0);
    let now = Utc::now();
    let entering = super::handoff_queue::entering_place(core).await;
    let released = core
        .change(session, |current| {
            let h = current.ok_or(HandoffError::NotAssigned)?;
            h.release(agent, online, now)
                .map(|t| Some(t.entering_at(entering)))
        })
        .await;
    let t = match released {
        Ok(Some(t)) => t,
        // Released, resolved or taken back meanwhile: nothing left to give.
        Ok(None) | Err(HandoffRefusal::Rule(_)) => return false,
        Err(e) => {
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not give a conversation back to the queue");
            return false;
        }
    };
    core.stats.handoff(OUTCOME);
    tracing::info!(session_id = %session, agent_id = %agent, "conversation given back: its agent may no longer hold it");
    let t = super::handoff_queue::placed(core, session, t).await;
    if let Err(e) = core.log_and_publish(session, t.events).await {
        tracing::error!(session_id = %session, error = %ErrorChain(&e), "could not log a conversation given back");
    }
    true
}

/// When the timers last checked the holders.
pub(super) struct StandingCheck {
    next: Instant,
}

impl StandingCheck {
    pub(super) fn new() -> Self {
        Self {
            next: Instant::now(),
        }
    }
}

/// Every [`STANDING_CHECK`], gives back the conversations of holders the
/// user store no longer knows as active agents, whether or not they have a
/// socket open anywhere. A store that fails takes nothing away.
pub(super) async fn reclaim_from_former_agents(
    core: &ConversationCore,
    active: &[Handoff],
    check: &mut StandingCheck,
) {
    let now = Instant::now();
    if now < check.next {
        return;
    }
    check.next = now + STANDING_CHECK;
    let holders: HashSet<&UserId> = active
        .iter()
        .filter_map(|h| h.mode.agent().map(|a| &a.id))
        .collect();
    for agent in holders {
        match core.users.find_by_id(agent).await {
            Ok(Some(user)) if user.may_hold_conversations() => {}
            Ok(_) => {
                if let Err(e) = give_back(core, agent).await {
                    tracing::warn!(agent_id = %agent, error = %ErrorChain(&e), "could not give back a former agent's conversations");
                }
            }
            Err(e) => {
                core.stats.store_error("users");
                tracing::warn!(error = %ErrorChain(&e), "could not check an agent's role");
            }
        }
    }
}
