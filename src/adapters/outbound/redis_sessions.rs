//! Redis-backed [`SessionStore`], so sessions survive restarts and are shared
//! by every instance behind a load balancer, on one Redis or a Redis Cluster.
//!
//! Layout, all under the configured key prefix `P` (on a cluster, the names
//! carry the hash tags shown in braces, so that every script touches one slot):
//! - `P:session:{id}`: hash of `user_id`, `username`, `created_at`,
//!   `last_activity` (RFC 3339, millisecond precision) and `escalated` (`0`/`1`);
//! - `P:session:{id}:history`: list of the last messages as JSON
//!   `{role, content, timestamp}`, oldest first;
//! - `P:sessions` and `P:escalated` (cluster: `P:{P:counts}:sessions` and
//!   `P:{P:counts}:escalated`, one fixed slot): sorted sets of session ids
//!   scored by expiry (Unix milliseconds), so `counts` never scans the keyspace;
//! - `P:user:{user_id}:sessions`: the same for one user's sessions, so
//!   `list_for_user` reads only that user's, and `create` can evict the least
//!   recently active beyond the per-user bound.
//!
//! A write is ordered steps, each one script or command in one slot: first
//! the session itself (existence checks, trimming and expiry refresh atomic
//! with the change), then the indexes, with the expiry the first step read
//! from Redis's clock (`TIME`), which keeps key TTLs and index scores in
//! agreement whatever the application servers' clocks say. An index is only
//! ever a hint: `list_for_user` skips members whose session is gone or not
//! the user's, and an index entry lapses at the expiry it was given. A crash
//! between steps leaves an index one change behind: a new session not yet
//! counted or listed (until its next write), or, in `create`'s eviction, a
//! session dropped from its user's list but not yet deleted (it expires as
//! usual). Needs Redis 5 or newer.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};

use super::redis_manager::{connect, RedisConn, RedisTarget};
use crate::application::ports::StoreFailure;
use crate::application::ports::{SessionCounts, SessionStore, SessionStoreError};
use crate::domain::time::{iso_millis, parse_iso};
use crate::domain::{
    ChatMessage, Role, Session, SessionId, SessionUser, UserId, Username, HISTORY_LIMIT,
};

/// About a century: far beyond any sensible idle timeout, and small enough that
/// `TIME + ttl` stays exact in Lua's doubles and inside Redis's expiry range.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Helpers shared by the session scripts. Their KEYS are always
/// `[session hash, history list]` and ARGV starts with `[session id, ttl in ms]`.
/// Each returns what the index step needs: `{user id, escalated, expiry}`.
const LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function refresh()
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  local fields = redis.call('HMGET', KEYS[1], 'user_id', 'escalated')
  return { fields[1], fields[2], now_ms() + tonumber(ARGV[2]) }
end

-- Timestamps share one fixed-width UTC format, so string order is time order.
local function bump_activity(at)
  local last = redis.call('HGET', KEYS[1], 'last_activity')
  if not last or at > last then
    redis.call('HSET', KEYS[1], 'last_activity', at)
  end
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}\n{body}"))
}

/// ARGV: id, ttl, user_id, username, created_at, last_activity, escalated,
/// messages...
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'user_id', ARGV[3], 'username', ARGV[4],
  'created_at', ARGV[5], 'last_activity', ARGV[6], 'escalated', ARGV[7])
if #ARGV > 7 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 8))
end
return refresh()
",
    )
});

/// ARGV: id, ttl, message JSON, message timestamp, history limit. Nil if absent.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
bump_activity(ARGV[4])
return refresh()
",
    )
});

/// ARGV: id, ttl, timestamp. Nil if absent.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
bump_activity(ARGV[3])
return refresh()
",
    )
});

/// ARGV: id, ttl. Nil if absent; else what `refresh` returns, plus whether it
/// already was escalated.
static MARK_ESCALATED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local was = redis.call('HGET', KEYS[1], 'escalated') == '1'
redis.call('HSET', KEYS[1], 'escalated', '1')
local out = refresh()
out[4] = was and 1 or 0
return out
",
    )
});

/// KEYS: sessions zset, escalated zset. ARGV: id, expiry ms, escalated.
static INDEX_COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
",
    )
});

