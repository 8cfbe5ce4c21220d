//! Latency and CPU the gateway adds to streamed answers, measured on the real
//! server binary under concurrent chats.
//!
//! `cargo bench --bench streaming` runs, in one process:
//! - a loopback upstream stub speaking the AI service's contract
//!   (`POST /api/v1/chat/ai-response`, SSE deltas, then `[DONE]`); every token's
//!   text is its send time in ns since the UNIX epoch;
//! - the release gateway binary on 127.0.0.1 port 0, once per mode: `memory`
//!   (no Redis) and `redis` (`REDIS_URL` from the environment, default
//!   `redis://127.0.0.1:6379`, under a unique key prefix deleted afterwards;
//!   skipped with a printed line when Redis does not answer);
//! - C WebSocket clients that send one chat each at the same moment and read
//!   until `stream-end`.
//!
//! One line per (mode, C): added latency per token (receive time minus the
//! token's send time; p50, p99), time to first token (chat sent to first
//! `stream-token`; p50), tokens per second over the run, the server's CPU
//! (utime + stime from `/proc`) per token delivered, errors (chats with an
//! `error` message, a stream-end other than `completed`, or no stream-end),
//! tokens delivered of those expected, and this process's own CPU per token
//! (stub and clients share the box with the server: when server and harness
//! together use every core, added latency measures the box, not the gateway).
//!
//! Settings (environment): `STREAMING_CONCURRENCY=100,500,1000`,
//! `STREAMING_TOKENS=200`, `STREAMING_DELAY_MS=20`, `STREAMING_MODES=memory,redis`.
//! Every wait is bounded (a connection 10 s, an answer 3 x tokens x delay + 30 s):
//! a run that stalls reports its timeouts as errors. Compare figures from one
//! run, or with the floors of `/work/shared/perf` run beside it.

use std::borrow::Cow;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use poem::web::Data;
use poem::{handler, post, Body, EndpointExt, Response, Route, Server};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const JWT_SECRET: &str = "streaming-benchmark-secret-0123456789abcdef";
const PASSWORD: &str = "password123";
const CHAT: &str = r#"{"type":"chat","content":"bench"}"#;
/// One registered user drives this many chats.
const CHATS_PER_USER: usize = 50;
/// Connections opened at the same time while setting up a round.
const CONNECT_PARALLELISM: usize = 64;
/// Read buffer of each client socket (a token message is ~150 bytes).
const CLIENT_READ_BUFFER: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Warm-up chats before the measured rounds of each mode (not reported).
const WARM_UP_CHATS: usize = 10;
/// Server log lines at WARN or ERROR copied to stderr, at most.
const MAX_FORWARDED_LOG_LINES: usize = 20;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ------------------------------------------------------------------ settings

#[derive(Debug, Clone)]
struct Settings {
    concurrency: Vec<usize>,
    tokens: usize,
    delay: Duration,
    modes: Vec<String>,
}

impl Settings {
    fn from_env() -> Self {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let concurrency = list("STREAMING_CONCURRENCY", "100,500,1000")
            .iter()
            .map(|c| parse_setting("STREAMING_CONCURRENCY", c))
            .filter(|&c| c > 0)
            .collect();
        Self {
            concurrency,
            tokens: env_setting("STREAMING_TOKENS", 200),
            delay: Duration::from_millis(env_setting("STREAMING_DELAY_MS", 20)),
            modes: list("STREAMING_MODES", "memory,redis"),
        }
    }

    /// How long one chat may take from its send to its stream-end.
    fn answer_budget(&self) -> Duration {
        self.delay * (self.tokens as u32) * 3 + Duration::from_secs(30)
    }

    /// Messages one chat may receive before the client gives up on it.
    fn max_messages(&self) -> usize {
        self.tokens * 4 + 100
    }
}

fn parse_setting<T: FromStr>(name: &str, value: &str) -> T {
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {value:?} is not a number"))
}

fn env_setting<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => parse_setting(name, &v),
        _ => default,
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

// ------------------------------------------------------------- upstream stub

#[derive(Clone, Copy)]
struct StubShape {
    tokens: usize,
    delay: Duration,
}

