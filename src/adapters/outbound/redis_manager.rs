//! How every Redis adapter keeps its connection: one server or a Redis
//! Cluster behind one connection type, bounded timeouts, and a reconnect
//! policy that fails a request fast while Redis is down.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, FromRedisValue, Msg, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;

use crate::application::ports::StoreFailure;

/// How long start-up waits for the first PING to be answered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Per-command bound, so a stuck Redis fails a request instead of hanging it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The driver's default, six reconnect attempts with exponential backoff,
/// keeps every command waiting ~9.5 s while Redis is down. One quick retry
/// fails a request within a couple of seconds instead; the next request tries
/// to reconnect again, so service resumes as soon as Redis answers.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
        .set_pipeline_buffer_size(PIPELINE_BUFFER)
}

/// Commands queued for a connection's driver. With the driver's default (50),
/// 1000 chats starting at once on one instance (`run-w.sh BIN w2redis 1000`)
/// wedged the shared conversation connection in 3 runs of 3 (and 500 chats
/// in about 1 run of 3, before and after the one-script backplane): from the
/// first seconds on, every command on it timed out while Redis sat idle and
/// answered everyone else, so every answer of the instance hung until a
/// restart. With 4096, 0 wedges in 3 runs at 1000. The cause inside the
/// driver is not found; a queue this size is a few tens of KiB of pointers.
const PIPELINE_BUFFER: usize = 4096;

