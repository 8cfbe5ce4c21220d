//! The conversation ports in process memory, for a single instance: the event
//! log, live delivery (a bounded queue per subscriber), the backplane that
//! writes to both, and the generation registry. No serialisation and no
//! extra hop: a published event is an `Arc` every local subscriber shares.
//!
//! Memory bound: a session's log holds at most `2 × limit` events, each at most
//! 16 KiB of token or one chat message, and is forgotten after `ttl` without
//! activity, so the whole log is bounded by the number of live sessions (which
//! the session store bounds) times that. A subscriber's queue holds at most
//! [`LIVE_BUFFER`] shared (`Arc`) events; a session without one costs nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::adapters::queue::{self, PushError};
use crate::application::ports::{
    AbandonedGeneration, AcceptedClientMessage, Backplane, ConversationStoreError, EventLog,
    GenerationRegistry, LiveDelivery, LiveItem, LiveStream, LogSlice, SharedEvent, StartOutcome,
    StopStream, Written, CLIENT_MESSAGE_IDS_KEPT,
};
use crate::domain::conversation::{ClientMessageId, ConversationEvent, LoggedEvent, Seq};
use crate::domain::{MessageId, SessionId};

/// Events a subscriber may fall behind by before it is told it lagged.
pub const LIVE_BUFFER: usize = 256;

/// The hasher of the maps keyed by session: seeded per process like std's
/// (a client chooses the ids it resumes), but several times cheaper than
/// SipHash, and every token is hashed four times on its way through here.
type SessionHasher = foldhash::fast::RandomState;

/// A mutex poisoned by a panic elsewhere still guards consistent data here
/// (every critical section is a few infallible map operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Independent locks for disjoint sets of sessions. Generations of different
/// sessions then never wait for each other; on a busy two-core machine one
/// global lock showed up as latency spikes whenever its holder was preempted.
struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
    hasher: SessionHasher,
}

/// Enough that two workers rarely meet on one lock; small enough to sweep.
const SHARDS: usize = 32;

impl<T: Default> Sharded<T> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(T::default())).collect(),
            hasher: SessionHasher::default(),
        }
    }

    fn of(&self, session: &SessionId) -> MutexGuard<'_, T> {
        use std::hash::BuildHasher as _;
        let i = (self.hasher.hash_one(session) as usize) % self.shards.len();
        lock(&self.shards[i])
    }
}

// ------------------------------------------------------------------ log

struct SessionLog {
    events: VecDeque<SharedEvent>,
    head: Seq,
    client_ids: VecDeque<(ClientMessageId, AcceptedClientMessage)>,
    last_used: Instant,
}

struct LogState {
    sessions: HashMap<SessionId, SessionLog, SessionHasher>,
    last_sweep: Instant,
}

impl Default for LogState {
    fn default() -> Self {
        Self {
            sessions: HashMap::default(),
            last_sweep: Instant::now(),
        }
    }
}

/// [`EventLog`] in memory.
pub struct InMemoryEventLog {
    limit: usize,
    ttl: Duration,
    state: Sharded<LogState>,
}

impl InMemoryEventLog {
    /// Keeps at least `limit` (at least 1) and at most `2 × limit` events per
    /// session, for `ttl` after the session's last append or read.
    pub fn new(limit: usize, ttl: Duration) -> Self {
        Self {
            limit: limit.max(1),
            ttl,
            state: Sharded::new(),
        }
    }

    /// Forgets logs idle for longer than the TTL, at most every TTL/8.
    fn sweep(&self, state: &mut LogState, now: Instant) {
        let every = (self.ttl / 8).max(Duration::from_secs(1));
        if now.duration_since(state.last_sweep) < every {
            return;
        }
        state.last_sweep = now;
        let ttl = self.ttl;
        state
            .sessions
            .retain(|_, log| now.duration_since(log.last_used) < ttl);
    }
}

impl SessionLog {
    fn new(now: Instant) -> Self {
        Self {
            events: VecDeque::new(),
            head: 0,
            client_ids: VecDeque::new(),
            last_used: now,
        }
    }

