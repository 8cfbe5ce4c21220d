//! Live-only messages about a conversation ("signals"): who is typing, the
//! summary an agent gets when taking a conversation. Unlike conversation
//! events they are never logged and never replayed: whoever listens now, on
//! any instance, hears them; a client that was away has missed nothing it
//! needs. Also the rules that keep them cheap: one per second per sender, and
//! a "typing" that is not refreshed ends by itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::chat::SessionId;
use super::csat::Csat;
use super::user::UserId;

/// Which side of a handoff conversation a signal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// One of the customer's tabs.
    Customer,
    /// The agent holding the conversation.
    Agent,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Customer => "customer",
            Side::Agent => "agent",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "customer" => Some(Side::Customer),
            "agent" => Some(Side::Agent),
            _ => None,
        }
    }

    /// The side that hears what this side says.
    pub fn other(self) -> Self {
        match self {
            Side::Customer => Side::Agent,
            Side::Agent => Side::Customer,
        }
    }
}

/// Who hears a signal: everyone attached to a session (both sides filter by
/// [`Side`]), every socket of one agent, or every instance's desk (the
/// agents' presence, which each instance shows its agent sockets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignalTopic {
    Session(SessionId),
    Agent(UserId),
    Desk,
}

/// What the AI is asked, after the conversation so far, when an agent takes
/// it (unless `HANDOFF_SUMMARY_PROMPT` says otherwise).
pub const DEFAULT_SUMMARY_PROMPT: &str = "A human support agent is taking over this conversation. \
In at most three short sentences, summarise for them what the customer wants, what has been \
tried or answered so far, and what is still open. Do not address the customer.";

/// The longest summary passed on, in characters: an agent reads it at a glance.
pub const SUMMARY_MAX_CHARS: usize = 2000;

/// A live-only message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `from` started (`true`) or stopped typing in `session`.
    Typing {
        session: SessionId,
        from: Side,
        state: bool,
    },
    /// What the conversation was about before the agent took it.
    HandoffSummary { session: SessionId, summary: String },
    /// The customer said how a conversation this agent resolved went.
    Csat { session: SessionId, csat: Csat },
    /// An agent came online, went offline or changed their status: every
    /// instance reads the desk again.
    DeskChanged,
}

impl Signal {
    /// A summary cut to [`SUMMARY_MAX_CHARS`]; `None` when there is nothing
    /// but whitespace to say.
    pub fn summary(session: SessionId, text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(Signal::HandoffSummary {
            session,
            summary: text.chars().take(SUMMARY_MAX_CHARS).collect(),
        })
    }
}

/// At most one typing signal per [`TYPING_INTERVAL`] per sender; a signal
/// that ends typing after one that began it always passes, so the other side
/// never shows a typist who stopped.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// How long a "typing" lasts without a refresh: the receiver is told it
/// ended when no signal came for this long.
pub const TYPING_CLEAR: Duration = Duration::from_secs(5);

/// One sender's typing rate: what it last let through, and when.
#[derive(Debug, Clone, Default)]
pub struct TypingThrottle {
    last: Option<(Instant, bool)>,
}

impl TypingThrottle {
    /// Whether `state`, sent at `now`, goes on (and is remembered as sent).
    /// Extras within the interval are dropped quietly.
    pub fn admit(&mut self, state: bool, now: Instant) -> bool {
        let pass = match self.last {
            None => true,
            Some((_, true)) if !state => true,
            Some((at, _)) => now.saturating_duration_since(at) >= TYPING_INTERVAL,
        };
        if pass {
            self.last = Some((now, state));
        }
        pass
    }

    /// Whether this throttle admits whatever comes next, as a fresh one would.
    fn lapsed(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|(at, _)| now.saturating_duration_since(at) >= TYPING_INTERVAL)
    }
}

/// Senders one instance remembers the typing rate of; a sender beyond it is
/// dropped quietly until older ones lapse (a sender is remembered for one
/// [`TYPING_INTERVAL`] after its last signal).
pub const MAX_TYPISTS: usize = 100_000;

/// One typist: a side of one conversation, whatever tab or console it types in.
pub type Typist = (SessionId, Side);

/// The typing rate of every sender on one instance: one [`TypingThrottle`]
/// per [`Typist`], so a customer's two tabs (or an agent's two consoles)
/// share one rate. Bounded by [`MAX_TYPISTS`].
#[derive(Debug, Default)]
pub struct TypingThrottles {
    senders: HashMap<Typist, TypingThrottle>,
}

