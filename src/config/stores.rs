//! The stores section: where users and transcripts live, and where chat
//! sessions and their conversations live and for how long (with the
//! handoff settings that go with them).

use std::path::PathBuf;
use std::time::Duration;

use super::settings::{
    AGENT_AWAY_GRACE, AGENT_MAX_CONVERSATIONS, EVENT_LOG_LIMIT, GENERATION_LEASE, HANDOFF,
    HANDOFF_ASSIGN, HANDOFF_CLOSED_MESSAGE, HANDOFF_HOURS, HANDOFF_OFFLINE_MESSAGE,
    HANDOFF_QUEUE_TIMEOUT, HANDOFF_SUMMARY, HANDOFF_SUMMARY_PROMPT, HANDOFF_TIMEZONE,
    HANDOFF_WHEN_NO_AGENT_ONLINE, MONGODB_URI, REDIS_CLUSTER_URLS, REDIS_KEY_PREFIX, REDIS_URL,
    SESSION_TTL, SQLITE_PATH, STORE_CONNECT_TIMEOUT, TRANSCRIPT_RETENTION,
    UNATTENDED_GENERATION_TIMEOUT,
};
use super::{ConfigError, SecretUrl, Vars, MAX_COUNT};
use crate::domain::handoff::{
    AssignMode, HandoffSwitch, WhenNoAgentOnline, DEFAULT_CLOSED_MESSAGE, DEFAULT_OFFLINE_MESSAGE,
};
use crate::domain::office_hours::{self, OfficeHours};

/// Most conversations `AGENT_MAX_CONVERSATIONS` may allow one agent: what
/// one agent's list and socket follow.
const MAX_HELD: usize = 200;
use crate::domain::signal::DEFAULT_SUMMARY_PROMPT;

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
    /// `REDIS_CLUSTER_URLS`: a Redis Cluster's seed nodes instead of
    /// `redis_url` (never both); empty when unset.
    pub redis_cluster_urls: Vec<SecretUrl>,
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
    /// `AGENT_MAX_CONVERSATIONS`: conversations one agent may hold at once.
    pub agent_max_conversations: usize,
    /// `HANDOFF_ASSIGN`: agents claim, or the server assigns.
    pub handoff_assign: AssignMode,
    /// `HANDOFF_HOURS` in `HANDOFF_TIMEZONE`; `None`: people answer at any hour.
    pub handoff_hours: Option<OfficeHours>,
    /// `HANDOFF_CLOSED_MESSAGE`.
    pub handoff_closed_message: String,
    /// What the AI is asked to summarise a conversation an agent takes
    /// (`HANDOFF_SUMMARY_PROMPT`); `None` when `HANDOFF_SUMMARY=false`.
    pub handoff_summary_prompt: Option<String>,
}

/// `HANDOFF_HOURS` read in `HANDOFF_TIMEZONE` (checked even without hours,
/// so a typo is found before the hours are set).
fn office_hours(vars: &Vars) -> Result<Option<OfficeHours>, ConfigError> {
    let zone = vars.get(HANDOFF_TIMEZONE).unwrap_or_default();
    office_hours::parse_zone(&zone)
        .map_err(|e| ConfigError::invalid(HANDOFF_TIMEZONE.name, &zone, &e.to_string()))?;
    let Some(hours) = vars.get(HANDOFF_HOURS).filter(|h| !h.trim().is_empty()) else {
        return Ok(None);
    };
    OfficeHours::parse(&hours, &zone)
        .map(Some)
        .map_err(|e| ConfigError::invalid(HANDOFF_HOURS.name, &hours, &e.to_string()))
}

impl StorageConfig {
    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            mongodb_uri: vars.secret_url(MONGODB_URI, &["mongodb://", "mongodb+srv://"])?,
            sqlite_path: PathBuf::from(vars.get(SQLITE_PATH).unwrap_or_default()),
            connect_timeout: vars.duration(STORE_CONNECT_TIMEOUT)?,
            transcript_retention: vars.optional_duration(TRANSCRIPT_RETENTION)?,
        })
    }
}

