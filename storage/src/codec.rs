//! Domain types ↔ the durable protobuf schema (`meridian.durable.v1`).
//!
//! Encoding is infallible. Decoding validates: a record that fails to parse into domain types
//! is corruption, reported as a [`StorageError`] (the replica stops rather than guess).

use meridian_domain::element::{Element, Forwarded};
use meridian_domain::records::{ArchivedSegment, ColdRange, Recall};
use meridian_domain::*;
use meridian_proto::durable as pb;

use crate::error::StorageError;

/// The version written into every record by this build.
pub const RECORD_VERSION: u32 = 1;

fn corrupt(what: &'static str) -> impl Fn(Rejection) -> StorageError {
    move |r| StorageError::corrupt(what, r.to_string())
}

fn user_id(what: &'static str, s: &str) -> Result<UserId, StorageError> {
    UserId::parse(s).map_err(corrupt(what))
}

fn conversation_id(what: &'static str, s: &str) -> Result<ConversationId, StorageError> {
    ConversationId::parse(s).map_err(corrupt(what))
}

// ---------------------------------------------------------------- elements

pub fn element_to_pb(e: &Element) -> pb::Element {
    use pb::element::Kind;
    let kind = match e.clone() {
        Element::Text { text } => Kind::Text(pb::Text { text }),
        Element::Image { url, format, size_bytes, width, height, thumbnail_url } => {
            Kind::Image(pb::Image { url, format, size_bytes, width, height, thumbnail_url })
        }
        Element::Voice { url, size_bytes, duration_seconds } => {
            Kind::Voice(pb::Voice { url, size_bytes, duration_seconds })
        }
        Element::Video { url, format, size_bytes, duration_seconds, thumbnail_url } => {
            Kind::Video(pb::Video { url, format, size_bytes, duration_seconds, thumbnail_url })
        }
        Element::File { url, name, size_bytes } => Kind::File(pb::File { url, name, size_bytes }),
        Element::Face { index, data } => Kind::Face(pb::Face { index, data }),
        Element::Location { description, latitude, longitude } => {
            Kind::Location(pb::Location { description, latitude, longitude })
        }
        Element::Custom { data, description, extension } => Kind::Custom(pb::Custom { data, description, extension }),
        Element::GroupTip { tip, users, by, fields } => {
            Kind::GroupTip(pb::GroupTip { tip: tip.name().to_owned(), users, by, fields: fields_to_pb(&fields) })
        }
        Element::MergedForward { title, abstracts, messages } => Kind::MergedForward(pb::MergedForward {
            title,
            abstracts,
            messages: messages
                .iter()
                .map(|m| pb::Forwarded {
                    sender: m.sender.clone(),
                    time_ms: m.time_ms,
                    elements: m.elements.iter().map(element_to_pb).collect(),
                })
                .collect(),
        }),
    };
    pb::Element { kind: Some(kind) }
}

