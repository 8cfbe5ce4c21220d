//! Typing between a customer and the agent holding their conversation: a
//! live-only signal, at most one per second per sender (extras are dropped
//! quietly), heard by the other side on any instance; see
//! [`crate::domain::signal`]. A sender is a side of a conversation, so a
//! customer's tabs (or an agent's consoles) share one rate on an instance,
//! and a start of typing is also counted over every instance (the rate
//! limiter's store), so tabs on two instances share it too. A stop is let
//! through whenever this instance passed the start before it, so the other
//! side never keeps seeing someone type who stopped.

use super::conversation::{ChatError, HandoffRefusal};
use super::handoff::HandoffService;
use crate::domain::handoff::HandoffError;
use crate::domain::signal::{Side, Signal, SignalTopic};
use crate::domain::{SessionId, User};
use crate::error_chain::ErrorChain;

impl HandoffService {
    /// A customer's tab says whether the customer is typing. Only the agent
    /// holding the conversation hears it: with nobody holding it (the bot
    /// answers, or it waits in the queue) it goes nowhere, without an error.
    ///
    /// # Errors
    /// [`ChatError`] when the handoff state cannot be read.
    pub async fn customer_typing(&self, session: &SessionId, state: bool) -> Result<(), ChatError> {
        if !self.admit_typing(session, Side::Customer, state).await {
            return Ok(());
        }
        let held = self.handoff(session).await?;
        if held.is_some_and(|h| h.mode.agent().is_some()) {
            self.signal(session, Side::Customer, state).await;
        }
        Ok(())
    }

    /// The agent says whether they are typing to the customer: every tab of
    /// the customer hears it.
    ///
    /// # Errors
    /// [`HandoffError::NotAssigned`] when `agent` does not hold the
    /// conversation; [`HandoffRefusal::Failed`] when its state cannot be read.
    pub async fn agent_typing(
        &self,
        agent: &User,
        session: &SessionId,
        state: bool,
    ) -> Result<(), HandoffRefusal> {
        let held = self.handoff(session).await?;
        if !held.is_some_and(|h| h.mode.agent().is_some_and(|a| a.id == agent.id)) {
            return Err(HandoffError::NotAssigned.into());
        }
        if self.admit_typing(session, Side::Agent, state).await {
            self.signal(session, Side::Agent, state).await;
        }
        Ok(())
    }

    /// Whether this side's typing may go on now: one rate per sender on
    /// this instance, whichever socket it came from, and a start counted
    /// over all instances.
    async fn admit_typing(&self, session: &SessionId, side: Side, state: bool) -> bool {
        let here = {
            let now = tokio::time::Instant::now().into_std();
            let mut typists = self.core.typists.lock().unwrap_or_else(|p| p.into_inner());
            typists.admit(&(session.clone(), side), state, now)
        };
        here && (!state || self.core.limits.typing(session, side).await)
    }

    /// A signal lost to a failing transport is only a missed courtesy.
    async fn signal(&self, session: &SessionId, from: Side, state: bool) {
        let typing = Signal::Typing {
            session: session.clone(),
            from,
            state,
        };
        let topic = SignalTopic::Session(session.clone());
        if let Err(e) = self.core.signals.publish(&topic, typing).await {
            self.core.stats.store_error("conversations");
            tracing::info!(error = %ErrorChain(&e), "could not pass on typing");
        }
    }
}
