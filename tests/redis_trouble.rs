//! Redis trouble is brief and visible: with Redis down, requests fail fast
//! with a clear 503; when Redis comes back empty, an open socket whose session
//! vanished is told so (`session-lost`, close 4004) instead of answering
//! `session_expired` for ever. Runs a private `redis-server` it can stop.

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn_app;
use serde_json::json;

/// A `redis-server` of this test's own on a free loopback port.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut redis = Self {
            port,
            child: Some(child),
        };
        redis.wait_until_up().then_some(redis)
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

#[tokio::test]
async fn redis_down_fails_fast_and_an_emptied_redis_loses_sessions_visibly() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server must be installed in CI"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED redis trouble test: no redis-server binary"
        );
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
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
    let asked = Instant::now();
    let refused = app
        .connect_refused_status(app.ws_url(&format!("?token={token}")))
        .await;
    assert_eq!(refused, 503);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );

    // Redis is back, but empty: the open socket's session is gone.
    let mut redis = PrivateRedis::start(port).expect("redis restarts");
    // The first request after the outage may still fail fast while the
    // connections are re-established; within seconds everything answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        let stats_ok = app.get("/api/stats").await.0 == 200;
        let url = app.ws_url(&format!("?token={token}"));
        if stats_ok {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await {
                break common::WsClient { ws };
            }
        }
        assert!(Instant::now() < deadline, "the server reconnects to Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fresh.recv().await["type"], "connected");
    assert_eq!(fresh.chat("hello again").await.status, "completed");
    client
        .send_json(json!({"type": "chat", "content": "anyone?"}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "session_expired", "{error}");
    let lost = client.recv().await;
    assert_eq!(lost["type"], "session-lost", "{lost}");
    assert_eq!(client.closed(Duration::from_secs(3)).await, Some(4004));
    redis.stop();
}
