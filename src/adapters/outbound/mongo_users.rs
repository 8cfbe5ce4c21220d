//! MongoDB-backed [`UserRepository`], reading and writing the `users`
//! collection in exactly the shape the Node.js/Mongoose server used, so both
//! servers can share one database during a migration.
//!
//! Documents are mapped by hand rather than through serde so that legacy
//! quirks (no `isActive`, `lastLogin: null`, Mongoose's `__v`) are tolerated
//! explicitly and the written shape is visible in one place.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, Collation, CollationStrength, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::application::ports::StoreFailure;
use crate::application::ports::{
    RefreshRecord, RefreshTokenStore, Rotation, SavedReply, UserRepository, UserStoreError,
};
use crate::domain::canned::{CannedReply, Shortcut};
use crate::domain::{
    EmailAddress, NewUser, PasswordHash, TokenDigest, User, UserId, UserRole, Username,
};

const DEFAULT_DATABASE: &str = "chatbot";
const COLLECTION: &str = "users";
/// Refresh tokens, by digest; a collection this server adds beside the Node ones.
const REFRESH_COLLECTION: &str = "refresh_tokens";
/// The folded username this server adds to the documents it writes.
const FOLDED_FIELD: &str = "usernameLower";
/// The role (`user` or `agent`); absent on documents the Node server wrote.
const ROLE_FIELD: &str = "role";
const DUPLICATE_KEY: i32 = 11000;

/// Users in a MongoDB collection.
#[derive(Clone, Debug)]
pub struct MongoUserRepository {
    database: Database,
    users: Collection<Document>,
    refresh: Collection<Document>,
    /// Whether the collection held users without the folded username at
    /// start-up (written by the Node server): then registrations also look
    /// for another spelling of the name among them, which the unique index
    /// on the folded field cannot see.
    legacy_unfolded: bool,
    /// Whether the collection held any email with capitals at start-up (written
    /// by the Node server). This server only writes lower-case emails, so when
    /// there were none the slow case-insensitive checks are skipped for good.
    legacy_mixed_case: bool,
}

impl MongoUserRepository {
    /// Connects using the database named in the URI path (`mongodb://h/db`),
    /// or `chatbot` when the URI names none, as the Node server did.
    ///
    /// # Errors
    /// [`UserStoreError::Unavailable`] if the URI is invalid, the server cannot
    /// be reached, or the unique indexes cannot be ensured.
    pub async fn connect(uri: &str) -> Result<Self, UserStoreError> {
        let options = parse_options(uri).await?;
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        Self::from_options(options, &database).await
    }

    /// Connects to an explicitly named database, ignoring any in the URI
    /// (tests use a throwaway one per run).
    ///
    /// # Errors
    /// As [`MongoUserRepository::connect`].
    pub async fn connect_with_database(uri: &str, database: &str) -> Result<Self, UserStoreError> {
        let options = parse_options(uri).await?;
        Self::from_options(options, database).await
    }

    /// The database the users live in, for the stores kept beside them
    /// (transcripts) on the same client.
    pub fn database(&self) -> &Database {
        &self.database
    }

