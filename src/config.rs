//! Configuration from the environment (and `.env`), parsed once at start-up.
//!
//! Variable names and defaults match the Node.js server, so its `.env` files
//! work unchanged. The settings come in the groups an operator thinks in
//! (server, auth, user storage, sessions, AI upstream, WebSocket), each parsed by
//! its own function. Every problem is reported as one [`ConfigError`] line; the
//! binary turns that into exit code 2. Values that hold credentials are types
//! whose `Debug` and `Display` never show them, so no `{:?}` of a config leaks.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::domain::handoff::{HandoffSwitch, WhenNoAgentOnline, DEFAULT_OFFLINE_MESSAGE};
use crate::domain::time::{parse_duration, MAX_DURATION, MAX_DURATION_TEXT};
use crate::domain::{TokenLifetime, TrustedProxies};

/// A configuration problem, phrased for the person who wrote the `.env`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn invalid(var: &str, value: &str, expected: &str) -> Self {
        Self(format!("invalid {var}={value:?}: expected {expected}"))
    }

    /// For variables whose value may hold a credential: never echo it.
    fn invalid_secret(var: &str, expected: &str) -> Self {
        Self(format!("invalid {var}: expected {expected}"))
    }
}

/// Which behaviour set the server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Production => "production",
        }
    }
}

/// The JWT signing secret. Neither `Debug` nor `Display` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret {
    bytes: Vec<u8>,
    /// True when no secret was configured and one was made up for this run.
    pub generated: bool,
}

impl JwtSecret {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtSecret(<{} bytes redacted>)", self.bytes.len())
    }
}

impl fmt::Display for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A connection URL that may carry credentials (`MONGODB_URI`, `REDIS_URL`).
/// `Debug` and `Display` show it with the password and credential-looking query
/// values replaced by `***`; only [`SecretUrl::expose`] gives the real text, for
/// the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL as configured, password included: pass it to a driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its secrets masked.
    pub fn redacted(&self) -> String {
        let (head, query) = match self.0.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (self.0.as_str(), None),
        };
        let mut out = match head.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", mask_userinfo(rest)),
            None => head.to_owned(),
        };
        if let Some(query) = query {
            out.push('?');
            out.push_str(&mask_query(query));
        }
        out
    }
}

/// `user:password@host/...` becomes `user:***@host/...`. The last `@` ends the
/// user info, because a password may itself contain one.
fn mask_userinfo(rest: &str) -> String {
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    }
}

/// Query values whose names suggest a credential are masked.
fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The API key of an OpenAI-compatible upstream. Neither `Debug` nor
/// `Display` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key itself: pass it to the HTTP client, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the server listens and how it behaves as a process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    pub env: AppEnv,
    /// Allowed browser origins; `None` allows any origin.
    pub cors_origins: Option<Vec<String>>,
    /// How long running streams may take to finish when the server stops.
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// Whether `HOST` asks for every interface (unset, `0.0.0.0` or `::`):
    /// the server then listens on IPv4 and IPv6 alike, because a Node.js
    /// `.env` says `0.0.0.0` and its clients may well connect to `[::1]`.
    pub fn all_interfaces(&self) -> bool {
        self.host.is_unspecified()
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: JwtSecret,
    /// `JWT_EXPIRES_IN`: the token lifetime, and the text clients see as `expiresIn`.
    pub token_lifetime: TokenLifetime,
}

/// Who may register, and how long refresh tokens and WebSocket tickets last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// `ALLOW_REGISTRATION`: `false` answers registrations with 403.
    pub allow_registration: bool,
    /// `REFRESH_TOKEN_TTL`: how long a refresh token can be used.
    pub refresh_token_ttl: Duration,
    /// `REFRESH_REUSE_GRACE`: how long after its rotation a refresh token
    /// still gets the same successor (`0` turns the grace off).
    pub refresh_reuse_grace: Duration,
    /// `WS_TICKET_TTL`: how long a WebSocket ticket can be redeemed.
    pub ws_ticket_ttl: Duration,
}

/// Where users live.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// MongoDB when set; otherwise the embedded SQLite file.
    pub mongodb_uri: Option<SecretUrl>,
    pub sqlite_path: PathBuf,
    /// `STORE_CONNECT_TIMEOUT`: how long start-up waits for MongoDB or Redis
    /// to answer before reporting it unreachable.
    pub connect_timeout: Duration,
    /// `TRANSCRIPT_RETENTION`: transcript entries older than this are
    /// expired; `None` (unset) keeps them for good.
    pub transcript_retention: Option<Duration>,
}

/// Where chat sessions and their conversations live, and for how long.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Redis when set (shared by instances, survives restarts); otherwise memory.
    pub redis_url: Option<SecretUrl>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Idle time after which a session is forgotten.
    pub ttl: Duration,
    /// Events of a session's log kept for replay: at least this, at most twice.
    pub event_log_limit: usize,
    /// How long a generation's owner holds it between renewals; a generation
    /// whose instance died is ended within twice this.
    pub generation_lease: Duration,
    /// A generation nobody has watched for this long is cancelled.
    pub unattended_generation_timeout: Duration,
    /// A conversation waiting for a human goes back to the bot after this.
    pub handoff_queue_timeout: Duration,
    /// An agent with no socket open this long loses its conversations to the queue.
    pub agent_away_grace: Duration,
    /// Whether a request for a human can reach the queue (`HANDOFF`).
    pub handoff: HandoffSwitch,
    /// What a request does when agents exist but none is online.
    pub handoff_when_no_agent_online: WhenNoAgentOnline,
    /// What the customer is told then.
    pub handoff_offline_message: String,
}

/// One AI upstream and the contract it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamConfig {
    /// `POST {url}/api/v1/chat/ai-response` (`FASTAPI_URL`).
    FastApi { url: String },
    /// `POST {base_url}/chat/completions` (`AI_PROVIDER=openai`).
    OpenAi {
        /// Including the API version, e.g. `https://api.openai.com/v1`.
        base_url: String,
        api_key: Option<ApiKey>,
        model: String,
        system_prompt: Option<String>,
    },
}

impl UpstreamConfig {
    /// `fastapi` or `openai`.
    pub fn provider(&self) -> &'static str {
        match self {
            UpstreamConfig::FastApi { .. } => "fastapi",
            UpstreamConfig::OpenAi { .. } => "openai",
        }
    }

    /// The base URL, for the start-up log.
    pub fn url(&self) -> &str {
        match self {
            UpstreamConfig::FastApi { url } => url,
            UpstreamConfig::OpenAi { base_url, .. } => base_url,
        }
    }
}

/// The AI service (and its fallback), or the built-in echo model when none
/// is configured, and how hard to try each one.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// `None`: the built-in echo model answers.
    pub primary: Option<UpstreamConfig>,
    /// Asked when the primary fails before its first token or its breaker is open.
    pub fallback: Option<UpstreamConfig>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    /// Delay between words of the built-in echo model.
    pub echo_token_delay: Duration,
    /// `AI_MAX_RETRIES`: further attempts of one chat on one upstream, before
    /// its first token only.
    pub max_retries: u32,
    /// `AI_RETRY_BACKOFF`: the wait before the first retry; it doubles (with
    /// jitter) for each next one.
    pub retry_backoff: Duration,
    /// `AI_BREAKER_FAILURES`: consecutive failed chats that open an
    /// upstream's breaker; `None` (`0`) never opens it.
    pub breaker_failures: Option<u32>,
    /// `AI_BREAKER_COOLDOWN`: how long an open breaker skips its upstream.
    pub breaker_cooldown: Duration,
}

/// Limits and timings of the WebSocket protocol.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Maximum characters in one chat message.
    pub max_message_chars: usize,
    pub ping_interval: Duration,
    /// A connection whose pongs stop for this long is closed.
    pub pong_timeout: Duration,
}

/// At most `max` events in any `window`; `None` when the limit is off (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub max: u32,
    pub window: Duration,
}

/// Abuse limits; every count set to `0` turns its limit off.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Failed logins per (account, client IP) in `LOGIN_FAILURE_WINDOW`.
    pub login_per_account_ip: Option<WindowLimit>,
    /// Failed logins per client IP over all accounts in `LOGIN_FAILURE_WINDOW`.
    pub login_per_ip: Option<WindowLimit>,
    /// Failed logins per account over all IPs in `LOGIN_ACCOUNT_WINDOW` (1 h).
    pub login_per_account: Option<WindowLimit>,
    pub register_per_ip: Option<WindowLimit>,
    pub verify_per_ip: Option<WindowLimit>,
    pub ws_tickets_per_user: Option<WindowLimit>,
    pub chats_per_user: Option<WindowLimit>,
    /// Generations running at once per user, over all sessions and instances.
    pub chat_concurrent_per_user: Option<u32>,
    pub ws_connections_per_user: Option<u32>,
    pub ws_connections_per_ip: Option<u32>,
    /// Live sessions per user; one more evicts the least recently active.
    pub sessions_per_user: Option<u32>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// How long, and how many, client connections the server keeps open before
