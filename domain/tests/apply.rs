//! Apply, told as stories: accepted commands change state as specified; every rejection carries
//! its reason code and leaves the state exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use meridian_domain::apply::{Outcome, Reply};
use meridian_domain::element::{Element, TipKind};
use meridian_domain::shard::shard_for;
use meridian_domain::*;

/// Shard state in memory: the changes applied so far, in maps.
#[derive(Debug, Default, Clone, PartialEq)]
struct MemState {
    users: BTreeMap<UserId, User>,
    conversations: BTreeMap<ConversationId, Conversation>,
    messages: BTreeMap<(ConversationId, Seq), Message>,
    refs: BTreeSet<(UserId, ConversationId)>,
    dedup: BTreeMap<(ConversationId, UserId, RequestId), DedupEntry>,
    watermarks: BTreeMap<(Option<RegionCode>, ShardId), EffectId>,
    outbox: Vec<(Lane, EffectKind)>,
    claims: BTreeMap<DirectoryKey, RegionCode>,
    groups: BTreeMap<GroupId, Group>,
    members: BTreeMap<(GroupId, UserId), GroupMember>,
    group_refs: BTreeMap<(UserId, GroupId), GroupRef>,
    blocked: BTreeSet<(UserId, UserId)>,
    block_counts: BTreeMap<UserId, u64>,
    profiles: BTreeMap<UserId, meridian_domain::profile::Profile>,
    pair_blocks: BTreeSet<(ConversationId, UserId)>,
    friends: BTreeMap<(UserId, UserId), Friend>,
    requests: BTreeMap<(UserId, UserId), FriendRequest>,
    friend_counts: BTreeMap<UserId, FriendCounts>,
    pair_friends: BTreeSet<(ConversationId, UserId)>,
    applications: BTreeMap<(GroupId, UserId), GroupApplication>,
    bans: BTreeMap<(GroupId, UserId), TimeMs>,
    prefs: BTreeMap<(UserId, ConversationId), ConversationPrefs>,
    views: BTreeMap<(ConversationId, UserId), HistoryView>,
    topics: BTreeMap<(GroupId, TopicId), meridian_domain::records::Topic>,
    topic_cursors: BTreeMap<(ConversationId, UserId), Seq>,
    segments: Vec<meridian_domain::records::ArchivedSegment>,
    cold: Vec<meridian_domain::records::ColdRange>,
    overlays: BTreeMap<(ConversationId, Seq), meridian_domain::records::Recall>,
}

impl ShardState for MemState {
    fn user(&self, id: &UserId) -> Result<Option<User>, StateError> {
        Ok(self.users.get(id).cloned())
    }
    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StateError> {
        Ok(self.conversations.get(id).cloned())
    }
    fn message(&self, c: &ConversationId, seq: Seq) -> Result<Option<Message>, StateError> {
        Ok(self.messages.get(&(c.clone(), seq)).cloned())
    }
    fn cold_range(
        &self,
        c: &ConversationId,
        seq: Seq,
    ) -> Result<Option<meridian_domain::records::ColdRange>, StateError> {
        Ok(self.cold.iter().find(|r| &r.conversation == c && r.from <= seq && seq <= r.to).cloned())
    }
    fn recall_overlay(
        &self,
        c: &ConversationId,
        seq: Seq,
    ) -> Result<Option<meridian_domain::records::Recall>, StateError> {
        Ok(self.overlays.get(&(c.clone(), seq)).cloned())
    }
    fn dedup(&self, c: &ConversationId, s: &UserId, r: &RequestId) -> Result<Option<DedupEntry>, StateError> {
        Ok(self.dedup.get(&(c.clone(), s.clone(), r.clone())).cloned())
    }
    fn has_conversation_ref(&self, u: &UserId, c: &ConversationId) -> Result<bool, StateError> {
        Ok(self.refs.contains(&(u.clone(), c.clone())))
    }
    fn watermark(&self, source: ShardId, from: Option<&RegionCode>) -> Result<EffectId, StateError> {
        Ok(self.watermarks.get(&(from.cloned(), source)).copied().unwrap_or_default())
    }
    fn claim(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, StateError> {
        Ok(self.claims.get(key).cloned())
    }
    fn group(&self, id: &GroupId) -> Result<Option<Group>, StateError> {
        Ok(self.groups.get(id).cloned())
    }
    fn group_member(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupMember>, StateError> {
        Ok(self.members.get(&(group.clone(), user.clone())).cloned())
    }
    fn has_group_ref(&self, user: &UserId, group: &GroupId) -> Result<bool, StateError> {
        Ok(self.group_refs.contains_key(&(user.clone(), group.clone())))
    }
    fn profile(&self, user: &UserId) -> Result<meridian_domain::profile::Profile, StateError> {
        Ok(self.profiles.get(user).cloned().unwrap_or_default())
    }
    fn blocked_count(&self, user: &UserId) -> Result<u64, StateError> {
        Ok(self.block_counts.get(user).copied().unwrap_or_default())
    }
    fn is_blocked(&self, user: &UserId, target: &UserId) -> Result<bool, StateError> {
        Ok(self.blocked.contains(&(user.clone(), target.clone())))
    }
    fn pair_blocked(&self, conversation: &ConversationId, blocker: &UserId) -> Result<bool, StateError> {
        Ok(self.pair_blocks.contains(&(conversation.clone(), blocker.clone())))
    }
    fn topic(&self, g: &GroupId, t: &TopicId) -> Result<Option<meridian_domain::records::Topic>, StateError> {
        Ok(self.topics.get(&(g.clone(), t.clone())).cloned())
    }
    fn topic_cursor(&self, s: &ConversationId, u: &UserId) -> Result<Option<Seq>, StateError> {
        Ok(self.topic_cursors.get(&(s.clone(), u.clone())).copied())
    }
    fn conversation_prefs(&self, u: &UserId, c: &ConversationId) -> Result<Option<ConversationPrefs>, StateError> {
        Ok(self.prefs.get(&(u.clone(), c.clone())).cloned())
    }
    fn history_view(&self, c: &ConversationId, u: &UserId) -> Result<Option<HistoryView>, StateError> {
        Ok(self.views.get(&(c.clone(), u.clone())).cloned())
    }
    fn group_application(&self, group: &GroupId, user: &UserId) -> Result<Option<GroupApplication>, StateError> {
        Ok(self.applications.get(&(group.clone(), user.clone())).cloned())
    }
    fn group_ban(&self, group: &GroupId, user: &UserId) -> Result<Option<TimeMs>, StateError> {
        Ok(self.bans.get(&(group.clone(), user.clone())).copied())
    }
    fn friend(&self, user: &UserId, friend: &UserId) -> Result<Option<Friend>, StateError> {
        Ok(self.friends.get(&(user.clone(), friend.clone())).cloned())
    }
    fn friend_request(&self, user: &UserId, from: &UserId) -> Result<Option<FriendRequest>, StateError> {
        Ok(self.requests.get(&(user.clone(), from.clone())).cloned())
    }
    fn friend_counts(&self, user: &UserId) -> Result<FriendCounts, StateError> {
        Ok(self.friend_counts.get(user).copied().unwrap_or_default())
    }
    fn pair_friend(&self, conversation: &ConversationId, lister: &UserId) -> Result<bool, StateError> {
        Ok(self.pair_friends.contains(&(conversation.clone(), lister.clone())))
    }
    fn account_records(&self, user: &UserId) -> Result<AccountRecords, StateError> {
        let mine = |u: &UserId| u == user;
        Ok(AccountRecords {
            friends: self.friends.iter().filter(|((u, _), _)| mine(u)).map(|(_, f)| f.clone()).collect(),
            requests: self.requests.keys().filter(|(u, _)| mine(u)).map(|(_, from)| from.clone()).collect(),
            blocked: self.blocked.iter().filter(|(u, _)| mine(u)).map(|(_, t)| t.clone()).collect(),
            groups: self.group_refs.iter().filter(|((u, _), _)| mine(u)).map(|(_, r)| r.clone()).collect(),
            conversations: self.refs.iter().filter(|(u, _)| mine(u)).map(|(_, c)| c.clone()).collect(),
            prefs: self.prefs.keys().filter(|(u, _)| mine(u)).map(|(_, c)| c.clone()).collect(),
        })
    }
    fn group_members_first(&self, group: &GroupId, limit: usize) -> Result<Vec<GroupMember>, StateError> {
        Ok(self.members.iter().filter(|((g, _), _)| g == group).map(|(_, m)| m.clone()).take(limit).collect())
    }
}

impl MemState {
    fn write(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::PutUser(u) => {
                    self.users.insert(u.id.clone(), u);
                }
                Change::PutConversation(c) => {
                    self.conversations.insert(c.id.clone(), c);
                }
                Change::PutMessage { conversation, message } => {
                    self.messages.insert((conversation, message.seq), message);
                }
                Change::PutConversationRef { user, entry } => {
                    self.refs.insert((user, entry.conversation));
                }
                Change::PutDedup { conversation, sender, request_id, entry } => {
                    self.dedup.insert((conversation, sender, request_id), entry);
                }
                Change::Emit { lane, kind } => self.outbox.push((lane, kind)),
                Change::SetWatermark { source, from_region, up_to } => {
                    self.watermarks.insert((from_region, source), up_to);
                }
                Change::PutClaim { key, region } => {
                    self.claims.insert(key, region);
                }
                Change::PutGroup(g) => {
                    self.groups.insert(g.id.clone(), g);
                }
                Change::PutGroupMember { group, member } => {
                    self.members.insert((group, member.user.clone()), member);
                }
                Change::DeleteGroupMember { group, user } => {
                    self.members.remove(&(group, user));
                }
                Change::PutGroupRef { user, entry } => {
                    self.group_refs.insert((user, entry.group.clone()), entry);
                }
                Change::DeleteGroupRef { user, group } => {
                    self.group_refs.remove(&(user, group));
                }
                Change::PutProfile { user, profile } => {
                    self.profiles.insert(user, profile);
                }
                Change::PutBlocked { user, target, .. } => {
                    self.blocked.insert((user, target));
                }
                Change::DeleteBlocked { user, target } => {
                    self.blocked.remove(&(user, target));
                }
                Change::PutBlockCount { user, count } => {
                    self.block_counts.insert(user, count);
                }
                Change::PutPairBlock { conversation, blocker } => {
                    self.pair_blocks.insert((conversation, blocker));
                }
                Change::DeletePairBlock { conversation, blocker } => {
                    self.pair_blocks.remove(&(conversation, blocker));
                }
                Change::PutFriend { user, entry } => {
                    self.friends.insert((user, entry.user.clone()), entry);
                }
                Change::DeleteFriend { user, friend } => {
                    self.friends.remove(&(user, friend));
                }
                Change::PutFriendRequest { user, request } => {
                    self.requests.insert((user, request.from.clone()), request);
                }
                Change::DeleteFriendRequest { user, from } => {
                    self.requests.remove(&(user, from));
                }
                Change::PutFriendCounts { user, counts } => {
                    self.friend_counts.insert(user, counts);
                }
                Change::PutPairFriend { conversation, lister } => {
                    self.pair_friends.insert((conversation, lister));
                }
                Change::DeletePairFriend { conversation, lister } => {
                    self.pair_friends.remove(&(conversation, lister));
                }
                Change::PutTopic { group, topic } => {
                    self.topics.insert((group, topic.id.clone()), topic);
                }
                Change::PutTopicCursor { stream, user, read_seq } => {
                    self.topic_cursors.insert((stream, user), read_seq);
                }
                Change::PutConversationPrefs { user, conversation, prefs } => {
                    self.prefs.insert((user, conversation), prefs);
                }
                Change::PutHistoryView { conversation, user, view } => {
                    self.views.insert((conversation, user), view);
                }
                Change::PutGroupApplication { group, application } => {
                    self.applications.insert((group, application.user.clone()), application);
                }
                Change::DeleteGroupApplication { group, user } => {
                    self.applications.remove(&(group, user));
                }
                Change::PutGroupBan { group, user, until } => {
                    self.bans.insert((group, user), until);
                }
                Change::DeleteGroupBan { group, user } => {
                    self.bans.remove(&(group, user));
                }
                Change::DeleteProfile { user } => {
                    self.profiles.remove(&user);
                }
                Change::DeleteConversationRef { user, conversation } => {
                    self.refs.remove(&(user, conversation));
                }
                Change::DeleteConversationPrefs { user, conversation } => {
                    self.prefs.remove(&(user, conversation));
                }
                Change::AckOutbox { .. }
                | Change::SetLogicVersion { .. }
                | Change::SetEpoch { .. }
                | Change::SetHooksCursor { .. } => {}
                Change::PutArchivedSegment(s) => self.segments.push(s),
                Change::PutColdRange(r) => self.cold.push(r),
                Change::DeleteMessage { conversation, seq } => {
                    self.messages.remove(&(conversation, seq));
                }
                Change::PutRecallOverlay { conversation, seq, recall } => {
                    self.overlays.insert((conversation, seq), recall);
                }
            }
        }
    }
}

