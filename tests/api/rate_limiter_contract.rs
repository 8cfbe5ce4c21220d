//! The `RateLimiter` contract: one set of cases run against the in-process
//! and the Redis limiter, so a limit means the same with or without
//! `REDIS_URL`. Redis cases run in their own key prefix, deleted afterwards;
//! without Redis they print SKIPPED (and fail when `CI` is set). They run
//! again on the Redis Cluster at `REDIS_CLUSTER_URLS`.

use crate::common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::memory_limiter::InMemoryRateLimiter;
use chatbot_server::adapters::outbound::redis_limiter::RedisRateLimiter;
use chatbot_server::application::ports::{Admission, Quota, RateLimiter};
use common::redis::{on_fresh_cluster_prefix, on_fresh_prefix, RedisTarget};

#[derive(Clone)]
enum Backend {
    /// One limiter shared by every "instance" of the case.
    Memory(Arc<InMemoryRateLimiter>),
    Redis {
        url: RedisTarget,
        prefix: String,
    },
}

impl Backend {
    /// A limiter; two from one Redis backend are two instances sharing state.
    async fn limiter(&self) -> Arc<dyn RateLimiter> {
        match self {
            Backend::Memory(shared) => shared.clone(),
            Backend::Redis { url, prefix } => Arc::new(
                RedisRateLimiter::connect(url.clone(), prefix)
                    .await
                    .expect("Redis answered a moment ago"),
            ),
        }
    }
}

fn key(what: &str) -> String {
    format!("{what}:{}", uuid::Uuid::new_v4().simple())
}

fn quota(key: &str, max: u32, window: Duration) -> Quota {
    Quota {
        key: key.to_owned(),
        max,
        window,
    }
}

async fn admitted(limiter: &Arc<dyn RateLimiter>, quotas: &[Quota]) -> bool {
    match limiter.admit(quotas).await.expect("limiter answers") {
        Admission::Admitted(_) => true,
        Admission::Refused { retry_after } => {
            assert!(!retry_after.is_zero(), "a refusal says how long to wait");
            false
        }
    }
}

// ---------------------------------------------------------------- cases

async fn all_of_a_window_may_come_at_once_and_the_next_waits_for_the_oldest(backend: Backend) {
    let limiter = backend.limiter().await;
    let window = Duration::from_millis(1500);
    let q = [quota(&key("w"), 3, window)];
    for i in 0..3 {
        assert!(admitted(&limiter, &q).await, "event {i} fits");
    }
    let Admission::Refused { retry_after } = limiter.admit(&q).await.unwrap() else {
        panic!("the fourth within the window is refused");
    };
    assert!(retry_after <= window, "{retry_after:?}");
    tokio::time::sleep(retry_after + Duration::from_millis(100)).await;
    assert!(
        admitted(&limiter, &q).await,
        "room again once the oldest left"
    );
}

async fn several_quotas_count_all_or_nothing(backend: Backend) {
    let limiter = backend.limiter().await;
    let window = Duration::from_secs(60);
    let (tight, loose) = (key("tight"), key("loose"));
    let both = [quota(&tight, 1, window), quota(&loose, 3, window)];
    assert!(admitted(&limiter, &both).await);
    assert!(!admitted(&limiter, &both).await, "the tight one is full");
    // The refusal counted nothing in the loose one: two more fit there.
    let alone = [quota(&loose, 3, window)];
    assert!(admitted(&limiter, &alone).await);
    assert!(admitted(&limiter, &alone).await);
    assert!(!admitted(&limiter, &alone).await);
}

async fn a_withdrawn_event_no_longer_counts_and_reset_forgets_a_key(backend: Backend) {
    let limiter = backend.limiter().await;
    let window = Duration::from_secs(60);
    let (a, b) = (key("a"), key("b"));
    let q = [quota(&a, 1, window), quota(&b, 1, window)];
    let Admission::Admitted(event) = limiter.admit(&q).await.unwrap() else {
        panic!("the first fits");
    };
    assert!(!admitted(&limiter, &q).await);
    limiter
        .withdraw(&[a.clone(), b.clone()], &event)
        .await
        .unwrap();
    assert!(admitted(&limiter, &q).await, "withdrawn from both");
    limiter.reset(&a).await.unwrap();
    limiter.reset(&b).await.unwrap();
    assert!(admitted(&limiter, &q).await, "reset forgets");
    limiter.reset(&key("never-used")).await.unwrap();
    limiter.withdraw(&[a], &event).await.unwrap();
}

