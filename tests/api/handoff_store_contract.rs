//! The contract of the `HandoffStore` and `AgentPresence` ports where issue
//! 22's desk needs more than compare-and-set: an agent's taking lease (the
//! capacity check and its claim as one step), the summary kept with a
//! conversation while its agent holds it, and the agents seen lately. One
//! set of cases against memory, two Redis instances on one prefix, and the
//! Redis Cluster.
//!
//! Redis is taken from `REDIS_URL`, the cluster from `REDIS_CLUSTER_URLS`;
//! without them the Redis cases print SKIPPED and pass, unless `CI` is set.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::memory_handoff::{MemoryHandoffs, MemoryPresence};
use chatbot_server::adapters::outbound::redis_handoff::RedisHandoffs;
use chatbot_server::application::ports::{AgentPresence, HandoffStore, Swap};
use chatbot_server::domain::handoff::{AgentRef, Handoff};
use chatbot_server::domain::{SessionId, SessionUser, UserId, Username};
use chrono::Utc;
use common::redis::{on_fresh_cluster_prefix, on_fresh_prefix, RedisTarget};

/// Two instances' views of one store.
struct Pair {
    here: Arc<dyn HandoffStore>,
    there: Arc<dyn HandoffStore>,
    presence_here: Arc<dyn AgentPresence>,
    presence_there: Arc<dyn AgentPresence>,
}

