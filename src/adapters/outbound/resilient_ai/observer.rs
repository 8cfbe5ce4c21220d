//! What the resilience decorators report as they work: each attempt's
//! outcome, each skip and each breaker move, for a metrics adapter to count.
//!
//! It lives beside the decorators rather than among the application's ports
//! because only adapters speak it: the decorators call it and the Prometheus
//! adapter implements it; no use case ever names it.

use crate::application::ports::CircuitState;

/// What became of one request to an upstream, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The first token arrived (or a complete, empty answer).
    Ok,
    /// No connection, or it closed before the response headers.
    Refused,
    /// A non-success HTTP status.
    Status(u16),
    /// The connect or first-token timeout.
    Timeout,
    /// The upstream reported an error in its stream before the first token.
    Reported,
    /// No event stream, a malformed event, or an end before the first token.
    Protocol,
}

impl AttemptOutcome {
    /// A label for a metric: `ok`, `refused`, `status_4xx`, `status_429`,
    /// `status_5xx`, `timeout`, `reported` or `protocol_error`.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Refused => "refused",
            AttemptOutcome::Status(429) => "status_429",
            AttemptOutcome::Status(s) if (400..500).contains(&s) => "status_4xx",
            AttemptOutcome::Status(_) => "status_5xx",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Reported => "reported",
            AttemptOutcome::Protocol => "protocol_error",
        }
    }
}

/// Hears what the resilience decorators do, so it can be counted. Called on
/// the chat's path: implementations must be quick and must not block.
///
/// # Errors
/// None: observing never fails.
pub trait UpstreamObserver: Send + Sync {
    /// One request to the `role` upstream ended as `outcome`; `retried` says
    /// another attempt follows for the same chat.
    fn attempt(&self, role: &'static str, outcome: AttemptOutcome, retried: bool) {
        let _ = (role, outcome, retried);
    }
    /// A chat skipped the `role` upstream because its breaker is open.
    fn skipped(&self, role: &'static str) {
        let _ = role;
    }
    /// The `role` upstream's breaker moved to `state`.
    fn circuit_changed(&self, role: &'static str, state: CircuitState) {
        let _ = (role, state);
    }
}

/// An observer that ignores everything (until a metrics adapter listens).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl UpstreamObserver for NoObserver {}
