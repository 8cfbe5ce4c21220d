//! Signals (typing, an agent's summary, the desk's changes) between instances over one Redis
//! pub/sub channel, `P:v1:signals` (a classic channel, which a Redis Cluster
//! forwards to every node). Nothing is stored.
//!
//! A message is the publishing instance's id, a space, and the signal as a
//! small JSON record. The publisher hands the signal to its own subscribers
//! directly and skips its own messages when they come back. Every instance
//! hears every signal and passes it to its local subscribers of the topic, if
//! any ([`LocalSignals`]); that is cheap because signals are few: at most one
//! per second per typist, and only conversations an agent holds have any.
//! A lost link is reopened with backoff; subscriptions live on meanwhile
//! (what is published in between is missed, as a signal may be).

use std::time::Duration;

use async_trait::async_trait;
use redis::RedisError;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::local_signals::LocalSignals;
use super::redis_manager::{connect, Incoming, RedisConn, RedisTarget, Subscriber};
use crate::application::ports::{ConversationStoreError, SignalBus, SignalStream, StoreFailure};
use crate::domain::csat::Csat;
use crate::domain::signal::{Side, Signal, SignalTopic};
use crate::domain::{SessionId, UserId};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A signal as the channel carries it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "lowercase")]
enum Wire {
    Typing {
        s: String,
        from: String,
        on: bool,
    },
    Summary {
        s: String,
        text: String,
    },
    Csat {
        s: String,
        rating: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    Desk,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Envelope {
    /// `s:<session>`, `a:<agent>` or `d:` (the desk).
    to: String,
    signal: Wire,
}

fn encode(topic: &SignalTopic, signal: &Signal) -> String {
    let to = match topic {
        SignalTopic::Session(s) => format!("s:{s}"),
        SignalTopic::Agent(a) => format!("a:{}", a.as_str()),
        SignalTopic::Desk => "d:".to_owned(),
    };
    let signal = match signal {
        Signal::Typing {
            session,
            from,
            state,
        } => Wire::Typing {
            s: session.as_str().to_owned(),
            from: from.as_str().to_owned(),
            on: *state,
        },
        Signal::HandoffSummary { session, summary } => Wire::Summary {
            s: session.as_str().to_owned(),
            text: summary.clone(),
        },
        Signal::Csat { session, csat } => Wire::Csat {
            s: session.as_str().to_owned(),
            rating: i64::from(csat.rating.get()),
            comment: csat.comment.as_ref().map(|c| c.as_str().to_owned()),
        },
        Signal::DeskChanged => Wire::Desk,
    };
    serde_json::to_string(&Envelope { to, signal }).unwrap_or_default()
}

/// A record another instance wrote; anything unreadable is dropped.
fn decode(raw: &[u8]) -> Option<(SignalTopic, Signal)> {
    let e: Envelope = serde_json::from_slice(raw).ok()?;
    let topic = match e.to.split_once(':')? {
        ("s", s) => SignalTopic::Session(SessionId::parse(s).ok()?),
        ("a", a) => SignalTopic::Agent(UserId::parse(a).ok()?),
        ("d", "") => SignalTopic::Desk,
        _ => return None,
    };
    let signal = match e.signal {
        Wire::Typing { s, from, on } => Signal::Typing {
            session: SessionId::parse(&s).ok()?,
            from: Side::parse(&from)?,
            state: on,
        },
        Wire::Summary { s, text } => Signal::summary(SessionId::parse(&s).ok()?, &text)?,
        Wire::Csat { s, rating, comment } => Signal::Csat {
            session: SessionId::parse(&s).ok()?,
            csat: Csat::parse(rating, comment.as_deref()).ok()?,
        },
        Wire::Desk => Signal::DeskChanged,
    };
    Some((topic, signal))
}

/// The signal bus of one instance on a shared Redis.
pub struct RedisSignals {
    conn: RedisConn,
    channel: String,
    instance: String,
    local: LocalSignals,
    /// Stops the channel reader when the bus is dropped.
    _reader: DropGuard,
}

impl RedisSignals {
    /// Connects and subscribes (before returning, so nothing published
    /// afterwards is missed), and starts the reader.
    ///
    /// # Errors
    /// [`ConversationStoreError`] when Redis does not answer.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        key_prefix: &str,
    ) -> Result<Self, ConversationStoreError> {
        let target = target.into();
        let conn = connect(&target).await?;
        let channel = format!("{key_prefix}:v1:signals");
        let link = Subscriber::open(&target, &channel).await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let local = LocalSignals::default();
        let cancel = CancellationToken::new();
        let reader = Reader {
            target,
            channel: channel.clone(),
            instance: instance.clone(),
            local: local.clone(),
        };
        tokio::spawn(reader.run(link, cancel.clone()));
        Ok(Self {
            conn,
            channel,
            instance,
            local,
            _reader: cancel.drop_guard(),
        })
    }
}

#[async_trait]
impl SignalBus for RedisSignals {
    async fn publish(
        &self,
        topic: &SignalTopic,
        signal: Signal,
    ) -> Result<(), ConversationStoreError> {
        let message = format!("{} {}", self.instance, encode(topic, &signal));
        self.local.deliver(topic, signal);
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e: RedisError| StoreFailure::new("could not publish a signal", e).into())
    }

