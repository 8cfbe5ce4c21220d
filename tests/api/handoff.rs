//! Human handoff across instances: copies of the real binary on the local
//! Redis, a real SSE upstream stub, customers on `/ws` and agents on
//! `/agent/ws`. The bot must never answer while a human holds the
//! conversation, exactly one claim wins, and nothing is lost or repeated.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, Upstream, WsClient};
use serde_json::{json, Value};

/// Instances on one Redis prefix and the AI stub they share.
struct Cluster {
    instances: common::cluster::Cluster,
    upstream: Upstream,
}

impl Cluster {
    /// `None` (after saying SKIPPED) when Redis does not answer outside CI.
    async fn start(n: usize, extra: &[(&str, &str)]) -> Option<Self> {
        let upstream = Upstream::start().await;
        let mut env = vec![("FASTAPI_URL", upstream.url.as_str())];
        env.extend_from_slice(extra);
        let instances = common::cluster::Cluster::start(n, "handoff", &env).await?;
        Some(Self {
            instances,
            upstream,
        })
    }

    fn node(&self, i: usize) -> &TestApp {
        &self.instances.nodes[i]
    }
}

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

/// A queue message listing `session`.
fn queue_with(session: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m: &Value| {
        m["type"] == "queue"
            && m["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["sessionId"] == session))
    }
}

#[tokio::test]
async fn an_agent_on_another_instance_takes_over_and_the_bot_steps_aside_until_resolved() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let dave = a.register_agent("dave").await;
    let (mut on_b, hello) = agent_socket(b, &bob).await;
    assert_eq!(hello["agent"]["username"], "bob");
    until(&mut on_b, of_type("queue")).await;
    let (mut dave_on_c, _) = agent_socket(c, &dave).await;

    // The customer, with a second tab on C, talks to the bot, then asks for a human.
    let (mut tab_a, hello) = a.connect(&customer).await;
    assert_eq!(hello["mode"], "bot");
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut tab_c, _) = c.tab(&customer, &session, None).await;
    assert_eq!(tab_a.chat("hello").await.status, "completed");
    tab_a.send_json(json!({"type": "human-escalation"})).await;
    let (queued, before) = until(&mut tab_a, of_type("handoff-queued")).await;
    let response = before.last().unwrap();
    assert_eq!(response["type"], "human-escalation-response");
    assert_eq!(
        queued["seq"].as_u64(),
        response["seq"].as_u64().map(|s| s + 1)
    );
    assert_eq!(queued["agentsOnline"], 2);
    let (item, _) = until(&mut on_b, queue_with(&session)).await;
    let entry = &item["items"].as_array().unwrap()[0];
    assert_eq!(entry["user"]["username"], "carol");
    assert!(entry["waitingSince"].is_string());
    assert_eq!(entry["lastMessage"], "hello", "what the customer last said");

    // Bob claims on B; Dave's claim on C loses.
    on_b.send_json(json!({"type": "claim", "sessionId": session, "requestId": "r1"}))
        .await;
    let (ack, _) = until(&mut on_b, of_type("ack")).await;
    assert_eq!(
        (ack["action"].as_str(), ack["requestId"].as_str()),
        (Some("claim"), Some("r1"))
    );
    dave_on_c
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    let (refused, _) = until(&mut dave_on_c, of_type("error")).await;
    assert_eq!(refused["code"], "already_claimed", "{refused}");
    let (joined, _) = until(&mut tab_c, of_type("agent-joined")).await;
    assert_eq!(joined["agent"]["username"], "bob");
    // Bob's summary of the conversation is the one request the claim makes.
    let (summary, _) = until(&mut on_b, of_type("handoff-summary")).await;
    assert_eq!(summary["sessionId"], session.as_str());

    // The customer's chat reaches Bob, not the AI.
    let asked = cluster.upstream.request_count();
    tab_a
        .send_json(json!({"type": "chat", "content": "my order is late", "clientMessageId": "c-1"}))
        .await;
    let (ack, _) = until(&mut tab_a, of_type("ack")).await;
    assert_eq!(ack["clientMessageId"], "c-1");
    let (heard, _) = until(&mut on_b, of_type("user-message")).await;
    assert_eq!(
        (heard["content"].as_str(), heard["sessionId"].as_str()),
        (Some("my order is late"), Some(session.as_str()))
    );
    assert!(heard["seq"].is_u64());

    // Bob answers; both tabs get it with the same seq.
    on_b.send_json(
        json!({"type": "agent-message", "sessionId": session, "content": "I have sent a courier."}),
    )
    .await;
    let (ack, _) = until(&mut on_b, of_type("ack")).await;
    let seq = ack["seq"].as_u64().unwrap();
    for tab in [&mut tab_a, &mut tab_c] {
        let (said, _) = until(tab, of_type("agent-message")).await;
        assert_eq!(said["content"], "I have sent a courier.");
        assert_eq!(said["agent"]["username"], "bob");
        assert_eq!(said["seq"].as_u64(), Some(seq));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.upstream.request_count(),
        asked,
        "the AI was never asked while muted"
    );

    // Bob resolves: the AI answers the next chat, knowing what Bob said.
    on_b.send_json(json!({"type": "resolve", "sessionId": session}))
        .await;
    until(&mut on_b, of_type("ack")).await;
    until(&mut tab_a, of_type("handoff-resolved")).await;
    until(&mut tab_a, of_type("csat-request")).await;
    let answer = tab_a.chat("thanks, anything else?").await;
    assert_eq!(answer.status, "completed");
    let history = cluster.upstream.last_request()["context"]["history"].clone();
    assert!(
        history
            .as_array()
            .unwrap()
            .contains(&json!({"role": "assistant", "content": "I have sent a courier."})),
        "the agent's words are in the AI's context: {history}"
    );
}

