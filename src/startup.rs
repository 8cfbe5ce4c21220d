//! The server as a value: [`Application::build`] picks an adapter for every
//! port from the configuration, wires the use cases and binds the listener;
//! [`Application::run_until_stopped`] serves until a shutdown future resolves.
//!
//! This is the only place that knows which adapter implements which port. The
//! binary (`main.rs`) only reads configuration and signals, and tests build the
//! same value in-process on port 0 and read its address from it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use poem::{Endpoint, EndpointExt};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::adapters::inbound::{http, server, AppContext, UseCases};
use crate::adapters::outbound::argon2_hasher::{Argon2Hasher, Argon2Params};
use crate::adapters::outbound::echo_ai::EchoAi;
use crate::adapters::outbound::fallback_ai::FallbackAi;
use crate::adapters::outbound::jwt::JwtTokenService;
use crate::adapters::outbound::local_signals::LocalSignals;
use crate::adapters::outbound::memory_access::{InMemoryRevocationStore, InMemoryTicketStore};
use crate::adapters::outbound::memory_conversations::{
    InMemoryBackplane, InMemoryEventLog, InMemoryGenerationRegistry, InMemoryLiveDelivery,
};
use crate::adapters::outbound::memory_handoff::{MemoryHandoffs, MemoryPresence};
use crate::adapters::outbound::memory_limiter::InMemoryRateLimiter;
use crate::adapters::outbound::memory_sessions::InMemorySessionStore;
use crate::adapters::outbound::mongo_transcripts::MongoTranscriptStore;
use crate::adapters::outbound::mongo_users::MongoUserRepository;
use crate::adapters::outbound::o200k::O200kCounter;
use crate::adapters::outbound::prometheus_metrics::PrometheusMetrics;
use crate::adapters::outbound::reachability::{self, ProbeError};
use crate::adapters::outbound::redis_access::{RedisRevocationStore, RedisTicketStore};
use crate::adapters::outbound::redis_conversations::RedisConversations;
use crate::adapters::outbound::redis_handoff::RedisHandoffs;
use crate::adapters::outbound::redis_limiter::RedisRateLimiter;
use crate::adapters::outbound::redis_manager::RedisTarget;
use crate::adapters::outbound::redis_sessions::RedisSessionStore;
use crate::adapters::outbound::redis_signals::RedisSignals;
use crate::adapters::outbound::redis_usage::RedisUsageStore;
use crate::adapters::outbound::resilient_ai::{
    BreakerSettings, ResilientAi, RetryPolicy, UpstreamLabel, UpstreamObserver,
};
use crate::adapters::outbound::sqlite_transcripts::SqliteTranscriptStore;
use crate::adapters::outbound::sqlite_usage::SqliteUsageStore;
use crate::adapters::outbound::sqlite_users::SqliteUserRepository;
use crate::adapters::outbound::upstream_ai::{OpenAiSettings, UpstreamAi, UpstreamTimeouts};
use crate::application::health::{HealthMonitor, HealthTargets};
use crate::application::ports::{
    AccessStoreError, AgentPresence, AiModel, Backplane, ConversationStoreError, EventLog,
    GenerationRegistry, HandoffStore, LiveDelivery, PasswordHashError, PasswordHasher,
    RateLimitError, RateLimiter, RefreshTokenStore, RevocationStore, SessionStore,
    SessionStoreError, SignalBus, TicketStore, TokenService, TranscriptStore, TranscriptStoreError,
    UsageStore, UsageStoreError, UserRepository, UserStoreError,
};
use crate::application::{
    AccessPorts, AccessSettings, AiLabels, AnswerSettings, AuthService, ChatPorts, ChatService,
    ConversationCore, ConversationLoops, ConversationSettings, HandoffService, HandoffSettings,
    LimitSettings, Limits, RetentionSweeper, Rule, SummarySettings, TranscriptService,
};
use crate::config::{
    AiConfig, AuthConfig, Config, LimitsConfig, RedisUrls, SessionConfig, StorageConfig,
    UpstreamConfig, WindowLimit,
};