    fn subscribe(&self, topic: &SignalTopic) -> SignalStream {
        self.local.listen(topic)
    }
}

/// Reads the channel for this instance, reconnecting with backoff.
struct Reader {
    target: RedisTarget,
    channel: String,
    instance: String,
    local: LocalSignals,
}

impl Reader {
    async fn run(self, first: Subscriber, cancel: CancellationToken) {
        let mut link = Some(first);
        loop {
            let mut messages = match link.take() {
                Some(l) => l,
                None => match self.reconnect(&cancel).await {
                    Some(l) => l,
                    None => return,
                },
            };
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    msg = messages.next() => match msg {
                        Some(Incoming::Message(msg)) => self.heard(msg.get_payload_bytes()),
                        Some(Incoming::ShardLost(_) | Incoming::NodeLost) => {}
                        None => break,
                    },
                }
            }
            tracing::warn!("signal channel lost; reconnecting");
        }
    }

    fn heard(&self, payload: &[u8]) {
        let Some(space) = payload.iter().position(|b| *b == b' ') else {
            return;
        };
        let (origin, record) = payload.split_at(space);
        if origin == self.instance.as_bytes() {
            return;
        }
        if let Some((topic, signal)) = decode(&record[1..]) {
            self.local.deliver(&topic, signal);
        }
    }

    async fn reconnect(&self, cancel: &CancellationToken) -> Option<Subscriber> {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            if let Ok(link) = Subscriber::open(&self.target, &self.channel).await {
                tracing::info!("signal channel reconnected");
                return Some(link);
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_and_junk_is_dropped() {
        let s = SessionId::parse("sess_abc").unwrap();
        let a = UserId::parse("u1").unwrap();
        let cases = [
            (
                SignalTopic::Session(s.clone()),
                Signal::Typing {
                    session: s.clone(),
                    from: Side::Agent,
                    state: true,
                },
            ),
            (
                SignalTopic::Agent(a.clone()),
                Signal::summary(s.clone(), "They want a refund.").unwrap(),
            ),
            (
                SignalTopic::Agent(a),
                Signal::Csat {
                    session: s,
                    csat: Csat::parse(4, Some("thanks")).unwrap(),
                },
            ),
            (SignalTopic::Desk, Signal::DeskChanged),
        ];
        for (topic, signal) in cases {
            let raw = encode(&topic, &signal);
            assert_eq!(decode(raw.as_bytes()), Some((topic, signal)));
        }
        for junk in [
            "",
            "{}",
            r#"{"to":"x:1","signal":{"k":"typing","s":"sess_a","from":"agent","on":true}}"#,
            r#"{"to":"s:../x","signal":{"k":"typing","s":"sess_a","from":"agent","on":true}}"#,
            r#"{"to":"s:sess_a","signal":{"k":"typing","s":"sess_a","from":"bot","on":true}}"#,
            r#"{"to":"s:sess_a","signal":{"k":"summary","s":"sess_a","text":"  "}}"#,
        ] {
            assert_eq!(decode(junk.as_bytes()), None, "{junk}");
        }
    }
}
