//! Meridian's multi-shard Raft: every node is a voter of every shard of its region.
//!
//! Module map:
//! - [`types`]: the openraft type configuration (entries carry a durable `CommandBatch`).
//! - [`convert`]: openraft types ↔ the durable and peer schemas.
//! - [`log_store`]: openraft's log storage over `meridian-storage` (group-synced appends).
//! - [`state_machine`]: openraft's state machine over a shard's RocksDB data; snapshots.
//! - [`snapshot_policy`]: when a shard builds a snapshot (entries and bytes since the last).
//! - [`credential`]: the cluster credential peer calls carry, and its check.
//! - [`network`]: Raft RPCs over tonic, one connection per peer for all shards.
//! - [`mux`]: one stream per node pair carries every shard's Raft frames, batched.
//! - [`service`]: the peer gRPC service (Raft RPCs, forwarded proposals and reads).
//! - [`batcher`]: a shard leader's batching of concurrent commands into one entry.
//! - [`outbox`]: delivery of cross-shard effects.
//! - [`read_index`]: concurrent linearizable reads of a shard share read-index rounds.
//! - [`node`]: [`RaftNode`], routing proposals, read barriers and (in `node/membership.rs`)
//!   membership changes to shard leaders.
//!
//! Must never depend on: the client API types, or anything above it (regions, node).

// openraft's error types are large and its trait signatures fix them; boxing is not an option.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod convert;
pub mod credential;
pub mod log_store;
pub mod mux;
pub mod network;
pub mod node;
pub mod outbox;
pub mod read_index;
pub mod service;
pub mod snapshot_file;
pub mod snapshot_policy;
pub mod state_machine;
pub mod types;

pub use credential::ClusterCredential;
pub use network::PeerDialing;
pub use node::{
    rewrite_for_promotion, Access, CutPoint, LeaderHint, LogicVersionReport, NodeSupport, RaftNode, RaftNodeError,
    RaftSettings, RaiseError, RegionRole, Role, ShardStatus, ShardVersion, SignalSink,
};
pub use service::PeerService;
pub use types::{Member, RaftMetrics};
