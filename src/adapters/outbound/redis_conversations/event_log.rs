//! [`EventLog`] in Redis: a list of entries and a head counter per session,
//! written by one script so seqs are assigned atomically across instances.

use std::sync::Arc;

use crate::application::ports::SharedEvent;
use crate::application::ports::StoreFailure;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use redis::{Cmd, ErrorKind, RedisWrite, Script, ServerErrorKind};

use super::super::redis_manager::{RedisConn, RedisTarget};
use super::codec::{decode_entry, encode_entry};
use super::{connect_conn, millis, Keys};
use crate::application::ports::{
    AcceptedClientMessage, ConversationStoreError, EventLog, LogSlice, CLIENT_MESSAGE_IDS_KEPT,
};
use crate::domain::conversation::{ClientMessageId, ConversationEvent, LoggedEvent, Seq};
use crate::domain::{MessageId, SessionId};

/// Largest page one read asks Redis for; far above any log's retention, and
/// small enough that Lua prints `start + count` as an integer, not `1e+15`.
const MAX_PAGE: usize = 1 << 30;

/// Appends to one or more sessions' logs in one call. KEYS: five per
/// session: log, head, client ids, live channel and watchers hash (declared
/// even when not publishing, so a cluster checks they hash to the session's
/// slot). ARGV:
/// ttl ms, limit, ids kept, the publish command (`''` for none) and the
/// origin the live message starts with; then per session the event count
/// and three per event: entry, client message id (`''` if none), message
/// id. Returns per session the seq of its first event, or the error that
/// stopped that session's append (the others are unaffected: a batch of
/// many sessions is many independent appends sharing one call).
///
/// Expiry: the keys live `ttl` plus a slack (a tenth of it, at most a
/// minute) after the last append or read; an append only pushes them back
/// once less than `ttl` is left, so a streaming answer does not re-expire
/// three keys per batch.
///
/// Publishing from the script makes a batch one round trip, and the live
/// message can never disagree with the log: it is the stored entries with
/// their seqs spliced in (`{"seq":N,` + the entry without its `{`), which
/// is the form `codec::decode_batch` reads.
///
/// A batch is published only when an instance other than the origin has a
/// field in the session's watchers hash: the origin hands its events to its
/// own subscribers, so on a single instance (or a session watched only
/// where its answer runs) the message would only come back to be dropped,
/// costing Redis a publish and the origin a read. This is safe because an
/// instance records itself there only once Redis confirmed its subscription
/// and before its subscriber reads the log (see `pubsub::reconcile`): a
/// batch the script did not publish to it is already in the log it reads.
/// A field that vanished while its instance still watched (it missed its
/// refreshes) is noticed at the next refresh, which fills the gap from the
/// log (see `pubsub::beat`). Expired fields still count here (a publish too
/// many is harmless; one too few is not).
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ttl = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local kept = tonumber(ARGV[3])
local command = ARGV[4]
local expiry = ttl + math.min(math.floor(ttl / 10), 60000)

-- Whether an instance other than the origin (ARGV[5]) watches the session:
-- one call (the hash has a field per watching instance, a handful at most).
local function others_watch(watchers)
  for _, field in ipairs(redis.call('HKEYS', watchers)) do
    if field ~= ARGV[5] then return true end
  end
  return false
end

local function append(k, at, n)
  local head = redis.call('INCRBY', KEYS[k + 2], n)
  local first = head - n + 1
  -- Decided first, so a batch nobody else hears costs no live message.
  local publish = command ~= '' and others_watch(KEYS[k + 5])
  local entries, live, ids = {}, {}, 0
  for i = 0, n - 1 do
    local a = at + 3 * i
    entries[i + 1] = ARGV[a]
    if ARGV[a + 1] ~= '' then
      local seq = string.format('%d', first + i)
      redis.call('LPUSH', KEYS[k + 3], ARGV[a + 1] .. ' ' .. seq .. ' ' .. ARGV[a + 2])
      ids = ids + 1
    end
    if publish then
      live[i + 1] = '{"seq":' .. string.format('%d', first + i) .. ',' .. string.sub(ARGV[a], 2)
    end
  end
  local len = 0
  -- One push per thousand entries (Lua's unpack has a limit of a few thousand).
  for from = 1, n, 1000 do
    len = redis.call('RPUSH', KEYS[k + 1], unpack(entries, from, math.min(n, from + 999)))
  end
  if len > 2 * limit then
    redis.call('LTRIM', KEYS[k + 1], -limit, -1)
  end
  if ids > 0 then
    redis.call('LTRIM', KEYS[k + 3], 0, kept - 1)
    redis.call('PEXPIRE', KEYS[k + 3], expiry)
  end
  if redis.call('PTTL', KEYS[k + 2]) < ttl then
    for j = 1, 3 do
      redis.call('PEXPIRE', KEYS[k + j], expiry)
    end
  end
  if publish then
    redis.call(command, KEYS[k + 4], ARGV[5] .. ' [' .. table.concat(live, ',') .. ']')
  end
  return first
end

local results, at = {}, 6
for s = 0, #KEYS / 5 - 1 do
  local n = tonumber(ARGV[at])
  local ok, first = pcall(append, 5 * s, at + 1, n)
  if ok then
    results[s + 1] = first
  elseif type(first) == 'table' then
    results[s + 1] = tostring(first.err or 'error')
  else
    results[s + 1] = tostring(first)
  end
  at = at + 1 + 3 * n
end
return results
"#,
    )
});