#[tokio::test]
async fn escalating_mid_answer_ends_the_answer_first_and_a_cancel_gives_the_bot_back() {
    let Some(cluster) = Cluster::start(1, &QUEUE_ALWAYS).await else {
        return;
    };
    let a = cluster.node(0);
    let token = a.register("carol").await;
    let (mut tab, _) = a.connect(&token).await;
    tab.send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    until(&mut tab, of_type("stream-token")).await;
    tab.send_json(json!({"type": "human-escalation"})).await;
    let (end, _) = until(&mut tab, of_type("stream-end")).await;
    assert_eq!(end["status"], "cancelled");
    let response = tab.recv().await;
    assert_eq!(response["type"], "human-escalation-response", "{response}");
    assert_eq!(response["seq"].as_u64(), end["seq"].as_u64().map(|s| s + 1));
    let queued = tab.recv().await;
    assert_eq!(queued["type"], "handoff-queued", "{queued}");

    tab.send_json(json!({"type": "handoff-cancel"})).await;
    until(&mut tab, of_type("handoff-cancelled")).await;
    tab.send_json(json!({"type": "handoff-cancel"})).await;
    let (refused, _) = until(&mut tab, of_type("error")).await;
    assert_eq!(refused["code"], "not_queued");
    assert_eq!(tab.chat("back to the bot").await.status, "completed");
}

#[tokio::test]
async fn an_unclaimed_conversation_times_out_back_to_the_bot() {
    let Some(cluster) = Cluster::start(
        2,
        &[
            ("HANDOFF_QUEUE_TIMEOUT", "1s"),
            QUEUE_ALWAYS[0],
            QUEUE_ALWAYS[1],
        ],
    )
    .await
    else {
        return;
    };
    let token = cluster.node(0).register("carol").await;
    let (mut tab, _) = cluster.node(0).connect(&token).await;
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(&mut tab, of_type("handoff-queued")).await;
    let queued_at = Instant::now();
    until(&mut tab, of_type("handoff-timeout")).await;
    let waited = queued_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "not before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "within 2 s of it: {waited:?}"
    );
    assert_eq!(tab.chat("still there?").await.status, "completed");
}

#[tokio::test]
async fn an_agent_away_past_the_grace_loses_the_conversation_to_the_queue() {
    let Some(cluster) = Cluster::start(
        2,
        &[("AGENT_AWAY_GRACE", "1s"), QUEUE_ALWAYS[0], QUEUE_ALWAYS[1]],
    )
    .await
    else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(&mut tab, of_type("handoff-queued")).await;
    let (mut on_b, _) = agent_socket(b, &bob).await;
    on_b.send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(&mut on_b, of_type("ack")).await;
    until(&mut tab, of_type("agent-joined")).await;
    drop(on_b);
    let (left, _) = until(&mut tab, of_type("agent-left")).await;
    assert_eq!(left["agent"]["username"], "bob");
    let requeued = tab.recv().await;
    assert_eq!(requeued["type"], "handoff-queued", "{requeued}");
    let (status, queue) = a.call(&bob, "GET", "/api/agent/queue", None).await;
    assert_eq!(status, 200, "{queue}");
    assert!(queue_with(&session)(
        &json!({"type": "queue", "items": queue["items"]})
    ));
}

#[tokio::test]
async fn an_agents_watch_replays_exactly_what_it_missed() {
    let Some(cluster) = Cluster::start(2, &QUEUE_ALWAYS).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(&mut tab, of_type("handoff-queued")).await;
    let (mut on_b, _) = agent_socket(b, &bob).await;
    on_b.send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(&mut on_b, of_type("ack")).await;
    let (joined, _) = until(&mut on_b, of_type("agent-joined")).await;
    let last_seen = joined["seq"].as_u64().unwrap();
    drop(on_b);

    // While Bob's console is away (within the grace), the customer writes.
    for i in 0..3 {
        tab.send_json(json!({"type": "chat", "content": format!("are you there {i}?")}))
            .await;
        until(&mut tab, of_type("user-message")).await;
    }
    let (mut back, hello) = agent_socket(a, &bob).await;
    assert_eq!(
        hello["conversations"][0]["sessionId"],
        session.as_str(),
        "{hello}"
    );
    back.send_json(json!({"type": "watch", "sessionId": session, "lastSeq": last_seen}))
        .await;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let m = back.recv().await;
        if m["sessionId"] == session.as_str() && m.get("seq").is_some() {
            replayed.push(m);
        }
    }
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![last_seen + 1, last_seen + 2, last_seen + 3]);
    assert_eq!(replayed[2]["content"], "are you there 2?");
}

