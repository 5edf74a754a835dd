//! Groups (GRP-01..05): the rules of creating, joining, leaving, kicking, muting, sending
//! and dismissing, decided against the group's shard state.
//!
//! A group lives on the shard of its stream (`grp:{id}`): the group record, one record per
//! member (role, read cursor, mute), the stream's head and its messages. A send writes the
//! message, the head and the sender's own cursor — the same three records whatever the
//! group's size; a member's unread count is the head's seq minus their cursor. Membership
//! changes are the only effects on other shards: each member's list of groups, on the
//! member's shard.
//!
//! Who may do what:
//!
//! | | Work | Public | Meeting | Community | AVChatRoom |
//! | --- | --- | --- | --- | --- | --- |
//! | add others | any member | owner, admin | owner, admin | owner, admin | — |
//! | join by oneself | no | no (by application) | yes | yes | yes, keeps no state |
//! | kick, mute | owner; admins kick and mute plain members | same | same | same | — |
//! | send | members, unless muted | same | same | same | anyone |
//! | dismiss | owner | owner | owner | owner | owner |
//!
//! The owner cannot leave (transfer or dismiss first). Adding someone who is already a
//! member changes nothing for them; a command that would take a group past its cap is
//! refused whole (`GROUP_MEMBER_LIMIT`).

use crate::apply::{Applied, ApplyContext, Outcome, Reply};
use crate::change::Change;
use crate::command::EffectKind;
use crate::element::Element;
use crate::event::Event;
use crate::ids::RegionCode;
use crate::ids::{ConversationId, GroupId, RequestId, Seq, TimeMs, UserId};
use crate::records::{Group, GroupKind, GroupMember, GroupRole};
use crate::rejection::{Reason, Rejection};
use crate::shard::shard_for;
use crate::state::{ShardState, StateError};

/// Longest group name, in bytes (GRP-03).
pub const MAX_GROUP_NAME_BYTES: usize = 30;
/// Most members one message may mention.
pub const MAX_MENTIONS: usize = 50;
/// Most users one create or add may name.
pub const MAX_MEMBERS_PER_COMMAND: usize = 500;

type Decided = Result<Outcome, StateError>;

fn reject(reason: Reason, message: impl Into<String>) -> Decided {
    Ok(Err(Rejection::new(reason, message)))
}

fn wrong_shard(ctx: &ApplyContext, group: &GroupId) -> Option<Rejection> {
    let stream = ConversationId::group(group);
    let home = shard_for(stream.as_str(), ctx.shards);
    (home != ctx.shard)
        .then(|| Rejection::new(Reason::WrongShard, format!("group {group} lives on shard {home}, not {}", ctx.shard)))
}

/// The group, if it exists and is not dismissed.
pub(crate) fn live_group(
    state: &impl ShardState,
    ctx: &ApplyContext,
    group: &GroupId,
) -> Result<Result<Group, Rejection>, StateError> {
    if let Some(r) = wrong_shard(ctx, group) {
        return Ok(Err(r));
    }
    match state.group(group)? {
        None => Ok(Err(Rejection::new(Reason::GroupNotFound, format!("no group {group}")))),
        Some(g) if g.dismissed => {
            Ok(Err(Rejection::new(Reason::GroupDismissed, format!("group {group} was dismissed"))))
        }
        Some(g) => Ok(Ok(g)),
    }
}

pub(crate) fn member_of(
    state: &impl ShardState,
    group: &Group,
    user: &UserId,
) -> Result<Result<GroupMember, Rejection>, StateError> {
    Ok(state
        .group_member(&group.id, user)?
        .ok_or_else(|| Rejection::new(Reason::NotGroupMember, format!("{user} is not a member of group {}", group.id))))
}

/// The effect that puts `group` into (or takes it out of) `user`'s list of groups, on the
/// user's shard: in this region, or in `home` when they live in another.
pub(crate) fn listed(
    user: &UserId,
    group: &GroupId,
    ctx: &ApplyContext,
    joined: bool,
    home: Option<&RegionCode>,
) -> Change {
    let kind = if joined {
        EffectKind::GroupListed { user: user.clone(), group: group.clone(), at: ctx.time }
    } else {
        EffectKind::GroupUnlisted { user: user.clone(), group: group.clone() }
    };
    Change::Emit { lane: ctx.lane_to(user.as_str(), home), kind }
}

