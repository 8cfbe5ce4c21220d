//! Redis-backed conversation ports ([`EventLog`], [`LiveDelivery`],
//! [`GenerationRegistry`]), so every instance behind a load balancer sees one
//! log per session, every tab gets every event, and a session runs at most one
//! generation wherever its sockets land.
//!
//! Layout, all under the configured key prefix `P` and versioned (`v1`) so a
//! later change of encoding can live next to this one. Every key and channel of
//! one session carries the session id as its Redis Cluster hash tag:
//! - `P:v1:{S}:log`: list of the session's retained events, oldest first, each
//!   a private JSON record (see `codec`); an event's seq is its position
//!   counted back from the head, so seq and entry can never disagree;
//! - `P:v1:{S}:head`: the session's latest seq (an integer string);
//! - `P:v1:{S}:cmids`: list of the last [`CLIENT_MESSAGE_IDS_KEPT`] accepted
//!   client message ids, newest first, as `client-id seq message-id`;
//! - `P:v1:{S}:live`: pub/sub channel of the session's events, one message
//!   per published batch: the publishing instance's id, a space, and the
//!   batch as a JSON array, published only while another instance watches
//!   the session (the writer hands the events to its own subscribers when it
//!   writes them, and skips its own messages if they come back);
//! - `P:v1:{S}:watchers`: hash of instance id to `count expiry-ms`: how many
//!   live subscriptions each instance holds, refreshed while it holds them,
//!   and which instances the append script publishes for;
//! - `P:v1:{S}:lease`: the id of the session's running generation;
//! - `P:v1:{S}:stop`: the generation a stop was last requested for, so an owner
//!   whose pub/sub link was down can still find it;
//! - `P:v1:{S}:ended` (cluster only): the generation that last finished or was
//!   reaped, so a crash between the registry's steps reports nothing twice;
//! - `P:v1:leases` (on a Redis Cluster `P:v1:{P:leases}`, one fixed slot):
//!   sorted set of `S message-id` scored by lease expiry, which is what the
//!   reaper scans;
//! - `P:v1:stops`: pub/sub channel of stop requests, `S message-id` (a classic
//!   channel: on a cluster Redis forwards it to every node; stops are rare).
//!
//! Every write that must be atomic is one Lua script over declared keys, with
//! times taken from Redis's own clock (`TIME`), so instances' clocks never have
//! to agree. On a Redis Cluster every script touches one slot: the event log
//! and live delivery only ever touch one session's keys (its live channel is
//! sharded: SPUBLISH/SSUBSCRIBE), and the registry changes a session's lease
//! and the lease set in ordered steps (see `registry`). Needs Redis 5 or newer
//! (7 for a cluster: sharded pub/sub).

mod codec;
mod event_log;
mod group_commit;
mod live;
mod pubsub;
mod refill;
mod registry;
mod steps;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use event_log::RedisEventLog;
pub use live::{RedisBackplane, RedisLiveDelivery};
pub use registry::RedisGenerationRegistry;

use super::redis_manager::{connect, RedisConn, RedisTarget};
use crate::application::ports::ConversationStoreError;
use crate::application::ports::StoreFailure;
#[cfg(doc)]
use crate::application::ports::{
    EventLog, GenerationRegistry, LiveDelivery, CLIENT_MESSAGE_IDS_KEPT,
};
use crate::domain::SessionId;

/// About a century: beyond any sensible TTL or lease, and small enough that
/// `TIME + ttl` stays exact in Lua's doubles and inside Redis's expiry range.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Whole milliseconds of `d`, at least one and at most [`MAX_TTL_MS`].
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// A mutex poisoned by a panic elsewhere still guards consistent data here
/// (every critical section is a few infallible map operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `P:v1:{S}:what`, see [`Keys::session_name`].
struct SessionName<'a> {
    base: &'a str,
    session: &'a SessionId,
    what: &'a str,
}