#[tokio::test]
async fn only_agents_reach_the_agent_socket_and_routes() {
    let Some(cluster) = Cluster::start(1, &[]).await else {
        return;
    };
    let a = cluster.node(0);
    let customer = a.register("carol").await;
    let url = format!("ws://{}/agent/ws?token={customer}", a.addr);
    assert_eq!(a.connect_refused_status(url).await, 403);
    for (method, path) in [
        ("GET", "/api/agent/queue"),
        ("GET", "/api/agent/conversations"),
        ("POST", "/api/agent/conversations/sess_x/claim"),
    ] {
        let (status, body) = a.call(&customer, method, path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("agent_only")),
            "{method} {path}"
        );
    }

    // A demoted agent loses access at once, even on a socket already open.
    let dave = a.register_agent("dave").await;
    let (mut console, _) = agent_socket(a, &dave).await;
    let (status, _) = a.call(&dave, "GET", "/api/agent/queue", None).await;
    assert_eq!(status, 200);
    a.set_role("dave", "user").await;
    let (status, body) = a.call(&dave, "GET", "/api/agent/queue", None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("agent_only")));
    console
        .send_json(json!({"type": "claim", "sessionId": "sess_x"}))
        .await;
    let (refused, _) = until(&mut console, of_type("error")).await;
    assert_eq!(refused["code"], "agent_only", "{refused}");
    let url = format!("ws://{}/agent/ws?token={dave}", a.addr);
    assert_eq!(a.connect_refused_status(url).await, 403);
}

#[tokio::test]
async fn the_rest_mirrors_claim_reply_and_release() {
    let Some(cluster) = Cluster::start(2, &QUEUE_ALWAYS).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let dave = a.register_agent("dave").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(&mut tab, of_type("handoff-queued")).await;

    let claim = format!("/api/agent/conversations/{session}/claim");
    let (status, body) = b.call(&bob, "POST", &claim, None).await;
    assert_eq!(
        (status, body["mode"].as_str()),
        (200, Some("assigned")),
        "{body}"
    );
    let (status, body) = a.call(&dave, "POST", &claim, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_claimed"))
    );
    let (status, mine) = a.call(&bob, "GET", "/api/agent/conversations", None).await;
    assert_eq!(status, 200);
    assert_eq!(mine["items"][0]["sessionId"], session.as_str());

    let messages = format!("/api/agent/conversations/{session}/messages");
    let (status, sent) = b
        .call(
            &bob,
            "POST",
            &messages,
            Some(json!({"content": "Hi, Bob here."})),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let (said, _) = until(&mut tab, of_type("agent-message")).await;
    assert_eq!(said["seq"], sent["seq"]);
    let (status, body) = a
        .call(&dave, "POST", &messages, Some(json!({"content": "me too"})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_assigned"))
    );

    let release = format!("/api/agent/conversations/{session}/release");
    let (status, body) = b.call(&bob, "POST", &release, None).await;
    assert_eq!(
        (status, body["mode"].as_str()),
        (200, Some("queued")),
        "{body}"
    );
    until(&mut tab, of_type("agent-left")).await;
    let (status, _) = a.call(&dave, "POST", &claim, None).await;
    assert_eq!(status, 200, "released conversations can be claimed again");
}

/// Escalates the customer's conversation and has the agent on `console` claim it.
async fn held_by(tab: &mut WsClient, console: &mut WsClient, session: &str) {
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(tab, of_type("handoff-queued")).await;
    console
        .send_json(json!({"type": "claim", "sessionId": session}))
        .await;
    until(console, of_type("ack")).await;
    until(tab, of_type("agent-joined")).await;
}

/// The customer sees the agent leave and the conversation queued again,
/// in that order, with nothing in between.
async fn given_back(tab: &mut WsClient, agent: &str) {
    let (left, _) = until(tab, of_type("agent-left")).await;
    assert_eq!(left["agent"]["username"], agent, "{left}");
    let requeued = tab.recv().await;
    assert_eq!(requeued["type"], "handoff-queued", "{requeued}");
    assert_eq!(
        requeued["seq"].as_u64(),
        left["seq"].as_u64().map(|s| s + 1)
    );
}

/// The next error, then the close code of a socket the server closes.
async fn refused_then_closed(console: &mut WsClient) -> (String, Option<u16>) {
    let (error, _) = until(console, of_type("error")).await;
    let code = console.closed(Duration::from_secs(10)).await;
    (error["code"].as_str().unwrap_or_default().to_owned(), code)
}

#[tokio::test]
async fn a_demoted_agent_is_closed_out_and_their_conversation_goes_back_to_the_queue() {
    // The default grace (2 min) is far off: only the demotion can explain it.
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = agent_socket(b, &bob).await;
    held_by(&mut tab, &mut on_b, &session).await;

    // The operator's command, another process, demotes Bob while B holds his socket.
    a.set_role("bob", "user").await;
    assert_eq!(
        refused_then_closed(&mut on_b).await,
        ("agent_only".to_owned(), Some(4003))
    );
    given_back(&mut tab, "bob").await;
    let dave = a.register_agent("dave").await;
    let (status, queue) = b.call(&dave, "GET", "/api/agent/queue", None).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["items"][0]["sessionId"], session.as_str(), "{queue}");
}

#[tokio::test]
async fn a_demoted_agent_without_a_socket_loses_what_they_held() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = agent_socket(b, &bob).await;
    held_by(&mut tab, &mut on_b, &session).await;
    drop(on_b);

    b.set_role("bob", "user").await;
    given_back(&mut tab, "bob").await;
}

