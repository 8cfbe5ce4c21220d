//! The [`Stats`] port and the [`UpstreamObserver`] as Prometheus metrics, in
//! a registry of this server's own (so two servers in one test process never
//! share a series), rendered as the text exposition format for `/metrics`.
//! `/api/stats` reads its snapshot from the same counters.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::adapters::outbound::resilient_ai::{AttemptOutcome, UpstreamObserver};
use crate::application::limits::LIMIT_NAMES;
use crate::application::ports::{CircuitState, GenerationReport, Stats, StatsSnapshot, STORES};
use crate::domain::feedback::Rating;

/// Every series is named `chatbot_<name>`.
pub const PREFIX: &str = "chatbot";

/// HTTP answers take milliseconds; a login's password hash takes tens.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// An AI answer's first token takes from tens of milliseconds to its
/// timeout (30 s by default); a whole answer up to minutes.
const GENERATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Label values created at start-up, so a dashboard sees zeros, not gaps.
const GENERATION_OUTCOMES: &[&str] = &["completed", "cancelled", "failed", "lost_lease"];
const LOGIN_OUTCOMES: &[&str] = &["success", "bad_credentials", "throttled", "busy", "error"];
/// How a wait in the queue ends, as `chatbot_handoff_wait_seconds` labels it.
const HANDOFF_WAIT_OUTCOMES: &[&str] = &["claimed", "auto", "cancelled", "timeout", "closed"];
const HANDOFF_OUTCOMES: &[&str] = &[
    "queued",
    "claimed",
    "released",
    "resolved",
    "cancelled",
    "timeout",
    "agent_away",
    "auto",
    "closed",
];

/// What an upstream request can end as (`AttemptOutcome::label`, and
/// `circuit_open` for a chat that skipped it).
const UPSTREAM_OUTCOMES: &[&str] = &[
    "ok",
    "refused",
    "timeout",
    "status_4xx",
    "status_429",
    "status_5xx",
    "reported",
    "protocol_error",
    "circuit_open",
];

/// A customer waits for an agent from seconds to the queue timeout (10 min
/// by default) and beyond, when it is raised.
const HANDOFF_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
];

/// The server's metrics.
pub struct PrometheusMetrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    ws_active: IntGauge,
    ws_opened: IntCounter,
    ws_closed: IntCounterVec,
    chat_messages: IntCounter,
    generations: IntCounterVec,
    first_token: Histogram,
    generation_duration: Histogram,
    tokens: IntCounter,
    upstream_requests: IntCounterVec,
    circuit_open: IntGaugeVec,
    store_errors: IntCounterVec,
    logins: IntCounterVec,
    rate_limited: IntCounterVec,
    handoffs: IntCounterVec,
    handoff_wait: HistogramVec,
    handoff_auto: IntCounter,
    csat: Histogram,
    handoff_queue: IntGauge,
    feedback: IntCounterVec,
    answer_tokens: IntCounterVec,
    budget_exhausted: IntCounter,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").finish_non_exhaustive()
    }
}

