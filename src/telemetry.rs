//! Logging set-up: readable lines in development, flat JSON lines in
//! production, and no chat content at any level unless an operator opts in;
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the OpenTelemetry trace
//! layer beside them ([`otel`]).
//!
//! Chat text reaches a log only through a library's trace output: the
//! WebSocket library (`tungstenite`) logs every frame and message it reads or
//! writes at `trace`, and the MongoDB driver logs whole commands (password
//! hashes included) under `mongodb::command` at `debug`. Both are capped here
//! whatever `RUST_LOG` says; our own code logs ids, sizes and outcomes, never
//! the text.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;

use crate::config::AppEnv;
use crate::domain::TRACE_TARGET;
/// Where it lived before; kept so existing imports still resolve.
pub use crate::error_chain::ErrorChain;

pub mod otel;

/// What the logs may contain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `LOG_CHAT_CONTENT=true`: let the libraries' traces of chat text through.
    pub chat_content: bool,
}

/// Whether an event or span from `meta` may carry chat content or a secret:
/// the WebSocket library's trace output (every message in full) and the
/// MongoDB driver's command log (whole documents).
pub fn carries_content(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let level = *meta.level();
    let under = |prefix: &str| {
        target == prefix
            || target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with("::"))
    };
    ((under("tungstenite") || under("tokio_tungstenite")) && level == Level::TRACE)
        || (under("mongodb::command") && level >= Level::DEBUG)
}

/// Installs the global subscriber ([`subscriber`]).
pub fn init(
    env: AppEnv,
    settings: LogSettings,
    traces: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) {
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = subscriber(env, settings, traces).try_init();
}

/// The logs as `env` formats them, filtered by `RUST_LOG` (default `info`)
/// and the content rule; with `traces` (a provider from [`otel::provider`])
/// the trace layer beside them. Without, there is no trace layer at all
/// (not even an empty one, which would make every span for traces exist
/// and hang the socket's log lines under the upgrade request's), so spans
/// for traces are disabled at their callsite.
pub fn subscriber(
    env: AppEnv,
    settings: LogSettings,
    traces: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync> {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    filtered_by(env_filter, env, settings, traces)
}

/// [`subscriber`] with its `RUST_LOG` filter given.
fn filtered_by(
    env_filter: EnvFilter,
    env: AppEnv,
    settings: LogSettings,
    traces: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync> {
    let chat_content = settings.chat_content;
    // The content rule only removes, so it never widens what `RUST_LOG`
    // lets through; saying so (the TRACE hint) lets the combined filter keep
    // `RUST_LOG`'s level as its hint. Without a hint the `log` crate's max
    // level stays at `trace` (`try_init` copies the hint there), and every
    // `log::trace!` of the WebSocket and HTTP libraries (several per token)
    // went through the log-to-tracing bridge to be dropped: ~1% of the
    // gateway's CPU under load.
    let content = filter_fn(move |meta| {
        (chat_content || !carries_content(meta)) && meta.target() != TRACE_TARGET
    })
    .with_max_level_hint(LevelFilter::TRACE);
    let filter = env_filter.and(content);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match env {
        AppEnv::Production => Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_filter(filter),
        ),
        AppEnv::Development => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(filter),
        ),
    };
    let logged = tracing_subscriber::registry().with(logs);
    match traces {
        Some(provider) => Box::new(logged.with(otel::layer(provider))),
        None => Box::new(logged),
    }
}

/// One JSON object per line with everything at the top level: `timestamp`,
/// `level`, `target`, `message`, the fields of every span the event is in
/// (outermost first: the request's `request_id`, `client_ip`, ...) and the
/// event's own fields, which win over a span's of the same name.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // A `log` record (from a library) carries its real target aside.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Puts an event's fields into the line, skipping the `log.*` bookkeeping
/// of records from the `log` crate.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(ErrorChain(value).to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without export no span for traces exists (a log span does), so
    /// nothing is spent on them and the log lines keep their context.
    #[test]
    fn without_export_spans_for_traces_are_disabled() {
        for env in [AppEnv::Production, AppEnv::Development] {
            let logs = subscriber(env, LogSettings::default(), None);
            tracing::subscriber::with_default(logs, || {
                let log = tracing::error_span!("log");
                assert!(!log.is_disabled());
                let _in = log.enter();
                let traced = tracing::error_span!(target: TRACE_TARGET, "traced");
                assert!(traced.is_disabled(), "{env:?}");
            });
        }
    }

    /// The subscriber's level hint is `RUST_LOG`'s: `try_init` gives it to
    /// the `log` crate, whose records below it are then skipped at their
    /// call site instead of crossing into tracing one by one.
    #[test]
    fn the_level_hint_is_rust_logs() {
        let hint = |directives: &str| {
            let filter = EnvFilter::new(directives);
            filtered_by(filter, AppEnv::Production, LogSettings::default(), None).max_level_hint()
        };
        assert_eq!(hint("warn"), Some(LevelFilter::WARN));
        assert_eq!(hint("info"), Some(LevelFilter::INFO));
        assert_eq!(hint("warn,hyper=debug"), Some(LevelFilter::DEBUG));
    }

    #[test]
    fn with_export_spans_for_traces_exist() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = crate::config::TracesConfig {
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            headers: crate::config::ExportHeaders::default(),
            service_name: "t".into(),
            sampler: crate::config::TraceSampler::AlwaysOn,
        };
        let provider = otel::provider(&config, runtime.handle().clone()).unwrap();
        let both = subscriber(AppEnv::Production, LogSettings::default(), Some(&provider));
        tracing::subscriber::with_default(both, || {
            let traced = tracing::info_span!(target: TRACE_TARGET, "traced");
            assert!(!traced.is_disabled());
            let _in = traced.enter();
            assert!(otel::current_context().is_some());
        });
        let _ = provider.shutdown_with_timeout(std::time::Duration::from_millis(100));
    }

    #[test]
    fn library_traces_of_messages_and_commands_are_content() {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Probe = Probe;
        let meta = |target: &'static str, level: Level| {
            Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
                tracing::metadata::Kind::EVENT,
            )
        };
        assert!(carries_content(&meta(
            "tungstenite::protocol",
            Level::TRACE
        )));
        assert!(carries_content(&meta("tungstenite", Level::TRACE)));
        assert!(carries_content(&meta("mongodb::command", Level::DEBUG)));
        assert!(carries_content(&meta("mongodb::command", Level::TRACE)));
        assert!(!carries_content(&meta(
            "tungstenite::protocol",
            Level::DEBUG
        )));
        assert!(!carries_content(&meta("mongodb::connection", Level::DEBUG)));
        assert!(!carries_content(&meta("tungstenitex", Level::TRACE)));
        assert!(!carries_content(&meta("chatbot_server", Level::TRACE)));
    }
}
