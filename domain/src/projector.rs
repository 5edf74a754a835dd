//! The projector: folds events into the projections — accounts, conversation heads and read
//! cursors, the history (messages and tombstones), conversation lists and request-id records.
//! Apply uses it for the events a command produced, and replay uses it to rebuild every
//! projection from the event log alone, so both derive the same state by the same code.

use crate::change::Change;
use crate::event::Event;
use crate::ids::Seq;
use crate::records::{
    Conversation, ConversationRef, DedupEntry, Friend, FriendRequest, Group, GroupApplication, GroupMember, GroupRef,
    GroupRole, MemberCursor, Message, Recall, User,
};
use crate::state::{ShardState, StateError};

/// The projection changes one event makes to `state` (which holds everything before it).
pub fn project(state: &impl ShardState, event: &Event) -> Result<Vec<Change>, StateError> {
    Ok(match event {
        Event::UserCreated { user, home_region, nickname, at } => vec![Change::PutUser(User {
            id: user.clone(),
            home_region: home_region.clone(),
            nickname: nickname.clone(),
            created: *at,
            deleted: None,
        })],
        Event::AccountDeleted { user, at, conversations, prefs } => {
            let mut changes = Vec::with_capacity(2 + conversations.len() + prefs.len());
            if let Some(account) = state.user(user)? {
                // Nothing of the person stays: the tombstone keeps the id and its home only.
                changes.push(Change::PutUser(User { nickname: String::new(), deleted: Some(*at), ..account }));
            }
            changes.push(Change::DeleteProfile { user: user.clone() });
            changes.extend(conversations.iter().map(|conversation| Change::DeleteConversationRef {
                user: user.clone(),
                conversation: conversation.clone(),
            }));
            changes.extend(prefs.iter().map(|conversation| Change::DeleteConversationPrefs {
                user: user.clone(),
                conversation: conversation.clone(),
            }));
            changes
        }
        Event::MessageSent { conversation, seq, message_id, sender, recipient, elements, request_id, at } => {
            let mut head = match state.conversation(conversation)? {
                Some(head) => head,
                None => {
                    let mut members: Vec<MemberCursor> = [sender, recipient]
                        .into_iter()
                        .map(|u| MemberCursor { user: u.clone(), read_seq: Seq::ZERO })
                        .collect();
                    members.sort_by(|a, b| a.user.cmp(&b.user));
                    Conversation {
                        id: conversation.clone(),
                        members,
                        last_seq: Seq::ZERO,
                        last_time: *at,
                        created: *at,
                    }
                }
            };
            head.last_seq = *seq;
            head.last_time = *at;
            // Sending advances the sender's own read cursor: your own message is never unread.
            for m in &mut head.members {
                if &m.user == sender {
                    m.read_seq = *seq;
                }
            }
            let mut changes = vec![
                Change::PutMessage {
                    conversation: conversation.clone(),
                    message: Message {
                        id: message_id.clone(),
                        seq: *seq,
                        sender: sender.clone(),
                        time: *at,
                        elements: elements.clone(),
                        recalled: None,
                    },
                },
                Change::PutConversation(head),
            ];
            if let Some(request_id) = request_id {
                changes.push(Change::PutDedup {
                    conversation: conversation.clone(),
                    sender: sender.clone(),
                    request_id: request_id.clone(),
                    entry: DedupEntry { message_id: message_id.clone(), seq: *seq, time: *at },
                });
            }
            changes
        }
        Event::MessageRecalled { conversation, seq, by, at } => match state.message(conversation, *seq)? {
            // The history keeps a tombstone: seq, sender, time, who recalled it and when.
            Some(mut message) => {
                message.elements.clear();
                message.recalled = Some(Recall { by: by.clone(), at: *at });
                vec![Change::PutMessage { conversation: conversation.clone(), message }]
            }
            // An archived message: the recall is an overlay that cold reads lay over the
            // segment's copy.
            None if state.cold_range(conversation, *seq)?.is_some() => vec![Change::PutRecallOverlay {
                conversation: conversation.clone(),
                seq: *seq,
                recall: Recall { by: by.clone(), at: *at },
            }],
            None => vec![],
        },
        Event::SegmentArchived { segment, ranges } => {
            let mut changes = vec![Change::PutArchivedSegment(segment.clone())];
            for range in ranges {
                changes.push(Change::PutColdRange(range.clone()));
                // The latest message stays hot (conversation lists never read the archive),
                // and so do recall tombstones (the segment holds the message as sent).
                let latest = state.conversation(&range.conversation)?.map_or(Seq::ZERO, |h| h.last_seq);
                // The message an earlier segment left hot as the latest then is no longer the
                // latest: its copy is in that segment.
                let before = Seq(range.from.0.saturating_sub(1));
                if before > Seq::ZERO
                    && before != latest
                    && state.cold_range(&range.conversation, before)?.is_some()
                    && state.message(&range.conversation, before)?.is_some_and(|m| m.recalled.is_none())
                {
                    changes.push(Change::DeleteMessage { conversation: range.conversation.clone(), seq: before });
                }
                for seq in range.from.0..=range.to.0 {
                    let seq = Seq(seq);
                    if seq == latest {
                        continue;
                    }
                    if state.message(&range.conversation, seq)?.is_some_and(|m| m.recalled.is_none()) {
                        changes.push(Change::DeleteMessage { conversation: range.conversation.clone(), seq });
                    }
                }
            }
            changes
        }
        Event::ReadMarked { conversation, user, read_seq } if conversation.topic().is_some() => {
            vec![Change::PutTopicCursor { stream: conversation.clone(), user: user.clone(), read_seq: *read_seq }]
        }
        Event::ReadMarked { conversation, user, read_seq } if conversation.group_id().is_some() => {
            let group = conversation.group_id().unwrap_or_else(|| unreachable!("checked by the guard"));
            match state.group_member(&group, user)? {
                Some(member) => {
                    vec![Change::PutGroupMember { group, member: GroupMember { read_seq: *read_seq, ..member } }]
                }
                None => vec![],
            }
        }
        Event::ReadMarked { conversation, user, read_seq } => match state.conversation(conversation)? {
            Some(mut head) => {
                for m in &mut head.members {
                    if &m.user == user {
                        m.read_seq = *read_seq;
                    }
                }
                vec![Change::PutConversation(head)]
            }
            None => vec![],
        },
        Event::ConversationJoined { user, conversation, peer, at, home } => vec![Change::PutConversationRef {
            user: user.clone(),
            entry: ConversationRef {
                conversation: conversation.clone(),
                peer: peer.clone(),
                joined: *at,
                home: home.clone(),
            },
        }],
        Event::LogicVersionRaised { .. } | Event::EpochRaised { .. } | Event::ConversationRestored { .. } => vec![],
        Event::IdClaimed { key, region } => vec![Change::PutClaim { key: key.clone(), region: region.clone() }],
        Event::GroupCreated { group, kind, owner, name, max_members, hide_history, at } => {
            vec![Change::PutGroup(Group {
                id: group.clone(),
                kind: *kind,
                name: name.clone(),
                owner: owner.clone(),
                max_members: *max_members,
                member_count: 0,
                created: *at,
                dismissed: false,
                hide_history: *hide_history,
                at_all_seq: Seq::ZERO,
                profile: Default::default(),
                join_option: crate::records::JoinOption::default_for(*kind),
                muted_all: false,
                applications: 0,
                likes: 0,
                topics: 0,
            })]
        }
        Event::GroupMemberAdded { group, user, role, hidden, at, home, .. } => {
            let Some(mut g) = state.group(group)? else { return Ok(vec![]) };
            // A new member's cursor starts at the stream's newest message: nothing before
            // they joined counts as unread (and, in a group that hides its history from new
            // members, nothing before is readable).
            let stream = crate::ids::ConversationId::group(group);
            let read_seq = state.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq);
            let visible_from = if g.hide_history { read_seq.next() } else { Seq(1) };
            g.member_count += 1;
            vec![
                Change::PutGroupMember {
                    group: group.clone(),
                    member: GroupMember {
                        user: user.clone(),
                        role: *role,
                        joined: *at,
                        read_seq,
                        muted_until: crate::ids::TimeMs(0),
                        hidden: *hidden,
                        mention_seq: Seq::ZERO,
                        visible_from,
                        info: Default::default(),
                        home: home.clone(),
                    },
                },
                Change::PutGroup(g),
            ]
        }
        Event::GroupMemberRemoved { group, user, .. } => {
            let Some(mut g) = state.group(group)? else { return Ok(vec![]) };
            g.member_count = g.member_count.saturating_sub(1);
            vec![Change::DeleteGroupMember { group: group.clone(), user: user.clone() }, Change::PutGroup(g)]
        }
        Event::GroupMessageSent { group, seq, message_id, sender, elements, request_id, mentions, at_all, at } => {
            let stream = crate::ids::ConversationId::group(group);
            let sent = Sent { seq: *seq, message_id, sender, elements, request_id: request_id.as_ref(), at: *at };
            let mut changes = stream_message(state, &stream, &sent)?;
            // Sending moves the sender's own cursor (a live room keeps none).
            if let Some(member) = state.group_member(group, sender)? {
                changes.push(Change::PutGroupMember {
                    group: group.clone(),
                    member: GroupMember { read_seq: *seq, ..member },
                });
            }
            // A mention writes the mentioned members' records only: a message costs the same
            // whatever the group's size, plus one write per member it names.
            for user in mentions.iter().filter(|u| *u != sender) {
                if let Some(member) = state.group_member(group, user)? {
                    changes.push(Change::PutGroupMember {
                        group: group.clone(),
                        member: GroupMember { mention_seq: *seq, ..member },
                    });
                }
            }
            if *at_all {
                if let Some(g) = state.group(group)? {
                    changes.push(Change::PutGroup(Group { at_all_seq: *seq, ..g }));
                }
            }
            changes
        }
        Event::GroupMemberMuted { group, user, until, .. } => match state.group_member(group, user)? {
            Some(member) => vec![Change::PutGroupMember {
                group: group.clone(),
                member: GroupMember { muted_until: *until, ..member },
            }],
            None => vec![],
        },
        Event::GroupRoleSet { group, user, role, .. } => {
            let Some(member) = state.group_member(group, user)? else { return Ok(vec![]) };
            let mut changes =
                vec![Change::PutGroupMember { group: group.clone(), member: GroupMember { role: *role, ..member } }];
            if *role == GroupRole::Owner {
                if let Some(g) = state.group(group)? {
                    changes.push(Change::PutGroup(Group { owner: user.clone(), ..g }));
                }
            }
            changes
        }
        Event::GroupDismissed { group, .. } => match state.group(group)? {
            Some(g) => vec![Change::PutGroup(Group { dismissed: true, ..g })],
            None => vec![],
        },
        Event::GroupListed { user, group, at, home } => vec![Change::PutGroupRef {
            user: user.clone(),
            entry: GroupRef { group: group.clone(), joined: *at, home: home.clone() },
        }],
        Event::GroupUnlisted { user, group } => {
            vec![Change::DeleteGroupRef { user: user.clone(), group: group.clone() }]
        }
        Event::ProfileUpdated { user, fields } => {
            // The update was checked at apply; a profile over the cap cannot be logged.
            let profile = crate::profile::updated(state.profile(user)?, fields)
                .map_err(|r| StateError(format!("a logged profile update does not fit: {r}")))?;
            vec![Change::PutProfile { user: user.clone(), profile }]
        }
        Event::UserBlocked { user, target, blocked: true, at } => {
            let count = state.blocked_count(user)?.saturating_add(1);
            vec![
                Change::PutBlocked { user: user.clone(), target: target.clone(), since: *at },
                Change::PutBlockCount { user: user.clone(), count },
            ]
        }
        Event::UserBlocked { user, target, blocked: false, .. } => {
            let count = state.blocked_count(user)?.saturating_sub(1);
            vec![
                Change::DeleteBlocked { user: user.clone(), target: target.clone() },
                Change::PutBlockCount { user: user.clone(), count },
            ]
        }
        Event::ConversationBlocked { conversation, blocker, blocked: true } => {
            vec![Change::PutPairBlock { conversation: conversation.clone(), blocker: blocker.clone() }]
        }
        Event::ConversationBlocked { conversation, blocker, blocked: false } => {
            vec![Change::DeletePairBlock { conversation: conversation.clone(), blocker: blocker.clone() }]
        }
        Event::ConversationPrefsSet { user, conversation, prefs } => vec![Change::PutConversationPrefs {
            user: user.clone(),
            conversation: conversation.clone(),
            prefs: prefs.clone(),
        }],
        Event::HistoryViewSet { conversation, user, view } => {
            vec![Change::PutHistoryView { conversation: conversation.clone(), user: user.clone(), view: view.clone() }]
        }
        Event::GroupProfileUpdated { group, fields, .. } => match state.group(group)? {
            Some(g) => vec![Change::PutGroup(crate::group_admin::group_with(g, fields))],
            None => vec![],
        },
        Event::GroupMemberInfoSet { group, user, fields, .. } => match state.group_member(group, user)? {
            Some(m) => {
                let info = crate::profile::with_fields(m.info.clone(), fields).0;
                vec![Change::PutGroupMember { group: group.clone(), member: GroupMember { info, ..m } }]
            }
            None => vec![],
        },
        Event::GroupJoinRequested { group, user, message, at } => {
            let Some(mut g) = state.group(group)? else { return Ok(vec![]) };
            if state.group_application(group, user)?.is_none() {
                g.applications += 1;
            }
            vec![
                Change::PutGroupApplication {
                    group: group.clone(),
                    application: GroupApplication { user: user.clone(), message: message.clone(), at: *at },
                },
                Change::PutGroup(g),
            ]
        }
        Event::GroupJoinResolved { group, user, .. } => {
            let Some(mut g) = state.group(group)? else { return Ok(vec![]) };
            if state.group_application(group, user)?.is_none() {
                return Ok(vec![]);
            }
            g.applications = g.applications.saturating_sub(1);
            vec![Change::DeleteGroupApplication { group: group.clone(), user: user.clone() }, Change::PutGroup(g)]
        }
        Event::TopicCreated { group, topic, name, by, at } => {
            let Some(g) = state.group(group)? else { return Ok(vec![]) };
            vec![
                Change::PutTopic {
                    group: group.clone(),
                    topic: crate::records::Topic {
                        id: topic.clone(),
                        name: name.clone(),
                        created: *at,
                        by: by.clone(),
                    },
                },
                Change::PutGroup(Group { topics: g.topics + 1, ..g }),
            ]
        }
        Event::TopicMessageSent { group, topic, seq, message_id, sender, elements, request_id, at } => {
            let stream = crate::ids::ConversationId::topic_stream(group, topic);
            let sent = Sent { seq: *seq, message_id, sender, elements, request_id: request_id.as_ref(), at: *at };
            let mut changes = stream_message(state, &stream, &sent)?;
            // Sending moves the sender's own cursor in the topic.
            changes.push(Change::PutTopicCursor { stream, user: sender.clone(), read_seq: *seq });
            changes
        }
        Event::GroupLiked { group, likes } => match state.group(group)? {
            Some(g) => vec![Change::PutGroup(Group { likes: g.likes.saturating_add(*likes), ..g })],
            None => vec![],
        },
        Event::GroupMutedAll { group, muted, .. } => match state.group(group)? {
            Some(g) => vec![Change::PutGroup(Group { muted_all: *muted, ..g })],
            None => vec![],
        },
        Event::GroupMemberBanned { group, user, until, .. } => {
            if until.0 == 0 {
                vec![Change::DeleteGroupBan { group: group.clone(), user: user.clone() }]
            } else {
                vec![Change::PutGroupBan { group: group.clone(), user: user.clone(), until: *until }]
            }
        }
        Event::FriendRequested { user, from, message, remark, at } => {
            let mut counts = state.friend_counts(user)?;
            if state.friend_request(user, from)?.is_none() {
                counts.pending += 1;
            }
            vec![
                Change::PutFriendRequest {
                    user: user.clone(),
                    request: FriendRequest {
                        from: from.clone(),
                        message: message.clone(),
                        remark: remark.clone(),
                        at: *at,
                    },
                },
                Change::PutFriendCounts { user: user.clone(), counts },
            ]
        }
        Event::FriendRequestResolved { user, from, .. } => {
            if state.friend_request(user, from)?.is_none() {
                return Ok(vec![]);
            }
            let mut counts = state.friend_counts(user)?;
            counts.pending = counts.pending.saturating_sub(1);
            vec![
                Change::DeleteFriendRequest { user: user.clone(), from: from.clone() },
                Change::PutFriendCounts { user: user.clone(), counts },
            ]
        }
        Event::FriendAdded { user, friend, remark, at, home } => {
            let mut counts = state.friend_counts(user)?;
            if state.friend(user, friend)?.is_none() {
                counts.friends += 1;
            }
            vec![
                Change::PutFriend {
                    user: user.clone(),
                    entry: Friend { user: friend.clone(), remark: remark.clone(), since: *at, home: home.clone() },
                },
                Change::PutFriendCounts { user: user.clone(), counts },
            ]
        }
        Event::FriendRemoved { user, friend } => {
            if state.friend(user, friend)?.is_none() {
                return Ok(vec![]);
            }
            let mut counts = state.friend_counts(user)?;
            counts.friends = counts.friends.saturating_sub(1);
            vec![
                Change::DeleteFriend { user: user.clone(), friend: friend.clone() },
                Change::PutFriendCounts { user: user.clone(), counts },
            ]
        }
        Event::FriendRemarked { user, friend, remark } => match state.friend(user, friend)? {
            Some(entry) => {
                vec![Change::PutFriend { user: user.clone(), entry: Friend { remark: remark.clone(), ..entry } }]
            }
            None => vec![],
        },
        Event::ConversationFriended { conversation, lister, friend: true } => {
            vec![Change::PutPairFriend { conversation: conversation.clone(), lister: lister.clone() }]
        }
        Event::ConversationFriended { conversation, lister, friend: false } => {
            vec![Change::DeletePairFriend { conversation: conversation.clone(), lister: lister.clone() }]
        }
    })
}

