//! Inbound adapters: how clients reach the use cases (REST and WebSocket), and
//! the HTTP server that hosts both.

pub mod http;
pub mod rest;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::application::{AuthService, ChatService, Stats};

/// Limits and timings of the WebSocket protocol.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Maximum characters in one chat message's `content`.
    pub max_message_chars: usize,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// A connection that has not answered a ping for this long is closed.
    pub pong_timeout: Duration,
    /// How long running streams may continue once shutdown begins.
    pub shutdown_timeout: Duration,
    /// How often an open connection refreshes its session's expiry.
    pub session_refresh: Duration,
}

/// Largest WebSocket frame or message a client may send; larger closes with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Everything the inbound adapters share: the use cases, counters, settings,
/// and the shutdown signal with the tracker that owns every connection task.
pub struct AppContext {
    pub auth: AuthService,
    pub chat: ChatService,
    pub stats: Arc<Stats>,
    pub ws: WsSettings,
    /// `JWT_EXPIRES_IN` as configured, echoed to clients as `expiresIn`.
    pub token_lifetime_text: String,
    pub started_at: Instant,
    /// Cancelled when the server begins to stop.
    pub shutdown: CancellationToken,
    /// Owns the WebSocket connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
}

impl AppContext {
    pub fn uptime_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }
}

/// The timestamp format of every server message: ISO-8601 UTC with milliseconds.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_millis_and_z() {
        let t = chrono::Utc
            .with_ymd_and_hms(2025, 9, 12, 10, 30, 0)
            .unwrap();
        assert_eq!(timestamp(t), "2025-09-12T10:30:00.000Z");
    }
}