pub fn element_from_pb(e: pb::Element) -> Result<Element, StorageError> {
    use pb::element::Kind;
    Ok(match e.kind.ok_or_else(|| StorageError::corrupt("element", "no kind"))? {
        Kind::Text(t) => Element::Text { text: t.text },
        Kind::Image(i) => Element::Image {
            url: i.url,
            format: i.format,
            size_bytes: i.size_bytes,
            width: i.width,
            height: i.height,
            thumbnail_url: i.thumbnail_url,
        },
        Kind::Voice(v) => Element::Voice { url: v.url, size_bytes: v.size_bytes, duration_seconds: v.duration_seconds },
        Kind::Video(v) => Element::Video {
            url: v.url,
            format: v.format,
            size_bytes: v.size_bytes,
            duration_seconds: v.duration_seconds,
            thumbnail_url: v.thumbnail_url,
        },
        Kind::File(f) => Element::File { url: f.url, name: f.name, size_bytes: f.size_bytes },
        Kind::Face(f) => Element::Face { index: f.index, data: f.data },
        Kind::Location(l) => {
            Element::Location { description: l.description, latitude: l.latitude, longitude: l.longitude }
        }
        Kind::Custom(c) => Element::Custom { data: c.data, description: c.description, extension: c.extension },
        Kind::GroupTip(t) => Element::GroupTip {
            tip: meridian_domain::element::TipKind::from_name(&t.tip)
                .ok_or_else(|| StorageError::corrupt("element", format!("unknown group tip {:?}", t.tip)))?,
            users: t.users,
            by: t.by,
            fields: fields_from_pb(t.fields),
        },
        Kind::MergedForward(m) => Element::MergedForward {
            title: m.title,
            abstracts: m.abstracts,
            messages: m
                .messages
                .into_iter()
                .map(|f| {
                    Ok(Forwarded {
                        sender: f.sender,
                        time_ms: f.time_ms,
                        elements: f.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, StorageError>>()?,
        },
    })
}

/// The stored size of a message body: what the size limit (MSG-01) is measured on.
pub fn encoded_body_len(elements: &[Element]) -> usize {
    use prost::Message as _;
    elements.iter().map(|e| element_to_pb(e).encoded_len() + 2).sum()
}

// ---------------------------------------------------------------- commands

pub fn command_to_pb(c: &Command) -> pb::Command {
    use pb::command::Kind;
    let kind = match c {
        Command::CreateUser { user, home_region, nickname } => Kind::CreateUser(pb::CreateUser {
            user_id: user.to_string(),
            home_region: home_region.to_string(),
            nickname: nickname.clone(),
        }),
        Command::SendMessage { sender, recipient, elements, request_id, sender_home, recipient_home, friends_only } => {
            Kind::SendMessage(pb::SendMessage {
                friends_only: *friends_only,
                sender: sender.to_string(),
                recipient: recipient.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                sender_home: region_or_empty(sender_home.as_ref()),
                recipient_home: region_or_empty(recipient_home.as_ref()),
            })
        }
        Command::RecallMessage { actor, conversation, seq, window_ms } => Kind::RecallMessage(pb::RecallMessage {
            actor: actor.to_string(),
            conversation_id: conversation.to_string(),
            seq: seq.0,
            window_ms: *window_ms,
        }),
        Command::MarkRead { user, conversation, up_to } => Kind::MarkRead(pb::MarkRead {
            user: user.to_string(),
            conversation_id: conversation.to_string(),
            seq: up_to.map_or(0, |s| s.0),
        }),
        Command::ApplyEffects { source, from_region, effects } => Kind::ApplyEffects(pb::ApplyEffects {
            source_shard: source.0,
            effects: effects.iter().map(effect_to_pb).collect(),
            from_region: region_or_empty(from_region.as_ref()),
        }),
        Command::AckEffects { target: Lane::Shard(target), up_to } => {
            Kind::AckEffects(pb::AckEffects { target_shard: target.0, up_to: up_to.0, target_region: String::new() })
        }
        Command::AckEffects { target: Lane::Region(region), up_to } => {
            Kind::AckEffects(pb::AckEffects { target_shard: 0, up_to: up_to.0, target_region: region.to_string() })
        }
        Command::ClaimId { key, region } => {
            Kind::ClaimId(pb::ClaimId { key: key.to_string(), region: region.to_string() })
        }
        Command::CreateGroup { group, kind, owner, name, max_members, members, hide_history, homes } => {
            Kind::CreateGroup(pb::CreateGroup {
                homes: homes_to_pb(homes),
                group_id: group.to_string(),
                kind: kind.name().to_owned(),
                owner: owner.to_string(),
                name: name.clone(),
                max_members: *max_members,
                members: members.iter().map(ToString::to_string).collect(),
                hide_history: *hide_history,
            })
        }
        Command::AddGroupMembers { actor, group, users, hidden, homes } => Kind::AddGroupMembers(pb::AddGroupMembers {
            homes: homes_to_pb(homes),
            actor: actor.to_string(),
            group_id: group.to_string(),
            users: users.iter().map(ToString::to_string).collect(),
            hidden: *hidden,
        }),
        Command::RemoveGroupMember { actor, group, user } => Kind::RemoveGroupMember(pb::RemoveGroupMember {
            actor: actor.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
        }),
        Command::SendGroupMessage { sender, group, elements, request_id, mentions, at_all } => {
            Kind::SendGroupMessage(pb::SendGroupMessage {
                sender: sender.to_string(),
                group_id: group.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                mentions: mentions.iter().map(ToString::to_string).collect(),
                at_all: *at_all,
            })
        }
        Command::MuteGroupMember { actor, group, user, duration_ms } => Kind::MuteGroupMember(pb::MuteGroupMember {
            actor: actor.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            duration_ms: *duration_ms,
        }),
        Command::DismissGroup { actor, group } => {
            Kind::DismissGroup(pb::DismissGroup { actor: actor.to_string(), group_id: group.to_string() })
        }
        Command::SetGroupRole { actor, group, user, role } => Kind::SetGroupRole(pb::SetGroupRole {
            actor: actor.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            role: role.name().to_owned(),
        }),
        Command::SetProfile { user, fields } => Kind::SetProfile(profile_to_pb(user, fields)),
        Command::DeleteAccount { user } => Kind::DeleteAccount(pb::DeleteAccount { user_id: user.to_string() }),
        Command::SetBlocked { user, target, blocked, conversation_home, max_blocked } => {
            Kind::SetBlocked(pb::SetBlocked {
                user: user.to_string(),
                target: target.to_string(),
                blocked: *blocked,
                conversation_home: region_or_empty(conversation_home.as_ref()),
                max_blocked: *max_blocked,
            })
        }
        Command::AddFriend {
            user,
            target,
            message,
            remark,
            user_home,
            conversation_home,
            max_friends,
            max_pending,
        } => Kind::AddFriend(pb::AddFriend {
            user: user.to_string(),
            target: target.to_string(),
            message: message.clone(),
            remark: remark.clone(),
            user_home: region_or_empty(user_home.as_ref()),
            conversation_home: region_or_empty(conversation_home.as_ref()),
            max_friends: *max_friends,
            max_pending: *max_pending,
        }),
        Command::RespondFriendRequest { user, from, accept, remark, from_home, conversation_home, max_friends } => {
            Kind::RespondFriendRequest(pb::RespondFriendRequest {
                user: user.to_string(),
                from: from.to_string(),
                accept: *accept,
                remark: remark.clone(),
                from_home: region_or_empty(from_home.as_ref()),
                conversation_home: region_or_empty(conversation_home.as_ref()),
                max_friends: *max_friends,
            })
        }
        Command::DeleteFriend { user, friend, both, friend_home, conversation_home } => {
            Kind::DeleteFriend(pb::DeleteFriend {
                user: user.to_string(),
                friend: friend.to_string(),
                both: *both,
                friend_home: region_or_empty(friend_home.as_ref()),
                conversation_home: region_or_empty(conversation_home.as_ref()),
            })
        }
        Command::SetFriendRemark { user, friend, remark } => Kind::SetFriendRemark(pb::SetFriendRemark {
            user: user.to_string(),
            friend: friend.to_string(),
            remark: remark.clone(),
        }),
        Command::SetConversationPrefs { user, conversation, change } => {
            Kind::SetConversationPrefs(pb::SetConversationPrefs {
                user: user.to_string(),
                conversation_id: conversation.to_string(),
                pinned: change.pinned,
                dnd: change.dnd,
                draft: change.draft.clone(),
                set_marks: change.marks.is_some(),
                marks: change.marks.clone().unwrap_or_default(),
                hide_up_to: change.hide_up_to.map_or(0, |s| s.0),
            })
        }
        Command::ClearHistoryForSelf { user, conversation, clear, delete } => {
            Kind::ClearHistoryForSelf(pb::ClearHistoryForSelf {
                user: user.to_string(),
                conversation_id: conversation.to_string(),
                clear: *clear,
                delete: delete.iter().map(|s| s.0).collect(),
            })
        }
        Command::SetGroupProfile { actor, group, fields, type_cap } => Kind::SetGroupProfile(pb::SetGroupProfile {
            actor: actor.to_string(),
            group_id: group.to_string(),
            fields: fields_to_pb(fields),
            type_cap: *type_cap,
        }),
        Command::SetGroupMemberInfo { actor, group, user, fields } => {
            Kind::SetGroupMemberInfo(pb::SetGroupMemberInfo {
                actor: actor.to_string(),
                group_id: group.to_string(),
                user: user.to_string(),
                fields: fields_to_pb(fields),
            })
        }
        Command::ApplyToJoinGroup { user, group, message, homes } => Kind::ApplyToJoinGroup(pb::ApplyToJoinGroup {
            user: user.to_string(),
            group_id: group.to_string(),
            message: message.clone(),
            time_ms: 0,
            homes: homes_to_pb(homes),
        }),
        Command::RespondJoinRequest { actor, group, user, approve, homes } => {
            Kind::RespondJoinRequest(pb::RespondJoinRequest {
                homes: homes_to_pb(homes),
                actor: actor.to_string(),
                group_id: group.to_string(),
                user: user.to_string(),
                approve: *approve,
            })
        }
        Command::CreateTopic { actor, group, topic, name } => Kind::CreateTopic(pb::CreateTopic {
            actor: actor.to_string(),
            group_id: group.to_string(),
            topic: topic.to_string(),
            name: name.clone(),
            time_ms: 0,
        }),
        Command::SendTopicMessage { sender, group, topic, elements, request_id } => {
            Kind::SendTopicMessage(pb::SendTopicMessage {
                sender: sender.to_string(),
                group_id: group.to_string(),
                topic: topic.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                ..Default::default()
            })
        }
        Command::AddGroupLikes { group, likes } => {
            Kind::AddGroupLikes(pb::AddGroupLikes { group_id: group.to_string(), likes: *likes })
        }
        Command::MuteAllGroup { actor, group, muted } => Kind::MuteAllGroup(pb::MuteAllGroup {
            actor: actor.to_string(),
            group_id: group.to_string(),
            muted: *muted,
        }),
        Command::BanGroupMember { actor, group, user, duration_ms } => Kind::BanGroupMember(pb::BanGroupMember {
            actor: actor.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            duration_ms: *duration_ms,
            until_ms: 0,
        }),
        Command::TransferGroup { actor, group, to } => Kind::TransferGroup(pb::TransferGroup {
            actor: actor.to_string(),
            group_id: group.to_string(),
            to: to.to_string(),
        }),
        Command::SetLogicVersion { version } => Kind::SetLogicVersion(pb::SetLogicVersion { version: *version }),
        Command::RaiseEpoch { epoch } => Kind::RaiseEpoch(pb::RaiseEpoch { epoch: *epoch }),
        Command::RestoreConversation { conversation, kept_up_to_seq, through } => {
            Kind::RestoreConversation(pb::RestoreConversation {
                conversation_id: conversation.to_string(),
                kept_up_to_seq: kept_up_to_seq.0,
                through: through.0,
                time_ms: 0,
            })
        }
        Command::HooksSent { up_to } => Kind::HooksSent(pb::HooksSent {
            log_index: up_to.log_index,
            command: up_to.command,
            event: u32::from(up_to.event),
        }),
        Command::ArchiveSegment { segment, events_digest } => Kind::ArchiveSegment(pb::ArchiveSegment {
            segment: Some(archived_segment_to_pb(segment)),
            events_digest: events_digest.clone(),
        }),
    };
    pb::Command { kind: Some(kind) }
}

/// Decodes a command from the Raft log. Commands were validated before they were proposed, so
/// a failure here is corruption. `region` is the reading shard's region: effects recorded
/// before effects named their source region came from it.
pub fn command_from_pb(c: pb::Command, region: &RegionCode) -> Result<Command, StorageError> {
    use pb::command::Kind;
    const W: &str = "command";
    Ok(match c.kind.ok_or_else(|| StorageError::corrupt(W, "no kind"))? {
        Kind::DeleteAccount(d) => Command::DeleteAccount { user: user_id(W, &d.user_id)? },
        Kind::CreateUser(c) => Command::CreateUser {
            user: user_id(W, &c.user_id)?,
            home_region: RegionCode::parse(&c.home_region).map_err(corrupt(W))?,
            nickname: c.nickname,
        },
        Kind::SendMessage(s) => Command::SendMessage {
            sender: user_id(W, &s.sender)?,
            recipient: user_id(W, &s.recipient)?,
            elements: s.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &s.request_id)?,
            sender_home: optional_region(W, &s.sender_home)?,
            recipient_home: optional_region(W, &s.recipient_home)?,
            friends_only: s.friends_only,
        },
        Kind::RecallMessage(r) => Command::RecallMessage {
            actor: user_id(W, &r.actor)?,
            conversation: conversation_id(W, &r.conversation_id)?,
            seq: Seq(r.seq),
            window_ms: r.window_ms,
        },
        Kind::MarkRead(m) => Command::MarkRead {
            user: user_id(W, &m.user)?,
            conversation: conversation_id(W, &m.conversation_id)?,
            up_to: (m.seq != 0).then_some(Seq(m.seq)),
        },
        Kind::ApplyEffects(a) => {
            let from_region = optional_region(W, &a.from_region)?;
            let source_region = from_region.as_ref().unwrap_or(region);
            Command::ApplyEffects {
                source: ShardId(a.source_shard),
                effects: a.effects.into_iter().map(|e| effect_from_pb(e, source_region)).collect::<Result<_, _>>()?,
                from_region,
            }
        }
        Kind::AckEffects(a) => Command::AckEffects {
            target: match optional_region(W, &a.target_region)? {
                Some(region) => Lane::Region(region),
                None => Lane::Shard(ShardId(a.target_shard)),
            },
            up_to: EffectId(a.up_to),
        },
        Kind::ClaimId(c) => Command::ClaimId {
            key: DirectoryKey::parse(&c.key).map_err(corrupt(W))?,
            region: RegionCode::parse(&c.region).map_err(corrupt(W))?,
        },
        Kind::CreateGroup(c) => Command::CreateGroup {
            group: group_id(W, &c.group_id)?,
            kind: group_kind(W, &c.kind)?,
            owner: user_id(W, &c.owner)?,
            name: c.name,
            max_members: c.max_members,
            members: c.members.iter().map(|m| user_id(W, m)).collect::<Result<_, _>>()?,
            hide_history: c.hide_history,
            homes: homes_from_pb(&c.homes)?,
        },
        Kind::AddGroupMembers(a) => Command::AddGroupMembers {
            actor: user_id(W, &a.actor)?,
            group: group_id(W, &a.group_id)?,
            users: a.users.iter().map(|u| user_id(W, u)).collect::<Result<_, _>>()?,
            hidden: a.hidden,
            homes: homes_from_pb(&a.homes)?,
        },
        Kind::RemoveGroupMember(r) => Command::RemoveGroupMember {
            actor: user_id(W, &r.actor)?,
            group: group_id(W, &r.group_id)?,
            user: user_id(W, &r.user)?,
        },
        Kind::SendGroupMessage(m) => Command::SendGroupMessage {
            sender: user_id(W, &m.sender)?,
            group: group_id(W, &m.group_id)?,
            elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &m.request_id)?,
            mentions: m.mentions.iter().map(|u| user_id(W, u)).collect::<Result<_, _>>()?,
            at_all: m.at_all,
        },
        Kind::MuteGroupMember(m) => Command::MuteGroupMember {
            actor: user_id(W, &m.actor)?,
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            duration_ms: m.duration_ms,
        },
        Kind::DismissGroup(d) => {
            Command::DismissGroup { actor: user_id(W, &d.actor)?, group: group_id(W, &d.group_id)? }
        }
        Kind::SetGroupRole(r) => Command::SetGroupRole {
            actor: user_id(W, &r.actor)?,
            group: group_id(W, &r.group_id)?,
            user: user_id(W, &r.user)?,
            role: group_role(W, &r.role)?,
        },
        Kind::SetProfile(p) => {
            let (user, fields) = profile_from_pb(W, p)?;
            Command::SetProfile { user, fields }
        }
        Kind::SetBlocked(b) => Command::SetBlocked {
            user: user_id(W, &b.user)?,
            target: user_id(W, &b.target)?,
            blocked: b.blocked,
            conversation_home: optional_region(W, &b.conversation_home)?,
            max_blocked: b.max_blocked,
        },
        Kind::AddFriend(a) => Command::AddFriend {
            user: user_id(W, &a.user)?,
            target: user_id(W, &a.target)?,
            message: a.message,
            remark: a.remark,
            user_home: optional_region(W, &a.user_home)?,
            conversation_home: optional_region(W, &a.conversation_home)?,
            max_friends: a.max_friends,
            max_pending: a.max_pending,
        },
        Kind::RespondFriendRequest(r) => Command::RespondFriendRequest {
            user: user_id(W, &r.user)?,
            from: user_id(W, &r.from)?,
            accept: r.accept,
            remark: r.remark,
            from_home: optional_region(W, &r.from_home)?,
            conversation_home: optional_region(W, &r.conversation_home)?,
            max_friends: r.max_friends,
        },
        Kind::DeleteFriend(d) => Command::DeleteFriend {
            user: user_id(W, &d.user)?,
            friend: user_id(W, &d.friend)?,
            both: d.both,
            friend_home: optional_region(W, &d.friend_home)?,
            conversation_home: optional_region(W, &d.conversation_home)?,
        },
        Kind::SetFriendRemark(r) => {
            Command::SetFriendRemark { user: user_id(W, &r.user)?, friend: user_id(W, &r.friend)?, remark: r.remark }
        }
        Kind::SetConversationPrefs(p) => Command::SetConversationPrefs {
            user: user_id(W, &p.user)?,
            conversation: conversation_id(W, &p.conversation_id)?,
            change: meridian_domain::conversation_prefs::PrefsChange {
                pinned: p.pinned,
                dnd: p.dnd,
                draft: p.draft,
                marks: p.set_marks.then_some(p.marks),
                hide_up_to: (p.hide_up_to != 0).then_some(Seq(p.hide_up_to)),
            },
        },
        Kind::ClearHistoryForSelf(c) => Command::ClearHistoryForSelf {
            user: user_id(W, &c.user)?,
            conversation: conversation_id(W, &c.conversation_id)?,
            clear: c.clear,
            delete: c.delete.into_iter().map(Seq).collect(),
        },
        Kind::SetGroupProfile(p) => Command::SetGroupProfile {
            actor: user_id(W, &p.actor)?,
            group: group_id(W, &p.group_id)?,
            fields: fields_from_pb(p.fields),
            type_cap: p.type_cap,
        },
        Kind::SetGroupMemberInfo(m) => Command::SetGroupMemberInfo {
            actor: user_id(W, &m.actor)?,
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            fields: fields_from_pb(m.fields),
        },
        Kind::ApplyToJoinGroup(a) => Command::ApplyToJoinGroup {
            user: user_id(W, &a.user)?,
            group: group_id(W, &a.group_id)?,
            message: a.message,
            homes: homes_from_pb(&a.homes)?,
        },
        Kind::RespondJoinRequest(r) => Command::RespondJoinRequest {
            actor: user_id(W, &r.actor)?,
            group: group_id(W, &r.group_id)?,
            user: user_id(W, &r.user)?,
            approve: r.approve,
            homes: homes_from_pb(&r.homes)?,
        },
        Kind::CreateTopic(t) => Command::CreateTopic {
            actor: user_id(W, &t.actor)?,
            group: group_id(W, &t.group_id)?,
            topic: topic_id(W, &t.topic)?,
            name: t.name,
        },
        Kind::SendTopicMessage(m) => Command::SendTopicMessage {
            sender: user_id(W, &m.sender)?,
            group: group_id(W, &m.group_id)?,
            topic: topic_id(W, &m.topic)?,
            elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &m.request_id)?,
        },
        Kind::AddGroupLikes(l) => Command::AddGroupLikes { group: group_id(W, &l.group_id)?, likes: l.likes },
        Kind::MuteAllGroup(m) => {
            Command::MuteAllGroup { actor: user_id(W, &m.actor)?, group: group_id(W, &m.group_id)?, muted: m.muted }
        }
        Kind::BanGroupMember(b) => Command::BanGroupMember {
            actor: user_id(W, &b.actor)?,
            group: group_id(W, &b.group_id)?,
            user: user_id(W, &b.user)?,
            duration_ms: b.duration_ms,
        },
        Kind::TransferGroup(t) => Command::TransferGroup {
            actor: user_id(W, &t.actor)?,
            group: group_id(W, &t.group_id)?,
            to: user_id(W, &t.to)?,
        },
        Kind::SetLogicVersion(v) => Command::SetLogicVersion { version: v.version },
        Kind::RaiseEpoch(e) => Command::RaiseEpoch { epoch: e.epoch },
        Kind::RestoreConversation(r) => Command::RestoreConversation {
            conversation: conversation_id(W, &r.conversation_id)?,
            kept_up_to_seq: Seq(r.kept_up_to_seq),
            through: Seq(r.through),
        },
        Kind::HooksSent(h) => Command::HooksSent {
            up_to: EventOffset {
                log_index: h.log_index,
                command: h.command,
                event: u16::try_from(h.event)
                    .map_err(|_| StorageError::corrupt(W, format!("event position {} is out of range", h.event)))?,
            },
        },
        Kind::ArchiveSegment(a) => Command::ArchiveSegment {
            segment: archived_segment_from_pb(a.segment.ok_or_else(|| StorageError::corrupt(W, "no segment"))?)?,
            events_digest: a.events_digest,
        },
    })
}

pub fn offset_to_pb(o: EventOffset) -> pb::EventOffsetRecord {
    pb::EventOffsetRecord { log_index: o.log_index, command: o.command, event: u32::from(o.event) }
}

pub fn offset_from_pb(what: &'static str, o: Option<pb::EventOffsetRecord>) -> Result<EventOffset, StorageError> {
    let o = o.ok_or_else(|| StorageError::corrupt(what, "no offset"))?;
    Ok(EventOffset {
        log_index: o.log_index,
        command: o.command,
        event: u16::try_from(o.event)
            .map_err(|_| StorageError::corrupt(what, format!("event position {} is out of range", o.event)))?,
    })
}

pub fn archived_segment_to_pb(s: &ArchivedSegment) -> pb::ArchivedSegmentRecord {
    pb::ArchivedSegmentRecord {
        version: RECORD_VERSION,
        key: s.key.clone(),
        first: Some(offset_to_pb(s.first)),
        last: Some(offset_to_pb(s.last)),
        digest: s.digest.clone(),
        bytes: s.bytes,
        events: s.events,
        sealed_at_ms: s.sealed_at.0,
    }
}

pub fn archived_segment_from_pb(s: pb::ArchivedSegmentRecord) -> Result<ArchivedSegment, StorageError> {
    const W: &str = "archived segment";
    Ok(ArchivedSegment {
        key: s.key,
        first: offset_from_pb(W, s.first)?,
        last: offset_from_pb(W, s.last)?,
        digest: s.digest,
        bytes: s.bytes,
        events: s.events,
        sealed_at: TimeMs(s.sealed_at_ms),
    })
}

pub fn cold_range_to_pb(r: &ColdRange) -> pb::ColdRangeRecord {
    pb::ColdRangeRecord {
        version: RECORD_VERSION,
        seq_from: r.from.0,
        seq_to: r.to.0,
        segment: Some(offset_to_pb(r.segment)),
    }
}

pub fn cold_range_from_pb(conversation: ConversationId, r: pb::ColdRangeRecord) -> Result<ColdRange, StorageError> {
    Ok(ColdRange {
        conversation,
        from: Seq(r.seq_from),
        to: Seq(r.seq_to),
        segment: offset_from_pb("cold range", r.segment)?,
    })
}

fn fields_to_pb(fields: &[(String, String)]) -> Vec<pb::Field> {
    fields.iter().map(|(name, value)| pb::Field { name: name.clone(), value: value.clone() }).collect()
}

fn fields_from_pb(fields: Vec<pb::Field>) -> Vec<(String, String)> {
    fields.into_iter().map(|f| (f.name, f.value)).collect()
}

fn topic_id(what: &'static str, s: &str) -> Result<TopicId, StorageError> {
    TopicId::parse(s).map_err(corrupt(what))
}

fn group_id(what: &'static str, s: &str) -> Result<GroupId, StorageError> {
    GroupId::parse(s).map_err(corrupt(what))
}

fn group_kind(what: &'static str, s: &str) -> Result<GroupKind, StorageError> {
    GroupKind::from_name(s).ok_or_else(|| StorageError::corrupt(what, format!("unknown group kind {s:?}")))
}

fn group_role(what: &'static str, s: &str) -> Result<GroupRole, StorageError> {
    GroupRole::from_name(s).ok_or_else(|| StorageError::corrupt(what, format!("unknown group role {s:?}")))
}

fn profile_to_pb(user: &UserId, fields: &[(String, String)]) -> pb::SetProfile {
    pb::SetProfile {
        user: user.to_string(),
        fields: fields
            .iter()
            .map(|(name, value)| pb::ProfileField { name: name.clone(), value: value.clone() })
            .collect(),
    }
}

fn profile_from_pb(what: &'static str, p: pb::SetProfile) -> Result<(UserId, Vec<(String, String)>), StorageError> {
    let fields: Vec<(String, String)> = p.fields.into_iter().map(|f| (f.name, f.value)).collect();
    meridian_domain::profile::check_update(&fields).map_err(corrupt(what))?;
    Ok((user_id(what, &p.user)?, fields))
}

fn optional_request_id(what: &'static str, s: &str) -> Result<Option<RequestId>, StorageError> {
    if s.is_empty() {
        Ok(None)
    } else {
        RequestId::parse(s).map(Some).map_err(corrupt(what))
    }
}

fn region_or_empty(region: Option<&RegionCode>) -> String {
    region.map(ToString::to_string).unwrap_or_default()
}

fn homes_to_pb(homes: &[(UserId, RegionCode)]) -> Vec<pb::MemberHome> {
    homes.iter().map(|(u, r)| pb::MemberHome { user: u.to_string(), region: r.to_string() }).collect()
}

fn homes_from_pb(homes: &[pb::MemberHome]) -> Result<Vec<(UserId, RegionCode)>, StorageError> {
    const W: &str = "member home";
    homes.iter().map(|h| Ok((user_id(W, &h.user)?, RegionCode::parse(&h.region).map_err(corrupt(W))?))).collect()
}

fn optional_region(what: &'static str, s: &str) -> Result<Option<RegionCode>, StorageError> {
    if s.is_empty() {
        Ok(None)
    } else {
        RegionCode::parse(s).map(Some).map_err(corrupt(what))
    }
}

pub fn effect_to_pb(e: &Effect) -> pb::Effect {
    let kind = match &e.kind {
        EffectKind::ConversationJoined { user, conversation, peer, at } => {
            pb::effect::Kind::ConversationJoined(pb::ConversationJoined {
                user: user.to_string(),
                conversation_id: conversation.to_string(),
                peer: peer.to_string(),
                time_ms: at.0,
            })
        }
        EffectKind::GroupListed { user, group, at } => pb::effect::Kind::GroupListed(pb::GroupListed {
            user: user.to_string(),
            group_id: group.to_string(),
            time_ms: at.0,
            home: String::new(),
        }),
        EffectKind::FriendGone { user, gone } => {
            pb::effect::Kind::FriendGone(pb::FriendGone { user: user.to_string(), gone: gone.to_string() })
        }
        EffectKind::MemberGone { group, user } => {
            pb::effect::Kind::MemberGone(pb::MemberGone { group_id: group.to_string(), user: user.to_string() })
        }
        EffectKind::GroupUnlisted { user, group } => {
            pb::effect::Kind::GroupUnlisted(pb::GroupUnlisted { user: user.to_string(), group_id: group.to_string() })
        }
        EffectKind::PairBlocked { conversation, blocker, blocked } => pb::effect::Kind::PairBlocked(pb::PairBlocked {
            conversation_id: conversation.to_string(),
            blocker: blocker.to_string(),
            blocked: *blocked,
        }),
        EffectKind::FriendListed { user, friend, remark, at, conversation_home } => {
            pb::effect::Kind::FriendListed(pb::FriendListed {
                user: user.to_string(),
                friend: friend.to_string(),
                remark: remark.clone(),
                time_ms: at.0,
                conversation_home: conversation_home.to_string(),
            })
        }
        EffectKind::FriendUnlisted { user, friend, conversation_home } => {
            pb::effect::Kind::FriendUnlisted(pb::FriendUnlisted {
                user: user.to_string(),
                friend: friend.to_string(),
                conversation_home: conversation_home.to_string(),
            })
        }
        EffectKind::PairFriend { conversation, lister, friend } => pb::effect::Kind::PairFriend(pb::PairFriend {
            conversation_id: conversation.to_string(),
            lister: lister.to_string(),
            friend: *friend,
        }),
    };
    pb::Effect {
        id: e.id.0,
        source_shard: e.source.shard.0,
        source_region: e.source.region.to_string(),
        source_epoch: e.source.epoch,
        kind: Some(kind),
    }
}

/// Decodes an effect; one without a source region (recorded before effects named it) comes
/// from `region`, epoch 1.
pub fn effect_from_pb(e: pb::Effect, region: &RegionCode) -> Result<Effect, StorageError> {
    const W: &str = "effect";
    let kind = match e.kind.ok_or_else(|| StorageError::corrupt(W, "no kind"))? {
        pb::effect::Kind::ConversationJoined(j) => EffectKind::ConversationJoined {
            user: user_id(W, &j.user)?,
            conversation: conversation_id(W, &j.conversation_id)?,
            peer: user_id(W, &j.peer)?,
            at: TimeMs(j.time_ms),
        },
        pb::effect::Kind::GroupListed(l) => EffectKind::GroupListed {
            user: user_id(W, &l.user)?,
            group: group_id(W, &l.group_id)?,
            at: TimeMs(l.time_ms),
        },
        pb::effect::Kind::GroupUnlisted(u) => {
            EffectKind::GroupUnlisted { user: user_id(W, &u.user)?, group: group_id(W, &u.group_id)? }
        }
        pb::effect::Kind::FriendGone(g) => {
            EffectKind::FriendGone { user: user_id(W, &g.user)?, gone: user_id(W, &g.gone)? }
        }
        pb::effect::Kind::MemberGone(g) => {
            EffectKind::MemberGone { group: group_id(W, &g.group_id)?, user: user_id(W, &g.user)? }
        }
        pb::effect::Kind::PairBlocked(b) => EffectKind::PairBlocked {
            conversation: conversation_id(W, &b.conversation_id)?,
            blocker: user_id(W, &b.blocker)?,
            blocked: b.blocked,
        },
        pb::effect::Kind::FriendListed(l) => EffectKind::FriendListed {
            user: user_id(W, &l.user)?,
            friend: user_id(W, &l.friend)?,
            remark: l.remark,
            at: TimeMs(l.time_ms),
            conversation_home: RegionCode::parse(&l.conversation_home).map_err(corrupt(W))?,
        },
        pb::effect::Kind::FriendUnlisted(u) => EffectKind::FriendUnlisted {
            user: user_id(W, &u.user)?,
            friend: user_id(W, &u.friend)?,
            conversation_home: RegionCode::parse(&u.conversation_home).map_err(corrupt(W))?,
        },
        pb::effect::Kind::PairFriend(f) => EffectKind::PairFriend {
            conversation: conversation_id(W, &f.conversation_id)?,
            lister: user_id(W, &f.lister)?,
            friend: f.friend,
        },
    };
    let source_region = if e.source_region.is_empty() {
        region.clone()
    } else {
        RegionCode::parse(&e.source_region).map_err(corrupt(W))?
    };
    let source = EffectSource { region: source_region, epoch: e.source_epoch.max(1), shard: ShardId(e.source_shard) };
    Ok(Effect { id: EffectId(e.id), source, kind })
}

// ---------------------------------------------------------------- records

pub fn user_to_pb(u: &User) -> pb::UserRecord {
    pb::UserRecord {
        version: RECORD_VERSION,
        user_id: u.id.to_string(),
        home_region: u.home_region.to_string(),
        nickname: u.nickname.clone(),
        created_ms: u.created.0,
        deleted_ms: u.deleted.map_or(0, |t| t.0),
    }
}

pub fn user_from_pb(u: pb::UserRecord) -> Result<User, StorageError> {
    Ok(User {
        id: user_id("user", &u.user_id)?,
        home_region: RegionCode::parse(&u.home_region).map_err(corrupt("user"))?,
        nickname: u.nickname,
        created: TimeMs(u.created_ms),
        deleted: (u.deleted_ms != 0).then_some(TimeMs(u.deleted_ms)),
    })
}

pub fn conversation_to_pb(c: &Conversation) -> pb::ConversationRecord {
    pb::ConversationRecord {
        version: RECORD_VERSION,
        conversation_id: c.id.to_string(),
        members: c
            .members
            .iter()
            .map(|m| pb::MemberCursor { user: m.user.to_string(), read_seq: m.read_seq.0 })
            .collect(),
        last_seq: c.last_seq.0,
        last_time_ms: c.last_time.0,
        created_ms: c.created.0,
    }
}

pub fn conversation_from_pb(c: pb::ConversationRecord) -> Result<Conversation, StorageError> {
    const W: &str = "conversation";
    Ok(Conversation {
        id: conversation_id(W, &c.conversation_id)?,
        members: c
            .members
            .into_iter()
            .map(|m| Ok(MemberCursor { user: user_id(W, &m.user)?, read_seq: Seq(m.read_seq) }))
            .collect::<Result<_, StorageError>>()?,
        last_seq: Seq(c.last_seq),
        last_time: TimeMs(c.last_time_ms),
        created: TimeMs(c.created_ms),
    })
}

// ---------------------------------------------------------------- events

/// Encodes an event applied under the region's epoch `epoch`.
pub fn event_to_pb(e: &Event, epoch: u32) -> pb::EventRecord {
    use pb::event_record::Kind;
    let kind = match e {
        Event::UserCreated { user, home_region, nickname, at } => Kind::UserCreated(pb::UserCreatedEvent {
            user_id: user.to_string(),
            home_region: home_region.to_string(),
            nickname: nickname.clone(),
            time_ms: at.0,
        }),
        Event::MessageSent { conversation, seq, message_id, sender, recipient, elements, request_id, at } => {
            Kind::MessageSent(pb::MessageSentEvent {
                conversation_id: conversation.to_string(),
                seq: seq.0,
                message_id: message_id.to_string(),
                sender: sender.to_string(),
                recipient: recipient.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                time_ms: at.0,
            })
        }
        Event::MessageRecalled { conversation, seq, by, at } => Kind::MessageRecalled(pb::MessageRecalledEvent {
            conversation_id: conversation.to_string(),
            seq: seq.0,
            by: by.to_string(),
            time_ms: at.0,
        }),
        Event::ReadMarked { conversation, user, read_seq } => Kind::ReadMarked(pb::ReadMarkedEvent {
            conversation_id: conversation.to_string(),
            user: user.to_string(),
            read_seq: read_seq.0,
        }),
        Event::ConversationJoined { user, conversation, peer, at, home } => {
            Kind::ConversationJoined(pb::ConversationJoinedEvent {
                user: user.to_string(),
                conversation_id: conversation.to_string(),
                peer: peer.to_string(),
                time_ms: at.0,
                home: region_or_empty(home.as_ref()),
            })
        }
        Event::SegmentArchived { segment, ranges } => Kind::SegmentArchived(pb::SegmentArchivedEvent {
            segment: Some(archived_segment_to_pb(segment)),
            ranges: ranges
                .iter()
                .map(|r| pb::ColdSeqRange {
                    conversation_id: r.conversation.to_string(),
                    seq_from: r.from.0,
                    seq_to: r.to.0,
                })
                .collect(),
        }),
        Event::LogicVersionRaised { from, to } => {
            Kind::LogicVersionRaised(pb::LogicVersionRaisedEvent { from: *from, to: *to })
        }
        Event::EpochRaised { from, to } => Kind::EpochRaised(pb::EpochRaisedEvent { from: *from, to: *to }),
        Event::ConversationRestored { conversation, kept_up_to_seq, through, at } => {
            Kind::ConversationRestored(pb::RestoreConversation {
                conversation_id: conversation.to_string(),
                kept_up_to_seq: kept_up_to_seq.0,
                through: through.0,
                time_ms: at.0,
            })
        }
        Event::IdClaimed { key, region } => {
            Kind::IdClaimed(pb::IdClaimedEvent { key: key.to_string(), region: region.to_string() })
        }
        Event::GroupCreated { group, kind, owner, name, max_members, hide_history, at } => {
            Kind::GroupCreated(pb::GroupCreatedEvent {
                group_id: group.to_string(),
                kind: kind.name().to_owned(),
                owner: owner.to_string(),
                name: name.clone(),
                max_members: *max_members,
                hide_history: *hide_history,
                time_ms: at.0,
            })
        }
        Event::GroupMemberAdded { group, user, role, by, hidden, at, home } => {
            Kind::GroupMemberAdded(pb::GroupMemberAddedEvent {
                home: home.as_ref().map(ToString::to_string).unwrap_or_default(),
                group_id: group.to_string(),
                user: user.to_string(),
                role: role.name().to_owned(),
                by: by.to_string(),
                hidden: *hidden,
                time_ms: at.0,
            })
        }
        Event::GroupMemberRemoved { group, user, by, at } => Kind::GroupMemberRemoved(pb::GroupMemberRemovedEvent {
            group_id: group.to_string(),
            user: user.to_string(),
            by: by.to_string(),
            time_ms: at.0,
        }),
        Event::GroupMessageSent { group, seq, message_id, sender, elements, request_id, mentions, at_all, at } => {
            Kind::GroupMessageSent(pb::GroupMessageSentEvent {
                group_id: group.to_string(),
                seq: seq.0,
                message_id: message_id.to_string(),
                sender: sender.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                mentions: mentions.iter().map(ToString::to_string).collect(),
                at_all: *at_all,
                time_ms: at.0,
            })
        }
        Event::GroupMemberMuted { group, user, until, by } => Kind::GroupMemberMuted(pb::GroupMemberMutedEvent {
            group_id: group.to_string(),
            user: user.to_string(),
            until_ms: until.0,
            by: by.to_string(),
        }),
        Event::ProfileUpdated { user, fields } => Kind::ProfileUpdated(profile_to_pb(user, fields)),
        Event::UserBlocked { user, target, blocked, at } => Kind::UserBlocked(pb::UserBlockedEvent {
            user: user.to_string(),
            target: target.to_string(),
            blocked: *blocked,
            time_ms: at.0,
        }),
        Event::ConversationPrefsSet { user, conversation, prefs } => {
            Kind::ConversationPrefsSet(prefs_to_pb(prefs, Some((user, conversation))))
        }
        Event::HistoryViewSet { conversation, user, view } => {
            Kind::HistoryViewSet(history_view_to_pb(view, Some((user, conversation))))
        }
        Event::GroupProfileUpdated { group, fields, by } => Kind::GroupProfileUpdated(pb::SetGroupProfile {
            actor: by.to_string(),
            group_id: group.to_string(),
            fields: fields_to_pb(fields),
            type_cap: 0,
        }),
        Event::GroupMemberInfoSet { group, user, fields, by } => Kind::GroupMemberInfoSet(pb::SetGroupMemberInfo {
            actor: by.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            fields: fields_to_pb(fields),
        }),
        Event::GroupJoinRequested { group, user, message, at } => Kind::GroupJoinRequested(pb::ApplyToJoinGroup {
            user: user.to_string(),
            group_id: group.to_string(),
            message: message.clone(),
            time_ms: at.0,
            homes: vec![],
        }),
        Event::GroupJoinResolved { group, user, approved, by } => Kind::GroupJoinResolved(pb::RespondJoinRequest {
            actor: by.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            approve: *approved,
            homes: vec![],
        }),
        Event::TopicCreated { group, topic, name, by, at } => Kind::TopicCreated(pb::CreateTopic {
            actor: by.to_string(),
            group_id: group.to_string(),
            topic: topic.to_string(),
            name: name.clone(),
            time_ms: at.0,
        }),
        Event::TopicMessageSent { group, topic, seq, message_id, sender, elements, request_id, at } => {
            Kind::TopicMessageSent(pb::SendTopicMessage {
                sender: sender.to_string(),
                group_id: group.to_string(),
                topic: topic.to_string(),
                elements: elements.iter().map(element_to_pb).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                seq: seq.0,
                message_id: message_id.to_string(),
                time_ms: at.0,
            })
        }
        Event::GroupLiked { group, likes } => {
            Kind::GroupLiked(pb::AddGroupLikes { group_id: group.to_string(), likes: *likes })
        }
        Event::GroupMutedAll { group, muted, by } => {
            Kind::GroupMutedAll(pb::MuteAllGroup { actor: by.to_string(), group_id: group.to_string(), muted: *muted })
        }
        Event::GroupMemberBanned { group, user, until, by } => Kind::GroupMemberBanned(pb::BanGroupMember {
            actor: by.to_string(),
            group_id: group.to_string(),
            user: user.to_string(),
            duration_ms: 0,
            until_ms: until.0,
        }),
        Event::FriendRequested { user, from, message, remark, at } => Kind::FriendRequested(pb::FriendRequestedEvent {
            user: user.to_string(),
            from: from.to_string(),
            message: message.clone(),
            remark: remark.clone(),
            time_ms: at.0,
        }),
        Event::FriendRequestResolved { user, from, accepted } => {
            Kind::FriendRequestResolved(pb::FriendRequestResolvedEvent {
                user: user.to_string(),
                from: from.to_string(),
                accepted: *accepted,
            })
        }
        Event::FriendAdded { user, friend, remark, at, home } => Kind::FriendAdded(pb::FriendAddedEvent {
            user: user.to_string(),
            friend: friend.to_string(),
            remark: remark.clone(),
            time_ms: at.0,
            home: home.as_ref().map(ToString::to_string).unwrap_or_default(),
        }),
        Event::AccountDeleted { user, at, conversations, prefs } => Kind::AccountDeleted(pb::AccountDeletedEvent {
            user_id: user.to_string(),
            time_ms: at.0,
            conversations: conversations.iter().map(ToString::to_string).collect(),
            prefs: prefs.iter().map(ToString::to_string).collect(),
        }),
        Event::FriendRemoved { user, friend } => {
            Kind::FriendRemoved(pb::FriendRemovedEvent { user: user.to_string(), friend: friend.to_string() })
        }
        Event::FriendRemarked { user, friend, remark } => Kind::FriendRemarked(pb::SetFriendRemark {
            user: user.to_string(),
            friend: friend.to_string(),
            remark: remark.clone(),
        }),
        Event::ConversationFriended { conversation, lister, friend } => Kind::ConversationFriended(pb::PairFriend {
            conversation_id: conversation.to_string(),
            lister: lister.to_string(),
            friend: *friend,
        }),
        Event::ConversationBlocked { conversation, blocker, blocked } => Kind::ConversationBlocked(pb::PairBlocked {
            conversation_id: conversation.to_string(),
            blocker: blocker.to_string(),
            blocked: *blocked,
        }),
        Event::GroupRoleSet { group, user, role, by } => Kind::GroupRoleSet(pb::GroupRoleSetEvent {
            group_id: group.to_string(),
            user: user.to_string(),
            role: role.name().to_owned(),
            by: by.to_string(),
        }),
        Event::GroupDismissed { group, by, at } => Kind::GroupDismissed(pb::GroupDismissedEvent {
            group_id: group.to_string(),
            by: by.to_string(),
            time_ms: at.0,
        }),
        Event::GroupListed { user, group, at, home } => Kind::GroupListed(pb::GroupListed {
            user: user.to_string(),
            group_id: group.to_string(),
            time_ms: at.0,
            home: home.as_ref().map(ToString::to_string).unwrap_or_default(),
        }),
        Event::GroupUnlisted { user, group } => {
            Kind::GroupUnlisted(pb::GroupUnlisted { user: user.to_string(), group_id: group.to_string() })
        }
    };
    pb::EventRecord { version: RECORD_VERSION, epoch, kind: Some(kind) }
}

pub fn event_from_pb(e: pb::EventRecord) -> Result<Event, StorageError> {
    use pb::event_record::Kind;
    const W: &str = "event";
    if e.version > RECORD_VERSION {
        return Err(StorageError::corrupt(W, format!("written by a newer version ({})", e.version)));
    }
    Ok(match e.kind.ok_or_else(|| StorageError::corrupt(W, "no kind"))? {
        Kind::UserCreated(u) => Event::UserCreated {
            user: user_id(W, &u.user_id)?,
            home_region: RegionCode::parse(&u.home_region).map_err(corrupt(W))?,
            nickname: u.nickname,
            at: TimeMs(u.time_ms),
        },
        Kind::MessageSent(m) => Event::MessageSent {
            conversation: conversation_id(W, &m.conversation_id)?,
            seq: Seq(m.seq),
            message_id: MessageId::from_stored(m.message_id),
            sender: user_id(W, &m.sender)?,
            recipient: user_id(W, &m.recipient)?,
            elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &m.request_id)?,
            at: TimeMs(m.time_ms),
        },
        Kind::MessageRecalled(r) => Event::MessageRecalled {
            conversation: conversation_id(W, &r.conversation_id)?,
            seq: Seq(r.seq),
            by: user_id(W, &r.by)?,
            at: TimeMs(r.time_ms),
        },
        Kind::ReadMarked(r) => Event::ReadMarked {
            conversation: conversation_id(W, &r.conversation_id)?,
            user: user_id(W, &r.user)?,
            read_seq: Seq(r.read_seq),
        },
        Kind::ConversationJoined(j) => Event::ConversationJoined {
            user: user_id(W, &j.user)?,
            conversation: conversation_id(W, &j.conversation_id)?,
            peer: user_id(W, &j.peer)?,
            at: TimeMs(j.time_ms),
            home: optional_region(W, &j.home)?,
        },
        Kind::LogicVersionRaised(v) => Event::LogicVersionRaised { from: v.from, to: v.to },
        Kind::EpochRaised(v) => Event::EpochRaised { from: v.from, to: v.to },
        Kind::ConversationRestored(r) => Event::ConversationRestored {
            conversation: conversation_id(W, &r.conversation_id)?,
            kept_up_to_seq: Seq(r.kept_up_to_seq),
            through: Seq(r.through),
            at: TimeMs(r.time_ms),
        },
        Kind::SegmentArchived(a) => {
            let segment = archived_segment_from_pb(a.segment.ok_or_else(|| StorageError::corrupt(W, "no segment"))?)?;
            let ranges = a
                .ranges
                .into_iter()
                .map(|r| {
                    Ok(ColdRange {
                        conversation: conversation_id(W, &r.conversation_id)?,
                        from: Seq(r.seq_from),
                        to: Seq(r.seq_to),
                        segment: segment.first,
                    })
                })
                .collect::<Result<_, StorageError>>()?;
            Event::SegmentArchived { segment, ranges }
        }
        Kind::IdClaimed(c) => Event::IdClaimed {
            key: DirectoryKey::parse(&c.key).map_err(corrupt(W))?,
            region: RegionCode::parse(&c.region).map_err(corrupt(W))?,
        },
        Kind::GroupCreated(g) => Event::GroupCreated {
            group: group_id(W, &g.group_id)?,
            kind: group_kind(W, &g.kind)?,
            owner: user_id(W, &g.owner)?,
            name: g.name,
            max_members: g.max_members,
            hide_history: g.hide_history,
            at: TimeMs(g.time_ms),
        },
        Kind::GroupMemberAdded(m) => Event::GroupMemberAdded {
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            role: group_role(W, &m.role)?,
            by: user_id(W, &m.by)?,
            hidden: m.hidden,
            at: TimeMs(m.time_ms),
            home: optional_region(W, &m.home)?,
        },
        Kind::GroupMemberRemoved(m) => Event::GroupMemberRemoved {
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            by: user_id(W, &m.by)?,
            at: TimeMs(m.time_ms),
        },
        Kind::GroupMessageSent(m) => Event::GroupMessageSent {
            group: group_id(W, &m.group_id)?,
            seq: Seq(m.seq),
            message_id: MessageId::from_stored(m.message_id),
            sender: user_id(W, &m.sender)?,
            elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &m.request_id)?,
            mentions: m.mentions.iter().map(|u| user_id(W, u)).collect::<Result<_, _>>()?,
            at_all: m.at_all,
            at: TimeMs(m.time_ms),
        },
        Kind::GroupMemberMuted(m) => Event::GroupMemberMuted {
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            until: TimeMs(m.until_ms),
            by: user_id(W, &m.by)?,
        },
        Kind::GroupDismissed(d) => {
            Event::GroupDismissed { group: group_id(W, &d.group_id)?, by: user_id(W, &d.by)?, at: TimeMs(d.time_ms) }
        }
        Kind::ProfileUpdated(p) => {
            let (user, fields) = profile_from_pb(W, p)?;
            Event::ProfileUpdated { user, fields }
        }
        Kind::UserBlocked(b) => Event::UserBlocked {
            user: user_id(W, &b.user)?,
            target: user_id(W, &b.target)?,
            blocked: b.blocked,
            at: TimeMs(b.time_ms),
        },
        Kind::ConversationPrefsSet(p) => Event::ConversationPrefsSet {
            user: user_id(W, &p.user)?,
            conversation: conversation_id(W, &p.conversation_id)?,
            prefs: prefs_from_pb(p),
        },
        Kind::HistoryViewSet(v) => Event::HistoryViewSet {
            user: user_id(W, &v.user)?,
            conversation: conversation_id(W, &v.conversation_id)?,
            view: history_view_from_pb(v),
        },
        Kind::GroupProfileUpdated(p) => Event::GroupProfileUpdated {
            group: group_id(W, &p.group_id)?,
            fields: fields_from_pb(p.fields),
            by: user_id(W, &p.actor)?,
        },
        Kind::GroupMemberInfoSet(m) => Event::GroupMemberInfoSet {
            group: group_id(W, &m.group_id)?,
            user: user_id(W, &m.user)?,
            fields: fields_from_pb(m.fields),
            by: user_id(W, &m.actor)?,
        },
        Kind::GroupJoinRequested(a) => Event::GroupJoinRequested {
            group: group_id(W, &a.group_id)?,
            user: user_id(W, &a.user)?,
            message: a.message,
            at: TimeMs(a.time_ms),
        },
        Kind::GroupJoinResolved(r) => Event::GroupJoinResolved {
            group: group_id(W, &r.group_id)?,
            user: user_id(W, &r.user)?,
            approved: r.approve,
            by: user_id(W, &r.actor)?,
        },
        Kind::TopicCreated(t) => Event::TopicCreated {
            group: group_id(W, &t.group_id)?,
            topic: topic_id(W, &t.topic)?,
            name: t.name,
            by: user_id(W, &t.actor)?,
            at: TimeMs(t.time_ms),
        },
        Kind::TopicMessageSent(m) => Event::TopicMessageSent {
            group: group_id(W, &m.group_id)?,
            topic: topic_id(W, &m.topic)?,
            seq: Seq(m.seq),
            message_id: MessageId::from_stored(m.message_id),
            sender: user_id(W, &m.sender)?,
            elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
            request_id: optional_request_id(W, &m.request_id)?,
            at: TimeMs(m.time_ms),
        },
        Kind::GroupLiked(l) => Event::GroupLiked { group: group_id(W, &l.group_id)?, likes: l.likes },
        Kind::GroupMutedAll(m) => {
            Event::GroupMutedAll { group: group_id(W, &m.group_id)?, muted: m.muted, by: user_id(W, &m.actor)? }
        }
        Kind::GroupMemberBanned(b) => Event::GroupMemberBanned {
            group: group_id(W, &b.group_id)?,
            user: user_id(W, &b.user)?,
            until: TimeMs(b.until_ms),
            by: user_id(W, &b.actor)?,
        },
        Kind::FriendRequested(r) => Event::FriendRequested {
            user: user_id(W, &r.user)?,
            from: user_id(W, &r.from)?,
            message: r.message,
            remark: r.remark,
            at: TimeMs(r.time_ms),
        },
        Kind::FriendRequestResolved(r) => Event::FriendRequestResolved {
            user: user_id(W, &r.user)?,
            from: user_id(W, &r.from)?,
            accepted: r.accepted,
        },
        Kind::FriendAdded(a) => Event::FriendAdded {
            user: user_id(W, &a.user)?,
            friend: user_id(W, &a.friend)?,
            remark: a.remark,
            at: TimeMs(a.time_ms),
            home: optional_region(W, &a.home)?,
        },
        Kind::AccountDeleted(d) => Event::AccountDeleted {
            user: user_id(W, &d.user_id)?,
            at: TimeMs(d.time_ms),
            conversations: d.conversations.iter().map(|c| conversation_id(W, c)).collect::<Result<_, _>>()?,
            prefs: d.prefs.iter().map(|c| conversation_id(W, c)).collect::<Result<_, _>>()?,
        },
        Kind::FriendRemoved(r) => Event::FriendRemoved { user: user_id(W, &r.user)?, friend: user_id(W, &r.friend)? },
        Kind::FriendRemarked(r) => {
            Event::FriendRemarked { user: user_id(W, &r.user)?, friend: user_id(W, &r.friend)?, remark: r.remark }
        }
        Kind::ConversationFriended(f) => Event::ConversationFriended {
            conversation: conversation_id(W, &f.conversation_id)?,
            lister: user_id(W, &f.lister)?,
            friend: f.friend,
        },
        Kind::ConversationBlocked(b) => Event::ConversationBlocked {
            conversation: conversation_id(W, &b.conversation_id)?,
            blocker: user_id(W, &b.blocker)?,
            blocked: b.blocked,
        },
        Kind::GroupRoleSet(r) => Event::GroupRoleSet {
            group: group_id(W, &r.group_id)?,
            user: user_id(W, &r.user)?,
            role: group_role(W, &r.role)?,
            by: user_id(W, &r.by)?,
        },
        Kind::GroupListed(l) => Event::GroupListed {
            user: user_id(W, &l.user)?,
            group: group_id(W, &l.group_id)?,
            at: TimeMs(l.time_ms),
            home: optional_region(W, &l.home)?,
        },
        Kind::GroupUnlisted(u) => Event::GroupUnlisted { user: user_id(W, &u.user)?, group: group_id(W, &u.group_id)? },
    })
}

