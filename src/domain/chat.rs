//! Chat sessions, messages and the rules about history that every store obeys.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::id::is_valid_id;
use super::user::{UserId, Username};

/// How many past messages a session keeps, and so how many the AI sees as context.
pub const HISTORY_LIMIT: usize = 10;

/// Why a raw identifier (session or message id) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("identifier must be 1-64 characters of letters, digits, '_' or '-'")]
pub struct IdError;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: an id is cloned into every event, log entry and
        /// subscription that mentions it, so a clone is a reference count.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// A fresh random id, e.g. `
            #[doc = $prefix]
            /// 3f2a...`.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::new_v4().simple()).into())
            }

            /// Accepts an id that came back from a client or a store.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                if is_valid_id(raw) {
                    Ok(Self(raw.into()))
                } else {
                    Err(IdError)
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// Identifies one assistant reply across its stream-start, tokens and stream-end.
    MessageId,
    "msg_"
);
id_newtype!(
    /// Identifies a chat session; a client may reconnect to it later.
    SessionId,
    "sess_"
);

/// Why a chat message's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContentError {
    #[error("content must not be blank")]
    Blank,
    #[error("content must be at most {max} characters")]
    TooLong { max: usize },
}

/// The text of a user's chat message: not blank, at most the configured length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatContent(String);

impl ChatContent {
    /// `max_chars` counts Unicode scalar values, the way a person counts letters.
    /// Content that shows nothing (whitespace, control and invisible
    /// formatting characters only, such as `"\u{200b}"`) is blank: the AI
    /// would be asked nothing, and the user would see an empty bubble.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ContentError> {
        if raw.chars().all(is_invisible) {
            return Err(ContentError::Blank);
        }
        if raw.chars().count() > max_chars {
            return Err(ContentError::TooLong { max: max_chars });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether `c` shows nothing on its own: whitespace, a control character, or
/// one of the invisible format characters (zero-width spaces and joiners,
/// direction marks, the byte-order mark, fillers) people paste by accident.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
        )
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    pub timestamp: DateTime<Utc>,
    /// The id of the event that said it (`user-message`, the answer's
    /// stream, `agent-message`); `None` in histories stored before ids were
    /// kept.
    pub message_id: Option<MessageId>,
}

/// The last question of a session, as answering it again needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastQuestion {
    /// The user's message: what the new answer replies to.
    pub message_id: MessageId,
    pub query: String,
    /// The history before it: the context its first answer had.
    pub context: Vec<ChatMessage>,
}

/// The part of a user a session needs: enough to address the AI and to greet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub id: UserId,
    pub username: Username,
}

/// A chat session: who it belongs to, the last [`HISTORY_LIMIT`] messages and
/// when it was used.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub user: SessionUser,
    pub history: Vec<ChatMessage>,
    pub created_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    pub escalated: bool,
}

impl Session {
    pub fn new(id: SessionId, user: SessionUser, now: DateTime<Utc>) -> Self {
        Self {
            id,
            user,
            history: Vec::new(),
            created_at: now,
            last_activity: now,
            escalated: false,
        }
    }

    /// Appends a message and forgets the oldest ones beyond [`HISTORY_LIMIT`].
    /// Stores call this so that every adapter trims the same way.
    pub fn push_message(&mut self, message: ChatMessage) {
        self.last_activity = message.timestamp.max(self.last_activity);
        self.history.push(message);
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }

    /// The last user message of the history (one with an id) and what came
    /// before it; `None` when the history holds none.
    pub fn last_question(&self) -> Option<LastQuestion> {
        let at = self
            .history
            .iter()
            .rposition(|m| m.role == Role::User && m.message_id.is_some())?;
        let asked = &self.history[at];
        Some(LastQuestion {
            message_id: asked.message_id.clone()?,
            query: asked.content.clone(),
            context: self.history[..at].to_vec(),
        })
    }

    /// Forgets every message after `message_id` (the answers to it, when it
    /// is asked again); false, changing nothing, when the history does not
    /// hold it. Stores call this so every adapter forgets the same way.
    pub fn forget_after(&mut self, message_id: &MessageId) -> bool {
        let Some(at) = self
            .history
            .iter()
            .rposition(|m| m.message_id.as_ref() == Some(message_id))
        else {
            return false;
        };
        self.history.truncate(at + 1);
        true
    }
}

