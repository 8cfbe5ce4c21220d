//! Integration tests of the upstream AI adapter, and of the retries, circuit
//! breaker and fallback around it, against a real HTTP stub on a loopback
//! socket, so connection handling, retries and aborts are the real thing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatbot_server::adapters::outbound::fallback_ai::FallbackAi;
use chatbot_server::adapters::outbound::resilient_ai::{
    AttemptOutcome, BreakerSettings, ResilientAi, RetryPolicy, UpstreamLabel, UpstreamObserver,
};
use chatbot_server::adapters::outbound::upstream_ai::{
    OpenAiSettings, UpstreamAi, UpstreamTimeouts,
};
use chatbot_server::application::ports::{
    AiError, AiHealth, AiModel, AiPurpose, AiRequest, CircuitState, TokenStream,
};
use chatbot_server::domain::answer::AnswerDelta;
use chatbot_server::domain::{ChatMessage, Role, SessionId, UserId};
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Distinctive so a test can prove it never leaks into an error text.
const PROMPT: &str = "SECRET-PROMPT what is the meaning of life";

// ----------------------------------------------------------------- stub

/// One thing the stub does on a connection after reading the request. The
/// response head is written by an `Act::Write` too, so a test can withhold it.
#[derive(Clone)]
enum Act {
    Write(String),
    Sleep(Duration),
    /// Reads until the client hangs up, then reports it.
    AwaitDisconnect,
}

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Stub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    disconnects: mpsc::UnboundedReceiver<()>,
}

impl Stub {
    /// Serves every connection with the same script; the body is
    /// close-delimited, as many SSE servers send it.
    async fn start(acts: Vec<Act>) -> Self {
        Self::sequence(vec![acts]).await
    }

    /// Serves the n-th connection with the n-th script (the last one for
    /// every connection after it).
    async fn sequence(scripts: Vec<Vec<Act>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (disconnect_tx, disconnects) = mpsc::unbounded_channel();
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((socket, _)) = listener.accept().await {
                let acts = scripts[n.min(scripts.len() - 1)].clone();
                n += 1;
                let recorded = Arc::clone(&recorded);
                let disconnect_tx = disconnect_tx.clone();
                tokio::spawn(async move {
                    serve(socket, acts, recorded, disconnect_tx).await;
                });
            }
        });
        Self {
            addr,
            requests,
            disconnects,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut socket: TcpStream,
    acts: Vec<Act>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    disconnect_tx: mpsc::UnboundedSender<()>,
) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    recorded.lock().unwrap().push(request);
    for act in acts {
        match act {
            Act::Write(bytes) => {
                let written = socket.write_all(bytes.as_bytes()).await;
                if written.is_err() || socket.flush().await.is_err() {
                    let _ = disconnect_tx.send(());
                    return;
                }
            }
            Act::Sleep(d) => tokio::time::sleep(d).await,
            Act::AwaitDisconnect => {
                let mut buf = [0u8; 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = disconnect_tx.send(());
                return;
            }
        }
    }
    // Dropping the socket here ends a close-delimited body: a clean EOF.
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + content_length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body: buf[head_end..head_end + content_length].to_vec(),
    })
}

fn sse_head() -> Act {
    Act::Write(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Connection: close\r\n\r\n"
            .to_owned(),
    )
}

fn plain_head(status: &str, content_type: &str) -> Act {
    Act::Write(format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{{}}"
    ))
}

fn data(payload: &str) -> Act {
    Act::Write(format!("data: {payload}\n\n"))
}

fn delta(text: &str) -> Act {
    data(&json!({"choices": [{"delta": {"content": text}}]}).to_string())
}

