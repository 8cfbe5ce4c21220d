//! The conversation's background loops: stops asked on other instances, the
//! reaper of generations whose owner vanished, and the handoff timers. They
//! run in tasks a [`ConversationLoops`] owns, started by `startup` beside the
//! services that share the same core.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conversation::ConversationCore;
use super::{generation, handoff};

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
