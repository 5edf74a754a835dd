//! Domain events: the facts an accepted command produced. They are the system of record —
//! a shard's event log holds every one, in order, never rewritten — and the projections
//! (users, conversation heads and cursors, conversation lists) are what they add up to.

use crate::element::Element;
use crate::ids::{ConversationId, DirectoryKey, GroupId, MessageId, RegionCode, RequestId, Seq, TimeMs, UserId};
use crate::records::{GroupKind, GroupRole};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An account was created (imported) on its user's shard.
    UserCreated { user: UserId, home_region: RegionCode, nickname: String, at: TimeMs },
    /// `user`'s account was deleted (REL-01). The events just before it in the same command
    /// took the user's friends, requests, blocks and groups off; this one leaves a tombstone
    /// and drops the profile and the conversation rows and their settings named here.
    AccountDeleted { user: UserId, at: TimeMs, conversations: Vec<ConversationId>, prefs: Vec<ConversationId> },
    /// A one-to-one message was accepted at `seq` of its conversation. Stays in the log after
    /// a recall: the recall is an event of its own.
    MessageSent {
        conversation: ConversationId,
        seq: Seq,
        message_id: MessageId,
        sender: UserId,
        recipient: UserId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
        at: TimeMs,
    },
    /// The message at `seq` was recalled by `by`.
    MessageRecalled { conversation: ConversationId, seq: Seq, by: UserId, at: TimeMs },
    /// `user`'s read cursor in `conversation` moved forward to `read_seq`.
    ReadMarked { conversation: ConversationId, user: UserId, read_seq: Seq },
    /// `conversation` entered `user`'s conversation list (on the user's shard). `home` is the
    /// conversation's home region when it is not this one.
    ConversationJoined {
        user: UserId,
        conversation: ConversationId,
        peer: UserId,
        at: TimeMs,
        home: Option<RegionCode>,
    },
    /// The directory (in the key's owner region) recorded `key` as claimed by `region`.
    IdClaimed { key: DirectoryKey, region: RegionCode },
    /// A group was created (its members join by `GroupMemberAdded` events after this one).
    GroupCreated {
        group: GroupId,
        kind: GroupKind,
        owner: UserId,
        name: String,
        max_members: u64,
        hide_history: bool,
        at: TimeMs,
    },
    /// `user` became a member of `group`, added by `by` (themselves when they joined).
    /// `home`: the member's home region when it is not the group's.
    GroupMemberAdded {
        group: GroupId,
        user: UserId,
        role: GroupRole,
        by: UserId,
        hidden: bool,
        at: TimeMs,
        home: Option<RegionCode>,
    },
    /// `user` left `group` (`by` is themselves) or was removed by `by`.
    GroupMemberRemoved { group: GroupId, user: UserId, by: UserId, at: TimeMs },
    /// A message was accepted at `seq` of the group's stream.
    GroupMessageSent {
        group: GroupId,
        seq: Seq,
        message_id: MessageId,
        sender: UserId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
        /// Members mentioned (those that are members), and whether the message is `@all`.
        mentions: Vec<UserId>,
        at_all: bool,
        at: TimeMs,
    },
    /// `user`'s sends to `group` are refused until `until` (0: unmuted), by `by`.
    GroupMemberMuted { group: GroupId, user: UserId, until: TimeMs, by: UserId },
    /// The owner dismissed the group.
    GroupDismissed { group: GroupId, by: UserId, at: TimeMs },
    /// `user`'s role in `group` became `role` (set by `by`). A transfer of ownership is two of
    /// these, the new owner's first, and the group's owner follows the `Owner` one.
    GroupRoleSet { group: GroupId, user: UserId, role: GroupRole, by: UserId },
    /// `group` entered `user`'s list of groups (on the user's shard).
    GroupListed { user: UserId, group: GroupId, at: TimeMs, home: Option<RegionCode> },
    /// `group` left `user`'s list of groups.
    GroupUnlisted { user: UserId, group: GroupId },
    /// `user`'s profile fields changed (an empty value: removed).
    ProfileUpdated { user: UserId, fields: Vec<(String, String)> },
    /// `user` blocked (`blocked`) or unblocked `target` (on `user`'s shard).
    UserBlocked { user: UserId, target: UserId, blocked: bool, at: TimeMs },
    /// The conversation learned that `blocker` blocked or unblocked its other member (on the
    /// conversation's shard).
    ConversationBlocked { conversation: ConversationId, blocker: UserId, blocked: bool },
    /// Group profile fields changed (an empty value: removed), by `by`.
    GroupProfileUpdated { group: GroupId, fields: Vec<(String, String)>, by: UserId },
    /// Member fields of `user` changed, by `by`.
    GroupMemberInfoSet { group: GroupId, user: UserId, fields: Vec<(String, String)>, by: UserId },
    /// `user` applied to join `group`; the application waits for the owner or an admin.
    GroupJoinRequested { group: GroupId, user: UserId, message: String, at: TimeMs },
    /// `user`'s application was approved (their `GroupMemberAdded` follows) or rejected.
    GroupJoinResolved { group: GroupId, user: UserId, approved: bool, by: UserId },
    /// A topic was opened in a Community.
    TopicCreated { group: GroupId, topic: crate::ids::TopicId, name: String, by: UserId, at: TimeMs },
    /// A message was accepted at `seq` of a topic's stream.
    TopicMessageSent {
        group: GroupId,
        topic: crate::ids::TopicId,
        seq: Seq,
        message_id: MessageId,
        sender: UserId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
        at: TimeMs,
    },
    /// `likes` more likes were given in `group`.
    GroupLiked { group: GroupId, likes: u64 },
    /// Everyone but the owner and admins was muted (or unmuted).
    GroupMutedAll { group: GroupId, muted: bool, by: UserId },
    /// `user` is banned from `group` until `until` (0: the ban was lifted).
    GroupMemberBanned { group: GroupId, user: UserId, until: TimeMs, by: UserId },
    /// `user`'s settings for a row of their list became `prefs`.
    ConversationPrefsSet { user: UserId, conversation: ConversationId, prefs: crate::records::ConversationPrefs },
    /// `user`'s view of a stream's history became `view`.
    HistoryViewSet { conversation: ConversationId, user: UserId, view: crate::records::HistoryView },
    /// `from` asked to become `user`'s friend; the request waits for `user` (on `user`'s shard).
    FriendRequested { user: UserId, from: UserId, message: String, remark: String, at: TimeMs },
    /// `user` answered the request of `from` (or it was settled by a friendship from the
    /// other side).
    FriendRequestResolved { user: UserId, from: UserId, accepted: bool },
    /// `friend` entered `user`'s friend list.
    FriendAdded { user: UserId, friend: UserId, remark: String, at: TimeMs, home: Option<RegionCode> },
    /// `friend` left `user`'s friend list.
    FriendRemoved { user: UserId, friend: UserId },
    /// `user`'s remark for `friend` changed.
    FriendRemarked { user: UserId, friend: UserId, remark: String },
    /// The conversation learned that `lister` has (or no longer has) its other member as a
    /// friend (on the conversation's shard).
    ConversationFriended { conversation: ConversationId, lister: UserId, friend: bool },
    /// The shard's logic version moved from `from` to `to` (admin, once every member
    /// supported it). No projection changes; apply reads it from then on.
    LogicVersionRaised { from: u32, to: u32 },
    /// The shard's region epoch moved from `from` to `to` (a promoted standby, ADR 0005).
    EpochRaised { from: u32, to: u32 },
    /// A point-in-time restore withdrew `kept_up_to_seq+1..=through` of `conversation` (the
    /// `MessageRecalled` events after it in the same command do it).
    ConversationRestored { conversation: ConversationId, kept_up_to_seq: Seq, through: Seq, at: TimeMs },
    /// A range of this shard's event log went to the archive as one segment (ADR 0004). The
    /// replica dropped the range's event-log keys and the hot copies of the messages it holds
    /// (each conversation's latest message and recall tombstones stay hot); `ranges` say
    /// which conversation seqs the segment holds.
    SegmentArchived { segment: crate::records::ArchivedSegment, ranges: Vec<crate::records::ColdRange> },
}

