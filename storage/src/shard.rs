//! One shard's state machine data: apply, reads, snapshots and the state hash.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use meridian_domain::apply::{ApplyContext, Reply, LOGIC_VERSION};
use meridian_domain::*;
use meridian_proto::durable as pb;
use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::db::Db;
use crate::error::{decode, decode_record, StorageError, Versioned};
use crate::keys::{self, STATE_CFS};

/// The outcome of one command as the proposer sees it.
pub type CommandResult = Result<Reply, Rejection>;

/// A shard's state machine data on this node.
#[derive(Debug, Clone)]
pub struct ShardStore {
    db: Db,
    shard: ShardId,
    shards: u32,
    region: RegionCode,
    max_logic_version: u32,
}

/// An event as the log holds it: its offset, the region's epoch when it was applied, the event.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub offset: EventOffset,
    pub epoch: u32,
    pub event: Event,
}

/// The region code a store has until [`ShardStore::in_region`] names one (tools and tests).
pub const DEFAULT_REGION: &str = "local";

impl ShardStore {
    /// A shard of region [`DEFAULT_REGION`] that applies every logic version this build knows.
    pub fn new(db: Db, shard: ShardId, shards: u32) -> Self {
        let region = RegionCode::parse(DEFAULT_REGION).unwrap_or_else(|_| unreachable!("a valid region code"));
        Self { db, shard, shards, region, max_logic_version: LOGIC_VERSION }
    }

    /// The region the shard belongs to (message ids and effect sources name it) and the newest
    /// logic version this replica applies (at most this build's; lower holds a node back).
    pub fn in_region(mut self, region: RegionCode, max_logic_version: u32) -> Self {
        self.region = region;
        self.max_logic_version = max_logic_version.clamp(1, LOGIC_VERSION);
        self
    }

    pub fn region(&self) -> &RegionCode {
        &self.region
    }

    /// The newest logic version this replica applies.
    pub fn max_logic_version(&self) -> u32 {
        self.max_logic_version
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The applied state; all defaults for a shard that has applied nothing.
    pub fn applied_state(&self) -> Result<pb::AppliedState, StorageError> {
        Ok(self
            .get(keys::CF_RAFT_META, &keys::meta(self.shard, keys::META_APPLIED), "applied state")?
            .unwrap_or_default())
    }

    /// Replaces the membership the applied state records (a standby's promotion, ADR 0005:
    /// the surviving nodes become the voters), as of the last applied entry. Synced.
    pub fn rewrite_membership(&self, membership: pb::MembershipConfig) -> Result<pb::AppliedState, StorageError> {
        let mut applied = self.applied_state()?;
        applied.membership = Some(membership);
        applied.membership_log_id = applied.last_applied;
        self.db.put_unchecked(
            keys::CF_RAFT_META,
            &keys::meta(self.shard, keys::META_APPLIED),
            &applied.encode_to_vec(),
        )?;
        Ok(applied)
    }

    /// Starts applying: reads see the shard's state plus this transaction's own writes.
    pub fn begin(&self) -> Result<ApplyTxn<'_>, StorageError> {
        Ok(ApplyTxn {
            applied: self.applied_state()?,
            store: self,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            database_reads: RefCell::new(HashMap::new()),
            index_request_ids: false,
            request_id_index: std::collections::BTreeMap::new(),
            batch_region: None,
        })
    }

    fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.rocks().get_pinned_cf(self.db.cf(cf)?, key)?.map(|v| v.to_vec()))
    }

    fn get<M: prost::Message + Default + Versioned>(
        &self,
        cf: &str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<M>, StorageError> {
        match self.db.rocks().get_pinned_cf(self.db.cf(cf)?, key)? {
            Some(v) => Ok(Some(decode_record(what, &v)?)),
            None => Ok(None),
        }
    }

    // ------------------------------------------------------------ reads

    pub fn user(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        self.get(keys::CF_PROJECTIONS, &keys::user(self.shard, id), "user")?.map(codec::user_from_pb).transpose()
    }

    pub fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StorageError> {
        self.get(keys::CF_PROJECTIONS, &keys::conversation(self.shard, id), "conversation")?
            .map(codec::conversation_from_pb)
            .transpose()
    }

    pub fn message(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<Message>, StorageError> {
        self.get(keys::CF_EVENTS, &keys::message(self.shard, conversation, seq), "message")?
            .map(codec::message_from_pb)
            .transpose()
    }

    /// Up to `limit` messages from `start` (inclusive), ascending when `forward`, else descending.
    pub fn messages(
        &self,
        conversation: &ConversationId,
        start: Seq,
        limit: usize,
        forward: bool,
    ) -> Result<Vec<Message>, StorageError> {
        let prefix = keys::conversation_messages(self.shard, conversation);
        let from = keys::message(self.shard, conversation, start);
        let mode = IteratorMode::From(&from, if forward { Direction::Forward } else { Direction::Reverse });
        let mut out = Vec::with_capacity(limit.min(128));
        for item in self.db.rocks().iterator_cf(self.db.cf(keys::CF_EVENTS)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 || out.len() >= limit {
                break;
            }
            out.push(codec::message_from_pb(decode_record("message", &v)?)?);
        }
        Ok(out)
    }

    /// Up to `limit` events of the shard's event log from `from` on, in log order.
    pub fn events(&self, from: EventOffset, limit: usize) -> Result<Vec<LoggedEvent>, StorageError> {
        let start = keys::event(self.shard, from);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::shard_end(self.shard));
        let iter = self.db.rocks().iterator_cf_opt(
            self.db.cf(keys::CF_EVENT_LOG)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::with_capacity(limit.min(256));
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let offset = keys::event_offset_of(&k).ok_or_else(|| StorageError::corrupt("event key", "too short"))?;
            let record: pb::EventRecord = decode_record("event", &v)?;
            let epoch = record.epoch.max(1);
            out.push(LoggedEvent { offset, epoch, event: codec::event_from_pb(record)? });
        }
        Ok(out)
    }

    /// Every projection record whose key starts with `prefix`, in key order, each turned
    /// into a `T` by `decode(key, value)`.
    fn projections_under<T>(
        &self,
        prefix: &[u8],
        mut decode: impl FnMut(&[u8], &[u8]) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, StorageError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.rocks().iterator_cf(self.db.cf(keys::CF_PROJECTIONS)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// A user's conversation index.
    pub fn conversation_refs(&self, user: &UserId) -> Result<Vec<ConversationRef>, StorageError> {
        self.projections_under(&keys::conversation_refs(self.shard, user), |_, v| {
            codec::conversation_ref_from_pb(decode_record("conversation ref", v)?)
        })
    }

    pub fn group(&self, id: &GroupId) -> Result<Option<Group>, StorageError> {
        self.get(keys::CF_PROJECTIONS, &keys::group(self.shard, id), "group")?.map(codec::group_from_pb).transpose()
    }

    pub fn group_member(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupMember>, StorageError> {
        self.get(keys::CF_PROJECTIONS, &keys::group_member(self.shard, group, user), "group member")?
            .map(codec::group_member_from_pb)
            .transpose()
    }

    /// Until when `user` is banned from `group`, if a ban was recorded.
    pub fn group_ban(&self, group: &GroupId, user: &UserId) -> Result<Option<TimeMs>, StorageError> {
        let r: Option<pb::GroupBanRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::group_ban(self.shard, group, user), "group ban")?;
        Ok(r.map(|b| TimeMs(b.until_ms)))
    }

    /// A page of a group's members in user id order, after `after` (exclusive), at most `limit`.
    pub fn group_members(
        &self,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<GroupMember>, StorageError> {
        let prefix = keys::group_members(self.shard, group);
        let start = match after {
            Some(user) => {
                let mut k = keys::group_member(self.shard, group, user);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.rocks().iterator_cf(self.db.cf(keys::CF_PROJECTIONS)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(codec::group_member_from_pb(decode_record("group member", &v)?)?);
        }
        Ok(out)
    }

    /// `user`'s profile fields (on the user's shard).
    pub fn profile(&self, user: &UserId) -> Result<meridian_domain::profile::Profile, StorageError> {
        let r: Option<pb::ProfileRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::profile(self.shard, user), "profile")?;
        Ok(r.map(|p| p.fields).unwrap_or_default())
    }

    /// `user`'s blocklist (on the user's shard), in user id order.
    pub fn blocked_users(&self, user: &UserId) -> Result<Vec<UserId>, StorageError> {
        let prefix = keys::blocked_list(self.shard, user);
        self.projections_under(&prefix, |k, _| {
            std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| UserId::parse(t).ok())
                .ok_or_else(|| StorageError::corrupt("blocklist entry", "the key names no user"))
        })
    }

    /// `user`'s friend list (on the user's shard), in user id order.
    pub fn friends(&self, user: &UserId) -> Result<Vec<Friend>, StorageError> {
        let prefix = keys::friend_list(self.shard, user);
        self.projections_under(&prefix, |k, v| {
            let friend = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| UserId::parse(t).ok())
                .ok_or_else(|| StorageError::corrupt("friend", "the key names no user"))?;
            codec::friend_from_pb(friend, decode_record("friend", v)?)
        })
    }

    /// `user`'s settings for the rows of their list, by conversation id.
    pub fn conversation_prefs_of(
        &self,
        user: &UserId,
    ) -> Result<std::collections::BTreeMap<String, ConversationPrefs>, StorageError> {
        let prefix = keys::conversation_prefs_of(self.shard, user);
        Ok(self
            .projections_under(&prefix, |k, v| {
                let conversation = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| StorageError::corrupt("conversation prefs", "the key names no conversation"))?
                    .to_owned();
                Ok((conversation, codec::prefs_from_pb(decode_record("conversation prefs", v)?)))
            })?
            .into_iter()
            .collect())
    }

    /// `user`'s view of a stream's history (on the stream's shard).
    pub fn history_view(&self, conversation: &ConversationId, user: &UserId) -> Result<HistoryView, StorageError> {
        let r: Option<pb::HistoryViewRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::history_view(self.shard, conversation, user), "history view")?;
        Ok(r.map(codec::history_view_from_pb).unwrap_or_default())
    }

    /// One topic of a Community, if it has it.
    pub fn topic(&self, group: &GroupId, topic: &TopicId) -> Result<Option<Topic>, StorageError> {
        let r: Option<pb::TopicRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::topic(self.shard, group, topic), "topic")?;
        r.map(|t| {
            let by = UserId::parse(&t.by).map_err(|e| StorageError::corrupt("topic", e.to_string()))?;
            Ok(Topic { id: topic.clone(), name: t.name, created: TimeMs(t.created_ms), by })
        })
        .transpose()
    }

    /// A Community's topics, in topic id order.
    pub fn topics(&self, group: &GroupId) -> Result<Vec<Topic>, StorageError> {
        let prefix = keys::topics(self.shard, group);
        self.projections_under(&prefix, |k, v| {
            let id = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| TopicId::parse(t).ok())
                .ok_or_else(|| StorageError::corrupt("topic", "the key names no topic"))?;
            let r: pb::TopicRecord = decode_record("topic", v)?;
            let by = UserId::parse(&r.by).map_err(|e| StorageError::corrupt("topic", e.to_string()))?;
            Ok(Topic { id, name: r.name, created: TimeMs(r.created_ms), by })
        })
    }

    /// A member's read cursor in a topic's stream (0 until they read or send there).
    pub fn topic_cursor(&self, stream: &ConversationId, user: &UserId) -> Result<Seq, StorageError> {
        let r: Option<pb::TopicCursorRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::topic_cursor(self.shard, stream, user), "topic cursor")?;
        Ok(Seq(r.map_or(0, |c| c.read_seq)))
    }

    /// The applications waiting to join `group`, in user id order.
    pub fn group_applications(&self, group: &GroupId) -> Result<Vec<GroupApplication>, StorageError> {
        let prefix = keys::group_applications(self.shard, group);
        self.projections_under(&prefix, |k, v| {
            let user = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| UserId::parse(t).ok())
                .ok_or_else(|| StorageError::corrupt("group application", "the key names no user"))?;
            let r: pb::GroupApplicationRecord = decode_record("group application", v)?;
            Ok(GroupApplication { user, message: r.message, at: TimeMs(r.time_ms) })
        })
    }

    /// Whether `friend` is on `user`'s friend list.
    pub fn friends_entry(&self, user: &UserId, friend: &UserId) -> Result<bool, StorageError> {
        let r: Option<pb::FriendRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::friend(self.shard, user, friend), "friend")?;
        Ok(r.is_some())
    }

    /// The friend requests waiting for `user`, in requester id order.
    pub fn friend_requests(&self, user: &UserId) -> Result<Vec<FriendRequest>, StorageError> {
        let prefix = keys::friend_requests(self.shard, user);
        self.projections_under(&prefix, |k, v| {
            let from = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| UserId::parse(t).ok())
                .ok_or_else(|| StorageError::corrupt("friend request", "the key names no user"))?;
            let r: pb::FriendRequestRecord = decode_record("friend request", v)?;
            Ok(FriendRequest { from, message: r.message, remark: r.remark, at: TimeMs(r.time_ms) })
        })
    }

    /// Whether `lister` has the other member of `conversation` as a friend, as the
    /// conversation's shard knows it (what friends-only sends are judged by).
    pub fn pair_friend(&self, conversation: &ConversationId, lister: &UserId) -> Result<bool, StorageError> {
        let r: Option<pb::BlockedRecord> = self.get(
            keys::CF_PROJECTIONS,
            &keys::pair_friend(self.shard, conversation, lister),
            "conversation friend",
        )?;
        Ok(r.is_some())
    }

    /// The groups in `user`'s list (on the user's shard).
    pub fn group_refs(&self, user: &UserId) -> Result<Vec<GroupRef>, StorageError> {
        self.projections_under(&keys::group_refs(self.shard, user), |_, v| {
            codec::group_ref_from_pb(decode_record("group ref", v)?)
        })
    }

    /// Effects for `target` waiting in this shard's outbox with id `from` or above, in id
    /// order, at most `limit`. Seeking past the acknowledged ones matters: their delete
    /// tombstones stay until a compaction, and a scan from the start would step over each.
    pub fn outbox_for(&self, target: ShardId, from: EffectId, limit: usize) -> Result<Vec<Effect>, StorageError> {
        let upper = match target.0.checked_add(1) {
            Some(next) => keys::outbox(self.shard, ShardId(next), EffectId(0)),
            None => keys::shard_end(self.shard),
        };
        self.effects_between(keys::outbox(self.shard, target, from), upper, limit)
    }

    /// Effects for the lane of another region, with id `from` or above, at most `limit`.
    pub fn outbox_remote_for(
        &self,
        region: &RegionCode,
        from: EffectId,
        limit: usize,
    ) -> Result<Vec<Effect>, StorageError> {
        let mut upper = keys::outbox_remote_lane(self.shard, region);
        upper.extend_from_slice(&[0xff; 9]);
        self.effects_between(keys::outbox_remote(self.shard, region, from), upper, limit)
    }

    /// Every effect for the lane of `region` below the returned id has been acknowledged.
    pub fn outbox_remote_acked_below(&self, region: &RegionCode) -> Result<EffectId, StorageError> {
        let mark: Option<pb::EffectWatermark> =
            self.get(keys::CF_PROJECTIONS, &keys::outbox_acked_remote(self.shard, region), "outbox mark")?;
        Ok(EffectId(mark.map_or(0, |m| m.applied_up_to)))
    }

    /// The region holding a directory key in this shard, if any (the owner region's record).
    pub fn claim(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, StorageError> {
        let r: Option<pb::DirectoryClaimRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::directory(self.shard, key), "directory claim")?;
        r.map(|c| RegionCode::parse(&c.region).map_err(|e| StorageError::corrupt("directory claim", e.to_string())))
            .transpose()
    }

    /// Where the shard's webhooks resume: the first event not yet sent; `None` while no
    /// cursor was ever recorded.
    pub fn hooks_cursor(&self) -> Result<Option<EventOffset>, StorageError> {
        let r: Option<pb::HooksCursorRecord> =
            self.get(keys::CF_PROJECTIONS, &keys::hooks_cursor(self.shard), "webhook cursor")?;
        Ok(r.map(|c| EventOffset {
            log_index: c.log_index,
            command: c.command,
            event: u16::try_from(c.event).unwrap_or(u16::MAX),
        }))
    }

    /// Every effect for `target` below the returned id has been acknowledged (and deleted).
    pub fn outbox_acked_below(&self, target: ShardId) -> Result<EffectId, StorageError> {
        let mark: Option<pb::EffectWatermark> =
            self.get(keys::CF_PROJECTIONS, &keys::outbox_acked(self.shard, target), "outbox mark")?;
        Ok(EffectId(mark.map_or(0, |m| m.applied_up_to)))
    }

    /// Effects waiting in this shard's outbox, by target shard then id, at most `limit`.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Effect>, StorageError> {
        self.effects_between(keys::shard_prefix(self.shard), keys::shard_end(self.shard), limit)
    }

    /// Outbox effects with keys in `[from, upper)`, in key order, at most `limit`.
    fn effects_between(&self, from: Vec<u8>, upper: Vec<u8>, limit: usize) -> Result<Vec<Effect>, StorageError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from.clone());
        ro.set_iterate_upper_bound(upper);
        let iter = self.db.rocks().iterator_cf_opt(
            self.db.cf(keys::CF_OUTBOX)?,
            ro,
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item?;
            out.push(codec::effect_from_pb(decode("effect", &v)?, &self.region)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// SHA-256 over the applied state and every key and value of the shard's state, read at
    /// one point in time. Replicas at the same applied index must agree.
    pub fn state_hash(&self) -> Result<(u64, String), StorageError> {
        let snap = self.db.rocks().snapshot();
        let mut h = Sha256::new();
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        let applied = self.db.rocks().get_cf_opt(
            self.db.cf(keys::CF_RAFT_META)?,
            keys::meta(self.shard, keys::META_APPLIED),
            &ro,
        )?;
        let index = match &applied {
            Some(v) => decode_record::<pb::AppliedState>("applied state", v)?.last_applied.map_or(0, |l| l.index),
            None => 0,
        };
        hash_frame(&mut h, applied.as_deref().unwrap_or_default());
        for cf in STATE_CFS {
            h.update(cf.as_bytes());
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snap);
            ro.set_iterate_upper_bound(keys::shard_end(self.shard));
            let from = keys::shard_prefix(self.shard);
            for item in
                self.db.rocks().iterator_cf_opt(self.db.cf(cf)?, ro, IteratorMode::From(&from, Direction::Forward))
            {
                let (k, v) = item?;
                hash_frame(&mut h, &k);
                hash_frame(&mut h, &v);
            }
        }
        let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((index, hex))
    }
}