/// One session's share of an [`APPEND`] call: its events as the log keeps
/// them (milliseconds) and their script arguments, encoded by the caller so
/// the work is spread over the callers rather than done by whoever sends.
pub(super) struct PreparedAppend {
    pub(super) session: SessionId,
    events: Vec<(DateTime<Utc>, ConversationEvent)>,
    args: Vec<String>,
}

impl PreparedAppend {
    pub(super) fn new(
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Self, ConversationStoreError> {
        let events: Vec<_> = events
            .into_iter()
            .map(|(at, event)| (at.trunc_subsecs(3), event))
            .collect();
        let mut args = Vec::with_capacity(3 * events.len());
        for (at, event) in &events {
            args.extend(event_args(*at, event)?);
        }
        Ok(Self {
            session: session.clone(),
            events,
            args,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events as logged, once the log gave the first one `first`.
    pub(super) fn logged(self, first: Seq) -> Vec<SharedEvent> {
        self.events
            .into_iter()
            .zip(first..)
            .map(|((at, event), seq)| Arc::new(LoggedEvent { seq, at, event }))
            .collect()
    }
}

/// Reads one session's answer in an [`APPEND`] reply: its first seq, or
/// the error that stopped its append.
fn appended(value: redis::Value) -> Result<Seq, StoreFailure> {
    match value {
        redis::Value::Int(first) => Seq::try_from(first)
            .map_err(|_| StoreFailure::bare(format!("the event log gave a first seq of {first}"))),
        redis::Value::BulkString(text) => Err(StoreFailure::bare(format!(
            "appending to the event log: {}",
            String::from_utf8_lossy(&text)
        ))),
        other => Err(StoreFailure::bare(format!(
            "appending to the event log: unexpected reply {other:?}"
        ))),
    }
}

/// KEYS: log, head, client ids. ARGV: after, count, ttl ms.
/// Returns `{head, oldest, seq of the first entry returned, entries}`; a read
/// is activity, so it pushes the session's expiry back like an append.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
if not head then return redis.error_reply('event log head is not a number') end
local len = redis.call('LLEN', KEYS[1])
local oldest = head - len + 1
local start = math.min(len, math.max(0, tonumber(ARGV[1]) + 1 - oldest))
local count = tonumber(ARGV[2])
local entries = {}
if count > 0 and start < len then
  entries = redis.call('LRANGE', KEYS[1], start, start + count - 1)
end
if head > 0 then
  local ttl = tonumber(ARGV[3])
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, ttl + math.min(math.floor(ttl / 10), 60000))
  end
end
return { head, oldest, oldest + start, entries }
",
    )
});

/// An [`EventLog`] in Redis; see the parent module for the key layout.
#[derive(Clone)]
pub struct RedisEventLog {
    conn: RedisConn,
    keys: Keys,
    limit: usize,
    ttl_ms: u64,
}

impl RedisEventLog {
    pub(super) fn new(conn: RedisConn, keys: Keys, limit: usize, ttl: Duration) -> Self {
        Self {
            conn,
            keys,
            limit: limit.max(1),
            ttl_ms: millis(ttl),
        }
    }

