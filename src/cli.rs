//! The command line: subcommands, and a flag for every setting that is not a
//! secret, overlaid on the environment before [`Config::from_lookup`] parses it.
//!
//! [`Config::from_lookup`] stays the one parser of settings: every flag here is
//! a plain string that clap only gathers, so validation and the real defaults
//! live in `config.rs` alone. The `[default: …]` clap prints is for the reader;
//! values clap fills in from a default are never passed on, and a unit test
//! checks that each one means what `config.rs` does when the setting is unset.
//! Secrets (the JWT secret, API keys, URIs that carry credentials) are read
//! from the environment only: a flag would show them to anyone who can list
//! processes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigError, ServerConfig};

/// Settings read from the environment only, never flags.
pub const SECRET_SETTINGS: &[&str] = &[
    "JWT_SECRET",
    "MONGODB_URI",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "AI_FALLBACK_OPENAI_API_KEY",
];

const AFTER_HELP: &str = "\
Every option is also read from the environment variable shown, and from a .env
file in the working directory; a flag wins over both. Secrets are read from the
environment (or .env) only, never from flags:
  JWT_SECRET, MONGODB_URI, REDIS_URL, OPENAI_API_KEY, AI_FALLBACK_OPENAI_API_KEY

Exit codes: 0 success, 1 start-up failure (a store unreachable, the port
taken), 2 configuration error (one line saying which setting).";

