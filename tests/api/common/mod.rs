//! Test helpers: the application built in-process on port 0 (or the real
//! server binary, for what only a process shows: signals, exit codes, logs,
//! restarts), a real SSE upstream stub, and small HTTP / WebSocket clients.
#![allow(dead_code)]

pub mod cluster;
pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatbot_server::config::Config;
use chatbot_server::startup::Application;
use futures_util::{SinkExt, StreamExt};
use poem::web::Json;
use poem::{handler, post, Body, EndpointExt, Response, Route, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const TEST_SECRET: &str = "integration-test-secret-0123456789abcdef";

/// The settings every test server starts from, whether in-process or a
/// process: loopback on a free port, a fixed secret, its own SQLite file, a
/// fast echo model. `extra` overrides or adds.
fn test_vars(sqlite_path: &std::path::Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("JWT_SECRET", TEST_SECRET),
        ("RUST_LOG", "info"),
        ("ECHO_TOKEN_DELAY", "5ms"),
        // Tests drive many sockets, chats and accounts from one address and
        // often one user: the abuse limits are off unless a test (tests/limits.rs)
        // turns one on through `extra`.
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "0"),
        ("LOGIN_MAX_FAILURES_PER_IP", "0"),
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY", "0"),
        ("REGISTER_PER_IP_PER_HOUR", "0"),
        ("VERIFY_PER_IP_PER_MINUTE", "0"),
        ("WS_TICKETS_PER_USER_PER_MINUTE", "0"),
        ("CHAT_MESSAGES_PER_MINUTE", "0"),
        ("CHAT_MAX_CONCURRENT_PER_USER", "0"),
        ("WS_MAX_CONNECTIONS_PER_USER", "0"),
        ("WS_MAX_CONNECTIONS_PER_IP", "0"),
        ("SESSIONS_MAX_PER_USER", "0"),
        ("UNAUTH_CONNECTIONS_PER_IP", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    vars.push(("SQLITE_PATH".into(), sqlite_path.display().to_string()));
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars
}

/// The server binary the process tests run: `CHATBOT_BIN` when set (a copy
/// of this tree's build, where a shared target directory may hold another
/// tree's), else the one cargo built beside these tests.
pub fn server_binary() -> String {
    std::env::var("CHATBOT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_chatbot-server").to_owned())
}

/// A running server and where to reach it. In-process servers stop when this
/// is dropped; see [`TestProcess`] for the binary.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub sqlite_path: PathBuf,
    /// Where `/metrics` is served apart (`METRICS_ADDR`), for in-process servers.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<CancellationToken>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.cancel();
        }
    }
}

/// Builds the application in this process, exactly as the binary does, with
/// [`test_vars`] as its whole environment and a fresh SQLite file.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app_at(dir.path().join("users.db"), extra).await;
    app._dir = Some(dir);
    app
}

/// Like [`spawn_app`], on a SQLite file the caller owns (to share it with
/// another server).
pub async fn spawn_app_at(path: PathBuf, extra: &[(&str, &str)]) -> TestApp {
    let vars: HashMap<String, String> = test_vars(&path, extra).into_iter().collect();
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration");
    let app = Application::build(config)
        .await
        .expect("application builds");
    let addr = app.address();
    let metrics_addr = app.metrics_address();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        sqlite_path: path,
        metrics_addr,
        stop: Some(stop),
        _dir: None,
    }
}

/// [`spawn_app`] answering from a fresh [`Upstream`] stub.
pub async fn app_with_upstream(extra: &[(&str, &str)]) -> (TestApp, Upstream) {
    let upstream = Upstream::start().await;
    let mut env = vec![("FASTAPI_URL", upstream.url.as_str())];
    env.extend_from_slice(extra);
    (spawn_app(&env).await, upstream)
}

