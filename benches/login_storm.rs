//! What a login storm does to running streams and to the server's memory,
//! now that password hashing is bounded.
//!
//! `cargo bench --bench login_storm` starts the release binary (echo model,
//! one token every `STORM_TOKEN_DELAY_MS`, default 20 ms), opens `STORM_STREAMS`
//! (default 200) WebSockets that chat in a loop, and measures the gaps between
//! consecutive `stream-token`s as the clients receive them:
//! 1. for `STORM_PHASE_SECS` (default 8) without a storm;
//! 2. for as long again after `STORM_LOGINS` (default 500) wrong-password
//!    logins are sent at once (with `STORM_SUSTAINED=1`, each answered one is
//!    sent again until the phase ends: thousands per second).
//!
//! The login throttles are off for this server: the storm stands for guesses
//! spread over many addresses and accounts, which only the bound on hashing
//! stops. It prints the token-gap p50/p99 of both phases and their ratio
//! (goal: p99 within 1.5x), the logins' answers by status, and the server's
//! RSS at start, its peak during the storm, and after it (sampled for up to
//! 60 s; goal: peak under 256 MiB, back near the start within a minute).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::rss_kib;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Token gaps (ms) recorded while `recording` is set.
#[derive(Default)]
struct Gaps {
    recording: AtomicBool,
    /// Set when the streams should send no more chats.
    done: AtomicBool,
    samples: Mutex<Vec<f64>>,
}

impl Gaps {
    /// Stops recording and returns (p50, p99, count), emptying the samples.
    fn take(&self) -> (f64, f64, usize) {
        self.recording.store(false, Ordering::SeqCst);
        let mut all = std::mem::take(&mut *self.samples.lock().unwrap());
        all.sort_by(f64::total_cmp);
        (percentile(&all, 0.5), percentile(&all, 0.99), all.len())
    }
}

