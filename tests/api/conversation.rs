//! Conversations outlive the socket, on one instance: every tab live, resume
//! with `lastSeq`, acknowledgements and safe resend, stop from any tab,
//! answers that finish with no tab open, and what the log forgets.

use crate::common;

use std::time::{Duration, Instant};

use common::{app_with_upstream, assert_consecutive, seqs, spawn_app, TestApp};
use serde_json::{json, Value};

#[tokio::test]
async fn a_second_tab_sees_the_first_tabs_message_and_every_token_live() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut first, hello) = app.connect(&token).await;
    assert_eq!(hello["seq"], 0);
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut second, hello2) = app.tab(&token, &session, None).await;
    assert_eq!(hello2["seq"], 0);

    first
        .send_json(json!({"type": "chat", "content": "hello there", "clientMessageId": "c-1"}))
        .await;
    let ack = loop {
        let m = first.recv().await;
        if m["type"] == "ack" {
            break m;
        }
    };
    assert_eq!(ack["clientMessageId"], "c-1");
    assert_eq!(ack["seq"], 1);
    assert!(ack.get("duplicate").is_none(), "{ack}");

    let seen = second.until_stream_end().await;
    assert_eq!(seen[0]["type"], "user-message");
    assert_eq!(seen[0]["content"], "hello there");
    assert_eq!(seen[0]["clientMessageId"], "c-1");
    assert_eq!(seen[0]["messageId"], ack["messageId"]);
    assert_eq!(seen[1]["type"], "stream-start");
    assert_eq!(seen[1]["replyTo"], ack["messageId"]);
    assert_consecutive(&seen, 1);
    let text: String = seen
        .iter()
        .filter(|m| m["type"] == "stream-token")
        .map(|m| m["token"].as_str().unwrap())
        .collect();
    assert_eq!(text, common::stub_reply("hello there"));
    assert_eq!(seen.last().unwrap()["status"], "completed");
    // The sender saw the same events (around its ack).
    let mine: Vec<Value> = first.until_stream_end().await;
    assert_eq!(mine.last().unwrap()["seq"], seen.last().unwrap()["seq"]);
}

#[tokio::test]
async fn a_client_cut_off_mid_answer_resumes_with_exactly_what_it_missed() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "slow:40"}))
        .await;
    let mut before = Vec::new();
    while before.len() < 12 {
        before.push(client.recv().await);
    }
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut back, hello) = app.tab(&token, &session, Some(last_seq)).await;
    assert!(hello["seq"].as_u64().unwrap() > last_seq, "{hello}");
    let after = back.until_stream_end().await;
    assert_consecutive(&after, last_seq + 1);
    assert_eq!(after.last().unwrap()["status"], "completed");
    let tokens = before
        .iter()
        .chain(&after)
        .filter(|m| m["type"] == "stream-token")
        .count();
    assert_eq!(tokens, 40, "every token once");
}

#[tokio::test]
async fn resuming_while_tokens_are_produced_has_no_gap_or_duplicate() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "slow:60"}))
        .await;
    // Twenty tabs join at different moments of the answer, each asking for
    // everything after a different seq.
    let mut joined = Vec::new();
    for i in 0..20u64 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (tab, hello) = app.tab(&token, &session, Some(i)).await;
        joined.push((i, tab, hello));
    }
    for (after, mut tab, hello) in joined {
        let events = tab.until_stream_end().await;
        assert_consecutive(&events, after + 1);
        assert!(hello["seq"].as_u64().unwrap() >= after);
        assert_eq!(events.last().unwrap()["status"], "completed");
    }
    client.until_stream_end().await;
}

#[tokio::test]
async fn stop_from_another_tab_ends_the_answer_for_every_tab() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut asker, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut other, _) = app.tab(&token, &session, None).await;
    asker
        .send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    for _ in 0..4 {
        other.recv().await;
    }
    // The other tab cannot start a second answer...
    other
        .send_json(json!({"type": "chat", "content": "me too"}))
        .await;
    let refusal = loop {
        let m = other.recv().await;
        if m["type"] == "error" {
            break m;
        }
    };
    assert_eq!(refusal["code"], "generation_in_progress");
    assert!(
        refusal.get("seq").is_none(),
        "refusals take no seq: {refusal}"
    );
    // ...but it can stop the running one.
    let asked = Instant::now();
    other.send_json(json!({"type": "stop"})).await;
    for client in [&mut other, &mut asker] {
        let events = client.until_stream_end().await;
        assert_eq!(events.last().unwrap()["status"], "cancelled");
    }
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(upstream.wait_aborted(1).await, 1);
}

