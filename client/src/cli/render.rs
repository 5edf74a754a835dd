//! How the command line shows API responses: one JSON document for scripts, or one line per
//! message, conversation or shard for people.

use crate::message_text;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::logged_event::Kind as EventKind;
use crate::api::message_element::Kind;
use crate::api::{
    AddNodeResponse, AuditResidencyResponse, ClusterStatusResponse, Conversation, CreateUserResponse,
    GetHistoryResponse, ListConversationsResponse, LoggedEvent, LogicVersionResponse, MarkReadResponse, Message,
    MessageElement, NodeAudit, RecallMessageResponse, RemoveNodeResponse, SendMessageResponse, ShardStatus,
    VerifyProjectionsResponse,
};

// ------------------------------------------------------------------------------------- JSON

/// `{"conversation_id", "last_seq", "next_seq", "messages": [...]}`.
pub fn history_json(history: &GetHistoryResponse) -> Value {
    json!({
        "conversation_id": history.conversation_id,
        "last_seq": history.last_seq,
        "next_seq": history.next_seq,
        "messages": history.messages.iter().map(message_json).collect::<Vec<_>>(),
    })
}

/// One message, with `text` the concatenation of its text elements.
pub fn message_json(message: &Message) -> Value {
    json!({
        "seq": message.seq,
        "message_id": message.message_id,
        "sender": message.sender,
        "server_time_ms": message.server_time_ms,
        "text": message_text(message),
        "recalled": message.recalled,
        "recalled_at_ms": message.recalled_at_ms,
        "recalled_by": message.recalled_by,
        "elements": elements_json(&message.elements),
    })
}

fn elements_json(elements: &[MessageElement]) -> Vec<Value> {
    elements.iter().map(element_json).collect()
}

/// One element as `{"type": ..., fields...}`; bytes are base64.
pub fn element_json(element: &MessageElement) -> Value {
    match &element.kind {
        Some(Kind::Text(e)) => json!({"type": "text", "text": e.text}),
        Some(Kind::Image(e)) => json!({
            "type": "image",
            "url": e.url,
            "format": e.format,
            "size_bytes": e.size_bytes,
            "width": e.width,
            "height": e.height,
            "thumbnail_url": e.thumbnail_url,
        }),
        Some(Kind::Voice(e)) => json!({
            "type": "voice",
            "url": e.url,
            "size_bytes": e.size_bytes,
            "duration_seconds": e.duration_seconds,
        }),
        Some(Kind::Video(e)) => json!({
            "type": "video",
            "url": e.url,
            "format": e.format,
            "size_bytes": e.size_bytes,
            "duration_seconds": e.duration_seconds,
            "thumbnail_url": e.thumbnail_url,
        }),
        Some(Kind::File(e)) => json!({
            "type": "file",
            "url": e.url,
            "name": e.name,
            "size_bytes": e.size_bytes,
        }),
        Some(Kind::Face(e)) => json!({
            "type": "face",
            "index": e.index,
            "data_base64": BASE64.encode(&e.data),
        }),
        Some(Kind::Location(e)) => json!({
            "type": "location",
            "description": e.description,
            "latitude": e.latitude,
            "longitude": e.longitude,
        }),
        Some(Kind::GroupTip(e)) => json!({
            "type": "group_tip",
            "tip": e.tip,
            "users": e.users,
            "by": e.by,
            "fields": e.fields,
        }),
        Some(Kind::Custom(e)) => json!({
            "type": "custom",
            "data_base64": BASE64.encode(&e.data),
            "description": e.description,
            "extension": e.extension,
        }),
        Some(Kind::MergedForward(e)) => json!({
            "type": "merged_forward",
            "title": e.title,
            "abstracts": e.abstracts,
            "messages": e.messages.iter().map(|m| json!({
                "sender": m.sender,
                "time_ms": m.time_ms,
                "elements": elements_json(&m.elements),
            })).collect::<Vec<_>>(),
        }),
        None => json!({"type": "unknown"}),
    }
}

/// `{"total_unread", "conversations": [{"conversation_id", "peer", "last_seq", "read_seq",
/// "unread", "last_time_ms", "last_text"}]}`.
pub fn conversations_json(list: &ListConversationsResponse) -> Value {
    let conversations: Vec<Value> = list
        .conversations
        .iter()
        .map(|c| {
            json!({
                "conversation_id": c.conversation_id,
                "peer": c.peer,
                "last_seq": c.last_seq,
                "read_seq": c.read_seq,
                "unread": c.unread,
                "last_time_ms": c.last_time_ms,
                "last_text": c.last_message.as_ref().map(message_text).unwrap_or_default(),
                "home_region": c.home_region,
                "home_unavailable": c.home_unavailable,
                "group_id": c.group_id,
                "mentioned": c.mentioned,
                "pinned": c.pinned,
                "dnd": c.dnd,
                "draft": c.draft,
                "marks": c.marks,
            })
        })
        .collect();
    json!({
        "total_unread": list.total_unread,
        "conversations": conversations,
        "unavailable_regions": list.unavailable_regions,
    })
}

