//! SQLite-backed [`UserRepository`]: the embedded store for single-node deployments.
//!
//! rusqlite is synchronous, so every statement runs on tokio's blocking pool
//! behind one mutex-guarded connection; a slow disk then stalls only the
//! blocking thread, never the async workers serving WebSockets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use crate::application::ports::{UserRepository, UserStoreError};
use crate::domain::time::{iso_millis, parse_iso};
use crate::domain::{EmailAddress, NewUser, PasswordHash, User, UserId, Username};

/// The schema version this build writes and understands (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Another process (a backup, an admin shell) may hold the write lock briefly;
/// waiting a little beats failing a registration with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Each entry upgrades the schema from version `index` to `index + 1`, so a
/// file written by an older build is brought forward in place at start-up.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1. `IF NOT EXISTS` because a hand-made file may have the table but
    // no version stamp; then the stamp is all that is missing.
    "CREATE TABLE IF NOT EXISTS users (
        id         TEXT PRIMARY KEY NOT NULL,
        username   TEXT NOT NULL UNIQUE,
        email      TEXT NOT NULL UNIQUE,
        password   TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_login TEXT NULL,
        is_active  INTEGER NOT NULL DEFAULT 1
    );",
];

const USER_COLUMNS: &str = "id, username, email, password, created_at, last_login, is_active";

/// Users in one SQLite file.
#[derive(Clone)]
pub struct SqliteUserRepository {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for SqliteUserRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUserRepository")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteUserRepository {
    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date.
    ///
    /// # Errors
    /// [`UserStoreError::Unavailable`] if the directory or file cannot be
    /// created or opened, the file is not a SQLite database, or its schema is
    /// newer than this build understands (refusing is safer than guessing).
    pub async fn open(path: &Path) -> Result<Self, UserStoreError> {
        let owned = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| UserStoreError::unavailable("sqlite open task failed", e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// Runs `work` on the blocking pool with the connection locked.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, UserStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, UserStoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite itself
            // inconsistent (statements are atomic), so a poisoned mutex is
            // still safe to use.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut guard)
        })
        .await
        .map_err(|e| UserStoreError::unavailable("sqlite task failed", e))?
    }

    async fn find_one(
        &self,
        column: &'static str,
        value: String,
    ) -> Result<Option<User>, UserStoreError> {
        self.with_conn(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?1");
            let row = conn
                .query_row(&sql, params![value], read_row)
                .optional()
                .map_err(unavailable)?;
            row.map(parse_row).transpose()
        })
        .await
    }
}

fn open_blocking(path: &Path) -> Result<Connection, UserStoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            UserStoreError::unavailable(
                format!(
                    "cannot create directory {} for the user database",
                    parent.display()
                ),
                e,
            )
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| {
        UserStoreError::unavailable(format!("cannot open user database {}", path.display()), e)
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    // WAL lets health checks and logins read while a registration writes.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| {
            UserStoreError::unavailable(
                format!("{} is not a usable SQLite database", path.display()),
                e,
            )
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "sqlite refused WAL journal mode");
    }
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), UserStoreError> {
    // IMMEDIATE takes the write lock up front, so two servers starting on the
    // same file cannot both run the same migration.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(unavailable)?;
    if version > SCHEMA_VERSION {
        return Err(UserStoreError::corrupt(format!(
            "user database schema version {version} is newer than this server understands \
             ({SCHEMA_VERSION}); refusing to touch it"
        )));
    }
    let start = usize::try_from(version.max(0)).unwrap_or(0);
    for (from, step) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(step).map_err(unavailable)?;
        tracing::info!(from, to = from + 1, "migrated user database schema");
    }
    // PRAGMA takes no bound parameters; the value is our own constant.
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}

/// The raw column values, before any domain validation.
struct RawRow {
    id: String,
    username: String,
    email: String,
    password: String,
    created_at: String,
    last_login: Option<String>,
    is_active: i64,
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        password: row.get(3)?,
        created_at: row.get(4)?,
        last_login: row.get(5)?,
        is_active: row.get(6)?,
    })
}

/// A row that does not parse was written by something other than this adapter
/// (a hand edit, a bad import); serving it would break the domain's guarantees,
/// so the store is reported unusable for that user rather than trusted.
fn parse_row(raw: RawRow) -> Result<User, UserStoreError> {
    let bad = |field: &str, detail: String| {
        UserStoreError::corrupt(format!(
            "user row {} in sqlite has an invalid {field}: {detail}",
            raw.id
        ))
    };
    let id = UserId::parse(&raw.id).map_err(|e| bad("id", e.to_string()))?;
    let username = Username::parse(&raw.username).map_err(|e| bad("username", e.to_string()))?;
    let email = EmailAddress::parse(&raw.email).map_err(|e| bad("email", e.to_string()))?;
    let created_at = parse_time(&raw.created_at).map_err(|e| bad("created_at", e))?;
    let last_login = raw
        .last_login
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| bad("last_login", e))?;
    Ok(User {
        id,
        username,
        email,
        password_hash: PasswordHash::new(raw.password.clone()),
        created_at,
        last_login,
        is_active: raw.is_active != 0,
    })
}

