//! The abuse limits against the real server: each is hit, answers 429 /
//! `rate_limited` with when to retry, and recovers once its (short, test)
//! window has passed; and, with two instances of the binary sharing the local
//! Redis, one instance's count is the other's.

use crate::common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{spawn_app, TestApp, WsClient};
use serde_json::{json, Value};

/// A POST with optional `X-Forwarded-For`: status, `Retry-After`, body.
async fn post(
    app: &TestApp,
    path: &str,
    body: Value,
    forwarded: Option<&str>,
) -> (u16, Option<u64>, Value) {
    let mut req = reqwest::Client::new().post(app.url(path)).json(&body);
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

async fn login(app: &TestApp, name: &str, password: &str) -> (u16, Option<u64>, Value) {
    let body = json!({"username": name, "password": password});
    post(app, "/api/auth/login", body, None).await
}

fn assert_limited(got: &(u16, Option<u64>, Value)) {
    let (status, retry, body) = got;
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
}

/// Tries to open a socket; the refusal's status and `Retry-After` if refused.
async fn try_connect(app: &TestApp, token: &str) -> Result<WsClient, (u16, Option<String>)> {
    match tokio_tungstenite::connect_async(app.ws_url(&format!("?token={token}"))).await {
        Ok((ws, _)) => {
            let mut client = WsClient { ws };
            assert_eq!(client.recv().await["type"], "connected");
            Ok(client)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Connects, retrying for a few seconds while a cap has not yet seen a
/// closed socket go (its slot is released after the close handshake).
async fn connect_eventually(app: &TestApp, token: &str) -> WsClient {
    for _ in 0..50 {
        if let Ok(client) = try_connect(app, token).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cap never let a new connection in");
}

#[tokio::test]
async fn login_failures_per_account_and_address_block_even_the_right_password_then_recover() {
    let app = spawn_app(&[
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3"),
        ("LOGIN_FAILURE_WINDOW", "2s"),
    ])
    .await;
    app.register("alice").await;
    for name in ["alice", "ghost"] {
        for _ in 0..3 {
            assert_eq!(login(&app, name, "wrong-password").await.0, 401);
        }
        // Known or unknown, the account is throttled alike.
        assert_limited(&login(&app, name, "password123").await);
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(login(&app, "alice", "password123").await.0, 200);

    // A success wipes this address's failures for the account.
    for _ in 0..2 {
        assert_eq!(login(&app, "alice", "wrong-password").await.0, 401);
    }
    assert_eq!(login(&app, "alice", "password123").await.0, 200);
    for _ in 0..3 {
        assert_eq!(login(&app, "alice", "wrong-password").await.0, 401);
    }
    assert_limited(&login(&app, "alice", "password123").await);
}

#[tokio::test]
async fn login_failures_per_address_span_accounts() {
    let app = spawn_app(&[
        ("LOGIN_MAX_FAILURES_PER_IP", "4"),
        ("LOGIN_FAILURE_WINDOW", "2s"),
    ])
    .await;
    app.register("bob").await;
    for i in 0..4 {
        assert_eq!(login(&app, &format!("user{i}"), "wrong-pass").await.0, 401);
    }
    assert_limited(&login(&app, "bob", "password123").await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(login(&app, "bob", "password123").await.0, 200);
}

#[tokio::test]
async fn registrations_and_verifications_per_address_are_limited_and_recover() {
    let app = spawn_app(&[
        ("REGISTER_PER_IP_PER_HOUR", "2"),
        ("REGISTER_WINDOW", "2s"),
        ("VERIFY_PER_IP_PER_MINUTE", "2"),
        ("VERIFY_WINDOW", "2s"),
    ])
    .await;
    let token = app.register("carol").await;
    app.register("dave").await;
    let body = |n: &str| json!({"username": n, "email": format!("{n}@example.com"), "password": "password123"});
    assert_limited(&post(&app, "/api/auth/register", body("erin"), None).await);
    let verify = json!({ "token": token });
    for _ in 0..2 {
        assert_eq!(
            post(&app, "/api/auth/verify", verify.clone(), None).await.0,
            200
        );
    }
    assert_limited(&post(&app, "/api/auth/verify", verify.clone(), None).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        post(&app, "/api/auth/register", body("erin"), None).await.0,
        201
    );
    assert_eq!(post(&app, "/api/auth/verify", verify, None).await.0, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_app(&[
        ("VERIFY_PER_IP_PER_MINUTE", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
    ])
    .await;
    let token = app.register("frank").await;
    let verify = json!({ "token": token });
    let path = "/api/auth/verify";
    let first = post(&app, path, verify.clone(), Some("198.51.100.1, 10.0.0.5")).await;
    assert_eq!(first.0, 200);
    // The forged first hop changes nothing: the client is the last untrusted one.
    let forged = "1.2.3.4, 198.51.100.1, 10.0.0.5";
    assert_limited(&post(&app, path, verify.clone(), Some(forged)).await);
    let other = post(&app, path, verify.clone(), Some("198.51.100.2")).await;
    assert_eq!(other.0, 200);

    // Without trusted proxies the header is ignored: everyone is the peer.
    let direct = spawn_app(&[("VERIFY_PER_IP_PER_MINUTE", "1")]).await;
    let token = direct.register("grace").await;
    let verify = json!({ "token": token });
    let first = post(
        &direct,
        "/api/auth/verify",
        verify.clone(),
        Some("198.51.100.1"),
    )
    .await;
    assert_eq!(first.0, 200);
    assert_limited(&post(&direct, "/api/auth/verify", verify, Some("198.51.100.2")).await);
}

#[tokio::test]
async fn chats_past_the_rate_get_only_rate_limited_and_store_nothing() {
    let app = spawn_app(&[
        ("CHAT_MESSAGES_PER_MINUTE", "3"),
        ("CHAT_MESSAGES_WINDOW", "3s"),
    ])
    .await;
    let token = app.register("heidi").await;
    let (mut ws, hello) = app.connect(&token).await;
    for i in 0..3 {
        let answer = ws.chat(&format!("question {i}")).await;
        assert!(answer.errors.is_empty());
    }
    ws.send_json(json!({"type": "chat", "content": "one too many", "clientMessageId": "c4"}))
        .await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let wait = refused["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(wait > 0 && wait <= 3000, "{wait}");
    assert!(
        refused.get("seq").is_none(),
        "a refusal takes no seq: {refused}"
    );

    // Nothing of the refused chat was logged.
    let session = hello["sessionId"].as_str().unwrap();
    let events = reqwest::Client::new()
        .get(app.url(&format!("/api/sessions/{session}/events")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let asked = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "user-message")
        .count();
    assert_eq!(asked, 3, "{events}");

    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    let answer = ws.chat("and now?").await;
    assert!(answer.errors.is_empty());
}

#[tokio::test]
async fn concurrent_generations_per_user_are_capped_across_sessions() {
    let app = spawn_app(&[
        ("CHAT_MAX_CONCURRENT_PER_USER", "2"),
        ("ECHO_TOKEN_DELAY", "100ms"),
    ])
    .await;
    let token = app.register("ivan").await;
    let long = "a few words that take a while to echo back";
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(app.connect(&token).await.0);
    }
    for tab in &mut tabs[..2] {
        tab.send_json(json!({"type": "chat", "content": long}))
            .await;
        assert_eq!(tab.recv().await["type"], "user-message");
    }
    tabs[2]
        .send_json(json!({"type": "chat", "content": long}))
        .await;
    let refused = tabs[2].recv().await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["retryAfterMs"].as_u64().is_some());

    // Once one answer ends, its slot is free again.
    tabs[0].collect_stream().await;
    let answer = tabs[2].chat("now").await;
    assert!(answer.errors.is_empty());
}

#[tokio::test]
async fn connections_per_user_and_per_address_are_refused_before_the_upgrade() {
    let app = spawn_app(&[
        ("WS_MAX_CONNECTIONS_PER_USER", "2"),
        ("WS_MAX_CONNECTIONS_PER_IP", "3"),
    ])
    .await;
    let judy = app.register("judy").await;
    let ken = app.register("ken").await;
    let mut first = app.connect(&judy).await.0;
    let _second = app.connect(&judy).await.0;
    let (status, retry) = try_connect(&app, &judy).await.err().expect("third refused");
    assert_eq!(status, 429);
    assert!(retry.is_some(), "Retry-After is set");

    // Another user still has room, up to the address's cap.
    let _kens = app.connect(&ken).await.0;
    assert_eq!(try_connect(&app, &ken).await.err().expect("cap").0, 429);

    // A closed socket gives its place back.
    first.ws.close(None).await.unwrap();
    let _again = connect_eventually(&app, &judy).await;
}

#[tokio::test]
async fn opening_one_session_too_many_evicts_the_least_recently_active() {
    let app = spawn_app(&[("SESSIONS_MAX_PER_USER", "2")]).await;
    let token = app.register("leo").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (mut ws, hello) = app.connect(&token).await;
        ids.push(hello["sessionId"].as_str().unwrap().to_owned());
        ws.ws.close(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = reqwest::Client::new()
        .get(app.url("/api/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let listed: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);
    let (_ws, hello) = app
        .connect_query(&format!("?token={token}&sessionId={}", ids[0]))
        .await;
    assert_eq!(hello["resumed"], false, "the oldest was evicted");
}

#[tokio::test]
async fn websocket_info_lists_the_limits_and_the_code() {
    let app = spawn_app(&[
        ("WS_MAX_CONNECTIONS_PER_USER", "7"),
        ("CHAT_MESSAGES_PER_MINUTE", "9"),
    ])
    .await;
    let (status, info) = app.get("/api/websocket/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["limits"]["maxConnectionsPerUser"], 7);
    assert_eq!(info["limits"]["chatsPerWindow"], 9);
    assert_eq!(info["limits"]["chatWindowSeconds"], 60);
    assert_eq!(info["limits"]["maxConnectionsPerIp"], 0, "off in tests");
    for list in ["upgrade", "messages"] {
        let codes = info["errorCodes"][list].as_array().unwrap();
        assert!(codes.contains(&json!("rate_limited")), "{list}: {codes:?}");
    }
}

// ------------------------------------------------------- two instances

#[tokio::test]
async fn two_instances_share_every_limit_through_redis() {
    let Some(pair) = Cluster::start(
        2,
        "limits",
        &[
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2"),
            ("CHAT_MESSAGES_PER_MINUTE", "2"),
            ("WS_MAX_CONNECTIONS_PER_USER", "2"),
        ],
    )
    .await
    else {
        return;
    };
    let (a, b) = (&pair.nodes[0].app, &pair.nodes[1].app);
    let token = a.register("mallory").await;

    assert_eq!(login(a, "mallory", "wrong-pass").await.0, 401);
    assert_eq!(login(b, "mallory", "wrong-pass").await.0, 401);
    assert_limited(&login(a, "mallory", "password123").await);

    let mut on_a = a.connect(&token).await.0;
    let mut on_b = b.connect(&token).await.0;
    assert_eq!(try_connect(a, &token).await.err().expect("cap").0, 429);
    assert_eq!(try_connect(b, &token).await.err().expect("cap").0, 429);

    assert!(on_a.chat("one").await.errors.is_empty());
    assert!(on_b.chat("two").await.errors.is_empty());
    on_a.send_json(json!({"type": "chat", "content": "three"}))
        .await;
    assert_eq!(on_a.recv().await["code"], "rate_limited");
}

#[tokio::test]
async fn a_crashed_instance_does_not_hold_its_connections_for_ever() {
    let Some(mut pair) = Cluster::start(
        2,
        "limits",
        &[
            ("WS_MAX_CONNECTIONS_PER_USER", "1"),
            // A connection's slot lives three ping intervals without renewal.
            ("WS_PING_INTERVAL", "1s"),
        ],
    )
    .await
    else {
        return;
    };
    let token = pair.nodes[0].app.register("nina").await;
    let _held = pair.nodes[1].app.connect(&token).await.0;
    let a = &pair.nodes[0].app;
    assert_eq!(try_connect(a, &token).await.err().expect("cap").0, 429);
    pair.nodes[1].child.kill().await.unwrap();
    // The killed instance never released its slot; its lease runs out.
    let a = &pair.nodes[0].app;
    let mut admitted = false;
    for _ in 0..80 {
        if try_connect(a, &token).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted,
        "the dead instance's connection was never forgotten"
    );
}

/// `POST /api/auth/ws-ticket` with a Bearer token: status and `Retry-After`.
async fn buy_ticket(app: &TestApp, token: &str) -> (u16, Option<u64>, Value) {
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/ws-ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tickets_per_user_are_limited_and_recover() {
    let app = spawn_app(&[
        ("WS_TICKETS_PER_USER_PER_MINUTE", "2"),
        ("WS_TICKETS_WINDOW", "2s"),
    ])
    .await;
    let token = app.register("tina").await;
    assert_eq!(buy_ticket(&app, &token).await.0, 200);
    assert_eq!(buy_ticket(&app, &token).await.0, 200);
    assert_limited(&buy_ticket(&app, &token).await);
    // Another user has a rate of their own.
    let other = app.register("toby").await;
    assert_eq!(buy_ticket(&app, &other).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(buy_ticket(&app, &token).await.0, 200, "the window passed");
}

#[tokio::test]
async fn a_user_at_the_connection_cap_is_refused_a_ticket_as_json() {
    let app = spawn_app(&[("WS_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let token = app.register("uma").await;
    assert_eq!(buy_ticket(&app, &token).await.0, 200, "room before");
    let mut open = app.connect(&token).await.0;
    assert_limited(&buy_ticket(&app, &token).await);
    open.ws.close(None).await.unwrap();
    for _ in 0..50 {
        if buy_ticket(&app, &token).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the closed socket never gave its place back");
}
