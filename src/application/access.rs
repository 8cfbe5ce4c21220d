//! Access beyond the password: refresh tokens (rotated on every use, a reuse
//! revokes the family), single-use WebSocket tickets, logout and logout-all,
//! and the revocation check every bearer token passes.
//!
//! These are more [`AuthService`] use cases, kept in their own module.

use std::time::Duration;

use chrono::Utc;

use super::auth::{AuthError, AuthService, Authenticated};
use super::ports::{RefreshRecord, Revocation, Rotation, TokenClaims, TokenError};
use crate::domain::{FamilyId, RefreshToken, User, WsTicket};

/// A verified, unrevoked bearer token and its active user.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub user: User,
    pub claims: TokenClaims,
}

/// A WebSocket ticket, valid for `ttl`.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    pub ticket: WsTicket,
    pub ttl: Duration,
}

impl AuthService {
    /// Whether new accounts may register (`ALLOW_REGISTRATION`).
    pub fn registration_open(&self) -> bool {
        self.settings.allow_registration
    }

    /// Verifies a bearer token: signature and times, not revoked, and its
    /// user still exists and is active.
    ///
    /// # Errors
    /// `TokenExpired`, `TokenRevoked`, `TokenInvalid` (also for a deleted or
    /// deactivated user), or `Internal` when a store fails (failing closed).
    pub async fn authorize(&self, token: &str) -> Result<Authorized, AuthError> {
        let claims = self.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            _ => AuthError::TokenInvalid,
        })?;
        self.authorize_claims(claims).await
    }

    /// [`AuthService::authorize`] for claims already verified (a redeemed ticket's).
    async fn authorize_claims(&self, claims: TokenClaims) -> Result<Authorized, AuthError> {
        let (revoked, user) = tokio::join!(
            self.access.revocations.is_revoked(&claims),
            self.users.find_by_id(&claims.user_id)
        );
        if revoked.map_err(|e| self.store_failed("access", "revocation store failed", &e))? {
            return Err(AuthError::TokenRevoked);
        }
        match user {
            Ok(Some(user)) if user.is_active => Ok(Authorized { user, claims }),
            Ok(_) => Err(AuthError::TokenInvalid),
            Err(e) => {
                Err(self.store_failed("users", "user store failed during token verification", &e))
            }
        }
    }

    /// Whether a token an open socket holds still stands: not expired, not revoked.
    ///
    /// # Errors
    /// `TokenExpired` or `TokenRevoked`; `Internal` when the store fails (the
    /// caller keeps the socket and asks again later).
    pub async fn still_valid(&self, claims: &TokenClaims) -> Result<(), AuthError> {
        if claims.expires_at <= Utc::now().timestamp() {
            return Err(AuthError::TokenExpired);
        }
        match self.access.revocations.is_revoked(claims).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(AuthError::TokenRevoked),
            Err(e) => Err(self.store_failed("access", "revocation store failed", &e)),
        }
    }

    /// Word of every revocation from now on, from any instance.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.access.revocations.subscribe()
    }

    /// A first refresh token for a fresh login, in a family of its own.
    pub(super) async fn start_refresh_family(
        &self,
        user: &User,
    ) -> Result<RefreshToken, AuthError> {
        let token = RefreshToken::generate();
        let now = Utc::now();
        let record = RefreshRecord {
            digest: token.digest(),
            family: FamilyId::generate(),
            user_id: user.id.clone(),
            issued_at: now,
            expires_at: now + self.settings.refresh_ttl,
        };
        self.access
            .refresh
            .insert(&record)
            .await
            .map_err(|e| self.store_failed("users", "could not store a refresh token", &e))?;
        Ok(token)
    }

    /// Exchanges a refresh token for a new access token and the refresh
    /// token's successor. Within the reuse grace, the same token again gets
    /// the same successor; later, it revokes its whole family.
    ///
    /// # Errors
    /// `InvalidRefreshToken` for a malformed, unknown, expired, revoked or
    /// reused token, or one whose user is gone or inactive; `Internal` when a
    /// store fails.
    pub async fn refresh(&self, presented: &str) -> Result<Authenticated, AuthError> {
        let token = RefreshToken::parse(presented).map_err(|_| AuthError::InvalidRefreshToken)?;
        let successor = token.successor(&self.settings.successor_key);
        let now = Utc::now();
        let rotation = self
            .access
            .refresh
            .rotate(
                &token.digest(),
                &successor.digest(),
                now,
                now + self.settings.refresh_ttl,
                self.settings.reuse_grace,
            )
            .await
            .map_err(|e| self.store_failed("users", "refresh token store failed", &e))?;
        let user_id = match rotation {
            Rotation::Rotated { user_id } | Rotation::AlreadyRotated { user_id } => user_id,
            Rotation::Reused { user_id } => {
                tracing::warn!(%user_id, "refresh token reused after rotation; family revoked");
                return Err(AuthError::InvalidRefreshToken);
            }
            Rotation::Invalid => return Err(AuthError::InvalidRefreshToken),
        };
        let user = match self.users.find_by_id(&user_id).await {
            Ok(Some(user)) if user.is_active => user,
            Ok(_) => return Err(AuthError::InvalidRefreshToken),
            Err(e) => {
                return Err(self.store_failed("users", "user store failed during refresh", &e))
            }
        };
        let token = self.issue(&user)?;
        Ok(Authenticated {
            user,
            token,
            refresh_token: successor,
        })
    }

    /// A single-use ticket standing for `who`'s access token, for opening a
    /// WebSocket without putting the token in a URL.
    ///
    /// # Errors
    /// `Internal` when the ticket store fails or is full.
    pub async fn issue_ticket(&self, who: &Authorized) -> Result<IssuedTicket, AuthError> {
        let ticket = WsTicket::generate();
        let ttl = self.settings.ticket_ttl;
        self.access
            .tickets
            .put(&ticket.digest(), &who.claims, ttl)
            .await
            .map_err(|e| self.store_failed("access", "could not store a WebSocket ticket", &e))?;
        Ok(IssuedTicket { ticket, ttl })
    }

    /// Spends a ticket: the token it stands for, checked again as a bearer
    /// token would be.
    ///
    /// # Errors
    /// `InvalidTicket` for a malformed, unknown, spent or expired ticket;
    /// `TokenExpired`, `TokenRevoked` or `TokenInvalid` if its token lapsed
    /// meanwhile; `Internal` when a store fails.
    pub async fn redeem_ticket(&self, presented: &str) -> Result<Authorized, AuthError> {
        let ticket = WsTicket::parse(presented).map_err(|_| AuthError::InvalidTicket)?;
        let claims = self
            .access
            .tickets
            .take(&ticket.digest())
            .await
            .map_err(|e| self.store_failed("access", "ticket store failed", &e))?
            .ok_or(AuthError::InvalidTicket)?;
        if claims.expires_at <= Utc::now().timestamp() {
            return Err(AuthError::TokenExpired);
        }
        self.authorize_claims(claims).await
    }

    /// Revokes `who`'s access token until it expires, and the refresh token
    /// given with it (its whole family) if it is `who`'s. A malformed refresh
    /// token is no one's and is ignored: logging out cannot fail on it.
    ///
    /// # Errors
    /// `Internal` when a store fails.
    pub async fn logout(&self, who: &Authorized, refresh: Option<&str>) -> Result<(), AuthError> {
        self.access
            .revocations
            .revoke_token(&who.claims)
            .await
            .map_err(|e| self.store_failed("access", "could not revoke an access token", &e))?;
        if let Some(token) = refresh.and_then(|r| RefreshToken::parse(r).ok()) {
            self.access
                .refresh
                .revoke_family(&token.digest(), &who.user.id)
                .await
                .map_err(|e| self.store_failed("users", "could not revoke a refresh token", &e))?;
        }
        tracing::info!(user_id = %who.user.id, "logged out");
        Ok(())
    }

    /// Revokes every token of `who`'s user issued before now: access tokens
    /// (those without `jti` too) and every refresh token.
    ///
    /// # Errors
    /// `Internal` when a store fails.
    pub async fn logout_all(&self, who: &Authorized) -> Result<(), AuthError> {
        let now_ms = Utc::now().timestamp_millis();
        // Long enough that every token issued before now has expired by then.
        let keep = self.settings.token_lifetime + Duration::from_secs(120);
        self.access
            .revocations
            .revoke_user(&who.user.id, now_ms, keep)
            .await
            .map_err(|e| {
                self.store_failed("access", "could not revoke the user's access tokens", &e)
            })?;
        self.access
            .refresh
            .revoke_user(&who.user.id)
            .await
            .map_err(|e| {
                self.store_failed("users", "could not revoke the user's refresh tokens", &e)
            })?;
        tracing::info!(user_id = %who.user.id, "logged out everywhere");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::auth::{AccessPorts, AccessSettings};
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        AccessStoreError, IssuedToken, MockPasswordHasher, MockRefreshTokenStore,
        MockRevocationStore, MockTicketStore, MockTokenService, MockUserRepository,
    };
    use crate::domain::{fixtures, PasswordHash, TokenLifetime, UserId, Username};
    use std::sync::Arc;

    fn claims() -> TokenClaims {
        TokenClaims {
            user_id: UserId::parse("u1").unwrap(),
            username: Username::parse("alice").unwrap(),
            issued_at: 0,
            expires_at: Utc::now().timestamp() + 60,
            token_id: "t1".into(),
            issued_at_ms: 0,
        }
    }

    fn settings() -> AccessSettings {
        AccessSettings {
            allow_registration: true,
            refresh_ttl: Duration::from_secs(3600),
            reuse_grace: Duration::from_secs(10),
            ticket_ttl: Duration::from_secs(30),
            token_lifetime: Duration::from_secs(60),
            successor_key: b"key".to_vec(),
        }
    }

    /// The service on these stores, with a user `u1` who exists and is active.
    async fn service(
        refresh: MockRefreshTokenStore,
        tickets: MockTicketStore,
        revocations: MockRevocationStore,
    ) -> AuthService {
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_id()
            .returning(|_| Ok(Some(fixtures::user("u1", "$argon2id$x"))));
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::new("$argon2id$decoy")));
        let mut tokens = MockTokenService::new();
        tokens.expect_issue().returning(|_| {
            Ok(IssuedToken {
                token: "access".into(),
                lifetime: TokenLifetime::parse("60").unwrap(),
            })
        });
        tokens.expect_verify().returning(|_| Ok(claims()));
        let access = AccessPorts {
            refresh: Arc::new(refresh),
            tickets: Arc::new(tickets),
            revocations: Arc::new(revocations),
        };
        AuthService::new(
            Arc::new(users),
            Arc::new(hasher),
            Arc::new(tokens),
            access,
            settings(),
        )
        .await
        .unwrap()
    }

    fn not_revoked() -> MockRevocationStore {
        let mut r = MockRevocationStore::new();
        r.expect_is_revoked().returning(|_| Ok(false));
        r
    }

    #[tokio::test]
    async fn a_rotation_and_its_repeat_hand_out_the_same_successor() {
        for outcome in [
            Rotation::Rotated {
                user_id: UserId::parse("u1").unwrap(),
            },
            Rotation::AlreadyRotated {
                user_id: UserId::parse("u1").unwrap(),
            },
        ] {
            let presented = RefreshToken::generate();
            let expected = presented.successor(&settings().successor_key);
            let mut refresh = MockRefreshTokenStore::new();
            let (want_old, want_new) = (presented.digest(), expected.digest());
            refresh
                .expect_rotate()
                .withf(move |old, new, _, _, grace| {
                    *old == want_old && *new == want_new && *grace == Duration::from_secs(10)
                })
                .returning(move |_, _, _, _, _| Ok(outcome.clone()));
            let auth = service(refresh, MockTicketStore::new(), not_revoked()).await;
            let out = auth.refresh(presented.expose()).await.unwrap();
            assert_eq!(out.refresh_token, expected);
            assert_eq!(out.token.token, "access");
        }
    }

    #[tokio::test]
    async fn reuse_unknown_and_malformed_refresh_tokens_are_one_error() {
        for outcome in [
            Rotation::Reused {
                user_id: UserId::parse("u1").unwrap(),
            },
            Rotation::Invalid,
        ] {
            let mut refresh = MockRefreshTokenStore::new();
            refresh
                .expect_rotate()
                .returning(move |_, _, _, _, _| Ok(outcome.clone()));
            let auth = service(refresh, MockTicketStore::new(), not_revoked()).await;
            let token = RefreshToken::generate();
            assert!(matches!(
                auth.refresh(token.expose()).await,
                Err(AuthError::InvalidRefreshToken)
            ));
        }
        let mut refresh = MockRefreshTokenStore::new();
        refresh.expect_rotate().never();
        let auth = service(refresh, MockTicketStore::new(), not_revoked()).await;
        assert!(matches!(
            auth.refresh("not-a-token").await,
            Err(AuthError::InvalidRefreshToken)
        ));
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_and_a_failing_store_fails_closed() {
        let mut revoked = MockRevocationStore::new();
        revoked.expect_is_revoked().returning(|_| Ok(true));
        let auth = service(
            MockRefreshTokenStore::new(),
            MockTicketStore::new(),
            revoked,
        )
        .await;
        assert!(matches!(
            auth.authorize("t").await,
            Err(AuthError::TokenRevoked)
        ));
        let mut down = MockRevocationStore::new();
        down.expect_is_revoked()
            .returning(|_| Err(AccessStoreError::from(StoreFailure::bare("down"))));
        let auth = service(MockRefreshTokenStore::new(), MockTicketStore::new(), down).await;
        assert!(matches!(
            auth.authorize("t").await,
            Err(AuthError::Internal)
        ));
    }

    #[tokio::test]
    async fn tickets_are_spent_through_the_store_and_bad_ones_never_reach_it() {
        let mut tickets = MockTicketStore::new();
        tickets.expect_take().times(1).returning(|_| Ok(None));
        let auth = service(MockRefreshTokenStore::new(), tickets, not_revoked()).await;
        let ticket = WsTicket::generate();
        assert!(matches!(
            auth.redeem_ticket(ticket.expose()).await,
            Err(AuthError::InvalidTicket)
        ));
        assert!(matches!(
            auth.redeem_ticket("wst_short").await,
            Err(AuthError::InvalidTicket)
        ));

        let mut tickets = MockTicketStore::new();
        tickets.expect_take().returning(|_| Ok(Some(claims())));
        let auth = service(MockRefreshTokenStore::new(), tickets, not_revoked()).await;
        let who = auth.redeem_ticket(ticket.expose()).await.unwrap();
        assert_eq!(who.claims, claims());
    }

    #[tokio::test]
    async fn logout_revokes_the_token_and_only_a_well_formed_refresh_token() {
        let who = Authorized {
            user: fixtures::user("u1", "$argon2id$x"),
            claims: claims(),
        };
        let refresh_token = RefreshToken::generate();
        let digest = refresh_token.digest();
        let mut refresh = MockRefreshTokenStore::new();
        refresh
            .expect_revoke_family()
            .withf(move |d, user| *d == digest && user.as_str() == "u1")
            .times(1)
            .returning(|_, _| Ok(()));
        let mut revocations = not_revoked();
        revocations
            .expect_revoke_token()
            .withf(|c| c.token_id == "t1")
            .times(2)
            .returning(|_| Ok(()));
        let auth = service(refresh, MockTicketStore::new(), revocations).await;
        auth.logout(&who, Some(refresh_token.expose()))
            .await
            .unwrap();
        auth.logout(&who, Some("garbage")).await.unwrap();
    }
}
