//! What a user thinks of an answer: thumbs up or down, and an optional
//! comment. One rating per answer; rating again replaces it.

use thiserror::Error;

/// Longest comment accepted, in characters (Unicode scalar values).
pub const COMMENT_MAX_CHARS: usize = 1000;

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rating {
    Up,
    Down,
}

/// Why feedback was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeedbackError {
    #[error("'rating' must be 'up' or 'down'")]
    Rating,
    #[error("'comment' must be at most {max} characters")]
    CommentTooLong { max: usize },
}

impl Rating {
    /// The wire (and stored) name: `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FeedbackError> {
        match raw {
            "up" => Ok(Rating::Up),
            "down" => Ok(Rating::Down),
            _ => Err(FeedbackError::Rating),
        }
    }
}

/// A comment on an answer: at most [`COMMENT_MAX_CHARS`] characters, never
/// blank (a blank comment is no comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackComment(String);

impl FeedbackComment {
    /// `None` for a comment with nothing but whitespace in it.
    pub fn parse(raw: &str) -> Result<Option<Self>, FeedbackError> {
        if raw.chars().count() > COMMENT_MAX_CHARS {
            return Err(FeedbackError::CommentTooLong {
                max: COMMENT_MAX_CHARS,
            });
        }
        if raw.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's rating of one answer, with what they said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub rating: Rating,
    pub comment: Option<FeedbackComment>,
}

impl Feedback {
    /// Feedback as a client or a store spelled it.
    pub fn parse(rating: &str, comment: Option<&str>) -> Result<Self, FeedbackError> {
        Ok(Self {
            rating: Rating::parse(rating)?,
            comment: comment.map(FeedbackComment::parse).transpose()?.flatten(),
        })
    }

    pub fn comment(&self) -> Option<&str> {
        self.comment.as_ref().map(FeedbackComment::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_have_one_spelling() {
        for r in [Rating::Up, Rating::Down] {
            assert_eq!(Rating::parse(r.as_str()), Ok(r));
        }
        for bad in ["Up", "", "thumbs", "1"] {
            assert_eq!(Rating::parse(bad), Err(FeedbackError::Rating), "{bad}");
        }
    }

    #[test]
    fn comments_are_bounded_in_characters_and_blank_is_none() {
        let longest = "é".repeat(COMMENT_MAX_CHARS);
        let kept = Feedback::parse("down", Some(&longest)).unwrap();
        assert_eq!(kept.comment(), Some(longest.as_str()));
        assert_eq!(
            Feedback::parse("down", Some(&format!("{longest}x"))),
            Err(FeedbackError::CommentTooLong {
                max: COMMENT_MAX_CHARS
            })
        );
        assert_eq!(Feedback::parse("up", Some("  \n")).unwrap().comment, None);
        assert_eq!(Feedback::parse("up", None).unwrap().comment, None);
        assert_eq!(
            Feedback::parse("sideways", Some("x")),
            Err(FeedbackError::Rating)
        );
    }
}
