//! Memory per idle WebSocket connection, measured on the real server binary.
//!
//! `cargo bench --bench idle_connections` (set `IDLE_CONNECTIONS`, default 5000).
//! Starts the server on port 0 with embedded defaults, opens the connections
//! from this process, and reports how much the server's resident memory grew
//! per connection. The reference figures: tungstenite's default read
//! buffer costs ~134 KiB per connection, a 4 KiB buffer ~6.6 KiB, Node `ws` 5.6 KiB.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

mod support;
use support::rss_kib;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    // One user holds every socket: a load test, not the abuse the caps stop.
    let mut server = support::start_server(
        "127.0.0.1",
        &[
            ("WS_MAX_CONNECTIONS_PER_USER", "0"),
            ("WS_MAX_CONNECTIONS_PER_IP", "0"),
            ("SESSIONS_MAX_PER_USER", "0"),
            ("UNAUTH_CONNECTIONS_PER_IP", "0"),
        ],
    )
    .await;
    let (addr, pid) = (server.addr.clone(), server.pid);

    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .post(format!("http://{addr}/api/auth/register"))
        .json(&serde_json::json!({"username": "bench", "email": "bench@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    // Warm up allocator pools and lazily built state before the baseline.
    for _ in 0..50 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
            .await
            .unwrap();
        ws.next().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await {
            Ok((mut ws, _)) => {
                ws.next().await; // the `connected` message
                conns.push(ws);
            }
            Err(e) => {
                eprintln!(
                    "connection {i} failed: {e}; stopping at {} connections",
                    conns.len()
                );
                break;
            }
        }
    }
    let opened = conns.len();
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let stats: serde_json::Value = http
        .get(format!("http://{addr}/api/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "idle_connections: {opened} connections opened in {:.1?} ({:.0}/s); server RSS {before} KiB -> {after} KiB; {:.1} KiB per connection; server counts {} active",
        elapsed,
        opened as f64 / elapsed.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / opened.max(1) as f64,
        stats["activeConnections"]
    );
    drop(conns);
    let _ = server.child.kill().await;
}
