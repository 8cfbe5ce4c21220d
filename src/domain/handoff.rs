//! Human handoff: who answers a conversation (the bot, nobody yet, or one
//! agent) and the only ways that can change.
//!
//! The mode is a state machine; every transition returns the conversation
//! events it adds, so the log always says what happened and in which order.
//! The application applies a transition to the stored [`Handoff`] with a
//! compare-and-set, which is what makes it atomic across instances.

use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::chat::{SessionId, SessionUser};
use super::conversation::ConversationEvent;
use super::queue::QueuePlace;
use super::user::UserId;

pub use super::agent::AgentRef;
pub use super::conversation::Unavailability;

/// Who answers the user's chats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The AI answers.
    Bot,
    /// Waiting for an agent; the bot is muted.
    Queued,
    /// One agent answers; the bot is muted.
    Assigned {
        agent: AgentRef,
        since: DateTime<Utc>,
    },
}

impl Mode {
    /// The mode's wire name: `bot`, `queued` or `assigned`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Bot => "bot",
            Mode::Queued => "queued",
            Mode::Assigned { .. } => "assigned",
        }
    }

    /// The agent holding the conversation, if any.
    pub fn agent(&self) -> Option<&AgentRef> {
        match self {
            Mode::Assigned { agent, .. } => Some(agent),
            Mode::Bot | Mode::Queued => None,
        }
    }
}

/// A conversation that is not (only) the bot's: queued or assigned. A
/// conversation with no `Handoff` stored is in [`Mode::Bot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub session: SessionId,
    /// The customer.
    pub user: SessionUser,
    pub mode: Mode,
    /// When the conversation last entered the queue.
    pub waiting_since: DateTime<Utc>,
    /// The customer's latest chat, for the queue (at most [`LAST_MESSAGE_CHARS`]).
    pub last_message: Option<String>,
    /// The place in line it entered the queue at (0: unknown), so its wait
    /// can be counted per place when it is taken.
    pub entered_at: u64,
    /// Bumped by every stored change; the compare-and-set compares it.
    pub version: u64,
}

/// How much of the customer's latest chat the queue shows.
pub const LAST_MESSAGE_CHARS: usize = 200;

/// Why a handoff transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandoffError {
    /// Another agent holds the conversation.
    #[error("another agent already claimed this conversation")]
    AlreadyClaimed,
    /// The conversation is not waiting for an agent.
    #[error("the conversation is not waiting for an agent")]
    NotQueued,
    /// The agent does not hold the conversation.
    #[error("the conversation is not assigned to this agent")]
    NotAssigned,
    /// The agent already holds as many conversations as one may.
    #[error("the agent holds as many conversations as one may")]
    AgentAtCapacity,
}

/// Whether an agent holding `held` conversations may take one more, under
/// `AGENT_MAX_CONVERSATIONS` = `max`.
pub fn has_room(held: usize, max: usize) -> bool {
    held < max
}

/// An available agent as auto-assignment weighs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: UserId,
    /// Conversations they hold now.
    pub held: usize,
    /// When they last took one (`None`: not that anyone knows).
    pub last_assigned: Option<DateTime<Utc>>,
}

/// Who gets the longest-waiting conversation: of the agents with room, the
/// one holding the fewest; ties go to the one idle longest (who took a
/// conversation longest ago, never first), then by id so every instance
/// agrees. `None` when nobody has room.
pub fn pick_agent(candidates: &[Candidate], max: usize) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| has_room(c.held, max))
        .min_by(|(_, a), (_, b)| {
            (a.held, a.last_assigned, a.id.as_str()).cmp(&(b.held, b.last_assigned, b.id.as_str()))
        })
        .map(|(i, _)| i)
}

/// The result of a transition: the new state (`None`: back to the bot) and
/// the events that say so, in log order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub next: Option<Handoff>,
    pub events: Vec<ConversationEvent>,
}