/// Serves the AI service's streaming endpoint on 127.0.0.1; returns its base URL.
async fn start_stub(shape: StubShape) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("stub binds a loopback port");
    let addr = listener.local_addr().expect("stub address");
    let app = Route::new()
        .at("/api/v1/chat/ai-response", post(ai_response))
        .at("/", poem::get(stub_root))
        .data(shape);
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("stub acceptor");
    tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(app).await;
    });
    format!("http://{addr}")
}

#[handler]
fn stub_root() -> &'static str {
    "stub"
}

/// `tokens` deltas `delay` apart (the first at once), each carrying its send
/// time, then `[DONE]`.
#[handler]
async fn ai_response(_request: Vec<u8>, shape: Data<&StubShape>) -> Response {
    let StubShape { tokens, delay } = *shape.0;
    // A late tick is made up at once (tokio's default), so the answer keeps its
    // schedule of `tokens` over `tokens x delay` even when the box is busy.
    let ticker = (!delay.is_zero()).then(|| tokio::time::interval(delay));
    let events =
        futures_util::stream::unfold((0usize, ticker), move |(i, mut ticker)| async move {
            if i > tokens {
                return None;
            }
            if i == tokens {
                let done = "data: [DONE]\n\n".to_owned();
                return Some((Ok::<_, std::io::Error>(done), (i + 1, ticker)));
            }
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let sent = now_ns();
            let event = format!(r#"data: {{"choices":[{{"delta":{{"content":"{sent} "}}}}]}}"#);
            Some((Ok(event + "\n\n"), (i + 1, ticker)))
        });
    Response::builder()
        .content_type("text/event-stream")
        .header("Cache-Control", "no-cache")
        .body(Body::from_bytes_stream(events))
}

// ------------------------------------------------------------ gateway process

/// The gateway binary, killed when dropped.
struct Gateway {
    child: Child,
    pid: u32,
    addr: String,
    _dir: tempfile::TempDir,
}

/// The limits a load test from one address must turn off.
const NO_LIMITS: &[(&str, &str)] = &[
    ("WS_MAX_CONNECTIONS_PER_USER", "0"),
    ("WS_MAX_CONNECTIONS_PER_IP", "0"),
    ("CHAT_MESSAGES_PER_MINUTE", "0"),
    ("CHAT_MAX_CONCURRENT_PER_USER", "0"),
    ("REGISTER_PER_IP_PER_HOUR", "0"),
    ("SESSIONS_MAX_PER_USER", "0"),
    ("UNAUTH_CONNECTIONS_PER_IP", "0"),
];

/// Starts the server binary with a clean environment plus `extra`, and waits
/// for its "server listening" line.
async fn start_gateway(stub_url: &str, extra: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatbot-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("JWT_SECRET", JWT_SECRET)
        .env("SQLITE_PATH", dir.path().join("users.db"))
        .env("RUST_LOG", "warn,chatbot_server=info")
        .env("FASTAPI_URL", stub_url)
        // Hundreds of clients from one address, several chats per user: a
        // load test, not the abuse the limits stop.
        .envs(NO_LIMITS.iter().copied())
        .envs(extra.iter().copied())
        // Outside the repository, so no developer `.env` is picked up.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
    let pid = child.id().expect("server pid");
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("server stdout");
    let stderr = child.stderr.take().expect("server stderr");
    drain_log(Box::new(stdout), Some(addr_tx));
    drain_log(Box::new(stderr), None);
    let addr = tokio::time::timeout(SERVER_START_TIMEOUT, addr_rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("server did not log its address within {SERVER_START_TIMEOUT:?}")
        });
    Gateway {
        child,
        pid,
        addr,
        _dir: dir,
    }
}

impl Gateway {
    /// Kills the server and waits until it is gone.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads a server pipe to its end (so the server never blocks on a full
/// pipe), reports the listening address, and copies a few warnings to stderr.
fn drain_log(
    pipe: Box<dyn AsyncRead + Send + Unpin>,
    addr_tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        let mut forwarded = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            if let (Some(tx), true) = (&addr_tx, line.contains("server listening")) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
            let loud = line.contains("WARN") || line.contains("ERROR");
            if loud && forwarded < MAX_FORWARDED_LOG_LINES {
                forwarded += 1;
                eprintln!("server: {line}");
            }
        }
    });
}

