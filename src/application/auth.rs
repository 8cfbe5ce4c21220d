//! Registration, login and token verification, written against ports only.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;

use super::limits::{Limited, Limits};
use super::ports::{
    IssuedToken, PasswordCheck, PasswordHashError, PasswordHasher, RefreshTokenStore,
    RevocationStore, Stats, TicketStore, TokenService, UserRepository, UserStoreError,
};
use crate::domain::{
    ClientIp, EmailAddress, LoginName, NewUser, Password, PasswordHash, RefreshToken, User, UserId,
    Username,
};
use crate::error_chain::ErrorChain;

/// The stores behind the access use cases.
#[derive(Clone)]
pub struct AccessPorts {
    pub refresh: Arc<dyn RefreshTokenStore>,
    pub tickets: Arc<dyn TicketStore>,
    pub revocations: Arc<dyn RevocationStore>,
}

/// The access policy, from configuration.
#[derive(Clone)]
pub struct AccessSettings {
    /// `ALLOW_REGISTRATION`.
    pub allow_registration: bool,
    /// `REFRESH_TOKEN_TTL`: how long a refresh token stays usable.
    pub refresh_ttl: Duration,
    /// `REFRESH_REUSE_GRACE`: how long a rotated token still yields its successor.
    pub reuse_grace: Duration,
    /// `WS_TICKET_TTL`.
    pub ticket_ttl: Duration,
    /// The access token lifetime: how long a logout-all must be remembered.
    pub token_lifetime: Duration,
    /// Derives each refresh token's successor (see [`RefreshToken::successor`]);
    /// the same on every instance.
    pub successor_key: Vec<u8>,
}

impl std::fmt::Debug for AccessSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSettings")
            .field("allow_registration", &self.allow_registration)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("reuse_grace", &self.reuse_grace)
            .field("ticket_ttl", &self.ticket_ttl)
            .finish_non_exhaustive()
    }
}

/// A registration whose fields have already been parsed into domain types.
#[derive(Debug, Clone)]
pub struct Registration {
    pub username: Username,
    pub email: EmailAddress,
    pub password: Password,
}

/// A successful register, login or refresh: the user, an access token, and
/// the refresh token that buys the next one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub token: IssuedToken,
    pub refresh_token: RefreshToken,
}

/// What can go wrong in the auth use cases, in terms a client may see.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    /// Unknown user, wrong password and inactive account are deliberately one error.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("token has expired")]
    TokenExpired,
    #[error("token is invalid")]
    TokenInvalid,
    /// The token was revoked (logout, logout-all).
    #[error("token has been revoked")]
    TokenRevoked,
    #[error("registration is closed")]
    RegistrationClosed,
    /// Unknown, expired, revoked or reused refresh token, indistinguishably.
    #[error("refresh token is invalid")]
    InvalidRefreshToken,
    /// Unknown, spent or expired WebSocket ticket, indistinguishably.
    #[error("ticket is invalid")]
    InvalidTicket,
    /// The user is not (or no longer) an agent.
    #[error("this requires an agent account")]
    AgentOnly,
    /// A limit refused the request; nothing was done.
    #[error("too many requests")]
    RateLimited(Limited),
    /// Password hashing is at capacity; try again shortly.
    #[error("password hashing is busy")]
    Busy,
    /// A dependency failed; details are logged, never returned.
    #[error("internal error")]
    Internal,
}

/// The authentication use cases.
pub struct AuthService {
    pub(super) users: Arc<dyn UserRepository>,
    hasher: Arc<dyn PasswordHasher>,
    pub(super) tokens: Arc<dyn TokenService>,
    /// Refresh tokens, tickets and revocations (the `access` module's use cases).
    pub(super) access: AccessPorts,
    pub(super) settings: AccessSettings,
    /// A real hash of a random password, verified against when the user does not
    /// exist, so "no such user" costs the same time as "wrong password".
    decoy_hash: PasswordHash,
    limits: Limits,
    /// Counts logins and store failures; `None` counts nothing.
    stats: Option<Arc<dyn Stats>>,
}

impl AuthService {
    /// Builds the service; hashes a decoy password once (so construct it at start-up).
    pub async fn new(
        users: Arc<dyn UserRepository>,
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenService>,
        access: AccessPorts,
        settings: AccessSettings,
    ) -> Result<Self, PasswordHashError> {
        let decoy = Password::for_login(&uuid::Uuid::new_v4().to_string());
        let decoy_hash = hasher.hash(&decoy).await?;
        Ok(Self {
            users,
            hasher,
            tokens,
            access,
            settings,
            decoy_hash,
            limits: Limits::off(),
            stats: None,
        })
    }