    async fn from_options(options: ClientOptions, database: &str) -> Result<Self, UserStoreError> {
        let client = Client::with_options(options)
            .map_err(|e| StoreFailure::new("cannot create the MongoDB client", e))?;
        let database = client.database(database);
        let users = database.collection::<Document>(COLLECTION);
        let refresh = database.collection::<Document>(REFRESH_COLLECTION);
        let mut repo = Self {
            database,
            users,
            refresh,
            legacy_unfolded: false,
            legacy_mixed_case: false,
        };
        repo.ensure_indexes().await?;
        repo.ensure_refresh_indexes().await?;
        super::mongo_replies::ensure_indexes(&repo.database).await?;
        repo.legacy_unfolded = repo
            .users
            .find_one(doc! { FOLDED_FIELD: { "$exists": false } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .is_some();
        // One scan at start-up instead of one per registration.
        repo.legacy_mixed_case = repo
            .users
            .find_one(doc! { "email": { "$regex": "[A-Z]" } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .is_some();
        if repo.legacy_mixed_case {
            tracing::warn!(
                "users collection holds emails with capitals (from the Node server): \
                 email lookups fall back to case-insensitive matching; lower-case them \
                 to make registrations and logins by email fully indexed again"
            );
        }
        Ok(repo)
    }

    /// The unique indexes are what make `create` atomic about duplicates, so
    /// starting without them would silently allow two accounts per name.
    /// Mongoose's `unique: true` built the same `username_1` / `email_1`
    /// indexes, so on a legacy database this is a no-op.
    async fn ensure_indexes(&self) -> Result<(), UserStoreError> {
        let unique = || IndexOptions::builder().unique(true).build();
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "username": 1 })
                .options(unique())
                .build(),
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(unique())
                .build(),
            // Covers only documents that have the field (this server's), so
            // legacy Node documents are left as they are.
            IndexModel::builder()
                .keys(doc! { FOLDED_FIELD: 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .partial_filter_expression(doc! { FOLDED_FIELD: { "$type": "string" } })
                        .build(),
                )
                .build(),
        ];
        self.users.create_indexes(indexes).await.map_err(|e| {
            let what = format!(
                "cannot ensure unique indexes on {}.{COLLECTION} (username, email)",
                self.database.name()
            );
            // Only the data can be blamed when the server said so: anything
            // else (a lost connection, missing privileges) is in the driver's words.
            let context = if blocks_an_index(&e) {
                format!("{what}; existing duplicates or a conflicting index must be fixed first")
            } else {
                what
            };
            UserStoreError::from(StoreFailure::new(context, e))
        })?;
        Ok(())
    }

    /// Lookups by family and user, and MongoDB's own expiry of old tokens.
    async fn ensure_refresh_indexes(&self) -> Result<(), UserStoreError> {
        let indexes = [
            IndexModel::builder().keys(doc! { "family": 1 }).build(),
            IndexModel::builder().keys(doc! { "userId": 1 }).build(),
            IndexModel::builder()
                .keys(doc! { "expiresAt": 1 })
                .options(
                    IndexOptions::builder()
                        .expire_after(std::time::Duration::ZERO)
                        .build(),
                )
                .build(),
        ];
        self.refresh
            .create_indexes(indexes)
            .await
            .map_err(|e| StoreFailure::new("cannot ensure refresh token indexes", e))?;
        Ok(())
    }

    /// Whether a legacy document (no folded field) holds another spelling of
    /// `username`. The index cannot answer this, so it scans; it only runs
    /// while such documents exist.
    async fn legacy_spelling_taken(&self, username: &Username) -> Result<bool, UserStoreError> {
        let found = self
            .users
            .find_one(doc! { "username": username.as_str(), FOLDED_FIELD: { "$exists": false } })
            .collation(case_insensitive())
            .projection(doc! { "username": 1 })
            .await
            .map_err(unavailable)?;
        Ok(found.is_some_and(|d| d.get_str("username").ok() != Some(username.as_str())))
    }

    async fn find_one(&self, filter: Document) -> Result<Option<User>, UserStoreError> {
        let found = self.users.find_one(filter).await.map_err(unavailable)?;
        found.map(|d| document_to_user(&d)).transpose()
    }

    /// The user whose stored email equals `email` ignoring case, for legacy
    /// rows the Node server wrote without lower-casing (`Alice@Example.com`).
    ///
    /// The `email_1` index uses the simple (binary) collation, so this query
    /// cannot use it and scans the collection; callers only reach for it when
    /// the indexed exact match is not enough. Sorting by `_id` makes the
    /// answer deterministic (the oldest account) should legacy data hold two
    /// spellings of one address.
    async fn find_by_email_ignoring_case(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<Document>, UserStoreError> {
        self.users
            .find_one(doc! { "email": email.as_str() })
            .collation(case_insensitive())
            .sort(doc! { "_id": 1 })
            .await
            .map_err(unavailable)
    }
}

/// ICU strength 2 compares base letters and accents but not case, which is
/// how `EmailAddress::parse` normalises (it only lower-cases).
fn case_insensitive() -> Collation {
    Collation::builder()
        .locale("en")
        .strength(CollationStrength::Secondary)
        .build()
}

async fn parse_options(uri: &str) -> Result<ClientOptions, UserStoreError> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| StoreFailure::new("invalid MongoDB URI", e))?;
    if options.app_name.is_none() {
        options.app_name = Some("chatbot-server".to_owned());
    }
    Ok(options)
}

/// Duplicate keys (11000) and an index of the same name with other options
/// or keys (85, 86): what the data or an old index does to `createIndexes`.
fn blocks_an_index(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if matches!(c.code, 11000 | 85 | 86))
}

