//! The binary: reads configuration, picks the adapters, serves until SIGTERM or Ctrl-C.
//!
//! This is the only place that knows which adapter implements which port.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use chatbot_server::adapters::inbound::{http, AppContext, WsSettings};
use chatbot_server::adapters::outbound::argon2_hasher::{Argon2Hasher, Argon2Params};
use chatbot_server::adapters::outbound::echo_ai::EchoAi;
use chatbot_server::adapters::outbound::jwt::JwtTokenService;
use chatbot_server::adapters::outbound::memory_sessions::InMemorySessionStore;
use chatbot_server::adapters::outbound::mongo_users::MongoUserRepository;
use chatbot_server::adapters::outbound::redis_sessions::RedisSessionStore;
use chatbot_server::adapters::outbound::sqlite_users::SqliteUserRepository;
use chatbot_server::adapters::outbound::upstream_ai::{UpstreamAi, UpstreamTimeouts};
use chatbot_server::application::ports::{AiModel, SessionStore, UserRepository};
use chatbot_server::application::{AuthService, ChatService, Stats};
use chatbot_server::config::Config;
use chatbot_server::telemetry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit code for configuration the server refuses to start with.
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for a dependency that failed at start-up (store unreachable, port taken).
const EXIT_STARTUP_FAILED: u8 = 1;

fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("chatbot-server: could not read .env: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatbot-server: configuration error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init(config.env);
    raise_open_file_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatbot-server: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("chatbot-server: {e:#}");
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.jwt_secret.generated {
        tracing::warn!(
            "JWT_SECRET is not set: using a random secret for this run, so tokens will not \
             survive a restart (set JWT_SECRET; production refuses to start without one)"
        );
    }

    let users: Arc<dyn UserRepository> = match &config.mongodb_uri {
        Some(uri) => {
            tracing::info!("user store: MongoDB");
            Arc::new(
                MongoUserRepository::connect(uri)
                    .await
                    .context("could not connect to MongoDB (MONGODB_URI)")?,
            )
        }
        None => {
            tracing::info!(path = %config.sqlite_path.display(), "user store: embedded SQLite");
            Arc::new(
                SqliteUserRepository::open(&config.sqlite_path)
                    .await
                    .with_context(|| {
                        format!(
                            "could not open SQLITE_PATH={}",
                            config.sqlite_path.display()
                        )
                    })?,
            )
        }
    };

    let sessions: Arc<dyn SessionStore> = match &config.redis_url {
        Some(url) => {
            tracing::info!("session store: Redis");
            Arc::new(
                RedisSessionStore::connect(url, config.session_ttl, &config.redis_key_prefix)
                    .await
                    .context("could not connect to Redis (REDIS_URL)")?,
            )
        }
        None => {
            tracing::info!("session store: in memory");
            Arc::new(InMemorySessionStore::new(config.session_ttl))
        }
    };

    let ai: Arc<dyn AiModel> = match &config.fastapi_url {
        Some(url) => {
            tracing::info!(url = %url, "AI: upstream");
            let timeouts = UpstreamTimeouts {
                connect: config.ai_connect_timeout,
                first_token: config.ai_first_token_timeout,
                idle: config.ai_idle_timeout,
            };
            Arc::new(
                UpstreamAi::new(url, timeouts)
                    .map_err(anyhow::Error::msg)
                    .context("invalid FASTAPI_URL")?,
            )
        }
        None => {
            tracing::warn!(
                "FASTAPI_URL is not set: answering with the built-in echo model \
                 (set FASTAPI_URL to use the real AI service)"
            );
            Arc::new(EchoAi::new(config.echo_token_delay))
        }
    };

    let hasher = Arc::new(Argon2Hasher::new(Argon2Params::OWASP));
    let tokens = Arc::new(JwtTokenService::new(
        config.jwt_secret.bytes(),
        config.jwt_expires_in,
    ));
    let auth = AuthService::new(users, hasher, tokens)
        .await
        .context("password hashing does not work")?;
    let stats = Arc::new(Stats::default());
    let chat = ChatService::new(sessions, ai, stats.clone());

    let ctx = Arc::new(AppContext {
        auth,
        chat,
        stats,
        ws: WsSettings {
            max_message_chars: config.max_message_chars,
            ping_interval: config.ws_ping_interval,
            pong_timeout: config.ws_pong_timeout,
            shutdown_timeout: config.shutdown_timeout,
            // A quarter of the TTL: several chances before expiry, few store writes.
            session_refresh: (config.session_ttl / 4).max(std::time::Duration::from_secs(1)),
        },
        token_lifetime_text: config.jwt_expires_in_text.clone(),
        started_at: Instant::now(),
        shutdown: CancellationToken::new(),
        connections: TaskTracker::new(),
    });

    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("could not listen on {}:{}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, env = config.env.as_str(), "server listening");

    let mut server = tokio::spawn(http::serve(
        listener,
        ctx.clone(),
        config.cors_origins.clone(),
    ));
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!(
                timeout_secs = config.shutdown_timeout.as_secs_f64(),
                "shutting down: finishing running streams"
            );
            ctx.shutdown.cancel();
            // A second Ctrl-C or SIGTERM means "now": skip the grace period.
            tokio::spawn(async {
                shutdown_signal().await;
                eprintln!("chatbot-server: second signal, exiting immediately");
                std::process::exit(130);
            });
        }
        result = &mut server => {
            // The server only returns by itself when it failed.
            return result.context("server task failed")?.context("server failed");
        }
    }
    server
        .await
        .context("server task failed")?
        .context("server failed during shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Every WebSocket holds a file descriptor, and many systems start processes
/// with a soft limit of 1024: lift it to the hard limit the administrator allows.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = before;
            }
        }
        limit.rlim_cur
    };
    tracing::info!(open_files = raised, "open-file limit");
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