/// How a generation ended; every `stream-start` is closed by exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Completed,
    Failed,
    Cancelled,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Completed => "completed",
            StreamStatus::Failed => "failed",
            StreamStatus::Cancelled => "cancelled",
        }
    }

    /// Reads a status a store wrote with [`StreamStatus::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        [
            StreamStatus::Completed,
            StreamStatus::Failed,
            StreamStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> SessionUser {
        SessionUser {
            id: UserId::parse("u1").unwrap(),
            username: Username::parse("alice").unwrap(),
        }
    }

    #[test]
    fn history_keeps_only_the_last_ten_in_order() {
        let now = Utc::now();
        let mut s = Session::new(SessionId::generate(), user(), now);
        for i in 0..25 {
            s.push_message(ChatMessage {
                role: if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                content: format!("m{i}"),
                timestamp: now,
                message_id: Some(MessageId::generate()),
            });
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        let contents: Vec<_> = s.history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents.first(), Some(&"m15"));
        assert_eq!(contents.last(), Some(&"m24"));
    }

    fn said(role: Role, content: &str, id: Option<&str>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            timestamp: Utc::now(),
            message_id: id.map(|i| MessageId::parse(i).unwrap()),
        }
    }

    #[test]
    fn the_last_question_is_the_last_user_message_with_an_id() {
        let mut s = Session::new(SessionId::generate(), user(), Utc::now());
        assert_eq!(s.last_question(), None, "nothing asked yet");
        s.history = vec![
            said(Role::User, "old", None),
            said(Role::Assistant, "old answer", None),
        ];
        assert_eq!(s.last_question(), None, "ids were not kept then");
        s.history.extend([
            said(Role::User, "q1", Some("msg_q1")),
            said(Role::Assistant, "a1", Some("msg_a1")),
            said(Role::User, "q2", Some("msg_q2")),
            said(Role::Assistant, "a2", Some("msg_a2")),
            said(Role::Assistant, "agent", Some("msg_g")),
        ]);
        let last = s.last_question().unwrap();
        assert_eq!(last.message_id.as_str(), "msg_q2");
        assert_eq!(last.query, "q2");
        let context: Vec<_> = last.context.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(context, ["old", "old answer", "q1", "a1"]);
    }

    #[test]
    fn forgetting_after_a_message_keeps_it_and_what_came_before() {
        let mut s = Session::new(SessionId::generate(), user(), Utc::now());
        s.history = vec![
            said(Role::User, "q1", Some("msg_q1")),
            said(Role::Assistant, "a1", Some("msg_a1")),
            said(Role::Assistant, "a1 again", None),
        ];
        assert!(!s.forget_after(&MessageId::parse("msg_nope").unwrap()));
        assert_eq!(s.history.len(), 3);
        assert!(s.forget_after(&MessageId::parse("msg_q1").unwrap()));
        let left: Vec<_> = s.history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(left, ["q1"]);
    }

    #[test]
    fn content_rules() {
        assert_eq!(ChatContent::parse("   \n", 10), Err(ContentError::Blank));
        assert_eq!(ChatContent::parse("", 10), Err(ContentError::Blank));
        assert_eq!(
            ChatContent::parse("abcdefghijk", 10),
            Err(ContentError::TooLong { max: 10 })
        );
        assert!(ChatContent::parse(&"é".repeat(10), 10).is_ok());
        assert_eq!(ChatContent::parse(" hi ", 10).unwrap().as_str(), " hi ");
    }

    #[test]
    fn content_of_control_and_invisible_characters_is_blank() {
        for blank in [
            "\u{0}",
            "\u{200b}",
            "\t\r\n",
            "\u{0}\u{1b}\u{7f}",
            "\u{feff} \u{200d}\u{2060}",
            "\u{3000}\u{a0}\u{85}",
            "\u{202e}\u{200e}",
        ] {
            assert_eq!(
                ChatContent::parse(blank, 100),
                Err(ContentError::Blank),
                "{blank:?}"
            );
        }
        // One visible character is enough, and what is around it is kept.
        for kept in ["\u{200b}a\u{200b}", "\u{0}.", "\t😀\n", "\u{200d}ا"] {
            assert_eq!(ChatContent::parse(kept, 100).unwrap().as_str(), kept);
        }
    }

    #[test]
    fn ids_are_prefixed_unique_and_parse_back() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert!(a.as_str().starts_with("msg_"));
        assert_ne!(a, b);
        assert_eq!(MessageId::parse(a.as_str()).unwrap(), a);
        assert!(SessionId::generate().as_str().starts_with("sess_"));
        assert!(SessionId::parse("../etc").is_err());
        assert!(SessionId::parse("").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Strings heavy in what looks blank, with some visible text now and then.
    fn mostly_invisible() -> impl Strategy<Value = String> {
        let invisible = prop::sample::select(vec![
            ' ', '\t', '\r', '\n', '\u{0}', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}', '\u{200d}',
            '\u{2060}', '\u{feff}', '\u{3000}', '\u{202e}',
        ]);
        prop_oneof![
            prop::collection::vec(invisible, 0..12).prop_map(|v| v.into_iter().collect()),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn content_is_kept_as_sent_or_refused_for_a_reason(raw in mostly_invisible(), max in 1usize..20) {
            match ChatContent::parse(&raw, max) {
                Ok(content) => {
                    prop_assert_eq!(content.as_str(), raw.as_str());
                    prop_assert!(raw.chars().count() <= max);
                    prop_assert!(raw.chars().any(|c| !is_invisible(c)));
                    prop_assert!(!raw.trim().is_empty());
                }
                Err(ContentError::Blank) => prop_assert!(raw.chars().all(is_invisible)),
                Err(ContentError::TooLong { max: m }) => {
                    prop_assert_eq!(m, max);
                    prop_assert!(raw.chars().count() > max);
                }
            }
        }

        #[test]
        fn session_and_message_ids_read_back(raw in prop_oneof!["[A-Za-z0-9_-]{0,70}", any::<String>()]) {
            match SessionId::parse(&raw) {
                Ok(id) => {
                    prop_assert_eq!(id.as_str(), raw.as_str());
                    prop_assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
                    prop_assert!(MessageId::parse(&raw).is_ok());
                }
                Err(IdError) => prop_assert!(MessageId::parse(&raw).is_err()),
            }
        }
    }
}