/// CPU time the process has used (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// Registers `count` users and returns their tokens.
async fn register_users(addr: &str, count: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("bench_{i}");
        let response = http
            .post(format!("http://{addr}/api/auth/register"))
            .json(&serde_json::json!({
                "username": name, "email": format!("{name}@example.com"), "password": PASSWORD
            }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("register request answered");
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 201, "register {name}: {body}");
        let token = body["token"].as_str().expect("register answer has a token");
        tokens.push(token.to_owned());
    }
    tokens
}

// ------------------------------------------------------------------ clients

/// What one chat saw.
#[derive(Default)]
struct Answer {
    /// Added latency of each upstream token delivered, in µs.
    latencies_us: Vec<u64>,
    ttft: Option<Duration>,
    /// Why this chat did not complete cleanly (the first reason).
    error: Option<String>,
}

/// The fields of a server message the bench looks at.
#[derive(Deserialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
}

impl Answer {
    fn fail(&mut self, why: impl Into<String>) {
        self.error.get_or_insert_with(|| why.into());
    }

    /// Takes one text message in; true once the answer has ended.
    fn on_text(&mut self, text: &str, received_ns: u128, sent: Instant) -> bool {
        let Ok(message) = serde_json::from_str::<ServerMessage>(text) else {
            self.fail(format!("not a server message: {text}"));
            return false;
        };
        match message.kind.as_ref() {
            "stream-token" => {
                self.ttft.get_or_insert_with(|| sent.elapsed());
                // A gateway that merges deltas delivers several stamps at once.
                let stamps = message.token.as_deref().unwrap_or_default();
                for stamp in stamps
                    .split_whitespace()
                    .filter_map(|w| w.parse::<u128>().ok())
                {
                    let added = received_ns.saturating_sub(stamp) / 1000;
                    self.latencies_us
                        .push(u64::try_from(added).unwrap_or(u64::MAX));
                }
                false
            }
            "error" => {
                self.fail(text);
                false
            }
            "stream-end" => {
                if message.status.as_deref() != Some("completed") {
                    self.fail(text);
                }
                true
            }
            _ => false,
        }
    }
}

/// Opens a socket with `token` and reads its `connected` message.
async fn connect(addr: &str, token: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}/ws?token={token}");
    let open = async {
        // tungstenite zero-fills its whole read buffer (128 KiB by default) on
        // every read; a small one keeps the clients' CPU off the figures.
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains(r#""type":"connected""#) => {
                    return Ok(ws)
                }
                Some(Ok(Message::Text(t))) => return Err(format!("expected connected, got {t}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("before connected: {e}")),
                None => return Err("closed before connected".to_owned()),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| Err(format!("no connected message within {CONNECT_TIMEOUT:?}")))
}

/// Waits for the start signal, sends the chat, and reads until its stream-end
/// (or the budget runs out). The socket is handed back open.
async fn chat(mut ws: Ws, mut start: watch::Receiver<bool>, settings: Settings) -> (Ws, Answer) {
    let mut answer = Answer::default();
    if start.wait_for(|go| *go).await.is_err() {
        answer.fail("start signal lost");
        return (ws, answer);
    }
    let sent = Instant::now();
    let deadline = tokio::time::Instant::from_std(sent + settings.answer_budget());
    if let Err(e) = ws.send(Message::text(CHAT)).await {
        answer.fail(format!("send: {e}"));
        return (ws, answer);
    }
    for _ in 0..settings.max_messages() {
        let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return (ws, fail(answer, format!("read: {e}"))),
            Ok(None) => return (ws, fail(answer, "closed before stream-end")),
            Err(_) => return (ws, fail(answer, "no stream-end within the budget")),
        };
        let received_ns = now_ns();
        if let Message::Text(text) = frame {
            if answer.on_text(text.as_str(), received_ns, sent) {
                return (ws, answer);
            }
        }
    }
    let limit = settings.max_messages();
    (
        ws,
        fail(answer, format!("no stream-end in {limit} messages")),
    )
}

fn fail(mut answer: Answer, why: impl Into<String>) -> Answer {
    answer.fail(why);
    answer
}

// -------------------------------------------------------------------- rounds

