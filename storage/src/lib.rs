//! Meridian's storage: one RocksDB per node holding every shard of the region.
//!
//! Column families (keys are prefixed by the shard id, big-endian, so a shard is a key range):
//! - `raft_log`: Raft log entries (`LogEntryRecord`), by index;
//! - `raft_meta`: vote, committed and purged log ids, and each shard's applied state;
//! - `events`: the history projection: each conversation's messages by seq (tombstones after
//!   recalls);
//! - `projections`: users, conversation heads and cursors, users' conversation indexes,
//!   effect watermarks;
//! - `outbox`: effects waiting for delivery to other shards;
//! - `dedup`: the first result of each client request id;
//! - `event_log`: every domain event of each shard in log order, the system of record.
//!
//! Module map:
//! - [`db`]: opening the database; group-synced writes ([`db::Db::sync`]).
//! - [`log`]: the raw per-shard Raft log (encoded records), vote, committed, purge.
//! - [`shard`]: one shard's state machine data: apply in one WriteBatch, reads, state hash.
//! - [`snapshot`]: shard snapshots as streams (build, check, install) and the node's
//!   snapshot file.
//! - [`replay`]: rebuilding a shard's projections from its event log and comparing them.
//! - [`codec`]: domain types ↔ the durable protobuf schema.
//! - [`keys`]: key layouts.
//!
//! Durability: a log append is written unsynced, then reported flushed only after a WAL sync
//! that covers it; concurrent appends of all shards share one sync (group commit). Apply writes
//! are unsynced; they share the WAL, so the next synced append — or the sync before a snapshot
//! is taken — makes them durable. A crash loses only unsynced applies, which Raft re-applies
//! from the log because the applied index is in the same WriteBatch.
//!
//! Must never depend on: openraft, tonic, or the client API types.

pub mod archive;
pub mod audit;
pub mod codec;
pub mod db;
pub mod error;
pub mod keys;
pub mod latency;
pub mod log;
pub mod replay;
pub mod segment;
pub mod shard;
pub mod snapshot;

pub use db::{Db, SyncStats};
pub use error::StorageError;
pub use log::LogStore;
pub use replay::{Difference, ProjectionCheck};
pub use shard::{LoggedEvent, ShardStore};
