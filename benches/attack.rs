//! The attacker's-eye check: floods a real server, with its default limits,
//! the way one hostile client would, and prints what got through.
//!
//! `cargo bench --bench attack` starts the release binary (SQLite, echo model,
//! every limit at its default) and runs three floods, each from its own
//! loopback source address (127.0.0.x), so one flood's per-address counts do
//! not spill into the next:
//! 1. **logins**: `ATTACK_GUESSES` (default 500) wrong-password logins on one
//!    account from one address, then the same number spread over 50 addresses;
//!    after each, the real user logs in from a fresh address;
//! 2. **connections**: one user opens `ATTACK_SOCKETS` (default 1000)
//!    WebSockets at once; six users open 20 each from one address; then
//!    `ATTACK_SILENT` (default 2000) TCP sockets that never send a byte;
//!    `/health` is timed from another address meanwhile;
//! 3. **chats**: one user sends `ATTACK_CHATS` (default 1000) chats as fast as
//!    its sockets take them, over five sockets (five sessions).
//!
//! It asserts nothing: it reports counts, times and the server's RSS so a
//! person can judge them against the limits in the README.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

mod support;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The server's resident memory in MiB.
fn rss_mib(pid: u32) -> f64 {
    support::rss_kib(pid) as f64 / 1024.0
}

/// A REST client whose connections leave from `from`.
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .build()
        .expect("client builds")
}

/// The server on 0.0.0.0, so every 127.0.0.x source address reaches it,
/// with every limit at its default.
struct Server {
    inner: support::Server,
    addr: SocketAddr,
    pid: u32,
}

async fn start_server() -> Server {
    let inner = support::start_server("0.0.0.0", &[("ECHO_TOKEN_DELAY", "20ms")]).await;
    let addr = inner.addr.parse().expect("an address");
    let pid = inner.pid;
    Server { inner, addr, pid }
}