/// `user`'s home region among a command's `homes` (members homed in other regions), if
/// there; `None`: they live in this region.
pub(crate) fn home_in<'a>(homes: &'a [(UserId, RegionCode)], user: &UserId) -> Option<&'a RegionCode> {
    homes.iter().find(|(u, _)| u == user).map(|(_, home)| home)
}

pub(crate) fn create(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (group, kind, owner, name, max_members, members, hide_history): (
        &GroupId,
        GroupKind,
        &UserId,
        &str,
        u64,
        &[UserId],
        bool,
    ),
    homes: &[(UserId, RegionCode)],
) -> Decided {
    if let Some(r) = wrong_shard(ctx, group) {
        return Ok(Err(r));
    }
    if let Some(existing) = state.group(group)? {
        if &existing.owner == owner && !existing.dismissed {
            return Ok(Ok(Applied {
                events: vec![],
                changes: vec![],
                reply: Reply::GroupChanged {
                    group: group.clone(),
                    member_count: existing.member_count,
                    changed: false,
                },
            }));
        }
        return reject(Reason::GroupExists, format!("group {group} already exists"));
    }
    let mut joining: Vec<&UserId> = vec![owner];
    for m in members {
        if !joining.contains(&m) {
            joining.push(m);
        }
    }
    if !kind.keeps_members() {
        joining.truncate(1);
    }
    if joining.len() as u64 > max_members {
        return reject(
            Reason::GroupMemberLimit,
            format!("{} members are over the cap of {max_members} for a {} group", joining.len(), kind.name()),
        );
    }
    let mut events = vec![Event::GroupCreated {
        group: group.clone(),
        kind,
        owner: owner.clone(),
        name: name.to_owned(),
        max_members,
        hide_history,
        at: ctx.time,
    }];
    let mut changes = vec![];
    if kind.keeps_members() {
        for user in &joining {
            let role = if *user == owner { GroupRole::Owner } else { GroupRole::Member };
            events.push(Event::GroupMemberAdded {
                group: group.clone(),
                user: (*user).clone(),
                role,
                by: owner.clone(),
                hidden: false,
                at: ctx.time,
                home: home_in(homes, user).cloned(),
            });
            changes.push(listed(user, group, ctx, true, home_in(homes, user)));
        }
    }
    let member_count = if kind.keeps_members() { joining.len() as u64 } else { 0 };
    Ok(Ok(Applied {
        events,
        changes,
        reply: Reply::GroupChanged { group: group.clone(), member_count, changed: true },
    }))
}

