//! Any instance serves any client: three copies of the real binary on one
//! local Redis (sharing one SQLite users file, as MongoDB would in
//! production), driven by real WebSocket clients. No sticky sessions: a client
//! chats on A, watches from B, reconnects to C mid-answer and stops from C.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_consecutive, Upstream};
use serde_json::{json, Value};

/// Three instances on one Redis key prefix, and the AI stub they share.
struct Cluster {
    instances: common::cluster::Cluster,
    upstream: Upstream,
}

impl std::ops::Deref for Cluster {
    type Target = common::cluster::Cluster;
    fn deref(&self) -> &Self::Target {
        &self.instances
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.instances
    }
}

impl Cluster {
    /// `None` (after saying SKIPPED) when Redis does not answer outside CI.
    async fn start(extra: &[(&str, &str)]) -> Option<Self> {
        let upstream = Upstream::start().await;
        let mut env = vec![("FASTAPI_URL", upstream.url.as_str())];
        env.extend_from_slice(extra);
        let instances = common::cluster::Cluster::start(3, "mi", &env).await?;
        Some(Self {
            instances,
            upstream,
        })
    }
}

#[tokio::test]
async fn tabs_on_other_instances_see_everything_and_a_cut_client_resumes_elsewhere() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = b.tab(&token, &session, None).await;

    on_a.send_json(json!({"type": "chat", "content": "fast:200"}))
        .await;
    let watched = on_b.until_stream_end().await;
    assert_eq!(watched[0]["type"], "user-message");
    assert_eq!(watched[0]["content"], "fast:200");
    assert_consecutive(&watched, 1);
    let tokens = watched
        .iter()
        .filter(|m| m["type"] == "stream-token")
        .count();
    assert_eq!(tokens, 200, "every token reached the other instance's tab");
    assert_eq!(watched.last().unwrap()["status"], "completed");

    // A client cut off halfway through the next answer resumes on C.
    on_a.send_json(json!({"type": "chat", "content": "slow:40"}))
        .await;
    let mut before = Vec::new();
    while before.len() < 20 {
        let m = on_a.recv().await;
        if m.get("seq").is_some() && m["seq"].as_u64().unwrap() > watched.len() as u64 {
            before.push(m);
        }
    }
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    drop(on_a);
    let (mut on_c, _) = c.tab(&token, &session, Some(last_seq)).await;
    let after = on_c.until_stream_end().await;
    assert_consecutive(&after, last_seq + 1);
    assert_eq!(after.last().unwrap()["status"], "completed");
    let total = before
        .iter()
        .chain(&after)
        .filter(|m| m["type"] == "stream-token")
        .count();
    assert_eq!(total, 40, "each token once");
}

#[tokio::test]
async fn replay_on_another_instance_while_tokens_flow_never_gaps_or_repeats() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    on_a.send_json(json!({"type": "chat", "content": "slow:60"}))
        .await;
    let mut joined = Vec::new();
    for i in 0..24u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let node = if i % 2 == 0 { b } else { c };
        joined.push((i, node.tab(&token, &session, Some(i)).await.0));
    }
    for (after, mut client) in joined {
        let events = client.until_stream_end().await;
        assert_consecutive(&events, after + 1);
        assert_eq!(events.last().unwrap()["status"], "completed");
    }
}

#[tokio::test]
async fn a_stop_from_a_third_instance_cancels_within_a_second_and_duplicates_start_nothing() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = b.tab(&token, &session, None).await;
    let (mut on_c, _) = c.tab(&token, &session, None).await;

    let chat = json!({"type": "chat", "content": "endless", "clientMessageId": "only-once"});
    on_a.send_json(chat.clone()).await;
    for _ in 0..4 {
        on_c.recv().await;
    }
    // The same chat sent again through another instance starts nothing.
    on_b.send_json(chat).await;
    let dup = loop {
        let m = on_b.recv().await;
        if m["type"] == "ack" {
            break m;
        }
    };
    assert_eq!(dup["duplicate"], true, "{dup}");
    // A chat from C is refused while A's answer runs.
    on_c.send_json(json!({"type": "chat", "content": "me too"}))
        .await;
    loop {
        let m = on_c.recv().await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "generation_in_progress");
            break;
        }
    }
    let asked = Instant::now();
    on_c.send_json(json!({"type": "stop"})).await;
    for client in [&mut on_c, &mut on_a, &mut on_b] {
        let events = client.until_stream_end().await;
        assert_eq!(events.last().unwrap()["status"], "cancelled");
    }
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(cluster.upstream.wait_aborted(1).await, 1);
    assert_eq!(
        cluster.upstream.request_count(),
        1,
        "one answer was asked for"
    );
}

