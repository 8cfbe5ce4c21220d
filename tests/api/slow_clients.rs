//! Slow, silent and unauthenticated clients against the real server: header,
//! body and keep-alive timeouts, the per-address cap on unauthenticated
//! connections, and shedding when descriptors run out. Timeouts are set short
//! for each server; every bound asserted is several times the configured one.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{spawn_app, spawn_process_with_open_files, TestApp};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How a socket ended from the client's side.
#[derive(Debug)]
struct Ending {
    /// Everything the server sent before closing.
    bytes: Vec<u8>,
    /// False when the socket was still open at the deadline.
    closed: bool,
}

impl Ending {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until the server closes the socket (EOF or reset), or `within` passes.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Ending {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(within, read_all).await.is_ok();
    Ending { bytes, closed }
}

/// Connects from `source` (any 127.x address works on loopback).
async fn connect_from(addr: SocketAddr, source: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One response read off a raw socket: status, headers (lower-cased) and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed inside a body");
        data.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&data[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, head, body)
}

/// Sends an endless request head a byte every 100 ms until the server closes
/// the socket: how many bytes went out, and what came back.
async fn slowloris(stream: TcpStream, i: usize) -> (usize, Ending) {
    let (mut rd, mut wr) = stream.into_split();
    let sent = AtomicUsize::new(0);
    let dribble = async {
        let head = format!("GET /health HTTP/1.1\r\nHost: test\r\nX-Slow-{i}: ");
        for byte in head.bytes().chain(std::iter::repeat(b'a')) {
            if wr.write_all(&[byte]).await.is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    };
    let ending = tokio::select! {
        ending = read_until_closed(&mut rd, Duration::from_secs(15)) => ending,
        () = dribble => unreachable!(),
    };
    (sent.load(Ordering::Relaxed), ending)
}

/// Opens one more connection from `source` and reads how it ends.
async fn one_more(addr: SocketAddr, source: IpAddr) -> Ending {
    let mut extra = connect_from(addr, source).await;
    read_until_closed(&mut extra, Duration::from_secs(5)).await
}

fn health_request() -> &'static [u8] {
    b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
}

async fn login(app: &TestApp, name: &str) -> u16 {
    let (status, _) = app
        .post(
            "/api/auth/login",
            json!({"username": name, "password": "password123"}),
        )
        .await;
    status
}

#[tokio::test]
async fn silent_and_slowloris_sockets_are_closed_after_the_header_timeout_while_health_and_login_answer(
) {
    let app = spawn_app(&[
        ("HTTP_HEADER_TIMEOUT", "1s"),
        ("HTTP_KEEPALIVE_TIMEOUT", "60s"),
    ])
    .await;
    app.register("patient").await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // Slowloris: a request head that grows by one byte every 100 ms and never ends.
    let mut slow = Vec::new();
    for i in 0..100 {
        let stream = TcpStream::connect(app.addr).await.unwrap();
        slow.push(tokio::spawn(slowloris(stream, i)));
    }
    // The server keeps answering while the flood is held open.
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.0, 200);
        assert_eq!(login(&app, "patient").await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, stream) in silent.iter_mut().enumerate() {
        let ending = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(ending.closed, "silent socket {i} is still open");
        // Nothing was asked, so nothing is answered.
        assert!(ending.bytes.is_empty(), "{}", ending.text());
    }
    for task in slow {
        let (sent, ending) = task.await.unwrap();
        assert!(
            ending.closed,
            "a slowloris socket is still open after {sent} bytes"
        );
        assert!(sent > 5, "closed before it dribbled much: {sent} bytes");
        let text = ending.text();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(r#""error":"request_timeout""#), "{text}");
    }
    assert_eq!(app.get("/health").await.0, 200);
    assert_eq!(login(&app, "patient").await, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes() {
    let app = spawn_app(&[("HTTP_BODY_TIMEOUT", "1s")]).await;
    let declared =
        b"POST /api/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                     Content-Length: 60\r\n\r\n{\"username\":";
    let chunked =
        b"POST /api/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n5\r\n{\"use\r\n";
    for request in [&declared[..], &chunked[..]] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let (status, head, body) = read_response(&mut stream).await;
        assert_eq!(status, 408, "{head}");
        assert_eq!(body["error"], "request_timeout", "{body}");
        assert!(head.contains("connection: close"), "{head}");
        let ending = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(ending.closed && ending.bytes.is_empty(), "{ending:?}");
    }
    // A body sent at once is not affected.
    assert_eq!(
        app.post(
            "/api/auth/login",
            json!({"username": "nobody", "password": "password123"})
        )
        .await
        .0,
        401
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = spawn_app(&[
        ("HTTP_KEEPALIVE_TIMEOUT", "1s"),
        ("HTTP_HEADER_TIMEOUT", "30s"),
    ])
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(health_request()).await.unwrap();
        let (status, head, _) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        assert!(!head.contains("connection: close"), "kept alive: {head}");
    }
    let ending = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(ending.closed, "the idle connection is still open");
    assert!(
        ending.bytes.is_empty(),
        "nothing is owed: {}",
        ending.text()
    );
}

#[tokio::test]
async fn the_keepalive_timeout_not_the_header_timeout_bounds_an_idle_connection() {
    let app = spawn_app(&[
        ("HTTP_KEEPALIVE_TIMEOUT", "30s"),
        ("HTTP_HEADER_TIMEOUT", "1s"),
    ])
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    // Idle for longer than the header timeout: still open, and usable.
    let ending = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(!ending.closed, "closed while idle: {ending:?}");
    stream.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    // A later request's head is held to the header timeout from its first byte.
    stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let ending = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(ending.closed, "a half-sent head kept the connection");
    assert!(
        ending.text().starts_with("HTTP/1.1 408"),
        "{}",
        ending.text()
    );
}

#[tokio::test]
async fn idle_kept_alive_connections_are_bounded() {
    let app = spawn_app(&[("HTTP_MAX_IDLE_CONNECTIONS", "2")]).await;
    let mut streams = Vec::new();
    let mut kept = 0;
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(health_request()).await.unwrap();
        let (status, head, _) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        if !head.contains("connection: close") {
            kept += 1;
        }
        streams.push((stream, head));
    }
    assert_eq!(kept, 2, "two idle places");
    for (stream, head) in &mut streams {
        let ending = read_until_closed(stream, Duration::from_millis(500)).await;
        assert_eq!(ending.closed, head.contains("connection: close"), "{head}");
    }
}

#[tokio::test]
async fn unauthenticated_connections_are_capped_per_address_and_the_cap_recovers() {
    let app = spawn_app(&[
        ("UNAUTH_CONNECTIONS_PER_IP", "5"),
        ("HTTP_HEADER_TIMEOUT", "60s"),
    ])
    .await;
    let token = app.register("capped").await;
    let here = IpAddr::from([127, 0, 0, 1]);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(app.addr, here).await);
    }
    // The sixth is answered 429 and closed.
    let ending = one_more(app.addr, here).await;
    assert!(ending.closed, "the sixth connection stayed open");
    let text = ending.text();
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains(r#""error":"rate_limited""#), "{text}");
    assert!(text.to_lowercase().contains("retry-after:"), "{text}");

    // Another address has its own count.
    let mut other = connect_from(app.addr, IpAddr::from([127, 0, 0, 2])).await;
    other.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut other).await.0, 200);

    // An authenticated request frees its connection's place.
    let verify = format!(
        "POST /api/auth/verify HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    held[0].write_all(verify.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut held[0]).await.0, 200);
    let mut sixth = connect_from(app.addr, here).await;
    sixth.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut sixth).await.0, 200);
    // Full again (four held plus the sixth), until sockets close.
    assert!(one_more(app.addr, here)
        .await
        .text()
        .starts_with("HTTP/1.1 429"));
    drop(held.drain(1..));
    let mut recovered = false;
    for _ in 0..50 {
        let mut again = connect_from(app.addr, here).await;
        if again.write_all(health_request()).await.is_ok() {
            let ending = read_until_closed(&mut again, Duration::from_millis(300)).await;
            if ending.text().starts_with("HTTP/1.1 200") {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "closed sockets did not give their places back");
}

#[tokio::test]
async fn a_websocket_upgrade_authenticates_its_connection() {
    let app = spawn_app(&[
        ("UNAUTH_CONNECTIONS_PER_IP", "2"),
        ("HTTP_HEADER_TIMEOUT", "60s"),
    ])
    .await;
    let token = app.register("sockets").await;
    // Three WebSockets from one address: each stops counting once upgraded.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(app.connect(&token).await.0);
    }
    let _a = TcpStream::connect(app.addr).await.unwrap();
    let _b = TcpStream::connect(app.addr).await.unwrap();
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let ending = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(
        ending.text().starts_with("HTTP/1.1 429"),
        "{}",
        ending.text()
    );
}

