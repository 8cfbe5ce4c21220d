//! Metrics, health probes, request ids, trace context and logs, against the
//! real server (in-process, or the binary where only its output shows).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{app_with_upstream, spawn_app, spawn_process, TestApp, Upstream};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The value of one series in a Prometheus text exposition, if present.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scrape(base: &str) -> String {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    resp.text().await.unwrap()
}

/// Scrapes until `name` has `value` (counts land just after the event).
async fn wait_for_series(base: &str, name: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(base).await;
        if series(&text, name) == Some(value) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_move_during_and_after_a_streamed_chat() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(status, 401);
    let (mut client, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "chat", "content": "slow:10"}))
        .await;
    // Wait for the first token, then look while the answer streams.
    loop {
        let msg = client.recv().await;
        if msg["type"] == "stream-token" {
            break;
        }
    }
    let during = scrape(&app.base).await;
    for (name, value) in [
        ("chatbot_websocket_connections_active", 1.0),
        ("chatbot_chat_messages_total", 1.0),
        ("chatbot_generations_total{outcome=\"completed\"}", 0.0),
        (
            "chatbot_upstream_requests_total{outcome=\"ok\",retried=\"false\",upstream=\"primary\"}",
            1.0,
        ),
        ("chatbot_upstream_circuit_open{upstream=\"primary\"}", 0.0),
        (
            "chatbot_http_requests_total{method=\"POST\",route=\"/api/auth/register\",status=\"201\"}",
            1.0,
        ),
        ("chatbot_logins_total{outcome=\"bad_credentials\"}", 1.0),
    ] {
        assert_eq!(series(&during, name), Some(value), "{name} in\n{during}");
    }
    let rest = client.until_stream_end().await;
    let end = rest.last().unwrap();
    assert_eq!(end["status"], "completed", "{end}");

    let after = wait_for_series(
        &app.base,
        "chatbot_generations_total{outcome=\"completed\"}",
        1.0,
    )
    .await;
    for (name, value) in [
        ("chatbot_generations_total{outcome=\"completed\"}", 1.0),
        ("chatbot_tokens_streamed_total", 10.0),
        ("chatbot_generation_first_token_seconds_count", 1.0),
        ("chatbot_generation_duration_seconds_count", 1.0),
        (
            "chatbot_generation_duration_seconds_bucket{le=\"+Inf\"}",
            1.0,
        ),
        (
            "chatbot_http_request_duration_seconds_count{method=\"GET\",route=\"/ws\"}",
            1.0,
        ),
    ] {
        assert_eq!(series(&after, name), Some(value), "{name} in\n{after}");
    }
    // Real histograms, with buckets.
    assert!(after.contains("# TYPE chatbot_generation_first_token_seconds histogram"));
    assert!(after.contains("chatbot_generation_first_token_seconds_bucket{le=\"0.5\"}"));
    assert!(after.contains("# TYPE chatbot_http_request_duration_seconds histogram"));
    // The answer took ten 50 ms tokens: at least half a second in all.
    let sum = series(&after, "chatbot_generation_duration_seconds_sum").unwrap();
    assert!(sum >= 0.45, "{sum}");

    client.ws.close(None).await.unwrap();
    let closed = wait_for_series(
        &app.base,
        "chatbot_websocket_connections_closed_total{reason=\"client_closed\"}",
        1.0,
    )
    .await;
    assert_eq!(
        series(&closed, "chatbot_websocket_connections_active"),
        Some(0.0)
    );
    assert_eq!(
        series(
            &closed,
            "chatbot_websocket_connections_closed_total{reason=\"client_closed\"}"
        ),
        Some(1.0),
        "{closed}"
    );
}