impl Transition {
    /// The transition with the place the conversation took in the queue in
    /// its `handoff-queued`, known only once it is stored.
    #[must_use]
    pub fn placed(mut self, at: QueuePlace) -> Self {
        for event in &mut self.events {
            if let ConversationEvent::HandoffQueued { place, .. } = event {
                *place = at;
            }
        }
        self
    }

    /// The transition with the conversation it queues remembering the place
    /// it entered the line at.
    #[must_use]
    pub fn entering_at(mut self, place: u64) -> Self {
        self.next = self.next.map(|h| h.entering_at(place));
        self
    }
}

/// A `handoff-queued` whose place the application fills in.
fn queued_event(agents_online: u64) -> ConversationEvent {
    ConversationEvent::HandoffQueued {
        agents_online,
        place: QueuePlace::PENDING,
    }
}

impl Handoff {
    /// The state after the user asked for a human, from the bot. Asking again
    /// while queued or assigned changes nothing (`None`).
    pub fn escalate(
        current: Option<&Handoff>,
        session: SessionId,
        user: SessionUser,
        agents_online: u64,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if current.is_some() {
            return None;
        }
        let next = Handoff {
            session,
            user,
            mode: Mode::Queued,
            waiting_since: now,
            last_message: None,
            entered_at: 0,
            version: 0,
        };
        Some(Transition {
            next: Some(next),
            events: vec![queued_event(agents_online)],
        })
    }

    /// An agent takes the queued conversation. Claiming one already held by
    /// the same agent is refused like any other claim of a held conversation,
    /// so exactly one claim wins.
    pub fn claim(&self, agent: AgentRef, now: DateTime<Utc>) -> Result<Transition, HandoffError> {
        match &self.mode {
            Mode::Queued => {
                let mut next = self.clone();
                next.mode = Mode::Assigned {
                    agent: agent.clone(),
                    since: now,
                };
                Ok(Transition {
                    next: Some(next),
                    events: vec![ConversationEvent::AgentJoined { agent }],
                })
            }
            Mode::Assigned { .. } => Err(HandoffError::AlreadyClaimed),
            Mode::Bot => Err(HandoffError::NotQueued),
        }
    }

    /// The holding agent hands the conversation back to the queue (also what
    /// happens when the agent has been away past the grace period).
    pub fn release(
        &self,
        agent: &UserId,
        agents_online: u64,
        now: DateTime<Utc>,
    ) -> Result<Transition, HandoffError> {
        let held_by = self.held_by(agent)?;
        let mut next = self.clone();
        next.mode = Mode::Queued;
        next.waiting_since = now;
        next.entered_at = 0;
        Ok(Transition {
            next: Some(next),
            events: vec![
                ConversationEvent::AgentLeft { agent: held_by },
                queued_event(agents_online),
            ],
        })
    }

    /// The holding agent is done: the bot answers again.
    pub fn resolve(&self, agent: &UserId) -> Result<Transition, HandoffError> {
        let held_by = self.held_by(agent)?;
        Ok(Transition {
            next: None,
            events: vec![ConversationEvent::HandoffResolved { agent: held_by }],
        })
    }

    /// The user no longer waits.
    pub fn cancel(&self) -> Result<Transition, HandoffError> {
        match self.mode {
            Mode::Queued => Ok(Transition {
                next: None,
                events: vec![ConversationEvent::HandoffCancelled],
            }),
            Mode::Assigned { .. } | Mode::Bot => Err(HandoffError::NotQueued),
        }
    }

    /// The office closed with the conversation still waiting: back to the
    /// bot, as after a timeout.
    pub fn close_out(&self) -> Option<Transition> {
        (self.mode == Mode::Queued).then(|| Transition {
            next: None,
            events: vec![ConversationEvent::HandoffTimeout],
        })
    }

    /// Nobody claimed the conversation within `timeout`: back to the bot.
    pub fn time_out(&self, timeout: Duration, now: DateTime<Utc>) -> Option<Transition> {
        if self.mode != Mode::Queued || !elapsed(self.waiting_since, now, timeout) {
            return None;
        }
        Some(Transition {
            next: None,
            events: vec![ConversationEvent::HandoffTimeout],
        })
    }

