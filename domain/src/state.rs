//! The read interface apply needs. Storage implements it over RocksDB plus the writes of the
//! batch being applied, so that a later command in a batch sees the earlier ones.

use crate::ids::{ConversationId, DirectoryKey, EffectId, RegionCode, RequestId, Seq, ShardId, UserId};
use crate::records::{Conversation, DedupEntry, Message, User};

/// Storage could not read state (I/O, corruption). Fatal for the replica: it must stop rather
/// than diverge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state unreadable: {0}")]
pub struct StateError(pub String);

pub trait ShardState {
    fn user(&self, id: &UserId) -> Result<Option<User>, StateError>;
    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StateError>;
    fn message(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<Message>, StateError>;
    fn dedup(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        request_id: &RequestId,
    ) -> Result<Option<DedupEntry>, StateError>;
    fn has_conversation_ref(&self, user: &UserId, conversation: &ConversationId) -> Result<bool, StateError>;
    /// The highest effect id from `source` applied here.
    /// The highest effect id applied from shard `source` of this region (`from_region`
    /// `None`) or of another region.
    fn watermark(&self, source: ShardId, from_region: Option<&RegionCode>) -> Result<EffectId, StateError>;
    /// The region that claimed a directory key, if any.
    fn claim(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, StateError>;
}
