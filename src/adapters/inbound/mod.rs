//! Inbound adapters: how clients reach the use cases (REST and WebSocket), and
//! the HTTP server that hosts both.

pub mod errors;
pub mod http;
pub mod rest;
pub mod rest_tokens;
pub mod ws;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::application::{AuthService, ChatService};
use crate::config::WebSocketConfig;

/// Largest WebSocket frame or message a client may send; larger closes with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Everything the inbound adapters share: the use cases, the WebSocket
/// settings, and the shutdown signal with the tracker that owns every
/// connection task. Built once, by [`crate::startup::Application`].
pub struct AppContext {
    pub auth: AuthService,
    pub chat: ChatService,
    pub websocket: WebSocketConfig,
    /// How long running streams may continue once shutdown begins.
    pub shutdown_timeout: Duration,
    started_at: Instant,
    /// Cancelled when the server begins to stop.
    pub shutdown: CancellationToken,
    /// Owns the WebSocket connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
}

impl AppContext {
    pub fn new(
        auth: AuthService,
        chat: ChatService,
        websocket: WebSocketConfig,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            auth,
            chat,
            websocket,
            shutdown_timeout,
            started_at: Instant::now(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }
}