pub(crate) fn add(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, users, hidden): (&UserId, &GroupId, &[UserId], bool),
    homes: &[(UserId, RegionCode)],
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let joining_alone = users.len() == 1 && &users[0] == actor;
    if !g.kind.keeps_members() {
        // A live room keeps no member state: joining is accepted and records nothing.
        return Ok(Ok(Applied {
            events: vec![],
            changes: vec![],
            reply: Reply::GroupChanged { group: group.clone(), member_count: 0, changed: false },
        }));
    }
    let actor_role = state.group_member(group, actor)?.map(|m| m.role);
    let free = g.join_option == crate::records::JoinOption::Free;
    let allowed = match (g.kind, actor_role) {
        (GroupKind::Work, Some(_)) => true,
        (GroupKind::Meeting | GroupKind::Community | GroupKind::Public, _) if joining_alone && free => true,
        (_, Some(role)) => role.manages(),
        _ => false,
    };
    if !allowed {
        let why = match (g.kind, actor_role) {
            (_, None) if joining_alone && g.join_option == crate::records::JoinOption::NeedApproval => {
                "this group is joined by application: apply, and its owner or an admin answers"
            }
            (_, None) if joining_alone && g.kind != GroupKind::Work => "this group takes no one who is not invited",
            (GroupKind::Work, None) if joining_alone => "a work group is joined by invitation from a member",
            (_, None) => "only members may add to this group",
            _ => "only the owner and admins may add members to this group",
        };
        return reject(Reason::PermissionDenied, format!("{actor} may not add to group {group}: {why}"));
    }
    if hidden && !actor_role.is_some_and(GroupRole::manages) {
        return reject(
            Reason::PermissionDenied,
            format!("only the owner and admins of group {group} add hidden members"),
        );
    }
    let mut new = vec![];
    for user in users {
        if !new.contains(&user) && state.group_member(group, user)?.is_none() {
            if crate::group_admin::banned(state, group, user, ctx.time)? {
                return reject(Reason::MemberBanned, format!("{user} is banned from group {group}"));
            }
            new.push(user);
        }
    }
    if g.member_count + new.len() as u64 > g.max_members {
        return reject(
            Reason::GroupMemberLimit,
            format!(
                "group {group} has {} of at most {} members: {} more do not fit",
                g.member_count,
                g.max_members,
                new.len()
            ),
        );
    }
    let mut events = vec![];
    let mut changes = vec![];
    for user in &new {
        events.push(Event::GroupMemberAdded {
            group: group.clone(),
            user: (*user).clone(),
            role: GroupRole::Member,
            by: actor.clone(),
            hidden,
            at: ctx.time,
            home: home_in(homes, user).cloned(),
        });
        changes.push(listed(user, group, ctx, true, home_in(homes, user)));
    }
    let member_count = g.member_count + new.len() as u64;
    let changed = !new.is_empty();
    // Hidden members join unannounced (GRP-06).
    if changed && !hidden {
        let users = new.iter().map(|u| u.to_string()).collect();
        events.push(tip(state, ctx, group, (crate::element::TipKind::Joined, users, actor), vec![])?);
    }
    Ok(Ok(Applied { events, changes, reply: Reply::GroupChanged { group: group.clone(), member_count, changed } }))
}

pub(crate) fn remove(
    state: &impl ShardState,
    ctx: &ApplyContext,
    actor: &UserId,
    group: &GroupId,
    user: &UserId,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let unchanged = |count| {
        Ok(Ok(Applied {
            events: vec![],
            changes: vec![],
            reply: Reply::GroupChanged { group: group.clone(), member_count: count, changed: false },
        }))
    };
    if !g.kind.keeps_members() {
        return unchanged(0);
    }
    let Some(target) = state.group_member(group, user)? else {
        // Already out: a repeat of a leave or a kick changes nothing.
        return unchanged(g.member_count);
    };
    if actor == user {
        if target.role == GroupRole::Owner {
            return reject(
                Reason::PermissionDenied,
                format!("{actor} owns group {group}: transfer ownership or dismiss the group instead of leaving"),
            );
        }
    } else {
        let actor_role = match member_of(state, &g, actor)? {
            Ok(m) => m.role,
            Err(r) => return Ok(Err(r)),
        };
        if !outranks(actor_role, target.role) {
            return reject(
                Reason::PermissionDenied,
                format!(
                    "{actor} ({}) may not remove {user} ({}) from group {group}",
                    actor_role.name(),
                    target.role.name()
                ),
            );
        }
    }
    let kind = if actor == user { crate::element::TipKind::Left } else { crate::element::TipKind::Kicked };
    Ok(Ok(Applied {
        events: vec![
            Event::GroupMemberRemoved { group: group.clone(), user: user.clone(), by: actor.clone(), at: ctx.time },
            tip(state, ctx, group, (kind, vec![user.to_string()], actor), vec![])?,
        ],
        changes: vec![listed(user, group, ctx, false, target.home.as_ref())],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count - 1, changed: true },
    }))
}