fn unavailable(e: mongodb::error::Error) -> UserStoreError {
    UserStoreError::from(StoreFailure::new("mongodb request failed", e))
}

/// Both fields have a unique index, so a duplicate-key error must say which
/// one refused the insert; the server names the index and the key.
fn map_insert_error(e: mongodb::error::Error) -> UserStoreError {
    let duplicate = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => {
            Some(w.message.as_str())
        }
        ErrorKind::InsertMany(many) => many
            .write_errors
            .as_deref()
            .and_then(|errs| errs.iter().find(|w| w.code == DUPLICATE_KEY))
            .map(|w| w.message.as_str()),
        ErrorKind::Command(c) if c.code == DUPLICATE_KEY => Some(c.message.as_str()),
        _ => None,
    };
    match duplicate.map(classify_duplicate_key) {
        Some(Some(taken)) => taken,
        Some(None) => UserStoreError::from(StoreFailure::new(
            "duplicate key on an unexpected index of users",
            e,
        )),
        None => unavailable(e),
    }
}

/// Reads messages like `E11000 duplicate key error collection: db.users
/// index: username_1 dup key: { username: "bob" }`. The index and key parts
/// are checked before any loose match because the database or collection
/// name could itself contain "email" or "username".
fn classify_duplicate_key(message: &str) -> Option<UserStoreError> {
    let field_of = |part: &str| -> Option<UserStoreError> {
        let part = part.trim_start_matches(['{', ' ', '"']);
        if part.starts_with("username") {
            Some(UserStoreError::UsernameTaken)
        } else if part.starts_with("email") {
            Some(UserStoreError::EmailTaken)
        } else {
            None
        }
    };
    message
        .split_once("index: ")
        .and_then(|(_, rest)| field_of(rest))
        .or_else(|| {
            message
                .split_once("dup key: ")
                .and_then(|(_, rest)| field_of(rest))
        })
}

/// The document the Node server wrote for a new user: Mongoose left an unset
/// `lastLogin` out entirely (and added a `__v` nothing reads).
fn new_user_document(id: ObjectId, user: &NewUser, created_at: DateTime<Utc>) -> Document {
    doc! {
        "_id": id,
        "username": user.username.as_str(),
        "password": user.password_hash.as_str(),
        "email": user.email.as_str(),
        "createdAt": bson_date(created_at),
        "isActive": true,
        // Additive to the Node shape: what case-insensitive uniqueness is
        // enforced on. Node ignores it; documents without it still load.
        FOLDED_FIELD: user.username.folded(),
    }
}

// bson's chrono bridge is behind a feature this crate does not enable;
// milliseconds since the epoch are the exact BSON representation anyway.
fn bson_date(at: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(at.timestamp_millis())
}

/// `None` for dates chrono cannot represent (BSON allows ±292 million years).
fn chrono_date(at: mongodb::bson::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(at.timestamp_millis())
}

