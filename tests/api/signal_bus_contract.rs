//! The contract of the `SignalBus` port (live-only typing and summaries): one
//! set of cases run against the in-memory adapter and against two Redis
//! instances on one key prefix, so they cannot drift apart.
//!
//! Redis is taken from `REDIS_URL`; without a reachable Redis the Redis case
//! prints SKIPPED and passes, unless `CI` is set: then it fails.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::local_signals::LocalSignals;
use chatbot_server::adapters::outbound::redis_signals::RedisSignals;
use chatbot_server::application::ports::{SignalBus, SignalStream};
use chatbot_server::domain::signal::{Side, Signal, SignalTopic};
use chatbot_server::domain::{SessionId, UserId};
use common::redis::{redis_answers, redis_url, skip_without_redis};
use futures_util::StreamExt;

fn typing(session: &SessionId, from: Side, state: bool) -> Signal {
    Signal::Typing {
        session: session.clone(),
        from,
        state,
    }
}

async fn next(stream: &mut SignalStream) -> Signal {
    tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("a signal within 3 s")
        .expect("the subscription lives on")
}

async fn silent(stream: &mut SignalStream) {
    let heard = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(heard.is_err(), "heard {heard:?}");
}

/// `here` and `there` are two instances sharing one bus (the same adapter in
/// memory).
async fn contract(here: Arc<dyn SignalBus>, there: Arc<dyn SignalBus>) {
    let s = SessionId::generate();
    let other = SessionId::generate();
    let agent = UserId::parse("agent1").unwrap();
    let session_topic = SignalTopic::Session(s.clone());
    let agent_topic = SignalTopic::Agent(agent);
    let mut local = here.subscribe(&session_topic);
    let mut remote = there.subscribe(&session_topic);
    let mut agent_only = there.subscribe(&agent_topic);
    let mut elsewhere = there.subscribe(&SignalTopic::Session(other.clone()));

    // Each subscriber hears each signal once, in publish order, wherever it was published.
    for state in [true, false, true] {
        here.publish(&session_topic, typing(&s, Side::Customer, state))
            .await
            .unwrap();
    }
    for stream in [&mut local, &mut remote] {
        for state in [true, false, true] {
            assert_eq!(next(stream).await, typing(&s, Side::Customer, state));
        }
        silent(stream).await;
    }
    there
        .publish(&session_topic, typing(&s, Side::Agent, false))
        .await
        .unwrap();
    assert_eq!(next(&mut local).await, typing(&s, Side::Agent, false));
    assert_eq!(next(&mut remote).await, typing(&s, Side::Agent, false));

    // Topics are apart.
    let summary = Signal::summary(s.clone(), "Wants a refund for order 42.").unwrap();
    here.publish(&agent_topic, summary.clone()).await.unwrap();
    assert_eq!(next(&mut agent_only).await, summary);
    silent(&mut local).await;
    silent(&mut elsewhere).await;

    // A subscription made after a publish returned does not hear it (on
    // the publishing instance: elsewhere it may still be on its way); a
    // dropped one does not hold the others up.
    drop(remote);
    here.publish(&session_topic, typing(&s, Side::Customer, true))
        .await
        .unwrap();
    let mut late = here.subscribe(&session_topic);
    assert_eq!(next(&mut local).await, typing(&s, Side::Customer, true));
    silent(&mut late).await;
}

#[tokio::test]
async fn in_memory_signals_keep_the_contract() {
    let bus = Arc::new(LocalSignals::default());
    contract(bus.clone(), bus).await;
}

#[tokio::test]
async fn redis_signals_keep_the_contract_between_instances() {
    let url = redis_url();
    if !redis_answers(&url).await {
        skip_without_redis(&url, "no PING answer");
        return;
    }
    // Nothing is stored, so there is nothing to clean up; a fresh prefix
    // keeps other tests' signals out.
    let prefix = format!("chatbot-signals-{}", uuid::Uuid::new_v4().simple());
    let here = RedisSignals::connect(url.as_str(), &prefix).await.unwrap();
    let there = RedisSignals::connect(url.as_str(), &prefix).await.unwrap();
    contract(Arc::new(here), Arc::new(there)).await;
}
