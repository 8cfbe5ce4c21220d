//! [`RateLimiter`] in Redis, so every instance counts against the same limits:
//! three instances allow what one would.
//!
//! Layout, under the configured key prefix `P`, versioned (`v1`) like the
//! conversation keys, each key's own name as its Redis Cluster hash tag:
//! - `P:v1:rl:{K}`: sorted set of the events counted under `K`, scored by when
//!   they happened (Redis's clock, ms); members are event ids. A sliding
//!   window log: it holds at most `max` members, expires with its window.
//! - `P:v1:slots:{K}`: sorted set of held slots scored by lease expiry (ms).
//!
//! Each operation is one Lua script on Redis's own clock (`TIME`). On a single
//! Redis, `admit` over several quotas is one script over their keys, so a
//! request is counted under all of them or none. On a Redis Cluster those keys
//! live in different slots, so it counts quota by quota and, at the first one
//! that is full, withdraws the event from those already counted: meanwhile
//! another request may see those counts one higher than they end up, and a
//! crash midway leaves the event counted in some windows until they slide on;
//! both err on the side of refusing. Its retry-after then names the first full
//! quota's wait.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisError, Script};

use super::redis_manager::{connect, RedisConn, RedisTarget};
use crate::application::ports::StoreFailure;
use crate::application::ports::{Admission, EventId, Quota, RateLimitError, RateLimiter, SlotId};

/// About a century, as the other adapters bound their TTLs.
const MAX_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

const NOW_MS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW_MS}\n{body}"))
}

/// KEYS: one window per quota. ARGV: event id, then max and window ms per key.
/// Returns 0 when counted everywhere, else the ms until every full one has room.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local wait = 0
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[2 * i])
  local win = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
  local n = redis.call('ZCARD', key)
  if n >= max then
    local w = win
    if max > 0 then
      local e = redis.call('ZRANGE', key, n - max, n - max, 'WITHSCORES')
      w = tonumber(e[2]) + win - now
    end
    if w < 1 then w = 1 end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, ARGV[2 * i + 1])
end
return 0
",
    )
});

/// KEYS: slots. ARGV: slot id, max, lease ms. Returns 1 when taken.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// KEYS: slots. ARGV: slot id, lease ms. Returns 1 when still held.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry then return 0 end
if tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
",
    )
});

fn unavailable(e: RedisError) -> RateLimitError {
    RateLimitError::from(StoreFailure::new("redis command failed", e))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MS)
}

/// A [`RateLimiter`] in Redis; see the module docs for the key layout.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConn,
    /// `P:v1:`, the start of every key.
    base: String,
}

impl RedisRateLimiter {
    /// Connects and checks that Redis answers a PING within 3 seconds.
    ///
    /// # Errors
    /// [`RateLimitError`] if the URL is invalid, the prefix holds braces (they
    /// would become the hash tag), or Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
    ) -> Result<Self, RateLimitError> {
        if key_prefix.contains(['{', '}']) {
            return Err(RateLimitError::from(StoreFailure::bare(format!(
                "Redis key prefix {key_prefix:?} must not contain braces"
            ))));
        }
        let conn = connect(&target.into()).await?;
        Ok(Self {
            conn,
            base: format!("{key_prefix}:v1:"),
        })
    }

    /// The window key of `key`; braces in it would move the hash tag, so
    /// they are replaced.
    fn window_key(&self, key: &str) -> String {
        format!("{}rl:{{{}}}", self.base, tag(key))
    }

    fn slots_key(&self, key: &str) -> String {
        format!("{}slots:{{{}}}", self.base, tag(key))
    }
}

impl RedisRateLimiter {
    /// One quota's admission: 0 when counted, else the ms until it has room.
    async fn admit_one(&self, quota: &Quota, event: &str) -> Result<u64, RateLimitError> {
        ADMIT
            .key(self.window_key(&quota.key))
            .arg(event)
            .arg(quota.max)
            .arg(millis(quota.window))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Several quotas on a cluster, one slot at a time (see the module docs).
    async fn admit_in_steps(
        &self,
        quotas: &[Quota],
        event: String,
    ) -> Result<Admission, RateLimitError> {
        for (i, quota) in quotas.iter().enumerate() {
            let wait = self.admit_one(quota, &event).await?;
            if wait > 0 {
                let counted: Vec<String> = quotas[..i].iter().map(|q| q.key.clone()).collect();
                self.withdraw(&counted, &EventId(event)).await?;
                return Ok(Admission::Refused {
                    retry_after: Duration::from_millis(wait),
                });
            }
        }
        Ok(Admission::Admitted(EventId(event)))
    }
}

fn tag(key: &str) -> String {
    key.replace(['{', '}'], "_")
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(&self, quotas: &[Quota]) -> Result<Admission, RateLimitError> {
        if quotas.is_empty() {
            return Ok(Admission::Admitted(EventId(String::new())));
        }
        let event = uuid::Uuid::new_v4().simple().to_string();
        if self.conn.is_cluster() && quotas.len() > 1 {
            return self.admit_in_steps(quotas, event).await;
        }
        let mut invocation = ADMIT.prepare_invoke();
        invocation.arg(&event);
        for q in quotas {
            invocation
                .key(self.window_key(&q.key))
                .arg(q.max)
                .arg(millis(q.window));
        }
        let wait: u64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match wait {
            0 => Admission::Admitted(EventId(event)),
            ms => Admission::Refused {
                retry_after: Duration::from_millis(ms),
            },
        })
    }

    async fn withdraw(&self, keys: &[String], event: &EventId) -> Result<(), RateLimitError> {
        // One command per key: on a cluster each window has its own slot.
        let cmds = keys
            .iter()
            .map(|key| {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(self.window_key(key)).arg(&event.0);
                cmd
            })
            .collect();
        self.conn
            .each::<i64>(cmds)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn reset(&self, key: &str) -> Result<(), RateLimitError> {
        redis::cmd("DEL")
            .arg(self.window_key(key))
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn acquire(
        &self,
        key: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Option<SlotId>, RateLimitError> {
        let slot = uuid::Uuid::new_v4().simple().to_string();
        let taken: i64 = ACQUIRE
            .key(self.slots_key(key))
            .arg(&slot)
            .arg(max)
            .arg(millis(lease))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok((taken == 1).then_some(SlotId(slot)))
    }

    async fn renew(
        &self,
        key: &str,
        slot: &SlotId,
        lease: Duration,
    ) -> Result<bool, RateLimitError> {
        let held: i64 = RENEW
            .key(self.slots_key(key))
            .arg(&slot.0)
            .arg(millis(lease))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn release(&self, key: &str, slot: &SlotId) -> Result<(), RateLimitError> {
        redis::cmd("ZREM")
            .arg(self.slots_key(key))
            .arg(&slot.0)
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_carry_their_name_as_hash_tag_and_a_version() {
        // No connection is needed to name keys; build one without Redis.
        let base = "chat:v1:";
        let key = |k: &str| format!("{base}rl:{{{}}}", tag(k));
        assert_eq!(key("login:ip:1.2.3.4"), "chat:v1:rl:{login:ip:1.2.3.4}");
        assert_eq!(key("a{b}c"), "chat:v1:rl:{a_b_c}");
        assert!(RedisRateLimiter::connect("redis://127.0.0.1:1", "a{b}")
            .await
            .is_err());
    }
}
