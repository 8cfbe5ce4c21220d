//! The satisfaction records of the MongoDB transcript store:
//! a `csat` collection beside `messages`, one document per conversation
//! asked, its `_id` the session id.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Collection, Database, IndexModel};

use crate::application::ports::{StoreFailure, TranscriptStoreError};
use crate::domain::csat::{Csat, CsatRecord};
use crate::domain::handoff::AgentRef;
use crate::domain::{SessionId, UserId, Username};

const COLLECTION: &str = "csat";

fn failed(e: mongodb::error::Error) -> TranscriptStoreError {
    StoreFailure::new("mongodb csat request failed", e).into()
}

fn bad(what: &str) -> TranscriptStoreError {
    StoreFailure::bare(format!("a csat document has an invalid {what}")).into()
}

fn date(at: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(at.timestamp_millis())
}

/// The `csat` collection of one database.
#[derive(Clone, Debug)]
pub(super) struct CsatCollection(Collection<Document>);

impl CsatCollection {
    /// The collection, with its expiry index ensured.
    pub(super) async fn open(database: &Database) -> Result<Self, TranscriptStoreError> {
        let csat = database.collection::<Document>(COLLECTION);
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "requestedAt": 1 })
                .build(),
            // An agent's latest ratings.
            IndexModel::builder()
                .keys(doc! { "agent.id": 1, "answer.at": -1 })
                .build(),
        ];
        csat.create_indexes(indexes).await.map_err(|e| {
            StoreFailure::new(
                format!("cannot ensure indexes on {}.{COLLECTION}", database.name()),
                e,
            )
        })?;
        Ok(Self(csat))
    }

    pub(super) async fn request(&self, r: &CsatRecord) -> Result<(), TranscriptStoreError> {
        let record = doc! {
            "_id": r.session.as_str(),
            "userId": r.user.as_str(),
            "agent": { "id": r.agent.id.as_str(), "username": r.agent.username.as_str() },
            "requestedAt": date(r.requested_at),
        };
        self.0
            .replace_one(doc! { "_id": r.session.as_str() }, record)
            .upsert(true)
            .await
            .map(drop)
            .map_err(failed)
    }

    pub(super) async fn answer(
        &self,
        session: &SessionId,
        answer: &Csat,
        at: DateTime<Utc>,
        open_since: DateTime<Utc>,
    ) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        let mut given = doc! { "rating": i32::from(answer.rating.get()), "at": date(at) };
        if let Some(comment) = &answer.comment {
            given.insert("comment", comment.as_str());
        }
        let filter = doc! { "_id": session.as_str(), "requestedAt": { "$gte": date(open_since) } };
        let changed = self
            .0
            .update_one(filter, doc! { "$set": { "answer": given } })
            .await
            .map_err(failed)?;
        if changed.matched_count == 0 {
            return Ok(None);
        }
        self.read(session).await
    }

    pub(super) async fn read(
        &self,
        session: &SessionId,
    ) -> Result<Option<CsatRecord>, TranscriptStoreError> {
        let found = self
            .0
            .find_one(doc! { "_id": session.as_str() })
            .await
            .map_err(failed)?;
        found.map(|d| parse(session, &d)).transpose()
    }

    pub(super) async fn ratings_of(
        &self,
        agent: &UserId,
        limit: usize,
    ) -> Result<Vec<CsatRecord>, TranscriptStoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let docs: Vec<Document> = self
            .0
            .find(doc! { "agent.id": agent.as_str(), "answer": { "$exists": true } })
            .sort(doc! { "answer.at": -1 })
            .limit(limit)
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        docs.iter()
            .map(|d| {
                let id = d.get_str("_id").map_err(|_| bad("_id"))?;
                let session = SessionId::parse(id).map_err(|_| bad("_id"))?;
                parse(&session, d)
            })
            .collect()
    }

    pub(super) async fn erase(&self, session: &SessionId) -> Result<(), TranscriptStoreError> {
        self.0
            .delete_one(doc! { "_id": session.as_str() })
            .await
            .map(drop)
            .map_err(failed)
    }

    pub(super) async fn expire(
        &self,
        older_than: DateTime<Utc>,
    ) -> Result<(), TranscriptStoreError> {
        self.0
            .delete_many(doc! { "requestedAt": { "$lt": date(older_than) } })
            .await
            .map(drop)
            .map_err(failed)
    }
}

fn parse(session: &SessionId, d: &Document) -> Result<CsatRecord, TranscriptStoreError> {
    let time = |d: &Document, key: &str| {
        d.get_datetime(key)
            .ok()
            .and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
            .ok_or_else(|| bad(key))
    };
    let agent = d.get_document("agent").map_err(|_| bad("agent"))?;
    let answer = match d.get_document("answer") {
        Ok(a) => {
            let rating = a.get_i32("rating").map_err(|_| bad("rating"))?;
            let comment = a.get_str("comment").ok();
            let csat = Csat::parse(i64::from(rating), comment).map_err(|_| bad("rating"))?;
            Some((csat, time(a, "at")?))
        }
        Err(_) => None,
    };
    Ok(CsatRecord {
        session: session.clone(),
        user: UserId::parse(d.get_str("userId").map_err(|_| bad("userId"))?)
            .map_err(|_| bad("userId"))?,
        agent: AgentRef {
            id: UserId::parse(agent.get_str("id").map_err(|_| bad("agent.id"))?)
                .map_err(|_| bad("agent.id"))?,
            username: Username::parse(
                agent
                    .get_str("username")
                    .map_err(|_| bad("agent.username"))?,
            )
            .map_err(|_| bad("agent.username"))?,
        },
        requested_at: time(d, "requestedAt")?,
        answer,
    })
}