/// Where the shared Redis is, when there is one.
#[derive(Debug, Clone, Copy)]
pub enum RedisUrls<'a> {
    Single(&'a SecretUrl),
    Cluster(&'a [SecretUrl]),
}

impl std::fmt::Display for RedisUrls<'_> {
    /// Redacted, as [`SecretUrl`] shows itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(url) => write!(f, "Redis {url}"),
            Self::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(SecretUrl::redacted).collect();
                write!(f, "Redis Cluster {}", shown.join(","))
            }
        }
    }
}

/// `REDIS_CLUSTER_URLS`: comma-separated `redis://` or `rediss://` URLs, and
/// never together with `REDIS_URL`.
fn cluster_urls(vars: &Vars) -> Result<Vec<SecretUrl>, ConfigError> {
    let Some(raw) = vars.get(REDIS_CLUSTER_URLS) else {
        return Ok(Vec::new());
    };
    if vars.get(REDIS_URL).is_some() {
        return Err(ConfigError(format!(
            "{} and {} are exclusive: set one",
            REDIS_URL.name, REDIS_CLUSTER_URLS.name
        )));
    }
    let urls: Vec<SecretUrl> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| SecretUrl(u.to_owned()))
        .collect();
    let schemes_ok = urls
        .iter()
        .all(|u| u.0.starts_with("redis://") || u.0.starts_with("rediss://"));
    if urls.is_empty() || !schemes_ok {
        return Err(ConfigError::invalid_secret(
            REDIS_CLUSTER_URLS.name,
            "comma-separated URLs starting with redis:// or rediss://",
        ));
    }
    Ok(urls)
}

impl SessionConfig {
    /// The shared Redis, single or cluster, if any.
    pub fn redis(&self) -> Option<RedisUrls<'_>> {
        match (&self.redis_url, self.redis_cluster_urls.as_slice()) {
            (Some(url), _) => Some(RedisUrls::Single(url)),
            (None, []) => None,
            (None, urls) => Some(RedisUrls::Cluster(urls)),
        }
    }

    pub(super) fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            redis_url: vars.secret_url(REDIS_URL, &["redis://", "rediss://"])?,
            redis_cluster_urls: cluster_urls(vars)?,
            redis_key_prefix: vars.get(REDIS_KEY_PREFIX).unwrap_or_default(),
            ttl: vars.duration(SESSION_TTL)?,
            event_log_limit: vars.positive(EVENT_LOG_LIMIT, MAX_COUNT as usize)?,
            generation_lease: vars.duration(GENERATION_LEASE)?,
            unattended_generation_timeout: vars.duration(UNATTENDED_GENERATION_TIMEOUT)?,
            handoff_queue_timeout: vars.duration(HANDOFF_QUEUE_TIMEOUT)?,
            agent_away_grace: vars.duration(AGENT_AWAY_GRACE)?,
            handoff: vars.choice(HANDOFF, HandoffSwitch::parse)?,
            handoff_when_no_agent_online: vars
                .choice(HANDOFF_WHEN_NO_AGENT_ONLINE, WhenNoAgentOnline::parse)?,
            handoff_offline_message: vars
                .get(HANDOFF_OFFLINE_MESSAGE)
                .unwrap_or_else(|| DEFAULT_OFFLINE_MESSAGE.to_owned()),
            agent_max_conversations: vars.positive(AGENT_MAX_CONVERSATIONS, MAX_HELD)?,
            handoff_assign: vars.choice(HANDOFF_ASSIGN, AssignMode::parse)?,
            handoff_hours: office_hours(vars)?,
            handoff_closed_message: vars
                .get(HANDOFF_CLOSED_MESSAGE)
                .unwrap_or_else(|| DEFAULT_CLOSED_MESSAGE.to_owned()),
            handoff_summary_prompt: vars.boolean(HANDOFF_SUMMARY)?.then(|| {
                vars.get(HANDOFF_SUMMARY_PROMPT)
                    .filter(|p| !p.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_SUMMARY_PROMPT.to_owned())
            }),
        })
    }
}