/// The first result of a send to `stream` that repeats an accepted request id, if it does.
fn repeated(
    state: &impl ShardState,
    stream: &ConversationId,
    sender: &UserId,
    request_id: Option<&RequestId>,
) -> Result<Option<Applied>, StateError> {
    let Some(request_id) = request_id else { return Ok(None) };
    Ok(state.dedup(stream, sender, request_id)?.map(|first| Applied {
        events: vec![],
        changes: vec![],
        reply: Reply::MessageAccepted {
            message_id: first.message_id,
            seq: first.seq,
            time: first.time,
            conversation: stream.clone(),
            duplicate: true,
        },
    }))
}

/// Why `member` may not send to `g` now: muted themselves, or the group muted for everyone
/// but its owner and admins.
fn muted(ctx: &ApplyContext, g: &Group, member: &GroupMember) -> Option<Rejection> {
    let (user, group) = (&member.user, &g.id);
    if member.muted_until > ctx.time {
        return Some(Rejection::new(
            Reason::MemberMuted,
            format!("{user} is muted in group {group} for {} ms more", member.muted_until.0 - ctx.time.0),
        ));
    }
    (g.muted_all && !member.role.manages())
        .then(|| Rejection::new(Reason::MemberMuted, format!("group {group} is muted: only its owner and admins send")))
}

/// Whether `actor` may kick or mute `target`: the owner anyone else, an admin plain members.
pub(crate) fn outranks(actor: GroupRole, target: GroupRole) -> bool {
    matches!(
        (actor, target),
        (GroupRole::Owner, GroupRole::Admin | GroupRole::Member) | (GroupRole::Admin, GroupRole::Member)
    )
}

pub(crate) fn mute(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, user, duration_ms): (&UserId, &GroupId, &UserId, u64),
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let actor_role = match member_of(state, &g, actor)? {
        Ok(m) => m.role,
        Err(r) => return Ok(Err(r)),
    };
    let target = match member_of(state, &g, user)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    if !outranks(actor_role, target.role) {
        return reject(
            Reason::PermissionDenied,
            format!("{actor} ({}) may not mute {user} ({}) in group {group}", actor_role.name(), target.role.name()),
        );
    }
    let until = if duration_ms == 0 {
        TimeMs(0)
    } else {
        TimeMs(ctx.time.0.saturating_add(i64::try_from(duration_ms).unwrap_or(i64::MAX)))
    };
    Ok(Ok(Applied {
        events: vec![Event::GroupMemberMuted { group: group.clone(), user: user.clone(), until, by: actor.clone() }],
        changes: vec![],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: true },
    }))
}

pub(crate) fn dismiss(state: &impl ShardState, ctx: &ApplyContext, actor: &UserId, group: &GroupId) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if &g.owner != actor {
        return reject(Reason::PermissionDenied, format!("only the owner of group {group} may dismiss it"));
    }
    Ok(Ok(Applied {
        events: vec![Event::GroupDismissed { group: group.clone(), by: actor.clone(), at: ctx.time }],
        changes: vec![],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: true },
    }))
}

pub(crate) fn send(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (sender, group, elements, request_id, mentions, at_all): (
        &UserId,
        &GroupId,
        &[Element],
        Option<&RequestId>,
        &[UserId],
        bool,
    ),
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let stream = ConversationId::group(group);
    if let Some(repeat) = repeated(state, &stream, sender, request_id)? {
        return Ok(Ok(repeat));
    }
    let mut mentioned = vec![];
    if g.kind.keeps_members() {
        let member = match member_of(state, &g, sender)? {
            Ok(m) => m,
            Err(r) => return Ok(Err(r)),
        };
        if let Some(r) = muted(ctx, &g, &member) {
            return Ok(Err(r));
        }
        if at_all && !member.role.manages() {
            return reject(
                Reason::PermissionDenied,
                format!("only the owner and admins of group {group} mention @all"),
            );
        }
        // Mentions of users who are not members are dropped, not refused.
        for user in mentions {
            if !mentioned.contains(user) && state.group_member(group, user)?.is_some() {
                mentioned.push(user.clone());
            }
        }
    } else if at_all || !mentions.is_empty() {
        return reject(Reason::PermissionDenied, "a live room has no members to mention");
    } else if crate::group_admin::banned(state, group, sender, ctx.time)? {
        return reject(Reason::MemberBanned, format!("{sender} is banned from live room {group}"));
    } else if g.muted_all && &g.owner != sender {
        return reject(Reason::MemberMuted, format!("live room {group} is muted: only its owner sends"));
    }
    let last_seq = state.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq);
    let seq = last_seq.next();
    let message_id = ctx.message_id();
    Ok(Ok(Applied {
        events: vec![Event::GroupMessageSent {
            group: group.clone(),
            seq,
            message_id: message_id.clone(),
            sender: sender.clone(),
            elements: elements.to_vec(),
            request_id: request_id.cloned(),
            mentions: mentioned,
            at_all,
            at: ctx.time,
        }],
        changes: vec![],
        reply: Reply::MessageAccepted { message_id, seq, time: ctx.time, conversation: stream, duplicate: false },
    }))
}

