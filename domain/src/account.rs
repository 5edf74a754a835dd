//! Deleting an account (REL-01).
//!
//! The delete is decided on the user's shard, from everything that shard keeps under the
//! account ([`crate::state::ShardState::account_records`]): the user's friends, the requests
//! waiting for them, their blocklist and their groups come off by the same events that take
//! them off one at a time (`FriendRemoved`, `FriendRequestResolved`, `UserBlocked`,
//! `GroupUnlisted`), so every projection and every recount from the event log agrees; then
//! `AccountDeleted` drops the profile and the conversation rows and their settings, and turns
//! the account record into a tombstone. The tombstone keeps the id (and its directory claim):
//! an id once deleted is refused (`USER_DELETED`), never given to someone else.
//!
//! What other shards hold follows through the outbox: each friend's list drops the user
//! ([`EffectKind::FriendGone`]) and each group removes them ([`EffectKind::MemberGone`]). A
//! group whose owner left this way passes to its first admin in user id order, else to its
//! first member, and is dismissed when no one is left. Such a removal writes no notice in the
//! group's stream (a batch of effects may remove several members of one group, and a command
//! writes at most one message); the group's event log has it.
//!
//! Messages the user sent stay in the conversations they were sent to: they are the other
//! members' history too. Lists and effects that reach a deleted account later (a friend
//! request accepted, a join racing the delete) are turned back by the same effects.

use std::collections::BTreeSet;

use crate::apply::{Applied, ApplyContext, Outcome, Reply};
use crate::change::Change;
use crate::command::EffectKind;
use crate::event::Event;
use crate::ids::{ConversationId, GroupId, RegionCode, UserId};
use crate::records::{GroupKind, GroupRole};
use crate::rejection::{Reason, Rejection};
use crate::state::{ShardState, StateError};

/// The account of `user` when it exists and is not deleted; else the rejection a command
/// about them gets.
pub(crate) fn live_account(state: &impl ShardState, user: &UserId) -> Result<Result<(), Rejection>, StateError> {
    Ok(match state.user(user)? {
        None => Err(Rejection::new(Reason::UnknownUser, format!("no user {user}: create the account first"))),
        Some(u) if u.is_deleted() => {
            Err(Rejection::new(Reason::UserDeleted, format!("the account {user} was deleted")))
        }
        Some(_) => Ok(()),
    })
}

/// Members an owner's successor is looked for among (in user id order).
const HEIR_SCAN: usize = 10_000;

/// Deletes `user`'s account. A repeat (the account already deleted) changes nothing.
pub(crate) fn delete(state: &impl ShardState, ctx: &ApplyContext, user: &UserId) -> Result<Outcome, StateError> {
    if let Some(r) = crate::apply::wrong_shard(ctx, user.as_str()) {
        return Ok(Err(r));
    }
    match state.user(user)? {
        None => {
            return Ok(Err(Rejection::new(Reason::UnknownUser, format!("no user {user}: nothing to delete"))));
        }
        Some(u) if u.is_deleted() => return Ok(Ok(Applied { events: vec![], changes: vec![], reply: Reply::Done })),
        Some(_) => {}
    }
    let records = state.account_records(user)?;
    let mut events = Vec::new();
    let mut changes = Vec::new();
    for friend in &records.friends {
        events.push(Event::FriendRemoved { user: user.clone(), friend: friend.user.clone() });
        changes.push(Change::Emit {
            lane: ctx.lane_to(friend.user.as_str(), friend.home.as_ref()),
            kind: EffectKind::FriendGone { user: friend.user.clone(), gone: user.clone() },
        });
    }
    for from in &records.requests {
        events.push(Event::FriendRequestResolved { user: user.clone(), from: from.clone(), accepted: false });
    }
    for target in &records.blocked {
        events.push(Event::UserBlocked { user: user.clone(), target: target.clone(), blocked: false, at: ctx.time });
    }
    for entry in &records.groups {
        events.push(Event::GroupUnlisted { user: user.clone(), group: entry.group.clone() });
        changes.push(gone_from_group(ctx, &entry.group, entry.home.as_ref(), user));
    }
    events.push(Event::AccountDeleted {
        user: user.clone(),
        at: ctx.time,
        conversations: records.conversations,
        prefs: records.prefs,
    });
    Ok(Ok(Applied { events, changes, reply: Reply::Done }))
}

