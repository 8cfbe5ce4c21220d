//! The HTTP application: routes and middleware (the TCP side is [`super::server`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::middleware::{Cors, CorsEndpoint};
use poem::web::Data;
use poem::{
    get, handler, Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route,
    RouteMethod,
};
use poem_openapi::OpenApiService;
use tokio::net::TcpListener;
use tracing::Instrument;

use super::errors::{ErrorBody, ErrorCode};
use super::rest::{Api, API};
use super::rest_health::{liveness, readiness};
use super::web;
use super::ws::agent::agent_ws_endpoint;
use super::ws::ws_endpoint;
use super::{resolve_client_ip, AppContext, RequestContext, RequestSpan};
use crate::domain::{RequestId, TraceContext, TRACE_TARGET};

/// The header a request id comes in and goes out with.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Largest REST request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI service; its doc comments and response enums are the spec.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(API, "chatbot-server", env!("CARGO_PKG_VERSION")).description(
        "REST API of chatbot-server: register and log in for a JWT and a refresh token, buy a \
         single-use ticket with the JWT (`POST /api/auth/ws-ticket`), then open the WebSocket \
         at `/ws?ticket=<ticket>` to chat (non-browser clients may also send the JWT as \
         `?token=` or `Authorization: Bearer`). Errors always have the body \
         `{\"error\": \"<stable_code>\", \"message\": \"<text>\"}`. \
         Besides the responses listed per operation, any route can answer \
         404 `not_found` (unknown path), 405 `method_not_allowed`, \
         408 `request_timeout` (a request body not received within `HTTP_BODY_TIMEOUT`, \
         or headers not within `HTTP_HEADER_TIMEOUT`; the connection closes), and, when \
         `CORS_ORIGIN` is set, 403 `origin_not_allowed` to a browser from another origin \
         (the server's own origin, as named by `Host`, is always allowed). \
         Every response carries `X-Request-Id` (the request's own, if it sent an \
         acceptable one: at most 128 of `A-Za-z0-9-_.:/+=@`; otherwise a new one). \
         `GET /metrics` serves Prometheus metrics in the text format (on `METRICS_ADDR` \
         instead, when that is set).",
    )
}

/// The spec as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    api_service().spec()
}

/// Every route and middleware, ready to serve.
pub fn app(ctx: Arc<AppContext>, cors_origins: Option<Vec<String>>) -> impl Endpoint {
    let api = api_service();
    let spec = api.spec_endpoint();
    let body_timeout = ctx.http_limits.body_timeout;
    let observing = ctx.clone();
    let allowed = Arc::new(AllowedMethods::of_routes());
    let mut routes = Route::new()
        .at("/ws", get(ws_endpoint))
        .at("/agent/ws", get(agent_ws_endpoint))
        .at("/agent", get(web::agent_page))
        .at("/assets/:name", get(web::asset_file))
        .at(web::SDK_PATH, get(web::sdk_file))
        .at("/openapi.json", spec)
        .nest("/docs", Route::new().at("/", get(docs_page)));
    if ctx.metrics_on_main_port {
        routes = routes.at("/metrics", get(metrics_endpoint));
    }
    let root = Arc::new(get(web::customer_page));
    routes
        .nest("/", api)
        .around(move |ep, req| serve_root(ep, req, root.clone()))
        .before(move |req| limit_body(req, body_timeout))
        .with(SameOriginOr(cors(cors_origins)))
        .catch_all_error(|err: poem::Error| async move {
            ErrorBody::response(ErrorCode::for_status(err.status()))
        })
        .data(ctx)
        .around(move |ep, req| add_allow_header(ep, req, allowed.clone()))
        .around(move |ep, req| observe(ep, req, observing.clone()))
}

/// `/docs`: the Swagger UI page, built on its first request and kept. The
/// page inlines the whole swagger-ui bundle and the spec (about 3 MB): built
/// with the routes, as `swagger_ui()` does, every instance kept it from
/// start-up whether or not anyone opened it, and copied it for each request.
/// Built once on a runtime thread (a few milliseconds, once per process).
#[handler]
fn docs_page() -> poem::web::Html<&'static str> {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    poem::web::Html(PAGE.get_or_init(|| api_service().swagger_ui_html()))
}

