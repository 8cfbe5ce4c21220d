//! The contracts of the conversation ports (`EventLog`, `LiveDelivery`,
//! `GenerationRegistry`): one set of cases run against every adapter, so the
//! in-memory and shared adapters cannot drift apart.
//!
//! Redis is taken from `REDIS_URL` (default `redis://127.0.0.1:6379`), each test
//! in its own key prefix that is deleted afterwards. Without a reachable Redis
//! the Redis tests print SKIPPED and pass, unless `CI` is set: then they fail.

use crate::common;

use common::redis::{cleaning_up_on, cluster_target, redis_url, skip_without_redis, RedisTarget};
use std::collections::HashSet;
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatbot_server::adapters::outbound::log_then_publish::LogThenPublish;
use chatbot_server::adapters::outbound::memory_conversations::{
    InMemoryBackplane, InMemoryEventLog, InMemoryGenerationRegistry, InMemoryLiveDelivery,
};
use chatbot_server::adapters::outbound::redis_conversations::{RedisConversations, RedisEventLog};
use chatbot_server::application::ports::*;
use chatbot_server::domain::conversation::*;
use chatbot_server::domain::*;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

const TTL: Duration = Duration::from_secs(600);

/// Which adapters a case runs against. Adapters made by one backend share
/// their state, as instances sharing one store do.
#[derive(Clone)]
enum Backend {
    Memory {
        log: Arc<InMemoryEventLog>,
        live: Arc<InMemoryLiveDelivery>,
        registry: Arc<InMemoryGenerationRegistry>,
        /// Writes go through [`LogThenPublish`] (the two ports) rather than
        /// the server's [`InMemoryBackplane`].
        through_ports: bool,
    },
    /// Every adapter a Redis backend hands out is a separate instance (its own
    /// connections) on one shared key prefix.
    Redis {
        url: RedisTarget,
        prefix: String,
        limit: usize,
    },
}

impl Backend {
    fn memory(limit: usize) -> Self {
        Self::memory_with(limit, false)
    }

    /// [`Self::memory`], written through the ports by [`LogThenPublish`].
    fn memory_through_ports(limit: usize) -> Self {
        Self::memory_with(limit, true)
    }

    fn memory_with(limit: usize, through_ports: bool) -> Self {
        Backend::Memory {
            log: Arc::new(InMemoryEventLog::new(limit, TTL)),
            live: Arc::new(InMemoryLiveDelivery::default()),
            registry: Arc::new(InMemoryGenerationRegistry::default()),
            through_ports,
        }
    }

    /// A new instance's adapters on this Redis backend.
    async fn redis_instance(
        url: impl Into<RedisTarget>,
        prefix: &str,
        limit: usize,
    ) -> RedisConversations {
        RedisConversations::connect(url, prefix, limit, TTL)
            .await
            .expect("Redis answered a moment ago")
    }

    async fn log(&self) -> Arc<dyn EventLog> {
        match self {
            Backend::Memory { log, .. } => log.clone(),
            Backend::Redis { url, prefix, limit } => Arc::new(
                RedisEventLog::connect(url.clone(), prefix, *limit, TTL)
                    .await
                    .expect("Redis answered a moment ago"),
            ),
        }
    }

    async fn live(&self) -> Arc<dyn LiveDelivery> {
        match self {
            Backend::Memory { live, .. } => live.clone(),
            Backend::Redis { url, prefix, limit } => {
                Arc::new(Self::redis_instance(url.clone(), prefix, *limit).await.live)
            }
        }
    }

    /// One instance's log, live delivery and backplane, sharing its state
    /// (and, on Redis, its connections) as a server's do.
    async fn writer(&self) -> (Arc<dyn EventLog>, Arc<dyn LiveDelivery>, Arc<dyn Backplane>) {
        match self {
            Backend::Memory {
                log,
                live,
                through_ports,
                ..
            } => {
                let backplane: Arc<dyn Backplane> = if *through_ports {
                    Arc::new(LogThenPublish::new(log.clone(), live.clone()))
                } else {
                    Arc::new(InMemoryBackplane::new(log.clone(), live.clone()))
                };
                let (log, live): (Arc<dyn EventLog>, Arc<dyn LiveDelivery>) =
                    (log.clone(), live.clone());
                (log, live, backplane)
            }
            Backend::Redis { url, prefix, limit } => {
                let instance = Self::redis_instance(url, prefix, *limit).await;
                (
                    Arc::new(instance.log),
                    Arc::new(instance.live),
                    Arc::new(instance.backplane),
                )
            }
        }
    }

    async fn registry(&self) -> Arc<dyn GenerationRegistry> {
        match self {
            Backend::Memory { registry, .. } => registry.clone(),
            Backend::Redis { url, prefix, limit } => Arc::new(
                Self::redis_instance(url.clone(), prefix, *limit)
                    .await
                    .registry,
            ),
        }
    }
}

