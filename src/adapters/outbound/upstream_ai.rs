//! Outbound adapter: the real AI service, reached over HTTP and answering with
//! an OpenAI-style server-sent event stream. Two request contracts share the
//! stream reader: the FastAPI service's and OpenAI's chat completions (which
//! vLLM, Ollama, LiteLLM and llama.cpp's server speak too). One `stream` call
//! is one request; retries belong to the decorator around it.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, Response, Url};
use serde::Serialize;
use tokio::time::Instant;

use crate::application::ports::{
    AiError, AiHealth, AiModel, AiRequest, TokenStream, UpstreamState,
};
use crate::domain::answer::AnswerDelta;
use crate::domain::TraceContext;

mod chunk;
mod sse;

#[cfg(test)]
use chunk::MAX_UPSTREAM_ERROR_CHARS;
use chunk::{deltas_of, parse_data, Parsed, ToolCalls};
use sse::{EventReader, SseError, MAX_EVENT_BYTES};

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// The path the FastAPI service serves streamed answers on, below its base URL.
const RESPONSE_PATH: &str = "/api/v1/chat/ai-response";

/// The path of OpenAI's chat completions, below a base URL that includes the
/// API version (`https://api.openai.com/v1`), as the OpenAI SDKs take it.
const COMPLETIONS_PATH: &str = "/chat/completions";

/// A `Retry-After` longer than this is read as this: it only decides whether
/// a retry fits in the first-token deadline, and must not overflow a clock.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The probe is a liveness check, not a load test: give up quickly.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait at each stage of a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Connecting and receiving the response status and headers.
    pub connect: Duration,
    /// From the response headers to the first non-empty text delta.
    pub first_token: Duration,
    /// Between two events once the first token has arrived.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// What an OpenAI-compatible upstream needs besides its base URL.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    /// Sent as `Authorization: Bearer`; local servers (Ollama, llama.cpp)
    /// often need none.
    pub api_key: Option<String>,
    pub model: String,
    /// Sent first, as the `system` message, when set.
    pub system_prompt: Option<String>,
}

impl std::fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field(
                "system_prompt",
                &self.system_prompt.as_ref().map(String::len),
            )
            .finish()
    }
}

/// The request contract an upstream speaks.
#[derive(Debug, Clone)]
enum Dialect {
    /// `{query, user_id, session_id, context: {history}}`.
    FastApi,
    /// `{model, stream: true, messages}`, with the key as a header that
    /// reqwest marks sensitive (never shown by `Debug` or a log).
    OpenAi {
        authorization: Option<HeaderValue>,
        model: String,
        system_prompt: Option<String>,
    },
}

/// The AI service at a base URL: the FastAPI contract, answering
/// `POST {base}/api/v1/chat/ai-response`, or an OpenAI-compatible one,
/// answering `POST {base}/chat/completions`.
#[derive(Debug, Clone)]
pub struct UpstreamAi {
    client: Client,
    base_url: Url,
    endpoint: Url,
    timeouts: UpstreamTimeouts,
    dialect: Dialect,
}

impl UpstreamAi {
    /// The FastAPI service. Accepts an `http` or `https` base URL, with or
    /// without a trailing slash.
    pub fn new(base_url: &str, timeouts: UpstreamTimeouts) -> Result<Self, String> {
        Self::build(base_url, RESPONSE_PATH, timeouts, Dialect::FastApi)
    }

    /// An OpenAI-compatible service; `base_url` includes the API version
    /// (`https://api.openai.com/v1`, `http://localhost:11434/v1`).
    pub fn openai(
        base_url: &str,
        settings: OpenAiSettings,
        timeouts: UpstreamTimeouts,
    ) -> Result<Self, String> {
        let authorization = match settings.api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {}", key.trim()))
                    .map_err(|_| "the API key is not a valid header value".to_owned())?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let dialect = Dialect::OpenAi {
            authorization,
            model: settings.model,
            system_prompt: settings.system_prompt,
        };
        Self::build(base_url, COMPLETIONS_PATH, timeouts, dialect)
    }

