//! chatbot-server: a WebSocket chat gateway between chat clients and an AI service.
//!
//! Hexagonal layout: [`domain`] holds pure types and rules, [`application`] the
//! use cases and the ports they need, [`adapters`] the inbound (REST, WebSocket)
//! and outbound (stores, hashing, tokens, upstream AI) implementations.
//! [`startup`] wires them into an [`startup::Application`] from a
//! [`config::Config`]; `main.rs` only adds the process around it.

pub mod adapters;
pub mod allocator;
pub mod application;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error_chain;
pub mod startup;
pub mod telemetry;
