//! The state a shard holds, as domain types. Storage encodes these with the durable schema.

use crate::element::Element;
use crate::ids::{ConversationId, GroupId, MessageId, RegionCode, Seq, TimeMs, UserId};

/// An account (REL-01). Lives on the user's shard.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub home_region: RegionCode,
    pub nickname: String,
    pub created: TimeMs,
    /// When the account was deleted (REL-01): the record stays as a tombstone so that the id
    /// is never given to someone else, with nothing of the person left in it.
    pub deleted: Option<TimeMs>,
}

impl User {
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }
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

/// One segment of a shard's event log in the archive (ADR 0004): the shard's manifest holds
/// one per archived range, keyed by its first offset.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedSegment {
    /// The object's key in the archive's store.
    pub key: String,
    pub first: crate::EventOffset,
    pub last: crate::EventOffset,
    /// SHA-256 of the whole object.
    pub digest: Vec<u8>,
    pub bytes: u64,
    pub events: u64,
    /// The sealing leader's clock (informational).
    pub sealed_at: TimeMs,
}

/// A conversation's seqs `from..=to` that an archived segment holds (the one whose first
/// offset is `segment`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColdRange {
    pub conversation: ConversationId,
    pub from: Seq,
    pub to: Seq,
    pub segment: crate::EventOffset,
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

/// A group's type (GRP-01): who may join and how large it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    /// Private: members invite others; no one joins by themselves.
    Work,
    /// Joined by application and approval: the owner and admins add members.
    Public,
    /// Free to join: anyone may join by themselves; the owner and admins add others.
    Meeting,
    /// Large and free to join (topics are sub-streams of it).
    Community,
    /// A live room: free to join, no per-member state and no member cap; anyone may send.
    AvChatRoom,
}

impl GroupKind {
    pub const ALL: [GroupKind; 5] =
        [GroupKind::Work, GroupKind::Public, GroupKind::Meeting, GroupKind::Community, GroupKind::AvChatRoom];

    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Work => "work",
            GroupKind::Public => "public",
            GroupKind::Meeting => "meeting",
            GroupKind::Community => "community",
            GroupKind::AvChatRoom => "avchatroom",
        }
    }

    pub fn from_name(name: &str) -> Option<GroupKind> {
        GroupKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the group keeps a record per member (every type but the live room).
    pub fn keeps_members(self) -> bool {
        self != GroupKind::AvChatRoom
    }
}

/// A member's role in a group (GRP-04).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupRole {
    Owner,
    Admin,
    Member,
}

impl GroupRole {
    pub fn name(self) -> &'static str {
        match self {
            GroupRole::Owner => "owner",
            GroupRole::Admin => "admin",
            GroupRole::Member => "member",
        }
    }

    pub fn from_name(name: &str) -> Option<GroupRole> {
        [GroupRole::Owner, GroupRole::Admin, GroupRole::Member].into_iter().find(|r| r.name() == name)
    }

    /// Owner or admin: may add to a group that is not free to join, kick and mute members.
    pub fn manages(self) -> bool {
        matches!(self, GroupRole::Owner | GroupRole::Admin)
    }
}

/// A group (GRP-01..03). Lives on the shard of its stream (`grp:{id}`), with its members,
/// messages and head; its size does not grow with its members.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: GroupId,
    pub kind: GroupKind,
    pub name: String,
    pub owner: UserId,
    /// The member cap in force (by type, from the creating node's configuration).
    pub max_members: u64,
    pub member_count: u64,
    pub created: TimeMs,
    pub dismissed: bool,
    /// Members who join later read the stream from their joining on (GRP-08).
    pub hide_history: bool,
    /// The newest message that mentioned everyone (`@all`).
    pub at_all_seq: Seq,
    /// Profile fields besides the name (GRP-03): `introduction`, `notification`, `face_url`
    /// and `custom.KEY` ([`crate::group_admin`] checks them).
    pub profile: std::collections::BTreeMap<String, String>,
    /// How users who are not invited get in.
    pub join_option: JoinOption,
    /// Only the owner and admins may send (GRP-05).
    pub muted_all: bool,
    /// Applications to join waiting for an answer.
    pub applications: u64,
    /// Likes given in the group (GRP-07), summed server-side.
    pub likes: u64,
    /// Topics of a Community.
    pub topics: u64,
}

/// A topic of a Community: a named sub-stream with its own seqs (on the group's shard).
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub id: crate::ids::TopicId,
    pub name: String,
    pub created: TimeMs,
    pub by: UserId,
}

/// How a user gets into a group by themselves (GRP-03).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JoinOption {
    /// Joining is open: a user joins by themselves.
    Free,
    /// A user applies and the owner or an admin approves or rejects.
    NeedApproval,
    /// No applications: members are added by invitation only.
    Forbid,
}

