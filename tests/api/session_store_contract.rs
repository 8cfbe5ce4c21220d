//! The `SessionStore` contract: one set of cases run against every store, so
//! the in-memory and Redis adapters cannot drift apart.
//!
//! Redis is taken from `REDIS_URL` (default `redis://127.0.0.1:6379`), each test
//! in its own key prefix that is deleted afterwards. Without a reachable Redis
//! the Redis tests print SKIPPED and pass, unless `CI` is set: then they fail.

use crate::common;

use common::redis::{cleaning_up_on, cluster_target, redis_url, skip_without_redis, RedisTarget};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::memory_sessions::InMemorySessionStore;
use chatbot_server::adapters::outbound::redis_sessions::RedisSessionStore;
use chatbot_server::application::ports::*;
use chatbot_server::domain::*;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::OnceCell;

const LONG_TTL: Duration = Duration::from_secs(600);

/// Which store a case runs against.
#[derive(Clone)]
enum Backend {
    Memory,
    Redis { url: RedisTarget, prefix: String },
}

impl Backend {
    /// A store with the given idle ttl. Redis stores of one backend share its
    /// key prefix, so they see the same sessions.
    async fn store(&self, ttl: Duration) -> Arc<dyn SessionStore> {
        match self {
            Backend::Memory => Arc::new(InMemorySessionStore::new(ttl)),
            Backend::Redis { url, prefix } => Arc::new(
                RedisSessionStore::connect(url.clone(), ttl, prefix)
                    .await
                    .expect("Redis answered a moment ago"),
            ),
        }
    }

    /// A store keeping at most `max` live sessions per user.
    async fn bounded_store(&self, max: u32) -> Arc<dyn SessionStore> {
        match self {
            Backend::Memory => {
                Arc::new(InMemorySessionStore::new(LONG_TTL).with_max_per_user(Some(max)))
            }
            Backend::Redis { url, prefix } => Arc::new(
                RedisSessionStore::connect(url.clone(), LONG_TTL, prefix)
                    .await
                    .expect("Redis answered a moment ago")
                    .with_max_per_user(Some(max)),
            ),
        }
    }

    /// Short enough to keep the expiry cases quick, long enough that a round
    /// trip plus scheduling jitter on a loaded machine stays well inside it.
    fn short_ttl(&self) -> Duration {
        match self {
            Backend::Memory => Duration::from_millis(300),
            Backend::Redis { .. } => Duration::from_secs(1),
        }
    }
}

// ------------------------------------------------------------- helpers

fn user(name: &str) -> SessionUser {
    SessionUser {
        id: UserId::parse("64b7f0c2a1b2c3d4e5f60718").unwrap(),
        username: Username::parse(name).unwrap(),
    }
}

fn message(role: Role, content: impl Into<String>, timestamp: DateTime<Utc>) -> ChatMessage {
    ChatMessage {
        role,
        content: content.into(),
        timestamp,
    }
}

