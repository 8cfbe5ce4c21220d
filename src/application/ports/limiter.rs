//! The rate-limit port: sliding-window quotas and leased concurrency slots,
//! for one instance or for all of them.

use async_trait::async_trait;
use thiserror::Error;

use super::StoreFailure;

/// Failures of a [`RateLimiter`]: its store did not answer or answered with
/// something unusable. For logs only; a client never sees it.
#[derive(Debug, Error)]
#[error("rate limiter unavailable")]
pub struct RateLimitError(#[from] pub StoreFailure);

/// A sliding-window quota: at most `max` events under `key` in any `window`.
/// All `max` may arrive at once; the next is refused until the oldest of them
/// is `window` old.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// What is counted, in the application's words (`chat:user:<id>`).
    pub key: String,
    pub max: u32,
    pub window: std::time::Duration,
}

/// One counted event, so it can be taken back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(pub String);

/// The answer to [`RateLimiter::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted against every quota.
    Admitted(EventId),
    /// At least one quota is full; nothing was counted. `retry_after` is when
    /// every full quota will have room again (at least one millisecond).
    Refused { retry_after: std::time::Duration },
}

/// One held slot of a concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotId(pub String);

/// Counts events in sliding windows and holds concurrency slots, for one
/// instance (in process) or for all of them (Redis). Slots are leases: one
/// its holder stops renewing (its instance crashed) frees itself when the
/// lease runs out.
///
/// # Errors
/// Every method returns [`RateLimitError`] when the store fails, and nothing
/// else; a refusal is an answer, not an error.
/// - `admit` MUST be atomic over all its quotas and across instances: either
///   the event is counted in every quota, or in none and it answers
///   `Refused` with the longest wait among the full ones.
/// - `withdraw` of an event that was never counted (or has left the window)
///   is not an error; neither is `reset` of an unknown key.
/// - `acquire` MUST be atomic across instances: of `max + 1` concurrent calls
///   for one key, exactly `max` get a slot. Expired slots never count.
/// - `renew` returns `false` when the slot is no longer held (released or
///   expired); `release` of a slot not held is not an error.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn admit(&self, quotas: &[Quota]) -> Result<Admission, RateLimitError>;
    /// Takes a counted event back out of the given keys' windows.
    async fn withdraw(&self, keys: &[String], event: &EventId) -> Result<(), RateLimitError>;
    /// Forgets every event counted under `key`.
    async fn reset(&self, key: &str) -> Result<(), RateLimitError>;
    /// One of `max` slots of `key`, held for `lease`; `None` when all are held.
    async fn acquire(
        &self,
        key: &str,
        max: u32,
        lease: std::time::Duration,
    ) -> Result<Option<SlotId>, RateLimitError>;
    async fn renew(
        &self,
        key: &str,
        slot: &SlotId,
        lease: std::time::Duration,
    ) -> Result<bool, RateLimitError>;
    async fn release(&self, key: &str, slot: &SlotId) -> Result<(), RateLimitError>;
}