/// One shard so that every entity lives here.
fn ctx(time: i64, log_index: u64) -> ApplyContext {
    ApplyContext {
        region: RegionCode::parse("sg").unwrap_or_else(|e| panic!("{e}")),
        epoch: 1,
        logic_version: apply::LOGIC_VERSION,
        shard: ShardId(0),
        shards: 1,
        log_index,
        position: 0,
        time: TimeMs(time),
    }
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap_or_else(|r| panic!("{r}"))
}

fn text(s: &str) -> Vec<Element> {
    vec![Element::Text { text: s.to_owned() }]
}

fn run(state: &mut MemState, ctx: &ApplyContext, cmd: Command) -> Outcome {
    let outcome = apply(state, ctx, &cmd).unwrap_or_else(|e| panic!("{e}"));
    if let Ok(applied) = &outcome {
        state.write(applied.changes.clone());
    }
    outcome
}

fn send(state: &mut MemState, time: i64, from: &str, to: &str, body: &str, rid: Option<&str>) -> Outcome {
    let request_id = rid.map(|r| RequestId::parse(r).unwrap_or_else(|e| panic!("{e}")));
    run(
        state,
        &ctx(time, time as u64),
        Command::SendMessage {
            sender: user(from),
            recipient: user(to),
            elements: text(body),
            request_id,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        },
    )
}

fn seq_of(outcome: &Outcome) -> u64 {
    match outcome {
        Ok(Applied { reply: Reply::MessageAccepted { seq, .. }, .. }) => seq.0,
        other => panic!("expected an accepted message, got {other:?}"),
    }
}

/// Asserts the command is rejected with `reason` and that the state did not change.
fn assert_rejected(state: &mut MemState, ctx: &ApplyContext, cmd: Command, reason: Reason) {
    let before = state.clone();
    match run(state, ctx, cmd) {
        Err(r) => assert_eq!(r.reason, reason, "{r}"),
        Ok(a) => panic!("expected {reason}, got {a:?}"),
    }
    assert_eq!(*state, before, "a rejection must change nothing");
}

