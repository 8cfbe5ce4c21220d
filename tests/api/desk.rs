//! The support desk around a handoff: typing both ways, the summary an agent
//! gets on taking a conversation, the customer's satisfaction rating, and
//! the agents' canned replies. Copies of the real binary on the local Redis
//! (and so across instances) where it matters, or one in-process server.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, Upstream, WsClient};
use serde_json::{json, Value};

async fn agent_socket(app: &TestApp, token: &str) -> (WsClient, Value) {
    let url = format!("ws://{}/agent/ws?token={token}", app.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("agent socket connects");
    let mut client = WsClient { ws };
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connected", "{hello}");
    (client, hello)
}

/// Reads until a message matching `pred` arrives, returning it and what came before.
async fn until(client: &mut WsClient, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let m = client.recv().await;
        if pred(&m) {
            return (m, before);
        }
        before.push(m);
    }
}

fn of_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["type"] == kind
}

/// What arrives within `quiet` (nothing more after it).
async fn drain(client: &mut WsClient, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(m) = tokio::time::timeout(quiet, client.recv()).await {
        got.push(m);
    }
    got
}

fn typing_of(messages: &[Value]) -> Vec<bool> {
    messages
        .iter()
        .filter(|m| m["type"] == "typing")
        .map(|m| m["state"].as_bool().unwrap())
        .collect()
}

/// Escalates the customer's conversation and has the agent on `console`
/// claim it; returns once the console follows it.
async fn held_by(tab: &mut WsClient, console: &mut WsClient, session: &str) {
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(tab, of_type("handoff-queued")).await;
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(console, of_type("ack")).await;
    until(console, of_type("agent-joined")).await;
    until(tab, of_type("agent-joined")).await;
}

#[tokio::test]
async fn typing_reaches_the_other_side_across_instances_and_lapses_unrefreshed() {
    let upstream = Upstream::start().await;
    let env = [("FASTAPI_URL", upstream.url.as_str())];
    let Some(cluster) = common::cluster::Cluster::start(2, "desk-typing", &env).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let carol = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let dave = a.register_agent("dave").await;
    let (mut console, _) = agent_socket(b, &bob).await;
    let (mut tab_a, hello) = a.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut tab_b, _) = b.tab(&carol, &session, None).await;

    // While the bot answers, nobody hears the customer type.
    tab_a
        .send_json(json!({"type": "typing", "state": true}))
        .await;
    held_by(&mut tab_a, &mut console, &session).await;
    assert!(typing_of(&drain(&mut console, Duration::from_millis(300)).await).is_empty());
    // A tab that had to wait out its throttle first.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The customer types on A: Bob, on B, hears it.
    tab_a
        .send_json(json!({"type": "typing", "state": true}))
        .await;
    let (heard, _) = until(&mut console, of_type("typing")).await;
    assert_eq!(
        (heard["sessionId"].as_str(), heard["state"].as_bool()),
        (Some(session.as_str()), Some(true)),
        "{heard}"
    );
    assert!(heard["seq"].is_null(), "live only: {heard}");

    // Bob types: both of the customer's tabs hear it. A second "typing"
    // within the second is dropped; the "stopped" right after passes.
    for state in [true, true, false] {
        console
            .send_json(json!({"type": "typing", "sessionId": session, "state": state}))
            .await;
    }
    for tab in [&mut tab_a, &mut tab_b] {
        let seen = typing_of(&drain(tab, Duration::from_millis(500)).await);
        assert_eq!(seen, [true, false], "one start, one stop");
    }

    // Carol starts typing and goes quiet: Bob is told she stopped after 5 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tab_b
        .send_json(json!({"type": "typing", "state": true}))
        .await;
    let (heard, _) = until(&mut console, of_type("typing")).await;
    assert_eq!(heard["state"], true);
    let started = Instant::now();
    let (lapsed, _) = until(&mut console, of_type("typing")).await;
    assert_eq!(lapsed["state"], false, "{lapsed}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(7),
        "{waited:?}"
    );

    // Someone who does not hold the conversation cannot type into it.
    let (mut other, _) = agent_socket(a, &dave).await;
    other
        .send_json(json!({"type": "typing", "sessionId": session, "state": true}))
        .await;
    let (refused, _) = until(&mut other, of_type("error")).await;
    assert_eq!(refused["code"], "not_assigned", "{refused}");
    other
        .send_json(json!({"type": "typing", "sessionId": session}))
        .await;
    let (refused, _) = until(&mut other, of_type("error")).await;
    assert_eq!(refused["code"], "invalid_message", "{refused}");

    // Nothing of it is in the log.
    let (mut replay, _) = a.tab(&carol, &session, Some(0)).await;
    let replayed = drain(&mut replay, Duration::from_millis(500)).await;
    assert!(typing_of(&replayed).is_empty(), "{replayed:?}");
    assert!(replayed.iter().any(|m| m["type"] == "agent-joined"));
}

