//! The openraft type configuration shared by every shard.

use meridian_proto::durable as pb;
use meridian_storage::shard::CommandResult;

/// What applying one Raft entry returns: one result per command of its batch (empty for
/// blank and membership entries).
#[derive(Debug, Clone, Default)]
pub struct ShardResponse {
    pub results: Vec<CommandResult>,
}

/// A member of a shard as the membership records it: the two addresses a node is reached at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// The peer listener (`host:port`): Raft traffic, forwarded proposals and reads.
    pub addr: String,
    /// The client API listener (`host:port`): where clients are sent (`Chat/GetRoutes`).
    pub client_addr: String,
}

impl Member {
    pub fn new(addr: impl Into<String>, client_addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), client_addr: client_addr.into() }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} client {}", self.addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// Meridian's Raft types: entries carry a durable `CommandBatch`.
    pub TypeConfig:
        D = pb::CommandBatch,
        R = ShardResponse,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = Member;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Raft = openraft::Raft<TypeConfig>;
/// What a shard's Raft reports as it goes (its applied index among it).
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
pub type RaftStorageError = openraft::StorageError<NodeId>;
