//! One behavioural contract for every `UserRepository`, run against each store.
//!
//! SQLite always runs (a fresh temp file per rule). MongoDB runs against
//! `MONGODB_URI` when set, otherwise in a throwaway `mongo:7` container when a
//! Docker engine answers; with neither it is reported as SKIPPED on stderr,
//! never faked, because a mock would prove nothing about the real driver.
//! Under `CI` it fails instead: `.ci/run` starts SecantusDB, a MongoDB-wire
//! server, and sets `MONGODB_URI`.

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::FutureExt;

use chatbot_server::adapters::outbound::mongo_users::MongoUserRepository;
use chatbot_server::adapters::outbound::sqlite_users::SqliteUserRepository;
use chatbot_server::application::ports::{
    RefreshRecord, RefreshTokenStore, Rotation, SavedReply, UserRepository, UserStoreError,
};
use chatbot_server::domain::canned::{CannedReply, Shortcut};
use chatbot_server::domain::{
    EmailAddress, FamilyId, NewUser, PasswordHash, RefreshToken, TokenDigest, UserId, UserRole,
    Username,
};

/// A user store is both ports: users, and their refresh tokens.
trait UserStore: UserRepository + RefreshTokenStore {}
impl<T: UserRepository + RefreshTokenStore> UserStore for T {}

type Repo = Arc<dyn UserStore>;

/// Names are unique per call so every rule can share one Mongo database.
fn unique(prefix: &str) -> String {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &tag[..12])
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        email: EmailAddress::parse(&format!("{name}@example.com")).unwrap(),
        password_hash: PasswordHash::new(format!(
            "$argon2id$v=19$m=19456,t=2,p=1$salt$hash-{name}"
        )),
        created_at: Utc::now().trunc_subsecs(3),
    }
}

/// A valid 24-hex id that no store has issued.
fn unknown_id() -> UserId {
    UserId::parse("0123456789abcdef01234567").unwrap()
}

mod contract {
    use super::*;

