//! chatbot-server: a WebSocket chat gateway between chat clients and an AI service.
//!
//! Hexagonal layout: [`domain`] holds pure types and rules, [`application`] the
//! use cases and the ports they need, [`adapters`] the inbound (REST, WebSocket)
//! and outbound (stores, hashing, tokens, upstream AI) implementations.

pub mod adapters;
pub mod application;
pub mod config;
pub mod domain;
pub mod telemetry;