/// they have earned their place: `0` turns each limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// `HTTP_HEADER_TIMEOUT`: a request's headers must be complete this long
    /// after the connection opened (or after the first byte of a later request).
    pub header_timeout: Option<Duration>,
    /// `HTTP_BODY_TIMEOUT`: a request's body must be complete this long after
    /// its headers, or it is answered 408.
    pub body_timeout: Option<Duration>,
    /// `HTTP_KEEPALIVE_TIMEOUT`: a kept-alive connection waiting for its next
    /// request (or not reading its last response) is closed after this long.
    pub keepalive_timeout: Option<Duration>,
    /// `HTTP_MAX_IDLE_CONNECTIONS`: kept-alive connections waiting for a next
    /// request, over all clients; past it a response closes its connection.
    pub max_idle: Option<u32>,
    /// `UNAUTH_CONNECTIONS_PER_IP`: connections from one peer address that
    /// have not yet carried an authenticated request.
    pub unauth_per_ip: Option<u32>,
    /// `FD_HEADROOM`: descriptors kept free for the server's own use; when
    /// client connections would eat into them, the oldest unauthenticated
    /// connection makes way for the new one.
    pub fd_headroom: Option<u32>,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub access: AccessConfig,
    pub storage: StorageConfig,
    pub sessions: SessionConfig,
    pub ai: AiConfig,
    pub websocket: WebSocketConfig,
    pub limits: LimitsConfig,
    pub connections: ConnectionConfig,
    pub observability: ObservabilityConfig,
}

/// This project's `.env.example`, whose values production refuses as secrets.
const ENV_EXAMPLE: &str = include_str!("../.env.example");

/// Most any count setting accepts (`EVENT_LOG_LIMIT`, `MAX_MESSAGE_CHARS`
/// and every limit): beyond it a value is a typo, and some of them size
/// what is kept in memory per session or per key.
pub const MAX_COUNT: u32 = 1_000_000;

/// Production refuses secrets shorter than this (HS256 wants a 256-bit key).
pub const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads the process environment (call `dotenvy::dotenv()` first to include `.env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses configuration from any variable lookup; empty values count as unset,
    /// because `.env` templates are full of `NAME=` lines.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&get);
        let server = ServerConfig::parse(&vars)?;
        Ok(Self {
            auth: AuthConfig::parse(&vars, server.env)?,
            access: AccessConfig::parse(&vars)?,
            storage: StorageConfig::parse(&vars)?,
            sessions: SessionConfig::parse(&vars)?,
            ai: AiConfig::parse(&vars)?,
            websocket: WebSocketConfig::parse(&vars)?,
            limits: LimitsConfig::parse(&vars)?,
            connections: ConnectionConfig::parse(&vars)?,
            observability: ObservabilityConfig::parse(&vars)?,
            server,
        })
    }
}

/// The variable lookup with the parsing rules every group shares.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// The trimmed value, or `None` when unset or blank.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse_or<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::invalid(name, &v, expected)),
        }
    }

    /// A whole number from 1 to `max`.
    fn positive(&self, name: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
        let expected = format!("a whole number from 1 to {max}");
        let n: usize = self.parse_or(name, default, &expected)?;
        if n == 0 || n > max {
            let text = self.get(name).unwrap_or_default();
            return Err(ConfigError::invalid(name, &text, &expected));
        }
        Ok(n)
    }

    /// A count where `0` means "no limit" (`None`), at most [`MAX_COUNT`].
    fn limit(&self, name: &str, default: u32) -> Result<Option<u32>, ConfigError> {
        let expected = format!("a whole number from 0 to {MAX_COUNT} (0 turns the limit off)");
        let n: u32 = self.parse_or(name, default, &expected)?;
        if n > MAX_COUNT {
            let text = self.get(name).unwrap_or_default();
            return Err(ConfigError::invalid(name, &text, &expected));
        }
        Ok((n > 0).then_some(n))
    }

    /// A count per window, both configurable.
    fn window_limit(
        &self,
        name: &str,
        default: u32,
        window: Duration,
    ) -> Result<Option<WindowLimit>, ConfigError> {
        Ok(self
            .limit(name, default)?
            .map(|max| WindowLimit { max, window }))
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h`, at most
    /// [`MAX_DURATION`]; `expected` describes the form when it is malformed.
    fn bounded_duration(
        &self,
        name: &str,
        default: &str,
        expected: &str,
    ) -> Result<Duration, ConfigError> {
        let text = self.get(name).unwrap_or_else(|| default.to_owned());
        let d = parse_duration(&text).ok_or_else(|| ConfigError::invalid(name, &text, expected))?;
        if d > MAX_DURATION {
            return Err(ConfigError::invalid(
                name,
                &text,
                &format!("a duration of at most {MAX_DURATION_TEXT} (100 years)"),
            ));
        }
        Ok(d)
    }

    /// A non-zero duration such as `500ms`, `30s`, `5m`, `1h`.
    fn duration(&self, name: &str, default: &str) -> Result<Duration, ConfigError> {
        const EXPECTED: &str = "a duration such as 500ms, 30s, 5m, 1h";
        let d = self.bounded_duration(name, default, EXPECTED)?;
        if d.is_zero() {
            let text = self.get(name).unwrap_or_else(|| default.to_owned());
            return Err(ConfigError::invalid(name, &text, EXPECTED));
        }
        Ok(d)
    }

    /// A duration as [`Vars::duration`] with no default: unset is `None`.
    fn optional_duration(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => self.duration(name, &text).map(Some),
        }
    }

    /// A duration as [`Vars::duration`], where `0` is allowed (turns a grace off).
    fn duration_or_zero(&self, name: &str, default: &str) -> Result<Duration, ConfigError> {
        self.bounded_duration(name, default, "a duration such as 0, 500ms, 30s, 5m")
    }

    /// A duration where `0` means "no limit" (`None`).
    fn timeout(&self, name: &str, default: &str) -> Result<Option<Duration>, ConfigError> {
        let d = self.bounded_duration(
            name,
            default,
            "a duration such as 10s or 2m (0 turns it off)",
        )?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// One of a setting's words, read by the domain's own `parse`.
    fn choice<T, E: fmt::Display>(
        &self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => {
                parse(&text).map_err(|e| ConfigError::invalid(name, &text, &e.to_string()))
            }
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::invalid(name, &text, "true or false")),
        }
    }

    /// A URL that may hold a password, checked for one of `schemes`.
    fn secret_url(&self, name: &str, schemes: &[&str]) -> Result<Option<SecretUrl>, ConfigError> {
        let Some(url) = self.get(name) else {
            return Ok(None);
        };
        if !schemes.iter().any(|s| url.starts_with(s)) {
            let expected = format!("a URL starting with {}", schemes.join(" or "));
            return Err(ConfigError::invalid_secret(name, &expected));
        }
        Ok(Some(SecretUrl(url)))
    }
}

impl AppEnv {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let is_dev = |v: &str| matches!(v, "development" | "dev" | "test" | "local");
        match (vars.get("APP_ENV"), vars.get("NODE_ENV")) {
            (Some(v), _) => match v.to_ascii_lowercase().as_str() {
                x if is_dev(x) => Ok(AppEnv::Development),
                "production" | "prod" => Ok(AppEnv::Production),
                _ => Err(ConfigError::invalid(
                    "APP_ENV",
                    &v,
                    "development, test or production",
                )),
            },
            // Node deployments use names like `staging`: anything that is not a
            // development name gets production behaviour, so an old .env starts.
            (None, Some(v)) if is_dev(&v.to_ascii_lowercase()) => Ok(AppEnv::Development),
            (None, Some(_)) => Ok(AppEnv::Production),
            (None, None) => Ok(AppEnv::Development),
        }
    }
}

impl ServerConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let host = match vars.get("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => match v.trim_start_matches('[').trim_end_matches(']') {
                "localhost" => IpAddr::from([127, 0, 0, 1]),
                bare => bare
                    .parse()
                    .map_err(|_| ConfigError::invalid("HOST", &v, "an IP address"))?,
            },
        };
        Ok(Self {
            host,
            port: vars.parse_or("PORT", 3001u16, "a port number 0-65535")?,
            env: AppEnv::parse(vars)?,
            cors_origins: match vars.get("CORS_ORIGIN") {
                Some(v) => cors_list(&v)?,
                None => None,
            },
            shutdown_timeout: vars.duration("SHUTDOWN_TIMEOUT", "10s")?,
        })
    }
}