impl TypingThrottles {
    /// Whether `typist`'s `state`, sent at `now`, goes on.
    pub fn admit(&mut self, typist: &Typist, state: bool, now: Instant) -> bool {
        if !self.senders.contains_key(typist) && self.senders.len() >= MAX_TYPISTS {
            // A throttle whose last signal is a second old admits as a new
            // one would: forgetting those changes nothing.
            self.senders.retain(|_, t| !t.lapsed(now));
            if self.senders.len() >= MAX_TYPISTS {
                return false;
            }
        }
        self.senders
            .entry(typist.clone())
            .or_default()
            .admit(state, now)
    }

    /// How many senders are remembered.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

/// What a receiver shows of the other side's typing, and when it ends by
/// itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypingShown {
    /// While typing is shown: when it lapses without a refresh.
    until: Option<Instant>,
}

impl TypingShown {
    /// A typing signal arrived at `now`: whether to pass it on (a "stopped"
    /// for something not shown is news to nobody).
    pub fn heard(&mut self, state: bool, now: Instant) -> bool {
        let shown = self.until.is_some();
        self.until = state.then(|| now + TYPING_CLEAR);
        state || shown
    }

    /// When the typing shown lapses, if it is shown.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// True once, when the typing shown has lapsed at `now`: the receiver
    /// is told it stopped.
    pub fn lapsed(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now >= until => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_typing_signal_per_second_and_a_stop_always_passes() {
        let t0 = Instant::now();
        let mut throttle = TypingThrottle::default();
        assert!(throttle.admit(true, t0));
        assert!(!throttle.admit(true, t0 + Duration::from_millis(300)));
        // Stopping right after starting passes: the typist must not linger.
        assert!(throttle.admit(false, t0 + Duration::from_millis(400)));
        // Starting again within the second does not.
        assert!(!throttle.admit(true, t0 + Duration::from_millis(600)));
        assert!(!throttle.admit(false, t0 + Duration::from_millis(700)));
        assert!(throttle.admit(true, t0 + Duration::from_millis(1400)));
        assert!(throttle.admit(true, t0 + Duration::from_millis(2400)));
    }

    #[test]
    fn two_tabs_of_one_sender_share_one_rate_and_senders_are_bounded() {
        let t0 = Instant::now();
        let mut all = TypingThrottles::default();
        let s = SessionId::parse("sess_a").unwrap();
        let customer = (s.clone(), Side::Customer);
        let agent = (s, Side::Agent);
        // The second tab's start within the second is the same sender's.
        assert!(all.admit(&customer, true, t0));
        assert!(!all.admit(&customer, true, t0 + Duration::from_millis(100)));
        // The other side has a rate of its own.
        assert!(all.admit(&agent, true, t0 + Duration::from_millis(100)));
        assert!(all.admit(&customer, true, t0 + Duration::from_millis(1100)));
        assert_eq!(all.len(), 2);

        // Full: lapsed senders make room, fresh ones are dropped.
        let mut full = TypingThrottles::default();
        for _ in 0..MAX_TYPISTS {
            assert!(full.admit(&(SessionId::generate(), Side::Customer), true, t0));
        }
        let late = (SessionId::generate(), Side::Customer);
        assert!(!full.admit(&late, true, t0 + Duration::from_millis(10)));
        assert!(full.admit(&late, true, t0 + TYPING_INTERVAL));
        assert_eq!(full.len(), 1);
    }

    #[test]
    fn typing_lapses_after_five_seconds_without_a_refresh() {
        let t0 = Instant::now();
        let mut shown = TypingShown::default();
        assert!(
            !shown.heard(false, t0),
            "a stop of nothing shown is dropped"
        );
        assert!(shown.heard(true, t0));
        assert_eq!(shown.deadline(), Some(t0 + TYPING_CLEAR));
        assert!(!shown.lapsed(t0 + Duration::from_secs(4)));
        assert!(shown.heard(true, t0 + Duration::from_secs(4)));
        assert!(!shown.lapsed(t0 + Duration::from_secs(6)), "refreshed");
        assert!(shown.lapsed(t0 + Duration::from_secs(9)));
        assert!(!shown.lapsed(t0 + Duration::from_secs(10)), "said once");
        assert_eq!(shown.deadline(), None);
        assert!(shown.heard(true, t0 + Duration::from_secs(11)));
        assert!(shown.heard(false, t0 + Duration::from_secs(12)));
        assert_eq!(shown.deadline(), None);
    }

    #[test]
    fn summaries_are_trimmed_and_bounded() {
        let s = SessionId::parse("sess_a").unwrap();
        assert_eq!(Signal::summary(s.clone(), "  \n "), None);
        let long = "x".repeat(SUMMARY_MAX_CHARS + 10);
        match Signal::summary(s, &long) {
            Some(Signal::HandoffSummary { summary, .. }) => {
                assert_eq!(summary.chars().count(), SUMMARY_MAX_CHARS)
            }
            other => panic!("{other:?}"),
        }
    }
}