/// A customer's conversation with the bot, then a request for a human;
/// returns the tab and the session.
async fn asks_for_a_human(app: &TestApp, token: &str, said: &[&str]) -> (WsClient, String) {
    let (mut tab, hello) = app.connect(token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    for chat in said {
        assert_eq!(tab.chat(chat).await.status, "completed");
    }
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(&mut tab, of_type("handoff-queued")).await;
    (tab, session)
}

/// The summaries `console` gets within `within`, by session.
async fn summaries(console: &mut WsClient, within: Duration) -> Vec<(String, String)> {
    drain(console, within)
        .await
        .into_iter()
        .filter(|m| m["type"] == "handoff-summary")
        .map(|m| {
            assert!(m["seq"].is_null(), "live only: {m}");
            (
                m["sessionId"].as_str().unwrap().to_owned(),
                m["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_agent_taking_a_conversation_gets_the_echo_models_summary_of_it() {
    let app = common::spawn_app(&[]).await;
    let carol = app.register("carol").await;
    let erin = app.register("erin").await;
    let bob = app.register_agent("bob").await;
    let (mut console, _) = agent_socket(&app, &bob).await;
    let (_tab, session) = asks_for_a_human(&app, &carol, &["hello", "my order is late"]).await;

    // A claim on the socket: the ack does not wait for the summary.
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(&mut console, of_type("ack")).await;
    let got = summaries(&mut console, Duration::from_millis(1500)).await;
    assert_eq!(
        got,
        [(
            session.clone(),
            "Summary of the last 4 of 4 turns. customer: hello | assistant: You said: hello | \
             customer: my order is late | assistant: You said: my order is late"
                .to_owned()
        )]
    );

    // A claim through the REST mirror takes the same path.
    let (_tab, other) = asks_for_a_human(&app, &erin, &["where is my refund?"]).await;
    let path = format!("/api/agent/conversations/{other}/claim");
    let (status, _) = app.call(&bob, "POST", &path, None).await;
    assert_eq!(status, 200);
    let got = summaries(&mut console, Duration::from_millis(1500)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, other);
    assert!(
        got[0].1.contains("customer: where is my refund?"),
        "{got:?}"
    );
}

#[tokio::test]
async fn the_summary_comes_from_one_upstream_request_and_a_failing_upstream_gives_none() {
    let upstream = Upstream::start().await;
    let prompt = "Summarise it for the agent, please.";
    let app = common::spawn_process(&[
        ("FASTAPI_URL", upstream.url.as_str()),
        ("HANDOFF_SUMMARY_PROMPT", prompt),
        ("AI_MAX_RETRIES", "0"),
    ])
    .await;
    let app_view: &TestApp = &app;
    let carol = app_view.register("carol").await;
    let dora = app_view.register("dora").await;
    let bob = app_view.register_agent("bob").await;
    let (mut console, _) = agent_socket(app_view, &bob).await;
    let (_tab, session) = asks_for_a_human(app_view, &carol, &["my parcel is lost"]).await;
    let asked = upstream.request_count();
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    let got = summaries(&mut console, Duration::from_millis(1500)).await;
    assert_eq!(got, [(session.clone(), common::stub_reply(prompt))]);
    assert_eq!(upstream.request_count(), asked + 1, "exactly one request");
    let request = upstream.last_request();
    assert_eq!(request["query"], prompt, "{request}");
    let history = request["context"]["history"].to_string();
    assert!(history.contains("my parcel is lost"), "{history}");

    // The upstream fails: the claim goes through, the agent gets no summary.
    let (_tab, other) = asks_for_a_human(app_view, &dora, &["hi"]).await;
    upstream.set_down(Some(500));
    console
        .send_json(json!({"type": "claim", "sessionId": other}))
        .await;
    let (ack, _) = until(&mut console, of_type("ack")).await;
    assert_eq!(ack["sessionId"], other.as_str());
    assert!(summaries(&mut console, Duration::from_millis(1500))
        .await
        .is_empty());
    let log = app.log_text();
    assert!(log.contains("no summary for the agent"), "{log}");
    app.terminate();
}

#[tokio::test]
async fn without_summaries_the_upstream_is_not_asked() {
    let upstream = Upstream::start().await;
    let app = common::spawn_app(&[
        ("FASTAPI_URL", upstream.url.as_str()),
        ("HANDOFF_SUMMARY", "false"),
    ])
    .await;
    let carol = app.register("carol").await;
    let bob = app.register_agent("bob").await;
    let (mut console, _) = agent_socket(&app, &bob).await;
    let (_tab, session) = asks_for_a_human(&app, &carol, &["hello"]).await;
    let asked = upstream.request_count();
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    assert!(summaries(&mut console, Duration::from_millis(1000))
        .await
        .is_empty());
    assert_eq!(upstream.request_count(), asked);
}

#[tokio::test]
async fn after_a_resolve_the_customer_rates_the_conversation_and_the_agent_hears_it() {
    let app = common::spawn_app(&[]).await;
    let carol = app.register("carol").await;
    let erin = app.register("erin").await;
    let bob = app.register_agent("bob").await;
    let (mut console, _) = agent_socket(&app, &bob).await;
    let (mut tab, session) = asks_for_a_human(&app, &carol, &[]).await;
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(&mut tab, of_type("agent-joined")).await;

    // Nothing was asked yet.
    tab.send_json(json!({"type": "csat", "rating": 5})).await;
    let (refused, _) = until(&mut tab, of_type("error")).await;
    assert_eq!(refused["code"], "csat_not_requested", "{refused}");

    console
        .send_json(json!({"type": "resolve", "sessionId": session}))
        .await;
    let (resolved, _) = until(&mut tab, of_type("handoff-resolved")).await;
    let asked = tab.recv().await;
    assert_eq!(asked["type"], "csat-request", "{asked}");
    assert_eq!(asked["sessionId"], session.as_str());
    assert_eq!(asked["agent"]["username"], "bob");
    assert_eq!(
        asked["seq"].as_u64(),
        resolved["seq"].as_u64().map(|s| s + 1)
    );

    for (bad, code) in [
        (json!({"type": "csat", "rating": 0}), "invalid_csat"),
        (json!({"type": "csat", "rating": 6}), "invalid_csat"),
        (json!({"type": "csat", "rating": 4.5}), "invalid_csat"),
        (json!({"type": "csat", "rating": "4"}), "invalid_csat"),
        (
            json!({"type": "csat", "rating": 4, "comment": 7}),
            "invalid_csat",
        ),
        (
            json!({"type": "csat", "rating": 4, "comment": "x".repeat(1001)}),
            "comment_too_long",
        ),
    ] {
        tab.send_json(bad.clone()).await;
        let (refused, _) = until(&mut tab, of_type("error")).await;
        assert_eq!(refused["code"], code, "{bad} -> {refused}");
    }

    // An answer, then a second that replaces it: each acked, logged, heard by Bob.
    for (rating, comment) in [(2, Some("slow")), (5, None)] {
        let mut said = json!({"type": "csat", "rating": rating});
        if let Some(c) = comment {
            said["comment"] = json!(c);
        }
        tab.send_json(said).await;
        let (ack, _) = until(&mut tab, of_type("ack")).await;
        assert!(ack["messageId"].is_null(), "{ack}");
        let (logged, _) = until(&mut tab, of_type("csat")).await;
        assert_eq!(logged["seq"], ack["seq"]);
        assert_eq!(logged["rating"], rating);
        assert_eq!(logged["comment"].as_str(), comment);
        let (heard, _) = until(&mut console, of_type("csat")).await;
        assert_eq!(
            (heard["sessionId"].as_str(), heard["rating"].as_u64()),
            (Some(session.as_str()), Some(rating as u64)),
            "{heard}"
        );
    }

    // Kept with the transcript: the latest answer only.
    let store =
        chatbot_server::adapters::outbound::sqlite_transcripts::SqliteTranscriptStore::open(
            &app.sqlite_path,
        )
        .await
        .unwrap();
    let sid = chatbot_server::domain::SessionId::parse(&session).unwrap();
    let kept = chatbot_server::application::ports::TranscriptStore::csat(&store, &sid)
        .await
        .unwrap()
        .expect("kept");
    let (answer, _) = kept.answer.expect("answered");
    assert_eq!(answer.rating.get(), 5);
    assert_eq!(answer.comment, None);
    assert_eq!(kept.agent.username.as_str(), "bob");

    // Counted: both answers.
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("chatbot_csat_rating_count 2"), "{metrics}");
    assert!(metrics.contains("chatbot_csat_rating_sum 7"), "{metrics}");

    // Erin was never asked anything in her own conversation.
    let (mut other, _) = app.connect(&erin).await;
    other.send_json(json!({"type": "csat", "rating": 3})).await;
    let (refused, _) = until(&mut other, of_type("error")).await;
    assert_eq!(refused["code"], "csat_not_requested");
}

async fn list(app: &TestApp, token: &str) -> (u16, Value) {
    app.call(token, "GET", "/api/agent/replies", None).await
}

async fn save(app: &TestApp, token: &str, shortcut: &str, content: &str) -> (u16, Value) {
    let body = json!({"shortcut": shortcut, "content": content});
    app.call(token, "POST", "/api/agent/replies", Some(body))
        .await
}

#[tokio::test]
async fn agents_keep_their_own_canned_replies_over_rest() {
    let app = common::spawn_app(&[]).await;
    let bob = app.register_agent("bob").await;
    let ann = app.register_agent("ann").await;
    let carol = app.register("carol").await;
    let (status, body) = list(&app, &bob).await;
    assert_eq!((status, body), (200, json!({"replies": []})));

    let (status, body) = save(&app, &bob, "/thanks", "Thank you for waiting!").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"shortcut": "thanks", "content": "Thank you for waiting!"})
    );
    let (status, _) = save(&app, &bob, "thanks", "Thanks a lot!").await;
    assert_eq!(status, 200, "replaced");
    let (status, _) = save(&app, &ann, "thanks", "Cheers.").await;
    assert_eq!(status, 201);
    let (_, body) = list(&app, &bob).await;
    assert_eq!(
        body,
        json!({"replies": [{"shortcut": "thanks", "content": "Thanks a lot!"}]})
    );

    let long = "x".repeat(2001);
    for (shortcut, content) in [("Two Words", "x"), ("ok", "  "), ("ok", long.as_str())] {
        let (status, body) = save(&app, &bob, shortcut, content).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_reply")),
            "{body}"
        );
    }
    for i in 1..100 {
        let (status, _) = save(&app, &bob, &format!("r{i}"), "filler").await;
        assert_eq!(status, 201, "{i}");
    }
    let (status, body) = save(&app, &bob, "one-too-many", "x").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_replies"))
    );
    let (status, _) = save(&app, &bob, "r7", "still replaceable").await;
    assert_eq!(status, 200);

    let (status, _) = app
        .call(&bob, "DELETE", "/api/agent/replies/thanks", None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = app
        .call(&bob, "DELETE", "/api/agent/replies/thanks", None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("reply_not_found"))
    );
    let (_, body) = list(&app, &ann).await;
    assert_eq!(body["replies"][0]["content"], "Cheers.", "ann's are apart");

    let (status, body) = list(&app, &carol).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("agent_only")));
}

