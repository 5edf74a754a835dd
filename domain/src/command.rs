//! Commands: what a client (through a node) or another shard asks a shard to change.

use crate::element::Element;
use crate::ids::{ConversationId, EffectId, RegionCode, RequestId, Seq, ShardId, TimeMs, UserId};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create (import) an account on the user's shard. Idempotent.
    CreateUser { user: UserId, home_region: RegionCode, nickname: String },
    /// Send a C2C message; applied on the conversation's shard.
    SendMessage { sender: UserId, recipient: UserId, elements: Vec<Element>, request_id: Option<RequestId> },
    /// Recall a message; `window_ms` is the window in force where the request was accepted.
    RecallMessage { actor: UserId, conversation: ConversationId, seq: Seq, window_ms: u64 },
    /// Move a member's read cursor; `None` means to the newest message.
    MarkRead { user: UserId, conversation: ConversationId, up_to: Option<Seq> },
    /// Effects delivered from another shard's outbox, in id order.
    ApplyEffects { source: ShardId, effects: Vec<Effect> },
    /// The target shard applied every effect up to `up_to`: drop them from the outbox.
    AckEffects { target: ShardId, up_to: EffectId },
}

/// What an event means for an entity on another shard. Delivered at least once, applied once.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub id: EffectId,
    pub source: ShardId,
    pub target: ShardId,
    pub kind: EffectKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EffectKind {
    /// Put a conversation into a user's conversation index.
    ConversationJoined { user: UserId, conversation: ConversationId, peer: UserId, at: TimeMs },
}

impl EffectKind {
    /// The entity whose shard must apply the effect.
    pub fn target_entity(&self) -> &str {
        match self {
            EffectKind::ConversationJoined { user, .. } => user.as_str(),
        }
    }
}
