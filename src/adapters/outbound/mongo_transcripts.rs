//! MongoDB-backed [`TranscriptStore`]: the `messages` collection, in the
//! database of the users, on the user store's client.
//!
//! Documents: `{_id: messageId, sessionId, userId, role, content, agent?:
//! {id, username}, ending?, seq, at: Date, feedback?: {rating, comment?},
//! superseded?: true}`. The message id as `_id` makes a
//! second recording of one message a duplicate key, which is ignored.
//! Retention is the sweeper's (`TRANSCRIPT_RETENTION`), not a TTL index: an
//! operator changing the setting would otherwise meet an index that refuses
//! its new options.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Collection, Database, IndexModel};

use crate::application::ports::StoreFailure;
use crate::application::ports::{Rated, TranscriptPage, TranscriptStore, TranscriptStoreError};
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::feedback::Feedback;
use crate::domain::handoff::AgentRef;
use crate::domain::transcript::{Speaker, TranscriptCursor, TranscriptEntry, TranscriptRole};
use crate::domain::{MessageId, SessionId, StreamStatus, UserId, Username};

const COLLECTION: &str = "messages";
const DUPLICATE_KEY: i32 = 11000;

/// Transcripts in a MongoDB collection.
#[derive(Clone, Debug)]
pub struct MongoTranscriptStore {
    messages: Collection<Document>,
    csat: super::mongo_csat::CsatCollection,
}

impl MongoTranscriptStore {
    /// The `messages` collection of `database`, with its indexes ensured.
    ///
    /// # Errors
    /// [`TranscriptStoreError`] if the indexes cannot be created.
    pub async fn open(database: &Database) -> Result<Self, TranscriptStoreError> {
        let messages = database.collection::<Document>(COLLECTION);
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "sessionId": 1, "at": 1, "seq": 1 })
                .build(),
            IndexModel::builder().keys(doc! { "at": 1 }).build(),
        ];
        messages.create_indexes(indexes).await.map_err(|e| {
            StoreFailure::new(
                format!("cannot ensure indexes on {}.{COLLECTION}", database.name()),
                e,
            )
        })?;
        let csat = super::mongo_csat::CsatCollection::open(database).await?;
        Ok(Self { messages, csat })
    }
}

fn failed(e: mongodb::error::Error) -> TranscriptStoreError {
    TranscriptStoreError::from(StoreFailure::new("mongodb request failed", e))
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY)
}

fn to_i64(n: u64) -> Result<i64, TranscriptStoreError> {
    i64::try_from(n).map_err(|_| {
        TranscriptStoreError::from(StoreFailure::bare(format!("{n} does not fit BSON")))
    })
}

fn bson_date(at: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(at.timestamp_millis())
}

fn entry_document(e: &TranscriptEntry) -> Result<Document, TranscriptStoreError> {
    let mut d = doc! {
        "_id": e.message_id.as_str(),
        "sessionId": e.session.as_str(),
        "userId": e.owner.as_str(),
        "role": e.speaker.role().as_str(),
        "content": e.content.as_str(),
        "seq": to_i64(e.seq)?,
        "at": bson_date(e.at),
    };
    if let Some(f) = &e.feedback {
        d.insert("feedback", feedback_document(f));
    }
    if e.superseded {
        d.insert("superseded", true);
    }
    match &e.speaker {
        Speaker::User => {}
        Speaker::Assistant { ending } => {
            d.insert("ending", ending.as_str());
        }
        Speaker::Agent(a) => {
            d.insert(
                "agent",
                doc! { "id": a.id.as_str(), "username": a.username.as_str() },
            );
        }
    }
    Ok(d)
}

fn feedback_document(f: &Feedback) -> Document {
    let mut d = doc! { "rating": f.rating.as_str() };
    if let Some(comment) = f.comment() {
        d.insert("comment", comment);
    }
    d
}

/// The feedback a document holds, if any; `Err` for one this adapter did not write.
fn document_feedback(d: &Document) -> Result<Option<Feedback>, ()> {
    let Some(f) = d.get("feedback") else {
        return Ok(None);
    };
    let Bson::Document(f) = f else {
        return Err(());
    };
    let rating = f.get_str("rating").map_err(drop)?;
    let comment = match f.get("comment") {
        None | Some(Bson::Null) => None,
        Some(Bson::String(c)) => Some(c.as_str()),
        Some(_) => return Err(()),
    };
    Feedback::parse(rating, comment).map(Some).map_err(drop)
}