#[tokio::test]
async fn failed_upstream_attempts_and_rate_limits_are_counted() {
    let (app, _upstream) =
        app_with_upstream(&[("AI_MAX_RETRIES", "0"), ("CHAT_MESSAGES_PER_MINUTE", "1")]).await;
    let token = app.register("bob").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("status:503").await;
    assert_eq!(ex.status, "failed");
    client
        .send_json(json!({"type": "chat", "content": "again"}))
        .await;
    let refused = client.recv().await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let text = wait_for_series(
        &app.base,
        "chatbot_generations_total{outcome=\"failed\"}",
        1.0,
    )
    .await;
    for (name, value) in [
        ("chatbot_generations_total{outcome=\"failed\"}", 1.0),
        (
            "chatbot_upstream_requests_total{outcome=\"status_5xx\",retried=\"false\",upstream=\"primary\"}",
            1.0,
        ),
        ("chatbot_rate_limited_total{limit=\"chat\"}", 1.0),
    ] {
        assert_eq!(series(&text, name), Some(value), "{name} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_addr_serves_metrics_and_probes_on_their_own_port_only() {
    let app = spawn_app(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let metrics = format!("http://{}", app.metrics_addr.expect("metrics address"));
    let main = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(main.status(), 404);
    let text = scrape(&metrics).await;
    assert!(text.contains("chatbot_http_requests_total"), "{text}");
    let (status, _) = app.get("/health/live").await;
    assert_eq!(status, 200);
    let live = reqwest::get(format!("{metrics}/health/live"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = reqwest::get(format!("{metrics}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    // Nothing else is there.
    let api = reqwest::get(format!("{metrics}/api/stats")).await.unwrap();
    assert_eq!(api.status(), 404);
}

#[tokio::test]
async fn readiness_is_503_while_shutting_down() {
    let (app, _upstream) =
        app_with_upstream(&[("METRICS_ADDR", "127.0.0.1:0"), ("SHUTDOWN_TIMEOUT", "3s")]).await;
    let metrics = format!("http://{}", app.metrics_addr.unwrap());
    let token = app.register("carol").await;
    let (mut client, _) = app.connect(&token).await;
    // A running answer keeps the drain going for the shutdown timeout.
    client
        .send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    loop {
        if client.recv().await["type"] == "stream-token" {
            break;
        }
    }
    let before = reqwest::get(format!("{metrics}/health/ready"))
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    app.begin_shutdown();
    let deadline = Instant::now() + Duration::from_secs(2);
    let body = loop {
        let resp = reqwest::get(format!("{metrics}/health/ready"))
            .await
            .unwrap();
        if resp.status() == 503 {
            break resp.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "readiness never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "shutting_down");
    // Liveness is not readiness: the process still answers.
    let live = reqwest::get(format!("{metrics}/health/live"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

/// A listener that accepts connections into its backlog but never serves
/// them: a request to it waits until its own timeout.
fn black_hole() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn health_endpoints_answer_at_once_while_the_ai_host_never_answers() {
    let (_hole, url) = black_hole();
    let app = spawn_app(&[("FASTAPI_URL", &url)]).await;
    let client = reqwest::Client::new();
    // The connection is made once, so only the answers are timed.
    client.get(app.url("/health/live")).send().await.unwrap();
    for path in ["/health", "/health/live", "/health/ready", "/health"] {
        let started = Instant::now();
        let resp = client.get(app.url(path)).send().await.unwrap();
        let took = started.elapsed();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        // The old /health waited 2 s for the AI probe; a Kubernetes probe
        // gives up after 1 s.
        assert!(
            took < Duration::from_millis(100),
            "{path} took {took:?}: {body}"
        );
        if path == "/health" {
            assert_eq!(body["checks"]["ai"], "unreachable", "{body}");
        }
    }
    // Once the probe has given up on the AI, readiness says degraded.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["ai"], "unreachable", "{ready}");
}

#[tokio::test]
async fn request_ids_are_echoed_when_safe_and_made_otherwise() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    let id_of =
        |resp: &reqwest::Response| resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let resp = client
        .get(app.url("/health/live"))
        .header("X-Request-Id", "abc-123_from.client")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&resp), "abc-123_from.client");
    for bad in ["has space", "semi;colon", &"x".repeat(129)] {
        let resp = client
            .get(app.url("/health/live"))
            .header("X-Request-Id", bad)
            .send()
            .await
            .unwrap();
        let made = id_of(&resp);
        assert_ne!(made, bad);
        assert_eq!(made.len(), 32, "{made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    }
    let first = client.get(app.url("/nowhere")).send().await.unwrap();
    let second = client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(first.status(), 404, "errors carry one too");
    assert_ne!(id_of(&first), id_of(&second));
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Connects with `traceparent` on the upgrade, chats once, and returns what
/// the upstream received.
async fn chat_with_trace(app: &TestApp, upstream: &Upstream, traceparent: Option<&str>) -> String {
    let token = app
        .register(&format!("tracer{}", upstream.request_count()))
        .await;
    let mut request = app
        .ws_url(&format!("?token={token}"))
        .into_client_request()
        .unwrap();
    if let Some(tp) = traceparent {
        request
            .headers_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = common::WsClient { ws };
    assert_eq!(client.recv().await["type"], "connected");
    assert_eq!(client.chat("trace me").await.status, "completed");
    let sent = upstream.traceparents.lock().unwrap().clone();
    sent.last().cloned().flatten().expect("a traceparent")
}

fn parts(traceparent: &str) -> Vec<String> {
    let parts: Vec<String> = traceparent.split('-').map(str::to_owned).collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    parts
}

#[tokio::test]
async fn the_upstream_request_continues_the_callers_trace_with_both_providers() {
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let (app, upstream) = app_with_upstream(&[]).await;
    let sent = chat_with_trace(&app, &upstream, Some(&caller)).await;
    let p = parts(&sent);
    assert_eq!(p[1], TRACE_ID, "same trace: {sent}");
    assert_ne!(p[2], "00f067aa0ba902b7", "a span of its own: {sent}");
    assert_eq!(p[3], "01");

    // Without a caller's trace, a new one.
    let sent = chat_with_trace(&app, &upstream, None).await;
    assert_ne!(parts(&sent)[1], TRACE_ID);

    let openai = Upstream::start().await;
    let base = openai.openai_url();
    let app = spawn_app(&[
        ("AI_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", &base),
        ("OPENAI_MODEL", "test-model"),
    ])
    .await;
    let sent = chat_with_trace(&app, &openai, Some(&caller)).await;
    assert_eq!(parts(&sent)[1], TRACE_ID, "{sent}");
}

const MARKER: &str = "zq7marker";
const PASSWORD: &str = "pw-zq8secret";

/// Runs one server with `RUST_LOG=trace`, registers, fails a login, chats
/// with the marker, and returns everything it logged.
async fn traced_run(extra: &[(&str, &str)]) -> String {
    let upstream = Upstream::start().await;
    let mut env = vec![
        ("RUST_LOG", "trace"),
        ("FASTAPI_URL", upstream.url.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = spawn_process(&env).await;
    let (status, body) = server
        .post(
            "/api/auth/register",
            json!({"username": "dave", "email": "dave@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(
            "/api/auth/login",
            json!({"username": "dave", "password": format!("{PASSWORD}-wrong")}),
        )
        .await;
    assert_eq!(status, 401);
    let (mut client, _) = server.connect(&token).await;
    let ex = client.chat(&format!("tell me about {MARKER}")).await;
    assert_eq!(ex.status, "completed");
    assert!(ex.text().contains(MARKER), "the answer echoes it");
    client.ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.log_text()
}

#[tokio::test]
async fn a_trace_level_log_holds_no_chat_content_and_no_password() {
    let log = traced_run(&[]).await;
    assert!(log.contains("TRACE"), "trace logging is on:\n{log}");
    let hex_marker = hex::encode(MARKER);
    assert!(!log.contains(MARKER), "chat content in the log");
    assert!(!log.contains(&hex_marker), "chat content (hex) in the log");
    assert!(!log.contains(PASSWORD), "a password in the log");
    assert!(!log.contains(&hex::encode(PASSWORD)), "a password (hex)");
    // What it does log: the failed login's name, and the generation's end.
    assert!(log.contains("login failed"), "{log}");
    assert!(log.contains("generation ended"));
}

#[tokio::test]
async fn log_chat_content_lets_the_libraries_traces_through() {
    // The same run with the operator's opt-in: the filter, not luck, is what
    // kept the marker out above.
    let log = traced_run(&[("LOG_CHAT_CONTENT", "true")]).await;
    assert!(log.contains(MARKER), "opted in, the frames are traced");
    assert!(!log.contains(PASSWORD), "passwords never");
}

#[tokio::test]
async fn production_log_lines_are_flat_json_with_request_ids() {
    let upstream = Upstream::start().await;
    let server = spawn_process(&[
        ("APP_ENV", "production"),
        ("FASTAPI_URL", upstream.url.as_str()),
    ])
    .await;
    let token = server.register("erin").await;
    let client = reqwest::Client::new();
    let resp = client
        .get(server.url("/health/live"))
        .header("X-Request-Id", "flat-check-1")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = server
        .post(
            "/api/auth/login",
            json!({"username": "erin", "password": "not-her-password"}),
        )
        .await;
    assert_eq!(status, 401);
    let mut request = server
        .ws_url(&format!("?token={token}"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-request-id", "ws-conn-7".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = common::WsClient { ws };
    assert_eq!(ws.recv().await["type"], "connected");
    assert_eq!(ws.chat("hello").await.status, "completed");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = server.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    for line in &lines {
        assert!(line.get("fields").is_none(), "nested fields: {line}");
        assert!(line.get("span").is_none(), "nested span: {line}");
        assert!(line["message"].is_string(), "{line}");
        assert!(line["level"].is_string() && line["timestamp"].is_string());
    }
    let find = |pred: &dyn Fn(&Value) -> bool| lines.iter().find(|l| pred(l)).cloned();
    let request = find(&|l| l["message"] == "request" && l["request_id"] == "flat-check-1")
        .expect("the request's line");
    assert_eq!(request["status"], 200);
    assert_eq!(request["path"], "/health/live");
    assert!(request["client_ip"].is_string(), "{request}");
    let login = find(&|l| l["message"] == "login failed").expect("a failed login line");
    assert_eq!(login["username"], "erin");
    assert_eq!(login["outcome"], "bad_credentials");
    assert!(!log.contains("not-her-password"));
    let ended = find(&|l| l["message"] == "generation ended").expect("the generation's line");
    assert_eq!(ended["outcome"], "completed", "{ended}");
    assert_eq!(ended["request_id"], "ws-conn-7", "{ended}");
    assert!(ended["session_id"].is_string() && ended["message_id"].is_string());
    assert!(ended["tokens"].as_u64().unwrap() > 0);
    assert!(ended["ttft_ms"].is_u64() && ended["duration_ms"].is_u64());
    assert_eq!(ended["upstream"], "ok");
    let connected = find(&|l| l["message"] == "websocket connected").expect("connected");
    assert_eq!(connected["request_id"], "ws-conn-7");
}

/// A TCP proxy to `target` that forwards until `cut`, then holds every
/// connection (old and new) open and never forwards another byte: a store
/// that stops answering without closing anything.
async fn stalling_proxy(target: String) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let cutting = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(forward(cr, sw, cutting.clone()));
            tokio::spawn(forward(sr, cw, cutting.clone()));
        }
    });
    (format!("redis://{addr}"), cut)
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Hold both halves: the peer sees an open, silent connection.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn readiness_is_503_when_the_session_store_stops_answering() {
    let url = common::redis::redis_url();
    if !common::redis::redis_answers(&url).await {
        common::redis::skip_without_redis(&url, "the session store's readiness");
        return;
    }
    let target = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let (proxied, cut) = stalling_proxy(target).await;
    let prefix = format!("obs-ready-{}", uuid_like());
    let app = spawn_app(&[
        ("REDIS_URL", &proxied),
        ("REDIS_KEY_PREFIX", &prefix),
        ("HEALTH_PROBE_INTERVAL", "200ms"),
    ])
    .await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["sessions"], "ok", "{ready}");

    cut.store(true, Ordering::SeqCst);
    // The next probe gives up after 2 s; meanwhile every answer is immediate.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    let body = loop {
        let started = Instant::now();
        let resp = client.get(app.url("/health/ready")).send().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "readiness waited {:?} on the store",
            started.elapsed()
        );
        if resp.status() == 503 {
            break resp.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "readiness never turned 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["sessions"], "unavailable", "{body}");
    assert_eq!(body["checks"]["users"], "ok", "{body}");
    // /health keeps its contract: it is about the user store, which answers.
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200);
    cut.store(false, Ordering::SeqCst);
    let _ = common::redis::delete_prefix(&url, &prefix).await;
}

/// A name part unique to this run.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
