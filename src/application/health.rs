//! Health as the probes read it: a background task asks the user store, the
//! session store and the AI service in turn, each within a timeout, and keeps
//! the last answers, so `/health`, `/health/ready` and `/health/live` answer
//! at once however slow a dependency is (a Kubernetes probe gives up after a
//! second), and the AI is no longer asked once per probe.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ports::{AiHealth, AiModel, SessionStore, UserRepository};
use crate::error_chain::ErrorChain;

/// The longest one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a health request right after start-up waits for the first
/// answers (a reachable dependency answers well within it).
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_millis(60);

/// What the last probe of one store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Not probed yet.
    Pending,
    Ok,
    /// Failed, or no answer within [`PROBE_TIMEOUT`].
    Failed,
}

/// The last answers of every dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthReport {
    pub users: Probe,
    pub sessions: Probe,
    /// `None` until the AI has been probed once.
    pub ai: Option<AiHealth>,
}

impl HealthReport {
    const PENDING: Self = Self {
        users: Probe::Pending,
        sessions: Probe::Pending,
        ai: None,
    };

    fn complete(&self) -> bool {
        self.users != Probe::Pending && self.sessions != Probe::Pending && self.ai.is_some()
    }
}

/// What the monitor probes.
pub struct HealthTargets {
    pub users: Arc<dyn UserRepository>,
    pub sessions: Arc<dyn SessionStore>,
    pub ai: Arc<dyn AiModel>,
}

/// Probes the dependencies every `interval` in a task it owns; [`stop`]
/// cancels and awaits that task.
///
/// [`stop`]: HealthMonitor::stop
pub struct HealthMonitor {
    report: watch::Receiver<HealthReport>,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl HealthMonitor {
    /// Starts probing at once, then every `interval`.
    pub fn start(targets: HealthTargets, interval: Duration) -> Self {
        let (tx, report) = watch::channel(HealthReport::PENDING);
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe_loop(targets, interval, tx, stop.clone()));
        Self {
            report,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// The last answers. Right after start-up, waits up to
    /// [`FIRST_ANSWER_WAIT`] for the first ones; whatever is still pending
    /// then is reported as pending.
    pub async fn report(&self) -> HealthReport {
        let mut rx = self.report.clone();
        let first = tokio::time::timeout(FIRST_ANSWER_WAIT, async {
            rx.wait_for(HealthReport::complete).await.map(|r| *r)
        })
        .await;
        match first {
            Ok(Ok(report)) => report,
            _ => *self.report.borrow(),
        }
    }

    /// Stops probing and waits for the probe task to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        // An owner that never called `stop` (a test) still ends the task.
        self.stop.cancel();
    }
}

/// Runs `probe` within [`PROBE_TIMEOUT`]; no answer is a failure.
async fn within<T>(fallback: T, probe: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or(fallback)
}

async fn probe_loop(
    targets: HealthTargets,
    interval: Duration,
    report: watch::Sender<HealthReport>,
    stop: CancellationToken,
) {
    loop {
        // Each answer is published as it comes, so a slow AI does not hold
        // back what the stores said.
        let users = async {
            let ok = within(false, async {
                match targets.users.ping().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "user store health check failed");
                        false
                    }
                }
            })
            .await;
            report.send_modify(|r| r.users = probe(ok));
        };
        let sessions = async {
            let ok = within(false, async {
                match targets.sessions.counts().await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "session store health check failed");
                        false
                    }
                }
            })
            .await;
            report.send_modify(|r| r.sessions = probe(ok));
        };
        let ai = async {
            let health = within(AiHealth::Unreachable, targets.ai.health()).await;
            report.send_modify(|r| r.ai = Some(health));
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = async { tokio::join!(users, sessions, ai) } => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn probe(ok: bool) -> Probe {
    if ok {
        Probe::Ok
    } else {
        Probe::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        MockAiModel, MockSessionStore, MockUserRepository, SessionCounts, UserStoreError,
    };

    fn targets(users_ok: bool) -> HealthTargets {
        let mut users = MockUserRepository::new();
        users.expect_ping().returning(move || {
            if users_ok {
                Ok(())
            } else {
                Err(UserStoreError::from(StoreFailure::bare("down")))
            }
        });
        let mut sessions = MockSessionStore::new();
        sessions
            .expect_counts()
            .returning(|| Ok(SessionCounts::default()));
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Ok);
        HealthTargets {
            users: Arc::new(users),
            sessions: Arc::new(sessions),
            ai: Arc::new(ai),
        }
    }

    #[tokio::test]
    async fn reports_each_answer_and_stops_its_task() {
        let monitor = HealthMonitor::start(targets(false), Duration::from_secs(60));
        let report = monitor.report().await;
        assert_eq!(report.users, Probe::Failed);
        assert_eq!(report.sessions, Probe::Ok);
        assert_eq!(report.ai, Some(AiHealth::Ok));
        monitor.stop().await;
        assert!(monitor.task.lock().unwrap().is_none());
    }
}
