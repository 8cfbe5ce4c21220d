//! The configuration's unit tests: defaults, bounds, refusals by name,
//! production's secret checks and redaction.

use super::secrets::{example_values, is_placeholder_secret, ENV_EXAMPLE};
use super::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

/// Every duration setting that must be above zero.
pub(super) const DURATIONS: &[&str] = &[
    "SHUTDOWN_TIMEOUT",
    "REFRESH_TOKEN_TTL",
    "WS_TICKET_TTL",
    "SESSION_TTL",
    "GENERATION_LEASE",
    "UNATTENDED_GENERATION_TIMEOUT",
    "HANDOFF_QUEUE_TIMEOUT",
    "AGENT_AWAY_GRACE",
    "TRANSCRIPT_RETENTION",
    "AI_CONNECT_TIMEOUT",
    "AI_FIRST_TOKEN_TIMEOUT",
    "AI_IDLE_TIMEOUT",
    "ECHO_TOKEN_DELAY",
    "AI_RETRY_BACKOFF",
    "AI_BREAKER_COOLDOWN",
    "WS_PING_INTERVAL",
    "WS_PONG_TIMEOUT",
    "LOGIN_FAILURE_WINDOW",
    "LOGIN_ACCOUNT_WINDOW",
    "REGISTER_WINDOW",
    "VERIFY_WINDOW",
    "WS_TICKETS_WINDOW",
    "CHAT_MESSAGES_WINDOW",
];
/// Every duration setting where `0` turns something off.
pub(super) const DURATIONS_OR_ZERO: &[&str] = &[
    "REFRESH_REUSE_GRACE",
    "HTTP_HEADER_TIMEOUT",
    "HTTP_BODY_TIMEOUT",
    "HTTP_KEEPALIVE_TIMEOUT",
];
/// Every count where `0` turns the limit off.
pub(super) const LIMITS: &[&str] = &[
    "LOGIN_MAX_FAILURES_PER_ACCOUNT",
    "LOGIN_MAX_FAILURES_PER_IP",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY",
    "REGISTER_PER_IP_PER_HOUR",
    "VERIFY_PER_IP_PER_MINUTE",
    "WS_TICKETS_PER_USER_PER_MINUTE",
    "CHAT_MESSAGES_PER_MINUTE",
    "CHAT_MAX_CONCURRENT_PER_USER",
    "WS_MAX_CONNECTIONS_PER_USER",
    "WS_MAX_CONNECTIONS_PER_IP",
    "SESSIONS_MAX_PER_USER",
    "HTTP_MAX_IDLE_CONNECTIONS",
    "UNAUTH_CONNECTIONS_PER_IP",
    "FD_HEADROOM",
    "AI_BREAKER_FAILURES",
];
/// Every count that must be at least 1.
pub(super) const POSITIVE: &[&str] = &["EVENT_LOG_LIMIT", "MAX_MESSAGE_CHARS"];

