//! Key layouts. Every key starts with the shard id (u32, big-endian), so one shard's data in a
//! column family is one contiguous range; variable-length parts are length-prefixed so that
//! no key is a prefix of another's component.

use meridian_domain::{
    ConversationId, DirectoryKey, EffectId, EventOffset, GroupId, RegionCode, RequestId, Seq, ShardId, TopicId, UserId,
};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_EVENTS: &str = "events";
pub const CF_PROJECTIONS: &str = "projections";
pub const CF_OUTBOX: &str = "outbox";
pub const CF_DEDUP: &str = "dedup";
/// The event log: every domain event of a shard, keyed by its offset.
pub const CF_EVENT_LOG: &str = "event_log";

/// Every column family, in a fixed order (also the order of snapshots and state hashes).
pub const ALL_CFS: [&str; 7] =
    [CF_RAFT_LOG, CF_RAFT_META, CF_EVENTS, CF_PROJECTIONS, CF_OUTBOX, CF_DEDUP, CF_EVENT_LOG];
/// The column families that hold a shard's state machine data. New ones go at the end: a
/// snapshot names each frame's family by its index here.
pub const STATE_CFS: [&str; 5] = [CF_EVENTS, CF_PROJECTIONS, CF_OUTBOX, CF_DEDUP, CF_EVENT_LOG];

pub fn shard_prefix(shard: ShardId) -> Vec<u8> {
    shard.0.to_be_bytes().to_vec()
}

/// The first key past a shard's range.
pub fn shard_end(shard: ShardId) -> Vec<u8> {
    (u64::from(shard.0) + 1).to_be_bytes()[4..].to_vec()
}

fn with_shard(shard: ShardId, capacity: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + capacity);
    k.extend_from_slice(&shard.0.to_be_bytes());
    k
}

fn push_str(k: &mut Vec<u8>, s: &str) {
    // Ids are at most 32 (users) or 68 (conversations) bytes; request ids 64.
    k.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(s.as_bytes());
}

// raft_log
pub fn log_entry(shard: ShardId, index: u64) -> Vec<u8> {
    let mut k = with_shard(shard, 8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(4..12)?.try_into().ok()?))
}

// raft_meta
pub fn meta(shard: ShardId, tag: u8) -> Vec<u8> {
    let mut k = with_shard(shard, 1);
    k.push(tag);
    k
}
pub const META_VOTE: u8 = b'v';
pub const META_COMMITTED: u8 = b'c';
pub const META_PURGED: u8 = b'p';
pub const META_APPLIED: u8 = b'a';

// events
pub fn message(shard: ShardId, conversation: &ConversationId, seq: Seq) -> Vec<u8> {
    let mut k = conversation_messages(shard, conversation);
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

pub fn conversation_messages(shard: ShardId, conversation: &ConversationId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + conversation.as_str().len() + 8);
    push_str(&mut k, conversation.as_str());
    k
}

// event_log: shard, log index, command position, event position — big-endian, so the key
// order is the log order.
pub fn event(shard: ShardId, offset: EventOffset) -> Vec<u8> {
    let mut k = with_shard(shard, 14);
    k.extend_from_slice(&offset.log_index.to_be_bytes());
    k.extend_from_slice(&offset.command.to_be_bytes());
    k.extend_from_slice(&offset.event.to_be_bytes());
    k
}

/// The offset of an event-log key.
pub fn event_offset_of(key: &[u8]) -> Option<EventOffset> {
    Some(EventOffset {
        log_index: u64::from_be_bytes(key.get(4..12)?.try_into().ok()?),
        command: u32::from_be_bytes(key.get(12..16)?.try_into().ok()?),
        event: u16::from_be_bytes(key.get(16..18)?.try_into().ok()?),
    })
}

