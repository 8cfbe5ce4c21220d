//! What every store port reports when its store fails: the one payload the
//! store errors share, so each adapter says "the store failed" the same way.

use thiserror::Error;

/// The underlying cause of a port failure, kept for the logs: the driver's own
/// error (with its chain of sources) wherever the driver gave one. Ports cannot
/// name driver types without depending on the drivers, hence the box.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store did not answer, or answered with something unusable. For logs
/// only; it never reaches a client.
///
/// Each port's error wraps it under its own name (`user store unavailable`,
/// `conversation store unavailable`, ...), so a log line read through
/// [`ErrorChain`](crate::error_chain::ErrorChain) says which store, what was
/// being done, and the driver's words: `user store unavailable: ping: refused`.
#[derive(Debug, Error)]
#[error("{context}")]
pub struct StoreFailure {
    /// What was being done, in the adapter's words.
    pub context: String,
    /// The driver's error; `None` when there was none (a malformed record,
    /// an unexpected reply, a timeout).
    #[source]
    pub source: Option<Cause>,
}

impl StoreFailure {
    /// The store failed while doing `context`; `source` is the driver's error.
    pub fn new(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error: the store answered with data
    /// nothing can be made of, or did not answer in time.
    pub fn bare(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::UserStoreError;
    use super::*;
    use crate::error_chain::ErrorChain;

    #[test]
    fn the_chain_keeps_the_drivers_words() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let e = UserStoreError::from(StoreFailure::new("sqlite statement failed", io));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "user store unavailable: sqlite statement failed: refused by peer"
        );
    }
}