    /// The record remembering the place it entered the line at.
    #[must_use]
    pub fn entering_at(mut self, place: u64) -> Handoff {
        self.entered_at = place;
        self
    }

    /// The queue item's text after the customer chatted while muted.
    pub fn with_last_message(&self, content: &str) -> Handoff {
        let mut next = self.clone();
        next.last_message = Some(content.chars().take(LAST_MESSAGE_CHARS).collect());
        next
    }

    fn held_by(&self, agent: &UserId) -> Result<AgentRef, HandoffError> {
        match &self.mode {
            Mode::Assigned { agent: held, .. } if held.id == *agent => Ok(held.clone()),
            _ => Err(HandoffError::NotAssigned),
        }
    }
}

/// What the customer is told when agents exist but none is online, unless
/// `HANDOFF_OFFLINE_MESSAGE` says otherwise.
pub const DEFAULT_OFFLINE_MESSAGE: &str =
    "No agent is available right now. The assistant will keep helping you.";

/// What the customer is told outside office hours, unless
/// `HANDOFF_CLOSED_MESSAGE` says otherwise.
pub const DEFAULT_CLOSED_MESSAGE: &str =
    "Our agents are away outside office hours. The assistant will keep helping you until they are back.";

/// Whether human handoff is in use (`HANDOFF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandoffSwitch {
    /// In use once the user store holds an agent account; until then a
    /// request for a human is answered as the Node.js server did.
    #[default]
    Auto,
    On,
    /// Never: a request for a human is only answered, the bot keeps answering.
    Off,
}

/// What a request for a human does when agents exist but none has an agent
/// socket open (`HANDOFF_WHEN_NO_AGENT_ONLINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenNoAgentOnline {
    /// The customer is told no agent is available; the bot keeps answering.
    #[default]
    Bot,
    /// The conversation waits in the queue anyway (muted until claimed or
    /// timed out).
    Queue,
}

/// A setting's value is not one of its words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be one of {allowed}")]
pub struct HandoffSettingError {
    pub allowed: &'static str,
}

impl HandoffSwitch {
    pub const ALLOWED: &'static str = "auto, on, off";

