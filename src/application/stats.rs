//! Process-wide counters behind `/api/stats`, updated lock-free from every connection.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since start-up. Sessions, escalated ones included, are counted by
/// the session store instead, because a shared store (Redis) outlives and spans processes.
#[derive(Debug, Default)]
pub struct Stats {
    active_connections: AtomicU64,
    total_connections: AtomicU64,
    total_messages: AtomicU64,
}

/// A consistent-enough copy of the counters for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub active_connections: u64,
    pub total_connections: u64,
    pub total_messages: u64,
}

impl Stats {
    /// Counts a new connection and returns a guard that uncounts it when dropped,
    /// so a connection task that ends any way at all is never left counted.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    pub fn message_received(&self) {
        self.total_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub fn active_connections(&self) -> u64 {
        self.active_connections.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: self.active_connections.load(Ordering::Relaxed),
            total_connections: self.total_connections.load(Ordering::Relaxed),
            total_messages: self.total_messages.load(Ordering::Relaxed),
        }
    }
}

/// Keeps one connection counted as active while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(std::sync::Arc<Stats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn guard_uncounts_on_drop() {
        let stats = Arc::new(Stats::default());
        let a = stats.connection_opened();
        let b = stats.connection_opened();
        assert_eq!(stats.active_connections(), 2);
        drop(a);
        let snap = stats.snapshot();
        assert_eq!((snap.active_connections, snap.total_connections), (1, 2));
        drop(b);
        assert_eq!(stats.active_connections(), 0);
    }
}
