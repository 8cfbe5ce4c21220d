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

use crate::application::ports::StoreFailure;
use crate::application::ports::{
    RefreshRecord, RefreshTokenStore, Rotation, SavedReply, UserRepository, UserStoreError,
};
use crate::domain::canned::{CannedReply, Shortcut};
use crate::domain::time::{iso_millis, parse_iso};
use crate::domain::{
    EmailAddress, NewUser, PasswordHash, TokenDigest, User, UserId, UserRole, Username,
};

/// The schema version this build writes and understands (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

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
    // 1 -> 2. Usernames unique regardless of case: the oldest row of each
    // spelling group gets the folded name; the others (`Alice` beside an
    // older `alice`, from before this rule) keep NULL and still log in
    // under their own exact name. The unique index then refuses any new
    // spelling of a taken name. And the refresh tokens, by digest.
    "ALTER TABLE users ADD COLUMN username_folded TEXT NULL;
     UPDATE users SET username_folded = lower(username)
      WHERE rowid IN (SELECT min(rowid) FROM users GROUP BY lower(username));
     CREATE UNIQUE INDEX users_username_folded ON users (username_folded);
     CREATE TABLE refresh_tokens (
        digest     TEXT PRIMARY KEY NOT NULL,
        family     TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rotated_at INTEGER NULL,
        revoked    INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
     CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);",
    // 2 -> 3. Roles: every existing user stays a plain user until an
    // operator runs `chatbot-server users set-role NAME agent`.
    "ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';",
    // 3 -> 4. The agents' canned replies.
    super::sqlite_replies::MIGRATION,
];

const USER_COLUMNS: &str = "id, username, email, password, created_at, last_login, is_active, role";

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
            .map_err(|e| StoreFailure::new("sqlite open task failed", e))??;
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
        super::sqlite_blocking::with_conn(&self.conn, work).await
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
            StoreFailure::new(
                format!(
                    "cannot create directory {} for the user database",
                    parent.display()
                ),
                e,
            )
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| {
        StoreFailure::new(format!("cannot open user database {}", path.display()), e)
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    // WAL lets health checks and logins read while a registration writes.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| {
            StoreFailure::new(
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
        return Err(UserStoreError::from(StoreFailure::bare(format!(
            "user database schema version {version} is newer than this server understands \
             ({SCHEMA_VERSION}); refusing to touch it"
        ))));
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
    role: String,
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
        role: row.get(7)?,
    })
}

