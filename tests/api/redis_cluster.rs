//! Three copies of the real binary on a Redis Cluster (three primaries with a
//! replica each, at `REDIS_CLUSTER_URLS`, started by `.ci/redis-cluster.sh`):
//! live fan-out to tabs on other instances, resume and stop from another
//! instance, one claim of a handoff wins, and a `CLUSTER FAILOVER` of every
//! primary in turn in the middle of an answer. Without a cluster these say
//! SKIPPED, except under `CI`, where they fail.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::cluster_urls;
use common::{assert_consecutive, TestApp, Upstream, WsClient};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Three instances on the cluster, and the AI stub they share.
struct Instances {
    instances: common::cluster::Cluster,
    upstream: Upstream,
}

impl Instances {
    async fn start(extra: &[(&str, &str)]) -> Option<Self> {
        let upstream = Upstream::start().await;
        let mut env = vec![("FASTAPI_URL", upstream.url.as_str())];
        env.extend_from_slice(extra);
        let instances = common::cluster::Cluster::start_on_redis_cluster(3, "rc", &env).await?;
        Some(Self {
            instances,
            upstream,
        })
    }

    fn node(&self, i: usize) -> &TestApp {
        &self.instances.nodes[i]
    }
}

#[tokio::test]
async fn tabs_on_three_instances_share_an_answer_resume_elsewhere_and_stop_from_a_third() {
    let Some(cluster) = Instances::start(&[]).await else {
        return;
    };
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut on_b, _) = b.tab(&token, &session, None).await;

    // Fan-out: every token reaches the tab on B, in order.
    on_a.send_json(json!({"type": "chat", "content": "fast:200"}))
        .await;
    let watched = on_b.until_stream_end().await;
    assert_consecutive(&watched, 1);
    let tokens = watched
        .iter()
        .filter(|m| m["type"] == "stream-token")
        .count();
    assert_eq!(tokens, 200, "every token reached the other instance's tab");
    assert_eq!(watched.last().unwrap()["status"], "completed");
    let mine = on_a.until_stream_end().await;
    assert_eq!(mine.len(), watched.len());

    // Resume: a client cut off halfway through resumes on C.
    on_a.send_json(json!({"type": "chat", "content": "slow:40"}))
        .await;
    let mut before = Vec::new();
    while before.len() < 20 {
        let m = on_a.recv().await;
        if m["seq"].as_u64().is_some_and(|s| s > watched.len() as u64) {
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
    on_b.until_stream_end().await;

    // Stop: an endless answer started on B is stopped from C.
    on_b.send_json(json!({"type": "chat", "content": "endless"}))
        .await;
    for _ in 0..4 {
        on_c.recv().await;
    }
    on_c.send_json(json!({"type": "stop"})).await;
    for client in [&mut on_c, &mut on_b] {
        let events = client.until_stream_end().await;
        assert_eq!(events.last().unwrap()["status"], "cancelled");
    }
    assert_eq!(cluster.upstream.wait_aborted(1).await, 1);
}

async fn agent_socket(app: &TestApp, token: &str) -> WsClient {
    let url = format!("ws://{}/agent/ws?token={token}", app.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("agent socket connects");
    let mut client = WsClient { ws };
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connected", "{hello}");
    client
}

async fn until(client: &mut WsClient, kind: &str) -> Value {
    loop {
        let m = client.recv().await;
        if m["type"] == kind {
            return m;
        }
    }
}

#[tokio::test]
async fn one_claim_of_a_queued_conversation_wins_across_instances() {
    let Some(cluster) = Instances::start(&[]).await else {
        return;
    };
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let customer = a.register("carol").await;
    let bob = a.register_agent("bob").await;
    let dave = a.register_agent("dave").await;
    let mut bob_on_b = agent_socket(b, &bob).await;
    let mut dave_on_c = agent_socket(c, &dave).await;

    let (mut tab_a, hello) = a.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (mut tab_c, _) = c.tab(&customer, &session, None).await;
    assert_eq!(tab_a.chat("hello").await.status, "completed");
    tab_a.send_json(json!({"type": "human-escalation"})).await;
    let queued = until(&mut tab_a, "handoff-queued").await;
    assert_eq!(queued["agentsOnline"], 2, "{queued}");
    // Both consoles see it queued, whichever instance they are on.
    for console in [&mut bob_on_b, &mut dave_on_c] {
        loop {
            let m = until(console, "queue").await;
            let items = m["items"].as_array().cloned().unwrap_or_default();
            if items.iter().any(|i| i["sessionId"] == session) {
                break;
            }
        }
    }
    // Both claim at once: exactly one wins.
    bob_on_b
        .send_json(json!({"type": "claim", "sessionId": session, "requestId": "b"}))
        .await;
    dave_on_c
        .send_json(json!({"type": "claim", "sessionId": session, "requestId": "d"}))
        .await;
    let outcome = |m: &Value| -> Option<bool> {
        match m["type"].as_str()? {
            "ack" if m["action"] == "claim" => Some(true),
            "error" => Some(false),
            _ => None,
        }
    };
    let mut wins = Vec::new();
    for console in [&mut bob_on_b, &mut dave_on_c] {
        loop {
            let m = console.recv().await;
            if let Some(won) = outcome(&m) {
                if !won {
                    assert_eq!(m["code"], "already_claimed", "{m}");
                }
                wins.push(won);
                break;
            }
        }
    }
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let winner = if wins[0] { "bob" } else { "dave" };
    let joined = until(&mut tab_c, "agent-joined").await;
    assert_eq!(joined["agent"]["username"], winner, "{joined}");
}

// ------------------------------------------------------------ failover

/// The cluster's primaries as `(id, port)`, and each one's replica ports.
async fn topology(seed: &str) -> Vec<(String, u16, Vec<u16>)> {
    let nodes: String = redis_query(seed, &["CLUSTER", "NODES"]).await;
    let port = |addr: &str| -> u16 {
        let hostport = addr.split('@').next().unwrap();
        hostport.rsplit(':').next().unwrap().parse().unwrap()
    };
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut primaries: Vec<(String, u16, Vec<u16>)> = lines
        .iter()
        .filter(|f| f[2].contains("master") && f.len() > 8)
        .map(|f| (f[0].to_owned(), port(f[1]), Vec::new()))
        .collect();
    for f in &lines {
        if f[2].contains("slave") {
            if let Some(p) = primaries.iter_mut().find(|p| p.0 == f[3]) {
                p.2.push(port(f[1]));
            }
        }
    }
    primaries
}

async fn redis_query<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// Has the replica on `port` take over from its primary (a manual failover:
/// the primary stops, the replica catches up and is promoted) and waits until
/// it is a primary.
async fn fail_over(port: u16) {
    let url = format!("redis://127.0.0.1:{port}");
    let _: () = redis_query(&url, &["CLUSTER", "FAILOVER"]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let role: Vec<redis::Value> = redis_query(&url, &["ROLE"]).await;
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica on {port} was not promoted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a tab until its answer ends; a tab the server closes (4503: its
/// live feed was cut) is reopened on `next`, resuming after the last seq.
async fn follow(
    mut tab: WsClient,
    next: &TestApp,
    token: &str,
    session: &str,
    mut last: u64,
) -> (Vec<Value>, usize) {
    let mut seen = Vec::new();
    let mut reopened = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tab.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(seq) = m["seq"].as_u64() {
                    last = seq;
                    let end = m["type"] == "stream-end";
                    seen.push(m);
                    if end {
                        return (seen, reopened);
                    }
                }
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(_) => {
                reopened += 1;
                assert!(reopened < 10, "the tab kept being closed");
                tab = next.tab(token, session, Some(last)).await.0;
            }
            Err(_) => panic!("no event for 20 s after seq {last}"),
        }
    }
}

#[tokio::test]
async fn a_failover_of_every_primary_mid_answer_loses_and_repeats_nothing() {
    let Some(cluster) = Instances::start(&[]).await else {
        return;
    };
    let seed = cluster_urls().expect("the cluster answered")[0].clone();
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let token = a.register("alice").await;
    let (mut on_a, hello) = a.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    let (on_b, _) = b.tab(&token, &session, None).await;
    let (on_c, _) = c.tab(&token, &session, None).await;

    // 300 tokens 50 ms apart: 15 s, through three failovers.
    on_a.send_json(json!({"type": "chat", "content": "slow:300"}))
        .await;
    let first = on_a.recv().await;
    assert_eq!(first["type"], "user-message", "{first}");
    let primaries = topology(&seed).await;
    assert_eq!(primaries.len(), 3, "three primaries: {primaries:?}");
    let failovers = async {
        for (id, port, replicas) in &primaries {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let replica = *replicas
                .first()
                .unwrap_or_else(|| panic!("primary {id} on {port} has no replica"));
            fail_over(replica).await;
        }
    };
    // Each tab reopens on another instance if it is closed.
    let (seen_a, seen_b, seen_c, ()) = tokio::join!(
        follow(on_a, b, &token, &session, 1),
        follow(on_b, c, &token, &session, 0),
        follow(on_c, a, &token, &session, 0),
        failovers,
    );
    let mut outcomes = Vec::new();
    for (i, (events, reopened)) in [seen_a, seen_b, seen_c].into_iter().enumerate() {
        let from = if i == 0 { 2 } else { 1 };
        assert_consecutive(&events, from);
        let tokens: Vec<&str> = events
            .iter()
            .filter(|m| m["type"] == "stream-token")
            .map(|m| m["token"].as_str().unwrap())
            .collect();
        let status = events.last().unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned();
        match status.as_str() {
            "completed" => assert_eq!(tokens.len(), 300, "every token once"),
            "failed" => {
                let error = &events[events.len() - 2];
                assert_eq!(error["code"], "generation_interrupted", "{error}");
                assert!(tokens.len() < 300);
            }
            other => panic!("the answer ended {other}"),
        }
        outcomes.push((status, tokens.len(), reopened));
    }
    // Every tab saw the same answer, however it ended.
    assert!(
        outcomes
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1),
        "{outcomes:?}"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("failover outcome per tab (status, tokens, reopened): {outcomes:?}\n").as_bytes(),
    );
    // The session chats on after the failovers.
    let (mut again, _) = b.tab(&token, &session, None).await;
    let reply = again.chat("hello again").await;
    assert_eq!(reply.status, "completed");
}
