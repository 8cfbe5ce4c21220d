//! Values that hold credentials, whose `Debug` and `Display` never show
//! them, and the checks production makes of the JWT secret.

use std::fmt;

/// This project's `.env.example`, whose values production refuses as secrets.
pub(super) const ENV_EXAMPLE: &str = include_str!("../../.env.example");

/// Production refuses secrets shorter than this (HS256 wants a 256-bit key).
pub const MIN_SECRET_BYTES: usize = 32;

/// The JWT signing secret. Neither `Debug` nor `Display` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret {
    pub(super) bytes: Vec<u8>,
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
pub struct SecretUrl(pub(super) String);

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
pub struct ApiKey(pub(super) String);

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

/// Secrets published as examples, which anyone can sign tokens with: the
/// Node README's `your-super-secret-jwt-key-here-change-in-production` and its
/// variations.
const PLACEHOLDER_SECRET_PREFIXES: &[&str] = &["your-super-secret-jwt-key-here"];

/// Whether production must refuse `secret` as a published example: a known
/// placeholder, or a value that `env_example` (the text of `.env.example`)
/// shows for `JWT_SECRET`.
pub(super) fn is_placeholder_secret(secret: &str, env_example: &str) -> bool {
    let lower = secret.to_ascii_lowercase();
    PLACEHOLDER_SECRET_PREFIXES
        .iter()
        .any(|p| lower.starts_with(p))
        || example_values(env_example, "JWT_SECRET").any(|v| v == secret)
}

/// The non-empty values `env_example` gives `name`, commented out or not.
pub(super) fn example_values<'a>(
    env_example: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
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

/// A secret for this run only, when none is configured (development).
pub(super) fn random_secret() -> Vec<u8> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = vec![0u8; 48];
    OsRng.fill_bytes(&mut bytes);
    bytes
}