/// A document this adapter did not write is a store failure rather than a guess.
fn document_entry(d: &Document) -> Result<TranscriptEntry, TranscriptStoreError> {
    let id = d.get_str("_id").unwrap_or("?").to_owned();
    let bad = |field: &str| {
        TranscriptStoreError::from(StoreFailure::bare(format!(
            "transcript document {id:?} in mongodb has an invalid {field}"
        )))
    };
    let text = |field: &str| d.get_str(field).map_err(|_| bad(field));
    let role = TranscriptRole::parse(text("role")?).map_err(|_| bad("role"))?;
    let speaker = match role {
        TranscriptRole::User => Speaker::User,
        TranscriptRole::Assistant => Speaker::Assistant {
            ending: StreamStatus::parse(text("ending")?).ok_or_else(|| bad("ending"))?,
        },
        TranscriptRole::Agent => {
            let agent = d.get_document("agent").map_err(|_| bad("agent"))?;
            Speaker::Agent(AgentRef {
                id: agent
                    .get_str("id")
                    .ok()
                    .and_then(|a| UserId::parse(a).ok())
                    .ok_or_else(|| bad("agent.id"))?,
                username: agent
                    .get_str("username")
                    .ok()
                    .and_then(|a| Username::parse(a).ok())
                    .ok_or_else(|| bad("agent.username"))?,
            })
        }
    };
    let seq = match d.get("seq") {
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
    .ok_or_else(|| bad("seq"))?;
    let at = d
        .get_datetime("at")
        .ok()
        .and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
        .ok_or_else(|| bad("at"))?;
    let mut entry = TranscriptEntry::new(
        SessionId::parse(text("sessionId")?).map_err(|_| bad("sessionId"))?,
        UserId::parse(text("userId")?).map_err(|_| bad("userId"))?,
        MessageId::parse(&id).map_err(|_| bad("_id"))?,
        speaker,
        text("content")?.to_owned(),
        seq,
        at,
    );
    entry.feedback = document_feedback(d).map_err(|()| bad("feedback"))?;
    entry.superseded = d.get_bool("superseded").unwrap_or(false);
    Ok(entry)
}

/// 9999-12-31T23:59:59.999Z in Unix milliseconds.
const LAST_MS_OF_9999: i64 = 253_402_300_799_999;

#[async_trait]
impl TranscriptStore for MongoTranscriptStore {
    async fn append(&self, entry: &TranscriptEntry) -> Result<(), TranscriptStoreError> {
        match self.messages.insert_one(entry_document(entry)?).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }

    async fn page(
        &self,
        session: &SessionId,
        before: Option<TranscriptCursor>,
        limit: usize,
    ) -> Result<TranscriptPage, TranscriptStoreError> {
        let mut filter = doc! { "sessionId": session.as_str() };
        if let Some(c) = before {
            // A cursor may name any millisecond a client wrote; no entry is
            // later than the year 9999, and MongoDB-wire servers written in
            // languages whose dates end there refuse a BSON date beyond it.
            let at = mongodb::bson::DateTime::from_millis(c.at_ms.min(LAST_MS_OF_9999));
            filter.insert(
                "$or",
                vec![
                    doc! { "at": { "$lt": at } },
                    doc! { "at": at, "seq": { "$lt": to_i64(c.seq)? } },
                ],
            );
        }
        let fetch = TranscriptPage::entries_to_read(limit);
        let documents: Vec<Document> = self
            .messages
            .find(filter)
            .sort(doc! { "at": -1, "seq": -1 })
            .limit(fetch)
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        let entries = documents
            .iter()
            .map(document_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TranscriptPage::from_newest_first(entries, limit))
    }

    async fn rate(
        &self,
        session: &SessionId,
        message: &MessageId,
        feedback: &Feedback,
    ) -> Result<Rated, TranscriptStoreError> {
        let filter = doc! { "_id": message.as_str(), "sessionId": session.as_str() };
        let found = self
            .messages
            .find_one(filter.clone())
            .projection(doc! { "role": 1 })
            .await
            .map_err(failed)?;
        let Some(found) = found else {
            return Ok(Rated::NotFound);
        };
        if found.get_str("role").ok() != Some(TranscriptRole::Assistant.as_str()) {
            return Ok(Rated::NotAnAnswer);
        }
        self.messages
            .update_one(
                filter,
                doc! { "$set": { "feedback": feedback_document(feedback) } },
            )
            .await
            .map_err(failed)?;
        Ok(Rated::Done)
    }

    async fn supersede_after(
        &self,
        session: &SessionId,
        asked: &MessageId,
    ) -> Result<u64, TranscriptStoreError> {
        let found = self
            .messages
            .find_one(doc! { "_id": asked.as_str(), "sessionId": session.as_str() })
            .await
            .map_err(failed)?;
        let Some(found) = found else {
            return Ok(0);
        };
        let (Ok(at), Some(seq)) = (found.get_datetime("at"), found.get("seq").cloned()) else {
            return Err(StoreFailure::bare("the asked entry has no position").into());
        };
        let at = *at;
        let filter = doc! {
            "sessionId": session.as_str(),
            "role": TranscriptRole::Assistant.as_str(),
            "$or": [
                { "at": { "$gt": at } },
                { "at": at, "seq": { "$gt": seq } },
            ],
        };
        self.messages
            .update_many(filter, doc! { "$set": { "superseded": true } })
            .await
            .map(|r| r.matched_count)
            .map_err(failed)
    }

    async fn request_csat(&self, record: &CsatRecord) -> Result<(), TranscriptStoreError> {
        self.csat.request(record).await
    }

    async fn answer_csat(
        &self,
        session: &SessionId,
        answer: &Csat,
        at: DateTime<Utc>,
        open_since: DateTime<Utc>,
    ) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        self.csat.answer(session, answer, at, open_since).await
    }

    async fn csat(&self, session: &SessionId) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        self.csat.read(session).await
    }

    async fn ratings_of(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<CsatRecord>, TranscriptStoreError> {
        self.csat.ratings_of(agent, limit).await
    }

    async fn owner(&self, session: &SessionId) -> Result<Option<UserId>, TranscriptStoreError> {
        let found = self
            .messages
            .find_one(doc! { "sessionId": session.as_str() })
            .projection(doc! { "userId": 1 })
            .await
            .map_err(failed)?;
        found
            .map(|d| {
                d.get_str("userId")
                    .ok()
                    .and_then(|u| UserId::parse(u).ok())
                    .ok_or_else(|| {
                        TranscriptStoreError::from(StoreFailure::bare(
                            "a transcript document has an invalid userId",
                        ))
                    })
            })
            .transpose()
    }

    async fn erase(&self, session: &SessionId) -> Result<u64, TranscriptStoreError> {
        self.csat.erase(session).await?;
        self.messages
            .delete_many(doc! { "sessionId": session.as_str() })
            .await
            .map(|r| r.deleted_count)
            .map_err(failed)
    }

    async fn expire(&self, older_than: DateTime<Utc>) -> Result<u64, TranscriptStoreError> {
        self.csat.expire(older_than).await?;
        self.messages
            .delete_many(doc! { "at": { "$lt": bson_date(older_than) } })
            .await
            .map(|r| r.deleted_count)
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(speaker: Speaker) -> TranscriptEntry {
        TranscriptEntry::new(
            SessionId::parse("sess_a").unwrap(),
            UserId::parse("65a1b2c3d4e5f6a7b8c9d0e1").unwrap(),
            MessageId::generate(),
            speaker,
            "héllo".into(),
            3,
            Utc::now(),
        )
    }

    #[test]
    fn every_speaker_round_trips_through_its_document() {
        for speaker in [
            Speaker::User,
            Speaker::Assistant {
                ending: StreamStatus::Failed,
            },
            Speaker::Agent(AgentRef {
                id: UserId::parse("65a1b2c3d4e5f6a7b8c9d0e2").unwrap(),
                username: Username::parse("agent_bob").unwrap(),
            }),
        ] {
            let mut e = entry(speaker);
            let d = entry_document(&e).unwrap();
            assert!(matches!(d.get("at"), Some(Bson::DateTime(_))));
            assert_eq!(document_entry(&d).unwrap(), e);
            e.feedback = Some(Feedback::parse("down", Some("too long")).unwrap());
            e.superseded = true;
            let d = entry_document(&e).unwrap();
            assert!(matches!(d.get("at"), Some(Bson::DateTime(_))));
            assert_eq!(document_entry(&d).unwrap(), e);
        }
    }

    #[test]
    fn a_foreign_document_is_a_failure_not_a_panic() {
        let mut d = entry_document(&entry(Speaker::User)).unwrap();
        d.insert("role", "robot");
        assert!(document_entry(&d).is_err());
        let mut d = entry_document(&entry(Speaker::User)).unwrap();
        d.insert("seq", "three");
        assert!(document_entry(&d).is_err());
        let mut d = entry_document(&entry(Speaker::User)).unwrap();
        d.insert("role", "agent");
        assert!(
            document_entry(&d).is_err(),
            "an agent entry names its agent"
        );
        let mut d = entry_document(&entry(Speaker::User)).unwrap();
        d.insert("feedback", doc! { "rating": "meh" });
        assert!(document_entry(&d).is_err());
    }
}
