//! The chat use cases: open or resume a session, run one generation, escalate.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ports::{
    AiError, AiHealth, AiModel, AiRequest, SessionCounts, SessionStore, SessionStoreError, Stats,
    StatsSnapshot,
};
use crate::domain::{ChatContent, ChatMessage, Role, Session, SessionId, SessionUser, User};

/// Why a chat use case failed. Whoever handles it logs it (with
/// [`crate::telemetry::ErrorChain`] for the store's own cause).
#[derive(Debug, Error)]
pub enum ChatError {
    #[error(transparent)]
    Ai(#[from] AiError),
    /// The session expired or vanished from the store mid-conversation.
    #[error("session not found")]
    SessionGone,
    /// The session store failed.
    #[error("session store failed")]
    SessionStore(#[source] SessionStoreError),
}

impl From<SessionStoreError> for ChatError {
    fn from(e: SessionStoreError) -> Self {
        match e {
            SessionStoreError::NotFound => ChatError::SessionGone,
            other => ChatError::SessionStore(other),
        }
    }
}

/// How one generation ended.
#[derive(Debug)]
pub enum GenerationOutcome {
    Completed,
    Cancelled,
    Failed(ChatError),
}

/// The chat use cases, shared by every connection.
pub struct ChatService {
    sessions: Arc<dyn SessionStore>,
    ai: Arc<dyn AiModel>,
    stats: Arc<dyn Stats>,
    /// How long an untouched session lives in the store.
    session_ttl: Duration,
}

/// Keeps one connection counted as open while it lives, so a connection task
/// that ends any way at all is never left counted.
pub struct ConnectionGuard(Arc<dyn Stats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

impl ChatService {
    pub fn new(
        sessions: Arc<dyn SessionStore>,
        ai: Arc<dyn AiModel>,
        stats: Arc<dyn Stats>,
        session_ttl: Duration,
    ) -> Self {
        Self {
            sessions,
            ai,
            stats,
            session_ttl,
        }
    }

    /// Counts a client connection for as long as the returned guard lives.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.stats.connection_opened();
        ConnectionGuard(self.stats.clone())
    }

    /// The counters behind `/api/stats`.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// How often an open connection should [`touch`](Self::touch) its session:
    /// a quarter of the TTL gives several chances before expiry with few store
    /// writes, and never more than once a second.
    pub fn keep_alive_interval(&self) -> Duration {
        (self.session_ttl / 4).max(Duration::from_secs(1))
    }

    /// Resumes `resume` when it names a live session of this user, otherwise
    /// starts a new one. Someone else's session id is treated as unknown, so
    /// probing ids reveals nothing.
    pub async fn open_session(
        &self,
        user: &User,
        resume: Option<&SessionId>,
    ) -> Result<Session, ChatError> {
        let now = Utc::now();
        if let Some(id) = resume {
            if let Some(session) = self.sessions.get(id).await? {
                if session.user.id == user.id {
                    self.sessions.touch(id, now).await?;
                    return Ok(session);
                }
            }
        }
        let session = Session::new(
            SessionId::generate(),
            SessionUser {
                id: user.id.clone(),
                username: user.username.clone(),
            },
            now,
        );
        self.sessions.create(&session).await?;
        Ok(session)
    }

    /// Marks the session as waiting for a human; asking again changes nothing.
    pub async fn escalate(&self, session: &SessionId) -> Result<(), ChatError> {
        let first_time = self.sessions.mark_escalated(session).await?;
        if first_time {
            tracing::info!(session_id = %session, "session escalated to a human");
        }
        Ok(())
    }

    /// Records activity so an open but quiet connection keeps its session alive.
    pub async fn touch(&self, session: &SessionId) -> Result<(), ChatError> {
        Ok(self.sessions.touch(session, Utc::now()).await?)
    }

    /// How many sessions exist and how many are escalated.
    pub async fn session_counts(&self) -> Result<SessionCounts, ChatError> {
        Ok(self.sessions.counts().await?)
    }

    /// What the AI side looks like to `/health`.
    pub async fn ai_health(&self) -> AiHealth {
        self.ai.health().await
    }

    /// Runs one generation: sends the query with the session's history to the
    /// AI, forwards each token into `tokens`, and on completion stores the reply.
    ///
    /// The user's message is stored before the AI is asked, so it stays in the
    /// history even if the answer fails; only a completed reply is stored.
    /// Cancelling `cancel`, or dropping the receiver of `tokens`, drops the AI
    /// stream and with it the upstream request.
    pub async fn generate(
        &self,
        session_id: &SessionId,
        content: ChatContent,
        cancel: &CancellationToken,
        tokens: &mpsc::Sender<String>,
    ) -> GenerationOutcome {
        match self.run(session_id, content, cancel, tokens).await {
            Ok(outcome) => outcome,
            Err(e) => GenerationOutcome::Failed(e),
        }
    }

    async fn run(
        &self,
        session_id: &SessionId,
        content: ChatContent,
        cancel: &CancellationToken,
        tokens: &mpsc::Sender<String>,
    ) -> Result<GenerationOutcome, ChatError> {
        let session = self
            .sessions
            .get(session_id)
            .await?
            .ok_or(ChatError::SessionGone)?;
        let query = content.into_string();
        let request = AiRequest {
            query: query.clone(),
            user_id: session.user.id.clone(),
            session_id: session.id.clone(),
            history: session.history,
        };
        self.sessions
            .append(
                session_id,
                ChatMessage {
                    role: Role::User,
                    content: query,
                    timestamp: Utc::now(),
                },
            )
            .await?;
        self.stats.message_received();

        let mut stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(GenerationOutcome::Cancelled),
            started = self.ai.stream(request) => started?,
        };
        let mut reply = String::new();
        loop {
            let item = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(GenerationOutcome::Cancelled),
                item = stream.next() => item,
            };
            match item {
                Some(Ok(token)) => {
                    reply.push_str(&token);
                    let sent = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Ok(GenerationOutcome::Cancelled),
                        sent = tokens.send(token) => sent,
                    };
                    if sent.is_err() {
                        // Nobody is listening any more (the connection closed).
                        return Ok(GenerationOutcome::Cancelled);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        drop(stream);
        self.sessions
            .append(
                session_id,
                ChatMessage {
                    role: Role::Assistant,
                    content: reply,
                    timestamp: Utc::now(),
                },
            )
            .await?;
        Ok(GenerationOutcome::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::{MockAiModel, MockSessionStore, MockStats, TokenStream};
    use crate::domain::fixtures;
    use std::sync::Mutex;

    fn user(id: &str) -> User {
        fixtures::user(id, "x")
    }

    fn session_of(id: &SessionId, history: Vec<ChatMessage>) -> Session {
        let mut s = fixtures::session(id);
        s.history = history;
        s
    }

    /// Counters that accept any number of messages.
    fn any_stats() -> MockStats {
        let mut stats = MockStats::new();
        stats.expect_message_received().returning(|| ());
        stats
    }

    fn service(store: MockSessionStore, ai: MockAiModel, stats: MockStats) -> ChatService {
        ChatService::new(
            Arc::new(store),
            Arc::new(ai),
            Arc::new(stats),
            Duration::from_secs(3600),
        )
    }

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            timestamp: Utc::now(),
        }
    }

    fn tokens_stream(items: Vec<Result<String, AiError>>) -> TokenStream {
        Box::pin(futures_util::stream::iter(items))
    }

    fn store_recording(
        id: &SessionId,
        history: Vec<ChatMessage>,
    ) -> (MockSessionStore, Arc<Mutex<Vec<ChatMessage>>>) {
        let appended = Arc::new(Mutex::new(Vec::new()));
        let mut store = MockSessionStore::new();
        let s = session_of(id, history);
        store.expect_get().returning(move |_| Ok(Some(s.clone())));
        let log = appended.clone();
        store.expect_append().returning(move |_, m| {
            log.lock().unwrap().push(m);
            Ok(())
        });
        (store, appended)
    }

    #[tokio::test]
    async fn completed_generation_streams_tokens_and_stores_both_messages() {
        let id = SessionId::generate();
        let earlier = vec![msg(Role::User, "hi"), msg(Role::Assistant, "hello")];
        let (store, appended) = store_recording(&id, earlier.clone());
        let mut ai = MockAiModel::new();
        ai.expect_stream()
            .withf(move |r| r.query == "how are you?" && r.history == earlier)
            .times(1)
            .returning(|_| {
                Ok(tokens_stream(vec![
                    Ok("fine".into()),
                    Ok(", thanks".into()),
                ]))
            });
        let mut stats = MockStats::new();
        stats.expect_message_received().times(1).returning(|| ());
        let chat = service(store, ai, stats);
        let (tx, mut rx) = mpsc::channel(16);
        let outcome = chat
            .generate(
                &id,
                ChatContent::parse("how are you?", 100).unwrap(),
                &CancellationToken::new(),
                &tx,
            )
            .await;
        assert!(
            matches!(outcome, GenerationOutcome::Completed),
            "{outcome:?}"
        );
        assert_eq!(rx.recv().await.unwrap(), "fine");
        assert_eq!(rx.recv().await.unwrap(), ", thanks");
        let stored = appended.lock().unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(
            (stored[0].role, stored[0].content.as_str()),
            (Role::User, "how are you?")
        );
        assert_eq!(
            (stored[1].role, stored[1].content.as_str()),
            (Role::Assistant, "fine, thanks")
        );
    }

    #[tokio::test]
    async fn failure_mid_stream_keeps_only_the_user_message() {
        let id = SessionId::generate();
        let (store, appended) = store_recording(&id, vec![]);
        let mut ai = MockAiModel::new();
        ai.expect_stream().returning(|_| {
            Ok(tokens_stream(vec![
                Ok("part".into()),
                Err(AiError::Protocol("eof".into())),
            ]))
        });
        let chat = service(store, ai, any_stats());
        let (tx, _rx) = mpsc::channel(16);
        let outcome = chat
            .generate(
                &id,
                ChatContent::parse("q", 10).unwrap(),
                &CancellationToken::new(),
                &tx,
            )
            .await;
        assert!(
            matches!(
                &outcome,
                GenerationOutcome::Failed(ChatError::Ai(AiError::Protocol(e))) if e == "eof"
            ),
            "{outcome:?}"
        );
        assert_eq!(appended.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failure_before_the_stream_is_reported() {
        let id = SessionId::generate();
        let (store, _) = store_recording(&id, vec![]);
        let mut ai = MockAiModel::new();
        ai.expect_stream()
            .returning(|_| Err(AiError::Unavailable("refused".into())));
        let chat = service(store, ai, any_stats());
        let (tx, _rx) = mpsc::channel(16);
        let outcome = chat
            .generate(
                &id,
                ChatContent::parse("q", 10).unwrap(),
                &CancellationToken::new(),
                &tx,
            )
            .await;
        assert!(matches!(
            outcome,
            GenerationOutcome::Failed(ChatError::Ai(AiError::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn cancel_stops_a_stream_that_never_ends_and_stores_no_reply() {
        let id = SessionId::generate();
        let (store, appended) = store_recording(&id, vec![]);
        let mut ai = MockAiModel::new();
        ai.expect_stream().returning(|_| {
            let first = futures_util::stream::iter(vec![Ok("a".to_string())]);
            Ok(Box::pin(first.chain(futures_util::stream::pending())))
        });
        let chat = service(store, ai, any_stats());
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let run = chat.generate(&id, ChatContent::parse("q", 10).unwrap(), &cancel, &tx);
        let stop = async move {
            assert_eq!(rx.recv().await.unwrap(), "a");
            canceller.cancel();
        };
        let (outcome, ()) = tokio::join!(run, stop);
        assert!(
            matches!(outcome, GenerationOutcome::Cancelled),
            "{outcome:?}"
        );
        assert_eq!(appended.lock().unwrap().len(), 1, "only the user message");
    }

    #[tokio::test]
    async fn missing_session_fails_without_calling_the_ai() {
        let mut store = MockSessionStore::new();
        store.expect_get().returning(|_| Ok(None));
        let mut ai = MockAiModel::new();
        ai.expect_stream().never();
        let chat = service(store, ai, any_stats());
        let (tx, _rx) = mpsc::channel(1);
        let outcome = chat
            .generate(
                &SessionId::generate(),
                ChatContent::parse("q", 10).unwrap(),
                &CancellationToken::new(),
                &tx,
            )
            .await;
        assert!(
            matches!(outcome, GenerationOutcome::Failed(ChatError::SessionGone)),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn resume_only_returns_the_users_own_session() {
        let id = SessionId::generate();
        let existing = session_of(&id, vec![msg(Role::User, "old")]);
        let mut store = MockSessionStore::new();
        store
            .expect_get()
            .returning(move |_| Ok(Some(existing.clone())));
        store.expect_touch().times(1).returning(|_, _| Ok(()));
        store.expect_create().times(1).returning(|_| Ok(()));
        let chat = service(store, MockAiModel::new(), MockStats::new());

        let mine = chat.open_session(&user("u1"), Some(&id)).await.unwrap();
        assert_eq!(mine.id, id);
        assert_eq!(mine.history.len(), 1);

        let theirs = chat.open_session(&user("u2"), Some(&id)).await.unwrap();
        assert_ne!(theirs.id, id);
        assert!(theirs.history.is_empty());
    }

    #[tokio::test]
    async fn escalation_marks_the_session() {
        let id = SessionId::generate();
        let expected = id.clone();
        let mut store = MockSessionStore::new();
        store
            .expect_mark_escalated()
            .withf(move |s| *s == expected)
            .times(2)
            .returning(|_| Ok(false));
        let chat = service(store, MockAiModel::new(), MockStats::new());
        chat.escalate(&id).await.unwrap();
        chat.escalate(&id).await.unwrap();
    }

    #[tokio::test]
    async fn escalating_an_expired_session_is_an_error() {
        let mut store = MockSessionStore::new();
        store
            .expect_mark_escalated()
            .returning(|_| Err(SessionStoreError::NotFound));
        let chat = service(store, MockAiModel::new(), MockStats::new());
        assert!(matches!(
            chat.escalate(&SessionId::generate()).await,
            Err(ChatError::SessionGone)
        ));
    }
}