/// KEYS: a user's session index. ARGV: id, expiry ms, ttl ms.
static INDEX_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// KEYS: a user's session index. ARGV: the new session's id, sessions per
/// user. Drops expired members, then removes and returns those beyond the
/// bound with the earliest expiry (the least recently active).
static EVICT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now_ms())
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
local evicted = {}
if excess > 0 then
  -- One candidate more than the excess: the new session may tie with the
  -- oldest on the millisecond and sort among them, and it is never evicted.
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess)) do
    if excess > 0 and old ~= ARGV[1] then
      redis.call('ZREM', KEYS[1], old)
      evicted[#evicted + 1] = old
      excess = excess - 1
    end
  end
end
return evicted
",
    )
});

/// KEYS: session hash, history list. The hash (flat) and the history.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return { redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1) }
",
    )
});

/// KEYS: sessions zset, escalated zset. ARGV: id.
static UNCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
",
    )
});

/// KEYS: sessions zset, escalated zset. A key is alive while `TIME <= expiry`,
/// so only strictly earlier scores are dropped.
static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return { redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]) }
",
    )
});

/// KEYS: a user's session index; ARGV: how many. Drops expired members, then
/// returns the live ones, most recently active first.
static LIVE_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
",
    )
});

/// One history entry as stored in the list.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    role: String,
    content: String,
    timestamp: String,
}

fn encode_message(message: &ChatMessage) -> Result<String, SessionStoreError> {
    serde_json::to_string(&StoredMessage {
        role: message.role.as_str().to_owned(),
        content: message.content.clone(),
        timestamp: iso_millis(message.timestamp),
    })
    .map_err(|e| SessionStoreError::from(StoreFailure::new("cannot encode message", e)))
}

/// Why stored data could not be read back as a session.
#[derive(Debug, PartialEq, Eq)]
struct Corrupt(String);

fn decode_message(raw: &[u8]) -> Result<ChatMessage, Corrupt> {
    let stored: StoredMessage = serde_json::from_slice(raw)
        .map_err(|e| Corrupt(format!("history entry is not a message: {e}")))?;
    Ok(ChatMessage {
        role: Role::parse(&stored.role)
            .ok_or_else(|| Corrupt(format!("unknown role {:?}", stored.role)))?,
        timestamp: parse_iso(&stored.timestamp)
            .ok_or_else(|| Corrupt(format!("bad message timestamp {:?}", stored.timestamp)))?,
        content: stored.content,
    })
}

/// Rebuilds a session from its hash and history list; an empty hash means the
/// session does not exist.
fn decode_session(
    id: &SessionId,
    mut fields: HashMap<String, Vec<u8>>,
    history: Vec<Vec<u8>>,
) -> Result<Option<Session>, Corrupt> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut text = |name: &str| -> Result<String, Corrupt> {
        let raw = fields
            .remove(name)
            .ok_or_else(|| Corrupt(format!("field {name} is missing")))?;
        String::from_utf8(raw).map_err(|_| Corrupt(format!("field {name} is not UTF-8")))
    };
    let time = |name: &str, raw: String| {
        parse_iso(&raw).ok_or_else(|| Corrupt(format!("field {name} is not a time: {raw:?}")))
    };

    let user_id = text("user_id")?;
    let username = text("username")?;
    let created_at = time("created_at", text("created_at")?)?;
    let last_activity = time("last_activity", text("last_activity")?)?;
    let escalated = match text("escalated")?.as_str() {
        "0" => false,
        "1" => true,
        other => return Err(Corrupt(format!("field escalated is {other:?}"))),
    };

    Ok(Some(Session {
        id: id.clone(),
        user: SessionUser {
            id: UserId::parse(&user_id)
                .map_err(|_| Corrupt(format!("field user_id is invalid: {user_id:?}")))?,
            username: Username::parse(&username)
                .map_err(|_| Corrupt(format!("field username is invalid: {username:?}")))?,
        },
        history: history
            .iter()
            .map(|raw| decode_message(raw))
            .collect::<Result<_, _>>()?,
        created_at,
        last_activity,
        escalated,
    }))
}

fn unavailable(e: RedisError) -> SessionStoreError {
    SessionStoreError::from(StoreFailure::new("redis command failed", e))
}

/// What a session script answers for the index step: the session's user,
/// whether it is escalated, and when it expires (Redis's clock, ms).
struct Indexed {
    user: Option<String>,
    escalated: bool,
    expiry: i64,
}

