//! Group administration (GRP-03..05): profile and member fields, applications to join and
//! their answers, muting everyone, bans.
//!
//! | | who |
//! | --- | --- |
//! | change the profile | any member of a work group; the owner and admins of the others (the owner alone in a live room) |
//! | change the join option | owner and admins of public, meeting and community groups (a work group is invitation only, a live room free) |
//! | set your own name card and receive option | every member |
//! | set others' name cards and member custom fields | the owner (anyone), admins (plain members) |
//! | answer applications, mute everyone | owner and admins |
//! | ban | the owner (anyone), admins (plain members); in a live room the owner |

use crate::apply::{Applied, ApplyContext, Outcome, Reply};
use crate::event::Event;
use crate::group::{listed, live_group, member_of, outranks};
use crate::ids::RegionCode;
use crate::ids::{GroupId, TimeMs, UserId};
use crate::profile::{custom_key, with_fields};
use crate::records::{Group, GroupKind, GroupRole, JoinOption};
use crate::rejection::{Reason, Rejection};
use crate::state::{ShardState, StateError};

/// Most custom fields a group keeps, and a member.
pub const MAX_GROUP_CUSTOM_FIELDS: usize = 10;
pub const MAX_MEMBER_CUSTOM_FIELDS: usize = 5;
/// Most applications one group keeps waiting.
pub const MAX_APPLICATIONS: u64 = 1000;
/// Longest application message, and name card, in bytes.
pub const MAX_APPLICATION_BYTES: usize = 256;
pub const MAX_NAME_CARD_BYTES: usize = 50;
/// Most likes one (aggregated) command carries.
pub const MAX_LIKES_PER_COMMAND: u64 = 1_000_000;
/// Most fields one update sets.
pub const MAX_FIELDS_PER_UPDATE: usize = 16;

type Decided = Result<Outcome, StateError>;

fn reject(reason: Reason, message: impl Into<String>) -> Decided {
    Ok(Err(Rejection::new(reason, message)))
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::GroupFieldInvalid, message)
}

fn at_most(name: &str, value: &str, limit: usize) -> Result<(), Rejection> {
    if value.len() > limit {
        return Err(bad(format!("{name} is at most {limit} bytes, got {}", value.len())));
    }
    Ok(())
}

fn check_count(fields: &[(String, String)]) -> Result<(), Rejection> {
    if fields.is_empty() || fields.len() > MAX_FIELDS_PER_UPDATE {
        return Err(bad(format!("an update sets 1..={MAX_FIELDS_PER_UPDATE} fields, got {}", fields.len())));
    }
    Ok(())
}

/// Checks a group profile update (at the boundary and at apply).
pub fn check_group_fields(fields: &[(String, String)]) -> Result<(), Rejection> {
    check_count(fields)?;
    for (name, value) in fields {
        match name.as_str() {
            "name" => {
                if value.is_empty() {
                    return Err(Rejection::new(Reason::GroupNameInvalid, "a group's name cannot be removed"));
                }
                if value.len() > crate::group::MAX_GROUP_NAME_BYTES {
                    return Err(Rejection::new(
                        Reason::GroupNameInvalid,
                        format!("group names are at most {} bytes", crate::group::MAX_GROUP_NAME_BYTES),
                    ));
                }
            }
            "introduction" => at_most(name, value, 240)?,
            "notification" => at_most(name, value, 300)?,
            "face_url" => at_most(name, value, 500)?,
            "join_option" => {
                if JoinOption::from_name(value).is_none() {
                    return Err(bad(format!("join_option is free, need_approval or forbid, not {value:?}")));
                }
            }
            "max_members" => {
                if !value.parse::<u64>().is_ok_and(|n| n >= 1) {
                    return Err(bad(format!("max_members is a number of members, at least 1, not {value:?}")));
                }
            }
            other if custom_key(other).is_some() => at_most(name, value, 512)?,
            other => {
                return Err(bad(format!(
                    "{other:?} is not a group field: name, introduction, notification, face_url, join_option, \
                     max_members or custom.KEY"
                )))
            }
        }
    }
    Ok(())
}

/// Checks a member fields update.
pub fn check_member_fields(fields: &[(String, String)]) -> Result<(), Rejection> {
    check_count(fields)?;
    for (name, value) in fields {
        match name.as_str() {
            "name_card" => at_most(name, value, MAX_NAME_CARD_BYTES)?,
            "recv_opt" => {
                if !value.is_empty() && !["receive", "no_notify", "reject"].contains(&value.as_str()) {
                    return Err(bad(format!("recv_opt is receive, no_notify or reject, not {value:?}")));
                }
            }
            other if custom_key(other).is_some() => at_most(name, value, 512)?,
            other => {
                return Err(bad(format!("{other:?} is not a member field: name_card, recv_opt or custom.KEY")));
            }
        }
    }
    Ok(())
}