/// The effect that takes `user` out of `group` (homed in `home`, or in this region).
pub(crate) fn gone_from_group(ctx: &ApplyContext, group: &GroupId, home: Option<&RegionCode>, user: &UserId) -> Change {
    Change::Emit {
        lane: ctx.lane_to(ConversationId::group(group).as_str(), home),
        kind: EffectKind::MemberGone { group: group.clone(), user: user.clone() },
    }
}

/// The effect that takes `gone` off `user`'s friend list, sent back to where `user` lives:
/// the region an effect came from (`from_region`), or this one.
pub(crate) fn gone_from_friend(
    ctx: &ApplyContext,
    user: &UserId,
    from_region: Option<&RegionCode>,
    gone: &UserId,
) -> Change {
    Change::Emit {
        lane: ctx.lane_to(user.as_str(), from_region),
        kind: EffectKind::FriendGone { user: user.clone(), gone: gone.clone() },
    }
}

/// Whether `user`'s account is deleted here (effects for it are turned back).
pub(crate) fn is_deleted(state: &impl ShardState, user: &UserId) -> Result<bool, StateError> {
    Ok(state.user(user)?.is_some_and(|u| u.is_deleted()))
}

/// What earlier effects of one batch did to groups, not yet in the state they read.
#[derive(Debug, Default)]
pub(crate) struct GoneSoFar {
    /// Members taken out.
    members: BTreeSet<(GroupId, UserId)>,
    /// The owner each group passed to.
    owners: std::collections::BTreeMap<GroupId, UserId>,
    dismissed: BTreeSet<GroupId>,
}

/// The events that take a deleted account's `user` out of `group`, on the group's shard.
pub(crate) fn member_gone(
    state: &impl ShardState,
    ctx: &ApplyContext,
    group: &GroupId,
    user: &UserId,
    so_far: &mut GoneSoFar,
) -> Result<Vec<Event>, StateError> {
    let events = member_gone_events(state, ctx, group, user, so_far)?;
    so_far.members.insert((group.clone(), user.clone()));
    for event in &events {
        match event {
            Event::GroupRoleSet { user: heir, .. } => {
                so_far.owners.insert(group.clone(), heir.clone());
            }
            Event::GroupDismissed { .. } => {
                so_far.dismissed.insert(group.clone());
            }
            _ => {}
        }
    }
    Ok(events)
}

fn member_gone_events(
    state: &impl ShardState,
    ctx: &ApplyContext,
    group: &GroupId,
    user: &UserId,
    so_far: &GoneSoFar,
) -> Result<Vec<Event>, StateError> {
    let gone = &so_far.members;
    let Some(g) = state.group(group)? else { return Ok(vec![]) };
    if g.dismissed
        || so_far.dismissed.contains(group)
        || g.kind == GroupKind::AvChatRoom
        || gone.contains(&(group.clone(), user.clone()))
    {
        return Ok(vec![]);
    }
    let Some(member) = state.group_member(group, user)? else { return Ok(vec![]) };
    let owner = match so_far.owners.get(group) {
        Some(heir) => heir == user,
        None => member.role == GroupRole::Owner,
    };
    let mut events = Vec::new();
    if owner {
        // The first admin in user id order, else the first member, past the members this
        // command already took out; the scan stops at [`HEIR_SCAN`] members.
        let staying: Vec<_> = state
            .group_members_first(group, HEIR_SCAN)?
            .into_iter()
            .filter(|m| &m.user != user && !gone.contains(&(group.clone(), m.user.clone())))
            .collect();
        match staying.iter().find(|m| m.role == GroupRole::Admin).or_else(|| staying.first()) {
            Some(heir) => events.push(Event::GroupRoleSet {
                group: group.clone(),
                user: heir.user.clone(),
                role: GroupRole::Owner,
                by: user.clone(),
            }),
            None => events.push(Event::GroupDismissed { group: group.clone(), by: user.clone(), at: ctx.time }),
        }
    }
    events.push(Event::GroupMemberRemoved { group: group.clone(), user: user.clone(), by: user.clone(), at: ctx.time });
    Ok(events)
}