    pub async fn canned_replies_are_each_agents_own_bounded_and_replaced_by_shortcut(repo: Repo) {
        let reply = |s: &str, c: &str| CannedReply::parse(s, c).unwrap();
        let bob = UserId::parse(&unique("agentbob")).unwrap();
        let ann = UserId::parse(&unique("agentann")).unwrap();
        assert!(repo.replies(&bob).await.unwrap().is_empty());
        let r = reply("thanks", "Thank you!");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Added);
        let r = reply("hi", "Hello, I'm Bob.");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Added);
        let r = reply("thanks", "Thanks a lot!");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Replaced);
        assert_eq!(
            repo.replies(&bob).await.unwrap(),
            [
                reply("hi", "Hello, I'm Bob."),
                reply("thanks", "Thanks a lot!")
            ],
            "by shortcut, the latest content"
        );
        let r = reply("bye", "Goodbye.");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Added);
        // Full: a new shortcut is refused, an existing one still replaced.
        let r = reply("more", "One too many.");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Full);
        let r = reply("bye", "Bye!");
        let saved = repo.save_reply(&bob, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Replaced);
        assert_eq!(repo.replies(&bob).await.unwrap().len(), 3);
        // Another agent's are apart.
        assert!(repo.replies(&ann).await.unwrap().is_empty());
        let r = reply("thanks", "Cheers.");
        let saved = repo.save_reply(&ann, &r, 3).await.unwrap();
        assert_eq!(saved, SavedReply::Added);
        let hi = Shortcut::parse("hi").unwrap();
        assert!(!repo.delete_reply(&ann, &hi).await.unwrap(), "not ann's");
        assert!(repo.delete_reply(&bob, &hi).await.unwrap());
        assert!(!repo.delete_reply(&bob, &hi).await.unwrap(), "gone");
        let left: Vec<_> = repo
            .replies(&bob)
            .await
            .unwrap()
            .iter()
            .map(|r| r.shortcut.as_str().to_owned())
            .collect();
        assert_eq!(left, ["bye", "thanks"]);
        assert_eq!(
            repo.replies(&ann).await.unwrap(),
            [reply("thanks", "Cheers.")]
        );
    }

    pub async fn create_returns_the_user_with_an_id(repo: Repo) {
        let input = new_user(&unique("create"));
        let user = repo.create(input.clone()).await.unwrap();
        assert_eq!(
            user.id.as_str().len(),
            24,
            "ids are ObjectId hex: {}",
            user.id
        );
        assert!(user.id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(user.username, input.username);
        assert_eq!(user.email, input.email);
        assert_eq!(user.password_hash, input.password_hash);
        assert_eq!(user.created_at, input.created_at);
        assert_eq!(user.last_login, None);
        assert!(user.is_active);

        let other = repo.create(new_user(&unique("create"))).await.unwrap();
        assert_ne!(other.id, user.id);
    }

    pub async fn finds_round_trip(repo: Repo) {
        let created = repo.create(new_user(&unique("find"))).await.unwrap();
        let by_name = repo.find_by_username(&created.username).await.unwrap();
        let by_email = repo.find_by_email(&created.email).await.unwrap();
        let by_id = repo.find_by_id(&created.id).await.unwrap();
        assert_eq!(by_name.as_ref(), Some(&created));
        assert_eq!(by_email.as_ref(), Some(&created));
        assert_eq!(by_id.as_ref(), Some(&created));
    }

    pub async fn unknown_users_are_none(repo: Repo) {
        let ghost = new_user(&unique("ghost"));
        assert_eq!(repo.find_by_username(&ghost.username).await.unwrap(), None);
        assert_eq!(repo.find_by_email(&ghost.email).await.unwrap(), None);
        assert_eq!(repo.find_by_id(&unknown_id()).await.unwrap(), None);
    }

    pub async fn ids_the_store_never_issues_are_none(repo: Repo) {
        for raw in ["not-an-object-id", "abc", "zzzzzzzzzzzzzzzzzzzzzzzz", "1"] {
            let id = UserId::parse(raw).unwrap();
            assert_eq!(repo.find_by_id(&id).await.unwrap(), None, "{raw}");
        }
    }

    /// New users are customers; `set_role` promotes and demotes by exact
    /// username, and every later read sees it.
    pub async fn roles_default_to_user_and_set_role_sticks(repo: Repo) {
        let created = repo.create(new_user(&unique("role"))).await.unwrap();
        assert_eq!(created.role, UserRole::User);
        assert!(!created.is_agent());
        let promoted = repo
            .set_role(&created.username, UserRole::Agent)
            .await
            .unwrap();
        assert_eq!(promoted.id, created.id);
        assert!(promoted.is_agent());
        let read = repo.find_by_id(&created.id).await.unwrap().unwrap();
        assert_eq!(read.role, UserRole::Agent, "read back from the store");
        // Idempotent, then back.
        repo.set_role(&created.username, UserRole::Agent)
            .await
            .unwrap();
        let demoted = repo
            .set_role(&created.username, UserRole::User)
            .await
            .unwrap();
        assert_eq!(demoted.role, UserRole::User);
        let by_name = repo.find_by_username(&created.username).await.unwrap();
        assert_eq!(by_name.map(|u| u.role), Some(UserRole::User));
    }

    /// Agent accounts are counted as soon as a role changes, so `HANDOFF=auto`
    /// can tell whether anyone could take a conversation. The store may be
    /// shared with other tests, so the count is compared, not fixed.
    pub async fn agent_accounts_are_counted(repo: Repo) {
        let created = repo.create(new_user(&unique("counted"))).await.unwrap();
        let before = repo.agent_count().await.unwrap();
        repo.set_role(&created.username, UserRole::Agent)
            .await
            .unwrap();
        let promoted = repo.agent_count().await.unwrap();
        assert!(promoted >= 1, "an agent exists now: {promoted}");
        repo.set_role(&created.username, UserRole::User)
            .await
            .unwrap();
        if before == 0 {
            assert_eq!(repo.agent_count().await.unwrap(), 0, "demoted again");
        }
    }

    pub async fn set_role_of_an_unknown_user_is_not_found(repo: Repo) {
        let ghost = new_user(&unique("ghostrole"));
        let err = repo
            .set_role(&ghost.username, UserRole::Agent)
            .await
            .unwrap_err();
        assert!(matches!(err, UserStoreError::NotFound), "{err:?}");
    }

    pub async fn duplicate_username_is_username_taken(repo: Repo) {
        let first = new_user(&unique("dupname"));
        repo.create(first.clone()).await.unwrap();
        let mut second = new_user(&unique("other"));
        second.username = first.username.clone();
        let err = repo.create(second).await.unwrap_err();
        assert!(matches!(err, UserStoreError::UsernameTaken), "{err:?}");
    }

    pub async fn duplicate_email_is_email_taken(repo: Repo) {
        let first = new_user(&unique("dupmail"));
        repo.create(first.clone()).await.unwrap();
        let mut second = new_user(&unique("other"));
        // Typed differently, stored the same: the domain lower-cases emails.
        second.email = EmailAddress::parse(&first.email.as_str().to_ascii_uppercase()).unwrap();
        let err = repo.create(second).await.unwrap_err();
        assert!(matches!(err, UserStoreError::EmailTaken), "{err:?}");
    }

    pub async fn record_login_sets_last_login_and_rehashes(repo: Repo) {
        let user = repo.create(new_user(&unique("login"))).await.unwrap();

        let first = Utc::now().trunc_subsecs(3);
        repo.record_login(&user.id, first, None).await.unwrap();
        let after = repo.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(after.last_login, Some(first));
        assert_eq!(after.password_hash, user.password_hash, "no rehash given");

        let second = first + chrono::Duration::seconds(5);
        let fresh = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$new$rehashed");
        repo.record_login(&user.id, second, Some(fresh.clone()))
            .await
            .unwrap();
        let after = repo
            .find_by_username(&user.username)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.last_login, Some(second));
        assert_eq!(after.password_hash, fresh);
        assert_eq!(after.created_at, user.created_at);
        assert_eq!(after.email, user.email);
    }

    pub async fn record_login_for_unknown_id_is_not_found(repo: Repo) {
        for id in [unknown_id(), UserId::parse("not-an-object-id").unwrap()] {
            let err = repo.record_login(&id, Utc::now(), None).await.unwrap_err();
            assert!(matches!(err, UserStoreError::NotFound), "{id}: {err:?}");
        }
    }

    /// The cap holds however many new shortcuts of one agent are saved at
    /// once (each store makes its check and its insert one step).
    pub async fn concurrent_new_replies_never_pass_the_cap(repo: Repo) {
        let carl = UserId::parse(&unique("agentcarl")).unwrap();
        let max = 3;
        for round in 0..3 {
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let repo = Arc::clone(&repo);
                    let carl = carl.clone();
                    let r = CannedReply::parse(&format!("r{round}x{i}"), "Hello.").unwrap();
                    tokio::spawn(async move { repo.save_reply(&carl, &r, max).await.unwrap() })
                })
                .collect();
            let mut added = 0;
            for task in tasks {
                if task.await.unwrap() == SavedReply::Added {
                    added += 1;
                }
            }
            let kept = repo.replies(&carl).await.unwrap();
            assert_eq!(kept.len(), max, "round {round}: {kept:?}");
            assert_eq!(added, if round == 0 { max } else { 0 }, "round {round}");
        }
        // A deleted one makes room for exactly one more.
        let first = repo.replies(&carl).await.unwrap()[0].shortcut.clone();
        assert!(repo.delete_reply(&carl, &first).await.unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let repo = Arc::clone(&repo);
                let carl = carl.clone();
                let r = CannedReply::parse(&format!("again{i}"), "Hi.").unwrap();
                tokio::spawn(async move { repo.save_reply(&carl, &r, max).await.unwrap() })
            })
            .collect();
        let mut added = 0;
        for task in tasks {
            added += usize::from(task.await.unwrap() == SavedReply::Added);
        }
        assert_eq!(added, 1);
        assert_eq!(repo.replies(&carl).await.unwrap().len(), max);
    }

    pub async fn concurrent_creates_of_one_username_have_one_winner(repo: Repo) {
        let name = unique("race");
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let repo = Arc::clone(&repo);
                let mut user = new_user(&name);
                user.email = EmailAddress::parse(&format!("{name}.{i}@example.com")).unwrap();
                tokio::spawn(async move { repo.create(user).await })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => winners += 1,
                Err(UserStoreError::UsernameTaken) => {}
                Err(other) => panic!("a losing create must be UsernameTaken, got {other:?}"),
            }
        }
        assert_eq!(winners, 1);
        let stored = repo
            .find_by_username(&Username::parse(&name).unwrap())
            .await
            .unwrap();
        assert!(stored.is_some());
    }

    pub async fn ping_answers(repo: Repo) {
        repo.ping().await.unwrap();
    }

    pub async fn usernames_are_unique_regardless_of_case(repo: Repo) {
        let name = unique("Casey");
        let first = repo.create(new_user(&name)).await.unwrap();
        for spelling in [name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
            let mut other = new_user(&unique("other"));
            other.username = Username::parse(&spelling).unwrap();
            let err = repo.create(other).await.unwrap_err();
            assert!(
                matches!(err, UserStoreError::UsernameTaken),
                "{spelling}: {err:?}"
            );
        }
        // Login stays exact: another spelling finds nobody.
        let lower = Username::parse(&name.to_ascii_lowercase()).unwrap();
        assert_eq!(repo.find_by_username(&lower).await.unwrap(), None);
        assert_eq!(
            repo.find_by_username(&first.username).await.unwrap(),
            Some(first)
        );
    }

    /// A stored refresh token for a fresh family of `user`.
    async fn refresh_token(repo: &Repo, user: &UserId, ttl: chrono::Duration) -> TokenDigest {
        let digest = RefreshToken::generate().digest();
        let now = Utc::now().trunc_subsecs(3);
        repo.insert(&RefreshRecord {
            digest: digest.clone(),
            family: FamilyId::generate(),
            user_id: user.clone(),
            issued_at: now,
            expires_at: now + ttl,
        })
        .await
        .unwrap();
        digest
    }

    fn digest() -> TokenDigest {
        RefreshToken::generate().digest()
    }

    const GRACE: Duration = Duration::from_secs(10);

    pub async fn refresh_tokens_rotate_once_then_grace_then_reuse(repo: Repo) {
        let user = repo.create(new_user(&unique("rot"))).await.unwrap().id;
        let day = chrono::Duration::days(1);
        let first = refresh_token(&repo, &user, day).await;
        let (second, third) = (digest(), digest());
        let t0 = Utc::now();
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let rotated = Rotation::Rotated {
            user_id: user.clone(),
        };
        assert_eq!(
            repo.rotate(&first, &second, at(0), at(0) + day, GRACE)
                .await
                .unwrap(),
            rotated
        );
        // Two tabs at once: the same token again, within the grace.
        assert_eq!(
            repo.rotate(&first, &second, at(1), at(1) + day, GRACE)
                .await
                .unwrap(),
            Rotation::AlreadyRotated {
                user_id: user.clone()
            }
        );
        // The successor was stored and rotates in its turn.
        assert_eq!(
            repo.rotate(&second, &third, at(2), at(2) + day, GRACE)
                .await
                .unwrap(),
            rotated
        );
        // Long after its rotation, the first token is a reuse...
        assert_eq!(
            repo.rotate(&first, &second, at(30), at(30) + day, GRACE)
                .await
                .unwrap(),
            Rotation::Reused {
                user_id: user.clone()
            }
        );
        // ...and the whole family is gone, the newest token included.
        assert_eq!(
            repo.rotate(&third, &digest(), at(31), at(31) + day, GRACE)
                .await
                .unwrap(),
            Rotation::Invalid
        );
    }

    pub async fn unknown_and_expired_refresh_tokens_are_invalid(repo: Repo) {
        let user = repo.create(new_user(&unique("exp"))).await.unwrap().id;
        let now = Utc::now();
        let later = now + chrono::Duration::days(1);
        assert_eq!(
            repo.rotate(&digest(), &digest(), now, later, GRACE)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        let short = refresh_token(&repo, &user, chrono::Duration::seconds(5)).await;
        let after_expiry = now + chrono::Duration::seconds(6);
        assert_eq!(
            repo.rotate(&short, &digest(), after_expiry, later, GRACE)
                .await
                .unwrap(),
            Rotation::Invalid
        );
    }

    pub async fn concurrent_rotations_of_one_token_have_one_winner(repo: Repo) {
        let user = repo.create(new_user(&unique("race"))).await.unwrap().id;
        let day = chrono::Duration::days(1);
        let token = refresh_token(&repo, &user, day).await;
        let successor = digest();
        let now = Utc::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (repo, token, successor) = (repo.clone(), token.clone(), successor.clone());
                tokio::spawn(
                    async move { repo.rotate(&token, &successor, now, now + day, GRACE).await },
                )
            })
            .collect();
        let mut rotated = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Rotation::Rotated { .. } => rotated += 1,
                Rotation::AlreadyRotated { .. } => {}
                other => panic!("a losing rotation within the grace got {other:?}"),
            }
        }
        assert_eq!(rotated, 1);
    }

    pub async fn revoking_a_family_needs_its_owner(repo: Repo) {
        let owner = repo.create(new_user(&unique("own"))).await.unwrap().id;
        let stranger = repo.create(new_user(&unique("str"))).await.unwrap().id;
        let day = chrono::Duration::days(1);
        let token = refresh_token(&repo, &owner, day).await;
        let other_login = refresh_token(&repo, &owner, day).await;
        repo.revoke_family(&token, &stranger).await.unwrap();
        repo.revoke_family(&token, &owner).await.unwrap();
        let now = Utc::now();
        assert_eq!(
            repo.rotate(&token, &digest(), now, now + day, GRACE)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        assert!(matches!(
            repo.rotate(&other_login, &digest(), now, now + day, GRACE)
                .await
                .unwrap(),
            Rotation::Rotated { .. }
        ));
    }

    pub async fn revoking_a_user_ends_all_their_refresh_tokens(repo: Repo) {
        let user = repo.create(new_user(&unique("all"))).await.unwrap().id;
        let other = repo.create(new_user(&unique("keep"))).await.unwrap().id;
        let day = chrono::Duration::days(1);
        let a = refresh_token(&repo, &user, day).await;
        let b = refresh_token(&repo, &user, day).await;
        let kept = refresh_token(&repo, &other, day).await;
        repo.revoke_user(&user).await.unwrap();
        let now = Utc::now();
        for token in [a, b] {
            assert_eq!(
                repo.rotate(&token, &digest(), now, now + day, GRACE)
                    .await
                    .unwrap(),
                Rotation::Invalid
            );
        }
        assert!(matches!(
            repo.rotate(&kept, &digest(), now, now + day, GRACE)
                .await
                .unwrap(),
            Rotation::Rotated { .. }
        ));
    }

    pub async fn dates_round_trip_to_the_millisecond(repo: Repo) {
        let created_at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let mut input = new_user(&unique("dates"));
        input.created_at = created_at;
        let user = repo.create(input).await.unwrap();
        let millis = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(user.created_at, millis, "create reports what is stored");

        let login = DateTime::from_timestamp(1_700_000_100, 987_654_321).unwrap();
        repo.record_login(&user.id, login, None).await.unwrap();
        let found = repo.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(found.created_at, millis);
        assert_eq!(
            found.last_login,
            Some(DateTime::from_timestamp(1_700_000_100, 987_000_000).unwrap())
        );
    }
}

