//! The one pub/sub connection of an instance and the task that reads it:
//! live events fanned out to local subscribers, stop requests routed to the
//! generations this instance owns, and the instance's watcher counts kept
//! fresh in Redis.
//!
//! The task owns every Redis (un)subscribe. Local subscribers only record what
//! they want (a broadcast receiver, a mark in `dirty`) and wake the task, which
//! reconciles Redis with that wish in order; so a subscribe racing the last
//! unsubscribe of a session can never leave the channel unsubscribed, and a
//! dropped stream (which cannot await) costs one map update. A lost
//! connection ends every local subscription (events published meanwhile
//! cannot reach them; their connections resume from the log), and the task
//! reconnects with backoff for the subscriptions made after.
//!
//! On a Redis Cluster the session channels are sharded (SSUBSCRIBE, each on
//! the node that holds the session's slot). When a failover moves a slot, its
//! old node drops the subscription itself (a `sunsubscribe` push) and a lost
//! node's messages are gone: the task subscribes again and hands each local
//! subscriber the session's latest logged event, from which it fills any gap
//! from the log (see `refill`), so tabs stay open through a failover.
//!
//! The driver queues incoming messages for the task without bound, so the
//! task never waits on a subscriber: it decodes each message once and hands
//! it to a bounded broadcast ring; its only awaits are Redis round trips, each
//! under a timeout.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::{Msg, RedisError, Script};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::super::redis_manager::{Incoming, RedisConn, RedisTarget, Subscriber, RESPONSE_TIMEOUT};
use super::codec::{decode_batch, split_origin};
use super::refill::refill;
use super::{lock, millis, Keys};
use crate::application::ports::StoreFailure;
use crate::application::ports::{ConversationStoreError, StopStream};
use crate::domain::conversation::LoggedEvent;
use crate::domain::{MessageId, SessionId};

/// Events a subscriber may fall behind by before it is told it lagged.
pub(super) const LIVE_BUFFER: usize = 1024;
/// How long an instance's watcher count stands without a refresh.
const WATCH_TTL: Duration = Duration::from_secs(10);
/// How often the task refreshes its watcher counts and pings its connection.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// How long a subscriber waits for Redis to confirm its channel.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions one instance may watch at once.
const MAX_WATCHED_SESSIONS: usize = 100_000;
/// Channels per SUBSCRIBE, so a resubscription after a reconnect stays polite.
const SUBSCRIBE_CHUNK: usize = 512;
/// Redis commands the task keeps in flight when refreshing many sessions.
const CONCURRENCY: usize = 32;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Stop requests waiting for the owner's listener.
const STOP_QUEUE: usize = 256;
/// Generations one instance may run at once.
const MAX_OWNED: usize = 100_000;
/// How long after its lease lapsed an owned generation is still listened for
/// (its owner may be slow to renew rather than gone).
const OWNED_GRACE: Duration = Duration::from_secs(60);
/// How long after its channel moved a session is refilled at each heartbeat.
const MOVED_REFILL: Duration = Duration::from_secs(10);
/// Tries at checking for stops missed while reconnecting, and the pause between.
const RESYNC_ATTEMPTS: u32 = 4;
const RESYNC_PAUSE: Duration = Duration::from_millis(250);

/// KEYS: watchers hash. ARGV: instance id, count, ttl ms. A count of 0 removes
/// the instance's field; the key lives as long as its freshest field.
/// Returns 1 when the instance's field was not there (its first count, or
/// one lost while it watched: the append script then published nothing to
/// it, see `event_log::APPEND`), else 0.
static SET_WATCHERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return added
",
    )
});

type Events = broadcast::Sender<Arc<LoggedEvent>>;
/// How the task answers a subscriber waiting for its channel.
type Waiter = oneshot::Sender<Result<(), Arc<ConversationStoreError>>>;
type Link = Subscriber;

struct LiveState {
    sessions: HashMap<SessionId, Events>,
    /// Sessions whose local subscriber count changed since the task last looked.
    dirty: HashSet<SessionId>,
    waiters: Vec<Waiter>,
    /// Sessions whose channel Redis dropped (a cluster failover): once
    /// subscribed again, their subscribers get the latest logged event.
    refill: HashSet<SessionId>,
    /// When each session's channel last moved, for the heartbeat's refills.
    moved: HashMap<SessionId, Instant>,
    connected: bool,
    closed: bool,
}