/// `/` itself, the customer page: the API nested at `/` would take it in the
/// route tree.
async fn serve_root<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    root: Arc<RouteMethod>,
) -> poem::Result<Response> {
    if req.uri().path() == "/" {
        root.call(req).await.map(IntoResponse::into_response)
    } else {
        ep.call(req).await.map(IntoResponse::into_response)
    }
}

/// `GET /metrics`: every series in the Prometheus text format.
#[handler]
fn metrics_endpoint(ctx: Data<&Arc<AppContext>>) -> Response {
    match ctx.metrics.exposition() {
        Some(text) => Response::builder()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        None => ErrorBody::response(ErrorCode::for_status(StatusCode::NOT_FOUND)),
    }
}

#[handler]
fn live_endpoint() -> Response {
    poem::web::Json(liveness()).into_response()
}

#[handler]
async fn ready_endpoint(ctx: Data<&Arc<AppContext>>) -> Response {
    let (ok, body) = readiness(&ctx).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    poem::web::Json(body).with_status(status).into_response()
}

/// Serves `/metrics` and the health probes on the `METRICS_ADDR` listener
/// until `stop` resolves; nothing else is reachable there.
pub async fn serve_metrics(
    listener: TcpListener,
    ctx: Arc<AppContext>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Route::new()
        .at("/metrics", get(metrics_endpoint))
        .at("/health/live", get(live_endpoint))
        .at("/health/ready", get(ready_endpoint))
        .catch_all_error(|err: poem::Error| async move {
            ErrorBody::response(ErrorCode::for_status(err.status()))
        })
        .data(ctx);
    let acceptor = match poem::listener::TcpAcceptor::from_tokio(listener) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            tracing::error!(error = %e, "the metrics listener failed");
            return;
        }
    };
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, stop, Some(Duration::from_secs(1)))
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics server failed");
    }
}

/// Every route's methods, from the operations and the routes beside them.
/// Each entry is a path template (`{id}` matches one segment) and its
/// `Allow` value.
#[derive(Debug)]
struct AllowedMethods(Vec<(String, String)>);

impl AllowedMethods {
    fn of_routes() -> Self {
        let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for api in <Api as poem_openapi::OpenApi>::meta() {
            for path in api.paths {
                let methods = routes.entry(path.path).or_default();
                methods.extend(path.operations.iter().map(|op| op.method.to_string()));
            }
        }
        // `/openapi.json` answers any method.
        let beside = [
            "/ws",
            "/agent/ws",
            "/",
            "/agent",
            "/assets/{name}",
            web::SDK_PATH,
        ];
        for path in beside.into_iter().chain(["/docs", "/docs/*"]) {
            routes
                .entry(path.to_owned())
                .or_default()
                .insert("GET".into());
        }
        let allow = |mut methods: BTreeSet<String>| {
            // poem answers HEAD wherever it answers GET.
            if methods.contains("GET") {
                methods.insert("HEAD".into());
            }
            methods.into_iter().collect::<Vec<_>>().join(", ")
        };
        Self(routes.into_iter().map(|(p, m)| (p, allow(m))).collect())
    }

    /// The `Allow` value of the route `path` falls on (empty: no route).
    fn for_path(&self, path: &str) -> &str {
        self.0
            .iter()
            .find(|(template, _)| template_matches(template, path))
            .map_or("", |(_, allow)| allow.as_str())
    }
}

/// Whether `path` falls on `template`, compared segment by segment.
fn template_matches(template: &str, path: &str) -> bool {
    let mut path = path.split('/');
    for part in template.split('/') {
        match path.next() {
            Some(seg) if part.starts_with('{') || part.starts_with(':') => {
                if seg.is_empty() {
                    return false;
                }
            }
            Some(seg) if seg == part => {}
            _ => return false,
        }
    }
    path.next().is_none()
}

/// A 405 says which methods the route takes (RFC 9110 requires `Allow`).
async fn add_allow_header<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let mut resp = ep.call(req).await?.into_response();
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(value) = header::HeaderValue::from_str(allowed.for_path(&path)) {
            resp.headers_mut().insert(header::ALLOW, value);
        }
    }
    Ok(resp)
}

fn cors(origins: Option<Vec<String>>) -> Cors {
    let cors = Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    match origins {
        Some(origins) => cors.allow_origins(origins),
        None => cors,
    }
}

