//! The transcript port: every message of every conversation, kept until
//! erased or expired, read back a page at a time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::StoreFailure;
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::feedback::Feedback;
use crate::domain::transcript::TranscriptEntry;
use crate::domain::{MessageId, SessionId, UserId};

/// Failures of a [`TranscriptStore`]: the store did not answer or answered
/// with something unusable. For logs only; clients see a stable code.
#[derive(Debug, Error)]
#[error("transcript store unavailable")]
pub struct TranscriptStoreError(#[from] pub StoreFailure);

/// What rating an entry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rated {
    /// The answer's feedback is now the one given.
    Done,
    /// No entry of the session has that id.
    NotFound,
    /// The entry is not an assistant's answer (a user's or an agent's message).
    NotAnAnswer,
}

/// One page of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptPage {
    /// The newest entries before the requested position, oldest first.
    pub entries: Vec<crate::domain::transcript::TranscriptEntry>,
    /// The position of the oldest entry of this page when older entries
    /// exist: pass it as `before` for the page before this one.
    pub next: Option<crate::domain::transcript::TranscriptCursor>,
}

impl TranscriptPage {
    /// How many entries a store reads for a page of `limit`: one more than
    /// asked, which says whether an older page exists.
    pub fn entries_to_read(limit: usize) -> i64 {
        i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
    }

    /// The page of at most `limit` entries made of what a store read for it
    /// (at most [`TranscriptPage::entries_to_read`] entries, newest first).
    pub fn from_newest_first(mut newest_first: Vec<TranscriptEntry>, limit: usize) -> Self {
        let more = newest_first.len() > limit;
        newest_first.truncate(limit);
        newest_first.reverse();
        let entries = newest_first;
        let next = if more {
            entries.first().map(TranscriptEntry::position)
        } else {
            None
        };
        Self { entries, next }
    }
}

/// Every message of every conversation (the embedded SQLite file beside the
/// users, or MongoDB's `messages` collection), kept until erased or expired.
/// Entries are ordered by their [`TranscriptCursor`] position: time in
/// milliseconds, then seq.
///
/// [`TranscriptCursor`]: crate::domain::transcript::TranscriptCursor
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TranscriptStore: Send + Sync {
    /// Keeps `entry`.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails. Appending an entry whose
    /// `message_id` is already kept is not an error and changes nothing.
    async fn append(
        &self,
        entry: &crate::domain::transcript::TranscriptEntry,
    ) -> Result<(), TranscriptStoreError>;

    /// The newest `limit` entries of `session` strictly before `before`
    /// (before the end when `None`), oldest first, and where the page before
    /// them starts. An unknown session is an empty page.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails or holds an entry that
    /// does not parse.
    async fn page(
        &self,
        session: &SessionId,
        before: Option<crate::domain::transcript::TranscriptCursor>,
        limit: usize,
    ) -> Result<TranscriptPage, TranscriptStoreError>;

    /// Keeps `feedback` with the entry `message` of `session`, replacing any
    /// earlier feedback on it.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails. An entry of another
    /// session, or none, MUST be [`Rated::NotFound`], and one that is not an
    /// assistant's answer [`Rated::NotAnAnswer`], each changing nothing.
    async fn rate(
        &self,
        session: &SessionId,
        message: &MessageId,
        feedback: &Feedback,
    ) -> Result<Rated, TranscriptStoreError>;

    /// Marks superseded every assistant entry of `session` that stands after
    /// the entry `asked` (in transcript order): the answers to a question
    /// asked again. Returns how many entries it marked (again or not).
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails. Without an entry
    /// `asked` in `session` it MUST mark nothing and return `Ok(0)`.
    async fn supersede_after(
        &self,
        session: &SessionId,
        asked: &MessageId,
    ) -> Result<u64, TranscriptStoreError>;

    /// Keeps that the customer of `record.session` was asked how it went
    /// (`record.answer` is ignored): replaces any earlier request of the
    /// session, and its answer.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn request_csat(&self, record: &CsatRecord) -> Result<(), TranscriptStoreError>;
    /// Keeps `answer`, given at `at`, with the session's request when that
    /// request was made at `open_since` or later, replacing any earlier
    /// answer; returns the record as it now is, or `None` (nothing changed)
    /// when there is no such request.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn answer_csat(
        &self,
        session: &SessionId,
        answer: &Csat,
        at: DateTime<Utc>,
        open_since: DateTime<Utc>,
    ) -> Result<Option<CsatRecord>, TranscriptStoreError>;
    /// The session's satisfaction record, if it was ever asked for.
    /// `erase` forgets it with the entries, `expire` once its request is
    /// older than the entries expired.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn csat(&self, session: &SessionId) -> Result<Option<CsatRecord>, TranscriptStoreError>;
    /// The answered satisfaction records of conversations `agent` resolved,
    /// the latest answer first, at most `limit`.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn ratings_of(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<CsatRecord>, TranscriptStoreError>;
    /// The customer whose conversation `session` is, if any entry of it is kept.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn owner(&self, session: &SessionId) -> Result<Option<UserId>, TranscriptStoreError>;

    /// Forgets every entry of `session`; returns how many there were.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn erase(&self, session: &SessionId) -> Result<u64, TranscriptStoreError>;

    /// Forgets every entry said before `older_than`, of every session;
    /// returns how many.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] when the store fails.
    async fn expire(&self, older_than: DateTime<Utc>) -> Result<u64, TranscriptStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::transcript::Speaker;

    fn newest_first(seqs: std::ops::RangeInclusive<u64>) -> Vec<TranscriptEntry> {
        let start = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        seqs.rev()
            .map(|seq| {
                TranscriptEntry::new(
                    SessionId::parse("sess_a").unwrap(),
                    UserId::parse("65a1b2c3d4e5f6a7b8c9d0e1").unwrap(),
                    MessageId::generate(),
                    Speaker::User,
                    format!("message {seq}"),
                    seq,
                    start + chrono::Duration::seconds(i64::try_from(seq).unwrap()),
                )
            })
            .collect()
    }

    fn seqs(page: &TranscriptPage) -> Vec<u64> {
        page.entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_page_is_oldest_first_and_points_before_itself_only_when_more_exist() {
        assert_eq!(TranscriptPage::entries_to_read(3), 4);
        assert_eq!(TranscriptPage::entries_to_read(usize::MAX), i64::MAX);

        // Four read for a page of three: an older page exists.
        let page = TranscriptPage::from_newest_first(newest_first(2..=5), 3);
        assert_eq!(seqs(&page), [3, 4, 5]);
        assert_eq!(page.next, Some(page.entries[0].position()));

        // Exactly three: this is the oldest page.
        let page = TranscriptPage::from_newest_first(newest_first(1..=3), 3);
        assert_eq!(seqs(&page), [1, 2, 3]);
        assert_eq!(page.next, None);

        let page = TranscriptPage::from_newest_first(Vec::new(), 3);
        assert!(page.entries.is_empty() && page.next.is_none());
    }
}
