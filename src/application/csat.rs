//! Satisfaction after a handoff: once an agent resolves a conversation its
//! customer is asked how it went (`csat-request`, in the log), and may answer
//! 1 to 5 with a comment within 24 hours; the answer is kept with the
//! transcript, counted, logged for every tab and passed to the agent who
//! resolved it. A second answer replaces the first.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::conversation::ChatError;
use super::handoff::HandoffService;
use crate::domain::conversation::{ConversationEvent, Seq};
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::handoff::AgentRef;
use crate::domain::signal::{Signal, SignalTopic};
use crate::domain::{SessionId, UserId, Username};

/// How many of an agent's latest ratings their console is given.
pub const RATINGS_SHOWN: usize = 20;

/// A rating as an agent's console shows it: the record, and the customer's
/// name while the user store knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenRating {
    pub record: CsatRecord,
    pub customer: Option<Username>,
}
use crate::error_chain::ErrorChain;

/// Why an answer was not kept.
#[derive(Debug, Error)]
pub enum CsatRefusal {
    /// Nobody asked, or the request is older than the window.
    #[error("no satisfaction rating was asked for in the last 24 hours")]
    NotRequested,
    #[error(transparent)]
    Failed(#[from] ChatError),
}

impl HandoffService {
    /// Keeps that `owner` is asked how the conversation `agent` resolved
    /// went. A store that fails only costs the answer (logged here).
    pub(super) async fn ask_satisfaction(
        &self,
        session: &SessionId,
        owner: UserId,
        agent: AgentRef,
        at: DateTime<Utc>,
    ) {
        let record = CsatRecord {
            session: session.clone(),
            user: owner,
            agent,
            requested_at: at,
            answer: None,
        };
        if let Err(e) = self.core.transcripts.request_csat(&record).await {
            self.core.stats.store_error("transcripts");
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not keep a satisfaction request");
        }
    }

    /// The latest ratings of conversations `agent` resolved (at most
    /// [`RATINGS_SHOWN`]), kept with the transcripts. A failing store gives
    /// none (logged).
    pub async fn ratings_of(&self, agent: &UserId) -> Vec<GivenRating> {
        let core = &self.core;
        let records = match core.transcripts.ratings_of(agent, RATINGS_SHOWN).await {
            Ok(records) => records,
            Err(e) => {
                core.stats.store_error("transcripts");
                tracing::warn!(error = %ErrorChain(&e), "could not read an agent's ratings");
                return Vec::new();
            }
        };
        let mut given = Vec::with_capacity(records.len());
        for record in records {
            let customer = match core.users.find_by_id(&record.user).await {
                Ok(user) => user.map(|u| u.username),
                Err(e) => {
                    tracing::info!(error = %ErrorChain(&e), "could not name a rating's customer");
                    None
                }
            };
            given.push(GivenRating { record, customer });
        }
        given
    }

    /// The customer of `session` (the caller's own) says how it went.
    /// Returns the seq of the `csat` event every tab gets.
    ///
    /// # Errors
    /// [`CsatRefusal::NotRequested`] without a request in the window (a
    /// session that is not `user`'s has none for them), or a failing store.
    pub async fn csat(
        &self,
        session: &SessionId,
        user: &UserId,
        csat: Csat,
    ) -> Result<Seq, CsatRefusal> {
        let core = &self.core;
        // Someone else's session has nothing asked of this user, and is
        // never written to.
        if core.counted(core.owner_of(session).await)?.as_ref() != Some(user) {
            return Err(CsatRefusal::NotRequested);
        }
        let now = Utc::now();
        let kept = core
            .transcripts
            .answer_csat(session, &csat, now, CsatRecord::open_since(now))
            .await
            .map_err(ChatError::from);
        let Some(record) = core.counted(kept)? else {
            return Err(CsatRefusal::NotRequested);
        };
        core.stats.csat(csat.rating.get());
        let said = ConversationEvent::Csat { csat: csat.clone() };
        let logged = core.log_and_publish(session, vec![said]).await?;
        let signal = Signal::Csat {
            session: session.clone(),
            csat,
        };
        let topic = SignalTopic::Agent(record.agent.id);
        if let Err(e) = core.signals.publish(&topic, signal).await {
            tracing::info!(error = %ErrorChain(&e), "could not tell the agent of a rating");
        }
        Ok(logged.first().map_or(0, |e| e.seq))
    }
}
