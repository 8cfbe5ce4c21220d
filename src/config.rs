//! Configuration from the environment (and `.env`), parsed once at start-up.
//!
//! Variable names and defaults match the Node.js server, so its `.env` files
//! work unchanged. Every problem is reported as one [`ConfigError`] line; the
//! binary turns that into exit code 2.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A configuration problem, phrased for the person who wrote the `.env`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn invalid(var: &str, value: &str, expected: &str) -> Self {
        Self(format!("invalid {var}={value:?}: expected {expected}"))
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

/// The JWT signing secret. `Debug` never prints it.
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

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub env: AppEnv,
    pub mongodb_uri: Option<String>,
    pub sqlite_path: PathBuf,
    pub jwt_secret: JwtSecret,
    /// Token lifetime, and the text it was configured as (echoed as `expiresIn`).
    pub jwt_expires_in: Duration,
    pub jwt_expires_in_text: String,
    pub fastapi_url: Option<String>,
    /// Allowed browser origins; `None` allows any origin.
    pub cors_origins: Option<Vec<String>>,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Maximum characters in one chat message.
    pub max_message_chars: usize,
    /// Idle time after which a session is forgotten.
    pub session_ttl: Duration,
    /// How long running streams may take to finish when the server stops.
    pub shutdown_timeout: Duration,
    pub ai_connect_timeout: Duration,
    pub ai_first_token_timeout: Duration,
    pub ai_idle_timeout: Duration,
    /// Delay between words of the built-in echo model.
    pub echo_token_delay: Duration,
    pub ws_ping_interval: Duration,
    /// A connection whose pongs stop for this long is closed.
    pub ws_pong_timeout: Duration,
}

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
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let is_dev = |v: &str| matches!(v, "development" | "dev" | "test" | "local");
        let env = match (var("APP_ENV"), var("NODE_ENV")) {
            (Some(v), _) => match v.to_ascii_lowercase().as_str() {
                x if is_dev(x) => AppEnv::Development,
                "production" | "prod" => AppEnv::Production,
                _ => {
                    return Err(ConfigError::invalid(
                        "APP_ENV",
                        &v,
                        "development, test or production",
                    ))
                }
            },
            // Node deployments use names like `staging`: anything that is not a
            // development name gets production behaviour, so an old .env starts.
            (None, Some(v)) if is_dev(&v.to_ascii_lowercase()) => AppEnv::Development,
            (None, Some(_)) => AppEnv::Production,
            (None, None) => AppEnv::Development,
        };

        let host = match var("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => {
                let trimmed = v.trim_start_matches('[').trim_end_matches(']');
                match trimmed {
                    "localhost" => IpAddr::from([127, 0, 0, 1]),
                    _ => trimmed
                        .parse()
                        .map_err(|_| ConfigError::invalid("HOST", &v, "an IP address"))?,
                }
            }
        };
        let port = parse_or(&var, "PORT", 3001u16, "a port number 0-65535")?;

        let jwt_secret = match var("JWT_SECRET") {
            Some(s) if env == AppEnv::Production && s.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError(format!(
                    "JWT_SECRET is {} bytes; production needs at least {MIN_SECRET_BYTES}",
                    s.len()
                )))
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

        let jwt_expires_in_text = var("JWT_EXPIRES_IN").unwrap_or_else(|| "24h".into());
        let jwt_expires_in = parse_duration(&jwt_expires_in_text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "JWT_EXPIRES_IN",
                    &jwt_expires_in_text,
                    "seconds or a number with s, m, h or d (e.g. 3600, 90m, 24h, 7d)",
                )
            })?;

        let fastapi_url = var("FASTAPI_URL");
        if let Some(url) = &fastapi_url {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(['?', '#'])
            {
                return Err(ConfigError::invalid(
                    "FASTAPI_URL",
                    url,
                    "an http:// or https:// base URL without query or fragment",
                ));
            }
        }
        let mongodb_uri = var("MONGODB_URI");
        if let Some(uri) = &mongodb_uri {
            if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                // The URI may hold a password: never echo it.
                return Err(ConfigError(
                    "invalid MONGODB_URI: expected a mongodb:// or mongodb+srv:// URI".into(),
                ));
            }
        }
        let redis_url = var("REDIS_URL");
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError(
                    "invalid REDIS_URL: expected a redis:// or rediss:// URL".into(),
                ));
            }
        }

        let cors_origins = var("CORS_ORIGIN").and_then(|v| {
            let list: Vec<String> = v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            (!list.iter().any(|o| o == "*") && !list.is_empty()).then_some(list)
        });

        let max_message_chars =
            parse_or(&var, "MAX_MESSAGE_CHARS", 10_000usize, "a positive number")?;
        if max_message_chars == 0 {
            return Err(ConfigError::invalid(
                "MAX_MESSAGE_CHARS",
                "0",
                "a positive number",
            ));
        }

        Ok(Self {
            host,
            port,
            env,
            mongodb_uri,
            sqlite_path: var("SQLITE_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("./data/chatbot.db")),
            jwt_secret,
            jwt_expires_in,
            jwt_expires_in_text,
            fastapi_url,
            cors_origins,
            redis_url,
            redis_key_prefix: var("REDIS_KEY_PREFIX").unwrap_or_else(|| "chatbot".into()),
            max_message_chars,
            session_ttl: duration_var(&var, "SESSION_TTL", "24h")?,
            shutdown_timeout: duration_var(&var, "SHUTDOWN_TIMEOUT", "10s")?,
            ai_connect_timeout: duration_var(&var, "AI_CONNECT_TIMEOUT", "5s")?,
            ai_first_token_timeout: duration_var(&var, "AI_FIRST_TOKEN_TIMEOUT", "30s")?,
            ai_idle_timeout: duration_var(&var, "AI_IDLE_TIMEOUT", "30s")?,
            echo_token_delay: duration_var(&var, "ECHO_TOKEN_DELAY", "40ms")?,
            ws_ping_interval: duration_var(&var, "WS_PING_INTERVAL", "20s")?,
            ws_pong_timeout: duration_var(&var, "WS_PONG_TIMEOUT", "60s")?,
        })
    }
}