/// `{"node_id", "region", "shards": [...every ShardStatus field...]}`.
pub fn status_json(status: &ClusterStatusResponse) -> Value {
    let shards: Vec<Value> = status
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard,
                "role": s.role,
                "leader": s.leader,
                "term": s.term,
                "last_log_index": s.last_log_index,
                "applied_index": s.applied_index,
                "purged_index": s.purged_index,
                "snapshot_index": s.snapshot_index,
                "state_hash": s.state_hash,
                "hashed_at_index": s.hashed_at_index,
                "voters": s.voters,
                "learners": s.learners,
                "snapshots_installed": s.snapshots_installed,
            })
        })
        .collect();
    let links: Vec<Value> = status
        .region_links
        .iter()
        .map(|l| json!({ "region": l.region, "state": l.state, "detail": l.detail }))
        .collect();
    json!({
        "node_id": status.node_id,
        "region": status.region,
        "shards": shards,
        "region_links": links,
    })
}

// ------------------------------------------------------------------------------ text lines

/// `SEQ  TIME  SENDER: CONTENT`.
/// One Subscribe event as JSON (`type`, `conversation_id`, `peer`/`group_id`/`topic`, and
/// what the type has: `seq` and `message`, `read_seq`, `by`, `fetch_from`/`fetch_to`,
/// `sync_token`).
pub fn subscribe_json(event: &crate::api::SubscribeEvent) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("type".into(), json!(event.r#type));
    for (key, value) in [
        ("conversation_id", &event.conversation_id),
        ("peer", &event.peer),
        ("group_id", &event.group_id),
        ("topic", &event.topic),
        ("by", &event.by),
        ("home_region", &event.home_region),
        ("sync_token", &event.sync_token),
        ("signal_kind", &event.signal_kind),
        ("signal_payload", &event.signal_payload),
    ] {
        if !value.is_empty() {
            out.insert(key.into(), json!(value));
        }
    }
    for (key, value) in [
        ("seq", event.seq),
        ("read_seq", event.read_seq),
        ("fetch_from", event.fetch_from),
        ("fetch_to", event.fetch_to),
        ("likes", event.likes),
    ] {
        if value != 0 {
            out.insert(key.into(), json!(value));
        }
    }
    if let Some(message) = &event.message {
        out.insert("message".into(), message_json(message));
    }
    Value::Object(out)
}

/// One Subscribe event as a line.
pub fn subscribe_line(event: &crate::api::SubscribeEvent) -> String {
    let place = if !event.group_id.is_empty() {
        if event.topic.is_empty() {
            format!("group:{}", event.group_id)
        } else {
            format!("group:{}/{}", event.group_id, event.topic)
        }
    } else {
        event.peer.clone()
    };
    match event.r#type.as_str() {
        "message" => match &event.message {
            Some(m) => format!("{place} {}", history_line(m)),
            None => format!("{place} #{}", event.seq),
        },
        "recalled" => format!("{place} #{} recalled by {}", event.seq, event.by),
        "read" => format!("{place} read up to #{}", event.read_seq),
        "fetch" => format!("{place} fetch #{}..#{}", event.fetch_from, event.fetch_to),
        "caught_up" => format!("caught up (token {})", event.sync_token),
        "likes" => format!("{place} likes {}", event.likes),
        "signal" => format!("{place} signal {} from {}: {}", event.signal_kind, event.by, event.signal_payload),
        "presence" => format!("{} is {}", event.by, event.signal_kind),
        other => format!("{other} {place}"),
    }
}

pub fn history_line(message: &Message) -> String {
    let content = if message.recalled {
        format!("(recalled by {} at {})", message.recalled_by, format_time_ms(message.recalled_at_ms))
    } else {
        message.elements.iter().map(element_summary).collect::<Vec<_>>().join("")
    };
    format!("{}  {}  {}: {}", message.seq, format_time_ms(message.server_time_ms), message.sender, content)
}

/// A person's view of one element: its text, or a bracketed description.
pub fn element_summary(element: &MessageElement) -> String {
    match &element.kind {
        Some(Kind::Text(e)) => e.text.clone(),
        Some(Kind::Image(e)) => format!("[image {}x{} {}]", e.width, e.height, e.url),
        Some(Kind::Voice(e)) => format!("[voice {}s {}]", e.duration_seconds, e.url),
        Some(Kind::Video(e)) => format!("[video {}s {}]", e.duration_seconds, e.url),
        Some(Kind::File(e)) => format!("[file {} {}]", e.name, e.url),
        Some(Kind::Face(e)) => format!("[face #{}]", e.index),
        Some(Kind::Location(e)) => format!("[location {} ({}, {})]", e.description, e.latitude, e.longitude),
        Some(Kind::Custom(e)) => format!("[custom {}]", e.description),
        Some(Kind::GroupTip(e)) => {
            let mut fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            fields.sort();
            let users = if e.users.is_empty() { String::new() } else { format!(" {}", e.users.join(",")) };
            let by = if e.by.is_empty() { String::new() } else { format!(" by {}", e.by) };
            let fields = if fields.is_empty() { String::new() } else { format!(" {}", fields.join(" ")) };
            format!("[{}{users}{by}{fields}]", e.tip)
        }
        Some(Kind::MergedForward(e)) => {
            format!("[forwarded {}: {} messages]", e.title, e.messages.len())
        }
        None => "[unknown element]".to_owned(),
    }
}