/// Moves a member's read cursor in a group's stream (`None`: to its newest message).
pub(crate) fn mark_read(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    group: &GroupId,
    up_to: Option<Seq>,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let member = match member_of(state, &g, user)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    let stream = ConversationId::group(group);
    let last_seq = state.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq);
    let target = match up_to {
        None => last_seq,
        Some(seq) if seq > last_seq => {
            return reject(
                Reason::SeqOutOfRange,
                format!("seq {seq} is past the newest message of group {group} ({last_seq})"),
            )
        }
        Some(seq) => seq,
    };
    let read_seq = member.read_seq.max(target);
    let reply = Reply::ReadMarked { read_seq, unread: last_seq.0.saturating_sub(read_seq.0) };
    if read_seq == member.read_seq {
        return Ok(Ok(Applied { events: vec![], changes: vec![], reply }));
    }
    Ok(Ok(Applied {
        events: vec![Event::ReadMarked { conversation: stream, user: user.clone(), read_seq }],
        changes: vec![],
        reply,
    }))
}

/// The owner makes a member an admin or a plain member.
pub(crate) fn set_role(
    state: &impl ShardState,
    ctx: &ApplyContext,
    actor: &UserId,
    group: &GroupId,
    (user, role): (&UserId, GroupRole),
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if &g.owner != actor {
        return reject(Reason::PermissionDenied, format!("only the owner of group {group} sets roles"));
    }
    let target = match member_of(state, &g, user)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    if target.role == GroupRole::Owner || role == GroupRole::Owner {
        return reject(Reason::PermissionDenied, "the owner's role changes only by a transfer of the group");
    }
    let unchanged = target.role == role;
    Ok(Ok(Applied {
        events: if unchanged {
            vec![]
        } else {
            vec![Event::GroupRoleSet { group: group.clone(), user: user.clone(), role, by: actor.clone() }]
        },
        changes: vec![],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: !unchanged },
    }))
}

/// The owner hands the group to another member and becomes a plain member.
pub(crate) fn transfer(
    state: &impl ShardState,
    ctx: &ApplyContext,
    actor: &UserId,
    group: &GroupId,
    to: &UserId,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if &g.owner == to && actor == to {
        // A repeat by the new owner of a transfer that already took place.
        return Ok(Ok(Applied {
            events: vec![],
            changes: vec![],
            reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: false },
        }));
    }
    if &g.owner != actor {
        return reject(Reason::PermissionDenied, format!("only the owner of group {group} may hand it over"));
    }
    if let Err(r) = member_of(state, &g, to)? {
        return Ok(Err(r));
    }
    Ok(Ok(Applied {
        events: vec![
            Event::GroupRoleSet { group: group.clone(), user: to.clone(), role: GroupRole::Owner, by: actor.clone() },
            Event::GroupRoleSet {
                group: group.clone(),
                user: actor.clone(),
                role: GroupRole::Member,
                by: actor.clone(),
            },
            tip(state, ctx, group, (crate::element::TipKind::OwnerChanged, vec![to.to_string()], actor), vec![])?,
        ],
        changes: vec![],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: true },
    }))
}