#[test]
fn sends_get_gapless_seqs_and_first_message_emits_joins() {
    let mut s = MemState::default();
    let seqs: Vec<u64> = (0..5)
        .map(|i| {
            seq_of(&send(
                &mut s,
                1000 + i,
                if i % 2 == 0 { "alice" } else { "bob" },
                if i % 2 == 0 { "bob" } else { "alice" },
                "hi",
                None,
            ))
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let head = &s.conversations[&c];
    assert_eq!(head.last_seq, Seq(5));
    // Bob sent seq 4, Alice seq 5: Alice has read everything, Bob is one behind.
    assert_eq!(head.unread(&user("alice")), 0);
    assert_eq!(head.unread(&user("bob")), 1);
    // One shard: both members' indexes are here, listed with the first message itself.
    assert!(s.outbox.is_empty(), "{:?}", s.outbox);
}

fn joins_of(outcome: &Outcome) -> Vec<String> {
    let applied = outcome.as_ref().unwrap_or_else(|r| panic!("{r}"));
    applied
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ConversationJoined { user, home: None, .. } => Some(user.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_message_lists_the_conversation_on_its_own_shard_inline_from_logic_version_3() {
    let first = |logic_version: u32| {
        let mut s = MemState::default();
        let c = ApplyContext { logic_version, ..ctx(7, 7) };
        let outcome = run(
            &mut s,
            &c,
            Command::SendMessage {
                sender: user("alice"),
                recipient: user("bob"),
                elements: text("hi"),
                request_id: None,
                sender_home: None,
                recipient_home: None,
                friends_only: false,
            },
        );
        (joins_of(&outcome), s.outbox.len())
    };
    // Version 3: both joins in the send's own events, nothing queued.
    assert_eq!(first(3), (vec!["alice".to_owned(), "bob".to_owned()], 0));
    // Version 2 (a region not raised yet): through the outbox, as before.
    assert_eq!(first(2), (vec![], 2));
    // A second message joins nobody.
    let mut s = MemState::default();
    assert_eq!(seq_of(&send(&mut s, 1, "alice", "bob", "one", None)), 1);
    assert!(joins_of(&send(&mut s, 2, "bob", "alice", "two", None)).is_empty());
}

#[test]
fn with_many_shards_only_the_members_on_the_conversation_s_shard_are_listed_inline() {
    let shards = 8;
    let (a, b) = (user("alice"), user("bob"));
    let conversation = ConversationId::c2c(&a, &b);
    let here = meridian_domain::shard::shard_for(conversation.as_str(), shards);
    let c = ApplyContext { shard: here, shards, ..ctx(9, 9) };
    let mut s = MemState::default();
    let outcome = run(
        &mut s,
        &c,
        Command::SendMessage {
            sender: a.clone(),
            recipient: b.clone(),
            elements: text("hi"),
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        },
    );
    let inline = joins_of(&outcome);
    let queued: Vec<String> = s.outbox.iter().map(|(_, kind)| kind.target_entity().into_owned()).collect();
    for u in [&a, &b] {
        let on_this_shard = meridian_domain::shard::shard_for(u.as_str(), shards) == here;
        assert_eq!(inline.contains(&u.to_string()), on_this_shard, "{u}: inline {inline:?}");
        assert_eq!(queued.contains(&u.to_string()), !on_this_shard, "{u}: queued {queued:?}");
    }
}

#[test]
fn retried_request_id_returns_the_first_result() {
    let mut s = MemState::default();
    let first = send(&mut s, 10, "alice", "bob", "hello", Some("r-1"));
    let again = send(&mut s, 20, "alice", "bob", "hello", Some("r-1"));
    assert_eq!(seq_of(&first), 1);
    match again {
        Ok(Applied { reply: Reply::MessageAccepted { seq, duplicate, time, .. }, changes, .. }) => {
            assert_eq!((seq, duplicate, time, changes.len()), (Seq(1), true, TimeMs(10), 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.messages.len(), 1);
}

#[test]
fn recall_rules() {
    let mut s = MemState::default();
    send(&mut s, 1_000, "alice", "bob", "oops", None).unwrap_or_else(|r| panic!("{r}"));
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let recall = |actor: &str, seq: u64| Command::RecallMessage {
        actor: user(actor),
        conversation: c.clone(),
        seq: Seq(seq),
        window_ms: 120_000,
    };
    assert_rejected(&mut s, &ctx(2_000, 2), recall("bob", 1), Reason::NotMessageSender);
    assert_rejected(&mut s, &ctx(2_000, 2), recall("alice", 2), Reason::SeqOutOfRange);
    assert_rejected(&mut s, &ctx(2_000, 2), recall("alice", 0), Reason::SeqOutOfRange);
    assert_rejected(&mut s, &ctx(2_000, 2), recall("carol", 1), Reason::NotAMember);
    assert_rejected(&mut s, &ctx(1_000 + 120_001, 2), recall("alice", 1), Reason::RecallWindowExpired);
    let other = ConversationId::c2c(&user("alice"), &user("zed"));
    assert_rejected(
        &mut s,
        &ctx(2_000, 2),
        Command::RecallMessage { actor: user("alice"), conversation: other, seq: Seq(1), window_ms: 1 },
        Reason::ConversationNotFound,
    );

    assert!(run(&mut s, &ctx(1_000 + 120_000, 3), recall("alice", 1)).is_ok());
    let m = &s.messages[&(c.clone(), Seq(1))];
    assert!(m.elements.is_empty(), "a recall erases the content");
    assert_eq!(m.recalled.as_ref().map(|r| r.by.clone()), Some(user("alice")));
    // A retried recall gets the first result and changes nothing.
    let before = s.clone();
    match run(&mut s, &ctx(1_000 + 500_000, 4), recall("alice", 1)) {
        Ok(Applied { reply: Reply::MessageRecalled { at, .. }, changes, .. }) => {
            assert_eq!((at, changes.len()), (TimeMs(1_000 + 120_000), 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s, before);
}

/// An archived range drops the hot copies of its messages but the conversation's latest and
/// recall tombstones; a recall of an archived message is past the window for its sender, and
/// an overlay when it does happen (here, projected directly).
#[test]
fn archiving_keeps_the_latest_message_and_tombstones_hot() {
    use meridian_domain::records::{ArchivedSegment, ColdRange};
    let mut s = MemState::default();
    for (i, body) in ["one", "two", "three", "four"].iter().enumerate() {
        send(&mut s, 1_000 + i as i64, "alice", "bob", body, None).unwrap_or_else(|r| panic!("{r}"));
    }
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let recall = |seq: u64| Command::RecallMessage {
        actor: user("alice"),
        conversation: c.clone(),
        seq: Seq(seq),
        window_ms: 120_000,
    };
    assert!(run(&mut s, &ctx(2_000, 10), recall(2)).is_ok());
    let first = EventOffset { log_index: 1, command: 0, event: 0 };
    let segment = ArchivedSegment {
        key: "meridian/sg/1/0/x.seg".into(),
        first,
        last: EventOffset { log_index: 9, command: 0, event: 0 },
        digest: vec![0; 32],
        bytes: 100,
        events: 8,
        sealed_at: TimeMs(5_000),
    };
    let event = Event::SegmentArchived {
        segment: segment.clone(),
        ranges: vec![ColdRange { conversation: c.clone(), from: Seq(1), to: Seq(4), segment: first }],
    };
    let changes = meridian_domain::projector::project(&s, &event).unwrap_or_else(|e| panic!("{e}"));
    s.write(changes);
    let hot: Vec<u64> = s.messages.keys().filter(|(cv, _)| cv == &c).map(|(_, q)| q.0).collect();
    assert_eq!(hot, vec![2, 4], "the recalled message and the latest stay hot");
    assert_eq!(s.segments, vec![segment]);
    // The sender's own recall of an archived message: past the window.
    assert_rejected(&mut s, &ctx(3_000, 11), recall(1), Reason::RecallWindowExpired);
    // A recall of an archived message becomes an overlay.
    let recalled =
        Event::MessageRecalled { conversation: c.clone(), seq: Seq(3), by: user("alice"), at: TimeMs(6_000) };
    let changes = meridian_domain::projector::project(&s, &recalled).unwrap_or_else(|e| panic!("{e}"));
    s.write(changes);
    assert_eq!(s.overlays[&(c.clone(), Seq(3))].by, user("alice"));
    // Repeated by the one who recalled it: the first result; by anyone else: refused.
    assert!(run(&mut s, &ctx(7_000, 12), recall(3)).is_ok());
    assert_rejected(&mut s, &ctx(7_000, 13), recall(5), Reason::SeqOutOfRange);
}

#[test]
fn mark_read_rules() {
    let mut s = MemState::default();
    for i in 0..3 {
        send(&mut s, i, "alice", "bob", "m", None).unwrap_or_else(|r| panic!("{r}"));
    }
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let mark = |seq: Option<u64>| Command::MarkRead { user: user("bob"), conversation: c.clone(), up_to: seq.map(Seq) };
    assert_rejected(&mut s, &ctx(10, 10), mark(Some(4)), Reason::SeqOutOfRange);
    assert_rejected(
        &mut s,
        &ctx(10, 10),
        Command::MarkRead { user: user("carol"), conversation: c.clone(), up_to: None },
        Reason::NotAMember,
    );
    let reply = |o: Outcome| match o {
        Ok(Applied { reply: Reply::ReadMarked { read_seq, unread }, .. }) => (read_seq.0, unread),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply(run(&mut s, &ctx(10, 11), mark(Some(2)))), (2, 1));
    // Backwards is a no-op, not an error.
    assert_eq!(reply(run(&mut s, &ctx(10, 12), mark(Some(1)))), (2, 1));
    assert_eq!(reply(run(&mut s, &ctx(10, 13), mark(None))), (3, 0));
}

#[test]
fn send_rejections_change_nothing() {
    let mut s = MemState::default();
    assert_rejected(
        &mut s,
        &ctx(1, 1),
        Command::SendMessage {
            sender: user("a1"),
            recipient: user("a1"),
            elements: text("x"),
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        },
        Reason::PeerIsSelf,
    );
    // With 8 shards, a conversation that lives elsewhere is refused by this shard.
    let (a, b) = (user("alice"), user("bob"));
    let home = shard_for(ConversationId::c2c(&a, &b).as_str(), 8);
    let elsewhere = ApplyContext { shard: ShardId((home.0 + 1) % 8), shards: 8, ..ctx(1, 1) };
    assert_rejected(
        &mut s,
        &elsewhere,
        Command::SendMessage {
            sender: a,
            recipient: b,
            elements: text("x"),
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        },
        Reason::WrongShard,
    );
}

#[test]
fn effects_apply_once_in_id_order() {
    let mut s = MemState::default();
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let region = RegionCode::parse("sg").unwrap_or_else(|e| panic!("{e}"));
    let effect = |id: u64| Effect {
        id: EffectId(id),
        source: EffectSource { region: region.clone(), epoch: 1, shard: ShardId(3) },
        kind: EffectKind::ConversationJoined {
            user: user("alice"),
            conversation: c.clone(),
            peer: user("bob"),
            at: TimeMs(1),
        },
    };
    let deliver = |s: &mut MemState, ids: &[u64]| {
        run(
            s,
            &ctx(1, 1),
            Command::ApplyEffects {
                source: ShardId(3),
                from_region: None,
                effects: ids.iter().map(|&i| effect(i)).collect(),
            },
        )
    };
    assert!(deliver(&mut s, &[1, 2]).is_ok());
    assert_eq!(s.watermarks[&(None, ShardId(3))], EffectId(2));
    let before = s.clone();
    assert!(deliver(&mut s, &[1, 2]).is_ok(), "redelivery is accepted");
    assert_eq!(s, before, "and changes nothing");
    assert_eq!(s.refs.len(), 1);
}

#[test]
fn create_user_is_idempotent() {
    let mut s = MemState::default();
    let region = RegionCode::parse("sg").unwrap_or_else(|r| panic!("{r}"));
    let cmd = Command::CreateUser { user: user("alice"), home_region: region, nickname: "A".into() };
    let created = |o: Outcome| match o {
        Ok(Applied { reply: Reply::UserCreated { created, .. }, .. }) => created,
        other => panic!("{other:?}"),
    };
    assert!(created(run(&mut s, &ctx(5, 1), cmd.clone())));
    let before = s.clone();
    assert!(!created(run(&mut s, &ctx(6, 2), cmd)));
    assert_eq!(s, before);
}

fn event_names(outcome: &Outcome) -> Vec<&'static str> {
    match outcome {
        Ok(applied) => applied.events.iter().map(Event::name).collect(),
        Err(r) => panic!("expected an accepted command, got {r}"),
    }
}

#[test]
fn accepted_commands_emit_their_events_and_repeats_emit_none() {
    let mut s = MemState::default();
    let region = RegionCode::parse("sg").unwrap_or_else(|r| panic!("{r}"));
    let create = |u: &str| Command::CreateUser { user: user(u), home_region: region.clone(), nickname: String::new() };
    assert_eq!(event_names(&run(&mut s, &ctx(1, 1), create("alice"))), vec!["UserCreated"]);
    assert_eq!(event_names(&run(&mut s, &ctx(2, 2), create("alice"))), Vec::<&str>::new(), "an import re-run");

    let first = send(&mut s, 10, "alice", "bob", "hello", Some("r-1"));
    // One shard: the pair's first message lists it for both members too (logic version 3).
    assert_eq!(event_names(&first), vec!["MessageSent", "ConversationJoined", "ConversationJoined"]);
    let Ok(Applied { events, .. }) = &first else { unreachable!() };
    let Event::MessageSent { seq, elements, request_id, .. } = &events[0] else { panic!("{events:?}") };
    assert_eq!(
        (*seq, elements.clone(), request_id.as_ref().map(RequestId::as_str)),
        (Seq(1), text("hello"), Some("r-1"))
    );
    assert!(event_names(&send(&mut s, 11, "alice", "bob", "hello", Some("r-1"))).is_empty(), "a duplicate");

    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let mark = |seq| Command::MarkRead { user: user("bob"), conversation: c.clone(), up_to: seq };
    assert_eq!(event_names(&run(&mut s, &ctx(12, 12), mark(None))), vec!["ReadMarked"]);
    assert!(event_names(&run(&mut s, &ctx(13, 13), mark(Some(Seq(1))))).is_empty(), "the cursor did not move");

    let recall = Command::RecallMessage { actor: user("alice"), conversation: c.clone(), seq: Seq(1), window_ms: 1000 };
    assert_eq!(event_names(&run(&mut s, &ctx(14, 14), recall.clone())), vec!["MessageRecalled"]);
    assert!(event_names(&run(&mut s, &ctx(15, 15), recall)).is_empty(), "a recall retried by its actor");
}

fn region(code: &str) -> RegionCode {
    RegionCode::parse(code).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_first_message_with_a_member_abroad_queues_that_join_for_the_member_s_region() {
    let mut s = MemState::default();
    let outcome = run(
        &mut s,
        &ctx(5, 5),
        Command::SendMessage {
            sender: user("alice"),
            recipient: user("hans"),
            elements: text("hallo"),
            request_id: None,
            sender_home: None,
            recipient_home: Some(region("de")),
            friends_only: false,
        },
    );
    assert_eq!(seq_of(&outcome), 1);
    let lanes: Vec<(Lane, String)> =
        s.outbox.iter().map(|(lane, kind)| (lane.clone(), kind.target_entity().into_owned())).collect();
    // Alice's index is on this (the only) shard: listed inline; Hans's goes to his region.
    assert_eq!(lanes, vec![(Lane::Region(region("de")), "hans".to_owned())]);
    assert_eq!(joins_of(&outcome), vec!["alice".to_owned()]);
    // A member whose home is named as this very region is listed like one without a home.
    let mut t = MemState::default();
    let outcome = run(
        &mut t,
        &ctx(5, 5),
        Command::SendMessage {
            sender: user("alice"),
            recipient: user("bob"),
            elements: text("hi"),
            request_id: None,
            sender_home: Some(region("sg")),
            recipient_home: None,
            friends_only: false,
        },
    );
    assert!(t.outbox.is_empty(), "{:?}", t.outbox);
    assert_eq!(joins_of(&outcome), vec!["alice".to_owned(), "bob".to_owned()]);
}

#[test]
fn effects_from_another_region_apply_once_under_their_own_watermark() {
    let mut s = MemState::default();
    let c = ConversationId::c2c(&user("alice"), &user("hans"));
    let effect = |id: u64, from: &str| Effect {
        id: EffectId(id),
        source: EffectSource { region: region(from), epoch: 1, shard: ShardId(2) },
        kind: EffectKind::ConversationJoined {
            user: user("alice"),
            conversation: c.clone(),
            peer: user("hans"),
            at: TimeMs(1),
        },
    };
    let deliver = |s: &mut MemState, ids: &[u64], from: &str| {
        run(
            s,
            &ctx(1, 1),
            Command::ApplyEffects {
                source: ShardId(2),
                from_region: Some(region("de")),
                effects: ids.iter().map(|&i| effect(i, from)).collect(),
            },
        )
    };
    let applied = deliver(&mut s, &[7], "de").unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        applied.events,
        vec![Event::ConversationJoined {
            user: user("alice"),
            conversation: c.clone(),
            peer: user("hans"),
            at: TimeMs(1),
            home: Some(region("de")),
        }]
    );
    assert_eq!(s.watermarks[&(Some(region("de")), ShardId(2))], EffectId(7));
    assert!(!s.watermarks.contains_key(&(None, ShardId(2))), "the local watermark of shard 2 is another one");
    let before = s.clone();
    assert!(deliver(&mut s, &[7], "de").is_ok());
    assert_eq!(s, before, "a redelivery changes nothing");
    // An effect claiming another source region than the batch is skipped.
    assert!(deliver(&mut s, &[8], "kr").is_ok());
    assert_eq!(s.watermarks[&(Some(region("de")), ShardId(2))], EffectId(7));
    // Effects of this very region never come with a source region.
    assert_rejected(
        &mut s,
        &ctx(1, 1),
        Command::ApplyEffects { source: ShardId(2), from_region: Some(region("sg")), effects: vec![] },
        Reason::RegionInvalid,
    );
}

#[test]
fn the_first_claim_of_a_directory_key_wins() {
    let mut s = MemState::default();
    let key = DirectoryKey::parse(&"ab".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
    let claim = |s: &mut MemState, by: &str| match run(
        s,
        &ctx(1, 1),
        Command::ClaimId { key: key.clone(), region: region(by) },
    ) {
        Ok(Applied { reply: Reply::Claimed { region }, events, .. }) => (region, events.len()),
        other => panic!("{other:?}"),
    };
    assert_eq!(claim(&mut s, "de"), (region("de"), 1));
    assert_eq!(claim(&mut s, "sg"), (region("de"), 0), "a later claim learns the holder and changes nothing");
    assert_eq!(claim(&mut s, "de"), (region("de"), 0), "a repeat is a no-op");
    assert_eq!(s.claims.len(), 1);
    assert!(DirectoryKey::parse("alice").is_err());
}

fn gid(s: &str) -> GroupId {
    GroupId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn group_changed(outcome: &Outcome) -> (u64, bool) {
    match outcome {
        Ok(Applied { reply: Reply::GroupChanged { member_count, changed, .. }, .. }) => (*member_count, *changed),
        other => panic!("expected a group change, got {other:?}"),
    }
}

fn create_group(s: &mut MemState, kind: GroupKind, cap: u64, members: &[&str]) -> Outcome {
    run(
        s,
        &ctx(1_000, 1),
        Command::CreateGroup {
            group: gid("g1"),
            kind,
            owner: user("own"),
            name: "team".into(),
            max_members: cap,
            members: members.iter().map(|m| user(m)).collect(),
            hide_history: false,
            homes: vec![],
        },
    )
}

fn add(s: &mut MemState, time: i64, actor: &str, users: &[&str]) -> Outcome {
    run(
        s,
        &ctx(time, time as u64),
        Command::AddGroupMembers {
            actor: user(actor),
            group: gid("g1"),
            users: users.iter().map(|u| user(u)).collect(),
            hidden: false,
            homes: vec![],
        },
    )
}

fn gsend(s: &mut MemState, time: i64, sender: &str, rid: Option<&str>) -> Outcome {
    run(
        s,
        &ctx(time, time as u64),
        Command::SendGroupMessage {
            sender: user(sender),
            group: gid("g1"),
            elements: text("hello group"),
            request_id: rid.map(|r| RequestId::parse(r).unwrap_or_else(|e| panic!("{e}"))),
            mentions: vec![],
            at_all: false,
        },
    )
}

#[test]
fn a_work_group_is_joined_by_invitation_up_to_its_cap() {
    let mut s = MemState::default();
    assert_eq!(group_changed(&create_group(&mut s, GroupKind::Work, 4, &["ann", "bob"])), (3, true));
    assert_eq!(s.groups[&gid("g1")].member_count, 3);
    assert_eq!(s.members[&(gid("g1"), user("own"))].role, GroupRole::Owner);
    assert_eq!(s.outbox.len(), 3, "each member's list learns of the group");
    // A repeat of the create by its owner changes nothing; another owner is refused.
    assert_eq!(group_changed(&create_group(&mut s, GroupKind::Work, 4, &["ann", "bob"])), (3, false));
    let other = Command::CreateGroup {
        group: gid("g1"),
        kind: GroupKind::Work,
        owner: user("eve"),
        name: String::new(),
        max_members: 4,
        members: vec![],
        hide_history: false,
        homes: vec![],
    };
    assert_rejected(&mut s, &ctx(2, 2), other, Reason::GroupExists);
    // A non-member cannot add, nor join a work group by themselves.
    assert_rejected(
        &mut s,
        &ctx(3, 3),
        Command::AddGroupMembers {
            actor: user("eve"),
            group: gid("g1"),
            users: vec![user("eve")],
            hidden: false,
            homes: vec![],
        },
        Reason::PermissionDenied,
    );
    // Any member invites; the cap refuses the whole command.
    assert_eq!(group_changed(&add(&mut s, 4, "ann", &["cat"])), (4, true));
    assert_rejected(
        &mut s,
        &ctx(5, 5),
        Command::AddGroupMembers {
            actor: user("ann"),
            group: gid("g1"),
            users: vec![user("dan")],
            hidden: false,
            homes: vec![],
        },
        Reason::GroupMemberLimit,
    );
    // Adding a member again changes nothing.
    assert_eq!(group_changed(&add(&mut s, 6, "own", &["cat"])), (4, false));
}

#[test]
fn join_rules_follow_the_group_type() {
    for (kind, self_join) in
        [(GroupKind::Public, false), (GroupKind::Meeting, true), (GroupKind::Community, true), (GroupKind::Work, false)]
    {
        let mut s = MemState::default();
        create_group(&mut s, kind, 10, &[]).unwrap_or_else(|r| panic!("{r}"));
        let joined = add(&mut s, 2, "zed", &["zed"]);
        assert_eq!(joined.is_ok(), self_join, "{kind:?}: {joined:?}");
        if !self_join {
            assert_eq!(joined.expect_err("refused").reason, Reason::PermissionDenied);
        }
        // The owner adds anyone whatever the type.
        assert!(add(&mut s, 3, "own", &["amy"]).is_ok(), "{kind:?}");
        // A plain member adds others only in a work group.
        assert_eq!(add(&mut s, 4, "amy", &["bo"]).is_ok(), kind == GroupKind::Work, "{kind:?}");
    }
}

#[test]
fn group_sends_are_gapless_for_members_only_and_refused_while_muted() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Work, 10, &["ann", "bob"]).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(seq_of(&gsend(&mut s, 10, "ann", Some("r1"))), 1);
    assert_eq!(seq_of(&gsend(&mut s, 11, "bob", None)), 2);
    assert_eq!(seq_of(&gsend(&mut s, 12, "ann", Some("r1"))), 1, "a retried request id gives the first result");
    let before = s.clone();
    assert_eq!(gsend(&mut s, 13, "eve", None).expect_err("refused").reason, Reason::NotGroupMember);
    assert_eq!(s, before);
    // Unread is the head minus the member's cursor; sending moves one's own cursor.
    let stream = ConversationId::group(&gid("g1"));
    let last = s.conversations[&stream].last_seq;
    assert_eq!(last, Seq(2));
    assert_eq!(s.members[&(gid("g1"), user("own"))].read_seq, Seq(0));
    assert_eq!(s.members[&(gid("g1"), user("bob"))].read_seq, Seq(2));
    let read = run(
        &mut s,
        &ctx(14, 14),
        Command::MarkRead { user: user("own"), conversation: stream.clone(), up_to: Some(Seq(1)) },
    );
    assert!(matches!(read, Ok(Applied { reply: Reply::ReadMarked { read_seq: Seq(1), unread: 1 }, .. })), "{read:?}");
    // The owner mutes bob for 1 s: refused until then, accepted after.
    let mute = Command::MuteGroupMember { actor: user("own"), group: gid("g1"), user: user("bob"), duration_ms: 1_000 };
    assert!(run(&mut s, &ctx(100, 15), mute).is_ok());
    assert_eq!(gsend(&mut s, 500, "bob", None).expect_err("refused").reason, Reason::MemberMuted);
    assert_eq!(seq_of(&gsend(&mut s, 1_100, "bob", None)), 3);
    // A plain member may not mute; nobody mutes the owner.
    let by_member =
        Command::MuteGroupMember { actor: user("ann"), group: gid("g1"), user: user("bob"), duration_ms: 5 };
    assert_rejected(&mut s, &ctx(1_200, 16), by_member, Reason::PermissionDenied);
}

#[test]
fn leaving_kicking_and_dismissing() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Public, 10, &["ann", "bob", "cat"]).unwrap_or_else(|r| panic!("{r}"));
    let remove =
        |actor: &str, u: &str| Command::RemoveGroupMember { actor: user(actor), group: gid("g1"), user: user(u) };
    assert_rejected(&mut s, &ctx(2, 2), remove("own", "own"), Reason::PermissionDenied);
    assert_rejected(&mut s, &ctx(3, 3), remove("ann", "bob"), Reason::PermissionDenied);
    assert_eq!(group_changed(&run(&mut s, &ctx(4, 4), remove("ann", "ann"))), (3, true));
    assert_eq!(group_changed(&run(&mut s, &ctx(5, 5), remove("own", "bob"))), (2, true));
    assert_eq!(group_changed(&run(&mut s, &ctx(6, 6), remove("own", "bob"))), (2, false), "a repeat");
    assert!(!s.members.contains_key(&(gid("g1"), user("bob"))));
    assert_rejected(
        &mut s,
        &ctx(7, 7),
        Command::DismissGroup { actor: user("cat"), group: gid("g1") },
        Reason::PermissionDenied,
    );
    assert!(run(&mut s, &ctx(8, 8), Command::DismissGroup { actor: user("own"), group: gid("g1") }).is_ok());
    assert_eq!(gsend(&mut s, 9, "cat", None).expect_err("refused").reason, Reason::GroupDismissed);
}

#[test]
fn a_live_room_keeps_no_member_state_and_anyone_sends() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::AvChatRoom, u64::MAX, &["ann"]).unwrap_or_else(|r| panic!("{r}"));
    assert!(s.members.is_empty(), "{:?}", s.members);
    assert_eq!(group_changed(&add(&mut s, 2, "zed", &["zed"])), (0, false));
    assert!(s.members.is_empty());
    assert_eq!(seq_of(&gsend(&mut s, 3, "zed", None)), 1);
}

#[test]
fn a_group_send_writes_the_same_records_whatever_the_group_size() {
    let count_changes = |members: usize| {
        let mut s = MemState::default();
        let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        create_group(&mut s, GroupKind::Community, 100_000, &refs).unwrap_or_else(|r| panic!("{r}"));
        let sent = gsend(&mut s, 10, "m0", Some("rid")).unwrap_or_else(|r| panic!("{r}"));
        (sent.events.len(), sent.changes.len())
    };
    assert_eq!(count_changes(10), count_changes(400));
    assert_eq!(count_changes(10), (1, 4), "message, head, the sender's cursor, the request-id record");
}

#[test]
fn the_owner_appoints_admins_and_hands_the_group_over() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Public, 10, &["ann", "bob"]).unwrap_or_else(|r| panic!("{r}"));
    let role = |actor: &str, u: &str, role| Command::SetGroupRole {
        actor: user(actor),
        group: gid("g1"),
        user: user(u),
        role,
    };
    assert_rejected(&mut s, &ctx(2, 2), role("ann", "bob", GroupRole::Admin), Reason::PermissionDenied);
    assert_eq!(group_changed(&run(&mut s, &ctx(3, 3), role("own", "ann", GroupRole::Admin))), (3, true));
    assert_eq!(group_changed(&run(&mut s, &ctx(4, 4), role("own", "ann", GroupRole::Admin))), (3, false), "a repeat");
    // An admin adds to a public group and kicks plain members, not other admins.
    assert!(add(&mut s, 5, "ann", &["cat"]).is_ok());
    let kick =
        |actor: &str, u: &str| Command::RemoveGroupMember { actor: user(actor), group: gid("g1"), user: user(u) };
    assert!(run(&mut s, &ctx(6, 6), kick("ann", "cat")).is_ok());
    // The owner hands the group to bob and becomes a plain member.
    let transfer =
        |actor: &str, to: &str| Command::TransferGroup { actor: user(actor), group: gid("g1"), to: user(to) };
    assert_rejected(&mut s, &ctx(7, 7), transfer("ann", "bob"), Reason::PermissionDenied);
    assert_rejected(&mut s, &ctx(8, 8), transfer("own", "eve"), Reason::NotGroupMember);
    assert_eq!(group_changed(&run(&mut s, &ctx(9, 9), transfer("own", "bob"))), (3, true));
    assert_eq!(s.groups[&gid("g1")].owner, user("bob"));
    assert_eq!(s.members[&(gid("g1"), user("bob"))].role, GroupRole::Owner);
    assert_eq!(s.members[&(gid("g1"), user("own"))].role, GroupRole::Member);
    assert_eq!(
        group_changed(&run(&mut s, &ctx(10, 10), transfer("bob", "bob"))),
        (3, false),
        "a repeat by the new owner"
    );
    // The former owner may now leave; the new one may not.
    assert!(run(&mut s, &ctx(11, 11), kick("own", "own")).is_ok());
    assert_rejected(&mut s, &ctx(12, 12), kick("bob", "bob"), Reason::PermissionDenied);
}

#[test]
fn hidden_members_mentions_recalls_and_history_for_newcomers() {
    let mut s = MemState::default();
    let create = Command::CreateGroup {
        group: gid("g1"),
        kind: GroupKind::Work,
        owner: user("own"),
        name: String::new(),
        max_members: 10,
        members: vec![user("ann"), user("bob")],
        hide_history: true,
        homes: vec![],
    };
    run(&mut s, &ctx(1, 1), create).unwrap_or_else(|r| panic!("{r}"));
    let hidden = |actor: &str, u: &str| Command::AddGroupMembers {
        actor: user(actor),
        group: gid("g1"),
        users: vec![user(u)],
        hidden: true,
        homes: vec![],
    };
    assert_rejected(&mut s, &ctx(2, 2), hidden("ann", "spy"), Reason::PermissionDenied);
    assert!(run(&mut s, &ctx(3, 3), hidden("own", "spy")).is_ok());
    assert!(s.members[&(gid("g1"), user("spy"))].hidden);
    // Mentions flag the mentioned members only; @all is for the owner and admins.
    let send = |sender: &str, mentions: &[&str], at_all: bool| Command::SendGroupMessage {
        sender: user(sender),
        group: gid("g1"),
        elements: text("look"),
        request_id: None,
        mentions: mentions.iter().map(|m| user(m)).collect(),
        at_all,
    };
    assert!(run(&mut s, &ctx(10, 10), send("ann", &["bob", "nobody"], false)).is_ok());
    assert_eq!(s.members[&(gid("g1"), user("bob"))].mention_seq, Seq(1));
    assert_eq!(s.members[&(gid("g1"), user("own"))].mention_seq, Seq(0));
    assert_rejected(&mut s, &ctx(11, 11), send("ann", &[], true), Reason::PermissionDenied);
    assert!(run(&mut s, &ctx(12, 12), send("own", &[], true)).is_ok());
    assert_eq!(s.groups[&gid("g1")].at_all_seq, Seq(2));
    // A newcomer of a group that hides its history reads from their joining on.
    assert!(add(&mut s, 13, "ann", &["cat"]).is_ok());
    assert_eq!(s.members[&(gid("g1"), user("cat"))].visible_from, Seq(3));
    // Recall: the sender within the window, the owner at any time, nobody else.
    let recall = |actor: &str, seq: u64, window_ms: u64| Command::RecallMessage {
        actor: user(actor),
        conversation: ConversationId::group(&gid("g1")),
        seq: Seq(seq),
        window_ms,
    };
    assert_rejected(&mut s, &ctx(20, 20), recall("bob", 1, 60_000), Reason::NotMessageSender);
    assert_rejected(&mut s, &ctx(100_000, 21), recall("ann", 1, 60_000), Reason::RecallWindowExpired);
    assert!(run(&mut s, &ctx(100_001, 22), recall("own", 1, 60_000)).is_ok());
    let stream = ConversationId::group(&gid("g1"));
    let tomb = &s.messages[&(stream, Seq(1))];
    assert!(tomb.elements.is_empty() && tomb.recalled.as_ref().map(|r| r.by.clone()) == Some(user("own")));
}

#[test]
fn a_block_reaches_the_conversation_and_stops_the_blocked_user_s_sends() {
    let mut s = MemState::default();
    assert_eq!(seq_of(&send(&mut s, 1, "bob", "alice", "hi", Some("r1"))), 1);
    let block = |blocked| Command::SetBlocked {
        user: user("alice"),
        target: user("bob"),
        blocked,
        conversation_home: None,
        max_blocked: 1000,
    };
    assert!(run(&mut s, &ctx(2, 2), block(true)).is_ok());
    assert!(s.blocked.contains(&(user("alice"), user("bob"))));
    let before = s.outbox.len();
    assert!(run(&mut s, &ctx(3, 3), block(true)).is_ok(), "a repeat");
    assert_eq!(s.outbox.len(), before, "a repeat emits nothing");
    // Deliver the block to the conversation, as the outbox pump would.
    let (lane, kind) = s.outbox.last().cloned().unwrap_or_else(|| panic!("no effect"));
    assert!(matches!(lane, Lane::Shard(_)));
    let effect = Effect {
        id: EffectId(1),
        source: EffectSource {
            region: RegionCode::parse("sg").unwrap_or_else(|e| panic!("{e}")),
            epoch: 1,
            shard: ShardId(0),
        },
        kind,
    };
    let deliver = Command::ApplyEffects { source: ShardId(0), from_region: None, effects: vec![effect] };
    assert!(run(&mut s, &ctx(4, 4), deliver).is_ok());
    assert_eq!(send(&mut s, 5, "bob", "alice", "hello?", None).expect_err("refused").reason, Reason::Blocked);
    assert_eq!(
        seq_of(&send(&mut s, 6, "bob", "alice", "hi", Some("r1"))),
        1,
        "a retry of an earlier send keeps its result"
    );
    assert_eq!(seq_of(&send(&mut s, 7, "alice", "bob", "I can still write", None)), 2);
}

#[test]
fn profiles_take_partial_updates_within_their_limits() {
    let mut s = MemState::default();
    let region = RegionCode::parse("sg").unwrap_or_else(|e| panic!("{e}"));
    run(&mut s, &ctx(1, 1), Command::CreateUser { user: user("ann"), home_region: region, nickname: "Ann".into() })
        .unwrap_or_else(|r| panic!("{r}"));
    let set = |fields: &[(&str, &str)]| Command::SetProfile {
        user: user("ann"),
        fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    assert!(run(&mut s, &ctx(2, 2), set(&[("signature", "hi"), ("gender", "female"), ("custom.team", "blue")])).is_ok());
    assert!(run(&mut s, &ctx(3, 3), set(&[("signature", "")])).is_ok(), "an empty value removes");
    let profile = &s.profiles[&user("ann")];
    assert_eq!(profile.keys().collect::<Vec<_>>(), vec!["custom.team", "gender"]);
    let many: Vec<(String, String)> = (0..21).map(|i| (format!("custom.k{i}"), "v".to_owned())).collect();
    let too_many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_rejected(&mut s, &ctx(4, 4), set(&too_many), Reason::ProfileFieldInvalid);
    assert!(meridian_domain::profile::check_field("gender", "other").is_err());
    assert!(meridian_domain::profile::check_field("birthday", "1990-01-01").is_err());
    assert!(meridian_domain::profile::check_field("shoe_size", "42").is_err());
    let unknown = Command::SetProfile { user: user("zed"), fields: vec![("signature".into(), "x".into())] };
    assert_rejected(&mut s, &ctx(5, 5), unknown, Reason::UnknownUser);
}

#[test]
fn a_blocklist_holds_up_to_its_cap() {
    let mut s = MemState::default();
    let block = |target: &str, blocked| Command::SetBlocked {
        user: user("alice"),
        target: user(target),
        blocked,
        conversation_home: None,
        max_blocked: 2,
    };
    assert!(run(&mut s, &ctx(1, 1), block("b1", true)).is_ok());
    assert!(run(&mut s, &ctx(2, 2), block("b2", true)).is_ok());
    assert_rejected(&mut s, &ctx(3, 3), block("b3", true), Reason::BlocklistLimit);
    assert!(run(&mut s, &ctx(4, 4), block("b1", false)).is_ok());
    assert!(run(&mut s, &ctx(5, 5), block("b3", true)).is_ok(), "room again after an unblock");
    assert_eq!(s.block_counts[&user("alice")], 2);
}

/// Delivers every effect queued so far (one shard holds everything here), as the outbox pump
/// would, and empties the outbox.
fn deliver_all(s: &mut MemState, time: i64, next_id: &mut u64) {
    while !s.outbox.is_empty() {
        let queued = std::mem::take(&mut s.outbox);
        let effects = queued
            .into_iter()
            .map(|(_, kind)| {
                *next_id += 1;
                Effect {
                    id: EffectId(*next_id),
                    source: EffectSource { region: region("sg"), epoch: 1, shard: ShardId(0) },
                    kind,
                }
            })
            .collect();
        let deliver = Command::ApplyEffects { source: ShardId(0), from_region: None, effects };
        run(s, &ctx(time, time as u64), deliver).unwrap_or_else(|r| panic!("{r}"));
    }
}

fn new_user(s: &mut MemState, name: &str, policy: Option<&str>) {
    run(s, &ctx(1, 1), Command::CreateUser { user: user(name), home_region: region("sg"), nickname: name.into() })
        .unwrap_or_else(|r| panic!("{r}"));
    if let Some(p) = policy {
        let set = Command::SetProfile { user: user(name), fields: vec![("add_friend".into(), p.into())] };
        run(s, &ctx(1, 1), set).unwrap_or_else(|r| panic!("{r}"));
    }
}

fn add_friend(from: &str, to: &str, max_pending: u64) -> Command {
    Command::AddFriend {
        user: user(from),
        target: user(to),
        message: "hi, it's me".into(),
        remark: format!("{to} from work"),
        user_home: None,
        conversation_home: None,
        max_friends: 2,
        max_pending,
    }
}

fn friend_state(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(Applied { reply: Reply::Friend { state }, .. }) => state.name(),
        other => panic!("expected a friend reply, got {other:?}"),
    }
}

fn friends_of(s: &MemState, who: &str) -> Vec<String> {
    s.friends.keys().filter(|(u, _)| u.as_str() == who).map(|(_, f)| f.to_string()).collect()
}

fn respond(from: &str, to: &str, accept: bool) -> Command {
    Command::RespondFriendRequest {
        user: user(to),
        from: user(from),
        accept,
        remark: String::new(),
        from_home: None,
        conversation_home: None,
        max_friends: 2,
    }
}

#[test]
fn friend_requests_follow_the_target_s_policy() {
    let mut s = MemState::default();
    let mut ids = 0;
    new_user(&mut s, "ann", None);
    new_user(&mut s, "bea", Some("need_confirm"));
    new_user(&mut s, "cid", Some("deny_any"));
    new_user(&mut s, "dan", None);

    // allow_any: both lists at once (the requester's through the outbox), with the remark.
    assert_eq!(friend_state(&run(&mut s, &ctx(2, 2), add_friend("bea", "ann", 5))), "added");
    deliver_all(&mut s, 3, &mut ids);
    assert_eq!(friends_of(&s, "ann"), vec!["bea"]);
    assert_eq!(friends_of(&s, "bea"), vec!["ann"]);
    assert_eq!(s.friends[&(user("bea"), user("ann"))].remark, "ann from work");
    let pair = ConversationId::c2c(&user("ann"), &user("bea"));
    assert!(s.pair_friends.contains(&(pair.clone(), user("ann"))) && s.pair_friends.contains(&(pair, user("bea"))));

    // need_confirm: waits, then accept settles both sides; a second answer finds nothing.
    assert_eq!(friend_state(&run(&mut s, &ctx(4, 4), add_friend("dan", "bea", 5))), "pending");
    assert_eq!(s.friend_counts[&user("bea")].pending, 1);
    assert!(friends_of(&s, "dan").is_empty());
    assert_eq!(friend_state(&run(&mut s, &ctx(5, 5), respond("dan", "bea", true))), "added");
    deliver_all(&mut s, 6, &mut ids);
    assert_eq!(friends_of(&s, "bea"), vec!["ann", "dan"]);
    assert_eq!(friends_of(&s, "dan"), vec!["bea"]);
    assert_eq!(s.friend_counts[&user("bea")], FriendCounts { friends: 2, pending: 0 });
    assert_eq!(friend_state(&run(&mut s, &ctx(7, 7), respond("dan", "bea", true))), "added", "a repeat");
    assert_rejected(&mut s, &ctx(7, 7), respond("dan", "bea", false), Reason::FriendRequestNotFound);

    // A rejection drops the request and lists no one; deny_any refuses at once.
    new_user(&mut s, "eve", None);
    assert_eq!(friend_state(&run(&mut s, &ctx(8, 8), add_friend("eve", "bea", 5))), "pending");
    assert_eq!(friend_state(&run(&mut s, &ctx(9, 9), respond("eve", "bea", false))), "rejected");
    assert!(s.requests.is_empty());
    assert_rejected(&mut s, &ctx(10, 10), add_friend("ann", "cid", 5), Reason::FriendAddDenied);

    // Caps: bea has 2 friends (the cap here); requests wait up to max_pending.
    new_user(&mut s, "fay", None);
    assert_rejected(&mut s, &ctx(11, 11), add_friend("fay", "ann", 5).with_target_cap(1), Reason::FriendLimit);
    assert_eq!(friend_state(&run(&mut s, &ctx(12, 12), add_friend("fay", "bea", 1))), "pending");
    assert_rejected(&mut s, &ctx(13, 13), add_friend("eve", "bea", 1), Reason::FriendRequestLimit);
    assert_eq!(friend_state(&run(&mut s, &ctx(14, 14), add_friend("fay", "bea", 1))), "pending", "a repeat fits");
    assert_rejected(&mut s, &ctx(15, 15), respond("fay", "bea", true), Reason::FriendLimit);

    // Blocked requesters are refused.
    let block = Command::SetBlocked {
        user: user("dan"),
        target: user("eve"),
        blocked: true,
        conversation_home: None,
        max_blocked: 10,
    };
    run(&mut s, &ctx(16, 16), block).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 17, &mut ids);
    assert_rejected(&mut s, &ctx(18, 18), add_friend("eve", "dan", 5), Reason::Blocked);
}

trait TargetCap {
    fn with_target_cap(self, cap: u64) -> Self;
}

impl TargetCap for Command {
    fn with_target_cap(self, cap: u64) -> Self {
        match self {
            Command::AddFriend { user, target, message, remark, user_home, conversation_home, max_pending, .. } => {
                Command::AddFriend {
                    user,
                    target,
                    message,
                    remark,
                    user_home,
                    conversation_home,
                    max_friends: cap,
                    max_pending,
                }
            }
            other => other,
        }
    }
}

#[test]
fn deletes_remarks_and_friends_only_sends() {
    let mut s = MemState::default();
    let mut ids = 0;
    new_user(&mut s, "ann", None);
    new_user(&mut s, "bea", None);
    new_user(&mut s, "cid", None);
    run(&mut s, &ctx(2, 2), add_friend("bea", "ann", 5)).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 3, &mut ids);

    let fsend = |s: &mut MemState, t: i64, from: &str, to: &str| {
        let cmd = Command::SendMessage {
            sender: user(from),
            recipient: user(to),
            elements: text("hi"),
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: true,
        };
        run(s, &ctx(t, t as u64), cmd)
    };
    assert_eq!(seq_of(&fsend(&mut s, 4, "ann", "bea")), 1);
    assert_eq!(fsend(&mut s, 5, "cid", "ann").expect_err("not a friend").reason, Reason::NotFriend);
    assert!(!s.conversations.contains_key(&ConversationId::c2c(&user("ann"), &user("cid"))));

    let remark = |r: &str| Command::SetFriendRemark { user: user("ann"), friend: user("bea"), remark: r.into() };
    run(&mut s, &ctx(6, 6), remark("B.")).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.friends[&(user("ann"), user("bea"))].remark, "B.");
    let stranger = Command::SetFriendRemark { user: user("ann"), friend: user("cid"), remark: "x".into() };
    assert_rejected(&mut s, &ctx(7, 7), stranger, Reason::NotFriend);
    assert_rejected(&mut s, &ctx(7, 7), remark(&"x".repeat(97)), Reason::FriendFieldInvalid);

    // One-way: ann drops bea; bea keeps ann, so ann may still write to bea but not back.
    let delete = |both| Command::DeleteFriend {
        user: user("ann"),
        friend: user("bea"),
        both,
        friend_home: None,
        conversation_home: None,
    };
    run(&mut s, &ctx(8, 8), delete(false)).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 9, &mut ids);
    assert!(friends_of(&s, "ann").is_empty());
    assert_eq!(friends_of(&s, "bea"), vec!["ann"]);
    assert_eq!(seq_of(&fsend(&mut s, 10, "ann", "bea")), 2);
    assert_eq!(fsend(&mut s, 11, "bea", "ann").expect_err("one-way").reason, Reason::NotFriend);

    // Both: bea's entry goes too, even though ann's was already gone.
    run(&mut s, &ctx(12, 12), delete(true)).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 13, &mut ids);
    assert!(friends_of(&s, "bea").is_empty());
    assert_eq!(s.friend_counts[&user("bea")].friends, 0);
    assert_eq!(fsend(&mut s, 14, "ann", "bea").expect_err("no longer").reason, Reason::NotFriend);
    assert!(s.pair_friends.is_empty());
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn apply_to_join(s: &mut MemState, time: i64, who: &str) -> Outcome {
    let cmd =
        Command::ApplyToJoinGroup { user: user(who), group: gid("g1"), message: "let me in".into(), homes: vec![] };
    run(s, &ctx(time, time as u64), cmd)
}