/// `PEER  unread=N  last_seq=N  read_seq=N  TIME  LAST_TEXT`, then `home=REGION` when the
/// answer names the conversation's home region.
pub fn conversation_line(conversation: &Conversation) -> String {
    let mut line = conversation_head_line(conversation);
    if conversation.mentioned {
        line.push_str("  @you");
    }
    if conversation.pinned {
        line.push_str("  pinned");
    }
    if conversation.dnd {
        line.push_str("  dnd");
    }
    if !conversation.marks.is_empty() {
        line.push_str(&format!("  marks={}", conversation.marks.join(",")));
    }
    if !conversation.draft.is_empty() {
        line.push_str(&format!("  draft={:?}", conversation.draft));
    }
    match (conversation.home_region.as_str(), conversation.home_unavailable) {
        ("", _) => line,
        (home, false) => format!("{line}  home={home}"),
        (home, true) => format!("{line}  home={home} (unavailable)"),
    }
}

fn conversation_head_line(conversation: &Conversation) -> String {
    if !conversation.group_id.is_empty() {
        let mut row = conversation.clone();
        row.peer = format!("group:{}", conversation.group_id);
        row.group_id.clear();
        return conversation_head_line(&row);
    }
    let last = conversation
        .last_message
        .as_ref()
        .map(|m| if m.recalled { "(recalled)".to_owned() } else { m.elements.iter().map(element_summary).collect() })
        .unwrap_or_default();
    format!(
        "{}  unread={}  last_seq={}  read_seq={}  {}  {}",
        conversation.peer,
        conversation.unread,
        conversation.last_seq,
        conversation.read_seq,
        format_time_ms(conversation.last_time_ms),
        last
    )
}

fn relation_event_line(r: &crate::api::RelationEvent) -> String {
    let mut line = r.r#type.clone();
    for (key, value) in [("conversation", &r.conversation_id), ("user", &r.user), ("other", &r.other)] {
        if !value.is_empty() {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    match r.r#type.as_str() {
        "UserBlocked" | "ConversationBlocked" => line.push_str(&format!(" blocked={}", r.flag)),
        "FriendRequestResolved" => line.push_str(&format!(" accepted={}", r.flag)),
        "ConversationFriended" => line.push_str(&format!(" friend={}", r.flag)),
        _ => {}
    }
    if !r.message.is_empty() {
        line.push_str(&format!(" message={:?}", r.message));
    }
    if !r.remark.is_empty() {
        line.push_str(&format!(" remark={:?}", r.remark));
    }
    let mut fields: Vec<_> = r.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v:?}"));
    }
    line
}

fn group_event_line(g: &crate::api::GroupEvent) -> String {
    let mut line = format!("{} group={}", g.r#type, g.group_id);
    for (key, value) in [("user", &g.user), ("by", &g.by), ("type", &g.group_type), ("role", &g.role)] {
        if !value.is_empty() {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    match g.r#type.as_str() {
        "GroupJoinResolved" => line.push_str(&format!(" approved={}", g.flag)),
        "GroupMutedAll" => line.push_str(&format!(" muted={}", g.flag)),
        _ => {}
    }
    if !g.message.is_empty() {
        line.push_str(&format!(" message={:?}", g.message));
    }
    let mut fields: Vec<_> = g.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v:?}"));
    }
    if g.seq > 0 {
        line.push_str(&format!(
            " seq={} id={} {:?}",
            g.seq,
            g.message_id,
            g.elements.iter().map(element_summary).collect::<Vec<_>>().join(" ")
        ));
    }
    if g.until_ms > 0 {
        line.push_str(&format!(" until={}", format_time_ms(g.until_ms)));
    }
    line
}

/// `group=ID members=N changed=BOOL`.
pub fn group_change_line(change: &crate::api::GroupChangeResponse) -> String {
    format!("group={} members={} changed={}", change.group_id, change.member_count, change.changed)
}

