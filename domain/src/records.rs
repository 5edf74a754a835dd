//! The state a shard holds, as domain types. Storage encodes these with the durable schema.

use crate::element::Element;
use crate::ids::{ConversationId, MessageId, RegionCode, Seq, TimeMs, UserId};

/// An account (REL-01). Lives on the user's shard.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub home_region: RegionCode,
    pub nickname: String,
    pub created: TimeMs,
}

/// A member's position in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberCursor {
    pub user: UserId,
    /// Everything up to and including this seq has been read.
    pub read_seq: Seq,
}

/// A conversation's head: members, read cursors, the newest seq. Lives on the conversation's
/// shard together with its messages, so a send touches one shard only.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: ConversationId,
    pub members: Vec<MemberCursor>,
    pub last_seq: Seq,
    pub last_time: TimeMs,
    pub created: TimeMs,
}

impl Conversation {
    pub fn member(&self, user: &UserId) -> Option<&MemberCursor> {
        self.members.iter().find(|m| &m.user == user)
    }

    /// Unread messages for `user`: the head's seq minus the user's read cursor.
    pub fn unread(&self, user: &UserId) -> u64 {
        self.member(user).map_or(0, |m| self.last_seq.0.saturating_sub(m.read_seq.0))
    }
}

/// A stored message: an event of the conversation's stream, at its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub seq: Seq,
    pub sender: UserId,
    pub time: TimeMs,
    /// Empty once recalled.
    pub elements: Vec<Element>,
    pub recalled: Option<Recall>,
}

/// The tombstone a recall leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Recall {
    pub by: UserId,
    pub at: TimeMs,
}

/// One entry of a user's conversation index (on the user's shard).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRef {
    pub conversation: ConversationId,
    pub peer: UserId,
    pub joined: TimeMs,
    /// The conversation's home region when it is not this one.
    pub home: Option<RegionCode>,
}

/// The first result of a request id, returned to every retry.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupEntry {
    pub message_id: MessageId,
    pub seq: Seq,
    pub time: TimeMs,
}