    /// A log on its own connection; [`super::RedisConversations::connect`]
    /// shares one connection between all three adapters instead. Keeps at
    /// least `limit` (at least 1) and at most `2 × limit` events per session,
    /// and forgets a session after `ttl` without an append or read.
    ///
    /// # Errors
    /// [`ConversationStoreError`] if the URL is invalid, the prefix holds
    /// braces, or Redis does not answer a PING within 3 seconds.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Self, ConversationStoreError> {
        let target = target.into();
        let keys = Keys::new(key_prefix, matches!(target, RedisTarget::Cluster(_)))?;
        let conn = connect_conn(&target).await?;
        Ok(Self::new(conn, keys, limit, ttl))
    }

    fn invocation<'a>(
        &self,
        script: &'a Script,
        session: &SessionId,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.keys.log(session));
        invocation
            .key(self.keys.head(session))
            .key(self.keys.client_ids(session));
        invocation
    }
}

/// The three script arguments of one event.
fn event_args(
    at: DateTime<Utc>,
    event: &ConversationEvent,
) -> Result<[String; 3], ConversationStoreError> {
    let (client_id, message_id) = match event {
        ConversationEvent::UserMessage {
            message_id,
            client_message_id: Some(client_id),
            ..
        } => (client_id.as_str(), message_id.as_str()),
        _ => ("", ""),
    };
    Ok([
        encode_entry(at, event)?,
        client_id.to_owned(),
        message_id.to_owned(),
    ])
}

/// Reads one `client-id seq message-id` record.
fn parse_accepted(record: &str) -> Option<(&str, AcceptedClientMessage)> {
    let mut parts = record.split(' ');
    let (client_id, seq, message_id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        client_id,
        AcceptedClientMessage {
            message_id: MessageId::parse(message_id).ok()?,
            seq: seq.parse().ok()?,
        },
    ))
}

/// Checks what the read script answered and decodes the entries.
fn slice(
    key: &str,
    (head, oldest, first, entries): (i64, i64, i64, Vec<Vec<u8>>),
) -> Result<LogSlice, ConversationStoreError> {
    let corrupt = || {
        ConversationStoreError::from(StoreFailure::bare(format!(
            "event log {key} is inconsistent: head {head}, oldest {oldest}, first {first}"
        )))
    };
    let head = Seq::try_from(head).map_err(|_| corrupt())?;
    let oldest = Seq::try_from(oldest).map_err(|_| corrupt())?;
    let first = Seq::try_from(first).map_err(|_| corrupt())?;
    if oldest == 0 || oldest > head + 1 || first < oldest || first > head + 1 {
        return Err(corrupt());
    }
    let events = entries
        .iter()
        .zip(first..)
        .map(|(raw, seq)| decode_entry(raw, seq).map(Arc::new))
        .collect::<Result<_, _>>()?;
    Ok(LogSlice {
        events,
        head,
        oldest,
    })
}