fn pending_of(outcome: &Outcome) -> bool {
    match outcome {
        Ok(Applied { reply: Reply::GroupApplication { pending, .. }, .. }) => *pending,
        other => panic!("expected an application reply, got {other:?}"),
    }
}

#[test]
fn profiles_applications_mute_all_and_bans() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Public, 4, &["adm", "ann"]).unwrap_or_else(|r| panic!("{r}"));
    let role =
        Command::SetGroupRole { actor: user("own"), group: gid("g1"), user: user("adm"), role: GroupRole::Admin };
    run(&mut s, &ctx(2, 2), role).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.groups[&gid("g1")].join_option, JoinOption::NeedApproval);

    // Profile: owner and admins; a plain member of a public group may not.
    let set = |actor: &str, f: &[(&str, &str)]| Command::SetGroupProfile {
        actor: user(actor),
        group: gid("g1"),
        fields: fields(f),
        type_cap: 100,
    };
    run(&mut s, &ctx(3, 3), set("adm", &[("introduction", "we talk"), ("custom.level", "3"), ("name", "crew")]))
        .unwrap_or_else(|r| panic!("{r}"));
    let g = &s.groups[&gid("g1")];
    assert_eq!((g.name.as_str(), g.profile.len()), ("crew", 2));
    assert_rejected(&mut s, &ctx(4, 4), set("ann", &[("notification", "hi")]), Reason::PermissionDenied);
    assert_rejected(&mut s, &ctx(4, 4), set("own", &[("introduction", &"x".repeat(241))]), Reason::GroupFieldInvalid);
    assert_rejected(&mut s, &ctx(4, 4), set("own", &[("join_option", "sometimes")]), Reason::GroupFieldInvalid);
    // The cap moves within the type's (100 here) and never below the members there are (3).
    run(&mut s, &ctx(4, 4), set("own", &[("max_members", "50")])).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.groups[&gid("g1")].max_members, 50);
    assert_rejected(&mut s, &ctx(4, 4), set("own", &[("max_members", "2")]), Reason::GroupMemberLimit);
    assert_rejected(&mut s, &ctx(4, 4), set("own", &[("max_members", "101")]), Reason::GroupMemberLimit);
    assert_rejected(&mut s, &ctx(4, 4), set("own", &[("max_members", "many")]), Reason::GroupFieldInvalid);
    run(&mut s, &ctx(4, 4), set("own", &[("max_members", "4")])).unwrap_or_else(|r| panic!("{r}"));

    // Member info: your own name card; an admin sets a plain member's; not the owner's.
    let info = |actor: &str, who: &str, f: &[(&str, &str)]| Command::SetGroupMemberInfo {
        actor: user(actor),
        group: gid("g1"),
        user: user(who),
        fields: fields(f),
    };
    run(&mut s, &ctx(5, 5), info("ann", "ann", &[("name_card", "Annie"), ("recv_opt", "no_notify")]))
        .unwrap_or_else(|r| panic!("{r}"));
    run(&mut s, &ctx(5, 5), info("adm", "ann", &[("custom.team", "blue")])).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.members[&(gid("g1"), user("ann"))].info.len(), 3);
    assert_rejected(&mut s, &ctx(6, 6), info("adm", "own", &[("name_card", "boss")]), Reason::PermissionDenied);
    assert_rejected(&mut s, &ctx(6, 6), info("adm", "ann", &[("recv_opt", "reject")]), Reason::PermissionDenied);

    // Applications: a public group takes them; approve and reject; the cap holds.
    assert!(pending_of(&apply_to_join(&mut s, 7, "bob")));
    assert!(pending_of(&apply_to_join(&mut s, 7, "cat")));
    assert_eq!(s.groups[&gid("g1")].applications, 2);
    let answer = |actor: &str, who: &str, approve| Command::RespondJoinRequest {
        actor: user(actor),
        group: gid("g1"),
        user: user(who),
        approve,
        homes: vec![],
    };
    assert_rejected(&mut s, &ctx(8, 8), answer("ann", "bob", true), Reason::PermissionDenied);
    assert_eq!(group_changed(&run(&mut s, &ctx(8, 8), answer("adm", "bob", true))), (4, true));
    assert_rejected(&mut s, &ctx(9, 9), answer("adm", "cat", true), Reason::GroupMemberLimit);
    run(&mut s, &ctx(9, 9), answer("adm", "cat", false)).unwrap_or_else(|r| panic!("{r}"));
    assert_rejected(&mut s, &ctx(10, 10), answer("adm", "cat", false), Reason::GroupApplicationNotFound);
    assert_eq!(s.groups[&gid("g1")].applications, 0);
    assert!(s.applications.is_empty());

    // Mute all: plain members refused, admins still send.
    let mute_all = |muted| Command::MuteAllGroup { actor: user("adm"), group: gid("g1"), muted };
    run(&mut s, &ctx(11, 11), mute_all(true)).unwrap_or_else(|r| panic!("{r}"));
    assert_rejected(&mut s, &ctx(12, 12), gsend_cmd("ann"), Reason::MemberMuted);
    assert!(gsend(&mut s, 12, "adm", None).is_ok());
    run(&mut s, &ctx(13, 13), mute_all(false)).unwrap_or_else(|r| panic!("{r}"));
    assert!(gsend(&mut s, 14, "ann", None).is_ok());

    // Ban: removes the member; no return while it lasts; lifted by duration 0.
    let ban = |who: &str, ms| Command::BanGroupMember {
        actor: user("adm"),
        group: gid("g1"),
        user: user(who),
        duration_ms: ms,
    };
    assert_eq!(group_changed(&run(&mut s, &ctx(20, 20), ban("bob", 1_000))), (3, true));
    assert!(!s.members.contains_key(&(gid("g1"), user("bob"))));
    assert_rejected(&mut s, &ctx(21, 21), ban("own", 1_000), Reason::PermissionDenied);
    let readd = |t: i64| {
        let cmd = Command::AddGroupMembers {
            actor: user("own"),
            group: gid("g1"),
            users: vec![user("bob")],
            hidden: false,
            homes: vec![],
        };
        (ctx(t, t as u64), cmd)
    };
    let (c, cmd) = readd(500);
    assert_rejected(&mut s, &c, cmd, Reason::MemberBanned);
    assert_eq!(apply_to_join(&mut s, 600, "bob").expect_err("banned").reason, Reason::MemberBanned);
    let (c, cmd) = readd(1_021);
    assert!(run(&mut s, &c, cmd).is_ok(), "the ban ended");
    run(&mut s, &ctx(1_030, 1_030), ban("cat", 0)).unwrap_or_else(|r| panic!("{r}"));
    assert!(s.bans.keys().all(|(_, u)| u.as_str() == "bob"));
}

