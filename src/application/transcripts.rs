//! Transcripts: every message is recorded as it is said (a failing store
//! only costs its entry, never the chat), read back page by page by the
//! conversation's owner and by agents, erased with the whole conversation by
//! its owner, and expired after `TRANSCRIPT_RETENTION` by a sweeper.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conversation::{ChatError, ConversationCore};
use super::ports::{Stats, TranscriptPage, TranscriptStore};
use crate::domain::transcript::TranscriptCursor;
use crate::domain::{SessionId, User};
use crate::error_chain::ErrorChain;

/// Entries a page holds when the reader does not say.
pub const TRANSCRIPT_PAGE_DEFAULT: usize = 50;

/// Most entries one page holds.
pub const TRANSCRIPT_PAGE_MAX: usize = 200;

/// Why a transcript was not shown or erased.
#[derive(Debug, Error)]
pub enum TranscriptRefusal {
    /// No such conversation, or not the reader's to see (or erase): the two
    /// are indistinguishable.
    #[error("session not found")]
    SessionGone,
    #[error(transparent)]
    Failed(#[from] ChatError),
}

/// A page of a transcript, and the conversation's satisfaction rating when
/// its customer gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub page: TranscriptPage,
    pub csat: Option<crate::domain::csat::CsatRecord>,
}

/// Reading and erasing transcripts.
#[derive(Clone)]
pub struct TranscriptService {
    core: Arc<ConversationCore>,
}

impl TranscriptService {
    pub fn new(core: Arc<ConversationCore>) -> Self {
        Self { core }
    }

    /// A page of the conversation's transcript: the newest `limit` entries
    /// before `before` (the newest of all without it), oldest first. Its
    /// owner and every agent may read it; anyone else is told it does not exist.
    /// The satisfaction rating comes with every page (answered ones only).
    pub async fn transcript(
        &self,
        reader: &User,
        session: &SessionId,
        before: Option<TranscriptCursor>,
        limit: usize,
    ) -> Result<Transcript, TranscriptRefusal> {
        let core = &self.core;
        let read = async {
            match core.owner_of(session).await? {
                Some(owner) if owner == reader.id || reader.is_agent() => {}
                _ => return Ok(None),
            }
            let page = core.transcripts.page(session, before, limit).await?;
            let csat = core
                .transcripts
                .csat(session)
                .await?
                .filter(|r| r.answer.is_some());
            Ok::<_, ChatError>(Some(Transcript { page, csat }))
        };
        match read.await {
            Ok(Some(page)) => Ok(page),
            Ok(None) => Err(TranscriptRefusal::SessionGone),
            Err(e) => {
                core.count_failure(&e);
                Err(e.into())
            }
        }
    }

    /// The owner erases the conversation: its session first (no chat can
    /// start after that), then whatever answer was running, its handoff, its
    /// event log and its transcript. Erasing again finds nothing.
    pub async fn erase_conversation(
        &self,
        owner: &User,
        session: &SessionId,
    ) -> Result<(), TranscriptRefusal> {
        let core = &self.core;
        let erased = async {
            match core.owner_of(session).await? {
                Some(o) if o == owner.id => {}
                _ => return Ok(false),
            }
            core.sessions.remove(session).await?;
            // Its partial answer is recorded before it ends, so the transcript
            // erased below holds it too.
            core.stop_and_wait(session).await;
            core.forget_handoff(session).await?;
            super::handoff_queue::announce_moves(core).await;
            core.log.erase(session).await?;
            let entries = core.transcripts.erase(session).await?;
            tracing::info!(session_id = %session, entries, "conversation erased by its owner");
            Ok::<_, ChatError>(true)
        };
        match erased.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TranscriptRefusal::SessionGone),
            Err(e) => {
                core.count_failure(&e);
                Err(e.into())
            }
        }
    }
}

/// Expires transcript entries older than the retention, every
/// [`RetentionSweeper::interval`], in a task it owns; [`stop`] cancels and
/// awaits that task.
///
/// [`stop`]: RetentionSweeper::stop
pub struct RetentionSweeper {
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RetentionSweeper {
    /// How often a retention is enforced: a tenth of it, between a second
    /// and an hour, so an entry outlives its retention by at most that.
    pub fn interval(retention: Duration) -> Duration {
        (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// Sweeps at once, then every [`RetentionSweeper::interval`].
    pub fn start(
        store: Arc<dyn TranscriptStore>,
        stats: Arc<dyn Stats>,
        retention: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweep_loop(store, stats, retention, stop.clone()));
        Self {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops sweeping and waits for the task to end (a sweep under way is
    /// abandoned: the next start sweeps again).
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for RetentionSweeper {
    fn drop(&mut self) {
        // An owner that never called `stop` still ends the task.
        self.stop.cancel();
    }
}

async fn sweep_loop(
    store: Arc<dyn TranscriptStore>,
    stats: Arc<dyn Stats>,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(RetentionSweeper::interval(retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The configuration bounds the retention to 100 years, which chrono holds.
    let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = Utc::now()
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let swept = tokio::select! {
            () = stop.cancelled() => return,
            swept = store.expire(cutoff) => swept,
        };
        match swept {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "expired transcript entries past their retention")
            }
            Err(e) => {
                stats.store_error("transcripts");
                tracing::warn!(error = %ErrorChain(&e), "could not expire old transcript entries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{MockStats, MockTranscriptStore, TranscriptStoreError};
    use std::sync::Mutex;

    #[test]
    fn the_sweep_interval_follows_the_retention_within_bounds() {
        let d = Duration::from_secs;
        assert_eq!(RetentionSweeper::interval(d(5)), d(1));
        assert_eq!(RetentionSweeper::interval(d(600)), d(60));
        assert_eq!(RetentionSweeper::interval(d(30 * 86_400)), d(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_expires_what_is_past_the_retention_until_stopped() {
        let cutoffs = Arc::new(Mutex::new(Vec::new()));
        let seen = cutoffs.clone();
        let mut store = MockTranscriptStore::new();
        store.expect_expire().returning(move |cutoff| {
            let mut seen = seen.lock().unwrap();
            seen.push(cutoff);
            // One failing sweep does not end the sweeper.
            if seen.len() == 2 {
                Err(TranscriptStoreError::from(StoreFailure::bare("down")))
            } else {
                Ok(3)
            }
        });
        let mut stats = MockStats::new();
        stats
            .expect_store_error()
            .withf(|s| s == "transcripts")
            .times(1)
            .returning(|_| ());
        let retention = Duration::from_secs(30);
        let started = Utc::now();
        let sweeper = RetentionSweeper::start(Arc::new(store), Arc::new(stats), retention);
        tokio::time::sleep(Duration::from_millis(6500)).await;
        sweeper.stop().await;
        let cutoffs = cutoffs.lock().unwrap().clone();
        // At once, then every 3 s: 0, 3, 6.
        assert_eq!(cutoffs.len(), 3, "{cutoffs:?}");
        for cutoff in cutoffs {
            let age = started - cutoff;
            assert!(
                age >= chrono::Duration::seconds(29) && age <= chrono::Duration::seconds(31),
                "{age:?}"
            );
        }
    }
}