macro_rules! contract_rules {
    ($($rule:ident),* $(,)?) => {
        /// Every rule, in order, against one store.
        async fn run_contract(store: &str, repo: Repo) {
            $(
                eprintln!("[{store}] contract rule: {}", stringify!($rule));
                contract::$rule(Arc::clone(&repo)).await;
            )*
        }

        /// Each rule on its own fresh SQLite file, so a failure names its rule.
        mod sqlite_rule {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    let (_dir, repo) = super::fresh_sqlite().await;
                    super::contract::$rule(repo).await;
                }
            )*
        }
    };
}

contract_rules!(
    create_returns_the_user_with_an_id,
    finds_round_trip,
    unknown_users_are_none,
    ids_the_store_never_issues_are_none,
    roles_default_to_user_and_set_role_sticks,
    set_role_of_an_unknown_user_is_not_found,
    agent_accounts_are_counted,
    duplicate_username_is_username_taken,
    duplicate_email_is_email_taken,
    record_login_sets_last_login_and_rehashes,
    record_login_for_unknown_id_is_not_found,
    concurrent_creates_of_one_username_have_one_winner,
    ping_answers,
    dates_round_trip_to_the_millisecond,
    usernames_are_unique_regardless_of_case,
    refresh_tokens_rotate_once_then_grace_then_reuse,
    unknown_and_expired_refresh_tokens_are_invalid,
    concurrent_rotations_of_one_token_have_one_winner,
    revoking_a_family_needs_its_owner,
    revoking_a_user_ends_all_their_refresh_tokens,
    canned_replies_are_each_agents_own_bounded_and_replaced_by_shortcut,
    concurrent_new_replies_never_pass_the_cap,
);

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 4;