/// Millisecond precision matches what MongoDB stores, so a user reads back
/// the same from either store.
fn format_time(at: DateTime<Utc>) -> String {
    iso_millis(at)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_iso(text).ok_or_else(|| format!("{text:?} is not an RFC 3339 timestamp"))
}

fn unavailable(e: rusqlite::Error) -> UserStoreError {
    UserStoreError::unavailable("sqlite statement failed", e)
}

/// The constraint is enforced by SQLite inside the INSERT, so this is the
/// atomic uniqueness check the port requires; the message names the column.
fn map_insert_error(e: rusqlite::Error) -> UserStoreError {
    if let rusqlite::Error::SqliteFailure(err, Some(message)) = &e {
        if err.code == ErrorCode::ConstraintViolation {
            if let Some(taken) = classify_unique_violation(message) {
                return taken;
            }
        }
    }
    unavailable(e)
}

fn classify_unique_violation(message: &str) -> Option<UserStoreError> {
    let columns = message.strip_prefix("UNIQUE constraint failed:")?;
    // A composite constraint lists several columns; ours are single-column.
    columns
        .split(',')
        .map(str::trim)
        .find_map(|column| match column {
            "users.username" => Some(UserStoreError::UsernameTaken),
            "users.email" => Some(UserStoreError::EmailTaken),
            _ => None,
        })
}

#[async_trait]
impl UserRepository for SqliteUserRepository {
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        let stored = User {
            // Same id shape as MongoDB so ids in tokens and logs do not reveal
            // (or depend on) which store is configured.
            id: UserId::parse(&mongodb::bson::oid::ObjectId::new().to_hex())
                .map_err(|e| UserStoreError::unavailable("generated id rejected", e))?,
            username: user.username,
            email: user.email,
            password_hash: user.password_hash,
            created_at: user.created_at.trunc_subsecs(3),
            last_login: None,
            is_active: true,
        };
        let row = stored.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO users (id, username, email, password, created_at, last_login, is_active)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, 1)",
                params![
                    row.id.as_str(),
                    row.username.as_str(),
                    row.email.as_str(),
                    row.password_hash.as_str(),
                    format_time(row.created_at),
                ],
            )
            .map_err(map_insert_error)?;
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, UserStoreError> {
        self.find_one("id", id.as_str().to_owned()).await
    }

    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, UserStoreError> {
        self.find_one("username", username.as_str().to_owned())
            .await
    }

    async fn find_by_email(&self, email: &EmailAddress) -> Result<Option<User>, UserStoreError> {
        self.find_one("email", email.as_str().to_owned()).await
    }

    async fn record_login(
        &self,
        id: &UserId,
        at: DateTime<Utc>,
        rehashed: Option<PasswordHash>,
    ) -> Result<(), UserStoreError> {
        let id = id.as_str().to_owned();
        let at = format_time(at);
        let rehashed = rehashed.map(|h| h.as_str().to_owned());
        let changed = self
            .with_conn(move |conn| {
                conn.execute(
                    "UPDATE users SET last_login = ?2, password = COALESCE(?3, password)
                     WHERE id = ?1",
                    params![id, at, rehashed],
                )
                .map_err(unavailable)
            })
            .await?;
        if changed == 0 {
            Err(UserStoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn ping(&self) -> Result<(), UserStoreError> {
        self.with_conn(|conn| {
            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_violations_name_the_taken_field() {
        assert!(matches!(
            classify_unique_violation("UNIQUE constraint failed: users.username"),
            Some(UserStoreError::UsernameTaken)
        ));
        assert!(matches!(
            classify_unique_violation("UNIQUE constraint failed: users.email"),
            Some(UserStoreError::EmailTaken)
        ));
        assert!(classify_unique_violation("UNIQUE constraint failed: users.id").is_none());
        assert!(classify_unique_violation("NOT NULL constraint failed: users.email").is_none());
    }

    #[test]
    fn times_are_stored_as_utc_rfc3339_with_millis() {
        let at = DateTime::parse_from_rfc3339("2024-03-01T12:34:56.789123+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let text = format_time(at);
        assert_eq!(text, "2024-03-01T10:34:56.789Z");
        assert_eq!(parse_time(&text).unwrap(), at.trunc_subsecs(3));
    }

    #[tokio::test]
    async fn a_corrupt_row_is_unavailable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SqliteUserRepository::open(&dir.path().join("users.db"))
            .await
            .unwrap();
        repo.with_conn(|conn| {
            conn.execute(
                "INSERT INTO users (id, username, email, password, created_at)
                 VALUES ('65f1c0ffee0123456789abcd', 'not a name!', 'x@example.com', 'h', 'yesterday')",
                [],
            )
            .map_err(unavailable)
        })
        .await
        .unwrap();
        let id = UserId::parse("65f1c0ffee0123456789abcd").unwrap();
        assert!(matches!(
            repo.find_by_id(&id).await,
            Err(UserStoreError::Unavailable { .. })
        ));
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA user_version = 99").unwrap();
        }
        let err = SqliteUserRepository::open(&path).await.unwrap_err();
        assert!(err.to_string().contains("99"), "{err}");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }
}
