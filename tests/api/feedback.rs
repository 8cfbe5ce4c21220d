//! Feedback and regenerate over a real socket: a rating reaches every tab
//! (and the log, so it replays), is kept with the answer's transcript entry,
//! replaces an earlier one and is counted; bad ratings are refused with their
//! codes. `regenerate` answers the last message again with a new
//! `stream-start` replying to it, the AI no longer sees the superseded answer,
//! and it is refused while an answer runs, in handoff, and before any chat.
//! With Redis, the same replays through the Redis log's codec.

use crate::common;

use common::redis::on_fresh_prefix;
use common::{app_with_upstream, Exchange, TestApp, Upstream, WsClient};
use serde_json::{json, Value};

async fn transcript(app: &TestApp, token: &str, session: &str) -> Vec<Value> {
    let (status, body) = app
        .call(
            token,
            "GET",
            &format!("/api/sessions/{session}/messages"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// The transcript entry with `id`.
fn entry<'a>(messages: &'a [Value], id: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["messageId"] == id)
        .unwrap_or_else(|| panic!("{id} in {messages:?}"))
}

/// The next two frames, which are an `ack` (to this socket only) and a
/// `feedback` event (from the log), in whichever order they came.
async fn ack_and_event(ws: &mut WsClient) -> (Value, Value) {
    let (a, b) = (ws.recv().await, ws.recv().await);
    if a["type"] == "ack" {
        (a, b)
    } else {
        (b, a)
    }
}

fn rate(id: &str, rating: &str, comment: Option<&str>) -> Value {
    let mut frame = json!({"type": "feedback", "messageId": id, "rating": rating});
    if let Some(c) = comment {
        frame["comment"] = json!(c);
    }
    frame
}

/// The error that answers `frame`.
async fn refusal(ws: &mut WsClient, frame: Value) -> Value {
    ws.send_json(frame).await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply.get("seq").is_none(),
        "a refusal takes no seq: {reply}"
    );
    reply
}

