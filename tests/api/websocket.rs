//! The WebSocket contract, driven by a real WebSocket client against the real
//! server, which streams from a real HTTP upstream stub speaking SSE.

use crate::common;

use std::time::{Duration, Instant};

use common::{app_with_upstream, is_iso_millis, spawn_app, spawn_process, stub_reply};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn missing_invalid_or_expired_tokens_are_refused_before_the_upgrade() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.connect_refused_status(app.ws_url("")).await, 401);
    assert_eq!(
        app.connect_refused_status(app.ws_url("?token=garbage"))
            .await,
        401
    );
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "5f0c1e2d3b4a596877665544", "username": "x", "iat": now - 60, "exp": now - 1}),
        &jsonwebtoken::EncodingKey::from_secret(common::TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        app.connect_refused_status(app.ws_url(&format!("?token={expired}")))
            .await,
        401
    );
    // The refusal is a plain HTTP error with the usual JSON body.
    let resp = reqwest::get(app.url("/ws?token=garbage")).await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn bearer_header_authenticates_and_connected_describes_the_session() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let mut req = app.ws_url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut client = common::WsClient { ws };
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connected");
    assert!(hello["sessionId"].as_str().unwrap().starts_with("sess_"));
    assert_eq!(hello["user"]["username"], "alice");
    assert!(hello["user"].get("password").is_none());
    assert_eq!(hello["resumed"], false);
    assert!(
        is_iso_millis(hello["timestamp"].as_str().unwrap()),
        "{hello}"
    );
}

#[tokio::test]
async fn chat_streams_upstream_tokens_in_order_with_history_as_context() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session_id = hello["sessionId"].as_str().unwrap().to_owned();

    let first = client.chat("hello there").await;
    assert_eq!(first.status, "completed");
    assert!(first.errors.is_empty());
    assert!(first.message_id.starts_with("msg_"));
    assert_eq!(first.text(), stub_reply("hello there"));
    assert_eq!(
        first.tokens.len(),
        4,
        "one stream-token per upstream delta: {:?}",
        first.tokens
    );
    for m in &first.messages {
        assert!(is_iso_millis(m["timestamp"].as_str().unwrap()), "{m}");
    }

    let request = upstream.last_request();
    assert_eq!(request["query"], "hello there");
    assert_eq!(request["session_id"], session_id.as_str());
    assert_eq!(request["user_id"], hello["user"]["id"]);
    assert_eq!(request["context"]["history"], json!([]));

    let second = client.chat("and again").await;
    assert_eq!(second.status, "completed");
    assert_ne!(second.message_id, first.message_id);
    let history = upstream.last_request()["context"]["history"].clone();
    assert_eq!(
        history,
        json!([
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": stub_reply("hello there")},
        ])
    );
}

#[tokio::test]
async fn context_is_the_last_ten_messages_oldest_first() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    for i in 0..7 {
        assert_eq!(client.chat(&format!("q{i}")).await.status, "completed");
    }
    let history = upstream.last_request()["context"]["history"].clone();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 10);
    // 6 earlier exchanges = 12 messages; the oldest two (q0 and its reply) fell off.
    assert_eq!(history[0], json!({"role": "user", "content": "q1"}));
    assert_eq!(
        history[9],
        json!({"role": "assistant", "content": stub_reply("q5")})
    );
    assert_eq!(upstream.last_request()["query"], "q6");
}

#[tokio::test]
async fn upstream_failure_before_the_first_token_ends_the_stream_as_failed() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("fail-before").await;
    assert_eq!(ex.status, "failed");
    assert!(ex.tokens.is_empty());
    assert_eq!(ex.errors.len(), 1);
    assert_eq!(ex.errors[0]["code"], "ai_unavailable");
    assert_eq!(ex.errors[0]["messageId"], ex.message_id.as_str());
    assert!(
        !ex.errors[0]["message"].as_str().unwrap().contains("500"),
        "no internals: {}",
        ex.errors[0]
    );
    // The connection is still good for the next message.
    assert_eq!(client.chat("fine now").await.status, "completed");
}

