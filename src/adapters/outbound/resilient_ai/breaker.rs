//! The circuit breaker of one upstream: after so many consecutive failed
//! chats it skips the upstream for a cooldown, then lets one chat through as
//! a probe whose outcome closes it or opens it again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::application::ports::CircuitState;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failed chats that open it (at least 1).
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cooldown is over and one probe is on its way.
    Probing,
}

/// How a chat was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// This chat decides whether the breaker closes.
    Probe,
}

/// One upstream's breaker; `None` settings make one that never opens.
#[derive(Debug)]
pub struct Breaker {
    settings: Option<BreakerSettings>,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(settings: Option<BreakerSettings>) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, consistent after any panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a chat through, or `None` while the breaker is open (or its one
    /// probe is still under way).
    pub fn admit(&self) -> Option<Admission> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Admission::Normal),
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                Some(Admission::Probe)
            }
            State::Open { .. } | State::Probing => None,
        }
    }

    /// Records how a chat let through as `admission` went: `healthy` when
    /// the upstream answered it (even with a refusal of that one request).
    /// Returns the new state when this changed it.
    pub fn record(&self, admission: Admission, healthy: bool) -> Option<CircuitState> {
        let settings = self.settings?;
        let mut state = self.lock();
        let before = *state;
        *state = match (before, healthy) {
            // A real answer is proof enough, whoever got it.
            (_, true) => State::Closed { failures: 0 },
            (State::Probing, false) if admission == Admission::Probe => State::Open {
                until: Instant::now() + settings.cooldown,
            },
            (State::Closed { failures }, false) if failures + 1 >= settings.failures => {
                State::Open {
                    until: Instant::now() + settings.cooldown,
                }
            }
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            // Chats that began before it opened do not extend the cooldown.
            (other, false) => other,
        };
        let now = public(*state);
        (now != public(before)).then_some(now)
    }

    /// A chat ended without an outcome (it was stopped before the upstream
    /// answered). If it was the probe, the next chat probes instead.
    pub fn abandon(&self, admission: Admission) {
        let mut state = self.lock();
        if admission == Admission::Probe && *state == State::Probing {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    /// How long it stays open (zero for a breaker that never opens).
    pub fn cooldown(&self) -> Duration {
        self.settings.map_or(Duration::ZERO, |s| s.cooldown)
    }

    /// Where the breaker stands now: half-open once the cooldown is over.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            other => public(other),
        }
    }
}

fn public(state: State) -> CircuitState {
    match state {
        State::Closed { .. } => CircuitState::Closed,
        State::Open { .. } => CircuitState::Open,
        State::Probing => CircuitState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown_secs: u64) -> Breaker {
        Breaker::new(Some(BreakerSettings {
            failures,
            cooldown: Duration::from_secs(cooldown_secs),
        }))
    }

    fn fail(b: &Breaker) -> Option<CircuitState> {
        let admission = b.admit().expect("admitted");
        b.record(admission, false)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures_then_probes_after_the_cooldown() {
        let b = breaker(3, 30);
        assert_eq!(fail(&b), None);
        assert_eq!(fail(&b), None);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(fail(&b), Some(CircuitState::Open));
        assert_eq!(b.admit(), None);
        assert_eq!(b.state(), CircuitState::Open);

        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.admit(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.admit(), Some(Admission::Probe));
        // One probe at a time: everyone else still skips.
        assert_eq!(b.admit(), None);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.record(Admission::Probe, true), Some(CircuitState::Closed));
        assert_eq!(b.admit(), Some(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_whole_cooldown() {
        let b = breaker(1, 10);
        assert_eq!(fail(&b), Some(CircuitState::Open));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
        assert_eq!(b.record(Admission::Probe, false), Some(CircuitState::Open));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.admit(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker(2, 10);
        assert_eq!(fail(&b), None);
        let ok = b.admit().unwrap();
        assert_eq!(b.record(ok, true), None);
        assert_eq!(fail(&b), None);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(fail(&b), Some(CircuitState::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_chat_probe() {
        let b = breaker(1, 10);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
        b.abandon(Admission::Probe);
        assert_eq!(b.admit(), Some(Admission::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_earlier_chats_do_not_extend_the_cooldown() {
        let b = breaker(1, 10);
        let early = b.admit().unwrap();
        assert_eq!(fail(&b), Some(CircuitState::Open));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.record(early, false), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
    }

    #[test]
    fn without_settings_it_never_opens() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            assert_eq!(fail(&b), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