fn gsend_cmd(sender: &str) -> Command {
    Command::SendGroupMessage {
        sender: user(sender),
        group: gid("g1"),
        elements: text("hello group"),
        request_id: None,
        mentions: vec![],
        at_all: false,
    }
}

#[test]
fn join_options_decide_self_joins_and_applications() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Meeting, 10, &[]).unwrap_or_else(|r| panic!("{r}"));
    assert!(!pending_of(&apply_to_join(&mut s, 2, "ann")), "a meeting group is free to join");
    let set = |v: &str| Command::SetGroupProfile {
        actor: user("own"),
        group: gid("g1"),
        fields: fields(&[("join_option", v)]),
        type_cap: 100,
    };
    run(&mut s, &ctx(3, 3), set("forbid")).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(apply_to_join(&mut s, 4, "bob").expect_err("closed").reason, Reason::PermissionDenied);
    assert_eq!(add(&mut s, 4, "bob", &["bob"]).expect_err("closed").reason, Reason::PermissionDenied);
    run(&mut s, &ctx(5, 5), set("need_approval")).unwrap_or_else(|r| panic!("{r}"));
    assert!(pending_of(&apply_to_join(&mut s, 6, "bob")));
    let mut w = MemState::default();
    create_group(&mut w, GroupKind::Work, 10, &["ann"]).unwrap_or_else(|r| panic!("{r}"));
    let fixed = Command::SetGroupProfile {
        actor: user("ann"),
        group: gid("g1"),
        fields: fields(&[("join_option", "free")]),
        type_cap: 100,
    };
    assert_rejected(&mut w, &ctx(2, 2), fixed, Reason::GroupFieldInvalid);
    let renamed = Command::SetGroupProfile {
        actor: user("ann"),
        group: gid("g1"),
        fields: fields(&[("name", "ours")]),
        type_cap: 100,
    };
    assert!(run(&mut w, &ctx(3, 3), renamed).is_ok(), "any member renames a work group");
}

