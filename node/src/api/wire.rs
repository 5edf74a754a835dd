//! Wire (API) types ↔ domain types. Wire types are lenient (every field optional); they are
//! validated here, once, on the way in.

use meridian_domain::element::{Element, Forwarded};
use meridian_domain::{Event, Message, Reason, RegionCode, Rejection, ShardId};
use meridian_proto::api;
use meridian_storage::LoggedEvent;

fn invalid(what: &str) -> Rejection {
    Rejection::new(Reason::ElementInvalid, what.to_owned())
}

pub fn element_from_wire(e: api::MessageElement) -> Result<Element, Rejection> {
    use api::message_element::Kind;
    Ok(match e.kind.ok_or_else(|| invalid("an element has no kind (text, image, …)"))? {
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
        Kind::GroupTip(_) => {
            return Err(Rejection::new(
                Reason::ElementInvalid,
                "group notifications are written by the server, not sent",
            ))
        }
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
                        elements: f.elements.into_iter().map(element_from_wire).collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, Rejection>>()?,
        },
    })
}

pub fn element_to_wire(e: &Element) -> api::MessageElement {
    use api::message_element::Kind;
    let kind = match e.clone() {
        Element::Text { text } => Kind::Text(api::TextElement { text }),
        Element::Image { url, format, size_bytes, width, height, thumbnail_url } => {
            Kind::Image(api::ImageElement { url, format, size_bytes, width, height, thumbnail_url })
        }
        Element::Voice { url, size_bytes, duration_seconds } => {
            Kind::Voice(api::VoiceElement { url, size_bytes, duration_seconds })
        }
        Element::Video { url, format, size_bytes, duration_seconds, thumbnail_url } => {
            Kind::Video(api::VideoElement { url, format, size_bytes, duration_seconds, thumbnail_url })
        }
        Element::File { url, name, size_bytes } => Kind::File(api::FileElement { url, name, size_bytes }),
        Element::Face { index, data } => Kind::Face(api::FaceElement { index, data }),
        Element::Location { description, latitude, longitude } => {
            Kind::Location(api::LocationElement { description, latitude, longitude })
        }
        Element::Custom { data, description, extension } => {
            Kind::Custom(api::CustomElement { data, description, extension })
        }
        Element::GroupTip { tip, users, by, fields } => Kind::GroupTip(api::GroupTipElement {
            tip: tip.name().to_owned(),
            users,
            by,
            fields: fields.into_iter().collect(),
        }),
        Element::MergedForward { title, abstracts, messages } => Kind::MergedForward(api::MergedForwardElement {
            title,
            abstracts,
            messages: messages
                .iter()
                .map(|m| api::ForwardedMessage {
                    sender: m.sender.clone(),
                    time_ms: m.time_ms,
                    elements: m.elements.iter().map(element_to_wire).collect(),
                })
                .collect(),
        }),
    };
    api::MessageElement { kind: Some(kind) }
}

/// An event of a shard's log, with its offset, as the API shows it.
/// An event of `region`'s shard `shard` as the event API shows it.
pub fn logged_event_to_wire(region: &RegionCode, shard: ShardId, logged: &LoggedEvent) -> api::LoggedEvent {
    use api::logged_event::Kind;
    let (offset, e) = (logged.offset, &logged.event);
    let kind = match e {
        Event::UserCreated { user, home_region, nickname, at } => Kind::UserCreated(api::UserCreatedEvent {
            user_id: user.to_string(),
            home_region: home_region.to_string(),
            nickname: nickname.clone(),
            time_ms: at.0,
        }),
        Event::MessageSent { conversation, seq, message_id, sender, recipient, elements, request_id, at } => {
            Kind::MessageSent(api::MessageSentEvent {
                conversation_id: conversation.to_string(),
                seq: seq.0,
                message_id: message_id.to_string(),
                sender: sender.to_string(),
                recipient: recipient.to_string(),
                elements: elements.iter().map(element_to_wire).collect(),
                request_id: request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                time_ms: at.0,
            })
        }
        Event::MessageRecalled { conversation, seq, by, at } => Kind::MessageRecalled(api::MessageRecalledEvent {
            conversation_id: conversation.to_string(),
            seq: seq.0,
            by: by.to_string(),
            time_ms: at.0,
        }),
        Event::ReadMarked { conversation, user, read_seq } => Kind::ReadMarked(api::ReadMarkedEvent {
            conversation_id: conversation.to_string(),
            user: user.to_string(),
            read_seq: read_seq.0,
        }),
        Event::ConversationJoined { user, conversation, peer, at, home } => {
            Kind::ConversationJoined(api::ConversationJoinedEvent {
                user: user.to_string(),
                conversation_id: conversation.to_string(),
                peer: peer.to_string(),
                time_ms: at.0,
                home_region: home.as_ref().map(ToString::to_string).unwrap_or_default(),
            })
        }
        Event::LogicVersionRaised { from, to } => {
            Kind::LogicVersionRaised(api::LogicVersionRaisedEvent { from: *from, to: *to })
        }
        Event::IdClaimed { key, region } => {
            Kind::IdClaimed(api::IdClaimedEvent { key: key.to_string(), region: region.to_string() })
        }
        Event::UserBlocked { .. }
        | Event::AccountDeleted { .. }
        | Event::ConversationBlocked { .. }
        | Event::ProfileUpdated { .. }
        | Event::FriendRequested { .. }
        | Event::FriendRequestResolved { .. }
        | Event::FriendAdded { .. }
        | Event::FriendRemoved { .. }
        | Event::FriendRemarked { .. }
        | Event::ConversationFriended { .. }
        | Event::ConversationPrefsSet { .. }
        | Event::HistoryViewSet { .. } => Kind::RelationEvent(relation_event_to_wire(&logged.event)),
        group_event => Kind::GroupEvent(group_event_to_wire(group_event)),
    };
    api::LoggedEvent {
        shard: shard.0,
        log_index: offset.log_index,
        command: offset.command,
        event: u32::from(offset.event),
        region: region.to_string(),
        epoch: logged.epoch,
        kind: Some(kind),
    }
}