/// The group's profile line, then one line per member: `USER ROLE [muted until T]`.
pub fn group_lines(info: &crate::api::GetGroupResponse) -> Vec<String> {
    let mut lines = vec![];
    if let Some(g) = &info.group {
        lines.push(format!(
            "group={} type={} name={:?} owner={} members={}/{} last_seq={} join={} likes={}{}{}",
            g.group_id,
            g.r#type,
            g.name,
            g.owner,
            g.member_count,
            g.max_members,
            g.last_seq,
            g.join_option,
            g.likes,
            if g.muted_all { " muted_all" } else { "" },
            if g.dismissed { " dismissed" } else { "" }
        ));
        let mut profile: Vec<_> = g.profile.iter().collect();
        profile.sort();
        for (k, v) in profile {
            lines.push(format!("  {k}={v:?}"));
        }
    }
    for m in &info.members {
        let muted = if m.muted_until_ms > 0 {
            format!("  muted until {}", format_time_ms(m.muted_until_ms))
        } else {
            String::new()
        };
        let mut info: Vec<_> = m.info.iter().map(|(k, v)| format!("  {k}={v:?}")).collect();
        info.sort();
        lines.push(format!("{}  {}  read_seq={}{muted}{}", m.user, m.role, m.read_seq, info.concat()));
    }
    lines
}

/// `{"group": {...}, "members": [{"user", "role", "joined_ms", "read_seq", "muted_until_ms"}]}`.
pub fn group_json(info: &crate::api::GetGroupResponse) -> Value {
    let group = info.group.as_ref().map(|g| {
        json!({
            "group_id": g.group_id, "type": g.r#type, "name": g.name, "owner": g.owner,
            "max_members": g.max_members, "member_count": g.member_count, "created_ms": g.created_ms,
            "dismissed": g.dismissed, "last_seq": g.last_seq, "profile": g.profile,
            "join_option": g.join_option, "muted_all": g.muted_all, "applications": g.applications, "likes": g.likes,
        })
    });
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|m| json!({"user": m.user, "role": m.role, "joined_ms": m.joined_ms, "read_seq": m.read_seq, "muted_until_ms": m.muted_until_ms, "info": m.info}))
        .collect();
    json!({ "group": group, "members": members })
}

/// One line per node audited, then one per violation listed.
pub fn audit_lines(report: &AuditResidencyResponse) -> Vec<String> {
    let mut lines = vec![];
    let mut regions: Vec<&str> = report.nodes.iter().map(|n| n.region.as_str()).collect();
    regions.dedup();
    for region in regions {
        let nodes: Vec<&NodeAudit> = report.nodes.iter().filter(|n| n.region == region).collect();
        let records: u64 = nodes.iter().map(|n| n.records_scanned).sum();
        let subjects: u64 = nodes.iter().map(|n| n.subjects_seen).sum();
        let violations: u64 = nodes.iter().map(|n| n.violation_count).sum();
        lines.push(format!(
            "region {region}: {} node(s), {records} records scanned, {subjects} subjects seen, {violations} violations",
            nodes.len()
        ));
        for n in nodes {
            if !n.error.is_empty() {
                lines.push(format!("  node {} ({}): {}", n.node_id, n.addr, n.error));
            }
            for v in &n.violations {
                lines.push(format!(
                    "  node {}: {} of {} (home {}) in {}: {} [{}] ({} record(s) of this subject)",
                    n.node_id, v.what, v.subject, v.subject_home, region, v.location, v.key, v.records
                ));
            }
        }
    }
    lines
}