async fn concurrent_admits_on_two_instances_never_exceed_the_max(backend: Backend) {
    let (one, two) = (backend.limiter().await, backend.limiter().await);
    let q = vec![quota(&key("race"), 5, Duration::from_secs(60))];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let limiter = if i % 2 == 0 { one.clone() } else { two.clone() };
        let q = q.clone();
        tasks.push(tokio::spawn(async move { admitted(&limiter, &q).await }));
    }
    let mut n = 0;
    for t in tasks {
        n += usize::from(t.await.unwrap());
    }
    assert_eq!(n, 5);
}

async fn slots_hold_up_to_max_and_free_on_release(backend: Backend) {
    let limiter = backend.limiter().await;
    let k = key("slots");
    let lease = Duration::from_secs(60);
    let a = limiter.acquire(&k, 2, lease).await.unwrap().expect("first");
    let _b = limiter
        .acquire(&k, 2, lease)
        .await
        .unwrap()
        .expect("second");
    assert!(limiter.acquire(&k, 2, lease).await.unwrap().is_none());
    limiter.release(&k, &a).await.unwrap();
    assert!(!limiter.renew(&k, &a, lease).await.unwrap(), "released");
    assert!(limiter.acquire(&k, 2, lease).await.unwrap().is_some());
    limiter.release(&k, &a).await.unwrap();
}

async fn a_slot_nobody_renews_frees_itself(backend: Backend) {
    let limiter = backend.limiter().await;
    let (k, kept) = (key("lease"), key("kept"));
    let lease = Duration::from_millis(600);
    let lost = limiter.acquire(&k, 1, lease).await.unwrap().expect("first");
    let held = limiter
        .acquire(&kept, 1, lease)
        .await
        .unwrap()
        .expect("held");
    assert!(limiter.acquire(&k, 1, lease).await.unwrap().is_none());
    for _ in 0..3 {
        tokio::time::sleep(lease / 3).await;
        assert!(limiter.renew(&kept, &held, lease).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!limiter.renew(&k, &lost, lease).await.unwrap(), "expired");
    assert!(limiter.acquire(&k, 1, lease).await.unwrap().is_some());
    assert!(
        limiter.acquire(&kept, 1, lease).await.unwrap().is_none(),
        "a renewed slot is still held"
    );
}

async fn concurrent_acquires_on_two_instances_get_exactly_max(backend: Backend) {
    let (one, two) = (backend.limiter().await, backend.limiter().await);
    let k = key("race-slots");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let limiter = if i % 2 == 0 { one.clone() } else { two.clone() };
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            limiter
                .acquire(&k, 3, Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += usize::from(t.await.unwrap());
    }
    assert_eq!(n, 3);
}

// -------------------------------------------------------------- runners

async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_fresh_prefix("rl-test", |url, prefix| {
        case(Backend::Redis {
            url: RedisTarget::Single(url),
            prefix,
        })
    })
    .await;
}

async fn on_redis_cluster<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_fresh_cluster_prefix("rl-test", |url, prefix| {
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
                    let shared = std::sync::Arc::new(
                        super::InMemoryRateLimiter::default(),
                    );
                    super::$case(super::Backend::Memory(shared)).await;
                }
            )*
        }

        mod redis_limiter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }

        mod redis_cluster_limiter {
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
    all_of_a_window_may_come_at_once_and_the_next_waits_for_the_oldest,
    several_quotas_count_all_or_nothing,
    a_withdrawn_event_no_longer_counts_and_reset_forgets_a_key,
    concurrent_admits_on_two_instances_never_exceed_the_max,
    slots_hold_up_to_max_and_free_on_release,
    a_slot_nobody_renews_frees_itself,
    concurrent_acquires_on_two_instances_get_exactly_max,
);