/// A group with profile `fields` applied (the name and join option into their own fields).
pub fn group_with(mut g: Group, fields: &[(String, String)]) -> Group {
    let mut rest = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match name.as_str() {
            "name" => g.name = value.clone(),
            "join_option" => g.join_option = JoinOption::from_name(value).unwrap_or(g.join_option),
            "max_members" => g.max_members = value.parse().unwrap_or(g.max_members),
            _ => rest.push((name.clone(), value.clone())),
        }
    }
    g.profile = with_fields(std::mem::take(&mut g.profile), &rest).0;
    g
}

fn changed(group: &Group, changed: bool) -> Reply {
    Reply::GroupChanged { group: group.id.clone(), member_count: group.member_count, changed }
}

fn unchanged(reply: Reply) -> Decided {
    Ok(Ok(Applied { events: vec![], changes: vec![], reply }))
}

/// The actor's role, or `None` for a live room's non-owner (it keeps no members).
fn role_of(
    state: &impl ShardState,
    g: &Group,
    actor: &UserId,
) -> Result<Result<Option<GroupRole>, Rejection>, StateError> {
    if !g.kind.keeps_members() {
        return Ok(Ok((&g.owner == actor).then_some(GroupRole::Owner)));
    }
    Ok(member_of(state, g, actor)?.map(|m| Some(m.role)))
}

pub(crate) fn set_profile(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, type_cap): (&UserId, &GroupId, u64),
    fields: &[(String, String)],
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if let Err(r) = check_group_fields(fields) {
        return Ok(Err(r));
    }
    let role = match role_of(state, &g, actor)? {
        Ok(role) => role,
        Err(r) => return Ok(Err(r)),
    };
    let allowed = match (g.kind, role) {
        (GroupKind::Work, Some(_)) => true,
        (_, Some(role)) => role.manages(),
        (_, None) => false,
    };
    if !allowed {
        return reject(Reason::PermissionDenied, format!("{actor} may not change the profile of group {group}"));
    }
    if let Some((_, value)) = fields.iter().find(|(n, _)| n == "max_members") {
        let wanted: u64 = value.parse().unwrap_or(0);
        if !g.kind.keeps_members() {
            return reject(Reason::GroupFieldInvalid, "a live room has no member cap");
        }
        if wanted < g.member_count {
            return reject(
                Reason::GroupMemberLimit,
                format!("group {group} has {} members: its cap cannot go below that", g.member_count),
            );
        }
        if wanted > type_cap {
            return reject(
                Reason::GroupMemberLimit,
                format!("a {} group has at most {type_cap} members", g.kind.name()),
            );
        }
    }
    if fields.iter().any(|(n, _)| n == "join_option") && matches!(g.kind, GroupKind::Work | GroupKind::AvChatRoom) {
        return reject(
            Reason::GroupFieldInvalid,
            format!("a {} group's join option is fixed ({})", g.kind.name(), g.join_option.name()),
        );
    }
    let after = group_with(g.clone(), fields);
    let custom = after.profile.keys().filter(|k| k.starts_with("custom.")).count();
    if custom > MAX_GROUP_CUSTOM_FIELDS {
        return reject(
            Reason::GroupFieldInvalid,
            format!("a group keeps at most {MAX_GROUP_CUSTOM_FIELDS} custom fields, this would be {custom}"),
        );
    }
    if after == g {
        return unchanged(changed(&g, false));
    }
    let notice = crate::group::tip(
        state,
        ctx,
        group,
        (crate::element::TipKind::ProfileChanged, vec![], actor),
        fields.to_vec(),
    )?;
    Ok(Ok(Applied {
        events: vec![
            Event::GroupProfileUpdated { group: group.clone(), fields: fields.to_vec(), by: actor.clone() },
            notice,
        ],
        changes: vec![],
        reply: changed(&g, true),
    }))
}

pub(crate) fn set_member_info(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, user): (&UserId, &GroupId, &UserId),
    fields: &[(String, String)],
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if let Err(r) = check_member_fields(fields) {
        return Ok(Err(r));
    }
    if !g.kind.keeps_members() {
        return reject(Reason::PermissionDenied, "a live room keeps no member fields");
    }
    let actor_role = match member_of(state, &g, actor)? {
        Ok(m) => m.role,
        Err(r) => return Ok(Err(r)),
    };
    let target = match member_of(state, &g, user)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    for (name, _) in fields {
        let own = actor == user;
        let allowed = match name.as_str() {
            "recv_opt" => own,
            "name_card" => own || outranks(actor_role, target.role),
            _ => actor_role == GroupRole::Owner || (actor_role.manages() && (own || outranks(actor_role, target.role))),
        };
        if !allowed {
            return reject(Reason::PermissionDenied, format!("{actor} may not set {name} of {user} in group {group}"));
        }
    }
    let (info, custom) = with_fields(target.info.clone(), fields);
    if custom > MAX_MEMBER_CUSTOM_FIELDS {
        return reject(
            Reason::GroupFieldInvalid,
            format!("a member keeps at most {MAX_MEMBER_CUSTOM_FIELDS} custom fields, this would be {custom}"),
        );
    }
    if info == target.info {
        return unchanged(changed(&g, false));
    }
    Ok(Ok(Applied {
        events: vec![Event::GroupMemberInfoSet {
            group: group.clone(),
            user: user.clone(),
            fields: fields.to_vec(),
            by: actor.clone(),
        }],
        changes: vec![],
        reply: changed(&g, true),
    }))
}

