//! Redis-backed [`SessionStore`], so sessions survive restarts and are shared
//! by every instance behind a load balancer.
//!
//! Layout, all under the configured key prefix `P`:
//! - `P:session:{id}`: hash of `user_id`, `username`, `created_at`,
//!   `last_activity` (RFC 3339, millisecond precision) and `escalated` (`0`/`1`);
//! - `P:session:{id}:history`: list of the last messages as JSON
//!   `{role, content, timestamp, message_id?}`, oldest first;
//! - `P:sessions` and `P:escalated`: sorted sets of session ids scored by expiry
//!   (Unix milliseconds), so `counts` never has to scan the keyspace;
//! - `P:user:{user_id}:sessions`: the same for one user's sessions, so
//!   `list_for_user` reads only that user's, and `create` can evict the least
//!   recently active beyond the per-user bound (the scripts derive this key
//!   and the evicted sessions' keys from the session's `user_id`, which is one
//!   more reason this is not for Cluster).
//!
//! Every write is one Lua script, so existence checks, trimming and expiry
//! refreshes are atomic with the change itself. Expiry uses Redis's own clock
//! (`PEXPIRE` and `TIME`), which keeps the key TTLs and the sorted-set scores in
//! agreement whatever the application servers' clocks say. Needs Redis 5 or
//! newer (scripts that write after `TIME`); not for Redis Cluster, since a
//! session's keys and the sorted sets live in different slots.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};

use super::redis_manager::{manager_config, CONNECT_TIMEOUT};
use crate::application::ports::StoreFailure;
use crate::application::ports::{SessionCounts, SessionStore, SessionStoreError};
use crate::domain::time::{iso_millis, parse_iso};
use crate::domain::{
    ChatMessage, MessageId, Role, Session, SessionId, SessionUser, UserId, Username, HISTORY_LIMIT,
};

/// About a century: far beyond any sensible idle timeout, and small enough that
/// `TIME + ttl` stays exact in Lua's doubles and inside Redis's expiry range.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Helpers shared by the write scripts. Their KEYS are always
/// `[session hash, history list, sessions zset, escalated zset, user index
/// prefix]` and ARGV starts with `[session id, ttl in ms]`.
const LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function refresh(escalated)
  local expiry = now_ms() + tonumber(ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], expiry, ARGV[1])
  local user = redis.call('HGET', KEYS[1], 'user_id')
  if user then
    local index = KEYS[5] .. user .. ':sessions'
    redis.call('ZADD', index, expiry, ARGV[1])
    redis.call('PEXPIRE', index, ARGV[2])
  end
  if escalated then
    redis.call('ZADD', KEYS[4], expiry, ARGV[1])
  else
    redis.call('ZREM', KEYS[4], ARGV[1])
  end
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
/// sessions per user (0: no bound), session key prefix, messages...
/// Beyond the bound, the user's sessions with the earliest expiry (the least
/// recently active) are deleted.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'user_id', ARGV[3], 'username', ARGV[4],
  'created_at', ARGV[5], 'last_activity', ARGV[6], 'escalated', ARGV[7])
if #ARGV > 9 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 10))
end
refresh(ARGV[7] == '1')
local max = tonumber(ARGV[8])
if max > 0 then
  local index = KEYS[5] .. ARGV[3] .. ':sessions'
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now_ms())
  local n = redis.call('ZCARD', index)
  -- One candidate more than the excess: the new session may tie with the
  -- oldest on the millisecond and sort among them, and it is never evicted.
  local excess = n - max
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', index, 0, excess)) do
      if excess > 0 and old ~= ARGV[1] then
        redis.call('DEL', ARGV[9] .. old, ARGV[9] .. old .. ':history')
        redis.call('ZREM', KEYS[3], old)
        redis.call('ZREM', KEYS[4], old)
        redis.call('ZREM', index, old)
        excess = excess - 1
      end
    end
  end
end
return 1
",
    )
});

/// ARGV: id, ttl, message JSON, message timestamp, history limit. Returns 0 if absent.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
bump_activity(ARGV[4])
refresh(redis.call('HGET', KEYS[1], 'escalated') == '1')
return 1
",
    )
});

/// ARGV: id, ttl, message id. Keeps the history up to the newest entry with
/// that `message_id`. Returns 0 if the session is absent, 1 when it forgot,
/// 2 when no entry has the id.
static FORGET_AFTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #entries, 1, -1 do
  local ok, entry = pcall(cjson.decode, entries[i])
  if ok and type(entry) == 'table' and entry['message_id'] == ARGV[3] then
    redis.call('LTRIM', KEYS[2], 0, i - 1)
    refresh(redis.call('HGET', KEYS[1], 'escalated') == '1')
    return 1
  end
end
return 2
",
    )
});

/// ARGV: id, ttl, timestamp. Returns 0 if absent.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
bump_activity(ARGV[3])
refresh(redis.call('HGET', KEYS[1], 'escalated') == '1')
return 1
",
    )
});

/// ARGV: id, ttl. Returns 0 if absent, 1 if newly escalated, 2 if it already was.
static MARK_ESCALATED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local was = redis.call('HGET', KEYS[1], 'escalated') == '1'
redis.call('HSET', KEYS[1], 'escalated', '1')
refresh(true)
if was then return 2 end
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
    /// Absent from entries stored before ids were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

