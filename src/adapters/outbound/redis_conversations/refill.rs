//! Refilling subscribers after Redis dropped their session's channel (a
//! Redis Cluster failover moved its slot, or a node's link broke): the
//! session's latest logged event is handed to them once the channel is
//! subscribed again. A subscriber that already has it ignores it (its seq is
//! not new); one that missed events sees a seq beyond the next it expects and
//! reads the gap from the log, exactly as after any lost message. Without it,
//! a subscriber that missed the last events of an answer would wait for
//! events that never come.

use std::sync::{Arc, LazyLock};

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::broadcast;

use super::super::redis_manager::RedisConn;
use super::codec::decode_entry;
use super::Keys;
use crate::domain::conversation::{LoggedEvent, Seq};
use crate::domain::SessionId;

/// A locally watched session's broadcast ring.
type Events = broadcast::Sender<Arc<LoggedEvent>>;

/// Sessions refilled at once.
const CONCURRENCY: usize = 32;

/// KEYS: log, head. The head seq and the newest entry, or nil for an empty log.
static LATEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local head = redis.call('GET', KEYS[2])
if not head then return false end
local entry = redis.call('LINDEX', KEYS[1], -1)
if not entry then return false end
return { tonumber(head), entry }
",
    )
});

/// Hands each session's subscribers its latest logged event. Failures are
/// logged: the subscribers then catch up at the next event, as before.
pub(super) async fn refill(conn: &RedisConn, keys: &Keys, sessions: Vec<(SessionId, Events)>) {
    futures_util::stream::iter(sessions)
        .for_each_concurrent(CONCURRENCY, |(session, tx)| async move {
            let got: Result<Option<(Seq, Vec<u8>)>, _> = LATEST
                .key(keys.log(&session))
                .key(keys.head(&session))
                .invoke_async(&mut conn.clone())
                .await;
            match got {
                Ok(Some((seq, raw))) => match decode_entry(&raw, seq) {
                    // No receivers left is fine: the last one just went away.
                    Ok(event) => drop(tx.send(Arc::new(event))),
                    Err(e) => tracing::warn!(%session, error = %crate::error_chain::ErrorChain(&e), "could not decode the latest event"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%session, error = %e, "could not read the latest event"),
            }
        })
        .await;
}
