//! The account ports: where users live, how passwords are hashed and
//! checked, and how bearer tokens are issued and verified.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{Cause, StoreFailure};
use crate::domain::canned::{CannedReply, Shortcut};
use crate::domain::{
    EmailAddress, NewUser, Password, PasswordHash, TokenLifetime, User, UserId, UserRole, Username,
};

/// Failures of a [`UserRepository`] (and of the [`RefreshTokenStore`](super::RefreshTokenStore) kept
/// beside it).
#[derive(Debug, Error)]
pub enum UserStoreError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error("user not found")]
    NotFound,
    /// The store did not answer or answered with something unusable.
    #[error("user store unavailable")]
    Unavailable(#[from] StoreFailure),
}

/// Where users live (MongoDB `users` collection, or the embedded SQLite file).
///
/// # Errors
/// - `create` MUST return [`UserStoreError::UsernameTaken`] or
///   [`UserStoreError::EmailTaken`] when a unique constraint refuses the user
///   (checked atomically by the store, not by a prior lookup), and
///   [`UserStoreError::Unavailable`] for any other failure.
/// - `find_*` return `Ok(None)` for a user that does not exist, including an id
///   the store could never have issued; only failures are `Unavailable`.
/// - `record_login` MUST return [`UserStoreError::NotFound`] for an unknown id.
/// - `set_role` MUST return [`UserStoreError::NotFound`] for an unknown
///   username (matched exactly, as at login) and otherwise the user as stored
///   after the change; setting the role a user already has is not an error.
/// - `agent_count` counts the active accounts whose role is agent (`Ok(0)`
///   for none); only failures are `Unavailable`.
/// - `ping` returns `Unavailable` when the store cannot serve requests.
/// - `replies` lists `agent`'s canned replies by shortcut; `save_reply`
///   replaces the reply with the same shortcut, or adds it unless the agent
///   already has `max` ([`SavedReply::Full`], nothing changed); `delete_reply`
///   says whether there was one. Replies are the agent's alone.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync {
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError>;
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, UserStoreError>;
    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, UserStoreError>;
    async fn find_by_email(&self, email: &EmailAddress) -> Result<Option<User>, UserStoreError>;
    /// Sets `lastLogin`, and replaces the password hash when `rehashed` is given
    /// (a legacy bcrypt hash being upgraded to argon2id).
    async fn record_login(
        &self,
        id: &UserId,
        at: DateTime<Utc>,
        rehashed: Option<PasswordHash>,
    ) -> Result<(), UserStoreError>;
    /// Makes `username` an agent or a plain user again. Takes effect at once:
    /// agent routes read the role from the store on every request.
    async fn set_role(&self, username: &Username, role: UserRole) -> Result<User, UserStoreError>;
    /// How many active agent accounts exist (whether handoff can be in use).
    async fn agent_count(&self) -> Result<u64, UserStoreError>;
    async fn ping(&self) -> Result<(), UserStoreError>;
    async fn replies(&self, agent: &UserId) -> Result<Vec<CannedReply>, UserStoreError>;
    async fn save_reply(
        &self,
        agent: &UserId,
        reply: &CannedReply,
        max: usize,
    ) -> Result<SavedReply, UserStoreError>;
    async fn delete_reply(
        &self,
        agent: &UserId,
        shortcut: &Shortcut,
    ) -> Result<bool, UserStoreError>;
}

/// What saving a canned reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedReply {
    Added,
    Replaced,
    /// The agent already keeps the most replies allowed.
    Full,
}

/// Failures of a [`PasswordHasher`].
#[derive(Debug, Error)]
pub enum PasswordHashError {
    /// The stored hash is in no format this hasher understands.
    #[error("stored password hash is malformed")]
    Malformed,
    /// As many computations as the hasher allows are running or waiting.
    #[error("password hashing is at capacity")]
    Busy,
    #[error("password hashing failed")]
    Internal(#[source] Cause),
}

/// The outcome of comparing a password with a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is right; `needs_rehash` says the hash is in a legacy or
    /// weaker format and should be replaced with a fresh one.
    Match {
        needs_rehash: bool,
    },
    Mismatch,
}

/// Hashes and verifies passwords. Implementations do the CPU-heavy work off
/// the async runtime.
///
/// # Errors
/// - `hash` returns `Internal` only if the algorithm itself fails.
/// - `verify` returns `Ok(Mismatch)` for a wrong password and `Err(Malformed)`
///   for a hash it cannot parse; it never panics on hostile input.
/// - Both return `Busy` at once, without computing, when the hasher's bounded
///   queue is full.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, PasswordHashError>;
    async fn verify(
        &self,
        password: &Password,
        hash: &PasswordHash,
    ) -> Result<PasswordCheck, PasswordHashError>;
}

/// Failures of a [`TokenService`].
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing claim, garbage: all one thing to a client.
    #[error("token is invalid")]
    Invalid,
    #[error("token could not be issued")]
    Issue(#[source] Cause),
}

/// A freshly signed token and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub lifetime: TokenLifetime,
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: UserId,
    pub username: Username,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// What revokes this one token: its `jti`, or for tokens issued without
    /// one (the Node server's) a digest of the token itself.
    pub token_id: String,
    /// Unix milliseconds: this server's tokens carry them, older tokens
    /// count from the start of their `iat` second.
    pub issued_at_ms: i64,
}

/// Issues and verifies bearer tokens.
///
/// # Errors
/// - `verify` MUST return [`TokenError::Expired`] for an expired token and
///   [`TokenError::Invalid`] for every other rejection, including a token not
///   yet valid (`nbf` in the future) or issued more than a minute ahead
///   (`iat`).
/// - `issue` returns [`TokenError::Issue`] only if signing fails.
#[cfg_attr(test, mockall::automock)]
pub trait TokenService: Send + Sync {
    fn issue(&self, user: &User) -> Result<IssuedToken, TokenError>;
    fn verify(&self, token: &str) -> Result<TokenClaims, TokenError>;
}