#[test]
fn list_settings_and_history_removed_for_self_only() {
    use meridian_domain::conversation_prefs::PrefsChange;
    let mut s = MemState::default();
    let mut ids = 0;
    for i in 1..=5 {
        send(&mut s, i, "ann", "bob", "hi", None).unwrap_or_else(|r| panic!("{r}"));
    }
    deliver_all(&mut s, 6, &mut ids);
    let pair = ConversationId::c2c(&user("ann"), &user("bob"));
    let prefs =
        |change: PrefsChange| Command::SetConversationPrefs { user: user("ann"), conversation: pair.clone(), change };
    let pin = PrefsChange { pinned: Some(true), draft: Some("half a thought".into()), ..Default::default() };
    run(&mut s, &ctx(7, 7), prefs(pin)).unwrap_or_else(|r| panic!("{r}"));
    let marks = PrefsChange { marks: Some(vec!["work".into(), "work".into(), "vip".into()]), ..Default::default() };
    run(&mut s, &ctx(8, 8), prefs(marks)).unwrap_or_else(|r| panic!("{r}"));
    let p = &s.prefs[&(user("ann"), pair.clone())];
    assert_eq!(
        (p.pinned, p.draft.as_str(), p.marks.clone()),
        (true, "half a thought", vec!["vip".into(), "work".into()])
    );
    let hide = PrefsChange { hide_up_to: Some(Seq(5)), ..Default::default() };
    run(&mut s, &ctx(9, 9), prefs(hide)).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.prefs[&(user("ann"), pair.clone())].hidden_up_to, Seq(5));
    assert_rejected(&mut s, &ctx(10, 10), prefs(PrefsChange::default()), Reason::ConversationFieldInvalid);
    let long = PrefsChange { draft: Some("d".repeat(2049)), ..Default::default() };
    assert_rejected(&mut s, &ctx(10, 10), prefs(long), Reason::ConversationFieldInvalid);
    let stranger = Command::SetConversationPrefs {
        user: user("ann"),
        conversation: ConversationId::c2c(&user("ann"), &user("zed")),
        change: PrefsChange { dnd: Some(true), ..Default::default() },
    };
    assert_rejected(&mut s, &ctx(10, 10), stranger, Reason::ConversationNotFound);

    // Clear and delete for self: bob's view is untouched, ann's hides what she removed.
    let clear = |who: &str, clear, delete: &[u64]| Command::ClearHistoryForSelf {
        user: user(who),
        conversation: pair.clone(),
        clear,
        delete: delete.iter().map(|s| Seq(*s)).collect(),
    };
    run(&mut s, &ctx(11, 11), clear("ann", false, &[2, 4])).unwrap_or_else(|r| panic!("{r}"));
    let view = s.views[&(pair.clone(), user("ann"))].clone();
    assert!(view.hides(Seq(2)) && view.hides(Seq(4)) && !view.hides(Seq(3)));
    assert_rejected(&mut s, &ctx(12, 12), clear("ann", false, &[6]), Reason::SeqOutOfRange);
    assert_rejected(&mut s, &ctx(12, 12), clear("zed", true, &[]), Reason::NotAMember);
    send(&mut s, 13, "bob", "ann", "later", None).unwrap_or_else(|r| panic!("{r}"));
    run(&mut s, &ctx(14, 14), clear("ann", true, &[])).unwrap_or_else(|r| panic!("{r}"));
    let view = s.views[&(pair.clone(), user("ann"))].clone();
    assert_eq!((view.cleared_up_to, view.deleted.len()), (Seq(6), 0), "the clear covers the deletions");
    let head = &s.conversations[&pair];
    assert_eq!(head.unread(&user("ann")), 0, "what one clears is read");
    assert!(!s.views.contains_key(&(pair, user("bob"))));
}