fn new_session() -> Session {
    Session::new(SessionId::generate(), user("alice"), Utc::now())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn contents(session: &Session) -> Vec<String> {
    session.history.iter().map(|m| m.content.clone()).collect()
}

async fn get(store: &Arc<dyn SessionStore>, id: &SessionId) -> Session {
    store
        .get(id)
        .await
        .expect("get succeeds")
        .expect("session exists")
}

async fn counts(store: &Arc<dyn SessionStore>) -> (u64, u64) {
    let c = store.counts().await.expect("counts succeeds");
    (c.active, c.escalated)
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, SessionStoreError>, what: &str) {
    assert!(
        matches!(result, Err(SessionStoreError::NotFound)),
        "{what}: expected NotFound, got {result:?}"
    );
}

async fn assert_absent(store: &Arc<dyn SessionStore>, id: &SessionId) {
    assert!(store.get(id).await.unwrap().is_none(), "get sees {id}");
    assert_not_found(
        store.append(id, message(Role::User, "x", Utc::now())).await,
        "append",
    );
    assert_not_found(store.touch(id, Utc::now()).await, "touch");
    assert_not_found(store.mark_escalated(id).await, "mark_escalated");
}

// --------------------------------------------------------------- cases

async fn create_then_get_round_trips(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let created = Utc::now() - TimeDelta::minutes(5);
    let mut session = Session::new(SessionId::generate(), user("alice"), created);
    session.push_message(message(
        Role::User,
        "héllo \"there\"\n",
        created + TimeDelta::nanoseconds(1_234_567),
    ));
    session.push_message(message(
        Role::Assistant,
        "hi!",
        created + TimeDelta::seconds(2),
    ));
    store.create(&session).await.unwrap();

    let got = get(&store, &session.id).await;
    assert_eq!(got.id, session.id);
    assert_eq!(got.user, session.user);
    assert!(!got.escalated);
    assert_eq!(millis(got.created_at), millis(session.created_at));
    assert_eq!(millis(got.last_activity), millis(session.last_activity));
    assert_eq!(got.history.len(), 2);
    for (got, want) in got.history.iter().zip(&session.history) {
        assert_eq!(got.role, want.role);
        assert_eq!(got.content, want.content);
        assert_eq!(millis(got.timestamp), millis(want.timestamp));
    }
}

async fn get_of_an_unknown_session_is_none(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    assert!(store.get(&SessionId::generate()).await.unwrap().is_none());
}

async fn append_keeps_order_and_trims_to_the_limit(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let session = new_session();
    store.create(&session).await.unwrap();
    let start = Utc::now();
    for i in 0..25 {
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        let at = start + TimeDelta::milliseconds(i);
        store
            .append(&session.id, message(role, format!("m{i}"), at))
            .await
            .unwrap();
    }

    let got = get(&store, &session.id).await;
    let want: Vec<String> = (15..25).map(|i| format!("m{i}")).collect();
    assert_eq!(contents(&got), want);
    assert_eq!(got.history.len(), HISTORY_LIMIT);
    assert_eq!(got.history[0].role, Role::Assistant, "m15 was odd");
    assert_eq!(
        millis(got.last_activity),
        millis(start + TimeDelta::milliseconds(24)),
        "append moves last_activity to the newest message"
    );
}

async fn writes_to_an_unknown_session_are_not_found(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let unknown = SessionId::generate();
    assert_absent(&store, &unknown).await;
    assert!(
        store.get(&unknown).await.unwrap().is_none(),
        "failed writes must not create the session"
    );
    assert_eq!(counts(&store).await, (0, 0));
}

async fn mark_escalated_reports_only_the_first_time(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let session = new_session();
    store.create(&session).await.unwrap();
    assert!(store.mark_escalated(&session.id).await.unwrap());
    assert!(!store.mark_escalated(&session.id).await.unwrap());
    assert!(get(&store, &session.id).await.escalated);

    store
        .append(&session.id, message(Role::User, "still here", Utc::now()))
        .await
        .unwrap();
    assert!(
        get(&store, &session.id).await.escalated,
        "append keeps the flag"
    );
}

async fn remove_makes_a_session_absent(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let session = new_session();
    store.create(&session).await.unwrap();
    store
        .append(&session.id, message(Role::User, "bye", Utc::now()))
        .await
        .unwrap();
    store.mark_escalated(&session.id).await.unwrap();

    store.remove(&session.id).await.unwrap();
    assert_absent(&store, &session.id).await;
    assert_eq!(counts(&store).await, (0, 0));
    store
        .remove(&session.id)
        .await
        .expect("removing twice is Ok");
    store
        .remove(&SessionId::generate())
        .await
        .expect("removing an unknown session is Ok");
}

async fn counts_track_active_and_escalated_sessions(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    assert_eq!(counts(&store).await, (0, 0));
    let sessions: Vec<Session> = (0..3).map(|_| new_session()).collect();
    for s in &sessions {
        store.create(s).await.unwrap();
    }
    assert_eq!(counts(&store).await, (3, 0));

    store.mark_escalated(&sessions[0].id).await.unwrap();
    store.mark_escalated(&sessions[0].id).await.unwrap();
    store.mark_escalated(&sessions[1].id).await.unwrap();
    assert_eq!(counts(&store).await, (3, 2));

    store.remove(&sessions[0].id).await.unwrap();
    assert_eq!(counts(&store).await, (2, 1));
    store.remove(&sessions[2].id).await.unwrap();
    assert_eq!(counts(&store).await, (1, 1));
}

async fn create_replaces_a_session_with_the_same_id(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let mut first = new_session();
    first.push_message(message(Role::User, "old", Utc::now()));
    store.create(&first).await.unwrap();
    store.mark_escalated(&first.id).await.unwrap();
    assert_eq!(counts(&store).await, (1, 1));

    let later = Utc::now() + TimeDelta::seconds(1);
    let second = Session::new(first.id.clone(), user("bob_2"), later);
    store.create(&second).await.unwrap();

    let got = get(&store, &first.id).await;
    assert_eq!(got.user, second.user);
    assert!(got.history.is_empty(), "the old history is gone");
    assert!(!got.escalated, "the old flag is gone");
    assert_eq!(millis(got.created_at), millis(later));
    assert_eq!(counts(&store).await, (1, 0));
}

async fn touch_moves_last_activity_forward_only(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let session = new_session();
    store.create(&session).await.unwrap();

    let later = session.last_activity + TimeDelta::seconds(30);
    store.touch(&session.id, later).await.unwrap();
    assert_eq!(
        millis(get(&store, &session.id).await.last_activity),
        millis(later)
    );

    store
        .touch(&session.id, later - TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(
        millis(get(&store, &session.id).await.last_activity),
        millis(later),
        "a late, out-of-order touch does not move activity back"
    );
}

async fn sessions_expire_after_the_ttl(backend: Backend) {
    let ttl = backend.short_ttl();
    let store = backend.store(ttl).await;
    let (plain, escalated) = (new_session(), new_session());
    store.create(&plain).await.unwrap();
    store.create(&escalated).await.unwrap();
    store.mark_escalated(&escalated.id).await.unwrap();
    assert_eq!(counts(&store).await, (2, 1));

    tokio::time::sleep(ttl + ttl / 2).await;
    assert_absent(&store, &plain.id).await;
    assert_absent(&store, &escalated.id).await;
    assert_eq!(counts(&store).await, (0, 0));

    store
        .create(&plain)
        .await
        .expect("an expired id can be created again");
    assert_eq!(get(&store, &plain.id).await.user, plain.user);
}

async fn activity_keeps_a_session_alive(backend: Backend) {
    let ttl = backend.short_ttl();
    let store = backend.store(ttl).await;
    let session = new_session();
    store.create(&session).await.unwrap();
    let step = ttl * 3 / 5;

    tokio::time::sleep(step).await;
    store.touch(&session.id, Utc::now()).await.unwrap();
    tokio::time::sleep(step).await;
    assert!(
        store.get(&session.id).await.unwrap().is_some(),
        "touch pushed expiry back"
    );

    store
        .append(&session.id, message(Role::User, "ping", Utc::now()))
        .await
        .unwrap();
    tokio::time::sleep(step).await;
    assert_eq!(contents(&get(&store, &session.id).await), ["ping"]);
    assert_eq!(counts(&store).await, (1, 0), "append pushed expiry back");

    tokio::time::sleep(ttl + ttl / 2).await;
    assert_absent(&store, &session.id).await;
    assert_eq!(counts(&store).await, (0, 0));
}

async fn concurrent_appends_lose_nothing(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    for tasks in [8, 20] {
        let session = new_session();
        store.create(&session).await.unwrap();
        let handles: Vec<_> = (0..tasks)
            .map(|i| {
                let (store, id) = (Arc::clone(&store), session.id.clone());
                tokio::spawn(async move {
                    store
                        .append(&id, message(Role::User, format!("t{i}"), Utc::now()))
                        .await
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap().expect("append succeeds");
        }

        let got = contents(&get(&store, &session.id).await);
        let unique: HashSet<&String> = got.iter().collect();
        let sent: HashSet<String> = (0..tasks).map(|i| format!("t{i}")).collect();
        assert_eq!(
            got.len(),
            tasks.min(HISTORY_LIMIT),
            "{tasks} tasks: {got:?}"
        );
        assert_eq!(
            unique.len(),
            got.len(),
            "{tasks} tasks, duplicates: {got:?}"
        );
        assert!(got.iter().all(|c| sent.contains(c)), "{got:?}");
    }
}

async fn list_for_user_returns_that_users_live_sessions_newest_first(backend: Backend) {
    let store = backend.store(LONG_TTL).await;
    let owner = |id: &str| SessionUser {
        id: UserId::parse(id).unwrap(),
        username: Username::parse("someone").unwrap(),
    };
    let (alice, bob) = (
        format!("a{}", uuid::Uuid::new_v4().simple()),
        format!("b{}", uuid::Uuid::new_v4().simple()),
    );
    let base = Utc::now() - TimeDelta::minutes(10);
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = Session::new(
            SessionId::generate(),
            owner(&alice),
            base + TimeDelta::seconds(i),
        );
        store.create(&s).await.unwrap();
        ids.push(s.id);
    }
    let theirs = Session::new(SessionId::generate(), owner(&bob), base);
    store.create(&theirs).await.unwrap();
    // The first becomes the most recently active.
    store.touch(&ids[0], Utc::now()).await.unwrap();

    let alice_id = UserId::parse(&alice).unwrap();
    let listed = store.list_for_user(&alice_id, 10).await.unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(listed_ids.len(), 3, "{listed_ids:?}");
    assert_eq!(listed_ids[0], ids[0], "most recently active first");
    assert!(listed.iter().all(|s| s.user.id == alice_id));
    assert_eq!(store.list_for_user(&alice_id, 2).await.unwrap().len(), 2);

    store.remove(&ids[1]).await.unwrap();
    let after = store.list_for_user(&alice_id, 10).await.unwrap();
    assert!(
        after.iter().all(|s| s.id != ids[1]),
        "removed sessions are gone"
    );
    let nobody = UserId::parse("nobody").unwrap();
    assert!(store.list_for_user(&nobody, 10).await.unwrap().is_empty());
}

async fn list_for_user_forgets_expired_sessions(backend: Backend) {
    let store = backend.store(backend.short_ttl()).await;
    let user = format!("u{}", uuid::Uuid::new_v4().simple());
    let owner = SessionUser {
        id: UserId::parse(&user).unwrap(),
        username: Username::parse("someone").unwrap(),
    };
    let s = Session::new(SessionId::generate(), owner.clone(), Utc::now());
    store.create(&s).await.unwrap();
    assert_eq!(store.list_for_user(&owner.id, 10).await.unwrap().len(), 1);
    tokio::time::sleep(backend.short_ttl() + Duration::from_millis(300)).await;
    assert!(store.list_for_user(&owner.id, 10).await.unwrap().is_empty());
}

async fn one_session_too_many_evicts_the_users_least_recently_active(backend: Backend) {
    let store = backend.bounded_store(3).await;
    let owner = |id: &str| SessionUser {
        id: UserId::parse(id).unwrap(),
        username: Username::parse("someone").unwrap(),
    };
    let (alice, bob) = (
        format!("a{}", uuid::Uuid::new_v4().simple()),
        format!("b{}", uuid::Uuid::new_v4().simple()),
    );
    let theirs = Session::new(SessionId::generate(), owner(&bob), Utc::now());
    store.create(&theirs).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = Session::new(SessionId::generate(), owner(&alice), Utc::now());
        store.create(&s).await.unwrap();
        ids.push(s.id);
        // Activity is ordered to the millisecond in Redis.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first becomes more recent than the second.
    store.touch(&ids[0], Utc::now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newest = Session::new(SessionId::generate(), owner(&alice), Utc::now());
    store.create(&newest).await.unwrap();

    assert_absent(&store, &ids[1]).await;
    for id in [&ids[0], &ids[2], &newest.id, &theirs.id] {
        assert!(store.get(id).await.unwrap().is_some(), "{id} was kept");
    }
    let alice_id = UserId::parse(&alice).unwrap();
    assert_eq!(store.list_for_user(&alice_id, 10).await.unwrap().len(), 3);
    // Many more: the bound holds, the counts agree.
    for _ in 0..5 {
        let s = Session::new(SessionId::generate(), owner(&alice), Utc::now());
        store.create(&s).await.unwrap();
    }
    assert_eq!(store.list_for_user(&alice_id, 10).await.unwrap().len(), 3);
    assert_eq!(counts(&store).await.0, 4, "three of alice's and bob's one");
}

// ------------------------------------------------------------- runners

/// A Redis backend in a fresh key prefix, or `None` (after saying so) when
/// Redis is unreachable outside CI.
async fn redis_backend() -> Option<Backend> {
    // Probed once per run, so an absent Redis costs one connect timeout, not one per test.
    static PROBE: OnceCell<Result<(), String>> = OnceCell::const_new();
    let url = redis_url();
    let probe = PROBE
        .get_or_init(|| async {
            RedisSessionStore::connect(&redis_url(), LONG_TTL, "chatbot-test-probe")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
    match probe {
        Ok(()) => Some(Backend::Redis {
            url: RedisTarget::Single(url),
            prefix: format!("chatbot-test-{}", uuid::Uuid::new_v4().simple()),
        }),
        Err(e) => {
            skip_without_redis(&url, e);
            None
        }
    }
}

/// Runs a case on Redis and deletes its keys afterwards, even if it failed.
async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(backend) = redis_backend().await else {
        return;
    };
    let (url, prefix) = match &backend {
        Backend::Redis { url, prefix } => (url.clone(), prefix.clone()),
        _ => unreachable!("redis_backend makes Redis backends"),
    };
    cleaning_up_on(&url, &prefix, case(backend)).await;
}

/// Runs a case on the Redis Cluster and deletes its keys afterwards.
async fn on_redis_cluster<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = cluster_target().await else {
        return;
    };
    let prefix = format!("chatbot-test-{}", uuid::Uuid::new_v4().simple());
    let backend = Backend::Redis {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    cleaning_up_on(&url, &prefix, case(backend)).await;
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }

        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }

        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis_cluster(super::$case).await;
                }
            )*
        }
    };
}