/// Every duration an accepted configuration holds, by variable.
pub(super) fn durations(c: &Config) -> Vec<(&'static str, Duration)> {
    let mut all = vec![
        ("SHUTDOWN_TIMEOUT", c.server.shutdown_timeout),
        ("JWT_EXPIRES_IN", c.auth.token_lifetime.duration()),
        ("REFRESH_TOKEN_TTL", c.access.refresh_token_ttl),
        ("REFRESH_REUSE_GRACE", c.access.refresh_reuse_grace),
        ("WS_TICKET_TTL", c.access.ws_ticket_ttl),
        ("SESSION_TTL", c.sessions.ttl),
        ("GENERATION_LEASE", c.sessions.generation_lease),
        (
            "UNATTENDED_GENERATION_TIMEOUT",
            c.sessions.unattended_generation_timeout,
        ),
        ("HANDOFF_QUEUE_TIMEOUT", c.sessions.handoff_queue_timeout),
        ("AGENT_AWAY_GRACE", c.sessions.agent_away_grace),
        ("AI_CONNECT_TIMEOUT", c.ai.connect_timeout),
        ("AI_FIRST_TOKEN_TIMEOUT", c.ai.first_token_timeout),
        ("AI_IDLE_TIMEOUT", c.ai.idle_timeout),
        ("ECHO_TOKEN_DELAY", c.ai.echo_token_delay),
        ("AI_RETRY_BACKOFF", c.ai.retry_backoff),
        ("AI_BREAKER_COOLDOWN", c.ai.breaker_cooldown),
        ("WS_PING_INTERVAL", c.websocket.ping_interval),
        ("WS_PONG_TIMEOUT", c.websocket.pong_timeout),
    ];
    let l = &c.limits;
    for (name, limit) in [
        ("LOGIN_FAILURE_WINDOW", l.login_per_ip),
        ("LOGIN_ACCOUNT_WINDOW", l.login_per_account),
        ("REGISTER_WINDOW", l.register_per_ip),
        ("VERIFY_WINDOW", l.verify_per_ip),
        ("WS_TICKETS_WINDOW", l.ws_tickets_per_user),
        ("CHAT_MESSAGES_WINDOW", l.chats_per_user),
    ] {
        all.extend(limit.map(|w| (name, w.window)));
    }
    all.extend(
        c.storage
            .transcript_retention
            .map(|d| ("TRANSCRIPT_RETENTION", d)),
    );
    let k = &c.connections;
    for (name, timeout) in [
        ("HTTP_HEADER_TIMEOUT", k.header_timeout),
        ("HTTP_BODY_TIMEOUT", k.body_timeout),
        ("HTTP_KEEPALIVE_TIMEOUT", k.keepalive_timeout),
    ] {
        all.extend(timeout.map(|d| (name, d)));
    }
    all
}

#[test]
fn durations_longer_than_a_hundred_years_are_refused_by_name() {
    let most = Duration::from_secs(36_500 * 86_400);
    for name in DURATIONS.iter().chain(DURATIONS_OR_ZERO) {
        // The value that used to be accepted and then overflowed a clock.
        for bad in ["2052117620574877", "36501d", "18446744073709551615ms"] {
            let err = cfg(&[(name, bad)]).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("at most 36500d"),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        let c = cfg(&[(name, "36500d")]).unwrap();
        let got = durations(&c).into_iter().find(|(n, _)| n == name);
        assert_eq!(got, Some((*name, most)), "{name}");
    }
    let err = cfg(&[("JWT_EXPIRES_IN", "2052117620574877")]).unwrap_err();
    assert!(err.to_string().contains("JWT_EXPIRES_IN"), "{err}");
    let c = cfg(&[("JWT_EXPIRES_IN", "36500d")]).unwrap();
    assert_eq!(c.auth.token_lifetime.duration(), most);
}

#[test]
fn counts_are_bounded_and_say_their_range() {
    for name in LIMITS.iter().chain(POSITIVE) {
        let err = cfg(&[(name, "1000001")]).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("to 1000000"), "{err}");
        assert!(err.contains("\"1000001\""), "the value as written: {err}");
        let err = cfg(&[(name, "99999999999999999999")]).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
        assert!(cfg(&[(name, "1000000")]).is_ok(), "{name}");
    }
    let c = cfg(&[("EVENT_LOG_LIMIT", "1000000")]).unwrap();
    assert_eq!(c.sessions.event_log_limit, 1_000_000);
    let c = cfg(&[("FD_HEADROOM", "1000000")]).unwrap();
    assert_eq!(c.connections.fd_headroom, Some(1_000_000));
}

#[test]
fn observability_settings_parse() {
    let c = cfg(&[]).unwrap().observability;
    assert_eq!(c.metrics_addr, None);
    assert!(!c.log_chat_content);
    assert_eq!(c.health_probe_interval, Duration::from_secs(5));
    let c = cfg(&[
        ("METRICS_ADDR", "127.0.0.1:9100"),
        ("LOG_CHAT_CONTENT", "true"),
        ("HEALTH_PROBE_INTERVAL", "250ms"),
    ])
    .unwrap()
    .observability;
    assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    assert!(c.log_chat_content);
    assert_eq!(c.health_probe_interval, Duration::from_millis(250));
    let err = cfg(&[("METRICS_ADDR", "9100")]).unwrap_err().to_string();
    assert!(err.contains("METRICS_ADDR"), "{err}");
}