// ------------------------------------------------------------- helpers

fn token(i: usize) -> (chrono::DateTime<Utc>, ConversationEvent) {
    (
        Utc::now(),
        ConversationEvent::StreamToken {
            message_id: MessageId::parse("msg_a").unwrap(),
            token: format!("t{i}"),
        },
    )
}

fn user_message(client_id: Option<&str>) -> (chrono::DateTime<Utc>, ConversationEvent) {
    (
        Utc::now(),
        ConversationEvent::UserMessage {
            message_id: MessageId::generate(),
            client_message_id: client_id.map(|c| ClientMessageId::parse(c).unwrap()),
            content: "héllo \"there\"\n".into(),
        },
    )
}

fn seqs(events: &[SharedEvent]) -> Vec<Seq> {
    events.iter().map(|e| e.seq).collect()
}

async fn next_event(stream: &mut LiveStream) -> Arc<LoggedEvent> {
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(LiveItem::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

// ----------------------------------------------------------- event log

async fn append_numbers_events_from_one_and_reads_them_back(backend: Backend) {
    let log = backend.log().await;
    let s = SessionId::generate();
    assert_eq!(log.head(&s).await.unwrap(), 0);
    let empty = log.read_after(&s, 0, 10).await.unwrap();
    assert_eq!((empty.events.len(), empty.head, empty.oldest), (0, 0, 1));

    let first = log
        .append(&s, vec![user_message(None), token(0)])
        .await
        .unwrap();
    assert_eq!(seqs(&first), vec![1, 2]);
    let more = log.append(&s, vec![token(1)]).await.unwrap();
    assert_eq!(seqs(&more), vec![3]);
    assert_eq!(log.head(&s).await.unwrap(), 3);

    let all = log.read_after(&s, 0, 100).await.unwrap();
    assert_eq!(seqs(&all.events), vec![1, 2, 3]);
    assert_eq!((all.head, all.oldest), (3, 1));
    assert_eq!(all.events[0], first[0], "stored exactly as returned");
    assert_eq!(
        all.events[0].at.timestamp_millis(),
        first[0].at.timestamp_millis()
    );
    let page = log.read_after(&s, 1, 1).await.unwrap();
    assert_eq!(seqs(&page.events), vec![2]);
    assert!(log.read_after(&s, 3, 10).await.unwrap().events.is_empty());
    // A client chooses `after` (`afterSeq`, `lastSeq`): its largest value too.
    let past = log.read_after(&s, Seq::MAX, 10).await.unwrap();
    assert!(past.events.is_empty());
    assert_eq!((past.head, past.oldest), (3, 1));
    assert!(!past.lost_after(Seq::MAX));
    // Sessions do not share numbering.
    let other = SessionId::generate();
    assert_eq!(
        seqs(&log.append(&other, vec![token(0)]).await.unwrap()),
        vec![1]
    );
}

/// An erased log reads like one that never existed, client message ids
/// included; other sessions keep theirs.
async fn erase_forgets_one_session_entirely(backend: Backend) {
    let log = backend.log().await;
    let (s, other) = (SessionId::generate(), SessionId::generate());
    log.append(&s, vec![user_message(Some("c1")), token(0)])
        .await
        .unwrap();
    log.append(&other, vec![token(0)]).await.unwrap();
    log.erase(&s).await.unwrap();
    let gone = log.read_after(&s, 0, 10).await.unwrap();
    assert_eq!((gone.events.len(), gone.head, gone.oldest), (0, 0, 1));
    assert_eq!(log.head(&s).await.unwrap(), 0);
    let id = ClientMessageId::parse("c1").unwrap();
    assert_eq!(log.accepted_client_message(&s, &id).await.unwrap(), None);
    assert_eq!(
        log.head(&other).await.unwrap(),
        1,
        "other sessions are kept"
    );
    log.erase(&s).await.unwrap();
    log.erase(&SessionId::generate()).await.unwrap();
}

async fn retention_keeps_between_limit_and_twice_limit(backend: Backend) {
    // The backend was made with a limit of 50.
    let log = backend.log().await;
    let s = SessionId::generate();
    for i in 0..300 {
        log.append(&s, vec![token(i)]).await.unwrap();
    }
    let held = log.read_after(&s, 0, 1000).await.unwrap();
    assert_eq!(held.head, 300);
    let n = held.events.len();
    assert!((50..=100).contains(&n), "holds {n} events");
    assert_eq!(held.oldest, 300 - n as u64 + 1);
    assert_eq!(held.events.first().unwrap().seq, held.oldest);
    assert!(held.lost_after(0));
    assert!(!held.lost_after(held.oldest - 1));
    assert!(!held.lost_after(300));
}

async fn concurrent_appends_get_unique_consecutive_seqs(backend: Backend) {
    let log = backend.log().await;
    let s = SessionId::generate();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let log = log.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25 {
                    let batch = log
                        .append(&s, vec![token(w * 100 + i), token(0)])
                        .await
                        .unwrap();
                    assert_eq!(batch[1].seq, batch[0].seq + 1, "a batch stays together");
                    got.extend(seqs(&batch));
                }
                got
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(all.insert(seq), "seq {seq} given twice");
        }
    }
    assert_eq!(all, (1..=400).collect::<HashSet<_>>());
}

