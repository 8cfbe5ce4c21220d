//! [`UsageStore`] in process: for tests and as the model the contract suite
//! checks the shared adapters against. The server itself counts in Redis or
//! the SQLite file, which outlive a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::application::ports::{UsageStore, UsageStoreError};
use crate::domain::budget::WindowSpan;
use crate::domain::UserId;

/// Most counts kept; ended windows are dropped first, then (should that not
/// be enough) everything, as a store that forgets beats one that grows.
const MAX_ENTRIES: usize = 100_000;

/// Counts per (user, window).
#[derive(Debug, Default)]
pub struct InMemoryUsageStore {
    counts: Mutex<HashMap<(UserId, WindowSpan), u64>>,
}

#[async_trait]
impl UsageStore for InMemoryUsageStore {
    async fn add(
        &self,
        user: &UserId,
        window: WindowSpan,
        tokens: u64,
    ) -> Result<u64, UsageStoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= MAX_ENTRIES {
            counts.retain(|(_, w), _| w.end() > window.start);
            if counts.len() >= MAX_ENTRIES {
                counts.clear();
            }
        }
        let count = counts.entry((user.clone(), window)).or_default();
        *count = count.saturating_add(tokens);
        Ok(*count)
    }

    async fn used(&self, user: &UserId, window: WindowSpan) -> Result<u64, UsageStoreError> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        Ok(counts.get(&(user.clone(), window)).copied().unwrap_or(0))
    }
}