/// Where Redis is: one server (`REDIS_URL`), or the seed nodes of a Redis
/// Cluster (`REDIS_CLUSTER_URLS`). The URLs may carry passwords, so they are
/// never put in errors or logs.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisTarget::Single(<url>)"),
            Self::Cluster(urls) => write!(f, "RedisTarget::Cluster(<{} urls>)", urls.len()),
        }
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(target: &RedisTarget) -> Self {
        target.clone()
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> Self {
        Self::Single(url.to_owned())
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> Self {
        Self::Single(url.clone())
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> Self {
        Self::Single(url)
    }
}

/// One command connection to either kind of Redis. Clones share it. A
/// cluster connection routes each command by its first key's slot, follows
/// MOVED and ASK, refreshes its slot map after a failover and reconnects
/// lost nodes; every command and script the adapters send touches one slot.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether this is a Redis Cluster, whose scripts must stay in one slot
    /// and whose per-session channels are sharded.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs commands that may live in different slots, concurrently (a
    /// pipeline must stay in one slot on a cluster); replies in order.
    ///
    /// # Errors
    /// The first command's failure, if any failed.
    pub async fn each<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
        let calls = cmds.into_iter().map(|cmd| {
            let mut conn = self.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A cluster client with the same bounds as [`manager_config`]: a command
/// fails within seconds while its slot has no reachable primary, and MOVED,
/// ASK and TRYAGAIN during a failover are retried a few times, briefly.
fn cluster_client(
    urls: &[String],
    push: Option<mpsc::UnboundedSender<PushInfo>>,
) -> RedisResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(800);
    if let Some(push) = push {
        // Pushes (pub/sub messages, and word of a node's lost link) need RESP3.
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder.build()
}

/// Retries of one cluster command: enough to ride out a manual failover
/// (a second or two of MOVED and TRYAGAIN), few enough to fail fast.
const CLUSTER_RETRIES: u32 = 8;

/// Opens a command connection and checks that Redis answers a PING within
/// [`CONNECT_TIMEOUT`].
///
/// # Errors
/// A [`StoreFailure`] without the URL when a URL is invalid or Redis does
/// not answer.
pub async fn connect(target: &RedisTarget) -> Result<RedisConn, StoreFailure> {
    let attempt = async {
        let mut conn = match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                RedisConn::Single(
                    ConnectionManager::new_with_config(client, manager_config()).await?,
                )
            }
            RedisTarget::Cluster(urls) => {
                RedisConn::Cluster(cluster_client(urls, None)?.get_async_connection().await?)
            }
        };
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, RedisError>(conn)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreFailure::new("Redis did not answer PING", e)),
        Err(elapsed) => Err(StoreFailure::new(
            format!(
                "Redis did not answer PING within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            elapsed,
        )),
    }
}

/// What a subscriber connection hears.
pub enum Incoming {
    /// A message on a channel (sharded or not).
    Message(Msg),
    /// Redis dropped a sharded subscription itself: its slot moved to
    /// another node (a failover), so messages published meanwhile may be lost.
    ShardLost(String),
    /// A cluster node's link broke; the driver reconnects and subscribes
    /// again, but messages published meanwhile may be lost.
    NodeLost,
}

/// A pub/sub connection: a dedicated one to a single Redis, or a cluster
/// connection whose nodes push messages over RESP3 (the driver subscribes
/// again after a reconnect or a slot move it learns of).
pub enum Subscriber {
    Single(PubSubSink, PubSubStream),
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>),
}

impl Subscriber {
    /// Connects and subscribes to the (classic, cluster-wide) `channel`
    /// before returning, so nothing published on it afterwards is missed.
    ///
    /// # Errors
    /// A [`StoreFailure`] when Redis does not answer within [`CONNECT_TIMEOUT`].
    pub async fn open(target: &RedisTarget, channel: &str) -> Result<Self, StoreFailure> {
        let attempt = async {
            match target {
                RedisTarget::Single(url) => {
                    let mut pubsub = redis::Client::open(url.as_str())?
                        .get_async_pubsub()
                        .await?;
                    pubsub.subscribe(channel).await?;
                    let (sink, stream) = pubsub.split();
                    Ok::<_, RedisError>(Self::Single(sink, stream))
                }
                RedisTarget::Cluster(urls) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let mut conn = cluster_client(urls, Some(tx))?
                        .get_async_connection()
                        .await?;
                    conn.subscribe(channel).await?;
                    Ok(Self::Cluster(conn, rx))
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(StoreFailure::new("Redis pub/sub connection failed", e)),
            Err(elapsed) => Err(StoreFailure::new(
                format!(
                    "Redis pub/sub did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
                elapsed,
            )),
        }
    }

    /// The next thing heard; `None` when the connection is gone for good
    /// (a single Redis's link broke: open a new one).
    pub async fn next(&mut self) -> Option<Incoming> {
        match self {
            Self::Single(_, stream) => stream.next().await.map(Incoming::Message),
            Self::Cluster(_, rx) => loop {
                let push = rx.recv().await?;
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(msg) = Msg::from_push_info(push) {
                            return Some(Incoming::Message(msg));
                        }
                    }
                    PushKind::SUnsubscribe => {
                        if let Some(Value::BulkString(channel)) = push.data.first() {
                            return Some(Incoming::ShardLost(
                                String::from_utf8_lossy(channel).into_owned(),
                            ));
                        }
                    }
                    PushKind::Disconnection => return Some(Incoming::NodeLost),
                    _ => {}
                }
            },
        }
    }

    /// Checks the link is alive (a single Redis's; a cluster connection
    /// watches its nodes itself, so any node answering will do).
    ///
    /// # Errors
    /// The driver's error, or a timeout after [`RESPONSE_TIMEOUT`].
    pub async fn ping(&mut self) -> Result<(), StoreFailure> {
        let ping = async {
            match self {
                Self::Single(sink, _) => sink.ping::<Value>().await.map(|_| ()),
                Self::Cluster(conn, _) => redis::cmd("PING").query_async::<()>(conn).await,
            }
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreFailure::new("pub/sub PING failed", e)),
            Err(elapsed) => Err(StoreFailure::new("pub/sub PING unanswered", elapsed)),
        }
    }

    /// On a cluster, brings the slot map of `channels` up to date before
    /// subscribing to them again after a failover: a replica accepts a
    /// SSUBSCRIBE without redirecting it, so a stale map would subscribe on
    /// the demoted primary. A keyed read on the channel's name is redirected
    /// (MOVED), which makes the driver refresh its map. Best effort.
    pub async fn locate(&mut self, channels: &[String]) {
        let Self::Cluster(conn, _) = self else {
            return;
        };
        for channel in channels {
            let _ = redis::cmd("EXISTS")
                .arg(channel)
                .query_async::<i64>(&mut *conn)
                .await;
        }
    }

    /// Subscribes to per-session channels: classic ones on a single Redis,
    /// sharded ones (each on the node of its slot) on a cluster.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn subscribe_sessions(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(sink, _) => sink.subscribe(channels).await,
            Self::Cluster(conn, _) => {
                // One slot per SSUBSCRIBE: the channels of a batch may live anywhere.
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    /// Undoes [`Self::subscribe_sessions`]; never called with no channel
    /// (an empty UNSUBSCRIBE would drop every channel).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn unsubscribe_sessions(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(sink, _) => sink.unsubscribe(channels).await,
            Self::Cluster(conn, _) => {
                for channel in channels {
                    conn.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }
}
