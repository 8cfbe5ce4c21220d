//! An agent's canned replies: reusable answers the console inserts when the
//! agent types `/` and a reply's shortcut. Each agent keeps their own, at
//! most [`MAX_REPLIES`], each bounded in size.

use thiserror::Error;

/// Most replies one agent keeps.
pub const MAX_REPLIES: usize = 100;
/// Longest shortcut, in characters.
pub const SHORTCUT_MAX_CHARS: usize = 32;
/// Longest reply, in characters.
pub const REPLY_MAX_CHARS: usize = 2000;

/// Why a reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CannedReplyError {
    #[error("'shortcut' must be 1-32 characters of lowercase letters, digits, '_' or '-'")]
    Shortcut,
    #[error("'content' must be 1-2000 characters and not blank")]
    Content,
}

/// What follows the `/`: lowercase letters, digits, `_` and `-`, as typed
/// after a slash in a message box.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shortcut(String);

impl Shortcut {
    /// A shortcut as typed; a leading `/` is allowed and dropped.
    pub fn parse(raw: &str) -> Result<Self, CannedReplyError> {
        let s = raw.trim().trim_start_matches('/');
        let ok = !s.is_empty()
            && s.chars().count() <= SHORTCUT_MAX_CHARS
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CannedReplyError::Shortcut)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reusable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedReply {
    pub shortcut: Shortcut,
    content: String,
}

impl CannedReply {
    pub fn parse(shortcut: &str, content: &str) -> Result<Self, CannedReplyError> {
        let shortcut = Shortcut::parse(shortcut)?;
        if content.trim().is_empty() || content.chars().count() > REPLY_MAX_CHARS {
            return Err(CannedReplyError::Content);
        }
        Ok(Self {
            shortcut,
            content: content.to_owned(),
        })
    }

    pub fn content(&self) -> &str {
        &self.content
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_are_what_follows_a_slash() {
        assert_eq!(Shortcut::parse("/thanks").unwrap().as_str(), "thanks");
        assert_eq!(
            Shortcut::parse("refund-2_x").unwrap().as_str(),
            "refund-2_x"
        );
        for bad in ["", "/", "Thanks", "two words", "é", &"a".repeat(33)] {
            assert_eq!(
                Shortcut::parse(bad),
                Err(CannedReplyError::Shortcut),
                "{bad}"
            );
        }
        assert!(Shortcut::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn replies_are_bounded_and_never_blank() {
        assert_eq!(
            CannedReply::parse("hi", "Hello!").unwrap().content(),
            "Hello!"
        );
        assert_eq!(
            CannedReply::parse("hi", " \n"),
            Err(CannedReplyError::Content)
        );
        assert_eq!(
            CannedReply::parse("hi", &"x".repeat(REPLY_MAX_CHARS + 1)),
            Err(CannedReplyError::Content)
        );
        assert!(CannedReply::parse("hi", &"é".repeat(REPLY_MAX_CHARS)).is_ok());
    }
}
