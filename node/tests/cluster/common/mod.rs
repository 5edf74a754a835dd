//! The cluster harness of the integration tests: a region of real `meridian node` processes
//! on loopback, each with its own config file, data directory and log, all under one
//! temporary directory.
//!
//! [`Cluster::start`] writes the configs, spawns the nodes and waits until every node sees a
//! leader for every shard. The test then talks to the region through the real client SDK
//! ([`Cluster::admin`], [`Cluster::client_for`]), kills, stops and restarts nodes, and waits
//! for the replicas to converge. Every node is killed when the `Cluster` is dropped, panic or
//! not; after a panic the phases the test went through and the tail of every node's log are
//! printed, and the temporary directory is kept for a closer look.
//!
//! Module map: [`Cluster`] and [`Tuning`] (`cluster.rs`); what the tests compare — messages as
//! [`Row`]s, acknowledged sends as [`Ack`]s — and the assertions over them (`history.rs`); a
//! test CA and node certificates for TLS ([`TestPki`], `pki.rs`); a `meridian dev` region as a
//! user starts it ([`DevRegion`], `dev_region.rs`, shared with the bench's smoke test).

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod cluster;
mod dev_region;
mod history;
mod pki;

pub use cluster::{free_loopback_addrs, shard_status, Cluster, HashedShard, Tuning, REGION};
pub use dev_region::DevRegion;
pub use history::{
    acks_by_conversation, assert_gapless, assert_history_matches_acks, assert_replicas_hold_acks, conversation_id,
    local_history, shard_of, user_ids, wait_listed, Ack, Row,
};
pub use pki::TestPki;