    pub fn parse(raw: &str) -> Result<Self, HandoffSettingError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(HandoffSettingError {
                allowed: Self::ALLOWED,
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Who gives queued conversations to agents (`HANDOFF_ASSIGN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssignMode {
    /// Agents claim from the queue.
    #[default]
    Manual,
    /// The longest waiting goes to the available agent with the fewest
    /// conversations, as soon as one has room.
    Auto,
}

impl AssignMode {
    pub const ALLOWED: &'static str = "manual, auto";

    pub fn parse(raw: &str) -> Result<Self, HandoffSettingError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "manual" => Ok(Self::Manual),
            "auto" => Ok(Self::Auto),
            _ => Err(HandoffSettingError {
                allowed: Self::ALLOWED,
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Auto => "auto",
        }
    }
}

impl WhenNoAgentOnline {
    pub const ALLOWED: &'static str = "bot, queue";

    pub fn parse(raw: &str) -> Result<Self, HandoffSettingError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "bot" => Ok(Self::Bot),
            "queue" => Ok(Self::Queue),
            _ => Err(HandoffSettingError {
                allowed: Self::ALLOWED,
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Queue => "queue",
        }
    }
}

/// What a request for a human from a conversation in bot mode leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationRoute {
    /// Handoff is not in use: the request is answered and nothing changes,
    /// as on the Node.js server.
    Answer,
    /// Handoff is in use but nobody can take the conversation now: the
    /// customer is told why and the bot keeps answering.
    Unavailable(Unavailability),
    /// The conversation goes to the queue.
    Queue,
}

/// Decides where a request for a human goes. `agent_accounts` says whether
/// the user store holds an agent account (read only for [`HandoffSwitch::Auto`]).
/// A conversation must never wait in a queue that no person can see.
/// Outside office hours (`closed_until` is when they open again) nobody is
/// queued, whoever is online.
pub fn route_escalation(
    switch: HandoffSwitch,
    agent_accounts: bool,
    agents_online: u64,
    when_none_online: WhenNoAgentOnline,
    closed_until: Option<DateTime<Utc>>,
) -> EscalationRoute {
    let in_use = match switch {
        HandoffSwitch::Off => false,
        HandoffSwitch::On => true,
        HandoffSwitch::Auto => agent_accounts,
    };
    if !in_use {
        return EscalationRoute::Answer;
    }
    if let Some(opens_at) = closed_until {
        return EscalationRoute::Unavailable(Unavailability::Closed { opens_at });
    }
    match (agents_online, when_none_online) {
        (0, WhenNoAgentOnline::Bot) => EscalationRoute::Unavailable(Unavailability::NoAgentOnline),
        _ => EscalationRoute::Queue,
    }
}

/// Whether the agent holding a conversation has been away past `grace`:
/// `last_seen` is when its last agent socket closed or lapsed (`None`: it
/// never had one open since it claimed, which counts from the claim).
pub fn agent_away_too_long(
    mode: &Mode,
    last_seen: Option<DateTime<Utc>>,
    online: bool,
    grace: Duration,
    now: DateTime<Utc>,
) -> bool {
    let Mode::Assigned { since, .. } = mode else {
        return false;
    };
    if online {
        return false;
    }
    let away_since = last_seen.map_or(*since, |seen| seen.max(*since));
    elapsed(away_since, now, grace)
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>, span: Duration) -> bool {
    let span = chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX);
    since.checked_add_signed(span).is_some_and(|due| now >= due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::Username;

    #[test]
    fn a_request_for_a_human_goes_where_a_person_can_take_it() {
        use EscalationRoute::{Answer, Queue, Unavailable};
        use HandoffSwitch::{Auto, Off, On};
        use WhenNoAgentOnline::{Bot, Queue as Wait};
        let nobody = Unavailable(Unavailability::NoAgentOnline);
        // (switch, agent accounts, agents online, when none online) -> route
        let cases = [
            (Auto, false, 0, Bot, Answer),
            (Auto, false, 3, Wait, Answer),
            (Auto, true, 0, Bot, nobody),
            (Auto, true, 0, Wait, Queue),
            (Auto, true, 1, Bot, Queue),
            (On, false, 0, Bot, nobody),
            (On, false, 0, Wait, Queue),
            (On, true, 2, Bot, Queue),
            (Off, true, 5, Bot, Answer),
            (Off, true, 5, Wait, Answer),
        ];
        for (switch, accounts, online, when, want) in cases {
            assert_eq!(
                route_escalation(switch, accounts, online, when, None),
                want,
                "{switch:?} accounts={accounts} online={online} {when:?}"
            );
        }
        // Closed: nobody is queued, whoever is online; unless handoff is not
        // in use at all, which answers as ever.
        let opens_at = Utc::now();
        let closed = Unavailable(Unavailability::Closed { opens_at });
        for (switch, accounts, online, when, want) in [
            (On, true, 3, Wait, closed),
            (Auto, true, 0, Bot, closed),
            (Auto, false, 3, Bot, Answer),
            (Off, true, 3, Wait, Answer),
        ] {
            assert_eq!(
                route_escalation(switch, accounts, online, when, Some(opens_at)),
                want
            );
        }
    }

    #[test]
    fn closing_sends_only_a_waiting_conversation_back() {
        let now = Utc::now();
        let h = queued(now);
        let t = h.close_out().unwrap();
        assert_eq!(
            (t.next, t.events),
            (None, vec![ConversationEvent::HandoffTimeout])
        );
        let held = h.claim(agent("alice"), now).unwrap().next.unwrap();
        assert!(held.close_out().is_none());
    }

    #[test]
    fn settings_parse_their_words_only() {
        assert_eq!(HandoffSwitch::parse(" Auto "), Ok(HandoffSwitch::Auto));
        assert_eq!(HandoffSwitch::parse("off"), Ok(HandoffSwitch::Off));
        assert!(HandoffSwitch::parse("yes").is_err());
        assert_eq!(
            WhenNoAgentOnline::parse("QUEUE"),
            Ok(WhenNoAgentOnline::Queue)
        );
        assert!(WhenNoAgentOnline::parse("").is_err());
    }

    fn agent(name: &str) -> AgentRef {
        AgentRef {
            id: UserId::parse(&format!("a-{name}")).unwrap(),
            username: Username::parse(name).unwrap(),
        }
    }

    fn customer() -> SessionUser {
        fixtures::session(&SessionId::generate()).user
    }

    fn queued(now: DateTime<Utc>) -> Handoff {
        let user = customer();
        Handoff::escalate(None, SessionId::generate(), user, 2, now)
            .unwrap()
            .next
            .unwrap()
    }

    #[test]
    fn escalating_queues_once_and_says_how_many_agents_are_online() {
        let now = Utc::now();
        let t = Handoff::escalate(None, SessionId::generate(), customer(), 3, now).unwrap();
        assert_eq!(t.events, vec![queued_event(3)]);
        let h = t.next.unwrap();
        assert_eq!(h.mode, Mode::Queued);
        assert!(Handoff::escalate(Some(&h), h.session.clone(), h.user.clone(), 3, now).is_none());
    }

    #[test]
    fn exactly_one_claim_wins() {
        let now = Utc::now();
        let h = queued(now);
        let won = h.claim(agent("alice"), now).unwrap().next.unwrap();
        assert_eq!(won.mode.agent(), Some(&agent("alice")));
        assert_eq!(
            won.claim(agent("bob"), now),
            Err(HandoffError::AlreadyClaimed)
        );
        assert_eq!(
            won.claim(agent("alice"), now),
            Err(HandoffError::AlreadyClaimed)
        );
    }

    #[test]
    fn only_the_holder_releases_or_resolves() {
        let now = Utc::now();
        let held = queued(now)
            .claim(agent("alice"), now)
            .unwrap()
            .next
            .unwrap();
        let bob = agent("bob").id;
        assert_eq!(held.release(&bob, 1, now), Err(HandoffError::NotAssigned));
        assert_eq!(held.resolve(&bob), Err(HandoffError::NotAssigned));
        let later = now + chrono::Duration::seconds(5);
        let back = held.release(&agent("alice").id, 1, later).unwrap();
        assert_eq!(
            back.events,
            vec![
                ConversationEvent::AgentLeft {
                    agent: agent("alice")
                },
                queued_event(1)
            ]
        );
        let back = back.next.unwrap();
        assert_eq!(back.mode, Mode::Queued);
        assert_eq!(back.waiting_since, later, "the wait starts again");
        let done = held.resolve(&agent("alice").id).unwrap();
        assert_eq!(done.next, None, "resolved means the bot answers again");
    }

    #[test]
    fn a_queued_conversation_times_out_or_is_cancelled_but_an_assigned_one_does_not() {
        let now = Utc::now();
        let h = queued(now);
        let timeout = Duration::from_secs(600);
        assert!(h
            .time_out(timeout, now + chrono::Duration::seconds(599))
            .is_none());
        let t = h
            .time_out(timeout, now + chrono::Duration::seconds(600))
            .unwrap();
        assert_eq!(
            (t.next, t.events),
            (None, vec![ConversationEvent::HandoffTimeout])
        );
        assert_eq!(
            h.cancel().unwrap().events,
            vec![ConversationEvent::HandoffCancelled]
        );
        let held = h.claim(agent("alice"), now).unwrap().next.unwrap();
        assert!(held
            .time_out(timeout, now + chrono::Duration::days(1))
            .is_none());
        assert_eq!(held.cancel(), Err(HandoffError::NotQueued));
        // A huge timeout never overflows the clock.
        assert!(h.time_out(Duration::MAX, now).is_none());
    }

    #[test]
    fn an_agent_is_away_only_after_the_grace_since_it_was_last_seen() {
        let now = Utc::now();
        let grace = Duration::from_secs(120);
        let mode = Mode::Assigned {
            agent: agent("alice"),
            since: now,
        };
        let at = |s: i64| now + chrono::Duration::seconds(s);
        assert!(!agent_away_too_long(&mode, None, true, grace, at(1000)));
        assert!(!agent_away_too_long(&mode, None, false, grace, at(119)));
        assert!(agent_away_too_long(&mode, None, false, grace, at(120)));
        assert!(!agent_away_too_long(
            &mode,
            Some(at(100)),
            false,
            grace,
            at(219)
        ));
        assert!(agent_away_too_long(
            &mode,
            Some(at(100)),
            false,
            grace,
            at(220)
        ));
        // Seen before the claim: the grace counts from the claim.
        assert!(!agent_away_too_long(
            &mode,
            Some(at(-500)),
            false,
            grace,
            at(119)
        ));
        assert!(!agent_away_too_long(
            &Mode::Queued,
            None,
            false,
            grace,
            at(1000)
        ));
    }

    #[test]
    fn the_place_taken_is_filled_into_handoff_queued_only() {
        let now = Utc::now();
        let t = Handoff::escalate(None, SessionId::generate(), customer(), 1, now)
            .unwrap()
            .entering_at(4);
        assert_eq!(t.next.as_ref().unwrap().entered_at, 4);
        let at = QueuePlace {
            position: 3,
            estimated_wait: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            t.placed(at).events,
            vec![ConversationEvent::HandoffQueued {
                agents_online: 1,
                place: at
            }]
        );
        let held = queued(now).claim(agent("alice"), now).unwrap();
        assert_eq!(held.clone().placed(at).events, held.events);
        let back = held
            .next
            .unwrap()
            .release(&agent("alice").id, 1, now)
            .unwrap();
        assert_eq!(
            back.next.as_ref().unwrap().entered_at,
            0,
            "a new wait, a new place"
        );
    }

    #[test]
    fn auto_assignment_picks_the_least_loaded_then_the_longest_idle() {
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        let c = |name: &str, held, last| Candidate {
            id: agent(name).id,
            held,
            last_assigned: last,
        };
        let max = 2;
        assert_eq!(pick_agent(&[], max), None);
        let two = [c("ann", 1, ago(5)), c("bob", 0, ago(1))];
        assert_eq!(pick_agent(&two, max), Some(1), "fewest conversations");
        let tied = [c("ann", 1, ago(5)), c("bob", 1, ago(60))];
        assert_eq!(pick_agent(&tied, max), Some(1), "idle longest");
        let fresh = [c("ann", 0, ago(60)), c("bob", 0, None)];
        assert_eq!(
            pick_agent(&fresh, max),
            Some(1),
            "never assigned is idle longest"
        );
        let same = [c("bob", 0, None), c("ann", 0, None)];
        assert_eq!(
            pick_agent(&same, max),
            Some(1),
            "then by id, the same everywhere"
        );
        let full = [c("ann", 2, None), c("bob", 3, ago(9))];
        assert_eq!(pick_agent(&full, max), None, "nobody has room");
        assert!(has_room(1, 2) && !has_room(2, 2));
    }

    #[test]
    fn assign_mode_parses_its_words_only() {
        assert_eq!(AssignMode::parse(" AUTO "), Ok(AssignMode::Auto));
        assert_eq!(AssignMode::parse("manual"), Ok(AssignMode::Manual));
        assert!(AssignMode::parse("round-robin").is_err());
    }

    #[test]
    fn the_queue_shows_a_bounded_last_message() {
        let h = queued(Utc::now()).with_last_message(&"é".repeat(1000));
        assert_eq!(h.last_message.unwrap().chars().count(), LAST_MESSAGE_CHARS);
    }
}
