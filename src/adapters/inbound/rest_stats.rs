//! `/api/stats`: this instance's counters and the session store's.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api_common::ApiTags;
use super::errors::{code_sets, ErrorBody, ErrorCode};
use super::openapi::Json;
use super::AppContext;
use crate::telemetry::ErrorChain;

/// Counters since start-up.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
struct StatsBody {
    /// Open WebSocket connections on this instance.
    active_connections: u64,
    /// Sessions in the session store (including ones waiting to be resumed).
    active_sessions: u64,
    /// WebSocket connections accepted since start-up.
    total_connections: u64,
    /// Chat messages received since start-up.
    total_messages: u64,
    /// Sessions in the store that asked for a human.
    escalated_sessions: u64,
    uptime_seconds: u64,
}

impl Example for StatsBody {
    fn example() -> Self {
        Self {
            active_connections: 12,
            active_sessions: 15,
            total_connections: 340,
            total_messages: 2210,
            escalated_sessions: 1,
            uptime_seconds: 3600,
        }
    }
}

code_sets! {
    StatsUnavailableError = [SessionStoreUnavailable];
}

#[derive(ApiResponse)]
enum StatsResponse {
    #[oai(status = 200)]
    Ok(Json<StatsBody>),
    /// The session store does not answer (`session_store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody<StatsUnavailableError>>),
}

/// Server statistics.
pub struct StatsApi;

#[OpenApi]
impl StatsApi {
    /// Server statistics.
    #[oai(
        path = "/api/stats",
        method = "get",
        tag = "ApiTags::Server",
        operation_id = "stats"
    )]
    async fn stats(&self, ctx: Data<&Arc<AppContext>>) -> StatsResponse {
        let counts = match ctx.chat.session_counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "session counts unavailable");
                return StatsResponse::Unavailable(ErrorBody::new(ErrorCode::from(&e)));
            }
        };
        let s = ctx.metrics.snapshot();
        StatsResponse::Ok(Json(StatsBody {
            active_connections: s.active_connections,
            active_sessions: counts.active,
            total_connections: s.total_connections,
            total_messages: s.total_messages,
            escalated_sessions: counts.escalated,
            uptime_seconds: ctx.uptime_seconds(),
        }))
    }
}
