//! A connection slot taken before the upgrade, given back however the
//! request ends.
//!
//! Between taking a slot and handing the socket to its connection, the
//! handler awaits the session store, the handoff store and the usage store.
//! hyper drops a request's handler when its client resets the connection, so
//! any of those awaits may be the last: a slot held there without this guard
//! stayed taken until its lease ran out (three ping intervals), and a user
//! with one allowed connection was shut out for minutes by a refresh at the
//! wrong moment.

use tokio_util::task::TaskTracker;

use crate::application::limits::{ConnectionPermit, Limits};

/// Owns a [`ConnectionPermit`] until a connection takes it; dropped before
/// that, it releases the slots in a task on the connection tracker (so
/// shutdown waits for it).
pub(super) struct HeldPermit {
    permit: Option<ConnectionPermit>,
    limits: Limits,
    tracker: TaskTracker,
}

impl HeldPermit {
    pub fn new(permit: ConnectionPermit, limits: &Limits, tracker: &TaskTracker) -> Self {
        Self {
            permit: Some(permit),
            limits: limits.clone(),
            tracker: tracker.clone(),
        }
    }

    /// Hands the slots to the connection, which releases them when it ends.
    pub fn take(mut self) -> ConnectionPermit {
        self.permit.take().unwrap_or_default()
    }

    /// Gives the slots back now, on a refusal after they were taken.
    pub async fn release(mut self) {
        if let Some(permit) = self.permit.take() {
            self.limits.release_connection(permit).await;
        }
    }
}

impl Drop for HeldPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // No runtime: the process is ending and the leases lapse by themselves.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tracing::debug!("a connection slot was left before its upgrade completed; releasing it");
        let limits = self.limits.clone();
        self.tracker.spawn(async move {
            limits.release_connection(permit).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::adapters::outbound::memory_limiter::InMemoryRateLimiter;
    use crate::application::limits::LimitSettings;
    use crate::domain::{ClientIp, UserId};

    fn one_connection_each() -> Limits {
        Limits::new(
            Arc::new(InMemoryRateLimiter::default()),
            LimitSettings {
                ws_connections_per_user: Some(1),
                connection_lease: Duration::from_secs(180),
                ..LimitSettings::default()
            },
        )
    }

    fn user() -> UserId {
        UserId::parse("0123456789abcdef01234567").unwrap()
    }

    fn ip() -> ClientIp {
        ClientIp::from(std::net::IpAddr::from([192, 0, 2, 1]))
    }

    #[tokio::test]
    async fn a_dropped_guard_gives_its_slot_back() {
        let limits = one_connection_each();
        let tracker = TaskTracker::new();
        let permit = limits.connection(&user(), ip()).await.unwrap();
        drop(HeldPermit::new(permit, &limits, &tracker));
        tracker.close();
        tracker.wait().await;
        assert!(limits.connection(&user(), ip()).await.is_ok());
    }

    #[tokio::test]
    async fn a_taken_permit_stays_held() {
        let limits = one_connection_each();
        let tracker = TaskTracker::new();
        let permit = limits.connection(&user(), ip()).await.unwrap();
        let _held = HeldPermit::new(permit, &limits, &tracker).take();
        tracker.close();
        tracker.wait().await;
        assert!(limits.connection(&user(), ip()).await.is_err());
    }
}