/// `{"nodes": [{"region", "node_id", "addr", "records_scanned", "subjects_seen",
/// "violation_count", "violations": [...], "error"}], "violations": N}`.
pub fn audit_json(report: &AuditResidencyResponse) -> Value {
    let nodes: Vec<Value> = report
        .nodes
        .iter()
        .map(|n| {
            json!({
                "region": n.region, "node_id": n.node_id, "addr": n.addr,
                "records_scanned": n.records_scanned, "subjects_seen": n.subjects_seen,
                "violation_count": n.violation_count, "error": n.error,
                "violations": n.violations.iter().map(|v| json!({
                    "location": v.location, "key": v.key, "subject": v.subject,
                    "subject_home": v.subject_home, "what": v.what, "records": v.records,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "nodes": nodes, "violations": report.nodes.iter().map(|n| n.violation_count).sum::<u64>() })
}

/// `node N region R`, then one line per shard.
pub fn status_lines(status: &ClusterStatusResponse) -> Vec<String> {
    let mut lines = vec![format!("node {} region {}", status.node_id, status.region)];
    lines.extend(status.shards.iter().map(shard_line));
    lines.extend(status.region_links.iter().map(|l| format!("link to {}: {} ({})", l.region, l.state, l.detail)));
    lines
}

fn shard_line(s: &ShardStatus) -> String {
    let mut line = format!(
        "shard {}: role={} leader={} term={} last_log={} applied={} purged={} snapshot={} \
         voters={} learners={} snapshots_installed={}",
        s.shard,
        if s.role.is_empty() { "-" } else { &s.role },
        s.leader,
        s.term,
        s.last_log_index,
        s.applied_index,
        s.purged_index,
        s.snapshot_index,
        id_list(&s.voters),
        id_list(&s.learners),
        s.snapshots_installed,
    );
    if !s.state_hash.is_empty() {
        line.push_str(&format!(" hash={}@{}", s.state_hash, s.hashed_at_index));
    }
    line
}

/// `seq=N message_id=ID conversation=ID`.
/// `{"events": [{"offset", "shard", "type", ...fields}]}`, in log order.
pub fn events_json(events: &[LoggedEvent]) -> Value {
    json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() })
}

fn event_offset(e: &LoggedEvent) -> String {
    format!("{}.{}.{}", e.log_index, e.command, e.event)
}

pub fn event_json(e: &LoggedEvent) -> Value {
    let mut doc = match &e.kind {
        Some(EventKind::UserCreated(u)) => json!({
            "type": "UserCreated", "user_id": u.user_id, "home_region": u.home_region,
            "nickname": u.nickname, "time_ms": u.time_ms,
        }),
        Some(EventKind::MessageSent(m)) => json!({
            "type": "MessageSent", "conversation_id": m.conversation_id, "seq": m.seq,
            "message_id": m.message_id, "sender": m.sender, "recipient": m.recipient,
            "elements": m.elements.iter().map(element_json).collect::<Vec<_>>(),
            "request_id": m.request_id, "time_ms": m.time_ms,
        }),
        Some(EventKind::MessageRecalled(r)) => json!({
            "type": "MessageRecalled", "conversation_id": r.conversation_id, "seq": r.seq,
            "by": r.by, "time_ms": r.time_ms,
        }),
        Some(EventKind::ReadMarked(r)) => json!({
            "type": "ReadMarked", "conversation_id": r.conversation_id, "user": r.user, "read_seq": r.read_seq,
        }),
        Some(EventKind::ConversationJoined(j)) => json!({
            "type": "ConversationJoined", "user": j.user, "conversation_id": j.conversation_id,
            "peer": j.peer, "time_ms": j.time_ms, "home_region": j.home_region,
        }),
        Some(EventKind::LogicVersionRaised(v)) => json!({ "type": "LogicVersionRaised", "from": v.from, "to": v.to }),
        Some(EventKind::IdClaimed(c)) => json!({ "type": "IdClaimed", "key": c.key, "region": c.region }),
        Some(EventKind::GroupEvent(g)) => json!({
            "type": g.r#type, "group_id": g.group_id, "user": g.user, "by": g.by, "group_type": g.group_type,
            "name": g.name, "role": g.role, "max_members": g.max_members, "seq": g.seq, "message_id": g.message_id,
            "elements": g.elements.iter().map(element_json).collect::<Vec<_>>(), "request_id": g.request_id,
            "time_ms": g.time_ms, "until_ms": g.until_ms, "fields": g.fields, "flag": g.flag, "message": g.message,
        }),
        Some(EventKind::RelationEvent(r)) => json!({
            "type": r.r#type, "user": r.user, "other": r.other, "conversation_id": r.conversation_id,
            "flag": r.flag, "message": r.message, "remark": r.remark, "fields": r.fields, "time_ms": r.time_ms,
        }),
        None => json!({ "type": "Unknown" }),
    };
    doc["offset"] = json!(event_offset(e));
    doc["shard"] = json!(e.shard);
    doc["region"] = json!(e.region);
    doc["epoch"] = json!(e.epoch);
    // The event's name outside its shard: unique across regions and failovers.
    doc["id"] = json!(format!("{}.{}.{}/{}", e.region, e.epoch, e.shard, event_offset(e)));
    doc
}

/// One line per event: `OFFSET TYPE fields…`.
pub fn event_lines(events: &[LoggedEvent]) -> Vec<String> {
    events.iter().map(event_line).collect()
}

pub fn event_line(e: &LoggedEvent) -> String {
    let what = match &e.kind {
        Some(EventKind::UserCreated(u)) => {
            format!("UserCreated user={} region={} at={}", u.user_id, u.home_region, format_time_ms(u.time_ms))
        }
        Some(EventKind::MessageSent(m)) => format!(
            "MessageSent {} seq={} from={} id={} at={} {:?}",
            m.conversation_id,
            m.seq,
            m.sender,
            m.message_id,
            format_time_ms(m.time_ms),
            m.elements.iter().map(element_summary).collect::<Vec<_>>().join(" ")
        ),
        Some(EventKind::MessageRecalled(r)) => {
            format!("MessageRecalled {} seq={} by={} at={}", r.conversation_id, r.seq, r.by, format_time_ms(r.time_ms))
        }
        Some(EventKind::ReadMarked(r)) => {
            format!("ReadMarked {} user={} read_seq={}", r.conversation_id, r.user, r.read_seq)
        }
        Some(EventKind::ConversationJoined(j)) if !j.home_region.is_empty() => {
            format!("ConversationJoined user={} {} peer={} home={}", j.user, j.conversation_id, j.peer, j.home_region)
        }
        Some(EventKind::ConversationJoined(j)) => {
            format!("ConversationJoined user={} {} peer={}", j.user, j.conversation_id, j.peer)
        }
        Some(EventKind::LogicVersionRaised(v)) => format!("LogicVersionRaised from={} to={}", v.from, v.to),
        Some(EventKind::IdClaimed(c)) => format!("IdClaimed key={} region={}", c.key, c.region),
        Some(EventKind::GroupEvent(g)) => group_event_line(g),
        Some(EventKind::RelationEvent(r)) => relation_event_line(r),
        None => "Unknown".to_owned(),
    };
    format!("{} {what}", event_offset(e))
}

/// `{"nodes": [{"node_id", "max_logic_version", "error"}], "shards": [{"shard", "logic_version", "epoch"}]}`.
pub fn logic_version_json(report: &LogicVersionResponse) -> Value {
    let nodes: Vec<Value> = report
        .nodes
        .iter()
        .map(|n| json!({ "node_id": n.node_id, "max_logic_version": n.max_logic_version, "error": n.error }))
        .collect();
    let shards: Vec<Value> = report
        .shards
        .iter()
        .map(|s| json!({ "shard": s.shard, "logic_version": s.logic_version, "epoch": s.epoch }))
        .collect();
    json!({ "nodes": nodes, "shards": shards })
}

/// `node N supports up to V` per member, then `shard S logic version V epoch E` per shard.
pub fn logic_version_lines(report: &LogicVersionResponse) -> Vec<String> {
    let nodes = report.nodes.iter().map(|n| {
        if n.error.is_empty() {
            format!("node {} supports up to {}", n.node_id, n.max_logic_version)
        } else {
            format!("node {} did not answer: {}", n.node_id, n.error)
        }
    });
    let shards =
        report.shards.iter().map(|s| format!("shard {} logic version {} epoch {}", s.shard, s.logic_version, s.epoch));
    nodes.chain(shards).collect()
}

/// `{"node_id", "shards": [{"shard", "equal", "applied_index", "events_replayed", "keys_compared",
/// "difference"}]}`.
pub fn verification_json(report: &VerifyProjectionsResponse) -> Value {
    let shards: Vec<Value> = report
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard, "equal": s.equal, "applied_index": s.applied_index,
                "events_replayed": s.events_replayed, "keys_compared": s.keys_compared, "difference": s.difference,
            })
        })
        .collect();
    json!({ "node_id": report.node_id, "shards": shards })
}