async fn client_message_ids_are_remembered_for_the_last_hundred(backend: Backend) {
    let log = backend.log().await;
    let s = SessionId::generate();
    let first = log
        .append(&s, vec![user_message(Some("c-0"))])
        .await
        .unwrap();
    let id = ClientMessageId::parse("c-0").unwrap();
    let known = log.accepted_client_message(&s, &id).await.unwrap().unwrap();
    let ConversationEvent::UserMessage { message_id, .. } = &first[0].event else {
        unreachable!()
    };
    assert_eq!((&known.message_id, known.seq), (message_id, 1));
    let other = SessionId::generate();
    assert!(log
        .accepted_client_message(&other, &id)
        .await
        .unwrap()
        .is_none());
    for i in 1..=CLIENT_MESSAGE_IDS_KEPT {
        log.append(&s, vec![user_message(Some(&format!("c-{i}")))])
            .await
            .unwrap();
    }
    assert!(
        log.accepted_client_message(&s, &id)
            .await
            .unwrap()
            .is_none(),
        "the oldest is forgotten"
    );
    let last = ClientMessageId::parse(&format!("c-{CLIENT_MESSAGE_IDS_KEPT}")).unwrap();
    assert!(log
        .accepted_client_message(&s, &last)
        .await
        .unwrap()
        .is_some());
}

// ---------------------------------------------------------------- live

async fn every_subscriber_gets_every_event_in_order(backend: Backend) {
    let live = backend.live().await;
    let log = backend.log().await;
    let s = SessionId::generate();
    assert_eq!(live.watchers(&s).await.unwrap(), 0);
    // Publishing to nobody is fine.
    let early = log.append(&s, vec![token(0)]).await.unwrap();
    live.publish(&s, &early).await.unwrap();

    let mut a = live.subscribe(&s).await.unwrap();
    let mut b = live.subscribe(&s).await.unwrap();
    wait_for_watchers(&live, &s, 2).await;
    let events = log.append(&s, (1..=50).map(token).collect()).await.unwrap();
    live.publish(&s, &events).await.unwrap();
    for stream in [&mut a, &mut b] {
        for want in 2..=51 {
            assert_eq!(next_event(stream).await.seq, want);
        }
    }
    drop(a);
    wait_for_watchers(&live, &s, 1).await;
    drop(b);
    wait_for_watchers(&live, &s, 0).await;
}

/// A rating travels through the log and the live delivery as it was given,
/// with its comment or without one.
async fn feedback_events_read_back_and_reach_subscribers_as_given(backend: Backend) {
    let live = backend.live().await;
    let log = backend.log().await;
    let s = SessionId::generate();
    let mut watching = live.subscribe(&s).await.unwrap();
    wait_for_watchers(&live, &s, 1).await;
    let rated = |rating, comment| {
        (
            Utc::now(),
            ConversationEvent::Feedback {
                message_id: MessageId::parse("msg_a").unwrap(),
                feedback: feedback::Feedback::parse(rating, comment).unwrap(),
            },
        )
    };
    let logged = log
        .append(
            &s,
            vec![rated("down", Some("wrong \"hours\" é")), rated("up", None)],
        )
        .await
        .unwrap();
    live.publish(&s, &logged).await.unwrap();
    let read = log.read_after(&s, 0, 10).await.unwrap();
    assert_eq!(read.events, logged, "read back exactly as appended");
    for want in &logged {
        assert_eq!(&next_event(&mut watching).await, want, "delivered as given");
    }
}

/// A backplane write is logged and reaches every subscriber, on the writing
/// instance and on others, once each and in seq order.
async fn a_write_reaches_every_instance_once_in_order(backend: Backend) {
    let (log, live, backplane) = backend.writer().await;
    let elsewhere = backend.live().await;
    let s = SessionId::generate();
    let mut here = live.subscribe(&s).await.unwrap();
    let mut there = elsewhere.subscribe(&s).await.unwrap();
    wait_for_watchers(&live, &s, 2).await;
    let mut written = Vec::new();
    for batch in [
        vec![user_message(Some("c-1"))],
        (1..=20).map(token).collect(),
        (21..=40).map(token).collect(),
    ] {
        let w = backplane.write(&s, batch).await.unwrap();
        assert!(w.unpublished.is_none());
        written.extend(w.events);
    }
    assert_eq!(seqs(&written), (1..=41).collect::<Vec<_>>());
    let read = log.read_after(&s, 0, 100).await.unwrap();
    assert_eq!(read.events, written, "the log holds what was written");
    let accepted = log
        .accepted_client_message(&s, &ClientMessageId::parse("c-1").unwrap())
        .await
        .unwrap()
        .expect("the client message id is remembered");
    assert_eq!(accepted.seq, 1);
    for stream in [&mut here, &mut there] {
        for want in &written {
            assert_eq!(&next_event(stream).await, want);
        }
        // Exactly once: the writer's own copy from the transport is not a second one.
        let more = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(more.is_err(), "nothing after the last event: {more:?}");
    }
}