#[tokio::test]
async fn an_upgrade_that_never_completes_gives_its_connection_slot_back() {
    // A slot's lease is three ping intervals: three minutes here.
    let app = spawn_app(&[
        ("WS_MAX_CONNECTIONS_PER_USER", "1"),
        ("WS_PING_INTERVAL", "60s"),
    ])
    .await;
    let token = app.register("vanishing").await;
    let upgrade = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    for _ in 0..3 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(upgrade.as_bytes()).await.unwrap();
        // Gone before the 101 can be written: a reset, not a close.
        stream.set_zero_linger().unwrap();
        drop(stream);
        let mut admitted = false;
        for _ in 0..50 {
            match tokio_tungstenite::connect_async(app.ws_url(&format!("?token={token}"))).await {
                Ok((mut ws, _)) => {
                    admitted = true;
                    let _ = ws.close(None).await;
                    // Wait until the server has let this one go too.
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(admitted, "the vanished upgrade kept the user's only slot");
    }
}

#[tokio::test]
async fn out_of_descriptors_the_oldest_unauthenticated_sockets_make_way_for_health_and_login() {
    // 256 descriptors, 64 kept free: about 190 client sockets.
    let server = spawn_process_with_open_files(
        256,
        &[("FD_HEADROOM", "64"), ("HTTP_HEADER_TIMEOUT", "120s")],
    )
    .await;
    let token = server.register("steady").await;
    let (mut chat, _) = server.connect(&token).await;
    let mut flood = Vec::new();
    for _ in 0..400 {
        let connect = TcpStream::connect(server.addr);
        let stream = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .expect("the server keeps taking connections")
            .unwrap();
        flood.push(stream);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..3 {
        let health = client.get(server.url("/health")).send().await;
        assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
        let login = client
            .post(server.url("/api/auth/login"))
            .json(&json!({"username": "steady", "password": "password123"}))
            .send()
            .await;
        assert_eq!(login.map(|r| r.status().as_u16()).ok(), Some(200));
    }
    // The first sockets of the flood were shed; the authenticated WebSocket
    // was not.
    let ending = read_until_closed(&mut flood[0], Duration::from_secs(5)).await;
    assert!(ending.closed && ending.bytes.is_empty(), "{ending:?}");
    let exchange = chat.chat("still here").await;
    assert_eq!(exchange.status, "completed", "{:?}", exchange.messages);
    assert!(server.log_text().contains("shed"), "{}", server.log_text());
}
