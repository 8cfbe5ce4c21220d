//! The satisfaction records of the SQLite transcript store:
//! a `csat` table beside `messages`, one row per conversation asked.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::application::ports::{StoreFailure, TranscriptStoreError};
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::handoff::AgentRef;
use crate::domain::{SessionId, UserId, Username};

/// Run with the transcript schema at every start-up.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS csat (
    session_id     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    agent_username TEXT NOT NULL,
    requested_at   INTEGER NOT NULL,
    rating         INTEGER NULL,
    comment        TEXT NULL,
    answered_at    INTEGER NULL
);
CREATE INDEX IF NOT EXISTS csat_requested_at ON csat (requested_at);
CREATE INDEX IF NOT EXISTS csat_agent_answered ON csat (agent_id, answered_at);
";

fn failed(e: rusqlite::Error) -> TranscriptStoreError {
    StoreFailure::new("sqlite csat query failed", e).into()
}

fn bad(what: &str) -> TranscriptStoreError {
    StoreFailure::bare(format!("a csat row has an invalid {what}")).into()
}

pub(super) fn request(conn: &Connection, r: &CsatRecord) -> Result<(), TranscriptStoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO csat
           (session_id, user_id, agent_id, agent_username, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            r.session.as_str(),
            r.user.as_str(),
            r.agent.id.as_str(),
            r.agent.username.as_str(),
            r.requested_at.timestamp_millis(),
        ],
    )
    .map(drop)
    .map_err(failed)
}

pub(super) fn answer(
    conn: &Connection,
    session: &SessionId,
    answer: &Csat,
    at: DateTime<Utc>,
    open_since: DateTime<Utc>,
) -> Result<Option<CsatRecord>, TranscriptStoreError> {
    let changed = conn
        .execute(
            "UPDATE csat SET rating = ?2, comment = ?3, answered_at = ?4
              WHERE session_id = ?1 AND requested_at >= ?5",
            params![
                session.as_str(),
                answer.rating.get(),
                answer.comment.as_ref().map(|c| c.as_str()),
                at.timestamp_millis(),
                open_since.timestamp_millis(),
            ],
        )
        .map_err(failed)?;
    if changed == 0 {
        return Ok(None);
    }
    read(conn, session)
}

type Row = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

pub(super) fn read(
    conn: &Connection,
    session: &SessionId,
) -> Result<Option<CsatRecord>, TranscriptStoreError> {
    let row: Option<Row> = conn
        .query_row(
            "SELECT user_id, agent_id, agent_username, requested_at, rating, comment, answered_at
               FROM csat WHERE session_id = ?1",
            params![session.as_str()],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()
        .map_err(failed)?;
    row.map(|row| parse(session, row)).transpose()
}

/// The answered records of conversations `agent` resolved, latest first.
pub(super) fn ratings_of(
    conn: &Connection,
    agent: &UserId,
    limit: usize,
) -> Result<Vec<CsatRecord>, TranscriptStoreError> {
    let mut statement = conn
        .prepare(
            "SELECT session_id, user_id, agent_id, agent_username, requested_at, rating, comment,
                    answered_at
               FROM csat WHERE agent_id = ?1 AND answered_at IS NOT NULL
              ORDER BY answered_at DESC LIMIT ?2",
        )
        .map_err(failed)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(params![agent.as_str(), limit], |r| {
            let session: String = r.get(0)?;
            let row: Row = (
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            );
            Ok((session, row))
        })
        .map_err(failed)?;
    let mut out = Vec::new();
    for row in rows {
        let (session, row) = row.map_err(failed)?;
        let session = SessionId::parse(&session).map_err(|_| bad("session_id"))?;
        out.push(parse(&session, row)?);
    }
    Ok(out)
}

fn parse(session: &SessionId, row: Row) -> Result<CsatRecord, TranscriptStoreError> {
    let (user, agent_id, agent_name, requested_at, rating, comment, answered_at) = row;
    let time = |ms: i64| DateTime::from_timestamp_millis(ms).ok_or_else(|| bad("time"));
    let answer = match (rating, answered_at) {
        (Some(rating), Some(at)) => Some((
            Csat::parse(rating, comment.as_deref()).map_err(|_| bad("rating"))?,
            time(at)?,
        )),
        _ => None,
    };
    Ok(CsatRecord {
        session: session.clone(),
        user: UserId::parse(&user).map_err(|_| bad("user_id"))?,
        agent: AgentRef {
            id: UserId::parse(&agent_id).map_err(|_| bad("agent_id"))?,
            username: Username::parse(&agent_name).map_err(|_| bad("agent_username"))?,
        },
        requested_at: time(requested_at)?,
        answer,
    })
}

pub(super) fn erase(conn: &Connection, session: &str) -> Result<(), TranscriptStoreError> {
    conn.execute("DELETE FROM csat WHERE session_id = ?1", params![session])
        .map(drop)
        .map_err(failed)
}

pub(super) fn expire(conn: &Connection, cutoff_ms: i64) -> Result<(), TranscriptStoreError> {
    conn.execute(
        "DELETE FROM csat WHERE requested_at < ?1",
        params![cutoff_ms],
    )
    .map(drop)
    .map_err(failed)
}