impl Indexed {
    fn from_reply(reply: &[redis::Value]) -> Result<Self, SessionStoreError> {
        let text = |i: usize| -> Option<String> {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<Option<String>>(v).ok())
                .flatten()
        };
        let expiry = reply
            .get(2)
            .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
            .ok_or_else(|| {
                SessionStoreError::from(StoreFailure::bare("session script gave no expiry"))
            })?;
        Ok(Self {
            user: text(0),
            escalated: text(1).as_deref() == Some("1"),
            expiry,
        })
    }
}

/// A [`SessionStore`] in Redis; see the module docs for the key layout.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: RedisConn,
    ttl_ms: u64,
    prefix: String,
    /// Live sessions one user may have; 0 for no bound.
    max_per_user: u32,
}

impl RedisSessionStore {
    /// Connects and checks that Redis answers, so a misconfigured URL fails at
    /// start-up rather than on the first chat message. Keys are namespaced by
    /// `key_prefix`; sessions expire after `ttl` without activity (rounded to
    /// whole milliseconds, at least one).
    ///
    /// # Errors
    /// [`SessionStoreError::Unavailable`] if the URL is invalid or Redis does
    /// not answer a PING within 3 seconds.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        ttl: Duration,
        key_prefix: &str,
    ) -> Result<Self, SessionStoreError> {
        let conn = connect(&target.into()).await?;
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TTL_MS);
        Ok(Self {
            conn,
            ttl_ms,
            prefix: key_prefix.to_owned(),
            max_per_user: 0,
        })
    }

    /// This store keeping at most `max` live sessions per user (`None`: no
    /// bound): creating one more evicts that user's least recently active.
    pub fn with_max_per_user(mut self, max: Option<u32>) -> Self {
        self.max_per_user = max.unwrap_or(0);
        self
    }

    /// `name` as a hash tag on a cluster (so keys sharing it share a slot),
    /// as it always was on a single Redis.
    fn tagged(&self, name: &str) -> String {
        if self.conn.is_cluster() {
            format!("{{{name}}}")
        } else {
            name.to_owned()
        }
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.prefix, self.tagged(id.as_str()))
    }

    fn history_key(&self, id: &SessionId) -> String {
        format!("{}:history", self.session_key(id))
    }

    fn sessions_key(&self) -> String {
        self.counts_key("sessions")
    }

    fn escalated_key(&self) -> String {
        self.counts_key("escalated")
    }

    /// The two count sets share one fixed slot on a cluster.
    fn counts_key(&self, what: &str) -> String {
        if self.conn.is_cluster() {
            format!("{0}:{{{0}:counts}}:{what}", self.prefix)
        } else {
            format!("{}:{what}", self.prefix)
        }
    }

    fn user_index(&self, user: &str) -> String {
        format!("{}:user:{}:sessions", self.prefix, self.tagged(user))
    }

    /// Runs a session script (step one of a write); `None` when the session
    /// does not exist.
    async fn run_session(
        &self,
        script: &Script,
        id: &SessionId,
        extra_args: &[String],
    ) -> Result<Option<Vec<redis::Value>>, SessionStoreError> {
        let mut invocation = script.key(self.session_key(id));
        invocation
            .key(self.history_key(id))
            .arg(id.as_str())
            .arg(self.ttl_ms);
        for arg in extra_args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Step two of a write: the count sets and the user's index, at once.
    async fn index(&self, id: &SessionId, indexed: &Indexed) -> Result<(), SessionStoreError> {
        let counts = async {
            INDEX_COUNTS
                .key(self.sessions_key())
                .key(self.escalated_key())
                .arg(id.as_str())
                .arg(indexed.expiry)
                .arg(if indexed.escalated { "1" } else { "0" })
                .invoke_async::<i64>(&mut self.conn.clone())
                .await
        };
        let user = async {
            match &indexed.user {
                Some(user) => {
                    INDEX_USER
                        .key(self.user_index(user))
                        .arg(id.as_str())
                        .arg(indexed.expiry)
                        .arg(self.ttl_ms)
                        .invoke_async::<i64>(&mut self.conn.clone())
                        .await
                }
                None => Ok(0),
            }
        };
        let (counts, user) = tokio::join!(counts, user);
        counts.and(user).map(drop).map_err(unavailable)
    }

    /// A write to an existing session: the session, then its indexes.
    async fn write_existing(
        &self,
        script: &Script,
        id: &SessionId,
        extra_args: &[String],
    ) -> Result<Vec<redis::Value>, SessionStoreError> {
        let reply = self
            .run_session(script, id, extra_args)
            .await?
            .ok_or(SessionStoreError::NotFound)?;
        self.index(id, &Indexed::from_reply(&reply)?).await?;
        Ok(reply)
    }

    /// Beyond the per-user bound, the user's least recently active sessions
    /// go: out of the index first, then deleted and uncounted.
    async fn evict(&self, id: &SessionId, user: &UserId) -> Result<(), SessionStoreError> {
        let evicted: Vec<String> = EVICT
            .key(self.user_index(user.as_str()))
            .arg(id.as_str())
            .arg(self.max_per_user)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        for raw in evicted {
            // Members are ids this store wrote; anything else is skipped.
            if let Ok(old) = SessionId::parse(&raw) {
                self.remove(&old).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, session: &Session) -> Result<(), SessionStoreError> {
        let excess = session.history.len().saturating_sub(HISTORY_LIMIT);
        let mut args = vec![
            session.user.id.as_str().to_owned(),
            session.user.username.as_str().to_owned(),
            iso_millis(session.created_at),
            iso_millis(session.last_activity),
            if session.escalated { "1" } else { "0" }.to_owned(),
        ];
        for message in &session.history[excess..] {
            args.push(encode_message(message)?);
        }
        self.write_existing(&CREATE, &session.id, &args).await?;
        if self.max_per_user > 0 {
            self.evict(&session.id, &session.user.id).await?;
        }
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionStoreError> {
        let key = self.session_key(id);
        // One script over keys of one slot: read together, and retried by a
        // cluster when redirected (an aborted MULTI would not be).
        let (fields, history): (HashMap<String, Vec<u8>>, Vec<Vec<u8>>) = READ
            .key(&key)
            .key(self.history_key(id))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        decode_session(id, fields, history).map_err(|Corrupt(problem)| {
            SessionStoreError::from(StoreFailure::bare(format!(
                "corrupt session {key} in Redis: {problem}"
            )))
        })
    }

    async fn append(&self, id: &SessionId, message: ChatMessage) -> Result<(), SessionStoreError> {
        let args = [
            encode_message(&message)?,
            iso_millis(message.timestamp),
            HISTORY_LIMIT.to_string(),
        ];
        self.write_existing(&APPEND, id, &args).await.map(drop)
    }

    async fn mark_escalated(&self, id: &SessionId) -> Result<bool, SessionStoreError> {
        let reply = self.write_existing(&MARK_ESCALATED, id, &[]).await?;
        let was = reply
            .get(3)
            .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok());
        match was {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            other => Err(SessionStoreError::from(StoreFailure::bare(format!(
                "unexpected script reply {other:?}"
            )))),
        }
    }

    async fn touch(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), SessionStoreError> {
        self.write_existing(&TOUCH, id, &[iso_millis(at)])
            .await
            .map(drop)
    }

    async fn remove(&self, id: &SessionId) -> Result<(), SessionStoreError> {
        // The session first (its slot), then the counts (theirs).
        redis::cmd("DEL")
            .arg(self.session_key(id))
            .arg(self.history_key(id))
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        UNCOUNT
            .key(self.sessions_key())
            .key(self.escalated_key())
            .arg(id.as_str())
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn list_for_user(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<Session>, SessionStoreError> {
        let index = self.user_index(user.as_str());
        // Newest expiry first: the most recently active sessions.
        let ids: Vec<String> = LIVE_MEMBERS
            .key(&index)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut sessions = Vec::with_capacity(ids.len());
        for raw in ids {
            let Ok(id) = SessionId::parse(&raw) else {
                continue;
            };
            // Gone since the index was read, or someone else's: skip it.
            if let Some(session) = self.get(&id).await?.filter(|s| s.user.id == *user) {
                sessions.push(session);
            }
        }
        // The index orders by expiry at Redis's millisecond; the sessions'
        // own activity times order them exactly, as the memory store does.
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_activity));
        Ok(sessions)
    }

    async fn counts(&self) -> Result<SessionCounts, SessionStoreError> {
        let (active, escalated): (u64, u64) = COUNTS
            .key(self.sessions_key())
            .key(self.escalated_key())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(SessionCounts { active, escalated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::ErrorChain;

    fn id() -> SessionId {
        SessionId::parse("sess_1").unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn good_fields() -> HashMap<String, Vec<u8>> {
        fields(&[
            ("user_id", "u1"),
            ("username", "alice"),
            ("created_at", "2024-05-01T10:00:00.123Z"),
            ("last_activity", "2024-05-01T10:05:00.456Z"),
            ("escalated", "1"),
        ])
    }

    #[test]
    fn messages_round_trip_at_millisecond_precision() {
        let at = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let message = ChatMessage {
            role: Role::Assistant,
            content: "héllo \"world\"\n".into(),
            timestamp: at,
        };
        let encoded = encode_message(&message).unwrap();
        assert!(encoded.contains(r#""timestamp":"2024-05-01T10:00:00.123Z""#));
        let decoded = decode_message(encoded.as_bytes()).unwrap();
        assert_eq!(decoded.role, Role::Assistant);
        assert_eq!(decoded.content, message.content);
        assert_eq!(decoded.timestamp.timestamp_millis(), at.timestamp_millis());
    }

    #[test]
    fn decodes_a_stored_session() {
        let history = vec![
            br#"{"role":"user","content":"hi","timestamp":"2024-05-01T10:01:00.000Z"}"#.to_vec(),
        ];
        let session = decode_session(&id(), good_fields(), history)
            .unwrap()
            .unwrap();
        assert_eq!(session.user.username.as_str(), "alice");
        assert!(session.escalated);
        assert_eq!(session.history.len(), 1);
        assert_eq!(session.history[0].role, Role::User);
        assert_eq!(iso_millis(session.created_at), "2024-05-01T10:00:00.123Z");
    }

    #[test]
    fn an_empty_hash_is_an_absent_session() {
        assert_eq!(decode_session(&id(), HashMap::new(), vec![]), Ok(None));
    }

    #[test]
    fn corrupt_data_is_reported_not_panicked_on() {
        let broken = |name: &str, value: Option<&[u8]>| {
            let mut f = good_fields();
            match value {
                Some(v) => f.insert(name.to_owned(), v.to_vec()),
                None => f.remove(name),
            };
            decode_session(&id(), f, vec![])
        };
        assert!(broken("user_id", None).is_err());
        assert!(broken("user_id", Some(b"../x")).is_err());
        assert!(broken("username", Some(b"a")).is_err());
        assert!(broken("created_at", Some(b"yesterday")).is_err());
        assert!(broken("last_activity", Some(&[0xff, 0xfe])).is_err());
        assert!(broken("escalated", Some(b"yes")).is_err());

        for entry in [
            &b"not json"[..],
            br#"{"role":"system","content":"x","timestamp":"2024-05-01T10:00:00.000Z"}"#,
            br#"{"role":"user","content":"x","timestamp":"noon"}"#,
            br#"{"role":"user","timestamp":"2024-05-01T10:00:00.000Z"}"#,
        ] {
            let result = decode_session(&id(), good_fields(), vec![entry.to_vec()]);
            assert!(
                result.is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(entry)
            );
        }
    }

    #[test]
    fn fixed_width_timestamps_sort_as_strings() {
        // The Lua scripts compare `last_activity` as strings.
        let earlier = iso_millis(DateTime::from_timestamp_millis(999).unwrap());
        let later = iso_millis(DateTime::from_timestamp_millis(1_700_000_000_000).unwrap());
        assert_eq!(earlier.len(), later.len());
        assert!(earlier < later);
    }

    #[tokio::test]
    async fn connect_fails_fast_and_clearly_without_redis() {
        // Port 1 on localhost refuses connections on any sane machine.
        let started = std::time::Instant::now();
        let err = RedisSessionStore::connect("redis://127.0.0.1:1", Duration::from_secs(60), "t")
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(started.elapsed() < Duration::from_secs(5));
        match err {
            e @ SessionStoreError::Unavailable { .. } => {
                let chain = ErrorChain(&e).to_string();
                assert!(chain.contains("PING"), "{chain}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(matches!(
            RedisSessionStore::connect("not a url", Duration::from_secs(60), "t").await,
            Err(SessionStoreError::Unavailable { .. })
        ));
    }
}