#[tokio::test]
async fn killing_the_instance_that_runs_an_answer_ends_it_elsewhere() {
    let Some(mut cluster) = Cluster::start(&[("GENERATION_LEASE", "1s")]).await else {
        return;
    };
    let token = cluster.nodes[0].register("alice").await;
    let (mut on_a, hello) = cluster.nodes[0].connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = cluster.nodes[1].tab(&token, &session, None).await;
    on_a.send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(on_b.recv().await);
    }
    let killed = Instant::now();
    cluster.nodes[0].child.start_kill().unwrap();
    let rest = on_b.until_stream_end().await;
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    let error = &rest[rest.len() - 2];
    assert_eq!(error["code"], "generation_interrupted", "{error}");
    assert_eq!(rest.last().unwrap()["status"], "failed");
    let all: Vec<Value> = seen.into_iter().chain(rest).collect();
    assert_consecutive(&all, 1);
    // The session can chat again, on a surviving instance.
    let next = on_b.chat("hello again").await;
    assert_eq!(next.status, "completed");
}

/// The instance that ends an answer whose instance died keeps what was
/// delivered in the transcript, as a failed answer, at its stream-start.
#[tokio::test]
async fn an_answer_cut_by_a_killed_instance_keeps_what_was_delivered_in_the_transcript() {
    let Some(mut cluster) = Cluster::start(&[("GENERATION_LEASE", "1s")]).await else {
        return;
    };
    let token = cluster.nodes[0].register("alice").await;
    let (mut on_a, hello) = cluster.nodes[0].connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = cluster.nodes[1].tab(&token, &session, None).await;
    on_a.send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|m: &&Value| m["type"] == "stream-token")
        .count()
        < 5
    {
        seen.push(on_b.recv().await);
    }
    cluster.nodes[0].child.kill().await.unwrap();
    seen.extend(on_b.until_stream_end().await);
    assert_eq!(seen.last().unwrap()["status"], "failed");
    let start = seen.iter().find(|m| m["type"] == "stream-start").unwrap();
    let delivered: String = seen
        .iter()
        .filter(|m| m["type"] == "stream-token")
        .map(|m| m["token"].as_str().unwrap())
        .collect();

    let (status, body) = cluster.nodes[1]
        .call(
            &token,
            "GET",
            &format!("/api/sessions/{session}/messages"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let said = body["messages"].as_array().unwrap();
    assert_eq!(
        said.len(),
        2,
        "the chat and what was said of its answer: {body}"
    );
    assert_eq!(said[0]["content"], "endless");
    let answer = &said[1];
    assert_eq!(answer["role"], "assistant", "{body}");
    assert_eq!(answer["status"], "failed", "{body}");
    assert_eq!(answer["content"], delivered.as_str(), "{body}");
    assert_eq!(answer["seq"], start["seq"], "{body}");
}

#[tokio::test]
async fn an_answer_with_every_tab_closed_completes_and_is_replayed_elsewhere() {
    let Some(cluster) = Cluster::start(&[("EVENT_LOG_LIMIT", "10")]).await else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    on_a.send_json(json!({"type": "chat", "content": "slow:8"}))
        .await;
    assert_eq!(on_a.recv().await["type"], "user-message");
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (mut on_b, _) = b.tab(&token, &session, Some(1)).await;
    let events = on_b.until_stream_end().await;
    assert_consecutive(&events, 2);
    assert_eq!(events.last().unwrap()["status"], "completed");

    // A second, longer answer trims the log: resuming from the start says so.
    on_b.chat("one two three four five six seven eight nine ten")
        .await;
    let (mut on_c, hello) = c
        .connect_query(&format!("?token={token}&sessionId={session}&lastSeq=0"))
        .await;
    let lost = on_c.recv().await;
    assert_eq!(lost["type"], "history-lost", "{lost}");
    assert_eq!(lost["seq"], hello["seq"]);
}
