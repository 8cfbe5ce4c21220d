//! The conversation's background loops: stops asked on other instances, the
//! reaper of generations whose owner vanished, the handoff timers and the
//! desk the agent consoles show. They
//! run in tasks a [`ConversationLoops`] owns, started by `startup` beside the
//! services that share the same core.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conversation::ConversationCore;
use super::{desk, generation, handoff};

/// Runs the background loops of one conversation core; [`stop`] cancels and
/// awaits them, and dropping it cancels them.
///
/// [`stop`]: ConversationLoops::stop
pub struct ConversationLoops {
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ConversationLoops {
    /// Starts every loop on `core`.
    pub fn start(core: &Arc<ConversationCore>) -> Self {
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(generation::listen_for_stops(core.clone(), stop.clone())),
            tokio::spawn(generation::reap_abandoned(core.clone(), stop.clone())),
            tokio::spawn(handoff::run_timers(core.clone(), stop.clone())),
            tokio::spawn(desk::keep_desk(core.clone(), stop.clone())),
        ];
        Self {
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    /// Stops the loops and waits for them to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for ConversationLoops {
    fn drop(&mut self) {
        // An owner that never called `stop` (a test) still ends the tasks.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::application::conversation::{ChatPorts, ConversationSettings, HandoffSettings};
    use crate::application::limits::Limits;
    use crate::application::ports::{
        MockAgentPresence, MockAiModel, MockBackplane, MockEventLog, MockGenerationRegistry,
        MockHandoffStore, MockLiveDelivery, MockSessionStore, MockStats, MockTranscriptStore,
        MockUserRepository,
    };

    /// A core whose loops find nothing to do.
    fn idle_core() -> Arc<ConversationCore> {
        let mut registry = MockGenerationRegistry::new();
        registry
            .expect_stop_requests()
            .returning(|| Box::pin(futures_util::stream::pending()));
        registry.expect_reap_expired().returning(|| Ok(Vec::new()));
        let mut handoffs = MockHandoffStore::new();
        handoffs.expect_active().returning(|_| Ok(Vec::new()));
        handoffs
            .expect_changes()
            .returning(|| tokio::sync::broadcast::channel(1).1);
        let mut presence = MockAgentPresence::new();
        presence.expect_seen().returning(|_, _| Ok(Vec::new()));
        let mut stats = MockStats::new();
        stats.expect_handoff_queue_length().returning(|_| ());
        let ports = ChatPorts {
            sessions: Arc::new(MockSessionStore::new()),
            ai: Arc::new(MockAiModel::new()),
            stats: Arc::new(stats),
            log: Arc::new(MockEventLog::new()),
            live: Arc::new(MockLiveDelivery::new()),
            backplane: Arc::new(MockBackplane::new()),
            registry: Arc::new(registry),
            handoffs: Arc::new(handoffs),
            presence: Arc::new(presence),
            signals: Arc::new(crate::adapters::outbound::local_signals::LocalSignals::default()),
            transcripts: Arc::new(MockTranscriptStore::new()),
            users: Arc::new(MockUserRepository::new()),
            usage: Arc::new(crate::adapters::outbound::memory_usage::InMemoryUsageStore::default()),
            token_counter: Arc::new(crate::adapters::outbound::o200k::O200kCounter),
        };
        let settings = ConversationSettings {
            session_ttl: Duration::from_secs(3600),
            lease: Duration::from_secs(10),
            unattended_timeout: Duration::from_secs(60),
            handoff: HandoffSettings::default(),
            answers: crate::application::AnswerSettings::default(),
            ai: crate::application::AiLabels::default(),
        };
        Arc::new(ConversationCore::new(ports, settings, Limits::off()))
    }

    #[tokio::test]
    async fn stop_ends_every_loop_and_waits_for_it() {
        let core = idle_core();
        let loops = ConversationLoops::start(&core);
        assert_eq!(Arc::strong_count(&core), 5, "each loop holds the core");
        loops.stop().await;
        assert_eq!(Arc::strong_count(&core), 1, "no loop is left running");
    }

    #[tokio::test]
    async fn an_owner_dropped_without_stop_still_ends_the_loops() {
        let core = idle_core();
        drop(ConversationLoops::start(&core));
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while Arc::strong_count(&core) > 1 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(ended.is_ok(), "the loops outlived their owner");
    }
}
