//! In-process [`SessionStore`]: sessions in a mutex-guarded map, for a single
//! instance or for tests. Nothing survives a restart.
//!
//! Expiry is measured on the monotonic clock at the moment of each write, so a
//! wall-clock jump or a caller's stale timestamp can neither resurrect nor kill
//! a session early; the timestamps in the session are data, not the deadline.
//! Expired sessions are dropped lazily (when looked at, and by a sweep from
//! `create` and `counts`), so no background task is needed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::application::ports::{SessionCounts, SessionStore, SessionStoreError};
use crate::domain::{ChatMessage, MessageId, Session, SessionId, UserId, HISTORY_LIMIT};

struct Entry {
    session: Session,
    /// `None` when the ttl is too large to represent: such a session never expires.
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

struct Inner {
    sessions: HashMap<SessionId, Entry>,
    /// `create` sweeps at most once per ttl, so a busy server does not pay a
    /// full scan per new session while memory stays bounded by about two ttls
    /// worth of sessions.
    next_sweep: Instant,
}

impl Inner {
    fn sweep(&mut self, now: Instant, ttl: Duration) {
        self.sessions.retain(|_, entry| entry.is_live(now));
        self.next_sweep = now.checked_add(ttl).unwrap_or(now);
    }

    /// Drops `user`'s least recently active live sessions beyond `max`
    /// (least recently written, as the Redis store orders them).
    fn evict_beyond(&mut self, user: &UserId, max: usize, now: Instant) {
        let mut mine: Vec<(Option<Instant>, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.user.id == *user && e.is_live(now))
            .map(|(id, e)| (e.expires_at, id.clone()))
            .collect();
        if mine.len() <= max {
            return;
        }
        // `None` never expires: the most recent of all.
        mine.sort_by_key(|(at, _)| at.map_or((1, now), |at| (0, at)));
        for (_, id) in mine.drain(..mine.len() - max) {
            self.sessions.remove(&id);
        }
    }

    /// The live entry for `id`, dropping it first if it has expired.
    fn live_mut(&mut self, id: &SessionId, now: Instant) -> Option<&mut Entry> {
        if self.sessions.get(id).is_some_and(|e| !e.is_live(now)) {
            self.sessions.remove(id);
        }
        self.sessions.get_mut(id)
    }
}

/// A [`SessionStore`] kept in memory; see the module docs for how expiry works.
pub struct InMemorySessionStore {
    ttl: Duration,
    /// Live sessions one user may have; `create` evicts beyond it.
    max_per_user: Option<usize>,
    inner: Mutex<Inner>,
}

impl InMemorySessionStore {
    /// Sessions expire once `ttl` has passed without `create`, `append`,
    /// `touch` or `mark_escalated`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            max_per_user: None,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                next_sweep: Instant::now(),
            }),
        }
    }

    /// This store keeping at most `max` live sessions per user (`None`: no
    /// bound): creating one more evicts that user's least recently active.
    pub fn with_max_per_user(mut self, max: Option<u32>) -> Self {
        self.max_per_user = max.map(|m| m.max(1) as usize);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a panic elsewhere
        // while holding the lock is no reason to take the store down with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self, now: Instant) -> Option<Instant> {
        now.checked_add(self.ttl)
    }

    /// Runs `f` on a live session and pushes its expiry back.
    fn with_live<T>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Result<T, SessionStoreError> {
        let now = Instant::now();
        let deadline = self.deadline(now);
        let mut inner = self.lock();
        let entry = inner.live_mut(id, now).ok_or(SessionStoreError::NotFound)?;
        entry.expires_at = deadline;
        Ok(f(&mut entry.session))
    }
}