impl JoinOption {
    pub const ALL: [JoinOption; 3] = [JoinOption::Free, JoinOption::NeedApproval, JoinOption::Forbid];

    pub fn name(self) -> &'static str {
        match self {
            JoinOption::Free => "free",
            JoinOption::NeedApproval => "need_approval",
            JoinOption::Forbid => "forbid",
        }
    }

    pub fn from_name(name: &str) -> Option<JoinOption> {
        JoinOption::ALL.into_iter().find(|o| o.name() == name)
    }

    /// A new group's join option by its type: invitation only for a work group, by
    /// application for a public one, free for the rest.
    pub fn default_for(kind: GroupKind) -> JoinOption {
        match kind {
            GroupKind::Work => JoinOption::Forbid,
            GroupKind::Public => JoinOption::NeedApproval,
            GroupKind::Meeting | GroupKind::Community | GroupKind::AvChatRoom => JoinOption::Free,
        }
    }
}

/// An application to join a group, waiting for the owner or an admin (on the group's shard).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupApplication {
    pub user: UserId,
    pub message: String,
    pub at: TimeMs,
}

/// One member of a group, with their read cursor: a send writes the sender's record only, so
/// a message costs the same whatever the group's size; unread is computed from the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    pub user: UserId,
    pub role: GroupRole,
    pub joined: TimeMs,
    pub read_seq: Seq,
    /// Sends are refused until this time (0: not muted).
    pub muted_until: TimeMs,
    /// Absent from the member lists other members see (GRP-06).
    pub hidden: bool,
    /// The newest message that mentioned this member.
    pub mention_seq: Seq,
    /// The first seq this member may read (1 unless the group hides earlier history).
    pub visible_from: Seq,
    /// Member fields (GRP-03/04): `name_card`, `recv_opt` and `custom.KEY`.
    pub info: std::collections::BTreeMap<String, String>,
    /// The member's home region when it is not the group's (their list of groups is there).
    pub home: Option<RegionCode>,
}

/// One group in a user's list of groups (on the user's shard).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRef {
    pub group: GroupId,
    pub joined: TimeMs,
    /// The group's home region when it is not the user's.
    pub home: Option<RegionCode>,
}

/// One entry of a user's friend list (REL-03), on the user's shard. Friendship is kept per
/// side: each user's list is their own, so a one-way delete leaves the other side's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Friend {
    pub user: UserId,
    /// The list owner's note for this friend (at most [`crate::friend::MAX_REMARK_BYTES`]).
    pub remark: String,
    pub since: TimeMs,
    /// The friend's home region when it is not the list owner's.
    pub home: Option<RegionCode>,
}

/// Everything a user's shard keeps under one account besides the account record and the
/// profile: what deleting the account (REL-01) clears.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountRecords {
    pub friends: Vec<Friend>,
    /// Requesters whose friend requests wait for this user.
    pub requests: Vec<UserId>,
    pub blocked: Vec<UserId>,
    pub groups: Vec<GroupRef>,
    /// The rows of the user's conversation list.
    pub conversations: Vec<ConversationId>,
    /// The rows the user has settings for (pin, draft, ...).
    pub prefs: Vec<ConversationId>,
}

/// A friend request waiting for its target's answer, on the target's shard.
#[derive(Debug, Clone, PartialEq)]
pub struct FriendRequest {
    pub from: UserId,
    /// The requester's words to the target.
    pub message: String,
    /// The requester's remark for the target, kept for their list if the target accepts.
    pub remark: String,
    pub at: TimeMs,
}

/// A user's friend and pending-request counts (on the user's shard), kept by the projector so
/// that the caps are checked without a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FriendCounts {
    pub friends: u64,
    pub pending: u64,
}

/// A user's settings for one row of their conversation list (CONV-03), on the user's shard:
/// a one-to-one conversation or a group's stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationPrefs {
    pub pinned: bool,
    /// Do not disturb: no offline push for it (the row still counts unread).
    pub dnd: bool,
    pub draft: String,
    /// The user's own marks (labels) on the row.
    pub marks: Vec<String>,
    /// Deleted from the list up to this seq: the row is hidden until a newer message arrives.
    pub hidden_up_to: Seq,
}

/// What one member removed from their own view of a stream's history (MSG-09), on the
/// stream's shard next to the read cursors: everything up to `cleared_up_to`, and single
/// messages. Others' views are untouched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryView {
    pub cleared_up_to: Seq,
    /// Deleted seqs after `cleared_up_to`, ascending.
    pub deleted: Vec<Seq>,
}

impl HistoryView {
    /// Whether the member removed the message at `seq` from their view.
    pub fn hides(&self, seq: Seq) -> bool {
        seq <= self.cleared_up_to || self.deleted.binary_search(&seq).is_ok()
    }
}
