//! The AI upstream surviving a bad minute, end to end through the real
//! server: retries before the first token, the circuit breaker as `/health`
//! shows it, the `retryable` hint on the socket and in the event log, an
//! OpenAI-compatible provider and a fallback, against loopback stubs.

use crate::common;

use std::time::{Duration, Instant};

use common::{spawn_app, spawn_process, stub_reply, TestApp, Upstream};
use serde_json::Value;

/// A port nothing listens on.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn events_of(app: &TestApp, token: &str, session: &str) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/sessions/{session}/events")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

fn circuits(health: &Value) -> Vec<(String, String, String)> {
    health["checks"]["upstreams"]
        .as_array()
        .expect("checks.upstreams")
        .iter()
        .map(|u| {
            let field = |k: &str| u[k].as_str().unwrap().to_owned();
            (field("role"), field("provider"), field("circuit"))
        })
        .collect()
}

fn primary(circuit: &str) -> Vec<(String, String, String)> {
    vec![("primary".into(), "fastapi".into(), circuit.into())]
}

#[tokio::test]
async fn ai_errors_say_whether_trying_again_can_help_on_the_socket_and_over_rest() {
    let upstream = Upstream::start().await;
    let app = spawn_app(&[("FASTAPI_URL", &upstream.url), ("AI_RETRY_BACKOFF", "10ms")]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;

    let refused = client.chat("status:401").await;
    assert_eq!(refused.status, "failed");
    assert_eq!(refused.errors[0]["code"], "ai_unavailable");
    assert_eq!(
        refused.errors[0]["retryable"], false,
        "{}",
        refused.errors[0]
    );

    let overloaded = client.chat("status:503").await;
    assert_eq!(overloaded.errors[0]["code"], "ai_unavailable");
    assert_eq!(overloaded.errors[0]["retryable"], true);
    // The first try and AI_MAX_RETRIES (2) more; the 401 was tried once.
    assert_eq!(upstream.request_count(), 1 + 3);

    let session = hello["sessionId"].as_str().unwrap();
    let logged: Vec<Value> = events_of(&app, &token, session)
        .await
        .into_iter()
        .filter(|e| e["type"] == "error")
        .collect();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0]["retryable"], false);
    assert_eq!(logged[1]["retryable"], true);
    assert_eq!(logged[1]["seq"], overloaded.errors[0]["seq"]);
}

#[tokio::test]
async fn a_flaky_upstream_is_retried_and_the_answer_arrives_once() {
    let upstream = Upstream::start().await;
    let app = spawn_app(&[("FASTAPI_URL", &upstream.url), ("AI_RETRY_BACKOFF", "10ms")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("flaky:2").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    assert!(ex.errors.is_empty());
    assert_eq!(ex.text(), stub_reply("flaky:2"));
    assert_eq!(upstream.request_count(), 3);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let upstream = Upstream::start().await;
    let app = spawn_app(&[("FASTAPI_URL", &upstream.url)]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let started = Instant::now();
    let ex = client.chat("busy:1").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_upstream_and_one_probe_closes_it() {
    let upstream = Upstream::start().await;
    let app = spawn_app(&[
        ("FASTAPI_URL", &upstream.url),
        ("AI_MAX_RETRIES", "0"),
        ("AI_BREAKER_FAILURES", "2"),
        ("AI_BREAKER_COOLDOWN", "1s"),
    ])
    .await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    assert_eq!(circuits(&app.get("/health").await.1), primary("closed"));

    upstream.set_down(Some(503));
    for _ in 0..2 {
        assert_eq!(client.chat("anyone?").await.status, "failed");
    }
    assert_eq!(upstream.request_count(), 2);
    assert_eq!(circuits(&app.get("/health").await.1), primary("open"));

    // Open: the chat fails at once and the upstream is left alone.
    let started = Instant::now();
    let skipped = client.chat("still there?").await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(skipped.errors[0]["code"], "ai_unavailable");
    assert_eq!(skipped.errors[0]["retryable"], true);
    assert_eq!(upstream.request_count(), 2);

    upstream.set_down(None);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(circuits(&app.get("/health").await.1), primary("half_open"));
    let ex = client.chat("back?").await;
    assert_eq!(ex.status, "completed");
    assert_eq!(upstream.request_count(), 3, "one probe");
    assert_eq!(circuits(&app.get("/health").await.1), primary("closed"));
}

#[tokio::test]
async fn an_openai_fallback_answers_when_the_primary_is_unreachable() {
    let upstream = Upstream::start().await;
    let app = spawn_app(&[
        ("FASTAPI_URL", &closed_port_url()),
        ("AI_RETRY_BACKOFF", "10ms"),
        ("AI_FALLBACK_PROVIDER", "openai"),
        ("AI_FALLBACK_OPENAI_BASE_URL", &upstream.openai_url()),
        ("AI_FALLBACK_OPENAI_MODEL", "backup-model"),
        ("AI_FALLBACK_OPENAI_API_KEY", "sk-fallback-key"),
    ])
    .await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("hello").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    assert_eq!(ex.text(), stub_reply("hello"));
    let asked = upstream.last_request();
    assert_eq!(asked["model"], "backup-model");
    assert_eq!(asked["stream"], true);
    assert_eq!(asked["messages"][0]["content"], "hello");
    assert_eq!(
        upstream.authorizations.lock().unwrap().as_slice(),
        [Some("Bearer sk-fallback-key".to_owned())]
    );
    let (_, health) = app.get("/health").await;
    assert_eq!(
        circuits(&health),
        [
            ("primary".into(), "fastapi".into(), "closed".into()),
            ("fallback".into(), "openai".into(), "closed".into())
        ]
    );
}

#[tokio::test]
async fn the_openai_key_reaches_the_upstream_and_no_log_line() {
    const KEY: &str = "sk-live-0123456789SECRETKEYabcdef";
    let upstream = Upstream::start().await;
    let app = spawn_process(&[
        // The most verbose level: HTTP client internals included.
        ("RUST_LOG", "trace"),
        ("AI_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", &upstream.openai_url()),
        ("OPENAI_MODEL", "gpt-test"),
        ("OPENAI_API_KEY", KEY),
        ("AI_SYSTEM_PROMPT", "Be brief."),
        ("AI_RETRY_BACKOFF", "10ms"),
    ])
    .await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("hello").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    assert_eq!(ex.text(), stub_reply("hello"));
    let asked = upstream.last_request();
    assert_eq!(asked["model"], "gpt-test");
    assert_eq!(asked["messages"][0]["role"], "system");
    // A refusal and an outage log their errors too.
    assert_eq!(client.chat("status:401").await.status, "failed");
    assert_eq!(client.chat("status:503").await.status, "failed");
    assert!(upstream
        .authorizations
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.as_deref() == Some(&format!("Bearer {KEY}"))));

    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = app.log_text();
    assert!(
        log.contains("AI: upstream") && log.contains("openai"),
        "{log}"
    );
    assert!(log.contains("retrying"), "the retries were logged");
    assert!(
        !log.contains("SECRETKEY"),
        "the API key leaked into the log"
    );
}
