//! Outbound adapters: implementations of the application ports.

pub mod argon2_hasher;
pub mod echo_ai;
pub mod fallback_ai;
pub mod jwt;
pub mod log_then_publish;
pub mod memory_access;
pub mod memory_conversations;
pub mod memory_handoff;
pub mod memory_limiter;
pub mod memory_sessions;
pub mod memory_stats;
pub mod mongo_transcripts;
pub mod mongo_users;
pub mod prometheus_metrics;
pub mod reachability;
pub mod redis_access;
pub mod redis_conversations;
pub mod redis_handoff;
pub mod redis_limiter;
pub mod redis_manager;
pub mod redis_sessions;
pub mod resilient_ai;
pub mod sqlite_transcripts;
pub mod sqlite_users;
pub mod upstream_ai;