#[async_trait]
impl SessionStore for InMemorySessionStore {
    async fn create(&self, session: &Session) -> Result<(), SessionStoreError> {
        let mut session = session.clone();
        // Same bound as `append`, so a hand-built session cannot smuggle in more.
        let excess = session.history.len().saturating_sub(HISTORY_LIMIT);
        session.history.drain(..excess);

        let now = Instant::now();
        let entry = Entry {
            session,
            expires_at: self.deadline(now),
        };
        let mut inner = self.lock();
        if now >= inner.next_sweep {
            inner.sweep(now, self.ttl);
        }
        let user = entry.session.user.id.clone();
        inner.sessions.insert(entry.session.id.clone(), entry);
        if let Some(max) = self.max_per_user {
            inner.evict_beyond(&user, max, now);
        }
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.live_mut(id, now).map(|entry| entry.session.clone()))
    }

    async fn append(&self, id: &SessionId, message: ChatMessage) -> Result<(), SessionStoreError> {
        self.with_live(id, |session| session.push_message(message))
    }

    async fn forget_after(
        &self,
        id: &SessionId,
        message: &MessageId,
    ) -> Result<bool, SessionStoreError> {
        self.with_live(id, |session| session.forget_after(message))
    }

    async fn mark_escalated(&self, id: &SessionId) -> Result<bool, SessionStoreError> {
        self.with_live(id, |session| {
            !std::mem::replace(&mut session.escalated, true)
        })
    }

    async fn touch(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), SessionStoreError> {
        // Activity never moves backwards, matching `Session::push_message`.
        self.with_live(id, |session| {
            session.last_activity = session.last_activity.max(at);
        })
    }

    async fn remove(&self, id: &SessionId) -> Result<(), SessionStoreError> {
        self.lock().sessions.remove(id);
        Ok(())
    }

    async fn list_for_user(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<Session>, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now, self.ttl);
        let mut mine: Vec<Session> = inner
            .sessions
            .values()
            .filter(|entry| entry.session.user.id == *user)
            .map(|entry| entry.session.clone())
            .collect();
        mine.sort_by_key(|s| std::cmp::Reverse(s.last_activity));
        mine.truncate(limit);
        Ok(mine)
    }

    async fn counts(&self) -> Result<SessionCounts, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now, self.ttl);
        let active = inner.sessions.len() as u64;
        let escalated = inner
            .sessions
            .values()
            .filter(|entry| entry.session.escalated)
            .count() as u64;
        Ok(SessionCounts { active, escalated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fixtures, Role};

    fn session(now: DateTime<Utc>) -> Session {
        let mut s = fixtures::session(&SessionId::generate());
        s.created_at = now;
        s.last_activity = now;
        s
    }

    fn stored(store: &InMemorySessionStore) -> usize {
        store.lock().sessions.len()
    }

    #[tokio::test]
    async fn expired_sessions_are_purged_by_counts_and_create() {
        let store = InMemorySessionStore::new(Duration::from_millis(50));
        for _ in 0..3 {
            store.create(&session(Utc::now())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(stored(&store), 3, "nothing is purged behind our back");

        store.create(&session(Utc::now())).await.unwrap();
        assert_eq!(stored(&store), 1, "create sweeps once the interval passed");

        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.counts().await.unwrap(), SessionCounts::default());
        assert_eq!(stored(&store), 0);
    }

    #[tokio::test]
    async fn looking_at_an_expired_session_drops_it() {
        let store = InMemorySessionStore::new(Duration::from_millis(30));
        let s = session(Utc::now());
        store.create(&s).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.get(&s.id).await.unwrap().is_none());
        assert_eq!(stored(&store), 0);
    }

    #[tokio::test]
    async fn a_huge_ttl_means_never_expiring_rather_than_a_panic() {
        let store = InMemorySessionStore::new(Duration::MAX);
        let s = session(Utc::now());
        store.create(&s).await.unwrap();
        store.touch(&s.id, Utc::now()).await.unwrap();
        assert_eq!(store.counts().await.unwrap().active, 1);
    }

    #[tokio::test]
    async fn create_trims_an_oversized_history_and_touch_never_goes_back() {
        let store = InMemorySessionStore::new(Duration::from_secs(60));
        let now = Utc::now();
        let mut s = session(now);
        s.history = (0..15)
            .map(|i| ChatMessage {
                role: Role::User,
                content: format!("m{i}"),
                timestamp: now,
                message_id: None,
            })
            .collect();
        store.create(&s).await.unwrap();
        store
            .touch(&s.id, now - chrono::Duration::hours(1))
            .await
            .unwrap();
        let got = store.get(&s.id).await.unwrap().unwrap();
        assert_eq!(got.history.len(), HISTORY_LIMIT);
        assert_eq!(got.history[0].content, "m5");
        assert_eq!(got.last_activity, now);
    }
}