/// The figures of one (mode, concurrency) run.
struct RoundReport {
    concurrency: usize,
    latencies_us: Vec<u64>,
    ttfts: Vec<Duration>,
    expected_tokens: usize,
    wall: Duration,
    server_cpu: Duration,
    /// CPU of this process (stub and clients) over the same interval.
    harness_cpu: Duration,
    errors: usize,
    first_error: Option<String>,
}

/// CPU used during a round's measured interval.
struct Cpu {
    server: Duration,
    harness: Duration,
}

/// Opens `c` sockets, users taking turns by blocks of [`CHATS_PER_USER`].
async fn open_sockets(addr: &str, users: &[String], c: usize) -> (Vec<Ws>, Vec<String>) {
    let opened: Vec<Result<Ws, String>> = futures_util::stream::iter(0..c)
        .map(|i| connect(addr, &users[(i / CHATS_PER_USER) % users.len()]))
        .buffer_unordered(CONNECT_PARALLELISM)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(c);
    let mut failures = Vec::new();
    for result in opened {
        match result {
            Ok(ws) => sockets.push(ws),
            Err(e) => failures.push(e),
        }
    }
    (sockets, failures)
}

/// One measured round: every socket sends its chat at once; server CPU is
/// read just before the start and just after the last answer.
async fn run_round(gw: &Gateway, users: &[String], c: usize, settings: &Settings) -> RoundReport {
    let (sockets, failures) = open_sockets(&gw.addr, users, c).await;
    let (go, start) = watch::channel(false);
    let chats: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(chat(ws, start.clone(), settings.clone())))
        .collect();
    // Let every task reach its wait before the start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = cpu_time(gw.pid);
    let harness_before = cpu_time(std::process::id());
    let started = Instant::now();
    // `start` is still held here, so the signal always has a receiver.
    let _ = go.send(true);
    let mut answers = Vec::with_capacity(c);
    let mut sockets = Vec::with_capacity(c);
    for task in chats {
        match task.await {
            Ok((ws, answer)) => {
                sockets.push(ws);
                answers.push(answer);
            }
            Err(e) => answers.push(fail(Answer::default(), format!("chat task: {e}"))),
        }
    }
    let wall = started.elapsed();
    let cpu = Cpu {
        server: cpu_time(gw.pid).saturating_sub(cpu_before),
        harness: cpu_time(std::process::id()).saturating_sub(harness_before),
    };
    close_all(sockets).await;
    summarize(c, settings, answers, failures, wall, cpu)
}

/// Closes every socket, giving each at most a second.
async fn close_all(sockets: Vec<Ws>) {
    let closing = sockets.into_iter().map(|mut ws| async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    });
    futures_util::future::join_all(closing).await;
}

fn summarize(
    c: usize,
    settings: &Settings,
    answers: Vec<Answer>,
    failures: Vec<String>,
    wall: Duration,
    cpu: Cpu,
) -> RoundReport {
    let mut report = RoundReport {
        concurrency: c,
        latencies_us: Vec::with_capacity(c * settings.tokens),
        ttfts: Vec::with_capacity(c),
        expected_tokens: c * settings.tokens,
        wall,
        server_cpu: cpu.server,
        harness_cpu: cpu.harness,
        errors: failures.len(),
        first_error: failures.into_iter().next(),
    };
    for answer in answers {
        report.latencies_us.extend(answer.latencies_us);
        report.ttfts.extend(answer.ttft);
        if let Some(e) = answer.error {
            report.errors += 1;
            report.first_error.get_or_insert(e);
        }
    }
    report.latencies_us.sort_unstable();
    report.ttfts.sort_unstable();
    report
}

/// The value at quantile `q` of sorted values (0 when there are none).
fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl RoundReport {
    fn line(&self, mode: &str) -> String {
        let delivered = self.latencies_us.len();
        let ms = |us: u64| us as f64 / 1000.0;
        let per_token = |cpu: Duration| cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
        format!(
            "{mode:<7} c={}  added p50={:.2}ms p99={:.2}ms  ttft p50={:.1}ms  tokens/s={:.0}  cpu={:.1}us/token  errors={}  delivered={delivered}/{}  harness-cpu={:.1}us/token",
            self.concurrency,
            ms(quantile(&self.latencies_us, 0.50)),
            ms(quantile(&self.latencies_us, 0.99)),
            quantile(&self.ttfts, 0.50).as_secs_f64() * 1000.0,
            delivered as f64 / self.wall.as_secs_f64().max(1e-9),
            per_token(self.server_cpu),
            self.errors,
            self.expected_tokens,
            per_token(self.harness_cpu),
        )
    }
}

