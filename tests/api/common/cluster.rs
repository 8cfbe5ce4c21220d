//! Several copies of the real binary on one Redis key prefix and one SQLite
//! users file (as MongoDB would be shared in production): the fixture of
//! every multi-instance test.

use super::redis::{
    cluster_target, delete_prefix_on, redis_answers, redis_url, skip_without_redis, RedisTarget,
};
use super::{spawn_process_at, TestProcess};
use std::io::Write as _;

/// Running instances. Dropping it stops them and deletes the prefix's keys,
/// whether the test passed or a failed assertion is unwinding through it.
pub struct Cluster {
    pub nodes: Vec<TestProcess>,
    target: RedisTarget,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` instances with `env` besides `REDIS_URL` and a fresh
    /// `REDIS_KEY_PREFIX` named after `name`; `None` (after saying SKIPPED)
    /// when Redis does not answer outside CI.
    pub async fn start(n: usize, name: &str, env: &[(&str, &str)]) -> Option<Self> {
        let url = redis_url();
        if !redis_answers(&url).await {
            skip_without_redis(&url, "no PING answer");
            return None;
        }
        Some(Self::start_on(RedisTarget::Single(url), n, name, env).await)
    }

    /// `n` instances on the Redis Cluster at `REDIS_CLUSTER_URLS`; `None`
    /// (after saying SKIPPED) without one outside CI.
    pub async fn start_on_redis_cluster(
        n: usize,
        name: &str,
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let target = cluster_target().await?;
        Some(Self::start_on(target, n, name, env).await)
    }

    async fn start_on(target: RedisTarget, n: usize, name: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        let prefix = format!("chatbot-{name}-{}", uuid::Uuid::new_v4().simple());
        let (setting, value) = match &target {
            RedisTarget::Single(url) => ("REDIS_URL", url.clone()),
            RedisTarget::Cluster(urls) => ("REDIS_CLUSTER_URLS", urls.join(",")),
        };
        let mut all = vec![
            (setting, value.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
        ];
        all.extend_from_slice(env);
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(spawn_process_at(db.clone(), &all).await);
        }
        Self {
            nodes,
            target,
            prefix,
            _dir: dir,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // What each instance said, for a failing test (TEST_INSTANCE_LOGS=1).
        if std::thread::panicking() && std::env::var_os("TEST_INSTANCE_LOGS").is_some() {
            for (i, node) in self.nodes.iter().enumerate() {
                let _ = writeln!(std::io::stderr(), "=== instance {i}\n{}", node.log_text());
            }
        }
        for node in &mut self.nodes {
            let _ = node.child.start_kill();
        }
        let (target, prefix) = (self.target.clone(), self.prefix.clone());
        // A runtime of its own: Drop cannot await, and the test's runtime may
        // be the one unwinding.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            let _ = runtime.block_on(delete_prefix_on(&target, &prefix));
        })
        .join();
    }
}