/// `a, b/` becomes `[a, b]`; a `*` anywhere means any origin (`None`).
/// A browser's `Origin` always has a scheme, so an entry without one could
/// never match: that is a mistake to report, not a silent 403 for everyone.
fn cors_list(value: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let list: Vec<String> = value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if let Some(bare) = list.iter().find(|o| *o != "*" && !o.contains("://")) {
        return Err(ConfigError(format!(
            "invalid CORS_ORIGIN entry {bare:?}: an origin needs its scheme, \
             write https://{bare} (or http://{bare})"
        )));
    }
    Ok((!list.iter().any(|o| o == "*") && !list.is_empty()).then_some(list))
}

/// Secrets published as examples, which anyone can sign tokens with: the
/// Node README's `your-super-secret-jwt-key-here-change-in-production` and its
/// variations.
const PLACEHOLDER_SECRET_PREFIXES: &[&str] = &["your-super-secret-jwt-key-here"];

/// Whether production must refuse `secret` as a published example: a known
/// placeholder, or a value that `env_example` (the text of `.env.example`)
/// shows for `JWT_SECRET`.
fn is_placeholder_secret(secret: &str, env_example: &str) -> bool {
    let lower = secret.to_ascii_lowercase();
    PLACEHOLDER_SECRET_PREFIXES
        .iter()
        .any(|p| lower.starts_with(p))
        || example_values(env_example, "JWT_SECRET").any(|v| v == secret)
}

/// The non-empty values `env_example` gives `name`, commented out or not.
fn example_values<'a>(env_example: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    env_example.lines().filter_map(move |line| {
        let line = line.trim_start_matches('#').trim();
        let value = line
            .strip_prefix(name)?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        (!value.is_empty()).then_some(value)
    })
}

impl AuthConfig {
    fn parse(vars: &Vars, env: AppEnv) -> Result<Self, ConfigError> {
        let jwt_secret = match vars.get("JWT_SECRET") {
            Some(s) if env == AppEnv::Production && s.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError(format!(
                    "JWT_SECRET is {} bytes; production needs at least {MIN_SECRET_BYTES}",
                    s.len()
                )))
            }
            Some(s) if env == AppEnv::Production && is_placeholder_secret(&s, ENV_EXAMPLE) => {
                return Err(ConfigError(
                    "JWT_SECRET is a published example value (from a README or .env.example); \
                     production needs a secret of your own, e.g. `openssl rand -base64 48`"
                        .into(),
                ))
            }
            Some(s) => JwtSecret {
                bytes: s.into_bytes(),
                generated: false,
            },
            None if env == AppEnv::Production => {
                return Err(ConfigError(
                    "JWT_SECRET is not set; production needs a secret of at least 32 bytes".into(),
                ))
            }
            None => JwtSecret {
                bytes: random_secret(),
                generated: true,
            },
        };
        let text = vars
            .get("JWT_EXPIRES_IN")
            .unwrap_or_else(|| "24h".to_owned());
        let token_lifetime = TokenLifetime::parse(&text)
            .map_err(|e| ConfigError::invalid("JWT_EXPIRES_IN", &text, &e.to_string()))?;
        Ok(Self {
            jwt_secret,
            token_lifetime,
        })
    }
}

impl AccessConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_registration: vars.boolean("ALLOW_REGISTRATION", true)?,
            refresh_token_ttl: vars.duration("REFRESH_TOKEN_TTL", "30d")?,
            refresh_reuse_grace: vars.duration_or_zero("REFRESH_REUSE_GRACE", "10s")?,
            ws_ticket_ttl: vars.duration("WS_TICKET_TTL", "30s")?,
        })
    }
}

impl StorageConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            mongodb_uri: vars.secret_url("MONGODB_URI", &["mongodb://", "mongodb+srv://"])?,
            sqlite_path: vars
                .get("SQLITE_PATH")
                .map_or_else(|| PathBuf::from("./data/chatbot.db"), PathBuf::from),
            connect_timeout: vars.duration("STORE_CONNECT_TIMEOUT", "5s")?,
            transcript_retention: vars.optional_duration("TRANSCRIPT_RETENTION")?,
        })
    }
}

impl SessionConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            redis_url: vars.secret_url("REDIS_URL", &["redis://", "rediss://"])?,
            redis_key_prefix: vars
                .get("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "chatbot".into()),
            ttl: vars.duration("SESSION_TTL", "24h")?,
            event_log_limit: vars.positive("EVENT_LOG_LIMIT", 2000, MAX_COUNT as usize)?,
            generation_lease: vars.duration("GENERATION_LEASE", "10s")?,
            unattended_generation_timeout: vars.duration("UNATTENDED_GENERATION_TIMEOUT", "60s")?,
            handoff_queue_timeout: vars.duration("HANDOFF_QUEUE_TIMEOUT", "10m")?,
            agent_away_grace: vars.duration("AGENT_AWAY_GRACE", "2m")?,
            handoff: vars.choice("HANDOFF", HandoffSwitch::Auto, HandoffSwitch::parse)?,
            handoff_when_no_agent_online: vars.choice(
                "HANDOFF_WHEN_NO_AGENT_ONLINE",
                WhenNoAgentOnline::Bot,
                WhenNoAgentOnline::parse,
            )?,
            handoff_offline_message: vars
                .get("HANDOFF_OFFLINE_MESSAGE")
                .unwrap_or_else(|| DEFAULT_OFFLINE_MESSAGE.to_owned()),
        })
    }
}

/// The names of one upstream's variables: the primary's, or the fallback's
/// (the same names prefixed `AI_FALLBACK_`, the `AI_` of a name dropped).
struct UpstreamVars {
    provider: &'static str,
    fastapi_url: &'static str,
    openai_base_url: &'static str,
    openai_api_key: &'static str,
    openai_model: &'static str,
    system_prompt: &'static str,
}

const PRIMARY_VARS: UpstreamVars = UpstreamVars {
    provider: "AI_PROVIDER",
    fastapi_url: "FASTAPI_URL",
    openai_base_url: "OPENAI_BASE_URL",
    openai_api_key: "OPENAI_API_KEY",
    openai_model: "OPENAI_MODEL",
    system_prompt: "AI_SYSTEM_PROMPT",
};

const FALLBACK_VARS: UpstreamVars = UpstreamVars {
    provider: "AI_FALLBACK_PROVIDER",
    fastapi_url: "AI_FALLBACK_FASTAPI_URL",
    openai_base_url: "AI_FALLBACK_OPENAI_BASE_URL",
    openai_api_key: "AI_FALLBACK_OPENAI_API_KEY",
    openai_model: "AI_FALLBACK_OPENAI_MODEL",
    system_prompt: "AI_FALLBACK_SYSTEM_PROMPT",
};

/// What OpenAI's SDKs default to.
const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Most `AI_MAX_RETRIES`: each retry is another request to a struggling upstream.
const MAX_AI_RETRIES: u32 = 10;

impl AiConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let primary = UpstreamConfig::parse(vars, &PRIMARY_VARS)?;
        let fallback = UpstreamConfig::parse(vars, &FALLBACK_VARS)?;
        if primary.is_none() && fallback.is_some() {
            return Err(ConfigError(
                "a fallback AI upstream (AI_FALLBACK_*) needs a primary one: \
                 set FASTAPI_URL, or AI_PROVIDER=openai"
                    .into(),
            ));
        }
        let max_retries: u32 = vars.parse_or("AI_MAX_RETRIES", 2, "a whole number 0-10")?;
        if max_retries > MAX_AI_RETRIES {
            let text = max_retries.to_string();
            return Err(ConfigError::invalid(
                "AI_MAX_RETRIES",
                &text,
                "a whole number 0-10",
            ));
        }
        Ok(Self {
            primary,
            fallback,
            connect_timeout: vars.duration("AI_CONNECT_TIMEOUT", "5s")?,
            first_token_timeout: vars.duration("AI_FIRST_TOKEN_TIMEOUT", "30s")?,
            idle_timeout: vars.duration("AI_IDLE_TIMEOUT", "30s")?,
            echo_token_delay: vars.duration("ECHO_TOKEN_DELAY", "40ms")?,
            max_retries,
            retry_backoff: vars.duration("AI_RETRY_BACKOFF", "200ms")?,
            breaker_failures: vars.limit("AI_BREAKER_FAILURES", 5)?,
            breaker_cooldown: vars.duration("AI_BREAKER_COOLDOWN", "30s")?,
        })
    }
}