fn stream_texts(s: &MemState) -> Vec<(u64, String)> {
    let stream = ConversationId::group(&gid("g1"));
    s.messages
        .iter()
        .filter(|((c, _), _)| *c == stream)
        .map(|((_, seq), m)| {
            let what = match m.elements.first() {
                Some(Element::GroupTip { tip, users, by, .. }) => format!("{} {} by {by}", tip.name(), users.join(",")),
                Some(Element::Text { text }) => text.clone(),
                _ => String::new(),
            };
            (seq.0, what)
        })
        .collect()
}

#[test]
fn joins_leaves_kicks_and_profile_changes_leave_notices_in_the_stream() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Meeting, 10, &["ann"]).unwrap_or_else(|r| panic!("{r}"));
    assert!(gsend(&mut s, 2, "ann", None).is_ok());
    assert!(add(&mut s, 3, "bob", &["bob"]).is_ok());
    let kick = Command::RemoveGroupMember { actor: user("own"), group: gid("g1"), user: user("ann") };
    run(&mut s, &ctx(4, 4), kick).unwrap_or_else(|r| panic!("{r}"));
    let leave = Command::RemoveGroupMember { actor: user("bob"), group: gid("g1"), user: user("bob") };
    run(&mut s, &ctx(5, 5), leave).unwrap_or_else(|r| panic!("{r}"));
    let rename = Command::SetGroupProfile {
        actor: user("own"),
        group: gid("g1"),
        fields: fields(&[("name", "crew")]),
        type_cap: 100,
    };
    run(&mut s, &ctx(6, 6), rename).unwrap_or_else(|r| panic!("{r}"));
    let hidden = Command::AddGroupMembers {
        actor: user("own"),
        group: gid("g1"),
        users: vec![user("spy")],
        hidden: true,
        homes: vec![],
    };
    run(&mut s, &ctx(7, 7), hidden).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        stream_texts(&s),
        vec![
            (1, "hello group".to_owned()),
            (2, "joined bob by bob".to_owned()),
            (3, "kicked ann by own".to_owned()),
            (4, "left bob by bob".to_owned()),
            (5, "profile_changed  by own".to_owned()),
        ],
        "a hidden member joins unannounced"
    );
    // The joiner's own notice is read; a client cannot send one.
    let tip = Element::GroupTip { tip: TipKind::Joined, users: vec![], by: "own".into(), fields: vec![] };
    assert_eq!(tip.validate().map_err(|r| r.reason), Err(Reason::ElementInvalid));
}

#[test]
fn a_community_s_topics_have_their_own_seqs_and_cursors() {
    let mut s = MemState::default();
    create_group(&mut s, GroupKind::Community, 10, &["ann", "bob"]).unwrap_or_else(|r| panic!("{r}"));
    let topic = |t: &str| TopicId::parse(t).unwrap_or_else(|r| panic!("{r}"));
    let open = |actor: &str, t: &str| Command::CreateTopic {
        actor: user(actor),
        group: gid("g1"),
        topic: topic(t),
        name: format!("{t} talk"),
    };
    assert_rejected(&mut s, &ctx(2, 2), open("ann", "news"), Reason::PermissionDenied);
    assert_eq!(group_changed(&run(&mut s, &ctx(2, 2), open("own", "news"))), (3, true));
    assert_eq!(group_changed(&run(&mut s, &ctx(3, 3), open("own", "news"))), (3, false), "a repeat");
    let tsend = |sender: &str, t: &str| Command::SendTopicMessage {
        sender: user(sender),
        group: gid("g1"),
        topic: topic(t),
        elements: text("in the topic"),
        request_id: None,
    };
    assert_eq!(seq_of(&run(&mut s, &ctx(4, 4), tsend("ann", "news"))), 1);
    assert_eq!(seq_of(&run(&mut s, &ctx(5, 5), tsend("bob", "news"))), 2);
    assert_eq!(seq_of(&gsend(&mut s, 6, "ann", None)), 1, "the main stream counts on its own");
    assert_rejected(&mut s, &ctx(7, 7), tsend("zed", "news"), Reason::NotGroupMember);
    assert_rejected(&mut s, &ctx(7, 7), tsend("ann", "sports"), Reason::TopicNotFound);
    let stream = ConversationId::topic_stream(&gid("g1"), &topic("news"));
    assert_eq!(shard_for(stream.as_str(), 8), shard_for(ConversationId::group(&gid("g1")).as_str(), 8));
    assert_eq!(s.topic_cursors[&(stream.clone(), user("bob"))], Seq(2), "a sender has read their own");
    let read = Command::MarkRead { user: user("ann"), conversation: stream.clone(), up_to: None };
    run(&mut s, &ctx(8, 8), read).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(s.topic_cursors[&(stream.clone(), user("ann"))], Seq(2));
    assert_eq!(s.members[&(gid("g1"), user("ann"))].read_seq, Seq(1), "the main cursor is apart");
    let recall = Command::RecallMessage { actor: user("own"), conversation: stream.clone(), seq: Seq(1), window_ms: 1 };
    run(&mut s, &ctx(100, 9), recall).unwrap_or_else(|r| panic!("{r}"));
    assert!(s.messages[&(stream, Seq(1))].recalled.is_some());
    let mut w = MemState::default();
    create_group(&mut w, GroupKind::Work, 10, &[]).unwrap_or_else(|r| panic!("{r}"));
    assert_rejected(&mut w, &ctx(2, 2), open("own", "news"), Reason::PermissionDenied);
}

