//! The REST contract, driven over real HTTP against the real server binary.

use crate::common;

use common::{is_iso_millis, spawn_app, TEST_SECRET};
use serde_json::{json, Value};

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only error and message: {body}"
    );
}

#[tokio::test]
async fn register_returns_a_token_and_a_user_without_secrets() {
    let app = spawn_app(&[]).await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "alice", "email": "Alice@Example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["token"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(body["expiresIn"], "24h");
    assert_eq!(body["expiresInSeconds"], 86_400);
    let user = &body["user"];
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["isActive"], true);
    assert_eq!(user["lastLogin"], Value::Null);
    assert!(is_iso_millis(user["createdAt"].as_str().unwrap()));
    assert_eq!(user["id"].as_str().unwrap().len(), 24);
    let text = body.to_string();
    assert!(
        !text.contains("password123") && !text.contains("argon2"),
        "{text}"
    );
    assert!(user.get("password").is_none());
}

#[tokio::test]
async fn register_rejects_invalid_input_with_specific_codes() {
    let app = spawn_app(&[]).await;
    let cases = [
        (
            json!({"username": "ab", "email": "a@example.com", "password": "password123"}),
            "invalid_username",
        ),
        (
            json!({"username": "bad name", "email": "a@example.com", "password": "password123"}),
            "invalid_username",
        ),
        (
            json!({"username": &"x".repeat(33), "email": "a@example.com", "password": "password123"}),
            "invalid_username",
        ),
        (
            json!({"username": "carol", "email": "not-an-email", "password": "password123"}),
            "invalid_email",
        ),
        (
            json!({"username": "carol", "email": "c@example.com", "password": "short"}),
            "invalid_password",
        ),
        (
            json!({"username": "carol", "email": "c@example.com", "password": "x".repeat(129)}),
            "invalid_password",
        ),
        (
            json!({"username": "carol", "email": "c@example.com"}),
            "invalid_request",
        ),
        (
            json!({"username": ["x"], "email": "c@example.com", "password": "password123"}),
            "invalid_request",
        ),
        (
            json!({"username": null, "email": "c@example.com", "password": "password123"}),
            "invalid_request",
        ),
        (json!(["not", "an", "object"]), "invalid_request"),
    ];
    for (body, code) in cases {
        let (status, resp) = app.post("/api/auth/register", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_error(&resp, code);
    }
    // Malformed JSON.
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_error(&resp.json().await.unwrap(), "invalid_request");
    // Nothing was created along the way.
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": "carol", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn duplicate_username_or_email_is_a_409() {
    let app = spawn_app(&[]).await;
    app.register("alice").await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "alice", "email": "other@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_error(&body, "username_taken");
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "alice2", "email": "ALICE@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_error(&body, "email_taken");
}

#[tokio::test]
async fn login_by_username_or_email_updates_last_login() {
    let app = spawn_app(&[]).await;
    app.register("bob").await;
    let (status, first) = app
        .post(
            "/api/auth/login",
            json!({"username": "bob", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let first_login = first["user"]["lastLogin"].as_str().unwrap().to_owned();
    assert!(is_iso_millis(&first_login));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, second) = app
        .post(
            "/api/auth/login",
            json!({"username": "Bob@Example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["user"]["username"], "bob");
    assert!(second["user"]["lastLogin"].as_str().unwrap() > first_login.as_str());
    // The stored value moved too: verify reads the user back from the store.
    let (_, verified) = app
        .post("/api/auth/verify", json!({"token": second["token"]}))
        .await;
    assert_eq!(verified["user"]["lastLogin"], second["user"]["lastLogin"]);
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_account_look_identical() {
    let app = spawn_app(&[]).await;
    app.register("carol").await;
    app.register("dave").await;
    // Deactivate dave directly in the real store.
    let db = rusqlite::Connection::open(&app.sqlite_path).unwrap();
    db.execute("UPDATE users SET is_active = 0 WHERE username = 'dave'", [])
        .unwrap();
    drop(db);

    let mut bodies = Vec::new();
    for (user, pass) in [
        ("carol", "wrong-password"),
        ("nobody", "password123"),
        ("dave", "password123"),
        ("", ""),
    ] {
        let (status, body) = app
            .post(
                "/api/auth/login",
                json!({"username": user, "password": pass}),
            )
            .await;
        assert_eq!(status, 401, "{user}: {body}");
        bodies.push(body);
    }
    assert_error(&bodies[0], "invalid_credentials");
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
}

#[tokio::test]
async fn legacy_bcrypt_users_log_in_and_are_upgraded_to_argon2id() {
    let app = spawn_app(&[]).await;
    app.register("seed").await; // makes sure the schema exists
    let hash = bcrypt::hash("legacy-pass", 4)
        .unwrap()
        .replacen("$2b$", "$2a$", 1);
    let db = rusqlite::Connection::open(&app.sqlite_path).unwrap();
    db.execute(
        "INSERT INTO users (id, username, email, password, created_at, last_login, is_active)
         VALUES ('5f0c1e2d3b4a596877665544', 'legacy', 'legacy@example.com', ?1, '2024-01-01T00:00:00.000Z', NULL, 1)",
        [&hash],
    )
    .unwrap();
    let stored = |db: &rusqlite::Connection| -> String {
        db.query_row(
            "SELECT password FROM users WHERE username = 'legacy'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": "legacy", "password": "not-it"}),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        stored(&db).starts_with("$2a$"),
        "a failed login changes nothing"
    );

    let (status, body) = app
        .post(
            "/api/auth/login",
            json!({"username": "legacy", "password": "legacy-pass"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], "5f0c1e2d3b4a596877665544");
    let upgraded = stored(&db);
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": "legacy", "password": "legacy-pass"}),
        )
        .await;
    assert_eq!(status, 200, "the upgraded hash verifies");
}

fn token_with(claims: Value, alg: jsonwebtoken::Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn verify_accepts_bearer_or_body_and_rejects_bad_tokens() {
    let app = spawn_app(&[]).await;
    let token = app.register("erin").await;
    let client = reqwest::Client::new();

    let (status, body) = app.verify_bearer(&token).await;
    assert_eq!(status, 200);
    assert_eq!(body["valid"], true);
    assert_eq!(body["user"]["username"], "erin");

    let (status, body) = app.post("/api/auth/verify", json!({"token": token})).await;
    assert_eq!((status, &body["valid"]), (200, &json!(true)));

    let resp = client
        .post(app.url("/api/auth/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_error(&resp.json().await.unwrap(), "missing_token");

    let (_, verified) = app.post("/api/auth/verify", json!({"token": token})).await;
    let id = verified["user"]["id"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    let expired = token_with(
        json!({"sub": id, "username": "erin", "iat": now - 100, "exp": now - 10}),
        jsonwebtoken::Algorithm::HS256,
        TEST_SECRET,
    );
    let wrong_key = token_with(
        json!({"sub": id, "username": "erin", "iat": now, "exp": now + 600}),
        jsonwebtoken::Algorithm::HS256,
        "some-other-secret-some-other-secret",
    );
    let hs512 = token_with(
        json!({"sub": id, "username": "erin", "iat": now, "exp": now + 600}),
        jsonwebtoken::Algorithm::HS512,
        TEST_SECRET,
    );
    let no_exp = token_with(
        json!({"sub": id, "username": "erin", "iat": now}),
        jsonwebtoken::Algorithm::HS256,
        TEST_SECRET,
    );
    let alg_none = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none","typ":"JWT"}"#),
            e.encode(json!({"sub": id, "username": "erin", "exp": now + 600}).to_string())
        )
    };
    for (token, code) in [
        (expired.as_str(), "token_expired"),
        (wrong_key.as_str(), "invalid_token"),
        (hs512.as_str(), "invalid_token"),
        (no_exp.as_str(), "invalid_token"),
        (alg_none.as_str(), "invalid_token"),
        ("garbage", "invalid_token"),
    ] {
        let (status, body) = app.verify_bearer(token).await;
        assert_eq!(status, 401, "{code}");
        assert_error(&body, code);
    }
}

#[tokio::test]
async fn health_stats_and_websocket_info() {
    let app = spawn_app(&[]).await;
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["checks"]["database"], "ok");
    assert_eq!(health["checks"]["ai"], "echo");
    assert!(health["uptimeSeconds"].is_u64());

    let (status, stats) = app.get("/api/stats").await;
    assert_eq!(status, 200);
    for key in [
        "activeConnections",
        "activeSessions",
        "totalConnections",
        "totalMessages",
        "escalatedSessions",
    ] {
        assert_eq!(stats[key], 0, "{key}: {stats}");
    }
    assert!(stats["uptimeSeconds"].is_u64());

    let (status, info) = app.get("/api/websocket/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["endpoint"], "/ws");
    assert_eq!(info["limits"]["maxMessageChars"], 10_000);
    assert_eq!(info["limits"]["maxFrameBytes"], 65_536);
    assert_eq!(info["activeConnections"], 0);
    let client_types: Vec<&str> = info["messageTypes"]["client"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        client_types,
        [
            "chat",
            "stop",
            "human-escalation",
            "handoff-cancel",
            "ping",
            "auth",
            "feedback",
            "regenerate",
            "typing",
            "csat"
        ]
    );
    let authentication = info["authentication"].to_string();
    for way in [
        "query:ticket",
        "Sec-WebSocket-Protocol",
        "query:token",
        "Authorization",
    ] {
        assert!(authentication.contains(way), "{way} in {authentication}");
    }
    let closes = info["closeCodes"].to_string();
    assert!(
        closes.contains("4001") && closes.contains("token_revoked"),
        "{closes}"
    );
    assert!(
        closes.contains("4503") && closes.contains("session store unavailable"),
        "{closes}"
    );

    let agent = &info["agentSocket"];
    assert_eq!(agent["endpoint"], "/agent/ws");
    assert_eq!(agent["role"], "agent");
    assert_eq!(
        agent["messageTypes"]["client"],
        json!([
            "claim",
            "agent-message",
            "release",
            "resolve",
            "watch",
            "status",
            "ping",
            "auth",
            "typing"
        ])
    );
    // Whole names: "queue" must not pass on the strength of "handoff-queued".
    let agent_server: Vec<&str> = agent["messageTypes"]["server"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for kind in [
        "queue",
        "conversation-assigned",
        "agent-message",
        "handoff-resolved",
        "typing",
        "handoff-summary",
        "csat",
    ] {
        assert!(agent_server.contains(&kind), "{kind} in {agent_server:?}");
    }
}

#[tokio::test]
async fn health_reports_a_reachable_upstream() {
    let upstream = common::Upstream::start().await;
    let app = spawn_app(&[("FASTAPI_URL", &upstream.url)]).await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["checks"]["ai"], "ok");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_huge_bodies_get_json_errors() {
    let app = spawn_app(&[]).await;
    let resp = reqwest::get(app.url("/no/such/route")).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_error(&resp.json().await.unwrap(), "not_found");

    let resp = reqwest::get(app.url("/api/auth/login")).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_error(&resp.json().await.unwrap(), "method_not_allowed");

    let huge = json!({"username": "x".repeat(100_000), "email": "a@example.com", "password": "password123"});
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/register"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_error(&resp.json().await.unwrap(), "payload_too_large");

    // The same limit holds for a chunked body, which declares no length.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..20).map(|_| Ok("x".repeat(5_000))).collect();
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_error(&resp.json().await.unwrap(), "payload_too_large");
}

#[tokio::test]
async fn cors_allows_the_configured_origin_only() {
    let app = spawn_app(&[("CORS_ORIGIN", "http://app.example")]).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let ok = preflight("http://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let other = preflight("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(other.status(), 403);
    assert_error(&other.json().await.unwrap(), "origin_not_allowed");
}

#[tokio::test]
async fn the_servers_own_origin_is_allowed_whatever_cors_origin_says() {
    let app = spawn_app(&[("CORS_ORIGIN", "https://app.example.com")]).await;
    let own = app.base.clone();
    let client = reqwest::Client::new();
    let get = |path: &str, origin: &str| {
        client
            .get(app.url(path))
            .header("Origin", origin.to_owned())
            .send()
    };
    let docs = get("/docs", &own).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("swagger"));
    assert_eq!(get("/openapi.json", &own).await.unwrap().status(), 200);
    let login = client
        .post(app.url("/api/auth/login"))
        .header("Origin", own.as_str())
        .json(&json!({"username": "nobody", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401, "reaches the handler");
    // Only the own host and port count: another port is another origin.
    let port = app.addr.port();
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let refused = get("/docs", &other_port).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_error(&refused.json().await.unwrap(), "origin_not_allowed");
}

#[tokio::test]
async fn docs_and_spec_are_served() {
    let app = spawn_app(&[]).await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let committed: Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    assert_eq!(
        spec, committed,
        "served spec differs from openapi/openapi.json"
    );
    let docs = reqwest::get(app.url("/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("swagger"));
}

/// Every JSON answer, success or error, says plain `application/json`, as the spec does.
fn assert_json_media_type(resp: &reqwest::Response) {
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "{}",
        resp.url()
    );
}

#[tokio::test]
async fn a_405_lists_the_methods_its_route_takes() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        ("GET", "/api/auth/login", "POST"),
        ("PUT", "/api/auth/logout-all", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/api/sessions/sess_1/events", "GET, HEAD"),
        ("POST", "/ws", "GET, HEAD"),
    ] {
        let resp = client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        assert_json_media_type(&resp);
        assert_error(&resp.json().await.unwrap(), "method_not_allowed");
    }
    // Allowed methods answer, HEAD included.
    let head = client.head(app.url("/health")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let ok = client.get(app.url("/health")).send().await.unwrap();
    assert_json_media_type(&ok);
}

/// Sends `request` on a raw socket and reads until the server closes it.
async fn raw_exchange(app: &common::TestApp, request: &[u8]) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut data = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut data),
    )
    .await
    .expect("the server answers and closes within 10 s")
    .unwrap();
    let text = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_lowercase(), body)
}

#[tokio::test]
async fn an_over_long_uri_gets_a_json_414_and_the_connection_closes() {
    let app = spawn_app(&[]).await;
    let request = format!(
        "GET /health?pad={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, head, body) = raw_exchange(&app, request.as_bytes()).await;
    assert_eq!(status, 414, "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert_error(&body, "uri_too_long");
    // The server is fine afterwards.
    assert_eq!(app.get("/health").await.0, 200);
}

#[tokio::test]
async fn too_many_headers_get_a_json_431_and_the_connection_closes() {
    let app = spawn_app(&[]).await;
    let mut request = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..120 {
        request.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let (status, head, body) = raw_exchange(&app, request.as_bytes()).await;
    assert_eq!(status, 431, "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert_error(&body, "headers_too_large");
    assert_eq!(app.get("/health").await.0, 200);
}