/// The real server binary. Killed when dropped.
pub struct TestProcess {
    pub app: TestApp,
    pub child: Child,
    /// Everything the process wrote to stdout and stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Deref for TestProcess {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Starts the server binary with [`test_vars`] and a fresh SQLite file.
pub async fn spawn_process(extra: &[(&str, &str)]) -> TestProcess {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let mut process = spawn_process_at(path, extra).await;
    process.app._dir = Some(dir);
    process
}

/// [`spawn_process`] with at most `open_files` descriptors (soft and hard
/// limit, so the server cannot raise it).
pub async fn spawn_process_with_open_files(open_files: u64, extra: &[(&str, &str)]) -> TestProcess {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let mut process = spawn_process_with(path, extra, Some(open_files)).await;
    process.app._dir = Some(dir);
    process
}

/// Like [`spawn_process`], with a SQLite file the caller owns (to restart on it).
pub async fn spawn_process_at(sqlite_path: PathBuf, extra: &[(&str, &str)]) -> TestProcess {
    spawn_process_with(sqlite_path, extra, None).await
}

async fn spawn_process_with(
    sqlite_path: PathBuf,
    extra: &[(&str, &str)],
    open_files: Option<u64>,
) -> TestProcess {
    let (child, log, addr) = start_process(&sqlite_path, extra, open_files)
        .await
        .unwrap_or_else(|log| {
            panic!("server did not start; its output:\n{log}");
        });
    TestProcess {
        app: TestApp {
            addr,
            base: format!("http://{addr}"),
            sqlite_path,
            metrics_addr: None,
            stop: None,
            _dir: None,
        },
        child,
        log,
    }
}

fn command(sqlite_path: &std::path::Path, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(server_binary());
    // Start from a clean slate so the developer's own environment (a REDIS_URL,
    // a FASTAPI_URL, a .env) cannot change what a test means.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_vars(sqlite_path, extra))
        // Outside the repository, so a developer's .env is not picked up.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to completion (for start-up failures): exit code and output.
pub async fn run_to_exit(extra: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = command(&dir.path().join("users.db"), extra)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn start_process(
    sqlite_path: &std::path::Path,
    extra: &[(&str, &str)],
    open_files: Option<u64>,
) -> Result<(Child, Arc<Mutex<String>>, SocketAddr), String> {
    let mut cmd = command(sqlite_path, extra);
    if let Some(n) = open_files {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only this struct.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<SocketAddr>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for pipe in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let log = log.clone();
        let addr_tx = addr_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("server listening") {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = addr_tx.send(addr);
                    }
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    drop(addr_tx);
    match tokio::time::timeout(Duration::from_secs(30), addr_rx.recv()).await {
        Ok(Some(addr)) => Ok((child, log, addr)),
        _ => {
            let _ = child.start_kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(log.lock().unwrap().clone())
        }
    }
}

/// The address in a "server listening" log line, human-readable or JSON.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        let addr = v["addr"].as_str().or_else(|| v["fields"]["addr"].as_str());
        return addr?.parse().ok();
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
}

impl TestProcess {
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM, as a process manager would.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("server did not exit in time")
            .unwrap()
            .code()
    }
}

impl TestApp {
    /// Begins an in-process server's shutdown, as SIGTERM does the binary's.
    pub fn begin_shutdown(&self) {
        if let Some(stop) = &self.stop {
            stop.cancel();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/auth/verify` with `Authorization: Bearer <token>` and no body.
    pub async fn verify_bearer(&self, token: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url("/api/auth/verify"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(self.url(path)).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers `name` (email `name@example.com`, password `password123`) and
    /// returns the token.
    pub async fn register(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/auth/register",
                json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// `method path` with `token` as bearer and an optional JSON body:
    /// the status and the JSON answer (`Null` when there is none).
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers `name` and makes it an agent with the operator's command.
    pub async fn register_agent(&self, name: &str) -> String {
        let token = self.register(name).await;
        self.set_role(name, "agent").await;
        token
    }

    /// `chatbot-server users set-role NAME ROLE` on this server's user store,
    /// as an operator runs it (a separate process, the same SQLite file).
    pub async fn set_role(&self, name: &str, role: &str) {
        let out = tokio::process::Command::new(server_binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JWT_SECRET", TEST_SECRET)
            .env("SQLITE_PATH", &self.sqlite_path)
            .args(["users", "set-role", name, role])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "set-role failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Opens a WebSocket with `?token=` and reads the `connected` message.
    pub async fn connect(&self, token: &str) -> (WsClient, Value) {
        self.connect_query(&format!("?token={token}")).await
    }

    pub async fn connect_query(&self, query: &str) -> (WsClient, Value) {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(query))
            .await
            .expect("websocket connects");
        let mut client = WsClient { ws };
        let hello = client.recv().await;
        assert_eq!(hello["type"], "connected", "{hello}");
        (client, hello)
    }

    /// Opens another tab of `session` (which must be resumed), optionally
    /// replaying what came after `last_seq`.
    pub async fn tab(
        &self,
        token: &str,
        session: &str,
        last_seq: Option<u64>,
    ) -> (WsClient, Value) {
        let mut query = format!("?token={token}&sessionId={session}");
        if let Some(n) = last_seq {
            query.push_str(&format!("&lastSeq={n}"));
        }
        let (client, hello) = self.connect_query(&query).await;
        assert_eq!(hello["resumed"], true, "{hello}");
        (client, hello)
    }

    /// Tries to connect and returns the HTTP status of the refusal.
    pub async fn connect_refused_status(&self, request: impl IntoClientRequest + Unpin) -> u16 {
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => panic!("connection was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// A WebSocket client speaking the server's JSON protocol.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// The next JSON message (skipping pings and `quota`, as a client that
    /// knows only the older types would), failing after 10 s.
    pub async fn recv(&mut self) -> Value {
        loop {
            let m = self.recv_any().await;
            if m["type"] != "quota" {
                return m;
            }
        }
    }

    /// The next JSON message whatever its type (skipping pings), failing
    /// after 10 s.
    pub async fn recv_any(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a message within 10 s")
                .expect("connection still open")
                .expect("valid frame");
            match frame {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server sends JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame: {other:?}"),
            }
        }
    }

    /// Sends a chat and collects everything up to and including its stream-end.
    pub async fn chat(&mut self, content: &str) -> Exchange {
        self.send_json(json!({"type": "chat", "content": content}))
            .await;
        self.collect_stream().await
    }

    /// Reads one whole answer: the chat's `user-message` (every tab of the
    /// session gets one before the answer's `stream-start`), then
    /// stream-start, tokens, optional error, stream-end. Every event must carry
    /// the next `seq`.
    pub async fn collect_stream(&mut self) -> Exchange {
        let mut start = self.recv().await;
        let mut user_message = None;
        if start["type"] == "user-message" {
            user_message = Some(start);
            start = self.recv().await;
        }
        assert_eq!(start["type"], "stream-start", "{start}");
        if let Some(asked) = &user_message {
            assert_eq!(start["replyTo"], asked["messageId"], "{start}");
            assert_eq!(start["seq"].as_u64(), asked["seq"].as_u64().map(|s| s + 1));
        }
        let id = start["messageId"].as_str().unwrap().to_owned();
        let mut ex = Exchange {
            message_id: id.clone(),
            tokens: Vec::new(),
            errors: Vec::new(),
            status: String::new(),
            messages: vec![start],
        };
        let mut seq = ex.messages[0]["seq"]
            .as_u64()
            .expect("stream-start has a seq");
        loop {
            let m = self.recv().await;
            ex.messages.push(m.clone());
            assert_eq!(m["messageId"], id.as_str(), "crossed stream: {m}");
            seq += 1;
            assert_eq!(m["seq"].as_u64(), Some(seq), "seq increases by one: {m}");
            match m["type"].as_str().unwrap() {
                "stream-token" => ex.tokens.push(m["token"].as_str().unwrap().to_owned()),
                // The answer's other parts: `messages` keeps them.
                "stream-reasoning" | "stream-status" | "tool-activity" => {}
                "error" => ex.errors.push(m),
                "stream-end" => {
                    ex.status = m["status"].as_str().unwrap().to_owned();
                    return ex;
                }
                other => panic!("unexpected {other} inside a stream: {m}"),
            }
        }
    }

    /// Every message up to and including the next `stream-end`.
    pub async fn until_stream_end(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await;
            let end = m["type"] == "stream-end";
            seen.push(m);
            if end {
                return seen;
            }
        }
    }

    /// Waits for the server to close; returns the close code if a close frame came.
    pub async fn closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection not closed within {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// One assistant reply as the client saw it.
#[derive(Debug)]
pub struct Exchange {
    pub message_id: String,
    pub tokens: Vec<String>,
    pub errors: Vec<Value>,
    pub status: String,
    pub messages: Vec<Value>,
}

impl Exchange {
    pub fn text(&self) -> String {
        self.tokens.concat()
    }
}

/// The `seq`s of conversation events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// Asserts the events are seqs `from`, `from + 1`, … with no gap or duplicate.
pub fn assert_consecutive(events: &[Value], from: u64) {
    let want: Vec<u64> = (from..from + events.len() as u64).collect();
    assert_eq!(seqs(events), want, "no gap, no duplicate");
}

/// True for `2025-09-12T10:30:00.000Z`-shaped strings.
pub fn is_iso_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

// ------------------------------------------------------------ upstream stub

/// A real HTTP server speaking the AI service's SSE protocol, both as the
/// FastAPI service (`POST /api/v1/chat/ai-response`, the query in `query`) and
/// as an OpenAI-compatible one (`POST /v1/chat/completions`, the query in the
/// last message). What it answers depends on the query, so one stub serves
/// every scenario:
/// - `status:NNN`: HTTP NNN before any event, every time;
/// - `flaky:N`: HTTP 503 for the first N requests with this query, then the default;
/// - `busy:S`: HTTP 429 with `Retry-After: S` for the first request with this
///   query, then the default;
/// - `fail-before`: HTTP 500 before any event;
/// - `fail-during`: two tokens, then the connection closes without `[DONE]`;
/// - `big:N`: one delta of N bytes (`x` repeated), then `[DONE]`;
/// - `endless`: a token every 50 ms until the client goes away;
/// - `slow:N`: N tokens 50 ms apart, then `[DONE]`; `fast:N`: 5 ms apart;
/// - `think-and-call`: a reasoning model's answer ([`THINK_AND_CALL`]):
///   reasoning in both spellings, two tool calls in fragments, the text
///   `Here it is.`, then the usage chunk;
/// - anything else: `Reply to: <query>` word by word, then `[DONE]`, with
///   no usage (the gateway estimates it).
///
/// [`Upstream::set_down`] answers every request with that status instead.
pub struct Upstream {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// How many `endless` or `slow` streams were dropped by the client before finishing.
    pub aborted: Arc<AtomicUsize>,
    /// The `Authorization` header of each request, in order (`None`: absent).
    pub authorizations: Arc<Mutex<Vec<Option<String>>>>,
    /// The `traceparent` header of each request, in order (`None`: absent).
    pub traceparents: Arc<Mutex<Vec<Option<String>>>>,
    down: Arc<std::sync::atomic::AtomicU16>,
    _server: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let aborted = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let traceparents = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let state = StubState {
            requests: requests.clone(),
            aborted: aborted.clone(),
            authorizations: authorizations.clone(),
            traceparents: traceparents.clone(),
            down: down.clone(),
        };
        let app = Route::new()
            .at("/api/v1/chat/ai-response", post(ai_response))
            .at("/v1/chat/completions", post(ai_response))
            .at("/", poem::get(stub_root))
            .data(state);
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            url: format!("http://{addr}"),
            requests,
            aborted,
            authorizations,
            traceparents,
            down,
            _server: server,
        }
    }

    /// The OpenAI-compatible base URL (`OPENAI_BASE_URL`).
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// From now on every request gets `status` (`None`: back to normal).
    pub fn set_down(&self, status: Option<u16>) {
        self.down.store(status.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits up to 2 s for the stub to notice `n` aborted streams.
    pub async fn wait_aborted(&self, n: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.aborted.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.aborted.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Value {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

#[derive(Clone)]
struct StubState {
    requests: Arc<Mutex<Vec<Value>>>,
    aborted: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    traceparents: Arc<Mutex<Vec<Option<String>>>>,
    down: Arc<std::sync::atomic::AtomicU16>,
}

impl StubState {
    /// Records the request; returns how many earlier ones had the same query.
    fn record(&self, body: &Value, query: &str, headers: &poem::http::HeaderMap) -> usize {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.authorizations.lock().unwrap().push(auth);
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.traceparents.lock().unwrap().push(traceparent);
        let mut requests = self.requests.lock().unwrap();
        let earlier = requests.iter().filter(|r| query_of(r) == query).count();
        requests.push(body.clone());
        earlier
    }
}

/// The query of a recorded request, in either contract.
fn query_of(body: &Value) -> &str {
    body["query"]
        .as_str()
        .or_else(|| body["messages"].as_array()?.last()?["content"].as_str())
        .unwrap_or_default()
}

fn status_response(status: u16, retry_after: Option<&str>) -> Response {
    let mut builder = Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap());
    if let Some(secs) = retry_after {
        builder = builder.header("Retry-After", secs);
    }
    builder.body("{\"error\":\"stub says no\"}")
}

/// The status a scripted query (`status:`, `flaky:`, `busy:`) or the down
/// switch answers this request with, if any.
fn scripted_failure(state: &StubState, query: &str, earlier: usize) -> Option<Response> {
    let down = state.down.load(Ordering::SeqCst);
    if down != 0 {
        return Some(status_response(down, None));
    }
    if let Some(code) = query.strip_prefix("status:").and_then(|c| c.parse().ok()) {
        return Some(status_response(code, None));
    }
    if let Some(n) = query
        .strip_prefix("flaky:")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return (earlier < n).then(|| status_response(503, None));
    }
    if let Some(secs) = query.strip_prefix("busy:") {
        return (earlier == 0).then(|| status_response(429, Some(secs)));
    }
    None
}

/// Counts a stream as aborted if it is dropped before it finished.
struct AbortGuard {
    aborted: Arc<AtomicUsize>,
    finished: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"delta": {"content": text}}]})
    )
}

#[handler]
fn stub_root() -> &'static str {
    "stub"
}

/// Both providers' chat routes: the stub answers them alike (the OpenAI
/// client reads the same chunk format).
#[handler]
async fn ai_response(
    Json(body): Json<Value>,
    headers: &poem::http::HeaderMap,
    state: poem::web::Data<&StubState>,
) -> Response {
    let query = query_of(&body).to_owned();
    let earlier = state.record(&body, &query, headers);
    if let Some(failure) = scripted_failure(&state, &query, earlier) {
        return failure;
    }
    answer(&query, &state)
}

/// The SSE answer to `query` (or the status of `fail-before`).
fn answer(query: &str, state: &StubState) -> Response {
    let query = query.to_owned();
    let sse = |stream: futures_util::stream::BoxStream<'static, Result<String, std::io::Error>>| {
        Response::builder()
            .content_type("text/event-stream")
            .body(Body::from_bytes_stream(stream))
    };
    if query == "fail-before" {
        return Response::builder()
            .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
            .body("boom");
    }
    if query == "think-and-call" {
        let events = THINK_AND_CALL
            .iter()
            .map(|data| Ok(format!("data: {data}\n\n")))
            .collect::<Vec<_>>();
        return sse(futures_util::stream::iter(events).boxed());
    }
    if query == "fail-during" {
        let events = vec![Ok(delta("partial ")), Ok(delta("answer"))];
        return sse(futures_util::stream::iter(events).boxed());
    }
    if let Some(n) = query.strip_prefix("big:").and_then(|n| n.parse().ok()) {
        let events = vec![Ok(delta(&"x".repeat(n))), Ok("data: [DONE]\n\n".to_owned())];
        return sse(futures_util::stream::iter(events).boxed());
    }
    let aborted = state.aborted.clone();
    let paced = query
        .strip_prefix("slow:")
        .map(|n| (n, 50))
        .or_else(|| query.strip_prefix("fast:").map(|n| (n, 5)))
        .or((query == "endless").then_some(("endless", 50)));
    if let Some((rest, pause_ms)) = paced {
        let limit = rest.parse::<usize>().ok();
        let stream = futures_util::stream::unfold(
            (
                0usize,
                AbortGuard {
                    aborted,
                    finished: false,
                },
            ),
            move |(i, mut guard)| async move {
                if limit.is_some_and(|n| i > n) {
                    guard.finished = true;
                    drop(guard);
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                let event = if limit == Some(i) {
                    "data: [DONE]\n\n".to_owned()
                } else {
                    delta(&format!("t{i} "))
                };
                Some((Ok(event), (i + 1, guard)))
            },
        );
        return sse(stream.boxed());
    }
    let mut events: Vec<Result<String, std::io::Error>> = vec![Ok(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n".into(),
    )];
    let reply = format!("Reply to: {query}");
    let words: Vec<&str> = reply.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let token = if i + 1 < words.len() {
            format!("{w} ")
        } else {
            (*w).to_owned()
        };
        events.push(Ok(delta(&token)));
    }
    events.push(Ok("data: [DONE]\n\n".into()));
    sse(futures_util::stream::iter(events).boxed())
}

/// The `data:` payloads of the stub's `think-and-call` answer, as a
/// reasoning model behind an OpenAI-compatible server streams them.
pub const THINK_AND_CALL: &[&str] = &[
    r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"reasoning_content":"Let me think. "}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"reasoning":"Checking tools."}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"lookup","arguments":""}}]}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]}"#,
    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"add","arguments":"{}"}}]}}]}"#,
    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    r#"{"choices":[{"index":0,"delta":{"content":"Here it is."}}]}"#,
    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33,"completion_tokens_details":{"reasoning_tokens":7}}}"#,
    "[DONE]",
];

/// The expected reply of the stub's default scenario.
pub fn stub_reply(query: &str) -> String {
    format!("Reply to: {query}")
}