impl std::fmt::Display for SessionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{{}}}:{}", self.base, self.session, self.what)
    }
}

/// The names of every key and channel; see the module docs.
#[derive(Debug, Clone)]
struct Keys {
    /// `P:v1:`, the start of every name.
    base: Arc<str>,
    /// `P`, for the lease set's fixed hash tag on a cluster.
    prefix: Arc<str>,
    cluster: bool,
}

impl Keys {
    /// Braces in the prefix would make Redis Cluster hash on the prefix instead
    /// of the session, so they are refused.
    fn new(prefix: &str, cluster: bool) -> Result<Self, ConversationStoreError> {
        if prefix.contains(['{', '}']) {
            return Err(ConversationStoreError::from(StoreFailure::bare(format!(
                "Redis key prefix {prefix:?} must not contain braces"
            ))));
        }
        Ok(Self {
            base: format!("{prefix}:v1:").into(),
            prefix: prefix.into(),
            cluster,
        })
    }

    fn session(&self, session: &SessionId, what: &str) -> String {
        self.session_name(session, what).to_string()
    }

    /// A session's key or channel name, written where it is needed (into a
    /// command's buffer) rather than allocated first.
    fn session_name<'a>(
        &'a self,
        session: &'a SessionId,
        what: &'a str,
    ) -> impl std::fmt::Display + 'a {
        SessionName {
            base: &self.base,
            session,
            what,
        }
    }

    fn log(&self, s: &SessionId) -> String {
        self.session(s, "log")
    }

    fn head(&self, s: &SessionId) -> String {
        self.session(s, "head")
    }

    fn client_ids(&self, s: &SessionId) -> String {
        self.session(s, "cmids")
    }

    fn live(&self, s: &SessionId) -> String {
        self.session(s, "live")
    }

    fn watchers(&self, s: &SessionId) -> String {
        self.session(s, "watchers")
    }

    fn lease(&self, s: &SessionId) -> String {
        self.session(s, "lease")
    }

    fn stop(&self, s: &SessionId) -> String {
        self.session(s, "stop")
    }

    /// The last generation that finished or was reaped (cluster only).
    fn ended(&self, s: &SessionId) -> String {
        self.session(s, "ended")
    }

    /// On a cluster the lease set lives under one fixed hash tag, and only
    /// scripts that touch nothing else use it; a single Redis keeps the name
    /// it always had.
    fn leases(&self) -> String {
        if self.cluster {
            format!("{}{{{}:leases}}", self.base, self.prefix)
        } else {
            format!("{}leases", self.base)
        }
    }

    fn stops_channel(&self) -> String {
        format!("{}stops", self.base)
    }

    /// How live events are published: sharded on a cluster (delivered by
    /// the session's own node only), classic on a single Redis.
    fn publish_command(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The session whose live channel this is, if it is one of ours.
    fn live_session(&self, channel: &str) -> Option<SessionId> {
        let tagged = channel.strip_prefix(&*self.base)?.strip_prefix('{')?;
        SessionId::parse(tagged.strip_suffix("}:live")?).ok()
    }
}

/// Opens a command connection and checks that Redis answers a PING.
async fn connect_conn(target: &RedisTarget) -> Result<RedisConn, ConversationStoreError> {
    Ok(connect(target).await?)
}

/// The three conversation adapters of one instance, sharing one command
/// connection and one pub/sub connection (with the background task that reads
/// it). The task ends once both `live` and `registry` are dropped.
pub struct RedisConversations {
    pub log: RedisEventLog,
    pub live: RedisLiveDelivery,
    /// The log and live delivery written by one script per batch.
    pub backplane: RedisBackplane,
    pub registry: RedisGenerationRegistry,
}

