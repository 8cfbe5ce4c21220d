//! Outbound decorator: one upstream made resilient. It retries a chat that
//! failed before the upstream began to answer, keeps a circuit breaker that
//! skips an upstream which keeps failing, and reports every attempt to an
//! [`UpstreamObserver`].
//!
//! Why a decorator around the [`AiModel`] port rather than policy in the
//! application: what is worth retrying is a matter of the transport (connect
//! errors, HTTP statuses, `Retry-After`), which the use cases never see; as a
//! wrapper it composes (upstream, then retries and breaker, then fallback),
//! is tested against any model, and leaves the SSE reader alone.
//!
//! The stream it returns is lazy: retries and their waits run on its first
//! poll, so the generation keeps renewing its lease and watching for a stop
//! meanwhile, and dropping it abandons them at once.

mod breaker;
mod observer;
mod retry;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{stream, Stream, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

pub use breaker::{Admission, Breaker, BreakerSettings};
pub use observer::{AttemptOutcome, NoObserver, UpstreamObserver};
pub use retry::{Failed, RetryPolicy};

use crate::application::ports::{
    AiError, AiHealth, AiModel, AiRequest, CircuitState, TokenStream, UpstreamState,
};
use crate::domain::TRACE_TARGET;

/// Which upstream a decorator guards, as `/health`, the observer and traces
/// name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLabel {
    /// `primary` or `fallback`.
    pub role: &'static str,
    /// `fastapi` or `openai`.
    pub provider: &'static str,
    /// The model it is asked for, when the server names one (`OPENAI_MODEL`).
    pub model: Option<Arc<str>>,
}

/// An upstream with retries before its first token and a circuit breaker.
#[derive(Clone)]
pub struct ResilientAi {
    shared: Arc<Shared>,
}

struct Shared {
    model: Arc<dyn AiModel>,
    label: UpstreamLabel,
    policy: RetryPolicy,
    breaker: Breaker,
    observer: Arc<dyn UpstreamObserver>,
}

impl ResilientAi {
    /// `breaker: None` never skips the upstream.
    pub fn new(
        model: Arc<dyn AiModel>,
        label: UpstreamLabel,
        policy: RetryPolicy,
        breaker: Option<BreakerSettings>,
        observer: Arc<dyn UpstreamObserver>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                model,
                label,
                policy,
                breaker: Breaker::new(breaker),
                observer,
            }),
        }
    }

    /// Where this upstream's breaker stands.
    pub fn circuit(&self) -> CircuitState {
        self.shared.breaker.state()
    }
}

#[async_trait]
impl AiModel for ResilientAi {
    async fn stream(&self, request: AiRequest) -> Result<TokenStream, AiError> {
        let shared = &self.shared;
        let role = shared.label.role;
        let Some(admission) = shared.breaker.admit() else {
            shared.observer.skipped(role);
            return Err(AiError::CircuitOpen);
        };
        if admission == Admission::Probe {
            tracing::info!(
                upstream = role,
                "AI upstream circuit half-open: this chat probes it"
            );
            shared
                .observer
                .circuit_changed(role, CircuitState::HalfOpen);
        }
        let pass = Pass {
            shared: shared.clone(),
            admission,
            settled: false,
        };
        Ok(lazy(shared.clone().answer(request, pass)))
    }

    async fn health(&self) -> AiHealth {
        self.shared.model.health().await
    }

    fn upstreams(&self) -> Vec<UpstreamState> {
        vec![UpstreamState {
            role: self.shared.label.role,
            provider: self.shared.label.provider,
            circuit: self.circuit(),
        }]
    }
}