// ------------------------------------------------------------------ SQLite

async fn fresh_sqlite() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteUserRepository::open(&dir.path().join("users.db"))
        .await
        .unwrap();
    (dir, Arc::new(repo))
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_satisfies_the_whole_contract_on_one_file() {
    let (_dir, repo) = fresh_sqlite().await;
    run_contract("sqlite", repo).await;
}

#[tokio::test]
async fn sqlite_data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let repo = SqliteUserRepository::open(&path).await.unwrap();
    let user = repo.create(new_user("persisted")).await.unwrap();
    let at = Utc::now().trunc_subsecs(3);
    let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$x$y");
    repo.record_login(&user.id, at, Some(hash.clone()))
        .await
        .unwrap();
    drop(repo);

    let reopened = SqliteUserRepository::open(&path).await.unwrap();
    let found = reopened.find_by_id(&user.id).await.unwrap().unwrap();
    assert_eq!(found.username, user.username);
    assert_eq!(found.email, user.email);
    assert_eq!(found.created_at, user.created_at);
    assert_eq!(found.last_login, Some(at));
    assert_eq!(found.password_hash, hash);
    // Uniqueness is part of what persists, not just the rows.
    let mut again = new_user("persisted");
    again.email = EmailAddress::parse("someone.else@example.com").unwrap();
    let err = reopened.create(again).await.unwrap_err();
    assert!(matches!(err, UserStoreError::UsernameTaken), "{err:?}");
}