#[tokio::test]
async fn a_resent_client_message_id_starts_nothing() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let chat = json!({"type": "chat", "content": "only once", "clientMessageId": "same-id"});
    client.send_json(chat.clone()).await;
    let first = client.until_stream_end().await;
    let ack = first.iter().find(|m| m["type"] == "ack").unwrap().clone();
    let requests = upstream.request_count();

    client.send_json(chat).await;
    let again = client.recv().await;
    assert_eq!(again["type"], "ack", "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["messageId"], ack["messageId"]);
    assert_eq!(again["seq"], ack["seq"]);
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong", "nothing else was sent");
    assert_eq!(
        upstream.request_count(),
        requests,
        "the AI was not asked again"
    );
}

#[tokio::test]
async fn an_answer_nobody_watches_still_completes_and_is_replayed() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "slow:10"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    drop(client);
    // Ten tokens 50 ms apart: done well within a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut back, hello) = app.tab(&token, &session, Some(1)).await;
    assert_eq!(hello["seq"], 13, "user-message, start, 10 tokens, end");
    let events = back.until_stream_end().await;
    assert_consecutive(&events, 2);
    assert_eq!(events.last().unwrap()["status"], "completed");
    // And it joined the history the AI sees next.
    let next = back.chat("and then?").await;
    assert_eq!(next.status, "completed");
}

#[tokio::test]
async fn an_answer_nobody_watches_for_too_long_is_cancelled() {
    let (app, upstream) = app_with_upstream(&[("UNATTENDED_GENERATION_TIMEOUT", "1s")]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    assert_eq!(client.recv().await["type"], "user-message");
    let left = Instant::now();
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.aborted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "still running half a second after the tab left"
    );
    assert_eq!(
        upstream.wait_aborted(1).await,
        1,
        "cancelled once unwatched"
    );
    let waited = left.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    let (mut back, _) = app.tab(&token, &session, Some(0)).await;
    let events = back.until_stream_end().await;
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    assert!(
        events.iter().any(|m| m["type"] == "stream-token"),
        "the partial answer is kept"
    );
}

#[tokio::test]
async fn a_trimmed_log_says_history_lost_then_replays_what_it_holds() {
    let (app, _upstream) = app_with_upstream(&[("EVENT_LOG_LIMIT", "10")]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client.chat("one two three four five six seven eight").await;
    client.chat("nine ten eleven twelve thirteen").await;
    drop(client);

    let (mut back, hello) = app.tab(&token, &session, Some(1)).await;
    let head = hello["seq"].as_u64().unwrap();
    let lost = back.recv().await;
    assert_eq!(lost["type"], "history-lost", "{lost}");
    assert_eq!(lost["fromSeq"], 2);
    assert_eq!(lost["seq"], head);
    let oldest = lost["oldestSeq"].as_u64().unwrap();
    assert!(
        oldest > 2 && head - oldest + 1 >= 10 && head - oldest < 20,
        "{lost}"
    );
    let mut replayed = Vec::new();
    while replayed.len() < (head - oldest + 1) as usize {
        replayed.push(back.recv().await);
    }
    assert_consecutive(&replayed, oldest);
}

#[tokio::test]
async fn a_last_seq_ahead_of_the_session_is_an_error_and_nothing_is_replayed() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client.chat("hi").await;
    let (mut back, hello) = app.tab(&token, &session, Some(500)).await;
    let err = back.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "last_seq_ahead");
    back.send_json(json!({"type": "ping"})).await;
    assert_eq!(back.recv().await["type"], "pong", "no replay");
    assert!(hello["seq"].as_u64().unwrap() < 500);
    // A lastSeq that is not a number is refused before the upgrade.
    let status = app
        .connect_refused_status(app.ws_url(&format!("?token={token}&lastSeq=abc")))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_huge_upstream_delta_is_split_and_the_socket_survives() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    let ex = client.chat("big:300000").await;
    assert_eq!(ex.status, "completed");
    assert!(ex.tokens.len() >= 19, "{} pieces", ex.tokens.len());
    assert!(ex.tokens.iter().all(|t| t.len() <= 16 * 1024));
    assert_eq!(ex.text(), "x".repeat(300_000));
    assert_eq!(
        ex.messages
            .iter()
            .filter(|m| m["type"] == "stream-end")
            .count(),
        1
    );
    assert_eq!(client.chat("still here").await.status, "completed");
}

