//! Handoff state and agent presence in Redis, shared by every instance: the
//! mode of a conversation changes by one compare-and-set script, so exactly
//! one of two concurrent claims wins wherever they arrive.
//!
//! Layout under the key prefix `P` (on a Redis Cluster the names carry the
//! hash tags in braces, so every script and command touches one slot; a
//! single Redis keeps the names without them):
//! - `P:handoff:{session}`: a hash `v` (version), `data` (the record as JSON),
//!   `agent` (the holding agent's id, or empty), `summary` (the AI's summary
//!   for that agent, dropped when another holds it or it leaves them); it
//!   expires with the session;
//! - `P:handoff:queue` (cluster: `P:{P:handoff}:queue`): queued sessions scored
//!   by when they began waiting;
//! - `P:handoff:active` (cluster: `P:{P:handoff}:active`, the queue's slot):
//!   every queued or assigned session (for the timers);
//! - `P:handoff:agent:{agent}`: the sessions an agent holds;
//! - `P:handoff:agent:{agent}:taking`: who takes a conversation for the agent
//!   now (the lease that makes a capacity check and its claim one step),
//!   expiring with the lease;
//! - `P:handoff:told` (cluster: `P:{P:handoff}:told`, the queue's slot): the
//!   position each queued customer was last told, dropped as it leaves;
//! - `P:handoff:waits` (cluster: `P:{P:handoff}:waits`): recent waits per
//!   place in line (milliseconds), newest first, capped;
//! - `P:handoff:assigner` (cluster: `P:{P:handoff}:assigner`): who runs
//!   auto-assignment now, expiring with its lease;
//! - channel `P:handoff:changes`: each change, for every instance's agent
//!   sockets (a classic channel, which a cluster forwards to every node);
//! - `P:agents:{agent}:sockets`: the agent's open sockets scored by lease end;
//! - `P:agents:online` (cluster: `P:{P:agents}:online`): agents scored by their
//!   latest lease end (lowered to "now" when the last socket closes), which is
//!   also when they were last seen;
//! - `P:agents:away` and `P:agents:assigned` (cluster: in the online set's
//!   slot): the agents who said they are away, and when each last took a
//!   conversation (milliseconds).
//!
//! The record is the truth; the sets are indexes of it. A change is ordered
//! steps: 1. the compare-and-set of the record (one script: exactly one of
//! two concurrent claims wins), 2. the queue and active sets and the agents'
//! sets, brought in line with the new record, 3. the announcement. Readers
//! take an index entry only when its record agrees (a queued entry whose
//! record is assigned is skipped, one whose record expired is dropped), so
//! concurrent changes finishing their index steps out of order cost nothing.
//! A crash after step 1 leaves the indexes one change behind until the
//! session's next change (a queued conversation not listed, or a stale entry
//! that readers skip), and the change unannounced.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::memory_handoff::CHANGES_BUFFER;
use super::redis_manager::{connect, Incoming, RedisConn, RedisTarget, Subscriber};
use crate::application::ports::StoreFailure;
use crate::application::ports::{
    AgentOnline, AgentPresence, AgentSeen, ConversationStoreError, HandoffChange, HandoffStore,
    Swap,
};
use crate::domain::handoff::{AgentRef, Handoff, Mode};
use crate::domain::{SessionId, SessionUser, UserId, Username};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// KEYS: record. ARGV: expected version, data ('' deletes), agent id, ttl ms.
/// Returns `{1, previous agent}` when stored, `{0, ''}` on a version conflict.
static SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then return { 0, '' } end
local old_agent = redis.call('HGET', KEYS[1], 'agent') or ''
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  if old_agent ~= ARGV[3] then redis.call('HDEL', KEYS[1], 'summary') end
  redis.call('HSET', KEYS[1], 'v', cur + 1, 'data', ARGV[2], 'agent', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return { 1, old_agent }
",
    )
});

/// KEYS: queue, active, told. ARGV: session, mode ('' when deleted), waiting-since ms.
static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == 'queued' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
",
    )
});