// --------------------------------------------------------------------- modes

/// Starts a gateway, warms it up, and prints one line per concurrency.
async fn run_mode(mode: &str, stub_url: &str, extra: &[(&str, &str)], settings: &Settings) {
    let gw = start_gateway(stub_url, extra).await;
    let most = settings.concurrency.iter().copied().max().unwrap_or(1);
    let users = register_users(&gw.addr, most.div_ceil(CHATS_PER_USER)).await;
    let warm_up = run_round(&gw, &users, WARM_UP_CHATS, settings).await;
    if warm_up.errors > 0 {
        eprintln!(
            "{mode}: warm-up had {} errors, first: {}",
            warm_up.errors,
            warm_up.first_error.as_deref().unwrap_or("?")
        );
    }
    for &c in &settings.concurrency {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = run_round(&gw, &users, c, settings).await;
        println!("{}", report.line(mode));
        if let Some(e) = &report.first_error {
            eprintln!("{mode} c={c}: first error: {e}");
        }
    }
    gw.stop().await;
}

/// The Redis to use: `REDIS_URL` or the local default, loopback only.
fn redis_url() -> Result<String, String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("REDIS_URL does not parse: {e}"))?;
    match parsed.host_str() {
        Some("127.0.0.1") => Ok(url),
        _ => Err("REDIS_URL is not on 127.0.0.1; this bench only uses loopback".to_owned()),
    }
}

/// A connection to Redis if it answers PING within two seconds.
async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let ping = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(conn)
    };
    tokio::time::timeout(Duration::from_secs(2), ping)
        .await
        .unwrap_or_else(|_| Err("no answer within 2s".to_owned()))
}

/// Deletes every key under `prefix:`; returns how many.
async fn delete_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> usize {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    // Bounded: a prefix this bench made holds a few thousand keys at most.
    for _ in 0..100_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN answered");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    for chunk in keys.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(conn)
            .await
            .expect("DEL answered");
    }
    keys.len()
}

/// The redis mode, or a line saying why it was skipped.
async fn run_redis_mode(stub_url: &str, settings: &Settings) {
    let url = match redis_url() {
        Ok(url) => url,
        Err(why) => return println!("redis   skipped: {why}"),
    };
    let mut conn = match redis_connection(&url).await {
        Ok(conn) => conn,
        Err(why) => {
            let port = reqwest::Url::parse(&url).ok().and_then(|u| u.port());
            let port = port.map_or_else(|| "default port".to_owned(), |p| format!("port {p}"));
            return println!("redis   skipped: Redis on 127.0.0.1 {port} does not answer ({why})");
        }
    };
    let prefix = format!("bench-streaming-{}-{}", std::process::id(), now_ns());
    let extra = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    run_mode("redis", stub_url, &extra, settings).await;
    // The gateway has exited: nothing writes under the prefix any more.
    let deleted = delete_keys(&mut conn, &prefix).await;
    eprintln!("redis: deleted {deleted} keys under {prefix}:");
}

/// Lifts the open-file soft limit to the hard limit: C clients plus C
/// upstream streams live in this process.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::main]
async fn main() {
    raise_open_file_limit();
    let settings = Settings::from_env();
    let shape = StubShape {
        tokens: settings.tokens,
        delay: settings.delay,
    };
    let stub_url = start_stub(shape).await;
    println!(
        "streaming: {} tokens {:?} apart per answer, concurrency {:?}",
        settings.tokens, settings.delay, settings.concurrency
    );
    for mode in &settings.modes {
        match mode.as_str() {
            "memory" => run_mode("memory", &stub_url, &[], &settings).await,
            "redis" => run_redis_mode(&stub_url, &settings).await,
            other => println!("{other}: unknown mode (expected memory or redis)"),
        }
    }
}
