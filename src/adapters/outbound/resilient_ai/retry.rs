//! When a chat's failed attempt is worth another: only failures before the
//! upstream began to answer (no connection, 502/503/504, 429), only so many,
//! and only while the wait (jittered backoff, or the upstream's own
//! `Retry-After`) still ends within the first-token deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::application::ports::AiError;

/// No backoff grows past this, however many retries are allowed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many retries, how far apart, within how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first, per chat and upstream.
    pub max_retries: u32,
    /// The wait before the first retry; each next one doubles it (at most
    /// [`MAX_BACKOFF`]), and each is jittered into its upper half.
    pub backoff: Duration,
    /// From the first attempt, how long retries may go on: the first-token
    /// deadline (`AI_FIRST_TOKEN_TIMEOUT`).
    pub budget: Duration,
}

/// A failed attempt, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Failed<'a> {
    pub error: &'a AiError,
    /// True when the stream had opened (the failure was its first item):
    /// the upstream took the request, so it is never sent again.
    pub opened: bool,
    /// Retries already made for this chat.
    pub retries: u32,
}

impl RetryPolicy {
    /// How long to wait before retrying, or `None` to give up. `jitter` is
    /// uniform in `[0, 1)`; `deadline` is the first attempt's start plus the
    /// budget.
    pub fn wait(
        &self,
        failed: Failed<'_>,
        now: Instant,
        deadline: Instant,
        jitter: f64,
    ) -> Option<Duration> {
        if failed.opened || failed.retries >= self.max_retries {
            return None;
        }
        let asked = match failed.error {
            AiError::Unavailable(_) => None,
            AiError::Status {
                status: 502..=504 | 429,
                retry_after,
            } => *retry_after,
            _ => return None,
        };
        let wait = self
            .backoff(failed.retries, jitter)
            .max(asked.unwrap_or_default());
        (now + wait < deadline).then_some(wait)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// chats that failed together do not come back together.
    fn backoff(&self, retries: u32, jitter: f64) -> Duration {
        let full = self
            .backoff
            .saturating_mul(1u32.checked_shl(retries).unwrap_or(u32::MAX))
            .min(MAX_BACKOFF);
        full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 2,
        backoff: Duration::from_millis(200),
        budget: Duration::from_secs(30),
    };

    fn status(status: u16, retry_after: Option<u64>) -> AiError {
        AiError::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn wait(error: &AiError, opened: bool, retries: u32) -> Option<Duration> {
        let now = Instant::now();
        POLICY.wait(
            Failed {
                error,
                opened,
                retries,
            },
            now,
            now + POLICY.budget,
            0.5,
        )
    }

    #[tokio::test]
    async fn only_failures_before_an_answer_are_retried() {
        let refused = AiError::Unavailable("connection refused".into());
        assert!(wait(&refused, false, 0).is_some());
        for code in [502, 503, 504, 429] {
            assert!(wait(&status(code, None), false, 0).is_some(), "{code}");
        }
        for code in [400, 401, 404, 408, 500, 501] {
            assert_eq!(wait(&status(code, None), false, 0), None, "{code}");
        }
        for error in [
            AiError::Timeout("slow".into()),
            AiError::Protocol("bad".into()),
            AiError::Rejected("text/html".into()),
            AiError::CircuitOpen,
        ] {
            assert_eq!(wait(&error, false, 0), None, "{error:?}");
        }
        // A stream that opened is never asked for again.
        assert_eq!(wait(&refused, true, 0), None);
        assert_eq!(wait(&status(503, None), true, 0), None);
    }

    #[tokio::test]
    async fn at_most_max_retries() {
        let e = status(503, None);
        assert!(wait(&e, false, 1).is_some());
        assert_eq!(wait(&e, false, 2), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half_and_is_capped() {
        let ms = |retries, jitter| POLICY.backoff(retries, jitter).as_millis();
        assert_eq!((ms(0, 0.0), ms(0, 0.999_999)), (100, 199));
        assert_eq!((ms(1, 0.0), ms(1, 0.5)), (200, 300));
        assert_eq!((ms(2, 0.0), ms(2, 1.0)), (400, 800));
        assert_eq!(ms(10, 1.0), 5000);
        assert_eq!(ms(40, 1.0), 5000);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_within_the_deadline() {
        // Longer than the backoff: the upstream's word wins.
        assert_eq!(
            wait(&status(429, Some(3)), false, 0),
            Some(Duration::from_secs(3))
        );
        // Past the first-token deadline: give up at once.
        assert_eq!(wait(&status(429, Some(31)), false, 0), None);
        assert_eq!(wait(&status(503, Some(30)), false, 0), None);
        // Shorter than the backoff: the backoff stands.
        assert_eq!(
            wait(&status(503, Some(0)), false, 1),
            Some(Duration::from_millis(300))
        );
    }

    #[tokio::test]
    async fn no_wait_may_end_past_the_deadline() {
        let now = Instant::now();
        let e = AiError::Unavailable("refused".into());
        let failed = Failed {
            error: &e,
            opened: false,
            retries: 0,
        };
        let deadline = now + Duration::from_millis(150);
        assert_eq!(
            POLICY.wait(failed, now, deadline, 0.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(POLICY.wait(failed, now, deadline, 0.6), None);
    }
}
