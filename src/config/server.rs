//! The server section: where it listens, how it behaves as a process, the
//! WebSocket protocol's timings, the limits on client connections, and what
//! is observed (metrics, health probes, logs, traces).

use std::net::IpAddr;
use std::time::Duration;

use super::settings::{
    APP_ENV, CORS_ORIGIN, FD_HEADROOM, HEALTH_PROBE_INTERVAL, HOST, HTTP_BODY_TIMEOUT,
    HTTP_HEADER_TIMEOUT, HTTP_KEEPALIVE_TIMEOUT, HTTP_MAX_IDLE_CONNECTIONS, LOG_CHAT_CONTENT,
    MAX_MESSAGE_CHARS, METRICS_ADDR, NODE_ENV, PORT, SHUTDOWN_TIMEOUT, UNAUTH_CONNECTIONS_PER_IP,
    WS_PING_INTERVAL, WS_PONG_TIMEOUT,
};
use super::{ConfigError, Vars, MAX_COUNT};

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

impl AppEnv {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let is_dev = |v: &str| matches!(v, "development" | "dev" | "test" | "local");
        match (vars.get(APP_ENV), vars.get(NODE_ENV)) {
            (Some(v), _) => match v.to_ascii_lowercase().as_str() {
                x if is_dev(x) => Ok(AppEnv::Development),
                "production" | "prod" => Ok(AppEnv::Production),
                _ => Err(ConfigError::invalid(
                    APP_ENV.name,
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

impl ServerConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let host = match vars.get(HOST) {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => match v.trim_start_matches('[').trim_end_matches(']') {
                "localhost" => IpAddr::from([127, 0, 0, 1]),
                bare => bare
                    .parse()
                    .map_err(|_| ConfigError::invalid(HOST.name, &v, "an IP address"))?,
            },
        };
        Ok(Self {
            host,
            port: vars.required(PORT, "a port number 0-65535")?,
            env: AppEnv::parse(vars)?,
            cors_origins: match vars.get(CORS_ORIGIN) {
                Some(v) => cors_list(&v)?,
                None => None,
            },
            shutdown_timeout: vars.duration(SHUTDOWN_TIMEOUT)?,
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

/// Limits and timings of the WebSocket protocol.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Maximum characters in one chat message.
    pub max_message_chars: usize,
    pub ping_interval: Duration,
    /// A connection whose pongs stop for this long is closed.
    pub pong_timeout: Duration,
}

impl WebSocketConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            max_message_chars: vars.positive(MAX_MESSAGE_CHARS, MAX_COUNT as usize)?,
            ping_interval: vars.duration(WS_PING_INTERVAL)?,
            pong_timeout: vars.duration(WS_PONG_TIMEOUT)?,
        })
    }
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

impl ConnectionConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            header_timeout: vars.timeout(HTTP_HEADER_TIMEOUT)?,
            body_timeout: vars.timeout(HTTP_BODY_TIMEOUT)?,
            keepalive_timeout: vars.timeout(HTTP_KEEPALIVE_TIMEOUT)?,
            max_idle: vars.limit(HTTP_MAX_IDLE_CONNECTIONS)?,
            unauth_per_ip: vars.limit(UNAUTH_CONNECTIONS_PER_IP)?,
            fd_headroom: vars.limit(FD_HEADROOM)?,
        })
    }
}

/// Metrics, health probes, what the logs may contain, and trace export.
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
    /// `OTEL_*`: OpenTelemetry trace export; `None` exports nothing.
    pub traces: Option<super::TracesConfig>,
}

impl ObservabilityConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let metrics_addr = match vars.get(METRICS_ADDR) {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                ConfigError::invalid(
                    METRICS_ADDR.name,
                    &text,
                    "an address and port such as 0.0.0.0:9100 or [::]:9100",
                )
            })?),
        };
        Ok(Self {
            metrics_addr,
            log_chat_content: vars.boolean(LOG_CHAT_CONTENT)?,
            health_probe_interval: vars.duration(HEALTH_PROBE_INTERVAL)?,
            traces: super::TracesConfig::parse(vars)?,
        })
    }
}