pub fn message_to_wire(m: &Message) -> api::Message {
    api::Message {
        message_id: m.id.to_string(),
        seq: m.seq.0,
        sender: m.sender.to_string(),
        server_time_ms: m.time.0,
        elements: m.elements.iter().map(element_to_wire).collect(),
        recalled: m.recalled.is_some(),
        recalled_at_ms: m.recalled.as_ref().map_or(0, |r| r.at.0),
        recalled_by: m.recalled.as_ref().map(|r| r.by.to_string()).unwrap_or_default(),
    }
}

/// A group event (or a user's list-of-groups event) as the event API shows it.
fn group_event_to_wire(e: &Event) -> api::GroupEvent {
    let mut out = api::GroupEvent { r#type: e.name().to_owned(), ..Default::default() };
    match e {
        Event::GroupCreated { group, kind, owner, name, max_members, at, .. } => {
            out.group_id = group.to_string();
            out.group_type = kind.name().to_owned();
            out.user = owner.to_string();
            out.name = name.clone();
            out.max_members = *max_members;
            out.time_ms = at.0;
        }
        Event::GroupMemberAdded { group, user, role, by, at, .. } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.role = role.name().to_owned();
            out.by = by.to_string();
            out.time_ms = at.0;
        }
        Event::GroupMemberRemoved { group, user, by, at } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.by = by.to_string();
            out.time_ms = at.0;
        }
        Event::GroupMessageSent { group, seq, message_id, sender, elements, request_id, at, .. } => {
            out.group_id = group.to_string();
            out.seq = seq.0;
            out.message_id = message_id.to_string();
            out.user = sender.to_string();
            out.elements = elements.iter().map(element_to_wire).collect();
            out.request_id = request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default();
            out.time_ms = at.0;
        }
        Event::GroupMemberMuted { group, user, until, by } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.until_ms = until.0;
            out.by = by.to_string();
        }
        Event::GroupRoleSet { group, user, role, by } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.role = role.name().to_owned();
            out.by = by.to_string();
        }
        Event::GroupDismissed { group, by, at } => {
            out.group_id = group.to_string();
            out.by = by.to_string();
            out.time_ms = at.0;
        }
        Event::GroupListed { user, group, at, home } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.time_ms = at.0;
            out.home_region = home.as_ref().map(ToString::to_string).unwrap_or_default();
        }
        Event::GroupUnlisted { user, group } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
        }
        Event::GroupProfileUpdated { group, fields, by } => {
            out.group_id = group.to_string();
            out.by = by.to_string();
            out.fields = fields.iter().cloned().collect();
        }
        Event::GroupMemberInfoSet { group, user, fields, by } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.by = by.to_string();
            out.fields = fields.iter().cloned().collect();
        }
        Event::GroupJoinRequested { group, user, message, at } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.message = message.clone();
            out.time_ms = at.0;
        }
        Event::GroupJoinResolved { group, user, approved, by } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.by = by.to_string();
            out.flag = *approved;
        }
        Event::TopicCreated { group, topic, name, by, at } => {
            out.group_id = group.to_string();
            out.name = name.clone();
            out.by = by.to_string();
            out.time_ms = at.0;
            out.fields = [("topic".to_owned(), topic.to_string())].into_iter().collect();
        }
        Event::TopicMessageSent { group, topic, seq, message_id, sender, elements, request_id, at } => {
            out.group_id = group.to_string();
            out.seq = seq.0;
            out.message_id = message_id.to_string();
            out.user = sender.to_string();
            out.elements = elements.iter().map(element_to_wire).collect();
            out.request_id = request_id.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default();
            out.time_ms = at.0;
            out.fields = [("topic".to_owned(), topic.to_string())].into_iter().collect();
        }
        Event::GroupLiked { group, likes } => {
            out.group_id = group.to_string();
            out.fields = [("likes".to_owned(), likes.to_string())].into_iter().collect();
        }
        Event::GroupMutedAll { group, muted, by } => {
            out.group_id = group.to_string();
            out.by = by.to_string();
            out.flag = *muted;
        }
        Event::GroupMemberBanned { group, user, until, by } => {
            out.group_id = group.to_string();
            out.user = user.to_string();
            out.by = by.to_string();
            out.until_ms = until.0;
        }
        _ => {}
    }
    out
}