/// Many sessions written at once (on a single Redis, their batches share
/// script calls): each session's log is its own writes, numbered from one,
/// in the order written, and a watcher of one gets exactly its events.
async fn concurrent_writes_of_many_sessions_keep_each_sessions_order(backend: Backend) {
    let (log, live, backplane) = backend.writer().await;
    let sessions: Vec<_> = (0..40).map(|_| SessionId::generate()).collect();
    let mut watching = live.subscribe(&sessions[7]).await.unwrap();
    wait_for_watchers(&live, &sessions[7], 1).await;
    let tasks: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (backplane, s) = (backplane.clone(), s.clone());
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..10 {
                    let batch = vec![token(n * 1000 + 2 * i), token(n * 1000 + 2 * i + 1)];
                    written.extend(backplane.write(&s, batch).await.unwrap().events);
                }
                written
            })
        })
        .collect();
    for (n, (s, task)) in sessions.iter().zip(tasks).enumerate() {
        let written = task.await.unwrap();
        assert_eq!(seqs(&written), (1..=20).collect::<Vec<_>>(), "session {n}");
        let read = log.read_after(s, 0, 100).await.unwrap();
        assert_eq!(read.events, written, "session {n}'s log is what it wrote");
        if n == 7 {
            for want in &written {
                assert_eq!(&next_event(&mut watching).await, want);
            }
        }
    }
    let more = tokio::time::timeout(Duration::from_millis(300), watching.next()).await;
    assert!(more.is_err(), "another session's event leaked: {more:?}");
}