/// Why the server could not start. Each says which setting to look at.
#[derive(Debug, Error)]
pub enum StartupError {
    /// A store did not pass its start-up probe (unreachable, or refused us).
    #[error("{store} at {url} ({setting})")]
    Store {
        store: &'static str,
        setting: &'static str,
        /// With its password masked.
        url: String,
        #[source]
        source: ProbeError,
    },
    #[error("could not connect to MongoDB (MONGODB_URI)")]
    Mongo(#[source] UserStoreError),
    #[error("could not open SQLITE_PATH={}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: UserStoreError,
    },
    /// The transcript store (beside the users) could not be prepared.
    #[error("could not open the transcript store ({setting})")]
    Transcripts {
        setting: &'static str,
        #[source]
        source: TranscriptStoreError,
    },
    #[error("could not connect to Redis (REDIS_URL or REDIS_CLUSTER_URLS)")]
    Redis(#[source] SessionStoreError),
    #[error("could not connect to Redis (REDIS_URL or REDIS_CLUSTER_URLS)")]
    RedisConversations(#[source] ConversationStoreError),
    #[error("could not connect to Redis (REDIS_URL or REDIS_CLUSTER_URLS)")]
    RedisAccess(#[source] AccessStoreError),
    #[error("could not connect to Redis (REDIS_URL or REDIS_CLUSTER_URLS)")]
    RedisLimiter(#[source] RateLimitError),
    /// Where token usage is counted (Redis, or the SQLite file) could not be opened.
    #[error("could not open the token usage store ({setting})")]
    Usage {
        setting: &'static str,
        #[source]
        source: UsageStoreError,
    },
    #[error("invalid AI upstream ({role}, {provider}): {message}")]
    AiUpstream {
        role: &'static str,
        provider: &'static str,
        message: String,
    },
    #[error("password hashing does not work")]
    Hasher(#[source] PasswordHashError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// One implementation for every port the use cases need.
pub struct Adapters {
    pub users: Arc<dyn UserRepository>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub tokens: Arc<dyn TokenService>,
    /// Refresh tokens (kept by the user store), tickets and revocations.
    pub access: AccessPorts,
    /// What the chat use cases run on.
    pub chat: ChatPorts,
    /// Counts what the abuse limits limit: in process, or shared in Redis.
    pub limiter: Arc<dyn RateLimiter>,
}

impl Adapters {
    /// Connects the adapters the configuration asks for; a store that does not
    /// answer stops start-up here rather than failing the first request.
    pub async fn from_config(config: &Config) -> Result<Self, StartupError> {
        probe_stores(config).await?;
        let conversations = conversation_stores(&config.sessions).await?;
        let UserStores {
            users,
            refresh,
            transcripts,
        } = user_store(&config.storage).await?;
        let (tickets, revocations) = access_stores(&config.sessions).await?;
        // One adapter counts everything: the use cases through the stats
        // port, the AI decorators through the observer hook.
        let metrics = Arc::new(PrometheusMetrics::new());
        let ai = ai_model(&config.ai, metrics.clone())?;
        for upstream in ai.upstreams() {
            metrics.upstream_configured(upstream.role);
            metrics.circuit_changed(upstream.role, upstream.circuit);
        }
        metrics.close_reasons(crate::adapters::inbound::ws::close_labels());
        let chat_users = users.clone();
        Ok(Self {
            users,
            hasher: Arc::new(Argon2Hasher::new(Argon2Params::OWASP)),
            tokens: token_service(&config.auth),
            access: AccessPorts {
                refresh,
                tickets,
                revocations,
            },
            chat: ChatPorts {
                sessions: session_store(&config.sessions, config.limits.sessions_per_user).await?,
                ai,
                stats: metrics,
                log: conversations.log,
                live: conversations.live,
                backplane: conversations.backplane,
                registry: conversations.registry,
                handoffs: conversations.handoffs,
                presence: conversations.presence,
                signals: conversations.signals,
                transcripts,
                users: chat_users,
                usage: usage_store(config).await?,
                token_counter: Arc::new(O200kCounter::warmed().await),
            },
            limiter: rate_limiter(&config.sessions).await?,
        })
    }
}

/// Pings MongoDB and Redis (at once) before any adapter connects, so a store
/// that is down is reported as unreachable within `STORE_CONNECT_TIMEOUT`
/// instead of as whatever step an adapter was on when its own timeout ran out.
async fn probe_stores(config: &Config) -> Result<(), StartupError> {
    let timeout = config.storage.connect_timeout;
    let mongo = async {
        match &config.storage.mongodb_uri {
            Some(uri) => reachability::mongodb(uri.expose(), timeout)
                .await
                .map_err(|source| StartupError::Store {
                    store: "MongoDB",
                    setting: "MONGODB_URI",
                    url: uri.redacted(),
                    source,
                }),
            None => Ok(()),
        }
    };
    let redis = async {
        match config.sessions.redis() {
            Some(RedisUrls::Single(url)) => reachability::redis(url.expose(), timeout)
                .await
                .map_err(|source| StartupError::Store {
                    store: "Redis",
                    setting: "REDIS_URL",
                    url: url.redacted(),
                    source,
                }),
            // A cluster needs only one seed to answer; its client finds the rest.
            Some(RedisUrls::Cluster(urls)) => {
                let mut last = Ok(());
                for url in urls {
                    last = reachability::redis(url.expose(), timeout)
                        .await
                        .map_err(|source| StartupError::Store {
                            store: "Redis Cluster",
                            setting: "REDIS_CLUSTER_URLS",
                            url: url.redacted(),
                            source,
                        });
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
            None => Ok(()),
        }
    };
    let (mongo, redis) = tokio::join!(mongo, redis);
    mongo.and(redis)
}

/// The shared Redis as the adapters take it, if one is configured.
fn redis_target(sessions: &SessionConfig) -> Option<RedisTarget> {
    match sessions.redis()? {
        RedisUrls::Single(url) => Some(RedisTarget::Single(url.expose().to_owned())),
        RedisUrls::Cluster(urls) => Some(RedisTarget::Cluster(
            urls.iter().map(|u| u.expose().to_owned()).collect(),
        )),
    }
}

/// Token usage counted in Redis, so every instance shares the budgets, or
/// else in the embedded SQLite file (beside the users), so it survives a
/// restart.
async fn usage_store(config: &Config) -> Result<Arc<dyn UsageStore>, StartupError> {
    if let Some(target) = redis_target(&config.sessions) {
        tracing::info!("token usage: shared in Redis");
        let store = RedisUsageStore::connect(target, &config.sessions.redis_key_prefix)
            .await
            .map_err(|source| StartupError::Usage {
                setting: "REDIS_URL or REDIS_CLUSTER_URLS",
                source,
            })?;
        return Ok(Arc::new(store));
    }
    let path = &config.storage.sqlite_path;
    tracing::info!(path = %path.display(), "token usage: embedded SQLite");
    let store = SqliteUsageStore::open(path)
        .await
        .map_err(|source| StartupError::Usage {
            setting: "SQLITE_PATH",
            source,
        })?;
    Ok(Arc::new(store))
}

/// Limits counted in this process, or in Redis so every instance shares them.
async fn rate_limiter(sessions: &SessionConfig) -> Result<Arc<dyn RateLimiter>, StartupError> {
    let Some(url) = redis_target(sessions) else {
        tracing::info!("rate limits: in process (single instance)");
        return Ok(Arc::new(InMemoryRateLimiter::default()));
    };
    tracing::info!("rate limits: shared in Redis");
    let limiter = RedisRateLimiter::connect(url, &sessions.redis_key_prefix)
        .await
        .map_err(StartupError::RedisLimiter)?;
    Ok(Arc::new(limiter))
}

/// The use cases' view of the configured limits. A connection's slot is
/// renewed on every ping tick, so it lives for three of them.
fn limit_settings(limits: &LimitsConfig, ping_interval: std::time::Duration) -> LimitSettings {
    let rule = |w: Option<WindowLimit>| {
        w.map(|w| Rule {
            max: w.max,
            window: w.window,
        })
    };
    LimitSettings {
        login_per_account_ip: rule(limits.login_per_account_ip),
        login_per_ip: rule(limits.login_per_ip),
        login_per_account: rule(limits.login_per_account),
        register_per_ip: rule(limits.register_per_ip),
        verify_per_ip: rule(limits.verify_per_ip),
        ws_tickets_per_user: rule(limits.ws_tickets_per_user),
        chats_per_user: rule(limits.chats_per_user),
        chat_concurrent_per_user: limits.chat_concurrent_per_user,
        ws_connections_per_user: limits.ws_connections_per_user,
        ws_connections_per_ip: limits.ws_connections_per_ip,
        connection_lease: ping_interval * 3,
    }
}

/// What conversations run on besides the session store.
struct ConversationStores {
    log: Arc<dyn EventLog>,
    live: Arc<dyn LiveDelivery>,
    backplane: Arc<dyn Backplane>,
    registry: Arc<dyn GenerationRegistry>,
    handoffs: Arc<dyn HandoffStore>,
    presence: Arc<dyn AgentPresence>,
    signals: Arc<dyn SignalBus>,
}

/// The event log, live delivery, generation registry, handoff state and agent
/// presence: in memory for one instance, or in Redis (the backplane that lets
/// any instance serve any client).
async fn conversation_stores(sessions: &SessionConfig) -> Result<ConversationStores, StartupError> {
    let limit = sessions.event_log_limit;
    let Some(url) = redis_target(sessions) else {
        tracing::info!("conversations: in memory (single instance)");
        let log = Arc::new(InMemoryEventLog::new(limit, sessions.ttl));
        let live = Arc::new(InMemoryLiveDelivery::default());
        return Ok(ConversationStores {
            backplane: Arc::new(InMemoryBackplane::new(log.clone(), live.clone())),
            log,
            live,
            registry: Arc::new(InMemoryGenerationRegistry::default()),
            handoffs: Arc::new(MemoryHandoffs::default()),
            presence: Arc::new(MemoryPresence::default()),
            signals: Arc::new(LocalSignals::default()),
        });
    };
    tracing::info!("conversations: Redis backplane");
    let redis =
        RedisConversations::connect(url.clone(), &sessions.redis_key_prefix, limit, sessions.ttl)
            .await
            .map_err(StartupError::RedisConversations)?;
    let (handoffs, presence) =
        RedisHandoffs::connect(url.clone(), &sessions.redis_key_prefix, sessions.ttl)
            .await
            .map_err(StartupError::RedisConversations)?;
    let signals = RedisSignals::connect(url, &sessions.redis_key_prefix)
        .await
        .map_err(StartupError::RedisConversations)?;
    Ok(ConversationStores {
        log: Arc::new(redis.log),
        live: Arc::new(redis.live),
        backplane: Arc::new(redis.backplane),
        registry: Arc::new(redis.registry),
        handoffs: Arc::new(handoffs),
        presence: Arc::new(presence),
        signals: Arc::new(signals),
    })
}

/// The user store alone, as the server would open it: for operator
/// commands (`users set-role`) that must act on the same accounts.
///
/// # Errors
/// The [`StartupError`] the server itself would fail to start with.
pub async fn open_user_store(
    storage: &StorageConfig,
) -> Result<Arc<dyn UserRepository>, StartupError> {
    Ok(user_store(storage).await?.users)
}

/// The user store and what lives beside the users.
struct UserStores {
    users: Arc<dyn UserRepository>,
    refresh: Arc<dyn RefreshTokenStore>,
    transcripts: Arc<dyn TranscriptStore>,
}

/// The user store, which also keeps the refresh tokens, and the transcripts
/// in the same database (MongoDB's `messages`, or the SQLite file's table).
async fn user_store(storage: &StorageConfig) -> Result<UserStores, StartupError> {
    if let Some(uri) = &storage.mongodb_uri {
        tracing::info!(uri = %uri, "user store and transcripts: MongoDB");
        let repo = Arc::new(
            MongoUserRepository::connect(uri.expose())
                .await
                .map_err(StartupError::Mongo)?,
        );
        let transcripts = MongoTranscriptStore::open(repo.database())
            .await
            .map_err(|source| StartupError::Transcripts {
                setting: "MONGODB_URI",
                source,
            })?;
        return Ok(UserStores {
            users: repo.clone(),
            refresh: repo,
            transcripts: Arc::new(transcripts),
        });
    }
    let path = &storage.sqlite_path;
    tracing::info!(path = %path.display(), "user store and transcripts: embedded SQLite");
    let repo = SqliteUserRepository::open(path)
        .await
        .map_err(|source| StartupError::Sqlite {
            path: path.clone(),
            source,
        })?;
    let repo = Arc::new(repo);
    let transcripts =
        SqliteTranscriptStore::open(path)
            .await
            .map_err(|source| StartupError::Transcripts {
                setting: "SQLITE_PATH",
                source,
            })?;
    Ok(UserStores {
        users: repo.clone(),
        refresh: repo,
        transcripts: Arc::new(transcripts),
    })
}

/// WebSocket tickets and token revocations: in memory for one instance, or
/// in Redis, so every instance redeems any ticket and hears every revocation.
async fn access_stores(
    sessions: &SessionConfig,
) -> Result<(Arc<dyn TicketStore>, Arc<dyn RevocationStore>), StartupError> {
    let Some(url) = redis_target(sessions) else {
        tracing::info!("tickets and revocations: in memory (single instance)");
        return Ok((
            Arc::new(InMemoryTicketStore::default()),
            Arc::new(InMemoryRevocationStore::default()),
        ));
    };
    let prefix = &sessions.redis_key_prefix;
    let tickets = RedisTicketStore::connect(url.clone(), prefix)
        .await
        .map_err(StartupError::RedisAccess)?;
    let revocations = RedisRevocationStore::connect(url, prefix)
        .await
        .map_err(StartupError::RedisAccess)?;
    Ok((Arc::new(tickets), Arc::new(revocations)))
}

/// The access policy from configuration. The successor key is derived from
/// the JWT secret (so every instance derives the same successors) under a
/// label of its own, so it is never the signing key itself.
fn access_settings(config: &Config) -> AccessSettings {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(config.auth.jwt_secret.bytes())
        .expect("HMAC takes any key");
    mac.update(b"chatbot-server refresh-token successor v1");
    AccessSettings {
        allow_registration: config.access.allow_registration,
        refresh_ttl: config.access.refresh_token_ttl,
        reuse_grace: config.access.refresh_reuse_grace,
        ticket_ttl: config.access.ws_ticket_ttl,
        token_lifetime: std::time::Duration::from_secs(config.auth.token_lifetime.seconds()),
        successor_key: mac.finalize().into_bytes().to_vec(),
    }
}

async fn session_store(
    sessions: &SessionConfig,
    per_user: Option<u32>,
) -> Result<Arc<dyn SessionStore>, StartupError> {
    let (Some(url), Some(shown)) = (redis_target(sessions), sessions.redis()) else {
        tracing::info!("session store: in memory");
        let store = InMemorySessionStore::new(sessions.ttl).with_max_per_user(per_user);
        return Ok(Arc::new(store));
    };
    tracing::info!(url = %shown, "session store: Redis");
    let store = RedisSessionStore::connect(url, sessions.ttl, &sessions.redis_key_prefix)
        .await
        .map_err(StartupError::Redis)?
        .with_max_per_user(per_user);
    Ok(Arc::new(store))
}

/// The echo model, or the configured upstream (and fallback), each behind
/// its own retries and circuit breaker; `observer` hears every attempt.
fn ai_model(
    ai: &AiConfig,
    observer: Arc<dyn UpstreamObserver>,
) -> Result<Arc<dyn AiModel>, StartupError> {
    let Some(primary) = &ai.primary else {
        tracing::warn!(
            "FASTAPI_URL is not set: answering with the built-in echo model \
             (set FASTAPI_URL, or AI_PROVIDER=openai, to use a real AI service)"
        );
        return Ok(Arc::new(EchoAi::new(ai.echo_token_delay)));
    };
    let primary = resilient_upstream(ai, primary, "primary", observer.clone())?;
    match &ai.fallback {
        None => Ok(primary),
        Some(fallback) => {
            let fallback = resilient_upstream(ai, fallback, "fallback", observer)?;
            Ok(Arc::new(FallbackAi::new(primary, fallback)))
        }
    }
}

fn resilient_upstream(
    ai: &AiConfig,
    upstream: &UpstreamConfig,
    role: &'static str,
    observer: Arc<dyn UpstreamObserver>,
) -> Result<Arc<dyn AiModel>, StartupError> {
    let timeouts = UpstreamTimeouts {
        connect: ai.connect_timeout,
        first_token: ai.first_token_timeout,
        idle: ai.idle_timeout,
    };
    let provider = upstream.provider();
    let adapter = match upstream {
        UpstreamConfig::FastApi { url } => UpstreamAi::new(url, timeouts),
        UpstreamConfig::OpenAi {
            base_url,
            api_key,
            model,
            system_prompt,
        } => {
            let settings = OpenAiSettings {
                api_key: api_key.as_ref().map(|k| k.expose().to_owned()),
                model: model.clone(),
                system_prompt: system_prompt.clone(),
            };
            UpstreamAi::openai(base_url, settings, timeouts)
        }
    }
    .map_err(|message| StartupError::AiUpstream {
        role,
        provider,
        message,
    })?;
    tracing::info!(upstream = role, provider, url = %upstream.url(), "AI: upstream");
    let policy = RetryPolicy {
        max_retries: ai.max_retries,
        backoff: ai.retry_backoff,
        budget: ai.first_token_timeout,
    };
    let breaker = ai.breaker_failures.map(|failures| BreakerSettings {
        failures,
        cooldown: ai.breaker_cooldown,
    });
    let label = UpstreamLabel {
        role,
        provider,
        model: match upstream {
            UpstreamConfig::OpenAi { model, .. } => Some(model.as_str().into()),
            UpstreamConfig::FastApi { .. } => None,
        },
    };
    Ok(Arc::new(ResilientAi::new(
        Arc::new(adapter),
        label,
        policy,
        breaker,
        observer,
    )))
}

fn token_service(auth: &AuthConfig) -> Arc<dyn TokenService> {
    if auth.jwt_secret.generated {
        tracing::warn!(
            "JWT_SECRET is not set: using a random secret for this run, so tokens will not \
             survive a restart (set JWT_SECRET; production refuses to start without one)"
        );
    }
    Arc::new(JwtTokenService::new(
        auth.jwt_secret.bytes(),
        auth.token_lifetime.clone(),
    ))
}

/// What traces say the answers come from: the primary upstream.
fn ai_labels(ai: &AiConfig) -> AiLabels {
    match &ai.primary {
        None => AiLabels::default(),
        Some(upstream) => AiLabels {
            provider: upstream.provider(),
            model: match upstream {
                UpstreamConfig::OpenAi { model, .. } => Some(model.as_str().into()),
                UpstreamConfig::FastApi { .. } => None,
            },
        },
    }
}

/// The conversation rules from configuration.
fn conversation_settings(config: &Config) -> ConversationSettings {
    let sessions = &config.sessions;
    ConversationSettings {
        answers: AnswerSettings {
            relay: config.ai.relay,
            budget: config.limits.token_budget,
        },
        ai: ai_labels(&config.ai),
        session_ttl: sessions.ttl,
        lease: sessions.generation_lease,
        unattended_timeout: sessions.unattended_generation_timeout,
        handoff: HandoffSettings {
            switch: sessions.handoff,
            when_no_agent_online: sessions.handoff_when_no_agent_online,
            offline_message: sessions.handoff_offline_message.clone(),
            queue_timeout: sessions.handoff_queue_timeout,
            away_grace: sessions.agent_away_grace,
            max_conversations: sessions.agent_max_conversations,
            assign: sessions.handoff_assign,
            hours: sessions.handoff_hours.clone(),
            closed_message: sessions.handoff_closed_message.clone(),
            summary: sessions
                .handoff_summary_prompt
                .clone()
                .map(|prompt| SummarySettings {
                    prompt,
                    timeout: config.ai.connect_timeout
                        + config.ai.first_token_timeout
                        + config.ai.idle_timeout,
                }),
        },
    }
}

/// The use cases the adapters call, the conversation services sharing one
/// core, and the owner of that core's background loops (started here).
fn use_cases(
    auth: AuthService,
    ports: ChatPorts,
    config: &Config,
    limits: Limits,
) -> (UseCases, ConversationLoops) {
    let metrics = ports.stats.clone();
    let ai = ports.ai.clone();
    let settings = conversation_settings(config);
    let core = Arc::new(ConversationCore::new(ports, settings, limits.clone()));
    let loops = ConversationLoops::start(&core);
    let use_cases = UseCases {
        auth,
        chat: ChatService::new(core.clone()),
        handoff: HandoffService::new(core.clone()),
        transcripts: TranscriptService::new(core),
        limits,
        metrics,
        ai,
    };
    (use_cases, loops)
}

/// A bound, wired server that has not started serving yet.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<AppContext>,
    cors_origins: Option<Vec<String>>,
    /// The `METRICS_ADDR` listener, bound.
    metrics: Option<(TcpListener, SocketAddr)>,
    /// Expires transcripts past `TRANSCRIPT_RETENTION`, when one is set.
    sweeper: Option<RetentionSweeper>,
    /// The conversations' background loops (stops from other instances,
    /// the reaper, the handoff timers).
    loops: ConversationLoops,
}

/// Binds `METRICS_ADDR`.
async fn bind_metrics(wanted: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: wanted,
        source,
    };
    let listener = TcpListener::bind(wanted).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tracing::info!(%addr, "metrics listening");
    Ok((listener, addr))
}

impl Application {
    /// Builds the server the configuration describes and binds its port
    /// (`PORT=0` picks a free one; read it back with [`Application::address`]).
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let adapters = Adapters::from_config(&config).await?;
        Self::build_with(config, adapters).await
    }

    /// Builds the server on adapters chosen by the caller (tests pass mocks of
    /// ports a real store will not fail on demand).
    pub async fn build_with(config: Config, adapters: Adapters) -> Result<Self, StartupError> {
        let stats = adapters.chat.stats.clone();
        let sweeper = config.storage.transcript_retention.map(|retention| {
            tracing::info!(
                retention_secs = retention.as_secs(),
                "transcripts: entries older than the retention are expired"
            );
            RetentionSweeper::start(adapters.chat.transcripts.clone(), stats.clone(), retention)
        });
        let limits = Limits::new(
            adapters.limiter,
            limit_settings(&config.limits, config.websocket.ping_interval),
        )
        .with_stats(stats.clone());
        let health = HealthMonitor::start(
            HealthTargets {
                users: adapters.users.clone(),
                sessions: adapters.chat.sessions.clone(),
                ai: adapters.chat.ai.clone(),
            },
            config.observability.health_probe_interval,
        );
        let auth = AuthService::new(
            adapters.users,
            adapters.hasher,
            adapters.tokens,
            adapters.access,
            access_settings(&config),
        )
        .await
        .map_err(StartupError::Hasher)?
        .with_limits(limits.clone())
        .with_stats(stats);
        let (use_cases, loops) = use_cases(auth, adapters.chat, &config, limits);
        let ctx = Arc::new(
            AppContext::new(
                use_cases,
                config.websocket,
                config.server.shutdown_timeout,
                config.connections,
            )
            .with_trusted_proxies(config.limits.trusted_proxies.clone())
            .with_health(health, config.observability.metrics_addr.is_none()),
        );
        let wanted = SocketAddr::new(config.server.host, config.server.port);
        let all_interfaces = config.server.all_interfaces();
        let listener =
            server::listen::bind(wanted, all_interfaces).map_err(|source| StartupError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: wanted,
            source,
        })?;
        // Bound before "server listening" is said: a taken METRICS_ADDR fails
        // start-up like a taken PORT.
        let metrics = match config.observability.metrics_addr {
            Some(wanted) => Some(bind_metrics(wanted).await?),
            None => None,
        };
        tracing::info!(
            %addr,
            all_interfaces,
            env = config.server.env.as_str(),
            "server listening"
        );
        Ok(Self {
            listener,
            addr,
            ctx,
            cors_origins: config.server.cors_origins,
            metrics,
            sweeper,
            loops,
        })
    }

    /// Where `/metrics` and the health probes are served apart from the
    /// API (`METRICS_ADDR`), if they are.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// The address the server is bound to.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every route and middleware, for driving the server without a socket.
    pub fn endpoint(&self) -> impl Endpoint {
        http::app(self.ctx.clone(), self.cors_origins.clone())
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets
    /// running answers finish for up to `SHUTDOWN_TIMEOUT`, closes every
    /// WebSocket with 1001 and returns.
    ///
    /// # Errors
    /// [`StartupError::Serve`] if the listener fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let ctx = self.ctx.clone();
        let endpoint = http::app(ctx.clone(), self.cors_origins).map_to_response();
        // The metrics port keeps answering through the drain, so a probe
        // there sees `/health/ready` turn 503 while answers finish.
        let metrics_stop = tokio_util::sync::CancellationToken::new();
        let metrics_server = self.metrics.map(|(listener, _)| {
            tokio::spawn(http::serve_metrics(
                listener,
                ctx.clone(),
                metrics_stop.clone().cancelled_owned(),
            ))
        });
        let mut server = tokio::spawn(server::serve(self.listener, ctx.clone(), endpoint));
        let drained = Self::serve_until(ctx.clone(), &mut server, shutdown).await;
        // The loops end with the drain (or with a server that failed).
        self.loops.stop().await;
        let result = match drained {
            Some(ended) => ended,
            None => flatten(server.await),
        };
        metrics_stop.cancel();
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        ctx.stop_health().await;
        if let Some(sweeper) = &self.sweeper {
            sweeper.stop().await;
        }
        result?;
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// Serves until `shutdown`, then drains (`None`); `Some` with the
    /// server's result if it ended first, which it only does when it failed.
    async fn serve_until(
        ctx: Arc<AppContext>,
        server: &mut tokio::task::JoinHandle<std::io::Result<()>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Option<Result<(), StartupError>> {
        tokio::select! {
            () = shutdown => {
                tracing::info!(
                    timeout_secs = ctx.shutdown_timeout.as_secs_f64(),
                    "shutting down: finishing running streams"
                );
                ctx.shutdown.cancel();
                // Running answers finish (or are cancelled at the deadline)
                // while connections stay open to carry their last events.
                ctx.chat.drain(ctx.shutdown_timeout).await;
                None
            }
            result = server => Some(flatten(result)),
        }
    }
}

fn flatten(
    joined: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), StartupError> {
    match joined {
        Ok(result) => result.map_err(StartupError::Serve),
        Err(e) => Err(StartupError::Serve(std::io::Error::other(e))),
    }
}
