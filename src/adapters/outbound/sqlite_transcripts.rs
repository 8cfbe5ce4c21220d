//! SQLite-backed [`TranscriptStore`]: a `messages` table in the same file as
//! the users (`SQLITE_PATH`), on a connection of its own so transcript
//! writes never queue behind logins on the user store's connection; WAL and
//! the busy timeout let the two connections share the file.
//!
//! The table keeps its own shape, apart from the users' schema version
//! (`PRAGMA user_version`), so neither store's migrations wait on the other's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::application::ports::StoreFailure;
use crate::application::ports::{Rated, TranscriptPage, TranscriptStore, TranscriptStoreError};
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::feedback::Feedback;
use crate::domain::handoff::AgentRef;
use crate::domain::transcript::{Speaker, TranscriptCursor, TranscriptEntry, TranscriptRole};
use crate::domain::{MessageId, SessionId, StreamStatus, UserId, Username};

/// As the user store: a backup or an admin shell may hold the lock briefly.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `IF NOT EXISTS` throughout: every start-up runs it, on a new file or an old one.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL UNIQUE,
    session_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    role           TEXT NOT NULL,
    content        TEXT NOT NULL,
    agent_id       TEXT NULL,
    agent_username TEXT NULL,
    ending         TEXT NULL,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    rating         TEXT NULL,
    comment        TEXT NULL,
    superseded     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_session_order ON messages (session_id, at, seq);
CREATE INDEX IF NOT EXISTS messages_at ON messages (at);
";

/// Columns added after the table first shipped: a file from before them
/// gets them at start-up.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("rating", "TEXT NULL"),
    ("comment", "TEXT NULL"),
    ("superseded", "INTEGER NOT NULL DEFAULT 0"),
];

const COLUMNS: &str = "message_id, session_id, user_id, role, content, agent_id, agent_username, \
     ending, seq, at, rating, comment, superseded";

/// Transcripts in the SQLite file.
#[derive(Clone)]
pub struct SqliteTranscriptStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for SqliteTranscriptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTranscriptStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteTranscriptStore {
    /// Opens (creating if needed) the database file at `path` and makes sure
    /// the `messages` table and its indexes exist.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] if the file cannot be created or opened, or
    /// is not a SQLite database.
    pub async fn open(path: &Path) -> Result<Self, TranscriptStoreError> {
        let owned = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| StoreFailure::new("sqlite open task failed", e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// Runs `work` on the blocking pool with the connection locked.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, TranscriptStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, TranscriptStoreError> + Send + 'static,
    {
        super::sqlite_blocking::with_conn(&self.conn, work).await
    }
}

fn open_blocking(path: &Path) -> Result<Connection, TranscriptStoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreFailure::new(
                format!(
                    "cannot create directory {} for transcripts",
                    parent.display()
                ),
                e,
            )
        })?;
    }
    let conn = Connection::open(path)
        .map_err(|e| StoreFailure::new(format!("cannot open database {}", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })
    .map_err(|e| {
        StoreFailure::new(
            format!("{} is not a usable SQLite database", path.display()),
            e,
        )
    })?;
    conn.execute_batch(SCHEMA)
        .map_err(|e| StoreFailure::new("cannot create the messages table and its indexes", e))?;
    conn.execute_batch(super::sqlite_csat::SCHEMA)
        .map_err(|e| StoreFailure::new("cannot create the csat table", e))?;
    add_missing_columns(&conn)?;
    Ok(conn)
}

/// Adds the [`ADDED_COLUMNS`] a table created before them lacks.
fn add_missing_columns(conn: &Connection) -> Result<(), TranscriptStoreError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .map_err(failed)?;
    let present = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    for (name, shape) in ADDED_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {name} {shape}"))
                .map_err(|e| StoreFailure::new(format!("cannot add column {name}"), e))?;
        }
    }
    Ok(())
}

fn failed(e: rusqlite::Error) -> TranscriptStoreError {
    TranscriptStoreError::from(StoreFailure::new("sqlite statement failed", e))
}