#[test]
fn traces_are_off_until_an_endpoint_is_set() {
    assert_eq!(cfg(&[]).unwrap().observability.traces, None);
    let t = cfg(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
        .unwrap()
        .observability
        .traces
        .unwrap();
    assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.service_name, "chatbot-server");
    assert_eq!(t.sampler, TraceSampler::ParentBased(RootSampler::AlwaysOn));
    assert!(t.headers.expose().is_empty());
    // The per-signal endpoint is taken as written, and wins.
    let t = cfg(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://x.example/otlp/traces",
        ),
        ("OTEL_SERVICE_NAME", "chat-eu"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=s%3Dcret, X-Team=chat",
        ),
    ])
    .unwrap()
    .observability
    .traces
    .unwrap();
    assert_eq!(t.endpoint, "https://x.example/otlp/traces");
    assert_eq!(t.service_name, "chat-eu");
    assert_eq!(
        t.sampler,
        TraceSampler::ParentBased(RootSampler::Ratio(0.25))
    );
    assert_eq!(
        t.headers.expose(),
        [
            ("api-key".to_owned(), "s=cret".to_owned()),
            ("x-team".to_owned(), "chat".to_owned())
        ]
    );
    assert!(!format!("{t:?}").contains("s=cret"), "{t:?}");
}

