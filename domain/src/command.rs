//! Commands: what a client (through a node) or another shard asks a shard to change.

use crate::element::Element;
use crate::ids::{
    ConversationId, DirectoryKey, EffectId, GroupId, RegionCode, RequestId, Seq, ShardId, TimeMs, UserId,
};
use crate::records::GroupKind;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create (import) an account on the user's shard. Idempotent.
    CreateUser { user: UserId, home_region: RegionCode, nickname: String },
    /// Delete `user`'s account (REL-01), on the user's shard: profile, friend list, requests,
    /// blocklist, conversation list and settings go; each friend's list and each group drop
    /// the user through the outbox; the account record stays as a tombstone so the id is not
    /// reused. Messages already sent stay in the conversations they were sent to.
    DeleteAccount { user: UserId },
    /// Send a C2C message; applied on the conversation's shard, in the conversation's home
    /// region. `sender_home` / `recipient_home` name a member's home region when it is not
    /// this one (the directory's answer at ingress, so that every replica routes the first
    /// message's effects alike); `None` means this region.
    SendMessage {
        sender: UserId,
        recipient: UserId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
        sender_home: Option<RegionCode>,
        recipient_home: Option<RegionCode>,
        /// Only the recipient's friends may send (REL-05): the app's setting or the
        /// recipient's own (`c2c_from = friends` in their profile), read at the accepting node.
        friends_only: bool,
    },
    /// Recall a message; `window_ms` is the window in force where the request was accepted.
    RecallMessage { actor: UserId, conversation: ConversationId, seq: Seq, window_ms: u64 },
    /// Move a member's read cursor; `None` means to the newest message.
    MarkRead { user: UserId, conversation: ConversationId, up_to: Option<Seq> },
    /// Effects delivered from another shard's outbox, in id order: of this region
    /// (`from_region` `None`) or, through a region link, of shard `source` of `from_region`.
    ApplyEffects { source: ShardId, from_region: Option<RegionCode>, effects: Vec<Effect> },
    /// The target lane applied every effect up to `up_to`: drop them from the outbox.
    AckEffects { target: Lane, up_to: EffectId },
    /// Claim a user id (by its directory key) for `region` in the directory; applied in the
    /// key's owner region. The first claim wins; a repeat by the same region is a no-op.
    ClaimId { key: DirectoryKey, region: RegionCode },
    /// Create a group owned by `owner` with initial `members` (the owner need not be among
    /// them); applied on the group's shard. `max_members` is the cap for its type at the
    /// node that accepted the request. A repeat by the same owner is a no-op.
    /// `hide_history`: members who join later read the stream from their joining on (GRP-08).
    CreateGroup {
        group: GroupId,
        kind: GroupKind,
        owner: UserId,
        name: String,
        max_members: u64,
        members: Vec<UserId>,
        hide_history: bool,
        /// The members homed in other regions, with their regions (the rest live here).
        homes: Vec<(UserId, RegionCode)>,
    },
    /// `actor` adds `users` to a group (invite, or join when `users` is the actor alone).
    /// `hidden` (owner and admins only): the users receive messages but are absent from the
    /// member lists other members see (GRP-06).
    AddGroupMembers {
        actor: UserId,
        group: GroupId,
        users: Vec<UserId>,
        hidden: bool,
        homes: Vec<(UserId, RegionCode)>,
    },
    /// `actor` removes `user` from a group: a leave when they are the same, else a kick.
    RemoveGroupMember { actor: UserId, group: GroupId, user: UserId },
    /// A message to a group's stream.
    /// `mentions` and `at_all` (owner and admins only) flag the message in the mentioned
    /// members' conversation rows (MSG-05).
    SendGroupMessage {
        sender: UserId,
        group: GroupId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
        mentions: Vec<UserId>,
        at_all: bool,
    },
    /// `actor` mutes `user` in a group for `duration_ms` from the entry's time (0: unmute).
    MuteGroupMember { actor: UserId, group: GroupId, user: UserId, duration_ms: u64 },
    /// The owner dismisses a group: every later command on it is refused.
    DismissGroup { actor: UserId, group: GroupId },
    /// The owner makes a member an admin, or an admin a plain member again.
    SetGroupRole { actor: UserId, group: GroupId, user: UserId, role: crate::records::GroupRole },
    /// The owner hands the group to another member, and becomes a plain member.
    TransferGroup { actor: UserId, group: GroupId, to: UserId },
    /// `actor` changes group profile fields (GRP-03): `name`, `introduction`, `notification`,
    /// `face_url`, `join_option`, `max_members`, `custom.KEY` (an empty value removes an
    /// optional field). `type_cap`: the most members the group's type may have at the
    /// accepting node (a `max_members` above it is refused).
    SetGroupProfile { actor: UserId, group: GroupId, fields: Vec<(String, String)>, type_cap: u64 },
    /// `actor` sets member fields of `user` (GRP-03/04): `name_card`, `recv_opt`, `custom.KEY`.
    SetGroupMemberInfo { actor: UserId, group: GroupId, user: UserId, fields: Vec<(String, String)> },
    /// `user` applies to join a group: joined at once when it is free to join, else waiting
    /// for the owner or an admin, or refused when it takes no applications.
    ApplyToJoinGroup { user: UserId, group: GroupId, message: String, homes: Vec<(UserId, RegionCode)> },
    /// The owner or an admin approves or rejects `user`'s application.
    RespondJoinRequest { actor: UserId, group: GroupId, user: UserId, approve: bool, homes: Vec<(UserId, RegionCode)> },
    /// The owner or an admin mutes (or unmutes) everyone but the owner and admins.
    MuteAllGroup { actor: UserId, group: GroupId, muted: bool },
    /// `actor` bans `user` from a group for `duration_ms` from the entry's time (0: lifts the
    /// ban): a member is removed, and the user may not join, apply, be added or (in a live
    /// room) send until it ends.
    BanGroupMember { actor: UserId, group: GroupId, user: UserId, duration_ms: u64 },
    /// `user` changes their settings for a row of their list (CONV-03); `None` leaves a
    /// setting as it is. Applied on `user`'s shard.
    SetConversationPrefs { user: UserId, conversation: ConversationId, change: crate::conversation_prefs::PrefsChange },
    /// `user` removes messages from their own view of a stream (MSG-09): everything up to the
    /// newest (`clear`) and/or the messages at `delete`. Applied on the stream's shard.
    ClearHistoryForSelf { user: UserId, conversation: ConversationId, clear: bool, delete: Vec<Seq> },
    /// The owner or an admin of a Community opens a topic (a named sub-stream).
    CreateTopic { actor: UserId, group: GroupId, topic: crate::ids::TopicId, name: String },
    /// A message to a topic of a Community: the group's rules (members, mutes), the topic's seqs.
    SendTopicMessage {
        sender: UserId,
        group: GroupId,
        topic: crate::ids::TopicId,
        elements: Vec<Element>,
        request_id: Option<RequestId>,
    },
    /// Likes given in a group (GRP-07): the sum of many users' likes, gathered by a node over a
    /// short window so that a busy live room costs one entry per window, not one per like.
    AddGroupLikes { group: GroupId, likes: u64 },
    /// `user` blocks (or unblocks) `target` (REL-03); applied on `user`'s shard. The
    /// conversation of the two learns of it through the outbox and refuses `target`'s sends
    /// to `user` from then on. `conversation_home`: where that conversation lives when not
    /// in this region.
    /// `max_blocked`: the blocklist's cap at the accepting node (0: none).
    SetBlocked { user: UserId, target: UserId, blocked: bool, conversation_home: Option<RegionCode>, max_blocked: u64 },
    /// `user` asks to become `target`'s friend (REL-03); applied on `target`'s shard, in
    /// `target`'s home region, under `target`'s add-friend policy: added at once, kept as a
    /// pending request, or refused. `user_home` / `conversation_home`: where the requester
    /// and the pair's conversation live when not in this region. `remark`: the requester's
    /// note for the target on their own list. Caps from the accepting node.
    AddFriend {
        user: UserId,
        target: UserId,
        message: String,
        remark: String,
        user_home: Option<RegionCode>,
        conversation_home: Option<RegionCode>,
        max_friends: u64,
        max_pending: u64,
    },
    /// `user` accepts or rejects the pending request of `from` (on `user`'s shard).
    RespondFriendRequest {
        user: UserId,
        from: UserId,
        accept: bool,
        remark: String,
        from_home: Option<RegionCode>,
        conversation_home: Option<RegionCode>,
        max_friends: u64,
    },
    /// `user` takes `friend` off their list; `both`: off `friend`'s list too.
    DeleteFriend {
        user: UserId,
        friend: UserId,
        both: bool,
        friend_home: Option<RegionCode>,
        conversation_home: Option<RegionCode>,
    },
    /// `user` sets their remark for `friend`.
    SetFriendRemark { user: UserId, friend: UserId, remark: String },
    /// Set (or, with an empty value, remove) profile fields of `user` (REL-02).
    SetProfile { user: UserId, fields: Vec<(String, String)> },
    /// Apply the rules of cluster logic version `version` from this entry on (admin; never
    /// lowers it). Proposed only once every member reports support for it.
    SetLogicVersion { version: u32 },
    /// The shard serves in region epoch `epoch` from this entry on: proposed by a promoted
    /// standby before it takes writes (ADR 0005), so nothing it mints can collide with what
    /// the fenced primary minted after the cut. Never lowers the epoch.
    RaiseEpoch { epoch: u32 },
    /// Point-in-time restore (admin): withdraw the messages `kept_up_to_seq+1..=through` of
    /// a one-to-one conversation (each is recalled by [`RESTORE_ACTOR`]); at most
    /// [`MAX_RESTORE_BATCH`] seqs a command.
    RestoreConversation { conversation: ConversationId, kept_up_to_seq: Seq, through: Seq },
    /// The shard's webhooks (after-callbacks and offline pushes, DLV-03/04) were sent for
    /// every event before `up_to`: the next sender resumes there (at least once).
    HooksSent { up_to: crate::EventOffset },
    /// The shard's leader wrote the log range `segment.first..=segment.last` to the archive:
    /// every replica checks that its own events of the range hash to `events_digest` and that
    /// the range is the shard's oldest hot one, then records the segment and drops the range
    /// (applied by storage, which reads the log; see `SegmentArchived`).
    ArchiveSegment { segment: crate::records::ArchivedSegment, events_digest: Vec<u8> },
}

