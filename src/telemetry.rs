//! Logging set-up: readable lines in development, JSON in production.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::AppEnv;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info`.
pub fn init(env: AppEnv) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match env {
        AppEnv::Production => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        AppEnv::Development => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = result;
}