#[test]
fn bad_trace_settings_are_refused_in_one_line() {
    let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    for (pairs, var) in [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c/x")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (
            vec![on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![on, ("OTEL_TRACES_SAMPLER", "sometimes")],
            "OTEL_TRACES_SAMPLER",
        ),
        (
            vec![
                on,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            vec![on, ("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            vec![on, ("OTEL_EXPORTER_OTLP_HEADERS", "api key=top%2")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let err = cfg(&pairs).unwrap_err().to_string();
        assert!(err.contains(var), "{pairs:?}: {err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(
            !err.contains("top"),
            "a header value is never echoed: {err}"
        );
    }
}

#[test]
fn defaults_match_the_node_server() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.server.port, 3001);
    assert_eq!(c.server.host.to_string(), "0.0.0.0");
    assert_eq!(c.server.env, AppEnv::Development);
    assert_eq!(c.auth.token_lifetime.seconds(), 86_400);
    assert_eq!(c.auth.token_lifetime.as_str(), "24h");
    assert!(c.auth.jwt_secret.generated);
    assert!(c.auth.jwt_secret.bytes().len() >= MIN_SECRET_BYTES);
    assert_eq!(c.storage.sqlite_path, PathBuf::from("./data/chatbot.db"));
    assert_eq!(c.storage.connect_timeout, Duration::from_secs(5));
    assert!(c.server.all_interfaces());
    for (host, all) in [
        ("0.0.0.0", true),
        ("::", true),
        ("[::]", true),
        ("127.0.0.1", false),
        ("::1", false),
    ] {
        assert_eq!(
            cfg(&[("HOST", host)]).unwrap().server.all_interfaces(),
            all,
            "{host}"
        );
    }
    assert_eq!(c.websocket.max_message_chars, 10_000);
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.websocket.pong_timeout, Duration::from_secs(60));
    assert_eq!(c.sessions.ttl, Duration::from_secs(86_400));
    assert_eq!(c.sessions.event_log_limit, 2000);
    assert_eq!(c.sessions.generation_lease, Duration::from_secs(10));
    assert_eq!(
        c.sessions.unattended_generation_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(c.sessions.handoff_queue_timeout, Duration::from_secs(600));
    assert_eq!(c.sessions.agent_away_grace, Duration::from_secs(120));
    assert_eq!(c.storage.transcript_retention, None, "kept for good");
    assert!(c.ai.primary.is_none() && c.ai.fallback.is_none());
    assert!(c.storage.mongodb_uri.is_none() && c.sessions.redis_url.is_none());
}

#[test]
fn transcript_retention_keeps_for_good_unless_given_a_duration() {
    assert_eq!(cfg(&[]).unwrap().storage.transcript_retention, None);
    assert_eq!(
        cfg(&[("TRANSCRIPT_RETENTION", "")])
            .unwrap()
            .storage
            .transcript_retention,
        None,
        "empty counts as unset"
    );
    let c = cfg(&[("TRANSCRIPT_RETENTION", "30d")]).unwrap();
    assert_eq!(
        c.storage.transcript_retention,
        Some(Duration::from_secs(30 * 86_400))
    );
    for bad in ["0", "forever", "-1d", "36501d"] {
        let err = cfg(&[("TRANSCRIPT_RETENTION", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRANSCRIPT_RETENTION"), "{bad}: {err}");
    }
}

#[test]
fn access_settings_have_defaults_and_are_checked() {
    let c = cfg(&[]).unwrap();
    assert_eq!(
        c.access,
        AccessConfig {
            allow_registration: true,
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            refresh_reuse_grace: Duration::from_secs(10),
            ws_ticket_ttl: Duration::from_secs(30),
        }
    );
    let c = cfg(&[
        ("ALLOW_REGISTRATION", "False"),
        ("REFRESH_REUSE_GRACE", "0"),
        ("WS_TICKET_TTL", "5s"),
    ])
    .unwrap();
    assert!(!c.access.allow_registration);
    assert!(c.access.refresh_reuse_grace.is_zero());
    assert_eq!(c.access.ws_ticket_ttl, Duration::from_secs(5));
    for (k, v) in [
        ("ALLOW_REGISTRATION", "maybe"),
        ("REFRESH_TOKEN_TTL", "0"),
        ("REFRESH_REUSE_GRACE", "soon"),
        ("WS_TICKET_TTL", "0"),
    ] {
        let err = cfg(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{err}");
    }
}

#[test]
fn limits_have_the_issue_defaults_and_zero_turns_one_off() {
    let l = cfg(&[]).unwrap().limits;
    let w = |max, secs| {
        Some(WindowLimit {
            max,
            window: Duration::from_secs(secs),
        })
    };
    assert_eq!(l.login_per_account_ip, w(5, 900));
    assert_eq!(l.login_per_ip, w(20, 900));
    assert_eq!(l.login_per_account, w(100, 3600));
    assert_eq!(l.register_per_ip, w(20, 3600));
    assert_eq!(l.verify_per_ip, w(120, 60));
    assert_eq!(l.ws_tickets_per_user, w(30, 60));
    assert_eq!(l.chats_per_user, w(20, 60));
    assert_eq!(l.chat_concurrent_per_user, Some(3));
    assert_eq!(l.ws_connections_per_user, Some(20));
    assert_eq!(l.ws_connections_per_ip, Some(100));
    assert_eq!(l.sessions_per_user, Some(50));
    assert!(l.trusted_proxies.is_empty());

    let l = cfg(&[
        ("CHAT_MESSAGES_PER_MINUTE", "0"),
        ("SESSIONS_MAX_PER_USER", "0"),
        ("LOGIN_FAILURE_WINDOW", "2s"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
    ])
    .unwrap()
    .limits;
    assert_eq!(l.chats_per_user, None);
    assert_eq!(l.sessions_per_user, None);
    assert_eq!(l.login_per_ip, w(20, 2));
    assert!(!l.trusted_proxies.is_empty());
    for (k, v) in [
        ("WS_MAX_CONNECTIONS_PER_IP", "-1"),
        ("CHAT_MAX_CONCURRENT_PER_USER", "many"),
        ("LOGIN_FAILURE_WINDOW", "0"),
        ("TRUSTED_PROXIES", "proxy.local"),
    ] {
        let err = cfg(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{err}");
    }
}

#[test]
fn ai_upstreams_retries_and_breaker() {
    let c = cfg(&[]).unwrap().ai;
    assert_eq!(c.max_retries, 2);
    assert_eq!(c.retry_backoff, Duration::from_millis(200));
    assert_eq!(c.breaker_failures, Some(5));
    assert_eq!(c.breaker_cooldown, Duration::from_secs(30));

    let c = cfg(&[("FASTAPI_URL", "http://ai:8000")]).unwrap().ai;
    assert_eq!(
        c.primary,
        Some(UpstreamConfig::FastApi {
            url: "http://ai:8000".into()
        })
    );
    let c = cfg(&[
        ("AI_PROVIDER", "OpenAI"),
        ("OPENAI_MODEL", "llama3"),
        ("AI_SYSTEM_PROMPT", "Be brief."),
        ("AI_FALLBACK_FASTAPI_URL", "http://backup:8000"),
        ("AI_MAX_RETRIES", "0"),
        ("AI_BREAKER_FAILURES", "0"),
    ])
    .unwrap()
    .ai;
    assert_eq!(
        c.primary,
        Some(UpstreamConfig::OpenAi {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            model: "llama3".into(),
            system_prompt: Some("Be brief.".into()),
        })
    );
    assert_eq!(
        c.fallback.as_ref().map(UpstreamConfig::provider),
        Some("fastapi")
    );
    assert_eq!((c.max_retries, c.breaker_failures), (0, None));
    let c = cfg(&[
        ("FASTAPI_URL", "http://ai:8000"),
        ("AI_FALLBACK_PROVIDER", "openai"),
        ("AI_FALLBACK_OPENAI_BASE_URL", "http://localhost:11434/v1"),
        ("AI_FALLBACK_OPENAI_MODEL", "m"),
        ("AI_FALLBACK_OPENAI_API_KEY", "sk-fallback"),
    ])
    .unwrap()
    .ai;
    let Some(UpstreamConfig::OpenAi {
        base_url, api_key, ..
    }) = c.fallback
    else {
        panic!("an OpenAI fallback");
    };
    assert_eq!(base_url, "http://localhost:11434/v1");
    assert_eq!(api_key.unwrap().expose(), "sk-fallback");
}

#[test]
fn bad_ai_settings_say_which_variable() {
    for (pairs, names) in [
        (vec![("AI_PROVIDER", "anthropic")], "AI_PROVIDER"),
        (vec![("AI_PROVIDER", "openai")], "OPENAI_MODEL"),
        (vec![("AI_PROVIDER", "fastapi")], "FASTAPI_URL"),
        (
            vec![
                ("AI_PROVIDER", "openai"),
                ("OPENAI_MODEL", "m"),
                ("OPENAI_BASE_URL", "api.openai.com"),
            ],
            "OPENAI_BASE_URL",
        ),
        (vec![("AI_FALLBACK_FASTAPI_URL", "http://b")], "AI_FALLBACK"),
        (
            vec![
                ("FASTAPI_URL", "http://a"),
                ("AI_FALLBACK_PROVIDER", "openai"),
            ],
            "AI_FALLBACK_OPENAI_MODEL",
        ),
        (vec![("AI_MAX_RETRIES", "11")], "AI_MAX_RETRIES"),
        (vec![("AI_MAX_RETRIES", "-1")], "AI_MAX_RETRIES"),
        (vec![("AI_BREAKER_FAILURES", "x")], "AI_BREAKER_FAILURES"),
        (vec![("AI_BREAKER_COOLDOWN", "0")], "AI_BREAKER_COOLDOWN"),
        (vec![("AI_RETRY_BACKOFF", "soon")], "AI_RETRY_BACKOFF"),
    ] {
        let err = cfg(&pairs).unwrap_err().to_string();
        assert!(err.contains(names), "{pairs:?}: {err}");
    }
    let err = cfg(&[
        ("AI_PROVIDER", "openai"),
        ("OPENAI_MODEL", "m"),
        ("OPENAI_API_KEY", "sk-has space-s3cr3t"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("OPENAI_API_KEY") && !err.contains("s3cr3t"),
        "{err}"
    );
}

#[test]
fn connection_limits_have_defaults_and_zero_turns_one_off() {
    let c = cfg(&[]).unwrap().connections;
    assert_eq!(c.header_timeout, Some(Duration::from_secs(10)));
    assert_eq!(c.body_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.keepalive_timeout, Some(Duration::from_secs(75)));
    assert_eq!(c.max_idle, Some(1000));
    assert_eq!(c.unauth_per_ip, Some(1024));
    assert_eq!(c.fd_headroom, Some(256));

    let c = cfg(&[
        ("HTTP_HEADER_TIMEOUT", "1500ms"),
        ("HTTP_BODY_TIMEOUT", "0"),
        ("HTTP_KEEPALIVE_TIMEOUT", "2m"),
        ("HTTP_MAX_IDLE_CONNECTIONS", "0"),
        ("UNAUTH_CONNECTIONS_PER_IP", "3"),
        ("FD_HEADROOM", "0"),
    ])
    .unwrap()
    .connections;
    assert_eq!(c.header_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(c.body_timeout, None);
    assert_eq!(c.keepalive_timeout, Some(Duration::from_secs(120)));
    assert_eq!(c.max_idle, None);
    assert_eq!(c.unauth_per_ip, Some(3));
    assert_eq!(c.fd_headroom, None);
    for (k, v) in [
        ("HTTP_HEADER_TIMEOUT", "soon"),
        ("HTTP_BODY_TIMEOUT", "-1s"),
        ("UNAUTH_CONNECTIONS_PER_IP", "-1"),
        ("FD_HEADROOM", "lots"),
    ] {
        let err = cfg(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{err}");
    }
}

#[test]
fn token_lifetimes() {
    let c = cfg(&[("JWT_EXPIRES_IN", "90m")]).unwrap();
    assert_eq!(c.auth.token_lifetime.seconds(), 5400);
    assert_eq!(c.auth.token_lifetime.as_str(), "90m");
    for bad in ["forever", "0", "500ms"] {
        let err = cfg(&[("JWT_EXPIRES_IN", bad)]).unwrap_err().to_string();
        assert!(err.contains("JWT_EXPIRES_IN"), "{err}");
    }
}

#[test]
fn production_needs_a_long_secret() {
    let err = cfg(&[("NODE_ENV", "production")]).unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET"));
    let err = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", "short")]).unwrap_err();
    assert!(err.to_string().contains("at least 32"));
    assert!(
        !err.to_string().contains("short"),
        "the secret must not be echoed"
    );
    let ok = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", &"x".repeat(32))]).unwrap();
    assert!(!ok.auth.jwt_secret.generated);
    assert!(!format!("{ok:?}").contains("xxxxxxxx"));
}

#[test]
fn production_refuses_published_example_secrets() {
    const NODE_README: &str = "your-super-secret-jwt-key-here-change-in-production";
    for secret in [
        NODE_README,
        "YOUR-SUPER-SECRET-JWT-KEY-HERE-and-some-more-bytes",
    ] {
        for env in [("NODE_ENV", "production"), ("APP_ENV", "production")] {
            let err = cfg(&[env, ("JWT_SECRET", secret)]).unwrap_err();
            assert!(err.to_string().contains("published example"), "{err}");
            assert!(!err.to_string().contains(secret), "not echoed: {err}");
        }
    }
    // Development keeps accepting it, as the Node server's .env did.
    let dev = cfg(&[("NODE_ENV", "development"), ("JWT_SECRET", NODE_README)]).unwrap();
    assert_eq!(dev.auth.jwt_secret.bytes(), NODE_README.as_bytes());
}

#[test]
fn values_shown_in_an_env_example_are_placeholders() {
    let example = "# JWT_SECRET=\n# JWT_SECRET=example-secret-example-secret-0123\n\
                   JWT_SECRET_FILE=other\nJWT_SECRET = spaced-out-example-secret-012345\n";
    let values: Vec<&str> = example_values(example, "JWT_SECRET").collect();
    assert_eq!(
        values,
        [
            "example-secret-example-secret-0123",
            "spaced-out-example-secret-012345"
        ]
    );
    assert!(is_placeholder_secret(
        "example-secret-example-secret-0123",
        example
    ));
    assert!(!is_placeholder_secret("other", example));
    assert!(!is_placeholder_secret(&"q".repeat(40), example));
    // Whatever this project's .env.example shows is refused in production.
    for value in example_values(ENV_EXAMPLE, "JWT_SECRET") {
        let err = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", value)]).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
    }
}

#[test]
fn a_cors_origin_without_a_scheme_is_refused_in_every_environment() {
    for env in ["development", "production"] {
        let secret = "s".repeat(40);
        let err = cfg(&[
            ("APP_ENV", env),
            ("JWT_SECRET", &secret),
            ("CORS_ORIGIN", "https://ok.example.com, app.example.com/"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("CORS_ORIGIN"), "{err}");
        assert!(
            err.to_string().contains("write https://app.example.com"),
            "{err}"
        );
    }
    let ok = cfg(&[(
        "CORS_ORIGIN",
        "https://app.example.com, http://localhost:3000",
    )]);
    assert_eq!(ok.unwrap().server.cors_origins.unwrap().len(), 2);
    assert_eq!(
        cfg(&[("CORS_ORIGIN", " * ")]).unwrap().server.cors_origins,
        None
    );
}

#[test]
fn node_env_values_from_old_deployments_still_start() {
    let staging = cfg(&[("NODE_ENV", "staging"), ("JWT_SECRET", &"s".repeat(32))]).unwrap();
    assert_eq!(staging.server.env, AppEnv::Production);
    assert_eq!(
        cfg(&[("NODE_ENV", "test")]).unwrap().server.env,
        AppEnv::Development
    );
    let err = cfg(&[("APP_ENV", "staging")]).unwrap_err().to_string();
    assert!(err.contains("APP_ENV"), "{err}");
    assert!(cfg(&[("FASTAPI_URL", "http://ai.local/?x=1")]).is_err());
}

#[test]
fn app_env_wins_over_node_env() {
    let c = cfg(&[("APP_ENV", "development"), ("NODE_ENV", "production")]).unwrap();
    assert_eq!(c.server.env, AppEnv::Development);
}

#[test]
fn bad_values_are_reported_by_name() {
    for (k, v) in [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("HOST", "nowhere"),
        ("APP_ENV", "staging"),
        ("FASTAPI_URL", "localhost:8000"),
        ("MAX_MESSAGE_CHARS", "0"),
        ("SHUTDOWN_TIMEOUT", "soon"),
        ("SESSION_TTL", "0"),
        ("EVENT_LOG_LIMIT", "0"),
        ("GENERATION_LEASE", "forever"),
        ("REDIS_URL", "http://x"),
        ("STORE_CONNECT_TIMEOUT", "0"),
        ("AGENT_MAX_CONVERSATIONS", "0"),
        ("AGENT_MAX_CONVERSATIONS", "201"),
        ("HANDOFF_ASSIGN", "round-robin"),
        ("HANDOFF_HOURS", "Mon-Fri 9-17"),
        ("HANDOFF_HOURS", "weekdays 09:00-17:00"),
        ("HANDOFF_TIMEZONE", "Mars/Olympus"),
    ] {
        let err = cfg(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{err}");
    }
    let err = cfg(&[("MONGODB_URI", "postgres://user:hunter2@x")]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
    let err = cfg(&[("REDIS_URL", "http://:hunter2@x")]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn office_hours_are_read_in_their_time_zone() {
    let c = cfg(&[]).unwrap();
    assert!(c.sessions.handoff_hours.is_none(), "always open by default");
    let c = cfg(&[
        ("HANDOFF_HOURS", "Mon-Fri 09:00-17:30, Sat 10:00-14:00"),
        ("HANDOFF_TIMEZONE", "Europe/Berlin"),
    ])
    .unwrap();
    let hours = c.sessions.handoff_hours.unwrap();
    assert_eq!(hours.zone_name(), "Europe/Berlin");
    let err = cfg(&[
        ("HANDOFF_HOURS", "Mon-Fri 09:00-17:30"),
        ("HANDOFF_TIMEZONE", "CEST+2"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("invalid HANDOFF_TIMEZONE=\"CEST+2\""),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn redis_cluster_urls_are_a_list_of_redis_urls_and_exclude_redis_url() {
    let c = cfg(&[(
        "REDIS_CLUSTER_URLS",
        "redis://:s3cret@a:7000, rediss://b:7001,",
    )])
    .unwrap();
    assert_eq!(c.sessions.redis_cluster_urls.len(), 2);
    assert!(c.sessions.redis_url.is_none());
    let shown = c.sessions.redis().unwrap().to_string();
    assert!(
        shown.starts_with("Redis Cluster redis://:***@a:7000,"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    for bad in ["", " , ", "http://a:7000", "redis://a:7000,a:7001"] {
        let c = cfg(&[("REDIS_CLUSTER_URLS", bad)]);
        match c {
            Ok(c) if bad.trim().is_empty() => assert!(c.sessions.redis().is_none()),
            Ok(_) => panic!("accepted {bad:?}"),
            Err(e) => assert!(e.to_string().contains("REDIS_CLUSTER_URLS"), "{e}"),
        }
    }
    let both = cfg(&[
        ("REDIS_URL", "redis://a:6379"),
        ("REDIS_CLUSTER_URLS", "redis://b:7000"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("REDIS_URL") && both.contains("REDIS_CLUSTER_URLS") && !both.contains('\n'),
        "{both}"
    );
    let single = cfg(&[("REDIS_URL", "redis://a:6379")]).unwrap();
    assert!(matches!(
        single.sessions.redis(),
        Some(RedisUrls::Single(_))
    ));
}

#[test]
fn empty_values_count_as_unset_and_cors_lists_split() {
    let c = cfg(&[
        ("MONGODB_URI", ""),
        ("PORT", " "),
        ("CORS_ORIGIN", "http://a.test, http://b.test/"),
    ])
    .unwrap();
    assert!(c.storage.mongodb_uri.is_none());
    assert_eq!(c.server.port, 3001);
    assert_eq!(
        c.server.cors_origins,
        Some(vec!["http://a.test".to_owned(), "http://b.test".to_owned()])
    );
    assert_eq!(
        cfg(&[("CORS_ORIGIN", "*")]).unwrap().server.cors_origins,
        None
    );
}

#[test]
fn no_debug_or_display_of_the_config_shows_a_credential() {
    let c = cfg(&[
        ("APP_ENV", "production"),
        ("JWT_SECRET", "jwt-secret-that-is-long-enough-0123456789"),
        (
            "MONGODB_URI",
            "mongodb+srv://admin:m0ngo-pa55@cluster.example.net/chatbot?retryWrites=true",
        ),
        (
            "REDIS_URL",
            "rediss://default:r3dis-pa55@cache.example.net:6380/0",
        ),
        ("AI_PROVIDER", "openai"),
        ("OPENAI_MODEL", "gpt"),
        ("OPENAI_API_KEY", "sk-0pen41-k3y"),
        ("AI_FALLBACK_PROVIDER", "openai"),
        ("AI_FALLBACK_OPENAI_MODEL", "gpt"),
        ("AI_FALLBACK_OPENAI_API_KEY", "sk-fallb4ck-k3y"),
    ])
    .unwrap();
    let shown = [
        format!("{c:?}"),
        format!("{c:#?}"),
        c.storage.mongodb_uri.as_ref().unwrap().to_string(),
        c.sessions.redis_url.as_ref().unwrap().to_string(),
        c.auth.jwt_secret.to_string(),
    ]
    .join("\n");
    for secret in [
        "m0ngo-pa55",
        "r3dis-pa55",
        "jwt-secret-that",
        "0pen41-k3y",
        "fallb4ck-k3y",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    // What is not secret stays readable, so the operator can see which host.
    assert!(shown.contains("mongodb+srv://admin:***@cluster.example.net/chatbot"));
    assert!(shown.contains("rediss://default:***@cache.example.net:6380/0"));
    // The drivers still get the real thing.
    assert!(c
        .sessions
        .redis_url
        .unwrap()
        .expose()
        .contains("r3dis-pa55"));
}

#[test]
fn redaction_covers_odd_urls() {
    let url = |s: &str| SecretUrl(s.to_owned()).redacted();
    assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(url("redis://:p@ss@h:1/0"), "redis://:***@h:1/0");
    assert_eq!(
        url("mongodb://u:pw@h1:27017,h2:27017/db?authSource=admin&password=x"),
        "mongodb://u:***@h1:27017,h2:27017/db?authSource=admin&password=***"
    );
    assert_eq!(url("mongodb://user@h/db"), "mongodb://user@h/db");
}

/// One declaration per variable: a name twice in the table (as two flags,
/// or as a flag and a secret) would give one setting two defaults or make a
/// secret a flag.
#[test]
fn the_settings_table_names_each_variable_once() {
    let mut seen = std::collections::BTreeSet::new();
    let names = settings::FLAG_SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(SECRET_SETTINGS.iter().copied());
    for name in names {
        assert!(seen.insert(name), "{name} is declared twice");
    }
    assert!(seen.len() > 60, "{seen:?}");
}
