//! Start, stop and restart: configuration errors, graceful shutdown on SIGTERM,
//! and what survives a restart (users in SQLite, sessions in Redis).

use crate::common;

use std::time::{Duration, Instant};

use common::redis::{delete_prefix, redis_answers, redis_url, skip_without_redis};
use common::{run_to_exit, spawn_process, spawn_process_at, Upstream};
use serde_json::json;

#[tokio::test]
async fn bad_configuration_exits_2_with_one_clear_line() {
    for (env, needle) in [
        (
            vec![("APP_ENV", "production"), ("JWT_SECRET", "")],
            "JWT_SECRET",
        ),
        (
            vec![("NODE_ENV", "production"), ("JWT_SECRET", "too-short")],
            "at least 32",
        ),
        (vec![("PORT", "not-a-port")], "PORT"),
        (vec![("JWT_EXPIRES_IN", "soon")], "JWT_EXPIRES_IN"),
        (vec![("FASTAPI_URL", "localhost:8000")], "FASTAPI_URL"),
        (vec![("APP_ENV", "staging")], "APP_ENV"),
        (
            vec![
                ("NODE_ENV", "production"),
                (
                    "JWT_SECRET",
                    "your-super-secret-jwt-key-here-change-in-production",
                ),
            ],
            "published example",
        ),
        (
            vec![("CORS_ORIGIN", "app.example.com")],
            "write https://app.example.com",
        ),
    ] {
        let (code, stdout, stderr) = run_to_exit(&env).await;
        assert_eq!(code, Some(2), "{env:?}: {stdout}{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(needle), "{stderr}");
        assert!(!stderr.contains("panicked"));
        assert!(!stderr.contains("too-short"), "secrets are not echoed");
        assert!(!stderr.contains("your-super"), "secrets are not echoed");
    }
}

#[tokio::test]
async fn an_unreachable_redis_stops_start_up_with_a_clear_message() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = run_to_exit(&[("REDIS_URL", &format!("redis://{closed}"))]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Redis"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn production_logs_are_json_lines() {
    let secret = "p".repeat(40);
    let app = spawn_process(&[("APP_ENV", "production"), ("JWT_SECRET", &secret)]).await;
    app.register("alice").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = app.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3);
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        // Flat: the message and fields at the top level, nothing under `fields`.
        assert!(
            v.get("level").is_some() && v.get("message").is_some() && v.get("fields").is_none(),
            "{line}"
        );
    }
    assert!(!log.contains(&secret));
}

#[tokio::test]
async fn users_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/dir/users.db");
    let mut app = spawn_process_at(db.clone(), &[]).await;
    let token = app.register("alice").await;
    app.terminate();
    assert_eq!(app.wait_exit(Duration::from_secs(15)).await, Some(0));

    let app = spawn_process_at(db, &[]).await;
    let (status, body) = app
        .post(
            "/api/auth/login",
            json!({"username": "alice", "password": "password123"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app.post("/api/auth/verify", json!({"token": token})).await;
    assert_eq!(
        status, 200,
        "a token from before the restart is still valid"
    );
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "alice", "email": "new@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("username_taken"))
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_stream_finish_then_closes_with_1001_and_exits_0() {
    let upstream = Upstream::start().await;
    let mut app =
        spawn_process(&[("FASTAPI_URL", &upstream.url), ("SHUTDOWN_TIMEOUT", "5s")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let (mut idle, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "chat", "content": "slow:10"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    assert_eq!(client.recv().await["type"], "stream-start");
    assert_eq!(client.recv().await["type"], "stream-token");

    let stopped_at = Instant::now();
    app.terminate();
    // New connections are refused while the old ones finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio_tungstenite::connect_async(app.ws_url(&format!("?token={token}")))
            .await
            .is_err()
    );

    let mut tokens = 1;
    let end = loop {
        let m = client.recv().await;
        match m["type"].as_str().unwrap() {
            "stream-token" => tokens += 1,
            "stream-end" => break m,
            other => panic!("unexpected {other}: {m}"),
        }
    };
    assert_eq!(
        end["status"], "completed",
        "the answer was allowed to finish"
    );
    assert_eq!(tokens, 10);
    assert_eq!(client.closed(Duration::from_secs(3)).await, Some(1001));
    assert_eq!(idle.closed(Duration::from_secs(3)).await, Some(1001));
    assert_eq!(app.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_cancels_streams_still_running_at_the_deadline() {
    let upstream = Upstream::start().await;
    let mut app = spawn_process(&[
        ("FASTAPI_URL", &upstream.url),
        ("SHUTDOWN_TIMEOUT", "500ms"),
    ])
    .await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    assert_eq!(client.recv().await["type"], "stream-start");
    assert_eq!(client.recv().await["type"], "stream-token");

    let stopped_at = Instant::now();
    app.terminate();
    let end = loop {
        let m = client.recv().await;
        if m["type"] == "stream-end" {
            break m;
        }
        assert_eq!(m["type"], "stream-token", "{m}");
    };
    assert_eq!(end["status"], "cancelled");
    assert_eq!(client.closed(Duration::from_secs(3)).await, Some(1001));
    assert_eq!(app.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped_at.elapsed()
    );
    assert_eq!(
        upstream.wait_aborted(1).await,
        1,
        "upstream request aborted"
    );
}

#[tokio::test]
async fn with_redis_a_session_and_its_history_survive_a_restart() {
    let url = redis_url();
    if !redis_answers(&url).await {
        skip_without_redis(&url, "no PING answer");
        return;
    }
    let prefix = format!("chatbot-it-{}", uuid::Uuid::new_v4().simple());
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let env = [
        ("FASTAPI_URL", upstream.url.as_str()),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];

    let mut app = spawn_process_at(db.clone(), &env).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(client.chat("before the restart").await.status, "completed");
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(stats["activeSessions"], 1, "{stats}");
    app.terminate();
    assert_eq!(app.wait_exit(Duration::from_secs(15)).await, Some(0));

    let app = spawn_process_at(db, &env).await;
    let (mut client, hello) = app
        .connect_query(&format!("?token={token}&sessionId={session}"))
        .await;
    assert_eq!(hello["resumed"], true);
    assert_eq!(client.chat("after the restart").await.status, "completed");
    assert_eq!(
        upstream.last_request()["context"]["history"],
        json!([
            {"role": "user", "content": "before the restart"},
            {"role": "assistant", "content": common::stub_reply("before the restart")},
        ])
    );

    // Leave nothing behind in the shared Redis.
    delete_prefix(&url, &prefix)
        .await
        .expect("test keys deleted");
}
