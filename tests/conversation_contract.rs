//! The contracts of the conversation ports (`EventLog`, `LiveDelivery`,
//! `GenerationRegistry`): one set of cases run against every adapter, so the
//! in-memory and shared adapters cannot drift apart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::memory_conversations::{
    InMemoryEventLog, InMemoryGenerationRegistry, InMemoryLiveDelivery,
};
use chatbot_server::application::ports::*;
use chatbot_server::domain::conversation::*;
use chatbot_server::domain::*;
use chrono::Utc;
use futures_util::StreamExt;

const TTL: Duration = Duration::from_secs(600);

/// Which adapters a case runs against. Adapters made by one backend share
/// their state, as instances sharing one store do.
#[derive(Clone)]
enum Backend {
    Memory {
        log: Arc<InMemoryEventLog>,
        live: Arc<InMemoryLiveDelivery>,
        registry: Arc<InMemoryGenerationRegistry>,
    },
}

impl Backend {
    fn memory(limit: usize) -> Self {
        Backend::Memory {
            log: Arc::new(InMemoryEventLog::new(limit, TTL)),
            live: Arc::new(InMemoryLiveDelivery::default()),
            registry: Arc::new(InMemoryGenerationRegistry::default()),
        }
    }

    async fn log(&self) -> Arc<dyn EventLog> {
        match self {
            Backend::Memory { log, .. } => log.clone(),
        }
    }

    async fn live(&self) -> Arc<dyn LiveDelivery> {
        match self {
            Backend::Memory { live, .. } => live.clone(),
        }
    }

    async fn registry(&self) -> Arc<dyn GenerationRegistry> {
        match self {
            Backend::Memory { registry, .. } => registry.clone(),
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

fn seqs(events: &[LoggedEvent]) -> Vec<Seq> {
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
    // Sessions do not share numbering.
    let other = SessionId::generate();
    assert_eq!(
        seqs(&log.append(&other, vec![token(0)]).await.unwrap()),
        vec![1]
    );
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
                live.publish(&s, &[event]).await.unwrap();
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
    };
}

contract!(
    append_numbers_events_from_one_and_reads_them_back,
    retention_keeps_between_limit_and_twice_limit,
    concurrent_appends_get_unique_consecutive_seqs,
    client_message_ids_are_remembered_for_the_last_hundred,
    every_subscriber_gets_every_event_in_order,
    a_stalled_subscriber_slows_nobody,
    one_generation_per_session,
    concurrent_starts_have_one_winner,
    an_expired_lease_is_reaped_once,
    a_stop_request_reaches_the_owner,
);