/// A document that does not parse cannot be served without breaking the
/// domain's guarantees, so it is reported as a store failure and logged.
fn document_to_user(doc: &Document) -> Result<User, UserStoreError> {
    let oid = doc.get_object_id("_id").ok();
    let bad = |field: &str, detail: String| {
        let id = oid.map_or_else(|| format!("{:?}", doc.get("_id")), |o| o.to_hex());
        UserStoreError::from(StoreFailure::bare(format!(
            "user document {id} in mongodb has an invalid {field}: {detail}"
        )))
    };
    let oid = oid.ok_or_else(|| bad("_id", "not an ObjectId".to_owned()))?;
    let id = UserId::parse(&oid.to_hex()).map_err(|e| bad("_id", e.to_string()))?;
    let text = |field: &str| -> Result<&str, UserStoreError> {
        doc.get_str(field).map_err(|e| bad(field, e.to_string()))
    };
    let username =
        Username::parse(text("username")?).map_err(|e| bad("username", e.to_string()))?;
    let email = EmailAddress::parse(text("email")?).map_err(|e| bad("email", e.to_string()))?;
    let password_hash = PasswordHash::new(text("password")?);
    let created_at = match doc.get("createdAt") {
        Some(Bson::DateTime(t)) => {
            chrono_date(*t).ok_or_else(|| bad("createdAt", t.to_string()))?
        }
        // Mongoose always set createdAt, but a hand-inserted user may lack it;
        // the ObjectId carries the creation second, which is close enough.
        None | Some(Bson::Null) => chrono_date(oid.timestamp())
            .ok_or_else(|| bad("createdAt", "absent, and _id has no usable time".to_owned()))?,
        Some(other) => return Err(bad("createdAt", format!("{:?}", other.element_type()))),
    };
    let last_login = match doc.get("lastLogin") {
        Some(Bson::DateTime(t)) => {
            Some(chrono_date(*t).ok_or_else(|| bad("lastLogin", t.to_string()))?)
        }
        None | Some(Bson::Null) => None,
        Some(other) => return Err(bad("lastLogin", format!("{:?}", other.element_type()))),
    };
    let is_active = match doc.get("isActive") {
        Some(Bson::Boolean(b)) => *b,
        // Users created before the Node schema grew `isActive` are active.
        None | Some(Bson::Null) => true,
        Some(other) => return Err(bad("isActive", format!("{:?}", other.element_type()))),
    };
    let role = match doc.get(ROLE_FIELD) {
        Some(Bson::String(raw)) => {
            UserRole::parse(raw).map_err(|e| bad(ROLE_FIELD, e.to_string()))?
        }
        // Node documents have no role: their users are customers.
        None | Some(Bson::Null) => UserRole::User,
        Some(other) => return Err(bad(ROLE_FIELD, format!("{:?}", other.element_type()))),
    };
    Ok(User {
        id,
        username,
        email,
        password_hash,
        created_at,
        last_login,
        is_active,
        role,
    })
}

