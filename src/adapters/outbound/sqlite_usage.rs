//! SQLite-backed [`UsageStore`]: a `token_usage` table in the same file as
//! the users (`SQLITE_PATH`), on a connection of its own (as the transcripts
//! have), so the counts survive a restart of a single instance.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use crate::application::ports::{StoreFailure, UsageStore, UsageStoreError};
use crate::domain::budget::WindowSpan;
use crate::domain::UserId;

/// As the other stores in the file: a backup may hold the lock briefly.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `IF NOT EXISTS` throughout: every start-up runs it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS token_usage (
    user_id      TEXT NOT NULL,
    window_secs  INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (user_id, window_secs, window_start)
);
CREATE INDEX IF NOT EXISTS token_usage_start ON token_usage (window_start);
";

/// Token counts in the SQLite file.
#[derive(Clone)]
pub struct SqliteUsageStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteUsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUsageStore").finish_non_exhaustive()
    }
}

fn failed(e: rusqlite::Error) -> UsageStoreError {
    UsageStoreError::from(StoreFailure::new("sqlite statement failed", e))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn open_blocking(path: &Path) -> Result<Connection, UsageStoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreFailure::new("cannot create the database directory", e))?;
    }
    let conn =
        Connection::open(path).map_err(|e| StoreFailure::new("cannot open the database", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })
    .map_err(|e| StoreFailure::new("not a usable SQLite database", e))?;
    // One write per answer: under WAL, NORMAL syncs at checkpoints rather
    // than at every commit (a power cut may lose the last counts, never
    // corrupt the file).
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(failed)?;
    conn.execute_batch(SCHEMA)
        .map_err(|e| StoreFailure::new("cannot create the token_usage table", e))?;
    Ok(conn)
}

impl SqliteUsageStore {
    /// Opens (creating if needed) the database at `path` and its table.
    ///
    /// # Errors
    /// [`UsageStoreError`] if the file cannot be opened or is not SQLite.
    pub async fn open(path: &Path) -> Result<Self, UsageStoreError> {
        let owned = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| StoreFailure::new("sqlite open task failed", e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the blocking pool with the connection locked.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, UsageStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, UsageStoreError> + Send + 'static,
    {
        super::sqlite_blocking::with_conn(&self.conn, work).await
    }
}

#[async_trait]
impl UsageStore for SqliteUsageStore {
    async fn add(
        &self,
        user: &UserId,
        window: WindowSpan,
        tokens: u64,
    ) -> Result<u64, UsageStoreError> {
        let user = user.as_str().to_owned();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(failed)?;
            let (length, start) = (to_i64(window.length), to_i64(window.start));
            // Windows that ended a whole window ago are never read again.
            tx.execute(
                "DELETE FROM token_usage WHERE window_secs = ?1 AND window_start < ?2",
                params![length, start.saturating_sub(length)],
            )
            .map_err(failed)?;
            let used: i64 = tx
                .query_row(
                    "INSERT INTO token_usage (user_id, window_secs, window_start, used)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user_id, window_secs, window_start)
                     DO UPDATE SET used = used + excluded.used
                     RETURNING used",
                    params![user, length, start, to_i64(tokens)],
                    |row| row.get(0),
                )
                .map_err(failed)?;
            tx.commit().map_err(failed)?;
            Ok(u64::try_from(used).unwrap_or(0))
        })
        .await
    }

    async fn used(&self, user: &UserId, window: WindowSpan) -> Result<u64, UsageStoreError> {
        let user = user.as_str().to_owned();
        self.with_conn(move |conn| {
            let used: Option<i64> = conn
                .query_row(
                    "SELECT used FROM token_usage
                     WHERE user_id = ?1 AND window_secs = ?2 AND window_start = ?3",
                    params![user, to_i64(window.length), to_i64(window.start)],
                    |row| row.get(0),
                )
                .optional()
                .map_err(failed)?;
            Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
        })
        .await
    }
}