// projections
pub const PROJ_USER: u8 = b'u';
pub const PROJ_CONVERSATION: u8 = b'c';
pub const PROJ_CONVERSATION_REF: u8 = b'r';
pub const PROJ_WATERMARK: u8 = b'w';
pub const PROJ_OUTBOX_ACKED: u8 = b'o';
pub const PROJ_WATERMARK_REMOTE: u8 = b'W';
pub const PROJ_OUTBOX_ACKED_REMOTE: u8 = b'O';
pub const PROJ_DIRECTORY: u8 = b'd';
pub const PROJ_GROUP: u8 = b'g';
pub const PROJ_GROUP_MEMBER: u8 = b'm';
pub const PROJ_GROUP_REF: u8 = b'G';
pub const PROJ_BLOCKED: u8 = b'b';
pub const PROJ_PAIR_BLOCK: u8 = b'B';
pub const PROJ_PROFILE: u8 = b'p';
pub const PROJ_BLOCK_COUNT: u8 = b'n';
pub const PROJ_FRIEND: u8 = b'f';
pub const PROJ_FRIEND_REQUEST: u8 = b'q';
pub const PROJ_FRIEND_COUNTS: u8 = b'k';
pub const PROJ_PAIR_FRIEND: u8 = b'F';
pub const PROJ_GROUP_APPLICATION: u8 = b'j';
pub const PROJ_GROUP_BAN: u8 = b'x';
pub const PROJ_CONVERSATION_PREFS: u8 = b'P';
pub const PROJ_HISTORY_VIEW: u8 = b'v';
pub const PROJ_TOPIC: u8 = b'y';
pub const PROJ_TOPIC_CURSOR: u8 = b'Y';
pub const PROJ_HOOKS_CURSOR: u8 = b'h';
/// The archive manifest: one record per archived segment, by its first offset.
pub const PROJ_ARCHIVED_SEGMENT: u8 = b's';
/// Where a conversation's archived seqs are, by conversation and last seq.
pub const PROJ_COLD_RANGE: u8 = b'z';
/// Recalls of archived messages, by conversation and seq.
pub const PROJ_RECALL_OVERLAY: u8 = b'R';
/// The first byte of an outbox key's lane for another region (a shard lane's first byte is
/// 0: shard ids stay below 4096).
pub const OUTBOX_REGION_LANE: u8 = 0xff;

pub fn user(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + user.as_str().len());
    k.push(PROJ_USER);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

pub fn conversation(shard: ShardId, conversation: &ConversationId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + conversation.as_str().len());
    k.push(PROJ_CONVERSATION);
    k.extend_from_slice(conversation.as_str().as_bytes());
    k
}

pub fn conversation_refs(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len());
    k.push(PROJ_CONVERSATION_REF);
    push_str(&mut k, user.as_str());
    k
}

pub fn conversation_ref(shard: ShardId, user: &UserId, conversation: &ConversationId) -> Vec<u8> {
    let mut k = conversation_refs(shard, user);
    k.extend_from_slice(conversation.as_str().as_bytes());
    k
}

pub fn watermark(shard: ShardId, source: ShardId) -> Vec<u8> {
    let mut k = with_shard(shard, 5);
    k.push(PROJ_WATERMARK);
    k.extend_from_slice(&source.0.to_be_bytes());
    k
}

/// Up to which effect id this shard's outbox for `target` has been acknowledged.
pub fn outbox_acked(shard: ShardId, target: ShardId) -> Vec<u8> {
    let mut k = with_shard(shard, 5);
    k.push(PROJ_OUTBOX_ACKED);
    k.extend_from_slice(&target.0.to_be_bytes());
    k
}

/// Where the shard's webhooks resume.
pub fn archived_segment(shard: ShardId, first: EventOffset) -> Vec<u8> {
    let mut k = with_shard(shard, 15);
    k.push(PROJ_ARCHIVED_SEGMENT);
    k.extend_from_slice(&first.log_index.to_be_bytes());
    k.extend_from_slice(&first.command.to_be_bytes());
    k.extend_from_slice(&first.event.to_be_bytes());
    k
}

