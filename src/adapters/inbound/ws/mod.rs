//! The WebSocket endpoint `/ws`: authenticates, opens or resumes the session
//! and attaches to its conversation before the upgrade (so every refusal is a
//! plain HTTP error with the JSON body), then hands the socket to a
//! [`connection`].
//!
//! - [`transport`]: frames, the writer task, pings, close codes;
//! - [`protocol`]: the JSON messages in both directions;
//! - [`feed`]: a session's conversation as frames for one socket's writer;
//! - [`connection`]: one client's read loop, turning messages into commands;
//! - [`info`]: `/api/websocket/info`, both sockets described for clients.

pub mod agent;
pub mod agent_protocol;
mod connection;
mod feed;
mod held_permit;
pub mod info;
mod millis;
pub mod protocol;
pub mod transport;

use std::sync::Arc;

use poem::web::websocket::WebSocket;
use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};
use serde::Deserialize;

use super::api_common::{unavailable_code, UserView};
use super::errors::{ErrorBody, ErrorCode};
use super::openapi::bearer_token;
use super::{client_ip, connection_authenticated, request_context, AppContext, RequestContext};
use crate::application::{Attachment, AuthError, Authorized, ChatError};
use crate::domain::budget::Quota;
use crate::domain::conversation::Seq;
use crate::domain::handoff::Mode;
use crate::domain::signal::Side;
use crate::domain::{SessionId, User};
use crate::telemetry::ErrorChain;
use connection::{Connection, Hello};
use held_permit::HeldPermit;
use protocol::{AgentView, QuotaView};

pub use protocol::{CLIENT_MESSAGE_TYPES, SERVER_MESSAGE_TYPES};

/// Every reason a closed socket (either kind) is counted under, for the
/// metrics to show each at zero from start-up: the client's own close, a
/// client that stopped reading, a connection dropped before it said why
/// (`aborted`), and each [`transport::CloseReason`].
pub fn close_labels() -> impl Iterator<Item = &'static str> {
    ["client_closed", "client_stopped_reading", "aborted"]
        .into_iter()
        .chain(transport::CloseReason::ALL.iter().map(|r| r.label()))
}

/// The codes [`ws_endpoint`] can refuse an upgrade with, besides the CORS
/// refusal every route shares.
pub const UPGRADE_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidRequest,
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::TokenRevoked,
    ErrorCode::InvalidTicket,
    ErrorCode::WebsocketUpgradeRequired,
    ErrorCode::ShuttingDown,
    ErrorCode::ServiceUnavailable,
    ErrorCode::SessionStoreUnavailable,
    ErrorCode::RateLimited,
];

/// The subprotocol the server speaks; a client offering it may carry its
/// token as a second offer, `bearer.<jwt>`, which is never echoed back.
pub const SUBPROTOCOL: &str = "chatbot.v1";
const BEARER_SUBPROTOCOL: &str = "bearer.";

/// The ways to authenticate `/ws`, as `/api/websocket/info` lists them.
pub const WS_AUTHENTICATION: &[&str] = &[
    "query:ticket (browsers: buy one with POST /api/auth/ws-ticket; single-use, valid WS_TICKET_TTL)",
    "header:Sec-WebSocket-Protocol: chatbot.v1, bearer.<token> (answered with chatbot.v1)",
    "query:token (non-browser clients and compatibility; puts the token in URLs and logs)",
    "header:Authorization: Bearer <token> (non-browser clients)",
];