/// Declares [`Settings`]: one optional string per setting, with its flag
/// (`--port`), its environment variable and, when it has one, the default
/// shown in `--help`.
macro_rules! settings {
    ($( $heading:literal {
        $( $(#[doc = $doc:literal])* $field:ident = $env:literal $(, default $default:literal)? ; )*
    } )*) => {
        /// The settings that may be given as flags (see the module docs).
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct Settings {
            $( $(
                $(#[doc = $doc])*
                #[arg(
                    long,
                    env = $env,
                    hide_env_values = true,
                    global = true,
                    value_name = "VALUE",
                    help_heading = $heading
                    $(, default_value = $default)?
                )]
                pub $field: Option<String>,
            )* )*
        }
    };
}

settings! {
    "Server" {
        /// Port to listen on (0 picks a free one).
        port = "PORT", default "3001";
        /// IP address to listen on; unset, 0.0.0.0 or :: listen on every interface, IPv4 and IPv6.
        host = "HOST";
        /// development or production (wins over NODE_ENV).
        app_env = "APP_ENV";
        /// Node.js-style environment: development, test, local or dev mean development, anything else production.
        node_env = "NODE_ENV";
        /// How long running answers may finish after SIGTERM or Ctrl-C.
        shutdown_timeout = "SHUTDOWN_TIMEOUT", default "10s";
        /// Allowed browser origins, comma-separated, each with its scheme; unset or * allows any.
        cors_origin = "CORS_ORIGIN";
        /// Log filter (tracing EnvFilter syntax) [default: info].
        rust_log = "RUST_LOG";
        /// true lets chat text reach the logs at debug/trace level (debugging only).
        log_chat_content = "LOG_CHAT_CONTENT", default "false";
    }
    "Observability" {
        /// Serve /metrics, /health/live and /health/ready on this address instead of the main port.
        metrics_addr = "METRICS_ADDR";
        /// How often the stores and the AI are probed in the background for the health endpoints.
        health_probe_interval = "HEALTH_PROBE_INTERVAL", default "5s";
    }
    "Authentication and access" {
        /// Token lifetime, echoed to clients as expiresIn.
        jwt_expires_in = "JWT_EXPIRES_IN", default "24h";
        /// false answers registrations with 403.
        allow_registration = "ALLOW_REGISTRATION", default "true";
        /// How long a refresh token can be used.
        refresh_token_ttl = "REFRESH_TOKEN_TTL", default "30d";
        /// A refresh token reused within this of its rotation gets the same successor (0: off).
        refresh_reuse_grace = "REFRESH_REUSE_GRACE", default "10s";
        /// How long a WebSocket ticket can be redeemed.
        ws_ticket_ttl = "WS_TICKET_TTL", default "30s";
    }
    "Stores" {
        /// The embedded SQLite user store, used when MONGODB_URI is unset.
        sqlite_path = "SQLITE_PATH", default "./data/chatbot.db";
        /// How long start-up waits for MongoDB or Redis before saying it is unreachable.
        store_connect_timeout = "STORE_CONNECT_TIMEOUT", default "5s";
        /// Prefix of every Redis key.
        redis_key_prefix = "REDIS_KEY_PREFIX", default "chatbot";
        /// A session is forgotten after this long without activity.
        session_ttl = "SESSION_TTL", default "24h";
        /// Events of a conversation kept for replay.
        event_log_limit = "EVENT_LOG_LIMIT", default "2000";
        /// A running answer's lease; an answer whose instance died ends within twice this.
        generation_lease = "GENERATION_LEASE", default "10s";
        /// An answer with no open tab for this long is cancelled.
        unattended_generation_timeout = "UNATTENDED_GENERATION_TIMEOUT", default "60s";
        /// A conversation waiting for a human goes back to the bot after this.
        handoff_queue_timeout = "HANDOFF_QUEUE_TIMEOUT", default "10m";
        /// An agent with no socket open this long loses its conversations to the queue.
        agent_away_grace = "AGENT_AWAY_GRACE", default "2m";
        /// Human handoff: auto (in use once an agent account exists), on or off (a request for a human is only answered).
        handoff = "HANDOFF", default "auto";
        /// When agents exist but none is online: bot (say so; the bot keeps answering) or queue (wait anyway).
        handoff_when_no_agent_online = "HANDOFF_WHEN_NO_AGENT_ONLINE", default "bot";
        /// What the customer is told when no agent is online [default: No agent is available right now. The assistant will keep helping you.].
        handoff_offline_message = "HANDOFF_OFFLINE_MESSAGE";
        /// Transcript entries older than this are deleted (e.g. 30d) [default: kept for good].
        transcript_retention = "TRANSCRIPT_RETENTION";
    }
    "AI service" {
        /// fastapi or openai [default: fastapi when FASTAPI_URL is set; unset: the echo model].
        ai_provider = "AI_PROVIDER";
        /// Base URL of a FastAPI upstream.
        fastapi_url = "FASTAPI_URL";
        /// Base URL of an OpenAI-compatible upstream, with its API version [default: https://api.openai.com/v1].
        openai_base_url = "OPENAI_BASE_URL";
        /// Model name of an OpenAI-compatible upstream.
        openai_model = "OPENAI_MODEL";
        /// System message sent first to an OpenAI-compatible upstream.
        ai_system_prompt = "AI_SYSTEM_PROMPT";
        /// Provider of the fallback upstream.
        ai_fallback_provider = "AI_FALLBACK_PROVIDER";
        /// Base URL of a FastAPI fallback.
        ai_fallback_fastapi_url = "AI_FALLBACK_FASTAPI_URL";
        /// Base URL of an OpenAI-compatible fallback.
        ai_fallback_openai_base_url = "AI_FALLBACK_OPENAI_BASE_URL";
        /// Model name of an OpenAI-compatible fallback.
        ai_fallback_openai_model = "AI_FALLBACK_OPENAI_MODEL";
        /// System message of an OpenAI-compatible fallback.
        ai_fallback_system_prompt = "AI_FALLBACK_SYSTEM_PROMPT";
        /// Connect and receive response headers, per attempt.
        ai_connect_timeout = "AI_CONNECT_TIMEOUT", default "5s";
        /// From response headers to the first token.
        ai_first_token_timeout = "AI_FIRST_TOKEN_TIMEOUT", default "30s";
        /// Longest gap between events after the first token.
        ai_idle_timeout = "AI_IDLE_TIMEOUT", default "30s";
        /// Retries of a chat before its first token (0: off).
        ai_max_retries = "AI_MAX_RETRIES", default "2";
        /// Wait before the first retry, doubling after each.
        ai_retry_backoff = "AI_RETRY_BACKOFF", default "200ms";
        /// Consecutive failed chats that open an upstream's circuit breaker (0: off).
        ai_breaker_failures = "AI_BREAKER_FAILURES", default "5";
        /// How long an open breaker skips its upstream.
        ai_breaker_cooldown = "AI_BREAKER_COOLDOWN", default "30s";
        /// Delay between words of the built-in echo model.
        echo_token_delay = "ECHO_TOKEN_DELAY", default "40ms";
    }
    "WebSocket" {
        /// Longest chat message, in characters.
        max_message_chars = "MAX_MESSAGE_CHARS", default "10000";
        /// Server ping interval.
        ws_ping_interval = "WS_PING_INTERVAL", default "20s";
        /// A connection silent for this long is closed.
        ws_pong_timeout = "WS_PONG_TIMEOUT", default "60s";
    }
    "Abuse limits (0 turns a count off)" {
        /// Failed logins per (account, client IP) in LOGIN_FAILURE_WINDOW.
        login_max_failures_per_account = "LOGIN_MAX_FAILURES_PER_ACCOUNT", default "5";
        /// Failed logins per client IP in LOGIN_FAILURE_WINDOW.
        login_max_failures_per_ip = "LOGIN_MAX_FAILURES_PER_IP", default "20";
        login_failure_window = "LOGIN_FAILURE_WINDOW", default "15m";
        /// Failed logins per account over all addresses in LOGIN_ACCOUNT_WINDOW.
        login_max_failures_per_account_hourly = "LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY", default "100";
        login_account_window = "LOGIN_ACCOUNT_WINDOW", default "1h";
        /// Registrations per client IP in REGISTER_WINDOW.
        register_per_ip_per_hour = "REGISTER_PER_IP_PER_HOUR", default "20";
        register_window = "REGISTER_WINDOW", default "1h";
        /// Token verifications per client IP in VERIFY_WINDOW.
        verify_per_ip_per_minute = "VERIFY_PER_IP_PER_MINUTE", default "120";
        verify_window = "VERIFY_WINDOW", default "1m";
        /// WebSocket tickets per user in WS_TICKETS_WINDOW.
        ws_tickets_per_user_per_minute = "WS_TICKETS_PER_USER_PER_MINUTE", default "30";
        ws_tickets_window = "WS_TICKETS_WINDOW", default "1m";
        /// Chats per user in CHAT_MESSAGES_WINDOW.
        chat_messages_per_minute = "CHAT_MESSAGES_PER_MINUTE", default "20";
        chat_messages_window = "CHAT_MESSAGES_WINDOW", default "1m";
        /// Answers one user may have running at once.
        chat_max_concurrent_per_user = "CHAT_MAX_CONCURRENT_PER_USER", default "3";
        /// Open WebSockets per user.
        ws_max_connections_per_user = "WS_MAX_CONNECTIONS_PER_USER", default "20";
        /// Open WebSockets per client IP.
        ws_max_connections_per_ip = "WS_MAX_CONNECTIONS_PER_IP", default "100";
        /// Live sessions per user; one more evicts the least recently active.
        sessions_max_per_user = "SESSIONS_MAX_PER_USER", default "50";
        /// IPs or CIDR blocks of reverse proxies whose X-Forwarded-For names the client.
        trusted_proxies = "TRUSTED_PROXIES";
    }
    "Slow and silent clients (0 turns each off)" {
        /// Request headers must be complete this long after connecting.
        http_header_timeout = "HTTP_HEADER_TIMEOUT", default "10s";
        /// A request body must arrive this long after its headers.
        http_body_timeout = "HTTP_BODY_TIMEOUT", default "30s";
        /// A kept-alive connection waiting for its next request is closed after this.
        http_keepalive_timeout = "HTTP_KEEPALIVE_TIMEOUT", default "75s";
        /// Kept-alive connections waiting for a next request, over all clients.
        http_max_idle_connections = "HTTP_MAX_IDLE_CONNECTIONS", default "1000";
        /// Connections per peer address that have not authenticated yet.
        unauth_connections_per_ip = "UNAUTH_CONNECTIONS_PER_IP", default "1024";
        /// Descriptors kept free for the server's own use.
        fd_headroom = "FD_HEADROOM", default "256";
    }
}

/// `chatbot-server [OPTIONS] [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "chatbot-server",
    version,
    about = "WebSocket chat gateway between chat clients and an AI service",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// What the process does; serving when none is given.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve until SIGTERM or Ctrl-C (the default).
    #[command(after_help = AFTER_HELP)]
    Serve,
    /// Validate the configuration (environment, .env, flags) without serving:
    /// exit 0 when it is valid, 2 with one line saying what is wrong.
    #[command(after_help = AFTER_HELP)]
    CheckConfig,
    /// GET /health of the server this configuration describes (HOST, PORT):
    /// exit 0 when it answers 200, 1 otherwise. For container health checks,
    /// which then need no curl.
    #[command(after_help = AFTER_HELP)]
    Healthcheck {
        /// Give up after this long.
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        timeout: String,
    },
    /// Manage the accounts in the configured user store (SQLite or MongoDB).
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `chatbot-server users …`: operator actions on accounts.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UsersCommand {
    /// Make USERNAME an agent (who claims queued conversations on /agent) or
    /// a plain user again. Exit 0 when done, 1 for an unknown user or a store
    /// that fails, 2 for bad configuration. Takes effect at once, also for
    /// sockets and requests already open.
    #[command(after_help = AFTER_HELP)]
    SetRole {
        /// The exact username, as used to log in.
        username: String,
        /// `agent` or `user`.
        #[arg(value_parser = ["user", "agent"])]
        role: String,
    },
}

/// The parsed command line.
pub struct Invocation {
    pub command: Command,
    /// `--healthcheck`'s bound, parsed.
    pub healthcheck_timeout: Option<Duration>,
    /// Variable name → value, for the settings given as flags.
    flags: HashMap<String, String>,
}

impl Invocation {
    /// Parses `args` (the program name first). `--help`, `--version` and
    /// usage errors come back as clap's error, to print and exit with.
    ///
    /// # Errors
    /// clap's error for `--help`, `--version` or a bad command line.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let command = cli.command.unwrap_or(Command::Serve);
        let healthcheck_timeout = match &command {
            Command::Healthcheck { timeout } => {
                let parsed = crate::domain::time::parse_duration(timeout)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        Cli::command().error(
                            clap::error::ErrorKind::ValueValidation,
                            format!(
                                "invalid --timeout {timeout:?}: expected a duration such as 3s"
                            ),
                        )
                    })?;
                Some(parsed)
            }
            _ => None,
        };
        Ok(Self {
            command,
            healthcheck_timeout,
            flags: flag_values(&matches),
        })
    }

    /// The value of `name` given as a flag, if it was.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// The configuration: flags over `env` (the process environment, with
    /// `.env` loaded into it).
    ///
    /// # Errors
    /// The first setting [`Config::from_lookup`] refuses.
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| self.flags.get(name).cloned().or_else(|| env(name)))
    }
}