/// Seqs and counts are `u64` in the domain and `INTEGER` (i64) in SQLite.
fn to_i64(n: u64) -> Result<i64, TranscriptStoreError> {
    i64::try_from(n).map_err(|_| {
        TranscriptStoreError::from(StoreFailure::bare(format!("{n} does not fit SQLite")))
    })
}

/// The raw column values, before any domain validation.
struct RawRow {
    message_id: String,
    session_id: String,
    user_id: String,
    role: String,
    content: String,
    agent_id: Option<String>,
    agent_username: Option<String>,
    ending: Option<String>,
    seq: i64,
    at: i64,
    rating: Option<String>,
    comment: Option<String>,
    superseded: bool,
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        message_id: row.get(0)?,
        session_id: row.get(1)?,
        user_id: row.get(2)?,
        role: row.get(3)?,
        content: row.get(4)?,
        agent_id: row.get(5)?,
        agent_username: row.get(6)?,
        ending: row.get(7)?,
        seq: row.get(8)?,
        at: row.get(9)?,
        rating: row.get(10)?,
        comment: row.get(11)?,
        superseded: row.get(12)?,
    })
}

/// A row this adapter did not write (a hand edit) is a store failure rather
/// than a guess.
fn parse_row(raw: RawRow) -> Result<TranscriptEntry, TranscriptStoreError> {
    let bad = |field: &str| {
        TranscriptStoreError::from(StoreFailure::bare(format!(
            "transcript row {:?} in sqlite has an invalid {field}",
            raw.message_id
        )))
    };
    let speaker = match TranscriptRole::parse(&raw.role).map_err(|_| bad("role"))? {
        TranscriptRole::User => Speaker::User,
        TranscriptRole::Assistant => Speaker::Assistant {
            ending: raw
                .ending
                .as_deref()
                .and_then(StreamStatus::parse)
                .ok_or_else(|| bad("ending"))?,
        },
        TranscriptRole::Agent => Speaker::Agent(AgentRef {
            id: raw
                .agent_id
                .as_deref()
                .and_then(|a| UserId::parse(a).ok())
                .ok_or_else(|| bad("agent_id"))?,
            username: raw
                .agent_username
                .as_deref()
                .and_then(|a| Username::parse(a).ok())
                .ok_or_else(|| bad("agent_username"))?,
        }),
    };
    let feedback = raw
        .rating
        .as_deref()
        .map(|r| Feedback::parse(r, raw.comment.as_deref()))
        .transpose()
        .map_err(|_| bad("rating"))?;
    let mut entry = TranscriptEntry::new(
        SessionId::parse(&raw.session_id).map_err(|_| bad("session_id"))?,
        UserId::parse(&raw.user_id).map_err(|_| bad("user_id"))?,
        MessageId::parse(&raw.message_id).map_err(|_| bad("message_id"))?,
        speaker,
        raw.content,
        u64::try_from(raw.seq).map_err(|_| bad("seq"))?,
        DateTime::from_timestamp_millis(raw.at).ok_or_else(|| bad("at"))?,
    );
    entry.feedback = feedback;
    entry.superseded = raw.superseded;
    Ok(entry)
}

/// Rates the entry `message` of `session`, inside one locked connection.
fn rate_blocking(
    conn: &Connection,
    session: &str,
    message: &str,
    feedback: &Feedback,
) -> Result<Rated, TranscriptStoreError> {
    let role: Option<String> = conn
        .query_row(
            "SELECT role FROM messages WHERE message_id = ?1 AND session_id = ?2",
            params![message, session],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed)?;
    match role.as_deref().map(TranscriptRole::parse) {
        None => return Ok(Rated::NotFound),
        Some(Ok(TranscriptRole::Assistant)) => {}
        Some(_) => return Ok(Rated::NotAnAnswer),
    }
    conn.execute(
        "UPDATE messages SET rating = ?2, comment = ?3 WHERE message_id = ?1",
        params![message, feedback.rating.as_str(), feedback.comment()],
    )
    .map_err(failed)?;
    Ok(Rated::Done)
}