/// Whether `user` is banned from `group` at `now`.
pub(crate) fn banned(state: &impl ShardState, group: &GroupId, user: &UserId, now: TimeMs) -> Result<bool, StateError> {
    Ok(state.group_ban(group, user)?.is_some_and(|until| until > now))
}

fn banned_rejection(group: &GroupId, user: &UserId) -> Rejection {
    Rejection::new(Reason::MemberBanned, format!("{user} is banned from group {group}"))
}

pub(crate) fn apply_to_join(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    group: &GroupId,
    message: &str,
    home: Option<&RegionCode>,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if message.len() > MAX_APPLICATION_BYTES {
        return reject(
            Reason::GroupFieldInvalid,
            format!("an application's message is at most {MAX_APPLICATION_BYTES} bytes"),
        );
    }
    if banned(state, group, user, ctx.time)? {
        return Ok(Err(banned_rejection(group, user)));
    }
    let joined =
        |g: &Group| Reply::GroupApplication { group: g.id.clone(), pending: false, member_count: g.member_count };
    if !g.kind.keeps_members() {
        return unchanged(joined(&g));
    }
    if state.group_member(group, user)?.is_some() {
        return unchanged(joined(&g));
    }
    let option = if g.kind == GroupKind::Work { JoinOption::Forbid } else { g.join_option };
    match option {
        JoinOption::Forbid => reject(
            Reason::PermissionDenied,
            format!("group {group} takes no applications: a member must invite {user}"),
        ),
        JoinOption::Free => {
            if g.member_count >= g.max_members {
                return reject(
                    Reason::GroupMemberLimit,
                    format!("group {group} has {} of at most {} members", g.member_count, g.max_members),
                );
            }
            Ok(Ok(Applied {
                events: vec![
                    Event::GroupMemberAdded {
                        group: group.clone(),
                        user: user.clone(),
                        role: GroupRole::Member,
                        by: user.clone(),
                        hidden: false,
                        at: ctx.time,
                        home: home.cloned(),
                    },
                    crate::group::tip(
                        state,
                        ctx,
                        group,
                        (crate::element::TipKind::Joined, vec![user.to_string()], user),
                        vec![],
                    )?,
                ],
                changes: vec![listed(user, group, ctx, true, home)],
                reply: Reply::GroupApplication {
                    group: group.clone(),
                    pending: false,
                    member_count: g.member_count + 1,
                },
            }))
        }
        JoinOption::NeedApproval => {
            let waiting = state.group_application(group, user)?.is_some();
            if !waiting && g.applications >= MAX_APPLICATIONS {
                return reject(
                    Reason::GroupApplicationLimit,
                    format!("group {group} has {MAX_APPLICATIONS} applications waiting, the most it keeps"),
                );
            }
            Ok(Ok(Applied {
                events: vec![Event::GroupJoinRequested {
                    group: group.clone(),
                    user: user.clone(),
                    message: message.to_owned(),
                    at: ctx.time,
                }],
                changes: vec![],
                reply: Reply::GroupApplication { group: group.clone(), pending: true, member_count: g.member_count },
            }))
        }
    }
}

pub(crate) fn respond(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, user): (&UserId, &GroupId, &UserId),
    approve: bool,
    home: Option<&RegionCode>,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    match member_of(state, &g, actor)? {
        Ok(m) if m.role.manages() => {}
        Ok(_) => {
            return reject(
                Reason::PermissionDenied,
                format!("only the owner and admins of group {group} answer applications"),
            )
        }
        Err(r) => return Ok(Err(r)),
    }
    if state.group_application(group, user)?.is_none() {
        // A repeat of an approval that took place answers the same.
        if approve && state.group_member(group, user)?.is_some() {
            return unchanged(changed(&g, false));
        }
        return reject(Reason::GroupApplicationNotFound, format!("no application of {user} waits in group {group}"));
    }
    let mut events = vec![Event::GroupJoinResolved {
        group: group.clone(),
        user: user.clone(),
        approved: approve,
        by: actor.clone(),
    }];
    let mut changes = vec![];
    let mut member_count = g.member_count;
    if approve {
        if g.member_count >= g.max_members {
            return reject(
                Reason::GroupMemberLimit,
                format!("group {group} has {} of at most {} members", g.member_count, g.max_members),
            );
        }
        if banned(state, group, user, ctx.time)? {
            return Ok(Err(banned_rejection(group, user)));
        }
        events.push(Event::GroupMemberAdded {
            group: group.clone(),
            user: user.clone(),
            role: GroupRole::Member,
            by: actor.clone(),
            hidden: false,
            at: ctx.time,
            home: home.cloned(),
        });
        changes.push(listed(user, group, ctx, true, home));
        member_count += 1;
        let users = vec![user.to_string()];
        events.push(crate::group::tip(state, ctx, group, (crate::element::TipKind::Joined, users, actor), vec![])?);
    }
    Ok(Ok(Applied {
        events,
        changes,
        reply: Reply::GroupChanged { group: group.clone(), member_count, changed: true },
    }))
}