/// What `check-config` prints: where the server would listen and which
/// stores and AI it would use, with every credential masked.
/// Why `users set-role` did not change a role.
#[derive(Debug, thiserror::Error)]
pub enum SetRoleError {
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    Store(#[from] crate::startup::StartupError),
    #[error("the user store failed")]
    Failed(#[source] crate::application::ports::UserStoreError),
}

/// `users set-role`: opens the store the server would use and sets the role.
///
/// # Errors
/// [`SetRoleError::UnknownUser`] when no account has that exact username;
/// the other variants when the store cannot be opened or fails.
pub async fn set_role(
    config: &Config,
    username: &str,
    role: crate::domain::UserRole,
) -> Result<crate::domain::User, SetRoleError> {
    use crate::application::ports::UserStoreError;
    // A name that cannot be parsed can never have been registered.
    let name = crate::domain::Username::parse(username)
        .map_err(|_| SetRoleError::UnknownUser(username.to_owned()))?;
    let users = crate::startup::open_user_store(&config.storage).await?;
    match users.set_role(&name, role).await {
        Ok(user) => Ok(user),
        Err(UserStoreError::NotFound) => Err(SetRoleError::UnknownUser(username.to_owned())),
        Err(e) => Err(SetRoleError::Failed(e)),
    }
}

pub fn summary(config: &Config) -> String {
    let listen = if config.server.all_interfaces() {
        format!(
            "every interface (IPv4 and IPv6), port {}",
            config.server.port
        )
    } else {
        SocketAddr::new(config.server.host, config.server.port).to_string()
    };
    let users = match &config.storage.mongodb_uri {
        Some(uri) => format!("MongoDB {uri}"),
        None => format!("SQLite {}", config.storage.sqlite_path.display()),
    };
    let sessions = match &config.sessions.redis_url {
        Some(url) => format!("Redis {url}"),
        None => "in memory".to_owned(),
    };
    let ai = match &config.ai.primary {
        Some(upstream) => format!("{} {}", upstream.provider(), upstream.url()),
        None => "built-in echo model".to_owned(),
    };
    format!(
        "{} on {listen}; users: {users}; sessions: {sessions}; AI: {ai}",
        config.server.env.as_str()
    )
}

/// GETs `/health` of the server `server` describes (on loopback when it
/// listens on every interface) and succeeds on a 200.
///
/// # Errors
/// Why the server is not healthy, in one line.
pub fn healthcheck(server: &ServerConfig, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    if server.port == 0 {
        return Err("PORT=0 names no port to check".into());
    }
    let ip = if server.all_interfaces() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        server.host
    };
    let addr = SocketAddr::new(ip, server.port);
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()))
        .and_then(|()| stream.set_read_timeout(Some(left())))
        .map_err(|e| format!("{addr}: {e}"))?;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: chatbot-server-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all we need; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("GET http://{addr}/health answered {code}")),
        None => Err(format!("GET http://{addr}/health: no HTTP answer")),
    }
}