/// A relationship, profile or list-settings event as the event API shows it.
fn relation_event_to_wire(e: &Event) -> api::RelationEvent {
    let mut out = api::RelationEvent { r#type: e.name().to_owned(), ..Default::default() };
    match e {
        Event::UserBlocked { user, target, blocked, at } => {
            out.user = user.to_string();
            out.other = target.to_string();
            out.flag = *blocked;
            out.time_ms = at.0;
        }
        Event::ConversationBlocked { conversation, blocker, blocked } => {
            out.conversation_id = conversation.to_string();
            out.user = blocker.to_string();
            out.flag = *blocked;
        }
        Event::ProfileUpdated { user, fields } => {
            out.user = user.to_string();
            out.fields = fields.iter().cloned().collect();
        }
        Event::FriendRequested { user, from, message, remark, at } => {
            out.user = user.to_string();
            out.other = from.to_string();
            out.message = message.clone();
            out.remark = remark.clone();
            out.time_ms = at.0;
        }
        Event::FriendRequestResolved { user, from, accepted } => {
            out.user = user.to_string();
            out.other = from.to_string();
            out.flag = *accepted;
        }
        Event::FriendAdded { user, friend, remark, at, home } => {
            out.user = user.to_string();
            out.other = friend.to_string();
            out.remark = remark.clone();
            out.time_ms = at.0;
            out.home_region = home.as_ref().map(ToString::to_string).unwrap_or_default();
        }
        Event::AccountDeleted { user, at, conversations, prefs } => {
            out.user = user.to_string();
            out.time_ms = at.0;
            out.fields = [("conversations", conversations.len()), ("prefs", prefs.len())]
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n.to_string()))
                .collect();
        }
        Event::FriendRemoved { user, friend } => {
            out.user = user.to_string();
            out.other = friend.to_string();
        }
        Event::FriendRemarked { user, friend, remark } => {
            out.user = user.to_string();
            out.other = friend.to_string();
            out.remark = remark.clone();
        }
        Event::ConversationFriended { conversation, lister, friend } => {
            out.conversation_id = conversation.to_string();
            out.user = lister.to_string();
            out.flag = *friend;
        }
        Event::ConversationPrefsSet { user, conversation, prefs } => {
            out.user = user.to_string();
            out.conversation_id = conversation.to_string();
            out.fields = [
                ("pinned".to_owned(), prefs.pinned.to_string()),
                ("dnd".to_owned(), prefs.dnd.to_string()),
                ("draft".to_owned(), prefs.draft.clone()),
                ("marks".to_owned(), prefs.marks.join(",")),
                ("hidden_up_to".to_owned(), prefs.hidden_up_to.0.to_string()),
            ]
            .into_iter()
            .collect();
        }
        Event::HistoryViewSet { conversation, user, view } => {
            out.user = user.to_string();
            out.conversation_id = conversation.to_string();
            let deleted: Vec<String> = view.deleted.iter().map(|s| s.0.to_string()).collect();
            out.fields = [
                ("cleared_up_to".to_owned(), view.cleared_up_to.0.to_string()),
                ("deleted".to_owned(), deleted.join(",")),
            ]
            .into_iter()
            .collect();
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_without_kind_is_rejected() {
        let r = element_from_wire(api::MessageElement { kind: None });
        assert_eq!(r.map_err(|r| r.reason), Err(Reason::ElementInvalid));
    }

    #[test]
    fn elements_round_trip() {
        let e = Element::Location { description: "x".into(), latitude: 1.0, longitude: 2.0 };
        assert_eq!(element_from_wire(element_to_wire(&e)).ok(), Some(e));
    }
}