/// KEYS: queue, told. ARGV: session, position. Only a queued session is noted.
static NOTE_ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: queue, told. ARGV: session, position, session, position, ...
/// Lowers the told positions of queued sessions that have one; returns the
/// sessions lowered.
static NOTE_MOVES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local moved = {}
for i = 1, #ARGV, 2 do
  local told = redis.call('HGET', KEYS[2], ARGV[i])
  if told and tonumber(ARGV[i + 1]) < tonumber(told)
     and redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
",
    )
});

/// KEYS: assigner. ARGV: holder, ttl ms. 1 when `holder` holds the lease.
static LEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// KEYS: assigner. ARGV: holder. Gives the lease up if `holder` has it.
static STEP_DOWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// KEYS: record. ARGV: agent, summary. Kept only while `agent` holds it.
static KEEP_SUMMARY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'agent') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'summary', ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: online, away. ARGV: since ms, now ms, limit. The agents seen since,
/// latest first, each as `id, online ('1' or ''), away ('1' or '')`.
static SEEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  if tonumber(rows[i + 1]) > tonumber(ARGV[2]) then out[#out + 1] = '1' else out[#out + 1] = '' end
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
",
    )
});

/// KEYS: waits. ARGV: wait per place ms, how many to keep.
static RECORD_WAIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
",
    )
});

/// KEYS: online, away, assigned. ARGV: now ms, limit. The agents online, each
/// as `id, away ('1' or ''), last assigned ms ('' when never)`.
static ROSTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
return out
",
    )
});

/// KEYS: agent's sockets. ARGV: socket, lease end ms, now ms, lease ms.
/// Lapsed sockets of a dead instance go when the agent comes back.
static RENEW_SOCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
",
    )
});

/// KEYS: agent's sockets. ARGV: socket, now ms. The socket's lease ends now;
/// returns 1 if it was the agent's last open socket, else 0.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf') == 0 then
  return 1
end
return 0
",
    )
});

#[derive(Serialize, Deserialize)]
struct StoredAgent {
    id: String,
    username: String,
}

/// A handoff record as the `data` field holds it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredHandoff {
    session: String,
    user: StoredAgent,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<StoredAgent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assigned_at: Option<i64>,
    waiting_since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_message: Option<String>,
    #[serde(default)]
    entered_at: u64,
}

/// A change as announced on the channel.
#[derive(Serialize, Deserialize)]
struct Announcement {
    session: String,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<StoredAgent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
}

fn stored_agent(a: &AgentRef) -> StoredAgent {
    StoredAgent {
        id: a.id.as_str().to_owned(),
        username: a.username.as_str().to_owned(),
    }
}

fn agent_back(a: StoredAgent) -> Option<AgentRef> {
    Some(AgentRef {
        id: UserId::parse(&a.id).ok()?,
        username: Username::parse(&a.username).ok()?,
    })
}