/// What the task and the adapters share.
pub(super) struct Shared {
    keys: Keys,
    stops_channel: String,
    instance: String,
    live: Mutex<LiveState>,
    wake: Notify,
    pub(super) stops: StopRouter,
}

/// A live subscription: the receiver, and the guard that reports its end.
/// The guard is declared second so it drops after the receiver.
pub(super) struct Subscription {
    pub(super) rx: broadcast::Receiver<Arc<LoggedEvent>>,
    pub(super) guard: Unsubscribe,
}

/// The pub/sub side of one instance. Dropping it stops the task.
pub(super) struct Hub {
    pub(super) shared: Arc<Shared>,
    _task: DropGuard,
}

impl Hub {
    /// Opens the pub/sub connection, subscribes to stop requests (before
    /// returning, so none published afterwards is missed) and starts the task.
    pub(super) async fn start(
        target: RedisTarget,
        conn: RedisConn,
        keys: Keys,
    ) -> Result<Self, ConversationStoreError> {
        let shared = Arc::new(Shared::new(keys));
        let link = open_link(&target, &shared.stops_channel).await?;
        let cancel = CancellationToken::new();
        tokio::spawn(run(shared.clone(), target, conn, link, cancel.clone()));
        Ok(Self {
            shared,
            _task: cancel.drop_guard(),
        })
    }
}

/// Stop requests are rare and cluster-wide, so they use a classic channel
/// (on a cluster, Redis forwards it to every node).
async fn open_link(target: &RedisTarget, control: &str) -> Result<Link, ConversationStoreError> {
    Ok(Subscriber::open(target, control).await?)
}

// --------------------------------------------------------------- task

enum Ended {
    Cancelled,
    Lost,
}

async fn run(
    shared: Arc<Shared>,
    target: RedisTarget,
    conn: RedisConn,
    first: Link,
    cancel: CancellationToken,
) {
    let mut link = Some(first);
    loop {
        let link = match link.take() {
            Some(link) => link,
            None => match reconnect(&target, &shared.stops_channel, &cancel).await {
                Some(link) => link,
                None => break,
            },
        };
        match serve(&shared, &conn, link, &cancel).await {
            Ended::Cancelled => break,
            Ended::Lost => shared.lose_link(),
        }
    }
    let watched = shared.close();
    // Best effort: other instances stop counting ours now rather than after WATCH_TTL.
    let gone = watched.into_iter().map(|s| (s, 0)).collect();
    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, write_counts(&shared, &conn, gone)).await;
}

async fn reconnect(
    target: &RedisTarget,
    control: &str,
    cancel: &CancellationToken,
) -> Option<Link> {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        match open_link(target, control).await {
            Ok(link) => {
                tracing::info!("Redis pub/sub reconnected");
                return Some(link);
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "Redis pub/sub reconnect failed"),
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// Reads one connection until it fails or the hub is dropped.
async fn serve(
    shared: &Shared,
    conn: &RedisConn,
    mut link: Link,
    cancel: &CancellationToken,
) -> Ended {
    shared.begin_link();
    shared.stops.resync(conn, &shared.keys).await;
    let mut subscribed = HashSet::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Ended::Cancelled,
            msg = link.next() => match msg {
                Some(Incoming::Message(msg)) => {
                    shared.route(&msg);
                    Ok(())
                }
                Some(Incoming::ShardLost(channel)) => {
                    shared.shard_lost(&channel, &mut subscribed);
                    Ok(())
                }
                Some(Incoming::NodeLost) => {
                    shared.node_lost(&mut subscribed);
                    shared.stops.resync(conn, &shared.keys).await;
                    Ok(())
                }
                None => Err(ConversationStoreError::from(StoreFailure::bare("Redis closed the pub/sub connection"))),
            },
            () = shared.wake.notified() => reconcile(shared, conn, &mut link, &mut subscribed).await,
            _ = heartbeat.tick() => beat(shared, conn, &mut link, &subscribed).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %error_chain(&e), "Redis pub/sub connection lost; reconnecting");
            return Ended::Lost;
        }
    }
}

