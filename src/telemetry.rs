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

/// Shows an error with every cause behind it (`a: b: c`), so a log line keeps
/// the driver's own words that a port error carries as its source.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::UserStoreError;

    #[test]
    fn the_chain_keeps_the_drivers_words() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let e = UserStoreError::unavailable("sqlite statement failed", io);
        assert_eq!(
            ErrorChain(&e).to_string(),
            "user store unavailable: sqlite statement failed: refused by peer"
        );
    }
}