fn time_back(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn mode_back(mode: &str, agent: Option<StoredAgent>, since: Option<i64>) -> Option<Mode> {
    match mode {
        "bot" => Some(Mode::Bot),
        "queued" => Some(Mode::Queued),
        "assigned" => Some(Mode::Assigned {
            agent: agent_back(agent?)?,
            since: time_back(since?)?,
        }),
        _ => None,
    }
}

fn encode(h: &Handoff) -> String {
    let (agent, assigned_at) = match &h.mode {
        Mode::Assigned { agent, since } => {
            (Some(stored_agent(agent)), Some(since.timestamp_millis()))
        }
        Mode::Bot | Mode::Queued => (None, None),
    };
    let stored = StoredHandoff {
        session: h.session.as_str().to_owned(),
        user: StoredAgent {
            id: h.user.id.as_str().to_owned(),
            username: h.user.username.as_str().to_owned(),
        },
        mode: h.mode.as_str().to_owned(),
        agent,
        assigned_at,
        waiting_since: h.waiting_since.timestamp_millis(),
        last_message: h.last_message.clone(),
        entered_at: h.entered_at,
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn decode(raw: &str, version: u64) -> Result<Handoff, ConversationStoreError> {
    let corrupt = || {
        ConversationStoreError::from(StoreFailure::bare("a stored handoff record is unreadable"))
    };
    let s: StoredHandoff = serde_json::from_str(raw)
        .map_err(|e| StoreFailure::new("a stored handoff record is not JSON", e))?;
    Ok(Handoff {
        session: SessionId::parse(&s.session).map_err(|_| corrupt())?,
        user: SessionUser {
            id: UserId::parse(&s.user.id).map_err(|_| corrupt())?,
            username: Username::parse(&s.user.username).map_err(|_| corrupt())?,
        },
        mode: mode_back(&s.mode, s.agent, s.assigned_at).ok_or_else(corrupt)?,
        waiting_since: time_back(s.waiting_since).ok_or_else(corrupt)?,
        last_message: s.last_message,
        entered_at: s.entered_at,
        version,
    })
}

fn failed(context: &'static str) -> impl Fn(RedisError) -> ConversationStoreError {
    move |e| ConversationStoreError::from(StoreFailure::new(context, e))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The handoff store of one instance.
pub struct RedisHandoffs {
    conn: RedisConn,
    prefix: String,
    ttl: Duration,
    changes: broadcast::Sender<HandoffChange>,
    /// Stops the channel reader when the store is dropped.
    _watcher: DropGuard,
}

/// Agent presence in Redis.
pub struct RedisPresence {
    conn: RedisConn,
    prefix: String,
}

/// `name` as a hash tag on a cluster, as it always was on a single Redis.
fn tagged(conn: &RedisConn, name: &str) -> String {
    if conn.is_cluster() {
        format!("{{{name}}}")
    } else {
        name.to_owned()
    }
}

/// A global set under `P:what`, or in a fixed slot `P:{P:group}:what` on a
/// cluster (the sets a script uses together share a group).
fn global(conn: &RedisConn, prefix: &str, group: &str, what: &str) -> String {
    if conn.is_cluster() {
        format!("{prefix}:{{{prefix}:{group}}}:{what}")
    } else {
        format!("{prefix}:{group}:{what}")
    }
}

impl RedisHandoffs {
    /// Connects, subscribes to the change channel (before returning, so no
    /// change published afterwards is missed) and starts its reader. Records
    /// live as long as a session (`ttl`) after their last change.
    ///
    /// # Errors
    /// [`ConversationStoreError`] when Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
        ttl: Duration,
    ) -> Result<(Self, RedisPresence), ConversationStoreError> {
        let target = target.into();
        let conn = connect(&target).await?;
        let channel = format!("{key_prefix}:handoff:changes");
        let stream = Subscriber::open(&target, &channel).await?;
        let changes = broadcast::channel(CHANGES_BUFFER).0;
        let cancel = CancellationToken::new();
        let reader = Reader {
            target,
            channel,
            changes: changes.clone(),
        };
        tokio::spawn(reader.run(stream, cancel.clone()));
        let presence = RedisPresence {
            conn: conn.clone(),
            prefix: key_prefix.to_owned(),
        };
        let store = Self {
            conn,
            prefix: key_prefix.to_owned(),
            ttl,
            changes,
            _watcher: cancel.drop_guard(),
        };
        Ok((store, presence))
    }

    fn record_key(&self, session: &str) -> String {
        format!("{}:handoff:{}", self.prefix, tagged(&self.conn, session))
    }

    fn queue_key(&self) -> String {
        global(&self.conn, &self.prefix, "handoff", "queue")
    }

    fn active_key(&self) -> String {
        global(&self.conn, &self.prefix, "handoff", "active")
    }

    fn told_key(&self) -> String {
        global(&self.conn, &self.prefix, "handoff", "told")
    }

    fn waits_key(&self) -> String {
        global(&self.conn, &self.prefix, "handoff", "waits")
    }

    fn assigner_key(&self) -> String {
        global(&self.conn, &self.prefix, "handoff", "assigner")
    }

    fn agent_key(&self, agent: &str) -> String {
        format!(
            "{}:handoff:agent:{}",
            self.prefix,
            tagged(&self.conn, agent)
        )
    }

    fn taking_key(&self, agent: &UserId) -> String {
        format!("{}:taking", self.agent_key(agent.as_str()))
    }

    /// Step 2 of a change: the indexes follow the new record.
    async fn reindex(
        &self,
        session: &SessionId,
        next: Option<&Handoff>,
        old_agent: &str,
    ) -> Result<(), ConversationStoreError> {
        let mode = next.map_or("", |h| h.mode.as_str());
        let waiting = next.map_or(0, |h| h.waiting_since.timestamp_millis());
        let new_agent = next.and_then(|h| h.mode.agent()).map(|a| a.id.as_str());
        let mut cmds = Vec::new();
        if !old_agent.is_empty() && Some(old_agent) != new_agent {
            let mut srem = redis::cmd("SREM");
            srem.arg(self.agent_key(old_agent)).arg(session.as_str());
            cmds.push(srem);
        }
        if let Some(agent) = new_agent {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(self.agent_key(agent)).arg(session.as_str());
            cmds.push(sadd);
        }
        let sets = async {
            INDEX
                .key(self.queue_key())
                .key(self.active_key())
                .key(self.told_key())
                .arg(session.as_str())
                .arg(mode)
                .arg(waiting)
                .invoke_async::<i64>(&mut self.conn.clone())
                .await
        };
        let (sets, agents) = tokio::join!(sets, self.conn.each::<i64>(cmds));
        sets.and(agents)
            .map(drop)
            .map_err(failed("could not index a handoff change"))
    }

    /// Reads the records of `sessions` in one round trip, dropping (and
    /// unindexing) those that expired.
    async fn records(
        &self,
        sessions: Vec<String>,
        index: &str,
    ) -> Result<Vec<Handoff>, ConversationStoreError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        // One command per record: on a cluster each has its own slot.
        let cmds = sessions
            .iter()
            .map(|s| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.record_key(s)).arg("v").arg("data");
                cmd
            })
            .collect();
        let mut conn = self.conn.clone();
        let rows: Vec<(Option<u64>, Option<String>)> = self
            .conn
            .each(cmds)
            .await
            .map_err(failed("could not read handoff records"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (session, row) in sessions.iter().zip(rows) {
            match row {
                (Some(v), Some(data)) => out.push(decode(&data, v)?),
                _ => {
                    let _: Result<(), _> = redis::cmd("ZREM")
                        .arg(index)
                        .arg(session)
                        .query_async(&mut conn)
                        .await;
                }
            }
        }
        Ok(out)
    }

    /// The records an index ranks first, those that agree with it (`keep`).
    async fn ranked(
        &self,
        key: String,
        limit: usize,
        keep: fn(&Handoff) -> bool,
    ) -> Result<Vec<Handoff>, ConversationStoreError> {
        let mut conn = self.conn.clone();
        let sessions: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read the handoff queue"))?;
        let mut records = self.records(sessions, &key).await?;
        records.retain(keep);
        Ok(records)
    }
}

#[async_trait]
impl HandoffStore for RedisHandoffs {
    async fn get(&self, session: &SessionId) -> Result<Option<Handoff>, ConversationStoreError> {
        let mut conn = self.conn.clone();
        let (v, data): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(self.record_key(session.as_str()))
            .arg("v")
            .arg("data")
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read a handoff record"))?;
        match (v, data) {
            (Some(v), Some(data)) => decode(&data, v).map(Some),
            _ => Ok(None),
        }
    }

    async fn swap(
        &self,
        session: &SessionId,
        expected: u64,
        next: Option<Handoff>,
    ) -> Result<Swap, ConversationStoreError> {
        let data = next.as_ref().map(encode).unwrap_or_default();
        let mode = next.as_ref().map_or(Mode::Bot, |h| h.mode.clone());
        let agent = mode
            .agent()
            .map(|a| a.id.as_str().to_owned())
            .unwrap_or_default();
        let reply: (i64, Option<String>) = SWAP
            .key(self.record_key(session.as_str()))
            .arg(expected)
            .arg(data)
            .arg(agent)
            .arg(millis(self.ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not change a handoff"))?;
        let (1, old_agent) = reply else {
            return Ok(Swap::Conflict);
        };
        self.reindex(session, next.as_ref(), old_agent.as_deref().unwrap_or(""))
            .await?;
        let announcement = Announcement {
            session: session.as_str().to_owned(),
            mode: mode.as_str().to_owned(),
            agent: mode.agent().map(stored_agent),
            since: match &mode {
                Mode::Assigned { since, .. } => Some(since.timestamp_millis()),
                Mode::Bot | Mode::Queued => None,
            },
        };
        redis::cmd("PUBLISH")
            .arg(format!("{}:handoff:changes", self.prefix))
            .arg(serde_json::to_string(&announcement).unwrap_or_default())
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not announce a handoff change"))?;
        Ok(Swap::Done)
    }

    async fn queue(&self, limit: usize) -> Result<Vec<Handoff>, ConversationStoreError> {
        self.ranked(self.queue_key(), limit, |h| h.mode == Mode::Queued)
            .await
    }

    async fn position(&self, session: &SessionId) -> Result<Option<u64>, ConversationStoreError> {
        // The queue is a sorted set by waiting time (ties by member, as the
        // memory store orders them); a record that expired unindexed would
        // count ahead until the next listing drops it, at worst one place.
        let mut conn = self.conn.clone();
        let rank: Option<u64> = redis::cmd("ZRANK")
            .arg(self.queue_key())
            .arg(session.as_str())
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read a place in the handoff queue"))?;
        Ok(rank.map(|r| r + 1))
    }

    async fn held_by(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<Handoff>, ConversationStoreError> {
        let key = self.agent_key(agent.as_str());
        let mut conn = self.conn.clone();
        let sessions: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(&key)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read an agent's conversations"))?;
        let mut held: Vec<Handoff> = self
            .records(sessions, &key)
            .await?
            .into_iter()
            // The set may lag a record that expired and came back otherwise.
            .filter(|h| h.mode.agent().is_some_and(|a| a.id == *agent))
            .collect();
        held.sort_by_key(|h| h.waiting_since);
        Ok(held)
    }

    async fn active(&self, limit: usize) -> Result<Vec<Handoff>, ConversationStoreError> {
        self.ranked(self.active_key(), limit, |h| h.mode != Mode::Bot)
            .await
    }

    async fn queue_length(&self) -> Result<u64, ConversationStoreError> {
        redis::cmd("ZCARD")
            .arg(self.queue_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not count the handoff queue"))
    }

    async fn note_entry(
        &self,
        session: &SessionId,
        position: u64,
    ) -> Result<(), ConversationStoreError> {
        NOTE_ENTRY
            .key(self.queue_key())
            .key(self.told_key())
            .arg(session.as_str())
            .arg(position)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(failed("could not note a place in the handoff queue"))
    }

    async fn note_moves(
        &self,
        places: &[(SessionId, u64)],
    ) -> Result<Vec<SessionId>, ConversationStoreError> {
        if places.is_empty() {
            return Ok(Vec::new());
        }
        let mut script = NOTE_MOVES.key(self.queue_key());
        script.key(self.told_key());
        for (session, position) in places {
            script.arg(session.as_str()).arg(*position);
        }
        let moved: Vec<String> = script
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not note moves in the handoff queue"))?;
        Ok(moved
            .iter()
            .filter_map(|s| SessionId::parse(s).ok())
            .collect())
    }

    async fn record_wait(&self, per_place: Duration) -> Result<(), ConversationStoreError> {
        RECORD_WAIT
            .key(self.waits_key())
            .arg(u64::try_from(per_place.as_millis()).unwrap_or(u64::MAX))
            .arg(crate::domain::queue::WAIT_WINDOW)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(failed("could not record a handoff wait"))
    }

    async fn recent_waits(&self) -> Result<Vec<Duration>, ConversationStoreError> {
        let waits: Vec<u64> = redis::cmd("LRANGE")
            .arg(self.waits_key())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not read recent handoff waits"))?;
        Ok(waits.into_iter().map(Duration::from_millis).collect())
    }

    async fn lead_assignment(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, ConversationStoreError> {
        let held: i64 = LEAD
            .key(self.assigner_key())
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not take the auto-assignment lease"))?;
        Ok(held == 1)
    }

    async fn end_assignment(&self, holder: &str) -> Result<(), ConversationStoreError> {
        STEP_DOWN
            .key(self.assigner_key())
            .arg(holder)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(failed("could not end the auto-assignment lease"))
    }

    async fn begin_taking(
        &self,
        agent: &UserId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, ConversationStoreError> {
        // The assignment lease's script, on the agent's own key.
        let held: i64 = LEAD
            .key(self.taking_key(agent))
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not take an agent's taking lease"))?;
        Ok(held == 1)
    }

    async fn end_taking(&self, agent: &UserId, holder: &str) -> Result<(), ConversationStoreError> {
        STEP_DOWN
            .key(self.taking_key(agent))
            .arg(holder)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(failed("could not end an agent's taking lease"))
    }

    async fn keep_summary(
        &self,
        session: &SessionId,
        agent: &UserId,
        summary: &str,
    ) -> Result<bool, ConversationStoreError> {
        let kept: i64 = KEEP_SUMMARY
            .key(self.record_key(session.as_str()))
            .arg(agent.as_str())
            .arg(summary)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not keep a summary"))?;
        Ok(kept == 1)
    }

    async fn summary(&self, session: &SessionId) -> Result<Option<String>, ConversationStoreError> {
        redis::cmd("HGET")
            .arg(self.record_key(session.as_str()))
            .arg("summary")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not read a summary"))
    }

    fn changes(&self) -> broadcast::Receiver<HandoffChange> {
        self.changes.subscribe()
    }
}

impl RedisPresence {
    fn sockets_key(&self, agent: &UserId) -> String {
        format!(
            "{}:agents:{}:sockets",
            self.prefix,
            tagged(&self.conn, agent.as_str())
        )
    }

    fn online_key(&self) -> String {
        global(&self.conn, &self.prefix, "agents", "online")
    }

    fn away_key(&self) -> String {
        global(&self.conn, &self.prefix, "agents", "away")
    }

    fn assigned_key(&self) -> String {
        global(&self.conn, &self.prefix, "agents", "assigned")
    }
}

fn roster_back(flat: &[String]) -> Vec<AgentOnline> {
    flat.chunks_exact(3)
        .filter_map(|row| {
            Some(AgentOnline {
                id: UserId::parse(&row[0]).ok()?,
                away: !row[1].is_empty(),
                last_assigned: row[2].parse::<i64>().ok().and_then(time_back),
            })
        })
        .collect()
}

#[async_trait]
impl AgentPresence for RedisPresence {
    async fn renew(
        &self,
        agent: &UserId,
        socket: &str,
        lease: Duration,
    ) -> Result<(), ConversationStoreError> {
        let until =
            Utc::now().timestamp_millis() + i64::try_from(millis(lease)).unwrap_or(i64::MAX / 2);
        let sockets = self.sockets_key(agent);
        let mut conn = self.conn.clone();
        // A script, not MULTI: a cluster retries a redirected script, not an
        // aborted transaction.
        RENEW_SOCKET
            .key(&sockets)
            .arg(socket)
            .arg(until)
            .arg(Utc::now().timestamp_millis())
            .arg(millis(lease))
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(failed("could not renew an agent's presence"))?;
        // The online set has its own slot on a cluster: a second step.
        redis::cmd("ZADD")
            .arg(self.online_key())
            .arg("GT")
            .arg(until)
            .arg(agent.as_str())
            .exec_async(&mut conn)
            .await
            .map_err(failed("could not renew an agent's presence"))
    }

    async fn leave(&self, agent: &UserId, socket: &str) -> Result<(), ConversationStoreError> {
        let mut conn = self.conn.clone();
        let now = Utc::now().timestamp_millis();
        let last: i64 = LEAVE
            .key(self.sockets_key(agent))
            .arg(socket)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(failed("could not record an agent leaving"))?;
        if last == 0 {
            return Ok(());
        }
        // The last socket closed: the agent was last seen now (the online
        // set's own slot; a crash before this leaves the lease end instead).
        redis::cmd("ZADD")
            .arg(self.online_key())
            .arg(now)
            .arg(agent.as_str())
            .exec_async(&mut conn)
            .await
            .map_err(failed("could not record an agent leaving"))
    }

    async fn online(&self, agent: &UserId) -> Result<bool, ConversationStoreError> {
        let mut conn = self.conn.clone();
        let open: u64 = redis::cmd("ZCOUNT")
            .arg(self.sockets_key(agent))
            .arg(format!("({}", Utc::now().timestamp_millis()))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read an agent's presence"))?;
        Ok(open > 0)
    }

    async fn last_seen(
        &self,
        agent: &UserId,
    ) -> Result<Option<DateTime<Utc>>, ConversationStoreError> {
        let mut conn = self.conn.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.online_key())
            .arg(agent.as_str())
            .query_async(&mut conn)
            .await
            .map_err(failed("could not read an agent's presence"))?;
        // A lease end still ahead is an agent online now; the last sighting is
        // then not known yet.
        Ok(score
            .map(|ms| ms as i64)
            .and_then(time_back)
            .filter(|at| *at <= Utc::now()))
    }

    async fn online_count(&self) -> Result<u64, ConversationStoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZCOUNT")
            .arg(self.online_key())
            .arg(format!("({}", Utc::now().timestamp_millis()))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(failed("could not count agents online"))
    }

    async fn set_away(&self, agent: &UserId, away: bool) -> Result<(), ConversationStoreError> {
        let cmd = if away {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.away_key()).arg(agent.as_str()).arg(1);
            cmd
        } else {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.away_key()).arg(agent.as_str());
            cmd
        };
        cmd.exec_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not keep an agent's status"))
    }

    async fn away(&self, agent: &UserId) -> Result<bool, ConversationStoreError> {
        redis::cmd("HEXISTS")
            .arg(self.away_key())
            .arg(agent.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not read an agent's status"))
    }

    async fn note_assigned(
        &self,
        agent: &UserId,
        at: DateTime<Utc>,
    ) -> Result<(), ConversationStoreError> {
        redis::cmd("HSET")
            .arg(self.assigned_key())
            .arg(agent.as_str())
            .arg(at.timestamp_millis())
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not note an agent's latest conversation"))
    }

    async fn roster(&self, limit: usize) -> Result<Vec<AgentOnline>, ConversationStoreError> {
        let flat: Vec<String> = ROSTER
            .key(self.online_key())
            .key(self.away_key())
            .key(self.assigned_key())
            .arg(Utc::now().timestamp_millis())
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not list the agents online"))?;
        Ok(roster_back(&flat))
    }

    async fn seen(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentSeen>, ConversationStoreError> {
        let flat: Vec<String> = SEEN
            .key(self.online_key())
            .key(self.away_key())
            .arg(since.timestamp_millis())
            .arg(Utc::now().timestamp_millis())
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("could not list the agents seen"))?;
        Ok(flat
            .chunks_exact(3)
            .filter_map(|row| {
                Some(AgentSeen {
                    id: UserId::parse(&row[0]).ok()?,
                    online: !row[1].is_empty(),
                    away: !row[2].is_empty(),
                })
            })
            .collect())
    }
}

fn decode_announcement(payload: &[u8]) -> Option<HandoffChange> {
    let a: Announcement = serde_json::from_slice(payload).ok()?;
    Some(HandoffChange {
        session: SessionId::parse(&a.session).ok()?,
        mode: mode_back(&a.mode, a.agent, a.since)?,
    })
}

/// Reads the change channel for this instance, reconnecting with backoff.
struct Reader {
    target: RedisTarget,
    channel: String,
    changes: broadcast::Sender<HandoffChange>,
}

impl Reader {
    async fn run(self, first: Subscriber, cancel: CancellationToken) {
        let mut stream = Some(first);
        loop {
            let mut messages = match stream.take() {
                Some(s) => s,
                None => match self.reconnect(&cancel).await {
                    Some(s) => s,
                    None => return,
                },
            };
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    msg = messages.next() => match msg {
                        Some(Incoming::Message(msg)) => {
                            if let Some(change) = decode_announcement(msg.get_payload_bytes()) {
                                let _ = self.changes.send(change);
                            }
                        }
                        Some(Incoming::ShardLost(_) | Incoming::NodeLost) => {}
                        None => break,
                    },
                }
            }
            tracing::warn!("handoff change channel lost; reconnecting");
        }
    }

    async fn reconnect(&self, cancel: &CancellationToken) -> Option<Subscriber> {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            if let Ok(stream) = Subscriber::open(&self.target, &self.channel).await {
                tracing::info!("handoff change channel reconnected");
                return Some(stream);
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}
