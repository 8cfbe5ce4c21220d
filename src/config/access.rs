//! The authentication and access section: the JWT secret and token
//! lifetime, registration, refresh tokens and WebSocket tickets.

use std::time::Duration;

use super::secrets::{is_placeholder_secret, random_secret, ENV_EXAMPLE, MIN_SECRET_BYTES};
use super::settings::{
    ALLOW_REGISTRATION, JWT_EXPIRES_IN, JWT_SECRET, REFRESH_REUSE_GRACE, REFRESH_TOKEN_TTL,
    WS_TICKET_TTL,
};
use super::{AppEnv, ConfigError, JwtSecret, Vars};
use crate::domain::TokenLifetime;

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

impl AuthConfig {
    pub(super) fn parse(vars: &Vars, env: AppEnv) -> Result<Self, ConfigError> {
        let jwt_secret = match vars.get(JWT_SECRET) {
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
        let text = vars.get(JWT_EXPIRES_IN).unwrap_or_default();
        let token_lifetime = TokenLifetime::parse(&text)
            .map_err(|e| ConfigError::invalid(JWT_EXPIRES_IN.name, &text, &e.to_string()))?;
        Ok(Self {
            jwt_secret,
            token_lifetime,
        })
    }
}

impl AccessConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_registration: vars.boolean(ALLOW_REGISTRATION)?,
            refresh_token_ttl: vars.duration(REFRESH_TOKEN_TTL)?,
            refresh_reuse_grace: vars.duration_or_zero(REFRESH_REUSE_GRACE)?,
            ws_ticket_ttl: vars.duration(WS_TICKET_TTL)?,
        })
    }
}