pub fn message_to_pb(m: &Message) -> pb::MessageRecord {
    pb::MessageRecord {
        version: RECORD_VERSION,
        message_id: m.id.to_string(),
        seq: m.seq.0,
        sender: m.sender.to_string(),
        time_ms: m.time.0,
        elements: m.elements.iter().map(element_to_pb).collect(),
        recalled: m.recalled.is_some(),
        recalled_ms: m.recalled.as_ref().map_or(0, |r| r.at.0),
        recalled_by: m.recalled.as_ref().map(|r| r.by.to_string()).unwrap_or_default(),
    }
}

pub fn message_from_pb(m: pb::MessageRecord) -> Result<Message, StorageError> {
    const W: &str = "message";
    Ok(Message {
        id: MessageId::from_stored(m.message_id),
        seq: Seq(m.seq),
        sender: user_id(W, &m.sender)?,
        time: TimeMs(m.time_ms),
        elements: m.elements.into_iter().map(element_from_pb).collect::<Result<_, _>>()?,
        recalled: if m.recalled {
            Some(Recall { by: user_id(W, &m.recalled_by)?, at: TimeMs(m.recalled_ms) })
        } else {
            None
        },
    })
}

pub fn conversation_ref_to_pb(r: &ConversationRef) -> pb::ConversationRef {
    pb::ConversationRef {
        version: RECORD_VERSION,
        conversation_id: r.conversation.to_string(),
        peer: r.peer.to_string(),
        joined_ms: r.joined.0,
        home: region_or_empty(r.home.as_ref()),
    }
}

