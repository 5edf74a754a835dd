//! The operation history of a chaos run: one [`Record`] per line of a JSON Lines file.
//!
//! The workload appends a record when an operation completes (with its start and end times
//! and what it saw); after the faults are healed and the cluster has been quiet, the harness
//! appends what each node's local replica holds ([`FinalRecord`], [`FinalConversationsRecord`],
//! [`ShardHashRecord`]). Fault and heal records are informational, for the summary.
//!
//! Times are milliseconds since the start of the run, on the harness's clock. Messages sent by
//! the workload carry their request id as their text, so a message read back is mapped to the
//! send that produced it by its text.
//!
//! The file is a test artefact, read back by the build that wrote it, so it carries no version
//! marker; fields may be added (readers treat a missing `Option` field as `null`), never renamed.

mod writer;

use serde::{Deserialize, Serialize};

pub use writer::{read_history, HistoryError, HistoryWriter};

/// One line of the history, tagged by `"op"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// A client sent a C2C or group message.
    Send(SendRecord),
    /// A client read a page of a conversation's history.
    Read(ReadRecord),
    /// A client moved its read cursor in a conversation.
    MarkRead(MarkReadRecord),
    /// The full history of one conversation on one node's local replica, after healing.
    Final(FinalRecord),
    /// One user's conversation list as one node's local projection shows it, after healing.
    FinalConversations(FinalConversationsRecord),
    /// A shard's state hash at an applied index, as one node reports it.
    ShardHash(ShardHashRecord),
    /// Whether a shard's projections equal a replay of its event log, as one node checked it.
    Projections(ProjectionsRecord),
    /// A membership, moderation or relationship change a client asked for (group joins,
    /// leaves, kicks, mutes; friend adds and deletes; blocks and unblocks).
    Social(SocialRecord),
    /// A group's member list as one node shows it, after healing.
    FinalMembers(FinalMembersRecord),
    /// A user's friend list as one node shows it, after healing.
    FinalFriends(FinalFriendsRecord),
    /// One event of a shard's event log (those the social rules judge), read after healing.
    LogEvent(LogEventRecord),
    /// What one subscribed device received of one conversation, after healing.
    Delivered(DeliveredRecord),
    /// A fault was injected.
    Fault(FaultRecord),
    /// A fault was healed.
    Healed(HealedRecord),
}

/// What an operation's caller learnt about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: it took effect.
    Ok,
    /// A typed rejection: it definitely did not take effect.
    Error,
    /// Timeout or connection loss: it may or may not have taken effect.
    Unknown,
}

impl Outcome {
    /// The lowercase name used on the wire (`ok`, `error`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Unknown => "unknown",
        }
    }
}

/// A `Send` line. The message text is always `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// The workload client that issued it.
    pub client: u32,
    /// The client request id; also the message text. Retries of one send reuse it.
    pub request_id: String,
    /// The sending user.
    pub from: String,
    /// The receiving user (C2C) or group.
    pub to: String,
    /// The conversation id (`c2c:{a}:{b}` with `a < b`, or a group's).
    pub conversation: String,
    /// When the call started, ms since the start of the run.
    pub start_ms: u64,
    /// When the call returned, ms since the start of the run.
    pub end_ms: u64,
    /// What the caller learnt.
    pub outcome: Outcome,
    /// The acknowledged seq (set when `outcome` is `ok`).
    pub seq: Option<u64>,
    /// The acknowledged message id (set when `outcome` is `ok`).
    pub message_id: Option<String>,
    /// The error as the client reported it (set when `outcome` is not `ok`).
    pub error: Option<String>,
}

/// A `Read` line: a page of history (any page, any direction) as one read returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    /// The workload client that issued it.
    pub client: u32,
    /// The reading user.
    pub reader: String,
    /// The conversation read.
    pub conversation: String,
    /// When the call started, ms since the start of the run.
    pub start_ms: u64,
    /// When the call returned, ms since the start of the run.
    pub end_ms: u64,
    /// What the caller learnt.
    pub outcome: Outcome,
    /// The page, sorted ascending by seq by the writer.
    pub messages: Vec<ReadMessage>,
    /// The conversation's last seq as the read reported it.
    pub last_seq: u64,
}

/// One message as a read (or a final read) returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadMessage {
    /// Its seq in the conversation.
    pub seq: u64,
    /// Its server-assigned message id.
    pub message_id: String,
    /// The sending user.
    pub sender: String,
    /// Its text: the request id of the send that produced it.
    pub text: String,
    /// A group notice (a join, a leave, a kick) the server wrote: no send produced it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

