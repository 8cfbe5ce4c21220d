//! A connection's view of a session: what it missed (replayed from the log)
//! and then every new event, live, in `seq` order, each exactly once.
//!
//! The live subscription is opened *before* the log is read, so an event
//! produced while the replay is read reaches the connection through one or the
//! other; merging by `seq` drops the duplicates. A jump in `seq` on the live
//! side (a shared transport that dropped a message, or two publishers racing)
//! is filled from the log before the later event is handed out.
//!
//! Beside the log, an attachment hears the session's live-only signals: the
//! other side's typing, which it says has stopped once it went unrefreshed
//! for [`TYPING_CLEAR`](crate::domain::signal::TYPING_CLEAR). A customer's
//! attachment follows them only while an agent holds the conversation (the
//! only time there is typing to hear): a subscription is a ring per session
//! on the signal bus, and most idle sockets never see an agent.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use std::task::{ready, Poll};

use futures_util::StreamExt;

use super::ports::{
    ConversationStoreError, EventLog, LiveItem, LiveStream, SharedEvent, SignalBus, SignalStream,
};
use crate::domain::conversation::{ConversationEvent, LoggedEvent, Seq};
use crate::domain::signal::{Side, Signal, SignalTopic, TypingShown};
use crate::domain::SessionId;

/// Events read from the log per round trip.
const PAGE: usize = 500;

/// What a connection is told right after `connected` when it asked to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeNotice {
    /// Events after `from_seq - 1` were trimmed; the replay starts at `oldest_seq`.
    HistoryLost {
        from_seq: Seq,
        oldest_seq: Seq,
        seq: Seq,
    },
    /// The client claims to have seen events the session never had.
    LastSeqAhead { seq: Seq },
}

/// What [`Attachment::next`] yields.
#[derive(Debug)]
pub enum Feed {
    Event(Arc<LoggedEvent>),
    /// This connection fell further behind than its buffer allows.
    FellBehind,
    /// The conversation store stopped delivering to this connection: its
    /// live subscription was cut (the store's transport failed), so events
    /// may be missing from here on, and an answer whose store died can never
    /// log its end. The connection must resume from the log once the store
    /// is back, rather than wait in silence.
    StoreUnavailable,
    /// The other side started or stopped typing (live only, never logged).
    Typing {
        state: bool,
    },
}

/// A connection attached to a session.
pub struct Attachment {
    session: SessionId,
    log: Arc<dyn EventLog>,
    live: LiveStream,
    /// The session's latest seq when the connection attached (for `connected`).
    pub head: Seq,
    /// Said once, right after `connected`, before the replay. Boxed: it is
    /// rare, and every idle socket would keep its room for its whole life.
    pub notice: Option<Box<ResumeNotice>>,
    /// Replayed or gap-filled events not yet handed out, in seq order.
    pending: VecDeque<Arc<LoggedEvent>>,
    /// A live event taken from the subscription whose predecessors are still
    /// being read from the log.
    parked: Option<Arc<LoggedEvent>>,
    /// The highest seq handed out (or deliberately skipped).
    delivered: Seq,
    /// The session's signals, and who listens: `None` until
    /// [`Self::with_signals`] (the log alone, as in tests).
    signals: Option<Signals>,
    /// The other side's typing as told to this connection.
    typing: TypingShown,
}

impl Attachment {
    /// Subscribes, reads the head and, when `last_seq` is given, what came after it.
    pub(super) async fn open(
        session: SessionId,
        log: Arc<dyn EventLog>,
        live: LiveStream,
        last_seq: Option<Seq>,
    ) -> Result<Self, ConversationStoreError> {
        let head = log.head(&session).await?;
        let mut attachment = Self {
            session,
            log,
            live,
            head,
            notice: None,
            pending: VecDeque::new(),
            parked: None,
            delivered: head,
            signals: None,
            typing: TypingShown::default(),
        };
        match last_seq {
            None => {}
            Some(n) if n > head => {
                attachment.notice = Some(Box::new(ResumeNotice::LastSeqAhead { seq: head }))
            }
            Some(n) => attachment.replay_from(n).await?,
        }
        Ok(attachment)
    }

    /// Also hands out the session's signals meant for `side`: an agent's
    /// at once; a customer's from now when `held` (an agent held the
    /// conversation when its state was read, after this attachment's head),
    /// and otherwise from the next `agent-joined`.
    pub(super) fn with_signals(mut self, bus: Arc<dyn SignalBus>, side: Side, held: bool) -> Self {
        let mut signals = Signals {
            bus,
            side,
            stream: None,
        };
        if held || side == Side::Agent {
            signals.follow(&self.session);
        }
        self.signals = Some(signals);
        self
    }

