//! The token usage port: how many tokens each user's answers cost in a
//! budget window, counted once per answer and shared by every instance.

use async_trait::async_trait;
use thiserror::Error;

use super::StoreFailure;
use crate::domain::budget::WindowSpan;
use crate::domain::UserId;

/// Failures of a [`UsageStore`]: its store did not answer or answered with
/// something unusable. For logs only; a client never sees it.
#[derive(Debug, Error)]
#[error("usage store unavailable")]
pub struct UsageStoreError(#[from] pub StoreFailure);

/// Each user's token count per budget window, shared by every instance and
/// kept across restarts.
///
/// # Errors
/// Every method returns [`UsageStoreError`] when the store fails, and nothing
/// else.
/// - `add` MUST add `tokens` atomically with respect to every other `add` on
///   any instance, and return the user's count in `window` after it.
/// - `used` of a user or window never counted is `0`; windows of another
///   length are counted apart.
/// - An adapter MAY forget a window once it has ended.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UsageStore: Send + Sync {
    async fn add(
        &self,
        user: &UserId,
        window: WindowSpan,
        tokens: u64,
    ) -> Result<u64, UsageStoreError>;
    async fn used(&self, user: &UserId, window: WindowSpan) -> Result<u64, UsageStoreError>;
}