impl Event {
    /// The server time the event carries, if its kind records one (the apply time of its
    /// command: server time never goes backwards within a shard).
    pub fn time(&self) -> Option<TimeMs> {
        match self {
            Event::UserCreated { at, .. }
            | Event::AccountDeleted { at, .. }
            | Event::MessageSent { at, .. }
            | Event::MessageRecalled { at, .. }
            | Event::ConversationRestored { at, .. }
            | Event::ConversationJoined { at, .. }
            | Event::GroupCreated { at, .. }
            | Event::GroupMemberAdded { at, .. }
            | Event::GroupMemberRemoved { at, .. }
            | Event::GroupMessageSent { at, .. }
            | Event::GroupDismissed { at, .. }
            | Event::GroupListed { at, .. }
            | Event::UserBlocked { at, .. }
            | Event::GroupJoinRequested { at, .. }
            | Event::TopicCreated { at, .. }
            | Event::TopicMessageSent { at, .. }
            | Event::FriendRequested { at, .. }
            | Event::FriendAdded { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The event's type name, as logs and the event API show it.
    pub fn name(&self) -> &'static str {
        match self {
            Event::UserCreated { .. } => "UserCreated",
            Event::AccountDeleted { .. } => "AccountDeleted",
            Event::MessageSent { .. } => "MessageSent",
            Event::MessageRecalled { .. } => "MessageRecalled",
            Event::ReadMarked { .. } => "ReadMarked",
            Event::ConversationJoined { .. } => "ConversationJoined",
            Event::LogicVersionRaised { .. } => "LogicVersionRaised",
            Event::EpochRaised { .. } => "EpochRaised",
            Event::ConversationRestored { .. } => "ConversationRestored",
            Event::IdClaimed { .. } => "IdClaimed",
            Event::GroupCreated { .. } => "GroupCreated",
            Event::GroupMemberAdded { .. } => "GroupMemberAdded",
            Event::GroupMemberRemoved { .. } => "GroupMemberRemoved",
            Event::GroupMessageSent { .. } => "GroupMessageSent",
            Event::GroupMemberMuted { .. } => "GroupMemberMuted",
            Event::GroupDismissed { .. } => "GroupDismissed",
            Event::GroupRoleSet { .. } => "GroupRoleSet",
            Event::GroupListed { .. } => "GroupListed",
            Event::GroupUnlisted { .. } => "GroupUnlisted",
            Event::UserBlocked { .. } => "UserBlocked",
            Event::ProfileUpdated { .. } => "ProfileUpdated",
            Event::ConversationBlocked { .. } => "ConversationBlocked",
            Event::FriendRequested { .. } => "FriendRequested",
            Event::ConversationPrefsSet { .. } => "ConversationPrefsSet",
            Event::HistoryViewSet { .. } => "HistoryViewSet",
            Event::GroupProfileUpdated { .. } => "GroupProfileUpdated",
            Event::GroupMemberInfoSet { .. } => "GroupMemberInfoSet",
            Event::GroupJoinRequested { .. } => "GroupJoinRequested",
            Event::GroupJoinResolved { .. } => "GroupJoinResolved",
            Event::GroupMutedAll { .. } => "GroupMutedAll",
            Event::GroupLiked { .. } => "GroupLiked",
            Event::TopicCreated { .. } => "TopicCreated",
            Event::TopicMessageSent { .. } => "TopicMessageSent",
            Event::GroupMemberBanned { .. } => "GroupMemberBanned",
            Event::FriendRequestResolved { .. } => "FriendRequestResolved",
            Event::FriendAdded { .. } => "FriendAdded",
            Event::FriendRemoved { .. } => "FriendRemoved",
            Event::FriendRemarked { .. } => "FriendRemarked",
            Event::ConversationFriended { .. } => "ConversationFriended",
            Event::SegmentArchived { .. } => "SegmentArchived",
        }
    }
}

/// Where an event sits in its shard's event log: the Raft entry that carried its command,
/// the command's position in that entry, and the event's position among the command's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventOffset {
    pub log_index: u64,
    pub command: u32,
    pub event: u16,
}

impl EventOffset {
    /// The offset just past this one: the next event of its command, wherever that is.
    pub fn next(self) -> EventOffset {
        match self.event.checked_add(1) {
            Some(event) => EventOffset { event, ..self },
            None => EventOffset { command: self.command.saturating_add(1), event: 0, ..self },
        }
    }
}

impl std::fmt::Display for EventOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.log_index, self.command, self.event)
    }
}