/// A `MarkRead` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkReadRecord {
    /// The workload client that issued it.
    pub client: u32,
    /// The user whose cursor moved.
    pub user: String,
    /// The conversation.
    pub conversation: String,
    /// When the call started, ms since the start of the run.
    pub start_ms: u64,
    /// When the call returned, ms since the start of the run.
    pub end_ms: u64,
    /// What the caller learnt.
    pub outcome: Outcome,
    /// The read cursor the call set (set when `outcome` is `ok`).
    pub read_seq: Option<u64>,
}

/// A `Final` line: one conversation's full history on one node's local replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// The node whose replica was read.
    pub node: u32,
    /// The conversation.
    pub conversation: String,
    /// Every message, ascending by seq.
    pub messages: Vec<ReadMessage>,
}

/// A `FinalConversations` line: one user's conversation list on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalConversationsRecord {
    /// The node whose projection was read.
    pub node: u32,
    /// The user whose list it is.
    pub user: String,
    /// The rows of the list.
    pub rows: Vec<ConvRow>,
    /// The total unread count the node reported.
    pub total_unread: u64,
}

/// One row of a conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvRow {
    /// The conversation.
    pub conversation: String,
    /// The other party (C2C) or the group.
    pub peer: String,
    /// The conversation's head.
    pub last_seq: u64,
    /// The user's read cursor.
    pub read_seq: u64,
    /// The unread count the node reported.
    pub unread: u64,
}

/// A `ShardHash` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHashRecord {
    /// The reporting node.
    pub node: u32,
    /// The shard.
    pub shard: u32,
    /// The applied (log) index the hash was taken at.
    pub index: u64,
    /// The state hash, as the node printed it.
    pub hash: String,
}

/// A `Projections` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionsRecord {
    /// The node that ran the check.
    pub node: u32,
    /// The shard.
    pub shard: u32,
    /// The applied index the check read at.
    pub index: u64,
    /// True when the replay equals the live projections.
    pub equal: bool,
    /// The first differing key and how it differs (empty when equal).
    pub difference: String,
}

/// A `Delivered` line: the messages one device's live stream (with the history reads its
/// `fetch` hints asked for) handed it for one conversation, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredRecord {
    /// The device (`d3`); one user may have several.
    pub device: String,
    pub user: String,
    pub conversation: String,
    /// (seq, message id), in the order they arrived.
    pub messages: Vec<(u64, String)>,
    /// Streams the device opened (1 + reconnects), over its whole run.
    pub connects: u64,
    /// Whether the device saw, before it stopped, every seq the node it asked last reported
    /// for its one-to-one conversations (false: it gave up waiting).
    pub caught_up: bool,
}

/// A `Fault` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// When it was injected, ms since the start of the run.
    pub at_ms: u64,
    /// What kind of fault (`kill`, `partition`, …).
    pub kind: String,
    /// What it hit (a node, a link, a region).
    pub target: String,
    /// Anything else worth printing.
    pub detail: String,
}

/// A `Healed` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealedRecord {
    /// When it was healed, ms since the start of the run.
    pub at_ms: u64,
    /// The kind of the fault healed.
    pub kind: String,
    /// What it had hit.
    pub target: String,
    /// How long until the cluster accepted writes again, if measured.
    pub recovered_ms: Option<u64>,
    /// Why the cluster was not found recovered in the harness's wait, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_error: Option<String>,
}

/// A `Social` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocialRecord {
    pub client: u32,
    /// `join`, `leave`, `kick`, `mute`, `friend_add`, `friend_delete`, `block`, `unblock`.
    pub action: String,
    /// The acting user.
    pub actor: String,
    /// The user acted on (the actor themselves for joins and leaves).
    pub target: String,
    /// The group, for group actions.
    pub group: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// A `FinalMembers` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalMembersRecord {
    pub node: u32,
    pub group: String,
    /// Every member, in user id order.
    pub members: Vec<String>,
}

/// A `FinalFriends` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalFriendsRecord {
    pub node: u32,
    pub user: String,
    /// The user's friend list, in user id order.
    pub friends: Vec<String>,
}

/// A `LogEvent` line: an event as the event API showed it, reduced to what the social rules
/// read. Events of one shard come in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEventRecord {
    pub node: u32,
    pub shard: u32,
    pub index: u64,
    pub command: u32,
    pub event: u32,
    /// The event type: `GroupMemberAdded`, `GroupMemberRemoved`, `GroupMemberMuted`,
    /// `GroupMessageSent`, `MessageSent`, `ConversationBlocked`, `FriendAdded`, `FriendRemoved`.
    pub kind: String,
    /// The group (group events) or the conversation (one-to-one events).
    pub stream: String,
    /// The member, sender, blocker or list owner.
    pub user: String,
    /// The recipient or the friend.
    pub other: String,
    pub seq: u64,
    /// The event's time (the leader's clock at the entry), ms since the epoch.
    pub time_ms: i64,
    /// Mutes: until when.
    pub until_ms: i64,
    /// Blocks: blocked (true) or lifted.
    pub flag: bool,
}