/// Lets a request from the server's own origin past `inner`'s origin check,
/// so the server's `/docs` page works whatever `CORS_ORIGIN` allows.
struct SameOriginOr(Cors);

impl<E: Endpoint> Middleware<E> for SameOriginOr {
    type Output = SameOriginEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        let plain = Arc::new(ep);
        SameOriginEndpoint {
            cors: self.0.transform(plain.clone()),
            plain,
        }
    }
}

struct SameOriginEndpoint<E> {
    plain: Arc<E>,
    cors: CorsEndpoint<Arc<E>>,
}

impl<E: Endpoint> Endpoint for SameOriginEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let origin = req.header(header::ORIGIN);
        let host = req.header(header::HOST);
        match (origin, host) {
            (Some(origin), Some(host)) if is_same_origin(origin, host) => {
                self.plain.call(req).await.map(IntoResponse::into_response)
            }
            _ => self.cors.call(req).await,
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as
/// the request's `Host` header. The scheme is not compared: behind a TLS
/// proxy the server sees plain HTTP while the browser says `https`. A default
/// port, written or not, compares equal.
fn is_same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalize = |a: &str| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_owned(),
            None => a,
        }
    };
    !authority.is_empty() && normalize(authority) == normalize(host)
}

/// Reads every request body before a handler runs: at most
/// [`MAX_BODY_BYTES`] however it is sent (413), within `HTTP_BODY_TIMEOUT`
/// of its headers (408, and the connection closes), so a client that sends
/// its body slowly or never holds neither a handler nor its connection. A
/// body-less POST counts as an empty JSON body.
async fn limit_body(mut req: Request, timeout: Option<Duration>) -> poem::Result<Request> {
    let declared = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok());
    // Refuse a declared oversize body before reading any of it.
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        // A POST with no body at all (`verify` with only a Bearer header) is
        // an empty JSON body, not an unsupported media type.
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        return Ok(req);
    }
    let read = req.take_body().into_bytes_limit(MAX_BODY_BYTES);
    let read = match timeout {
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|_| poem::Error::from_status(StatusCode::REQUEST_TIMEOUT))?,
        None => read.await,
    };
    let body = read.map_err(|e| {
        poem::Error::from_status(match e {
            poem::error::ReadBodyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        })
    })?;
    req.set_body(body);
    Ok(req)
}

/// Around every request: takes or makes its request id and reads its
/// `traceparent`, resolves the client's address, runs it in a span carrying
/// all three (so every line logged for it has them), echoes the id, counts
/// it in the metrics and logs one line with its status and duration. The
/// path only: a query string may carry a token.
async fn observe<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    ctx: Arc<AppContext>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let id = RequestId::from_header(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceContext::parse(v).ok());
    let client_ip = resolve_client_ip(&mut req, &ctx.trusted_proxies);
    let method = method_label(req.method());
    let route = route_label(req.uri().path());
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        client_ip = %client_ip,
        method,
        path = %req.uri().path(),
        trace_id = tracing::field::Empty,
    );
    if let Some(trace) = &trace {
        span.record("trace_id", trace.trace_id());
    }
    let traced = request_span(method, route, &id, &client_ip, trace.as_ref());
    req.extensions_mut().insert(RequestContext {
        id: id.clone(),
        trace,
    });
    req.extensions_mut().insert(RequestSpan(traced.clone()));
    let result = ep
        .call(req)
        .instrument(span.clone())
        .instrument(traced.clone())
        .await
        .map(IntoResponse::into_response);
    let status = match &result {
        Ok(resp) => resp.status(),
        Err(err) => err.status(),
    };
    // As i64: tracing-opentelemetry exports unsigned values as text.
    traced.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        traced.record("otel.status_code", "error");
    }
    let elapsed = started.elapsed();
    ctx.metrics
        .http_request(method, route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "request"
        )
    });
    result.map(|mut resp| {
        if let Ok(value) = HeaderValue::from_str(id.as_str()) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        resp
    })
}

/// The request's span in a trace (OpenTelemetry's HTTP server conventions),
/// a child of the caller's `traceparent`; disabled without export. The
/// route template names it, never the path: the path of a WebSocket
/// upgrade carries no secret, but a query string may, and ids make a
/// span name per session.
fn request_span(
    method: &'static str,
    route: &'static str,
    id: &RequestId,
    client_ip: &impl std::fmt::Display,
    caller: Option<&TraceContext>,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "HTTP",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        client.address = %client_ip,
        chatbot.request_id = %id,
    );
    crate::telemetry::otel::continue_trace(&span, caller);
    span
}