/// The queue of a shard's outbox an effect waits in: a shard of this region, or another
/// region (whose receiving node picks the shard).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Shard(ShardId),
    Region(RegionCode),
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lane::Shard(s) => write!(f, "shard {s}"),
            Lane::Region(r) => write!(f, "region {r}"),
        }
    }
}

/// What an event means for an entity on another shard. Delivered at least once, applied once.
///
/// An effect is addressed to its target *entity* ([`EffectKind::target_entity`]), not to a
/// shard: the receiving side decides which of its shards holds the entity (and refuses one
/// that is not its own), so a sender never needs to know another region's shard layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub id: EffectId,
    pub source: EffectSource,
    pub kind: EffectKind,
}

/// Who emitted an effect: the shard of a region, under the region's epoch at the time. Ids
/// increase per source; region and epoch keep two sources apart across regions and after a
/// promotion of a standby (which bumps the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EffectSource {
    pub region: RegionCode,
    pub epoch: u32,
    pub shard: ShardId,
}

impl std::fmt::Display for EffectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.region, self.epoch, self.shard)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EffectKind {
    /// Put a conversation into a user's conversation index. The conversation lives in the
    /// effect's source region.
    ConversationJoined { user: UserId, conversation: ConversationId, peer: UserId, at: TimeMs },
    /// Put a group into a user's list of groups (they joined it).
    GroupListed { user: UserId, group: GroupId, at: TimeMs },
    /// Take a group out of a user's list of groups (they left or were removed).
    GroupUnlisted { user: UserId, group: GroupId },
    /// `blocker` blocked (or unblocked) the other member of a one-to-one conversation.
    PairBlocked { conversation: ConversationId, blocker: UserId, blocked: bool },
    /// Put `friend` on `user`'s friend list (the other side accepted). `conversation_home`:
    /// the region of the pair's conversation, which learns of it from `user`'s shard.
    FriendListed { user: UserId, friend: UserId, remark: String, at: TimeMs, conversation_home: RegionCode },
    /// Take `friend` off `user`'s friend list (a delete of both sides).
    FriendUnlisted { user: UserId, friend: UserId, conversation_home: RegionCode },
    /// `lister` put the other member of a one-to-one conversation on (or took them off) their
    /// friend list.
    PairFriend { conversation: ConversationId, lister: UserId, friend: bool },
    /// `gone`'s account was deleted: off `user`'s friend list, and their request to `user`
    /// with it.
    FriendGone { user: UserId, gone: UserId },
    /// `user`'s account was deleted: out of `group` (its shard picks a new owner, or
    /// dismisses the group when no one is left).
    MemberGone { group: GroupId, user: UserId },
}

impl EffectKind {
    /// The entity whose shard must apply the effect.
    pub fn target_entity(&self) -> std::borrow::Cow<'_, str> {
        match self {
            EffectKind::MemberGone { group, .. } => ConversationId::group(group).as_str().to_owned().into(),
            EffectKind::FriendGone { user, .. } => user.as_str().into(),
            EffectKind::ConversationJoined { user, .. }
            | EffectKind::GroupListed { user, .. }
            | EffectKind::GroupUnlisted { user, .. }
            | EffectKind::FriendListed { user, .. }
            | EffectKind::FriendUnlisted { user, .. } => user.as_str().into(),
            EffectKind::PairBlocked { conversation, .. } | EffectKind::PairFriend { conversation, .. } => {
                conversation.as_str().into()
            }
        }
    }
}

/// Who a point-in-time restore's withdrawals are recalled by.
pub const RESTORE_ACTOR: &str = "@restore";
/// Most seqs one `RestoreConversation` command withdraws.
pub const MAX_RESTORE_BATCH: u64 = 1000;