/// A recall in a group's stream (MSG-04): by its sender within the window, or by the owner or
/// an admin at any time. Leaves a tombstone, as in one-to-one chat.
pub(crate) fn recall(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, seq, window_ms): (&UserId, &GroupId, Seq, u64),
    stream: &ConversationId,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let role = if g.kind.keeps_members() {
        match member_of(state, &g, actor)? {
            Ok(m) => Some(m.role),
            Err(r) => return Ok(Err(r)),
        }
    } else {
        None
    };
    let Some(message) = state.message(stream, seq)? else {
        return recall_archived(state, ctx, (actor, seq, role), stream);
    };
    if let Some(done) = &message.recalled {
        return Ok(crate::apply::recalled_already(done, actor, seq));
    }
    let manager = role.is_some_and(GroupRole::manages);
    if !manager {
        if &message.sender != actor {
            return reject(
                Reason::NotMessageSender,
                "only the sender, the owner or an admin may recall a group message",
            );
        }
        let age_ms = ctx.time.0.saturating_sub(message.time.0);
        if u64::try_from(age_ms).unwrap_or(0) > window_ms {
            return reject(
                Reason::RecallWindowExpired,
                format!("seq {seq} was sent {age_ms} ms ago; messages can be recalled within {window_ms} ms"),
            );
        }
    }
    Ok(Ok(Applied {
        events: vec![Event::MessageRecalled { conversation: stream.clone(), seq, by: actor.clone(), at: ctx.time }],
        changes: vec![],
        reply: Reply::MessageRecalled { seq, at: ctx.time },
    }))
}

/// A recall of a message the stream no longer holds hot. An archived message is older than
/// the hot window, which is never shorter than the recall window: only the owner or an admin
/// may still recall it, as an overlay on the segment's copy.
fn recall_archived(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, seq, role): (&UserId, Seq, Option<GroupRole>),
    stream: &ConversationId,
) -> Decided {
    if state.cold_range(stream, seq)?.is_none() {
        return reject(Reason::MessageNotFound, format!("no message at seq {seq} of {stream}"));
    }
    if let Some(done) = state.recall_overlay(stream, seq)? {
        return Ok(crate::apply::recalled_already(&done, actor, seq));
    }
    if !role.is_some_and(GroupRole::manages) {
        return reject(
            Reason::RecallWindowExpired,
            format!("seq {seq} is archived: past the recall window (the owner or an admin may still recall it)"),
        );
    }
    Ok(Ok(Applied {
        events: vec![Event::MessageRecalled { conversation: stream.clone(), seq, by: actor.clone(), at: ctx.time }],
        changes: vec![],
        reply: Reply::MessageRecalled { seq, at: ctx.time },
    }))
}

/// A notification in a group's stream (joins, leaves, kicks, profile changes): a message at
/// the stream's next seq, from `by`, that members sync with the history. A command writes at
/// most one, after its membership events, so the seq is the head's next.
pub(crate) fn tip(
    state: &impl ShardState,
    ctx: &ApplyContext,
    group: &GroupId,
    (tip, users, by): (crate::element::TipKind, Vec<String>, &UserId),
    fields: Vec<(String, String)>,
) -> Result<Event, StateError> {
    let stream = ConversationId::group(group);
    let seq = state.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq).next();
    let message_id = ctx.message_id();
    Ok(Event::GroupMessageSent {
        group: group.clone(),
        seq,
        message_id,
        sender: by.clone(),
        elements: vec![Element::GroupTip { tip, users, by: by.to_string(), fields }],
        request_id: None,
        mentions: vec![],
        at_all: false,
        at: ctx.time,
    })
}

/// Most topics one Community has.
pub const MAX_TOPICS: u64 = 100;

