//! The agents' canned replies in the MongoDB user store: a `canned_replies`
//! collection, one document per agent and shortcut (`_id` is both).
//!
//! The cap per agent is atomic without transactions: each reply holds one of
//! its agent's numbered slots (`slot`: `<agent>#<n>`, `n` below the cap),
//! and a unique index on `slot` refuses a second reply in a slot. Two saves
//! that pick the same free slot collide there and the loser picks again, so
//! however many saves run at once an agent never holds more than the cap.
//! A reply stored before slots existed gets one on its agent's next save.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::application::ports::{SavedReply, StoreFailure, UserStoreError};
use crate::domain::canned::{CannedReply, Shortcut};
use crate::domain::UserId;

const COLLECTION: &str = "canned_replies";

fn failed(e: mongodb::error::Error) -> UserStoreError {
    StoreFailure::new("mongodb canned reply request failed", e).into()
}

fn collection(db: &Database) -> Collection<Document> {
    db.collection::<Document>(COLLECTION)
}

/// One reply's id: the agent's id and the shortcut (a shortcut holds no `:`).
fn id(agent: &UserId, shortcut: &Shortcut) -> String {
    format!("{}:{}", agent.as_str(), shortcut.as_str())
}

/// The name of an agent's slot `n`.
fn slot(agent: &UserId, n: usize) -> String {
    format!("{}#{n}", agent.as_str())
}

/// The slot number a stored slot name holds, if it is this agent's.
fn slot_number(agent: &UserId, name: &str) -> Option<usize> {
    name.strip_prefix(agent.as_str())?
        .strip_prefix('#')?
        .parse()
        .ok()
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

/// The unique index that makes the cap atomic (only documents with a slot).
///
/// # Errors
/// [`UserStoreError`] when the index cannot be ensured.
pub(super) async fn ensure_indexes(db: &Database) -> Result<(), UserStoreError> {
    let index = IndexModel::builder()
        .keys(doc! { "slot": 1 })
        .options(
            IndexOptions::builder()
                .unique(true)
                .partial_filter_expression(doc! { "slot": { "$type": "string" } })
                .build(),
        )
        .build();
    collection(db)
        .create_index(index)
        .await
        .map(drop)
        .map_err(|e| StoreFailure::new("cannot ensure the canned reply slot index", e).into())
}

pub(super) async fn list(
    db: &Database,
    agent: &UserId,
) -> Result<Vec<CannedReply>, UserStoreError> {
    let docs: Vec<Document> = collection(db)
        .find(doc! { "agentId": agent.as_str() })
        .sort(doc! { "shortcut": 1 })
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    docs.iter()
        .map(|d| {
            let shortcut = d.get_str("shortcut").unwrap_or_default();
            let content = d.get_str("content").unwrap_or_default();
            CannedReply::parse(shortcut, content).map_err(|e| {
                UserStoreError::from(StoreFailure::new("a stored canned reply is invalid", e))
            })
        })
        .collect()
}

/// Replaces in place when the shortcut exists; otherwise takes a free slot
/// (see the module's note), or says the agent is full.
pub(super) async fn save(
    db: &Database,
    agent: &UserId,
    reply: &CannedReply,
    max: usize,
) -> Result<SavedReply, UserStoreError> {
    let replies = collection(db);
    let key = id(agent, &reply.shortcut);
    if replace(&replies, &key, reply).await? {
        return Ok(SavedReply::Replaced);
    }
    // Each lost race is another save that took a slot: at most `max` of
    // them before the agent is full (or the reply exists).
    for _ in 0..=max {
        let n = match free_slot(&replies, agent, max).await? {
            Slot::Free(n) => n,
            Slot::Full => return Ok(SavedReply::Full),
            Slot::Again => continue,
        };
        let document = doc! {
            "_id": &key,
            "agentId": agent.as_str(),
            "shortcut": reply.shortcut.as_str(),
            "content": reply.content(),
            "slot": slot(agent, n),
        };
        match replies.insert_one(document).await {
            Ok(_) => return Ok(SavedReply::Added),
            // The same shortcut saved meanwhile, or the slot taken.
            Err(e) if is_duplicate_key(&e) => {
                if replace(&replies, &key, reply).await? {
                    return Ok(SavedReply::Replaced);
                }
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(SavedReply::Full)
}

/// Replaces the content of the reply `key`; `false` when there is none.
async fn replace(
    replies: &Collection<Document>,
    key: &str,
    reply: &CannedReply,
) -> Result<bool, UserStoreError> {
    let replaced = replies
        .update_one(
            doc! { "_id": key },
            doc! { "$set": { "content": reply.content() } },
        )
        .await
        .map_err(failed)?;
    Ok(replaced.matched_count > 0)
}

/// What a look for a free slot found.
enum Slot {
    Free(usize),
    /// All the agent's slots are held.
    Full,
    /// Another save took a slot meanwhile: look again.
    Again,
}

/// The lowest slot of `agent` no reply holds, after giving replies stored
/// before slots existed one each.
async fn free_slot(
    replies: &Collection<Document>,
    agent: &UserId,
    max: usize,
) -> Result<Slot, UserStoreError> {
    let docs: Vec<Document> = replies
        .find(doc! { "agentId": agent.as_str() })
        .projection(doc! { "slot": 1 })
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    let held: HashSet<usize> = docs
        .iter()
        .filter_map(|d| d.get_str("slot").ok())
        .filter_map(|name| slot_number(agent, name))
        .collect();
    let mut free = (0..max).filter(|n| !held.contains(n));
    for legacy in docs.iter().filter(|d| d.get_str("slot").is_err()) {
        let Some(n) = free.next() else {
            return Ok(Slot::Full);
        };
        let id = legacy.get("_id").cloned().unwrap_or_default();
        let given = replies
            .update_one(
                doc! { "_id": id, "slot": { "$exists": false } },
                doc! { "$set": { "slot": slot(agent, n) } },
            )
            .await;
        match given {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => return Ok(Slot::Again),
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(free.next().map_or(Slot::Full, Slot::Free))
}

pub(super) async fn delete(
    db: &Database,
    agent: &UserId,
    shortcut: &Shortcut,
) -> Result<bool, UserStoreError> {
    collection(db)
        .delete_one(doc! { "_id": id(agent, shortcut) })
        .await
        .map(|r| r.deleted_count > 0)
        .map_err(failed)
}
