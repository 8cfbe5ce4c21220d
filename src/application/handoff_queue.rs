//! Where queued customers stand, told through their conversation's log: a
//! `handoff-queued` with the place a conversation took, then one
//! `queue-position` each time it moves up (someone ahead taken, cancelled,
//! timed out or sent back at closing). Logged, so every tab on every
//! instance gets it in `seq` order and a tab that comes back replays where
//! it stands; the store's atomic note of the position each customer was
//! last told keeps it to one event per move, whichever instances notice it.

use std::collections::HashSet;
use std::time::Duration;

use super::conversation::{ConversationCore, HANDOFF_LISTED};
use crate::domain::conversation::ConversationEvent;
use crate::domain::handoff::{Handoff, Mode, Transition};
use crate::domain::queue::{self, QueuePlace};
use crate::domain::SessionId;
use crate::error_chain::ErrorChain;

/// The recent waits per place (none when the store cannot say: the estimate
/// is then `null`, and nothing else suffers).
async fn recent_waits(core: &ConversationCore) -> Vec<Duration> {
    core.handoffs.recent_waits().await.unwrap_or_else(|e| {
        tracing::warn!(error = %ErrorChain(&e), "could not read recent handoff waits");
        Vec::new()
    })
}

/// The place a conversation entering the queue will take: behind everyone
/// queued now. Read before its swap, for the record; concurrent arrivals
/// may share one, which only blurs the estimate a little.
pub(super) async fn entering_place(core: &ConversationCore) -> u64 {
    core.handoffs.queue_length().await.unwrap_or(0) + 1
}

/// `t`, a transition that put `session` in the queue and is stored, with the
/// place it took in its `handoff-queued`; the place is noted as told.
pub(super) async fn placed(
    core: &ConversationCore,
    session: &SessionId,
    t: Transition,
) -> Transition {
    let entered = t.next.as_ref().map_or(1, |h| h.entered_at.max(1));
    let position = match core.handoffs.position(session).await {
        Ok(Some(p)) => p,
        // Taken meanwhile: the events that follow say so.
        Ok(None) => entered,
        Err(e) => {
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not read a place in the queue");
            entered
        }
    };
    if let Err(e) = core.handoffs.note_entry(session, position).await {
        tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not note a place in the queue");
    }
    t.placed(queue::place(position, &recent_waits(core).await))
}

/// Keeps how long a conversation that was taken waited, per place it
/// entered at, for the estimates of those still waiting.
pub(super) async fn record_wait(core: &ConversationCore, taken: &Handoff, waited: Duration) {
    let per_place = queue::wait_per_place(waited, taken.entered_at);
    if let Err(e) = core.handoffs.record_wait(per_place).await {
        tracing::warn!(error = %ErrorChain(&e), "could not record a handoff wait");
    }
}

/// After a conversation left the queue: everyone behind it moved up.
pub(super) async fn announce_moves(core: &ConversationCore) {
    match core.handoffs.queue(HANDOFF_LISTED).await {
        Ok(queued) => announce(core, &queued).await,
        Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not read the handoff queue"),
    }
}

/// Tells the customers of `queued` (the queue as listed, longest waiting
/// first; other modes are skipped) who moved up since they were last told.
pub(super) async fn announce(core: &ConversationCore, queued: &[Handoff]) {
    let places: Vec<(SessionId, u64)> = (1..)
        .zip(queued.iter().filter(|h| h.mode == Mode::Queued))
        .map(|(p, h)| (h.session.clone(), p))
        .collect();
    if places.is_empty() {
        return;
    }
    let moved: HashSet<SessionId> = match core.handoffs.note_moves(&places).await {
        Ok(moved) if moved.is_empty() => return,
        Ok(moved) => moved.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not note moves in the handoff queue");
            return;
        }
    };
    let recent = recent_waits(core).await;
    for (session, position) in places.iter().filter(|(s, _)| moved.contains(s)) {
        let place: QueuePlace = queue::place(*position, &recent);
        let event = ConversationEvent::QueuePosition { place };
        if let Err(e) = core.log_and_publish(session, vec![event]).await {
            tracing::warn!(session_id = %session, error = %ErrorChain(&e), "could not tell a customer their place in the queue");
        }
    }
}