/// The owner or an admin of a Community opens a topic. A repeat changes nothing.
pub(crate) fn create_topic(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, topic, name): (&UserId, &GroupId, &crate::ids::TopicId, &str),
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if g.kind != GroupKind::Community {
        return reject(
            Reason::PermissionDenied,
            format!("group {group} is a {} group: topics are a community's", g.kind.name()),
        );
    }
    match member_of(state, &g, actor)? {
        Ok(m) if m.role.manages() => {}
        Ok(_) => return reject(Reason::PermissionDenied, format!("only the owner and admins of {group} open topics")),
        Err(r) => return Ok(Err(r)),
    }
    if name.len() > MAX_GROUP_NAME_BYTES {
        return reject(Reason::GroupNameInvalid, format!("topic names are at most {MAX_GROUP_NAME_BYTES} bytes"));
    }
    let unchanged = Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: false };
    if state.topic(group, topic)?.is_some() {
        return Ok(Ok(Applied { events: vec![], changes: vec![], reply: unchanged }));
    }
    if g.topics >= MAX_TOPICS {
        return reject(Reason::GroupFieldInvalid, format!("a community has at most {MAX_TOPICS} topics"));
    }
    Ok(Ok(Applied {
        events: vec![Event::TopicCreated {
            group: group.clone(),
            topic: topic.clone(),
            name: name.to_owned(),
            by: actor.clone(),
            at: ctx.time,
        }],
        changes: vec![],
        reply: Reply::GroupChanged { group: group.clone(), member_count: g.member_count, changed: true },
    }))
}

/// A message to a topic: the group's rules for who may send, the topic's own seqs.
pub(crate) fn send_topic(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (sender, group, topic): (&UserId, &GroupId, &crate::ids::TopicId),
    elements: &[Element],
    request_id: Option<&RequestId>,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    let stream = ConversationId::topic_stream(group, topic);
    if let Some(repeat) = repeated(state, &stream, sender, request_id)? {
        return Ok(Ok(repeat));
    }
    if state.topic(group, topic)?.is_none() {
        return reject(Reason::TopicNotFound, format!("group {group} has no topic {topic}"));
    }
    let member = match member_of(state, &g, sender)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    if let Some(r) = muted(ctx, &g, &member) {
        return Ok(Err(r));
    }
    let seq = state.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq).next();
    let message_id = ctx.message_id();
    Ok(Ok(Applied {
        events: vec![Event::TopicMessageSent {
            group: group.clone(),
            topic: topic.clone(),
            seq,
            message_id: message_id.clone(),
            sender: sender.clone(),
            elements: elements.to_vec(),
            request_id: request_id.cloned(),
            at: ctx.time,
        }],
        changes: vec![],
        reply: Reply::MessageAccepted { message_id, seq, time: ctx.time, conversation: stream, duplicate: false },
    }))
}

/// Moves a member's read cursor in a topic's stream (`None`: to its newest message).
pub(crate) fn topic_mark_read(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    stream: &ConversationId,
    up_to: Option<Seq>,
) -> Decided {
    let (Some(group), Some(topic)) = (stream.group_id(), stream.topic()) else {
        return reject(Reason::ConversationIdInvalid, format!("{stream} is not a topic's stream"));
    };
    let g = match live_group(state, ctx, &group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if let Err(r) = member_of(state, &g, user)? {
        return Ok(Err(r));
    }
    if state.topic(&group, &topic)?.is_none() {
        return reject(Reason::TopicNotFound, format!("group {group} has no topic {topic}"));
    }
    let last_seq = state.conversation(stream)?.map_or(Seq::ZERO, |h| h.last_seq);
    let target = match up_to {
        None => last_seq,
        Some(seq) if seq > last_seq => {
            return reject(
                Reason::SeqOutOfRange,
                format!("seq {seq} is past the newest message of {stream} ({last_seq})"),
            )
        }
        Some(seq) => seq,
    };
    let current = state.topic_cursor(stream, user)?.unwrap_or(Seq::ZERO);
    let read_seq = current.max(target);
    let reply = Reply::ReadMarked { read_seq, unread: last_seq.0.saturating_sub(read_seq.0) };
    if read_seq == current {
        return Ok(Ok(Applied { events: vec![], changes: vec![], reply }));
    }
    Ok(Ok(Applied {
        events: vec![Event::ReadMarked { conversation: stream.clone(), user: user.clone(), read_seq }],
        changes: vec![],
        reply,
    }))
}