fn parse_or<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError::invalid(name, &v, expected)),
    }
}

fn duration_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = var(name).unwrap_or_else(|| default.to_owned());
    parse_duration(&text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::invalid(name, &text, "a duration such as 500ms, 30s, 5m, 1h"))
}

/// Parses `3600` (seconds), `500ms`, `30s`, `90m`, `24h`, `7d`, the forms the
/// Node server's `jsonwebtoken` accepted for `expiresIn` that people actually use.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" | "mins" | "minute" | "minutes" => secs(60),
        "h" | "hr" | "hrs" | "hour" | "hours" => secs(3600),
        "d" | "day" | "days" => secs(86_400),
        _ => None,
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

    #[test]
    fn defaults_match_the_node_server() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 3001);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.env, AppEnv::Development);
        assert_eq!(c.jwt_expires_in, Duration::from_secs(86_400));
        assert_eq!(c.jwt_expires_in_text, "24h");
        assert!(c.jwt_secret.generated);
        assert!(c.jwt_secret.bytes().len() >= MIN_SECRET_BYTES);
        assert_eq!(c.sqlite_path, PathBuf::from("./data/chatbot.db"));
        assert_eq!(c.max_message_chars, 10_000);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.ws_pong_timeout, Duration::from_secs(60));
        assert!(c.fastapi_url.is_none() && c.mongodb_uri.is_none() && c.redis_url.is_none());
    }

    #[test]
    fn expires_in_forms() {
        for (text, secs) in [
            ("3600", 3600),
            ("90m", 5400),
            ("24h", 86_400),
            ("7d", 604_800),
            ("45s", 45),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "h", "1y", "-5", "1.5h", "abc"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert!(cfg(&[("JWT_EXPIRES_IN", "forever")]).is_err());
        assert!(cfg(&[("JWT_EXPIRES_IN", "0")]).is_err());
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
        assert!(!ok.jwt_secret.generated);
        assert!(!format!("{ok:?}").contains("xxxxxxxx"));
    }

    #[test]
    fn node_env_values_from_old_deployments_still_start() {
        let staging = cfg(&[("NODE_ENV", "staging"), ("JWT_SECRET", &"s".repeat(32))]).unwrap();
        assert_eq!(staging.env, AppEnv::Production);
        assert_eq!(
            cfg(&[("NODE_ENV", "test")]).unwrap().env,
            AppEnv::Development
        );
        let err = cfg(&[("APP_ENV", "staging")]).unwrap_err().to_string();
        assert!(err.contains("APP_ENV"), "{err}");
        assert!(cfg(&[("FASTAPI_URL", "http://ai.local/?x=1")]).is_err());
    }

    #[test]
    fn app_env_wins_over_node_env() {
        let c = cfg(&[("APP_ENV", "development"), ("NODE_ENV", "production")]).unwrap();
        assert_eq!(c.env, AppEnv::Development);
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
        ] {
            let err = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
        let err = cfg(&[("MONGODB_URI", "postgres://user:hunter2@x")]).unwrap_err();
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
        assert!(c.mongodb_uri.is_none());
        assert_eq!(c.port, 3001);
        assert_eq!(
            c.cors_origins,
            Some(vec!["http://a.test".to_owned(), "http://b.test".to_owned()])
        );
        assert_eq!(cfg(&[("CORS_ORIGIN", "*")]).unwrap().cors_origins, None);
    }
}
