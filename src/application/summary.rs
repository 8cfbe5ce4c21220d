//! The summary an agent gets on taking a conversation: one request to the AI
//! (its usual streaming endpoint, the text collected) with the conversation
//! so far and the summary prompt, kept with the handoff while the agent
//! holds it (a console that connects later gets it with the conversation)
//! and passed to the agent's sockets as a live signal. It runs in a task of
//! its own, tracked with the generations and cancelled at shutdown, so
//! taking a conversation never waits for the AI; an AI that fails or is slow
//! only means no summary.

use std::sync::Arc;

use futures_util::StreamExt;

use super::conversation::{ConversationCore, SummarySettings};
use super::ports::{AiError, AiPurpose, AiRequest};
use crate::domain::answer::AnswerDelta;
use crate::domain::signal::{Signal, SignalTopic, SUMMARY_MAX_CHARS};
use crate::domain::{SessionId, UserId};
use crate::error_chain::ErrorChain;

/// Why there is no summary.
#[derive(Debug, thiserror::Error)]
enum NoSummary {
    #[error("the conversation has nothing to summarise yet")]
    Empty,
    #[error("the session is gone")]
    SessionGone,
    #[error("the AI did not answer in time")]
    TimedOut,
    #[error("the AI request failed")]
    Ai(#[from] AiError),
    #[error("the session could not be read")]
    Store(#[source] super::ports::SessionStoreError),
}

/// Starts the summary of `session` for `agent`, who has just taken it (by
/// their claim or an automatic assignment; called from the one place that
/// happens), in the background when `HANDOFF_SUMMARY` is on; returns at once.
pub(super) fn start(core: &Arc<ConversationCore>, agent: &UserId, session: &SessionId) {
    let Some(settings) = core.settings.handoff.summary.clone() else {
        return;
    };
    let task_core = core.clone();
    let traced = super::traces::answer_span(&core.settings.ai, AiPurpose::Summary, session, None);
    let (agent, session) = (agent.clone(), session.clone());
    let task = async move {
        tokio::select! {
            () = task_core.draining.cancelled() => {}
            () = summarize(&task_core, &agent, &session, &settings) => {}
        }
    };
    core.tasks
        .spawn(tracing::Instrument::instrument(task, traced));
}

/// Asks for the summary and hands it to the agent's sockets, on any instance.
async fn summarize(
    core: &Arc<ConversationCore>,
    agent: &UserId,
    session: &SessionId,
    settings: &SummarySettings,
) {
    let asked = tokio::time::timeout(settings.timeout, ask(core, session, &settings.prompt));
    let text = match asked.await.unwrap_or(Err(NoSummary::TimedOut)) {
        Ok(text) => text,
        Err(why) => {
            tracing::info!(session_id = %session, reason = %ErrorChain(&why), "no summary for the agent");
            return;
        }
    };
    let Some(summary) = Signal::summary(session.clone(), &text) else {
        tracing::info!(session_id = %session, "the AI's summary was empty");
        return;
    };
    if let Signal::HandoffSummary { summary: kept, .. } = &summary {
        // Kept with the handoff, so a console that opens it later shows it.
        match core.handoffs.keep_summary(session, agent, kept).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(session_id = %session, "the agent no longer holds the conversation summarised");
                return;
            }
            Err(e) => {
                core.stats.store_error("conversations");
                tracing::info!(session_id = %session, error = %ErrorChain(&e), "could not keep a summary");
            }
        }
    }
    let topic = SignalTopic::Agent(agent.clone());
    if let Err(e) = core.signals.publish(&topic, summary).await {
        core.stats.store_error("conversations");
        tracing::info!(session_id = %session, error = %ErrorChain(&e), "could not pass on a summary");
    }
}

/// One request with the conversation so far; the text of its answer.
async fn ask(
    core: &ConversationCore,
    session: &SessionId,
    prompt: &str,
) -> Result<String, NoSummary> {
    let stored = core
        .sessions
        .get(session)
        .await
        .map_err(NoSummary::Store)?
        .ok_or(NoSummary::SessionGone)?;
    if stored.history.is_empty() {
        return Err(NoSummary::Empty);
    }
    let request = AiRequest {
        query: prompt.to_owned(),
        user_id: stored.user.id,
        session_id: session.clone(),
        history: stored.history,
        trace: None,
        purpose: AiPurpose::Summary,
    };
    let mut stream = core.ai.stream(request).await?;
    let mut text = String::new();
    while let Some(delta) = stream.next().await {
        if let AnswerDelta::Text(t) = delta? {
            text.push_str(&t);
        }
        // Enough to show: the rest would be cut anyway.
        if text.len() > SUMMARY_MAX_CHARS * 4 {
            break;
        }
    }
    Ok(text)
}
