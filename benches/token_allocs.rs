//! Heap allocations per streamed token, counted (not timed): what the
//! gateway's own work costs the allocator for each token of a text-only
//! answer, so a change on the token path can be judged by a number that
//! does not depend on the box or its load.
//!
//! `cargo bench --bench token_allocs` runs, in one process:
//! - a loopback upstream stub on its own thread, speaking the FastAPI
//!   contract (OpenAI's full chunk shape, chunked transfer encoding), that
//!   writes each token only once the previous one was consumed, so every
//!   token is one read of the upstream, one log append and one frame;
//! - `upstream`: the real [`UpstreamAi`] adapter (reqwest, our SSE reader,
//!   the chunk parser) read to its deltas;
//! - `gateway`: the whole application built in this process, as the binary
//!   builds it (memory mode), with a blocking WebSocket client on its own
//!   thread: SSE bytes in, deltas, the generation's events, the log append,
//!   live delivery and the `stream-token` frame written to the socket.
//!
//! Only the thread that runs the server (a current-thread runtime: every
//! task of the gateway runs on it) is counted; the stub and the client run
//! on threads of their own and are not. Each mode reads an answer of
//! `TOKEN_ALLOCS_TOKENS` (default 2200) tokens and reports the allocations
//! (`malloc`, `calloc` and `realloc` calls) and bytes asked between its
//! 200th and its last token, divided by the tokens in between: start-up and
//! the answer's first and last steps are outside that window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use chatbot_server::adapters::outbound::upstream_ai::{UpstreamAi, UpstreamTimeouts};
use chatbot_server::application::ports::{AiModel, AiPurpose, AiRequest};
use chatbot_server::config::Config;
use chatbot_server::domain::answer::AnswerDelta;
use chatbot_server::domain::user::UserId;
use chatbot_server::domain::SessionId;
use chatbot_server::startup::Application;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// Tokens before the counted window: the answer's start is not per token.
const WARM_UP_TOKENS: usize = 200;
const JWT_SECRET: &str = "token-allocs-benchmark-secret-0123456789abcdef";

// ------------------------------------------------------------- counting

/// The system allocator, counting what the marked thread asks of it.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Const-initialised and without a destructor: reading it from inside
    /// the allocator never allocates.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Allocations and bytes counted so far.
fn counted() -> (u64, u64) {
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

/// What the counted window cost per token.
struct Window {
    start: (u64, u64),
    end: (u64, u64),
    tokens: usize,
}

impl Window {
    /// The counts read at the warm-up token (`start`) and the last (`end`)
    /// of an answer that must have brought all `tokens`.
    fn of(seen: usize, tokens: usize, start: (u64, u64), end: (u64, u64)) -> Self {
        assert_eq!(seen, tokens, "every token arrives");
        Self {
            start,
            end,
            tokens: tokens - WARM_UP_TOKENS,
        }
    }

    fn report(&self, mode: &str) {
        let per = |a: u64, b: u64| (b - a) as f64 / self.tokens as f64;
        println!(
            "{mode:<8} allocations per token {:6.2}   bytes per token {:8.1}   ({} tokens counted)",
            per(self.start.0, self.end.0),
            per(self.start.1, self.end.1),
            self.tokens
        );
    }
}

// ------------------------------------------------------------ upstream

/// One `data:` event of a token, as OpenAI-compatible servers write it.
fn token_event(i: usize) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": format!(" word{i}")},
                     "logprobs": null, "finish_reason": null}]
    });
    format!("data: {chunk}\n\n")
}

/// A loopback upstream: each answer has `tokens` tokens; after the first,
/// each is written once `next` says the previous one was consumed.
fn start_upstream(tokens: usize, next: Receiver<()>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            if serve(stream, tokens, &next).is_err() {
                continue;
            }
        }
    });
    url
}

/// Answers one request: a health probe with an empty 200, an answer with
/// the paced event stream.
fn serve(mut stream: TcpStream, tokens: usize, next: &Receiver<()>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let post = read_request(&mut stream)?;
    if !post {
        return stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    }
    stream.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
          transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )?;
    for i in 0..tokens {
        if i > 0 && next.recv().is_err() {
            return Ok(());
        }
        write_chunk(&mut stream, token_event(i).as_bytes())?;
    }
    let _ = next.recv();
    write_chunk(&mut stream, b"data: [DONE]\n\n")?;
    stream.write_all(b"0\r\n\r\n")
}

fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    stream.write_all(&framed)
}

/// Reads a request's head and body; whether it was a POST.
fn read_request(stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let post = line.starts_with("POST");
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(post)
}

// ---------------------------------------------------------------- modes

/// The upstream adapter alone: deltas read off a real HTTP response.
async fn upstream_mode(tokens: usize) -> Window {
    let (next, paced) = sync_channel(1);
    let url = start_upstream(tokens, paced);
    let ai = UpstreamAi::new(&url, UpstreamTimeouts::default()).unwrap();
    let request = AiRequest {
        query: "bench".to_owned(),
        user_id: UserId::parse("bench").unwrap(),
        session_id: SessionId::generate(),
        history: Vec::new(),
        trace: None,
        purpose: AiPurpose::Answer,
    };
    let mut answer = ai.stream(request).await.expect("the stub answers");
    let mut seen = 0;
    let (mut start, mut end) = ((0, 0), (0, 0));
    while let Some(delta) = answer.next().await {
        assert!(matches!(delta, Ok(AnswerDelta::Text(_))), "{delta:?}");
        seen += 1;
        if seen == WARM_UP_TOKENS {
            start = counted();
        }
        if seen == tokens {
            end = counted();
        }
        let _ = next.try_send(());
    }
    Window::of(seen, tokens, start, end)
}

/// The whole gateway: one chat over a WebSocket, answered by the stub.
async fn gateway_mode(tokens: usize) -> Window {
    let (next, paced) = sync_channel(1);
    let url = start_upstream(tokens, paced);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("users.db").display().to_string();
    let vars: HashMap<&str, &str> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("JWT_SECRET", JWT_SECRET),
        ("RUST_LOG", "warn"),
        ("SQLITE_PATH", &sqlite),
        ("FASTAPI_URL", &url),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).expect("config");
    let app = Application::build(config)
        .await
        .expect("the gateway builds");
    let addr = app.address();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    let token = register(&format!("http://{addr}")).await;
    let ws_url = format!("ws://{addr}/ws?token={token}");
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(chat_client(&ws_url, tokens, &next));
    });
    let window = finished.await.expect("the client finishes");
    stop.cancel();
    window
}

/// Registers a user; its bearer token.
async fn register(base: &str) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/auth/register"))
        .json(&serde_json::json!({
            "username": "bench", "email": "bench@example.com", "password": "password123"
        }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("a JSON answer");
    body["token"].as_str().expect("a token").to_owned()
}

/// Sends one chat and reads its answer, asking the stub for each next token
/// once one arrived; the window is read here, between two tokens, while
/// the server waits for the stub.
fn chat_client(url: &str, tokens: usize, next: &SyncSender<()>) -> Window {
    let (mut ws, _) = tungstenite::connect(url).expect("the socket opens");
    ws.send(Message::text(r#"{"type":"chat","content":"bench"}"#))
        .unwrap();
    let mut seen = 0;
    let (mut start, mut end) = ((0, 0), (0, 0));
    loop {
        let Message::Text(text) = ws.read().expect("a message") else {
            continue;
        };
        if text.contains(r#""type":"stream-end""#) {
            assert!(text.contains(r#""completed""#), "{text}");
            break;
        }
        if !text.contains(r#""type":"stream-token""#) {
            continue;
        }
        seen += 1;
        if seen == WARM_UP_TOKENS || seen == tokens {
            // What the server still does for this token (the rest of its
            // write, its wake-ups) is done before the window is read.
            std::thread::sleep(Duration::from_millis(20));
            let now = counted();
            if seen == WARM_UP_TOKENS {
                start = now;
            } else {
                end = now;
            }
        }
        let _ = next.try_send(());
    }
    Window::of(seen, tokens, start, end)
}

fn main() {
    let tokens: usize = std::env::var("TOKEN_ALLOCS_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2200)
        .max(WARM_UP_TOKENS + 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    COUNTED.with(|c| c.set(true));
    runtime.block_on(upstream_mode(tokens)).report("upstream");
    runtime.block_on(gateway_mode(tokens)).report("gateway");
}