    /// This service with `limits` applied to registration, login,
    /// verification and WebSocket tickets.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// This service counting logins and store failures in `stats`.
    pub fn with_stats(mut self, stats: Arc<dyn Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Counts a failure of `store` and hides it as [`internal`] does.
    pub(super) fn store_failed(
        &self,
        store: &'static str,
        what: &str,
        e: &(dyn std::error::Error + 'static),
    ) -> AuthError {
        if let Some(stats) = &self.stats {
            stats.store_error(store);
        }
        internal(what, e)
    }

    /// Counts a WebSocket ticket for `user` against its rate, for the ticket
    /// endpoint to call before it issues one.
    ///
    /// # Errors
    /// `RateLimited` past `WS_TICKETS_PER_USER_PER_MINUTE`.
    pub async fn ws_ticket_allowed(&self, user: &UserId) -> Result<(), AuthError> {
        self.limits
            .ws_ticket(user)
            .await
            .map_err(AuthError::RateLimited)
    }

    /// [`AuthService::authenticate`] for the verify endpoint, counted against
    /// the caller's address.
    ///
    /// # Errors
    /// `RateLimited` past `VERIFY_PER_IP_PER_MINUTE`, else as `authenticate`.
    pub async fn verify(&self, token: &str, client: ClientIp) -> Result<User, AuthError> {
        self.limits
            .verify(client)
            .await
            .map_err(AuthError::RateLimited)?;
        self.authenticate(token).await
    }

    /// Creates an account and returns it with a fresh token.
    ///
    /// # Errors
    /// `RegistrationClosed` when `ALLOW_REGISTRATION` is off; `UsernameTaken`
    /// (also for another capitalisation of a taken name) / `EmailTaken` when
    /// the store's unique constraints refuse the user; `RateLimited` past the
    /// address's registrations; `Busy` when hashing is at capacity;
    /// `Internal` when a dependency fails.
    pub async fn register(
        &self,
        registration: Registration,
        client: ClientIp,
    ) -> Result<Authenticated, AuthError> {
        if !self.settings.allow_registration {
            return Err(AuthError::RegistrationClosed);
        }
        self.limits
            .register(client)
            .await
            .map_err(AuthError::RateLimited)?;
        let password_hash =
            self.hasher
                .hash(&registration.password)
                .await
                .map_err(|e| match e {
                    PasswordHashError::Busy => AuthError::Busy,
                    e => internal("password hashing failed during registration", &e),
                })?;
        let user = self
            .users
            .create(NewUser {
                username: registration.username,
                email: registration.email,
                password_hash,
                created_at: Utc::now(),
            })
            .await
            .map_err(|e| match e {
                UserStoreError::UsernameTaken => AuthError::UsernameTaken,
                UserStoreError::EmailTaken => AuthError::EmailTaken,
                other => {
                    self.store_failed("users", "user store failed during registration", &other)
                }
            })?;
        let token = self.issue(&user)?;
        let refresh_token = self.start_refresh_family(&user).await?;
        tracing::info!(user_id = %user.id, username = %user.username, "user registered");
        Ok(Authenticated {
            user,
            token,
            refresh_token,
        })
    }

    /// Checks a username-or-email and password, records the login, upgrades a
    /// legacy hash, and returns the user with a fresh token.
    ///
    /// # Errors
    /// `InvalidCredentials` for an unknown user, a wrong password or an inactive
    /// account alike; `RateLimited`, before any hashing, past a login throttle
    /// (even with the right password); `Busy` when hashing is at capacity;
    /// `Internal` when a dependency fails.
    pub async fn login(
        &self,
        login: &str,
        password: &Password,
        client: ClientIp,
    ) -> Result<Authenticated, AuthError> {
        let attempt = match self.limits.login_attempt(login, client).await {
            Ok(attempt) => attempt,
            Err(limited) => {
                self.login_ended(login, client, "throttled");
                return Err(AuthError::RateLimited(limited));
            }
        };
        let outcome = self.check_login(login, password).await;
        match &outcome {
            Ok(_) => self.limits.login_succeeded(attempt).await,
            // Counted as the failure it is.
            Err(AuthError::InvalidCredentials) => {}
            Err(_) => self.limits.login_undecided(attempt).await,
        }
        let label = match &outcome {
            Ok(_) => "success",
            Err(AuthError::InvalidCredentials) => "bad_credentials",
            Err(AuthError::Busy) => "busy",
            Err(_) => "error",
        };
        self.login_ended(login, client, label);
        outcome
    }

    /// Counts a login and logs a failed one with the name it tried (bounded
    /// and stripped of control characters; the password never).
    fn login_ended(&self, login: &str, client: ClientIp, outcome: &'static str) {
        if let Some(stats) = &self.stats {
            stats.login(outcome);
        }
        if outcome != "success" {
            let username: String = login
                .chars()
                .take(64)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            tracing::info!(%username, client_ip = %client, outcome, "login failed");
        }
    }

    /// The login itself, once the throttles let it through.
    async fn check_login(
        &self,
        login: &str,
        password: &Password,
    ) -> Result<Authenticated, AuthError> {
        let Some(user) = self.find_login_user(login).await? else {
            // Spend the same work as a real check so response time does not reveal
            // which usernames exist.
            if let Err(PasswordHashError::Busy) =
                self.hasher.verify(password, &self.decoy_hash).await
            {
                return Err(AuthError::Busy);
            }
            return Err(AuthError::InvalidCredentials);
        };
        let needs_rehash = self.check_password(&user, password).await?;
        if !user.is_active {
            return Err(AuthError::InvalidCredentials);
        }
        let rehashed = if needs_rehash {
            self.upgraded_hash(password).await
        } else {
            None
        };
        let now = Utc::now();
        let upgraded = rehashed.is_some();
        self.users
            .record_login(&user.id, now, rehashed.clone())
            .await
            .map_err(|e| self.store_failed("users", "user store failed to record login", &e))?;
        if upgraded {
            tracing::info!(user_id = %user.id, "legacy bcrypt hash upgraded to argon2id");
        }
        let user = User {
            last_login: Some(now),
            password_hash: rehashed.unwrap_or(user.password_hash),
            ..user
        };
        let token = self.issue(&user)?;
        let refresh_token = self.start_refresh_family(&user).await?;
        Ok(Authenticated {
            user,
            token,
            refresh_token,
        })
    }

    /// The user a login name points at; a name that can be neither a username
    /// nor an email finds nobody, like an unknown one.
    async fn find_login_user(&self, login: &str) -> Result<Option<User>, AuthError> {
        match LoginName::parse(login) {
            Some(LoginName::Username(name)) => self.users.find_by_username(&name).await,
            Some(LoginName::Email(email)) => self.users.find_by_email(&email).await,
            None => Ok(None),
        }
        .map_err(|e| self.store_failed("users", "user store failed during login", &e))
    }

    /// Whether `password` is the user's; `Ok(true)` when it is, but the stored
    /// hash should be replaced by a current one.
    async fn check_password(&self, user: &User, password: &Password) -> Result<bool, AuthError> {
        match self.hasher.verify(password, &user.password_hash).await {
            Ok(PasswordCheck::Match { needs_rehash }) => Ok(needs_rehash),
            Ok(PasswordCheck::Mismatch) => Err(AuthError::InvalidCredentials),
            Err(PasswordHashError::Malformed) => {
                tracing::warn!(user_id = %user.id, "stored password hash is malformed");
                Err(AuthError::InvalidCredentials)
            }
            Err(PasswordHashError::Busy) => Err(AuthError::Busy),
            Err(e) => Err(internal("password verification failed", &e)),
        }
    }

    /// A fresh hash for a legacy one; `None` if hashing fails, because the
    /// login itself is valid and the upgrade can happen next time.
    async fn upgraded_hash(&self, password: &Password) -> Option<PasswordHash> {
        match self.hasher.hash(password).await {
            Ok(hash) => Some(hash),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "could not upgrade legacy password hash");
                None
            }
        }
    }

