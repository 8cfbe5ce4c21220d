//! The `TicketStore` and `RevocationStore` contracts: one set of cases run
//! against the in-memory and the Redis adapters.
//!
//! Redis is taken from `REDIS_URL` (default `redis://127.0.0.1:6379`), each
//! case in its own key prefix, deleted afterwards. Without a reachable Redis
//! the Redis cases print SKIPPED and pass, unless `CI` is set. The Redis
//! cases run again on the Redis Cluster at `REDIS_CLUSTER_URLS`.

use crate::common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatbot_server::adapters::outbound::memory_access::{
    InMemoryRevocationStore, InMemoryTicketStore,
};
use chatbot_server::adapters::outbound::redis_access::{RedisRevocationStore, RedisTicketStore};
use chatbot_server::application::ports::{Revocation, RevocationStore, TicketStore, TokenClaims};
use chatbot_server::domain::{UserId, Username, WsTicket};
use common::redis::{on_fresh_cluster_prefix, on_fresh_prefix, RedisTarget};

/// Two handles on one store, as two instances would hold it: for memory,
/// the same store twice; for Redis, two connections on one key prefix.
struct Stores {
    tickets: [Arc<dyn TicketStore>; 2],
    revocations: [Arc<dyn RevocationStore>; 2],
}

#[derive(Clone)]
enum Backend {
    Memory,
    Redis { url: RedisTarget, prefix: String },
}

impl Backend {
    async fn stores(&self) -> Stores {
        match self {
            Backend::Memory => {
                let t: Arc<dyn TicketStore> = Arc::new(InMemoryTicketStore::default());
                let r: Arc<dyn RevocationStore> = Arc::new(InMemoryRevocationStore::default());
                Stores {
                    tickets: [t.clone(), t],
                    revocations: [r.clone(), r],
                }
            }
            Backend::Redis { url, prefix } => {
                let ticket = || async {
                    Arc::new(
                        RedisTicketStore::connect(url.clone(), prefix)
                            .await
                            .unwrap(),
                    ) as Arc<dyn TicketStore>
                };
                let revocation = || async {
                    Arc::new(
                        RedisRevocationStore::connect(url.clone(), prefix)
                            .await
                            .unwrap(),
                    ) as Arc<dyn RevocationStore>
                };
                Stores {
                    tickets: [ticket().await, ticket().await],
                    revocations: [revocation().await, revocation().await],
                }
            }
        }
    }
}

fn claims(user: &str, issued_at_ms: i64) -> TokenClaims {
    let now = chrono::Utc::now().timestamp();
    TokenClaims {
        user_id: UserId::parse(user).unwrap(),
        username: Username::parse("alice").unwrap(),
        issued_at: issued_at_ms.div_euclid(1000),
        expires_at: now + 600,
        token_id: uuid::Uuid::new_v4().simple().to_string(),
        issued_at_ms,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The next revocation a subscriber hears, within two seconds.
async fn heard(rx: &mut tokio::sync::broadcast::Receiver<Revocation>) -> Revocation {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("a revocation is announced within 2 s")
        .expect("the channel is open")
}

// ------------------------------------------------------------- cases

async fn a_ticket_is_taken_once_on_any_instance(backend: Backend) {
    let s = backend.stores().await;
    let ticket = WsTicket::generate().digest();
    let c = claims("u1", now_ms());
    s.tickets[0]
        .put(&ticket, &c, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(s.tickets[1].take(&ticket).await.unwrap(), Some(c));
    assert_eq!(s.tickets[0].take(&ticket).await.unwrap(), None, "spent");
    assert_eq!(s.tickets[1].take(&ticket).await.unwrap(), None, "spent");
    let unknown = WsTicket::generate().digest();
    assert_eq!(s.tickets[0].take(&unknown).await.unwrap(), None);
}

async fn a_ticket_expires(backend: Backend) {
    let s = backend.stores().await;
    let ticket = WsTicket::generate().digest();
    s.tickets[0]
        .put(&ticket, &claims("u1", now_ms()), Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.tickets[1].take(&ticket).await.unwrap(), None);
}

async fn concurrent_takes_have_one_winner(backend: Backend) {
    let s = backend.stores().await;
    let ticket = WsTicket::generate().digest();
    s.tickets[0]
        .put(&ticket, &claims("u1", now_ms()), Duration::from_secs(30))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = s.tickets[i % 2].clone();
            let ticket = ticket.clone();
            tokio::spawn(async move { store.take(&ticket).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
}

async fn a_revoked_token_is_revoked_everywhere_and_announced(backend: Backend) {
    let s = backend.stores().await;
    let mut there = s.revocations[1].subscribe();
    let (revoked, other) = (claims("u1", now_ms()), claims("u1", now_ms()));
    s.revocations[0].revoke_token(&revoked).await.unwrap();
    assert!(s.revocations[1].is_revoked(&revoked).await.unwrap());
    assert!(!s.revocations[1].is_revoked(&other).await.unwrap());
    assert_eq!(
        heard(&mut there).await,
        Revocation::Token {
            token_id: revoked.token_id.clone()
        }
    );
}

async fn a_user_revocation_covers_only_earlier_tokens(backend: Backend) {
    let s = backend.stores().await;
    let mut there = s.revocations[1].subscribe();
    let before = now_ms();
    let old = claims("u1", before - 5_000);
    let same_user_later = claims("u1", before + 1);
    let other_user = claims("u2", before - 5_000);
    let keep = Duration::from_secs(60);
    s.revocations[0]
        .revoke_user(&old.user_id, before, keep)
        .await
        .unwrap();
    let announced = heard(&mut there).await;
    assert_eq!(
        announced,
        Revocation::User {
            user_id: old.user_id.clone(),
            before_ms: before
        }
    );
    assert!(announced.covers(&old));
    assert!(!announced.covers(&same_user_later));
    for (c, want) in [
        (&old, true),
        (&same_user_later, false),
        (&other_user, false),
    ] {
        assert_eq!(s.revocations[1].is_revoked(c).await.unwrap(), want, "{c:?}");
    }
    // An earlier mark never lowers a later one.
    s.revocations[1]
        .revoke_user(&old.user_id, before - 60_000, keep)
        .await
        .unwrap();
    assert!(s.revocations[0].is_revoked(&old).await.unwrap());
}

// ------------------------------------------------------------- runners

async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_fresh_prefix("access", |url, prefix| {
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
    on_fresh_cluster_prefix("access", |url, prefix| case(Backend::Redis { url, prefix })).await;
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }

        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }

        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_redis_cluster(super::$case).await;
                }
            )*
        }
    };
}

contract!(
    a_ticket_is_taken_once_on_any_instance,
    a_ticket_expires,
    concurrent_takes_have_one_winner,
    a_revoked_token_is_revoked_everywhere_and_announced,
    a_user_revocation_covers_only_earlier_tokens,
);
