//! The REST API (poem-openapi) as one: every area's operations, in the
//! order the spec lists them.
//!
//! Each operation has its own response enum, so the generated spec lists every
//! status the operation can return; doc comments become the spec's text.

use super::rest_agent::AgentApi;
use super::rest_auth::AuthApi;
use super::rest_health::HealthApi;
use super::rest_replies::RepliesApi;
use super::rest_sessions::SessionsApi;
use super::rest_stats::StatsApi;
use super::rest_tokens::TokenApi;
use super::rest_transcripts::TranscriptApi;
use super::rest_usage::UsageApi;
use super::ws::info::WsInfoApi;

/// The REST operations. Stateless: the shared [`super::AppContext`] arrives
/// through poem's `Data`, so the spec can be generated without a running
/// server. The order is the spec's order of paths.
pub type Api = (
    AuthApi,
    HealthApi,
    StatsApi,
    WsInfoApi,
    SessionsApi,
    TokenApi,
    AgentApi,
    RepliesApi,
    TranscriptApi,
    UsageApi,
);

/// The one value of [`Api`].
pub const API: Api = (
    AuthApi,
    HealthApi,
    StatsApi,
    WsInfoApi,
    SessionsApi,
    TokenApi,
    AgentApi,
    RepliesApi,
    TranscriptApi,
    UsageApi,
);

#[cfg(test)]
mod tests {
    //! Failure paths a real store will not produce on demand, checked through
    //! the full route stack with mocked ports.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use poem::http::StatusCode;
    use poem::test::TestClient;
    use serde_json::json;

    use crate::adapters::inbound::errors::ErrorCode;
    use crate::adapters::outbound::log_then_publish::LogThenPublish;
    use crate::adapters::outbound::memory_access::{InMemoryRevocationStore, InMemoryTicketStore};
    use crate::adapters::outbound::memory_conversations::{
        InMemoryEventLog, InMemoryGenerationRegistry, InMemoryLiveDelivery,
    };
    use crate::adapters::outbound::memory_handoff::{MemoryHandoffs, MemoryPresence};
    use crate::adapters::outbound::memory_limiter::InMemoryRateLimiter;
    use crate::adapters::outbound::memory_stats::AtomicStats;
    use crate::application::ports::AiHealth;
    use crate::application::ports::MockRefreshTokenStore;
    use crate::application::ports::StoreFailure;
    use crate::application::ports::{
        CircuitState, MockAiModel, MockPasswordHasher, MockSessionStore, MockTokenService,
        MockUserRepository, SessionStoreError, UpstreamState, UserStoreError,
    };
    use crate::application::{AccessPorts, ChatPorts};
    use crate::config::Config;
    use crate::domain::PasswordHash;
    use crate::startup::{Adapters, Application};