impl RedisConversations {
    /// Connects and checks that Redis answers, so a misconfigured URL fails at
    /// start-up. Keys are namespaced by `key_prefix`; the log keeps at least
    /// `limit` (at least 1) and at most `2 × limit` events per session and
    /// forgets a session idle for `ttl` (or up to a tenth longer, at most a
    /// minute: see the append script). Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`ConversationStoreError`] if the URL is invalid, the prefix holds braces,
    /// or Redis does not answer within 3 seconds (PING, then the pub/sub link).
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Self, ConversationStoreError> {
        let target = target.into();
        let keys = Keys::new(key_prefix, matches!(target, RedisTarget::Cluster(_)))?;
        let conn = connect_conn(&target).await?;
        let hub = Arc::new(pubsub::Hub::start(target, conn.clone(), keys.clone()).await?);
        let log = RedisEventLog::new(conn.clone(), keys.clone(), limit, ttl);
        Ok(Self {
            backplane: RedisBackplane::new(log.clone(), hub.clone(), !keys.cluster),
            log,
            live: RedisLiveDelivery::new(conn.clone(), keys.clone(), hub.clone()),
            registry: RedisGenerationRegistry::new(conn, keys, hub),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::ErrorChain;

    #[test]
    fn every_key_of_a_session_shares_its_hash_tag() {
        let keys = Keys::new("chat", false).unwrap();
        let s = SessionId::parse("sess_abc").unwrap();
        for key in [
            keys.log(&s),
            keys.head(&s),
            keys.client_ids(&s),
            keys.live(&s),
            keys.watchers(&s),
            keys.lease(&s),
            keys.stop(&s),
            keys.ended(&s),
        ] {
            assert!(key.starts_with("chat:v1:{sess_abc}:"), "{key}");
        }
        assert_eq!(keys.leases(), "chat:v1:leases");
        assert_eq!(keys.stops_channel(), "chat:v1:stops");
        let cluster = Keys::new("chat", true).unwrap();
        assert_eq!(cluster.leases(), "chat:v1:{chat:leases}");
        assert_eq!(cluster.log(&s), keys.log(&s));
    }

    #[test]
    fn live_channels_name_their_session() {
        let keys = Keys::new("chat", false).unwrap();
        let s = SessionId::parse("sess_abc").unwrap();
        assert_eq!(keys.live_session(&keys.live(&s)), Some(s.clone()));
        assert_eq!(keys.live_session(&keys.stops_channel()), None);
        assert_eq!(keys.live_session(&keys.log(&s)), None);
        assert_eq!(keys.live_session("other:v1:{sess_abc}:live"), None);
        assert_eq!(keys.live_session("chat:v1:{../x}:live"), None);
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(Keys::new("a{b}", false).is_err());
        assert!(Keys::new("chatbot", true).is_ok());
    }

    #[tokio::test]
    async fn connect_fails_fast_and_clearly_without_redis() {
        // Port 1 on localhost refuses connections on any sane machine.
        let started = std::time::Instant::now();
        let err =
            RedisConversations::connect("redis://127.0.0.1:1", "t", 50, Duration::from_secs(60))
                .await
                .err()
                .expect("nothing listens on port 1");
        assert!(started.elapsed() < Duration::from_secs(5));
        let chain = ErrorChain(&err).to_string();
        assert!(chain.contains("PING"), "{chain}");
        assert!(err.0.source.is_some(), "the driver's error is kept");
        let err = RedisEventLog::connect("redis://127.0.0.1:1", "t", 50, Duration::from_secs(60))
            .await
            .err()
            .expect("nothing listens on port 1");
        let chain = ErrorChain(&err).to_string();
        assert!(chain.contains("PING"), "{chain}");
        for (url, prefix) in [("not a url", "t"), ("redis://127.0.0.1:1", "a{b}")] {
            assert!(
                RedisConversations::connect(url, prefix, 50, Duration::from_secs(60))
                    .await
                    .is_err(),
                "{url} {prefix}"
            );
        }
    }

    #[test]
    fn durations_become_bounded_millis() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS);
    }
}