pub fn conversation_ref_from_pb(r: pb::ConversationRef) -> Result<ConversationRef, StorageError> {
    const W: &str = "conversation ref";
    Ok(ConversationRef {
        conversation: conversation_id(W, &r.conversation_id)?,
        peer: user_id(W, &r.peer)?,
        joined: TimeMs(r.joined_ms),
        home: optional_region(W, &r.home)?,
    })
}

pub fn dedup_to_pb(d: &DedupEntry) -> pb::DedupRecord {
    pb::DedupRecord { version: RECORD_VERSION, message_id: d.message_id.to_string(), seq: d.seq.0, time_ms: d.time.0 }
}

pub fn dedup_from_pb(d: pb::DedupRecord) -> DedupEntry {
    DedupEntry { message_id: MessageId::from_stored(d.message_id), seq: Seq(d.seq), time: TimeMs(d.time_ms) }
}

pub fn group_to_pb(g: &Group) -> pb::GroupRecord {
    pb::GroupRecord {
        version: RECORD_VERSION,
        group_id: g.id.to_string(),
        kind: g.kind.name().to_owned(),
        name: g.name.clone(),
        owner: g.owner.to_string(),
        max_members: g.max_members,
        member_count: g.member_count,
        created_ms: g.created.0,
        dismissed: g.dismissed,
        hide_history: g.hide_history,
        at_all_seq: g.at_all_seq.0,
        profile: g.profile.clone().into_iter().collect(),
        join_option: g.join_option.name().to_owned(),
        muted_all: g.muted_all,
        applications: g.applications,
        likes: g.likes,
        topics: g.topics,
    }
}