pub fn archived_segments(shard: ShardId) -> Vec<u8> {
    let mut k = with_shard(shard, 1);
    k.push(PROJ_ARCHIVED_SEGMENT);
    k
}

pub fn cold_ranges(shard: ShardId, conversation: &ConversationId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + conversation.as_str().len() + 8);
    k.push(PROJ_COLD_RANGE);
    push_str(&mut k, conversation.as_str());
    k
}

pub fn cold_range(shard: ShardId, conversation: &ConversationId, seq_to: Seq) -> Vec<u8> {
    let mut k = cold_ranges(shard, conversation);
    k.extend_from_slice(&seq_to.0.to_be_bytes());
    k
}

pub fn recall_overlay(shard: ShardId, conversation: &ConversationId, seq: Seq) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + conversation.as_str().len() + 8);
    k.push(PROJ_RECALL_OVERLAY);
    push_str(&mut k, conversation.as_str());
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

pub fn hooks_cursor(shard: ShardId) -> Vec<u8> {
    let mut k = with_shard(shard, 1);
    k.push(PROJ_HOOKS_CURSOR);
    k
}

/// The highest effect id applied from shard `source` of another region.
pub fn watermark_remote(shard: ShardId, region: &RegionCode, source: ShardId) -> Vec<u8> {
    let mut k = with_shard(shard, 6 + region.as_str().len());
    k.push(PROJ_WATERMARK_REMOTE);
    push_str(&mut k, region.as_str());
    k.extend_from_slice(&source.0.to_be_bytes());
    k
}

/// Up to which effect id this shard's outbox lane for another region has been acknowledged.
pub fn outbox_acked_remote(shard: ShardId, region: &RegionCode) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + region.as_str().len());
    k.push(PROJ_OUTBOX_ACKED_REMOTE);
    push_str(&mut k, region.as_str());
    k
}

/// A group's record.
pub fn group(shard: ShardId, group: &GroupId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + group.as_str().len());
    k.push(PROJ_GROUP);
    k.extend_from_slice(group.as_str().as_bytes());
    k
}

/// The prefix of a group's member records.
pub fn group_members(shard: ShardId, group: &GroupId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + group.as_str().len() + 32);
    k.push(PROJ_GROUP_MEMBER);
    push_str(&mut k, group.as_str());
    k
}

/// One member's record.
pub fn group_member(shard: ShardId, group: &GroupId, user: &UserId) -> Vec<u8> {
    let mut k = group_members(shard, group);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of a user's list of groups.
pub fn group_refs(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len() + 48);
    k.push(PROJ_GROUP_REF);
    push_str(&mut k, user.as_str());
    k
}

pub fn group_ref(shard: ShardId, user: &UserId, group: &GroupId) -> Vec<u8> {
    let mut k = group_refs(shard, user);
    k.extend_from_slice(group.as_str().as_bytes());
    k
}

/// A user's profile fields.
pub fn profile(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + user.as_str().len());
    k.push(PROJ_PROFILE);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// How many users `user` has blocked.
pub fn block_count(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + user.as_str().len());
    k.push(PROJ_BLOCK_COUNT);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of `user`'s row settings.
pub fn conversation_prefs_of(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len() + 48);
    k.push(PROJ_CONVERSATION_PREFS);
    push_str(&mut k, user.as_str());
    k
}

pub fn conversation_prefs(shard: ShardId, user: &UserId, conversation: &ConversationId) -> Vec<u8> {
    let mut k = conversation_prefs_of(shard, user);
    k.extend_from_slice(conversation.as_str().as_bytes());
    k
}

/// `user`'s view of a stream's history.
pub fn history_view(shard: ShardId, conversation: &ConversationId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + conversation.as_str().len() + user.as_str().len());
    k.push(PROJ_HISTORY_VIEW);
    push_str(&mut k, conversation.as_str());
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of a Community's topics.
pub fn topics(shard: ShardId, group: &GroupId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + group.as_str().len() + 32);
    k.push(PROJ_TOPIC);
    push_str(&mut k, group.as_str());
    k
}

