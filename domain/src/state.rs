//! The read interface apply needs. Storage implements it over RocksDB plus the writes of the
//! batch being applied, so that a later command in a batch sees the earlier ones.

use crate::ids::{ConversationId, DirectoryKey, EffectId, GroupId, RegionCode, RequestId, Seq, ShardId, UserId};
use crate::records::{Conversation, DedupEntry, Group, GroupMember, Message, User};

/// Storage could not read state (I/O, corruption). Fatal for the replica: it must stop rather
/// than diverge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state unreadable: {0}")]
pub struct StateError(pub String);

pub trait ShardState {
    fn user(&self, id: &UserId) -> Result<Option<User>, StateError>;
    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StateError>;
    fn message(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<Message>, StateError>;
    /// The archived range of `conversation` that holds `seq`, if that seq is archived.
    fn cold_range(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<crate::records::ColdRange>, StateError>;
    /// The recall of an archived message, if it was recalled after it was archived.
    fn recall_overlay(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<crate::records::Recall>, StateError>;
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
    fn group(&self, id: &GroupId) -> Result<Option<Group>, StateError>;
    fn group_member(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupMember>, StateError>;
    fn has_group_ref(&self, user: &UserId, group: &GroupId) -> Result<bool, StateError>;
    /// `user`'s profile fields (empty when none were set).
    fn profile(&self, user: &UserId) -> Result<crate::profile::Profile, StateError>;
    /// Whether `user` has `target` on their blocklist (on `user`'s shard).
    fn is_blocked(&self, user: &UserId, target: &UserId) -> Result<bool, StateError>;
    /// How many users `user` has blocked.
    fn blocked_count(&self, user: &UserId) -> Result<u64, StateError>;
    /// Whether `blocker` blocks the other member of `conversation` (on its shard).
    fn pair_blocked(&self, conversation: &ConversationId, blocker: &UserId) -> Result<bool, StateError>;
    fn topic(&self, group: &GroupId, topic: &crate::ids::TopicId) -> Result<Option<crate::records::Topic>, StateError>;
    /// A member's read cursor in a topic's stream (none until they read or send there).
    fn topic_cursor(&self, stream: &ConversationId, user: &UserId) -> Result<Option<Seq>, StateError>;
    /// `user`'s settings for a row of their list (on `user`'s shard).
    fn conversation_prefs(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<crate::records::ConversationPrefs>, StateError>;
    /// `user`'s view of a stream's history (on the stream's shard).
    fn history_view(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<crate::records::HistoryView>, StateError>;
    /// `user`'s application to join `group`, if waiting.
    fn group_application(
        &self,
        group: &GroupId,
        user: &UserId,
    ) -> Result<Option<crate::records::GroupApplication>, StateError>;
    /// Until when `user` is banned from `group` (a past time: the ban is over), if ever.
    fn group_ban(&self, group: &GroupId, user: &UserId) -> Result<Option<crate::ids::TimeMs>, StateError>;
    /// `user`'s friend list entry for `friend` (on `user`'s shard).
    fn friend(&self, user: &UserId, friend: &UserId) -> Result<Option<crate::records::Friend>, StateError>;
    /// The request of `from` waiting for `user` (on `user`'s shard).
    fn friend_request(&self, user: &UserId, from: &UserId)
        -> Result<Option<crate::records::FriendRequest>, StateError>;
    fn friend_counts(&self, user: &UserId) -> Result<crate::records::FriendCounts, StateError>;
    /// Whether `lister` has the other member of `conversation` as a friend (on its shard).
    fn pair_friend(&self, conversation: &ConversationId, lister: &UserId) -> Result<bool, StateError>;
    /// Every record `user`'s shard keeps under the account (what deleting it clears), with
    /// the writes of earlier commands of the entry being applied.
    fn account_records(&self, user: &UserId) -> Result<crate::records::AccountRecords, StateError>;
    /// The first `limit` members of `group` in user id order.
    fn group_members_first(&self, group: &GroupId, limit: usize) -> Result<Vec<GroupMember>, StateError>;
}

/// A state with a command's pending changes laid over it, so that each event of a command is
/// projected against the state its earlier events left (replay folds events the same way).
pub struct Pending<'a, S: ShardState> {
    pub base: &'a S,
    pub changes: &'a [crate::change::Change],
}

impl<S: ShardState> Pending<'_, S> {
    /// The newest pending change that `pick` recognizes, if any.
    fn newest<T>(&self, pick: impl Fn(&crate::change::Change) -> Option<T>) -> Option<T> {
        self.changes.iter().rev().find_map(pick)
    }
}

impl<S: ShardState> ShardState for Pending<'_, S> {
    fn user(&self, id: &UserId) -> Result<Option<User>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutUser(u) if &u.id == id => Some(u.clone()),
            _ => None,
        }) {
            Some(u) => Ok(Some(u)),
            None => self.base.user(id),
        }
    }

    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutConversation(h) if &h.id == id => Some(h.clone()),
            _ => None,
        }) {
            Some(h) => Ok(Some(h)),
            None => self.base.conversation(id),
        }
    }

    fn message(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<Message>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutMessage { conversation: cv, message } if cv == conversation && message.seq == seq => {
                Some(Some(message.clone()))
            }
            Change::DeleteMessage { conversation: cv, seq: s } if cv == conversation && *s == seq => Some(None),
            _ => None,
        }) {
            Some(m) => Ok(m),
            None => self.base.message(conversation, seq),
        }
    }

    fn cold_range(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<crate::records::ColdRange>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutColdRange(r) if &r.conversation == conversation && r.from <= seq && seq <= r.to => {
                Some(r.clone())
            }
            _ => None,
        }) {
            Some(r) => Ok(Some(r)),
            None => self.base.cold_range(conversation, seq),
        }
    }

    fn recall_overlay(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<crate::records::Recall>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutRecallOverlay { conversation: cv, seq: s, recall } if cv == conversation && *s == seq => {
                Some(recall.clone())
            }
            _ => None,
        }) {
            Some(r) => Ok(Some(r)),
            None => self.base.recall_overlay(conversation, seq),
        }
    }

    fn dedup(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        request_id: &RequestId,
    ) -> Result<Option<DedupEntry>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutDedup { conversation: cv, sender: s, request_id: r, entry }
                if cv == conversation && s == sender && r == request_id =>
            {
                Some(entry.clone())
            }
            _ => None,
        }) {
            Some(d) => Ok(Some(d)),
            None => self.base.dedup(conversation, sender, request_id),
        }
    }

    fn has_conversation_ref(&self, user: &UserId, conversation: &ConversationId) -> Result<bool, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutConversationRef { user: u, entry } if u == user && &entry.conversation == conversation => {
                Some(true)
            }
            Change::DeleteConversationRef { user: u, conversation: cv } if u == user && cv == conversation => {
                Some(false)
            }
            _ => None,
        }) {
            Some(listed) => Ok(listed),
            None => self.base.has_conversation_ref(user, conversation),
        }
    }

    fn watermark(&self, source: ShardId, from_region: Option<&RegionCode>) -> Result<EffectId, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::SetWatermark { source: s, from_region: r, up_to } if *s == source && r.as_ref() == from_region => {
                Some(*up_to)
            }
            _ => None,
        }) {
            Some(w) => Ok(w),
            None => self.base.watermark(source, from_region),
        }
    }

    fn claim(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutClaim { key: k, region } if k == key => Some(region.clone()),
            _ => None,
        }) {
            Some(r) => Ok(Some(r)),
            None => self.base.claim(key),
        }
    }

    fn group(&self, id: &GroupId) -> Result<Option<Group>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutGroup(g) if &g.id == id => Some(g.clone()),
            _ => None,
        }) {
            Some(g) => Ok(Some(g)),
            None => self.base.group(id),
        }
    }

    fn group_member(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupMember>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutGroupMember { group: g, member } if g == group && &member.user == user => {
                Some(Some(member.clone()))
            }
            Change::DeleteGroupMember { group: g, user: u } if g == group && u == user => Some(None),
            _ => None,
        }) {
            Some(m) => Ok(m),
            None => self.base.group_member(group, user),
        }
    }

    fn profile(&self, user: &UserId) -> Result<crate::profile::Profile, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutProfile { user: u, profile } if u == user => Some(profile.clone()),
            Change::DeleteProfile { user: u } if u == user => Some(crate::profile::Profile::default()),
            _ => None,
        }) {
            Some(p) => Ok(p),
            None => self.base.profile(user),
        }
    }

    fn is_blocked(&self, user: &UserId, target: &UserId) -> Result<bool, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutBlocked { user: u, target: t, .. } if u == user && t == target => Some(true),
            Change::DeleteBlocked { user: u, target: t } if u == user && t == target => Some(false),
            _ => None,
        }) {
            Some(b) => Ok(b),
            None => self.base.is_blocked(user, target),
        }
    }

    fn blocked_count(&self, user: &UserId) -> Result<u64, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutBlockCount { user: u, count } if u == user => Some(*count),
            _ => None,
        }) {
            Some(n) => Ok(n),
            None => self.base.blocked_count(user),
        }
    }

    fn pair_blocked(&self, conversation: &ConversationId, blocker: &UserId) -> Result<bool, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutPairBlock { conversation: cv, blocker: b } if cv == conversation && b == blocker => Some(true),
            Change::DeletePairBlock { conversation: cv, blocker: b } if cv == conversation && b == blocker => {
                Some(false)
            }
            _ => None,
        }) {
            Some(b) => Ok(b),
            None => self.base.pair_blocked(conversation, blocker),
        }
    }

    fn topic(&self, group: &GroupId, topic: &crate::ids::TopicId) -> Result<Option<crate::records::Topic>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutTopic { group: g, topic: t } if g == group && &t.id == topic => Some(t.clone()),
            _ => None,
        }) {
            Some(t) => Ok(Some(t)),
            None => self.base.topic(group, topic),
        }
    }

    fn topic_cursor(&self, stream: &ConversationId, user: &UserId) -> Result<Option<Seq>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutTopicCursor { stream: s, user: u, read_seq } if s == stream && u == user => Some(*read_seq),
            _ => None,
        }) {
            Some(s) => Ok(Some(s)),
            None => self.base.topic_cursor(stream, user),
        }
    }

    fn conversation_prefs(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<crate::records::ConversationPrefs>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutConversationPrefs { user: u, conversation: cv, prefs } if u == user && cv == conversation => {
                Some(Some(prefs.clone()))
            }
            Change::DeleteConversationPrefs { user: u, conversation: cv } if u == user && cv == conversation => {
                Some(None)
            }
            _ => None,
        }) {
            Some(p) => Ok(p),
            None => self.base.conversation_prefs(user, conversation),
        }
    }

    fn history_view(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<crate::records::HistoryView>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutHistoryView { conversation: cv, user: u, view } if u == user && cv == conversation => {
                Some(view.clone())
            }
            _ => None,
        }) {
            Some(v) => Ok(Some(v)),
            None => self.base.history_view(conversation, user),
        }
    }

    fn group_application(
        &self,
        group: &GroupId,
        user: &UserId,
    ) -> Result<Option<crate::records::GroupApplication>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutGroupApplication { group: g, application } if g == group && &application.user == user => {
                Some(Some(application.clone()))
            }
            Change::DeleteGroupApplication { group: g, user: u } if g == group && u == user => Some(None),
            _ => None,
        }) {
            Some(a) => Ok(a),
            None => self.base.group_application(group, user),
        }
    }

    fn group_ban(&self, group: &GroupId, user: &UserId) -> Result<Option<crate::ids::TimeMs>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutGroupBan { group: g, user: u, until } if g == group && u == user => Some(Some(*until)),
            Change::DeleteGroupBan { group: g, user: u } if g == group && u == user => Some(None),
            _ => None,
        }) {
            Some(b) => Ok(b),
            None => self.base.group_ban(group, user),
        }
    }

    fn friend(&self, user: &UserId, friend: &UserId) -> Result<Option<crate::records::Friend>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutFriend { user: u, entry } if u == user && &entry.user == friend => Some(Some(entry.clone())),
            Change::DeleteFriend { user: u, friend: f } if u == user && f == friend => Some(None),
            _ => None,
        }) {
            Some(f) => Ok(f),
            None => self.base.friend(user, friend),
        }
    }

    fn friend_request(
        &self,
        user: &UserId,
        from: &UserId,
    ) -> Result<Option<crate::records::FriendRequest>, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutFriendRequest { user: u, request } if u == user && &request.from == from => {
                Some(Some(request.clone()))
            }
            Change::DeleteFriendRequest { user: u, from: f } if u == user && f == from => Some(None),
            _ => None,
        }) {
            Some(r) => Ok(r),
            None => self.base.friend_request(user, from),
        }
    }

    fn friend_counts(&self, user: &UserId) -> Result<crate::records::FriendCounts, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutFriendCounts { user: u, counts } if u == user => Some(*counts),
            _ => None,
        }) {
            Some(n) => Ok(n),
            None => self.base.friend_counts(user),
        }
    }

    fn pair_friend(&self, conversation: &ConversationId, lister: &UserId) -> Result<bool, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutPairFriend { conversation: cv, lister: l } if cv == conversation && l == lister => Some(true),
            Change::DeletePairFriend { conversation: cv, lister: l } if cv == conversation && l == lister => {
                Some(false)
            }
            _ => None,
        }) {
            Some(b) => Ok(b),
            None => self.base.pair_friend(conversation, lister),
        }
    }

    // The two scans read the base alone: they serve commands that decide from them before
    // projecting anything (deleting an account, an owner leaving with it), never projections.
    fn account_records(&self, user: &UserId) -> Result<crate::records::AccountRecords, StateError> {
        self.base.account_records(user)
    }

    fn group_members_first(&self, group: &GroupId, limit: usize) -> Result<Vec<GroupMember>, StateError> {
        self.base.group_members_first(group, limit)
    }

    fn has_group_ref(&self, user: &UserId, group: &GroupId) -> Result<bool, StateError> {
        use crate::change::Change;
        match self.newest(|c| match c {
            Change::PutGroupRef { user: u, entry } if u == user && &entry.group == group => Some(true),
            Change::DeleteGroupRef { user: u, group: g } if u == user && g == group => Some(false),
            _ => None,
        }) {
            Some(listed) => Ok(listed),
            None => self.base.has_group_ref(user, group),
        }
    }
}
