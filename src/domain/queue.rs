//! Where a waiting customer stands in the handoff queue, and how long they
//! may still wait: the wait is estimated from how long recently claimed
//! conversations waited per place in line, so a long queue does not inflate
//! the estimate of the customer who is next.

use std::time::Duration;

/// How many recent waits the estimate is drawn from (the handoff store keeps
/// no more).
pub const WAIT_WINDOW: usize = 50;

/// A queued customer's place: `position` 1 is next in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueuePlace {
    pub position: u64,
    /// `None` until a conversation has been claimed in the recent window.
    pub estimated_wait: Option<Duration>,
}

impl QueuePlace {
    /// The place a transition leaves open until the store says where the
    /// conversation landed (the application fills it in after the swap).
    pub const PENDING: QueuePlace = QueuePlace {
        position: 0,
        estimated_wait: None,
    };

    /// The estimate in whole seconds, rounded up (a wait under a second is
    /// still "1 s", not "now").
    pub fn estimated_wait_seconds(&self) -> Option<u64> {
        self.estimated_wait
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

/// One claimed conversation's wait, per place in line it had when it
/// entered the queue (`entered_at` 0, unknown, counts as 1).
pub fn wait_per_place(waited: Duration, entered_at: u64) -> Duration {
    let places = u32::try_from(entered_at.max(1)).unwrap_or(u32::MAX);
    waited / places
}

/// The median of recent waits per place (of an even count, the lower middle
/// one: an estimate should not round up on ties).
pub fn median(samples: &[Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    Some(sorted[(sorted.len() - 1) / 2])
}

/// The place of the customer at `position`, given the recent waits per place.
pub fn place(position: u64, recent_per_place: &[Duration]) -> QueuePlace {
    let factor = u32::try_from(position.max(1)).unwrap_or(u32::MAX);
    QueuePlace {
        position,
        estimated_wait: median(recent_per_place).map(|m| m.saturating_mul(factor)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_median_is_null_until_there_is_a_wait_and_ignores_outliers() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[secs(7)]), Some(secs(7)));
        assert_eq!(median(&[secs(600), secs(10), secs(20)]), Some(secs(20)));
        assert_eq!(
            median(&[secs(40), secs(10), secs(30), secs(20)]),
            Some(secs(20))
        );
    }

    #[test]
    fn the_estimate_grows_with_the_position() {
        let recent = [secs(30), secs(20), secs(25)];
        assert_eq!(place(1, &recent).estimated_wait, Some(secs(25)));
        assert_eq!(place(3, &recent).estimated_wait, Some(secs(75)));
        assert_eq!(place(2, &[]).estimated_wait, None);
        assert_eq!(place(2, &[]).position, 2);
    }

    #[test]
    fn a_wait_counts_per_place_it_entered_at() {
        assert_eq!(wait_per_place(secs(90), 3), secs(30));
        assert_eq!(wait_per_place(secs(90), 0), secs(90), "unknown counts as 1");
        assert_eq!(wait_per_place(secs(90), u64::MAX), Duration::from_nanos(20));
    }

    #[test]
    fn seconds_round_up() {
        let at = |d| QueuePlace {
            position: 1,
            estimated_wait: Some(d),
        };
        assert_eq!(
            at(Duration::from_millis(1500)).estimated_wait_seconds(),
            Some(2)
        );
        assert_eq!(at(secs(4)).estimated_wait_seconds(), Some(4));
        assert_eq!(QueuePlace::PENDING.estimated_wait_seconds(), None);
    }
}