#[tokio::test]
async fn sqlite_creates_missing_directories_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/users.db");
    let repo = SqliteUserRepository::open(&path).await.unwrap();
    repo.create(new_user("fresh_dir")).await.unwrap();
    assert!(path.exists());
    drop(repo);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[tokio::test]
async fn sqlite_brings_an_empty_or_unversioned_file_up_to_date() {
    let dir = tempfile::tempdir().unwrap();

    // A zero-byte file, as `touch` leaves it.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let repo = SqliteUserRepository::open(&empty).await.unwrap();
    repo.create(new_user("from_empty")).await.unwrap();
    drop(repo);
    assert_eq!(user_version(&empty), SCHEMA_VERSION);

    // A database from before versioning: other tables, no stamp, no users table.
    let unversioned = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&unversioned).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    assert_eq!(user_version(&unversioned), 0);
    let repo = SqliteUserRepository::open(&unversioned).await.unwrap();
    repo.create(new_user("from_old")).await.unwrap();
    drop(repo);
    assert_eq!(user_version(&unversioned), SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(&unversioned).unwrap();
    let note: String = conn
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(note, "keep me", "migration must not touch unrelated tables");
}

#[tokio::test]
async fn sqlite_keeps_rows_of_a_users_table_that_lacks_the_version_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handmade.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (
                id TEXT PRIMARY KEY NOT NULL, username TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL UNIQUE, password TEXT NOT NULL, created_at TEXT NOT NULL,
                last_login TEXT NULL, is_active INTEGER NOT NULL DEFAULT 1);
             INSERT INTO users (id, username, email, password, created_at)
             VALUES ('65f1c0ffee0123456789abcd', 'handmade', 'hand@example.com',
                     '$2b$10$legacy', '2024-01-02T03:04:05.678Z');",
        )
        .unwrap();
    }
    let repo = SqliteUserRepository::open(&path).await.unwrap();
    let user = repo
        .find_by_username(&Username::parse("handmade").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id.as_str(), "65f1c0ffee0123456789abcd");
    assert!(user.is_active);
    assert_eq!(
        user.role,
        UserRole::User,
        "rows from before roles are customers"
    );
    assert_eq!(user.created_at.timestamp_millis(), 1_704_164_645_678);
}