    fn build(
        base_url: &str,
        path: &str,
        timeouts: UpstreamTimeouts,
        dialect: Dialect,
    ) -> Result<Self, String> {
        let base_url = Url::parse(base_url.trim())
            .map_err(|e| format!("invalid AI service URL {base_url:?}: {e}"))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(format!(
                "AI service URL must be http or https, not {:?}",
                base_url.scheme()
            ));
        }
        if base_url.host_str().is_none_or(str::is_empty) {
            return Err("AI service URL has no host".to_owned());
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err("AI service URL must not have a query or fragment".to_owned());
        }
        let endpoint = format!("{}{path}", base_url.as_str().trim_end_matches('/'));
        let endpoint = Url::parse(&endpoint)
            .map_err(|e| format!("invalid AI service endpoint {endpoint:?}: {e}"))?;

        // No overall request timeout: an answer may legitimately stream for
        // minutes; the first-token and idle timeouts bound it instead.
        let client = Client::builder()
            .connect_timeout(timeouts.connect)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {}", describe(&e)))?;

        Ok(Self {
            client,
            base_url,
            endpoint,
            timeouts,
            dialect,
        })
    }

    /// `fastapi` or `openai`, as `/health` names the provider.
    pub fn provider(&self) -> &'static str {
        match self.dialect {
            Dialect::FastApi => "fastapi",
            Dialect::OpenAi { .. } => "openai",
        }
    }

    /// The POST of one answer, in this upstream's contract, with a
    /// `traceparent` of its own. With trace export on, that is the current
    /// span's (the attempt's, in the chat's trace); without, a made-up span
    /// in the chat's trace (the caller's, when it sent one), or a new trace.
    fn answer_request(&self, request: &AiRequest) -> RequestBuilder {
        let trace = crate::telemetry::otel::current_context().unwrap_or_else(|| {
            request
                .trace
                .map_or_else(TraceContext::new_root, |t| t.child())
        });
        let post = self
            .client
            .post(self.endpoint.clone())
            .header(TRACEPARENT, trace.header());
        match &self.dialect {
            Dialect::FastApi => post.json(&UpstreamRequest::from(request)),
            Dialect::OpenAi {
                authorization,
                model,
                system_prompt,
            } => {
                let body = CompletionRequest::new(model, system_prompt.as_deref(), request);
                let post = post.json(&body);
                match authorization {
                    Some(value) => post.header(AUTHORIZATION, value.clone()),
                    None => post,
                }
            }
        }
    }
}

#[async_trait]
impl AiModel for UpstreamAi {
    async fn stream(&self, request: AiRequest) -> Result<TokenStream, AiError> {
        let post = self
            .answer_request(&request)
            .header(ACCEPT, "text/event-stream");
        // Asked exactly once: nothing here re-POSTs the prompt. Dropping the
        // response on an early return below aborts the request.
        let response = match tokio::time::timeout(self.timeouts.connect, post.send()).await {
            Err(_) => {
                return Err(AiError::Timeout(format!(
                    "no response from AI service within {:?}",
                    self.timeouts.connect
                )))
            }
            Ok(Err(e)) => return Err(open_error(&e)),
            Ok(Ok(response)) => response,
        };
        opened(&response)?;
        let body = EventReader::new(Box::pin(response.bytes_stream()));
        Ok(tokens(body, self.timeouts))
    }

    async fn health(&self) -> AiHealth {
        let probe = self
            .client
            .get(self.base_url.clone())
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        match probe {
            // Any status proves the service is up; it just may not serve `/`.
            Ok(_) => AiHealth::Ok,
            Err(err) => {
                tracing::debug!(error = %describe(&err), "AI service health probe failed");
                AiHealth::Unreachable
            }
        }
    }

    /// A bare adapter has no breaker; the resilience decorator reports it.
    fn upstreams(&self) -> Vec<UpstreamState> {
        Vec::new()
    }
}

/// The answer's deltas, read from an opened event stream until `[DONE]`,
/// the first failure or a timeout.
fn tokens<B, E>(source: EventReader<B>, timeouts: UpstreamTimeouts) -> TokenStream
where
    B: Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    E: Into<SseError> + Send + 'static,
{
    let deadline = Instant::now() + timeouts.first_token;
    let state = Reading {
        source,
        deadline,
        timer: Box::pin(tokio::time::sleep_until(deadline)),
        got_first_token: false,
        timeouts,
        ready: VecDeque::new(),
        calls: ToolCalls::default(),
        done: false,
    };
    let tokens = futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_item().await {
            Step::Delta(delta) => Some((Ok(delta), Some(state))),
            // Dropping the event source here closes the connection at
            // once instead of leaving it to the consumer to drop us.
            Step::Fail(err) => Some((Err(err), None)),
            Step::Done => None,
        }
    });
    Box::pin(tokens)
}