pub fn topic(shard: ShardId, group: &GroupId, topic: &TopicId) -> Vec<u8> {
    let mut k = topics(shard, group);
    k.extend_from_slice(topic.as_str().as_bytes());
    k
}

/// A member's read cursor in a topic's stream.
pub fn topic_cursor(shard: ShardId, stream: &ConversationId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + stream.as_str().len() + user.as_str().len());
    k.push(PROJ_TOPIC_CURSOR);
    push_str(&mut k, stream.as_str());
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of a group's waiting applications.
pub fn group_applications(shard: ShardId, group: &GroupId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + group.as_str().len() + 32);
    k.push(PROJ_GROUP_APPLICATION);
    push_str(&mut k, group.as_str());
    k
}

pub fn group_application(shard: ShardId, group: &GroupId, user: &UserId) -> Vec<u8> {
    let mut k = group_applications(shard, group);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of a group's bans.
pub fn group_bans(shard: ShardId, group: &GroupId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + group.as_str().len() + 32);
    k.push(PROJ_GROUP_BAN);
    push_str(&mut k, group.as_str());
    k
}

pub fn group_ban(shard: ShardId, group: &GroupId, user: &UserId) -> Vec<u8> {
    let mut k = group_bans(shard, group);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of `user`'s friend list.
pub fn friend_list(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len() + 32);
    k.push(PROJ_FRIEND);
    push_str(&mut k, user.as_str());
    k
}

pub fn friend(shard: ShardId, user: &UserId, friend: &UserId) -> Vec<u8> {
    let mut k = friend_list(shard, user);
    k.extend_from_slice(friend.as_str().as_bytes());
    k
}

/// The prefix of the friend requests waiting for `user`.
pub fn friend_requests(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len() + 32);
    k.push(PROJ_FRIEND_REQUEST);
    push_str(&mut k, user.as_str());
    k
}

pub fn friend_request(shard: ShardId, user: &UserId, from: &UserId) -> Vec<u8> {
    let mut k = friend_requests(shard, user);
    k.extend_from_slice(from.as_str().as_bytes());
    k
}

/// `user`'s friend and pending-request counts.
pub fn friend_counts(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + user.as_str().len());
    k.push(PROJ_FRIEND_COUNTS);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// A conversation's record that `lister` has its other member as a friend.
pub fn pair_friend(shard: ShardId, conversation: &ConversationId, lister: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + conversation.as_str().len() + lister.as_str().len());
    k.push(PROJ_PAIR_FRIEND);
    push_str(&mut k, conversation.as_str());
    k.extend_from_slice(lister.as_str().as_bytes());
    k
}

/// The prefix of `user`'s blocklist.
pub fn blocked_list(shard: ShardId, user: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + user.as_str().len() + 32);
    k.push(PROJ_BLOCKED);
    push_str(&mut k, user.as_str());
    k
}

pub fn blocked(shard: ShardId, user: &UserId, target: &UserId) -> Vec<u8> {
    let mut k = blocked_list(shard, user);
    k.extend_from_slice(target.as_str().as_bytes());
    k
}

/// A conversation's record that `blocker` blocks its other member.
pub fn pair_block(shard: ShardId, conversation: &ConversationId, blocker: &UserId) -> Vec<u8> {
    let mut k = with_shard(shard, 2 + conversation.as_str().len() + blocker.as_str().len());
    k.push(PROJ_PAIR_BLOCK);
    push_str(&mut k, conversation.as_str());
    k.extend_from_slice(blocker.as_str().as_bytes());
    k
}

/// A directory entry (in the key's owner region).
pub fn directory(shard: ShardId, key: &DirectoryKey) -> Vec<u8> {
    let mut k = with_shard(shard, 1 + key.as_str().len());
    k.push(PROJ_DIRECTORY);
    k.extend_from_slice(key.as_str().as_bytes());
    k
}