    /// Verifies a bearer token and returns its user, who must still exist and
    /// be active; [`AuthService::authorize`] also returns the token's claims.
    ///
    /// # Errors
    /// `TokenExpired`, `TokenRevoked`, `TokenInvalid` (also for a deleted or
    /// deactivated user), or `Internal` when a store fails.
    pub async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        self.authorize(token).await.map(|a| a.user)
    }

    /// The user with `id`, read from the store now, if they are an agent:
    /// what agent routes and the agent socket ask on every request and
    /// connect, so a demoted agent loses access at once.
    ///
    /// # Errors
    /// `AgentOnly` for a user who is not an agent; `TokenInvalid` for a user
    /// who no longer exists or is inactive; `Internal` when the store fails.
    pub async fn agent(&self, id: &UserId) -> Result<User, AuthError> {
        match self.users.find_by_id(id).await {
            Ok(Some(user)) if user.is_active && user.is_agent() => Ok(user),
            Ok(Some(user)) if user.is_active => Err(AuthError::AgentOnly),
            Ok(_) => Err(AuthError::TokenInvalid),
            Err(e) => {
                Err(self.store_failed("users", "user store failed while checking a role", &e))
            }
        }
    }

    /// Whether the user store answers; used by `/health`.
    pub async fn store_is_healthy(&self) -> bool {
        match self.users.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "user store health check failed");
                false
            }
        }
    }

    pub(super) fn issue(&self, user: &User) -> Result<IssuedToken, AuthError> {
        self.tokens
            .issue(user)
            .map_err(|e| internal("token signing failed", &e))
    }
}

