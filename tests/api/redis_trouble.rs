//! Redis trouble is brief and visible: with Redis down, requests fail fast
//! with a clear 503 and every open socket is told (`error`
//! `session_store_unavailable`, close 4503) instead of waiting in silence,
//! whether an answer streams to it (from this instance or another) or not;
//! when Redis comes back, a socket that resumes gets its log (with the
//! answer's end, logged once the store took it again) or, if Redis came back
//! empty, a fresh session. Runs a private `redis-server` per test that it
//! kills (SIGKILL) and restarts.

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_app, spawn_app_at, TestApp, Upstream, WsClient};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// How long a socket may take to hear that Redis died: the point is that it
/// hears at all (before the fix, it waited in silence for minutes).
const TOLD_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` of this test's own on a free loopback port, optionally
/// keeping its data on disk (every write synced) across a kill.
struct PrivateRedis {
    port: u16,
    dir: Option<PathBuf>,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16, dir: Option<&Path>) -> Option<Self> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut redis = Self {
            port,
            dir: dir.map(Path::to_path_buf),
            child: Some(child),
        };
        redis.wait_until_up().then_some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_until_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL, like `kill -9`: no goodbye to anyone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The same server again, on the same port (and data, if it keeps any).
    fn restart(&mut self) {
        self.stop();
        let again = Self::start(self.port, self.dir.as_deref()).expect("redis restarts");
        *self = again;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Redis, or `None` after saying SKIPPED (outside CI) when there
/// is no `redis-server` binary.
fn private_redis(dir: Option<&Path>) -> Option<PrivateRedis> {
    let redis = PrivateRedis::start(free_port(), dir);
    if redis.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server must be installed in CI"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED redis trouble test: no redis-server binary"
        );
    }
    redis
}

/// Everything the server says until it closes, and its close code; fails
/// when the socket is neither told anything final nor closed in time.
async fn until_closed(client: &mut WsClient, within: Duration) -> (Vec<Value>, Option<u16>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, client.ws.next())
            .await
            .unwrap_or_else(|_| panic!("not closed within {within:?}; it got {seen:?}"));
        match frame {
            Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => return (seen, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (seen, None),
        }
    }
}

/// Asserts the socket was told the store is gone: a retryable
/// `session_store_unavailable`, then close 4503.
fn assert_told_store_unavailable(seen: &[Value], code: Option<u16>) {
    assert_eq!(code, Some(4503), "{seen:?}");
    let told = seen.last().expect("an error before the close");
    assert_eq!(told["type"], "error", "{seen:?}");
    assert_eq!(told["code"], "session_store_unavailable", "{told}");
    assert_eq!(told["retryable"], true, "{told}");
}

/// The `/ws` answer while Redis is down: its status and JSON body.
async fn refused_upgrade(app: &TestApp, query: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(app.ws_url(query)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Connects once Redis answers again (upgrades are refused with 503 until then).
async fn reconnect(app: &TestApp, query: &str) -> (WsClient, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(app.ws_url(query)).await {
            let mut client = WsClient { ws };
            let hello = client.recv().await;
            assert_eq!(hello["type"], "connected", "{hello}");
            return (client, hello);
        }
        assert!(Instant::now() < deadline, "the server reconnects to Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads until the answer streams: its `messageId` and the highest `seq` seen.
async fn until_streaming(client: &mut WsClient) -> (String, u64) {
    loop {
        let m = client.recv().await;
        if m["type"] == "stream-token" {
            let id = m["messageId"].as_str().unwrap().to_owned();
            return (id, m["seq"].as_u64().unwrap());
        }
    }
}

/// The highest `seq` among `seen`, or `at_least`.
fn last_seq(seen: &[Value], at_least: u64) -> u64 {
    seen.iter()
        .filter_map(|m| m["seq"].as_u64())
        .fold(at_least, u64::max)
}

#[tokio::test]
async fn redis_down_fails_fast_and_an_emptied_redis_loses_sessions_visibly() {
    let Some(mut redis) = private_redis(None) else {
        return;
    };
    let url = redis.url();
    let app = spawn_app(&[("REDIS_URL", &url)]).await;
    let token = app.register("alice").await;
    let (mut client, _) = app.connect(&token).await;
    assert_eq!(client.chat("hello").await.status, "completed");

    redis.stop();
    for _ in 0..3 {
        let asked = Instant::now();
        let (status, body) = app.get("/api/stats").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("session_store_unavailable"))
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
    }
    // Upgrades and tickets say which outage to wait out, as REST does.
    let asked = Instant::now();
    let (status, body) = refused_upgrade(&app, &format!("?token={token}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let (status, body) = app.call(&token, "POST", "/api/auth/ws-ticket", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    drop(client);

    // Redis is back, but empty: service resumes.
    redis.restart();
    let (mut fresh, _) = reconnect(&app, &format!("?token={token}")).await;
    assert_eq!(fresh.chat("hello again").await.status, "completed");
    // Redis loses its data under an open socket: the socket is told its
    // session is gone rather than answering `session_expired` for ever.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").exec_async(&mut conn).await.unwrap();
    fresh
        .send_json(json!({"type": "chat", "content": "anyone?"}))
        .await;
    let error = fresh.recv().await;
    assert_eq!(error["code"], "session_expired", "{error}");
    let lost = fresh.recv().await;
    assert_eq!(lost["type"], "session-lost", "{lost}");
    assert_eq!(fresh.closed(Duration::from_secs(3)).await, Some(4004));
}

#[tokio::test]
async fn an_idle_socket_is_told_when_redis_dies() {
    let Some(mut redis) = private_redis(None) else {
        return;
    };
    let app = spawn_app(&[("REDIS_URL", &redis.url())]).await;
    let token = app.register("idle").await;
    let (mut client, _) = app.connect(&token).await;
    redis.stop();
    let (seen, code) = until_closed(&mut client, TOLD_WITHIN).await;
    assert_told_store_unavailable(&seen, code);
}

#[tokio::test]
async fn every_tab_of_a_streaming_answer_is_told_when_redis_dies() {
    let Some(mut redis) = private_redis(None) else {
        return;
    };
    let url = redis.url();
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let env = [
        ("REDIS_URL", url.as_str()),
        ("FASTAPI_URL", upstream.url.as_str()),
    ];
    // Two instances: each answer runs on `a`, and a second tab of its
    // session follows it from `b`.
    let a = spawn_app_at(db.clone(), &env).await;
    let b = spawn_app_at(db, &env).await;
    let mut tabs = Vec::new();
    for i in 0..3 {
        let token = a.register(&format!("streamer{i}")).await;
        let (mut here, hello) = a.connect(&token).await;
        let session = hello["sessionId"].as_str().unwrap().to_owned();
        let (mut there, _) = b.tab(&token, &session, None).await;
        here.send_json(json!({"type": "chat", "content": "slow:400"}))
            .await;
        until_streaming(&mut here).await;
        until_streaming(&mut there).await;
        tabs.push(here);
        tabs.push(there);
    }
    redis.stop();
    for tab in &mut tabs {
        let (seen, code) = until_closed(tab, TOLD_WITHIN).await;
        assert_told_store_unavailable(&seen, code);
    }
}

#[tokio::test]
async fn after_redis_returns_empty_a_resuming_socket_gets_a_fresh_session() {
    let Some(mut redis) = private_redis(None) else {
        return;
    };
    let upstream = Upstream::start().await;
    let app = spawn_app(&[
        ("REDIS_URL", redis.url().as_str()),
        ("FASTAPI_URL", upstream.url.as_str()),
    ])
    .await;
    let token = app.register("returner").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "slow:400"}))
        .await;
    let (_, seq) = until_streaming(&mut client).await;
    redis.stop();
    let (seen, code) = until_closed(&mut client, TOLD_WITHIN).await;
    assert_told_store_unavailable(&seen, code);
    let seq = last_seq(&seen, seq);

    redis.restart();
    let query = format!("?token={token}&sessionId={session}&lastSeq={seq}");
    let (mut again, hello) = reconnect(&app, &query).await;
    // The session went with Redis's data: said plainly, as a fresh session
    // (`resumed: false`), never as a wait for events that cannot come.
    assert_eq!(hello["resumed"], false, "{hello}");
    assert_ne!(hello["sessionId"], session.as_str(), "{hello}");
    assert_eq!(hello["seq"], 0, "{hello}");
    assert_eq!(again.chat("hello again").await.status, "completed");
}

#[tokio::test]
async fn after_redis_returns_with_its_data_a_resuming_socket_gets_the_answers_end() {
    let data = tempfile::tempdir().unwrap();
    let Some(mut redis) = private_redis(Some(data.path())) else {
        return;
    };
    let upstream = Upstream::start().await;
    // A lease longer than the outage: the answer's own instance logs its
    // end once Redis is back, not a reaper on its behalf.
    let app = spawn_app(&[
        ("REDIS_URL", redis.url().as_str()),
        ("FASTAPI_URL", upstream.url.as_str()),
        ("GENERATION_LEASE", "60s"),
    ])
    .await;
    let token = app.register("keeper").await;
    let (mut client, hello) = app.connect(&token).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    client
        .send_json(json!({"type": "chat", "content": "slow:400"}))
        .await;
    let (answer, seq) = until_streaming(&mut client).await;
    redis.stop();
    let (seen, code) = until_closed(&mut client, TOLD_WITHIN).await;
    assert_told_store_unavailable(&seen, code);
    let seq = last_seq(&seen, seq);
    // The answer failed (it let go of the upstream); Redis stays away past
    // the driver's own reconnect retry, so its end could not be logged then.
    assert_eq!(upstream.wait_aborted(1).await, 1, "the answer ended");
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.restart();
    let query = format!("?token={token}&sessionId={session}&lastSeq={seq}");
    let (mut again, hello) = reconnect(&app, &query).await;
    assert_eq!(hello["resumed"], true, "{hello}");
    // What it missed, then the answer's end as the log now holds it.
    let rest = again.until_stream_end().await;
    common::assert_consecutive(&rest, seq + 1);
    let end = &rest[rest.len() - 1];
    assert_eq!(
        (end["messageId"].as_str(), end["status"].as_str()),
        (Some(answer.as_str()), Some("failed")),
        "{rest:?}"
    );
    let error = &rest[rest.len() - 2];
    assert_eq!(error["type"], "error", "{rest:?}");
    assert_eq!(error["code"], "session_store_unavailable", "{error}");
    assert_eq!(error["messageId"], answer.as_str(), "{error}");
    assert_eq!(error["retryable"], true, "{error}");
}
