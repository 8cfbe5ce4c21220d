//! The health endpoints: `/health` (dependencies, for people), and the
//! liveness and readiness probes `/health/live` and `/health/ready`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Serialize;

use super::api_common::ApiTags;
use super::errors::ErrorCode;
use super::openapi::Json;
use super::AppContext;
use crate::application::health::{HealthReport, Probe};
use crate::application::ports::{AiHealth, CircuitState};

#[derive(Debug, Object)]
struct HealthChecks {
    /// `ok` or `unavailable`: whether the user store answers.
    database: String,
    /// `ok` (upstream answers), `unreachable`, or `echo` (built-in model, no upstream).
    ai: String,
    /// The configured AI upstreams, primary first, with their circuit
    /// breakers (empty with the echo model).
    upstreams: Vec<UpstreamHealth>,
}

/// One AI upstream and its circuit breaker.
#[derive(Debug, Object, Serialize)]
pub(super) struct UpstreamHealth {
    /// `primary` or `fallback`.
    role: String,
    /// `fastapi` or `openai`.
    provider: String,
    /// `closed` (chats go to it), `open` (chats skip it: `ai_unavailable` at
    /// once, or the fallback) or `half_open` (the next chat probes it).
    circuit: String,
}

/// Server health.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct HealthBody {
    /// `ok`, or `unavailable` when the user store does not answer.
    status: String,
    uptime_seconds: u64,
    checks: HealthChecks,
}

/// The process answers.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub(super) struct LiveBody {
    /// Always `ok`.
    status: String,
}

/// What readiness depends on, as the background probes last found it.
#[derive(Debug, Object, Serialize)]
pub(super) struct ReadyChecks {
    /// `ok`, `unavailable` or `pending` (not answered yet): the user store.
    users: String,
    /// `ok`, `unavailable` or `pending`: the session store.
    sessions: String,
    /// `ok`, `unreachable`, `echo` or `pending`: the AI service.
    ai: String,
    /// The configured AI upstreams with their circuit breakers.
    upstreams: Vec<UpstreamHealth>,
}

/// Whether this instance should get traffic.
#[derive(Debug, Object, Serialize)]
#[oai(example)]
pub(super) struct ReadyBody {
    /// `ready`; `degraded` (serving, but the AI does not answer or a
    /// circuit breaker is open: chats may fail with `ai_unavailable`);
    /// `unavailable` (a store does not answer); or `shutting_down`.
    status: String,
    checks: ReadyChecks,
}

impl Example for LiveBody {
    fn example() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

impl Example for ReadyBody {
    fn example() -> Self {
        Self {
            status: "ready".into(),
            checks: ReadyChecks {
                users: "ok".into(),
                sessions: "ok".into(),
                ai: "ok".into(),
                upstreams: vec![UpstreamHealth {
                    role: "primary".into(),
                    provider: "fastapi".into(),
                    circuit: "closed".into(),
                }],
            },
        }
    }
}

impl Example for HealthBody {
    fn example() -> Self {
        Self {
            status: "ok".into(),
            uptime_seconds: 3600,
            checks: HealthChecks {
                database: "ok".into(),
                ai: "ok".into(),
                upstreams: vec![UpstreamHealth {
                    role: "primary".into(),
                    provider: "fastapi".into(),
                    circuit: "closed".into(),
                }],
            },
        }
    }
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The server and its user store answer.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// The user store does not answer.
    #[oai(status = 503)]
    Unavailable(Json<HealthBody>),
}

#[derive(ApiResponse)]
enum LiveResponse {
    /// The process answers (nothing else is checked).
    #[oai(status = 200)]
    Ok(Json<LiveBody>),
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Ready, or degraded: the stores answer and the server is not stopping.
    #[oai(status = 200)]
    Ok(Json<ReadyBody>),
    /// A store does not answer, or the server is shutting down.
    #[oai(status = 503)]
    Unavailable(Json<ReadyBody>),
}

/// `/health/live`'s answer.
pub(super) fn liveness() -> LiveBody {
    LiveBody {
        status: "ok".to_owned(),
    }
}

fn probe_text(probe: Probe) -> &'static str {
    match probe {
        Probe::Ok => "ok",
        Probe::Failed => "unavailable",
        Probe::Pending => "pending",
    }
}