/// Variable name → value of each setting given on the command line. Values
/// clap took from the environment are left out (the environment is read
/// after `.env` is loaded), and so are clap's displayed defaults.
fn flag_values(matches: &ArgMatches) -> HashMap<String, String> {
    let command = Cli::command();
    let mut flags = HashMap::new();
    for arg in command.get_arguments() {
        let (Some(env), id) = (arg.get_env(), arg.get_id().as_str()) else {
            continue;
        };
        let from_command_line = leaf(matches).value_source(id) == Some(ValueSource::CommandLine)
            || matches.value_source(id) == Some(ValueSource::CommandLine);
        if !from_command_line {
            continue;
        }
        let value = leaf(matches)
            .get_one::<String>(id)
            .or_else(|| matches.get_one::<String>(id));
        if let (Some(env), Some(value)) = (env.to_str(), value) {
            flags.insert(env.to_owned(), value.clone());
        }
    }
    flags
}

/// The matches of the subcommand given, where a global flag written after
/// it is recorded.
fn leaf(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn names_with_flags() -> BTreeSet<String> {
        Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_win_over_the_environment_and_defaults_are_not_passed_on() {
        let inv = Invocation::parse_from(["chatbot-server", "--port", "4000"]).unwrap();
        assert_eq!(inv.command, Command::Serve);
        let env = |k: &str| (k == "PORT" || k == "SHUTDOWN_TIMEOUT").then(|| "5000".to_owned());
        let config = inv.config(env).unwrap();
        assert_eq!(config.server.port, 4000);
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(5000));
        assert_eq!(
            inv.flag("SHUTDOWN_TIMEOUT"),
            None,
            "clap's default is not a flag"
        );
    }

    #[test]
    fn a_flag_after_a_subcommand_counts_too() {
        let inv =
            Invocation::parse_from(["chatbot-server", "check-config", "--port", "4001"]).unwrap();
        assert_eq!(inv.command, Command::CheckConfig);
        assert_eq!(inv.flag("PORT"), Some("4001"));
        let inv =
            Invocation::parse_from(["chatbot-server", "--port", "4002", "healthcheck"]).unwrap();
        assert_eq!(inv.flag("PORT"), Some("4002"));
        assert_eq!(inv.healthcheck_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn secrets_are_never_flags() {
        let flags = names_with_flags();
        for secret in SECRET_SETTINGS {
            assert!(!flags.contains(*secret), "{secret} must not be a flag");
        }
        assert!(Invocation::parse_from(["chatbot-server", "--jwt-secret", "x"]).is_err());
    }

    /// Each default `--help` shows must mean what `config.rs` does when the
    /// setting is unset, or the help would lie.
    #[test]
    fn displayed_defaults_are_the_configs_defaults() {
        let unset = format!("{:?}", Config::from_lookup(|_| None).unwrap());
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            let (Some(env), [default]) = (arg.get_env(), arg.get_default_values()) else {
                continue;
            };
            let (env, default) = (env.to_str().unwrap(), default.to_str().unwrap());
            let set = Config::from_lookup(|k| (k == env).then(|| default.to_owned()))
                .unwrap_or_else(|e| panic!("{env}={default}: {e}"));
            assert_eq!(
                format!("{set:?}"),
                unset,
                "{env}={default} is not the default"
            );
            checked += 1;
        }
        assert!(checked > 40, "only {checked} defaults checked");
    }

    /// A setting added to `config.rs` or `.env.example` without a flag (or a
    /// place in [`SECRET_SETTINGS`]) fails here.
    #[test]
    fn every_setting_is_a_flag_or_a_listed_secret() {
        let flags = names_with_flags();
        let asked = RefCell::new(BTreeSet::new());
        let lookups: [&[(&str, &str)]; 3] = [
            &[],
            &[
                ("AI_PROVIDER", "openai"),
                ("OPENAI_MODEL", "m"),
                ("AI_FALLBACK_PROVIDER", "openai"),
                ("AI_FALLBACK_OPENAI_MODEL", "m"),
            ],
            &[("APP_ENV", "production"), ("JWT_SECRET", &"s".repeat(40))],
        ];
        for pairs in lookups {
            let _ = Config::from_lookup(|k| {
                asked.borrow_mut().insert(k.to_owned());
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            });
        }
        let example = include_str!("../.env.example");
        let documented = example.lines().filter_map(|line| {
            let name = line.trim_start_matches('#').trim().split_once('=')?.0;
            (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()))
            .then(|| name.to_owned())
        });
        let all: BTreeSet<String> = asked.into_inner().into_iter().chain(documented).collect();
        assert!(all.len() > 60, "{all:?}");
        for name in &all {
            assert!(
                flags.contains(name) || SECRET_SETTINGS.contains(&name.as_str()),
                "{name} is a setting but neither a flag nor a listed secret"
            );
        }
    }

    #[test]
    fn help_names_every_variable_but_shows_no_value() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--port <VALUE>") && help.contains("[env: PORT"),
            "{help}"
        );
        assert!(help.contains("JWT_SECRET"), "secrets are named in the help");
        assert!(!help.contains("[env: PORT="), "{help}");
    }
}
