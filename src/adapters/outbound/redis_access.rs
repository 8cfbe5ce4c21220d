//! Redis-backed [`TicketStore`] and [`RevocationStore`], so a ticket bought
//! on one instance opens a socket on another, and a logout on one instance
//! closes sockets on all of them.
//!
//! Layout under the key prefix `P`:
//! - `P:ticket:{sha256}`: the claims a ticket stands for (JSON), with the
//!   ticket's ttl; taken by a GET-and-DEL script, so it is spent once;
//! - `P:revoked:token:{token id}`: set until the token expires;
//! - `P:revoked:user:{user id}`: the Unix millisecond before which the user's
//!   tokens are revoked (only ever raised), for the access token lifetime;
//! - channel `P:revocations`: every revocation, for the open sockets of every
//!   instance. One pub/sub connection per instance reads it; its task
//!   reconnects with backoff and tells subscribers to re-check what they may
//!   have missed meanwhile.
//!
//! Every command touches one key, so all of it works on a Redis Cluster as
//! is; the channel is a classic one, which a cluster forwards to every node
//! (revocations are rare).

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::memory_access::REVOCATION_BUFFER;
use super::redis_manager::{connect, Incoming, RedisConn, RedisTarget, Subscriber};
use crate::application::ports::StoreFailure;
use crate::application::ports::{
    AccessStoreError, Revocation, RevocationStore, TicketStore, TokenClaims,
};
use crate::domain::{TokenDigest, UserId, Username};

/// How often the watcher pings its pub/sub connection to notice a dead one.
const HEARTBEAT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// KEYS: ticket key. Returns the value and deletes it, atomically.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
",
    )
});

/// KEYS: user key. ARGV: before ms, keep ms. Only ever raises the mark.
static REVOKE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then cur = tonumber(ARGV[1]) end
redis.call('SET', KEYS[1], string.format('%d', cur), 'PX', ARGV[2])
return 1
",
    )
});

/// The claims as a ticket keeps them.
#[derive(Serialize, Deserialize)]
struct StoredClaims {
    sub: String,
    username: String,
    iat: i64,
    exp: i64,
    tid: String,
    #[serde(rename = "iatMs")]
    iat_ms: i64,
}

fn encode_claims(c: &TokenClaims) -> String {
    let stored = StoredClaims {
        sub: c.user_id.as_str().to_owned(),
        username: c.username.as_str().to_owned(),
        iat: c.issued_at,
        exp: c.expires_at,
        tid: c.token_id.clone(),
        iat_ms: c.issued_at_ms,
    };
    // Strings and integers only: serialising cannot fail.
    serde_json::to_string(&stored).unwrap_or_default()
}

fn decode_claims(raw: &str) -> Result<TokenClaims, AccessStoreError> {
    let corrupt = |what: &str| {
        AccessStoreError::from(StoreFailure::bare(format!("stored ticket has {what}")))
    };
    let s: StoredClaims = serde_json::from_str(raw).map_err(|_| corrupt("no claims"))?;
    Ok(TokenClaims {
        user_id: UserId::parse(&s.sub).map_err(|_| corrupt("a bad user id"))?,
        username: Username::parse(&s.username).map_err(|_| corrupt("a bad username"))?,
        issued_at: s.iat,
        expires_at: s.exp,
        token_id: s.tid,
        issued_at_ms: s.iat_ms,
    })
}

/// A revocation as published on the channel.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Announcement {
    Token { id: String },
    User { user: String, before: i64 },
}

fn decode_announcement(payload: &[u8]) -> Option<Revocation> {
    match serde_json::from_slice(payload).ok()? {
        Announcement::Token { id } => Some(Revocation::Token { token_id: id }),
        Announcement::User { user, before } => Some(Revocation::User {
            user_id: UserId::parse(&user).ok()?,
            before_ms: before,
        }),
    }
}

