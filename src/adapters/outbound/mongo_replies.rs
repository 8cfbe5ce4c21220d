//! The agents' canned replies in the MongoDB user store: a `canned_replies`
//! collection, one document per agent and shortcut (`_id` is both).

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Collection, Database};

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

/// Replaces in place when the shortcut exists; otherwise counts first, so
/// two concurrent saves of new shortcuts may end one over `max` (bounded).
pub(super) async fn save(
    db: &Database,
    agent: &UserId,
    reply: &CannedReply,
    max: usize,
) -> Result<SavedReply, UserStoreError> {
    let replies = collection(db);
    let key = id(agent, &reply.shortcut);
    let replaced = replies
        .update_one(
            doc! { "_id": &key },
            doc! { "$set": { "content": reply.content() } },
        )
        .await
        .map_err(failed)?;
    if replaced.matched_count > 0 {
        return Ok(SavedReply::Replaced);
    }
    let count = replies
        .count_documents(doc! { "agentId": agent.as_str() })
        .await
        .map_err(failed)?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= max {
        return Ok(SavedReply::Full);
    }
    let document = doc! {
        "_id": &key,
        "agentId": agent.as_str(),
        "shortcut": reply.shortcut.as_str(),
        "content": reply.content(),
    };
    replies
        .replace_one(doc! { "_id": &key }, document)
        .upsert(true)
        .await
        .map_err(failed)?;
    Ok(SavedReply::Added)
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
