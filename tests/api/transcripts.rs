//! Transcripts over real HTTP: chats on `/ws` are kept in the SQLite file and
//! survive a restart of the binary; agents' messages join them after a
//! handoff; only the owner and agents read them, only the owner erases them,
//! and `TRANSCRIPT_RETENTION` expires them.

use crate::common;

use std::time::Duration;

use common::TestApp;
use serde_json::{json, Value};

async fn messages(app: &TestApp, token: &str, session: &str, query: &str) -> (u16, Value) {
    app.call(
        token,
        "GET",
        &format!("/api/sessions/{session}/messages{query}"),
        None,
    )
    .await
}

/// `(role, content)` of each message of a transcript body.
fn said(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

fn assert_not_found(status: u16, body: &Value) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "session_not_found", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_survive_a_restart_and_only_the_owner_and_agents_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatbot.db");
    let mut first = common::spawn_process_at(path.clone(), &[]).await;
    let carol = first.register("carol").await;
    let (mut ws, hello) = first.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let one = ws.chat("hello there").await;
    let two = ws.chat("and again").await;
    assert_eq!(
        (one.status.as_str(), two.status.as_str()),
        ("completed", "completed")
    );
    let (status, before) = messages(&first, &carol, &session, "").await;
    assert_eq!(status, 200, "{before}");
    drop(ws);
    first.terminate();
    assert_eq!(first.wait_exit(Duration::from_secs(15)).await, Some(0));

    // The sessions lived in memory: only the transcript remembers this one.
    let second = common::spawn_process_at(path, &[]).await;
    let (status, body) = messages(&second, &carol, &session, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, before, "the same transcript after the restart");
    assert_eq!(body["sessionId"], session.as_str());
    assert_eq!(
        said(&body),
        vec![
            pair("user", "hello there"),
            pair("assistant", &one.text()),
            pair("user", "and again"),
            pair("assistant", &two.text()),
        ]
    );
    let answer = &body["messages"][1];
    assert_eq!(answer["messageId"], one.message_id.as_str());
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["seq"], one.messages[0]["seq"], "at its stream-start");
    assert!(common::is_iso_millis(answer["timestamp"].as_str().unwrap()));
    assert!(body["messages"][0].get("status").is_none());
    assert!(body.get("next").is_none(), "one page holds it all");

    // Paging back from the newest.
    let (_, newest) = messages(&second, &carol, &session, "?limit=3").await;
    assert_eq!(said(&newest)[0], pair("assistant", &one.text()));
    let next = newest["next"].as_str().expect("an older page").to_owned();
    let (_, oldest) = messages(
        &second,
        &carol,
        &session,
        &format!("?limit=3&before={next}"),
    )
    .await;
    assert_eq!(said(&oldest), vec![pair("user", "hello there")]);
    assert!(oldest.get("next").is_none(), "{oldest}");

    for bad in [
        "?limit=0",
        "?limit=201",
        "?limit=ten",
        "?before=yesterday",
        "?before=1-2-3",
    ] {
        let (status, body) = messages(&second, &carol, &session, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request", "{bad}: {body}");
    }

    // An agent reads it; another customer is told it does not exist, exactly
    // as for a session that never did.
    let zed = second.register_agent("zed").await;
    let (status, as_agent) = messages(&second, &zed, &session, "").await;
    assert_eq!(status, 200, "{as_agent}");
    assert_eq!(said(&as_agent).len(), 4);
    let mallory = second.register("mallory").await;
    let (status, theirs) = messages(&second, &mallory, &session, "").await;
    assert_not_found(status, &theirs);
    let (status, unknown) = messages(&second, &mallory, "sess_nothing_here", "").await;
    assert_not_found(status, &unknown);
    assert_eq!(theirs, unknown, "nothing tells the two apart");
    let (status, _) = messages(&second, "not-a-token", &session, "").await;
    assert_eq!(status, 401);

    // Only the owner erases it, and then nobody reads it.
    let erase = format!("/api/sessions/{session}");
    for outsider in [&mallory, &zed] {
        let (status, body) = second.call(outsider, "DELETE", &erase, None).await;
        assert_not_found(status, &body);
    }
    assert_eq!(messages(&second, &carol, &session, "").await.0, 200);
    let (status, body) = second.call(&carol, "DELETE", &erase, None).await;
    assert_eq!(status, 204, "{body}");
    for reader in [&carol, &zed] {
        let (status, body) = messages(&second, reader, &session, "").await;
        assert_not_found(status, &body);
    }
    let (status, body) = second.call(&carol, "DELETE", &erase, None).await;
    assert_not_found(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_messages_join_the_transcript_after_a_handoff() {
    // Amy claims over REST without a console open: the queue must take it.
    let app = common::spawn_app(&[("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")]).await;
    let dana = app.register("dana").await;
    let amy = app.register_agent("amy").await;
    let (mut ws, hello) = app.connect(&dana).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let bot = ws.chat("I need help").await;
    ws.send_json(json!({"type": "human-escalation"})).await;
    while ws.recv().await["type"] != "handoff-queued" {}
    let conversation = format!("/api/agent/conversations/{session}");
    let (status, body) = app
        .call(&amy, "POST", &format!("{conversation}/claim"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, sent) = app
        .call(
            &amy,
            "POST",
            &format!("{conversation}/messages"),
            Some(json!({"content": "Hi, I am Amy"})),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    // While Amy holds it, the bot is muted: the chat is kept all the same.
    ws.send_json(json!({"type": "chat", "content": "thanks Amy"}))
        .await;
    loop {
        let m = ws.recv().await;
        if m["type"] == "user-message" && m["content"] == "thanks Amy" {
            break;
        }
    }
    let (status, body) = app
        .call(&amy, "POST", &format!("{conversation}/resolve"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    while ws.recv().await["type"] != "handoff-resolved" {}
    // The customer is asked how it went, right after.
    assert_eq!(ws.recv().await["type"], "csat-request");
    let after = ws.chat("back to the bot").await;
    assert_eq!(after.status, "completed");

    for reader in [&dana, &amy] {
        let (status, body) = messages(&app, reader, &session, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            said(&body),
            vec![
                pair("user", "I need help"),
                pair("assistant", &bot.text()),
                pair("agent", "Hi, I am Amy"),
                pair("user", "thanks Amy"),
                pair("user", "back to the bot"),
                pair("assistant", &after.text()),
            ]
        );
        let from_amy = &body["messages"][2];
        assert_eq!(from_amy["agent"]["username"], "amy", "{from_amy}");
        assert_eq!(from_amy["messageId"], sent["messageId"]);
        assert_eq!(from_amy["seq"], sent["seq"]);
        assert!(from_amy.get("status").is_none());
    }
}

/// An answer stopped midway keeps what the user saw, marked as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_answer_keeps_what_was_delivered() {
    let app = common::spawn_app(&[("ECHO_TOKEN_DELAY", "200ms")]).await;
    let erin = app.register("erin").await;
    let (mut ws, hello) = app.connect(&erin).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    ws.send_json(json!({"type": "chat", "content": "one two three four five six seven"}))
        .await;
    let mut delivered = String::new();
    loop {
        let m = ws.recv().await;
        if m["type"] == "stream-token" {
            delivered.push_str(m["token"].as_str().unwrap());
            ws.send_json(json!({"type": "stop"})).await;
        }
        if m["type"] == "stream-end" {
            assert_eq!(m["status"], "cancelled", "{m}");
            break;
        }
    }
    let (status, body) = messages(&app, &erin, &session, "").await;
    assert_eq!(status, 200, "{body}");
    let answer = &body["messages"][1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["content"], delivered.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_expires_old_transcript_entries() {
    let app = common::spawn_app(&[("TRANSCRIPT_RETENTION", "2s")]).await;
    let fay = app.register("fay").await;
    let (mut ws, hello) = app.connect(&fay).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(ws.chat("soon forgotten").await.status, "completed");
    let (_, body) = messages(&app, &fay, &session, "").await;
    assert_eq!(said(&body).len(), 2, "{body}");
    // Swept every second: gone within the retention and a sweep or two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (status, body) = messages(&app, &fay, &session, "").await;
        assert_eq!(status, 200, "the live session is still the owner's: {body}");
        if said(&body).is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not expired: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