/// Registers `metric` and hands it back. Names are fixed at compile time and
/// unique, so a failure is a programming error caught by the first test.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        Histogram::with_opts(opts).expect("valid metric name"),
    )
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusMetrics {
    pub fn new() -> Self {
        let r = Registry::new_custom(Some(PREFIX.to_owned()), None).expect("valid prefix");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request (a WebSocket upgrade counts until its 101).",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric name");
        let metrics = Self {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            http_duration: register(&r, http_duration),
            ws_active: register(
                &r,
                IntGauge::new(
                    "websocket_connections_active",
                    "Open WebSocket connections on this instance.",
                )
                .expect("valid metric name"),
            ),
            ws_opened: counter(
                &r,
                "websocket_connections_total",
                "WebSocket connections accepted since start-up.",
            ),
            ws_closed: counter_vec(
                &r,
                "websocket_connections_closed_total",
                "WebSocket connections ended, by why.",
                &["reason"],
            ),
            chat_messages: counter(
                &r,
                "chat_messages_total",
                "Chat messages accepted for generation.",
            ),
            generations: counter_vec(
                &r,
                "generations_total",
                "Generations ended, by outcome.",
                &["outcome"],
            ),
            first_token: histogram(
                &r,
                "generation_first_token_seconds",
                "From a generation's start to its first token.",
                GENERATION_BUCKETS,
            ),
            generation_duration: histogram(
                &r,
                "generation_duration_seconds",
                "From a generation's start to its end, whatever the outcome.",
                GENERATION_BUCKETS,
            ),
            tokens: counter(
                &r,
                "tokens_streamed_total",
                "Text deltas streamed from the AI to conversations.",
            ),
            upstream_requests: counter_vec(
                &r,
                "upstream_requests_total",
                "Requests to an AI upstream, by upstream, outcome, and whether another \
                 attempt followed (outcome circuit_open: skipped, not sent).",
                &["upstream", "outcome", "retried"],
            ),
            circuit_open: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "upstream_circuit_open",
                        "1 while the upstream's circuit breaker is open or half-open, else 0.",
                    ),
                    &["upstream"],
                )
                .expect("valid metric name"),
            ),
            store_errors: counter_vec(
                &r,
                "store_errors_total",
                "Failures of a store, by store.",
                &["store"],
            ),
            logins: counter_vec(
                &r,
                "logins_total",
                "Login attempts, by outcome.",
                &["outcome"],
            ),
            rate_limited: counter_vec(
                &r,
                "rate_limited_total",
                "Requests refused by an abuse limit, by limit.",
                &["limit"],
            ),
            handoffs: counter_vec(
                &r,
                "handoffs_total",
                "Human handoff transitions, by outcome (queued, claimed, released, \
                 resolved, cancelled, timeout, agent_away).",
                &["outcome"],
            ),
            handoff_wait: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "handoff_wait_seconds",
                        "How long a conversation waited in the queue before it left, by \
                         outcome (claimed, auto, cancelled, timeout, closed).",
                    )
                    .buckets(HANDOFF_WAIT_BUCKETS.to_vec()),
                    &["outcome"],
                )
                .expect("valid metric name"),
            ),
            handoff_auto: register(
                &r,
                IntCounter::new(
                    "handoff_auto_assignments_total",
                    "Conversations auto-assignment gave to an agent (HANDOFF_ASSIGN=auto).",
                )
                .expect("valid metric name"),
            ),
            csat: histogram(
                &r,
                "csat_rating",
                "Customers' satisfaction after a handoff, 1 (very unhappy) to 5 (very happy).",
                &[1.0, 2.0, 3.0, 4.0, 5.0],
            ),
            handoff_queue: register(
                &r,
                IntGauge::new(
                    "handoff_queue_length",
                    "Conversations waiting for an agent (over all instances, as last read).",
                )
                .expect("valid metric name"),
            ),
            feedback: counter_vec(
                &r,
                "feedback_total",
                "Ratings users gave answers, by rating (up, down); a changed rating counts again.",
                &["rating"],
            ),
            answer_tokens: counter_vec(
                &r,
                "tokens_total",
                "Tokens answers cost, by kind (prompt, completion, reasoning; completion \
                 includes reasoning) and whether they were estimated here.",
                &["kind", "estimated"],
            ),
            budget_exhausted: counter(
                &r,
                "budget_exhausted_total",
                "Chats refused because their user's token budget was used up.",
            ),
            registry: r,
        };
        for rating in [Rating::Up, Rating::Down] {
            metrics.feedback.with_label_values(&[rating.as_str()]);
        }
        for kind in ["prompt", "completion", "reasoning"] {
            for estimated in ["true", "false"] {
                metrics.answer_tokens.with_label_values(&[kind, estimated]);
            }
        }
        for outcome in HANDOFF_OUTCOMES {
            metrics.handoffs.with_label_values(&[outcome]);
        }
        for outcome in HANDOFF_WAIT_OUTCOMES {
            metrics.handoff_wait.with_label_values(&[outcome]);
        }
        for outcome in GENERATION_OUTCOMES {
            metrics.generations.with_label_values(&[outcome]);
        }
        for outcome in LOGIN_OUTCOMES {
            metrics.logins.with_label_values(&[outcome]);
        }
        for limit in LIMIT_NAMES {
            metrics.rate_limited.with_label_values(&[limit]);
        }
        for store in STORES {
            metrics.store_errors.with_label_values(&[store]);
        }
        metrics
    }

    /// Shows an upstream's series at zero from start-up: its breaker closed,
    /// no request of any outcome yet.
    pub fn upstream_configured(&self, role: &'static str) {
        self.circuit_open.with_label_values(&[role]).set(0);
        for outcome in UPSTREAM_OUTCOMES {
            for retried in ["true", "false"] {
                if retried == "true" && matches!(*outcome, "ok" | "circuit_open") {
                    continue; // never follows these
                }
                self.upstream_requests
                    .with_label_values(&[role, outcome, retried]);
            }
        }
    }

    /// Shows each reason a socket can close for at zero from start-up (the
    /// reasons belong to the WebSocket adapter, which hands them in).
    pub fn close_reasons(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            self.ws_closed.with_label_values(&[reason]);
        }
    }
}

