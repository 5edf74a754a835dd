//! What applying a command writes. Storage turns each change into keys of one WriteBatch.

use crate::command::EffectKind;
use crate::ids::{ConversationId, EffectId, RequestId, ShardId, UserId};
use crate::records::{Conversation, ConversationRef, DedupEntry, Message, User};

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutUser(User),
    /// The conversation head and member cursors (a projection).
    PutConversation(Conversation),
    /// A message event at its seq (new, or rewritten into a tombstone by a recall).
    PutMessage {
        conversation: ConversationId,
        message: Message,
    },
    /// An entry of a user's conversation index (a projection on the user's shard).
    PutConversationRef {
        user: UserId,
        entry: ConversationRef,
    },
    /// The first result of a request id.
    PutDedup {
        conversation: ConversationId,
        sender: UserId,
        request_id: RequestId,
        entry: DedupEntry,
    },
    /// An effect for another shard, into this shard's outbox; storage assigns its id.
    Emit {
        target: ShardId,
        kind: EffectKind,
    },
    /// Effects from `source` up to `up_to` are applied here.
    SetWatermark {
        source: ShardId,
        up_to: EffectId,
    },
    /// Effects for `target` up to `up_to` were applied there: drop them.
    AckOutbox {
        target: ShardId,
        up_to: EffectId,
    },
}