/// Logs a dependency failure with its whole cause, and hides it from the
/// client behind [`AuthError::Internal`]: the one place auth errors are logged.
pub(super) fn internal(what: &str, e: &(dyn std::error::Error + 'static)) -> AuthError {
    tracing::error!(error = %ErrorChain(e), "{what}");
    AuthError::Internal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        MockPasswordHasher, MockRefreshTokenStore, MockRevocationStore, MockTicketStore,
        MockTokenService, MockUserRepository, TokenClaims, TokenError,
    };
    use crate::domain::{fixtures, UserId};
    use mockall::predicate::*;

    fn user(active: bool, hash: &str) -> User {
        User {
            is_active: active,
            ..fixtures::user("u1", hash)
        }
    }

    fn hasher() -> MockPasswordHasher {
        let mut h = MockPasswordHasher::new();
        h.expect_hash().returning(|p| {
            Ok(PasswordHash::new(format!(
                "$argon2id$hash-of-{}",
                p.expose()
            )))
        });
        h
    }

    fn tokens() -> MockTokenService {
        let mut t = MockTokenService::new();
        t.expect_issue().returning(|u| {
            Ok(IssuedToken {
                token: format!("token-for-{}", u.id),
                lifetime: crate::domain::TokenLifetime::parse("60").unwrap(),
            })
        });
        t
    }

    /// Access stores that accept every refresh token and revoke nothing.
    fn access() -> AccessPorts {
        let mut refresh = MockRefreshTokenStore::new();
        refresh.expect_insert().returning(|_| Ok(()));
        let mut revocations = MockRevocationStore::new();
        revocations.expect_is_revoked().returning(|_| Ok(false));
        AccessPorts {
            refresh: Arc::new(refresh),
            tickets: Arc::new(MockTicketStore::new()),
            revocations: Arc::new(revocations),
        }
    }

    fn settings(allow_registration: bool) -> AccessSettings {
        AccessSettings {
            allow_registration,
            refresh_ttl: std::time::Duration::from_secs(3600),
            reuse_grace: std::time::Duration::from_secs(10),
            ticket_ttl: std::time::Duration::from_secs(30),
            token_lifetime: std::time::Duration::from_secs(60),
            successor_key: b"successor-key".to_vec(),
        }
    }

    async fn service(users: MockUserRepository, hasher: MockPasswordHasher) -> AuthService {
        AuthService::new(
            Arc::new(users),
            Arc::new(hasher),
            Arc::new(tokens()),
            access(),
            settings(true),
        )
        .await
        .unwrap()
    }

    /// The role is read from the store on every call, so a demotion counts
    /// at once; only active agents pass.
    #[tokio::test]
    async fn only_active_agents_pass_the_agent_check() {
        use crate::domain::UserRole;
        let mut users = MockUserRepository::new();
        users.expect_find_by_id().returning(|id| {
            let base = fixtures::user(id.as_str(), "h");
            Ok(match id.as_str() {
                "agent1" => Some(User {
                    role: UserRole::Agent,
                    ..base
                }),
                "retired" => Some(User {
                    role: UserRole::Agent,
                    is_active: false,
                    ..base
                }),
                "customer" => Some(base),
                _ => None,
            })
        });
        let auth = service(users, hasher()).await;
        let id = |s: &str| UserId::parse(s).unwrap();
        assert!(auth.agent(&id("agent1")).await.unwrap().is_agent());
        assert!(matches!(
            auth.agent(&id("customer")).await,
            Err(AuthError::AgentOnly)
        ));
        assert!(matches!(
            auth.agent(&id("retired")).await,
            Err(AuthError::TokenInvalid)
        ));
        assert!(matches!(
            auth.agent(&id("gone")).await,
            Err(AuthError::TokenInvalid)
        ));
    }

    #[tokio::test]
    async fn closed_registration_creates_nobody() {
        let mut users = MockUserRepository::new();
        users.expect_create().never();
        let auth = AuthService::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(tokens()),
            access(),
            settings(false),
        )
        .await
        .unwrap();
        assert!(matches!(
            auth.register(registration(), ip()).await,
            Err(AuthError::RegistrationClosed)
        ));
    }

    fn ip() -> ClientIp {
        ClientIp::from(std::net::IpAddr::from([192, 0, 2, 1]))
    }

    fn registration() -> Registration {
        Registration {
            username: Username::parse("alice").unwrap(),
            email: EmailAddress::parse("alice@example.com").unwrap(),
            password: Password::parse("correct horse").unwrap(),
        }
    }

    #[tokio::test]
    async fn register_stores_a_hash_never_the_password() {
        let mut users = MockUserRepository::new();
        users
            .expect_create()
            .withf(|u| {
                u.password_hash.as_str() == "$argon2id$hash-of-correct horse"
                    && u.username.as_str() == "alice"
            })
            .times(1)
            .returning(|u| {
                let mut stored = user(true, u.password_hash.as_str());
                stored.created_at = u.created_at;
                Ok(stored)
            });
        let auth = service(users, hasher()).await;
        let out = auth.register(registration(), ip()).await.unwrap();
        assert_eq!(out.token.token, "token-for-u1");
        assert!(out.refresh_token.expose().starts_with("rt_"));
    }

    #[tokio::test]
    async fn register_maps_taken_errors() {
        for (store_err, expected) in [
            (UserStoreError::UsernameTaken, "UsernameTaken"),
            (UserStoreError::EmailTaken, "EmailTaken"),
            (UserStoreError::from(StoreFailure::bare("down")), "Internal"),
        ] {
            let mut users = MockUserRepository::new();
            let err = std::sync::Mutex::new(Some(store_err));
            users
                .expect_create()
                .returning(move |_| Err(err.lock().unwrap().take().unwrap()));
            let auth = service(users, hasher()).await;
            let got = auth.register(registration(), ip()).await.unwrap_err();
            assert_eq!(format!("{got:?}"), expected);
        }
    }

    #[tokio::test]
    async fn unknown_user_still_verifies_against_the_decoy() {
        let mut users = MockUserRepository::new();
        users.expect_find_by_username().returning(|_| Ok(None));
        let mut h = hasher();
        h.expect_verify()
            .withf(|_, hash| hash.as_str().starts_with("$argon2id$hash-of-"))
            .times(1)
            .returning(|_, _| Ok(PasswordCheck::Mismatch));
        let auth = service(users, h).await;
        let err = auth
            .login("nobody", &Password::for_login("whatever1"), ip())
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCredentials));
    }

    #[tokio::test]
    async fn wrong_password_and_inactive_account_look_the_same() {
        for (active, check) in [
            (true, PasswordCheck::Mismatch),
            (
                false,
                PasswordCheck::Match {
                    needs_rehash: false,
                },
            ),
        ] {
            let mut users = MockUserRepository::new();
            users
                .expect_find_by_username()
                .returning(move |_| Ok(Some(user(active, "$argon2id$x"))));
            users.expect_record_login().never();
            let mut h = hasher();
            h.expect_verify().returning(move |_, _| Ok(check));
            let auth = service(users, h).await;
            let err = auth
                .login("alice", &Password::for_login("pw"), ip())
                .await
                .unwrap_err();
            assert!(matches!(err, AuthError::InvalidCredentials));
        }
    }

    #[tokio::test]
    async fn login_by_email_records_last_login() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_email()
            .with(eq(EmailAddress::parse("alice@example.com").unwrap()))
            .returning(|_| Ok(Some(user(true, "$argon2id$x"))));
        users
            .expect_record_login()
            .withf(|id, _, rehashed| id.as_str() == "u1" && rehashed.is_none())
            .times(1)
            .returning(|_, _, _| Ok(()));
        let mut h = hasher();
        h.expect_verify().returning(|_, _| {
            Ok(PasswordCheck::Match {
                needs_rehash: false,
            })
        });
        let auth = service(users, h).await;
        let out = auth
            .login("Alice@Example.com", &Password::for_login("pw"), ip())
            .await
            .unwrap();
        assert!(out.user.last_login.is_some());
    }

    #[tokio::test]
    async fn legacy_hash_is_replaced_on_login() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_username()
            .returning(|_| Ok(Some(user(true, "$2b$10$legacy"))));
        users
            .expect_record_login()
            .withf(|_, _, rehashed| {
                rehashed.as_ref().map(|h| h.as_str()) == Some("$argon2id$hash-of-secret123")
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
        let mut h = hasher();
        h.expect_verify()
            .returning(|_, _| Ok(PasswordCheck::Match { needs_rehash: true }));
        let auth = service(users, h).await;
        let out = auth
            .login("alice", &Password::for_login("secret123"), ip())
            .await
            .unwrap();
        assert!(!out.user.password_hash.is_legacy_bcrypt());
    }

    #[tokio::test]
    async fn past_a_login_throttle_the_right_password_is_refused_without_hashing() {
        use crate::application::limits::{LimitSettings, Rule};
        use crate::application::ports::{Admission, MockRateLimiter};
        let mut limiter = MockRateLimiter::new();
        limiter.expect_admit().returning(|_| {
            Ok(Admission::Refused {
                retry_after: std::time::Duration::from_secs(9),
            })
        });
        let mut users = MockUserRepository::new();
        users.expect_find_by_username().never();
        let mut h = hasher();
        h.expect_verify().never();
        let settings = LimitSettings {
            login_per_account_ip: Some(Rule {
                max: 5,
                window: std::time::Duration::from_secs(900),
            }),
            ..LimitSettings::default()
        };
        let auth = service(users, h)
            .await
            .with_limits(Limits::new(Arc::new(limiter), settings));
        let err = auth
            .login("alice", &Password::for_login("the right one"), ip())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::RateLimited(l) if l.retry_after.as_secs() == 9),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_success_takes_its_attempt_back_and_resets_the_address() {
        use crate::application::limits::{LimitSettings, Rule};
        use crate::application::ports::{Admission, EventId, MockRateLimiter};
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .returning(|_| Ok(Admission::Admitted(EventId("e1".into()))));
        limiter
            .expect_withdraw()
            .withf(|keys, e| keys.len() == 2 && e.0 == "e1")
            .times(1)
            .returning(|_, _| Ok(()));
        limiter
            .expect_reset()
            .withf(|key| key == "login:account-ip:alice|192.0.2.1")
            .times(1)
            .returning(|_| Ok(()));
        let rule = Some(Rule {
            max: 5,
            window: std::time::Duration::from_secs(900),
        });
        let settings = LimitSettings {
            login_per_account_ip: rule,
            login_per_ip: rule,
            ..LimitSettings::default()
        };
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_username()
            .returning(|_| Ok(Some(user(true, "$argon2id$x"))));
        users.expect_record_login().returning(|_, _, _| Ok(()));
        let mut h = hasher();
        h.expect_verify().returning(|_, _| {
            Ok(PasswordCheck::Match {
                needs_rehash: false,
            })
        });
        let auth = service(users, h)
            .await
            .with_limits(Limits::new(Arc::new(limiter), settings));
        auth.login("alice", &Password::for_login("pw"), ip())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn authenticate_rejects_expired_invalid_and_deactivated() {
        let mut t = MockTokenService::new();
        t.expect_issue().returning(|_| {
            Ok(IssuedToken {
                token: "t".into(),
                lifetime: crate::domain::TokenLifetime::parse("1").unwrap(),
            })
        });
        t.expect_verify().returning(|tok| match tok {
            "expired" => Err(TokenError::Expired),
            "good" => Ok(TokenClaims {
                user_id: UserId::parse("u1").unwrap(),
                username: Username::parse("alice").unwrap(),
                issued_at: 0,
                expires_at: 1,
                token_id: "t1".into(),
                issued_at_ms: 0,
            }),
            _ => Err(TokenError::Invalid),
        });
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_id()
            .returning(|_| Ok(Some(user(false, "$argon2id$x"))));
        let auth = AuthService::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(t),
            access(),
            settings(true),
        )
        .await
        .unwrap();
        assert!(matches!(
            auth.authenticate("expired").await,
            Err(AuthError::TokenExpired)
        ));
        assert!(matches!(
            auth.authenticate("junk").await,
            Err(AuthError::TokenInvalid)
        ));
        assert!(matches!(
            auth.authenticate("good").await,
            Err(AuthError::TokenInvalid)
        ));
    }
}