async fn wait_for_watchers(live: &Arc<dyn LiveDelivery>, s: &SessionId, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = live.watchers(s).await.unwrap();
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watchers stayed {now}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_stalled_subscriber_slows_nobody(backend: Backend) {
    let live = backend.live().await;
    let s = SessionId::generate();
    let mut stalled = live.subscribe(&s).await.unwrap();
    let mut reader = live.subscribe(&s).await.unwrap();
    wait_for_watchers(&live, &s, 2).await;
    let total = 5_000u64;
    let publisher = {
        let live = live.clone();
        let s = s.clone();
        tokio::spawn(async move {
            for seq in 1..=total {
                let event = LoggedEvent {
                    seq,
                    at: Utc::now(),
                    event: token(seq as usize).1,
                };
                live.publish(&s, &[Arc::new(event)]).await.unwrap();
                // A token stream's pace, not a tight loop: a reader that keeps
                // up must never be told it lagged.
                if seq % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    for want in 1..=total {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(LiveItem::Event(e))) => assert_eq!(e.seq, want, "in order, none lost"),
            other => panic!("the reading subscriber stopped getting events: {other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("publishing never waits for the stalled subscriber")
        .unwrap();
    // The stalled one is told, after what its buffer kept, that it lagged.
    let lagged = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stalled.next().await {
            if matches!(item, LiveItem::Lagged { .. }) {
                return true;
            }
        }
        false
    })
    .await
    .expect("the stalled subscriber's buffer is bounded");
    assert!(lagged, "the stalled subscriber learns it missed events");
}

// ------------------------------------------------------------ registry

async fn one_generation_per_session(backend: Backend) {
    let registry = backend.registry().await;
    let s = SessionId::generate();
    let lease = Duration::from_secs(30);
    let (a, b) = (MessageId::generate(), MessageId::generate());
    assert_eq!(registry.running(&s).await.unwrap(), None);
    assert_eq!(
        registry.try_start(&s, &a, lease).await.unwrap(),
        StartOutcome::Started
    );
    assert_eq!(
        registry.try_start(&s, &b, lease).await.unwrap(),
        StartOutcome::Busy { running: a.clone() }
    );
    assert_eq!(registry.running(&s).await.unwrap(), Some(a.clone()));
    assert!(registry.renew(&s, &a, lease).await.unwrap());
    assert!(!registry.renew(&s, &b, lease).await.unwrap());
    registry.finish(&s, &b).await.unwrap();
    assert_eq!(
        registry.running(&s).await.unwrap(),
        Some(a.clone()),
        "not b's to end"
    );
    registry.finish(&s, &a).await.unwrap();
    registry.finish(&s, &a).await.unwrap();
    assert_eq!(registry.running(&s).await.unwrap(), None);
    assert_eq!(
        registry.try_start(&s, &b, lease).await.unwrap(),
        StartOutcome::Started
    );
}

async fn concurrent_starts_have_one_winner(backend: Backend) {
    let s = SessionId::generate();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        // Each task its own adapter value, as separate instances would have.
        let registry = backend.registry().await;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .try_start(&s, &MessageId::generate(), Duration::from_secs(30))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        if t.await.unwrap() == StartOutcome::Started {
            started += 1;
        }
    }
    assert_eq!(started, 1);
}

async fn an_expired_lease_is_reaped_once(backend: Backend) {
    let s = SessionId::generate();
    let id = MessageId::generate();
    let registry = backend.registry().await;
    registry
        .try_start(&s, &id, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(registry
        .reap_expired()
        .await
        .unwrap()
        .iter()
        .all(|a| a.session != s));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (one, two) = (backend.registry().await, backend.registry().await);
    let (r1, r2) = tokio::join!(one.reap_expired(), two.reap_expired());
    let mine: Vec<_> = r1
        .unwrap()
        .into_iter()
        .chain(r2.unwrap())
        .filter(|a| a.session == s)
        .collect();
    assert_eq!(
        mine,
        vec![AbandonedGeneration {
            session: s.clone(),
            message_id: id.clone()
        }]
    );
    assert!(!registry
        .renew(&s, &id, Duration::from_secs(1))
        .await
        .unwrap());
    assert_eq!(
        registry
            .try_start(&s, &MessageId::generate(), Duration::from_secs(1))
            .await
            .unwrap(),
        StartOutcome::Started
    );
}

async fn a_stop_request_reaches_the_owner(backend: Backend) {
    let owner = backend.registry().await;
    let mut stops = owner.stop_requests();
    let s = SessionId::generate();
    let asker = backend.registry().await;
    assert_eq!(asker.request_stop(&s).await.unwrap(), None);
    let id = MessageId::generate();
    owner
        .try_start(&s, &id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(asker.request_stop(&s).await.unwrap(), Some(id.clone()));
    let got = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let (session, message) = stops.next().await.expect("stop stream open");
            if session == s {
                return message;
            }
        }
    })
    .await
    .expect("the owner hears the stop within a second");
    assert_eq!(got, id);
}

// ------------------------------------------------------------- runners

/// A Redis backend (limit 50) in a fresh key prefix, or `None` (after saying
/// so) when Redis is unreachable outside CI.
async fn redis_backend() -> Option<Backend> {
    // Probed once per run, so an absent Redis costs one connect timeout, not one per test.
    static PROBE: OnceCell<Result<(), String>> = OnceCell::const_new();
    let url = redis_url();
    let probe = PROBE
        .get_or_init(|| async {
            RedisConversations::connect(&redis_url(), "chatbot-test-probe", 50, TTL)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
    match probe {
        Ok(()) => Some(Backend::Redis {
            url: RedisTarget::Single(url),
            prefix: format!("chatbot-test-{}", uuid::Uuid::new_v4().simple()),
            limit: 50,
        }),
        Err(e) => {
            skip_without_redis(&url, e);
            None
        }
    }
}

/// Runs a case on Redis and deletes its keys afterwards, even if it failed.
async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(backend) = redis_backend().await else {
        return;
    };
    let (url, prefix) = match &backend {
        Backend::Redis { url, prefix, .. } => (url.clone(), prefix.clone()),
        _ => unreachable!("redis_backend makes Redis backends"),
    };
    cleaning_up_on(&url, &prefix, case(backend)).await;
}

/// Runs a case on the Redis Cluster and deletes its keys afterwards.
async fn on_redis_cluster<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = cluster_target().await else {
        return;
    };
    let prefix = format!("chatbot-test-{}", uuid::Uuid::new_v4().simple());
    let backend = Backend::Redis {
        url: url.clone(),
        prefix: prefix.clone(),
        limit: 50,
    };
    cleaning_up_on(&url, &prefix, case(backend)).await;
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::memory(50)).await;
                }
            )*
        }

        mod in_memory_through_the_ports {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::memory_through_ports(50)).await;
                }
            )*
        }

        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }

        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis_cluster(super::$case).await;
                }
            )*
        }
    };
}

contract!(
    append_numbers_events_from_one_and_reads_them_back,
    erase_forgets_one_session_entirely,
    retention_keeps_between_limit_and_twice_limit,
    concurrent_appends_get_unique_consecutive_seqs,
    client_message_ids_are_remembered_for_the_last_hundred,
    every_subscriber_gets_every_event_in_order,
    feedback_events_read_back_and_reach_subscribers_as_given,
    a_write_reaches_every_instance_once_in_order,
    concurrent_writes_of_many_sessions_keep_each_sessions_order,
    a_stalled_subscriber_slows_nobody,
    one_generation_per_session,
    concurrent_starts_have_one_winner,
    an_expired_lease_is_reaped_once,
    a_stop_request_reaches_the_owner,
);

