//! OpenTelemetry export against a loopback OTLP/HTTP receiver: the binary,
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a tiny server here that
//! decodes each `ExportTraceServiceRequest`, answers one chat whose first
//! upstream attempt fails and is retried; the spans, their parents and their
//! attributes are read back from what arrived.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use poem::web::Data;
use poem::{handler, post, EndpointExt, Route, Server};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{spawn_process, Upstream, WsClient};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// The chat's text: the stub fails its first request with 503, then answers.
const CHAT: &str = "flaky:1";

/// One span as the receiver got it, ids in hex, attribute values as text.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    /// 2 = server, 3 = client (OTLP's `SpanKind`).
    kind: i32,
    /// 2 = error (OTLP's `StatusCode`).
    status: i32,
    attributes: BTreeMap<String, String>,
    /// Every attribute value, the span events' included.
    values: Vec<String>,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        // Integers are marked, so a test can tell one from its digits as a
        // string (the semantic conventions want numbers as numbers).
        Some(Any::IntValue(i)) => format!("int:{i}"),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An attribute exported as an OTLP integer (see [`text`]).
fn int(value: &str) -> u64 {
    value
        .strip_prefix("int:")
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{value:?} is not an integer attribute"))
}

/// What the receiver got, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Got>>>);

#[handler]
async fn collect(body: poem::Body, received: Data<&Received>) -> &'static str {
    let bytes = body.into_bytes().await.expect("a body");
    let request = ExportTraceServiceRequest::decode(bytes).expect("OTLP protobuf");
    let mut spans = received.0 .0.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes: BTreeMap<String, String> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(kv)))
                .collect();
            let values = span
                .attributes
                .iter()
                .chain(span.events.iter().flat_map(|e| &e.attributes))
                .map(text)
                .chain(span.events.iter().map(|e| e.name.clone()))
                .collect();
            spans.push(Got {
                name: span.name,
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                kind: span.kind,
                status: span.status.map_or(0, |s| s.code),
                attributes,
                values,
                service: service.clone(),
            });
        }
    }
    ""
}

/// The loopback receiver: `POST /v1/traces`. Its base URL and what it got.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let app = Route::new()
        .at("/v1/traces", post(collect))
        .data(received.clone());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(app).await;
    });
    (base, received)
}