fn failed(context: &'static str) -> impl Fn(RedisError) -> AccessStoreError {
    move |e| AccessStoreError::from(StoreFailure::new(context, e))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Tickets in Redis.
#[derive(Clone)]
pub struct RedisTicketStore {
    conn: RedisConn,
    prefix: String,
}

impl RedisTicketStore {
    /// # Errors
    /// `Unavailable` when Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
    ) -> Result<Self, AccessStoreError> {
        let conn = connect(&target.into()).await?;
        Ok(Self {
            conn,
            prefix: key_prefix.to_owned(),
        })
    }

    fn key(&self, ticket: &TokenDigest) -> String {
        format!("{}:ticket:{}", self.prefix, ticket.as_str())
    }
}

#[async_trait]
impl TicketStore for RedisTicketStore {
    async fn put(
        &self,
        ticket: &TokenDigest,
        claims: &TokenClaims,
        ttl: Duration,
    ) -> Result<(), AccessStoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(ticket))
            .arg(encode_claims(claims))
            .arg("PX")
            .arg(millis(ttl))
            .exec_async(&mut conn)
            .await
            .map_err(failed("could not store a ticket"))
    }

    async fn take(&self, ticket: &TokenDigest) -> Result<Option<TokenClaims>, AccessStoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = TAKE
            .key(self.key(ticket))
            .invoke_async(&mut conn)
            .await
            .map_err(failed("could not take a ticket"))?;
        raw.as_deref().map(decode_claims).transpose()
    }
}

/// Revocations in Redis, announced on a channel every instance reads.
pub struct RedisRevocationStore {
    conn: RedisConn,
    prefix: String,
    announce: broadcast::Sender<Revocation>,
    /// Stops the watcher task when the store is dropped.
    _watcher: DropGuard,
}

impl RedisRevocationStore {
    /// Connects, subscribes to the revocation channel (before returning, so
    /// nothing published afterwards is missed) and starts the watcher.
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
    ) -> Result<Self, AccessStoreError> {
        let target = target.into();
        let conn = connect(&target).await?;
        let channel = format!("{key_prefix}:revocations");
        let link = Subscriber::open(&target, &channel).await?;
        let announce = broadcast::channel(REVOCATION_BUFFER).0;
        let cancel = CancellationToken::new();
        let watcher = Watcher {
            target,
            channel,
            announce: announce.clone(),
        };
        tokio::spawn(watcher.run(link, cancel.clone()));
        Ok(Self {
            conn,
            prefix: key_prefix.to_owned(),
            announce,
            _watcher: cancel.drop_guard(),
        })
    }

    fn token_key(&self, token_id: &str) -> String {
        format!("{}:revoked:token:{token_id}", self.prefix)
    }

    fn user_key(&self, user: &UserId) -> String {
        format!("{}:revoked:user:{user}", self.prefix)
    }

    async fn publish(&self, announcement: &Announcement) -> Result<(), AccessStoreError> {
        let mut conn = self.conn.clone();
        let payload = serde_json::to_string(announcement).unwrap_or_default();
        redis::cmd("PUBLISH")
            .arg(format!("{}:revocations", self.prefix))
            .arg(payload)
            .exec_async(&mut conn)
            .await
            .map_err(failed("could not announce a revocation"))
    }
}

#[async_trait]
impl RevocationStore for RedisRevocationStore {
    async fn revoke_token(&self, claims: &TokenClaims) -> Result<(), AccessStoreError> {
        let left = claims.expires_at - chrono::Utc::now().timestamp();
        if left > 0 {
            let mut conn = self.conn.clone();
            let secs = u64::try_from(left).unwrap_or(1);
            redis::cmd("SET")
                .arg(self.token_key(&claims.token_id))
                .arg(1)
                .arg("EX")
                .arg(secs)
                .exec_async(&mut conn)
                .await
                .map_err(failed("could not revoke a token"))?;
        }
        self.publish(&Announcement::Token {
            id: claims.token_id.clone(),
        })
        .await
    }