/// Registers `name` from `from` and returns its access token.
async fn register(base: &str, from: IpAddr, name: &str) -> String {
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"});
    let reply: Value = client_from(from)
        .post(format!("{base}/api/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["token"].as_str().expect("registered").to_owned()
}

/// Sends `attempts` as (source address, password) logins for `username`,
/// 50 at a time; returns the answers by status and the time it took.
async fn logins(
    base: &str,
    username: &str,
    attempts: Vec<(IpAddr, &'static str)>,
) -> (BTreeMap<u16, usize>, Duration) {
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    for batch in attempts.chunks(50) {
        let mut tasks = Vec::new();
        for &(from, password) in batch {
            let (base, username) = (base.to_owned(), username.to_owned());
            tasks.push(tokio::spawn(async move {
                let body = json!({"username": username, "password": password});
                match client_from(from)
                    .post(format!("{base}/api/auth/login"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
        for t in tasks {
            *counts.entry(t.await.unwrap()).or_insert(0) += 1;
        }
    }
    (counts, started.elapsed())
}

/// One real login of `alice` from `from`: its status and latency.
async fn real_login(base: &str, from: IpAddr) -> (u16, Duration) {
    let (counts, took) = logins(base, "alice", vec![(from, "password123")]).await;
    (*counts.keys().next().unwrap(), took)
}

async fn login_flood(server: &Server) {
    let base = format!("http://{}", server.addr);
    register(&base, loopback(1), "alice").await;
    let guesses = setting("ATTACK_GUESSES", 500);

    println!("1. login flood on one account (alice)");
    let one = vec![(loopback(2), "wrong-password"); guesses];
    let (counts, took) = logins(&base, "alice", one).await;
    println!(
        "   {guesses} guesses from one address: {counts:?} in {took:.1?} (401 = password checked)"
    );
    let (status, took) = real_login(&base, loopback(3)).await;
    println!("   alice from another address: {status} in {took:.1?}");

    let spread: Vec<_> = (0..guesses)
        .map(|i| (loopback(10 + (i % 50) as u8), "wrong-password"))
        .collect();
    let (counts, took) = logins(&base, "alice", spread).await;
    println!("   {guesses} guesses spread over 50 addresses: {counts:?} in {took:.1?}");
    let (status, took) = real_login(&base, loopback(4)).await;
    println!("   alice from a fresh address: {status} in {took:.1?}");
    println!("   server RSS: {:.1} MiB", rss_mib(server.pid));
}

/// Opens a WebSocket from `from` with `token`: Ok(socket) or the HTTP status.
async fn open_ws(
    addr: SocketAddr,
    from: IpAddr,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    let socket = TcpSocket::new_v4().map_err(|_| 0u16)?;
    socket.bind(SocketAddr::new(from, 0)).map_err(|_| 0u16)?;
    let stream = socket.connect(addr).await.map_err(|_| 0u16)?;
    let url = format!("ws://{addr}/ws?token={token}");
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// Opens `n` sockets at once; returns the open ones and the refusals by status.
async fn open_many(
    addr: SocketAddr,
    from: IpAddr,
    token: &str,
    n: usize,
) -> (
    Vec<tokio_tungstenite::WebSocketStream<TcpStream>>,
    BTreeMap<u16, usize>,
) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let token = token.to_owned();
            tokio::spawn(async move { open_ws(addr, from, &token).await })
        })
        .collect();
    let (mut open, mut refused) = (Vec::new(), BTreeMap::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(ws) => open.push(ws),
            Err(status) => *refused.entry(status).or_insert(0) += 1,
        }
    }
    (open, refused)
}

/// `/health` from 127.0.0.9: its status and latency.
async fn health(base: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = client_from(loopback(9))
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

async fn connection_flood(server: &Server) {
    let base = format!("http://{}", server.addr);
    let n = setting("ATTACK_SOCKETS", 1000);
    println!("2. connection flood");
    let token = register(&base, loopback(5), "mallory").await;
    let started = Instant::now();
    let (open, refused) = open_many(server.addr, loopback(5), &token, n).await;
    println!(
        "   one user, {n} WebSockets at once: {} open, refused {refused:?}, in {:.1?}",
        open.len(),
        started.elapsed()
    );
    let (status, took) = health(&base).await;
    println!("   /health meanwhile: {status} in {took:.1?}");
    drop(open);

    let mut held = Vec::new();
    let mut refused_total = BTreeMap::new();
    for i in 0..6 {
        let token = register(&base, loopback(6), &format!("sybil{i}")).await;
        let (open, refused) = open_many(server.addr, loopback(6), &token, 20).await;
        held.extend(open);
        for (s, c) in refused {
            *refused_total.entry(s).or_insert(0) += c;
        }
    }
    println!(
        "   six users, 20 WebSockets each, one address: {} open, refused {refused_total:?}",
        held.len()
    );
    drop(held);
    silent_flood(server, &base).await;
}

/// Sockets that connect and never send a byte: how many the server keeps,
/// how fast it refuses the rest, and how long until it has closed them.
async fn silent_flood(server: &Server, base: &str) {
    let n = setting("ATTACK_SILENT", 2000);
    let mut socks = Vec::new();
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(loopback(7), 0)).unwrap();
        if let Ok(s) = socket.connect(server.addr).await {
            socks.push(s);
        }
    }
    let (status, took) = health(base).await;
    println!(
        "   {n} silent sockets from one address: {} connected; /health meanwhile {status} in {took:.1?}; RSS {:.1} MiB",
        socks.len(),
        rss_mib(server.pid)
    );
    let started = Instant::now();
    let mut reads = Vec::new();
    for mut s in socks {
        reads.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let first = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .map(str::to_owned);
            (first, started.elapsed())
        }));
    }
    let mut by_answer: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for r in reads {
        let (first, at) = r.await.unwrap();
        let key = first.unwrap_or_else(|| "(closed, nothing sent)".into());
        let e = by_answer.entry(key).or_insert((0, Duration::ZERO));
        e.0 += 1;
        e.1 = e.1.max(at);
    }
    for (answer, (count, last)) in by_answer {
        println!("     {count} got {answer:?}, the last after {last:.1?}");
    }
}

/// The next chat of a flood, counted in `sent`.
fn chat(sent: &mut usize) -> Message {
    *sent += 1;
    Message::text(json!({"type": "chat", "content": format!("flood {sent}")}).to_string())
}

/// One chatting socket that ignores every refusal: sends `n` chats back to
/// back, then, for 10 s, one more after every `stream-end` or `error`;
/// counts what came back by kind (tokens left out) and what it sent.
async fn chat_flood_one(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut sent = 0;
    for _ in 0..n {
        if ws.send(chat(&mut sent)).await.is_err() {
            break;
        }
    }
    let mut seen = BTreeMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, ws.next()).await {
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        let kind = match (v["type"].as_str(), v["code"].as_str()) {
            (Some("error"), Some(code)) => format!("error {code}"),
            (Some(t), _) => t.to_owned(),
            _ => "?".into(),
        };
        if matches!(v["type"].as_str(), Some("stream-end" | "error"))
            && ws.send(chat(&mut sent)).await.is_err()
        {
            break;
        }
        if kind != "stream-token" {
            *seen.entry(kind).or_insert(0) += 1;
        }
    }
    seen.insert("(chats sent)".into(), sent);
    seen
}

async fn chat_flood(server: &Server) {
    let base = format!("http://{}", server.addr);
    let n = setting("ATTACK_CHATS", 1000);
    println!("3. chat flood from one user");
    let token = register(&base, loopback(8), "spender").await;
    let (socks, refused) = open_many(server.addr, loopback(8), &token, 5).await;
    assert!(refused.is_empty(), "five sockets open: {refused:?}");
    let started = Instant::now();
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|ws| tokio::spawn(chat_flood_one(ws, n / 5)))
        .collect();
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, c) in t.await.unwrap() {
            *total.entry(k).or_insert(0) += c;
        }
    }
    println!(
        "   {n} chats at once over five sessions, then one more after every answer for 10 s ({:.1?} in all): {total:?}",
        started.elapsed()
    );
    println!("   server RSS: {:.1} MiB", rss_mib(server.pid));
}

#[tokio::main]
async fn main() {
    let mut server = start_server().await;
    println!(
        "attack: server pid {}, RSS at start {:.1} MiB",
        server.pid,
        rss_mib(server.pid)
    );
    login_flood(&server).await;
    connection_flood(&server).await;
    chat_flood(&server).await;
    let _ = server.inner.child.kill().await;
}