fn hash_frame(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

// ---------------------------------------------------------------- apply

/// The record a projection change writes — (column family, key, value) — or `None` for a
/// change outside the projections (outbox, watermarks). Apply and replay both write through
/// it, so they lay projections out alike.
pub(crate) fn projection_record(shard: ShardId, change: &Change) -> Option<(&'static str, Vec<u8>, Vec<u8>)> {
    Some(match change {
        Change::PutUser(u) => (keys::CF_PROJECTIONS, keys::user(shard, &u.id), codec::user_to_pb(u).encode_to_vec()),
        Change::PutConversation(c) => {
            (keys::CF_PROJECTIONS, keys::conversation(shard, &c.id), codec::conversation_to_pb(c).encode_to_vec())
        }
        Change::PutMessage { conversation, message } => (
            keys::CF_EVENTS,
            keys::message(shard, conversation, message.seq),
            codec::message_to_pb(message).encode_to_vec(),
        ),
        Change::PutConversationRef { user, entry } => (
            keys::CF_PROJECTIONS,
            keys::conversation_ref(shard, user, &entry.conversation),
            codec::conversation_ref_to_pb(entry).encode_to_vec(),
        ),
        Change::PutDedup { conversation, sender, request_id, entry } => (
            keys::CF_DEDUP,
            keys::dedup(shard, conversation, sender, request_id),
            codec::dedup_to_pb(entry).encode_to_vec(),
        ),
        Change::PutGroup(g) => (keys::CF_PROJECTIONS, keys::group(shard, &g.id), codec::group_to_pb(g).encode_to_vec()),
        Change::PutGroupMember { group, member } => (
            keys::CF_PROJECTIONS,
            keys::group_member(shard, group, &member.user),
            codec::group_member_to_pb(member).encode_to_vec(),
        ),
        Change::PutGroupRef { user, entry } => (
            keys::CF_PROJECTIONS,
            keys::group_ref(shard, user, &entry.group),
            codec::group_ref_to_pb(entry).encode_to_vec(),
        ),
        Change::PutProfile { user, profile } => (
            keys::CF_PROJECTIONS,
            keys::profile(shard, user),
            pb::ProfileRecord { version: codec::RECORD_VERSION, fields: profile.clone() }.encode_to_vec(),
        ),
        Change::PutBlockCount { user, count } => (
            keys::CF_PROJECTIONS,
            keys::block_count(shard, user),
            pb::CountRecord { version: codec::RECORD_VERSION, count: *count }.encode_to_vec(),
        ),
        Change::PutBlocked { user, target, since } => (
            keys::CF_PROJECTIONS,
            keys::blocked(shard, user, target),
            pb::BlockedRecord { version: codec::RECORD_VERSION, since_ms: since.0 }.encode_to_vec(),
        ),
        Change::PutPairBlock { conversation, blocker } => (
            keys::CF_PROJECTIONS,
            keys::pair_block(shard, conversation, blocker),
            pb::BlockedRecord { version: codec::RECORD_VERSION, since_ms: 0 }.encode_to_vec(),
        ),
        Change::PutFriend { user, entry } => {
            (keys::CF_PROJECTIONS, keys::friend(shard, user, &entry.user), codec::friend_to_pb(entry).encode_to_vec())
        }
        Change::PutFriendRequest { user, request } => (
            keys::CF_PROJECTIONS,
            keys::friend_request(shard, user, &request.from),
            pb::FriendRequestRecord {
                version: codec::RECORD_VERSION,
                message: request.message.clone(),
                remark: request.remark.clone(),
                time_ms: request.at.0,
            }
            .encode_to_vec(),
        ),
        Change::PutFriendCounts { user, counts } => (
            keys::CF_PROJECTIONS,
            keys::friend_counts(shard, user),
            pb::FriendCountsRecord { version: codec::RECORD_VERSION, friends: counts.friends, pending: counts.pending }
                .encode_to_vec(),
        ),
        Change::PutPairFriend { conversation, lister } => (
            keys::CF_PROJECTIONS,
            keys::pair_friend(shard, conversation, lister),
            pb::BlockedRecord { version: codec::RECORD_VERSION, since_ms: 0 }.encode_to_vec(),
        ),
        Change::PutTopic { group, topic } => (
            keys::CF_PROJECTIONS,
            keys::topic(shard, group, &topic.id),
            pb::TopicRecord {
                version: codec::RECORD_VERSION,
                name: topic.name.clone(),
                created_ms: topic.created.0,
                by: topic.by.to_string(),
            }
            .encode_to_vec(),
        ),
        Change::PutTopicCursor { stream, user, read_seq } => (
            keys::CF_PROJECTIONS,
            keys::topic_cursor(shard, stream, user),
            pb::TopicCursorRecord { version: codec::RECORD_VERSION, read_seq: read_seq.0 }.encode_to_vec(),
        ),
        Change::PutConversationPrefs { user, conversation, prefs } => (
            keys::CF_PROJECTIONS,
            keys::conversation_prefs(shard, user, conversation),
            codec::prefs_to_pb(prefs, None).encode_to_vec(),
        ),
        Change::PutHistoryView { conversation, user, view } => (
            keys::CF_PROJECTIONS,
            keys::history_view(shard, conversation, user),
            codec::history_view_to_pb(view, None).encode_to_vec(),
        ),
        Change::PutGroupApplication { group, application } => (
            keys::CF_PROJECTIONS,
            keys::group_application(shard, group, &application.user),
            pb::GroupApplicationRecord {
                version: codec::RECORD_VERSION,
                message: application.message.clone(),
                time_ms: application.at.0,
            }
            .encode_to_vec(),
        ),
        Change::PutGroupBan { group, user, until } => (
            keys::CF_PROJECTIONS,
            keys::group_ban(shard, group, user),
            pb::GroupBanRecord { version: codec::RECORD_VERSION, until_ms: until.0 }.encode_to_vec(),
        ),
        Change::DeleteGroupApplication { .. }
        | Change::DeleteGroupBan { .. }
        | Change::DeleteGroupMember { .. }
        | Change::DeleteGroupRef { .. }
        | Change::DeleteProfile { .. }
        | Change::DeleteConversationRef { .. }
        | Change::DeleteConversationPrefs { .. }
        | Change::DeleteBlocked { .. }
        | Change::DeletePairBlock { .. }
        | Change::DeleteFriend { .. }
        | Change::DeleteFriendRequest { .. }
        | Change::DeletePairFriend { .. }
        | Change::DeleteMessage { .. } => return None,
        Change::PutArchivedSegment(s) => (
            keys::CF_PROJECTIONS,
            keys::archived_segment(shard, s.first),
            codec::archived_segment_to_pb(s).encode_to_vec(),
        ),
        Change::PutColdRange(r) => (
            keys::CF_PROJECTIONS,
            keys::cold_range(shard, &r.conversation, r.to),
            codec::cold_range_to_pb(r).encode_to_vec(),
        ),
        Change::PutRecallOverlay { conversation, seq, recall } => (
            keys::CF_PROJECTIONS,
            keys::recall_overlay(shard, conversation, *seq),
            pb::RecallOverlayRecord { version: codec::RECORD_VERSION, by: recall.by.to_string(), at_ms: recall.at.0 }
                .encode_to_vec(),
        ),
        Change::PutClaim { key, region } => (
            keys::CF_PROJECTIONS,
            keys::directory(shard, key),
            pb::DirectoryClaimRecord { version: codec::RECORD_VERSION, region: region.to_string() }.encode_to_vec(),
        ),
        Change::Emit { .. }
        | Change::SetWatermark { .. }
        | Change::AckOutbox { .. }
        | Change::SetLogicVersion { .. }
        | Change::SetEpoch { .. }
        | Change::SetHooksCursor { .. } => return None,
    })
}

/// The record a projection change deletes — (column family, key) — if it is a delete.
pub(crate) fn projection_delete(shard: ShardId, change: &Change) -> Option<(&'static str, Vec<u8>)> {
    match change {
        Change::DeleteGroupMember { group, user } => {
            Some((keys::CF_PROJECTIONS, keys::group_member(shard, group, user)))
        }
        Change::DeleteGroupRef { user, group } => Some((keys::CF_PROJECTIONS, keys::group_ref(shard, user, group))),
        Change::DeleteProfile { user } => Some((keys::CF_PROJECTIONS, keys::profile(shard, user))),
        Change::DeleteConversationRef { user, conversation } => {
            Some((keys::CF_PROJECTIONS, keys::conversation_ref(shard, user, conversation)))
        }
        Change::DeleteConversationPrefs { user, conversation } => {
            Some((keys::CF_PROJECTIONS, keys::conversation_prefs(shard, user, conversation)))
        }
        Change::DeleteBlocked { user, target } => Some((keys::CF_PROJECTIONS, keys::blocked(shard, user, target))),
        Change::DeletePairBlock { conversation, blocker } => {
            Some((keys::CF_PROJECTIONS, keys::pair_block(shard, conversation, blocker)))
        }
        Change::DeleteGroupApplication { group, user } => {
            Some((keys::CF_PROJECTIONS, keys::group_application(shard, group, user)))
        }
        Change::DeleteGroupBan { group, user } => Some((keys::CF_PROJECTIONS, keys::group_ban(shard, group, user))),
        Change::DeleteFriend { user, friend } => Some((keys::CF_PROJECTIONS, keys::friend(shard, user, friend))),
        Change::DeleteFriendRequest { user, from } => {
            Some((keys::CF_PROJECTIONS, keys::friend_request(shard, user, from)))
        }
        Change::DeletePairFriend { conversation, lister } => {
            Some((keys::CF_PROJECTIONS, keys::pair_friend(shard, conversation, lister)))
        }
        Change::DeleteMessage { conversation, seq } => {
            Some((keys::CF_EVENTS, keys::message(shard, conversation, *seq)))
        }
        _ => None,
    }
}

/// Applies command batches into one WriteBatch: events, projections, outbox, dedup records
/// and the applied state, committed together or not at all.
pub struct ApplyTxn<'a> {
    store: &'a ShardStore,
    batch: WriteBatch,
    /// This transaction's writes so far (`None`: deleted), read before the database.
    overlay: Records,
    /// What this transaction read from the database, by (column family, key), so that a
    /// record read twice (a send's conversation head: once to check the send, once by the
    /// projector) costs one lookup. The database does not change under a transaction (its
    /// writes are in `overlay`, checked first), so an entry here never goes stale. One entry
    /// per lookup made.
    database_reads: RefCell<Records>,
    applied: pb::AppliedState,
    /// The region of the batch being applied (effects emitted name it as their source).
    batch_region: Option<RegionCode>,
    /// Whether the entry being applied indexes its request-id records by time (logic
    /// version [`meridian_domain::apply::REQUEST_ID_EXPIRY_FROM`]).
    index_request_ids: bool,
    /// This transaction's writes to the request-id time index (`false`: deleted), so that
    /// expiry sees the same index however entries are grouped into transactions.
    request_id_index: std::collections::BTreeMap<Vec<u8>, bool>,
}

