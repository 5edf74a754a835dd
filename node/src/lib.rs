//! The `meridian` binary's library: node configuration, auth, gRPC services, the local dev
//! cluster. The binary entry point is `main.rs`.
//!
//! Module map:
//! - [`config`]: the node's configuration file (TOML), defaults and validation.
//! - [`auth`]: HMAC-SHA256 user and admin tokens (DLV-07).
//! - [`dev`]: `meridian dev`, a 3-node region as child processes on loopback.
//! - [`server`]: `meridian node`: storage, Raft and the doors (client and peer listeners).
//! - [`tls`]: rustls configuration of the listeners and of peer calls.
//! - [`api`]: the client-facing gRPC services and the one error → status mapping.
//! - [`archive`]: the cold archive: sealing segments, reading them back (ADR 0004).
//! - [`http`]: plain-HTTP health, readiness and metrics.
//! - [`link`]: the region link (handshake, link states); [`region_calls`]: what a node does
//!   for other regions behind it; [`geo`]: the directory, the residency rule and calls to
//!   other regions; [`audit`]: the residency audit.
//!
//! Must never depend on: RocksDB or openraft directly (storage and raft crates own those).

pub mod api;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod dev;
pub mod dr;
pub mod geo;
pub mod hooks;
pub mod http;
pub mod link;
pub mod region_calls;
pub mod server;
pub mod tls;
