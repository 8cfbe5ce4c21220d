//! [`LiveDelivery`] over Redis pub/sub: one channel per session, one pub/sub
//! connection per instance, and a bounded broadcast ring per locally watched
//! session so a slow subscriber only ever lags itself.

use crate::application::ports::SharedEvent;
use crate::application::ports::StoreFailure;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::Script;
use tokio::sync::broadcast;

use super::super::redis_manager::RedisConn;
use chrono::{DateTime, Utc};

use super::codec::encode_batch;
use super::event_log::{PreparedAppend, RedisEventLog};
use super::group_commit::GroupCommit;
use super::pubsub::{Hub, Subscription};
use super::Keys;
use crate::application::ports::{
    Backplane, ConversationStoreError, LiveDelivery, LiveItem, LiveStream, Written,
};
use crate::domain::conversation::ConversationEvent;
use crate::domain::SessionId;

/// KEYS: watchers hash. Sums the counts whose expiry has not passed and drops
/// the others (instances that stopped refreshing).
static COUNT_WATCHERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local count, expiry = string.match(fields[i + 1], '^(%d+) (%d+)$')
  if count and tonumber(expiry) >= now then
    total = total + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return total
",
    )
});

/// A [`LiveDelivery`] over Redis pub/sub; made by
/// [`super::RedisConversations::connect`], whose pub/sub connection it shares.
pub struct RedisLiveDelivery {
    conn: RedisConn,
    keys: Keys,
    hub: Arc<Hub>,
}

impl RedisLiveDelivery {
    pub(super) fn new(conn: RedisConn, keys: Keys, hub: Arc<Hub>) -> Self {
        Self { conn, keys, hub }
    }
}

fn live_stream(subscription: Subscription) -> LiveStream {
    let Subscription { rx, guard } = subscription;
    // The receiver comes first in the state, so it drops before the guard.
    Box::pin(futures_util::stream::unfold(
        (rx, guard),
        |(mut rx, guard)| async move {
            let item = match rx.recv().await {
                Ok(event) => LiveItem::Event(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => LiveItem::Lagged { missed },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((item, (rx, guard)))
        },
    ))
}

#[async_trait]
impl LiveDelivery for RedisLiveDelivery {
    async fn subscribe(&self, session: &SessionId) -> Result<LiveStream, ConversationStoreError> {
        Ok(live_stream(self.hub.shared.subscribe(session).await?))
    }

    async fn publish(
        &self,
        session: &SessionId,
        events: &[SharedEvent],
    ) -> Result<(), ConversationStoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let shared = &self.hub.shared;
        redis::cmd(self.keys.publish_command())
            .arg(self.keys.live(session))
            .arg(encode_batch(shared.instance(), events)?)
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                ConversationStoreError::from(StoreFailure::new("publishing live events", e))
            })?;
        shared.deliver_local(session, events);
        Ok(())
    }

    async fn watchers(&self, session: &SessionId) -> Result<u64, ConversationStoreError> {
        COUNT_WATCHERS
            .key(self.keys.watchers(session))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                ConversationStoreError::from(StoreFailure::new("counting live watchers", e))
            })
    }
}

/// The [`Backplane`] on Redis: the append script publishes the batch itself,
/// so a batch costs one round trip, and this instance's own subscribers get
/// the events as the log returned them, without decoding them again. On a
/// single Redis, writes of many sessions share a call ([`GroupCommit`]).
pub struct RedisBackplane {
    log: RedisEventLog,
    hub: Arc<Hub>,
    group: Option<GroupCommit>,
}

impl RedisBackplane {
    /// `grouped`: whether writes of different sessions may share a call
    /// (a single Redis; not a cluster, where sessions live on other slots).
    pub(super) fn new(log: RedisEventLog, hub: Arc<Hub>, grouped: bool) -> Self {
        let group =
            grouped.then(|| GroupCommit::start(log.clone(), Arc::from(hub.shared.instance())));
        Self { log, hub, group }
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn write(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Written, ConversationStoreError> {
        let shared = &self.hub.shared;
        let events = match &self.group {
            Some(group) => {
                let append = PreparedAppend::new(session, events)?;
                if append.is_empty() {
                    Vec::new()
                } else {
                    group.write(append).await?
                }
            }
            None => {
                self.log
                    .append_and_publish(session, events, Some(shared.instance()))
                    .await?
            }
        };
        shared.deliver_local(session, &events);
        Ok(Written {
            events,
            unpublished: None,
        })
    }
}