/// Records by (column family, key); `None`: absent (deleted, or not in the database).
type Records = HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;

/// Most request-id records one entry expires: an entry's work stays bounded, and a backlog
/// (a window shortened, a shard idle for long) drains over the entries that follow.
pub const REQUEST_IDS_EXPIRED_PER_ENTRY: usize = 256;

impl std::fmt::Debug for ApplyTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyTxn").field("shard", &self.store.shard).finish()
    }
}

impl ApplyTxn<'_> {
    /// The applied state as this transaction will write it.
    pub fn applied_mut(&mut self) -> &mut pb::AppliedState {
        &mut self.applied
    }

    /// Applies one Raft entry's command batch at `log_index`, returning each command's result.
    pub fn apply_batch(
        &mut self,
        log_index: u64,
        batch: &pb::CommandBatch,
    ) -> Result<Vec<CommandResult>, StorageError> {
        // An entry written under rules this replica does not apply is never applied by
        // guesswork: the shard halts here, loudly, until the node runs a binary that knows them.
        let logic_version = batch.logic_version.max(self.applied.logic_version).max(1);
        if batch.version > codec::RECORD_VERSION || logic_version > self.store.max_logic_version {
            return Err(StorageError::Halted(format!(
                "shard {}: entry {log_index} was written with entry version {} under logic version {}; this node \
                 applies entry versions up to {} and logic versions up to {}: upgrade it (or raise its \
                 max-logic-version)",
                self.store.shard,
                batch.version,
                logic_version,
                codec::RECORD_VERSION,
                self.store.max_logic_version
            )));
        }
        // The shard's region is replicated state: recorded with the first command it accepts
        // (from the proposing leader's stamp), the same on every replica whatever its config
        // says. Until then each entry's own stamp names it, and nothing minted names it yet.
        let adopting = self.applied.region.is_empty();
        let region_name = if !adopting {
            self.applied.region.clone()
        } else if batch.region.is_empty() {
            self.store.region.to_string()
        } else {
            batch.region.clone()
        };
        let region =
            RegionCode::parse(&region_name).map_err(|r| StorageError::corrupt("entry region", r.to_string()))?;
        self.batch_region = Some(region.clone());
        // Server time never goes backwards within a shard, whatever the leaders' clocks did.
        let time = batch.time_ms.max(self.applied.last_time_ms);
        self.applied.last_time_ms = time;
        // One context for the entry; only the position moves. A raise earlier in this entry
        // applies from the next entry on.
        let mut ctx = ApplyContext {
            region,
            epoch: self.applied.epoch.max(1),
            logic_version,
            shard: self.store.shard,
            shards: self.store.shards,
            log_index,
            position: 0,
            time: TimeMs(time),
        };
        self.index_request_ids = logic_version >= meridian_domain::apply::REQUEST_ID_EXPIRY_FROM;
        let mut results = Vec::with_capacity(batch.commands.len());
        for (position, command) in batch.commands.iter().enumerate() {
            // A command that does not decode into the domain (written by a faulty or older
            // binary: ingress checks every command before it is proposed) is rejected on every
            // replica alike. It is never a reason to stop: only storage failures are.
            let command = match codec::command_from_pb(command.clone(), &self.store.region) {
                Ok(command) => command,
                Err(e) => {
                    tracing::warn!(shard = self.store.shard.0, log_index, position, error = %e, "rejected a malformed command");
                    results.push(Err(Rejection::new(Reason::MalformedCommand, e.to_string())));
                    continue;
                }
            };
            ctx.position = position;
            let outcome = match &command {
                Command::ArchiveSegment { segment, events_digest } => self.archive_segment(segment, events_digest)?,
                _ => apply(&StateView(&*self), &ctx, &command).map_err(|e| StorageError::corrupt("state", e.0))?,
            };
            match outcome {
                Ok(applied) => {
                    let command = u32::try_from(position).unwrap_or(u32::MAX);
                    for (n, event) in applied.events.iter().enumerate() {
                        let offset = EventOffset { log_index, command, event: u16::try_from(n).unwrap_or(u16::MAX) };
                        let key = keys::event(self.store.shard, offset);
                        let record = codec::event_to_pb(event, ctx.epoch);
                        self.put(keys::CF_EVENT_LOG, key, record.encode_to_vec())?;
                    }
                    for change in applied.changes {
                        self.write(change)?;
                    }
                    results.push(Ok(applied.reply));
                }
                Err(rejection) => results.push(Err(rejection)),
            }
        }
        if adopting && results.iter().any(Result::is_ok) {
            self.applied.region = region_name;
        }
        if self.index_request_ids && batch.request_ids_expire_before_ms > 0 {
            self.expire_request_ids(batch.request_ids_expire_before_ms)?;
        }
        Ok(results)
    }

    /// Deletes the oldest request-id records written before `before_ms`, at most
    /// [`REQUEST_IDS_EXPIRED_PER_ENTRY`], through the time index, and moves the shard's
    /// expiry mark to the last one. The index is read from the mark on (the keys before it are
    /// deleted: starting there skips their tombstones), with this transaction's own index
    /// writes laid over the database's, so every replica expires the same records whatever
    /// entries it applies together. Records written later always sort after the mark: a
    /// shard's server time never goes backwards and the cutoff is behind it.
    fn expire_request_ids(&mut self, before_ms: i64) -> Result<(), StorageError> {
        let shard = self.store.shard;
        let from = if self.applied.request_ids_expired_through.is_empty() {
            keys::dedup_by_time_from(shard, 0)
        } else {
            let mut mark = keys::shard_prefix(shard);
            mark.extend_from_slice(&self.applied.request_ids_expired_through);
            mark.push(0); // the first key after the mark
            mark
        };
        let upper = keys::dedup_by_time_from(shard, before_ms);
        if from >= upper {
            return Ok(());
        }
        let pending: Vec<(Vec<u8>, bool)> =
            self.request_id_index.range(from.clone()..upper.clone()).map(|(k, p)| (k.clone(), *p)).collect();
        let deleted = pending.iter().filter(|(_, present)| !present).count();
        let mut found = std::collections::BTreeMap::new();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(upper);
        let cf = self.store.db.cf(keys::CF_DEDUP)?;
        let iter = self.store.db.rocks().iterator_cf_opt(cf, ro, IteratorMode::From(&from, Direction::Forward));
        for item in iter.take(REQUEST_IDS_EXPIRED_PER_ENTRY + deleted) {
            let (k, _) = item?;
            found.insert(k.to_vec(), true);
        }
        found.extend(pending);
        let expired: Vec<Vec<u8>> = found
            .into_iter()
            .filter_map(|(k, present)| present.then_some(k))
            .take(REQUEST_IDS_EXPIRED_PER_ENTRY)
            .collect();
        let Some(last) = expired.last().cloned() else { return Ok(()) };
        for index_key in expired {
            if let Some(record) = keys::dedup_of_time_entry(&index_key) {
                self.delete(keys::CF_DEDUP, record)?;
            }
            self.delete(keys::CF_DEDUP, index_key)?;
        }
        self.applied.request_ids_expired_through = last[4..].to_vec();
        Ok(())
    }

    /// Applies `ArchiveSegment`: the range must be the shard's oldest hot events, exactly, and
    /// hash to `events_digest` here too; then the segment enters the manifest, the range's
    /// event-log keys and the hot copies of its messages are dropped (point deletes: range
    /// tombstones slow every later iterator), all in this transaction. Reads see this
    /// transaction's earlier writes (a follower catching up applies many entries at once).
    fn archive_segment(
        &mut self,
        segment: &records::ArchivedSegment,
        events_digest: &[u8],
    ) -> Result<meridian_domain::apply::Outcome, StorageError> {
        let shard = self.store.shard;
        let mismatch = |what: String| Ok(Err(Rejection::new(Reason::ArchiveRangeMismatch, what)));
        let boundary = match self.store.last_archived_segment()? {
            Some(s) => crate::archive::key_after(shard, s.last),
            None => keys::shard_prefix(shard),
        };
        let before = self.merged_range(keys::CF_EVENT_LOG, boundary, keys::event(shard, segment.first), 1)?;
        if let Some((k, _)) = before.first() {
            let at = keys::event_offset_of(k).map_or_else(String::new, |o| o.to_string());
            return mismatch(format!(
                "the shard's oldest hot event is {at}, before the segment's first {}",
                segment.first
            ));
        }
        let limit = usize::try_from(segment.events).unwrap_or(usize::MAX).saturating_add(1);
        let range = self.merged_range(
            keys::CF_EVENT_LOG,
            keys::event(shard, segment.first),
            crate::archive::key_after(shard, segment.last),
            limit,
        )?;
        let first = range.first().and_then(|(k, _)| keys::event_offset_of(k));
        let last = range.last().and_then(|(k, _)| keys::event_offset_of(k));
        if first != Some(segment.first) || last != Some(segment.last) || range.len() as u64 != segment.events {
            return mismatch(format!(
                "the segment names {}..={} ({} events); this replica holds {} events there",
                segment.first,
                segment.last,
                segment.events,
                range.len()
            ));
        }
        if crate::archive::events_digest(range.iter().map(|(_, v)| v.as_slice())) != events_digest {
            return mismatch(format!("the events of {}..={} differ from the segment's", segment.first, segment.last));
        }
        let mut events = Vec::with_capacity(range.len());
        for (_, v) in &range {
            events.push(codec::event_from_pb(decode_record("event", v)?)?);
        }
        let ranges = crate::archive::seq_ranges(&events, segment.first);
        let event = Event::SegmentArchived { segment: segment.clone(), ranges };
        let changes = meridian_domain::projector::project(&StateView(&*self), &event)
            .map_err(|e| StorageError::corrupt("state", e.0))?;
        for (k, _) in range {
            self.delete(keys::CF_EVENT_LOG, k)?;
        }
        Ok(Ok(meridian_domain::apply::Applied { events: vec![event], changes, reply: Reply::Done }))
    }

    /// Up to `limit` records of `cf` in `[from, upper)`, this transaction's writes laid over
    /// the database's.
    fn merged_range(
        &self,
        cf: &'static str,
        from: Vec<u8>,
        upper: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let mut found: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = std::collections::BTreeMap::new();
        let pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .overlay
            .iter()
            .filter(|((c, k), _)| *c == cf && k.as_slice() >= from.as_slice() && k.as_slice() < upper.as_slice())
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        let deleted = pending.iter().filter(|(_, v)| v.is_none()).count();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(upper.clone());
        let iter = self.store.db.rocks().iterator_cf_opt(
            self.store.db.cf(cf)?,
            ro,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter.take(limit.saturating_add(deleted)) {
            let (k, v) = item?;
            found.insert(k.to_vec(), Some(v.to_vec()));
        }
        found.extend(pending);
        Ok(found.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect())
    }

    /// Saves the shard's committed log id with this transaction's writes (Raft's
    /// `save_committed`, without a database write of its own). Entries up to it were written
    /// to the log before this batch, so the WAL never holds the id without them.
    pub fn save_committed(&mut self, committed: &pb::LogId) -> Result<(), StorageError> {
        let meta = self.store.db.cf(keys::CF_RAFT_META)?;
        self.batch.put_cf(meta, keys::meta(self.store.shard, keys::META_COMMITTED), committed.encode_to_vec());
        Ok(())
    }

    /// Writes the batch (unsynced; see the crate docs for why that is safe).
    pub fn commit(mut self) -> Result<(), StorageError> {
        let meta = self.store.db.cf(keys::CF_RAFT_META)?;
        self.batch.put_cf(meta, keys::meta(self.store.shard, keys::META_APPLIED), self.applied.encode_to_vec());
        self.store.db.write_unsynced(self.batch)
    }

    fn put(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) -> Result<(), StorageError> {
        self.batch.put_cf(self.store.db.cf(cf)?, &key, &value);
        if cf == keys::CF_DEDUP && keys::is_dedup_by_time(&key) {
            self.request_id_index.insert(key.clone(), true);
        }
        self.overlay.insert((cf, key), Some(value));
        Ok(())
    }

    fn delete(&mut self, cf: &'static str, key: Vec<u8>) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.db.cf(cf)?, &key);
        if cf == keys::CF_DEDUP && keys::is_dedup_by_time(&key) {
            self.request_id_index.insert(key.clone(), false);
        }
        self.overlay.insert((cf, key), None);
        Ok(())
    }

    fn write(&mut self, change: Change) -> Result<(), StorageError> {
        let shard = self.store.shard;
        match change {
            Change::Emit { lane, kind } => {
                self.applied.next_effect_id = self.applied.next_effect_id.max(1);
                let id = EffectId(self.applied.next_effect_id);
                self.applied.next_effect_id += 1;
                let region = self.batch_region.clone().unwrap_or_else(|| self.store.region.clone());
                let source = EffectSource { region, epoch: self.applied.epoch.max(1), shard };
                let effect = Effect { id, source, kind };
                let key = match &lane {
                    Lane::Shard(target) => keys::outbox(shard, *target, id),
                    Lane::Region(region) => keys::outbox_remote(shard, region, id),
                };
                self.put(keys::CF_OUTBOX, key, codec::effect_to_pb(&effect).encode_to_vec())
            }
            Change::SetHooksCursor { up_to } => self.put(
                keys::CF_PROJECTIONS,
                keys::hooks_cursor(shard),
                pb::HooksCursorRecord {
                    version: codec::RECORD_VERSION,
                    log_index: up_to.log_index,
                    command: up_to.command,
                    event: u32::from(up_to.event),
                }
                .encode_to_vec(),
            ),
            Change::SetEpoch { epoch } => {
                self.applied.epoch = epoch.max(self.applied.epoch);
                // Effect ids of a new epoch start above every id the shard could have minted
                // before (ADR 0005): a promoted standby's shard restarts from its cut, and the
                // targets' watermarks may be past it.
                let floor = u64::from(self.applied.epoch) << 40;
                self.applied.next_effect_id = self.applied.next_effect_id.max(floor);
                Ok(())
            }
            Change::SetLogicVersion { version } => {
                if version > self.store.max_logic_version {
                    return Err(StorageError::Halted(format!(
                        "shard {shard}: the cluster raised the logic version to {version}; this node applies up \
                         to {}: upgrade it (or raise its max-logic-version)",
                        self.store.max_logic_version
                    )));
                }
                self.applied.logic_version = version;
                Ok(())
            }
            Change::SetWatermark { source, from_region, up_to } => self.put(
                keys::CF_PROJECTIONS,
                match &from_region {
                    None => keys::watermark(shard, source),
                    Some(region) => keys::watermark_remote(shard, region, source),
                },
                pb::EffectWatermark { version: codec::RECORD_VERSION, applied_up_to: up_to.0 }.encode_to_vec(),
            ),
            Change::AckOutbox { target, up_to } => {
                // Point deletes of exactly the acknowledged effects, found from the previous
                // acknowledgement's mark on. Not a range delete: every range tombstone stays
                // in the memtable until a flush, and every new iterator on the column family
                // re-fragments all of them, which made each outbox read slower than the last.
                let mark_key = match &target {
                    Lane::Shard(target) => keys::outbox_acked(shard, *target),
                    Lane::Region(region) => keys::outbox_acked_remote(shard, region),
                };
                let lane_key = |id: EffectId| match &target {
                    Lane::Shard(target) => keys::outbox(shard, *target, id),
                    Lane::Region(region) => keys::outbox_remote(shard, region, id),
                };
                let acked_below = self
                    .read::<pb::EffectWatermark>(keys::CF_PROJECTIONS, mark_key.clone(), "outbox mark")
                    .map_err(|e| StorageError::corrupt("outbox mark", e.0))?
                    .map_or(0, |m| m.applied_up_to);
                let end = up_to.0.saturating_add(1);
                if end <= acked_below {
                    return Ok(());
                }
                let cf = self.store.db.cf(keys::CF_OUTBOX)?;
                let from = lane_key(EffectId(acked_below));
                let to = lane_key(EffectId(end));
                // Effects emitted earlier in this same transaction are not in the database
                // yet (a follower catching up applies many entries in one batch): delete
                // those too, or this replica would keep keys the leader deleted.
                let pending: Vec<Vec<u8>> = self
                    .overlay
                    .iter()
                    .filter(|((c, k), v)| {
                        v.is_some()
                            && *c == keys::CF_OUTBOX
                            && k.as_slice() >= from.as_slice()
                            && k.as_slice() < to.as_slice()
                    })
                    .map(|((_, k), _)| k.clone())
                    .collect();
                for k in pending {
                    self.batch.delete_cf(cf, &k);
                    self.overlay.remove(&(keys::CF_OUTBOX, k));
                }
                let mut ro = ReadOptions::default();
                ro.set_iterate_upper_bound(to);
                let iter = self.store.db.rocks().iterator_cf_opt(cf, ro, IteratorMode::From(&from, Direction::Forward));
                for item in iter {
                    let (k, _) = item?;
                    self.batch.delete_cf(cf, &k);
                }
                let mark = pb::EffectWatermark { version: codec::RECORD_VERSION, applied_up_to: end };
                self.put(keys::CF_PROJECTIONS, mark_key, mark.encode_to_vec())
            }
            Change::PutDedup { conversation, sender, request_id, entry } if self.index_request_ids => {
                let key = keys::dedup(shard, &conversation, &sender, &request_id);
                self.put(keys::CF_DEDUP, keys::dedup_by_time(entry.time.0, &key), Vec::new())?;
                self.put(keys::CF_DEDUP, key, codec::dedup_to_pb(&entry).encode_to_vec())
            }
            projection => match (projection_record(shard, &projection), projection_delete(shard, &projection)) {
                (Some((cf, key, value)), _) => self.put(cf, key, value),
                (None, Some((cf, key))) => self.delete(cf, key),
                (None, None) => Ok(()),
            },
        }
    }

    fn read<M: prost::Message + Default + Versioned>(
        &self,
        cf: &'static str,
        key: Vec<u8>,
        what: &'static str,
    ) -> Result<Option<M>, StateError> {
        let key = (cf, key);
        let found = match self.overlay.get(&key) {
            Some(Some(v)) => Some(decode_record(what, v)),
            Some(None) => None,
            None => {
                let mut reads = self.database_reads.borrow_mut();
                let value = match reads.entry(key) {
                    Entry::Occupied(read) => read.into_mut(),
                    Entry::Vacant(unread) => {
                        let value = self.store.get_raw(cf, &unread.key().1).map_err(|e| StateError(e.to_string()))?;
                        unread.insert(value)
                    }
                };
                value.as_deref().map(|v| decode_record(what, v))
            }
        };
        found.transpose().map_err(|e| StateError(e.to_string()))
    }

    /// Lookups in the database so far (a record read again is not looked up again).
    pub fn database_lookups(&self) -> u64 {
        self.database_reads.borrow().len() as u64
    }
}