#[test]
fn deleting_an_account_clears_its_records_and_its_groups_and_friends_drop_it() {
    use meridian_domain::conversation_prefs::PrefsChange;
    let mut s = MemState::default();
    let mut ids = 0;
    for name in ["own", "bob", "cat", "dan"] {
        new_user(&mut s, name, None);
    }
    run(&mut s, &ctx(2, 2), Command::SetProfile { user: user("own"), fields: fields(&[("nickname", "Owen")]) })
        .unwrap_or_else(|r| panic!("{r}"));
    // Friends both ways with bob, a request from cat waiting, dan blocked.
    run(&mut s, &ctx(3, 3), add_friend("bob", "own", 10)).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 3, &mut ids);
    let set = Command::SetProfile { user: user("own"), fields: fields(&[("add_friend", "need_confirm")]) };
    run(&mut s, &ctx(4, 4), set).unwrap_or_else(|r| panic!("{r}"));
    run(&mut s, &ctx(4, 4), add_friend("cat", "own", 10)).unwrap_or_else(|r| panic!("{r}"));
    let block = Command::SetBlocked {
        user: user("own"),
        target: user("dan"),
        blocked: true,
        conversation_home: None,
        max_blocked: 10,
    };
    run(&mut s, &ctx(5, 5), block).unwrap_or_else(|r| panic!("{r}"));
    // A conversation with bob, with settings, and a group own owns with bob (member) and cat
    // (admin): cat inherits it.
    send(&mut s, 6, "own", "bob", "hello", None).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 6, &mut ids);
    let pair = ConversationId::c2c(&user("own"), &user("bob"));
    let pin = PrefsChange { pinned: Some(true), ..Default::default() };
    run(
        &mut s,
        &ctx(7, 7),
        Command::SetConversationPrefs { user: user("own"), conversation: pair.clone(), change: pin },
    )
    .unwrap_or_else(|r| panic!("{r}"));
    create_group(&mut s, GroupKind::Work, 10, &["bob", "cat"]).unwrap_or_else(|r| panic!("{r}"));
    let promote =
        Command::SetGroupRole { actor: user("own"), group: gid("g1"), user: user("cat"), role: GroupRole::Admin };
    run(&mut s, &ctx(8, 8), promote).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 8, &mut ids);
    assert!(s.group_refs.contains_key(&(user("own"), gid("g1"))));
    assert_eq!(friends_of(&s, "bob"), ["own"]);

    let outcome = run(&mut s, &ctx(9, 9), Command::DeleteAccount { user: user("own") });
    assert_eq!(
        event_names(&outcome),
        ["FriendRemoved", "FriendRequestResolved", "UserBlocked", "GroupUnlisted", "AccountDeleted"]
    );
    let own = &s.users[&user("own")];
    assert_eq!((own.deleted, own.nickname.as_str()), (Some(TimeMs(9)), ""));
    assert!(!s.profiles.contains_key(&user("own")));
    assert!(friends_of(&s, "own").is_empty());
    assert!(!s.requests.keys().any(|(u, _)| u == &user("own")));
    assert!(!s.blocked.iter().any(|(u, _)| u == &user("own")));
    assert!(!s.group_refs.keys().any(|(u, _)| u == &user("own")));
    assert!(!s.refs.iter().any(|(u, _)| u == &user("own")));
    assert!(!s.prefs.keys().any(|(u, _)| u == &user("own")));
    let queued: Vec<&EffectKind> = s.outbox.iter().map(|(_, k)| k).collect();
    assert_eq!(
        queued,
        [
            &EffectKind::FriendGone { user: user("bob"), gone: user("own") },
            &EffectKind::MemberGone { group: gid("g1"), user: user("own") }
        ]
    );
    deliver_all(&mut s, 10, &mut ids);
    assert!(friends_of(&s, "bob").is_empty(), "bob's list drops the deleted account");
    let g = &s.groups[&gid("g1")];
    assert_eq!((g.owner.as_str(), g.member_count, g.dismissed), ("cat", 2, false), "the admin inherits the group");
    assert!(!s.members.contains_key(&(gid("g1"), user("own"))));
    // The message stays in bob's history.
    assert!(s.messages.contains_key(&(pair.clone(), Seq(1))));

    // A repeat changes nothing; the id is never given out again; nothing new is recorded.
    let before = s.clone();
    let repeat = run(&mut s, &ctx(11, 11), Command::DeleteAccount { user: user("own") });
    assert!(event_names(&repeat).is_empty());
    assert_eq!(s, before);
    let recreate = Command::CreateUser { user: user("own"), home_region: region("sg"), nickname: "x".into() };
    assert_rejected(&mut s, &ctx(12, 12), recreate, Reason::UserDeleted);
    let profile = Command::SetProfile { user: user("own"), fields: fields(&[("nickname", "back")]) };
    assert_rejected(&mut s, &ctx(12, 12), profile, Reason::UserDeleted);
    assert_rejected(&mut s, &ctx(12, 12), add_friend("bob", "own", 10), Reason::UserDeleted);

    // A friendship accepted after the delete (a request own sent earlier) is turned back: the
    // accepting side's list drops own again.
    s.friends.insert(
        (user("dan"), user("own")),
        Friend { user: user("own"), remark: String::new(), since: TimeMs(1), home: None },
    );
    s.outbox.push((
        Lane::Shard(ShardId(0)),
        EffectKind::FriendListed {
            user: user("own"),
            friend: user("dan"),
            remark: String::new(),
            at: TimeMs(13),
            conversation_home: region("sg"),
        },
    ));
    deliver_all(&mut s, 13, &mut ids);
    assert!(friends_of(&s, "own").is_empty());
    assert!(friends_of(&s, "dan").is_empty());

    // The last member of a group leaving with their account dismisses it.
    new_user(&mut s, "eve", None);
    let solo = Command::CreateGroup {
        group: gid("g2"),
        kind: GroupKind::Work,
        owner: user("eve"),
        name: "alone".into(),
        max_members: 10,
        members: vec![],
        hide_history: false,
        homes: vec![],
    };
    run(&mut s, &ctx(14, 14), solo).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 14, &mut ids);
    run(&mut s, &ctx(15, 15), Command::DeleteAccount { user: user("eve") }).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 15, &mut ids);
    assert!(s.groups[&gid("g2")].dismissed);

    // An owner and the admin who would inherit deleted together: their removals reach the
    // group in one batch, and the group passes to the member who stays.
    for name in ["fay", "gus", "hal"] {
        new_user(&mut s, name, None);
    }
    let g3 = Command::CreateGroup {
        group: gid("g3"),
        kind: GroupKind::Work,
        owner: user("fay"),
        name: "three".into(),
        max_members: 10,
        members: vec![user("gus"), user("hal")],
        hide_history: false,
        homes: vec![],
    };
    run(&mut s, &ctx(16, 16), g3).unwrap_or_else(|r| panic!("{r}"));
    let promote =
        Command::SetGroupRole { actor: user("fay"), group: gid("g3"), user: user("gus"), role: GroupRole::Admin };
    run(&mut s, &ctx(16, 16), promote).unwrap_or_else(|r| panic!("{r}"));
    deliver_all(&mut s, 16, &mut ids);
    for name in ["fay", "gus"] {
        run(&mut s, &ctx(17, 17), Command::DeleteAccount { user: user(name) }).unwrap_or_else(|r| panic!("{r}"));
    }
    deliver_all(&mut s, 18, &mut ids);
    let g = &s.groups[&gid("g3")];
    assert_eq!((g.owner.as_str(), g.member_count, g.dismissed), ("hal", 1, false));
    assert_eq!(s.members[&(gid("g3"), user("hal"))].role, GroupRole::Owner);
}

#[test]
fn a_restore_withdraws_what_came_after_and_a_repeat_changes_nothing() {
    let mut s = MemState::default();
    for (i, time) in [1_000, 2_000, 3_000, 4_000, 5_000].into_iter().enumerate() {
        send(&mut s, time, "alice", "bob", &format!("m{}", i + 1), None).unwrap_or_else(|r| panic!("{r}"));
    }
    let c = ConversationId::c2c(&user("alice"), &user("bob"));
    let restore = |kept: u64, through: u64| Command::RestoreConversation {
        conversation: c.clone(),
        kept_up_to_seq: Seq(kept),
        through: Seq(through),
    };
    assert_rejected(&mut s, &ctx(6_000, 6), restore(2, 6), Reason::SeqOutOfRange);
    assert_rejected(&mut s, &ctx(6_000, 6), restore(3, 3), Reason::SeqOutOfRange);
    // Seq 4 was recalled by its sender before the restore: it stays as it is.
    let recall =
        Command::RecallMessage { actor: user("alice"), conversation: c.clone(), seq: Seq(4), window_ms: 120_000 };
    assert!(run(&mut s, &ctx(5_500, 7), recall).is_ok());

    let outcome = run(&mut s, &ctx(6_000, 8), restore(2, 5));
    assert_eq!(event_names(&outcome), ["ConversationRestored", "MessageRecalled", "MessageRecalled"]);
    assert!(matches!(outcome, Ok(Applied { reply: Reply::Withdrawn { withdrawn: 2 }, .. })), "{outcome:?}");
    let by = |seq: u64| s.messages[&(c.clone(), Seq(seq))].recalled.as_ref().map(|r| r.by.to_string());
    assert_eq!(
        (1..=5).map(by).collect::<Vec<_>>(),
        [None, None, Some("@restore".to_owned()), Some("alice".to_owned()), Some("@restore".to_owned())]
    );
    let again = run(&mut s, &ctx(7_000, 9), restore(2, 5));
    assert_eq!(event_names(&again), ["ConversationRestored"]);
    assert!(matches!(again, Ok(Applied { reply: Reply::Withdrawn { withdrawn: 0 }, .. })), "{again:?}");
}

#[test]
fn an_epoch_is_raised_once_and_never_lowered() {
    let mut s = MemState::default();
    let raised = run(&mut s, &ctx(1_000, 1), Command::RaiseEpoch { epoch: 2 });
    assert_eq!(event_names(&raised), ["EpochRaised"]);
    let mut at_two = ctx(2_000, 2);
    at_two.epoch = 2;
    for epoch in [1, 2] {
        let repeat = run(&mut s, &at_two, Command::RaiseEpoch { epoch });
        assert!(matches!(&repeat, Ok(a) if a.events.is_empty() && a.changes.is_empty()), "{repeat:?}");
    }
}