#[tokio::test]
async fn an_agent_logging_out_everywhere_is_closed_and_gives_back_at_once() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = agent_socket(b, &bob).await;
    held_by(&mut tab, &mut on_b, &session).await;

    let (status, body) = a.call(&bob, "POST", "/api/auth/logout-all", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        refused_then_closed(&mut on_b).await,
        ("token_revoked".to_owned(), Some(4001))
    );
    given_back(&mut tab, "bob").await;
}

#[tokio::test]
async fn a_deactivated_agent_is_closed_out_and_their_conversation_goes_back_to_the_queue() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let (mut tab, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = agent_socket(b, &bob).await;
    held_by(&mut tab, &mut on_b, &session).await;

    // Deactivated directly in the shared store, as an operator's tool would.
    let db = rusqlite::Connection::open(&a.sqlite_path).unwrap();
    db.execute("UPDATE users SET is_active = 0 WHERE username = 'bob'", [])
        .unwrap();
    drop(db);
    assert_eq!(
        refused_then_closed(&mut on_b).await,
        ("invalid_token".to_owned(), Some(4001))
    );
    given_back(&mut tab, "bob").await;
}

// ------------------------------------------------ nobody left in silence

/// The handoff settings under which a conversation waits in the queue even
/// with nobody online: what the tests of the queue's own mechanics need.
const QUEUE_ALWAYS: [(&str, &str); 2] =
    [("HANDOFF", "on"), ("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")];

/// Asks for a human and returns every message up to the
/// `human-escalation-response`, then whatever else arrives within `quiet`.
async fn escalate(tab: &mut WsClient, quiet: Duration) -> Vec<Value> {
    tab.send_json(json!({"type": "human-escalation"})).await;
    let (response, mut seen) = until(tab, of_type("human-escalation-response")).await;
    seen.push(response);
    seen.extend(drain(tab, quiet).await);
    seen
}

/// Whatever the socket receives within `quiet`.
async fn drain(tab: &mut WsClient, quiet: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Ok(m) = tokio::time::timeout(quiet, tab.recv()).await {
        seen.push(m);
    }
    seen
}

fn types(messages: &[Value]) -> Vec<&str> {
    messages.iter().filter_map(|m| m["type"].as_str()).collect()
}

/// The seed's flow on a fresh install (no agent account): chat, ask for a
/// human, chat again. The Node.js server answered the request and kept
/// answering; so must we, with nothing a Node-era client does not know.
#[tokio::test]
async fn without_an_agent_account_a_request_for_a_human_is_answered_and_the_bot_keeps_answering() {
    let (app, upstream) = common::app_with_upstream(&[]).await;
    let token = app.register("carol").await;
    let (mut tab, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(tab.chat("hello").await.status, "completed");

    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(types(&seen), ["human-escalation-response"], "{seen:?}");
    assert_eq!(seen[0]["message"], "A human agent will contact you soon.");

    let asked = upstream.request_count();
    let again = tab.chat("still there?").await;
    assert_eq!(again.status, "completed");
    assert_eq!(again.text(), common::stub_reply("still there?"));
    assert_eq!(upstream.request_count(), asked + 1, "the AI answered");

    drop(tab);
    let (_, hello) = app.tab(&token, &session, None).await;
    assert_eq!(hello["mode"], "bot", "{hello}");
}

/// `HANDOFF=off` is the seed's behaviour even with agents online.
#[tokio::test]
async fn handoff_off_answers_like_the_node_server_even_with_agents_online() {
    let (app, _upstream) = common::app_with_upstream(&[("HANDOFF", "off")]).await;
    let customer = app.register("carol").await;
    let bob = app.register_agent("bob").await;
    let (_console, _) = agent_socket(&app, &bob).await;
    let (mut tab, _) = app.connect(&customer).await;
    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(types(&seen), ["human-escalation-response"], "{seen:?}");
    assert_eq!(tab.chat("and now?").await.status, "completed");
}

/// With handoff in use but no agent online, the customer is told so and the
/// bot keeps answering (`bot`, the default), or the conversation waits
/// anyway (`queue`); a running answer is not cancelled by the former.
#[tokio::test]
async fn with_nobody_online_the_customer_is_told_or_waits_as_configured() {
    let (app, _upstream) = common::app_with_upstream(&[
        ("HANDOFF", "on"),
        (
            "HANDOFF_OFFLINE_MESSAGE",
            "Nobody is in. The assistant stays with you.",
        ),
    ])
    .await;
    let token = app.register("carol").await;
    let (mut tab, _) = app.connect(&token).await;
    tab.send_json(json!({"type": "chat", "content": "a long question"}))
        .await;
    until(&mut tab, of_type("stream-start")).await;
    tab.send_json(json!({"type": "human-escalation"})).await;
    let mut seen = until_stream_end_and(&mut tab, "handoff-unavailable").await;
    let end = seen.iter().find(|m| m["type"] == "stream-end").unwrap();
    assert_eq!(end["status"], "completed", "the answer ran to its end");
    seen.retain(|m| m["type"] != "stream-token" && m["type"] != "stream-end");
    assert_eq!(
        types(&seen),
        ["human-escalation-response", "handoff-unavailable"],
        "{seen:?}"
    );
    assert_eq!(
        seen[0]["message"],
        "Nobody is in. The assistant stays with you."
    );
    assert_eq!(seen[1]["reason"], "no_agent_online");
    assert_eq!(
        seen[1]["seq"].as_u64(),
        seen[0]["seq"].as_u64().map(|s| s + 1)
    );
    assert_eq!(tab.chat("ok, you then").await.status, "completed");

    let (app, _upstream) = common::app_with_upstream(&QUEUE_ALWAYS).await;
    let token = app.register("dan").await;
    let (mut tab, _) = app.connect(&token).await;
    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(
        types(&seen),
        ["human-escalation-response", "handoff-queued"],
        "{seen:?}"
    );
    assert_eq!(seen[1]["agentsOnline"], 0);
}

/// Reads until both a `stream-end` and a message of `kind` have arrived.
async fn until_stream_end_and(tab: &mut WsClient, kind: &str) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    while !(seen.iter().any(|m| m["type"] == "stream-end")
        && seen.iter().any(|m| m["type"] == kind))
    {
        seen.push(tab.recv().await);
    }
    seen
}