fn agent(name: &str) -> AgentRef {
    AgentRef {
        id: UserId::parse(&format!(
            "{name}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .unwrap(),
        username: Username::parse(name).unwrap(),
    }
}

/// A fresh conversation in the queue; its record.
async fn queued(store: &dyn HandoffStore) -> Handoff {
    let session = SessionId::generate();
    let user = SessionUser {
        id: UserId::parse("customer1").unwrap(),
        username: Username::parse("carol").unwrap(),
    };
    let t = Handoff::escalate(None, session.clone(), user, 1, Utc::now()).unwrap();
    assert_eq!(store.swap(&session, 0, t.next).await.unwrap(), Swap::Done);
    store.get(&session).await.unwrap().unwrap()
}

async fn assign(store: &dyn HandoffStore, h: &Handoff, to: &AgentRef) -> Handoff {
    let t = h.claim(to.clone(), Utc::now()).unwrap();
    assert_eq!(
        store.swap(&h.session, h.version, t.next).await.unwrap(),
        Swap::Done
    );
    store.get(&h.session).await.unwrap().unwrap()
}

async fn taking_lease_is_one_holder_at_a_time_per_agent(p: &Pair) {
    let ann = agent("ann");
    let ben = agent("ben");
    let lease = Duration::from_millis(600);
    assert!(p.here.begin_taking(&ann.id, "t1", lease).await.unwrap());
    // Another instance's taking of the same agent waits; another agent's not.
    assert!(!p.there.begin_taking(&ann.id, "t2", lease).await.unwrap());
    assert!(p.there.begin_taking(&ben.id, "t3", lease).await.unwrap());
    // The holder may extend it; only the holder ends it.
    assert!(p.here.begin_taking(&ann.id, "t1", lease).await.unwrap());
    p.there.end_taking(&ann.id, "t2").await.unwrap();
    assert!(!p.there.begin_taking(&ann.id, "t2", lease).await.unwrap());
    p.here.end_taking(&ann.id, "t1").await.unwrap();
    assert!(p.there.begin_taking(&ann.id, "t2", lease).await.unwrap());
    // A holder that never ends it (its instance died) lapses with the lease.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(p.here.begin_taking(&ann.id, "t4", lease).await.unwrap());
    p.here.end_taking(&ann.id, "t4").await.unwrap();
    p.there.end_taking(&ben.id, "t3").await.unwrap();
}

async fn a_summary_lives_while_its_agent_holds_the_conversation(p: &Pair) {
    let ann = agent("ann");
    let ben = agent("ben");
    let h = queued(p.here.as_ref()).await;
    let s = h.session.clone();
    // Not held: nothing kept.
    assert!(!p.here.keep_summary(&s, &ann.id, "early").await.unwrap());
    assert_eq!(p.there.summary(&s).await.unwrap(), None);
    let h = assign(p.here.as_ref(), &h, &ann).await;
    assert!(!p.here.keep_summary(&s, &ben.id, "not ben's").await.unwrap());
    assert!(p
        .here
        .keep_summary(&s, &ann.id, "Wants a refund.")
        .await
        .unwrap());
    assert_eq!(
        p.there.summary(&s).await.unwrap().as_deref(),
        Some("Wants a refund.")
    );
    // Back to the queue: forgotten; a new holder starts without one.
    let t = h.release(&ann.id, 1, Utc::now()).unwrap();
    assert_eq!(
        p.there.swap(&s, h.version, t.next).await.unwrap(),
        Swap::Done
    );
    assert_eq!(p.here.summary(&s).await.unwrap(), None);
    let h = p.here.get(&s).await.unwrap().unwrap();
    let h = assign(p.there.as_ref(), &h, &ben).await;
    assert_eq!(p.here.summary(&s).await.unwrap(), None);
    assert!(p
        .there
        .keep_summary(&s, &ben.id, "Ben's view.")
        .await
        .unwrap());
    // Back to the bot: gone with the record.
    assert_eq!(p.here.swap(&s, h.version, None).await.unwrap(), Swap::Done);
    assert_eq!(p.there.summary(&s).await.unwrap(), None);
}

async fn agents_seen_lately_are_listed_with_their_status(p: &Pair) {
    let ann = agent("ann");
    let ben = agent("ben");
    let cid = agent("cid");
    let lease = Duration::from_secs(30);
    let before = Utc::now() - chrono::Duration::seconds(1);
    p.presence_here.renew(&ann.id, "s1", lease).await.unwrap();
    p.presence_there.renew(&ben.id, "s2", lease).await.unwrap();
    p.presence_there.set_away(&ben.id, true).await.unwrap();
    p.presence_here.renew(&cid.id, "s3", lease).await.unwrap();
    p.presence_here.leave(&cid.id, "s3").await.unwrap();
    let seen = p.presence_there.seen(before, 100).await.unwrap();
    let of = |id: &UserId| seen.iter().find(|a| a.id == *id).cloned();
    let a = of(&ann.id).expect("ann is listed");
    assert!(a.online && !a.away, "{a:?}");
    let b = of(&ben.id).expect("ben is listed");
    assert!(b.online && b.away, "{b:?}");
    let c = of(&cid.id).expect("cid, who left, is listed");
    assert!(!c.online, "{c:?}");
    // Seen before `since`: not listed.
    let later = Utc::now() + chrono::Duration::seconds(1);
    let seen = p.presence_here.seen(later, 100).await.unwrap();
    assert!(seen.iter().all(|a| a.id != cid.id), "{seen:?}");
    assert!(
        seen.iter().any(|a| a.id == ann.id),
        "online counts as seen now"
    );
    p.presence_here.leave(&ann.id, "s1").await.unwrap();
    p.presence_there.leave(&ben.id, "s2").await.unwrap();
}

async fn contract(p: Pair) {
    taking_lease_is_one_holder_at_a_time_per_agent(&p).await;
    a_summary_lives_while_its_agent_holds_the_conversation(&p).await;
    agents_seen_lately_are_listed_with_their_status(&p).await;
}

#[tokio::test]
async fn in_memory_handoffs_keep_the_desk_contract() {
    let store = Arc::new(MemoryHandoffs::default());
    let presence = Arc::new(MemoryPresence::default());
    contract(Pair {
        here: store.clone(),
        there: store,
        presence_here: presence.clone(),
        presence_there: presence,
    })
    .await;
}

async fn on_redis(target: RedisTarget, prefix: String) {
    let ttl = Duration::from_secs(600);
    let (here, presence_here) = RedisHandoffs::connect(target.clone(), &prefix, ttl)
        .await
        .unwrap();
    let (there, presence_there) = RedisHandoffs::connect(target, &prefix, ttl).await.unwrap();
    contract(Pair {
        here: Arc::new(here),
        there: Arc::new(there),
        presence_here: Arc::new(presence_here),
        presence_there: Arc::new(presence_there),
    })
    .await;
}

#[tokio::test]
async fn redis_handoffs_keep_the_desk_contract_between_instances() {
    on_fresh_prefix("handoff-desk", |url, prefix| {
        on_redis(RedisTarget::Single(url), prefix)
    })
    .await;
}

#[tokio::test]
async fn redis_cluster_handoffs_keep_the_desk_contract() {
    on_fresh_cluster_prefix("handoff-desk", on_redis).await;
}
