//! The [`Stats`] port as process-local atomic counters, read by `/api/stats`
//! (the server uses [`super::prometheus_metrics`]; this one needs no registry).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::application::ports::{Stats, StatsSnapshot};

/// Counters since start-up, updated lock-free from every connection. Sessions
/// are counted by the session store instead, because a shared store (Redis)
/// outlives and spans processes.
#[derive(Debug, Default)]
pub struct AtomicStats {
    active_connections: AtomicU64,
    total_connections: AtomicU64,
    total_messages: AtomicU64,
}

impl Stats for AtomicStats {
    fn connection_opened(&self) {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_closed(&self, _reason: &'static str) {
        // Saturating: a close without an open is a caller bug, not a reason to
        // report 18 quintillion connections.
        let _ = self
            .active_connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn message_received(&self) {
        self.total_messages.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: self.active_connections.load(Ordering::Relaxed),
            total_connections: self.total_connections.load(Ordering::Relaxed),
            total_messages: self.total_messages.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_and_messages() {
        let stats = AtomicStats::default();
        stats.connection_opened();
        stats.connection_opened();
        stats.message_received();
        stats.connection_closed("client_closed");
        assert_eq!(
            stats.snapshot(),
            StatsSnapshot {
                active_connections: 1,
                total_connections: 2,
                total_messages: 1
            }
        );
        stats.connection_closed("client_closed");
        stats.connection_closed("client_closed");
        assert_eq!(stats.snapshot().active_connections, 0, "never below zero");
    }
}
