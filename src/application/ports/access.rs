//! The access ports: refresh tokens (kept by the user store), single-use
//! WebSocket tickets, and revoked access tokens shared by every instance.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{StoreFailure, TokenClaims, UserStoreError};
use crate::domain::{FamilyId, TokenDigest, UserId};

/// The result of presenting a refresh token to [`RefreshTokenStore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now rotated and its successor stored.
    Rotated { user_id: UserId },
    /// The token was rotated less than the grace period ago (two tabs
    /// refreshing at once): its successor, already stored, stands.
    AlreadyRotated { user_id: UserId },
    /// The token was rotated longer ago: a reuse. Its whole family is now revoked.
    Reused { user_id: UserId },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

/// A refresh token as stored: its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub digest: TokenDigest,
    pub family: FamilyId,
    pub user_id: UserId,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Refresh tokens, kept by the user store (SQLite table or MongoDB
/// collection `refresh_tokens`), so they live as long as the accounts do.
///
/// # Errors
/// Every method returns [`UserStoreError::Unavailable`] when the store fails,
/// and nothing else.
/// - `rotate` MUST be atomic across instances: of two concurrent rotations
///   of one token exactly one gets `Rotated`; the other gets
///   `AlreadyRotated` (within `grace`) or `Reused`.
/// - `rotate` stores `successor` in the presented token's family, for its user.
/// - A `Reused` answer has revoked the family before it returns.
/// - Expired tokens are `Invalid`; stores may delete them at any time.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    async fn insert(&self, record: &RefreshRecord) -> Result<(), UserStoreError>;
    async fn rotate(
        &self,
        presented: &TokenDigest,
        successor: &TokenDigest,
        now: DateTime<Utc>,
        successor_expires_at: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<Rotation, UserStoreError>;
    /// Revokes the family of `digest` if it belongs to `user`; otherwise does nothing.
    async fn revoke_family(
        &self,
        digest: &TokenDigest,
        user: &UserId,
    ) -> Result<(), UserStoreError>;
    /// Revokes every refresh token of `user`.
    async fn revoke_user(&self, user: &UserId) -> Result<(), UserStoreError>;
}

/// Failures of the [`TicketStore`] and [`RevocationStore`]. For logs only.
#[derive(Debug, Error)]
pub enum AccessStoreError {
    /// The store did not answer or answered with something unusable.
    #[error("access store unavailable")]
    Unavailable(#[from] StoreFailure),
    /// An in-process store reached its bound.
    #[error("access store is full")]
    Full,
}

/// Single-use WebSocket tickets, each standing for the access token it was
/// bought with (Redis when set, so any instance can redeem it).
///
/// # Errors
/// - `take` MUST be atomic across instances: a ticket is returned once, then
///   never again; an expired or unknown ticket is `Ok(None)`.
/// - `put` returns [`AccessStoreError::Full`] when an in-process store is at
///   its bound; every store failure is `Unavailable`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TicketStore: Send + Sync {
    async fn put(
        &self,
        ticket: &TokenDigest,
        claims: &TokenClaims,
        ttl: std::time::Duration,
    ) -> Result<(), AccessStoreError>;
    async fn take(&self, ticket: &TokenDigest) -> Result<Option<TokenClaims>, AccessStoreError>;
}

/// A revocation as every instance hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One access token (by [`TokenClaims::token_id`]).
    Token { token_id: String },
    /// Every token of the user issued before this Unix millisecond.
    User { user_id: UserId, before_ms: i64 },
    /// Revocations may have been missed (a reconnect): re-check.
    Resync,
}

/// Revoked access tokens, shared by every instance (Redis when set), and
/// live word of each new revocation.
///
/// # Errors
/// Every store failure is [`AccessStoreError::Unavailable`]; an in-process
/// store at its bound answers `Full` rather than forget a revocation.
/// - A revocation MUST be visible to `is_revoked` on every instance once the
///   call returns, and announced to every `subscribe`r (on every instance)
///   shortly after.
/// - `revoke_token` lasts until `claims.expires_at`; `revoke_user` for `keep`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RevocationStore: Send + Sync {
    async fn revoke_token(&self, claims: &TokenClaims) -> Result<(), AccessStoreError>;
    async fn revoke_user(
        &self,
        user: &UserId,
        before_ms: i64,
        keep: std::time::Duration,
    ) -> Result<(), AccessStoreError>;
    async fn is_revoked(&self, claims: &TokenClaims) -> Result<bool, AccessStoreError>;
    /// Revocations from now on; a lagging receiver should re-check, as for `Resync`.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revocation>;
}

impl Revocation {
    /// Whether this revocation ends the token with `claims`.
    pub fn covers(&self, claims: &TokenClaims) -> bool {
        match self {
            Revocation::Token { token_id } => *token_id == claims.token_id,
            Revocation::User { user_id, before_ms } => {
                *user_id == claims.user_id && claims.issued_at_ms < *before_ms
            }
            Revocation::Resync => false,
        }
    }
}
