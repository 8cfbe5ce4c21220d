//! The `UsageStore` contract: one set of cases run against the in-process
//! store, the SQLite file and Redis, so a budget counts the same wherever
//! usage is kept. Redis cases run in their own key prefix, deleted
//! afterwards; without Redis they print SKIPPED (and fail when `CI` is set).

use crate::common;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use chatbot_server::adapters::outbound::memory_usage::InMemoryUsageStore;
use chatbot_server::adapters::outbound::redis_usage::RedisUsageStore;
use chatbot_server::adapters::outbound::sqlite_usage::SqliteUsageStore;
use chatbot_server::application::ports::UsageStore;
use chatbot_server::domain::budget::WindowSpan;
use chatbot_server::domain::UserId;
use common::redis::on_fresh_prefix;

#[derive(Clone)]
enum Backend {
    /// One store shared by every "instance" of the case.
    Memory(Arc<InMemoryUsageStore>),
    /// One file, opened anew by each instance (as after a restart).
    Sqlite(PathBuf),
    Redis {
        url: String,
        prefix: String,
    },
}

impl Backend {
    /// A store; two from one backend are two instances sharing its counts.
    async fn store(&self) -> Arc<dyn UsageStore> {
        match self {
            Backend::Memory(shared) => shared.clone(),
            Backend::Sqlite(path) => Arc::new(SqliteUsageStore::open(path).await.expect("opens")),
            Backend::Redis { url, prefix } => Arc::new(
                RedisUsageStore::connect(url, prefix)
                    .await
                    .expect("Redis answered a moment ago"),
            ),
        }
    }
}

fn user() -> UserId {
    UserId::parse(&format!("u{}", uuid::Uuid::new_v4().simple())).unwrap()
}

const DAY: u64 = 86_400;

/// The window of a day-long budget now (as the server reads it).
fn today() -> WindowSpan {
    let now = chrono::Utc::now().timestamp() as u64;
    WindowSpan {
        start: now - now % DAY,
        length: DAY,
    }
}

async fn adds_return_the_running_count_and_used_reads_it(backend: Backend) {
    let store = backend.store().await;
    let (alice, window) = (user(), today());
    assert_eq!(
        store.used(&alice, window).await.unwrap(),
        0,
        "never counted"
    );
    assert_eq!(store.add(&alice, window, 30).await.unwrap(), 30);
    assert_eq!(store.add(&alice, window, 12).await.unwrap(), 42);
    assert_eq!(store.used(&alice, window).await.unwrap(), 42);
    assert_eq!(store.add(&alice, window, 0).await.unwrap(), 42);
}

async fn users_and_windows_are_counted_apart(backend: Backend) {
    let store = backend.store().await;
    let (alice, bob, window) = (user(), user(), today());
    store.add(&alice, window, 10).await.unwrap();
    assert_eq!(store.used(&bob, window).await.unwrap(), 0);
    let next = WindowSpan {
        start: window.end(),
        length: DAY,
    };
    assert_eq!(
        store.used(&alice, next).await.unwrap(),
        0,
        "a new window starts at 0"
    );
    let hourly = WindowSpan {
        start: window.start,
        length: 3600,
    };
    assert_eq!(
        store.used(&alice, hourly).await.unwrap(),
        0,
        "a window of another length is another count"
    );
    store.add(&alice, next, 5).await.unwrap();
    assert_eq!(store.used(&alice, window).await.unwrap(), 10);
}

async fn two_instances_count_every_add_once(backend: Backend) {
    let (one, two) = (backend.store().await, backend.store().await);
    let (alice, window) = (user(), today());
    let mut adds = Vec::new();
    for i in 0..20u64 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        let alice = alice.clone();
        adds.push(tokio::spawn(async move {
            store.add(&alice, window, 7).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for add in adds {
        seen.push(add.await.unwrap());
    }
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=20).map(|n| n * 7).collect();
    assert_eq!(seen, expected, "each add saw a distinct running count");
    assert_eq!(two.used(&alice, window).await.unwrap(), 140);
    assert_eq!(one.used(&alice, window).await.unwrap(), 140);
}

// -------------------------------------------------------------- runners

async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_fresh_prefix("usage-test", |url, prefix| {
        case(Backend::Redis { url, prefix })
    })
    .await;
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let shared = std::sync::Arc::new(super::InMemoryUsageStore::default());
                    super::$case(super::Backend::Memory(shared)).await;
                }
            )*
        }

        mod sqlite_usage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("usage.db");
                    super::$case(super::Backend::Sqlite(path)).await;
                }
            )*
        }

        mod redis_usage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }
    };
}

contract!(
    adds_return_the_running_count_and_used_reads_it,
    users_and_windows_are_counted_apart,
    two_instances_count_every_add_once,
);