impl Stats for PrometheusMetrics {
    fn connection_opened(&self) {
        self.ws_active.inc();
        self.ws_opened.inc();
    }

    fn connection_closed(&self, reason: &'static str) {
        // Never below zero: a close without an open is a caller bug, not a
        // reason to report a negative number of sockets.
        if self.ws_active.get() > 0 {
            self.ws_active.dec();
        }
        self.ws_closed.with_label_values(&[reason]).inc();
    }

    fn message_received(&self) {
        self.chat_messages.inc();
    }

    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: u64::try_from(self.ws_active.get()).unwrap_or(0),
            total_connections: self.ws_opened.get(),
            total_messages: self.chat_messages.get(),
        }
    }

    fn generation_ended(&self, report: &GenerationReport) {
        self.generations.with_label_values(&[report.outcome]).inc();
        if let Some(first) = report.first_token {
            self.first_token.observe(first.as_secs_f64());
        }
        self.generation_duration
            .observe(report.duration.as_secs_f64());
        self.tokens.inc_by(report.tokens);
    }

    fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let code = status.to_string();
        self.http_requests
            .with_label_values(&[method, route, code.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    fn login(&self, outcome: &'static str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    fn store_error(&self, store: &'static str) {
        debug_assert!(STORES.contains(&store), "{store} is missing from STORES");
        self.store_errors.with_label_values(&[store]).inc();
    }

    fn handoff(&self, outcome: &'static str) {
        self.handoffs.with_label_values(&[outcome]).inc();
    }

    fn csat(&self, rating: u8) {
        self.csat.observe(f64::from(rating));
    }

    fn handoff_wait(&self, outcome: &'static str, waited: Duration) {
        self.handoff_wait
            .with_label_values(&[outcome])
            .observe(waited.as_secs_f64());
    }

    fn handoff_auto_assigned(&self) {
        self.handoff_auto.inc();
    }

    fn feedback(&self, rating: &'static str) {
        self.feedback.with_label_values(&[rating]).inc();
    }

    fn handoff_queue_length(&self, queued: u64) {
        self.handoff_queue
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    fn tokens(&self, kind: &'static str, estimated: bool, count: u64) {
        let estimated = if estimated { "true" } else { "false" };
        self.answer_tokens
            .with_label_values(&[kind, estimated])
            .inc_by(count);
    }

    fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    fn exposition(&self) -> Option<String> {
        let mut out = Vec::new();
        match TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            Ok(()) => String::from_utf8(out).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "could not encode the metrics");
                None
            }
        }
    }
}

impl UpstreamObserver for PrometheusMetrics {
    fn attempt(&self, role: &'static str, outcome: AttemptOutcome, retried: bool) {
        let retried = if retried { "true" } else { "false" };
        self.upstream_requests
            .with_label_values(&[role, outcome.label(), retried])
            .inc();
    }

    fn skipped(&self, role: &'static str) {
        self.upstream_requests
            .with_label_values(&[role, "circuit_open", "false"])
            .inc();
    }

