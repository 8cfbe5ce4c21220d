//! In-process [`TicketStore`] and [`RevocationStore`], for a single instance
//! or for tests. Both maps are bounded: entries expire and are swept, and a
//! full store refuses rather than forget a revocation or grow without end.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::application::ports::{
    AccessStoreError, Revocation, RevocationStore, TicketStore, TokenClaims,
};
use crate::domain::{TokenDigest, UserId};

/// Live tickets one instance holds at most.
pub const MAX_TICKETS: usize = 100_000;
/// Revocations one instance remembers at most (each lasts until its token expires).
pub const MAX_REVOCATIONS: usize = 1_000_000;
/// Revocations a slow subscriber may fall behind by before it re-checks.
pub const REVOCATION_BUFFER: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the maps consistent, panic or not.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tickets in a map, each removed by the first `take`.
#[derive(Default)]
pub struct InMemoryTicketStore {
    tickets: Mutex<HashMap<TokenDigest, (TokenClaims, Instant)>>,
}

#[async_trait]
impl TicketStore for InMemoryTicketStore {
    async fn put(
        &self,
        ticket: &TokenDigest,
        claims: &TokenClaims,
        ttl: Duration,
    ) -> Result<(), AccessStoreError> {
        let now = Instant::now();
        let mut tickets = lock(&self.tickets);
        if tickets.len() >= MAX_TICKETS {
            tickets.retain(|_, (_, until)| *until > now);
            if tickets.len() >= MAX_TICKETS {
                return Err(AccessStoreError::Full);
            }
        }
        tickets.insert(ticket.clone(), (claims.clone(), now + ttl));
        Ok(())
    }

    async fn take(&self, ticket: &TokenDigest) -> Result<Option<TokenClaims>, AccessStoreError> {
        let taken = lock(&self.tickets).remove(ticket);
        Ok(taken
            .filter(|(_, until)| *until > Instant::now())
            .map(|(claims, _)| claims))
    }
}

#[derive(Default)]
struct Revoked {
    /// Token id -> its expiry, Unix seconds.
    tokens: HashMap<String, i64>,
    /// User -> (revoked before this Unix millisecond, remembered until).
    users: HashMap<UserId, (i64, Instant)>,
}

impl Revoked {
    fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    /// Makes room if the store is at its bound; `Full` if nothing has expired.
    fn make_room(&mut self) -> Result<(), AccessStoreError> {
        if self.len() < MAX_REVOCATIONS {
            return Ok(());
        }
        let now_secs = chrono::Utc::now().timestamp();
        let now = Instant::now();
        self.tokens.retain(|_, exp| *exp > now_secs);
        self.users.retain(|_, (_, until)| *until > now);
        if self.len() >= MAX_REVOCATIONS {
            return Err(AccessStoreError::Full);
        }
        Ok(())
    }
}

/// Revocations in maps, announced on a broadcast channel.
pub struct InMemoryRevocationStore {
    revoked: Mutex<Revoked>,
    announce: broadcast::Sender<Revocation>,
}

impl Default for InMemoryRevocationStore {
    fn default() -> Self {
        Self {
            revoked: Mutex::default(),
            announce: broadcast::channel(REVOCATION_BUFFER).0,
        }
    }
}

#[async_trait]
impl RevocationStore for InMemoryRevocationStore {
    async fn revoke_token(&self, claims: &TokenClaims) -> Result<(), AccessStoreError> {
        {
            let mut revoked = lock(&self.revoked);
            revoked.make_room()?;
            revoked
                .tokens
                .insert(claims.token_id.clone(), claims.expires_at);
        }
        // No subscriber is not an error: nobody holds a socket with it.
        let _ = self.announce.send(Revocation::Token {
            token_id: claims.token_id.clone(),
        });
        Ok(())
    }

    async fn revoke_user(
        &self,
        user: &UserId,
        before_ms: i64,
        keep: Duration,
    ) -> Result<(), AccessStoreError> {
        {
            let mut revoked = lock(&self.revoked);
            revoked.make_room()?;
            let until = Instant::now() + keep;
            let entry = revoked
                .users
                .entry(user.clone())
                .or_insert((before_ms, until));
            *entry = (entry.0.max(before_ms), entry.1.max(until));
        }
        let _ = self.announce.send(Revocation::User {
            user_id: user.clone(),
            before_ms,
        });
        Ok(())
    }

    async fn is_revoked(&self, claims: &TokenClaims) -> Result<bool, AccessStoreError> {
        let revoked = lock(&self.revoked);
        let by_id = revoked.tokens.contains_key(&claims.token_id);
        let by_user = revoked
            .users
            .get(&claims.user_id)
            .is_some_and(|(before, until)| {
                *until > Instant::now() && claims.issued_at_ms < *before
            });
        Ok(by_id || by_user)
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.announce.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Username, WsTicket};

    fn claims() -> TokenClaims {
        TokenClaims {
            user_id: UserId::parse("u1").unwrap(),
            username: Username::parse("alice").unwrap(),
            issued_at: 0,
            expires_at: chrono::Utc::now().timestamp() + 60,
            token_id: "t1".into(),
            issued_at_ms: 0,
        }
    }

    /// A store holding `MAX_TICKETS` tickets that live `ttl`.
    async fn full_store(ttl: Duration) -> InMemoryTicketStore {
        let store = InMemoryTicketStore::default();
        let c = claims();
        for _ in 0..MAX_TICKETS {
            store
                .put(&WsTicket::generate().digest(), &c, ttl)
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_full_ticket_store_refuses_rather_than_grow() {
        let store = full_store(Duration::from_secs(600)).await;
        assert!(matches!(
            store
                .put(
                    &WsTicket::generate().digest(),
                    &claims(),
                    Duration::from_secs(30)
                )
                .await,
            Err(AccessStoreError::Full)
        ));
    }

    #[tokio::test]
    async fn expired_tickets_are_swept_to_make_room() {
        let store = full_store(Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        store
            .put(
                &WsTicket::generate().digest(),
                &claims(),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(lock(&store.tickets).len(), 1);
    }
}