/// `shard N: equal (…)` or `shard N: DIFFERENT at CF/KEY: how`, one line per shard.
pub fn verification_lines(report: &VerifyProjectionsResponse) -> Vec<String> {
    report
        .shards
        .iter()
        .map(|s| {
            let counts = format!(
                "applied {}, {} events replayed, {} keys compared",
                s.applied_index, s.events_replayed, s.keys_compared
            );
            if s.equal {
                format!("shard {}: equal ({counts})", s.shard)
            } else {
                format!("shard {}: DIFFERENT at {} ({counts})", s.shard, s.difference)
            }
        })
        .collect()
}

pub fn send_line(sent: &SendMessageResponse) -> String {
    format!("seq={} message_id={} conversation={}", sent.seq, sent.message_id, sent.conversation_id)
}

/// `user=ID home_region=R created=BOOL`.
pub fn user_line(user: &CreateUserResponse) -> String {
    format!("user={} home_region={} created={}", user.user_id, user.home_region, user.created)
}

/// `read_seq=N unread=N`.
pub fn read_line(read: &MarkReadResponse) -> String {
    format!("read_seq={} unread={}", read.read_seq, read.unread)
}

/// `seq=N recalled_at_ms=T`.
pub fn recall_line(recall: &RecallMessageResponse) -> String {
    format!("seq={} recalled_at_ms={}", recall.seq, recall.recalled_at_ms)
}

/// `voters=1,2,3 learners=4` after an add.
pub fn add_node_line(members: &AddNodeResponse) -> String {
    membership_line(&members.voters, &members.learners)
}

/// `voters=1,2 learners=-` after a removal.
pub fn remove_node_line(members: &RemoveNodeResponse) -> String {
    membership_line(&members.voters, &members.learners)
}

fn membership_line(voters: &[u64], learners: &[u64]) -> String {
    format!("voters={} learners={}", id_list(voters), id_list(learners))
}

