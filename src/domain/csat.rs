//! Customer satisfaction (CSAT): after an agent resolves a conversation the
//! customer is asked how it went, and may answer 1 to 5 with a comment within
//! [`CSAT_WINDOW`]; answering again replaces the earlier answer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::agent::AgentRef;
use super::chat::SessionId;
use super::feedback::{FeedbackComment, FeedbackError, COMMENT_MAX_CHARS};
use super::user::UserId;

/// How long after the request an answer is taken.
pub const CSAT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Why an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CsatError {
    #[error("'rating' must be a whole number from 1 to 5")]
    Rating,
    #[error("'comment' must be at most {max} characters")]
    CommentTooLong { max: usize },
}

/// 1 (very unhappy) to 5 (very happy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CsatRating(u8);

impl CsatRating {
    pub fn parse(raw: i64) -> Result<Self, CsatError> {
        match u8::try_from(raw) {
            Ok(n @ 1..=5) => Ok(Self(n)),
            _ => Err(CsatError::Rating),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A customer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csat {
    pub rating: CsatRating,
    pub comment: Option<FeedbackComment>,
}

impl Csat {
    /// An answer as a client or a store spelled it (a blank comment is none).
    pub fn parse(rating: i64, comment: Option<&str>) -> Result<Self, CsatError> {
        let comment = comment
            .map(FeedbackComment::parse)
            .transpose()
            .map_err(|e| match e {
                FeedbackError::CommentTooLong { max } => CsatError::CommentTooLong { max },
                FeedbackError::Rating => CsatError::CommentTooLong {
                    max: COMMENT_MAX_CHARS,
                },
            })?
            .flatten();
        Ok(Self {
            rating: CsatRating::parse(rating)?,
            comment,
        })
    }
}

/// A conversation's satisfaction record, kept with its transcript: who
/// resolved it and when the customer was asked, and their answer, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsatRecord {
    pub session: SessionId,
    /// The customer.
    pub user: UserId,
    /// The agent who resolved the conversation.
    pub agent: AgentRef,
    pub requested_at: DateTime<Utc>,
    /// The latest answer and when it was given.
    pub answer: Option<(Csat, DateTime<Utc>)>,
}

impl CsatRecord {
    /// The earliest request an answer given at `now` may still answer.
    pub fn open_since(now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(CSAT_WINDOW).unwrap_or(chrono::Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_are_one_to_five_and_comments_are_bounded() {
        for ok in 1..=5 {
            assert_eq!(CsatRating::parse(ok).unwrap().get() as i64, ok);
        }
        for bad in [0, 6, -1, 256, i64::MAX] {
            assert_eq!(CsatRating::parse(bad), Err(CsatError::Rating), "{bad}");
        }
        assert_eq!(Csat::parse(4, Some("  ")).unwrap().comment, None);
        assert_eq!(
            Csat::parse(4, Some(&"x".repeat(COMMENT_MAX_CHARS + 1))),
            Err(CsatError::CommentTooLong {
                max: COMMENT_MAX_CHARS
            })
        );
        let open = CsatRecord::open_since(DateTime::from_timestamp(100_000, 0).unwrap());
        assert_eq!(open.timestamp(), 100_000 - 86_400);
    }
}