// ------------------------------------------------- Redis-only behaviour

fn redis_parts(backend: &Backend) -> (String, String) {
    match backend {
        Backend::Redis {
            url: RedisTarget::Single(url),
            prefix,
            ..
        } => (url.clone(), prefix.clone()),
        _ => unreachable!("a single-Redis case"),
    }
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key of a session carries the session's hash tag and expires; only
/// the registry's shared lease set does not belong to one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_session_keys_share_a_hash_tag_and_expire() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let s = SessionId::generate();
        let log = backend.log().await;
        log.append(&s, vec![user_message(Some("c-1")), token(0)])
            .await
            .unwrap();
        let instance = Backend::redis_instance(&url, &prefix, 50).await;
        let _watching = instance.live.subscribe(&s).await.unwrap();
        let id = MessageId::generate();
        instance
            .registry
            .try_start(&s, &id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(instance.registry.request_stop(&s).await.unwrap(), Some(id));

        let pattern = format!("{prefix}:*");
        let channels: Vec<String> = query(&url, &["PUBSUB CHANNELS", &pattern]).await;
        let live = session_key(&prefix, &s, "live");
        assert!(channels.contains(&live), "{channels:?}");
        let mut keys: Vec<String> = query(&url, &["KEYS", &pattern]).await;
        keys.retain(|k| *k != format!("{prefix}:v1:leases"));
        keys.sort();
        let want: Vec<String> = ["cmids", "head", "lease", "log", "stop", "watchers"]
            .iter()
            .map(|what| session_key(&prefix, &s, what))
            .collect();
        assert_eq!(keys, want);
        for key in &keys {
            let pttl: i64 = query(&url, &["PTTL", key]).await;
            assert!(pttl > 0, "{key} has PTTL {pttl}");
            if ["log", "head", "cmids"].iter().any(|w| key.ends_with(w)) {
                // The TTL plus the append script's slack (a tenth, at most a minute).
                let ttl = i64::try_from(TTL.as_millis()).unwrap();
                let max = ttl + (ttl / 10).min(60_000);
                assert!(pttl <= max, "{key} has PTTL {pttl}");
            }
        }
    })
    .await;
}

/// Runs one raw Redis command (its name may be two words) and reads the reply.
async fn query<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let mut words = args[0].split(' ');
    let mut cmd = redis::cmd(words.next().unwrap());
    cmd.arg(words.collect::<Vec<_>>()).arg(&args[1..]);
    cmd.query_async(&mut raw_connection(url).await)
        .await
        .unwrap()
}

/// Runs one raw Redis command, as something other than the adapters would.
async fn raw(url: &str, args: &[&str]) {
    query::<redis::Value>(url, args).await;
}

fn session_key(prefix: &str, s: &SessionId, what: &str) -> String {
    format!("{prefix}:v1:{{{s}}}:{what}")
}

/// Log data the adapter did not write surfaces as an error, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_undecodable_log_data_is_an_error() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let log = backend.log().await;
        let s = SessionId::generate();
        log.append(&s, vec![token(0)]).await.unwrap();
        raw(
            &url,
            &["LSET", &session_key(&prefix, &s, "log"), "0", "not json"],
        )
        .await;
        assert!(log.read_after(&s, 0, 10).await.is_err());
        raw(&url, &["SET", &session_key(&prefix, &s, "head"), "x"]).await;
        assert!(log.head(&s).await.is_err());
        assert!(log.read_after(&s, 0, 10).await.is_err());
        assert!(log.append(&s, vec![token(1)]).await.is_err());

        let s = SessionId::generate();
        raw(&url, &["LPUSH", &session_key(&prefix, &s, "cmids"), "junk"]).await;
        let id = ClientMessageId::parse("c-1").unwrap();
        assert!(log.accepted_client_message(&s, &id).await.is_err());
    })
    .await;
}

/// A session whose append fails inside a script call shared with others
/// fails alone: the others are written and published as if alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_one_failing_append_among_many_fails_alone() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let (log, _, backplane) = backend.writer().await;
        let broken = SessionId::generate();
        raw(&url, &["SET", &session_key(&prefix, &broken, "head"), "x"]).await;
        let mut sessions: Vec<_> = (0..30).map(|_| SessionId::generate()).collect();
        sessions.insert(15, broken.clone());
        let writes = sessions.iter().map(|s| {
            let (backplane, s) = (backplane.clone(), s.clone());
            tokio::spawn(async move { backplane.write(&s, vec![token(1), token(2)]).await })
        });
        let results = futures_util::future::join_all(writes).await;
        for (s, result) in sessions.iter().zip(results) {
            let result = result.unwrap();
            if *s == broken {
                assert!(result.is_err(), "the broken session's append failed");
                continue;
            }
            let written = result.expect("the others are written").events;
            assert_eq!(seqs(&written), vec![1, 2]);
            assert_eq!(log.read_after(s, 0, 10).await.unwrap().events, written);
        }
    })
    .await;
}