#[async_trait]
impl UserRepository for MongoUserRepository {
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        let oid = ObjectId::new();
        // BSON dates hold milliseconds; returning the truncated value keeps
        // `create` and a later `find_*` in agreement.
        let created_at = user.created_at.trunc_subsecs(3);
        let document = new_user_document(oid, &user, created_at);
        // The unique `email_1` index is case-sensitive. Everything this server
        // writes is lower-cased, so between its own registrations that index
        // settles duplicates atomically; an exact match is left for the insert
        // to report, so which field it names is unchanged by this check. Only
        // legacy mixed-case rows from the Node server (`Alice@Example.com`)
        // would slip past the index, and this pre-check exists solely for
        // them. It is not atomic: while the Node server still writes to the
        // same collection, a mixed-case insert racing this one can still
        // produce a second account.
        // Same story for usernames: only legacy documents lack the folded field.
        if self.legacy_unfolded && self.legacy_spelling_taken(&user.username).await? {
            return Err(UserStoreError::UsernameTaken);
        }
        if self.legacy_mixed_case {
            let existing = self.find_by_email_ignoring_case(&user.email).await?;
            if existing.is_some_and(|d| d.get_str("email").ok() != Some(user.email.as_str())) {
                return Err(UserStoreError::EmailTaken);
            }
        }
        self.users
            .insert_one(document)
            .await
            .map_err(map_insert_error)?;
        Ok(User {
            id: UserId::parse(&oid.to_hex())
                .map_err(|e| StoreFailure::new("generated id rejected", e))?,
            username: user.username,
            email: user.email,
            password_hash: user.password_hash,
            created_at,
            last_login: None,
            is_active: true,
            role: UserRole::User,
        })
    }

    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, UserStoreError> {
        // Every id this store issues is an ObjectId; anything else cannot exist.
        let Ok(oid) = ObjectId::parse_str(id.as_str()) else {
            return Ok(None);
        };
        self.find_one(doc! { "_id": oid }).await
    }

    async fn find_by_username(&self, username: &Username) -> Result<Option<User>, UserStoreError> {
        self.find_one(doc! { "username": username.as_str() }).await
    }

    async fn find_by_email(&self, email: &EmailAddress) -> Result<Option<User>, UserStoreError> {
        // The exact match on the lower-cased address uses the `email_1` index
        // and finds every user this server created.
        if let Some(user) = self.find_one(doc! { "email": email.as_str() }).await? {
            return Ok(Some(user));
        }
        // Users migrated from the Node server may be stored with mixed case
        // (`Alice@Example.com`) and would otherwise be unable to log in by
        // email. The case-insensitive fallback cannot use the index, so it only
        // runs on a miss, and only when such legacy rows existed at start-up.
        if !self.legacy_mixed_case {
            return Ok(None);
        }
        self.find_by_email_ignoring_case(email)
            .await?
            .map(|d| document_to_user(&d))
            .transpose()
    }

    async fn record_login(
        &self,
        id: &UserId,
        at: DateTime<Utc>,
        rehashed: Option<PasswordHash>,
    ) -> Result<(), UserStoreError> {
        let Ok(oid) = ObjectId::parse_str(id.as_str()) else {
            return Err(UserStoreError::NotFound);
        };
        let mut set = doc! { "lastLogin": bson_date(at) };
        if let Some(hash) = rehashed {
            set.insert("password", hash.as_str());
        }
        let result = self
            .users
            .update_one(doc! { "_id": oid }, doc! { "$set": set })
            .await
            .map_err(unavailable)?;
        if result.matched_count == 0 {
            Err(UserStoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn set_role(&self, username: &Username, role: UserRole) -> Result<User, UserStoreError> {
        // Additive to the Node shape, like the folded name: Node ignores it.
        let result = self
            .users
            .update_one(
                doc! { "username": username.as_str() },
                doc! { "$set": { ROLE_FIELD: role.as_str() } },
            )
            .await
            .map_err(unavailable)?;
        if result.matched_count == 0 {
            return Err(UserStoreError::NotFound);
        }
        self.find_by_username(username)
            .await?
            .ok_or(UserStoreError::NotFound)
    }

    async fn agent_count(&self) -> Result<u64, UserStoreError> {
        // A document without `isActive` is active (see `user_from`).
        self.users
            .count_documents(doc! {
                ROLE_FIELD: UserRole::Agent.as_str(),
                "isActive": { "$ne": false },
            })
            .await
            .map_err(unavailable)
    }

    async fn replies(&self, agent: &UserId) -> Result<Vec<CannedReply>, UserStoreError> {
        super::mongo_replies::list(&self.database, agent).await
    }

    async fn save_reply(
        &self,
        agent: &UserId,
        reply: &CannedReply,
        max: usize,
    ) -> Result<SavedReply, UserStoreError> {
        super::mongo_replies::save(&self.database, agent, reply, max).await
    }

    async fn delete_reply(
        &self,
        agent: &UserId,
        shortcut: &Shortcut,
    ) -> Result<bool, UserStoreError> {
        super::mongo_replies::delete(&self.database, agent, shortcut).await
    }

    async fn ping(&self) -> Result<(), UserStoreError> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// Refresh tokens in `refresh_tokens`: `{_id: digest, family, userId,
/// issuedAt, expiresAt, rotatedAt, revoked}`; a TTL index drops expired ones.
#[async_trait]
impl RefreshTokenStore for MongoUserRepository {
    async fn insert(&self, record: &RefreshRecord) -> Result<(), UserStoreError> {
        self.refresh
            .insert_one(doc! {
                "_id": record.digest.as_str(),
                "family": record.family.as_str(),
                "userId": record.user_id.as_str(),
                "issuedAt": bson_date(record.issued_at),
                "expiresAt": bson_date(record.expires_at),
                "rotatedAt": Bson::Null,
                "revoked": false,
            })
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn rotate(
        &self,
        presented: &TokenDigest,
        successor: &TokenDigest,
        now: DateTime<Utc>,
        successor_expires_at: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<Rotation, UserStoreError> {
        // The conditional update is the atomic step: of two rotations of one
        // token, only one finds it not yet rotated.
        let won = self
            .refresh
            .find_one_and_update(
                doc! {
                    "_id": presented.as_str(), "rotatedAt": Bson::Null,
                    "revoked": false, "expiresAt": { "$gt": bson_date(now) },
                },
                doc! { "$set": { "rotatedAt": bson_date(now) } },
            )
            .await
            .map_err(unavailable)?;
        if let Some(old) = won {
            let user_id = refresh_user(&old)?;
            let family = old.get_str("family").map_err(|_| corrupt_refresh())?;
            let inserted = self
                .refresh
                .insert_one(doc! {
                    "_id": successor.as_str(), "family": family, "userId": user_id.as_str(),
                    "issuedAt": bson_date(now), "expiresAt": bson_date(successor_expires_at),
                    "rotatedAt": Bson::Null, "revoked": false,
                })
                .await;
            match inserted {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
            return Ok(Rotation::Rotated { user_id });
        }
        self.not_rotated(presented, now, grace).await
    }

    async fn revoke_family(
        &self,
        digest: &TokenDigest,
        user: &UserId,
    ) -> Result<(), UserStoreError> {
        let found = self
            .refresh
            .find_one(doc! { "_id": digest.as_str(), "userId": user.as_str() })
            .await
            .map_err(unavailable)?;
        if let Some(family) = found.as_ref().and_then(|d| d.get_str("family").ok()) {
            self.revoke_family_named(family).await?;
        }
        Ok(())
    }

    async fn revoke_user(&self, user: &UserId) -> Result<(), UserStoreError> {
        self.refresh
            .update_many(
                doc! { "userId": user.as_str() },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

impl MongoUserRepository {
    /// Why a token that could not be rotated could not: gone, revoked,
    /// expired, rotated within the grace, or reused (revoking its family).
    async fn not_rotated(
        &self,
        presented: &TokenDigest,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<Rotation, UserStoreError> {
        let Some(doc) = self
            .refresh
            .find_one(doc! { "_id": presented.as_str() })
            .await
            .map_err(unavailable)?
        else {
            return Ok(Rotation::Invalid);
        };
        let expired = doc
            .get_datetime("expiresAt")
            .map_or(true, |t| t.timestamp_millis() <= now.timestamp_millis());
        if doc.get_bool("revoked").unwrap_or(true) || expired {
            return Ok(Rotation::Invalid);
        }
        let user_id = refresh_user(&doc)?;
        let Ok(rotated_at) = doc.get_datetime("rotatedAt") else {
            // Not rotated, not revoked, not expired, yet the update missed it:
            // it changed in between; the presenter may simply try again.
            return Ok(Rotation::Invalid);
        };
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        if now
            .timestamp_millis()
            .saturating_sub(rotated_at.timestamp_millis())
            <= grace_ms
        {
            return Ok(Rotation::AlreadyRotated { user_id });
        }
        let family = doc.get_str("family").map_err(|_| corrupt_refresh())?;
        self.revoke_family_named(family).await?;
        Ok(Rotation::Reused { user_id })
    }

    async fn revoke_family_named(&self, family: &str) -> Result<(), UserStoreError> {
        self.refresh
            .update_many(
                doc! { "family": family },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

fn corrupt_refresh() -> UserStoreError {
    UserStoreError::from(StoreFailure::bare(
        "a refresh token document in mongodb is malformed",
    ))
}

fn refresh_user(doc: &Document) -> Result<UserId, UserStoreError> {
    doc.get_str("userId")
        .ok()
        .and_then(|u| UserId::parse(u).ok())
        .ok_or_else(corrupt_refresh)
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_new_user() -> NewUser {
        NewUser {
            username: Username::parse("alice").unwrap(),
            email: EmailAddress::parse("Alice@Example.com").unwrap(),
            password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_new_user_is_written_in_the_node_shape_and_reads_back() {
        let user = sample_new_user();
        let oid = ObjectId::new();
        let created_at = user.created_at.trunc_subsecs(3);
        let document = new_user_document(oid, &user, created_at);

        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "username",
                "password",
                "email",
                "createdAt",
                "isActive",
                "usernameLower"
            ]
        );
        assert!(matches!(document.get("_id"), Some(Bson::ObjectId(_))));
        assert!(matches!(document.get("createdAt"), Some(Bson::DateTime(_))));
        assert_eq!(document.get_bool("isActive"), Ok(true));
        assert_eq!(document.get_str("email"), Ok("alice@example.com"));

        let back = document_to_user(&document).unwrap();
        assert_eq!(back.id.as_str(), oid.to_hex());
        assert_eq!(back.username, user.username);
        assert_eq!(back.email, user.email);
        assert_eq!(back.password_hash, user.password_hash);
        assert_eq!(back.created_at, created_at);
        assert_eq!(back.last_login, None);
        assert!(back.is_active);
    }

    #[test]
    fn a_legacy_node_document_is_tolerated() {
        let oid = ObjectId::new();
        let created = mongodb::bson::DateTime::from_millis(1_700_000_000_123);
        let login = mongodb::bson::DateTime::from_millis(1_700_000_500_456);
        let legacy = doc! {
            "_id": oid,
            "username": "bob_legacy",
            "password": "$2b$10$abcdefghijklmnopqrstuuN3UE0sHcGnE1tQ4sQhNAJmU1s7YhE2",
            "email": "bob@example.com",
            "createdAt": created,
            "lastLogin": login,
            "__v": 0,
        };
        let user = document_to_user(&legacy).unwrap();
        assert!(user.is_active, "missing isActive means active");
        assert_eq!(user.created_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(
            user.last_login.map(|t| t.timestamp_millis()),
            Some(1_700_000_500_456)
        );
        assert!(user.password_hash.is_legacy_bcrypt());
        assert_eq!(user.role, UserRole::User, "Node documents have no role");

        let mut agent = legacy.clone();
        agent.insert(ROLE_FIELD, "agent");
        assert!(document_to_user(&agent).unwrap().is_agent());
        for bad in [Bson::from("admin"), Bson::from(1)] {
            let mut odd = legacy.clone();
            odd.insert(ROLE_FIELD, bad);
            assert!(matches!(
                document_to_user(&odd),
                Err(UserStoreError::Unavailable { .. })
            ));
        }

        let mut never_logged_in = legacy.clone();
        never_logged_in.insert("lastLogin", Bson::Null);
        never_logged_in.insert("isActive", false);
        let user = document_to_user(&never_logged_in).unwrap();
        assert_eq!(user.last_login, None);
        assert!(!user.is_active);

        let mut no_created_at = legacy.clone();
        no_created_at.remove("createdAt");
        let user = document_to_user(&no_created_at).unwrap();
        assert_eq!(
            user.created_at.timestamp(),
            oid.timestamp().timestamp_millis() / 1000,
            "falls back to the ObjectId's creation second"
        );
    }

    #[test]
    fn a_malformed_document_is_unavailable_not_a_panic() {
        let bad_name = doc! {
            "_id": ObjectId::new(),
            "username": "has spaces",
            "password": "x",
            "email": "a@example.com",
        };
        assert!(matches!(
            document_to_user(&bad_name),
            Err(UserStoreError::Unavailable { .. })
        ));
        let string_date = doc! {
            "_id": ObjectId::new(),
            "username": "carol",
            "password": "x",
            "email": "c@example.com",
            "createdAt": "2024-01-01",
        };
        assert!(matches!(
            document_to_user(&string_date),
            Err(UserStoreError::Unavailable { .. })
        ));
        let string_id =
            doc! { "_id": "abc", "username": "dave", "password": "x", "email": "d@example.com" };
        assert!(matches!(
            document_to_user(&string_id),
            Err(UserStoreError::Unavailable { .. })
        ));
    }

    #[test]
    fn duplicate_key_messages_name_the_taken_field() {
        assert!(matches!(
            classify_duplicate_key(
                r#"E11000 duplicate key error collection: chatbot.users index: username_1 dup key: { username: "alice" }"#
            ),
            Some(UserStoreError::UsernameTaken)
        ));
        assert!(matches!(
            classify_duplicate_key(
                r#"E11000 duplicate key error collection: email_db.users index: email_1 dup key: { email: "a@example.com" }"#
            ),
            Some(UserStoreError::EmailTaken)
        ));
        // A database named after the other field must not mislead the match.
        assert!(matches!(
            classify_duplicate_key(
                r#"E11000 duplicate key error collection: username.users index: email_1 dup key: { email: "a@example.com" }"#
            ),
            Some(UserStoreError::EmailTaken)
        ));
        assert!(classify_duplicate_key("E11000 duplicate key error index: _id_").is_none());
    }
}