/// Agents exist but none is online: `auto` with the defaults tells the
/// customer, and an agent made by `users set-role` while two instances run
/// turns `auto` on for both within 10 s, without a restart.
#[tokio::test]
async fn an_agent_made_while_running_turns_handoff_on_across_instances() {
    let Some(cluster) = Cluster::start(2, &[("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")]).await
    else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let carol = a.register("carol").await;
    let (mut on_a, _) = a.connect(&carol).await;
    let (mut on_b, _) = b.connect(&carol).await;
    // Both instances have read "no agent account" (and cached it).
    for tab in [&mut on_a, &mut on_b] {
        let seen = escalate(tab, Duration::from_millis(300)).await;
        assert_eq!(types(&seen), ["human-escalation-response"], "{seen:?}");
    }

    a.register("bob").await;
    a.set_role("bob", "agent").await;
    let made = Instant::now();
    for (name, tab) in [("A", &mut on_a), ("B", &mut on_b)] {
        loop {
            let seen = escalate(tab, Duration::from_millis(300)).await;
            if types(&seen).contains(&"handoff-queued") {
                break;
            }
            assert!(
                made.elapsed() < Duration::from_secs(10),
                "{name} still answers without a queue: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Agents exist and none is online: the default (`bot`) says so.
#[tokio::test]
async fn with_agents_but_none_online_the_default_keeps_the_bot() {
    let (app, _upstream) = common::app_with_upstream(&[]).await;
    let customer = app.register("carol").await;
    let bob = app.register_agent("bob").await;
    let (mut tab, _) = app.connect(&customer).await;
    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(
        types(&seen),
        ["human-escalation-response", "handoff-unavailable"],
        "{seen:?}"
    );
    assert!(seen[0]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("No agent is available right now")));
    assert_eq!(tab.chat("fine").await.status, "completed");

    // Once Bob's console is open, the same request reaches the queue.
    let (_console, _) = agent_socket(&app, &bob).await;
    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(
        types(&seen),
        ["human-escalation-response", "handoff-queued"],
        "{seen:?}"
    );
    assert_eq!(seen[1]["agentsOnline"], 1);
}

/// Three customers wait; each chat of a queued customer is answered at once
/// by `handoff-waiting` with where they stand, on any instance.
#[tokio::test]
async fn a_waiting_customers_chat_is_answered_with_their_place_in_line() {
    let Some(cluster) = Cluster::start(2, &QUEUE_ALWAYS).await else {
        return;
    };
    let mut tabs = Vec::new();
    for (i, name) in ["ann", "ben", "cat"].into_iter().enumerate() {
        let node = cluster.node(i % 2);
        let token = node.register(name).await;
        let (mut tab, _) = node.connect(&token).await;
        tab.send_json(json!({"type": "human-escalation"})).await;
        until(&mut tab, of_type("handoff-queued")).await;
        tabs.push(tab);
        // Distinct waiting times, so the order is the order of asking.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = cluster.upstream.request_count();
    for (i, tab) in tabs.iter_mut().enumerate().rev() {
        tab.send_json(json!({"type": "chat", "content": "anyone?"}))
            .await;
        let said = tab.recv().await;
        assert_eq!(said["type"], "user-message", "{said}");
        let waiting = tab.recv().await;
        assert_eq!(waiting["type"], "handoff-waiting", "{waiting}");
        assert_eq!(waiting["position"], i as u64 + 1, "{waiting}");
        assert_eq!(waiting["agentsOnline"], 0);
        assert_eq!(waiting["seq"].as_u64(), said["seq"].as_u64().map(|s| s + 1));
    }
    assert_eq!(
        cluster.upstream.request_count(),
        asked,
        "the bot stayed muted"
    );

    // The first in line gives up: the others move up.
    tabs[0].send_json(json!({"type": "handoff-cancel"})).await;
    until(&mut tabs[0], of_type("handoff-cancelled")).await;
    tabs[2]
        .send_json(json!({"type": "chat", "content": "and now?"}))
        .await;
    let (waiting, _) = until(&mut tabs[2], of_type("handoff-waiting")).await;
    assert_eq!(waiting["position"], 2, "{waiting}");
}

// ------------------------------------------------ where the customer stands

/// Asks for a human on `tab` and returns its `handoff-queued`.
async fn queue_up(tab: &mut WsClient) -> Value {
    tab.send_json(json!({"type": "human-escalation"})).await;
    until(tab, of_type("handoff-queued")).await.0
}

/// The `queue-position`s among `messages`.
fn moves(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "queue-position")
        .collect()
}

/// Three customers wait on two instances; each move up the line reaches
/// every tab of the customer who moved, once, on whatever instance it is,
/// and the estimate appears once a conversation has been taken.
#[tokio::test]
async fn waiting_customers_are_told_each_move_once_on_every_tab() {
    let Some(cluster) = Cluster::start(2, &QUEUE_ALWAYS).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut tabs = Vec::new();
    let mut sessions = Vec::new();
    for (i, name) in ["ann", "ben", "cat"].into_iter().enumerate() {
        let token = cluster.node(i % 2).register(name).await;
        let (mut tab, hello) = cluster.node(i % 2).connect(&token).await;
        let queued = queue_up(&mut tab).await;
        assert_eq!(queued["position"], i as u64 + 1, "{queued}");
        assert!(queued["estimatedWaitSeconds"].is_null(), "{queued}");
        let session = hello["sessionId"].as_str().unwrap().to_owned();
        if name == "ben" {
            // Ben has a second tab, on the other instance.
            let (other, _) = a.tab(&token, &session, None).await;
            tabs.push(other);
        }
        tabs.push(tab);
        sessions.push(session);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [ann, ben_on_a, ben_on_b, cat] = &mut tabs[..] else {
        unreachable!()
    };
    let bob = b.register_agent("bob").await;
    let (mut console, _) = agent_socket(b, &bob).await;
    let (queue, _) = until(&mut console, queue_with(&sessions[2])).await;
    let positions: Vec<u64> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3], "{queue}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    console
        .send_json(json!({"type": "claim", "sessionId": sessions[0]}))
        .await;
    until(ann, of_type("agent-joined")).await;
    for (tab, want) in [(ben_on_a, 1), (ben_on_b, 1), (&mut *cat, 2)] {
        let (moved, _) = until(tab, of_type("queue-position")).await;
        assert_eq!(moved["position"], want, "{moved}");
        let estimate = moved["estimatedWaitSeconds"].as_u64();
        assert!(estimate.is_some_and(|s| s >= 1), "{moved}");
        // The timers of both instances look again every second: nothing more.
        let later = drain(tab, Duration::from_millis(2500)).await;
        assert!(moves(&later).is_empty(), "told twice: {later:?}");
    }

    // Ben gives up: Cat is next, told once.
    tabs[1].send_json(json!({"type": "handoff-cancel"})).await;
    let (moved, _) = until(&mut tabs[3], of_type("queue-position")).await;
    assert_eq!(moved["position"], 1, "{moved}");
    let later = drain(&mut tabs[3], Duration::from_millis(1500)).await;
    assert!(moves(&later).is_empty(), "told twice: {later:?}");
}

// ------------------------------------------------ capacity

/// An agent holding `AGENT_MAX_CONVERSATIONS` is refused another claim, on
/// the socket and over REST, until one is resolved.
#[tokio::test]
async fn an_agent_at_capacity_is_refused_until_one_is_resolved() {
    let extra = [
        QUEUE_ALWAYS[0],
        QUEUE_ALWAYS[1],
        ("AGENT_MAX_CONVERSATIONS", "2"),
    ];
    let Some(cluster) = Cluster::start(2, &extra).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut sessions = Vec::new();
    let mut tabs = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let token = a.register(name).await;
        let (mut tab, hello) = a.connect(&token).await;
        queue_up(&mut tab).await;
        sessions.push(hello["sessionId"].as_str().unwrap().to_owned());
        tabs.push(tab);
    }
    let bob = b.register_agent("bob").await;
    let (mut console, _) = agent_socket(b, &bob).await;
    for session in &sessions[..2] {
        console
            .send_json(json!({"type": "claim", "sessionId": session}))
            .await;
        let (ack, _) = until(&mut console, of_type("ack")).await;
        assert_eq!(ack["action"], "claim");
    }
    console
        .send_json(json!({"type": "claim", "sessionId": sessions[2], "requestId": "r3"}))
        .await;
    let (refused, _) = until(&mut console, of_type("error")).await;
    assert_eq!(refused["code"], "agent_at_capacity", "{refused}");
    assert_eq!(refused["requestId"], "r3");
    let rest = reqwest::Client::new()
        .post(a.url(&format!("/api/agent/conversations/{}/claim", sessions[2])))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 409);
    let body: Value = rest.json().await.unwrap();
    assert_eq!(body["error"], "agent_at_capacity", "{body}");

    // The third customer still waits; once Bob resolves one, he may take it.
    console
        .send_json(json!({"type": "resolve", "sessionId": sessions[0]}))
        .await;
    until(&mut console, of_type("ack")).await;
    console
        .send_json(json!({"type": "claim", "sessionId": sessions[2]}))
        .await;
    let (ack, _) = until(&mut console, of_type("ack")).await;
    assert_eq!(ack["action"], "claim", "{ack}");
    until(&mut tabs[2], of_type("agent-joined")).await;
}

// ------------------------------------------------ auto-assignment

const AUTO: [(&str, &str); 4] = [
    QUEUE_ALWAYS[0],
    QUEUE_ALWAYS[1],
    ("HANDOFF_ASSIGN", "auto"),
    ("AGENT_MAX_CONVERSATIONS", "2"),
];

/// The `conversation-assigned` session ids an agent console gets within `quiet`.
async fn assigned_to(console: &mut WsClient, quiet: Duration) -> Vec<String> {
    drain(console, quiet)
        .await
        .iter()
        .filter(|m| m["type"] == "conversation-assigned")
        .map(|m| m["conversation"]["sessionId"].as_str().unwrap().to_owned())
        .collect()
}

/// With `HANDOFF_ASSIGN=auto` on two instances, each waiting conversation
/// goes to exactly one agent, by load: two agents with room for two get two
/// each; a fifth waits until one of them resolves, then goes to that one.
#[tokio::test]
async fn auto_assignment_gives_each_conversation_once_to_the_least_loaded_agent() {
    let Some(cluster) = Cluster::start(2, &AUTO).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let bob = a.register_agent("bob").await;
    let dave = b.register_agent("dave").await;
    let (mut bob_console, hello) = agent_socket(a, &bob).await;
    assert_eq!(
        (hello["assign"].as_str(), hello["status"].as_str()),
        (Some("auto"), Some("available"))
    );
    let (mut dave_console, _) = agent_socket(b, &dave).await;
    let mut tabs = Vec::new();
    for (i, name) in ["ann", "ben", "cat", "dan", "eve"].into_iter().enumerate() {
        let node = cluster.node(i % 2);
        let token = node.register(name).await;
        let (mut tab, hello) = node.connect(&token).await;
        queue_up(&mut tab).await;
        tabs.push((tab, hello["sessionId"].as_str().unwrap().to_owned()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet = Duration::from_millis(2500);
    let (to_bob, to_dave) = tokio::join!(
        assigned_to(&mut bob_console, quiet),
        assigned_to(&mut dave_console, quiet)
    );
    assert_eq!(
        (to_bob.len(), to_dave.len()),
        (2, 2),
        "{to_bob:?} {to_dave:?}"
    );
    let mut all: Vec<&String> = to_bob.iter().chain(&to_dave).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "four different conversations");
    let (fifth_tab, fifth) = tabs.pop().unwrap();
    assert!(
        !all.contains(&&fifth),
        "the last to ask waits: both are full"
    );
    // The first four customers were each joined exactly once.
    for (tab, session) in &mut tabs {
        let seen = drain(tab, Duration::from_millis(200)).await;
        let joined = seen.iter().filter(|m| m["type"] == "agent-joined").count();
        assert_eq!(joined, 1, "{session}: {seen:?}");
    }

    // Dave resolves one: the fifth goes to him, once.
    let done = to_dave[0].clone();
    dave_console
        .send_json(json!({"type": "resolve", "sessionId": done}))
        .await;
    let later = assigned_to(&mut dave_console, quiet).await;
    assert_eq!(later, [fifth], "to the agent with room");
    assert!(assigned_to(&mut bob_console, Duration::from_millis(300))
        .await
        .is_empty());
    let mut fifth_tab = fifth_tab;
    let seen = drain(&mut fifth_tab, Duration::from_millis(300)).await;
    let joined: Vec<&Value> = seen
        .iter()
        .filter(|m| m["type"] == "agent-joined")
        .collect();
    assert_eq!(joined.len(), 1, "{seen:?}");
    assert_eq!(joined[0]["agent"]["username"], "dave");
    let info: Value = reqwest::get(b.url("/api/websocket/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let handoff = &info["agentSocket"]["handoff"];
    assert_eq!(
        (
            handoff["assign"].as_str(),
            handoff["maxConversations"].as_u64()
        ),
        (Some("auto"), Some(2)),
        "{info}"
    );
    assert!(handoff["officeHours"].is_null(), "{info}");
    let metrics = reqwest::get(a.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chatbot_handoff_wait_seconds_count{outcome=\"auto\"}"),
        "{metrics}"
    );
}

/// An agent who says they are away gets nothing assigned until they are
/// available again; then what waits goes to them at once.
#[tokio::test]
async fn an_away_agent_is_given_nothing_until_available() {
    let Some(cluster) = Cluster::start(2, &AUTO).await else {
        return;
    };
    let (a, b) = (cluster.node(0), cluster.node(1));
    let bob = a.register_agent("bob").await;
    let (mut console, _) = agent_socket(a, &bob).await;
    console
        .send_json(json!({"type": "status", "status": "away"}))
        .await;
    let (status, _) = until(&mut console, of_type("status")).await;
    assert_eq!(status["status"], "away");
    let token = b.register("carol").await;
    let (mut tab, hello) = b.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    queue_up(&mut tab).await;
    assert!(
        assigned_to(&mut console, Duration::from_millis(2500))
            .await
            .is_empty(),
        "nothing while away"
    );
    // A second console of Bob's, on the other instance, is told he is away.
    let (_, hello) = agent_socket(b, &bob).await;
    assert_eq!(hello["status"], "away");

    console
        .send_json(json!({"type": "status", "status": "available"}))
        .await;
    let (assigned, _) = until(&mut console, of_type("conversation-assigned")).await;
    assert_eq!(assigned["conversation"]["sessionId"], session);
    let (joined, _) = until(&mut tab, of_type("agent-joined")).await;
    assert_eq!(joined["agent"]["username"], "bob");
}

// ------------------------------------------------ office hours

/// `HH:MM` of `t`, or `24:00` for a midnight that closes.
fn hhmm(t: chrono::DateTime<chrono::Utc>, closing: bool) -> String {
    let s = t.format("%H:%M").to_string();
    if closing && s == "00:00" {
        "24:00".to_owned()
    } else {
        s
    }
}

/// Outside the office hours a request for a human stays with the bot, told
/// `HANDOFF_CLOSED_MESSAGE` and when the desk opens, even with agents online.
#[tokio::test]
async fn outside_office_hours_the_bot_stays_and_says_when_people_are_back() {
    use chrono::{Duration as Span, Timelike, Utc};
    // Open for one minute, two hours from now, every day: closed now.
    let start = (Utc::now() + Span::hours(2))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let hours = format!(
        "Mon-Sun {}-{}",
        hhmm(start, false),
        hhmm(start + Span::minutes(1), true)
    );
    let extra = [
        ("HANDOFF", "on"),
        ("HANDOFF_HOURS", hours.as_str()),
        ("HANDOFF_CLOSED_MESSAGE", "We are closed; back soon."),
    ];
    let Some(cluster) = Cluster::start(1, &extra).await else {
        return;
    };
    let a = cluster.node(0);
    let bob = a.register_agent("bob").await;
    let (_console, _) = agent_socket(a, &bob).await;
    let token = a.register("carol").await;
    let (mut tab, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let seen = escalate(&mut tab, Duration::from_millis(300)).await;
    assert_eq!(
        types(&seen),
        ["human-escalation-response", "handoff-unavailable"],
        "{seen:?}"
    );
    assert_eq!(seen[0]["message"], "We are closed; back soon.");
    let info: Value = reqwest::get(a.url("/api/websocket/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let handoff = &info["agentSocket"]["handoff"];
    assert_eq!(handoff["officeHours"], hours.as_str(), "{info}");
    assert_eq!(handoff["timeZone"], "UTC", "{info}");
    assert_eq!(seen[1]["reason"], "closed");
    let opens_at: chrono::DateTime<Utc> = seen[1]["opensAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(opens_at, start, "{seen:?}");
    assert_eq!(
        tab.chat("still there?").await.status,
        "completed",
        "the bot answers"
    );
    drop(tab);
    let (_, hello) = a.tab(&token, &session, None).await;
    assert_eq!(hello["mode"], "bot");
}

/// A conversation still waiting when the desk closes goes back to the bot
/// with `handoff-timeout`, within the timers' second.
#[tokio::test]
async fn a_conversation_still_waiting_at_closing_time_goes_back_to_the_bot() {
    use chrono::{Duration as Span, Timelike, Utc};
    let mut now = Utc::now();
    if now.second() >= 50 {
        // Too close to the minute's end to queue before it: the next one.
        tokio::time::sleep(Duration::from_secs(u64::from(61 - now.second()))).await;
        now = Utc::now();
    }
    let minute = now.with_second(0).unwrap().with_nanosecond(0).unwrap();
    let closes = minute + Span::minutes(1);
    let hours = format!("Mon-Sun {}-{}", hhmm(minute, false), hhmm(closes, true));
    let extra = [
        QUEUE_ALWAYS[0],
        QUEUE_ALWAYS[1],
        ("HANDOFF_HOURS", hours.as_str()),
        // The tab reads nothing until closing time, pongs included.
        ("WS_PONG_TIMEOUT", "5m"),
    ];
    let Some(cluster) = Cluster::start(1, &extra).await else {
        return;
    };
    let a = cluster.node(0);
    let token = a.register("carol").await;
    let (mut tab, _) = a.connect(&token).await;
    let queued = queue_up(&mut tab).await;
    assert_eq!(queued["position"], 1, "open now: {queued}");
    let left = (closes - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
    let (timeout, _) = until(&mut tab, of_type("handoff-timeout")).await;
    let at: chrono::DateTime<Utc> = timeout["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(at >= closes, "not before closing: {timeout}");
    assert!(
        at < closes + Span::seconds(3),
        "within the timers' tick: {timeout}"
    );
    assert_eq!(
        tab.chat("hello?").await.status,
        "completed",
        "the bot is back"
    );
}