/// A version-1 file (before case-insensitive names) holding `Bob` and an
/// older `bob`: both still log in under their own names, neither is
/// changed, and no third spelling can register.
#[tokio::test]
async fn sqlite_version_1_files_keep_their_users_and_gain_case_folding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (
                id TEXT PRIMARY KEY NOT NULL, username TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL UNIQUE, password TEXT NOT NULL, created_at TEXT NOT NULL,
                last_login TEXT NULL, is_active INTEGER NOT NULL DEFAULT 1);
             INSERT INTO users (id, username, email, password, created_at) VALUES
               ('65f1c0ffee0123456789abc1', 'bob', 'bob1@example.com', 'h1', '2024-01-01T00:00:00.000Z'),
               ('65f1c0ffee0123456789abc2', 'Bob', 'bob2@example.com', 'h2', '2024-01-02T00:00:00.000Z');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let repo = SqliteUserRepository::open(&path).await.unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    for (name, id) in [
        ("bob", "65f1c0ffee0123456789abc1"),
        ("Bob", "65f1c0ffee0123456789abc2"),
    ] {
        let user = repo
            .find_by_username(&Username::parse(name).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.id.as_str(), id);
        assert_eq!(
            user.username.as_str(),
            name,
            "legacy names are left as they are"
        );
    }
    let mut third = new_user("BOB");
    third.email = EmailAddress::parse("bob3@example.com").unwrap();
    let err = repo.create(third).await.unwrap_err();
    assert!(matches!(err, UserStoreError::UsernameTaken), "{err:?}");
    // Refresh tokens work on the migrated file.
    let user = UserId::parse("65f1c0ffee0123456789abc2").unwrap();
    let digest = RefreshToken::generate().digest();
    let now = Utc::now();
    repo.insert(&RefreshRecord {
        digest: digest.clone(),
        family: FamilyId::generate(),
        user_id: user.clone(),
        issued_at: now,
        expires_at: now + chrono::Duration::days(1),
    })
    .await
    .unwrap();
    let next = RefreshToken::generate().digest();
    assert_eq!(
        repo.rotate(
            &digest,
            &next,
            now,
            now + chrono::Duration::days(1),
            Duration::ZERO
        )
        .await
        .unwrap(),
        Rotation::Rotated { user_id: user }
    );
}

#[tokio::test]
async fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x42_u8; 4096]).unwrap();
    let err = SqliteUserRepository::open(&path).await.unwrap_err();
    assert!(matches!(err, UserStoreError::Unavailable { .. }), "{err:?}");
}

// ----------------------------------------------------------------- MongoDB

/// A MongoDB to test against, and the container keeping it alive if we made one.
struct MongoTarget {
    uri: String,
    origin: &'static str,
    _container: Option<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
}

/// Tests fail fast instead of waiting out the driver's 30 s default when the
/// server is unreachable; production keeps whatever the URI says.
fn with_short_selection_timeout(uri: &str) -> String {
    if uri
        .to_ascii_lowercase()
        .contains("serverselectiontimeoutms")
    {
        return uri.to_owned();
    }
    let joiner = if uri.contains('?') {
        "&"
    } else if uri
        .trim_start_matches("mongodb://")
        .trim_start_matches("mongodb+srv://")
        .contains('/')
    {
        "?"
    } else {
        "/?"
    };
    format!("{uri}{joiner}serverSelectionTimeoutMS=5000")
}