    /// Takes or drops a customer's subscription to the session's signals as
    /// agents join and leave. Events up to the head are left out: the
    /// handoff state read after the head already counts them (the state is
    /// written before its events are logged).
    fn follow_holder(&mut self, event: &LoggedEvent) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        if signals.side != Side::Customer || event.seq <= self.head {
            return;
        }
        match event.event {
            ConversationEvent::AgentJoined { .. } => signals.follow(&self.session),
            ConversationEvent::AgentLeft { .. }
            | ConversationEvent::HandoffResolved { .. }
            | ConversationEvent::HandoffTimeout
            | ConversationEvent::HandoffCancelled => signals.stream = None,
            _ => {}
        }
    }

    /// Queues everything after `after` that the log holds, up to its head now.
    async fn replay_from(&mut self, after: Seq) -> Result<(), ConversationStoreError> {
        self.delivered = after;
        let first = self.log.read_after(&self.session, after, PAGE).await?;
        if first.lost_after(after) {
            self.notice = Some(Box::new(ResumeNotice::HistoryLost {
                from_seq: after + 1,
                oldest_seq: first.oldest,
                seq: first.head,
            }));
        }
        self.head = self.head.max(first.head);
        self.queue(first.events);
        self.fill_to(self.head).await
    }

    /// Reads the log until every seq up to `target` is queued (or trimmed).
    async fn fill_to(&mut self, target: Seq) -> Result<(), ConversationStoreError> {
        while self.queued_up_to() < target {
            let from = self.queued_up_to();
            let slice = self.log.read_after(&self.session, from, PAGE).await?;
            if slice.events.is_empty() {
                // Trimmed or not there: nothing more to fetch for this gap.
                self.delivered = self.delivered.max(target.min(slice.head));
                return Ok(());
            }
            self.queue(slice.events);
        }
        Ok(())
    }

    fn queued_up_to(&self) -> Seq {
        self.pending.back().map_or(self.delivered, |e| e.seq)
    }

    fn queue(&mut self, events: Vec<SharedEvent>) {
        let after = self.queued_up_to();
        self.pending
            .extend(events.into_iter().filter(|e| e.seq > after));
    }

    /// The next event after everything already handed out.
    ///
    /// Cancel-safe: a caller may drop this future at any await (to serve
    /// another branch of a `select!`) and call again without losing an event,
    /// because a live event is parked before the log is read to fill a gap.
    ///
    /// # Errors
    /// When the log cannot be read to fill a gap: the store failed too.
    pub async fn next(&mut self) -> Result<Feed, ConversationStoreError> {
        loop {
            if let Some(event) = self.parked.clone() {
                // Stays parked across the read, so a cancelled call resumes it.
                if event.seq > self.queued_up_to() + 1 {
                    // Boxed: a gap is rare, and inline its read would be
                    // room in every idle socket's writer.
                    Box::pin(self.fill_to(event.seq - 1)).await?;
                }
                self.parked = None;
                if event.seq > self.queued_up_to() {
                    self.pending.push_back(event);
                }
            }
            if let Some(event) = self.pending.pop_front() {
                self.delivered = event.seq;
                self.follow_holder(&event);
                return Ok(Feed::Event(event));
            }
            let heard = tokio::select! {
                item = self.live.next() => Heard::Live(item),
                signal = next_signal(&mut self.signals) => Heard::Signal(signal),
                () = lapse(self.typing.deadline()) => Heard::TypingLapsed,
            };
            match heard {
                Heard::Live(None) => return Ok(Feed::StoreUnavailable),
                Heard::Live(Some(LiveItem::Lagged { .. })) => return Ok(Feed::FellBehind),
                Heard::Live(Some(LiveItem::Event(event))) if event.seq > self.delivered => {
                    self.parked = Some(event);
                }
                Heard::Live(Some(LiveItem::Event(_))) => {}
                Heard::Signal(state) => {
                    if self
                        .typing
                        .heard(state, tokio::time::Instant::now().into_std())
                    {
                        return Ok(Feed::Typing { state });
                    }
                }
                Heard::TypingLapsed => {
                    if self.typing.lapsed(tokio::time::Instant::now().into_std()) {
                        return Ok(Feed::Typing { state: false });
                    }
                }
            }
        }
    }
}