/// Marks the answers after the entry `asked` of `session` superseded.
fn supersede_blocking(
    conn: &Connection,
    session: &str,
    asked: &str,
) -> Result<u64, TranscriptStoreError> {
    let position: Option<(i64, i64)> = conn
        .query_row(
            "SELECT at, seq FROM messages WHERE message_id = ?1 AND session_id = ?2",
            params![asked, session],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(failed)?;
    let Some((at, seq)) = position else {
        return Ok(0);
    };
    conn.execute(
        "UPDATE messages SET superseded = 1
          WHERE session_id = ?1 AND role = ?2 AND (at > ?3 OR (at = ?3 AND seq > ?4))",
        params![session, TranscriptRole::Assistant.as_str(), at, seq],
    )
    .map(|n| n as u64)
    .map_err(failed)
}

#[async_trait]
impl TranscriptStore for SqliteTranscriptStore {
    async fn append(&self, entry: &TranscriptEntry) -> Result<(), TranscriptStoreError> {
        let e = entry.clone();
        let seq = to_i64(e.seq)?;
        self.with_conn(move |conn| {
            let (agent_id, agent_username, ending) = match &e.speaker {
                Speaker::User => (None, None, None),
                Speaker::Assistant { ending } => (None, None, Some(ending.as_str())),
                Speaker::Agent(a) => (Some(a.id.as_str()), Some(a.username.as_str()), None),
            };
            // The unique message id makes a second recording of one message a no-op.
            conn.execute(
                "INSERT OR IGNORE INTO messages
                   (message_id, session_id, user_id, role, content,
                    agent_id, agent_username, ending, seq, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    e.message_id.as_str(),
                    e.session.as_str(),
                    e.owner.as_str(),
                    e.speaker.role().as_str(),
                    e.content,
                    agent_id,
                    agent_username,
                    ending,
                    seq,
                    e.at.timestamp_millis(),
                ],
            )
            .map(drop)
            .map_err(failed)
        })
        .await
    }

    async fn page(
        &self,
        session: &SessionId,
        before: Option<TranscriptCursor>,
        limit: usize,
    ) -> Result<TranscriptPage, TranscriptStoreError> {
        let session = session.as_str().to_owned();
        let (at, seq) = match before {
            Some(c) => (c.at_ms, to_i64(c.seq)?),
            None => (i64::MAX, i64::MAX),
        };
        let fetch = TranscriptPage::entries_to_read(limit);
        let rows = self
            .with_conn(move |conn| {
                let sql = format!(
                    "SELECT {COLUMNS} FROM messages
                      WHERE session_id = ?1 AND (at < ?2 OR (at = ?2 AND seq < ?3))
                      ORDER BY at DESC, seq DESC LIMIT ?4"
                );
                let mut stmt = conn.prepare_cached(&sql).map_err(failed)?;
                let rows = stmt
                    .query_map(params![session, at, seq, fetch], read_row)
                    .map_err(failed)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(failed)?;
                Ok(rows)
            })
            .await?;
        let entries = rows
            .into_iter()
            .map(parse_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TranscriptPage::from_newest_first(entries, limit))
    }

    async fn rate(
        &self,
        session: &SessionId,
        message: &MessageId,
        feedback: &Feedback,
    ) -> Result<Rated, TranscriptStoreError> {
        let (session, message) = (session.as_str().to_owned(), message.as_str().to_owned());
        let feedback = feedback.clone();
        self.with_conn(move |conn| rate_blocking(conn, &session, &message, &feedback))
            .await
    }

    async fn supersede_after(
        &self,
        session: &SessionId,
        asked: &MessageId,
    ) -> Result<u64, TranscriptStoreError> {
        let (session, asked) = (session.as_str().to_owned(), asked.as_str().to_owned());
        self.with_conn(move |conn| supersede_blocking(conn, &session, &asked))
            .await
    }

    async fn request_csat(&self, record: &CsatRecord) -> Result<(), TranscriptStoreError> {
        let record = record.clone();
        self.with_conn(move |conn| super::sqlite_csat::request(conn, &record))
            .await
    }

    async fn answer_csat(
        &self,
        session: &SessionId,
        answer: &Csat,
        at: DateTime<Utc>,
        open_since: DateTime<Utc>,
    ) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        let (session, answer) = (session.clone(), answer.clone());
        self.with_conn(move |conn| {
            super::sqlite_csat::answer(conn, &session, &answer, at, open_since)
        })
        .await
    }

    async fn csat(&self, session: &SessionId) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        let session = session.clone();
        self.with_conn(move |conn| super::sqlite_csat::read(conn, &session))
            .await
    }

    async fn ratings_of(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<CsatRecord>, TranscriptStoreError> {
        let agent = agent.clone();
        self.with_conn(move |conn| super::sqlite_csat::ratings_of(conn, &agent, limit))
            .await
    }

    async fn owner(&self, session: &SessionId) -> Result<Option<UserId>, TranscriptStoreError> {
        let session = session.as_str().to_owned();
        let owner: Option<String> = self
            .with_conn(move |conn| {
                conn.query_row(
                    "SELECT user_id FROM messages WHERE session_id = ?1 LIMIT 1",
                    params![session],
                    |row| row.get(0),
                )
                .optional()
                .map_err(failed)
            })
            .await?;
        owner
            .map(|o| {
                UserId::parse(&o).map_err(|_| {
                    TranscriptStoreError::from(StoreFailure::bare(
                        "a transcript row has an invalid user_id",
                    ))
                })
            })
            .transpose()
    }

    async fn erase(&self, session: &SessionId) -> Result<u64, TranscriptStoreError> {
        let session = session.as_str().to_owned();
        self.with_conn(move |conn| {
            super::sqlite_csat::erase(conn, &session)?;
            conn.execute(
                "DELETE FROM messages WHERE session_id = ?1",
                params![session],
            )
            .map(|n| n as u64)
            .map_err(failed)
        })
        .await
    }

    async fn expire(&self, older_than: DateTime<Utc>) -> Result<u64, TranscriptStoreError> {
        let cutoff = older_than.timestamp_millis();
        self.with_conn(move |conn| {
            super::sqlite_csat::expire(conn, cutoff)?;
            conn.execute("DELETE FROM messages WHERE at < ?1", params![cutoff])
                .map(|n| n as u64)
                .map_err(failed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hand_edited_row_is_a_failure_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTranscriptStore::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        store
            .with_conn(|conn| {
                conn.execute(
                    "INSERT INTO messages (message_id, session_id, user_id, role, content, seq, at)
                     VALUES ('msg_x', 'sess_x', 'u1', 'robot', 'hi', 1, 0)",
                    [],
                )
                .map_err(failed)
            })
            .await
            .unwrap();
        let err = store
            .page(&SessionId::parse("sess_x").unwrap(), None, 10)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unavailable"), "{err}");
    }

    #[tokio::test]
    async fn the_table_lives_beside_the_users_without_touching_their_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatbot.db");
        let users = crate::adapters::outbound::sqlite_users::SqliteUserRepository::open(&path)
            .await
            .unwrap();
        let version = |p: &Path| -> i64 {
            Connection::open(p)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        let before = version(&path);
        let _store = SqliteTranscriptStore::open(&path).await.unwrap();
        assert_eq!(version(&path), before);
        drop(users);
        // And opening again (a restart) is a no-op.
        let _again = SqliteTranscriptStore::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn a_table_from_before_feedback_gets_its_columns_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
                    session_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
                    content TEXT NOT NULL, agent_id TEXT NULL, agent_username TEXT NULL,
                    ending TEXT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL);
                 INSERT INTO messages (message_id, session_id, user_id, role, content, ending, seq, at)
                 VALUES ('msg_a', 'sess_x', 'u1', 'assistant', 'hi', 'completed', 2, 0);",
            )
            .unwrap();
        }
        let store = SqliteTranscriptStore::open(&path).await.unwrap();
        let session = SessionId::parse("sess_x").unwrap();
        let up = Feedback::parse("up", Some("thanks")).unwrap();
        let rated = store
            .rate(&session, &MessageId::parse("msg_a").unwrap(), &up)
            .await
            .unwrap();
        assert_eq!(rated, Rated::Done);
        let entries = store.page(&session, None, 10).await.unwrap().entries;
        assert_eq!(entries[0].feedback, Some(up));
        assert!(!entries[0].superseded);
    }
}
