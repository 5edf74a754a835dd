//! The openraft type configuration shared by every shard.

use std::io::Cursor;

use meridian_proto::durable as pb;
use meridian_storage::shard::CommandResult;

/// What applying one Raft entry returns: one result per command of its batch (empty for
/// blank and membership entries).
#[derive(Debug, Clone, Default)]
pub struct ShardResponse {
    pub results: Vec<CommandResult>,
}

openraft::declare_raft_types!(
    /// Meridian's Raft types: entries carry a durable `CommandBatch`.
    pub TypeConfig:
        D = pb::CommandBatch,
        R = ShardResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftStorageError = openraft::StorageError<NodeId>;