fn encode_message(message: &ChatMessage) -> Result<String, SessionStoreError> {
    serde_json::to_string(&StoredMessage {
        role: message.role.as_str().to_owned(),
        content: message.content.clone(),
        timestamp: iso_millis(message.timestamp),
        message_id: message.message_id.as_ref().map(|m| m.as_str().to_owned()),
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
        message_id: stored
            .message_id
            .map(|m| MessageId::parse(&m).map_err(|_| Corrupt(format!("bad message id {m:?}"))))
            .transpose()?,
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

/// A [`SessionStore`] in Redis; see the module docs for the key layout.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: ConnectionManager,
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
        url: &str,
        ttl: Duration,
        key_prefix: &str,
    ) -> Result<Self, SessionStoreError> {
        // The URL may carry a password, so it is deliberately left out of errors.
        let client =
            redis::Client::open(url).map_err(|e| StoreFailure::new("invalid Redis URL", e))?;
        let config = manager_config();
        let attempt = async {
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(SessionStoreError::from(StoreFailure::new(
                    "Redis did not answer PING",
                    e,
                )))
            }
            Err(elapsed) => {
                return Err(SessionStoreError::from(StoreFailure::new(
                    format!(
                        "Redis did not answer PING within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    elapsed,
                )))
            }
        };
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

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.prefix, id)
    }

    fn history_key(&self, id: &SessionId) -> String {
        format!("{}:session:{}:history", self.prefix, id)
    }

    fn sessions_key(&self) -> String {
        format!("{}:sessions", self.prefix)
    }

    fn escalated_key(&self) -> String {
        format!("{}:escalated", self.prefix)
    }

    fn user_index_prefix(&self) -> String {
        format!("{}:user:", self.prefix)
    }

    /// Runs one of the write scripts with the standard KEYS and leading ARGV.
    async fn run_write(
        &self,
        script: &Script,
        id: &SessionId,
        extra_args: &[String],
    ) -> Result<i64, SessionStoreError> {
        let mut invocation = script.key(self.session_key(id));
        invocation
            .key(self.history_key(id))
            .key(self.sessions_key())
            .key(self.escalated_key())
            .key(self.user_index_prefix())
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

    /// For scripts that answer 0 when the session is absent and 1 otherwise.
    async fn run_existing(
        &self,
        script: &Script,
        id: &SessionId,
        extra_args: &[String],
    ) -> Result<(), SessionStoreError> {
        match self.run_write(script, id, extra_args).await? {
            0 => Err(SessionStoreError::NotFound),
            1 => Ok(()),
            other => Err(unexpected_reply(other)),
        }
    }
}

fn unexpected_reply(reply: i64) -> SessionStoreError {
    SessionStoreError::from(StoreFailure::bare(format!(
        "unexpected script reply {reply}"
    )))
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
            self.max_per_user.to_string(),
            format!("{}:session:", self.prefix),
        ];
        for message in &session.history[excess..] {
            args.push(encode_message(message)?);
        }
        match self.run_write(&CREATE, &session.id, &args).await? {
            1 => Ok(()),
            other => Err(unexpected_reply(other)),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionStoreError> {
        let key = self.session_key(id);
        let (fields, history): (HashMap<String, Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
            .atomic()
            .hgetall(&key)
            .lrange(self.history_key(id), 0, -1)
            .query_async(&mut self.conn.clone())
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
        self.run_existing(&APPEND, id, &args).await
    }

    async fn forget_after(
        &self,
        id: &SessionId,
        message: &MessageId,
    ) -> Result<bool, SessionStoreError> {
        match self
            .run_write(&FORGET_AFTER, id, &[message.as_str().to_owned()])
            .await?
        {
            0 => Err(SessionStoreError::NotFound),
            1 => Ok(true),
            2 => Ok(false),
            other => Err(unexpected_reply(other)),
        }
    }

    async fn mark_escalated(&self, id: &SessionId) -> Result<bool, SessionStoreError> {
        match self.run_write(&MARK_ESCALATED, id, &[]).await? {
            0 => Err(SessionStoreError::NotFound),
            1 => Ok(true),
            2 => Ok(false),
            other => Err(unexpected_reply(other)),
        }
    }

    async fn touch(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), SessionStoreError> {
        self.run_existing(&TOUCH, id, &[iso_millis(at)]).await
    }

    async fn remove(&self, id: &SessionId) -> Result<(), SessionStoreError> {
        redis::pipe()
            .atomic()
            .del(&[self.session_key(id), self.history_key(id)])
            .zrem(self.sessions_key(), id.as_str())
            .zrem(self.escalated_key(), id.as_str())
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn list_for_user(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<Session>, SessionStoreError> {
        let index = format!("{}{}:sessions", self.user_index_prefix(), user);
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
            message_id: Some(MessageId::parse("msg_a").unwrap()),
        };
        let encoded = encode_message(&message).unwrap();
        assert!(encoded.contains(r#""timestamp":"2024-05-01T10:00:00.123Z""#));
        let decoded = decode_message(encoded.as_bytes()).unwrap();
        assert_eq!(decoded.role, Role::Assistant);
        assert_eq!(decoded.message_id, message.message_id);
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
        assert_eq!(
            session.history[0].message_id, None,
            "stored before ids were kept"
        );
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
