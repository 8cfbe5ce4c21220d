//! Configuration from the environment (and `.env`), parsed once at start-up.
//!
//! Variable names and defaults match the Node.js server, so its `.env` files
//! work unchanged. Each setting is declared once, in [`settings`]: its name,
//! flag, help and default. The settings come in the groups an operator thinks
//! in (server, auth and access, stores, AI upstream, abuse limits), each
//! parsed by its own section module through the shared variable reader
//! (`vars.rs`). Every problem is reported as one [`ConfigError`] line; the
//! binary turns that into exit code 2. Values that hold credentials are types
//! (`secrets.rs`) whose `Debug` and `Display` never show them, so no `{:?}`
//! of a config leaks.

mod access;
mod ai;
mod limits;
mod secrets;
mod server;
pub mod settings;
mod stores;
mod traces;
mod vars;

/// Every setting given any text: the server starts with exactly what was
/// written, or refuses with one line naming the variable. Nothing is
/// silently replaced by a default, and nothing accepted can overflow later.
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use access::{AccessConfig, AuthConfig};
pub use ai::{AiConfig, UpstreamConfig};
pub use limits::{LimitsConfig, WindowLimit};
pub use secrets::{ApiKey, JwtSecret, SecretUrl, MIN_SECRET_BYTES};
pub use server::{AppEnv, ConnectionConfig, ObservabilityConfig, ServerConfig, WebSocketConfig};
pub use settings::{Setting, Settings, SECRET_SETTINGS};
pub use stores::{RedisUrls, SessionConfig, StorageConfig};
pub use traces::{ExportHeaders, RootSampler, TraceSampler, TracesConfig};
use vars::Vars;

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

/// Most any count setting accepts (`EVENT_LOG_LIMIT`, `MAX_MESSAGE_CHARS`
/// and every limit): beyond it a value is a typo, and some of them size
/// what is kept in memory per session or per key.
pub const MAX_COUNT: u32 = 1_000_000;

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
