//! [`GenerationRegistry`] in Redis: a lease key per session naming its running
//! generation, and one sorted set of lease expiries that reapers scan.
//!
//! A lease's expiry lives in the sorted set, on Redis's clock; the lease key
//! itself is kept [`LEASE_KEY_GRACE`] longer, so an expired lease nobody has
//! reaped yet still makes `try_start` answer Busy (the reaper must end the
//! interrupted generation first), exactly as in memory. Should every instance
//! be gone for longer than that grace, the key lapses; the sorted set still
//! names the generation, and the next reaper still reports it.
//!
//! On a single Redis each operation is one script over the lease and the set;
//! on a Redis Cluster they are in different slots, and each operation is
//! ordered steps instead (see `steps`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::super::redis_manager::RedisConn;
use super::pubsub::Hub;
use super::steps::Steps;
use super::{millis, Keys, MAX_TTL_MS};
use crate::application::ports::StoreFailure;
use crate::application::ports::{
    AbandonedGeneration, ConversationStoreError, GenerationRegistry, StartOutcome, StopStream,
};
use crate::domain::{MessageId, SessionId};
use crate::error_chain::ErrorChain;

/// How much longer than its lease a lease key lives; see the module docs.
const LEASE_KEY_GRACE: Duration = Duration::from_secs(600);
/// How long a stop request stays findable for an owner that missed its message.
const STOP_FLAG_TTL: Duration = Duration::from_secs(60);
/// Expired leases one `reap_expired` call handles; the rest wait for the next.
const REAP_BATCH: usize = 100;

const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW_MS}\n{body}"))
}

/// KEYS: lease, leases. ARGV: message id, lease ms, lease key ms, member.
/// Returns nil when started, else the running generation.
static TRY_START: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[4])
  return false
end
return redis.call('GET', KEYS[1])
",
    )
});

/// KEYS: lease, leases. ARGV: message id, lease ms, lease key ms, member.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[4])
return 1
",
    )
});

/// KEYS: lease, leases, stop flag. ARGV: message id, member.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[3])
end
return 1
",
    )
});

/// KEYS: lease, stop flag. ARGV: stops channel, session id, flag ttl ms.
/// Returns the running generation (now asked to stop), or nil.
static REQUEST_STOP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder then return false end
redis.call('SET', KEYS[2], holder, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. holder)
return holder
",
    )
});

/// KEYS: leases. ARGV: batch size. The members whose lease has lapsed.
static REAP_CANDIDATES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
",
    )
});

/// KEYS: leases, lease, stop flag. ARGV: member, message id. Returns 1 to the
/// one caller that removes a still-lapsed entry of a generation that still
/// holds its lease (or whose key has lapsed too), else 0.
static REAP_ONE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now_ms() then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[2] then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
if not holder then return 1 end
return 0
",
    )
});

/// A [`GenerationRegistry`] in Redis; made by
/// [`super::RedisConversations::connect`]. Stop requests reach it over the
/// shared pub/sub connection, for the generations this value started.
pub struct RedisGenerationRegistry {
    conn: RedisConn,
    keys: Keys,
    hub: Arc<Hub>,
}

/// The sorted-set member of one generation's lease.
fn member(session: &SessionId, message_id: &MessageId) -> String {
    format!("{session} {message_id}")
}

fn parse_member(member: &str) -> Option<(SessionId, MessageId)> {
    let (session, message_id) = member.split_once(' ')?;
    Some((
        SessionId::parse(session).ok()?,
        MessageId::parse(message_id).ok()?,
    ))
}

fn stored_message_id(raw: &str) -> Result<MessageId, ConversationStoreError> {
    MessageId::parse(raw).map_err(|e| {
        ConversationStoreError::from(StoreFailure::new(format!("lease holds {raw:?}"), e))
    })
}

impl RedisGenerationRegistry {
    pub(super) fn new(conn: RedisConn, keys: Keys, hub: Arc<Hub>) -> Self {
        Self { conn, keys, hub }
    }

    /// The cluster's stepwise operations on one generation, or `None` on a
    /// single Redis.
    fn steps<'a>(
        &'a self,
        session: &'a SessionId,
        message_id: &'a MessageId,
        lease: Duration,
    ) -> Option<Steps<'a>> {
        let lease_ms = millis(lease);
        self.conn.is_cluster().then(|| Steps {
            conn: &self.conn,
            keys: &self.keys,
            session,
            message_id,
            member: member(session, message_id),
            lease_ms,
            key_ms: (lease_ms + millis(LEASE_KEY_GRACE)).min(MAX_TTL_MS),
        })
    }

    /// Runs the start or renew script, which share their keys and arguments.
    async fn lease_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<T, redis::RedisError> {
        let lease_ms = millis(lease);
        let key_ms = (lease_ms + millis(LEASE_KEY_GRACE)).min(MAX_TTL_MS);
        script
            .key(self.keys.lease(session))
            .key(self.keys.leases())
            .arg(message_id.as_str())
            .arg(lease_ms)
            .arg(key_ms)
            .arg(member(session, message_id))
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Takes the lease: `None` when started, else the running generation.
    async fn start_lease(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<Option<String>, redis::RedisError> {
        match self.steps(session, message_id, lease) {
            Some(steps) => steps.start().await,
            None => {
                self.lease_script(&TRY_START, session, message_id, lease)
                    .await
            }
        }
    }

    /// Extends the lease: whether it is still this generation's.
    async fn renew_lease(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<bool, redis::RedisError> {
        match self.steps(session, message_id, lease) {
            Some(steps) => steps.renew().await,
            None => self.lease_script(&RENEW, session, message_id, lease).await,
        }
    }

    /// Pops one lapsed lease if no other reaper got it first.
    async fn reap_one(
        &self,
        session: &SessionId,
        message_id: &MessageId,
    ) -> Result<bool, ConversationStoreError> {
        // The lease length does not matter to reaping.
        if let Some(steps) = self.steps(session, message_id, LEASE_KEY_GRACE) {
            return steps.reap().await.map_err(|e| {
                ConversationStoreError::from(StoreFailure::new("reaping a lapsed lease", e))
            });
        }
        REAP_ONE
            .key(self.keys.leases())
            .key(self.keys.lease(session))
            .key(self.keys.stop(session))
            .arg(member(session, message_id))
            .arg(message_id.as_str())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                ConversationStoreError::from(StoreFailure::new("reaping a lapsed lease", e))
            })
    }

    /// A member no generation can be made of is removed so it cannot block
    /// the reaper forever; it is logged, since no caller could act on it.
    async fn drop_corrupt_member(&self, member: &str) {
        tracing::warn!(member, "removing a malformed entry from the lease set");
        let removed = redis::cmd("ZREM")
            .arg(self.keys.leases())
            .arg(member)
            .exec_async(&mut self.conn.clone())
            .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "could not remove a malformed lease entry");
        }
    }
}

