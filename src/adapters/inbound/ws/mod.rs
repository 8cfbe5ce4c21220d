//! The WebSocket endpoint `/ws`: authenticates, opens or resumes the session
//! and attaches to its conversation before the upgrade (so every refusal is a
//! plain HTTP error with the JSON body), then hands the socket to a
//! [`connection`].
//!
//! - [`transport`]: frames, the writer task, pings, close codes;
//! - [`protocol`]: the JSON messages in both directions;
//! - [`feed`]: a session's conversation as frames for one socket's writer;
//! - [`connection`]: one client's read loop, turning messages into commands.

mod connection;
mod feed;
pub mod protocol;
pub mod transport;

use std::sync::Arc;

use poem::web::websocket::WebSocket;
use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};
use serde::Deserialize;
use tracing::Instrument;

use super::errors::{ErrorBody, ErrorCode};
use super::rest::{bearer_token, UserView};
use super::{client_ip, AppContext};
use crate::application::{Attachment, AuthError, ChatError};
use crate::domain::conversation::Seq;
use crate::domain::{SessionId, User};
use crate::telemetry::ErrorChain;
use connection::Connection;

pub use protocol::{CLIENT_MESSAGE_TYPES, SERVER_MESSAGE_TYPES};

/// The codes [`ws_endpoint`] can refuse an upgrade with, besides the CORS
/// refusal every route shares.
pub const UPGRADE_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidRequest,
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::WebsocketUpgradeRequired,
    ErrorCode::ShuttingDown,
    ErrorCode::ServiceUnavailable,
    ErrorCode::SessionStoreUnavailable,
    ErrorCode::RateLimited,
];

/// The user the token names, or the HTTP refusal.
async fn authenticate(
    ctx: &AppContext,
    req: &Request,
    query_token: Option<String>,
) -> Result<User, Response> {
    let Some(token) = query_token
        .filter(|t| !t.is_empty())
        .or_else(|| bearer_token(req))
    else {
        return Err(ErrorBody::response_with(
            ErrorCode::MissingToken,
            "Connect with ?token=<jwt> or an 'Authorization: Bearer <jwt>' header",
        ));
    };
    match ctx.auth.authenticate(&token).await {
        Ok(user) => Ok(user),
        // A failing user store is a passing outage, not a bad token: 503, try again.
        Err(AuthError::Internal) => Err(ErrorBody::response(ErrorCode::ServiceUnavailable)),
        Err(e) => Err(ErrorBody::response(ErrorCode::from(&e))),
    }
}

/// Opens or resumes the session and attaches to its conversation; only a
/// resumed session has a past to replay.
async fn open(
    ctx: &AppContext,
    user: &User,
    resume: Option<SessionId>,
    last_seq: Option<Seq>,
) -> Result<(SessionId, bool, Attachment), ChatError> {
    let session = ctx.chat.open_session(user, resume.as_ref()).await?;
    let resumed = resume.as_ref() == Some(&session.id);
    let from = if resumed { last_seq } else { None };
    let attachment = ctx.chat.attach(&session.id, from).await?;
    Ok((session.id, resumed, attachment))
}

#[derive(Debug, Default, Deserialize)]
struct WsQuery {
    token: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    /// Kept as text so a malformed value is reported as such, not as a missing token.
    #[serde(rename = "lastSeq")]
    last_seq: Option<String>,
}

/// `GET /ws?token=..[&sessionId=..][&lastSeq=N]`: checks the token (query
/// `token` or `Authorization: Bearer`), opens or resumes the session, attaches
/// to its conversation, and upgrades.
#[handler]
pub async fn ws_endpoint(
    req: &Request,
    ws: poem::Result<WebSocket>,
    ctx: Data<&Arc<AppContext>>,
) -> Response {
    let ctx = ctx.0.clone();
    if ctx.shutdown.is_cancelled() {
        return ErrorBody::response(ErrorCode::ShuttingDown);
    }
    let query: WsQuery = req.params().unwrap_or_default();
    let Ok(last_seq) = query.last_seq.as_deref().map(str::parse::<Seq>).transpose() else {
        return ErrorBody::response_with(
            ErrorCode::InvalidRequest,
            "lastSeq must be a whole number (the seq of the last event you saw)",
        );
    };
    let user = match authenticate(&ctx, req, query.token).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let Ok(ws) = ws else {
        return ErrorBody::response(ErrorCode::WebsocketUpgradeRequired);
    };
    // Before a session is opened, so a refused connection leaves nothing behind.
    let permit = match ctx.chat.admit_connection(&user.id, client_ip(req)).await {
        Ok(permit) => permit,
        Err(limited) => return ErrorBody::rate_limited(limited.retry_after),
    };
    let resume = query
        .session_id
        .as_deref()
        .and_then(|s| SessionId::parse(s).ok());
    let (session_id, resumed, attachment) = match open(&ctx, &user, resume, last_seq).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not open a session");
            ctx.chat.release_connection(permit).await;
            return ErrorBody::response(ErrorCode::SessionStoreUnavailable);
        }
    };
    let tracker = ctx.connections.clone();
    // poem wants the upgrade callback to be `Sync`; a subscription is only
    // `Send`, and a mutex makes the difference.
    let attachment = std::sync::Mutex::new((attachment, permit));
    ws.config(transport::socket_config())
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("ws", session_id = %session_id, user_id = %user.id);
            let (attachment, permit) = attachment.into_inner().unwrap_or_else(|p| p.into_inner());
            let connection = Connection {
                ctx,
                session_id,
                user_id: user.id.clone(),
                resumed,
                permit,
            };
            let user = UserView::from(&user);
            tracker.track_future(connection.run(socket, user, attachment).instrument(span))
        })
        .into_response()
}