fn role_only() -> Act {
    data(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#)
}

fn done() -> Act {
    data("[DONE]")
}

fn sleep_ms(ms: u64) -> Act {
    Act::Sleep(Duration::from_millis(ms))
}

// -------------------------------------------------------------- helpers

fn request() -> AiRequest {
    let now = Utc::now();
    AiRequest {
        query: PROMPT.to_owned(),
        user_id: UserId::parse("64b7f0c2a1b2c3d4e5f60718").unwrap(),
        session_id: SessionId::parse("sess_abc123").unwrap(),
        history: vec![
            ChatMessage {
                role: Role::User,
                content: "first question".to_owned(),
                timestamp: now,
                message_id: None,
            },
            ChatMessage {
                role: Role::Assistant,
                content: "first answer".to_owned(),
                timestamp: now,
                message_id: None,
            },
            ChatMessage {
                role: Role::User,
                content: "second question".to_owned(),
                timestamp: now,
                message_id: None,
            },
        ],
        trace: None,
        purpose: AiPurpose::Answer,
    }
}

fn timeouts(connect_ms: u64, first_token_ms: u64, idle_ms: u64) -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: Duration::from_millis(connect_ms),
        first_token: Duration::from_millis(first_token_ms),
        idle: Duration::from_millis(idle_ms),
    }
}

fn upstream(url: &str) -> UpstreamAi {
    UpstreamAi::new(url, timeouts(2_000, 5_000, 5_000)).unwrap()
}

/// Keeps a broken adapter from hanging the test run.
async fn within<T>(limit_ms: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_millis(limit_ms), fut)
        .await
        .expect("test step took too long")
}

/// The stream's items, its text deltas as their text (these answers carry
/// nothing else).
async fn drain(stream: TokenStream) -> Vec<Result<String, AiError>> {
    within(
        10_000,
        stream.map(|item| item.map(text)).collect::<Vec<_>>(),
    )
    .await
}

fn text(delta: AnswerDelta) -> String {
    match delta {
        AnswerDelta::Text(t) => t,
        other => panic!("only text was sent: {other:?}"),
    }
}

fn assert_no_prompt(err: &AiError) {
    let text = err.to_string();
    assert!(!text.contains("SECRET-PROMPT"), "prompt leaked: {text}");
}

async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn open_error(ai: &UpstreamAi) -> AiError {
    match within(10_000, ai.stream(request())).await {
        Ok(_) => panic!("stream() should have failed"),
        Err(err) => {
            assert_no_prompt(&err);
            err
        }
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn posts_the_request_and_streams_tokens_until_done() {
    let stub = Stub::start(vec![
        sse_head(),
        role_only(),
        delta("Hel"),
        delta(""),
        data(r#"{"choices":[{"delta":{"content":null}}]}"#),
        delta("lo"),
        delta(", world"),
        done(),
        // The stub keeps the connection open: `[DONE]` alone must end the stream.
        Act::Sleep(Duration::from_secs(30)),
    ])
    .await;
    // A trailing slash on the base URL must not double the path separator.
    let ai = upstream(&format!("{}/", stub.url()));

    let started = Instant::now();
    let stream = within(5_000, ai.stream(request())).await.unwrap();
    let items = within(2_000, stream.collect::<Vec<_>>()).await;
    let tokens: Vec<String> = items.into_iter().map(|i| text(i.unwrap())).collect();
    assert_eq!(tokens, ["Hel", "lo", ", world"]);
    assert!(started.elapsed() < Duration::from_secs(2));

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1/chat/ai-response");
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    assert!(req
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json")));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "query": PROMPT,
            "user_id": "64b7f0c2a1b2c3d4e5f60718",
            "session_id": "sess_abc123",
            "context": {"history": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ]},
        })
    );
}