#[tokio::test]
async fn human_escalation_reaches_every_tab_with_a_seq() {
    let app = spawn_app(&[]).await;
    let token = app.register("alice").await;
    let (mut first, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut second, _) = app.tab(&token, &session, None).await;
    first.send_json(json!({"type": "human-escalation"})).await;
    for client in [&mut first, &mut second] {
        let m = client.recv().await;
        assert_eq!(m["type"], "human-escalation-response");
        assert_eq!(m["seq"], 1);
    }
}

async fn get_json(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rest_lists_sessions_and_replays_the_same_events_as_the_socket() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("alice").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client.chat("first question").await;
    let (_, hello2) = app.connect(&token).await;
    let newer = hello2["sessionId"].as_str().unwrap().to_owned();

    let (status, body) = get_json(&app, "/api/sessions", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(listed[0]["id"], newer, "most recently active first");
    let mine = listed.iter().find(|s| s["id"] == session).unwrap();
    let head = mine["seq"].as_u64().unwrap();
    assert!(head >= 4, "{mine}");
    assert_eq!(mine["escalated"], false);
    assert!(common::is_iso_millis(mine["createdAt"].as_str().unwrap()));

    // The same events, same JSON, as a socket resuming from seq 0.
    let (status, page) = get_json(
        &app,
        &format!("/api/sessions/{session}/events"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["seq"].as_u64(), page["historyLost"].as_bool()),
        (Some(head), Some(false))
    );
    assert!(page.get("nextAfterSeq").is_none(), "{page}");
    let (mut replay, _) = app.tab(&token, &session, Some(0)).await;
    let mut socket_events = Vec::new();
    for _ in 0..head {
        socket_events.push(replay.recv().await);
    }
    assert_eq!(page["events"].as_array().unwrap(), &socket_events);

    // Paging.
    let (_, first) = get_json(
        &app,
        &format!("/api/sessions/{session}/events?afterSeq=1&limit=2"),
        Some(&token),
    )
    .await;
    assert_eq!(seqs(first["events"].as_array().unwrap()), vec![2, 3]);
    assert_eq!(first["nextAfterSeq"], 3);
    // The largest afterSeq a client can write is past everything, not an overflow.
    let (status, past) = get_json(
        &app,
        &format!("/api/sessions/{session}/events?afterSeq={}", u64::MAX),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(past["events"], json!([]), "{past}");
    assert_eq!(past["historyLost"], false, "{past}");

    // Someone else's session is exactly an unknown one; bad input is a 400.
    let bob = app.register("bob").await;
    let theirs = get_json(&app, &format!("/api/sessions/{session}/events"), Some(&bob)).await;
    let unknown = get_json(&app, "/api/sessions/sess_nope/events", Some(&bob)).await;
    assert_eq!(theirs.0, 404);
    assert_eq!(theirs.1["error"], "session_not_found");
    assert_eq!(theirs.1, unknown.1);
    let (_, bobs) = get_json(&app, "/api/sessions", Some(&bob)).await;
    assert_eq!(bobs["sessions"], json!([]));
    for bad in ["?afterSeq=-1", "?limit=0", "?limit=5000", "?afterSeq=abc"] {
        let (status, body) = get_json(
            &app,
            &format!("/api/sessions/{session}/events{bad}"),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    assert_eq!(get_json(&app, "/api/sessions", None).await.0, 401);
    assert_eq!(get_json(&app, "/api/sessions", Some("nope")).await.0, 401);
}