/// What [`Attachment::next`] heard while it had nothing queued.
enum Heard {
    Live(Option<LiveItem>),
    /// The other side's typing.
    Signal(bool),
    TypingLapsed,
}

/// The session's signals as one side hears them.
struct Signals {
    bus: Arc<dyn SignalBus>,
    side: Side,
    /// The subscription, while there is something to hear.
    stream: Option<SignalStream>,
}

impl Signals {
    fn follow(&mut self, session: &SessionId) {
        if self.stream.is_none() {
            let topic = SignalTopic::Session(session.clone());
            self.stream = Some(self.bus.subscribe(&topic));
        }
    }
}

/// The next typing of the other side; pending for ever while not
/// subscribed (or once the signals ended: a signal is a courtesy, the log
/// is the truth). Cancel-safe: a stream's `poll_next` is.
///
/// Written as a poll function, not an `async fn`: the future is part of
/// every idle socket's writer, and this one holds only the reference.
fn next_signal(signals: &mut Option<Signals>) -> impl std::future::Future<Output = bool> + '_ {
    std::future::poll_fn(move |cx| loop {
        let Some(Signals {
            stream: Some(stream),
            side,
            ..
        }) = signals
        else {
            return Poll::Pending;
        };
        match ready!(stream.poll_next_unpin(cx)) {
            Some(Signal::Typing { from, state, .. }) if from == side.other() => {
                return Poll::Ready(state)
            }
            Some(_) => {}
            None => *signals = None,
        }
    })
}

