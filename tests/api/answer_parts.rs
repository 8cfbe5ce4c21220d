//! The AI's whole answer: reasoning, tool activity and usage from a real
//! OpenAI-compatible upstream stub, estimated usage when the upstream says
//! nothing, and per-user token budgets on one instance and across two.

use serde_json::{json, Value};

use crate::common::cluster::Cluster;
use crate::common::{app_with_upstream, spawn_app, Exchange, TestApp, Upstream, WsClient};

/// The server on an OpenAI-compatible stub, with `extra` settings.
async fn openai_app(extra: &[(&str, &str)]) -> (TestApp, Upstream) {
    let upstream = Upstream::start().await;
    let base = upstream.openai_url();
    let mut env = vec![
        ("AI_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_MODEL", "stub-model"),
    ];
    env.extend_from_slice(extra);
    (spawn_app(&env).await, upstream)
}

/// The answer's messages of one type.
fn of_type<'a>(ex: &'a Exchange, kind: &str) -> Vec<&'a Value> {
    ex.messages.iter().filter(|m| m["type"] == kind).collect()
}

fn end(ex: &Exchange) -> &Value {
    ex.messages.last().expect("a stream-end")
}

/// The `quota` message right after the answer's `stream-end`, without its
/// timestamp.
async fn quota_after(client: &mut WsClient) -> Value {
    let mut m = client.recv_any().await;
    assert_eq!(m["type"], "quota", "{m}");
    assert!(
        m.get("seq").is_none(),
        "quota is no conversation event: {m}"
    );
    let stamp = m.as_object_mut().unwrap().remove("timestamp");
    assert!(stamp.is_some(), "{m}");
    m
}

fn quota(used: u64, limit: Option<u64>, resets: bool) -> Value {
    let mut q = json!({"type": "quota", "used": used, "limit": limit, "resetsAt": null});
    if resets {
        q["resetsAt"] = json!("<set>");
    }
    q
}

/// `m` with a set `resetsAt` written `<set>` (its value is checked apart).
fn shape(mut m: Value) -> Value {
    if m["resetsAt"].is_string() {
        m["resetsAt"] = json!("<set>");
    }
    m
}