pub(crate) fn mute_all(
    state: &impl ShardState,
    ctx: &ApplyContext,
    actor: &UserId,
    group: &GroupId,
    muted: bool,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    match role_of(state, &g, actor)? {
        Ok(Some(role)) if role.manages() => {}
        Ok(_) => {
            return reject(
                Reason::PermissionDenied,
                format!("only the owner and admins of group {group} mute everyone"),
            )
        }
        Err(r) => return Ok(Err(r)),
    }
    if g.muted_all == muted {
        return unchanged(changed(&g, false));
    }
    Ok(Ok(Applied {
        events: vec![Event::GroupMutedAll { group: group.clone(), muted, by: actor.clone() }],
        changes: vec![],
        reply: changed(&g, true),
    }))
}

pub(crate) fn ban(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (actor, group, user): (&UserId, &GroupId, &UserId),
    duration_ms: u64,
) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if actor == user {
        return reject(Reason::PeerIsSelf, "a user cannot ban themselves");
    }
    let actor_role = match role_of(state, &g, actor)? {
        Ok(Some(role)) => role,
        Ok(None) => return reject(Reason::PermissionDenied, format!("only the owner of live room {group} bans")),
        Err(r) => return Ok(Err(r)),
    };
    let target = state.group_member(group, user)?;
    let target_role = target.as_ref().map_or(GroupRole::Member, |m| m.role);
    if !outranks(actor_role, target_role) {
        return reject(
            Reason::PermissionDenied,
            format!("{actor} ({}) may not ban {user} ({}) from group {group}", actor_role.name(), target_role.name()),
        );
    }
    let until = if duration_ms == 0 {
        TimeMs(0)
    } else {
        TimeMs(ctx.time.0.saturating_add(i64::try_from(duration_ms).unwrap_or(i64::MAX)))
    };
    let mut events = vec![];
    let mut changes = vec![];
    let mut member_count = g.member_count;
    if until.0 != 0 && target.is_some() {
        events.push(Event::GroupMemberRemoved {
            group: group.clone(),
            user: user.clone(),
            by: actor.clone(),
            at: ctx.time,
        });
        changes.push(listed(user, group, ctx, false, target.as_ref().and_then(|t| t.home.as_ref())));
        member_count -= 1;
    }
    if until.0 != 0 && state.group_application(group, user)?.is_some() {
        events.push(Event::GroupJoinResolved {
            group: group.clone(),
            user: user.clone(),
            approved: false,
            by: actor.clone(),
        });
    }
    if until.0 == 0 && state.group_ban(group, user)?.is_none() {
        return unchanged(changed(&g, false));
    }
    events.push(Event::GroupMemberBanned { group: group.clone(), user: user.clone(), until, by: actor.clone() });
    if until.0 != 0 && target.is_some() {
        let users = vec![user.to_string()];
        events.push(crate::group::tip(state, ctx, group, (crate::element::TipKind::Banned, users, actor), vec![])?);
    }
    Ok(Ok(Applied {
        events,
        changes,
        reply: Reply::GroupChanged { group: group.clone(), member_count, changed: true },
    }))
}

/// Likes given in a group (GRP-07), already summed by the node that gathered them.
pub(crate) fn add_likes(state: &impl ShardState, ctx: &ApplyContext, group: &GroupId, likes: u64) -> Decided {
    let g = match live_group(state, ctx, group)? {
        Ok(g) => g,
        Err(r) => return Ok(Err(r)),
    };
    if likes == 0 || likes > MAX_LIKES_PER_COMMAND {
        return reject(Reason::GroupFieldInvalid, format!("likes come in 1..={MAX_LIKES_PER_COMMAND} at a time"));
    }
    Ok(Ok(Applied {
        events: vec![Event::GroupLiked { group: group.clone(), likes }],
        changes: vec![],
        reply: Reply::Likes { total: g.likes.saturating_add(likes) },
    }))
}