#[tokio::test]
async fn upstream_failure_mid_stream_keeps_the_tokens_and_fails_the_stream() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("fail-during").await;
    assert_eq!(ex.tokens, ["partial ", "answer"]);
    assert_eq!(ex.errors.len(), 1);
    assert_eq!(ex.errors[0]["code"], "ai_stream_error");
    assert_eq!(ex.status, "failed");
    // Retries are off: the prompt was posted once, not again after the cut.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.request_count(), 1);
    // A failed answer is not stored as context.
    client.chat("next").await;
    assert_eq!(
        upstream.last_request()["context"]["history"],
        json!([{"role": "user", "content": "fail-during"}])
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_a_clear_error_not_silence() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = spawn_app(&[("FASTAPI_URL", &format!("http://{closed}"))]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("anyone there?").await;
    assert_eq!(ex.status, "failed");
    assert_eq!(ex.errors[0]["code"], "ai_unavailable");
    let (_, health) = app.get("/health").await;
    assert_eq!(health["checks"]["ai"], "unreachable");
}

#[tokio::test]
async fn stop_cancels_within_a_second_and_aborts_the_upstream_request() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    let start = client.recv().await;
    assert_eq!(start["type"], "stream-start");
    let id = start["messageId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(client.recv().await["type"], "stream-token");
    }
    let asked = Instant::now();
    client.send_json(json!({"type": "stop"})).await;
    let end = loop {
        let m = client.recv().await;
        assert_eq!(m["messageId"], id.as_str());
        if m["type"] == "stream-end" {
            break m;
        }
        assert_eq!(m["type"], "stream-token", "{m}");
    };
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(end["status"], "cancelled");
    assert_eq!(upstream.wait_aborted(1).await, 1, "upstream saw the abort");
    // A cancelled reply is not stored; the next chat works at once.
    let next = client.chat("after stop").await;
    assert_eq!(next.status, "completed");
    assert_eq!(
        upstream.last_request()["context"]["history"],
        json!([{"role": "user", "content": "endless"}])
    );
    // Stop with nothing running is answered, not ignored.
    client.send_json(json!({"type": "stop"})).await;
    assert_eq!(client.recv().await["code"], "no_active_generation");
}

