//! Storage failures, and decoding durable records. Every one of them is fatal for the replica that meets it: the node stops
//! rather than diverge.

use meridian_proto::durable as pb;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("decode {what}: {source}")]
    Decode { what: &'static str, source: prost::DecodeError },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the write-ahead log sync thread has stopped")]
    SyncStopped,
    /// The shard met an entry this replica must not apply (rules of a logic version it does
    /// not implement): it halts that shard, not the node.
    #[error("halted: {0}")]
    Halted(String),
}

impl StorageError {
    pub fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        StorageError::Corrupt { what, detail: detail.into() }
    }
}

/// A durable record with a version marker.
pub trait Versioned {
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($record:ty),+ $(,)?) => {
        $(impl Versioned for $record {
            fn version(&self) -> u32 {
                self.version
            }
        })+
    };
}

versioned!(
    pb::VoteRecord,
    pb::AppliedState,
    pb::SnapshotMetaRecord,
    pb::CommandBatch,
    pb::EventRecord,
    pb::ColdRangeRecord,
    pb::RecallOverlayRecord,
    pb::ArchivedSegmentRecord,
    pb::UserRecord,
    pb::ConversationRecord,
    pb::MessageRecord,
    pb::ConversationRef,
    pb::DedupRecord,
    pb::EffectWatermark,
    pb::HooksCursorRecord,
    pb::DirectoryClaimRecord,
    pb::GroupRecord,
    pb::GroupMemberRecord,
    pb::GroupRefRecord,
    pb::BlockedRecord,
    pb::FriendRecord,
    pb::FriendRequestRecord,
    pb::FriendCountsRecord,
    pb::GroupApplicationRecord,
    pb::GroupBanRecord,
    pb::ConversationPrefsRecord,
    pb::HistoryViewRecord,
    pb::TopicRecord,
    pb::TopicCursorRecord,
    pb::ProfileRecord,
    pb::CountRecord,
);

/// Decodes a versioned durable record and refuses one written by a newer version than this
/// build writes (its meaning is unknown here: a typed error, never a silent default).
pub fn decode_record<M: prost::Message + Default + Versioned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<M, StorageError> {
    let record: M = decode(what, bytes)?;
    if record.version() > crate::codec::RECORD_VERSION {
        return Err(StorageError::corrupt(
            what,
            format!(
                "written by a newer version (record version {}, this build reads up to {}): upgrade this node",
                record.version(),
                crate::codec::RECORD_VERSION
            ),
        ));
    }
    Ok(record)
}

/// Decodes a durable record, naming it in the error.
pub fn decode<M: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|source| StorageError::Decode { what, source })
}