async fn scrape(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_reaches_every_tab_replaces_the_last_one_and_stays_with_the_answer() {
    let app = common::spawn_app(&[]).await;
    let alice = app.register("alice").await;
    let (mut first, hello) = app.connect(&alice).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let answer = first.chat("hello there").await;
    assert_eq!(answer.status, "completed");
    let (mut second, _) = app.tab(&alice, &session, None).await;

    first
        .send_json(rate(&answer.message_id, "down", Some("Not what I asked.")))
        .await;
    let (ack, event) = ack_and_event(&mut first).await;
    assert_eq!(ack["messageId"], answer.message_id.as_str(), "{ack}");
    assert!(ack.get("clientMessageId").is_none(), "{ack}");
    assert_eq!(event["type"], "feedback", "{event}");
    assert_eq!(
        (&event["messageId"], &event["rating"], &event["comment"]),
        (
            &json!(answer.message_id),
            &json!("down"),
            &json!("Not what I asked.")
        )
    );
    assert_eq!(ack["seq"], event["seq"], "the ack names the event's seq");
    let elsewhere = second.recv().await;
    assert_eq!(elsewhere, event, "the other tab gets the same event");

    let messages = transcript(&app, &alice, &session).await;
    assert_eq!(
        entry(&messages, &answer.message_id)["feedback"],
        json!({"rating": "down", "comment": "Not what I asked."})
    );

    // Changing one's mind replaces the rating, comment and all.
    first.send_json(rate(&answer.message_id, "up", None)).await;
    let (ack, event) = ack_and_event(&mut first).await;
    assert_eq!(event["rating"], "up", "{event}");
    assert!(event.get("comment").is_none(), "{event}");
    assert!(ack["seq"].as_u64() > elsewhere["seq"].as_u64());
    assert_eq!(second.recv().await["rating"], "up");
    let messages = transcript(&app, &alice, &session).await;
    assert_eq!(
        entry(&messages, &answer.message_id)["feedback"],
        json!({"rating": "up"})
    );
    let user_entry = messages.iter().find(|m| m["role"] == "user").unwrap();
    assert!(user_entry.get("feedback").is_none(), "{user_entry}");

    // Both ratings were counted.
    let text = scrape(&app).await;
    assert_eq!(
        metric(&text, "chatbot_feedback_total{rating=\"up\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "chatbot_feedback_total{rating=\"down\"}"),
        Some(1.0)
    );

    // A tab that comes back replays both, in order.
    let (mut late, _) = app.tab(&alice, &session, Some(0)).await;
    let mut ratings = Vec::new();
    while ratings.len() < 2 {
        let m = late.recv().await;
        if m["type"] == "feedback" {
            ratings.push(m["rating"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ratings, ["down", "up"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ratings_are_refused_with_their_codes_and_change_nothing() {
    let app = common::spawn_app(&[]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (mut ws, _) = app.connect(&alice).await;
    let answer = ws.chat("hello").await;
    let asked = answer.messages[0]["replyTo"].as_str().unwrap().to_owned();
    let (mut other, hello) = app.connect(&bob).await;
    let bobs_session = hello["sessionId"].as_str().unwrap().to_owned();
    let bobs = other.chat("mine").await;

    let long = "x".repeat(1001);
    let cases = [
        (
            rate(&answer.message_id, "up", Some(&long)),
            "comment_too_long",
        ),
        (rate(&answer.message_id, "meh", None), "invalid_feedback"),
        (
            json!({"type": "feedback", "rating": "up"}),
            "invalid_feedback",
        ),
        (rate("msg_nope", "up", None), "message_not_found"),
        (rate(&bobs.message_id, "down", None), "message_not_found"),
        (rate(&asked, "up", None), "not_an_answer"),
    ];
    for (frame, code) in cases {
        let reply = refusal(&mut ws, frame.clone()).await;
        assert_eq!(reply["code"], code, "{frame}: {reply}");
    }
    // The longest comment is fine.
    ws.send_json(rate(&answer.message_id, "up", Some(&"é".repeat(1000))))
        .await;
    let (ack, _) = ack_and_event(&mut ws).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let bobs_entries = transcript(&app, &bob, &bobs_session).await;
    assert!(
        bobs_entries.iter().all(|m| m.get("feedback").is_none()),
        "{bobs_entries:?}"
    );
}

/// The regenerated answer: its stream, which must reply to `asked`.
async fn regenerated(ws: &mut WsClient, asked: &str) -> Exchange {
    ws.send_json(json!({"type": "regenerate"})).await;
    let again = ws.collect_stream().await;
    assert_eq!(
        again.messages[0]["replyTo"], asked,
        "{:?}",
        again.messages[0]
    );
    again
}

fn said(history: &Value) -> Vec<(String, String)> {
    history
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn turn(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

/// What `upstream` was asked last: its query and the history it was given.
fn last_asked(upstream: &Upstream) -> (String, Vec<(String, String)>) {
    let request = upstream.last_request();
    (
        request["query"].as_str().unwrap().to_owned(),
        said(&request["context"]["history"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_answers_the_last_message_again_without_the_old_answer() {
    let (app, upstream) = app_with_upstream(&[]).await;
    let alice = app.register("alice").await;
    let (mut ws, hello) = app.connect(&alice).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut other_tab, _) = app.tab(&alice, &session, None).await;
    let first = ws.chat("first question").await;
    let second = ws.chat("second question").await;
    let asked = second.messages[0]["replyTo"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        other_tab.collect_stream().await;
    }

    let again = regenerated(&mut ws, &asked).await;
    assert_eq!(again.status, "completed");
    assert_ne!(again.message_id, second.message_id, "a new answer");
    let seen = other_tab.collect_stream().await;
    assert_eq!(seen.message_id, again.message_id, "every tab gets it");
    assert_eq!(upstream.request_count(), 3);
    let first_reply = common::stub_reply("first question");
    assert_eq!(
        last_asked(&upstream),
        (
            "second question".to_owned(),
            vec![
                turn("user", "first question"),
                turn("assistant", &first_reply)
            ]
        ),
        "asked again with the context the first answer had"
    );

    // Regenerating twice supersedes both, and the AI never sees either.
    let third = regenerated(&mut ws, &asked).await;
    let next = ws.chat("third question").await;
    assert_eq!(next.status, "completed");
    assert_eq!(
        last_asked(&upstream).1,
        vec![
            turn("user", "first question"),
            turn("assistant", &first_reply),
            turn("user", "second question"),
            turn("assistant", &third.text()),
        ],
        "only the latest answer to the second question is in the context"
    );

    let messages = transcript(&app, &alice, &session).await;
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "assistant",
            "assistant",
            "user",
            "assistant"
        ],
        "the superseded answers stay in the transcript"
    );
    let superseded = |id: &str| entry(&messages, id).get("superseded").cloned();
    assert_eq!(superseded(&second.message_id), Some(json!(true)));
    assert_eq!(superseded(&again.message_id), Some(json!(true)));
    assert_eq!(superseded(&third.message_id), None);
    assert_eq!(superseded(&first.message_id), None);
    assert_eq!(superseded(&next.message_id), None);

    // The superseded answer is still in the log: a replay shows both starts.
    let (mut replay, _) = app.tab(&alice, &session, Some(0)).await;
    let mut starts = Vec::new();
    while starts.len() < 5 {
        let m = replay.recv().await;
        if m["type"] == "stream-start" {
            starts.push(m["messageId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        starts,
        [
            first.message_id,
            second.message_id,
            again.message_id,
            third.message_id,
            next.message_id
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_is_refused_before_any_chat_while_an_answer_runs_and_in_handoff() {
    let env = [("HANDOFF", "on"), ("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")];
    let (app, upstream) = app_with_upstream(&env).await;
    let alice = app.register("alice").await;
    let (mut ws, _) = app.connect(&alice).await;

    let reply = refusal(&mut ws, json!({"type": "regenerate"})).await;
    assert_eq!(reply["code"], "nothing_to_regenerate", "{reply}");

    ws.send_json(json!({"type": "chat", "content": "slow:40"}))
        .await;
    let running = loop {
        let m = ws.recv().await;
        if m["type"] == "stream-token" {
            break m["messageId"].as_str().unwrap().to_owned();
        }
    };
    ws.send_json(json!({"type": "regenerate"})).await;
    let reply = loop {
        let m = ws.recv().await;
        if m["type"] == "error" {
            break m;
        }
    };
    assert_eq!(reply["code"], "generation_in_progress", "{reply}");
    assert_eq!(
        reply["messageId"],
        running.as_str(),
        "names the running one"
    );
    ws.send_json(json!({"type": "stop"})).await;
    ws.until_stream_end().await;

    ws.send_json(json!({"type": "human-escalation"})).await;
    loop {
        if ws.recv().await["type"] == "handoff-queued" {
            break;
        }
    }
    let before = upstream.request_count();
    let reply = refusal(&mut ws, json!({"type": "regenerate"})).await;
    assert_eq!(reply["code"], "handoff_active", "{reply}");
    ws.send_json(json!({"type": "handoff-cancel"})).await;
    loop {
        if ws.recv().await["type"] == "handoff-cancelled" {
            break;
        }
    }
    assert_eq!(upstream.request_count(), before, "nothing was asked");

    // Back with the bot, the cancelled answer's question is asked again.
    ws.send_json(json!({"type": "regenerate"})).await;
    let again = ws.collect_stream().await;
    assert_eq!(again.status, "completed");
    assert_eq!(upstream.last_request()["query"], "slow:40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_ratings_and_regenerated_answers_replay_from_the_log() {
    on_fresh_prefix("feedback", |url, prefix| async move {
        let upstream = Upstream::start().await;
        let env = [
            ("FASTAPI_URL", upstream.url.as_str()),
            ("REDIS_URL", url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
        ];
        let app = common::spawn_app(&env).await;
        let alice = app.register("alice").await;
        let (mut ws, hello) = app.connect(&alice).await;
        let session = hello["sessionId"].as_str().unwrap().to_owned();
        let first = ws.chat("first question").await;
        let asked = first.messages[0]["replyTo"].as_str().unwrap().to_owned();
        ws.send_json(rate(&first.message_id, "down", Some("Too short.")))
            .await;
        let (_, rated) = ack_and_event(&mut ws).await;
        let again = regenerated(&mut ws, &asked).await;
        assert_eq!(again.status, "completed");
        assert_eq!(
            upstream.last_request()["context"]["history"],
            json!([]),
            "the Redis session forgot the superseded answer"
        );

        let (mut replay, _) = app.tab(&alice, &session, Some(0)).await;
        let mut kinds = Vec::new();
        loop {
            let m = replay.recv().await;
            if m["type"] == "feedback" {
                assert_eq!(m, rated, "replayed exactly as it was sent");
            }
            let done = m["type"] == "stream-end" && m["messageId"] == again.message_id.as_str();
            kinds.push(m["type"].as_str().unwrap().to_owned());
            if done {
                break;
            }
        }
        let starts = kinds.iter().filter(|k| *k == "stream-start").count();
        assert!(kinds.contains(&"feedback".to_owned()), "{kinds:?}");
        assert_eq!(starts, 2, "{kinds:?}");
    })
    .await;
}
