//! Whether the user store holds an agent account, read at most every few
//! seconds: `HANDOFF=auto` offers a human only where a person could take the
//! conversation, and every instance reads the same store, so they agree
//! within [`AGENT_ACCOUNTS_FRESH`] of a `users set-role`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::ports::UserRepository;
use crate::error_chain::ErrorChain;

/// How long one reading of the store is trusted. An agent made with
/// `users set-role` is noticed within this (the issue asks for 10 s).
pub const AGENT_ACCOUNTS_FRESH: Duration = Duration::from_secs(5);

/// A cached answer to "is there an active agent account?".
pub struct AgentAccounts {
    users: Arc<dyn UserRepository>,
    /// The last answer and when it was read.
    last: Mutex<Option<(Instant, bool)>>,
}

impl AgentAccounts {
    pub fn new(users: Arc<dyn UserRepository>) -> Self {
        Self {
            users,
            last: Mutex::new(None),
        }
    }

    /// True when at least one active agent account exists. A store that
    /// fails keeps the last answer; with none yet it is "no": answering as
    /// the Node.js server did is never silence, a queue nobody sees would be.
    pub async fn exist(&self) -> bool {
        let cached = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, answer)) = cached {
            if at.elapsed() < AGENT_ACCOUNTS_FRESH {
                return answer;
            }
        }
        match self.users.agent_count().await {
            Ok(n) => {
                let answer = n > 0;
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), answer));
                answer
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not count agent accounts");
                cached.is_some_and(|(_, answer)| answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{MockUserRepository, UserStoreError};

    fn counting(counts: Vec<Result<u64, ()>>) -> AgentAccounts {
        let mut users = MockUserRepository::new();
        let mut counts = counts.into_iter();
        users.expect_agent_count().returning(move || {
            counts
                .next()
                .expect("read once per freshness window")
                .map_err(|()| UserStoreError::from(StoreFailure::bare("down")))
        });
        AgentAccounts::new(Arc::new(users))
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_made_while_running_is_noticed_within_the_window() {
        let accounts = counting(vec![Ok(0), Ok(1)]);
        assert!(!accounts.exist().await);
        // Cached: the store is not read again (the mock would panic).
        tokio::time::advance(AGENT_ACCOUNTS_FRESH / 2).await;
        assert!(!accounts.exist().await);
        tokio::time::advance(AGENT_ACCOUNTS_FRESH).await;
        assert!(accounts.exist().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_keeps_the_last_answer_or_says_no() {
        let never_read = counting(vec![Err(())]);
        assert!(!never_read.exist().await);
        let read_once = counting(vec![Ok(2), Err(())]);
        assert!(read_once.exist().await);
        tokio::time::advance(AGENT_ACCOUNTS_FRESH * 2).await;
        assert!(read_once.exist().await, "kept through the failure");
    }
}