#[async_trait]
impl GenerationRegistry for RedisGenerationRegistry {
    async fn try_start(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<StartOutcome, ConversationStoreError> {
        // Owned before the lease exists, so a stop sent the moment it does is not missed.
        let stops = &self.hub.shared.stops;
        stops.own(session, message_id, lease)?;
        let holder: Option<String> = match self.start_lease(session, message_id, lease).await {
            Ok(holder) => holder,
            Err(e) => {
                stops.disown(session, message_id);
                return Err(ConversationStoreError::from(StoreFailure::new(
                    "starting a generation",
                    e,
                )));
            }
        };
        match holder {
            None => Ok(StartOutcome::Started),
            Some(running) => {
                stops.disown(session, message_id);
                Ok(StartOutcome::Busy {
                    running: stored_message_id(&running)?,
                })
            }
        }
    }

    async fn renew(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<bool, ConversationStoreError> {
        let renewed: bool = self
            .renew_lease(session, message_id, lease)
            .await
            .map_err(|e| StoreFailure::new("renewing a generation lease", e))?;
        let stops = &self.hub.shared.stops;
        if renewed {
            stops.own(session, message_id, lease)?;
        } else {
            stops.disown(session, message_id);
        }
        Ok(renewed)
    }

    async fn finish(
        &self,
        session: &SessionId,
        message_id: &MessageId,
    ) -> Result<(), ConversationStoreError> {
        if let Some(steps) = self.steps(session, message_id, LEASE_KEY_GRACE) {
            steps
                .finish()
                .await
                .map_err(|e| StoreFailure::new("finishing a generation", e))?;
            self.hub.shared.stops.disown(session, message_id);
            return Ok(());
        }
        FINISH
            .key(self.keys.lease(session))
            .key(self.keys.leases())
            .key(self.keys.stop(session))
            .arg(message_id.as_str())
            .arg(member(session, message_id))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("finishing a generation", e))?;
        self.hub.shared.stops.disown(session, message_id);
        Ok(())
    }

    async fn running(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError> {
        let holder: Option<String> = redis::cmd("GET")
            .arg(self.keys.lease(session))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("reading a generation lease", e))?;
        holder.as_deref().map(stored_message_id).transpose()
    }

    async fn request_stop(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError> {
        let holder: Option<String> = REQUEST_STOP
            .key(self.keys.lease(session))
            .key(self.keys.stop(session))
            .arg(self.keys.stops_channel())
            .arg(session.as_str())
            .arg(millis(STOP_FLAG_TTL))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("requesting a stop", e))?;
        holder.as_deref().map(stored_message_id).transpose()
    }

    fn stop_requests(&self) -> StopStream {
        self.hub.shared.stops.stream()
    }

    async fn reap_expired(&self) -> Result<Vec<AbandonedGeneration>, ConversationStoreError> {
        let members: Vec<String> = REAP_CANDIDATES
            .key(self.keys.leases())
            .arg(REAP_BATCH)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StoreFailure::new("listing lapsed leases", e))?;
        let mut reaped = Vec::new();
        for raw in members {
            let Some((session, message_id)) = parse_member(&raw) else {
                self.drop_corrupt_member(&raw).await;
                continue;
            };
            match self.reap_one(&session, &message_id).await {
                Ok(true) => {
                    self.hub.shared.stops.disown(&session, &message_id);
                    reaped.push(AbandonedGeneration {
                        session,
                        message_id,
                    });
                }
                Ok(false) => {}
                // Those already popped must reach this caller; the rest wait.
                Err(e) if !reaped.is_empty() => {
                    tracing::warn!(error = %ErrorChain(&e), "reaping stopped early");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(reaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_session_and_generation() {
        let s = SessionId::parse("sess_a").unwrap();
        let m = MessageId::parse("msg_b").unwrap();
        assert_eq!(parse_member(&member(&s, &m)), Some((s, m)));
        for bad in [
            "",
            "sess_a",
            "sess_a ",
            " msg_b",
            "sess_a msg_b x",
            "../a msg_b",
        ] {
            assert_eq!(parse_member(bad), None, "{bad:?}");
        }
    }
}
