//! The transcript: every message of a conversation (the user's chats, the
//! assistant's answers, the agents' replies), kept for good or until its
//! retention ends, long after the AI's 10-message context and the event log
//! have let it go.
//!
//! Entries are ordered by when they were said, then by their `seq` in the
//! conversation's log; a [`TranscriptCursor`] is a position in that order.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use thiserror::Error;

use super::chat::{MessageId, SessionId, StreamStatus};
use super::conversation::Seq;
use super::feedback::Feedback;
use super::handoff::AgentRef;
use super::user::UserId;

/// Who said a transcript entry, with what only that speaker has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// The customer whose conversation it is.
    User,
    /// The AI. `ending` says whether the answer completed; a stopped or
    /// failed answer keeps what had been delivered before it ended.
    Assistant { ending: StreamStatus },
    /// A human agent.
    Agent(AgentRef),
}

impl Speaker {
    /// The role's wire name: `user`, `assistant` or `agent`.
    pub fn role(&self) -> TranscriptRole {
        match self {
            Speaker::User => TranscriptRole::User,
            Speaker::Assistant { .. } => TranscriptRole::Assistant,
            Speaker::Agent(_) => TranscriptRole::Agent,
        }
    }
}

/// The role of an entry, as stores and clients spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptRole {
    User,
    Assistant,
    Agent,
}

/// A stored role that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a transcript role is user, assistant or agent")]
pub struct RoleError;

impl TranscriptRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptRole::User => "user",
            TranscriptRole::Assistant => "assistant",
            TranscriptRole::Agent => "agent",
        }
    }

    /// Reads a role a store wrote.
    pub fn parse(raw: &str) -> Result<Self, RoleError> {
        match raw {
            "user" => Ok(TranscriptRole::User),
            "assistant" => Ok(TranscriptRole::Assistant),
            "agent" => Ok(TranscriptRole::Agent),
            _ => Err(RoleError),
        }
    }
}

/// One message of a conversation, as the transcript keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    pub session: SessionId,
    /// The customer whose conversation it is: who may read and erase it
    /// once the session itself has expired.
    pub owner: UserId,
    /// The id its event carried (`user-message`, the answer's stream, or
    /// `agent-message`): unique, so recording it twice keeps one entry.
    pub message_id: MessageId,
    pub speaker: Speaker,
    pub content: String,
    /// Its event's seq in the conversation's log (an answer's: its `stream-start`).
    pub seq: Seq,
    /// When it was said, to the millisecond every store keeps.
    pub at: DateTime<Utc>,
    /// The user's rating of an answer (assistant entries only), the latest
    /// one given.
    pub feedback: Option<Feedback>,
    /// An answer the user asked to regenerate: it stays in the transcript
    /// but no longer in the AI's context.
    pub superseded: bool,
}

impl TranscriptEntry {
    /// An entry said at `at`, which is kept to the millisecond.
    pub fn new(
        session: SessionId,
        owner: UserId,
        message_id: MessageId,
        speaker: Speaker,
        content: String,
        seq: Seq,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            session,
            owner,
            message_id,
            speaker,
            content,
            seq,
            at: at.trunc_subsecs(3),
            feedback: None,
            superseded: false,
        }
    }

    /// Where this entry stands in its transcript.
    pub fn position(&self) -> TranscriptCursor {
        TranscriptCursor {
            at_ms: self.at.timestamp_millis(),
            seq: self.seq,
        }
    }
}

/// A position in a transcript: entries are ordered by time (milliseconds),
/// then seq. Clients see it as `<millis>-<seq>` and pass it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TranscriptCursor {
    pub at_ms: i64,
    pub seq: Seq,
}

/// A cursor a client sent that this server never issued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("'before' must be a cursor this server returned as 'next'")]
pub struct CursorError;

impl TranscriptCursor {
    /// Reads `<millis>-<seq>`, both unsigned whole numbers that fit the
    /// stores' 64-bit integers.
    pub fn parse(raw: &str) -> Result<Self, CursorError> {
        let (at, seq) = raw.split_once('-').ok_or(CursorError)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(at) || !digits(seq) {
            return Err(CursorError);
        }
        let at_ms: i64 = at.parse().map_err(|_| CursorError)?;
        let seq: i64 = seq.parse().map_err(|_| CursorError)?;
        Ok(Self {
            at_ms,
            seq: Seq::try_from(seq).map_err(|_| CursorError)?,
        })
    }
}

impl fmt::Display for TranscriptCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.at_ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_was_never_issued() {
        let c = TranscriptCursor {
            at_ms: 1_760_000_000_123,
            seq: 42,
        };
        assert_eq!(c.to_string(), "1760000000123-42");
        assert_eq!(TranscriptCursor::parse("1760000000123-42"), Ok(c));
        assert_eq!(
            TranscriptCursor::parse("0-0"),
            Ok(TranscriptCursor { at_ms: 0, seq: 0 })
        );
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1--2",
            "1-2-3",
            "a-1",
            "1-b",
            " 1-2",
            "+1-2",
            "1-+2",
            "1.5-2",
            "99999999999999999999-1",
            "1-9223372036854775808",
        ] {
            assert_eq!(TranscriptCursor::parse(bad), Err(CursorError), "{bad:?}");
        }
        assert!(TranscriptCursor::parse("9223372036854775807-9223372036854775807").is_ok());
    }

    #[test]
    fn cursors_order_by_time_then_seq() {
        let a = TranscriptCursor { at_ms: 1, seq: 9 };
        let b = TranscriptCursor { at_ms: 2, seq: 1 };
        let c = TranscriptCursor { at_ms: 2, seq: 2 };
        assert!(a < b && b < c);
    }

    #[test]
    fn roles_have_one_spelling() {
        for role in [
            TranscriptRole::User,
            TranscriptRole::Assistant,
            TranscriptRole::Agent,
        ] {
            assert_eq!(TranscriptRole::parse(role.as_str()), Ok(role));
        }
        assert_eq!(TranscriptRole::parse("User"), Err(RoleError));
        assert_eq!(TranscriptRole::parse("system"), Err(RoleError));
    }

    #[test]
    fn entries_keep_milliseconds_and_know_their_position() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678912Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = TranscriptEntry::new(
            SessionId::parse("sess_a").unwrap(),
            UserId::parse("u1").unwrap(),
            MessageId::parse("msg_a").unwrap(),
            Speaker::Assistant {
                ending: StreamStatus::Cancelled,
            },
            "partial".into(),
            7,
            at,
        );
        assert_eq!(e.at.timestamp_subsec_micros(), 678_000);
        assert_eq!(e.speaker.role(), TranscriptRole::Assistant);
        assert_eq!(
            e.position(),
            TranscriptCursor {
                at_ms: at.timestamp_millis(),
                seq: 7
            }
        );
    }
}