impl Shared {
    /// Attempts until the first token, a failure not worth retrying, or the
    /// end of the retries; the breaker hears the chat's outcome once.
    async fn answer(
        self: Arc<Self>,
        request: AiRequest,
        pass: Pass,
    ) -> Result<TokenStream, AiError> {
        let role = self.label.role;
        let deadline = Instant::now() + self.policy.budget;
        let mut retries = 0;
        loop {
            let span = self.attempt_span(retries);
            let tried = async {
                match self.model.stream(request.clone()).await {
                    Ok(stream) => until_first_token(stream).await.map_err(|e| (e, true)),
                    Err(error) => Err((error, false)),
                }
            }
            .instrument(span.clone())
            .await;
            let (error, opened) = match tried {
                Ok(stream) => {
                    self.observer.attempt(role, AttemptOutcome::Ok, false);
                    pass.settle(true);
                    return Ok(in_span(stream, span));
                }
                Err(failed) => failed,
            };
            attempt_failed(&span, &error, opened);
            let failed = Failed {
                error: &error,
                opened,
                retries,
            };
            let wait = self
                .policy
                .wait(failed, Instant::now(), deadline, fastrand::f64());
            self.observer
                .attempt(role, outcome(&error, opened), wait.is_some());
            let Some(wait) = wait else {
                pass.settle(answered(&error));
                return Err(error);
            };
            retries += 1;
            tracing::info!(
                upstream = role,
                error = %error,
                retry = retries,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "AI upstream failed before the first token; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt's span in a trace: a client span below the answer's, so
    /// retries and the fallback's attempts show as its siblings. Disabled
    /// without export.
    fn attempt_span(&self, retries: u32) -> tracing::Span {
        let label = &self.label;
        let model = label.model.as_deref();
        tracing::info_span!(
            target: TRACE_TARGET,
            "upstream attempt",
            otel.name = %format_args!("{} attempt {}", label.role, retries + 1),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.system = label.provider,
            gen_ai.provider.name = label.provider,
            gen_ai.request.model = model,
            chatbot.upstream = label.role,
            chatbot.attempt = retries + 1,
            error.type = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    }

    fn circuit_changed(&self, state: CircuitState) {
        let role = self.label.role;
        match state {
            CircuitState::Open => tracing::warn!(
                upstream = role,
                cooldown_ms =
                    u64::try_from(self.breaker.cooldown().as_millis()).unwrap_or(u64::MAX),
                "AI upstream circuit opened: chats skip it until the cooldown ends"
            ),
            CircuitState::Closed => tracing::info!(upstream = role, "AI upstream circuit closed"),
            CircuitState::HalfOpen => {}
        }
        self.observer.circuit_changed(role, state);
    }
}

/// A chat's place in the breaker's count, given back if the chat ends
/// without an outcome (stopped while waiting), so a probe is never lost.
struct Pass {
    shared: Arc<Shared>,
    admission: Admission,
    settled: bool,
}

impl Pass {
    fn settle(mut self, healthy: bool) {
        self.settled = true;
        if let Some(state) = self.shared.breaker.record(self.admission, healthy) {
            self.shared.circuit_changed(state);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.breaker.abandon(self.admission);
        }
    }
}

/// Marks an attempt's span failed, with the kind of failure its metric
/// counts (`status_5xx`, `timeout`, ...).
fn attempt_failed(span: &tracing::Span, error: &AiError, opened: bool) {
    span.record("otel.status_code", "error");
    span.record("error.type", outcome(error, opened).label());
    if let AiError::Status { status, .. } = error {
        // As i64: tracing-opentelemetry exports unsigned values as text.
        span.record("http.response.status_code", i64::from(*status));
    }
}

/// The answer's stream polled inside its attempt's span, which lasts until
/// the stream is dropped (the answer's end) and is marked failed if the
/// stream ends in an error.
fn in_span(stream: TokenStream, span: tracing::Span) -> TokenStream {
    if span.is_disabled() {
        return stream;
    }
    Box::pin(InSpan { stream, span })
}

struct InSpan {
    stream: TokenStream,
    span: tracing::Span,
}

impl Stream for InSpan {
    type Item = <TokenStream as Stream>::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = {
            let _in = this.span.enter();
            this.stream.as_mut().poll_next(cx)
        };
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            attempt_failed(&this.span, error, true);
        }
        polled
    }
}

/// Whether the upstream answered, though with a refusal of this one request
/// (a 4xx other than 408 and 429): that says nothing against its health.
fn answered(error: &AiError) -> bool {
    matches!(error, AiError::Status { status, .. }
        if (400..500).contains(status) && !matches!(status, 408 | 429))
}

/// The attempt's outcome for counting.
fn outcome(error: &AiError, opened: bool) -> AttemptOutcome {
    match error {
        AiError::Unavailable(_) if opened => AttemptOutcome::Reported,
        AiError::Unavailable(_) | AiError::CircuitOpen => AttemptOutcome::Refused,
        AiError::Status { status, .. } => AttemptOutcome::Status(*status),
        AiError::Timeout(_) => AttemptOutcome::Timeout,
        AiError::Rejected(_) | AiError::Protocol(_) => AttemptOutcome::Protocol,
    }
}

/// Waits for the stream's first item: a token comes back in front of the
/// rest, an empty answer as an empty stream, an error as the error.
pub async fn until_first_token(mut stream: TokenStream) -> Result<TokenStream, AiError> {
    match stream.next().await {
        Some(Ok(token)) => Ok(Box::pin(stream::iter([Ok(token)]).chain(stream))),
        Some(Err(error)) => Err(error),
        None => Ok(Box::pin(stream::empty())),
    }
}

/// A stream that runs `opening` on its first poll and then yields what it
/// opened, or its error as the only item.
pub fn lazy(
    opening: impl Future<Output = Result<TokenStream, AiError>> + Send + 'static,
) -> TokenStream {
    Box::pin(stream::once(opening).flat_map(|opened| match opened {
        Ok(stream) => stream,
        Err(error) => Box::pin(stream::iter([Err(error)])) as TokenStream,
    }))
}