/// Brings Redis's subscriptions in line with the local subscribers, records
/// the new counts, then answers the subscribers waiting for that.
async fn reconcile(
    shared: &Shared,
    conn: &RedisConn,
    link: &mut Link,
    subscribed: &mut HashSet<SessionId>,
) -> Result<(), ConversationStoreError> {
    let (changes, waiters, refills) = shared.take_changes();
    let channels = |want: bool| -> Vec<String> {
        changes
            .iter()
            .filter(|(s, n)| (*n > 0) == want && subscribed.contains(s) != want)
            .map(|(s, _)| shared.keys.live(s))
            .collect()
    };
    let (to_subscribe, to_unsubscribe) = (channels(true), channels(false));
    if !refills.is_empty() {
        // So the subscriptions go to the slots' new primaries.
        let moved: Vec<String> = refills.iter().map(|s| shared.keys.live(s)).collect();
        link.locate(&moved).await;
    }
    let result = update_subscriptions(link, &to_subscribe, &to_unsubscribe).await;
    if let Err(e) = result {
        // Looked at again after the reconnect, so a count of 0 is still recorded.
        shared.mark_dirty(changes.into_iter().map(|(s, _)| s));
        shared.mark_refill(refills);
        let e = Arc::new(e);
        for waiter in waiters {
            let _ = waiter.send(Err(e.clone()));
        }
        return Err(ConversationStoreError::from(StoreFailure::new(
            "updating subscriptions",
            e,
        )));
    }
    // Sessions watched before this round whose field turns out to be gone
    // missed the batches published meanwhile; the rest are new here.
    let mut refills = refills;
    let mut already = HashSet::new();
    for (session, n) in &changes {
        if *n > 0 {
            if !subscribed.insert(session.clone()) {
                already.insert(session.clone());
            }
        } else {
            subscribed.remove(session);
        }
    }
    // The field is written once Redis confirmed the subscription and before
    // the subscriber is answered (and reads the log): the append script
    // publishes to this instance only from then on (see `event_log::APPEND`).
    let lost = write_counts(shared, conn, changes).await;
    for waiter in waiters {
        let _ = waiter.send(Ok(()));
    }
    refills.extend(lost.into_iter().filter(|s| already.contains(s)));
    if !refills.is_empty() {
        refill(conn, &shared.keys, shared.watched(refills)).await;
    }
    Ok(())
}

async fn update_subscriptions(
    link: &mut Link,
    to_subscribe: &[String],
    to_unsubscribe: &[String],
) -> Result<(), ConversationStoreError> {
    let work = async {
        for chunk in to_subscribe.chunks(SUBSCRIBE_CHUNK) {
            link.subscribe_sessions(chunk).await?;
        }
        // Never an empty UNSUBSCRIBE: that would drop the stop channel too.
        for chunk in to_unsubscribe.chunks(SUBSCRIBE_CHUNK) {
            link.unsubscribe_sessions(chunk).await?;
        }
        Ok::<_, RedisError>(())
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, work).await {
        Ok(result) => result.map_err(|e| {
            ConversationStoreError::from(StoreFailure::new("Redis refused a (un)subscribe", e))
        }),
        Err(elapsed) => Err(ConversationStoreError::from(StoreFailure::new(
            "Redis did not confirm a (un)subscribe in time",
            elapsed,
        ))),
    }
}

/// Checks the connection is alive and refreshes this instance's counts.
async fn beat(
    shared: &Shared,
    conn: &RedisConn,
    link: &mut Link,
    subscribed: &HashSet<SessionId>,
) -> Result<(), ConversationStoreError> {
    link.ping().await?;
    // A resubscription that raced a failover may have missed an answer's
    // last events; handing the latest again costs little and ends that wait.
    let moved = shared.recently_moved();
    if !moved.is_empty() {
        refill(conn, &shared.keys, shared.watched(moved)).await;
    }
    // Only sessions already subscribed here: one whose subscriber is still
    // waiting for `reconcile` has no field yet, and would be taken for one
    // that lost it (a refill handing that new subscriber an event from
    // before it subscribed); `reconcile` writes its field.
    let mut counts = shared.counts();
    counts.retain(|(session, _)| subscribed.contains(session));
    // A field found gone (it expired while this instance could not refresh
    // it, or a failed write) means batches were not published to us: the
    // subscribers fill that gap from the log.
    let lost = write_counts(shared, conn, counts).await;
    if !lost.is_empty() {
        tracing::info!(
            sessions = lost.len(),
            "live watcher records were gone; refilling"
        );
        refill(conn, &shared.keys, shared.watched(lost)).await;
    }
    Ok(())
}