/// An effect in the outbox lane of another region.
pub fn outbox_remote(shard: ShardId, region: &RegionCode, id: EffectId) -> Vec<u8> {
    let mut k = outbox_remote_lane(shard, region);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The prefix of the outbox lane of another region.
pub fn outbox_remote_lane(shard: ShardId, region: &RegionCode) -> Vec<u8> {
    let mut k = with_shard(shard, 10 + region.as_str().len());
    k.push(OUTBOX_REGION_LANE);
    push_str(&mut k, region.as_str());
    k
}

// outbox
pub fn outbox(shard: ShardId, target: ShardId, id: EffectId) -> Vec<u8> {
    let mut k = with_shard(shard, 12);
    k.extend_from_slice(&target.0.to_be_bytes());
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

// dedup
pub fn dedup(shard: ShardId, conversation: &ConversationId, sender: &UserId, request_id: &RequestId) -> Vec<u8> {
    let mut k = with_shard(shard, 3 + conversation.as_str().len() + sender.as_str().len() + request_id.as_str().len());
    push_str(&mut k, conversation.as_str());
    push_str(&mut k, sender.as_str());
    k.extend_from_slice(request_id.as_str().as_bytes());
    k
}

/// The byte after the shard prefix that marks the request-id time index inside `dedup`: a
/// dedup key starts there with a conversation id's length, which is at most 68.
pub const DEDUP_BY_TIME: u8 = 0xff;

/// The time index entry of the dedup record at `dedup_key` (its full key), written at
/// `time_ms`: shard, [`DEDUP_BY_TIME`], time (u64 BE), then the dedup key after its shard.
pub fn dedup_by_time(time_ms: i64, dedup_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dedup_key.len() + 9);
    k.extend_from_slice(dedup_key.get(..4).unwrap_or_default());
    k.push(DEDUP_BY_TIME);
    k.extend_from_slice(&u64::try_from(time_ms).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(dedup_key.get(4..).unwrap_or_default());
    k
}

/// The first time index key at or after `time_ms` (a bound for ranges).
pub fn dedup_by_time_from(shard: ShardId, time_ms: i64) -> Vec<u8> {
    let mut k = with_shard(shard, 9);
    k.push(DEDUP_BY_TIME);
    k.extend_from_slice(&u64::try_from(time_ms).unwrap_or(0).to_be_bytes());
    k
}

/// Whether a `dedup` key is a time index entry rather than a record.
pub fn is_dedup_by_time(key: &[u8]) -> bool {
    key.get(4) == Some(&DEDUP_BY_TIME)
}

/// The dedup record a time index entry points at.
pub fn dedup_of_time_entry(index_key: &[u8]) -> Option<Vec<u8>> {
    if !is_dedup_by_time(index_key) || index_key.len() < 13 {
        return None;
    }
    let mut k = index_key[..4].to_vec();
    k.extend_from_slice(&index_key[13..]);
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_are_disjoint_and_ordered() {
        assert!(shard_prefix(ShardId(1)) < shard_end(ShardId(1)));
        assert_eq!(shard_end(ShardId(1)), shard_prefix(ShardId(2)));
        assert!(log_entry(ShardId(1), u64::MAX) < shard_end(ShardId(1)));
        assert!(log_entry(ShardId(1), 2) < log_entry(ShardId(1), 10));
    }

    #[test]
    fn event_keys_sort_in_log_order_and_read_back() {
        let at = |log_index, command, event| EventOffset { log_index, command, event };
        let offsets = [at(1, 0, 0), at(1, 0, 1), at(1, 2, 0), at(2, 0, 0), at(256, 0, 0)];
        for pair in offsets.windows(2) {
            assert!(event(ShardId(3), pair[0]) < event(ShardId(3), pair[1]), "{} < {}", pair[0], pair[1]);
        }
        for o in offsets {
            assert_eq!(event_offset_of(&event(ShardId(3), o)), Some(o));
        }
        assert!(event(ShardId(3), at(u64::MAX, u32::MAX, u16::MAX)) < shard_end(ShardId(3)));
    }
}
