//! The stats port: what the use cases and the HTTP layer count, for
//! `/api/stats` and the Prometheus exposition.

/// Counters since start-up, as one response reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub active_connections: u64,
    pub total_connections: u64,
    pub total_messages: u64,
}

/// How one generation ended, for counting: `outcome` is `completed`,
/// `cancelled`, `failed`, or `lost_lease` (another instance ended it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationReport {
    pub outcome: &'static str,
    /// From the start of the generation to its first token, if one came.
    pub first_token: Option<std::time::Duration>,
    pub duration: std::time::Duration,
    /// Text deltas streamed to the conversation.
    pub tokens: u64,
}

/// Every store a failure is counted for (`Stats::store_error`), so the
/// metrics can show each at zero from start-up.
pub const STORES: &[&str] = &[
    "users",
    "sessions",
    "conversations",
    "transcripts",
    "usage",
    "access",
    "limiter",
];

/// Where the use cases (and the inbound adapters, for HTTP) count what
/// happens: in-process counters for `/api/stats` and the Prometheus
/// exposition behind `/metrics`. Called on hot paths, so methods are
/// synchronous and must not block.
///
/// Every label a method takes is one of a fixed set named by the caller
/// (`&'static str`), so no client can grow the number of series.
///
/// # Errors
/// None: counting never fails. An adapter whose backend is unreachable drops
/// the count rather than slowing a connection down.
#[cfg_attr(test, mockall::automock)]
pub trait Stats: Send + Sync {
    /// A client connection was accepted.
    fn connection_opened(&self);
    /// A connection counted by `connection_opened` ended (exactly once each),
    /// for `reason` (`client_closed`, `ping_timeout`, `shutting_down`, ...).
    fn connection_closed(&self, reason: &'static str);
    /// A chat message was accepted for generation.
    fn message_received(&self);
    fn snapshot(&self) -> StatsSnapshot;
    /// A generation ended.
    fn generation_ended(&self, report: &GenerationReport) {
        let _ = report;
    }
    /// An HTTP request was answered; `route` is the route's template.
    fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let _ = (method, route, status, elapsed);
    }
    /// A login attempt ended as `outcome` (`success`, `bad_credentials`,
    /// `throttled` by a login limit, `busy`, `error`).
    fn login(&self, outcome: &'static str) {
        let _ = outcome;
    }
    /// A request was refused by the abuse limit `limit`.
    fn rate_limited(&self, limit: &'static str) {
        let _ = limit;
    }
    /// A store failed: one of [`STORES`].
    fn store_error(&self, store: &'static str) {
        let _ = store;
    }
    /// Everything counted, in the Prometheus text exposition format; `None`
    /// from an adapter that keeps only the snapshot.
    fn exposition(&self) -> Option<String> {
        None
    }
    /// A handoff reached `outcome` (`queued`, `claimed`, `released`,
    /// `resolved`, `cancelled`, `timeout`, `agent_away`; `unavailable` when
    /// nobody was online to take it, `not_offered` when handoff is not in use).
    fn handoff(&self, outcome: &'static str) {
        let _ = outcome;
    }
    /// How long a conversation waited in the queue before it left it, by
    /// `outcome` (`claimed`, `auto`, `cancelled`, `timeout`, `closed`).
    fn handoff_wait(&self, outcome: &'static str, waited: std::time::Duration) {
        let _ = (outcome, waited);
    }
    /// Auto-assignment gave a conversation to an agent.
    fn handoff_auto_assigned(&self) {}
    /// A user rated an answer (`up` or `down`); a changed rating counts again.
    fn feedback(&self, rating: &'static str) {
        let _ = rating;
    }
    /// A customer said how a resolved conversation went, 1 to 5; a changed
    /// answer counts again.
    fn csat(&self, rating: u8) {
        let _ = rating;
    }
    /// How many conversations wait in the queue now.
    fn handoff_queue_length(&self, queued: u64) {
        let _ = queued;
    }
    /// An answer cost `count` tokens of `kind` (`prompt`, `completion`,
    /// `reasoning`), as the upstream said or `estimated` here.
    fn tokens(&self, kind: &'static str, estimated: bool, count: u64) {
        let _ = (kind, estimated, count);
    }
    /// A chat was refused because its user's token budget is used up.
    fn budget_exhausted(&self) {}
}