/// `Err(reason)` means: skip, there is no MongoDB to be had here.
async fn mongo_target() -> Result<MongoTarget, String> {
    if let Ok(uri) = std::env::var("MONGODB_URI") {
        if !uri.trim().is_empty() {
            return Ok(MongoTarget {
                uri: with_short_selection_timeout(uri.trim()),
                origin: "MONGODB_URI",
                _container: None,
            });
        }
    }
    docker_answers().await?;

    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    let container = testcontainers::GenericImage::new("mongo", "7")
        .with_exposed_port(27017.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Waiting for connections"))
        .start()
        .await
        .map_err(|e| format!("a Docker engine answers but mongo:7 did not start: {e}"))?;
    let host = container
        .get_host()
        .await
        .map_err(|e| format!("mongo:7 container has no host: {e}"))?;
    let port = container
        .get_host_port_ipv4(27017)
        .await
        .map_err(|e| format!("mongo:7 container has no mapped port: {e}"))?;
    Ok(MongoTarget {
        uri: format!(
            "mongodb://{host}:{port}/?directConnection=true&serverSelectionTimeoutMS=5000"
        ),
        origin: "testcontainers mongo:7",
        _container: Some(container),
    })
}

async fn docker_answers() -> Result<(), String> {
    let probe = tokio::process::Command::new("docker")
        .arg("info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Err(_) => Err("`docker info` did not answer within 5 s".to_owned()),
        Ok(Err(e)) => Err(format!("cannot run `docker info`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("no output");
            Err(format!(
                "`docker info` exited with {}: {reason}",
                out.status
            ))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_user_store_satisfies_the_contract() {
    let target = match mongo_target().await {
        Ok(target) => target,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "a MongoDB-wire server is required in CI (.ci/run starts SecantusDB): {reason}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED mongo user-store contract: MONGODB_URI is not set and no Docker engine \
                 answers ({reason})"
            );
            return;
        }
    };
    let database = format!("chatbot_contract_{}", uuid::Uuid::new_v4().simple());
    eprintln!(
        "mongo user-store contract: {} , database {database}",
        target.origin
    );

    let client = mongodb::Client::with_uri_str(&target.uri)
        .await
        .expect("MongoDB URI must parse");
    let outcome = AssertUnwindSafe(async {
        let repo = MongoUserRepository::connect_with_database(&target.uri, &database)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to MongoDB via {}: {e}", target.origin));
        let repo: Repo = Arc::new(repo);
        run_contract("mongo", Arc::clone(&repo)).await;
        mongo_writes_the_node_document_shape(&repo, &client.database(&database)).await;
        mongo_reads_legacy_node_documents(&repo, &client.database(&database)).await;
        mongo_counts_replies_saved_before_slots(&repo, &client.database(&database)).await;
        mongo_matches_legacy_mixed_case_emails(&target.uri, &database, &client.database(&database))
            .await;
        mongo_folds_usernames_beside_legacy_documents(
            &target.uri,
            &database,
            &client.database(&database),
        )
        .await;
    })
    .catch_unwind()
    .await;

    // Dropped even when a rule failed, so a shared server is not littered.
    if let Err(e) = client.database(&database).drop().await {
        eprintln!("warning: could not drop throwaway database {database}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn mongo_writes_the_node_document_shape(repo: &Repo, db: &mongodb::Database) {
    use mongodb::bson::{doc, Bson, Document};
    eprintln!("[mongo] document shape matches the Node server");
    let user = repo.create(new_user(&unique("shape"))).await.unwrap();
    let users = db.collection::<Document>("users");
    let oid = mongodb::bson::oid::ObjectId::parse_str(user.id.as_str()).unwrap();
    let raw = users.find_one(doc! { "_id": oid }).await.unwrap().unwrap();
    assert_eq!(raw.get_str("username").unwrap(), user.username.as_str());
    assert_eq!(raw.get_str("email").unwrap(), user.email.as_str());
    assert_eq!(
        raw.get_str("password").unwrap(),
        user.password_hash.as_str()
    );
    assert_eq!(
        raw.get_datetime("createdAt").unwrap().timestamp_millis(),
        user.created_at.timestamp_millis()
    );
    assert!(raw.get_bool("isActive").unwrap());
    assert!(matches!(raw.get("lastLogin"), None | Some(Bson::Null)));

    let at = Utc::now().trunc_subsecs(3);
    repo.record_login(&user.id, at, None).await.unwrap();
    let raw = users.find_one(doc! { "_id": oid }).await.unwrap().unwrap();
    assert_eq!(
        raw.get_datetime("lastLogin").unwrap().timestamp_millis(),
        at.timestamp_millis(),
        "lastLogin is a BSON Date, not a string"
    );

    let indexes = users.list_index_names().await.unwrap();
    assert!(indexes.iter().any(|i| i == "username_1"), "{indexes:?}");
    assert!(indexes.iter().any(|i| i == "email_1"), "{indexes:?}");
}

/// Inserts a user exactly as the Node server's Mongoose model wrote one: a
/// bcrypt hash, `__v`, and no `isActive` or `lastLogin`.
async fn insert_node_document(
    users: &mongodb::Collection<mongodb::bson::Document>,
    username: &str,
    email: &str,
    created_at_millis: i64,
) -> mongodb::bson::oid::ObjectId {
    use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDate};
    let oid = ObjectId::new();
    users
        .insert_one(doc! {
            "_id": oid,
            "username": username,
            "password": "$2b$10$abcdefghijklmnopqrstuuN3UE0sHcGnE1tQ4sQhNAJmU1s7YhE2",
            "email": email,
            "createdAt": BsonDate::from_millis(created_at_millis),
            "__v": 0,
        })
        .await
        .unwrap();
    oid
}

/// Replies stored before the cap's slots existed count against it and get
/// a slot on their agent's next save.
async fn mongo_counts_replies_saved_before_slots(repo: &Repo, db: &mongodb::Database) {
    use mongodb::bson::doc;
    let dan = UserId::parse(&unique("agentdan")).unwrap();
    let replies = db.collection::<mongodb::bson::Document>("canned_replies");
    for shortcut in ["old1", "old2"] {
        let id = format!("{}:{shortcut}", dan.as_str());
        replies
            .insert_one(doc! { "_id": id, "agentId": dan.as_str(), "shortcut": shortcut, "content": "Legacy." })
            .await
            .unwrap();
    }
    let r = CannedReply::parse("new1", "Fresh.").unwrap();
    assert_eq!(
        repo.save_reply(&dan, &r, 3).await.unwrap(),
        SavedReply::Added
    );
    let r = CannedReply::parse("new2", "One too many.").unwrap();
    assert_eq!(
        repo.save_reply(&dan, &r, 3).await.unwrap(),
        SavedReply::Full
    );
    let slotted = replies
        .count_documents(doc! { "agentId": dan.as_str(), "slot": { "$type": "string" } })
        .await
        .unwrap();
    assert_eq!(slotted, 3, "the legacy replies got slots");
}

async fn mongo_reads_legacy_node_documents(repo: &Repo, db: &mongodb::Database) {
    use mongodb::bson::{doc, Document};
    eprintln!("[mongo] legacy Node documents are readable");
    let name = unique("legacy");
    let users = db.collection::<Document>("users");
    let oid = insert_node_document(
        &users,
        &name,
        &format!("{name}@example.com"),
        1_600_000_000_321,
    )
    .await;
    let user = repo
        .find_by_username(&Username::parse(&name).unwrap())
        .await
        .unwrap()
        .expect("legacy user is found");
    assert_eq!(user.id.as_str(), oid.to_hex());
    assert!(user.is_active, "missing isActive means active");
    assert_eq!(user.last_login, None);
    assert_eq!(user.created_at.timestamp_millis(), 1_600_000_000_321);
    assert!(user.password_hash.is_legacy_bcrypt());

    let fresh = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$s$upgraded");
    repo.record_login(&user.id, Utc::now(), Some(fresh.clone()))
        .await
        .unwrap();
    let raw = users.find_one(doc! { "_id": oid }).await.unwrap().unwrap();
    assert_eq!(raw.get_str("password").unwrap(), fresh.as_str());
    assert!(raw.get_datetime("lastLogin").is_ok());
    assert_eq!(
        raw.get_i32("__v").unwrap(),
        0,
        "fields we do not own are left alone"
    );
}

/// The Node server stored emails as typed; the domain lower-cases them, so a
/// legacy `Legacy.Case@Example.com` must still be found by email and must
/// still block a second registration of the same address.
async fn mongo_matches_legacy_mixed_case_emails(uri: &str, database: &str, db: &mongodb::Database) {
    use mongodb::bson::{doc, Document};
    eprintln!("[mongo] legacy mixed-case emails are found and stay taken");
    let name = unique("legacycase");
    let users = db.collection::<Document>("users");
    let oid =
        insert_node_document(&users, &name, "Legacy.Case@Example.com", 1_600_000_000_000).await;
    // The store looks for legacy mixed-case emails when it connects, as a
    // server starting on a migrated database does.
    let repo = MongoUserRepository::connect_with_database(uri, database)
        .await
        .unwrap();

    let email = EmailAddress::parse("legacy.case@example.com").unwrap();
    let found = repo
        .find_by_email(&email)
        .await
        .unwrap()
        .expect("a legacy mixed-case email is found by its lower-cased form");
    assert_eq!(found.id.as_str(), oid.to_hex());
    assert_eq!(found.username.as_str(), name);
    assert_eq!(found.email, email);

    let mut newcomer = new_user(&unique("newcase"));
    newcomer.email = email.clone();
    let err = repo.create(newcomer).await.unwrap_err();
    assert!(matches!(err, UserStoreError::EmailTaken), "{err:?}");
    assert_eq!(
        users
            .count_documents(doc! { "email": email.as_str() })
            .await
            .unwrap(),
        0,
        "no lower-cased twin was inserted beside the legacy row"
    );
}

/// Node documents have no `usernameLower`: they still load and log in under
/// their exact name, and no other spelling of their name can register.
async fn mongo_folds_usernames_beside_legacy_documents(
    uri: &str,
    database: &str,
    db: &mongodb::Database,
) {
    use mongodb::bson::Document;
    eprintln!("[mongo] usernames are folded beside legacy documents");
    let name = unique("LegacyName");
    let users = db.collection::<Document>("users");
    let oid = insert_node_document(
        &users,
        &name,
        &format!("{}@example.com", name.to_ascii_lowercase()),
        1_600_000_000_000,
    )
    .await;
    // As a server starting on a migrated database does, it notices them.
    let repo = MongoUserRepository::connect_with_database(uri, database)
        .await
        .unwrap();
    let found = repo
        .find_by_username(&Username::parse(&name).unwrap())
        .await
        .unwrap()
        .expect("the legacy user is found by its exact name");
    assert_eq!(found.id.as_str(), oid.to_hex());
    let mut newcomer = new_user(&unique("newname"));
    newcomer.username = Username::parse(&name.to_ascii_lowercase()).unwrap();
    let err = repo.create(newcomer).await.unwrap_err();
    assert!(matches!(err, UserStoreError::UsernameTaken), "{err:?}");
    let created = repo.create(new_user(&unique("Fresh"))).await.unwrap();
    let oid = mongodb::bson::oid::ObjectId::parse_str(created.id.as_str()).unwrap();
    let raw = users
        .find_one(mongodb::bson::doc! { "_id": oid })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        raw.get_str("usernameLower").unwrap(),
        created.username.as_str().to_ascii_lowercase(),
        "new documents carry the additive folded field"
    );
}

#[test]
fn test_uris_get_a_short_selection_timeout() {
    assert_eq!(
        with_short_selection_timeout("mongodb://localhost:27017"),
        "mongodb://localhost:27017/?serverSelectionTimeoutMS=5000"
    );
    assert_eq!(
        with_short_selection_timeout("mongodb://localhost/db"),
        "mongodb://localhost/db?serverSelectionTimeoutMS=5000"
    );
    assert_eq!(
        with_short_selection_timeout("mongodb://h/db?replicaSet=rs0"),
        "mongodb://h/db?replicaSet=rs0&serverSelectionTimeoutMS=5000"
    );
    assert_eq!(
        with_short_selection_timeout("mongodb://h/?serverSelectionTimeoutMS=100"),
        "mongodb://h/?serverSelectionTimeoutMS=100"
    );
}