impl UpstreamConfig {
    /// The upstream `names` describe: `None` when its provider is not set
    /// and its FastAPI URL is not either.
    fn parse(vars: &Vars, names: &UpstreamVars) -> Result<Option<Self>, ConfigError> {
        let provider = vars.get(names.provider).map(|p| p.to_ascii_lowercase());
        match provider.as_deref() {
            None => Ok(ai_url(vars, names.fastapi_url)?.map(|url| Self::FastApi { url })),
            Some("fastapi") => match ai_url(vars, names.fastapi_url)? {
                Some(url) => Ok(Some(Self::FastApi { url })),
                None => Err(ConfigError(format!(
                    "{}=fastapi needs {}",
                    names.provider, names.fastapi_url
                ))),
            },
            Some("openai") => Self::openai(vars, names).map(Some),
            Some(other) => Err(ConfigError::invalid(
                names.provider,
                other,
                "fastapi or openai",
            )),
        }
    }

    fn openai(vars: &Vars, names: &UpstreamVars) -> Result<Self, ConfigError> {
        let base_url = ai_url(vars, names.openai_base_url)?
            .unwrap_or_else(|| OPENAI_DEFAULT_BASE_URL.to_owned());
        let model = vars.get(names.openai_model).ok_or_else(|| {
            ConfigError(format!(
                "{}=openai needs {} (the model name the upstream serves)",
                names.provider, names.openai_model
            ))
        })?;
        let api_key = match vars.get(names.openai_api_key) {
            // It travels as an HTTP header value.
            Some(key) if !key.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError::invalid_secret(
                    names.openai_api_key,
                    "printable ASCII without spaces",
                ))
            }
            key => key.map(ApiKey),
        };
        Ok(Self::OpenAi {
            base_url,
            api_key,
            model,
            system_prompt: vars.get(names.system_prompt),
        })
    }
}

/// An upstream's base URL: `http://` or `https://`, no query or fragment.
fn ai_url(vars: &Vars, name: &str) -> Result<Option<String>, ConfigError> {
    let Some(url) = vars.get(name) else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#']) {
        return Err(ConfigError::invalid(
            name,
            &url,
            "an http:// or https:// base URL without query or fragment",
        ));
    }
    Ok(Some(url))
}

impl WebSocketConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            max_message_chars: vars.positive("MAX_MESSAGE_CHARS", 10_000, MAX_COUNT as usize)?,
            ping_interval: vars.duration("WS_PING_INTERVAL", "20s")?,
            pong_timeout: vars.duration("WS_PONG_TIMEOUT", "60s")?,
        })
    }
}

impl LimitsConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let failures = vars.duration("LOGIN_FAILURE_WINDOW", "15m")?;
        let proxies = vars.get("TRUSTED_PROXIES").unwrap_or_default();
        let trusted_proxies = TrustedProxies::parse(&proxies)
            .map_err(|e| ConfigError::invalid("TRUSTED_PROXIES", &proxies, &e.to_string()))?;
        Ok(Self {
            login_per_account_ip: vars.window_limit(
                "LOGIN_MAX_FAILURES_PER_ACCOUNT",
                5,
                failures,
            )?,
            login_per_ip: vars.window_limit("LOGIN_MAX_FAILURES_PER_IP", 20, failures)?,
            login_per_account: vars.window_limit(
                "LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY",
                100,
                vars.duration("LOGIN_ACCOUNT_WINDOW", "1h")?,
            )?,
            register_per_ip: vars.window_limit(
                "REGISTER_PER_IP_PER_HOUR",
                20,
                vars.duration("REGISTER_WINDOW", "1h")?,
            )?,
            verify_per_ip: vars.window_limit(
                "VERIFY_PER_IP_PER_MINUTE",
                120,
                vars.duration("VERIFY_WINDOW", "1m")?,
            )?,
            ws_tickets_per_user: vars.window_limit(
                "WS_TICKETS_PER_USER_PER_MINUTE",
                30,
                vars.duration("WS_TICKETS_WINDOW", "1m")?,
            )?,
            chats_per_user: vars.window_limit(
                "CHAT_MESSAGES_PER_MINUTE",
                20,
                vars.duration("CHAT_MESSAGES_WINDOW", "1m")?,
            )?,
            chat_concurrent_per_user: vars.limit("CHAT_MAX_CONCURRENT_PER_USER", 3)?,
            ws_connections_per_user: vars.limit("WS_MAX_CONNECTIONS_PER_USER", 20)?,
            ws_connections_per_ip: vars.limit("WS_MAX_CONNECTIONS_PER_IP", 100)?,
            sessions_per_user: vars.limit("SESSIONS_MAX_PER_USER", 50)?,
            trusted_proxies,
        })
    }
}

impl ConnectionConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            header_timeout: vars.timeout("HTTP_HEADER_TIMEOUT", "10s")?,
            body_timeout: vars.timeout("HTTP_BODY_TIMEOUT", "30s")?,
            keepalive_timeout: vars.timeout("HTTP_KEEPALIVE_TIMEOUT", "75s")?,
            max_idle: vars.limit("HTTP_MAX_IDLE_CONNECTIONS", 1000)?,
            unauth_per_ip: vars.limit("UNAUTH_CONNECTIONS_PER_IP", 1024)?,
            fd_headroom: vars.limit("FD_HEADROOM", 256)?,
        })
    }
}

/// Metrics, health probes and what the logs may contain.
#[derive(Debug, Clone)]
pub struct ObservabilityConfig {
    /// `METRICS_ADDR`: serve `/metrics` (and the health probes) on this
    /// address instead of the main port; `None` serves it on the main port.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `LOG_CHAT_CONTENT`: let chat text reach the logs at debug/trace level
    /// (ours and the libraries'); off, it is filtered out at every level.
    pub log_chat_content: bool,
    /// `HEALTH_PROBE_INTERVAL`: how often the stores and the AI are probed
    /// in the background for the health endpoints.
    pub health_probe_interval: Duration,
}

impl ObservabilityConfig {
    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let metrics_addr = match vars.get("METRICS_ADDR") {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                ConfigError::invalid(
                    "METRICS_ADDR",
                    &text,
                    "an address and port such as 0.0.0.0:9100 or [::]:9100",
                )
            })?),
        };
        Ok(Self {
            metrics_addr,
            log_chat_content: vars.boolean("LOG_CHAT_CONTENT", false)?,
            health_probe_interval: vars.duration("HEALTH_PROBE_INTERVAL", "5s")?,
        })
    }
}

