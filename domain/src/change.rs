//! What applying a command writes. Storage turns each change into keys of one WriteBatch.

use crate::command::{EffectKind, Lane};
use crate::ids::{ConversationId, DirectoryKey, EffectId, GroupId, RegionCode, RequestId, ShardId, UserId};
use crate::records::{Conversation, ConversationRef, DedupEntry, Group, GroupMember, GroupRef, Message, User};

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
    /// An effect for another shard, into this shard's outbox; storage assigns its id and
    /// stamps its source. `lane` is the delivery queue the sender puts it in (the shard that
    /// holds the target entity, within the region); the effect itself names only the entity,
    /// and the receiving side checks where that lives.
    Emit {
        lane: Lane,
        kind: EffectKind,
    },
    /// Effects from `source` up to `up_to` are applied here.
    SetWatermark {
        source: ShardId,
        from_region: Option<RegionCode>,
        up_to: EffectId,
    },
    /// Effects for `target` up to `up_to` were applied there: drop them.
    AckOutbox {
        target: Lane,
        up_to: EffectId,
    },
    /// A segment entered the shard's archive manifest.
    PutArchivedSegment(crate::records::ArchivedSegment),
    /// Where a conversation's archived seqs are.
    PutColdRange(crate::records::ColdRange),
    /// The hot copy of an archived message is dropped (the segment holds it).
    DeleteMessage {
        conversation: ConversationId,
        seq: crate::ids::Seq,
    },
    /// A recall of an archived message: the overlay cold reads lay over the segment's copy.
    PutRecallOverlay {
        conversation: ConversationId,
        seq: crate::ids::Seq,
        recall: crate::records::Recall,
    },
    /// Where the shard's webhooks resume (see `Command::HooksSent`).
    SetHooksCursor {
        up_to: crate::EventOffset,
    },
    /// From the next entry on, the shard applies the rules of logic version `version`.
    SetLogicVersion {
        version: u32,
    },
    /// The shard's region epoch from the next entry on.
    SetEpoch {
        epoch: u32,
    },
    PutGroup(Group),
    PutGroupMember {
        group: GroupId,
        member: GroupMember,
    },
    DeleteGroupMember {
        group: GroupId,
        user: UserId,
    },
    PutGroupRef {
        user: UserId,
        entry: GroupRef,
    },
    DeleteGroupRef {
        user: UserId,
        group: GroupId,
    },
    /// `user`'s whole profile after an update.
    PutProfile {
        user: UserId,
        profile: crate::profile::Profile,
    },
    /// `user`'s profile, gone with the account.
    DeleteProfile {
        user: UserId,
    },
    /// A row of `user`'s conversation list, gone with the account.
    DeleteConversationRef {
        user: UserId,
        conversation: ConversationId,
    },
    DeleteConversationPrefs {
        user: UserId,
        conversation: ConversationId,
    },
    /// `user`'s blocklist entry for `target` (present while blocked).
    PutBlocked {
        user: UserId,
        target: UserId,
        since: crate::ids::TimeMs,
    },
    DeleteBlocked {
        user: UserId,
        target: UserId,
    },
    /// How many users `user` has blocked.
    PutBlockCount {
        user: UserId,
        count: u64,
    },
    /// The conversation's record that `blocker` blocks its other member.
    PutPairBlock {
        conversation: ConversationId,
        blocker: UserId,
    },
    DeletePairBlock {
        conversation: ConversationId,
        blocker: UserId,
    },
    PutConversationPrefs {
        user: UserId,
        conversation: ConversationId,
        prefs: crate::records::ConversationPrefs,
    },
    PutHistoryView {
        conversation: ConversationId,
        user: UserId,
        view: crate::records::HistoryView,
    },
    PutTopic {
        group: GroupId,
        topic: crate::records::Topic,
    },
    /// A member's read cursor in a topic's stream.
    PutTopicCursor {
        stream: ConversationId,
        user: UserId,
        read_seq: crate::ids::Seq,
    },
    /// An application to join `group`, waiting.
    PutGroupApplication {
        group: GroupId,
        application: crate::records::GroupApplication,
    },
    DeleteGroupApplication {
        group: GroupId,
        user: UserId,
    },
    /// `user` is banned from `group` until `until`.
    PutGroupBan {
        group: GroupId,
        user: UserId,
        until: crate::ids::TimeMs,
    },
    DeleteGroupBan {
        group: GroupId,
        user: UserId,
    },
    /// `user`'s friend list entry for `entry.user`.
    PutFriend {
        user: UserId,
        entry: crate::records::Friend,
    },
    DeleteFriend {
        user: UserId,
        friend: UserId,
    },
    /// A request waiting for `user`'s answer.
    PutFriendRequest {
        user: UserId,
        request: crate::records::FriendRequest,
    },
    DeleteFriendRequest {
        user: UserId,
        from: UserId,
    },
    PutFriendCounts {
        user: UserId,
        counts: crate::records::FriendCounts,
    },
    /// The conversation's record that `lister` has its other member as a friend.
    PutPairFriend {
        conversation: ConversationId,
        lister: UserId,
    },
    DeletePairFriend {
        conversation: ConversationId,
        lister: UserId,
    },
    /// The directory records `key` as claimed by `region` (a projection of `IdClaimed`).
    PutClaim {
        key: DirectoryKey,
        region: RegionCode,
    },
}