#[tokio::test]
async fn one_generation_at_a_time_and_a_chat_right_after_stream_end_is_accepted() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "chat", "content": "slow:5"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    let start = client.recv().await;
    assert_eq!(start["type"], "stream-start");
    client
        .send_json(json!({"type": "chat", "content": "me too"}))
        .await;
    let mut saw_refusal = false;
    loop {
        let m = client.recv().await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "generation_in_progress");
            assert_eq!(m["messageId"], start["messageId"]);
            saw_refusal = true;
        } else if m["type"] == "stream-end" {
            assert_eq!(m["status"], "completed");
            break;
        }
    }
    assert!(saw_refusal);
    // Replying to stream-end immediately, many times over, is never refused.
    for i in 0..20 {
        let ex = client.chat(&format!("quick {i}")).await;
        assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    }
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let app = spawn_app(&[("MAX_MESSAGE_CHARS", "20")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let cases: &[(&str, &str)] = &[
        ("not json at all", "invalid_json"),
        ("[1, 2, 3]", "invalid_message"),
        (r#"{"content": "no type"}"#, "invalid_message"),
        (r#"{"type": 7}"#, "invalid_message"),
        (r#"{"type": "dance"}"#, "unknown_type"),
        (r#"{"type": "chat"}"#, "invalid_content"),
        (r#"{"type": "chat", "content": 42}"#, "invalid_content"),
        (r#"{"type": "chat", "content": null}"#, "invalid_content"),
        (
            r#"{"type": "chat", "content": "  \n\t "}"#,
            "invalid_content",
        ),
        (
            r#"{"type": "chat", "content": "this is longer than twenty"}"#,
            "content_too_long",
        ),
    ];
    for (text, code) in cases {
        client.send_text(text).await;
        let m = client.recv().await;
        assert_eq!(m["type"], "error", "{text}: {m}");
        assert_eq!(m["code"], *code, "{text}: {m}");
        assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(is_iso_millis(m["timestamp"].as_str().unwrap()));
    }
    client
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.recv().await["code"], "unsupported_frame");
    // Exactly twenty characters is fine, and the connection still works.
    assert_eq!(
        client.chat("twenty characters ok").await.status,
        "completed"
    );
    client.send_json(json!({"type": "ping"})).await;
    let pong = client.recv().await;
    assert_eq!(pong["type"], "pong");
    assert!(is_iso_millis(pong["timestamp"].as_str().unwrap()));
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_that_connection_with_1009_only() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let (mut big, _) = app.connect(&token).await;
    let (mut other, _) = app.connect(&token).await;
    let payload = json!({"type": "chat", "content": "x".repeat(70 * 1024)}).to_string();
    big.ws.send(Message::text(payload)).await.unwrap();
    assert_eq!(big.closed(Duration::from_secs(5)).await, Some(1009));
    // Everyone else is unaffected.
    other.send_json(json!({"type": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
    // Just under the limit is a normal (too long) message, not a close.
    let (mut near, _) = app.connect(&token).await;
    let payload = json!({"type": "chat", "content": "y".repeat(60 * 1024)}).to_string();
    near.ws.send(Message::text(payload)).await.unwrap();
    assert_eq!(near.recv().await["code"], "content_too_long");
}

#[tokio::test]
async fn human_escalation_is_answered_and_counted() {
    // Waits in the queue with nobody online (the defaults would answer
    // `handoff-unavailable` instead; tests/handoff.rs covers both).
    let app = spawn_app(&[("HANDOFF", "on"), ("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    client
        .send_json(json!({"type": "human-escalation", "message": "I need a person"}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "human-escalation-response");
    assert_eq!(reply["message"], "A human agent will contact you soon.");
    let queued = client.recv().await;
    assert_eq!(queued["type"], "handoff-queued");
    assert_eq!(queued["seq"], reply["seq"].as_u64().unwrap() + 1);
    // Asking again while waiting reassures, and queues nothing new.
    client.send_json(json!({"type": "human-escalation"})).await;
    assert_eq!(client.recv().await["type"], "human-escalation-response");
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        client.recv().await["type"],
        "pong",
        "no second handoff-queued"
    );
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(
        stats["escalatedSessions"], 1,
        "counted once per session: {stats}"
    );
    assert_eq!(stats["activeConnections"], 1);
    assert_eq!(stats["totalConnections"], 1);
    assert_eq!(stats["activeSessions"], 1);
}

#[tokio::test]
async fn stats_count_connections_and_messages() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let (mut a, _) = app.connect(&token).await;
    let (b, _) = app.connect(&token).await;
    a.chat("one").await;
    a.chat("two").await;
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(stats["activeConnections"], 2);
    assert_eq!(stats["totalMessages"], 2);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, stats) = app.get("/api/stats").await;
        if stats["activeConnections"] == 1 {
            assert_eq!(stats["totalConnections"], 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed connection still counted: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, info) = app.get("/api/websocket/info").await;
    assert_eq!(info["activeConnections"], 1);
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let app = spawn_process(&[("WS_PING_INTERVAL", "100ms"), ("WS_PONG_TIMEOUT", "500ms")]).await;
    let token = app.register("alice").await;
    let (mut lively, _) = app.connect(&token).await;
    let (mut silent, _) = app.connect(&token).await;

    // The lively client sends nothing itself; it only reads, which makes it
    // answer the server's pings, for three times the timeout.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Ok(frame) =
        tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut lively.ws)).await
    {
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("lively client got {other:?}"),
        }
    }
    assert!(pings >= 5, "the server pings regularly ({pings})");
    // The silent one read nothing, so it never answered a ping: it was closed.
    // (Whether its Close frame is still readable depends on the TCP reset its
    // own late pong provokes, so the reason is checked in the server's log.)
    let code = silent.closed(Duration::from_secs(2)).await;
    assert!(matches!(code, None | Some(1001)), "{code:?}");
    assert!(
        app.log_text().contains("reason=\"ping timeout\""),
        "{}",
        app.log_text()
    );
    lively.send_json(json!({"type": "ping"})).await;
    assert_eq!(lively.recv().await["type"], "pong");
}

#[tokio::test]
async fn a_session_can_be_resumed_by_its_owner_only() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (mut first, hello) = app.connect(&alice).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    first.chat("remember me").await;
    drop(first);

    let (mut again, hello) = app
        .connect_query(&format!("?token={alice}&sessionId={session}"))
        .await;
    assert_eq!(hello["sessionId"], session.as_str());
    assert_eq!(hello["resumed"], true);
    again.chat("still there?").await;
    assert_eq!(
        upstream.last_request()["context"]["history"][0],
        json!({"role": "user", "content": "remember me"})
    );

    let (_, hello) = app
        .connect_query(&format!("?token={bob}&sessionId={session}"))
        .await;
    assert_ne!(hello["sessionId"], session.as_str());
    assert_eq!(hello["resumed"], false);
}

#[tokio::test]
async fn two_hundred_concurrent_clients_get_only_their_own_streams() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let app = std::sync::Arc::new(app);
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(app.register(&format!("user{i}")).await);
    }
    let mut tasks = Vec::new();
    for c in 0..200 {
        let app = app.clone();
        let token = tokens[c % tokens.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, hello) = app.connect(&token).await;
            let mut ids = Vec::new();
            for round in 0..2 {
                let query = format!("client {c} round {round} says hi");
                let ex = client.chat(&query).await;
                assert_eq!(ex.status, "completed", "client {c}: {:?}", ex.errors);
                assert_eq!(
                    ex.text(),
                    stub_reply(&query),
                    "client {c} got someone else's tokens"
                );
                ids.push(ex.message_id);
            }
            (hello["sessionId"].as_str().unwrap().to_owned(), ids)
        }));
    }
    let mut sessions = std::collections::HashSet::new();
    let mut message_ids = std::collections::HashSet::new();
    for t in tasks {
        let (session, ids) = t.await.expect("client task");
        assert!(sessions.insert(session), "session ids are unique");
        for id in ids {
            assert!(message_ids.insert(id), "message ids are unique");
        }
    }
    assert_eq!(sessions.len(), 200);
    assert_eq!(message_ids.len(), 400);
    assert_eq!(upstream.request_count(), 400);
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(stats["totalMessages"], 400);
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let app = spawn_process(&[("RUST_LOG", "debug")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    client.chat("hi").await;
    let _ = reqwest::get(app.url(&format!("/ws?token={token}"))).await;
    assert_eq!(app.verify_bearer(&token).await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = app.log_text();
    assert!(log.contains("websocket connected"), "logging works: {log}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token leaked into the log");
    assert!(!log.contains("password123"));
}

#[tokio::test]
async fn a_quiet_connected_client_keeps_its_session() {
    let app = spawn_app(&[("SESSION_TTL", "2s"), ("WS_PING_INTERVAL", "200ms")]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    // Idle (only answering pings) for twice the session TTL.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(frame) =
        tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut client.ws)).await
    {
        assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
    }
    let ex = client.chat("still here").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(stats["activeSessions"], 1);
}

#[tokio::test]
async fn content_of_only_whitespace_controls_or_invisible_characters_is_blank() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    for blank in ["\u{0}", "\u{200b}", "\t\r\n", "\u{feff}\u{200d} \u{0}"] {
        client
            .send_json(json!({"type": "chat", "content": blank}))
            .await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{blank:?}: {reply}");
        assert_eq!(reply["code"], "invalid_content", "{blank:?}: {reply}");
        assert_eq!(reply["message"], "'content' must not be blank");
    }
    // Nothing was stored or started, and the connection serves on.
    let (_, stats) = app.get("/api/stats").await;
    assert_eq!(stats["totalMessages"], 0, "{stats}");
    let ex = client.chat("\u{200b}hi").await;
    assert_eq!(ex.status, "completed", "{:?}", ex.errors);
}

/// A WebSocket opened by hand over TCP, to send the frames no client library
/// would: unmasked, reserved bits and opcodes, broken UTF-8.
struct RawSocket {
    tcp: tokio::net::TcpStream,
    read: Vec<u8>,
}

/// FIN plus an opcode: the first byte of an unfragmented frame.
const TEXT: u8 = 0x81;

impl RawSocket {
    /// Upgrades `/ws` with `token` and reads the `connected` message.
    async fn open(app: &common::TestApp, token: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            app.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut socket = Self {
            tcp,
            read: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = socket.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(socket.fill().await, "the upgrade was answered");
        };
        let head = String::from_utf8_lossy(&socket.read[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        socket.read.drain(..head_end);
        let (opcode, hello) = socket.next_frame().await.expect("connected");
        assert_eq!(opcode, 1);
        let hello: Value = serde_json::from_slice(&hello).unwrap();
        assert_eq!(hello["type"], "connected", "{hello}");
        socket
    }

    /// Reads more bytes; false once the server has closed the TCP connection.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
            .await
            .expect("the server answers within 10 s")
            .unwrap_or(0);
        self.read.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Sends one frame: `first` is its first byte (FIN, RSV bits, opcode);
    /// clients must mask, and `masked: false` breaks that rule.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have closed on an earlier frame.
        let _ = self.tcp.write_all(&frame).await;
    }

    /// The server's next frame (opcode and payload), or `None` once the
    /// connection ended without one.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((header, len)) = frame_length(&self.read) {
                if self.read.len() >= header + len {
                    let opcode = self.read[0] & 0x0f;
                    let payload = self.read[header..header + len].to_vec();
                    self.read.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The close code the server sends, skipping pings and messages before it.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some((opcode, payload)) = self.next_frame().await {
            if opcode == 8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    }
}

/// The header size and payload length of the (unmasked, server) frame
/// `bytes` starts with, once enough of it has arrived.
fn frame_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let short = usize::from(*bytes.get(1)? & 0x7f);
    match short {
        126 => Some((
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        )),
        127 => {
            let long: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            Some((10, usize::try_from(u64::from_be_bytes(long)).unwrap()))
        }
        n => Some((2, n)),
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;

    let mut ws = RawSocket::open(&app, &token).await;
    ws.send(TEXT, b"{\"type\":\"chat\",\"content\":\"\xff\xfe\"}", true)
        .await;
    assert_eq!(ws.close_code().await, Some(1007));

    // Split over two fragments, the second one breaking a started character.
    let mut ws = RawSocket::open(&app, &token).await;
    ws.send(0x01, b"{\"type\":\"ping\",\"x\":\"\xc3", true)
        .await;
    ws.send(0x80, b"\x28\"}", true).await;
    assert_eq!(ws.close_code().await, Some(1007));

    // A well-formed message on a fresh socket is still served.
    let mut ws = RawSocket::open(&app, &token).await;
    ws.send(TEXT, br#"{"type":"ping"}"#, true).await;
    let (opcode, pong) = ws.next_frame().await.unwrap();
    assert_eq!(opcode, 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&pong).unwrap()["type"],
        "pong"
    );
}

#[tokio::test]
async fn frames_that_break_the_protocol_close_with_1002() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let ping = br#"{"type":"ping"}"#.as_slice();
    let cases: [(&str, u8, &[u8], bool); 6] = [
        ("unmasked client frame", TEXT, ping, false),
        ("RSV1 set without an extension", TEXT | 0x40, ping, true),
        ("RSV3 set", TEXT | 0x10, ping, true),
        ("reserved data opcode 0x3", 0x83, ping, true),
        ("reserved control opcode 0xB", 0x8b, b"", true),
        ("continuation with nothing to continue", 0x80, ping, true),
    ];
    for (what, first, payload, masked) in cases {
        let mut ws = RawSocket::open(&app, &token).await;
        ws.send(first, payload, masked).await;
        assert_eq!(ws.close_code().await, Some(1002), "{what}");
    }
    // A fragmented control frame is a violation too.
    let mut ws = RawSocket::open(&app, &token).await;
    ws.send(0x09, b"ping", true).await;
    assert_eq!(ws.close_code().await, Some(1002), "fragmented ping");
}

#[tokio::test]
async fn bad_json_in_valid_frames_never_closes_the_connection() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let mut ws = RawSocket::open(&app, &token).await;
    for (text, code) in [
        ("not json", "invalid_json"),
        ("{\"type\":", "invalid_json"),
        ("[]", "invalid_message"),
        ("{\"type\":\"dance\"}", "unknown_type"),
        ("\u{0}", "invalid_json"),
    ] {
        ws.send(TEXT, text.as_bytes(), true).await;
        let (opcode, reply) = ws.next_frame().await.expect("still open");
        assert_eq!(opcode, 1, "{text:?}");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["type"], "error", "{text:?}");
        assert_eq!(reply["code"], code, "{text:?}");
    }
    ws.send(TEXT, br#"{"type":"ping"}"#, true).await;
    let (_, pong) = ws.next_frame().await.expect("still open");
    assert_eq!(
        serde_json::from_slice::<Value>(&pong).unwrap()["type"],
        "pong"
    );
}