fn random_secret() -> Vec<u8> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = vec![0u8; 48];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    /// Every duration setting that must be above zero.
    pub(super) const DURATIONS: &[&str] = &[
        "SHUTDOWN_TIMEOUT",
        "REFRESH_TOKEN_TTL",
        "WS_TICKET_TTL",
        "SESSION_TTL",
        "GENERATION_LEASE",
        "UNATTENDED_GENERATION_TIMEOUT",
        "HANDOFF_QUEUE_TIMEOUT",
        "AGENT_AWAY_GRACE",
        "TRANSCRIPT_RETENTION",
        "AI_CONNECT_TIMEOUT",
        "AI_FIRST_TOKEN_TIMEOUT",
        "AI_IDLE_TIMEOUT",
        "ECHO_TOKEN_DELAY",
        "AI_RETRY_BACKOFF",
        "AI_BREAKER_COOLDOWN",
        "WS_PING_INTERVAL",
        "WS_PONG_TIMEOUT",
        "LOGIN_FAILURE_WINDOW",
        "LOGIN_ACCOUNT_WINDOW",
        "REGISTER_WINDOW",
        "VERIFY_WINDOW",
        "WS_TICKETS_WINDOW",
        "CHAT_MESSAGES_WINDOW",
    ];
    /// Every duration setting where `0` turns something off.
    pub(super) const DURATIONS_OR_ZERO: &[&str] = &[
        "REFRESH_REUSE_GRACE",
        "HTTP_HEADER_TIMEOUT",
        "HTTP_BODY_TIMEOUT",
        "HTTP_KEEPALIVE_TIMEOUT",
    ];
    /// Every count where `0` turns the limit off.
    pub(super) const LIMITS: &[&str] = &[
        "LOGIN_MAX_FAILURES_PER_ACCOUNT",
        "LOGIN_MAX_FAILURES_PER_IP",
        "LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY",
        "REGISTER_PER_IP_PER_HOUR",
        "VERIFY_PER_IP_PER_MINUTE",
        "WS_TICKETS_PER_USER_PER_MINUTE",
        "CHAT_MESSAGES_PER_MINUTE",
        "CHAT_MAX_CONCURRENT_PER_USER",
        "WS_MAX_CONNECTIONS_PER_USER",
        "WS_MAX_CONNECTIONS_PER_IP",
        "SESSIONS_MAX_PER_USER",
        "HTTP_MAX_IDLE_CONNECTIONS",
        "UNAUTH_CONNECTIONS_PER_IP",
        "FD_HEADROOM",
        "AI_BREAKER_FAILURES",
    ];
    /// Every count that must be at least 1.
    pub(super) const POSITIVE: &[&str] = &["EVENT_LOG_LIMIT", "MAX_MESSAGE_CHARS"];

    /// Every duration an accepted configuration holds, by variable.
    pub(super) fn durations(c: &Config) -> Vec<(&'static str, Duration)> {
        let mut all = vec![
            ("SHUTDOWN_TIMEOUT", c.server.shutdown_timeout),
            ("JWT_EXPIRES_IN", c.auth.token_lifetime.duration()),
            ("REFRESH_TOKEN_TTL", c.access.refresh_token_ttl),
            ("REFRESH_REUSE_GRACE", c.access.refresh_reuse_grace),
            ("WS_TICKET_TTL", c.access.ws_ticket_ttl),
            ("SESSION_TTL", c.sessions.ttl),
            ("GENERATION_LEASE", c.sessions.generation_lease),
            (
                "UNATTENDED_GENERATION_TIMEOUT",
                c.sessions.unattended_generation_timeout,
            ),
            ("HANDOFF_QUEUE_TIMEOUT", c.sessions.handoff_queue_timeout),
            ("AGENT_AWAY_GRACE", c.sessions.agent_away_grace),
            ("AI_CONNECT_TIMEOUT", c.ai.connect_timeout),
            ("AI_FIRST_TOKEN_TIMEOUT", c.ai.first_token_timeout),
            ("AI_IDLE_TIMEOUT", c.ai.idle_timeout),
            ("ECHO_TOKEN_DELAY", c.ai.echo_token_delay),
            ("AI_RETRY_BACKOFF", c.ai.retry_backoff),
            ("AI_BREAKER_COOLDOWN", c.ai.breaker_cooldown),
            ("WS_PING_INTERVAL", c.websocket.ping_interval),
            ("WS_PONG_TIMEOUT", c.websocket.pong_timeout),
        ];
        let l = &c.limits;
        for (name, limit) in [
            ("LOGIN_FAILURE_WINDOW", l.login_per_ip),
            ("LOGIN_ACCOUNT_WINDOW", l.login_per_account),
            ("REGISTER_WINDOW", l.register_per_ip),
            ("VERIFY_WINDOW", l.verify_per_ip),
            ("WS_TICKETS_WINDOW", l.ws_tickets_per_user),
            ("CHAT_MESSAGES_WINDOW", l.chats_per_user),
        ] {
            all.extend(limit.map(|w| (name, w.window)));
        }
        all.extend(
            c.storage
                .transcript_retention
                .map(|d| ("TRANSCRIPT_RETENTION", d)),
        );
        let k = &c.connections;
        for (name, timeout) in [
            ("HTTP_HEADER_TIMEOUT", k.header_timeout),
            ("HTTP_BODY_TIMEOUT", k.body_timeout),
            ("HTTP_KEEPALIVE_TIMEOUT", k.keepalive_timeout),
        ] {
            all.extend(timeout.map(|d| (name, d)));
        }
        all
    }

    #[test]
    fn durations_longer_than_a_hundred_years_are_refused_by_name() {
        let most = Duration::from_secs(36_500 * 86_400);
        for name in DURATIONS.iter().chain(DURATIONS_OR_ZERO) {
            // The value that used to be accepted and then overflowed a clock.
            for bad in ["2052117620574877", "36501d", "18446744073709551615ms"] {
                let err = cfg(&[(name, bad)]).unwrap_err().to_string();
                assert!(
                    err.contains(name) && err.contains("at most 36500d"),
                    "{err}"
                );
                assert!(!err.contains('\n'), "{err}");
            }
            let c = cfg(&[(name, "36500d")]).unwrap();
            let got = durations(&c).into_iter().find(|(n, _)| n == name);
            assert_eq!(got, Some((*name, most)), "{name}");
        }
        let err = cfg(&[("JWT_EXPIRES_IN", "2052117620574877")]).unwrap_err();
        assert!(err.to_string().contains("JWT_EXPIRES_IN"), "{err}");
        let c = cfg(&[("JWT_EXPIRES_IN", "36500d")]).unwrap();
        assert_eq!(c.auth.token_lifetime.duration(), most);
    }

    #[test]
    fn counts_are_bounded_and_say_their_range() {
        for name in LIMITS.iter().chain(POSITIVE) {
            let err = cfg(&[(name, "1000001")]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("to 1000000"), "{err}");
            assert!(err.contains("\"1000001\""), "the value as written: {err}");
            let err = cfg(&[(name, "99999999999999999999")]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
            assert!(cfg(&[(name, "1000000")]).is_ok(), "{name}");
        }
        let c = cfg(&[("EVENT_LOG_LIMIT", "1000000")]).unwrap();
        assert_eq!(c.sessions.event_log_limit, 1_000_000);
        let c = cfg(&[("FD_HEADROOM", "1000000")]).unwrap();
        assert_eq!(c.connections.fd_headroom, Some(1_000_000));
    }

    #[test]
    fn observability_settings_parse() {
        let c = cfg(&[]).unwrap().observability;
        assert_eq!(c.metrics_addr, None);
        assert!(!c.log_chat_content);
        assert_eq!(c.health_probe_interval, Duration::from_secs(5));
        let c = cfg(&[
            ("METRICS_ADDR", "127.0.0.1:9100"),
            ("LOG_CHAT_CONTENT", "true"),
            ("HEALTH_PROBE_INTERVAL", "250ms"),
        ])
        .unwrap()
        .observability;
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(c.log_chat_content);
        assert_eq!(c.health_probe_interval, Duration::from_millis(250));
        let err = cfg(&[("METRICS_ADDR", "9100")]).unwrap_err().to_string();
        assert!(err.contains("METRICS_ADDR"), "{err}");
    }

    #[test]
    fn defaults_match_the_node_server() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.server.port, 3001);
        assert_eq!(c.server.host.to_string(), "0.0.0.0");
        assert_eq!(c.server.env, AppEnv::Development);
        assert_eq!(c.auth.token_lifetime.seconds(), 86_400);
        assert_eq!(c.auth.token_lifetime.as_str(), "24h");
        assert!(c.auth.jwt_secret.generated);
        assert!(c.auth.jwt_secret.bytes().len() >= MIN_SECRET_BYTES);
        assert_eq!(c.storage.sqlite_path, PathBuf::from("./data/chatbot.db"));
        assert_eq!(c.storage.connect_timeout, Duration::from_secs(5));
        assert!(c.server.all_interfaces());
        for (host, all) in [
            ("0.0.0.0", true),
            ("::", true),
            ("[::]", true),
            ("127.0.0.1", false),
            ("::1", false),
        ] {
            assert_eq!(
                cfg(&[("HOST", host)]).unwrap().server.all_interfaces(),
                all,
                "{host}"
            );
        }
        assert_eq!(c.websocket.max_message_chars, 10_000);
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.websocket.pong_timeout, Duration::from_secs(60));
        assert_eq!(c.sessions.ttl, Duration::from_secs(86_400));
        assert_eq!(c.sessions.event_log_limit, 2000);
        assert_eq!(c.sessions.generation_lease, Duration::from_secs(10));
        assert_eq!(
            c.sessions.unattended_generation_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(c.sessions.handoff_queue_timeout, Duration::from_secs(600));
        assert_eq!(c.sessions.agent_away_grace, Duration::from_secs(120));
        assert_eq!(c.storage.transcript_retention, None, "kept for good");
        assert!(c.ai.primary.is_none() && c.ai.fallback.is_none());
        assert!(c.storage.mongodb_uri.is_none() && c.sessions.redis_url.is_none());
    }

    #[test]
    fn transcript_retention_keeps_for_good_unless_given_a_duration() {
        assert_eq!(cfg(&[]).unwrap().storage.transcript_retention, None);
        assert_eq!(
            cfg(&[("TRANSCRIPT_RETENTION", "")])
                .unwrap()
                .storage
                .transcript_retention,
            None,
            "empty counts as unset"
        );
        let c = cfg(&[("TRANSCRIPT_RETENTION", "30d")]).unwrap();
        assert_eq!(
            c.storage.transcript_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        for bad in ["0", "forever", "-1d", "36501d"] {
            let err = cfg(&[("TRANSCRIPT_RETENTION", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("TRANSCRIPT_RETENTION"), "{bad}: {err}");
        }
    }

    #[test]
    fn access_settings_have_defaults_and_are_checked() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            c.access,
            AccessConfig {
                allow_registration: true,
                refresh_token_ttl: Duration::from_secs(30 * 86_400),
                refresh_reuse_grace: Duration::from_secs(10),
                ws_ticket_ttl: Duration::from_secs(30),
            }
        );
        let c = cfg(&[
            ("ALLOW_REGISTRATION", "False"),
            ("REFRESH_REUSE_GRACE", "0"),
            ("WS_TICKET_TTL", "5s"),
        ])
        .unwrap();
        assert!(!c.access.allow_registration);
        assert!(c.access.refresh_reuse_grace.is_zero());
        assert_eq!(c.access.ws_ticket_ttl, Duration::from_secs(5));
        for (k, v) in [
            ("ALLOW_REGISTRATION", "maybe"),
            ("REFRESH_TOKEN_TTL", "0"),
            ("REFRESH_REUSE_GRACE", "soon"),
            ("WS_TICKET_TTL", "0"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn limits_have_the_issue_defaults_and_zero_turns_one_off() {
        let l = cfg(&[]).unwrap().limits;
        let w = |max, secs| {
            Some(WindowLimit {
                max,
                window: Duration::from_secs(secs),
            })
        };
        assert_eq!(l.login_per_account_ip, w(5, 900));
        assert_eq!(l.login_per_ip, w(20, 900));
        assert_eq!(l.login_per_account, w(100, 3600));
        assert_eq!(l.register_per_ip, w(20, 3600));
        assert_eq!(l.verify_per_ip, w(120, 60));
        assert_eq!(l.ws_tickets_per_user, w(30, 60));
        assert_eq!(l.chats_per_user, w(20, 60));
        assert_eq!(l.chat_concurrent_per_user, Some(3));
        assert_eq!(l.ws_connections_per_user, Some(20));
        assert_eq!(l.ws_connections_per_ip, Some(100));
        assert_eq!(l.sessions_per_user, Some(50));
        assert!(l.trusted_proxies.is_empty());

        let l = cfg(&[
            ("CHAT_MESSAGES_PER_MINUTE", "0"),
            ("SESSIONS_MAX_PER_USER", "0"),
            ("LOGIN_FAILURE_WINDOW", "2s"),
            ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ])
        .unwrap()
        .limits;
        assert_eq!(l.chats_per_user, None);
        assert_eq!(l.sessions_per_user, None);
        assert_eq!(l.login_per_ip, w(20, 2));
        assert!(!l.trusted_proxies.is_empty());
        for (k, v) in [
            ("WS_MAX_CONNECTIONS_PER_IP", "-1"),
            ("CHAT_MAX_CONCURRENT_PER_USER", "many"),
            ("LOGIN_FAILURE_WINDOW", "0"),
            ("TRUSTED_PROXIES", "proxy.local"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn ai_upstreams_retries_and_breaker() {
        let c = cfg(&[]).unwrap().ai;
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.retry_backoff, Duration::from_millis(200));
        assert_eq!(c.breaker_failures, Some(5));
        assert_eq!(c.breaker_cooldown, Duration::from_secs(30));

        let c = cfg(&[("FASTAPI_URL", "http://ai:8000")]).unwrap().ai;
        assert_eq!(
            c.primary,
            Some(UpstreamConfig::FastApi {
                url: "http://ai:8000".into()
            })
        );
        let c = cfg(&[
            ("AI_PROVIDER", "OpenAI"),
            ("OPENAI_MODEL", "llama3"),
            ("AI_SYSTEM_PROMPT", "Be brief."),
            ("AI_FALLBACK_FASTAPI_URL", "http://backup:8000"),
            ("AI_MAX_RETRIES", "0"),
            ("AI_BREAKER_FAILURES", "0"),
        ])
        .unwrap()
        .ai;
        assert_eq!(
            c.primary,
            Some(UpstreamConfig::OpenAi {
                base_url: "https://api.openai.com/v1".into(),
                api_key: None,
                model: "llama3".into(),
                system_prompt: Some("Be brief.".into()),
            })
        );
        assert_eq!(
            c.fallback.as_ref().map(UpstreamConfig::provider),
            Some("fastapi")
        );
        assert_eq!((c.max_retries, c.breaker_failures), (0, None));
        let c = cfg(&[
            ("FASTAPI_URL", "http://ai:8000"),
            ("AI_FALLBACK_PROVIDER", "openai"),
            ("AI_FALLBACK_OPENAI_BASE_URL", "http://localhost:11434/v1"),
            ("AI_FALLBACK_OPENAI_MODEL", "m"),
            ("AI_FALLBACK_OPENAI_API_KEY", "sk-fallback"),
        ])
        .unwrap()
        .ai;
        let Some(UpstreamConfig::OpenAi {
            base_url, api_key, ..
        }) = c.fallback
        else {
            panic!("an OpenAI fallback");
        };
        assert_eq!(base_url, "http://localhost:11434/v1");
        assert_eq!(api_key.unwrap().expose(), "sk-fallback");
    }

    #[test]
    fn bad_ai_settings_say_which_variable() {
        for (pairs, names) in [
            (vec![("AI_PROVIDER", "anthropic")], "AI_PROVIDER"),
            (vec![("AI_PROVIDER", "openai")], "OPENAI_MODEL"),
            (vec![("AI_PROVIDER", "fastapi")], "FASTAPI_URL"),
            (
                vec![
                    ("AI_PROVIDER", "openai"),
                    ("OPENAI_MODEL", "m"),
                    ("OPENAI_BASE_URL", "api.openai.com"),
                ],
                "OPENAI_BASE_URL",
            ),
            (vec![("AI_FALLBACK_FASTAPI_URL", "http://b")], "AI_FALLBACK"),
            (
                vec![
                    ("FASTAPI_URL", "http://a"),
                    ("AI_FALLBACK_PROVIDER", "openai"),
                ],
                "AI_FALLBACK_OPENAI_MODEL",
            ),
            (vec![("AI_MAX_RETRIES", "11")], "AI_MAX_RETRIES"),
            (vec![("AI_MAX_RETRIES", "-1")], "AI_MAX_RETRIES"),
            (vec![("AI_BREAKER_FAILURES", "x")], "AI_BREAKER_FAILURES"),
            (vec![("AI_BREAKER_COOLDOWN", "0")], "AI_BREAKER_COOLDOWN"),
            (vec![("AI_RETRY_BACKOFF", "soon")], "AI_RETRY_BACKOFF"),
        ] {
            let err = cfg(&pairs).unwrap_err().to_string();
            assert!(err.contains(names), "{pairs:?}: {err}");
        }
        let err = cfg(&[
            ("AI_PROVIDER", "openai"),
            ("OPENAI_MODEL", "m"),
            ("OPENAI_API_KEY", "sk-has space-s3cr3t"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OPENAI_API_KEY") && !err.contains("s3cr3t"),
            "{err}"
        );
    }

    #[test]
    fn connection_limits_have_defaults_and_zero_turns_one_off() {
        let c = cfg(&[]).unwrap().connections;
        assert_eq!(c.header_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.body_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.keepalive_timeout, Some(Duration::from_secs(75)));
        assert_eq!(c.max_idle, Some(1000));
        assert_eq!(c.unauth_per_ip, Some(1024));
        assert_eq!(c.fd_headroom, Some(256));

        let c = cfg(&[
            ("HTTP_HEADER_TIMEOUT", "1500ms"),
            ("HTTP_BODY_TIMEOUT", "0"),
            ("HTTP_KEEPALIVE_TIMEOUT", "2m"),
            ("HTTP_MAX_IDLE_CONNECTIONS", "0"),
            ("UNAUTH_CONNECTIONS_PER_IP", "3"),
            ("FD_HEADROOM", "0"),
        ])
        .unwrap()
        .connections;
        assert_eq!(c.header_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.body_timeout, None);
        assert_eq!(c.keepalive_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.max_idle, None);
        assert_eq!(c.unauth_per_ip, Some(3));
        assert_eq!(c.fd_headroom, None);
        for (k, v) in [
            ("HTTP_HEADER_TIMEOUT", "soon"),
            ("HTTP_BODY_TIMEOUT", "-1s"),
            ("UNAUTH_CONNECTIONS_PER_IP", "-1"),
            ("FD_HEADROOM", "lots"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn token_lifetimes() {
        let c = cfg(&[("JWT_EXPIRES_IN", "90m")]).unwrap();
        assert_eq!(c.auth.token_lifetime.seconds(), 5400);
        assert_eq!(c.auth.token_lifetime.as_str(), "90m");
        for bad in ["forever", "0", "500ms"] {
            let err = cfg(&[("JWT_EXPIRES_IN", bad)]).unwrap_err().to_string();
            assert!(err.contains("JWT_EXPIRES_IN"), "{err}");
        }
    }

    #[test]
    fn production_needs_a_long_secret() {
        let err = cfg(&[("NODE_ENV", "production")]).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"));
        let err = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", "short")]).unwrap_err();
        assert!(err.to_string().contains("at least 32"));
        assert!(
            !err.to_string().contains("short"),
            "the secret must not be echoed"
        );
        let ok = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", &"x".repeat(32))]).unwrap();
        assert!(!ok.auth.jwt_secret.generated);
        assert!(!format!("{ok:?}").contains("xxxxxxxx"));
    }

    #[test]
    fn production_refuses_published_example_secrets() {
        const NODE_README: &str = "your-super-secret-jwt-key-here-change-in-production";
        for secret in [
            NODE_README,
            "YOUR-SUPER-SECRET-JWT-KEY-HERE-and-some-more-bytes",
        ] {
            for env in [("NODE_ENV", "production"), ("APP_ENV", "production")] {
                let err = cfg(&[env, ("JWT_SECRET", secret)]).unwrap_err();
                assert!(err.to_string().contains("published example"), "{err}");
                assert!(!err.to_string().contains(secret), "not echoed: {err}");
            }
        }
        // Development keeps accepting it, as the Node server's .env did.
        let dev = cfg(&[("NODE_ENV", "development"), ("JWT_SECRET", NODE_README)]).unwrap();
        assert_eq!(dev.auth.jwt_secret.bytes(), NODE_README.as_bytes());
    }

    #[test]
    fn values_shown_in_an_env_example_are_placeholders() {
        let example = "# JWT_SECRET=\n# JWT_SECRET=example-secret-example-secret-0123\n\
                       JWT_SECRET_FILE=other\nJWT_SECRET = spaced-out-example-secret-012345\n";
        let values: Vec<&str> = example_values(example, "JWT_SECRET").collect();
        assert_eq!(
            values,
            [
                "example-secret-example-secret-0123",
                "spaced-out-example-secret-012345"
            ]
        );
        assert!(is_placeholder_secret(
            "example-secret-example-secret-0123",
            example
        ));
        assert!(!is_placeholder_secret("other", example));
        assert!(!is_placeholder_secret(&"q".repeat(40), example));
        // Whatever this project's .env.example shows is refused in production.
        for value in example_values(ENV_EXAMPLE, "JWT_SECRET") {
            let err = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", value)]).unwrap_err();
            assert!(err.to_string().contains("JWT_SECRET"), "{err}");
        }
    }

    #[test]
    fn a_cors_origin_without_a_scheme_is_refused_in_every_environment() {
        for env in ["development", "production"] {
            let secret = "s".repeat(40);
            let err = cfg(&[
                ("APP_ENV", env),
                ("JWT_SECRET", &secret),
                ("CORS_ORIGIN", "https://ok.example.com, app.example.com/"),
            ])
            .unwrap_err();
            assert!(err.to_string().contains("CORS_ORIGIN"), "{err}");
            assert!(
                err.to_string().contains("write https://app.example.com"),
                "{err}"
            );
        }
        let ok = cfg(&[(
            "CORS_ORIGIN",
            "https://app.example.com, http://localhost:3000",
        )]);
        assert_eq!(ok.unwrap().server.cors_origins.unwrap().len(), 2);
        assert_eq!(
            cfg(&[("CORS_ORIGIN", " * ")]).unwrap().server.cors_origins,
            None
        );
    }

    #[test]
    fn node_env_values_from_old_deployments_still_start() {
        let staging = cfg(&[("NODE_ENV", "staging"), ("JWT_SECRET", &"s".repeat(32))]).unwrap();
        assert_eq!(staging.server.env, AppEnv::Production);
        assert_eq!(
            cfg(&[("NODE_ENV", "test")]).unwrap().server.env,
            AppEnv::Development
        );
        let err = cfg(&[("APP_ENV", "staging")]).unwrap_err().to_string();
        assert!(err.contains("APP_ENV"), "{err}");
        assert!(cfg(&[("FASTAPI_URL", "http://ai.local/?x=1")]).is_err());
    }

    #[test]
    fn app_env_wins_over_node_env() {
        let c = cfg(&[("APP_ENV", "development"), ("NODE_ENV", "production")]).unwrap();
        assert_eq!(c.server.env, AppEnv::Development);
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        for (k, v) in [
            ("PORT", "abc"),
            ("PORT", "70000"),
            ("HOST", "nowhere"),
            ("APP_ENV", "staging"),
            ("FASTAPI_URL", "localhost:8000"),
            ("MAX_MESSAGE_CHARS", "0"),
            ("SHUTDOWN_TIMEOUT", "soon"),
            ("SESSION_TTL", "0"),
            ("EVENT_LOG_LIMIT", "0"),
            ("GENERATION_LEASE", "forever"),
            ("REDIS_URL", "http://x"),
            ("STORE_CONNECT_TIMEOUT", "0"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
        let err = cfg(&[("MONGODB_URI", "postgres://user:hunter2@x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = cfg(&[("REDIS_URL", "http://:hunter2@x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn empty_values_count_as_unset_and_cors_lists_split() {
        let c = cfg(&[
            ("MONGODB_URI", ""),
            ("PORT", " "),
            ("CORS_ORIGIN", "http://a.test, http://b.test/"),
        ])
        .unwrap();
        assert!(c.storage.mongodb_uri.is_none());
        assert_eq!(c.server.port, 3001);
        assert_eq!(
            c.server.cors_origins,
            Some(vec!["http://a.test".to_owned(), "http://b.test".to_owned()])
        );
        assert_eq!(
            cfg(&[("CORS_ORIGIN", "*")]).unwrap().server.cors_origins,
            None
        );
    }

    #[test]
    fn no_debug_or_display_of_the_config_shows_a_credential() {
        let c = cfg(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "jwt-secret-that-is-long-enough-0123456789"),
            (
                "MONGODB_URI",
                "mongodb+srv://admin:m0ngo-pa55@cluster.example.net/chatbot?retryWrites=true",
            ),
            (
                "REDIS_URL",
                "rediss://default:r3dis-pa55@cache.example.net:6380/0",
            ),
            ("AI_PROVIDER", "openai"),
            ("OPENAI_MODEL", "gpt"),
            ("OPENAI_API_KEY", "sk-0pen41-k3y"),
            ("AI_FALLBACK_PROVIDER", "openai"),
            ("AI_FALLBACK_OPENAI_MODEL", "gpt"),
            ("AI_FALLBACK_OPENAI_API_KEY", "sk-fallb4ck-k3y"),
        ])
        .unwrap();
        let shown = [
            format!("{c:?}"),
            format!("{c:#?}"),
            c.storage.mongodb_uri.as_ref().unwrap().to_string(),
            c.sessions.redis_url.as_ref().unwrap().to_string(),
            c.auth.jwt_secret.to_string(),
        ]
        .join("\n");
        for secret in [
            "m0ngo-pa55",
            "r3dis-pa55",
            "jwt-secret-that",
            "0pen41-k3y",
            "fallb4ck-k3y",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        // What is not secret stays readable, so the operator can see which host.
        assert!(shown.contains("mongodb+srv://admin:***@cluster.example.net/chatbot"));
        assert!(shown.contains("rediss://default:***@cache.example.net:6380/0"));
        // The drivers still get the real thing.
        assert!(c
            .sessions
            .redis_url
            .unwrap()
            .expose()
            .contains("r3dis-pa55"));
    }

    #[test]
    fn redaction_covers_odd_urls() {
        let url = |s: &str| SecretUrl(s.to_owned()).redacted();
        assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(url("redis://:p@ss@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            url("mongodb://u:pw@h1:27017,h2:27017/db?authSource=admin&password=x"),
            "mongodb://u:***@h1:27017,h2:27017/db?authSource=admin&password=***"
        );
        assert_eq!(url("mongodb://user@h/db"), "mongodb://user@h/db");
    }
}

/// Every setting given any text: the server starts with exactly what was
/// written, or refuses with one line naming the variable. Nothing is
/// silently replaced by a default, and nothing accepted can overflow later.
#[cfg(test)]
mod proptests {
    use super::tests::{durations, DURATIONS, DURATIONS_OR_ZERO, LIMITS, POSITIVE};
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, String)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Config::from_lookup(|k| map.get(k).map(|v| (*v).to_owned()))
    }

    /// Every variable the server reads.
    fn all_names() -> Vec<&'static str> {
        let mut names = vec![
            "PORT",
            "HOST",
            "APP_ENV",
            "NODE_ENV",
            "JWT_SECRET",
            "JWT_EXPIRES_IN",
            "ALLOW_REGISTRATION",
            "MONGODB_URI",
            "SQLITE_PATH",
            "REDIS_URL",
            "REDIS_KEY_PREFIX",
            "AI_PROVIDER",
            "FASTAPI_URL",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "OPENAI_MODEL",
            "AI_SYSTEM_PROMPT",
            "AI_FALLBACK_PROVIDER",
            "AI_FALLBACK_FASTAPI_URL",
            "AI_FALLBACK_OPENAI_BASE_URL",
            "AI_FALLBACK_OPENAI_API_KEY",
            "AI_FALLBACK_OPENAI_MODEL",
            "AI_FALLBACK_SYSTEM_PROMPT",
            "AI_MAX_RETRIES",
            "CORS_ORIGIN",
            "TRUSTED_PROXIES",
        ];
        names.extend(
            DURATIONS
                .iter()
                .chain(DURATIONS_OR_ZERO)
                .chain(LIMITS)
                .chain(POSITIVE),
        );
        names
    }

    /// Text near what a setting expects (numbers with units, words, URLs)
    /// or anything at all.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ ]?-?[0-9]{1,22}[ ]?(ms|s|m|h|d|days|y|)[ ]?",
            "(true|false|yes|no|on|off|TRUE|maybe|)",
            "(https?|redis|mongodb|ftp)://[a-z0-9.:@/?#]{0,20}",
            "[0-9a-f:./, *]{0,30}",
            any::<String>(),
        ]
    }

    /// What `n` followed by `unit` means, by a model independent of the parser.
    fn model_duration(n: u128, unit: &str) -> Option<u128> {
        let ms = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" | "days" => 86_400_000,
            _ => return None,
        };
        Some(n * ms)
    }

    fn check_accepted(c: &Config) -> Result<(), TestCaseError> {
        let now = std::time::Instant::now();
        let today = chrono::Utc::now();
        for (name, d) in durations(c) {
            prop_assert!(d <= crate::domain::time::MAX_DURATION, "{} = {:?}", name, d);
            // What the server does with them: deadlines and expiry dates.
            prop_assert!(now.checked_add(d * 4).is_some());
            let d = chrono::Duration::from_std(d).unwrap();
            prop_assert!(today.checked_add_signed(d).is_some());
        }
        prop_assert!(c.sessions.event_log_limit <= MAX_COUNT as usize);
        prop_assert!(c.websocket.max_message_chars <= MAX_COUNT as usize);
        prop_assert!(c.ai.max_retries <= MAX_AI_RETRIES);
        Ok(())
    }

    fn check_refused(err: &ConfigError, names: &[&str]) -> Result<(), TestCaseError> {
        let text = err.to_string();
        prop_assert!(!text.contains('\n') && !text.contains('\r'), "{:?}", text);
        prop_assert!(
            names.iter().any(|n| text.contains(n)),
            "{} names none of {:?}",
            text,
            names
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_setting_with_any_value_starts_or_is_refused_in_one_line(
            pairs in prop::collection::vec((prop::sample::select(all_names()), value()), 1..6)
        ) {
            match cfg(&pairs) {
                Ok(c) => check_accepted(&c)?,
                Err(e) => {
                    let mut names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
                    // Settings that need each other name the missing one.
                    names.extend(["AI_FALLBACK", "OPENAI_MODEL", "FASTAPI_URL", "JWT_SECRET"]);
                    check_refused(&e, &names)?;
                }
            }
        }

        #[test]
        fn durations_mean_what_they_say_or_are_refused(
            name in prop::sample::select([DURATIONS, DURATIONS_OR_ZERO].concat()),
            n in prop_oneof![0u64..100_000, any::<u64>(), 3_153_599_999u64..3_153_600_002],
            unit in prop::sample::select(vec!["", "s", "ms", "m", "h", "d", "days", "y", "us"]),
        ) {
            let text = format!("{n}{unit}");
            let zero_ok = DURATIONS_OR_ZERO.contains(&name);
            let expected_ms = model_duration(u128::from(n), unit)
                .filter(|&ms| ms <= 36_500 * 86_400_000 && (zero_ok || ms > 0));
            match (cfg(&[(name, text.clone())]), expected_ms) {
                (Ok(c), Some(ms)) => {
                    let got = durations(&c).into_iter().find(|(n, _)| *n == name).map(|(_, d)| d);
                    // `0` of a timeout turns it off: then it is absent.
                    prop_assert_eq!(got.map_or(0, |d| d.as_millis()), ms, "{}={}", name, text);
                }
                (Err(e), None) => check_refused(&e, &[name])?,
                (got, expected) => prop_assert!(false, "{}={}: got {:?}, expected {:?} ms", name, text, got.map(|_| ()), expected),
            }
        }

        #[test]
        fn counts_mean_what_they_say_or_are_refused(
            name in prop::sample::select([LIMITS, POSITIVE].concat()),
            text in prop_oneof!["-?[0-9]{1,12}", "[0-9]{1,7}", any::<String>()],
        ) {
            let n: Option<u64> = text.trim().parse().ok();
            let least = u64::from(POSITIVE.contains(&name));
            let ok = n.filter(|n| (least..=u64::from(MAX_COUNT)).contains(n));
            let blank = text.trim().is_empty();
            match cfg(&[(name, text.clone())]) {
                Ok(c) => {
                    check_accepted(&c)?;
                    prop_assert!(ok.is_some() || blank, "{}={:?} accepted", name, text);
                }
                Err(e) => {
                    prop_assert!(ok.is_none(), "{}={:?} refused: {}", name, text, e);
                    check_refused(&e, &[name])?;
                }
            }
        }

        #[test]
        fn booleans_are_the_documented_words(text in prop_oneof![
            "(?i)(true|false|yes|no|on|off|1|0)", any::<String>()
        ]) {
            let word = text.trim().to_ascii_lowercase();
            let expected = match word.as_str() {
                "true" | "1" | "yes" | "on" | "" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            };
            let got = cfg(&[("ALLOW_REGISTRATION", text.clone())]).map(|c| c.access.allow_registration);
            match (got, expected) {
                (Ok(b), Some(e)) => prop_assert_eq!(b, e),
                (Err(e), None) => check_refused(&e, &["ALLOW_REGISTRATION"])?,
                (got, expected) => prop_assert!(false, "{:?}: {:?} vs {:?}", text, got, expected),
            }
        }

        #[test]
        fn connection_urls_keep_their_scheme_and_never_echo_a_refused_one(
            name in prop::sample::select(vec!["REDIS_URL", "MONGODB_URI"]),
            text in prop_oneof![
                "(redis|rediss|mongodb|mongodb\\+srv|http)://[a-z]{1,6}:S3CR3T[a-z]{0,4}@[a-z0-9.:/]{1,20}",
                any::<String>(),
            ],
        ) {
            match cfg(&[(name, text.clone())]) {
                Ok(c) => {
                    let url = if name == "REDIS_URL" { c.sessions.redis_url } else { c.storage.mongodb_uri };
                    match url {
                        Some(url) => {
                            prop_assert_eq!(url.expose(), text.trim());
                            let shown = format!("{url:?} {url}");
                            prop_assert!(!shown.contains("S3CR3T"), "{}", shown);
                        }
                        None => prop_assert!(text.trim().is_empty()),
                    }
                }
                Err(e) => {
                    check_refused(&e, &[name])?;
                    prop_assert!(!e.to_string().contains("S3CR3T"));
                }
            }
        }

        #[test]
        fn ai_urls_are_http_without_query_or_refused(text in prop_oneof![
            "(https?|ftp|)(://)?[a-z0-9.:/?#]{0,20}",
            any::<String>(),
        ]) {
            match cfg(&[("FASTAPI_URL", text.clone())]) {
                Ok(c) => match c.ai.primary {
                    Some(UpstreamConfig::FastApi { url }) => {
                        prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                        prop_assert!(!url.contains(['?', '#']));
                        prop_assert_eq!(url.as_str(), text.trim());
                    }
                    other => prop_assert!(other.is_none() && text.trim().is_empty()),
                },
                Err(e) => check_refused(&e, &["FASTAPI_URL"])?,
            }
        }

        #[test]
        fn trusted_proxy_lists_parse_or_are_refused_by_name(text in prop_oneof![
            "([0-9]{1,3}\\.){3}[0-9]{1,3}(/[0-9]{1,2})?(, ?[0-9a-f:]{2,12}(/[0-9]{1,3})?){0,2}",
            any::<String>(),
        ]) {
            match cfg(&[("TRUSTED_PROXIES", text.clone())]) {
                Ok(c) => prop_assert_eq!(
                    c.limits.trusted_proxies.is_empty(),
                    text.split(',').all(|e| e.trim().is_empty())
                ),
                Err(e) => check_refused(&e, &["TRUSTED_PROXIES"])?,
            }
        }
    }
}