impl Received {
    /// Waits up to 10 s for spans satisfying `done`; returns all received.
    async fn until(&self, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.0.lock().unwrap().clone();
            if done(&spans) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span in {:#?}", names(spans));
    found[0]
}

fn names(spans: &[Got]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} {} <- {}", s.name, s.span_id, s.parent))
        .collect()
}

#[tokio::test]
async fn a_chat_with_a_retry_is_one_trace_under_the_callers_span() {
    let (otlp, received) = receiver().await;
    let upstream = Upstream::start().await;
    let base = upstream.openai_url();
    let app = spawn_process(&[
        ("AI_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", &base),
        ("OPENAI_MODEL", "test-model"),
        ("AI_RETRY_BACKOFF", "10ms"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
        ("OTEL_SERVICE_NAME", "chatbot-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let token = app.register("tracy").await;
    let mut request = app
        .ws_url(&format!("?token={token}"))
        .into_client_request()
        .unwrap();
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    request
        .headers_mut()
        .insert("traceparent", caller.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut client = WsClient { ws };
    assert_eq!(client.recv().await["type"], "connected");
    let answer = client.chat(CHAT).await;
    assert_eq!(answer.status, "completed", "{answer:?}");
    assert_eq!(upstream.request_count(), 2, "one failure, one retry");
    // The upgrade request's span is exported when it ends, while the
    // socket's is still open.
    let early = received
        .until(|spans| spans.iter().any(|s| s.name == "GET /ws"))
        .await;
    assert!(
        early.iter().any(|s| s.name == "GET /ws"),
        "{:#?}",
        names(&early)
    );
    assert!(!early.iter().any(|s| s.name == "WebSocket /ws"));
    client.ws.close(None).await.unwrap();
    let _ = client.closed(Duration::from_secs(5)).await;

    let spans = received
        .until(|spans| {
            spans.iter().any(|s| s.name == "WebSocket /ws")
                && spans.iter().any(|s| s.name == "chat test-model")
        })
        .await;

    // The upgrade request continues the caller's trace; the socket, the
    // answer and both attempts are below it.
    let http = one(&spans, "GET /ws");
    assert_eq!(http.trace_id, TRACE_ID, "{http:?}");
    assert_eq!(http.parent, CALLER_SPAN, "{http:?}");
    assert_eq!(http.kind, 2, "server");
    assert_eq!(http.attr("http.response.status_code"), "int:101");
    assert_eq!(http.attr("http.route"), "/ws");
    assert_eq!(http.service, "chatbot-under-test");
    let socket = one(&spans, "WebSocket /ws");
    assert_eq!(socket.parent, http.span_id, "{socket:?}");
    assert_eq!(socket.attr("chatbot.close_reason"), "client_closed");
    let chat = one(&spans, "chat test-model");
    assert_eq!(chat.parent, socket.span_id, "{chat:?}");
    assert_eq!(chat.attr("gen_ai.operation.name"), "chat");
    assert_eq!(chat.attr("gen_ai.request.model"), "test-model");
    assert_eq!(chat.attr("gen_ai.system"), "openai");
    assert_eq!(chat.attr("chatbot.outcome"), "completed");
    let input: u64 = int(chat.attr("gen_ai.usage.input_tokens"));
    let output: u64 = int(chat.attr("gen_ai.usage.output_tokens"));
    assert!(input > 0 && output > 0, "{chat:?}");
    assert_eq!(
        chat.attr("chatbot.usage.estimated"),
        "true",
        "the stub says no usage"
    );

    let failed = one(&spans, "primary attempt 1");
    let retried = one(&spans, "primary attempt 2");
    for attempt in [failed, retried] {
        assert_eq!(
            attempt.parent, chat.span_id,
            "siblings under the answer: {attempt:?}"
        );
        assert_eq!(attempt.trace_id, TRACE_ID);
        assert_eq!(attempt.kind, 3, "client");
        assert_eq!(attempt.attr("gen_ai.request.model"), "test-model");
        assert_eq!(attempt.attr("chatbot.upstream"), "primary");
    }
    assert_eq!(failed.status, 2, "an error: {failed:?}");
    assert_eq!(failed.attr("error.type"), "status_5xx");
    assert_eq!(failed.attr("http.response.status_code"), "int:503");
    assert_ne!(retried.status, 2, "{retried:?}");

    // Each upstream request carried its own attempt's context.
    let sent: Vec<String> = upstream
        .traceparents
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.clone().expect("a traceparent"))
        .collect();
    assert_eq!(
        sent,
        [
            format!("00-{TRACE_ID}-{}-01", failed.span_id),
            format!("00-{TRACE_ID}-{}-01", retried.span_id)
        ]
    );

    // Other requests are traces of their own, and no span holds chat text.
    let register = one(&spans, "POST /api/auth/register");
    assert_ne!(register.trace_id, TRACE_ID);
    assert_eq!(register.parent, "", "a root without a caller's traceparent");
    for span in &spans {
        for value in &span.values {
            assert!(
                !value.contains(CHAT) && !value.contains("Reply to"),
                "chat text in {span:?}"
            );
        }
    }
}

/// With a batch delay far longer than the test, the spans still arrive:
/// the exporter is flushed when the server stops.
#[tokio::test]
async fn spans_are_flushed_on_graceful_shutdown() {
    let (otlp, received) = receiver().await;
    let mut app = spawn_process(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await;
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        received.0.lock().unwrap().is_empty(),
        "nothing before the flush"
    );
    app.terminate();
    assert_eq!(app.wait_exit(Duration::from_secs(15)).await, Some(0));
    let spans = received
        .until(|spans| spans.iter().any(|s| s.name == "GET /health"))
        .await;
    let health = one(&spans, "GET /health");
    assert_eq!(health.service, "chatbot-server", "the default service.name");
}

/// An agent's claim over REST: the claim's span is a child of the request's,
/// and the summary the claim asks the AI for is an answer span below it.
#[tokio::test]
async fn a_handoff_claim_and_its_summary_are_spans_of_the_claiming_request() {
    let (otlp, received) = receiver().await;
    let upstream = Upstream::start().await;
    let app = spawn_process(&[
        ("FASTAPI_URL", &upstream.url),
        ("HANDOFF", "on"),
        ("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let customer = app.register("carol").await;
    let bob = app.register_agent("bob").await;
    let (mut tab, hello) = app.connect(&customer).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(tab.chat("hello there").await.status, "completed");
    tab.send_json(serde_json::json!({"type": "human-escalation"}))
        .await;
    while tab.recv().await["type"] != "handoff-queued" {}
    let claim = format!("/api/agent/conversations/{session}/claim");
    let (status, body) = app.call(&bob, "POST", &claim, None).await;
    assert_eq!(status, 200, "{body}");

    let spans = received
        .until(|spans| {
            spans.iter().any(|s| s.attr("chatbot.purpose") == "summary")
                && spans.iter().any(|s| s.name == "handoff.claim")
        })
        .await;
    let request = one(&spans, "POST /api/agent/conversations/{id}/claim");
    let taken = one(&spans, "handoff.claim");
    assert_eq!(taken.parent, request.span_id, "{taken:?}");
    assert_eq!(taken.attr("chatbot.handoff.taking"), "claimed");
    assert_eq!(taken.attr("chatbot.handoff.outcome"), "taken");
    assert_eq!(taken.attr("chatbot.session_id"), session);
    let summary: Vec<&Got> = spans
        .iter()
        .filter(|s| s.attr("chatbot.purpose") == "summary")
        .collect();
    assert_eq!(summary.len(), 1, "{:#?}", names(&spans));
    assert_eq!(summary[0].parent, taken.span_id, "{:?}", summary[0]);
    assert_eq!(
        summary[0].name, "chat fastapi",
        "no model named for FastAPI"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.parent == summary[0].span_id && s.name == "primary attempt 1"),
        "{:#?}",
        names(&spans)
    );
}