contract!(
    create_then_get_round_trips,
    get_of_an_unknown_session_is_none,
    append_keeps_order_and_trims_to_the_limit,
    writes_to_an_unknown_session_are_not_found,
    mark_escalated_reports_only_the_first_time,
    remove_makes_a_session_absent,
    counts_track_active_and_escalated_sessions,
    create_replaces_a_session_with_the_same_id,
    touch_moves_last_activity_forward_only,
    sessions_expire_after_the_ttl,
    activity_keeps_a_session_alive,
    concurrent_appends_lose_nothing,
    list_for_user_returns_that_users_live_sessions_newest_first,
    list_for_user_forgets_expired_sessions,
    one_session_too_many_evicts_the_users_least_recently_active,
);

// ------------------------------------------------- Redis-only behaviour

/// Data the store did not write must surface as `Unavailable`, never a panic.
#[tokio::test]
async fn redis_corrupt_session_is_unavailable() {
    on_redis(|backend| async move {
        let Backend::Redis {
            url: RedisTarget::Single(url),
            prefix,
        } = &backend
        else {
            unreachable!()
        };
        let store = backend.store(LONG_TTL).await;
        let session = new_session();
        store.create(&session).await.unwrap();

        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = format!("{prefix}:session:{}", session.id);
        redis::cmd("HSET")
            .arg(&key)
            .arg("created_at")
            .arg("not a time")
            .exec_async(&mut conn)
            .await
            .unwrap();
        let result = store.get(&session.id).await;
        assert!(
            matches!(result, Err(SessionStoreError::Unavailable { .. })),
            "{result:?}"
        );
    })
    .await;
}

/// Nothing the store writes per session may outlive the ttl.
#[tokio::test]
async fn redis_session_keys_carry_the_ttl() {
    on_redis(|backend| async move {
        let Backend::Redis {
            url: RedisTarget::Single(url),
            prefix,
        } = &backend
        else {
            unreachable!()
        };
        let store = backend.store(LONG_TTL).await;
        let session = new_session();
        store.create(&session).await.unwrap();
        store
            .append(&session.id, message(Role::User, "hi", Utc::now()))
            .await
            .unwrap();

        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for key in [
            format!("{prefix}:session:{}", session.id),
            format!("{prefix}:session:{}:history", session.id),
        ] {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let max = i64::try_from(LONG_TTL.as_millis()).unwrap();
            assert!(pttl > 0 && pttl <= max, "{key} has PTTL {pttl}");
        }
    })
    .await;
}