/// A lease the registry cannot read is an error; a malformed entry in the
/// lease set is dropped rather than blocking every reaper for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_undecodable_lease_data_is_an_error() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let registry = backend.registry().await;
        let s = SessionId::generate();
        raw(&url, &["SET", &session_key(&prefix, &s, "lease"), "../bad"]).await;
        assert!(registry.running(&s).await.is_err());
        let lease = Duration::from_secs(30);
        let started = registry.try_start(&s, &MessageId::generate(), lease).await;
        assert!(started.is_err(), "{started:?}");
        assert!(registry.request_stop(&s).await.is_err());

        let leases = format!("{prefix}:v1:leases");
        raw(&url, &["ZADD", &leases, "0", "garbage"]).await;
        registry.reap_expired().await.unwrap();
        assert_eq!(query::<u64>(&url, &["ZCARD", &leases]).await, 0);
    })
    .await;
}

/// An undecodable live message is skipped; the subscription carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_undecodable_live_message_is_skipped() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let live = backend.live().await;
        let s = SessionId::generate();
        let mut stream = live.subscribe(&s).await.unwrap();
        raw(
            &url,
            &["PUBLISH", &session_key(&prefix, &s, "live"), "junk"],
        )
        .await;
        let good = LoggedEvent {
            seq: 1,
            at: Utc::now(),
            event: token(1).1,
        };
        // From another instance, so it comes through Redis like the junk did.
        let other = backend.live().await;
        other.publish(&s, &[Arc::new(good)]).await.unwrap();
        assert_eq!(next_event(&mut stream).await.seq, 1);
    })
    .await;
}

/// A Redis that forgot the scripts (restarted, or `SCRIPT FLUSH`) gets the
/// append script again on the next write, which goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_appends_go_on_after_the_scripts_are_flushed() {
    on_redis(|backend| async move {
        let (url, _) = redis_parts(&backend);
        let (log, _, backplane) = backend.writer().await;
        let s = SessionId::generate();
        assert_eq!(
            seqs(&backplane.write(&s, vec![token(1)]).await.unwrap().events),
            [1]
        );
        raw(&url, &["SCRIPT FLUSH"]).await;
        assert_eq!(
            seqs(&backplane.write(&s, vec![token(2)]).await.unwrap().events),
            [2]
        );
        raw(&url, &["SCRIPT FLUSH"]).await;
        assert_eq!(seqs(&log.append(&s, vec![token(3)]).await.unwrap()), [3]);
        assert_eq!(log.read_after(&s, 0, 10).await.unwrap().events.len(), 3);
    })
    .await;
}

/// A raw pub/sub subscriber of `channel`, which no instance counts as a
/// watcher: what it hears is what Redis published.
async fn eavesdrop(url: &str, channel: &str) -> redis::aio::PubSub {
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub
}

/// A batch is published only while another instance watches its session:
/// watched only where it is written, it goes to that instance's own
/// subscribers and not through Redis; once another instance's record is
/// there, the same write is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_batch_nobody_else_watches_is_not_published() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let (_, live, backplane) = backend.writer().await;
        let s = SessionId::generate();
        let mut here = live.subscribe(&s).await.unwrap();
        wait_for_watchers(&live, &s, 1).await;
        let mut heard = eavesdrop(&url, &session_key(&prefix, &s, "live")).await;
        let mut heard = heard.on_message();

        let first = backplane.write(&s, vec![token(1)]).await.unwrap();
        assert_eq!(next_event(&mut here).await, first.events[0]);
        let silent = tokio::time::timeout(Duration::from_millis(300), heard.next()).await;
        assert!(
            silent.is_err(),
            "published with no other watcher: {silent:?}"
        );

        // Another instance's record, as its subscription would write it.
        let far = i64::MAX.to_string();
        let record = format!("1 {far}");
        let watchers = session_key(&prefix, &s, "watchers");
        raw(&url, &["HSET", &watchers, "another-instance", &record]).await;
        let second = backplane.write(&s, vec![token(2)]).await.unwrap();
        assert_eq!(next_event(&mut here).await, second.events[0]);
        let msg = tokio::time::timeout(Duration::from_secs(5), heard.next())
            .await
            .expect("published once another instance watches")
            .unwrap();
        let payload: String = msg.get_payload().unwrap();
        assert!(payload.contains(r#""seq":2"#), "{payload}");
    })
    .await;
}