/// What one poll of an open answer stream produced.
enum Step {
    Delta(AnswerDelta),
    Fail(AiError),
    Done,
}

/// An open answer stream (a response body, or in tests bytes in memory)
/// and the clock its timeouts run on.
struct Reading<B> {
    source: EventReader<B>,
    /// Until the first delta this is fixed (role-only chunks do not count as
    /// progress); afterwards every event pushes it back by the idle timeout.
    deadline: Instant,
    /// One timer for the whole stream, moved to the deadline only when it
    /// fires early (or the deadline came before it): a timeout armed per
    /// event (a timer-wheel insert and removal per token) showed in profiles
    /// of many concurrent answers.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    got_first_token: bool,
    timeouts: UpstreamTimeouts,
    /// Deltas of chunks already read, not yet handed on (one chunk may
    /// carry several parts).
    ready: VecDeque<AnswerDelta>,
    /// Tool calls whose fragments are still arriving.
    calls: ToolCalls,
    /// `[DONE]` came: hand on what is ready, then end.
    done: bool,
}

impl<B, E> Reading<B>
where
    B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: Into<SseError>,
{
    async fn next_item(&mut self) -> Step {
        loop {
            if let Some(delta) = self.ready.pop_front() {
                if !self.got_first_token {
                    self.got_first_token = true;
                    self.deadline = Instant::now() + self.timeouts.idle;
                }
                return Step::Delta(delta);
            }
            if self.done {
                return Step::Done;
            }
            // The event borrows the source alone: the other fields stay free.
            let event = next_before(&mut self.source, &mut self.timer, self.deadline).await;
            let Some(event) = event else {
                return Step::Fail(self.timeout_error());
            };
            let data = match event {
                Some(Ok(data)) => data,
                Some(Err(err)) => return Step::Fail(stream_error(err)),
                None => return Step::Fail(ended_early(None)),
            };
            if self.got_first_token {
                self.deadline = Instant::now() + self.timeouts.idle;
            }
            match parse_data(data) {
                Ok(Parsed::Done) => {
                    // Calls still open when the stream ends are complete.
                    self.calls.finish(&mut self.ready);
                    self.done = true;
                }
                Ok(Parsed::Skip) => {}
                Ok(Parsed::Chunk(parts)) => deltas_of(parts, &mut self.calls, &mut self.ready),
                Err(err) => return Step::Fail(err),
            }
        }
    }

    fn timeout_error(&self) -> AiError {
        if self.got_first_token {
            AiError::Timeout(format!(
                "no event from AI service for {:?}",
                self.timeouts.idle
            ))
        } else {
            AiError::Timeout(format!(
                "no first token from AI service within {:?}",
                self.timeouts.first_token
            ))
        }
    }
}

