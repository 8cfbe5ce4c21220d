//! Access beyond the password, against the real server: WebSocket tickets,
//! the `bearer.` subprotocol, refresh rotation and reuse detection, logout
//! and logout-all closing open sockets, a socket's authority ending with its
//! token, token time claims, case-insensitive usernames and closed
//! registration. The last tests run two binaries on the local Redis.

use crate::common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{spawn_app, TestApp, WsClient, TEST_SECRET};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

// ------------------------------------------------------------- helpers

/// Registers `name` and returns the whole body (token, refreshToken, user).
async fn register(app: &TestApp, name: &str) -> Value {
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn login(app: &TestApp, name: &str) -> Value {
    let (status, body) = app
        .post(
            "/api/auth/login",
            json!({"username": name, "password": "password123"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .to_owned()
}

/// `POST path` with a Bearer token and an optional JSON body.
async fn post_bearer(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn ticket(app: &TestApp, token: &str) -> String {
    let (status, body) = post_bearer(app, "/api/auth/ws-ticket", token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expiresInSeconds"], 30, "{body}");
    text(&body, "ticket")
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (u16, Value) {
    app.post("/api/auth/refresh", json!({"refreshToken": refresh_token}))
        .await
}

/// Tries to open `/ws{query}` and returns the refusal's status and JSON body.
async fn refusal(app: &TestApp, query: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(app.ws_url(query)).await {
        Ok(_) => panic!("connection {query} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Reads until the server closes, and returns the `error` codes it sent
/// before and the close code.
async fn closed_with(ws: &mut WsClient, within: Duration) -> (Vec<String>, Option<u16>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    let mut codes = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await {
            Err(_) => panic!("not closed within {within:?}; errors so far {codes:?}"),
            Ok(None) | Ok(Some(Err(_))) => return (codes, None),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (codes, frame.map(|f| u16::from(f.code)))
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    codes.push(text(&v, "code"));
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A token signed with the test secret, with the given claims.
fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ------------------------------------------------------------- tickets

#[tokio::test]
async fn a_ticket_opens_one_socket_once() {
    let app = spawn_app(&[]).await;
    let token = text(&register(&app, "alice").await, "token");
    let ticket = ticket(&app, &token).await;
    assert!(!ticket.contains(&token), "a ticket is not the token");
    let (_ws, hello) = app.connect_query(&format!("?ticket={ticket}")).await;
    assert_eq!(hello["user"]["username"], "alice");

    let (status, body) = refusal(&app, &format!("?ticket={ticket}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_ticket"))
    );
    let (status, body) = refusal(&app, "?ticket=wst_not-a-ticket").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_ticket"))
    );
    // A ticket is the only credential looked at when given.
    let (status, body) = refusal(&app, &format!("?ticket={ticket}&token={token}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_ticket"))
    );
}

#[tokio::test]
async fn a_ticket_expires_unused() {
    let app = spawn_app(&[("WS_TICKET_TTL", "1s")]).await;
    let token = text(&register(&app, "bob").await, "token");
    let (status, body) = post_bearer(&app, "/api/auth/ws-ticket", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["expiresInSeconds"], 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = refusal(&app, &format!("?ticket={}", text(&body, "ticket"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_ticket"))
    );
}

#[tokio::test]
async fn buying_a_ticket_needs_a_valid_bearer_token_and_says_why_as_json() {
    let app = spawn_app(&[]).await;
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/ws-ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "missing_token");
    let (status, body) = post_bearer(&app, "/api/auth/ws-ticket", "garbage", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
}

#[tokio::test]
async fn the_token_may_ride_in_the_subprotocol_and_is_answered_with_chatbot_v1() {
    let app = spawn_app(&[]).await;
    let token = text(&register(&app, "carol").await, "token");
    let mut request = app.ws_url("").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("chatbot.v1, bearer.{token}")).unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chatbot.v1"),
        "the token is never echoed back"
    );
    let mut client = WsClient { ws };
    assert_eq!(client.recv().await["type"], "connected");

    let mut bad = app.ws_url("").into_client_request().unwrap();
    bad.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("chatbot.v1, bearer.nope"),
    );
    assert_eq!(app.connect_refused_status(bad).await, 401);
}

// ------------------------------------------------------------- refresh

#[tokio::test]
async fn refresh_rotates_the_grace_repeats_and_a_late_reuse_revokes_the_family() {
    let app = spawn_app(&[("REFRESH_REUSE_GRACE", "1s")]).await;
    let registered = register(&app, "dave").await;
    let first = text(&registered, "refreshToken");

    let (status, rotated) = refresh(&app, &first).await;
    assert_eq!(status, 200, "{rotated}");
    for field in [
        "token",
        "expiresIn",
        "expiresInSeconds",
        "refreshToken",
        "user",
    ] {
        assert!(!rotated[field].is_null(), "{field} missing: {rotated}");
    }
    let second = text(&rotated, "refreshToken");
    assert_ne!(second, first);
    assert_eq!(app.verify_bearer(&text(&rotated, "token")).await.0, 200);

    // Two tabs refreshing at once: the same successor.
    let (status, again) = refresh(&app, &first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(text(&again, "refreshToken"), second);

    // After the grace, the old token is a reuse: refused, and its family dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    let (status, body) = refresh(&app, &second).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );

    // Another login is another family, untouched.
    let fresh = text(&login(&app, "dave").await, "refreshToken");
    assert_eq!(refresh(&app, &fresh).await.0, 200);
    let (status, body) = refresh(&app, "rt_garbage").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
}

// ------------------------------------------------------------- revocation

#[tokio::test]
async fn logout_revokes_both_tokens_and_closes_the_socket_with_4001() {
    let app = spawn_app(&[]).await;
    let body = register(&app, "erin").await;
    let (token, refresh_token) = (text(&body, "token"), text(&body, "refreshToken"));
    let (mut ws, _) = app.connect(&token).await;
    let other = text(&login(&app, "erin").await, "token");

    let (status, _) = post_bearer(
        &app,
        "/api/auth/logout",
        &token,
        Some(json!({"refreshToken": refresh_token})),
    )
    .await;
    assert_eq!(status, 204);

    let (codes, close) = closed_with(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close, Some(4001));
    assert_eq!(codes, ["token_revoked"]);
    let (status, body) = app.verify_bearer(&token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );
    let (status, body) = refusal(&app, &format!("?token={token}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );
    assert_eq!(refresh(&app, &refresh_token).await.0, 401);
    // Only that token: the user's other login goes on.
    assert_eq!(app.verify_bearer(&other).await.0, 200);
}

#[tokio::test]
async fn logout_all_revokes_every_earlier_token_node_ones_included() {
    let app = spawn_app(&[]).await;
    let body = register(&app, "frank").await;
    let user_id = text(&body["user"], "id");
    // As the Node server signed them: `userId`, no `jti`.
    let node_token = signed(&json!({
        "userId": user_id, "username": "frank", "iat": now() - 10, "exp": now() + 3600
    }));
    assert_eq!(app.verify_bearer(&node_token).await.0, 200);
    let (mut ws, _) = app.connect(&node_token).await;
    let second = login(&app, "frank").await;

    let (status, _) =
        post_bearer(&app, "/api/auth/logout-all", &text(&second, "token"), None).await;
    assert_eq!(status, 204);
    let (codes, close) = closed_with(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(
        (codes, close),
        (vec!["token_revoked".to_owned()], Some(4001))
    );
    for token in [&node_token, &text(&body, "token"), &text(&second, "token")] {
        let (status, body) = app.verify_bearer(token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_revoked"))
        );
    }
    for refresh_token in [text(&body, "refreshToken"), text(&second, "refreshToken")] {
        assert_eq!(refresh(&app, &refresh_token).await.0, 401);
    }
    // Logging in again afterwards works.
    let after = login(&app, "frank").await;
    assert_eq!(app.verify_bearer(&text(&after, "token")).await.0, 200);
}

#[tokio::test]
async fn an_expired_token_closes_its_socket_unless_an_auth_message_renewed_it() {
    let app = spawn_app(&[("JWT_EXPIRES_IN", "3")]).await;
    let first = text(&register(&app, "gina").await, "token");
    // A later token lives at least a second longer than the first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = text(&login(&app, "gina").await, "token");
    let (mut plain, _) = app.connect(&first).await;
    let (mut renewed, _) = app.connect(&first).await;

    renewed
        .send_json(json!({"type": "auth", "token": later}))
        .await;
    let ok = renewed.recv().await;
    assert_eq!(ok["type"], "authenticated", "{ok}");
    // Another user's token does not extend this socket.
    let stranger = text(&register(&app, "henry").await, "token");
    renewed
        .send_json(json!({"type": "auth", "token": stranger}))
        .await;
    let refused = renewed.recv().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_token"))
    );

    let (codes, close) = closed_with(&mut plain, Duration::from_secs(5)).await;
    assert_eq!(
        (codes, close),
        (vec!["token_expired".to_owned()], Some(4001))
    );
    // The first token has expired, yet the renewed socket still answers.
    renewed.send_json(json!({"type": "ping"})).await;
    assert_eq!(renewed.recv().await["type"], "pong");
    let (codes, close) = closed_with(&mut renewed, Duration::from_secs(5)).await;
    assert_eq!(
        (codes, close),
        (vec!["token_expired".to_owned()], Some(4001))
    );
}

/// Sleeps until the wall clock is `ms` milliseconds into a second.
async fn until_millis_into_a_second(ms: i64) {
    let into = chrono::Utc::now().timestamp_subsec_millis() as i64;
    let wait = (ms - into).rem_euclid(1000);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

/// A client plans its refresh from `expiresInSeconds`: a token issued late
/// in a second and first used in the next one still holds its socket that
/// long (it once closed up to a second early, with 4001, before the client's
/// refresh came).
#[tokio::test]
async fn a_socket_holds_its_token_for_the_whole_expires_in_seconds() {
    let app = spawn_app(&[("JWT_EXPIRES_IN", "2")]).await;
    let registered = register(&app, "olga").await;
    // Refreshing hashes no password, so the token is issued when asked.
    until_millis_into_a_second(880).await;
    let (status, fresh) = refresh(&app, &text(&registered, "refreshToken")).await;
    let issued = std::time::Instant::now();
    assert_eq!(
        (status, fresh["expiresInSeconds"].as_u64()),
        (200, Some(2)),
        "{fresh}"
    );
    until_millis_into_a_second(100).await;
    let (mut ws, _) = app.connect(&text(&fresh, "token")).await;

    let (codes, close) = closed_with(&mut ws, Duration::from_secs(5)).await;
    let held = issued.elapsed();
    assert_eq!(
        (codes, close),
        (vec!["token_expired".to_owned()], Some(4001))
    );
    assert!(
        held >= Duration::from_millis(1950),
        "the socket closed {held:?} after its token was issued for 2 s"
    );
}

// ------------------------------------------------------------- claims, names, registration

#[tokio::test]
async fn tokens_not_yet_valid_or_issued_in_the_future_are_refused() {
    let app = spawn_app(&[]).await;
    let body = register(&app, "ivan").await;
    let id = text(&body["user"], "id");
    let claims = |extra: Value| {
        let mut c = json!({"sub": id, "username": "ivan", "iat": now(), "exp": now() + 7200});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        signed(&c)
    };
    for token in [
        claims(json!({"nbf": now() + 3600})),
        claims(json!({"iat": now() + 3600})),
    ] {
        let (status, body) = app.verify_bearer(&token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    assert_eq!(
        app.verify_bearer(&claims(json!({"nbf": now() - 5})))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn signed_tokens_living_longer_than_configured_are_refused_on_rest_and_ws() {
    let app = spawn_app(&[("JWT_EXPIRES_IN", "1h")]).await;
    let body = register(&app, "judy").await;
    let id = text(&body["user"], "id");
    let node_style =
        signed(&json!({"userId": id, "username": "judy", "iat": now(), "exp": now() + 3600}));
    assert_eq!(app.verify_bearer(&node_style).await.0, 200);
    for exp in [now() + 7200, 1_000_000_000_000_000_000, i64::MAX] {
        let token = signed(&json!({"sub": id, "username": "judy", "iat": now(), "exp": exp}));
        let (status, body) = app.verify_bearer(&token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "exp {exp}"
        );
        let status = app
            .connect_refused_status(app.ws_url(&format!("?token={token}")))
            .await;
        assert_eq!(status, 401, "exp {exp} on the upgrade");
    }
}

#[tokio::test]
async fn a_username_is_taken_in_every_capitalisation_and_login_stays_exact() {
    let app = spawn_app(&[]).await;
    register(&app, "alice").await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "Alice", "email": "other@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("username_taken"))
    );
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": "Alice", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 401);
    login(&app, "alice").await;
}

#[tokio::test]
async fn closed_registration_answers_403_and_logins_go_on() {
    let open = spawn_app(&[]).await;
    register(&open, "judy").await;
    let closed =
        common::spawn_app_at(open.sqlite_path.clone(), &[("ALLOW_REGISTRATION", "false")]).await;
    let (status, body) = closed
        .post(
            "/api/auth/register",
            json!({"username": "mallory", "email": "m@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("registration_closed"))
    );
    // Closed before any field is judged: nothing about the rules leaks.
    let (status, _) = closed
        .post(
            "/api/auth/register",
            json!({"username": "x", "email": "bad", "password": "1"}),
        )
        .await;
    assert_eq!(status, 403);
    login(&closed, "judy").await;
}

// ------------------------------------------------------------- two instances

#[tokio::test]
async fn a_ticket_from_one_instance_opens_a_socket_on_the_other_once() {
    let Some(pair) = Cluster::start(2, "access", &[]).await else {
        return;
    };
    let [a, b] = &pair.nodes[..] else {
        unreachable!("two instances")
    };
    let token = text(&register(a, "kate").await, "token");
    let ticket = ticket(a, &token).await;
    let (_ws, hello) = b.connect_query(&format!("?ticket={ticket}")).await;
    assert_eq!(hello["user"]["username"], "kate");
    for node in [a, b] {
        let (status, body) = refusal(node, &format!("?ticket={ticket}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_ticket"))
        );
    }
}

#[tokio::test]
async fn a_logout_on_one_instance_closes_the_socket_on_the_other() {
    let Some(pair) = Cluster::start(2, "access", &[]).await else {
        return;
    };
    let [a, b] = &pair.nodes[..] else {
        unreachable!("two instances")
    };
    let body = register(a, "liam").await;
    let token = text(&body, "token");
    let (mut on_b, _) = b.connect(&token).await;
    let (status, _) = post_bearer(a, "/api/auth/logout", &token, None).await;
    assert_eq!(status, 204);
    let (codes, close) = closed_with(&mut on_b, Duration::from_secs(5)).await;
    assert_eq!(
        (codes, close),
        (vec!["token_revoked".to_owned()], Some(4001))
    );
    assert_eq!(b.verify_bearer(&token).await.0, 401);

    // Refresh tokens are shared too: rotated on A, the same successor on B.
    let refresh_token = text(&login(b, "liam").await, "refreshToken");
    let (status, on_a) = refresh(a, &refresh_token).await;
    assert_eq!(status, 200);
    let (status, again_on_b) = refresh(b, &refresh_token).await;
    assert_eq!(status, 200);
    assert_eq!(on_a["refreshToken"], again_on_b["refreshToken"]);
}
