//! A point on the monotonic clock in whole milliseconds, for what every idle
//! socket keeps for its whole life (when it was last heard from, when to ping
//! next, when its token lapses).
//!
//! A `tokio::time::Instant` takes 16 bytes; this takes 8, counted from the
//! first time the process asked. Each of the read loop's four clock readings
//! is room in every idle socket's task, and the task's allocation grows in
//! steps of 128 bytes: 32 bytes here are what crosses one.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::time::MAX_DURATION;

/// Milliseconds since [`origin`]; ordered like the instants they stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Millis(u64);

/// The process's zero on the monotonic clock, read once.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Millis {
    /// Now, to the millisecond below.
    pub fn now() -> Self {
        Self::of(Instant::now())
    }

    /// `instant`, to the millisecond below (the origin, if before it).
    fn of(instant: Instant) -> Self {
        let since = instant.saturating_duration_since(origin());
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// `d` later; at most [`MAX_DURATION`] after now, which is "never".
    pub fn after(self, d: Duration) -> Self {
        let d = u64::try_from(d.min(MAX_DURATION).as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(d))
    }

    /// How long since this point; zero if it is still ahead.
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(Self::now().0.saturating_sub(self.0))
    }

    /// The instant a timer waits for; a point further than the clock can
    /// count waits [`MAX_DURATION`] from now instead of overflowing it.
    pub fn instant(self) -> Instant {
        origin()
            .checked_add(Duration::from_millis(self.0))
            .unwrap_or_else(|| Instant::now() + MAX_DURATION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_round_trips_to_its_instant_within_a_millisecond() {
        let now = Instant::now();
        let back = Millis::of(now).instant();
        assert!(back <= now && now - back < Duration::from_millis(1));
    }

    #[test]
    fn later_points_order_after_earlier_ones() {
        let now = Millis::now();
        assert!(now.after(Duration::from_millis(5)) > now);
        assert_eq!(now.after(Duration::ZERO), now);
        assert!(now.elapsed() < Duration::from_secs(1));
        assert_eq!(now.after(Duration::from_secs(60)).elapsed(), Duration::ZERO);
    }

    #[test]
    fn never_is_a_far_timer_not_a_panic() {
        let never = Millis::now().after(Duration::MAX);
        assert!(never.instant() > Instant::now() + Duration::from_secs(86_400 * 365));
        assert!(Millis(u64::MAX).instant() > Instant::now());
    }
}