pub fn group_from_pb(g: pb::GroupRecord) -> Result<Group, StorageError> {
    const W: &str = "group";
    let kind = group_kind(W, &g.kind)?;
    let join_option = if g.join_option.is_empty() {
        JoinOption::default_for(kind)
    } else {
        JoinOption::from_name(&g.join_option)
            .ok_or_else(|| StorageError::corrupt(W, format!("unknown join option {:?}", g.join_option)))?
    };
    Ok(Group {
        id: group_id(W, &g.group_id)?,
        kind,
        profile: g.profile.into_iter().collect(),
        join_option,
        muted_all: g.muted_all,
        applications: g.applications,
        likes: g.likes,
        topics: g.topics,
        name: g.name,
        owner: user_id(W, &g.owner)?,
        max_members: g.max_members,
        member_count: g.member_count,
        created: TimeMs(g.created_ms),
        dismissed: g.dismissed,
        hide_history: g.hide_history,
        at_all_seq: Seq(g.at_all_seq),
    })
}

pub fn group_member_to_pb(m: &GroupMember) -> pb::GroupMemberRecord {
    pb::GroupMemberRecord {
        version: RECORD_VERSION,
        user: m.user.to_string(),
        role: m.role.name().to_owned(),
        joined_ms: m.joined.0,
        read_seq: m.read_seq.0,
        muted_until_ms: m.muted_until.0,
        hidden: m.hidden,
        mention_seq: m.mention_seq.0,
        visible_from: m.visible_from.0,
        info: m.info.clone().into_iter().collect(),
        home: m.home.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

pub fn group_member_from_pb(m: pb::GroupMemberRecord) -> Result<GroupMember, StorageError> {
    const W: &str = "group member";
    Ok(GroupMember {
        user: user_id(W, &m.user)?,
        role: group_role(W, &m.role)?,
        joined: TimeMs(m.joined_ms),
        read_seq: Seq(m.read_seq),
        muted_until: TimeMs(m.muted_until_ms),
        hidden: m.hidden,
        mention_seq: Seq(m.mention_seq),
        visible_from: Seq(m.visible_from),
        info: m.info.into_iter().collect(),
        home: optional_region(W, &m.home)?,
    })
}

pub fn friend_to_pb(f: &Friend) -> pb::FriendRecord {
    pb::FriendRecord {
        version: RECORD_VERSION,
        remark: f.remark.clone(),
        since_ms: f.since.0,
        home: f.home.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

/// A friend list entry for `friend` (its key names the friend).
pub fn friend_from_pb(friend: UserId, r: pb::FriendRecord) -> Result<Friend, StorageError> {
    Ok(Friend { user: friend, remark: r.remark, since: TimeMs(r.since_ms), home: optional_region("friend", &r.home)? })
}

pub fn group_ref_to_pb(r: &GroupRef) -> pb::GroupRefRecord {
    pb::GroupRefRecord {
        version: RECORD_VERSION,
        group_id: r.group.to_string(),
        joined_ms: r.joined.0,
        home: r.home.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

pub fn group_ref_from_pb(r: pb::GroupRefRecord) -> Result<GroupRef, StorageError> {
    Ok(GroupRef {
        group: group_id("group ref", &r.group_id)?,
        joined: TimeMs(r.joined_ms),
        home: optional_region("group ref", &r.home)?,
    })
}

/// A row's settings as stored; `subject` (user, conversation) is set in events only.
pub fn prefs_to_pb(p: &ConversationPrefs, subject: Option<(&UserId, &ConversationId)>) -> pb::ConversationPrefsRecord {
    pb::ConversationPrefsRecord {
        version: RECORD_VERSION,
        pinned: p.pinned,
        dnd: p.dnd,
        draft: p.draft.clone(),
        marks: p.marks.clone(),
        hidden_up_to: p.hidden_up_to.0,
        user: subject.map(|(u, _)| u.to_string()).unwrap_or_default(),
        conversation_id: subject.map(|(_, c)| c.to_string()).unwrap_or_default(),
    }
}

pub fn prefs_from_pb(p: pb::ConversationPrefsRecord) -> ConversationPrefs {
    ConversationPrefs {
        pinned: p.pinned,
        dnd: p.dnd,
        draft: p.draft,
        marks: p.marks,
        hidden_up_to: Seq(p.hidden_up_to),
    }
}

pub fn history_view_to_pb(v: &HistoryView, subject: Option<(&UserId, &ConversationId)>) -> pb::HistoryViewRecord {
    pb::HistoryViewRecord {
        version: RECORD_VERSION,
        cleared_up_to: v.cleared_up_to.0,
        deleted: v.deleted.iter().map(|s| s.0).collect(),
        user: subject.map(|(u, _)| u.to_string()).unwrap_or_default(),
        conversation_id: subject.map(|(_, c)| c.to_string()).unwrap_or_default(),
    }
}

pub fn history_view_from_pb(v: pb::HistoryViewRecord) -> HistoryView {
    HistoryView { cleared_up_to: Seq(v.cleared_up_to), deleted: v.deleted.into_iter().map(Seq).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_round_trips() {
        let leaf = Element::Text { text: "hi".into() };
        let all = vec![
            leaf.clone(),
            Element::Image {
                url: "u".into(),
                format: "png".into(),
                size_bytes: 1,
                width: 2,
                height: 3,
                thumbnail_url: "t".into(),
            },
            Element::Voice { url: "u".into(), size_bytes: 1, duration_seconds: 2 },
            Element::Video {
                url: "u".into(),
                format: "mp4".into(),
                size_bytes: 1,
                duration_seconds: 2,
                thumbnail_url: "t".into(),
            },
            Element::File { url: "u".into(), name: "n".into(), size_bytes: 1 },
            Element::Face { index: 7, data: vec![1, 2] },
            Element::Location { description: "d".into(), latitude: 1.5, longitude: -2.5 },
            Element::Custom { data: vec![0, 255], description: "d".into(), extension: "e".into() },
            Element::MergedForward {
                title: "t".into(),
                abstracts: vec!["a".into()],
                messages: vec![Forwarded { sender: "s".into(), time_ms: 9, elements: vec![leaf] }],
            },
        ];
        for e in all {
            let back = element_from_pb(element_to_pb(&e)).map_err(|e| e.to_string());
            assert_eq!(back, Ok(e));
        }
    }
}