/// A method as a metric label (a fixed set: a client cannot add series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template a path matches, as a metric label: ids are folded
/// into their parameter and unknown paths into `unmatched`, so a client
/// cannot add series.
fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/",
        "/agent",
        "/ws",
        "/agent/ws",
        "/api/agent/queue",
        "/api/agent/conversations",
        "/metrics",
        "/health",
        "/health/live",
        "/health/ready",
        "/openapi.json",
        "/api/stats",
        "/api/websocket/info",
        "/api/sessions",
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/verify",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/api/auth/ws-ticket",
        web::SDK_PATH,
    ];
    if let Some(route) = ROUTES.iter().find(|r| **r == path) {
        return route;
    }
    if path == "/docs" || path.starts_with("/docs/") {
        return "/docs";
    }
    if path
        .strip_prefix("/assets/")
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    {
        return "/assets/{name}";
    }
    let events = path
        .strip_prefix("/api/sessions/")
        .and_then(|rest| rest.strip_suffix("/events"));
    if events.is_some_and(|id| !id.is_empty() && !id.contains('/')) {
        return "/api/sessions/{id}/events";
    }
    if let Some(route) = agent_action_label(path) {
        return route;
    }
    "unmatched"
}

/// `/api/agent/conversations/{id}/<action>` as its template.
fn agent_action_label(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/agent/conversations/")?;
    let (id, action) = rest.split_once('/')?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    match action {
        "claim" => Some("/api/agent/conversations/{id}/claim"),
        "release" => Some("/api/agent/conversations/{id}/release"),
        "resolve" => Some("/api/agent/conversations/{id}/resolve"),
        "messages" => Some("/api/agent/conversations/{id}/messages"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_same_origin, route_label};

    #[test]
    fn routes_fold_into_their_templates() {
        assert_eq!(route_label("/api/auth/login"), "/api/auth/login");
        assert_eq!(
            route_label("/api/sessions/sess_abc/events"),
            "/api/sessions/{id}/events"
        );
        assert_eq!(route_label("/api/sessions//events"), "unmatched");
        assert_eq!(route_label("/api/sessions/a/b/events"), "unmatched");
        assert_eq!(route_label("/docs/index.css"), "/docs");
        assert_eq!(route_label("/no/such/thing"), "unmatched");
        assert_eq!(
            route_label("/api/agent/conversations/sess_a/claim"),
            "/api/agent/conversations/{id}/claim"
        );
        assert_eq!(
            route_label("/api/agent/conversations/sess_a/dance"),
            "unmatched"
        );
        assert_eq!(route_label("/api/agent/conversations//claim"), "unmatched");
        assert_eq!(route_label("/wsx"), "unmatched");
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/agent"), "/agent");
        assert_eq!(route_label("/assets/chat.js"), "/assets/{name}");
        assert_eq!(route_label("/assets/"), "unmatched");
        assert_eq!(route_label("/assets/a/b"), "unmatched");
        assert_eq!(
            route_label("/sdk/chatbot-server-client.js"),
            "/sdk/chatbot-server-client.js"
        );
        assert_eq!(route_label("/sdk/other.js"), "unmatched");
    }

    #[test]
    fn same_origin_compares_host_and_port_only() {
        assert!(is_same_origin("http://127.0.0.1:3001", "127.0.0.1:3001"));
        assert!(is_same_origin(
            "https://Chat.Example.com",
            "chat.example.com"
        ));
        assert!(is_same_origin(
            "https://chat.example.com",
            "chat.example.com:443"
        ));
        assert!(is_same_origin(
            "http://chat.example.com:80",
            "chat.example.com"
        ));
        assert!(!is_same_origin("http://127.0.0.1:3000", "127.0.0.1:3001"));
        assert!(!is_same_origin("https://evil.example", "chat.example.com"));
        assert!(!is_same_origin(
            "https://chat.example.com:8443",
            "chat.example.com"
        ));
        assert!(!is_same_origin("null", "chat.example.com"));
        assert!(!is_same_origin("http://", ""));
        assert!(!is_same_origin("chat.example.com", "chat.example.com"));
    }
}
