//! Meridian's chaos suite: starts a real multi-process cluster, injects faults (kills,
//! restarts, partitions, region loss), drives a workload through the client SDK, records what
//! every operation saw, and judges the record against the promises of DESIGN.md ("Correctness
//! we promise and check"): no acknowledged write lost, gapless seqs identical on every replica
//! and reader, retries applied once, projections equal to the event log, converged shard hashes.
//!
//! Module map:
//! - [`history`]: the operation history, one JSON object per line ([`Record`]); the
//!   [`HistoryWriter`] the workload appends to and [`read_history`] the checker reads with.
//! - [`checker`]: [`check`] judges a history and returns a [`Report`]: counts for the summary
//!   table and each [`Violation`] with the smallest evidence that shows it.
//!
//! - [`cluster`]: a region of real `meridian node` processes, each on its own loopback
//!   address, with the levers faults pull (kill, pause, restart, disk, clock).
//! - [`proxy`]: the userspace fault proxy on peer links (delay, jitter, resets, blocking).
//! - [`firewall`]: kernel-level link cuts with nftables.
//! - [`faults`]: fault kinds, the seeded schedule, inject and heal.
//! - [`workload`]: concurrent clients whose every operation goes to the history.
//! - [`campaign`]: one campaign from start to verdict; the `meridian-chaos` binary runs it.
//! - [`deposed`]: one scenario on purpose: a leader cut off with proposals in flight until a
//!   snapshot overtakes them.
//!
//! The checker depends only on the history, so a history saved from a failed run can be
//! judged again, offline.
//!
//! Dependencies point one way: the chaos suite drives the real `meridian` binary (through
//! `meridian-client`) and no Meridian crate may ever depend on it. The checker must never
//! depend on the server crates (domain, storage, raft, regions, node): it judges what clients
//! and replicas reported, not what the code under test believes.

pub mod campaign;
pub mod checker;
pub mod cluster;
pub mod deposed;
pub mod devices;
pub mod drill;
pub mod faults;
pub mod firewall;
pub mod history;
pub mod proxy;
pub mod regions;
pub mod workload;

pub use checker::{check, Note, NoteKind, OpKind, OpRef, Report, Violation, ViolationKind};
pub use history::{
    read_history, ConvRow, DeliveredRecord, FaultRecord, FinalConversationsRecord, FinalFriendsRecord,
    FinalMembersRecord, FinalRecord, HealedRecord, HistoryError, HistoryWriter, LogEventRecord, MarkReadRecord,
    Outcome, ProjectionsRecord, ReadMessage, ReadRecord, Record, SendRecord, ShardHashRecord, SocialRecord,
};