#[tokio::test]
async fn empty_history_is_sent_as_an_empty_list() {
    let stub = Stub::start(vec![sse_head(), delta("ok"), done()]).await;
    let ai = upstream(&stub.url());
    let mut req = request();
    req.history.clear();
    let items = drain(ai.stream(req).await.unwrap()).await;
    assert_eq!(items, [Ok("ok".to_owned())]);
    let body: Value = serde_json::from_slice(&stub.requests()[0].body).unwrap();
    assert_eq!(body["context"], json!({"history": []}));
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let ai = upstream(&closed_port_url().await);
    let err = open_error(&ai).await;
    assert!(matches!(err, AiError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn http_500_is_unavailable_and_not_retried() {
    let stub = Stub::start(vec![plain_head(
        "500 Internal Server Error",
        "application/json",
    )])
    .await;
    let ai = upstream(&stub.url());
    let err = open_error(&ai).await;
    assert!(
        matches!(
            &err,
            AiError::Status {
                status: 500,
                retry_after: None
            }
        ),
        "{err:?}"
    );
    assert!(err.retryable());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn wrong_content_type_is_a_rejection_no_retry_can_fix() {
    let stub = Stub::start(vec![plain_head("200 OK", "application/json")]).await;
    let err = open_error(&upstream(&stub.url())).await;
    assert!(matches!(err, AiError::Rejected(_)), "{err:?}");
    assert!(!err.retryable());
}

#[tokio::test]
async fn a_status_carries_its_retry_after() {
    let stub = Stub::start(vec![Act::Write(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
            .to_owned(),
    )])
    .await;
    let err = open_error(&upstream(&stub.url())).await;
    assert_eq!(
        err,
        AiError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn no_response_headers_within_connect_timeout_is_timeout() {
    let stub = Stub::start(vec![Act::Sleep(Duration::from_secs(30))]).await;
    let ai = UpstreamAi::new(&stub.url(), timeouts(300, 5_000, 5_000)).unwrap();
    let started = Instant::now();
    let err = open_error(&ai).await;
    assert!(matches!(err, AiError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error_item_that_ends_the_stream() {
    let stub = Stub::start(vec![
        sse_head(),
        delta("a"),
        data("{not json"),
        delta("never"),
        done(),
    ])
    .await;
    let items = drain(upstream(&stub.url()).stream(request()).await.unwrap()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok("a".to_owned()));
    let err = items[1].clone().unwrap_err();
    assert!(matches!(err, AiError::Protocol(_)), "{err:?}");
    assert_no_prompt(&err);
}

#[tokio::test]
async fn upstream_error_event_is_an_unavailable_item() {
    let stub = Stub::start(vec![
        sse_head(),
        delta("a"),
        data(r#"{"error": "model overloaded"}"#),
        Act::Sleep(Duration::from_secs(30)),
    ])
    .await;
    let items = drain(upstream(&stub.url()).stream(request()).await.unwrap()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok("a".to_owned()));
    assert!(
        matches!(&items[1], Err(AiError::Unavailable(t)) if t.contains("model overloaded")),
        "{items:?}"
    );
}

#[tokio::test]
async fn eof_before_done_is_a_protocol_error_and_is_not_retried() {
    // The stub closes the connection after two tokens, without `[DONE]`.
    let stub = Stub::start(vec![sse_head(), delta("a"), delta("b")]).await;
    let items = drain(upstream(&stub.url()).stream(request()).await.unwrap()).await;
    assert_eq!(
        items,
        [
            Ok("a".to_owned()),
            Ok("b".to_owned()),
            Err(AiError::Protocol("stream ended before [DONE]".to_owned())),
        ]
    );
    // An event source that reconnects (reqwest-eventsource's default, which
    // read the stream before) would re-POST after 300 ms.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(stub.requests().len(), 1, "the prompt was POSTed again");
}

#[tokio::test]
async fn first_token_timeout_is_not_reset_by_empty_chunks() {
    let mut acts = vec![sse_head()];
    for _ in 0..20 {
        acts.push(role_only());
        acts.push(sleep_ms(100));
    }
    acts.push(delta("too late"));
    let stub = Stub::start(acts).await;
    let ai = UpstreamAi::new(&stub.url(), timeouts(2_000, 400, 5_000)).unwrap();

    let started = Instant::now();
    let items = drain(ai.stream(request()).await.unwrap()).await;
    let elapsed = started.elapsed();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(matches!(items[0], Err(AiError::Timeout(_))), "{items:?}");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(1_500),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn idle_gap_after_tokens_is_a_timeout_item() {
    let stub = Stub::start(vec![
        sse_head(),
        delta("a"),
        sleep_ms(150),
        delta("b"),
        sleep_ms(150),
        delta("c"),
        Act::Sleep(Duration::from_secs(30)),
    ])
    .await;
    // Gaps of 150 ms are within the idle limit; the final silence is not.
    let ai = UpstreamAi::new(&stub.url(), timeouts(2_000, 5_000, 300)).unwrap();
    let started = Instant::now();
    let items = drain(ai.stream(request()).await.unwrap()).await;
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(items[..3], [Ok("a".into()), Ok("b".into()), Ok("c".into())]);
    assert!(matches!(items[3], Err(AiError::Timeout(_))), "{items:?}");
    assert!(started.elapsed() < Duration::from_millis(2_000));
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let mut stub = Stub::start(vec![sse_head(), delta("a"), Act::AwaitDisconnect]).await;
    let mut stream = upstream(&stub.url()).stream(request()).await.unwrap();
    let first = within(5_000, stream.next()).await;
    assert_eq!(first, Some(Ok(AnswerDelta::Text("a".to_owned()))));

    drop(stream);
    let seen = tokio::time::timeout(Duration::from_secs(1), stub.disconnects.recv()).await;
    assert!(
        matches!(seen, Ok(Some(()))),
        "upstream did not see the abort"
    );
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn health_is_ok_for_any_http_answer() {
    let stub = Stub::start(vec![plain_head("404 Not Found", "application/json")]).await;
    let ai = upstream(&stub.url());
    assert_eq!(within(5_000, ai.health()).await, AiHealth::Ok);
    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
}

#[tokio::test]
async fn health_is_unreachable_for_a_closed_port() {
    let ai = upstream(&closed_port_url().await);
    assert_eq!(within(5_000, ai.health()).await, AiHealth::Unreachable);
}

#[tokio::test]
async fn health_gives_up_on_a_silent_upstream() {
    let stub = Stub::start(vec![Act::Sleep(Duration::from_secs(30))]).await;
    let ai = upstream(&stub.url());
    let started = Instant::now();
    assert_eq!(within(5_000, ai.health()).await, AiHealth::Unreachable);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn only_http_urls_are_accepted() {
    let t = UpstreamTimeouts::default();
    assert!(UpstreamAi::new("http://127.0.0.1:8000", t).is_ok());
    assert!(UpstreamAi::new("https://ai.example.com/", t).is_ok());
    assert!(UpstreamAi::new("ws://127.0.0.1:8000", t).is_err());
    assert!(UpstreamAi::new("127.0.0.1:8000", t).is_err());
    assert!(UpstreamAi::new("", t).is_err());
}

#[test]
fn default_timeouts() {
    let t = UpstreamTimeouts::default();
    assert_eq!(t.connect, Duration::from_secs(5));
    assert_eq!(t.first_token, Duration::from_secs(30));
    assert_eq!(t.idle, Duration::from_secs(30));
}

// ------------------------------------------------- retries, breaker, fallback

fn status_head(status: &str, extra_headers: &str) -> Act {
    Act::Write(format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

fn answer(text: &str) -> Vec<Act> {
    vec![sse_head(), role_only(), delta(text), done()]
}

/// Everything the decorators told their observer, in order.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl UpstreamObserver for Seen {
    fn attempt(&self, role: &'static str, outcome: AttemptOutcome, retried: bool) {
        let then = if retried { "retried" } else { "final" };
        let line = format!("{role} {} {then}", outcome.label());
        self.0.lock().unwrap().push(line);
    }
    fn skipped(&self, role: &'static str) {
        self.0.lock().unwrap().push(format!("{role} skipped"));
    }
    fn circuit_changed(&self, role: &'static str, state: CircuitState) {
        let line = format!("{role} circuit {}", state.as_str());
        self.0.lock().unwrap().push(line);
    }
}

struct Resilience {
    retries: u32,
    budget_ms: u64,
    breaker: Option<(u32, u64)>,
}

const RETRY_TWICE: Resilience = Resilience {
    retries: 2,
    budget_ms: 5_000,
    breaker: None,
};

fn resilient(
    role: &'static str,
    model: UpstreamAi,
    how: Resilience,
    seen: &Arc<Seen>,
) -> Arc<ResilientAi> {
    let provider = model.provider();
    Arc::new(ResilientAi::new(
        Arc::new(model),
        UpstreamLabel {
            role,
            provider,
            model: None,
        },
        RetryPolicy {
            max_retries: how.retries,
            backoff: Duration::from_millis(20),
            budget: Duration::from_millis(how.budget_ms),
        },
        how.breaker.map(|(failures, cooldown_ms)| BreakerSettings {
            failures,
            cooldown: Duration::from_millis(cooldown_ms),
        }),
        seen.clone(),
    ))
}

async fn answer_of(ai: &dyn AiModel) -> Vec<Result<String, AiError>> {
    match within(10_000, ai.stream(request())).await {
        Ok(stream) => drain(stream).await,
        Err(e) => vec![Err(e)],
    }
}

#[tokio::test]
async fn a_503_is_retried_and_the_next_attempt_answers() {
    let stub = Stub::sequence(vec![
        vec![status_head("503 Service Unavailable", "")],
        answer("hello"),
    ])
    .await;
    let seen = Arc::new(Seen::default());
    let ai = resilient("primary", upstream(&stub.url()), RETRY_TWICE, &seen);
    assert_eq!(answer_of(ai.as_ref()).await, [Ok("hello".to_owned())]);
    assert_eq!(stub.requests().len(), 2);
    assert_eq!(
        seen.take(),
        ["primary status_5xx retried", "primary ok final"]
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_retries_run_out() {
    let seen = Arc::new(Seen::default());
    let ai = resilient(
        "primary",
        upstream(&closed_port_url().await),
        RETRY_TWICE,
        &seen,
    );
    let items = answer_of(ai.as_ref()).await;
    assert!(
        matches!(items.as_slice(), [Err(AiError::Unavailable(_))]),
        "{items:?}"
    );
    assert_eq!(
        seen.take(),
        [
            "primary refused retried",
            "primary refused retried",
            "primary refused final"
        ]
    );
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let stub = Stub::sequence(vec![
        vec![status_head("429 Too Many Requests", "Retry-After: 1\r\n")],
        answer("at last"),
    ])
    .await;
    let seen = Arc::new(Seen::default());
    let ai = resilient("primary", upstream(&stub.url()), RETRY_TWICE, &seen);
    let started = Instant::now();
    assert_eq!(answer_of(ai.as_ref()).await, [Ok("at last".to_owned())]);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1_000), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(3_000), "{elapsed:?}");
    assert_eq!(stub.requests().len(), 2);
    assert_eq!(
        seen.take(),
        ["primary status_429 retried", "primary ok final"]
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_first_token_deadline_fails_at_once() {
    let stub = Stub::start(vec![status_head(
        "429 Too Many Requests",
        "Retry-After: 60\r\n",
    )])
    .await;
    let seen = Arc::new(Seen::default());
    let ai = resilient("primary", upstream(&stub.url()), RETRY_TWICE, &seen);
    let started = Instant::now();
    let items = answer_of(ai.as_ref()).await;
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert_eq!(
        items,
        [Err(AiError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(60))
        })]
    );
    assert!(items[0].as_ref().unwrap_err().retryable());
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn nothing_is_retried_once_a_token_has_arrived() {
    // Every connection would answer; the cut after "a" must not be re-asked.
    let stub = Stub::start(vec![sse_head(), delta("a")]).await;
    let seen = Arc::new(Seen::default());
    let ai = resilient("primary", upstream(&stub.url()), RETRY_TWICE, &seen);
    let items = answer_of(ai.as_ref()).await;
    assert_eq!(
        items,
        [
            Ok("a".to_owned()),
            Err(AiError::Protocol("stream ended before [DONE]".to_owned()))
        ]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stub.requests().len(), 1, "the prompt was posted again");
    assert_eq!(seen.take(), ["primary ok final"]);
}

#[tokio::test]
async fn an_opened_stream_and_a_plain_500_are_never_asked_again() {
    // The upstream took the request but sent no token in time.
    let stub = Stub::start(vec![sse_head(), Act::Sleep(Duration::from_secs(30))]).await;
    let seen = Arc::new(Seen::default());
    let slow = UpstreamAi::new(&stub.url(), timeouts(2_000, 300, 5_000)).unwrap();
    let ai = resilient("primary", slow, RETRY_TWICE, &seen);
    let items = answer_of(ai.as_ref()).await;
    assert!(
        matches!(items.as_slice(), [Err(AiError::Timeout(_))]),
        "{items:?}"
    );
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(seen.take(), ["primary timeout final"]);

    let stub = Stub::start(vec![status_head("500 Internal Server Error", "")]).await;
    let ai = resilient("primary", upstream(&stub.url()), RETRY_TWICE, &seen);
    answer_of(ai.as_ref()).await;
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(seen.take(), ["primary status_5xx final"]);
}

#[tokio::test]
async fn the_breaker_opens_after_n_failed_chats_and_one_probe_closes_it() {
    let down = vec![status_head("503 Service Unavailable", "")];
    let slow_answer = vec![sse_head(), sleep_ms(300), delta("back"), done()];
    let stub = Stub::sequence(vec![down.clone(), down, slow_answer]).await;
    let seen = Arc::new(Seen::default());
    let how = Resilience {
        retries: 0,
        budget_ms: 5_000,
        breaker: Some((2, 500)),
    };
    let ai = resilient("primary", upstream(&stub.url()), how, &seen);
    let circuit = || ai.upstreams()[0].circuit;

    for _ in 0..2 {
        let items = answer_of(ai.as_ref()).await;
        assert!(matches!(
            items.as_slice(),
            [Err(AiError::Status { status: 503, .. })]
        ));
    }
    assert_eq!(circuit(), CircuitState::Open);
    // Open: the chat fails at once, and the upstream is not asked.
    let started = Instant::now();
    assert_eq!(answer_of(ai.as_ref()).await, [Err(AiError::CircuitOpen)]);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(stub.requests().len(), 2);

    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(circuit(), CircuitState::HalfOpen);
    let probe = within(5_000, ai.stream(request())).await.unwrap();
    let probe = tokio::spawn(drain(probe));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One probe at a time: the others still skip while it runs.
    assert_eq!(answer_of(ai.as_ref()).await, [Err(AiError::CircuitOpen)]);
    assert_eq!(probe.await.unwrap(), [Ok("back".to_owned())]);
    assert_eq!(circuit(), CircuitState::Closed);
    assert_eq!(stub.requests().len(), 3);
    assert_eq!(
        seen.take(),
        [
            "primary status_5xx final",
            "primary status_5xx final",
            "primary circuit open",
            "primary skipped",
            "primary circuit half_open",
            "primary skipped",
            "primary ok final",
            "primary circuit closed",
        ]
    );
}

#[tokio::test]
async fn the_fallback_answers_when_the_primary_fails_before_its_first_token() {
    let backup = Stub::start(answer("from the fallback")).await;
    let seen = Arc::new(Seen::default());
    let primary = resilient(
        "primary",
        upstream(&closed_port_url().await),
        Resilience {
            retries: 1,
            budget_ms: 5_000,
            breaker: None,
        },
        &seen,
    );
    let fallback = resilient("fallback", upstream(&backup.url()), RETRY_TWICE, &seen);
    let ai = FallbackAi::new(primary, fallback);
    assert_eq!(answer_of(&ai).await, [Ok("from the fallback".to_owned())]);
    assert_eq!(backup.requests().len(), 1);
    assert_eq!(
        seen.take(),
        [
            "primary refused retried",
            "primary refused final",
            "fallback ok final"
        ]
    );
    let roles: Vec<_> = ai.upstreams().iter().map(|u| u.role).collect();
    assert_eq!(roles, ["primary", "fallback"]);
}

#[tokio::test]
async fn the_fallback_answers_at_once_while_the_primary_circuit_is_open() {
    let broken = Stub::start(vec![status_head("502 Bad Gateway", "")]).await;
    let backup = Stub::start(answer("backup")).await;
    let seen = Arc::new(Seen::default());
    let how = Resilience {
        retries: 0,
        budget_ms: 5_000,
        breaker: Some((1, 60_000)),
    };
    let primary = resilient("primary", upstream(&broken.url()), how, &seen);
    let fallback = resilient("fallback", upstream(&backup.url()), RETRY_TWICE, &seen);
    let ai = FallbackAi::new(primary, fallback);
    for _ in 0..3 {
        assert_eq!(answer_of(&ai).await, [Ok("backup".to_owned())]);
    }
    assert_eq!(broken.requests().len(), 1, "the open primary was skipped");
    assert_eq!(backup.requests().len(), 3);
    assert_eq!(ai.upstreams()[0].circuit, CircuitState::Open);
    assert_eq!(ai.upstreams()[1].circuit, CircuitState::Closed);
}

#[tokio::test]
async fn no_fallback_once_the_primary_has_sent_a_token() {
    let primary_stub = Stub::start(vec![sse_head(), delta("half")]).await;
    let backup = Stub::start(answer("backup")).await;
    let seen = Arc::new(Seen::default());
    let primary = resilient("primary", upstream(&primary_stub.url()), RETRY_TWICE, &seen);
    let fallback = resilient("fallback", upstream(&backup.url()), RETRY_TWICE, &seen);
    let items = answer_of(&FallbackAi::new(primary, fallback)).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok("half".to_owned()));
    assert!(matches!(items[1], Err(AiError::Protocol(_))));
    assert_eq!(backup.requests().len(), 0);
}

#[tokio::test]
async fn when_both_fail_the_client_hears_the_failure_worth_retrying() {
    let refusing = Stub::start(vec![status_head("401 Unauthorized", "")]).await;
    let seen = Arc::new(Seen::default());
    let primary = resilient(
        "primary",
        upstream(&closed_port_url().await),
        Resilience {
            retries: 0,
            budget_ms: 5_000,
            breaker: None,
        },
        &seen,
    );
    let fallback = resilient("fallback", upstream(&refusing.url()), RETRY_TWICE, &seen);
    let items = answer_of(&FallbackAi::new(primary, fallback)).await;
    assert!(
        matches!(items.as_slice(), [Err(AiError::Unavailable(_))]),
        "the primary's outage, not the fallback's 401: {items:?}"
    );
    assert_eq!(
        seen.take(),
        ["primary refused final", "fallback status_4xx final"]
    );
}

#[tokio::test]
async fn openai_posts_chat_completions_with_the_bearer_key() {
    let stub = Stub::start(answer("hi from openai")).await;
    let settings = OpenAiSettings {
        api_key: Some("sk-test-123".to_owned()),
        model: "gpt-test".to_owned(),
        system_prompt: Some("You are terse.".to_owned()),
    };
    let ai = UpstreamAi::openai(
        &format!("{}/v1", stub.url()),
        settings,
        timeouts(2_000, 5_000, 5_000),
    )
    .unwrap();
    assert_eq!(answer_of(&ai).await, [Ok("hi from openai".to_owned())]);
    let req = &stub.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-123"));
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-test",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
                {"role": "user", "content": PROMPT},
            ],
        })
    );
}

#[tokio::test]
async fn openai_without_a_key_sends_no_authorization() {
    let stub = Stub::start(answer("local")).await;
    let settings = OpenAiSettings {
        api_key: None,
        model: "llama3".to_owned(),
        system_prompt: None,
    };
    let ai = UpstreamAi::openai(&stub.url(), settings, timeouts(2_000, 5_000, 5_000)).unwrap();
    assert_eq!(answer_of(&ai).await, [Ok("local".to_owned())]);
    assert_eq!(stub.requests()[0].header("authorization"), None);
}