/// An instance whose watcher record vanished while it still watched (it
/// could not refresh it in time) misses the batches written meanwhile; its
/// next refresh finds the record gone and hands its subscribers the latest
/// logged event, from which they fill the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_watcher_whose_record_vanished_is_refilled() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let (_, _, backplane) = backend.writer().await;
        let elsewhere = backend.live().await;
        let s = SessionId::generate();
        let mut there = elsewhere.subscribe(&s).await.unwrap();
        wait_for_watchers(&elsewhere, &s, 1).await;
        let first = backplane.write(&s, vec![token(1)]).await.unwrap();
        assert_eq!(next_event(&mut there).await, first.events[0]);

        raw(&url, &["DEL", &session_key(&prefix, &s, "watchers")]).await;
        let missed = backplane.write(&s, vec![token(2), token(3)]).await.unwrap();
        // Within a heartbeat (3 s) the latest event arrives, and the
        // subscriber reads seq 2 from the log. (A heartbeat that fell between
        // the DEL and the write already put the record back: it refills
        // seq 1, which a subscriber ignores, and the write is published.)
        let refilled = loop {
            let event = next_event(&mut there).await;
            if event.seq == 3 {
                break event;
            }
            assert!(event.seq <= 2, "{event:?}");
        };
        assert_eq!(refilled, missed.events[1]);
    })
    .await;
}

/// A bare JSON array (what instances of earlier versions publish, with no
/// origin in front) is still delivered, so a rolling upgrade loses nothing
/// on the new instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_live_messages_without_an_origin_are_delivered() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let live = backend.live().await;
        let s = SessionId::generate();
        let mut stream = live.subscribe(&s).await.unwrap();
        let bare = r#"[{"seq":7,"at":"2026-01-02T03:04:05.678Z","event":{"type":"stream_token","message_id":"msg_a","token":"hi"}}]"#;
        raw(&url, &["PUBLISH", &session_key(&prefix, &s, "live"), bare]).await;
        let event = next_event(&mut stream).await;
        assert_eq!(event.seq, 7);
        let want = ConversationEvent::StreamToken {
            message_id: MessageId::parse("msg_a").unwrap(),
            token: "hi".into(),
        };
        assert_eq!(event.event, want);
    })
    .await;
}

/// A TCP proxy in front of Redis whose connections a test can cut, as a
/// network failure or a Redis restart would.
struct CutProxy {
    url: String,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// `None` for a Redis not reached over plain TCP.
    async fn start(url: &str) -> Option<Self> {
        let client = redis::Client::open(url).ok()?;
        let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr().clone()
        else {
            return None;
        };
        let rest = url.strip_prefix("redis://")?;
        let (auth, host_path) = match rest.rsplit_once('@') {
            Some((auth, host_path)) => (format!("{auth}@"), host_path),
            None => (String::new(), rest),
        };
        let path = host_path.find(['/', '?']).map_or("", |i| &host_path[i..]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let url = format!("redis://{auth}{}{path}", listener.local_addr().ok()?);
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let conns = conns.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = (host.clone(), port);
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(pipe.abort_handle());
                }
            }
        });
        Some(Self { url, conns, accept })
    }

    fn cut(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// After its connections drop, an instance reconnects: a live stream that
/// was cut ends (whatever was published meanwhile cannot reach it; its
/// subscriber resumes from the log) rather than wait in silence, a new one
/// gets what is published, and a stop asked for meanwhile still reaches the
/// owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_live_ends_cut_streams_and_stops_survive_a_lost_connection() {
    on_redis(|backend| async move {
        let (url, prefix) = redis_parts(&backend);
        let Some(proxy) = CutProxy::start(&url).await else {
            let _ = writeln!(std::io::stderr(), "SKIPPED: Redis is not reached over TCP");
            return;
        };
        let cut_off = Backend::redis_instance(&proxy.url, &prefix, 50).await;
        let direct = Backend::redis_instance(&url, &prefix, 50).await;
        let s = SessionId::generate();
        let mut stream = cut_off.live.subscribe(&s).await.unwrap();
        let mut stops = cut_off.registry.stop_requests();
        let id = MessageId::generate();
        cut_off
            .registry
            .try_start(&s, &id, Duration::from_secs(30))
            .await
            .unwrap();
        let event = |seq: u64| LoggedEvent {
            seq,
            at: Utc::now(),
            event: token(seq as usize).1,
        };
        direct
            .live
            .publish(&s, &[Arc::new(event(1))])
            .await
            .unwrap();
        assert_eq!(next_event(&mut stream).await.seq, 1);

        proxy.cut();
        assert_eq!(
            direct.registry.request_stop(&s).await.unwrap(),
            Some(id.clone())
        );
        let heard = tokio::time::timeout(Duration::from_secs(10), stops.next())
            .await
            .expect("the stop arrives once the owner is back");
        assert_eq!(heard, Some((s.clone(), id)));

        let cut = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the cut stream ends rather than wait");
        assert!(cut.is_none(), "{cut:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut again = loop {
            if let Ok(stream) = cut_off.live.subscribe(&s).await {
                break stream;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "live delivery never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        direct
            .live
            .publish(&s, &[Arc::new(event(2))])
            .await
            .unwrap();
        assert_eq!(next_event(&mut again).await.seq, 2);
    })
    .await;
}