/// Records this instance's subscriber count of each session, and returns
/// the watched sessions whose record was not there before. Failures are
/// logged only: the counts are refreshed on the next heartbeat anyway, which
/// then finds the record missing and refills.
async fn write_counts(
    shared: &Shared,
    conn: &RedisConn,
    counts: Vec<(SessionId, usize)>,
) -> Vec<SessionId> {
    let ttl_ms = millis(WATCH_TTL);
    let results = futures_util::stream::iter(counts)
        .map(|(session, n)| {
            let mut conn = conn.clone();
            let key = shared.keys.watchers(&session);
            async move {
                let added = SET_WATCHERS
                    .key(key)
                    .arg(&shared.instance)
                    .arg(n)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut conn)
                    .await;
                (session, added)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<(SessionId, Result<i64, RedisError>)>>()
        .await;
    let mut added = Vec::new();
    let mut failures = Vec::new();
    for (session, result) in results {
        match result {
            Ok(1) => added.push(session),
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        tracing::warn!(error = %first, failed = failures.len(), "could not record live watcher counts");
    }
    added
}

/// An error with its sources, for one log line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ------------------------------------------------------------- shared

impl Shared {
    fn new(keys: Keys) -> Self {
        let (tx, rx) = mpsc::channel(STOP_QUEUE);
        Self {
            stops_channel: keys.stops_channel(),
            keys,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            live: Mutex::new(LiveState {
                sessions: HashMap::new(),
                dirty: HashSet::new(),
                waiters: Vec::new(),
                refill: HashSet::new(),
                moved: HashMap::new(),
                // `Hub::start` opens the link before anyone can subscribe.
                connected: true,
                closed: false,
            }),
            wake: Notify::new(),
            stops: StopRouter {
                owned: Mutex::new(Owned {
                    leases: HashMap::new(),
                    next_prune: Instant::now(),
                }),
                tx,
                rx: Mutex::new(Some(rx)),
            },
        }
    }

    /// Registers a local subscriber of `session` and waits until Redis
    /// delivers the session's channel to this instance.
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        session: &SessionId,
    ) -> Result<Subscription, ConversationStoreError> {
        let (rx, confirmed) = {
            let mut st = lock(&self.live);
            if st.closed || !st.connected {
                return Err(ConversationStoreError::from(StoreFailure::bare(
                    "Redis pub/sub connection is down",
                )));
            }
            if st.sessions.len() >= MAX_WATCHED_SESSIONS && !st.sessions.contains_key(session) {
                return Err(ConversationStoreError::from(StoreFailure::bare(format!(
                    "this instance already watches {MAX_WATCHED_SESSIONS} sessions"
                ))));
            }
            let rx = st
                .sessions
                .entry(session.clone())
                .or_insert_with(|| broadcast::channel(LIVE_BUFFER).0)
                .subscribe();
            st.dirty.insert(session.clone());
            st.waiters.retain(|w| !w.is_closed());
            let (tx, confirmed) = oneshot::channel();
            st.waiters.push(tx);
            (rx, confirmed)
        };
        // Made at once so that, on failure, the receiver drops before the guard.
        let subscription = Subscription {
            rx,
            guard: Unsubscribe {
                shared: self.clone(),
                session: session.clone(),
            },
        };
        self.wake.notify_one();
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, confirmed).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(e))) => Err(ConversationStoreError::from(StoreFailure::new(
                "subscribing to live events",
                e,
            ))),
            Ok(Err(_)) => Err(ConversationStoreError::from(StoreFailure::bare(
                "the pub/sub reader stopped before confirming",
            ))),
            Err(elapsed) => Err(ConversationStoreError::from(StoreFailure::new(
                "Redis did not confirm the live subscription in time",
                elapsed,
            ))),
        }
    }

    /// This instance's id, which starts every live message it publishes.
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// Hands events this instance just logged and published to its own
    /// subscribers of `session`, which skip the copy Redis sends back: the
    /// writer already holds them decoded.
    pub(super) fn deliver_local(&self, session: &SessionId, events: &[Arc<LoggedEvent>]) {
        let Some(tx) = lock(&self.live).sessions.get(session).cloned() else {
            return;
        };
        for event in events {
            // No receivers left is fine: the last one just went away.
            let _ = tx.send(event.clone());
        }
    }

    /// Hands a message to the local subscribers or the stop router.
    fn route(&self, msg: &Msg) {
        let channel = msg.get_channel_name();
        if channel == self.stops_channel {
            self.stops.route(msg.get_payload_bytes());
            return;
        }
        let (origin, batch) = split_origin(msg.get_payload_bytes());
        if origin == Some(self.instance.as_bytes()) {
            return;
        }
        let Some(session) = self.keys.live_session(channel) else {
            return;
        };
        let Some(tx) = lock(&self.live).sessions.get(&session).cloned() else {
            return;
        };
        match decode_batch(batch) {
            Ok(events) => {
                for event in events {
                    // No receivers left is fine: the last one just went away.
                    let _ = tx.send(Arc::new(event));
                }
            }
            Err(e) => {
                tracing::warn!(%session, error = %error_chain(&e), "dropped an undecodable live message")
            }
        }
    }

    /// Redis dropped `channel` (its slot moved in a failover): subscribe it
    /// again, then hand its subscribers the latest event so they fill the gap.
    fn shard_lost(&self, channel: &str, subscribed: &mut HashSet<SessionId>) {
        let Some(session) = self.keys.live_session(channel) else {
            return;
        };
        // Also the confirmation of our own SUNSUBSCRIBE: then nobody wants it.
        if !subscribed.remove(&session) {
            return;
        }
        let mut st = lock(&self.live);
        if st.closed || !st.sessions.contains_key(&session) {
            st.dirty.insert(session);
            return;
        }
        tracing::info!(%session, "Redis moved a session's channel; subscribing again");
        st.refill.insert(session.clone());
        st.moved.insert(session.clone(), Instant::now());
        st.dirty.insert(session);
        drop(st);
        self.wake.notify_one();
    }

    /// A cluster node's link broke: whatever it was to push meanwhile is
    /// lost, so every watched session is subscribed again and refilled.
    fn node_lost(&self, subscribed: &mut HashSet<SessionId>) {
        tracing::warn!("a Redis Cluster node's link broke; subscribing again");
        subscribed.clear();
        let mut st = lock(&self.live);
        let all: Vec<SessionId> = st.sessions.keys().cloned().collect();
        st.refill.extend(all.iter().cloned());
        let now = Instant::now();
        st.moved.extend(all.iter().map(|s| (s.clone(), now)));
        st.dirty.extend(all);
        drop(st);
        self.wake.notify_one();
    }

    /// The broadcast rings of those of `sessions` still watched here.
    fn watched(&self, sessions: Vec<SessionId>) -> Vec<(SessionId, Events)> {
        let st = lock(&self.live);
        sessions
            .into_iter()
            .filter_map(|s| st.sessions.get(&s).cloned().map(|tx| (s, tx)))
            .collect()
    }

    /// Sessions whose channel moved within [`MOVED_REFILL`].
    fn recently_moved(&self) -> Vec<SessionId> {
        let mut st = lock(&self.live);
        st.moved.retain(|_, at| at.elapsed() < MOVED_REFILL);
        st.moved.keys().cloned().collect()
    }

    fn mark_refill(&self, sessions: Vec<SessionId>) {
        let mut st = lock(&self.live);
        if !st.closed {
            st.refill.extend(sessions);
        }
    }

    fn mark_dirty(&self, sessions: impl IntoIterator<Item = SessionId>) {
        let mut st = lock(&self.live);
        if !st.closed {
            st.dirty.extend(sessions);
        }
    }

    /// A fresh connection: every watched session must be subscribed again.
    fn begin_link(&self) {
        let mut st = lock(&self.live);
        st.connected = true;
        let all: Vec<SessionId> = st.sessions.keys().cloned().collect();
        st.dirty.extend(all);
        drop(st);
        self.wake.notify_one();
    }

    /// The link is gone: waiting subscribers are refused, and every local
    /// subscription ends (after what it already holds), as the port promises
    /// of a cut subscription. Kept open, they would wait in silence for events
    /// that cannot come: whatever is published meanwhile never reaches this
    /// instance, and an answer whose store died never logs its end.
    fn lose_link(&self) {
        let (waiters, cut) = {
            let mut st = lock(&self.live);
            st.connected = false;
            let cut: Vec<(SessionId, Events)> = st.sessions.drain().collect();
            (std::mem::take(&mut st.waiters), cut)
        };
        // Dropped outside the lock: the receivers' guards take it.
        drop(cut);
        let e = Arc::new(ConversationStoreError::from(StoreFailure::bare(
            "Redis pub/sub connection lost",
        )));
        for waiter in waiters {
            let _ = waiter.send(Err(e.clone()));
        }
    }

    /// Ends every local subscription; returns the sessions that had any.
    fn close(&self) -> Vec<SessionId> {
        let mut st = lock(&self.live);
        st.closed = true;
        st.connected = false;
        st.dirty.clear();
        st.waiters.clear();
        st.sessions.drain().map(|(s, _)| s).collect()
    }

    /// The dirty sessions with their current local counts, the waiters, and
    /// the sessions to refill once subscribed.
    #[allow(clippy::type_complexity)]
    fn take_changes(&self) -> (Vec<(SessionId, usize)>, Vec<Waiter>, Vec<SessionId>) {
        let mut st = lock(&self.live);
        let dirty = std::mem::take(&mut st.dirty);
        let changes = dirty
            .into_iter()
            .map(|s| {
                let n = st.sessions.get(&s).map_or(0, |tx| tx.receiver_count());
                (s, n)
            })
            .collect();
        let refills = std::mem::take(&mut st.refill).into_iter().collect();
        (changes, std::mem::take(&mut st.waiters), refills)
    }

    fn counts(&self) -> Vec<(SessionId, usize)> {
        lock(&self.live)
            .sessions
            .iter()
            .map(|(s, tx)| (s.clone(), tx.receiver_count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Reports the end of a subscription to the task.
pub(super) struct Unsubscribe {
    shared: Arc<Shared>,
    session: SessionId,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.live);
        if st
            .sessions
            .get(&self.session)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            st.sessions.remove(&self.session);
        }
        if !st.closed {
            st.dirty.insert(self.session.clone());
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}

// --------------------------------------------------------------- stops

struct Owned {
    /// Each generation this instance started, with when its lease lapses.
    leases: HashMap<(SessionId, MessageId), Instant>,
    next_prune: Instant,
}

/// Delivers stop requests to this instance's listener, for the generations
/// this instance runs and no others.
pub(super) struct StopRouter {
    owned: Mutex<Owned>,
    tx: mpsc::Sender<(SessionId, MessageId)>,
    rx: Mutex<Option<mpsc::Receiver<(SessionId, MessageId)>>>,
}

impl StopRouter {
    /// Records (or renews) a generation this instance runs until `lease` from now.
    pub(super) fn own(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<(), ConversationStoreError> {
        let now = Instant::now();
        let mut owned = lock(&self.owned);
        if owned.leases.len() > 1024 && owned.next_prune <= now {
            owned.next_prune = now + Duration::from_secs(1);
            owned.leases.retain(|_, until| *until + OWNED_GRACE > now);
        }
        let key = (session.clone(), message_id.clone());
        if owned.leases.len() >= MAX_OWNED && !owned.leases.contains_key(&key) {
            return Err(ConversationStoreError::from(StoreFailure::bare(format!(
                "this instance already runs {MAX_OWNED} generations"
            ))));
        }
        owned.leases.insert(key, now + lease);
        Ok(())
    }

    pub(super) fn disown(&self, session: &SessionId, message_id: &MessageId) {
        lock(&self.owned)
            .leases
            .remove(&(session.clone(), message_id.clone()));
    }

    /// The listener's stream; only the first call gets the requests.
    pub(super) fn stream(&self) -> StopStream {
        match lock(&self.rx).take() {
            Some(rx) => Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })),
            None => Box::pin(futures_util::stream::empty()),
        }
    }

    /// A message on the stop channel: `session message-id`.
    fn route(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload).ok().and_then(|text| {
            let (session, message_id) = text.split_once(' ')?;
            Some((
                SessionId::parse(session).ok()?,
                MessageId::parse(message_id).ok()?,
            ))
        });
        match parsed {
            Some((session, message_id)) => self.deliver(session, message_id),
            None => tracing::warn!(
                payload = %String::from_utf8_lossy(payload),
                "ignored a malformed stop request"
            ),
        }
    }

    fn deliver(&self, session: SessionId, message_id: MessageId) {
        let key = (session, message_id);
        if !lock(&self.owned).leases.contains_key(&key) {
            return;
        }
        if self.tx.try_send(key).is_err() {
            tracing::warn!("stop request dropped: the listener is not keeping up or is gone");
        }
    }

    /// Delivers the stops requested while the pub/sub link was down. The
    /// command connection usually went down with it and reconnects on its
    /// first failure, so failed checks are retried a few times.
    async fn resync(&self, conn: &RedisConn, keys: &Keys) {
        let mut pending: Vec<(SessionId, MessageId)> =
            lock(&self.owned).leases.keys().cloned().collect();
        for attempt in 1..=RESYNC_ATTEMPTS {
            if pending.is_empty() {
                return;
            }
            if attempt > 1 {
                tokio::time::sleep(RESYNC_PAUSE).await;
            }
            let mut failed = Vec::new();
            for (session, message_id, got) in check_stops(conn, keys, pending).await {
                match got {
                    Ok(Some(stopped)) if stopped == message_id.as_str() => {
                        self.deliver(session, message_id)
                    }
                    Ok(_) => {}
                    Err(e) => failed.push((session, message_id, e)),
                }
            }
            if let (Some((_, _, e)), true) = (failed.first(), attempt == RESYNC_ATTEMPTS) {
                tracing::warn!(error = %e, unchecked = failed.len(), "could not check for missed stops");
            }
            pending = failed.into_iter().map(|(s, m, _)| (s, m)).collect();
        }
    }
}

