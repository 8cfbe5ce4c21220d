//! The settings table: every setting the server reads, declared once with
//! its variable name, its flag, the heading and help it has in `--help`, and
//! its default.
//!
//! From this one table come the [`Setting`] constants the section parsers
//! read (name and default together, so a parser cannot use another default
//! than the one `--help` shows) and [`Settings`], the clap arguments the
//! command line (`cli.rs`) flattens into itself. Every flag is a plain string
//! that clap only gathers: validation lives in the section parsers alone.
//! Secrets (the JWT secret, API keys, URIs that carry credentials) are read
//! from the environment only: a flag would show them to anyone who can list
//! processes.

/// One setting: the variable it is read from (also the flag's `[env: ]`)
/// and, when it has one, the default a parser falls back to and `--help`
/// shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// Declares a [`Setting`] constant per setting, [`Settings`] (one optional
/// string per setting that may be a flag, with its flag `--port`, its
/// variable and its default) and [`SECRET_SETTINGS`].
macro_rules! settings {
    (@default) => { None };
    (@default $default:literal) => { Some($default) };
    ($( $heading:literal {
        $( $(#[doc = $doc:literal])* $field:ident : $name:ident $(= $default:literal)? ; )*
    } )*
    secrets {
        $( $(#[doc = $secret_doc:literal])* $secret:ident ; )*
    }) => {
        $( $(
            $(#[doc = $doc])*
            pub const $name: Setting = Setting {
                name: stringify!($name),
                default: settings!(@default $($default)?),
            };
        )* )*

        $(
            $(#[doc = $secret_doc])*
            pub const $secret: Setting = Setting {
                name: stringify!($secret),
                default: None,
            };
        )*

        /// Settings read from the environment only, never flags.
        pub const SECRET_SETTINGS: &[&str] = &[$(stringify!($secret)),*];

        /// Every setting that may be given as a flag, in `--help` order.
        pub const FLAG_SETTINGS: &[Setting] = &[$($($name),*),*];

        /// The settings that may be given as flags (see the module docs).
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct Settings {
            $( $(
                $(#[doc = $doc])*
                #[arg(
                    long,
                    env = $name.name,
                    hide_env_values = true,
                    global = true,
                    value_name = "VALUE",
                    help_heading = $heading,
                    default_value = $name.default
                )]
                pub $field: Option<String>,
            )* )*
        }
    };
}

settings! {
    "Server" {
        /// Port to listen on (0 picks a free one).
        port: PORT = "3001";
        /// IP address to listen on; unset, 0.0.0.0 or :: listen on every interface, IPv4 and IPv6.
        host: HOST;
        /// development or production (wins over NODE_ENV).
        app_env: APP_ENV;
        /// Node.js-style environment: development, test, local or dev mean development, anything else production.
        node_env: NODE_ENV;
        /// How long running answers may finish after SIGTERM or Ctrl-C.
        shutdown_timeout: SHUTDOWN_TIMEOUT = "10s";
        /// Allowed browser origins, comma-separated, each with its scheme; unset or * allows any.
        cors_origin: CORS_ORIGIN;
        /// Log filter (tracing EnvFilter syntax) [default: info].
        rust_log: RUST_LOG;
        /// true lets chat text reach the logs at debug/trace level (debugging only).
        log_chat_content: LOG_CHAT_CONTENT = "false";
    }
    "Observability" {
        /// Serve /metrics, /health/live and /health/ready on this address instead of the main port.
        metrics_addr: METRICS_ADDR;
        /// How often the stores and the AI are probed in the background for the health endpoints.
        health_probe_interval: HEALTH_PROBE_INTERVAL = "5s";
        /// Export traces over OTLP/HTTP to this collector base URL (/v1/traces is added), e.g. http://localhost:4318 [default: no export].
        otel_exporter_otlp_endpoint: OTEL_EXPORTER_OTLP_ENDPOINT;
        /// The full URL traces are exported to, instead of OTEL_EXPORTER_OTLP_ENDPOINT's.
        otel_exporter_otlp_traces_endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
        /// The OTLP transport; only http/protobuf is spoken.
        otel_exporter_otlp_protocol: OTEL_EXPORTER_OTLP_PROTOCOL = "http/protobuf";
        /// The service.name traces carry.
        otel_service_name: OTEL_SERVICE_NAME = "chatbot-server";
        /// Which traces are kept: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio.
        otel_traces_sampler: OTEL_TRACES_SAMPLER = "parentbased_always_on";
        /// The fraction the ratio samplers keep, 0 to 1 [default: 1].
        otel_traces_sampler_arg: OTEL_TRACES_SAMPLER_ARG;
    }
    "Authentication and access" {
        /// Token lifetime, echoed to clients as expiresIn.
        jwt_expires_in: JWT_EXPIRES_IN = "24h";
        /// false answers registrations with 403.
        allow_registration: ALLOW_REGISTRATION = "true";
        /// How long a refresh token can be used.
        refresh_token_ttl: REFRESH_TOKEN_TTL = "30d";
        /// A refresh token reused within this of its rotation gets the same successor (0: off).
        refresh_reuse_grace: REFRESH_REUSE_GRACE = "10s";
        /// How long a WebSocket ticket can be redeemed.
        ws_ticket_ttl: WS_TICKET_TTL = "30s";
    }
    "Stores" {
        /// The embedded SQLite user store, used when MONGODB_URI is unset.
        sqlite_path: SQLITE_PATH = "./data/chatbot.db";
        /// How long start-up waits for MongoDB or Redis before saying it is unreachable.
        store_connect_timeout: STORE_CONNECT_TIMEOUT = "5s";
        /// Prefix of every Redis key.
        redis_key_prefix: REDIS_KEY_PREFIX = "chatbot";
        /// A session is forgotten after this long without activity.
        session_ttl: SESSION_TTL = "24h";
        /// Events of a conversation kept for replay.
        event_log_limit: EVENT_LOG_LIMIT = "2000";
        /// A running answer's lease; an answer whose instance died ends within twice this.
        generation_lease: GENERATION_LEASE = "10s";
        /// An answer with no open tab for this long is cancelled.
        unattended_generation_timeout: UNATTENDED_GENERATION_TIMEOUT = "60s";
        /// A conversation waiting for a human goes back to the bot after this.
        handoff_queue_timeout: HANDOFF_QUEUE_TIMEOUT = "10m";
        /// An agent with no socket open this long loses its conversations to the queue.
        agent_away_grace: AGENT_AWAY_GRACE = "2m";
        /// Human handoff: auto (in use once an agent account exists), on or off (a request for a human is only answered).
        handoff: HANDOFF = "auto";
        /// When agents exist but none is online: bot (say so; the bot keeps answering) or queue (wait anyway).
        handoff_when_no_agent_online: HANDOFF_WHEN_NO_AGENT_ONLINE = "bot";
        /// What the customer is told when no agent is online [default: No agent is available right now. The assistant will keep helping you.].
        handoff_offline_message: HANDOFF_OFFLINE_MESSAGE;
        /// Conversations one agent may hold at once; a claim beyond it gets agent_at_capacity.
        agent_max_conversations: AGENT_MAX_CONVERSATIONS = "5";
        /// manual (agents claim from the queue) or auto (the longest waiting goes to the available agent with the fewest conversations).
        handoff_assign: HANDOFF_ASSIGN = "manual";
        /// When people answer, e.g. "Mon-Fri 09:00-17:30, Sat 10:00-14:00"; outside them a request for a human stays with the bot [default: always].
        handoff_hours: HANDOFF_HOURS;
        /// The IANA time zone of HANDOFF_HOURS, e.g. Europe/Berlin.
        handoff_timezone: HANDOFF_TIMEZONE = "UTC";
        /// What the customer is told outside office hours [default: Our agents are away outside office hours. The assistant will keep helping you until they are back.].
        handoff_closed_message: HANDOFF_CLOSED_MESSAGE;
        /// true: an agent taking a conversation gets the AI's summary of it (handoff-summary); false: none.
        handoff_summary: HANDOFF_SUMMARY = "true";
        /// What the AI is asked for that summary, after the conversation so far [default: a request for a few lines an agent reads at a glance].
        handoff_summary_prompt: HANDOFF_SUMMARY_PROMPT;
        /// Transcript entries older than this are deleted (e.g. 30d) [default: kept for good].
        transcript_retention: TRANSCRIPT_RETENTION;
    }
    "AI service" {
        /// fastapi or openai [default: fastapi when FASTAPI_URL is set; unset: the echo model].
        ai_provider: AI_PROVIDER;
        /// Base URL of a FastAPI upstream.
        fastapi_url: FASTAPI_URL;
        /// Base URL of an OpenAI-compatible upstream, with its API version [default: https://api.openai.com/v1].
        openai_base_url: OPENAI_BASE_URL;
        /// Model name of an OpenAI-compatible upstream.
        openai_model: OPENAI_MODEL;
        /// System message sent first to an OpenAI-compatible upstream.
        ai_system_prompt: AI_SYSTEM_PROMPT;
        /// Provider of the fallback upstream.
        ai_fallback_provider: AI_FALLBACK_PROVIDER;
        /// Base URL of a FastAPI fallback.
        ai_fallback_fastapi_url: AI_FALLBACK_FASTAPI_URL;
        /// Base URL of an OpenAI-compatible fallback.
        ai_fallback_openai_base_url: AI_FALLBACK_OPENAI_BASE_URL;
        /// Model name of an OpenAI-compatible fallback.
        ai_fallback_openai_model: AI_FALLBACK_OPENAI_MODEL;
        /// System message of an OpenAI-compatible fallback.
        ai_fallback_system_prompt: AI_FALLBACK_SYSTEM_PROMPT;
        /// Connect and receive response headers, per attempt.
        ai_connect_timeout: AI_CONNECT_TIMEOUT = "5s";
        /// From response headers to the first token.
        ai_first_token_timeout: AI_FIRST_TOKEN_TIMEOUT = "30s";
        /// Longest gap between events after the first token.
        ai_idle_timeout: AI_IDLE_TIMEOUT = "30s";
        /// Retries of a chat before its first token (0: off).
        ai_max_retries: AI_MAX_RETRIES = "2";
        /// Wait before the first retry, doubling after each.
        ai_retry_backoff: AI_RETRY_BACKOFF = "200ms";
        /// Consecutive failed chats that open an upstream's circuit breaker (0: off).
        ai_breaker_failures: AI_BREAKER_FAILURES = "5";
        /// How long an open breaker skips its upstream.
        ai_breaker_cooldown: AI_BREAKER_COOLDOWN = "30s";
        /// Delay between words of the built-in echo model.
        echo_token_delay: ECHO_TOKEN_DELAY = "40ms";
        /// true shows clients the model's reasoning text (stream-reasoning); otherwise it is only counted.
        relay_reasoning: RELAY_REASONING = "false";
        /// true shows clients a finished tool call's arguments (they can hold internal data).
        relay_tool_arguments: RELAY_TOOL_ARGUMENTS = "false";
    }
    "WebSocket" {
        /// Longest chat message, in characters.
        max_message_chars: MAX_MESSAGE_CHARS = "10000";
        /// Server ping interval.
        ws_ping_interval: WS_PING_INTERVAL = "20s";
        /// A connection silent for this long is closed.
        ws_pong_timeout: WS_PONG_TIMEOUT = "60s";
    }
    "Abuse limits (0 turns a count off)" {
        /// Failed logins per (account, client IP) in LOGIN_FAILURE_WINDOW.
        login_max_failures_per_account: LOGIN_MAX_FAILURES_PER_ACCOUNT = "5";
        /// Failed logins per client IP in LOGIN_FAILURE_WINDOW.
        login_max_failures_per_ip: LOGIN_MAX_FAILURES_PER_IP = "20";
        login_failure_window: LOGIN_FAILURE_WINDOW = "15m";
        /// Failed logins per account over all addresses in LOGIN_ACCOUNT_WINDOW.
        login_max_failures_per_account_hourly: LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY = "100";
        login_account_window: LOGIN_ACCOUNT_WINDOW = "1h";
        /// Registrations per client IP in REGISTER_WINDOW.
        register_per_ip_per_hour: REGISTER_PER_IP_PER_HOUR = "20";
        register_window: REGISTER_WINDOW = "1h";
        /// Token verifications per client IP in VERIFY_WINDOW.
        verify_per_ip_per_minute: VERIFY_PER_IP_PER_MINUTE = "120";
        verify_window: VERIFY_WINDOW = "1m";
        /// WebSocket tickets per user in WS_TICKETS_WINDOW.
        ws_tickets_per_user_per_minute: WS_TICKETS_PER_USER_PER_MINUTE = "30";
        ws_tickets_window: WS_TICKETS_WINDOW = "1m";
        /// Chats per user in CHAT_MESSAGES_WINDOW.
        chat_messages_per_minute: CHAT_MESSAGES_PER_MINUTE = "20";
        chat_messages_window: CHAT_MESSAGES_WINDOW = "1m";
        /// Answers one user may have running at once.
        chat_max_concurrent_per_user: CHAT_MAX_CONCURRENT_PER_USER = "3";
        /// Open WebSockets per user.
        ws_max_connections_per_user: WS_MAX_CONNECTIONS_PER_USER = "20";
        /// Open WebSockets per client IP.
        ws_max_connections_per_ip: WS_MAX_CONNECTIONS_PER_IP = "100";
        /// Live sessions per user; one more evicts the least recently active.
        sessions_max_per_user: SESSIONS_MAX_PER_USER = "50";
        /// Tokens (prompt, completion and reasoning) a user's answers may cost per USER_TOKEN_BUDGET_WINDOW.
        user_token_budget: USER_TOKEN_BUDGET = "0";
        /// The budget's window, fixed from the Unix epoch (1d turns over at UTC midnight).
        user_token_budget_window: USER_TOKEN_BUDGET_WINDOW = "1d";
        /// IPs or CIDR blocks of reverse proxies whose X-Forwarded-For names the client.
        trusted_proxies: TRUSTED_PROXIES;
    }
    "Slow and silent clients (0 turns each off)" {
        /// Request headers must be complete this long after connecting.
        http_header_timeout: HTTP_HEADER_TIMEOUT = "10s";
        /// A request body must arrive this long after its headers.
        http_body_timeout: HTTP_BODY_TIMEOUT = "30s";
        /// A kept-alive connection waiting for its next request is closed after this.
        http_keepalive_timeout: HTTP_KEEPALIVE_TIMEOUT = "75s";
        /// Kept-alive connections waiting for a next request, over all clients.
        http_max_idle_connections: HTTP_MAX_IDLE_CONNECTIONS = "1000";
        /// Connections per peer address that have not authenticated yet.
        unauth_connections_per_ip: UNAUTH_CONNECTIONS_PER_IP = "1024";
        /// Descriptors kept free for the server's own use.
        fd_headroom: FD_HEADROOM = "256";
    }
    secrets {
        /// The JWT signing secret.
        JWT_SECRET;
        /// MongoDB for the users and transcripts (credentials in the URI).
        MONGODB_URI;
        /// Redis for the sessions, conversations and limits (credentials in the URL).
        REDIS_URL;
        /// Redis Cluster seed nodes instead (comma-separated redis:// or rediss:// URLs; not with REDIS_URL).
        REDIS_CLUSTER_URLS;
        /// API key of an OpenAI-compatible upstream.
        OPENAI_API_KEY;
        /// API key of an OpenAI-compatible fallback.
        AI_FALLBACK_OPENAI_API_KEY;
        /// Headers sent with every trace export (name=value,...; often an API key).
        OTEL_EXPORTER_OTLP_HEADERS;
    }
}
