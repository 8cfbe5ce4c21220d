//! Inbound adapters: how clients reach the use cases (REST and WebSocket), and
//! the HTTP server that hosts both.

pub mod api_common;
pub mod errors;
pub mod http;
pub mod openapi;
pub mod rest;
pub mod rest_agent;
pub mod rest_auth;
pub mod rest_health;
pub mod rest_replies;
pub mod rest_sessions;
pub mod rest_stats;
pub mod rest_tokens;
pub mod rest_transcripts;
pub mod rest_usage;
pub mod server;
pub mod web;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::application::health::{HealthMonitor, HealthReport, Probe};
use crate::application::ports::{AiModel, Stats};
use crate::application::{AuthService, ChatService, HandoffService, Limits, TranscriptService};
use crate::config::{ConnectionConfig, WebSocketConfig};
use crate::domain::{ClientIp, RequestId, TraceContext, TrustedProxies};

/// Largest WebSocket frame or message a client may send; larger closes with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The use cases, and the few ports the adapters read directly, as the
/// composition root (`startup`) wired them.
pub struct UseCases {
    pub auth: AuthService,
    pub chat: ChatService,
    pub handoff: HandoffService,
    pub transcripts: TranscriptService,
    /// The abuse limits: WebSocket connections take and give back their
    /// place here, and `/api/websocket/info` shows them.
    pub limits: Limits,
    /// Where everything is counted: HTTP requests, `/metrics`, `/api/stats`.
    pub metrics: Arc<dyn Stats>,
    /// The AI service, for the state of its upstreams in the health answers.
    pub ai: Arc<dyn AiModel>,
}

/// Everything the inbound adapters share: the use cases, the WebSocket
/// settings, and the shutdown signal with the tracker that owns every
/// connection task. Built once, by the composition root (`startup`).
pub struct AppContext {
    pub auth: AuthService,
    pub chat: ChatService,
    pub handoff: HandoffService,
    pub transcripts: TranscriptService,
    pub limits: Limits,
    pub metrics: Arc<dyn Stats>,
    pub ai: Arc<dyn AiModel>,
    pub websocket: WebSocketConfig,
    /// How long running streams may continue once shutdown begins.
    pub shutdown_timeout: Duration,
    started_at: Instant,
    /// Cancelled when the server begins to stop.
    pub shutdown: CancellationToken,
    /// Owns the WebSocket connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Timeouts and caps on client connections (HTTP_*, UNAUTH_*, FD_HEADROOM).
    pub http_limits: ConnectionConfig,
    /// The background probes the health endpoints report.
    health: Option<HealthMonitor>,
    /// Whether `/metrics` is served on the main port (no `METRICS_ADDR`).
    pub metrics_on_main_port: bool,
}

impl AppContext {
    pub fn new(
        use_cases: UseCases,
        websocket: WebSocketConfig,
        shutdown_timeout: Duration,
        http_limits: ConnectionConfig,
    ) -> Self {
        let UseCases {
            auth,
            chat,
            handoff,
            transcripts,
            limits,
            metrics,
            ai,
        } = use_cases;
        Self {
            auth,
            chat,
            handoff,
            transcripts,
            limits,
            metrics,
            ai,
            websocket,
            shutdown_timeout,
            started_at: Instant::now(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            trusted_proxies: TrustedProxies::default(),
            http_limits,
            health: None,
            metrics_on_main_port: true,
        }
    }

    /// This context reporting `monitor`'s probes, with `/metrics` on the
    /// main port or not.
    pub fn with_health(mut self, monitor: HealthMonitor, metrics_on_main_port: bool) -> Self {
        self.health = Some(monitor);
        self.metrics_on_main_port = metrics_on_main_port;
        self
    }

    /// The dependencies' last answers (all pending without a monitor).
    pub async fn health(&self) -> HealthReport {
        match &self.health {
            Some(monitor) => monitor.report().await,
            None => HealthReport {
                users: Probe::Pending,
                sessions: Probe::Pending,
                ai: None,
            },
        }
    }

    /// Stops the background probes and waits for them.
    pub async fn stop_health(&self) {
        if let Some(monitor) = &self.health {
            monitor.stop().await;
        }
    }

    /// This context believing `X-Forwarded-For` from `proxies`.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }
}

/// The request proved who sent it: its connection no longer counts against
/// `UNAUTH_CONNECTIONS_PER_IP` and is never shed for descriptors.
pub fn connection_authenticated(req: &poem::Request) {
    if let Some(handle) = req.extensions().get::<server::ConnectionHandle>() {
        handle.0.authenticated();
    }
}

/// How a request is known in the logs and to the upstream: its
/// `X-Request-Id` (the client's, if acceptable, or a new one) and the trace
/// context of its `traceparent`, if it carried a valid one.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: RequestId,
    pub trace: Option<TraceContext>,
}

/// The request's span in a trace, for the spans that outlive the request
/// and so are its children in the trace only (a WebSocket's, see
/// `ws::connection_span`). Disabled without trace export.
#[derive(Debug, Clone)]
pub struct RequestSpan(pub tracing::Span);

/// The request's [`RequestSpan`] ([`tracing::Span::none`] without one).
pub fn request_span(req: &poem::Request) -> tracing::Span {
    req.extensions()
        .get::<RequestSpan>()
        .map_or_else(tracing::Span::none, |s| s.0.clone())
}

/// The request's [`RequestContext`], as [`http::app`] set it (a fresh one
/// when the endpoint is driven without the middleware).
pub fn request_context(req: &poem::Request) -> RequestContext {
    req.extensions()
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_else(|| RequestContext {
            id: RequestId::generate(),
            trace: None,
        })
}

/// The client address [`http::app`] resolved for this request (from the
/// peer and, behind a trusted proxy, `X-Forwarded-For`), once per request.
pub fn client_ip(req: &poem::Request) -> ClientIp {
    req.extensions()
        .get::<ClientIp>()
        .copied()
        .unwrap_or_else(|| ClientIp::from(peer_ip(req)))
}

/// The socket peer's address; unspecified when there is no socket (tests
/// that drive the endpoint directly).
fn peer_ip(req: &poem::Request) -> std::net::IpAddr {
    req.remote_addr()
        .as_socket_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip())
}

/// Resolves the request's [`ClientIp`] and keeps it in its extensions.
fn resolve_client_ip(req: &mut poem::Request, trusted: &TrustedProxies) -> ClientIp {
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = ClientIp::resolve(peer_ip(req), forwarded, trusted);
    req.extensions_mut().insert(ip);
    ip
}