    /// The application on mocked ports, on a loopback port it never serves.
    async fn app(
        users: MockUserRepository,
        sessions: MockSessionStore,
        ai: MockAiModel,
    ) -> Application {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::new("$argon2id$mock")));
        let vars = HashMap::from([("HOST", "127.0.0.1"), ("PORT", "0")]);
        let config = Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        let users: Arc<dyn crate::application::ports::UserRepository> = Arc::new(users);
        let log: Arc<dyn crate::application::ports::EventLog> =
            Arc::new(InMemoryEventLog::new(10, Duration::from_secs(60)));
        let live: Arc<dyn crate::application::ports::LiveDelivery> =
            Arc::new(InMemoryLiveDelivery::default());
        let adapters = Adapters {
            users: users.clone(),
            hasher: Arc::new(hasher),
            tokens: Arc::new(MockTokenService::new()),
            access: AccessPorts {
                refresh: Arc::new(MockRefreshTokenStore::new()),
                tickets: Arc::new(InMemoryTicketStore::default()),
                revocations: Arc::new(InMemoryRevocationStore::default()),
            },
            chat: ChatPorts {
                sessions: Arc::new(sessions),
                ai: Arc::new(ai),
                stats: Arc::new(AtomicStats::default()),
                // Not what these tests are about: the real in-memory ones.
                log: log.clone(),
                live: live.clone(),
                backplane: Arc::new(LogThenPublish::new(log, live)),
                registry: Arc::new(InMemoryGenerationRegistry::default()),
                handoffs: Arc::new(MemoryHandoffs::default()),
                presence: Arc::new(MemoryPresence::default()),
                signals: Arc::new(
                    crate::adapters::outbound::local_signals::LocalSignals::default(),
                ),
                transcripts: Arc::new(crate::application::ports::MockTranscriptStore::new()),
                users: users.clone(),
                usage: Arc::new(
                    crate::adapters::outbound::memory_usage::InMemoryUsageStore::default(),
                ),
                token_counter: Arc::new(crate::adapters::outbound::o200k::O200kCounter),
            },
            limiter: Arc::new(InMemoryRateLimiter::default()),
        };
        Application::build_with(config, adapters).await.unwrap()
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    fn failing_users() -> MockUserRepository {
        let mut users = MockUserRepository::new();
        users
            .expect_ping()
            .returning(|| Err(UserStoreError::from(StoreFailure::new("ping", refused()))));
        users
            .expect_create()
            .returning(|_| Err(UserStoreError::from(StoreFailure::new("insert", refused()))));
        users
    }

    fn answering_sessions() -> MockSessionStore {
        let mut sessions = MockSessionStore::new();
        sessions
            .expect_counts()
            .returning(|| Ok(crate::application::ports::SessionCounts::default()));
        sessions
    }

    fn ai_with_circuit(circuit: CircuitState) -> MockAiModel {
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Ok);
        ai.expect_upstreams().returning(move || {
            vec![UpstreamState {
                role: "primary",
                provider: "fastapi",
                circuit,
            }]
        });
        ai
    }

    #[tokio::test]
    async fn readiness_needs_the_stores_and_an_open_circuit_only_degrades_it() {
        let mut users = MockUserRepository::new();
        users.expect_ping().returning(|| Ok(()));
        let degraded = app(
            users,
            answering_sessions(),
            ai_with_circuit(CircuitState::Open),
        )
        .await;
        let cli = TestClient::new(degraded.endpoint());
        let resp = cli.get("/health/ready").send().await;
        resp.assert_status_is_ok();
        resp.assert_json(json!({
            "status": "degraded",
            "checks": {
                "users": "ok",
                "sessions": "ok",
                "ai": "ok",
                "upstreams": [{"role": "primary", "provider": "fastapi", "circuit": "open"}]
            }
        }))
        .await;

        let down = app(
            failing_users(),
            answering_sessions(),
            ai_with_circuit(CircuitState::Closed),
        )
        .await;
        let cli = TestClient::new(down.endpoint());
        let resp = cli.get("/health/ready").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.json().await;
        let value: serde_json::Value = body.value().deserialize();
        assert_eq!(value["status"], "unavailable");
        assert_eq!(value["checks"]["users"], "unavailable");
        // Liveness checks nothing.
        cli.get("/health/live").send().await.assert_status_is_ok();
    }

    fn error_code(code: ErrorCode) -> serde_json::Value {
        json!(code.as_str())
    }

    #[tokio::test]
    async fn health_is_503_when_the_user_store_does_not_answer() {
        let mut ai = MockAiModel::new();
        ai.expect_health().returning(|| AiHealth::Unreachable);
        ai.expect_upstreams().returning(|| {
            vec![UpstreamState {
                role: "primary",
                provider: "openai",
                circuit: CircuitState::Open,
            }]
        });
        let app = app(failing_users(), answering_sessions(), ai).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli.get("/health").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        resp.assert_json(json!({
            "status": "unavailable",
            "uptimeSeconds": 0,
            "checks": {
                "database": "unavailable",
                "ai": "unreachable",
                "upstreams": [{"role": "primary", "provider": "openai", "circuit": "open"}]
            }
        }))
        .await;
    }

    #[tokio::test]
    async fn a_failing_store_is_a_500_without_internals() {
        let app = app(failing_users(), MockSessionStore::new(), MockAiModel::new()).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli
            .post("/api/auth/register")
            .body_json(
                &json!({"username": "alice", "email": "a@example.com", "password": "password123"}),
            )
            .send()
            .await;
        resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.json().await;
        let value: serde_json::Value = body.value().deserialize();
        assert_eq!(value["error"], error_code(ErrorCode::InternalError));
        let text = value["message"].as_str().unwrap();
        assert!(!text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn stats_are_503_when_the_session_store_does_not_answer() {
        let mut sessions = MockSessionStore::new();
        sessions.expect_counts().returning(|| {
            Err(SessionStoreError::from(StoreFailure::new(
                "counts",
                refused(),
            )))
        });
        let app = app(MockUserRepository::new(), sessions, MockAiModel::new()).await;
        let cli = TestClient::new(app.endpoint());
        let resp = cli.get("/api/stats").send().await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let code = ErrorCode::SessionStoreUnavailable;
        resp.assert_json(json!({"error": code.as_str(), "message": code.message()}))
            .await;
    }
}