/// The stop flag of each generation's session.
async fn check_stops(
    conn: &RedisConn,
    keys: &Keys,
    generations: Vec<(SessionId, MessageId)>,
) -> Vec<(SessionId, MessageId, Result<Option<String>, RedisError>)> {
    futures_util::stream::iter(generations)
        .map(|(session, message_id)| {
            let mut conn = conn.clone();
            let key = keys.stop(&session);
            async move {
                let got = redis::cmd("GET").arg(key).query_async(&mut conn).await;
                (session, message_id, got)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> StopRouter {
        Shared::new(Keys::new("t", false).unwrap()).stops
    }

    #[tokio::test]
    async fn stops_reach_only_owned_generations() {
        let stops = router();
        let mut stream = stops.stream();
        let s = SessionId::parse("sess_a").unwrap();
        let (mine, other) = (
            MessageId::parse("msg_1").unwrap(),
            MessageId::parse("msg_2").unwrap(),
        );
        stops.own(&s, &mine, Duration::from_secs(30)).unwrap();
        stops.route(b"sess_a msg_2");
        stops.route(b"garbage");
        stops.route(&[0xff, 0x20]);
        stops.route(b"sess_a msg_1");
        assert_eq!(stream.next().await, Some((s.clone(), mine.clone())));
        stops.disown(&s, &mine);
        stops.route(b"sess_a msg_1");
        stops.own(&s, &other, Duration::from_secs(30)).unwrap();
        stops.route(b"sess_a msg_2");
        assert_eq!(stream.next().await, Some((s, other)));
        assert!(stops.stream().next().await.is_none(), "one listener only");
    }

    #[test]
    fn error_chains_name_every_cause() {
        let e = ConversationStoreError::from(StoreFailure::new(
            "outer",
            std::io::Error::other("inner"),
        ));
        assert_eq!(
            error_chain(&e),
            "conversation store unavailable: outer: inner"
        );
    }
}
