//! Redis for tests: where it is, whether it answers, and cleaning up a key
//! prefix. Without Redis a test says SKIPPED and passes, except in CI (`CI`
//! set), where Redis must answer.

use std::io::Write as _;
use std::time::Duration;

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether Redis answers a PING within two seconds.
pub async fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok()
}

/// Panics in CI, else says SKIPPED (straight to stderr: libtest swallows the
/// `eprintln!` of a passing test) so the caller can return.
pub fn skip_without_redis(url: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "Redis at {url} is required when CI is set: {why}"
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("redis test")
        .to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: Redis not reachable at {url} ({why}); set CI=1 to fail instead"
    );
}

/// Deletes every key under `prefix:`.
pub async fn delete_prefix(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).exec_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Runs a test `case` that writes under `prefix:` and deletes those keys
/// afterwards, even when the case failed (its panic is re-raised after).
pub async fn cleaning_up<Fut>(url: &str, prefix: &str, case: Fut)
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    cleaning_up_on(&RedisTarget::Single(url.to_owned()), prefix, case).await;
}

/// Runs `case` with the Redis URL and a fresh key prefix named after `name`,
/// deleting that prefix's keys afterwards (see [`cleaning_up`]); says SKIPPED
/// and returns when Redis does not answer outside CI.
pub async fn on_fresh_prefix<F, Fut>(name: &str, case: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let url = redis_url();
    if !redis_answers(&url).await {
        skip_without_redis(&url, "no PING answer");
        return;
    }
    let prefix = format!("chatbot-{name}-{}", uuid::Uuid::new_v4().simple());
    cleaning_up(&url, &prefix, case(url.clone(), prefix.clone())).await;
}

// ------------------------------------------------------- Redis Cluster

pub use chatbot_server::adapters::outbound::redis_manager::RedisTarget;

/// `REDIS_CLUSTER_URLS` (the seed nodes `.ci/redis-cluster.sh` prints), if set.
pub fn cluster_urls() -> Option<Vec<String>> {
    let raw = std::env::var("REDIS_CLUSTER_URLS").ok()?;
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    (!urls.is_empty()).then_some(urls)
}

/// Whether the cluster at `urls` answers (its first reachable seed says
/// `cluster_state:ok`).
pub async fn cluster_answers(urls: &[String]) -> bool {
    for url in urls {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            continue;
        };
        if let Ok(info) = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async::<String>(&mut conn)
            .await
        {
            return info.contains("cluster_state:ok");
        }
    }
    false
}

/// The Redis Cluster to test on, or `None` after saying SKIPPED (outside CI;
/// under CI a missing or unhealthy cluster fails the test).
pub async fn cluster_target() -> Option<RedisTarget> {
    let test = std::thread::current()
        .name()
        .unwrap_or("redis cluster test")
        .to_owned();
    let Some(urls) = cluster_urls() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "REDIS_CLUSTER_URLS is required when CI is set (run .ci/redis-cluster.sh)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: REDIS_CLUSTER_URLS is not set (eval \"$(.ci/redis-cluster.sh)\"); set CI=1 to fail instead"
        );
        return None;
    };
    if !cluster_answers(&urls).await {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Redis Cluster at REDIS_CLUSTER_URLS is required when CI is set and does not answer"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the Redis Cluster at REDIS_CLUSTER_URLS does not answer"
        );
        return None;
    }
    Some(RedisTarget::Cluster(urls))
}

/// Deletes every key under `prefix:`, on one Redis or on every node of a
/// cluster (a replica refuses the DEL, its primary takes it).
pub async fn delete_prefix_on(target: &RedisTarget, prefix: &str) -> redis::RedisResult<()> {
    match target {
        RedisTarget::Single(url) => delete_prefix(url, prefix).await,
        RedisTarget::Cluster(urls) => {
            for url in urls {
                let _ = delete_node_prefix(url, prefix).await;
            }
            Ok(())
        }
    }
}

async fn delete_node_prefix(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        // One key per DEL: the keys of one node may be in many slots.
        for key in keys {
            let _ = redis::cmd("DEL").arg(&key).exec_async(&mut conn).await;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// [`cleaning_up`] on either kind of Redis.
pub async fn cleaning_up_on<Fut>(target: &RedisTarget, prefix: &str, case: Fut)
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case).await;
    if let Err(e) = delete_prefix_on(target, prefix).await {
        let _ = writeln!(std::io::stderr(), "could not delete {prefix}:*: {e}");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// [`on_fresh_prefix`] on the Redis Cluster: `case` gets the target and a
/// fresh prefix; says SKIPPED and returns without a cluster outside CI.
pub async fn on_fresh_cluster_prefix<F, Fut>(name: &str, case: F)
where
    F: FnOnce(RedisTarget, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(target) = cluster_target().await else {
        return;
    };
    let prefix = format!("chatbot-{name}-{}", uuid::Uuid::new_v4().simple());
    cleaning_up_on(&target, &prefix, case(target.clone(), prefix.clone())).await;
}