    fn remember_client_id(&mut self, logged: &LoggedEvent) {
        if let ConversationEvent::UserMessage {
            message_id,
            client_message_id: Some(id),
            ..
        } = &logged.event
        {
            let accepted = AcceptedClientMessage {
                message_id: message_id.clone(),
                seq: logged.seq,
            };
            self.client_ids.push_back((id.clone(), accepted));
            if self.client_ids.len() > CLIENT_MESSAGE_IDS_KEPT {
                self.client_ids.pop_front();
            }
        }
    }
}

impl InMemoryEventLog {
    /// [`EventLog::append`], which here never waits nor fails.
    fn append_now(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Vec<SharedEvent> {
        let now = Instant::now();
        let mut state = self.state.of(session);
        self.sweep(&mut state, now);
        let log = state
            .sessions
            .entry(session.clone())
            .or_insert_with(|| SessionLog::new(now));
        log.last_used = now;
        let mut stored = Vec::with_capacity(events.len());
        for (at, event) in events {
            log.head += 1;
            let logged = Arc::new(LoggedEvent {
                seq: log.head,
                at,
                event,
            });
            log.remember_client_id(&logged);
            log.events.push_back(logged.clone());
            stored.push(logged);
        }
        if log.events.len() > 2 * self.limit {
            let excess = log.events.len() - self.limit;
            log.events.drain(..excess);
        }
        stored
    }
}

#[async_trait]
impl EventLog for InMemoryEventLog {
    async fn append(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Vec<SharedEvent>, ConversationStoreError> {
        Ok(self.append_now(session, events))
    }

    async fn read_after(
        &self,
        session: &SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<LogSlice, ConversationStoreError> {
        let mut state = self.state.of(session);
        let Some(log) = state.sessions.get_mut(session) else {
            return Ok(LogSlice {
                events: Vec::new(),
                head: 0,
                oldest: 1,
            });
        };
        log.last_used = Instant::now();
        let oldest = log.events.front().map_or(log.head + 1, |e| e.seq);
        // Seqs are consecutive, so the position of `after + 1` is arithmetic.
        // `after` is the client's (`afterSeq`, `lastSeq`): saturate, so
        // `u64::MAX` is past everything rather than an overflow to seq 0.
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        let events = log.events.iter().skip(skip).take(limit).cloned().collect();
        Ok(LogSlice {
            events,
            head: log.head,
            oldest,
        })
    }

    async fn head(&self, session: &SessionId) -> Result<Seq, ConversationStoreError> {
        Ok(self
            .state
            .of(session)
            .sessions
            .get(session)
            .map_or(0, |l| l.head))
    }

    async fn accepted_client_message(
        &self,
        session: &SessionId,
        id: &ClientMessageId,
    ) -> Result<Option<AcceptedClientMessage>, ConversationStoreError> {
        Ok(self
            .state
            .of(session)
            .sessions
            .get(session)
            .and_then(|log| {
                log.client_ids
                    .iter()
                    .rev()
                    .find(|(known, _)| known == id)
                    .map(|(_, accepted)| accepted.clone())
            }))
    }

    async fn erase(&self, session: &SessionId) -> Result<(), ConversationStoreError> {
        self.state.of(session).sessions.remove(session);
        Ok(())
    }
}

// ----------------------------------------------------------------- live

/// One subscriber's own bounded queue. When it is full the subscriber has
/// fallen behind: its sender is dropped and `lagged` set, so it reads what it
/// has, then [`LiveItem::Lagged`], then the end.
struct Subscriber {
    id: u64,
    tx: queue::Sender<Arc<LoggedEvent>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Hub {
    sessions: HashMap<SessionId, Vec<Subscriber>, SessionHasher>,
    next_id: u64,
}

/// [`LiveDelivery`] in memory: each session's subscribers, each with its own
/// queue of [`LIVE_BUFFER`] events, so a stalled tab never slows the
/// generation or the other tabs. A session with no subscriber costs nothing.
pub struct InMemoryLiveDelivery {
    hub: Arc<Sharded<Hub>>,
}

impl Default for InMemoryLiveDelivery {
    fn default() -> Self {
        Self {
            hub: Arc::new(Sharded::new()),
        }
    }
}

/// One subscriber's live stream: its queue's events, then
/// [`LiveItem::Lagged`] once if it fell behind, then the end. Written out
/// rather than `stream::unfold`, which keeps its state and its pending future
/// side by side in every idle socket's subscription.
struct Subscription {
    rx: queue::Receiver<Arc<LoggedEvent>>,
    lagged: Arc<AtomicBool>,
    /// `None` once the stream has ended.
    guard: Option<Unsubscribe>,
}

impl futures_util::Stream for Subscription {
    type Item = LiveItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LiveItem>> {
        use std::task::Poll;
        if self.guard.is_none() {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.rx.poll_pop(cx)) {
            Some(event) => Poll::Ready(Some(LiveItem::Event(event))),
            None if self.lagged.load(Ordering::Acquire) => {
                // Said once; the next poll ends the stream.
                self.guard = None;
                Poll::Ready(Some(LiveItem::Lagged { missed: 0 }))
            }
            None => {
                self.guard = None;
                Poll::Ready(None)
            }
        }
    }
}

/// Removes the subscriber from its session when its stream is dropped.
struct Unsubscribe {
    hub: Arc<Sharded<Hub>>,
    session: SessionId,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut hub = self.hub.of(&self.session);
        if let Some(subs) = hub.sessions.get_mut(&self.session) {
            subs.retain(|s| s.id != self.id);
            if subs.is_empty() {
                hub.sessions.remove(&self.session);
            }
        }
    }
}

#[async_trait]
impl LiveDelivery for InMemoryLiveDelivery {
    async fn subscribe(&self, session: &SessionId) -> Result<LiveStream, ConversationStoreError> {
        let (tx, rx) = queue::bounded(LIVE_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = {
            let mut hub = self.hub.of(session);
            hub.next_id += 1;
            let id = hub.next_id;
            // Room for one: a session is nearly always watched by one tab,
            // and the default first growth (to four) is ~70 B more in every
            // idle socket.
            hub.sessions
                .entry(session.clone())
                .or_insert_with(|| Vec::with_capacity(1))
                .push(Subscriber {
                    id,
                    tx,
                    lagged: lagged.clone(),
                });
            id
        };
        let guard = Unsubscribe {
            hub: self.hub.clone(),
            session: session.clone(),
            id,
        };
        Ok(Box::pin(Subscription {
            rx,
            lagged,
            guard: Some(guard),
        }))
    }

    async fn publish(
        &self,
        session: &SessionId,
        events: &[SharedEvent],
    ) -> Result<(), ConversationStoreError> {
        self.publish_now(session, events);
        Ok(())
    }

    async fn watchers(&self, session: &SessionId) -> Result<u64, ConversationStoreError> {
        Ok(self
            .hub
            .of(session)
            .sessions
            .get(session)
            .map_or(0, |subs| subs.len() as u64))
    }
}

impl InMemoryLiveDelivery {
    /// [`LiveDelivery::publish`], which here never waits nor fails.
    fn publish_now(&self, session: &SessionId, events: &[SharedEvent]) {
        let mut hub = self.hub.of(session);
        let Some(subs) = hub.sessions.get_mut(session) else {
            return;
        };
        for event in events {
            subs.retain(|sub| match sub.tx.try_push(event.clone()) {
                Ok(()) => true,
                Err(PushError::Full) => {
                    sub.lagged.store(true, Ordering::Release);
                    sub.tx.close();
                    false
                }
                Err(PushError::Closed) => false,
            });
        }
    }
}

// ------------------------------------------------------------ backplane

/// [`Backplane`] of the in-memory log and live delivery: the append, then
/// the publish of what it stored, as [`LogThenPublish`] does, but called
/// directly rather than through the ports: neither half ever waits here,
/// and through the ports each would cost a boxed future per batch (mostly
/// one token).
///
/// [`LogThenPublish`]: super::log_then_publish::LogThenPublish
pub struct InMemoryBackplane {
    log: Arc<InMemoryEventLog>,
    live: Arc<InMemoryLiveDelivery>,
}

impl InMemoryBackplane {
    pub fn new(log: Arc<InMemoryEventLog>, live: Arc<InMemoryLiveDelivery>) -> Self {
        Self { log, live }
    }
}

#[async_trait]
impl Backplane for InMemoryBackplane {
    async fn write(
        &self,
        session: &SessionId,
        events: Vec<(DateTime<Utc>, ConversationEvent)>,
    ) -> Result<Written, ConversationStoreError> {
        let events = self.log.append_now(session, events);
        self.live.publish_now(session, &events);
        Ok(Written {
            events,
            unpublished: None,
        })
    }
}

// ------------------------------------------------------------- registry

struct Lease {
    message_id: MessageId,
    expires: Instant,
}

/// [`GenerationRegistry`] in memory. With one instance every generation is
/// local, so a stop request is delivered straight to the owner's listener.
pub struct InMemoryGenerationRegistry {
    leases: Mutex<HashMap<SessionId, Lease>>,
    stops: mpsc::Sender<(SessionId, MessageId)>,
    stop_rx: Mutex<Option<mpsc::Receiver<(SessionId, MessageId)>>>,
}

impl Default for InMemoryGenerationRegistry {
    fn default() -> Self {
        let (stops, stop_rx) = mpsc::channel(256);
        Self {
            leases: Mutex::new(HashMap::new()),
            stops,
            stop_rx: Mutex::new(Some(stop_rx)),
        }
    }
}

#[async_trait]
impl GenerationRegistry for InMemoryGenerationRegistry {
    async fn try_start(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<StartOutcome, ConversationStoreError> {
        let mut leases = lock(&self.leases);
        // An expired lease not yet reaped still blocks: the reaper must end it
        // first, or its stream-end would never be written.
        if let Some(held) = leases.get(session) {
            return Ok(StartOutcome::Busy {
                running: held.message_id.clone(),
            });
        }
        leases.insert(
            session.clone(),
            Lease {
                message_id: message_id.clone(),
                expires: Instant::now() + lease,
            },
        );
        Ok(StartOutcome::Started)
    }

    async fn renew(
        &self,
        session: &SessionId,
        message_id: &MessageId,
        lease: Duration,
    ) -> Result<bool, ConversationStoreError> {
        let mut leases = lock(&self.leases);
        match leases.get_mut(session) {
            Some(held) if held.message_id == *message_id => {
                held.expires = Instant::now() + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn finish(
        &self,
        session: &SessionId,
        message_id: &MessageId,
    ) -> Result<(), ConversationStoreError> {
        let mut leases = lock(&self.leases);
        if leases
            .get(session)
            .is_some_and(|held| held.message_id == *message_id)
        {
            leases.remove(session);
        }
        Ok(())
    }

    async fn running(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError> {
        Ok(lock(&self.leases)
            .get(session)
            .map(|held| held.message_id.clone()))
    }

    async fn request_stop(
        &self,
        session: &SessionId,
    ) -> Result<Option<MessageId>, ConversationStoreError> {
        let running = self.running(session).await?;
        if let Some(id) = &running {
            // A full queue means stops are already pending; the owner will
            // see this session's among them or has finished.
            let _ = self.stops.try_send((session.clone(), id.clone()));
        }
        Ok(running)
    }

    fn stop_requests(&self) -> StopStream {
        match lock(&self.stop_rx).take() {
            Some(rx) => Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })),
            None => Box::pin(futures_util::stream::empty()),
        }
    }

    async fn reap_expired(&self) -> Result<Vec<AbandonedGeneration>, ConversationStoreError> {
        let now = Instant::now();
        let mut leases = lock(&self.leases);
        let expired: Vec<SessionId> = leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(s, _)| s.clone())
            .collect();
        Ok(expired
            .into_iter()
            .filter_map(|session| {
                leases.remove(&session).map(|l| AbandonedGeneration {
                    session,
                    message_id: l.message_id,
                })
            })
            .collect())
    }
}