/// Resolves at `deadline`; never without one. The timer is boxed and
/// polled in place: this future is part of every idle socket's writer, and
/// most never show typing (then it holds nothing but an empty option).
fn lapse(deadline: Option<std::time::Instant>) -> impl std::future::Future<Output = ()> {
    let mut timer =
        deadline.map(|at| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at))));
    std::future::poll_fn(move |cx| match &mut timer {
        Some(timer) => timer.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::{LogSlice, MockEventLog};
    use crate::domain::conversation::ConversationEvent;
    use crate::domain::MessageId;
    use chrono::Utc;

    fn ev(seq: Seq) -> LoggedEvent {
        LoggedEvent {
            seq,
            at: Utc::now(),
            event: ConversationEvent::StreamToken {
                message_id: MessageId::parse("msg_x").unwrap(),
                token: format!("t{seq}"),
            },
        }
    }

    /// A log holding `oldest..=head`.
    fn log_of(oldest: Seq, head: Seq) -> MockEventLog {
        let mut log = MockEventLog::new();
        log.expect_head().returning(move |_| Ok(head));
        log.expect_read_after().returning(move |_, after, limit| {
            let from = (after + 1).max(oldest);
            Ok(LogSlice {
                events: (from..=head).take(limit).map(ev).map(Arc::new).collect(),
                head,
                oldest,
            })
        });
        log
    }

    fn live(seqs: Vec<Seq>) -> LiveStream {
        Box::pin(futures_util::stream::iter(
            seqs.into_iter().map(|s| LiveItem::Event(Arc::new(ev(s)))),
        ))
    }

    async fn drain(a: &mut Attachment) -> Vec<Seq> {
        let mut out = Vec::new();
        while let Feed::Event(e) = a.next().await.unwrap() {
            out.push(e.seq);
        }
        out
    }

    #[tokio::test]
    async fn replay_then_live_without_gap_or_duplicate() {
        // The log has 1..=10; live already carried 9 and 10 (subscribed
        // before the read) and then 11, 12.
        let log = Arc::new(log_of(1, 10));
        let mut a = Attachment::open(
            SessionId::generate(),
            log,
            live(vec![9, 10, 11, 12]),
            Some(4),
        )
        .await
        .unwrap();
        assert_eq!(a.head, 10);
        assert_eq!(a.notice, None);
        assert_eq!(drain(&mut a).await, (5..=12).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn no_last_seq_means_no_replay() {
        let log = Arc::new(log_of(1, 10));
        let mut a = Attachment::open(SessionId::generate(), log, live(vec![10, 11]), None)
            .await
            .unwrap();
        assert_eq!(drain(&mut a).await, vec![11]);
    }

    #[tokio::test]
    async fn trimmed_history_is_announced_and_the_rest_replayed() {
        let log = Arc::new(log_of(40, 50));
        let mut a = Attachment::open(SessionId::generate(), log, live(vec![]), Some(3))
            .await
            .unwrap();
        assert_eq!(
            a.notice.as_deref(),
            Some(&ResumeNotice::HistoryLost {
                from_seq: 4,
                oldest_seq: 40,
                seq: 50
            })
        );
        assert_eq!(drain(&mut a).await, (40..=50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_last_seq_beyond_the_head_replays_nothing() {
        let log = Arc::new(log_of(1, 5));
        let mut a = Attachment::open(SessionId::generate(), log, live(vec![6]), Some(9))
            .await
            .unwrap();
        assert_eq!(
            a.notice.as_deref(),
            Some(&ResumeNotice::LastSeqAhead { seq: 5 })
        );
        assert_eq!(drain(&mut a).await, vec![6]);
    }

    #[tokio::test]
    async fn a_live_gap_is_filled_from_the_log() {
        // Attached at head 3; live skips 4 and 5 (lost in transport).
        let mut log = MockEventLog::new();
        log.expect_head().returning(|_| Ok(3));
        log.expect_read_after().returning(|_, after, _| {
            Ok(LogSlice {
                events: ((after + 1)..=6).map(ev).map(Arc::new).collect(),
                head: 6,
                oldest: 1,
            })
        });
        let mut a = Attachment::open(SessionId::generate(), Arc::new(log), live(vec![6, 7]), None)
            .await
            .unwrap();
        assert_eq!(drain(&mut a).await, vec![4, 5, 6, 7]);
    }

    fn handoff_event(seq: Seq, event: ConversationEvent) -> LiveItem {
        LiveItem::Event(Arc::new(LoggedEvent {
            seq,
            at: Utc::now(),
            event,
        }))
    }

    /// A customer's socket follows the session's signals only while an
    /// agent holds the conversation, and hears the agent's typing then.
    #[tokio::test]
    async fn a_customer_hears_typing_only_while_an_agent_holds_the_conversation() {
        use crate::adapters::outbound::local_signals::LocalSignals;
        use crate::domain::agent::AgentRef;
        use crate::domain::{UserId, Username};
        let session = SessionId::generate();
        let topic = SignalTopic::Session(session.clone());
        let typing = |state| Signal::Typing {
            session: session.clone(),
            from: Side::Agent,
            state,
        };
        let agent = AgentRef {
            id: UserId::parse("agent1").unwrap(),
            username: Username::parse("agent").unwrap(),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let live: LiveStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let bus = LocalSignals::default();
        let mut a = Attachment::open(session.clone(), Arc::new(log_of(1, 0)), live, None)
            .await
            .unwrap()
            .with_signals(Arc::new(bus.clone()), Side::Customer, false);
        assert_eq!(bus.topics(), 0, "no agent: no subscription");
        let joined = ConversationEvent::AgentJoined {
            agent: agent.clone(),
        };
        tx.send(handoff_event(1, joined)).unwrap();
        assert!(matches!(a.next().await.unwrap(), Feed::Event(e) if e.seq == 1));
        assert_eq!(bus.topics(), 1, "an agent holds it: subscribed");
        bus.deliver(&topic, typing(true));
        assert!(matches!(
            a.next().await.unwrap(),
            Feed::Typing { state: true }
        ));
        tx.send(handoff_event(
            2,
            ConversationEvent::HandoffResolved { agent },
        ))
        .unwrap();
        assert!(matches!(a.next().await.unwrap(), Feed::Event(e) if e.seq == 2));
        assert_eq!(bus.topics(), 0, "the agent is gone: unsubscribed");
    }

    /// An agent held the conversation when the socket attached: subscribed at once.
    #[tokio::test]
    async fn a_customer_attaching_to_a_held_conversation_hears_typing_at_once() {
        use crate::adapters::outbound::local_signals::LocalSignals;
        let session = SessionId::generate();
        let bus = LocalSignals::default();
        let pending: LiveStream = Box::pin(futures_util::stream::pending());
        let mut a = Attachment::open(session.clone(), Arc::new(log_of(1, 0)), pending, None)
            .await
            .unwrap()
            .with_signals(Arc::new(bus.clone()), Side::Customer, true);
        assert_eq!(bus.topics(), 1);
        let signal = Signal::Typing {
            session: session.clone(),
            from: Side::Agent,
            state: true,
        };
        bus.deliver(&SignalTopic::Session(session), signal);
        assert!(matches!(
            a.next().await.unwrap(),
            Feed::Typing { state: true }
        ));
    }
}
