//! Signals within one process: a small broadcast ring per topic that has a
//! subscriber, forgotten when its last subscriber leaves. It is the
//! [`SignalBus`] of a single instance, and the local fan-out of the Redis one.
//!
//! Memory bound: at most [`MAX_TOPICS`] topics (a subscription beyond that
//! hears nothing, and says so once in the log), each ring at most
//! [`SIGNAL_BUFFER`] signals ([`SESSION_SIGNAL_BUFFER`] for a session's); a
//! subscriber that falls further behind skips what it missed (a signal is
//! only worth something now).
//!
//! Every open customer socket follows its session's topic, so an idle one
//! costs its topic's ring: tokio's broadcast allocates every slot up front.
//! The rings hold `Arc<Signal>` (a pointer per slot, not a whole signal),
//! and a session's ring is short: its signals are typing (at most one a
//! second per sender) and nothing that must not be skipped. An agent's
//! topic also carries summaries and ratings from all of their
//! conversations, so it keeps the longer ring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::application::ports::{ConversationStoreError, SignalBus, SignalStream};
use crate::domain::signal::{Signal, SignalTopic};

/// Signals one subscriber of an agent's topic may fall behind by.
pub const SIGNAL_BUFFER: usize = 16;
/// Signals one subscriber of a session's topic may fall behind by.
pub const SESSION_SIGNAL_BUFFER: usize = 4;
/// Topics one instance follows at once (a socket follows one or a few).
pub const MAX_TOPICS: usize = 100_000;

type Topics = Mutex<HashMap<SignalTopic, broadcast::Sender<Arc<Signal>>>>;

fn lock(m: &Topics) -> MutexGuard<'_, HashMap<SignalTopic, broadcast::Sender<Arc<Signal>>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topics this process's subscribers listen to.
#[derive(Default, Clone)]
pub struct LocalSignals {
    topics: Arc<Topics>,
}

/// Forgets its topic once the last subscriber is gone. Held after the
/// receiver in the stream's state, so it drops after it.
struct Leave {
    topics: Weak<Topics>,
    topic: SignalTopic,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let Some(topics) = self.topics.upgrade() else {
            return;
        };
        let mut topics = lock(&topics);
        if topics
            .get(&self.topic)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            topics.remove(&self.topic);
        }
    }
}

impl LocalSignals {
    /// Hands `signal` to this process's subscribers of `topic`, if any.
    pub fn deliver(&self, topic: &SignalTopic, signal: Signal) {
        if let Some(tx) = lock(&self.topics).get(topic) {
            let _ = tx.send(Arc::new(signal));
        }
    }

    /// How many topics have a subscriber here.
    pub fn topics(&self) -> usize {
        lock(&self.topics).len()
    }

    /// A subscription to `topic` on this process.
    pub fn listen(&self, topic: &SignalTopic) -> SignalStream {
        let rx = {
            let mut topics = lock(&self.topics);
            match topics.get(topic) {
                Some(tx) => tx.subscribe(),
                None if topics.len() >= MAX_TOPICS => {
                    drop(topics);
                    tracing::warn!(
                        max = MAX_TOPICS,
                        "too many signal topics; this subscriber hears no typing or summaries"
                    );
                    return Box::pin(futures_util::stream::pending());
                }
                None => {
                    let (tx, rx) = broadcast::channel(ring(topic));
                    topics.insert(topic.clone(), tx);
                    rx
                }
            }
        };
        let leave = Leave {
            topics: Arc::downgrade(&self.topics),
            topic: topic.clone(),
        };
        Box::pin(futures_util::stream::unfold(
            (rx, leave),
            |(mut rx, leave)| async move {
                loop {
                    match rx.recv().await {
                        Ok(signal) => return Some((Signal::clone(&signal), (rx, leave))),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// The ring a topic gets; see the module docs.
fn ring(topic: &SignalTopic) -> usize {
    match topic {
        SignalTopic::Session(_) => SESSION_SIGNAL_BUFFER,
        SignalTopic::Agent(_) | SignalTopic::Desk => SIGNAL_BUFFER,
    }
}

#[async_trait]
impl SignalBus for LocalSignals {
    async fn publish(
        &self,
        topic: &SignalTopic,
        signal: Signal,
    ) -> Result<(), ConversationStoreError> {
        self.deliver(topic, signal);
        Ok(())
    }

    fn subscribe(&self, topic: &SignalTopic) -> SignalStream {
        self.listen(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signal::Side;
    use crate::domain::SessionId;
    use futures_util::StreamExt;

    fn typing(s: &SessionId, state: bool) -> Signal {
        Signal::Typing {
            session: s.clone(),
            from: Side::Customer,
            state,
        }
    }

    #[tokio::test]
    async fn a_topic_is_forgotten_with_its_last_subscriber() {
        let bus = LocalSignals::default();
        let s = SessionId::generate();
        let topic = SignalTopic::Session(s.clone());
        let mut a = bus.subscribe(&topic);
        let b = bus.subscribe(&topic);
        assert_eq!(bus.topics(), 1);
        bus.publish(&topic, typing(&s, true)).await.unwrap();
        assert_eq!(a.next().await, Some(typing(&s, true)));
        drop(b);
        assert_eq!(bus.topics(), 1);
        drop(a);
        assert_eq!(bus.topics(), 0);
        // Nobody listens: nothing is kept.
        bus.publish(&topic, typing(&s, false)).await.unwrap();
        assert_eq!(bus.topics(), 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_what_it_missed() {
        let bus = LocalSignals::default();
        let s = SessionId::generate();
        let topic = SignalTopic::Session(s.clone());
        let mut slow = bus.subscribe(&topic);
        for i in 0..(SESSION_SIGNAL_BUFFER + 5) {
            bus.deliver(&topic, typing(&s, i % 2 == 0));
        }
        let mut heard = Vec::new();
        while let Some(Some(signal)) = futures_util::FutureExt::now_or_never(slow.next()) {
            heard.push(signal);
        }
        assert_eq!(heard.len(), SESSION_SIGNAL_BUFFER);
        // The newest ones, in order.
        let last = SESSION_SIGNAL_BUFFER + 4;
        assert_eq!(heard.last(), Some(&typing(&s, last.is_multiple_of(2))));
    }
}
