//! The agents' canned replies in the SQLite user store: a `canned_replies`
//! table keyed by agent and shortcut (schema version 4).

use rusqlite::{params, Connection, TransactionBehavior};

use crate::application::ports::{SavedReply, StoreFailure, UserStoreError};
use crate::domain::canned::{CannedReply, Shortcut};
use crate::domain::UserId;

/// The migration from schema version 3 to 4.
pub(super) const MIGRATION: &str = "CREATE TABLE canned_replies (
    agent_id TEXT NOT NULL,
    shortcut TEXT NOT NULL,
    content  TEXT NOT NULL,
    PRIMARY KEY (agent_id, shortcut)
);";

fn failed(e: rusqlite::Error) -> UserStoreError {
    StoreFailure::new("sqlite canned reply statement failed", e).into()
}

pub(super) fn list(conn: &Connection, agent: &UserId) -> Result<Vec<CannedReply>, UserStoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT shortcut, content FROM canned_replies WHERE agent_id = ?1 ORDER BY shortcut",
        )
        .map_err(failed)?;
    let rows = stmt
        .query_map(params![agent.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    rows.into_iter()
        .map(|(shortcut, content)| {
            CannedReply::parse(&shortcut, &content).map_err(|e| {
                UserStoreError::from(StoreFailure::new("a stored canned reply is invalid", e))
            })
        })
        .collect()
}

/// Adds or replaces, counting and writing in one transaction so two saves
/// cannot both take the last place.
pub(super) fn save(
    conn: &mut Connection,
    agent: &UserId,
    reply: &CannedReply,
    max: usize,
) -> Result<SavedReply, UserStoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let (exists, count): (bool, i64) = tx
        .query_row(
            "SELECT COALESCE(SUM(shortcut = ?2), 0) > 0, COUNT(*) FROM canned_replies
              WHERE agent_id = ?1",
            params![agent.as_str(), reply.shortcut.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(failed)?;
    if !exists && usize::try_from(count).unwrap_or(usize::MAX) >= max {
        return Ok(SavedReply::Full);
    }
    tx.execute(
        "INSERT OR REPLACE INTO canned_replies (agent_id, shortcut, content) VALUES (?1, ?2, ?3)",
        params![agent.as_str(), reply.shortcut.as_str(), reply.content()],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(if exists {
        SavedReply::Replaced
    } else {
        SavedReply::Added
    })
}

pub(super) fn delete(
    conn: &Connection,
    agent: &UserId,
    shortcut: &Shortcut,
) -> Result<bool, UserStoreError> {
    conn.execute(
        "DELETE FROM canned_replies WHERE agent_id = ?1 AND shortcut = ?2",
        params![agent.as_str(), shortcut.as_str()],
    )
    .map(|n| n > 0)
    .map_err(failed)
}