// ------------------------------------------- the desk across instances

/// The `agents` messages' view of one agent: (status, conversations).
fn on_desk(m: &Value, name: &str) -> Option<(String, u64)> {
    m["agents"].as_array()?.iter().find_map(|a| {
        (a["username"] == name).then(|| {
            (
                a["status"].as_str().unwrap_or_default().to_owned(),
                a["conversations"].as_u64().unwrap_or(u64::MAX),
            )
        })
    })
}

/// Reads `agents` messages until `name` shows as `want`.
async fn desk_shows(console: &mut WsClient, name: &str, want: (&str, u64)) -> Value {
    let want = (want.0.to_owned(), want.1);
    let deadline = Duration::from_secs(8);
    let found = tokio::time::timeout(deadline, async {
        loop {
            let m = console.recv().await;
            if m["type"] == "agents" && on_desk(&m, name).as_ref() == Some(&want) {
                return m;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("the desk never showed {name} as {want:?}"))
}

#[tokio::test]
async fn every_console_shows_each_agents_presence_and_load_across_instances() {
    let Some(cluster) = common::cluster::Cluster::start(2, "desk-presence", &[]).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann = a.register_agent("ann").await;
    let ben = a.register_agent("ben").await;
    let carol = a.register("carol").await;
    let (mut console, _) = agent_socket(a, &ann).await;
    desk_shows(&mut console, "ann", ("available", 0)).await;

    // Ben comes online on the other instance, goes away, comes back.
    let (mut bens, _) = agent_socket(b, &ben).await;
    let shown = desk_shows(&mut console, "ben", ("available", 0)).await;
    assert_eq!(on_desk(&shown, "ann"), Some(("available".into(), 0)));
    assert!(shown["timestamp"].is_string(), "{shown}");
    desk_shows(&mut bens, "ann", ("available", 0)).await;
    bens.send_json(json!({"type": "status", "status": "away"}))
        .await;
    desk_shows(&mut console, "ben", ("away", 0)).await;

    // Ben takes a conversation: every console counts it.
    bens.send_json(json!({"type": "status", "status": "available"}))
        .await;
    let (mut tab, hello) = a.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    held_by(&mut tab, &mut bens, &session).await;
    desk_shows(&mut console, "ben", ("available", 1)).await;

    // Ben closes his console: offline, still holding it (within the grace).
    drop(bens);
    desk_shows(&mut console, "ben", ("offline", 1)).await;
}

#[tokio::test]
async fn ratings_and_summaries_survive_a_console_reload_and_the_transcript_has_the_rating() {
    let Some(cluster) = common::cluster::Cluster::start(2, "desk-kept", &[]).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let bob = a.register_agent("bob").await;
    let carol = a.register("carol").await;
    let (mut console, hello) = agent_socket(a, &bob).await;
    assert_eq!(hello["ratings"], json!([]), "{hello}");
    let (mut tab, session) = asks_for_a_human(a, &carol, &["my parcel 124 is late"]).await;
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    let (summary, _) = until(&mut console, of_type("handoff-summary")).await;
    let summary = summary["summary"].as_str().unwrap().to_owned();
    assert!(summary.contains("my parcel 124 is late"), "{summary}");

    // The console reloads on the other instance: the summary comes with the conversation.
    drop(console);
    let (mut console, hello) = agent_socket(b, &bob).await;
    let held = &hello["conversations"][0];
    assert_eq!(held["sessionId"], session.as_str(), "{hello}");
    assert_eq!(held["summary"], summary.as_str(), "{hello}");

    // Resolved and rated: the rating is in the transcript and in the next console's greeting.
    console
        .send_json(json!({"type": "resolve", "sessionId": session}))
        .await;
    until(&mut tab, of_type("csat-request")).await;
    tab.send_json(json!({"type": "csat", "rating": 4, "comment": "Quick, thanks"}))
        .await;
    until(&mut tab, of_type("ack")).await;
    until(&mut console, of_type("csat")).await;
    let path = format!("/api/sessions/{session}/messages");
    for token in [&carol, &bob] {
        let (status, body) = b.call(token, "GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        let csat = &body["csat"];
        assert_eq!(csat["rating"], 4, "{body}");
        assert_eq!(csat["comment"], "Quick, thanks");
        assert_eq!(csat["agent"]["username"], "bob");
        assert!(common::is_iso_millis(csat["answeredAt"].as_str().unwrap()));
        assert!(common::is_iso_millis(csat["requestedAt"].as_str().unwrap()));
    }
    drop(console);
    let (_console, hello) = agent_socket(a, &bob).await;
    let rating = &hello["ratings"][0];
    assert_eq!(rating["sessionId"], session.as_str(), "{hello}");
    assert_eq!(rating["rating"], 4);
    assert_eq!(rating["comment"], "Quick, thanks");
    assert_eq!(rating["customer"], "carol");
    assert!(common::is_iso_millis(
        rating["answeredAt"].as_str().unwrap()
    ));
}

#[tokio::test]
async fn typing_is_limited_per_sender_not_per_tab_or_console() {
    let app = common::spawn_process(&[]).await;
    let carol = app.register("carol").await;
    let bob = app.register_agent("bob").await;
    let (mut console, _) = agent_socket(&app, &bob).await;
    let (mut second_console, _) = agent_socket(&app, &bob).await;
    let (mut tab_a, hello) = app.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut tab_b, _) = app.tab(&carol, &session, None).await;
    held_by(&mut tab_a, &mut console, &session).await;
    // The second console follows it too.
    second_console
        .send_json(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    until(&mut second_console, of_type("ack")).await;
    drain(&mut console, Duration::from_millis(300)).await;

    // Two tabs of one customer within a second: one start reaches Bob.
    tab_a
        .send_json(json!({"type": "typing", "state": true}))
        .await;
    tab_b
        .send_json(json!({"type": "typing", "state": true}))
        .await;
    let heard = typing_of(&drain(&mut console, Duration::from_millis(700)).await);
    assert_eq!(heard, [true], "one per second per sender");

    // Bob types in two consoles within a second: each tab hears one start.
    drain(&mut tab_a, Duration::from_millis(200)).await;
    drain(&mut tab_b, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for c in [&mut console, &mut second_console] {
        c.send_json(json!({"type": "typing", "sessionId": session, "state": true}))
            .await;
    }
    for tab in [&mut tab_a, &mut tab_b] {
        let seen = typing_of(&drain(tab, Duration::from_millis(700)).await);
        assert_eq!(seen, [true], "one per second per sender");
    }
    app.terminate();
}

/// A customer's tabs on two instances share one typing rate too: the start
/// of typing is counted in the shared store, not only on each instance.
#[tokio::test]
async fn typing_is_limited_per_sender_across_instances() {
    let Some(cluster) = common::cluster::Cluster::start(2, "desk-typing", &[]).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let carol = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut console, _) = agent_socket(a, &bob).await;
    let (mut tab_a, hello) = a.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut tab_b, _) = b.tab(&carol, &session, None).await;
    held_by(&mut tab_a, &mut console, &session).await;
    drain(&mut console, Duration::from_millis(300)).await;

    for round in 0..3 {
        tab_a
            .send_json(json!({"type": "typing", "state": true}))
            .await;
        tab_b
            .send_json(json!({"type": "typing", "state": true}))
            .await;
        let heard = typing_of(&drain(&mut console, Duration::from_millis(700)).await);
        assert_eq!(
            heard,
            [true],
            "round {round}: one start per second per sender"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

#[tokio::test]
async fn one_agents_simultaneous_claims_on_two_instances_never_pass_capacity() {
    let env = [("AGENT_MAX_CONVERSATIONS", "1")];
    let Some(cluster) = common::cluster::Cluster::start(2, "desk-capacity", &env).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let bob = a.register_agent("bob").await;
    // Four consoles of one agent, two per instance.
    let mut consoles = Vec::new();
    for node in [a, b, a, b] {
        consoles.push(agent_socket(node, &bob).await.0);
    }
    for round in 0..4 {
        let mut tabs = Vec::new();
        let mut sessions = Vec::new();
        for i in 0..consoles.len() {
            let customer = a.register(&format!("cust{round}x{i}")).await;
            let (tab, session) = asks_for_a_human(a, &customer, &[]).await;
            tabs.push(tab);
            sessions.push(session);
        }
        // Each console claims a different one, all at once.
        let id = format!("race{round}");
        let claims = consoles.iter_mut().zip(&sessions).map(|(c, s)| {
            let id = id.clone();
            async move {
                c.send_json(json!({"type": "claim", "sessionId": s, "requestId": id}))
                    .await;
                let (answer, _) = until(c, |m| m["requestId"] == id.as_str()).await;
                answer
            }
        });
        let answers = futures_util::future::join_all(claims).await;
        let won: Vec<&Value> = answers.iter().filter(|m| m["type"] == "ack").collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        for lost in answers.iter().filter(|m| m["type"] != "ack") {
            assert_eq!(lost["code"], "agent_at_capacity", "round {round}: {lost}");
        }
        let winner = won[0]["sessionId"].as_str().unwrap().to_owned();
        let (status, body) = a.call(&bob, "GET", "/api/agent/conversations", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
        let path = format!("/api/agent/conversations/{winner}/resolve");
        let (status, _) = a.call(&bob, "POST", &path, None).await;
        assert_eq!(status, 200);
        for c in consoles.iter_mut() {
            drain(c, Duration::from_millis(100)).await;
        }
    }
}