/// One client: chats in a loop, recording the gap before every token.
async fn stream_forever(addr: String, token: String, content: String, gaps: Arc<Gaps>) {
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("stream connects");
    let chat = json!({"type": "chat", "content": content}).to_string();
    ws.send(Message::text(chat.clone())).await.unwrap();
    let mut last: Option<Instant> = None;
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("stream-token") => {
                let now = Instant::now();
                if let (Some(prev), true) = (last, gaps.recording.load(Ordering::Relaxed)) {
                    let ms = now.duration_since(prev).as_secs_f64() * 1000.0;
                    gaps.samples.lock().unwrap().push(ms);
                }
                last = Some(now);
            }
            Some("stream-end") => {
                last = None;
                if gaps.done.load(Ordering::Relaxed) {
                    return;
                }
                if ws.send(Message::text(chat.clone())).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Sends `n` wrong-password logins at once, and, when `sustained`, sends each
/// again as soon as it is answered until `stop`; answers by status.
async fn storm(
    base: String,
    n: usize,
    sustained: bool,
    stop: Arc<AtomicBool>,
) -> BTreeMap<u16, usize> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            let mut first = true;
            while first || (sustained && !stop.load(Ordering::Relaxed)) {
                first = false;
                let body = json!({"username": format!("guess{i}"), "password": "not-the-password"});
                let status = match client
                    .post(format!("{base}/api/auth/login"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) => resp.status().as_u16(),
                    Err(_) => 0,
                };
                *seen.entry(status).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (status, count) in t.await.unwrap() {
            *total.entry(status).or_insert(0) += count;
        }
    }
    total
}

#[tokio::main]
async fn main() {
    let streams = setting("STORM_STREAMS", 200) as usize;
    let logins = setting("STORM_LOGINS", 500) as usize;
    let phase = Duration::from_secs(setting("STORM_PHASE_SECS", 8));
    let delay = setting("STORM_TOKEN_DELAY_MS", 20);
    let sustained = setting("STORM_SUSTAINED", 0) == 1;

    let delay_ms = format!("{delay}ms");
    let mut server = support::start_server(
        "127.0.0.1",
        &[
            ("ECHO_TOKEN_DELAY", &delay_ms),
            // Each chat adds ~103 events to its session's log; with a short log
            // the 200 logs are full within the warm-up, so the RSS at "start"
            // already holds them and what follows shows what the storm leaves.
            ("EVENT_LOG_LIMIT", "100"),
            // One user drives every stream from one address, and the storm stands
            // for guesses from many addresses: only hashing's own bound is measured.
            ("WS_MAX_CONNECTIONS_PER_USER", "0"),
            ("WS_MAX_CONNECTIONS_PER_IP", "0"),
            ("CHAT_MESSAGES_PER_MINUTE", "0"),
            ("CHAT_MAX_CONCURRENT_PER_USER", "0"),
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "0"),
            ("LOGIN_MAX_FAILURES_PER_IP", "0"),
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY", "0"),
            ("SESSIONS_MAX_PER_USER", "0"),
            ("UNAUTH_CONNECTIONS_PER_IP", "0"),
        ],
    )
    .await;
    let (addr, pid) = (server.addr.clone(), server.pid);
    let base = format!("http://{addr}");

    let reg: Value = reqwest::Client::new()
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"username": "streamer", "email": "s@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["token"].as_str().expect("registered").to_owned();
    let content = vec!["word"; 100].join(" ");
    let gaps = Arc::new(Gaps::default());
    for _ in 0..streams {
        tokio::spawn(stream_forever(
            addr.clone(),
            token.clone(),
            content.clone(),
            gaps.clone(),
        ));
    }
    // Let every stream start, and fill its session's log, before measuring.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rss_start = rss_kib(pid);

    gaps.recording.store(true, Ordering::SeqCst);
    tokio::time::sleep(phase).await;
    let calm = gaps.take();
    let rss_calm = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let storming = tokio::spawn(storm(base.clone(), logins, sustained, stop.clone()));
    gaps.recording.store(true, Ordering::SeqCst);
    let mut peak = rss_start;
    let until = Instant::now() + phase;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stormy = gaps.take();
    stop.store(true, Ordering::SeqCst);
    let answers = storming.await.unwrap();
    peak = peak.max(rss_kib(pid));
    // The streams' own logs grow while they chat: stop them, so what follows
    // shows what the storm left behind.
    let rss_streams = rss_kib(pid);
    gaps.done.store(true, Ordering::SeqCst);

    let mut after = Vec::new();
    for secs in [1u64, 5, 15, 30, 60] {
        let at = Duration::from_secs(secs);
        let since = after
            .last()
            .map_or(Duration::ZERO, |(s, _)| Duration::from_secs(*s));
        tokio::time::sleep(at - since).await;
        after.push((secs, rss_kib(pid)));
    }

    let mib = |kib: u64| kib as f64 / 1024.0;
    let how = if sustained {
        "kept in flight"
    } else {
        "sent at once"
    };
    println!("login storm: {streams} streams (a token every {delay} ms), {logins} wrong-password logins {how}");
    println!(
        "  token gap without storm: p50 {:.1} ms, p99 {:.1} ms ({} gaps)",
        calm.0, calm.1, calm.2
    );
    println!(
        "  token gap during storm:  p50 {:.1} ms, p99 {:.1} ms ({} gaps)",
        stormy.0, stormy.1, stormy.2
    );
    println!("  p99 ratio: {:.2}x (goal: within 1.5x)", stormy.1 / calm.1);
    println!("  login answers by status: {answers:?} (0 = no answer)");
    println!(
        "  server RSS: start {:.1} MiB, peak during storm {:.1} MiB (goal < 256 MiB)",
        mib(rss_start),
        mib(peak)
    );
    let after: Vec<String> = after
        .iter()
        .map(|(s, kib)| format!("{s}s {:.1} MiB", mib(*kib)))
        .collect();
    println!(
        "  at the end of the calm phase: {:.1} MiB (the streams' logs grow meanwhile)",
        mib(rss_calm)
    );
    println!(
        "  at the end of the storm phase (streams still chatting): {:.1} MiB",
        mib(rss_streams)
    );
    println!("  after the storm, streams stopped: {}", after.join(", "));
    let _ = server.child.kill().await;
}