    async fn revoke_user(
        &self,
        user: &UserId,
        before_ms: i64,
        keep: Duration,
    ) -> Result<(), AccessStoreError> {
        let mut conn = self.conn.clone();
        REVOKE_USER
            .key(self.user_key(user))
            .arg(before_ms)
            .arg(millis(keep))
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(failed("could not revoke a user's tokens"))?;
        self.publish(&Announcement::User {
            user: user.as_str().to_owned(),
            before: before_ms,
        })
        .await
    }

    async fn is_revoked(&self, claims: &TokenClaims) -> Result<bool, AccessStoreError> {
        // Two keys in two slots on a cluster: two commands, sent at once.
        let mut by_id = redis::cmd("GET");
        by_id.arg(self.token_key(&claims.token_id));
        let mut before = redis::cmd("GET");
        before.arg(self.user_key(&claims.user_id));
        let got: Vec<Option<String>> = self
            .conn
            .each(vec![by_id, before])
            .await
            .map_err(failed("could not check a revocation"))?;
        let before = got
            .get(1)
            .cloned()
            .flatten()
            .and_then(|b| b.parse::<i64>().ok());
        Ok(got.first().is_some_and(Option::is_some)
            || before.is_some_and(|b| claims.issued_at_ms < b))
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.announce.subscribe()
    }
}

/// The task that reads the revocation channel for this instance.
struct Watcher {
    target: RedisTarget,
    channel: String,
    announce: broadcast::Sender<Revocation>,
}

impl Watcher {
    async fn run(self, first: Subscriber, cancel: CancellationToken) {
        let mut link = Some(first);
        loop {
            let link = match link.take() {
                Some(link) => link,
                None => match self.reconnect(&cancel).await {
                    Some(link) => link,
                    None => return,
                },
            };
            if self.serve(link, &cancel).await {
                return;
            }
            tracing::warn!("revocation channel lost; reconnecting");
        }
    }

    /// Reads one connection; `true` when cancelled, `false` when it failed.
    async fn serve(&self, mut link: Subscriber, cancel: &CancellationToken) -> bool {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return true,
                msg = link.next() => match msg {
                    Some(Incoming::Message(msg)) => match decode_announcement(msg.get_payload_bytes()) {
                        Some(revocation) => { let _ = self.announce.send(revocation); }
                        None => tracing::warn!("ignoring a malformed revocation announcement"),
                    },
                    // A cluster node's link broke: announcements may be lost.
                    Some(Incoming::NodeLost) => { let _ = self.announce.send(Revocation::Resync); }
                    Some(Incoming::ShardLost(_)) => {}
                    None => return false,
                },
                _ = heartbeat.tick() => {
                    if link.ping().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    async fn reconnect(&self, cancel: &CancellationToken) -> Option<Subscriber> {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            match Subscriber::open(&self.target, &self.channel).await {
                Ok(link) => {
                    tracing::info!("revocation channel reconnected");
                    // Whatever was announced meanwhile was missed: re-check.
                    let _ = self.announce.send(Revocation::Resync);
                    return Some(link);
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain::ErrorChain(&e), "revocation channel reconnect failed")
                }
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_announcements_round_trip() {
        let claims = TokenClaims {
            user_id: UserId::parse("65f1c0ffee0123456789abcd").unwrap(),
            username: Username::parse("alice").unwrap(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_086_400,
            token_id: "abc123".into(),
            issued_at_ms: 1_700_000_000_123,
        };
        assert_eq!(decode_claims(&encode_claims(&claims)).unwrap(), claims);
        assert!(decode_claims("{}").is_err());
        let user = serde_json::to_vec(&Announcement::User {
            user: "u1".into(),
            before: 5,
        })
        .unwrap();
        assert_eq!(
            decode_announcement(&user),
            Some(Revocation::User {
                user_id: UserId::parse("u1").unwrap(),
                before_ms: 5
            })
        );
        assert_eq!(decode_announcement(b"garbage"), None);
    }
}