#[tokio::test]
async fn reasoning_tool_calls_and_usage_from_an_openai_upstream() {
    let (app, upstream) = openai_app(&[]).await;
    let token = app.register("thinker").await;
    let (mut ws, hello) = app.connect(&token).await;
    assert_eq!(
        hello["quota"],
        json!({"used": 0, "limit": null, "resetsAt": null})
    );
    let ex = ws.chat("think-and-call").await;
    assert_eq!(ex.status, "completed");
    assert_eq!(ex.text(), "Here it is.");
    assert_eq!(
        upstream.last_request()["stream_options"],
        json!({"include_usage": true}),
        "the usage chunk is asked for"
    );
    let thinking = of_type(&ex, "stream-status");
    assert_eq!(thinking.len(), 1, "said once: {:?}", ex.messages);
    assert_eq!(thinking[0]["status"], "thinking");
    assert!(
        of_type(&ex, "stream-reasoning").is_empty(),
        "reasoning is not relayed by default"
    );
    let tools: Vec<(&str, &str, &str, bool)> = of_type(&ex, "tool-activity")
        .iter()
        .map(|m| {
            (
                m["toolCallId"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
                m["state"].as_str().unwrap(),
                m.get("arguments").is_some(),
            )
        })
        .collect();
    assert_eq!(
        tools,
        vec![
            ("call_a", "lookup", "started", false),
            ("call_b", "add", "started", false),
            ("call_a", "lookup", "finished", false),
            ("call_b", "add", "finished", false),
        ]
    );
    assert_eq!(
        end(&ex)["usage"],
        json!({"promptTokens": 11, "completionTokens": 22, "reasoningTokens": 7,
               "totalTokens": 33, "estimated": false})
    );
    assert_eq!(quota_after(&mut ws).await, quota(33, None, false));

    // A tab that comes back is replayed the same parts, in order.
    let session = ws_session(&hello);
    let (mut tab, _) = app.tab(&token, &session, Some(0)).await;
    let replayed = tab.collect_stream().await;
    let kinds = |ex: &Exchange| -> Vec<String> {
        ex.messages
            .iter()
            .map(|m| m["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&replayed), kinds(&ex));
    let (status, usage) = app.call(&token, "GET", "/api/usage", None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        usage,
        json!({"used": 33, "limit": null, "resetsAt": null, "window": "1d"})
    );
    let (_, metrics) = reqwest_text(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"chatbot_tokens_total{estimated="false",kind="reasoning"} 7"#),
        "{metrics}"
    );
}

fn ws_session(hello: &Value) -> String {
    hello["sessionId"].as_str().unwrap().to_owned()
}

async fn reqwest_text(app: &TestApp, path: &str) -> (u16, String) {
    let resp = reqwest::get(app.url(path)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn reasoning_and_arguments_are_relayed_when_configured() {
    let (app, _upstream) = openai_app(&[
        ("RELAY_REASONING", "true"),
        ("RELAY_TOOL_ARGUMENTS", "true"),
    ])
    .await;
    let token = app.register("relayed").await;
    let (mut ws, _) = app.connect(&token).await;
    let ex = ws.chat("think-and-call").await;
    let reasoning: String = of_type(&ex, "stream-reasoning")
        .iter()
        .map(|m| m["token"].as_str().unwrap())
        .collect();
    assert_eq!(reasoning, "Let me think. Checking tools.");
    assert_eq!(of_type(&ex, "stream-status").len(), 1);
    let arguments: Vec<&str> = of_type(&ex, "tool-activity")
        .iter()
        .filter(|m| m["state"] == "finished")
        .map(|m| m["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, [r#"{"q":"x"}"#, "{}"]);
}

#[tokio::test]
async fn without_upstream_usage_the_answer_is_estimated() {
    let (app, _upstream) = app_with_upstream(&[]).await;
    let token = app.register("counted").await;
    let (mut ws, _) = app.connect(&token).await;
    let ex = ws.chat("how many tokens is this").await;
    assert_eq!(ex.status, "completed");
    let usage = &end(&ex)["usage"];
    assert_eq!(usage["estimated"], true, "{usage}");
    let (prompt, completion) = (
        usage["promptTokens"].as_u64().unwrap(),
        usage["completionTokens"].as_u64().unwrap(),
    );
    // "Reply to: how many tokens is this" is 8 o200k tokens; the prompt is
    // the query (6) framed as one chat message.
    assert!((6..=20).contains(&prompt), "{usage}");
    assert!((5..=12).contains(&completion), "{usage}");
    assert_eq!(usage["reasoningTokens"], 0);
    let total = usage["totalTokens"].as_u64().unwrap();
    assert_eq!(total, prompt + completion);
    assert_eq!(quota_after(&mut ws).await, quota(total, None, false));
}

#[tokio::test]
async fn the_echo_model_is_counted_too() {
    let app = spawn_app(&[]).await;
    let token = app.register("echoed").await;
    let (mut ws, _) = app.connect(&token).await;
    let ex = ws.chat("hello there").await;
    assert_eq!(end(&ex)["usage"]["estimated"], true);
    assert!(end(&ex)["usage"]["totalTokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_used_up_budget_refuses_before_asking_the_ai() {
    let (app, upstream) = openai_app(&[("USER_TOKEN_BUDGET", "20")]).await;
    let token = app.register("spender").await;
    let (mut ws, hello) = app.connect(&token).await;
    assert_eq!(
        shape(hello["quota"].clone()),
        json!({"used": 0, "limit": 20, "resetsAt": "<set>"})
    );

    // 33 tokens: the answer crosses the budget of 20 mid-stream and finishes.
    let ex = ws.chat("think-and-call").await;
    assert_eq!(ex.status, "completed");
    let q = quota_after(&mut ws).await;
    assert_eq!(shape(q.clone()), quota(33, Some(20), true));
    let resets_at = q["resetsAt"].as_str().unwrap().to_owned();
    assert!(
        resets_at.ends_with("T00:00:00.000Z"),
        "a 1d window ends at UTC midnight: {resets_at}"
    );

    let asked = upstream.request_count();
    ws.send_json(json!({"type": "chat", "content": "one more?"}))
        .await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "budget_exhausted");
    assert_eq!(refused["resetsAt"], resets_at.as_str());
    assert!(
        refused.get("seq").is_none(),
        "nothing was logged: {refused}"
    );
    assert_eq!(upstream.request_count(), asked, "the AI was not asked");

    let (_, usage) = app.call(&token, "GET", "/api/usage", None).await;
    assert_eq!(usage["used"], 33);
    assert_eq!(usage["limit"], 20);
    assert_eq!(usage["resetsAt"], resets_at.as_str());
    let (_, again) = app.connect(&token).await;
    assert_eq!(again["quota"]["used"], 33);
    let (_, metrics) = reqwest_text(&app, "/metrics").await;
    assert!(
        metrics.contains("chatbot_budget_exhausted_total 1"),
        "{metrics}"
    );

    // An agent reads anyone's usage; a customer may not.
    let agent = app.register_agent("auditor").await;
    let id = hello["user"]["id"].as_str().unwrap();
    let (status, theirs) = app
        .call(&agent, "GET", &format!("/api/agent/users/{id}/usage"), None)
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["used"], 33);
    let (status, _) = app
        .call(&token, "GET", &format!("/api/agent/users/{id}/usage"), None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_budget_used_up_on_one_instance_is_refused_on_another() {
    let upstream = Upstream::start().await;
    let env = [
        ("FASTAPI_URL", upstream.url.as_str()),
        ("USER_TOKEN_BUDGET", "20"),
    ];
    let Some(cluster) = Cluster::start(2, "budget", &env).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let token = a.register("roamer").await;
    let (mut on_a, _) = a.connect(&token).await;
    let ex = on_a.chat("think-and-call").await;
    assert_eq!(ex.status, "completed");
    assert_eq!(end(&ex)["usage"]["totalTokens"], 33, "{:?}", ex.messages);
    let asked = upstream.request_count();

    let (mut on_b, hello) = b.connect(&token).await;
    assert_eq!(hello["quota"]["used"], 33, "{hello}");
    on_b.send_json(json!({"type": "chat", "content": "from elsewhere"}))
        .await;
    let refused = on_b.recv().await;
    assert_eq!(refused["code"], "budget_exhausted", "{refused}");
    assert_eq!(upstream.request_count(), asked, "the AI was not asked");
}