/// `1,2,3`, or `-` for none.
fn id_list(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2023-11-14T22:13:20.123Z`).
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The archive's root and window, one line per shard (segments, bytes, events, boundary),
/// then what verify or gc did.
pub fn archive_lines(report: &crate::api::ArchiveResponse, action: crate::api::ArchiveAction) -> Vec<String> {
    use crate::api::ArchiveAction;
    let mut lines = vec![if report.enabled {
        format!("node {}: archive {} (hot window {} s)", report.node_id, report.root, report.hot_window_seconds)
    } else {
        format!("node {}: no [archive] configured", report.node_id)
    }];
    for s in &report.shards {
        lines.push(format!(
            "shard {}: {} segment(s), {} bytes, {} events archived; cold up to {}, first hot {}",
            s.shard,
            s.segments,
            s.bytes,
            s.events,
            if s.cold_up_to.is_empty() { "-" } else { &s.cold_up_to },
            if s.first_hot.is_empty() { "-" } else { &s.first_hot },
        ));
    }
    match action {
        ArchiveAction::ArchiveVerify => {
            lines.push(format!("verified {} segment(s), {} damaged", report.verified_segments, report.problems.len()));
            lines.extend(report.problems.iter().map(|p| format!("  {p}")));
        }
        ArchiveAction::ArchiveGc => {
            lines.push(format!("{} object(s) listed, {} removed", report.objects_listed, report.removed.len()));
            lines.extend(report.removed.iter().map(|k| format!("  removed {k}")));
        }
        ArchiveAction::ArchiveStatus => {}
    }
    lines
}

/// `{"node_id", "enabled", "root", "hot_window_seconds", "shards": [{"shard", "segments",
/// "bytes", "events", "cold_up_to", "first_hot", "last_sealed_ms", "keys"}], "segments",
/// "verified_segments", "problems", "objects_listed", "removed"}`.
pub fn archive_json(report: &crate::api::ArchiveResponse) -> Value {
    let shards: Vec<Value> = report
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard, "segments": s.segments, "bytes": s.bytes, "events": s.events,
                "cold_up_to": s.cold_up_to, "first_hot": s.first_hot, "last_sealed_ms": s.last_sealed_ms,
                "keys": s.keys,
            })
        })
        .collect();
    json!({
        "node_id": report.node_id, "enabled": report.enabled, "root": report.root,
        "hot_window_seconds": report.hot_window_seconds, "shards": shards,
        "segments": report.shards.iter().map(|s| s.segments).sum::<u64>(),
        "verified_segments": report.verified_segments, "problems": report.problems,
        "objects_listed": report.objects_listed, "removed": report.removed,
    })
}

#[cfg(test)]
mod tests {
    use crate::api::{CustomElement, ForwardedMessage, ImageElement, MergedForwardElement, TextElement};

    use super::*;

    fn text(t: &str) -> MessageElement {
        MessageElement { kind: Some(Kind::Text(TextElement { text: t.into() })) }
    }

    fn image() -> MessageElement {
        MessageElement {
            kind: Some(Kind::Image(ImageElement {
                url: "s3://media/cat.png".into(),
                format: "png".into(),
                size_bytes: 2048,
                width: 640,
                height: 480,
                thumbnail_url: String::new(),
            })),
        }
    }

    fn message(seq: u64, elements: Vec<MessageElement>) -> Message {
        Message {
            message_id: format!("m{seq}"),
            seq,
            sender: "alice".into(),
            server_time_ms: 1_700_000_000_123,
            elements,
            ..Message::default()
        }
    }

    #[test]
    fn history_json_has_the_documented_shape() {
        let history = GetHistoryResponse {
            conversation_id: "c2c:alice:bob".into(),
            messages: vec![
                message(1, vec![text("hello "), image(), text("world")]),
                Message {
                    recalled: true,
                    recalled_at_ms: 1_700_000_001_000,
                    recalled_by: "alice".into(),
                    ..message(2, vec![])
                },
            ],
            last_seq: 2,
            next_seq: 0,
        };
        let doc = history_json(&history);
        assert_eq!(doc["conversation_id"], "c2c:alice:bob");
        assert_eq!(doc["last_seq"], 2);
        assert_eq!(doc["next_seq"], 0);
        let first = &doc["messages"][0];
        assert_eq!(first["seq"], 1);
        assert_eq!(first["message_id"], "m1");
        assert_eq!(first["sender"], "alice");
        assert_eq!(first["server_time_ms"], 1_700_000_000_123_i64);
        assert_eq!(first["text"], "hello world");
        assert_eq!(first["recalled"], false);
        assert_eq!(
            first["elements"],
            json!([
                {"type": "text", "text": "hello "},
                {"type": "image", "url": "s3://media/cat.png", "format": "png",
                 "size_bytes": 2048, "width": 640, "height": 480, "thumbnail_url": ""},
                {"type": "text", "text": "world"},
            ])
        );
        let second = &doc["messages"][1];
        assert_eq!(second["recalled"], true);
        assert_eq!(second["text"], "");
        assert_eq!(second["elements"], json!([]));
    }

    #[test]
    fn json_survives_a_round_trip_through_text() {
        let history = GetHistoryResponse {
            messages: vec![message(7, vec![text("quote \" and \n newline")])],
            ..GetHistoryResponse::default()
        };
        let printed = history_json(&history).to_string();
        let parsed: Value = serde_json::from_str(&printed).expect("valid JSON");
        assert_eq!(parsed["messages"][0]["text"], "quote \" and \n newline");
    }