/// The token offered as a `bearer.<jwt>` subprotocol, if any.
fn subprotocol_token(req: &Request) -> Option<String> {
    req.headers()
        .get_all(poem::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        // Whitespace is no part of a token (`bearer. x` offers `x`), and a
        // blank offer is none.
        .find_map(|p| p.trim().strip_prefix(BEARER_SUBPROTOCOL).map(str::trim))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The user a ticket or token names, or the HTTP refusal. A ticket, when
/// given, is the only credential looked at: a bad one is refused as such.
pub(super) async fn authenticate(
    ctx: &AppContext,
    req: &Request,
    query: &WsQuery,
) -> Result<Authorized, Response> {
    let outcome = if let Some(ticket) = query.ticket.as_deref() {
        ctx.auth.redeem_ticket(ticket.trim()).await
    } else {
        let token = subprotocol_token(req)
            .or_else(|| query.token.clone().filter(|t| !t.is_empty()))
            .or_else(|| bearer_token(req));
        let Some(token) = token else {
            return Err(ErrorBody::response_with(
                ErrorCode::MissingToken,
                "Connect with ?ticket=<ticket> (POST /api/auth/ws-ticket), the subprotocols \
                 'chatbot.v1, bearer.<jwt>', ?token=<jwt> or an 'Authorization: Bearer <jwt>' header",
            ));
        };
        ctx.auth.authorize(&token).await
    };
    match outcome {
        Ok(authorized) => {
            connection_authenticated(req);
            Ok(authorized)
        }
        // A failing store is a passing outage, not a bad token: 503, try again.
        Err(AuthError::Internal) => Err(ErrorBody::response(unavailable_code(ctx).await)),
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
    let attachment = ctx.chat.attach(&session.id, from, Side::Customer).await?;
    Ok((session.id, resumed, attachment))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WsQuery {
    ticket: Option<String>,
    token: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    /// Kept as text so a malformed value is reported as such, not as a missing token.
    #[serde(rename = "lastSeq")]
    last_seq: Option<String>,
}

/// `GET /ws?ticket=..[&sessionId=..][&lastSeq=N]`: checks the ticket (or the
/// token: `bearer.` subprotocol, query `token` or `Authorization: Bearer`),
/// opens or resumes the session, attaches to its conversation, and upgrades.
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
    // Subscribed before the token is checked, so a revocation that lands
    // between the check and the upgrade is still heard by the socket.
    let revocations = ctx.auth.revocations();
    let query: WsQuery = req.params().unwrap_or_default();
    let Ok(last_seq) = query.last_seq.as_deref().map(str::parse::<Seq>).transpose() else {
        return ErrorBody::response_with(
            ErrorCode::InvalidRequest,
            "lastSeq must be a whole number (the seq of the last event you saw)",
        );
    };
    let Authorized { user, claims } = match authenticate(&ctx, req, &query).await {
        Ok(authorized) => authorized,
        Err(refusal) => return refusal,
    };
    let Ok(ws) = ws else {
        return ErrorBody::response(ErrorCode::WebsocketUpgradeRequired);
    };
    // Before a session is opened, so a refused connection leaves nothing behind.
    let permit = match ctx.limits.connection(&user.id, client_ip(req)).await {
        Ok(permit) => HeldPermit::new(permit, &ctx.limits, &ctx.connections),
        Err(limited) => return ErrorBody::rate_limited(limited.retry_after),
    };
    let resume = query
        .session_id
        .as_deref()
        .and_then(|s| SessionId::parse(s).ok());
    let opened = async {
        let (session_id, resumed, attachment) = open(&ctx, &user, resume, last_seq).await?;
        let mode = ctx
            .handoff
            .handoff(&session_id)
            .await?
            .map_or(Mode::Bot, |h| h.mode);
        Ok::<_, ChatError>((session_id, resumed, attachment, mode))
    };
    let (session_id, resumed, attachment, mode) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not open a session");
            permit.release().await;
            return ErrorBody::response(ErrorCode::SessionStoreUnavailable);
        }
    };
    let quota = ctx.chat.quota(&user.id).await;
    let traced = connection_span(req, "/ws", Some(&session_id), &user.id);
    let opened = Opened {
        session_id,
        resumed,
        attachment,
        quota,
        user,
        authority: connection::Authority::new(claims, revocations),
        permit,
        request: request_context(req),
        mode,
        traced,
    };
    upgrade(ws, ctx, opened)
}

/// A socket's span in a trace, from the upgrade to the close, a child of
/// the upgrade request's span (so of the caller's `traceparent`): every
/// answer the socket asks for is a child of it. A root for the logs (made
/// contextually, every line the socket logs would carry the request's
/// fields), and the request's child in the trace only, so the request's
/// span is exported when it ends, not when the socket closes. Disabled
/// without export, so it costs an idle socket nothing then.
pub(super) fn connection_span(
    req: &Request,
    route: &'static str,
    session: Option<&SessionId>,
    user: &crate::domain::UserId,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::domain::TRACE_TARGET,
        parent: None,
        "WebSocket",
        otel.name = %format_args!("WebSocket {route}"),
        otel.kind = "server",
        chatbot.session_id = session.map(SessionId::as_str),
        chatbot.user_id = %user,
        chatbot.close_reason = tracing::field::Empty,
    );
    crate::telemetry::otel::follow(&span, &super::request_span(req));
    span
}

/// What a connection starts from, settled before the upgrade.
struct Opened {
    session_id: SessionId,
    resumed: bool,
    attachment: Attachment,
    user: User,
    authority: connection::Authority,
    /// This connection's place under the per-user and per-address caps,
    /// given back if the upgrade never completes.
    permit: HeldPermit,
    request: RequestContext,
    /// Who answered the conversation when the socket opened.
    mode: Mode,
    /// The user's token usage in the budget window, when known.
    quota: Option<Quota>,
    /// The connection's span in a trace ([`connection_span`]).
    traced: tracing::Span,
}

