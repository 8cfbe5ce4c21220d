//! The spans the use cases add to a trace: each answer (OpenTelemetry's
//! GenAI conventions: `gen_ai.*`) and each handoff claim. They are made for
//! traces only ([`TRACE_TARGET`]): without export they are disabled and cost
//! a callsite check; with it they carry ids, models, token counts and
//! outcomes, never chat text.

use std::sync::Arc;

use tracing::field::Empty;

use super::conversation::HandoffRefusal;
use super::ports::AiPurpose;
use crate::domain::answer::TokenUsage;
use crate::domain::{MessageId, SessionId, TRACE_TARGET};

/// What traces say the answers come from: the primary upstream's provider
/// and, when the server names it, its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiLabels {
    /// `openai`, `fastapi` or `echo` (`gen_ai.system`, `gen_ai.provider.name`).
    pub provider: &'static str,
    /// `OPENAI_MODEL` (`gen_ai.request.model`); a FastAPI service picks its own.
    pub model: Option<Arc<str>>,
}

impl Default for AiLabels {
    fn default() -> Self {
        Self {
            provider: "echo",
            model: None,
        }
    }
}

/// An answer's span: `chat {model}`, with the upstream attempts below it.
/// Its usage and outcome are filled in by [`answered`].
pub(super) fn answer_span(
    ai: &AiLabels,
    purpose: AiPurpose,
    session: &SessionId,
    message: Option<&MessageId>,
) -> tracing::Span {
    let model = ai.model.as_deref();
    tracing::info_span!(
        target: TRACE_TARGET,
        "chat",
        otel.name = %format_args!("chat {}", model.unwrap_or(ai.provider)),
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = ai.provider,
        gen_ai.provider.name = ai.provider,
        gen_ai.request.model = model,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        chatbot.usage.estimated = Empty,
        chatbot.purpose = purpose_label(purpose),
        chatbot.session_id = %session,
        chatbot.message_id = message.map(MessageId::as_str),
        chatbot.outcome = Empty,
    )
}

fn purpose_label(purpose: AiPurpose) -> &'static str {
    match purpose {
        AiPurpose::Answer => "answer",
        AiPurpose::Summary => "summary",
    }
}

/// Records how an answer ended and what it cost (the upstream's usage, or
/// the estimate made when it said nothing).
pub(super) fn answered(span: &tracing::Span, outcome: &'static str, usage: Option<&TokenUsage>) {
    span.record("chatbot.outcome", outcome);
    if matches!(outcome, "failed" | "lost_lease") {
        span.record("otel.status_code", "error");
    }
    if let Some(usage) = usage {
        // As i64: tracing-opentelemetry exports a u64 as its text, and the
        // conventions want numbers.
        span.record("gen_ai.usage.input_tokens", otel_int(usage.prompt_tokens));
        span.record(
            "gen_ai.usage.output_tokens",
            otel_int(usage.completion_tokens),
        );
        span.record("chatbot.usage.estimated", usage.estimated);
    }
}

/// A count as the trace's integer type (saturating; no count gets near it).
pub fn otel_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records how a claim ended: `taken`, `refused` by a rule (and which, in
/// its words: the error codes are the inbound adapters' to spell), or
/// `failed` (an error in the trace).
pub(super) fn claimed(span: &tracing::Span, refusal: Option<&HandoffRefusal>) {
    let outcome = match refusal {
        None => "taken",
        Some(HandoffRefusal::Failed(_)) => {
            span.record("otel.status_code", "error");
            "failed"
        }
        Some(_) => "refused",
    };
    span.record("chatbot.handoff.outcome", outcome);
    if let Some(why) = refusal {
        span.record("chatbot.handoff.refusal", tracing::field::display(why));
    }
}

/// A handoff claim's span (an agent's claim or an automatic assignment).
pub(super) fn claim_span(session: &SessionId, agent: &str, taking: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "handoff.claim",
        otel.status_code = Empty,
        chatbot.session_id = %session,
        chatbot.agent_id = agent,
        chatbot.handoff.taking = taking,
        chatbot.handoff.outcome = Empty,
        chatbot.handoff.refusal = Empty,
    )
}