impl RecordReader for ApplyTxn<'_> {
    fn shard_id(&self) -> ShardId {
        self.store.shard
    }

    fn read_record<M: prost::Message + Default + Versioned>(
        &self,
        cf: &'static str,
        key: Vec<u8>,
        what: &'static str,
    ) -> Result<Option<M>, StateError> {
        self.read(cf, key, what)
    }

    /// The database's records under `prefix` with this transaction's writes laid over them
    /// (an earlier command of the entries being applied may have added or removed some).
    fn scan_records(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        let fail = |e: StorageError| StateError(e.to_string());
        let mut found = std::collections::BTreeMap::new();
        let handle = self.store.db.cf(cf).map_err(fail)?;
        for item in self.store.db.rocks().iterator_cf(handle, IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item.map_err(|e| StateError(e.to_string()))?;
            if !k.starts_with(prefix) {
                break;
            }
            found.insert(k.to_vec(), v.to_vec());
        }
        for ((c, k), v) in &self.overlay {
            if *c != cf || !k.starts_with(prefix) {
                continue;
            }
            match v {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        Ok(found.into_iter().collect())
    }
}

/// A record's key and value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// A source of a shard's records by (column family, key): the live state plus a transaction's
/// writes at apply, or replayed projections at verification.
pub(crate) trait RecordReader {
    fn shard_id(&self) -> ShardId;

    fn read_record<M: prost::Message + Default + Versioned>(
        &self,
        cf: &'static str,
        key: Vec<u8>,
        what: &'static str,
    ) -> Result<Option<M>, StateError>;

    /// Every record whose key starts with `prefix`, in key order, as (key, value).
    fn scan_records(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError>;
}

/// The domain's view of a shard's state over any [`RecordReader`], by the one key layout.
pub(crate) struct StateView<'a, R>(pub &'a R);

impl<R: RecordReader> ShardState for StateView<'_, R> {
    fn user(&self, id: &UserId) -> Result<Option<User>, StateError> {
        let r = self.0.read_record(keys::CF_PROJECTIONS, keys::user(self.0.shard_id(), id), "user")?;
        r.map(codec::user_from_pb).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StateError> {
        let r = self.0.read_record(keys::CF_PROJECTIONS, keys::conversation(self.0.shard_id(), id), "conversation")?;
        r.map(codec::conversation_from_pb).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn message(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<Message>, StateError> {
        let r = self.0.read_record(keys::CF_EVENTS, keys::message(self.0.shard_id(), conversation, seq), "message")?;
        r.map(codec::message_from_pb).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn cold_range(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<records::ColdRange>, StateError> {
        let fail = |e: StorageError| StateError(e.to_string());
        // A range is keyed by its last seq: one that ends at `seq` (what sealing asks about
        // the message an earlier segment kept hot) is a point read.
        let exact = keys::cold_range(self.0.shard_id(), conversation, seq);
        if let Some(record) = self.0.read_record::<pb::ColdRangeRecord>(keys::CF_PROJECTIONS, exact, "cold range")? {
            return codec::cold_range_from_pb(conversation.clone(), record).map(Some).map_err(fail);
        }
        let prefix = keys::cold_ranges(self.0.shard_id(), conversation);
        for (key, value) in self.0.scan_records(keys::CF_PROJECTIONS, &prefix)? {
            if key.len() != prefix.len() + 8 {
                continue;
            }
            let record: pb::ColdRangeRecord = decode_record("cold range", &value).map_err(fail)?;
            if record.seq_from <= seq.0 && seq.0 <= record.seq_to {
                return codec::cold_range_from_pb(conversation.clone(), record).map(Some).map_err(fail);
            }
        }
        Ok(None)
    }

    fn recall_overlay(&self, conversation: &ConversationId, seq: Seq) -> Result<Option<records::Recall>, StateError> {
        let key = keys::recall_overlay(self.0.shard_id(), conversation, seq);
        match self.0.read_record::<pb::RecallOverlayRecord>(keys::CF_PROJECTIONS, key, "recall overlay")? {
            Some(r) => Ok(Some(records::Recall {
                by: UserId::parse(&r.by).map_err(|e| StateError(format!("recall overlay: {e}")))?,
                at: TimeMs(r.at_ms),
            })),
            None => Ok(None),
        }
    }

    fn dedup(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        request_id: &RequestId,
    ) -> Result<Option<DedupEntry>, StateError> {
        let key = keys::dedup(self.0.shard_id(), conversation, sender, request_id);
        Ok(self.0.read_record(keys::CF_DEDUP, key, "dedup")?.map(codec::dedup_from_pb))
    }

    fn has_conversation_ref(&self, user: &UserId, conversation: &ConversationId) -> Result<bool, StateError> {
        let key = keys::conversation_ref(self.0.shard_id(), user, conversation);
        Ok(self.0.read_record::<pb::ConversationRef>(keys::CF_PROJECTIONS, key, "conversation ref")?.is_some())
    }

    fn watermark(&self, source: ShardId, from_region: Option<&RegionCode>) -> Result<EffectId, StateError> {
        let key = match from_region {
            None => keys::watermark(self.0.shard_id(), source),
            Some(region) => keys::watermark_remote(self.0.shard_id(), region, source),
        };
        let r = self.0.read_record::<pb::EffectWatermark>(keys::CF_PROJECTIONS, key, "watermark")?;
        Ok(EffectId(r.map_or(0, |w| w.applied_up_to)))
    }

    fn group(&self, id: &GroupId) -> Result<Option<Group>, StateError> {
        let r = self.0.read_record(keys::CF_PROJECTIONS, keys::group(self.0.shard_id(), id), "group")?;
        r.map(codec::group_from_pb).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn group_member(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupMember>, StateError> {
        let key = keys::group_member(self.0.shard_id(), group, user);
        let r = self.0.read_record(keys::CF_PROJECTIONS, key, "group member")?;
        r.map(codec::group_member_from_pb).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn profile(&self, user: &UserId) -> Result<meridian_domain::profile::Profile, StateError> {
        let key = keys::profile(self.0.shard_id(), user);
        Ok(self
            .0
            .read_record::<pb::ProfileRecord>(keys::CF_PROJECTIONS, key, "profile")?
            .map(|p| p.fields)
            .unwrap_or_default())
    }

    fn is_blocked(&self, user: &UserId, target: &UserId) -> Result<bool, StateError> {
        let key = keys::blocked(self.0.shard_id(), user, target);
        Ok(self.0.read_record::<pb::BlockedRecord>(keys::CF_PROJECTIONS, key, "blocklist entry")?.is_some())
    }

    fn blocked_count(&self, user: &UserId) -> Result<u64, StateError> {
        let key = keys::block_count(self.0.shard_id(), user);
        Ok(self.0.read_record::<pb::CountRecord>(keys::CF_PROJECTIONS, key, "blocklist count")?.map_or(0, |c| c.count))
    }

    fn pair_blocked(&self, conversation: &ConversationId, blocker: &UserId) -> Result<bool, StateError> {
        let key = keys::pair_block(self.0.shard_id(), conversation, blocker);
        Ok(self.0.read_record::<pb::BlockedRecord>(keys::CF_PROJECTIONS, key, "conversation block")?.is_some())
    }

    fn topic(&self, group: &GroupId, topic: &TopicId) -> Result<Option<Topic>, StateError> {
        let key = keys::topic(self.0.shard_id(), group, topic);
        let r = self.0.read_record::<pb::TopicRecord>(keys::CF_PROJECTIONS, key, "topic")?;
        r.map(|t| {
            let by = UserId::parse(&t.by).map_err(|e| StateError(format!("topic: {e}")))?;
            Ok(Topic { id: topic.clone(), name: t.name, created: TimeMs(t.created_ms), by })
        })
        .transpose()
    }

    fn topic_cursor(&self, stream: &ConversationId, user: &UserId) -> Result<Option<Seq>, StateError> {
        let key = keys::topic_cursor(self.0.shard_id(), stream, user);
        let r = self.0.read_record::<pb::TopicCursorRecord>(keys::CF_PROJECTIONS, key, "topic cursor")?;
        Ok(r.map(|c| Seq(c.read_seq)))
    }

    fn conversation_prefs(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationPrefs>, StateError> {
        let key = keys::conversation_prefs(self.0.shard_id(), user, conversation);
        let r = self.0.read_record::<pb::ConversationPrefsRecord>(keys::CF_PROJECTIONS, key, "conversation prefs")?;
        Ok(r.map(codec::prefs_from_pb))
    }

    fn history_view(&self, conversation: &ConversationId, user: &UserId) -> Result<Option<HistoryView>, StateError> {
        let key = keys::history_view(self.0.shard_id(), conversation, user);
        let r = self.0.read_record::<pb::HistoryViewRecord>(keys::CF_PROJECTIONS, key, "history view")?;
        Ok(r.map(codec::history_view_from_pb))
    }

    fn group_application(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupApplication>, StateError> {
        let key = keys::group_application(self.0.shard_id(), group, user);
        let r = self.0.read_record::<pb::GroupApplicationRecord>(keys::CF_PROJECTIONS, key, "group application")?;
        Ok(r.map(|a| GroupApplication { user: user.clone(), message: a.message, at: TimeMs(a.time_ms) }))
    }

    fn group_ban(&self, group: &GroupId, user: &UserId) -> Result<Option<TimeMs>, StateError> {
        let key = keys::group_ban(self.0.shard_id(), group, user);
        let r = self.0.read_record::<pb::GroupBanRecord>(keys::CF_PROJECTIONS, key, "group ban")?;
        Ok(r.map(|b| TimeMs(b.until_ms)))
    }

    fn friend(&self, user: &UserId, friend: &UserId) -> Result<Option<Friend>, StateError> {
        let key = keys::friend(self.0.shard_id(), user, friend);
        let r = self.0.read_record::<pb::FriendRecord>(keys::CF_PROJECTIONS, key, "friend")?;
        r.map(|f| codec::friend_from_pb(friend.clone(), f)).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn friend_request(&self, user: &UserId, from: &UserId) -> Result<Option<FriendRequest>, StateError> {
        let key = keys::friend_request(self.0.shard_id(), user, from);
        let r = self.0.read_record::<pb::FriendRequestRecord>(keys::CF_PROJECTIONS, key, "friend request")?;
        Ok(r.map(|q| FriendRequest { from: from.clone(), message: q.message, remark: q.remark, at: TimeMs(q.time_ms) }))
    }

    fn friend_counts(&self, user: &UserId) -> Result<FriendCounts, StateError> {
        let key = keys::friend_counts(self.0.shard_id(), user);
        let r = self.0.read_record::<pb::FriendCountsRecord>(keys::CF_PROJECTIONS, key, "friend counts")?;
        Ok(r.map(|c| FriendCounts { friends: c.friends, pending: c.pending }).unwrap_or_default())
    }

    fn pair_friend(&self, conversation: &ConversationId, lister: &UserId) -> Result<bool, StateError> {
        let key = keys::pair_friend(self.0.shard_id(), conversation, lister);
        Ok(self.0.read_record::<pb::BlockedRecord>(keys::CF_PROJECTIONS, key, "conversation friend")?.is_some())
    }

    fn has_group_ref(&self, user: &UserId, group: &GroupId) -> Result<bool, StateError> {
        let key = keys::group_ref(self.0.shard_id(), user, group);
        Ok(self.0.read_record::<pb::GroupRefRecord>(keys::CF_PROJECTIONS, key, "group ref")?.is_some())
    }

    fn account_records(&self, user: &UserId) -> Result<AccountRecords, StateError> {
        let shard = self.0.shard_id();
        let corrupt = |what: &str| StateError(format!("{what}: the key names no id"));
        let suffix = |prefix: &[u8], key: &[u8]| std::str::from_utf8(&key[prefix.len()..]).ok().map(str::to_owned);
        let scan = |prefix: &[u8]| self.0.scan_records(keys::CF_PROJECTIONS, prefix);
        let state = |e: StorageError| StateError(e.to_string());
        let mut records = AccountRecords::default();
        let prefix = keys::friend_list(shard, user);
        for (k, v) in scan(&prefix)? {
            let friend = suffix(&prefix, &k).and_then(|t| UserId::parse(&t).ok()).ok_or_else(|| corrupt("friend"))?;
            records
                .friends
                .push(codec::friend_from_pb(friend, decode_record("friend", &v).map_err(state)?).map_err(state)?);
        }
        let prefix = keys::friend_requests(shard, user);
        for (k, _) in scan(&prefix)? {
            records.requests.push(
                suffix(&prefix, &k).and_then(|t| UserId::parse(&t).ok()).ok_or_else(|| corrupt("friend request"))?,
            );
        }
        let prefix = keys::blocked_list(shard, user);
        for (k, _) in scan(&prefix)? {
            records.blocked.push(
                suffix(&prefix, &k).and_then(|t| UserId::parse(&t).ok()).ok_or_else(|| corrupt("blocklist entry"))?,
            );
        }
        for (_, v) in scan(&keys::group_refs(shard, user))? {
            records
                .groups
                .push(codec::group_ref_from_pb(decode_record("group ref", &v).map_err(state)?).map_err(state)?);
        }
        for (_, v) in scan(&keys::conversation_refs(shard, user))? {
            let entry = codec::conversation_ref_from_pb(decode_record("conversation ref", &v).map_err(state)?);
            records.conversations.push(entry.map_err(state)?.conversation);
        }
        let prefix = keys::conversation_prefs_of(shard, user);
        for (k, _) in scan(&prefix)? {
            let id = suffix(&prefix, &k)
                .and_then(|t| ConversationId::parse(&t).ok())
                .ok_or_else(|| corrupt("conversation prefs"))?;
            records.prefs.push(id);
        }
        Ok(records)
    }

    fn group_members_first(&self, group: &GroupId, limit: usize) -> Result<Vec<GroupMember>, StateError> {
        let prefix = keys::group_members(self.0.shard_id(), group);
        let found = self.0.scan_records(keys::CF_PROJECTIONS, &prefix)?;
        found
            .into_iter()
            .take(limit)
            .map(|(_, v)| {
                decode_record("group member", &v)
                    .and_then(codec::group_member_from_pb)
                    .map_err(|e| StateError(e.to_string()))
            })
            .collect()
    }

    fn claim(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, StateError> {
        let k = keys::directory(self.0.shard_id(), key);
        let r = self.0.read_record::<pb::DirectoryClaimRecord>(keys::CF_PROJECTIONS, k, "directory claim")?;
        r.map(|c| RegionCode::parse(&c.region).map_err(|e| StateError(format!("directory claim: {e}")))).transpose()
    }
}