/// Answers the upgrade and hands the socket to a tracked [`Connection`].
fn upgrade(ws: WebSocket, ctx: Arc<AppContext>, opened: Opened) -> Response {
    let tracker = ctx.connections.clone();
    // poem wants the upgrade callback to be `Sync`; a subscription is only
    // `Send`, and a mutex makes the difference. If the upgrade never completes
    // (the client left, or its socket timed out or was shed), the callback is
    // dropped with what it holds, and the permit gives its slots back.
    let pending = std::sync::Mutex::new(Some(opened));
    ws.config(transport::socket_config())
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| {
            let opened = pending
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("an upgrade starts its connection once");
            let connection = Connection {
                ctx,
                session_id: opened.session_id,
                permit: opened.permit.take(),
                request: opened.request,
            };
            let hello = Hello {
                user: UserView::from(&opened.user),
                resumed: opened.resumed,
                mode: opened.mode.as_str(),
                agent: opened.mode.agent().map(AgentView::from),
                quota: opened.quota.as_ref().map(QuotaView::from),
            };
            let serving = opened
                .traced
                .in_scope(|| connection.start(socket, hello, opened.attachment, opened.authority));
            // A task of its own (the tracker owns it and shutdown awaits it),
            // not awaited in poem's upgrade task: that task would keep, for the
            // connection's whole life, all it started from (this callback with
            // what it captured, the handshake's headers and config): measured,
            // ~1 KiB more per idle socket.
            // The span is disabled unless traces are exported: then it is not
            // kept, as an instrumented future would, in every idle socket.
            if opened.traced.is_disabled() {
                tracker.spawn(serving);
            } else {
                tracker.spawn(tracing::Instrument::instrument(serving, opened.traced));
            }
            std::future::ready(())
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::header::SEC_WEBSOCKET_PROTOCOL;

    fn offered(value: &str) -> Option<String> {
        let req = Request::builder()
            .header(SEC_WEBSOCKET_PROTOCOL, value)
            .finish();
        subprotocol_token(&req)
    }

    #[test]
    fn a_bearer_offer_is_trimmed_and_a_blank_one_is_none() {
        assert_eq!(
            offered("chatbot.v1, bearer.a.b.c").as_deref(),
            Some("a.b.c")
        );
        // Found by the property test below: the tab was kept as part of the token.
        assert_eq!(offered("bearer.\ta.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(offered("chatbot.v1, bearer. \t"), None);
        assert_eq!(offered("chatbot.v1"), None);
    }
}

/// The credentials an upgrade request may carry, written by anyone.
#[cfg(test)]
mod proptests {
    use super::*;
    use poem::http::header::{HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
    use proptest::prelude::*;

    /// Header bytes as a client may send them: mostly subprotocol lists with
    /// `bearer.` offers, sometimes any byte a header value may hold.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "(( |\t)*(chatbot\\.v1|bearer\\.[!-~]{0,20}|[!-+\\--~]{0,8})( |\t)*,?){0,4}"
                .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn request(name: poem::http::HeaderName, values: &[Vec<u8>]) -> Request {
        let mut builder = Request::builder();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                builder = builder.header(name.clone(), v);
            }
        }
        builder.finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_bearer_offer_is_a_clean_token_the_client_wrote(values in prop::collection::vec(header_value(), 0..3)) {
            let req = request(SEC_WEBSOCKET_PROTOCOL, &values);
            if let Some(token) = subprotocol_token(&req) {
                prop_assert!(!token.is_empty());
                prop_assert!(!token.contains(','));
                prop_assert_eq!(token.trim(), token.as_str());
                let offered = values.iter().any(|v| {
                    let v = String::from_utf8_lossy(v);
                    v.contains(BEARER_SUBPROTOCOL) && v.contains(&token)
                });
                prop_assert!(offered, "{} was not offered", token);
            }
        }

        #[test]
        fn an_authorization_header_yields_a_clean_token_or_none(value in prop_oneof![
            "(Bearer|bearer|BEARER|Basic|)( |\t){0,2}[!-~ ]{0,30}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ]) {
            let req = request(AUTHORIZATION, std::slice::from_ref(&value));
            if let Some(token) = bearer_token(&req) {
                let text = String::from_utf8(value).unwrap();
                prop_assert!(!token.is_empty());
                prop_assert_eq!(token.trim(), token.as_str());
                prop_assert!(text.trim_start()[..6].eq_ignore_ascii_case("bearer"));
                prop_assert!(text.trim_end().ends_with(&token));
            }
        }
    }
}