/// The source's next event (lent by the source), or `None` once `deadline`
/// passed first. A function of the two fields it needs rather than a method,
/// so the event it returns borrows `source` alone.
async fn next_before<'a, B, E>(
    source: &'a mut EventReader<B>,
    timer: &mut std::pin::Pin<Box<tokio::time::Sleep>>,
    deadline: Instant,
) -> Option<Option<Result<&'a str, SseError>>>
where
    B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: Into<SseError>,
{
    // Moved earlier only once: from the first-token deadline to the first
    // idle one, when the idle timeout is the shorter.
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    // One read, polled until it ends or the deadline passes (the timer may
    // fire early, for a deadline pushed back since it was set).
    let event = source.next_event();
    tokio::pin!(event);
    loop {
        tokio::select! {
            biased;
            // Cancel-safe: a chunk is taken in whole before any await.
            event = &mut event => return Some(event),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Why the stream could not open: refused, or timed out.
fn open_error(e: &reqwest::Error) -> AiError {
    if e.is_timeout() {
        AiError::Timeout(format!(
            "connecting to AI service timed out: {}",
            describe(e)
        ))
    } else {
        AiError::Unavailable(format!("cannot reach AI service: {}", describe(e)))
    }
}

/// Whether the response opens an event stream: a 2xx status (any other,
/// with its `Retry-After`, is for the resilience layer to judge) with the
/// `text/event-stream` content type (anything else no retry can fix).
fn opened(response: &Response) -> Result<(), AiError> {
    let status = response.status();
    if !status.is_success() {
        return Err(AiError::Status {
            status: status.as_u16(),
            retry_after: retry_after(response.headers()),
        });
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("text/event-stream") {
        Ok(())
    } else {
        Err(AiError::Rejected(format!(
            "AI service answered with content type {content_type:?}, not text/event-stream"
        )))
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110), at most
/// [`MAX_RETRY_AFTER`]; a date in the past means "now".
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Why an open stream failed before `[DONE]`.
fn stream_error(err: SseError) -> AiError {
    match err {
        // A connection cut mid-answer is, to the consumer, the same broken
        // contract as a clean close without `[DONE]`.
        SseError::Transport(e) => ended_early(Some(describe(&e))),
        SseError::Utf8 => AiError::Protocol("event stream is not valid UTF-8".to_owned()),
        SseError::TooLong => AiError::Protocol(format!(
            "an event of the stream is longer than {MAX_EVENT_BYTES} bytes"
        )),
    }
}

fn ended_early(cause: Option<String>) -> AiError {
    match cause {
        None => AiError::Protocol("stream ended before [DONE]".to_owned()),
        Some(cause) => AiError::Protocol(format!("stream ended before [DONE]: {cause}")),
    }
}

/// reqwest's `Display` stops at "error sending request"; the cause (refused,
/// reset, DNS) is further down the source chain.
fn describe(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

// ------------------------------------------------------------ wire format

#[derive(Serialize)]
struct UpstreamRequest<'a> {
    query: &'a str,
    user_id: &'a str,
    session_id: &'a str,
    context: UpstreamContext<'a>,
}

#[derive(Serialize)]
struct UpstreamContext<'a> {
    history: Vec<UpstreamMessage<'a>>,
}

#[derive(Serialize)]
struct UpstreamMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl<'a> From<&'a AiRequest> for UpstreamRequest<'a> {
    fn from(request: &'a AiRequest) -> Self {
        Self {
            query: &request.query,
            user_id: request.user_id.as_str(),
            session_id: request.session_id.as_str(),
            context: UpstreamContext {
                history: request
                    .history
                    .iter()
                    .map(|m| UpstreamMessage {
                        role: m.role.as_str(),
                        content: &m.content,
                    })
                    .collect(),
            },
        }
    }
}

/// OpenAI's chat completions request: the system prompt, the history and
/// the query as one `messages` array.
#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    stream: bool,
    /// Asks for the final chunk that says what the answer cost.
    stream_options: StreamOptions,
    messages: Vec<UpstreamMessage<'a>>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> CompletionRequest<'a> {
    fn new(model: &'a str, system_prompt: Option<&'a str>, request: &'a AiRequest) -> Self {
        let system = system_prompt.map(|content| UpstreamMessage {
            role: "system",
            content,
        });
        let history = request.history.iter().map(|m| UpstreamMessage {
            role: m.role.as_str(),
            content: &m.content,
        });
        let query = UpstreamMessage {
            role: "user",
            content: &request.query,
        };
        Self {
            model,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            messages: system
                .into_iter()
                .chain(history)
                .chain(std::iter::once(query))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation() {
        let t = UpstreamTimeouts::default();
        assert!(UpstreamAi::new("http://localhost:8000", t).is_ok());
        let ai = UpstreamAi::new("https://ai.example.com/base/", t).unwrap();
        assert_eq!(
            ai.endpoint.as_str(),
            "https://ai.example.com/base/api/v1/chat/ai-response"
        );
        assert!(UpstreamAi::new("ftp://localhost", t).is_err());
        assert!(UpstreamAi::new("localhost:8000", t).is_err());
        assert!(UpstreamAi::new("not a url", t).is_err());
        assert!(UpstreamAi::new("", t).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(retry_after(&headers("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("99999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = retry_after(&headers(&soon)).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn openai_requests_carry_the_model_and_the_whole_conversation() {
        use crate::domain::{ChatMessage, Role, SessionId, UserId};
        let request = AiRequest {
            query: "and now?".into(),
            user_id: UserId::parse("u1").unwrap(),
            session_id: SessionId::generate(),
            history: vec![
                ChatMessage {
                    role: Role::User,
                    content: "hi".into(),
                    timestamp: chrono::Utc::now(),
                    message_id: None,
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "hello".into(),
                    timestamp: chrono::Utc::now(),
                    message_id: None,
                },
            ],
            trace: None,
            purpose: crate::application::ports::AiPurpose::Answer,
        };
        let body =
            serde_json::to_value(CompletionRequest::new("m1", Some("be brief"), &request)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "m1", "stream": true,
                "stream_options": {"include_usage": true}, "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and now?"},
            ]})
        );
        let body = serde_json::to_value(CompletionRequest::new("m1", None, &request)).unwrap();
        assert_eq!(body["messages"][0]["role"], "user");
    }

    #[test]
    fn openai_endpoint_and_a_key_that_never_shows() {
        let settings = OpenAiSettings {
            api_key: Some("sk-TOPSECRET".into()),
            model: "gpt-x".into(),
            system_prompt: None,
        };
        assert!(!format!("{settings:?}").contains("TOPSECRET"));
        let t = UpstreamTimeouts::default();
        let ai = UpstreamAi::openai("https://api.example.com/v1/", settings, t).unwrap();
        assert_eq!(
            ai.endpoint.as_str(),
            "https://api.example.com/v1/chat/completions"
        );
        assert_eq!(ai.provider(), "openai");
        assert!(!format!("{ai:?}").contains("TOPSECRET"), "{ai:?}");
        assert_eq!(
            UpstreamAi::new("http://h", t).unwrap().provider(),
            "fastapi"
        );
    }
}

/// The stream reader against hostile and oddly cut input: whatever the
/// upstream sends, and however the network splits it, reading never panics,
/// fails only with a typed [`AiError`], and a valid stream gives the same
/// parts (text, reasoning, tool calls, usage) whole or in pieces.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::domain::answer::{TokenUsage, ToolActivity, ToolCallId, ToolName, ToolState};
    use futures_util::StreamExt as _;
    use proptest::prelude::*;

    /// Reads `body` cut into pieces at `cuts` through the reader a real
    /// response body goes through, and returns the deltas and how the
    /// stream ended (`None`: `[DONE]`).
    fn read(body: &[u8], cuts: &[usize]) -> (Vec<AnswerDelta>, Option<AiError>) {
        let events = sse::cut_body(body, cuts);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut stream = tokens(events, UpstreamTimeouts::default());
            let mut got = Vec::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(delta) => got.push(delta),
                    Err(e) => {
                        assert!(stream.next().await.is_none(), "nothing after a failure");
                        return (got, Some(e));
                    }
                }
            }
            (got, None)
        })
    }

    fn text(t: &str) -> AnswerDelta {
        AnswerDelta::Text(t.to_owned())
    }

    /// The text deltas of `deltas`.
    fn texts(deltas: &[AnswerDelta]) -> Vec<String> {
        deltas
            .iter()
            .filter_map(|d| match d {
                AnswerDelta::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// One event as an upstream may write it: a token in the minimal FastAPI
    /// chunk or OpenAI's full one, reasoning in either spelling, a tool call
    /// in fragments, the usage chunk, or something that carries nothing.
    #[derive(Debug, Clone)]
    enum Piece {
        FastApi(String),
        OpenAi(String),
        /// The text, and whether it is spelled `reasoning` (else `reasoning_content`).
        Reasoning(String, bool),
        /// Name, id and argument fragments of one call.
        Tool(String, String, Vec<String>),
        Usage(u32, u32, u32),
        Role,
        Finish,
        Comment(String),
        Blank,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            4 => any::<String>().prop_map(Piece::FastApi),
            4 => any::<String>().prop_map(Piece::OpenAi),
            2 => (any::<String>(), any::<bool>()).prop_map(|(t, b)| Piece::Reasoning(t, b)),
            2 => ("[a-z_]{1,12}", "call_[a-z0-9]{1,8}", prop::collection::vec(any::<String>(), 0..3))
                .prop_map(|(n, i, a)| Piece::Tool(n, i, a)),
            1 => (any::<u32>(), any::<u32>(), 0u32..100).prop_map(|(p, c, r)| Piece::Usage(p, c, r)),
            1 => Just(Piece::Role),
            1 => Just(Piece::Finish),
            1 => "[^\r\n]{0,20}".prop_map(Piece::Comment),
            1 => Just(Piece::Blank),
        ]
    }

    /// What a reader must produce: the deltas so far, and the calls it is
    /// still assembling (complete at a finish reason or `[DONE]`).
    #[derive(Default)]
    struct Expected {
        deltas: Vec<AnswerDelta>,
        open: Vec<(String, String, String)>,
    }

    impl Expected {
        fn call(
            &self,
            id: &str,
            name: &str,
            state: ToolState,
            args: Option<String>,
        ) -> AnswerDelta {
            AnswerDelta::Tool(ToolActivity {
                call_id: ToolCallId::parse(id).unwrap(),
                name: ToolName::parse(name).unwrap(),
                state,
                arguments: args,
            })
        }

        fn finish(&mut self) {
            for (id, name, args) in std::mem::take(&mut self.open) {
                let done = self.call(&id, &name, ToolState::Finished, Some(args));
                self.deltas.push(done);
            }
        }
    }

    /// The `data:` payloads of one piece, and what it adds to `expected`.
    fn payloads(p: &Piece, index: usize, expected: &mut Expected) -> Vec<String> {
        let chunk = |delta: serde_json::Value| {
            serde_json::json!({"choices": [{"index": 0, "delta": delta}]}).to_string()
        };
        match p {
            Piece::FastApi(t) => {
                if !t.is_empty() {
                    expected.deltas.push(text(t));
                }
                vec![serde_json::json!({"choices": [{"delta": {"content": t}}]}).to_string()]
            }
            Piece::OpenAi(t) => {
                if !t.is_empty() {
                    expected.deltas.push(text(t));
                }
                vec![serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk",
                    "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": t},
                                 "logprobs": null, "finish_reason": null}]
                })
                .to_string()]
            }
            Piece::Reasoning(t, short) => {
                if !t.is_empty() {
                    expected.deltas.push(AnswerDelta::Reasoning(t.clone()));
                }
                let field = if *short {
                    "reasoning"
                } else {
                    "reasoning_content"
                };
                vec![chunk(serde_json::json!({ field: t, "content": null }))]
            }
            Piece::Tool(name, id, fragments) => {
                let started = expected.call(id, name, ToolState::Started, None);
                expected.deltas.push(started);
                expected
                    .open
                    .push((id.clone(), name.clone(), fragments.concat()));
                let first = chunk(serde_json::json!({"tool_calls": [{"index": index, "id": id,
                    "type": "function", "function": {"name": name, "arguments": ""}}]}));
                std::iter::once(first)
                    .chain(fragments.iter().map(|f| {
                        chunk(serde_json::json!({"tool_calls": [{"index": index,
                            "function": {"arguments": f}}]}))
                    }))
                    .collect()
            }
            Piece::Usage(prompt, completion, reasoning) => {
                let (prompt, completion) = (u64::from(*prompt), u64::from(*completion));
                expected.deltas.push(AnswerDelta::Usage(TokenUsage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    reasoning_tokens: u64::from(*reasoning),
                    total_tokens: prompt + completion,
                    estimated: false,
                }));
                vec![
                    serde_json::json!({"choices": [], "usage": {"prompt_tokens": prompt,
                    "completion_tokens": completion, "total_tokens": prompt + completion,
                    "completion_tokens_details": {"reasoning_tokens": reasoning}}})
                    .to_string(),
                ]
            }
            Piece::Role => {
                vec![
                    r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#.into(),
                ]
            }
            Piece::Finish => {
                expected.finish();
                vec![
                    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#
                        .into(),
                ]
            }
            Piece::Comment(_) | Piece::Blank => Vec::new(),
        }
    }

    /// The wire text of `pieces` then `[DONE]`, with `eol` as line ending,
    /// and the deltas a reader must produce from it.
    fn stream_of(pieces: &[Piece], eol: &str) -> (String, Vec<AnswerDelta>) {
        let mut body = String::new();
        let mut expected = Expected::default();
        for (index, p) in pieces.iter().enumerate() {
            match p {
                Piece::Comment(c) => body.push_str(&format!(":{c}{eol}")),
                Piece::Blank => body.push_str(eol),
                _ => {
                    for data in payloads(p, index, &mut expected) {
                        body.push_str(&format!("data: {data}{eol}{eol}"));
                    }
                }
            }
        }
        expected.finish();
        body.push_str(&format!("data: [DONE]{eol}{eol}"));
        (body, expected.deltas)
    }

    /// A stream whose lines all end with a lone CR is read to its last
    /// event (eventsource-stream, read before, lost it at the body's end
    /// while waiting for an LF that might follow).
    #[test]
    fn a_lone_cr_as_the_last_line_ending_ends_the_stream() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\r\rdata: [DONE]\r\r";
        let (deltas, end) = read(body.as_bytes(), &[]);
        assert_eq!((deltas, end), (vec![text("hi")], None));
        let (deltas, end) = read(format!("{body}\n").as_bytes(), &[7, 30]);
        assert_eq!((deltas, end), (vec![text("hi")], None));
    }

    /// A reasoning model's whole answer, as one upstream writes it: the
    /// reasoning, two tool calls, the text, then the usage chunk.
    #[test]
    fn a_reasoning_answer_with_two_tool_calls_and_usage() {
        let pieces = [
            Piece::Role,
            Piece::Reasoning("Let me ".into(), false),
            Piece::Reasoning("think.".into(), true),
            Piece::Tool(
                "lookup".into(),
                "call_1".into(),
                vec!["{\"q\":".into(), "1}".into()],
            ),
            Piece::Tool("add".into(), "call_2".into(), vec!["{}".into()]),
            Piece::Finish,
            Piece::OpenAi("Done.".into()),
            Piece::Usage(10, 20, 5),
        ];
        let (body, expected) = stream_of(&pieces, "\n");
        let (deltas, end) = read(body.as_bytes(), &[]);
        assert_eq!(end, None);
        assert_eq!(deltas, expected);
        let kinds: Vec<&str> = deltas
            .iter()
            .map(|d| match d {
                AnswerDelta::Text(_) => "text",
                AnswerDelta::Reasoning(_) => "reasoning",
                AnswerDelta::Tool(a) => a.state.as_str(),
                AnswerDelta::Usage(_) => "usage",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "reasoning",
                "reasoning",
                "started",
                "started",
                "finished",
                "finished",
                "text",
                "usage"
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_valid_stream_gives_its_parts_however_it_is_cut(
            pieces in prop::collection::vec(piece(), 0..12),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            cuts in prop::collection::vec(any::<usize>(), 0..24),
        ) {
            let (body, expected) = stream_of(&pieces, eol);
            let whole = read(body.as_bytes(), &[]);
            prop_assert_eq!(&whole, &(expected.clone(), None));
            let cut = read(body.as_bytes(), &cuts);
            prop_assert_eq!(cut, (expected, None));
        }

        #[test]
        fn arbitrary_bytes_end_in_deltas_or_a_typed_error(
            body in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let (deltas, end) = read(&body, &cuts);
            prop_assert!(texts(&deltas).iter().all(|t| !t.is_empty()));
            // Without `[DONE]` the stream cannot end well.
            let done = body.windows(6).any(|w| w == b"[DONE]");
            prop_assert!(done || end.is_some(), "{:?}", end);
            if let Some(e) = end {
                prop_assert!(
                    matches!(e, AiError::Protocol(_) | AiError::Unavailable(_)),
                    "{:?}", e
                );
            }
        }

        #[test]
        fn arbitrary_event_data_never_panics_nor_leaks_it(data in any::<String>()) {
            match parse_data(&data) {
                Ok(Parsed::Chunk(parts)) => {
                    prop_assert!(parts.text.is_none_or(|t| !t.is_empty()));
                    prop_assert!(parts.reasoning.is_none_or(|t| !t.is_empty()));
                }
                Ok(Parsed::Skip | Parsed::Done) => {}
                Err(AiError::Protocol(text)) => {
                    // Kind and position only, never the payload.
                    prop_assert!(text.starts_with("event data is not a valid chunk"), "{}", text);
                }
                Err(AiError::Unavailable(text)) => {
                    prop_assert!(text.chars().count() <= MAX_UPSTREAM_ERROR_CHARS + 40, "{}", text);
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
