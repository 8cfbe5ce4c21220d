//! The generation registry on a Redis Cluster, where a session's lease and
//! the lease set live in different slots, so no script may touch both: each
//! operation is ordered steps, each one script in one slot, arranged so
//! that a crash between two steps never reports a generation twice and
//! never loses a running one.
//!
//! Besides the lease key, a session has `P:v1:{S}:ended`: the last generation
//! of the session that finished or was reaped, kept as long as a lease key
//! could be. A lease-set member whose lease key is gone is reported by the
//! reaper only when `ended` does not name it, so that it is reported once.
//!
//! - `try_start`: 1. add the member to the lease set (expiring a lease from
//!   now); 2. take the lease key (SET NX). Busy: 3. remove our member. A
//!   crash after 1 leaves a member without a lease: once it lapses the
//!   reaper reports it (the message never got its answer, which is then
//!   ended as interrupted). A crash after a Busy 2 leaves a member whose
//!   session is held by another generation: the reaper drops it silently.
//! - `renew`: 1. extend the lease key if still ours; 2. push the member's
//!   expiry back, only if it is still in the set (ZADD XX): a reaper that
//!   removed it meanwhile is not undone, and the owner's next renew fails.
//! - `finish`: 1. drop the lease key if ours and mark the generation ended;
//!   2. remove the member. A crash after 1 leaves a member the reaper drops
//!   silently (ended names it).
//! - `reap_expired`: 1. list lapsed members (read only); 2. per member, in its
//!   session's slot: take the lease if this generation still holds it, or
//!   claim it when the key is gone and `ended` does not name it, marking it
//!   ended either way: one reaper of all wins it; 3. remove the member. A
//!   crash after 2 leaves a lapsed member the next reaper drops silently.
//!   Between 1 and 2 a slow owner may renew a lapsed lease; it loses it all
//!   the same, as it would had the reaper come a moment earlier, and stops
//!   at its next renew.

use std::sync::LazyLock;

use redis::Script;

use super::super::redis_manager::RedisConn;
use super::Keys;
use crate::domain::{MessageId, SessionId};

const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW_MS}\n{body}"))
}

/// KEYS: leases. ARGV: lease ms, member, `XX` or `NX`.
static SET_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
return redis.call('ZADD', KEYS[1], ARGV[3], now_ms() + tonumber(ARGV[1]), ARGV[2])
",
    )
});

/// KEYS: lease. ARGV: message id, lease key ms. Nil when taken, else the holder.
static TAKE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
",
    )
});

/// KEYS: lease. ARGV: message id, lease key ms. 1 when still ours.
static EXTEND_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: lease, stop flag, ended. ARGV: message id, ended ms.
static END_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// KEYS: lease, stop flag, ended. ARGV: message id, ended ms. 1 to the one
/// caller that wins this lapsed generation, else 0.
static CLAIM_LAPSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
elseif holder or redis.call('GET', KEYS[3]) == ARGV[1] then
  return 0
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// One generation's names and timings, as the steps need them.
pub(super) struct Steps<'a> {
    pub(super) conn: &'a RedisConn,
    pub(super) keys: &'a Keys,
    pub(super) session: &'a SessionId,
    pub(super) message_id: &'a MessageId,
    pub(super) member: String,
    pub(super) lease_ms: u64,
    /// How long the lease key, and the ended mark, live.
    pub(super) key_ms: u64,
}

impl Steps<'_> {
    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `try_start`: `None` when started, else the running generation.
    pub(super) async fn start(&self) -> redis::RedisResult<Option<String>> {
        self.set_member("NX").await?;
        let holder: Option<String> = TAKE_LEASE
            .key(self.keys.lease(self.session))
            .arg(self.message_id.as_str())
            .arg(self.key_ms)
            .invoke_async(&mut self.conn())
            .await?;
        if holder.is_some() {
            self.remove_member().await?;
        }
        Ok(holder)
    }

    /// `renew`: whether the lease is still this generation's.
    pub(super) async fn renew(&self) -> redis::RedisResult<bool> {
        let ours: bool = EXTEND_LEASE
            .key(self.keys.lease(self.session))
            .arg(self.message_id.as_str())
            .arg(self.key_ms)
            .invoke_async(&mut self.conn())
            .await?;
        if ours {
            self.set_member("XX").await?;
        }
        Ok(ours)
    }

    pub(super) async fn finish(&self) -> redis::RedisResult<()> {
        END_LEASE
            .key(self.keys.lease(self.session))
            .key(self.keys.stop(self.session))
            .key(self.keys.ended(self.session))
            .arg(self.message_id.as_str())
            .arg(self.key_ms)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        self.remove_member().await
    }

    /// `reap_expired`, for one listed member: whether this caller won it.
    pub(super) async fn reap(&self) -> redis::RedisResult<bool> {
        let won: bool = CLAIM_LAPSED
            .key(self.keys.lease(self.session))
            .key(self.keys.stop(self.session))
            .key(self.keys.ended(self.session))
            .arg(self.message_id.as_str())
            .arg(self.key_ms)
            .invoke_async(&mut self.conn())
            .await?;
        self.remove_member().await?;
        Ok(won)
    }

    async fn set_member(&self, mode: &str) -> redis::RedisResult<()> {
        SET_MEMBER
            .key(self.keys.leases())
            .arg(self.lease_ms)
            .arg(&self.member)
            .arg(mode)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
    }

    async fn remove_member(&self) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(self.keys.leases())
            .arg(&self.member)
            .exec_async(&mut self.conn())
            .await
    }
}
