//! The integration tests, one binary (as zero2prod lays them out): each module
//! is one area, driving the real server (in process or the binary) over real
//! HTTP and WebSocket against real stores. One binary links the crate once
//! instead of once per file. Select an area with
//! `cargo test --test api -- handoff::`; the MongoDB suites keep the module
//! names `user_store_contract` and `transcript_store_contract`.

mod common;

mod access;
mod access_store_contract;
mod ai_resilience;
mod answer_parts;
mod asyncapi_spec;
mod conversation;
mod conversation_contract;
mod desk;
mod feedback;
mod grafana;
mod handoff;
mod handoff_store_contract;
mod lifecycle;
mod limits;
mod mongo_migration;
mod multi_instance;
mod observability;
mod openapi_spec;
mod operations;
mod otel;
mod rate_limiter_contract;
mod redis_cluster;
mod redis_trouble;
mod rest_api;
mod session_store_contract;
mod signal_bus_contract;
mod slow_clients;
mod transcript_store_contract;
mod transcripts;
mod upstream_ai;
mod usage_store_contract;
mod user_store_contract;
mod web;
mod websocket;