fn ai_text(ai: Option<AiHealth>) -> &'static str {
    match ai {
        Some(AiHealth::Ok) => "ok",
        Some(AiHealth::Echo) => "echo",
        Some(AiHealth::Unreachable) => "unreachable",
        None => "pending",
    }
}

fn upstreams(ctx: &AppContext) -> Vec<UpstreamHealth> {
    ctx.ai
        .upstreams()
        .into_iter()
        .map(|u| UpstreamHealth {
            role: u.role.to_owned(),
            provider: u.provider.to_owned(),
            circuit: u.circuit.as_str().to_owned(),
        })
        .collect()
}

/// `/health/ready`'s answer from the last probes, and whether it is a 200.
/// Never waits on a dependency (see [`crate::application::health`]).
pub(super) async fn readiness(ctx: &AppContext) -> (bool, ReadyBody) {
    let report: HealthReport = ctx.health().await;
    let upstreams = upstreams(ctx);
    let stores_ok = report.users == Probe::Ok && report.sessions == Probe::Ok;
    let ai_down = report.ai == Some(AiHealth::Unreachable)
        || upstreams
            .iter()
            .any(|u| u.circuit != CircuitState::Closed.as_str());
    let status = if ctx.shutdown.is_cancelled() {
        ErrorCode::ShuttingDown.as_str()
    } else if !stores_ok {
        "unavailable"
    } else if ai_down {
        "degraded"
    } else {
        "ready"
    };
    let body = ReadyBody {
        status: status.to_owned(),
        checks: ReadyChecks {
            users: probe_text(report.users).to_owned(),
            sessions: probe_text(report.sessions).to_owned(),
            ai: ai_text(report.ai).to_owned(),
            upstreams,
        },
    };
    (matches!(status, "ready" | "degraded"), body)
}

/// Dependency health and the probes.
pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Dependency health, as the background probes last found it (every
    /// `HEALTH_PROBE_INTERVAL`): answers at once, however slow a dependency.
    #[oai(
        path = "/health",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "health"
    )]
    async fn health(&self, ctx: Data<&Arc<AppContext>>) -> HealthResponse {
        let report = ctx.health().await;
        let database_ok = report.users == Probe::Ok;
        let database = if database_ok { "ok" } else { "unavailable" };
        let body = HealthBody {
            status: database.to_owned(),
            uptime_seconds: ctx.uptime_seconds(),
            checks: HealthChecks {
                database: database.to_owned(),
                // Not answered yet counts as not answering.
                ai: match report.ai {
                    None => "unreachable",
                    ai => ai_text(ai),
                }
                .to_owned(),
                upstreams: upstreams(&ctx),
            },
        };
        if database_ok {
            HealthResponse::Ok(Json(body))
        } else {
            HealthResponse::Unavailable(Json(body))
        }
    }

    /// Liveness: the process answers. Checks nothing else, so a slow
    /// dependency never gets the process restarted.
    #[oai(
        path = "/health/live",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "healthLive"
    )]
    async fn live(&self) -> LiveResponse {
        LiveResponse::Ok(Json(liveness()))
    }

    /// Readiness: the user and session stores answer and the server is not
    /// shutting down (503 otherwise). An AI that does not answer, or an open
    /// circuit breaker, makes it `degraded` but still 200: chats fail fast
    /// with `ai_unavailable` (or go to the fallback), everything else works.
    /// Reports the background probes' last answers without waiting.
    #[oai(
        path = "/health/ready",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "healthReady"
    )]
    async fn ready(&self, ctx: Data<&Arc<AppContext>>) -> ReadyResponse {
        match readiness(&ctx).await {
            (true, body) => ReadyResponse::Ok(Json(body)),
            (false, body) => ReadyResponse::Unavailable(Json(body)),
        }
    }
}
