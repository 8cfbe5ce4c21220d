//! How every Redis adapter keeps its connection: bounded timeouts and a
//! reconnect policy that fails a request fast while Redis is down.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

/// How long start-up waits for the first PING to be answered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Per-command bound, so a stuck Redis fails a request instead of hanging it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The driver's default, six reconnect attempts with exponential backoff,
/// keeps every command waiting ~9.5 s while Redis is down. One quick retry
/// fails a request within a couple of seconds instead; the next request tries
/// to reconnect again, so service resumes as soon as Redis answers.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}