/// A row that does not parse was written by something other than this adapter
/// (a hand edit, a bad import); serving it would break the domain's guarantees,
/// so the store is reported unusable for that user rather than trusted.
fn parse_row(raw: RawRow) -> Result<User, UserStoreError> {
    let bad = |field: &str, detail: String| {
        UserStoreError::from(StoreFailure::bare(format!(
            "user row {} in sqlite has an invalid {field}: {detail}",
            raw.id
        )))
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
    let role = UserRole::parse(&raw.role).map_err(|e| bad("role", e.to_string()))?;
    Ok(User {
        id,
        username,
        email,
        password_hash: PasswordHash::new(raw.password.clone()),
        created_at,
        last_login,
        is_active: raw.is_active != 0,
        role,
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
    UserStoreError::from(StoreFailure::new("sqlite statement failed", e))
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
            "users.username" | "users.username_folded" => Some(UserStoreError::UsernameTaken),
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
                .map_err(|e| StoreFailure::new("generated id rejected", e))?,
            username: user.username,
            email: user.email,
            password_hash: user.password_hash,
            created_at: user.created_at.trunc_subsecs(3),
            last_login: None,
            is_active: true,
            role: UserRole::User,
        };
        let row = stored.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO users
                   (id, username, email, password, created_at, last_login, is_active, username_folded)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, 1, ?6)",
                params![
                    row.id.as_str(),
                    row.username.as_str(),
                    row.email.as_str(),
                    row.password_hash.as_str(),
                    format_time(row.created_at),
                    row.username.folded(),
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

    async fn set_role(&self, username: &Username, role: UserRole) -> Result<User, UserStoreError> {
        let name = username.as_str().to_owned();
        let changed = self
            .with_conn(move |conn| {
                conn.execute(
                    "UPDATE users SET role = ?2 WHERE username = ?1",
                    params![name, role.as_str()],
                )
                .map_err(unavailable)
            })
            .await?;
        if changed == 0 {
            return Err(UserStoreError::NotFound);
        }
        self.find_by_username(username)
            .await?
            .ok_or(UserStoreError::NotFound)
    }

    async fn agent_count(&self) -> Result<u64, UserStoreError> {
        let count = self
            .with_conn(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM users WHERE role = ?1 AND is_active != 0",
                    params![UserRole::Agent.as_str()],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(unavailable)
            })
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn replies(&self, agent: &UserId) -> Result<Vec<CannedReply>, UserStoreError> {
        let agent = agent.clone();
        self.with_conn(move |conn| super::sqlite_replies::list(conn, &agent))
            .await
    }

    async fn save_reply(
        &self,
        agent: &UserId,
        reply: &CannedReply,
        max: usize,
    ) -> Result<SavedReply, UserStoreError> {
        let (agent, reply) = (agent.clone(), reply.clone());
        self.with_conn(move |conn| super::sqlite_replies::save(conn, &agent, &reply, max))
            .await
    }

    async fn delete_reply(
        &self,
        agent: &UserId,
        shortcut: &Shortcut,
    ) -> Result<bool, UserStoreError> {
        let (agent, shortcut) = (agent.clone(), shortcut.clone());
        self.with_conn(move |conn| super::sqlite_replies::delete(conn, &agent, &shortcut))
            .await
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

/// Refresh tokens live in the same file as the users they belong to. Times
/// are Unix milliseconds, so comparisons happen in SQL.
#[async_trait]
impl RefreshTokenStore for SqliteUserRepository {
    async fn insert(&self, record: &RefreshRecord) -> Result<(), UserStoreError> {
        let r = record.clone();
        self.with_conn(move |conn| {
            // Expired tokens of this user go now: the table stays as small as
            // the live logins, with no sweeper task.
            conn.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND expires_at <= ?2",
                params![r.user_id.as_str(), r.issued_at.timestamp_millis()],
            )
            .map_err(unavailable)?;
            conn.execute(
                "INSERT INTO refresh_tokens (digest, family, user_id, issued_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.digest.as_str(),
                    r.family.as_str(),
                    r.user_id.as_str(),
                    r.issued_at.timestamp_millis(),
                    r.expires_at.timestamp_millis(),
                ],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn rotate(
        &self,
        presented: &TokenDigest,
        successor: &TokenDigest,
        now: DateTime<Utc>,
        successor_expires_at: DateTime<Utc>,
        grace: Duration,
    ) -> Result<Rotation, UserStoreError> {
        let presented = presented.as_str().to_owned();
        let successor = successor.as_str().to_owned();
        let now = now.timestamp_millis();
        let expires = successor_expires_at.timestamp_millis();
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            // IMMEDIATE: the read and the writes below are one step for every
            // other connection to this file, so two rotations cannot both win.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let outcome = rotate_in(&tx, &presented, &successor, now, expires, grace)?;
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_family(
        &self,
        digest: &TokenDigest,
        user: &UserId,
    ) -> Result<(), UserStoreError> {
        let (digest, user) = (digest.as_str().to_owned(), user.as_str().to_owned());
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family =
                   (SELECT family FROM refresh_tokens WHERE digest = ?1 AND user_id = ?2)",
                params![digest, user],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    async fn revoke_user(&self, user: &UserId) -> Result<(), UserStoreError> {
        let user = user.as_str().to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1",
                params![user],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }
}

/// The rotation decision, inside the caller's transaction.
fn rotate_in(
    tx: &rusqlite::Transaction<'_>,
    presented: &str,
    successor: &str,
    now: i64,
    expires: i64,
    grace: i64,
) -> Result<Rotation, UserStoreError> {
    let row: Option<(String, String, i64, Option<i64>, i64)> = tx
        .query_row(
            "SELECT family, user_id, expires_at, rotated_at, revoked
               FROM refresh_tokens WHERE digest = ?1",
            params![presented],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let Some((family, user, expires_at, rotated_at, revoked)) = row else {
        return Ok(Rotation::Invalid);
    };
    if revoked != 0 || expires_at <= now {
        return Ok(Rotation::Invalid);
    }
    let user_id = UserId::parse(&user).map_err(|_| {
        UserStoreError::from(StoreFailure::bare(format!(
            "refresh token of bad user id {user:?}"
        )))
    })?;
    match rotated_at {
        None => {
            tx.execute(
                "UPDATE refresh_tokens SET rotated_at = ?2 WHERE digest = ?1",
                params![presented, now],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT OR IGNORE INTO refresh_tokens (digest, family, user_id, issued_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![successor, family, user, now, expires],
            )
            .map_err(unavailable)?;
            Ok(Rotation::Rotated { user_id })
        }
        Some(at) if now.saturating_sub(at) <= grace => Ok(Rotation::AlreadyRotated { user_id }),
        Some(_) => {
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                params![family],
            )
            .map_err(unavailable)?;
            Ok(Rotation::Reused { user_id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::ErrorChain;

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
        assert!(matches!(
            classify_unique_violation("UNIQUE constraint failed: users.username_folded"),
            Some(UserStoreError::UsernameTaken)
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
        let chain = ErrorChain(&err).to_string();
        assert!(chain.contains("99"), "{chain}");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }
}