impl RedisEventLog {
    /// Appends each session's events in one script call and, given the
    /// instance's `origin`, publishes each batch on its session's channel
    /// from the same script. Each session gets its first seq or its own
    /// failure; the outer error means the call itself failed (connection,
    /// timeout), and then no one knows whether it ran.
    pub(super) async fn append_many(
        &self,
        batch: &[PreparedAppend],
        origin: Option<&str>,
    ) -> Result<Vec<Result<Seq, StoreFailure>>, StoreFailure> {
        let cmd = self.append_command(batch, origin);
        let mut conn = self.conn.clone();
        let mut sent = cmd.query_async(&mut conn).await;
        if matches!(&sent, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)) {
            // A restarted or flushed Redis forgot the script: load it, once.
            APPEND
                .load_async(&mut conn)
                .await
                .map_err(|e| StoreFailure::new("loading the event log's append script", e))?;
            sent = cmd.query_async(&mut conn).await;
        }
        let replies: Vec<redis::Value> =
            sent.map_err(|e| StoreFailure::new("appending to the event log", e))?;
        if replies.len() != batch.len() {
            return Err(StoreFailure::bare(format!(
                "the event log answered {} of {} appends",
                replies.len(),
                batch.len()
            )));
        }
        Ok(replies.into_iter().map(appended).collect())
    }

    /// The [`APPEND`] call for `batch` as one `EVALSHA` command, written
    /// straight into the command's buffer: this runs for every batch of
    /// every answer, and building it through a `ScriptInvocation` (each key
    /// formatted into a `String`, each argument into its own `Vec`, then
    /// all copied into the command) was most of what the Redis path
    /// allocated per token.
    fn append_command(&self, batch: &[PreparedAppend], origin: Option<&str>) -> Cmd {
        const KEYS_PER_SESSION: [&str; 5] = ["log", "head", "cmids", "live", "watchers"];
        let events: usize = batch.iter().map(|one| one.events.len()).sum();
        let args = 3 + 5 + KEYS_PER_SESSION.len() * batch.len() + batch.len() + 3 * events;
        let data: usize = batch
            .iter()
            .map(|one| {
                let keys = KEYS_PER_SESSION.len() * (self.keys.base.len() + 48);
                keys + one.args.iter().map(String::len).sum::<usize>()
            })
            .sum();
        let mut cmd = Cmd::with_capacity(args, data + 128);
        cmd.arg("EVALSHA")
            .arg(APPEND.get_hash())
            .arg(KEYS_PER_SESSION.len() * batch.len());
        for one in batch {
            for what in KEYS_PER_SESSION {
                cmd.write_arg_fmt(self.keys.session_name(&one.session, what));
            }
        }
        cmd.arg(self.ttl_ms)
            .arg(self.limit)
            .arg(CLIENT_MESSAGE_IDS_KEPT);
        match origin {
            Some(origin) => cmd.arg(self.keys.publish_command()).arg(origin),
            None => cmd.arg("").arg(""),
        };
        for one in batch {
            cmd.arg(one.events.len()).arg(&one.args[..]);
        }
        cmd
    }

    /// Appends one session's events (publishing them as `origin` when
    /// given) in one script call.
    pub(super) async fn append_and_publish(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
        origin: Option<&str>,
    ) -> Result<Vec<SharedEvent>, ConversationStoreError> {
        let prepared = PreparedAppend::new(session, events)?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let batch = [prepared];
        let first = self
            .append_many(&batch, origin)
            .await?
            .pop()
            .expect("one reply per append, checked by append_many")?;
        let [prepared] = batch;
        Ok(prepared.logged(first))
    }
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn append(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Vec<SharedEvent>, ConversationStoreError> {
        self.append_and_publish(session, events, None).await
    }

    async fn read_after(
        &self,
        session: &SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<LogSlice, ConversationStoreError> {
        let reply = self
            .invocation(&READ, session)
            .arg(after)
            .arg(limit.min(MAX_PAGE))
            .arg(self.ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("reading the event log", e))?;
        slice(&self.keys.log(session), reply)
    }

    async fn head(&self, session: &SessionId) -> Result<Seq, ConversationStoreError> {
        let head: Option<Seq> = redis::cmd("GET")
            .arg(self.keys.head(session))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("reading the event log head", e))?;
        Ok(head.unwrap_or(0))
    }

    async fn accepted_client_message(
        &self,
        session: &SessionId,
        id: &ClientMessageId,
    ) -> Result<Option<AcceptedClientMessage>, ConversationStoreError> {
        let key = self.keys.client_ids(session);
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(CLIENT_MESSAGE_IDS_KEPT - 1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("reading accepted client message ids", e))?;
        // Newest first, so a reused client id finds its latest message.
        for record in &records {
            let (client_id, accepted) = parse_accepted(record).ok_or_else(|| {
                ConversationStoreError::from(StoreFailure::bare(format!(
                    "{key} holds a malformed record {record:?}"
                )))
            })?;
            if client_id == id.as_str() {
                return Ok(Some(accepted));
            }
        }
        Ok(None)
    }

    async fn erase(&self, session: &SessionId) -> Result<(), ConversationStoreError> {
        // One command over keys sharing the session's hash tag: all go at once.
        redis::cmd("DEL")
            .arg(self.keys.log(session))
            .arg(self.keys.head(session))
            .arg(self.keys.client_ids(session))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| {
                ConversationStoreError::from(StoreFailure::new("erasing the event log", e))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_records_parse_strictly() {
        let (client_id, accepted) = parse_accepted("c-1 42 msg_a").unwrap();
        assert_eq!(client_id, "c-1");
        assert_eq!(accepted.seq, 42);
        assert_eq!(accepted.message_id.as_str(), "msg_a");
        for bad in [
            "",
            "c-1 42",
            "c-1 x msg_a",
            "c-1 42 ../a",
            "c-1 42 msg_a extra",
        ] {
            assert!(parse_accepted(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn inconsistent_reads_are_errors() {
        let ok = slice("k", (3, 1, 2, vec![])).unwrap();
        assert_eq!((ok.head, ok.oldest), (3, 1));
        assert_eq!(slice("k", (0, 1, 1, vec![])).unwrap().oldest, 1);
        for bad in [(3, 0, 1), (3, 5, 5), (-1, 1, 1), (3, 2, 1)] {
            assert!(
                slice("k", (bad.0, bad.1, bad.2, vec![])).is_err(),
                "{bad:?}"
            );
        }
        assert!(slice("k", (1, 1, 1, vec![b"junk".to_vec()])).is_err());
    }
}
