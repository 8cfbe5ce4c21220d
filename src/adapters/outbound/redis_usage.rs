//! [`UsageStore`] in Redis, so every instance counts against the same
//! budgets: one `INCRBY` per answer.
//!
//! Layout, under the configured key prefix `P`, versioned like the other
//! keys: `P:v1:usage:{U}:L:S`, the tokens user `U` spent in the window of
//! length `L` starting at `S` (Unix seconds). A window's key expires a whole
//! window after it ended, so at most the current and the last are kept.

use async_trait::async_trait;
use redis::RedisError;

use super::redis_manager::{connect, RedisConn, RedisTarget};
use crate::application::ports::{StoreFailure, UsageStore, UsageStoreError};
use crate::domain::budget::WindowSpan;
use crate::domain::UserId;

/// Token counts in Redis; see the module docs for the key layout.
#[derive(Clone)]
pub struct RedisUsageStore {
    conn: RedisConn,
    /// `P:v1:usage:`, the start of every key.
    base: String,
}

fn failed(context: &'static str) -> impl FnOnce(RedisError) -> UsageStoreError {
    move |e| UsageStoreError::from(StoreFailure::new(context, e))
}

impl RedisUsageStore {
    /// Connects (one Redis, or a cluster: a user's count is one key) and
    /// checks that Redis answers a PING in time.
    ///
    /// # Errors
    /// [`UsageStoreError`] if the URL is invalid, the prefix holds braces, or
    /// Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
    ) -> Result<Self, UsageStoreError> {
        if key_prefix.contains(['{', '}']) {
            return Err(UsageStoreError::from(StoreFailure::bare(format!(
                "Redis key prefix {key_prefix:?} must not contain braces"
            ))));
        }
        let conn = connect(&target.into()).await?;
        Ok(Self {
            conn,
            base: format!("{key_prefix}:v1:usage:"),
        })
    }

    /// A user id is a safe word (letters, digits, `_`, `-`), so it stands in
    /// the key as it is, as the key's hash tag.
    fn key(&self, user: &UserId, window: WindowSpan) -> String {
        format!(
            "{}{{{}}}:{}:{}",
            self.base,
            user.as_str(),
            window.length,
            window.start
        )
    }
}

#[async_trait]
impl UsageStore for RedisUsageStore {
    async fn add(
        &self,
        user: &UserId,
        window: WindowSpan,
        tokens: u64,
    ) -> Result<u64, UsageStoreError> {
        let key = self.key(user, window);
        let expire_at = window.end().saturating_add(window.length);
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let (used,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCRBY")
            .arg(&key)
            .arg(tokens)
            .cmd("EXPIREAT")
            .arg(&key)
            .arg(expire_at)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("INCRBY of a token count failed"))?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    async fn used(&self, user: &UserId, window: WindowSpan) -> Result<u64, UsageStoreError> {
        let used: Option<i64> = redis::cmd("GET")
            .arg(self.key(user, window))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("GET of a token count failed"))?;
        Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
    }
}