/// A message accepted into a group's or a topic's stream.
struct Sent<'a> {
    seq: Seq,
    message_id: &'a crate::ids::MessageId,
    sender: &'a crate::ids::UserId,
    elements: &'a [crate::element::Element],
    request_id: Option<&'a crate::ids::RequestId>,
    at: crate::ids::TimeMs,
}

/// The message an event put into a stream's history, as the history projection first wrote
/// it (before any recall): what cold reads rebuild from an archived segment's events.
pub fn sent_message(event: &Event) -> Option<(crate::ids::ConversationId, Message)> {
    let (conversation, seq, id, sender, elements, at) = match event {
        Event::MessageSent { conversation, seq, message_id, sender, elements, at, .. } => {
            (conversation.clone(), seq, message_id, sender, elements, at)
        }
        Event::GroupMessageSent { group, seq, message_id, sender, elements, at, .. } => {
            (crate::ids::ConversationId::group(group), seq, message_id, sender, elements, at)
        }
        Event::TopicMessageSent { group, topic, seq, message_id, sender, elements, at, .. } => {
            (crate::ids::ConversationId::topic_stream(group, topic), seq, message_id, sender, elements, at)
        }
        _ => return None,
    };
    let message = Message {
        id: id.clone(),
        seq: *seq,
        sender: sender.clone(),
        time: *at,
        elements: elements.clone(),
        recalled: None,
    };
    Some((conversation, message))
}

/// The records a message writes to a group's or a topic's stream: the message, the stream's
/// head (which keeps no members: those are the group's) and its request-id record.
fn stream_message(
    state: &impl ShardState,
    stream: &crate::ids::ConversationId,
    m: &Sent,
) -> Result<Vec<Change>, StateError> {
    let created = state.conversation(stream)?.map_or(m.at, |h| h.created);
    let mut changes = vec![
        Change::PutMessage {
            conversation: stream.clone(),
            message: Message {
                id: m.message_id.clone(),
                seq: m.seq,
                sender: m.sender.clone(),
                time: m.at,
                elements: m.elements.to_vec(),
                recalled: None,
            },
        },
        Change::PutConversation(Conversation {
            id: stream.clone(),
            members: vec![],
            last_seq: m.seq,
            last_time: m.at,
            created,
        }),
    ];
    if let Some(request_id) = m.request_id {
        changes.push(Change::PutDedup {
            conversation: stream.clone(),
            sender: m.sender.clone(),
            request_id: request_id.clone(),
            entry: DedupEntry { message_id: m.message_id.clone(), seq: m.seq, time: m.at },
        });
    }
    Ok(changes)
}