    #[test]
    fn bytes_and_nested_elements_render_as_plain_json() {
        let custom = MessageElement {
            kind: Some(Kind::Custom(CustomElement {
                data: b"{\"k\":1}".to_vec(),
                description: "order".into(),
                extension: "x".into(),
            })),
        };
        assert_eq!(
            element_json(&custom),
            json!({"type": "custom", "data_base64": "eyJrIjoxfQ==",
                   "description": "order", "extension": "x"})
        );
        let forward = MessageElement {
            kind: Some(Kind::MergedForward(MergedForwardElement {
                title: "chat".into(),
                abstracts: vec!["a: hi".into()],
                messages: vec![ForwardedMessage { sender: "a".into(), time_ms: 5, elements: vec![text("hi")] }],
            })),
        };
        assert_eq!(
            element_json(&forward),
            json!({"type": "merged_forward", "title": "chat", "abstracts": ["a: hi"],
                   "messages": [{"sender": "a", "time_ms": 5,
                                 "elements": [{"type": "text", "text": "hi"}]}]})
        );
        assert_eq!(element_json(&MessageElement { kind: None }), json!({"type": "unknown"}));
    }

    #[test]
    fn conversations_json_has_the_documented_shape() {
        let list = ListConversationsResponse {
            conversations: vec![
                Conversation {
                    conversation_id: "c1".into(),
                    peer: "bob".into(),
                    last_seq: 9,
                    read_seq: 6,
                    unread: 3,
                    last_time_ms: 42,
                    last_message: Some(message(9, vec![text("see you")])),
                    home_region: "sg".into(),
                    home_unavailable: false,
                    group_id: String::new(),
                    mentioned: false,
                    pinned: true,
                    dnd: false,
                    draft: "later".into(),
                    marks: vec!["work".into()],
                },
                Conversation { conversation_id: "c2".into(), peer: "carol".into(), ..Conversation::default() },
            ],
            total_unread: 3,
            next_page_token: String::new(),
            unavailable_regions: vec![],
        };
        assert_eq!(
            conversations_json(&list),
            json!({
                "total_unread": 3,
                "conversations": [
                    {"conversation_id": "c1", "peer": "bob", "last_seq": 9, "read_seq": 6,
                     "unread": 3, "last_time_ms": 42, "last_text": "see you",
                     "home_region": "sg", "home_unavailable": false, "group_id": "", "mentioned": false,
                     "pinned": true, "dnd": false, "draft": "later", "marks": ["work"]},
                    {"conversation_id": "c2", "peer": "carol", "last_seq": 0, "read_seq": 0,
                     "unread": 0, "last_time_ms": 0, "last_text": "",
                     "home_region": "", "home_unavailable": false, "group_id": "", "mentioned": false,
                     "pinned": false, "dnd": false, "draft": "", "marks": []},
                ],
                "unavailable_regions": []
            })
        );
    }

    #[test]
    fn status_renders_every_shard() {
        let status = ClusterStatusResponse {
            node_id: 2,
            region: "sg".into(),
            shards: vec![ShardStatus {
                shard: 0,
                leader: 1,
                term: 3,
                last_log_index: 10,
                applied_index: 10,
                voters: vec![1, 2, 3],
                role: "follower".into(),
                state_hash: "ab12".into(),
                hashed_at_index: 10,
                ..ShardStatus::default()
            }],
            region_links: vec![crate::api::RegionLink {
                region: "kr".into(),
                state: "up".into(),
                detail: "node 1 at 10.0.0.2:7201".into(),
            }],
        };
        let doc = status_json(&status);
        assert_eq!(doc["node_id"], 2);
        assert_eq!(doc["shards"][0]["voters"], json!([1, 2, 3]));
        assert_eq!(doc["shards"][0]["learners"], json!([]));
        assert_eq!(doc["shards"][0]["state_hash"], "ab12");
        assert_eq!(
            status_lines(&status),
            vec![
                "node 2 region sg".to_owned(),
                "shard 0: role=follower leader=1 term=3 last_log=10 applied=10 purged=0 \
                 snapshot=0 voters=1,2,3 learners=- snapshots_installed=0 hash=ab12@10"
                    .to_owned(),
                "link to kr: up (node 1 at 10.0.0.2:7201)".to_owned(),
            ]
        );
        assert_eq!(doc["region_links"][0]["state"], "up");
    }

    #[test]
    fn human_lines_show_content_and_tombstones() {
        assert_eq!(
            history_line(&message(1, vec![text("look: "), image()])),
            "1  2023-11-14T22:13:20.123Z  alice: look: [image 640x480 s3://media/cat.png]"
        );
        let recalled = Message { recalled: true, recalled_by: "alice".into(), recalled_at_ms: 0, ..message(2, vec![]) };
        assert_eq!(
            history_line(&recalled),
            "2  2023-11-14T22:13:20.123Z  alice: (recalled by alice at 1970-01-01T00:00:00.000Z)"
        );
        let sent = SendMessageResponse {
            message_id: "m9".into(),
            seq: 9,
            server_time_ms: 1,
            conversation_id: "c1".into(),
            duplicate: false,
        };
        assert_eq!(send_line(&sent), "seq=9 message_id=m9 conversation=c1");
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