    fn circuit_changed(&self, role: &'static str, state: CircuitState) {
        let open = i64::from(state != CircuitState::Closed);
        self.circuit_open.with_label_values(&[role]).set(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// A dashboard shows zeros, not gaps, on a fresh server: every fixed
    /// label set is in the exposition before anything happened.
    #[test]
    fn fixed_label_sets_are_exported_at_zero_from_the_start() {
        let m = PrometheusMetrics::new();
        m.upstream_configured("primary");
        m.close_reasons(["client_closed", "ping_timeout"]);
        let text = m.exposition().unwrap();
        let mut expected = vec![
            "chatbot_upstream_circuit_open{upstream=\"primary\"}".to_owned(),
            "chatbot_websocket_connections_closed_total{reason=\"ping_timeout\"}".to_owned(),
            "chatbot_generations_total{outcome=\"lost_lease\"}".to_owned(),
            "chatbot_handoff_wait_seconds_count{outcome=\"auto\"}".to_owned(),
            "chatbot_logins_total{outcome=\"throttled\"}".to_owned(),
        ];
        expected.extend(
            LIMIT_NAMES
                .iter()
                .map(|l| format!("chatbot_rate_limited_total{{limit=\"{l}\"}}")),
        );
        expected.extend(
            STORES
                .iter()
                .map(|s| format!("chatbot_store_errors_total{{store=\"{s}\"}}")),
        );
        for outcome in UPSTREAM_OUTCOMES {
            expected.push(format!(
                "chatbot_upstream_requests_total{{outcome=\"{outcome}\",retried=\"false\",upstream=\"primary\"}}"
            ));
        }
        for series in expected {
            assert_eq!(line_value(&text, &series), Some(0.0), "{series}\n{text}");
        }
        let retried_5xx = "chatbot_upstream_requests_total{outcome=\"status_5xx\",retried=\"true\",upstream=\"primary\"}";
        assert_eq!(line_value(&text, retried_5xx), Some(0.0));
    }

    #[test]
    fn every_attempt_outcome_is_registered() {
        let outcomes = [
            AttemptOutcome::Ok,
            AttemptOutcome::Refused,
            AttemptOutcome::Status(429),
            AttemptOutcome::Status(404),
            AttemptOutcome::Status(503),
            AttemptOutcome::Timeout,
            AttemptOutcome::Reported,
            AttemptOutcome::Protocol,
        ];
        for outcome in outcomes {
            assert!(
                UPSTREAM_OUTCOMES.contains(&outcome.label()),
                "{}",
                outcome.label()
            );
        }
    }

    #[test]
    fn counts_show_in_the_exposition_with_the_prefix() {
        let m = PrometheusMetrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed("client_closed");
        m.message_received();
        m.generation_ended(&GenerationReport {
            outcome: "completed",
            first_token: Some(Duration::from_millis(30)),
            duration: Duration::from_millis(200),
            tokens: 7,
        });
        m.http_request("GET", "/health", 200, Duration::from_millis(3));
        m.attempt("primary", AttemptOutcome::Status(503), true);
        m.circuit_changed("primary", CircuitState::Open);
        m.store_error("sessions");
        m.login("bad_credentials");
        m.rate_limited("login");
        m.handoff("claimed");
        m.handoff_wait("claimed", Duration::from_secs(3));
        m.handoff_auto_assigned();
        m.handoff_queue_length(4);
        m.feedback("down");
        m.csat(4);
        let text = m.exposition().unwrap();
        for (series, value) in [
            ("chatbot_websocket_connections_active", 1.0),
            (
                "chatbot_websocket_connections_closed_total{reason=\"client_closed\"}",
                1.0,
            ),
            ("chatbot_generations_total{outcome=\"completed\"}", 1.0),
            ("chatbot_generations_total{outcome=\"failed\"}", 0.0),
            ("chatbot_tokens_streamed_total", 7.0),
            ("chatbot_generation_first_token_seconds_count", 1.0),
            (
                "chatbot_generation_first_token_seconds_bucket{le=\"0.05\"}",
                1.0,
            ),
            (
                "chatbot_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}",
                1.0,
            ),
            (
                "chatbot_upstream_requests_total{outcome=\"status_5xx\",retried=\"true\",upstream=\"primary\"}",
                1.0,
            ),
            ("chatbot_upstream_circuit_open{upstream=\"primary\"}", 1.0),
            ("chatbot_store_errors_total{store=\"sessions\"}", 1.0),
            (
                "chatbot_logins_total{outcome=\"bad_credentials\"}",
                1.0,
            ),
            ("chatbot_rate_limited_total{limit=\"login\"}", 1.0),
            ("chatbot_handoffs_total{outcome=\"claimed\"}", 1.0),
            ("chatbot_handoffs_total{outcome=\"timeout\"}", 0.0),
            (
                "chatbot_handoff_wait_seconds_count{outcome=\"claimed\"}",
                1.0,
            ),
            (
                "chatbot_handoff_wait_seconds_count{outcome=\"closed\"}",
                0.0,
            ),
            ("chatbot_handoff_auto_assignments_total", 1.0),
            ("chatbot_handoff_queue_length", 4.0),
            ("chatbot_feedback_total{rating=\"down\"}", 1.0),
            ("chatbot_feedback_total{rating=\"up\"}", 0.0),
            ("chatbot_csat_rating_count", 1.0),
            ("chatbot_csat_rating_bucket{le=\"3\"}", 0.0),
            ("chatbot_csat_rating_bucket{le=\"4\"}", 1.0),
        ] {
            assert_eq!(line_value(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE chatbot_http_request_duration_seconds histogram"));
        assert_eq!(
            m.snapshot(),
            StatsSnapshot {
                active_connections: 1,
                total_connections: 2,
                total_messages: 1
            }
        );
        m.connection_closed("client_closed");
        m.connection_closed("client_closed");
        assert_eq!(m.snapshot().active_connections, 0, "never below zero");
    }
}
