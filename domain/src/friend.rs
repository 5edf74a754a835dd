//! Friends (REL-03) and friends-only chat (REL-05): requests under the target's add-friend
//! policy, answers, deletes of one side or both, remarks.
//!
//! Each user's friend list and the requests waiting for them live on the user's shard. A
//! request is decided on the *target's* shard, where the target's policy (the `add_friend`
//! profile field: `allow_any`, the default, `need_confirm` or `deny_any`) and list are:
//!
//! - `allow_any`: the requester enters the target's list at once and the target enters the
//!   requester's list through the outbox ([`EffectKind::FriendListed`]);
//! - `need_confirm`: the request waits (at most `max_pending` per target) until the target
//!   accepts (as `allow_any` from then on) or rejects it;
//! - `deny_any`: refused with `FRIEND_ADD_DENIED`; so is a request to someone who has blocked
//!   the requester (`BLOCKED`).
//!
//! Whenever a user's list gains or loses someone, the one-to-one conversation of the two
//! learns of it from that user's shard ([`EffectKind::PairFriend`]), so that a send in
//! friends-only mode is judged at apply, on the conversation's shard, by the same rule on
//! every replica: the recipient must have the sender on their list, or `NOT_FRIEND`.
//!
//! The target's cap (`max_friends`) is checked where the target's list is, at apply. The
//! requester's list grows by an effect, which cannot be refused: the requester's cap is
//! checked by the node that accepts the request (from its replica), so concurrent accepts can
//! take a list past its cap by the number of requests in flight.

use crate::apply::{Applied, ApplyContext, Outcome, Reply};
use crate::change::Change;
use crate::command::EffectKind;
use crate::event::Event;
use crate::ids::{ConversationId, RegionCode, UserId};
use crate::rejection::{Reason, Rejection};
use crate::shard::shard_for;
use crate::state::{ShardState, StateError};

/// Longest remark one user keeps for a friend, in bytes.
pub const MAX_REMARK_BYTES: usize = 96;
/// Longest message attached to a friend request, in bytes.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 256;

type Decided = Result<Outcome, StateError>;

/// What a friend request (or its answer) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendState {
    /// The two are friends on the answering side's list (the other side follows).
    Added,
    /// The request waits for the target's answer.
    Pending,
    /// The target rejected the request.
    Rejected,
}

impl FriendState {
    pub fn name(self) -> &'static str {
        match self {
            FriendState::Added => "added",
            FriendState::Pending => "pending",
            FriendState::Rejected => "rejected",
        }
    }

    pub fn from_name(name: &str) -> Option<FriendState> {
        [FriendState::Added, FriendState::Pending, FriendState::Rejected].into_iter().find(|s| s.name() == name)
    }
}

/// The add-friend policies a profile's `add_friend` field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    AllowAny,
    NeedConfirm,
    DenyAny,
}

fn policy_of(state: &impl ShardState, user: &UserId) -> Result<Policy, StateError> {
    Ok(match state.profile(user)?.get("add_friend").map(String::as_str) {
        Some("need_confirm") => Policy::NeedConfirm,
        Some("deny_any") => Policy::DenyAny,
        _ => Policy::AllowAny,
    })
}

/// Checks the free-text fields of a request or a remark (at the boundary and at apply).
pub fn check_text(remark: &str, message: &str) -> Result<(), Rejection> {
    if remark.len() > MAX_REMARK_BYTES {
        return Err(Rejection::new(
            Reason::FriendFieldInvalid,
            format!("a remark is at most {MAX_REMARK_BYTES} bytes, got {}", remark.len()),
        ));
    }
    if message.len() > MAX_REQUEST_MESSAGE_BYTES {
        return Err(Rejection::new(
            Reason::FriendFieldInvalid,
            format!("a request's message is at most {MAX_REQUEST_MESSAGE_BYTES} bytes, got {}", message.len()),
        ));
    }
    Ok(())
}

fn reject(reason: Reason, message: impl Into<String>) -> Decided {
    Ok(Err(Rejection::new(reason, message)))
}

fn not_here(ctx: &ApplyContext, user: &UserId) -> Option<Rejection> {
    let home = shard_for(user.as_str(), ctx.shards);
    (home != ctx.shard)
        .then(|| Rejection::new(Reason::WrongShard, format!("{user} lives on shard {home}, not {}", ctx.shard)))
}

/// `user`'s list gained (or lost) `other`: tell their conversation.
pub(crate) fn tell_pair(
    ctx: &ApplyContext,
    user: &UserId,
    other: &UserId,
    friend: bool,
    conversation_home: Option<&RegionCode>,
) -> Change {
    let conversation = ConversationId::c2c(user, other);
    Change::Emit {
        lane: ctx.lane_to(conversation.as_str(), conversation_home),
        kind: EffectKind::PairFriend { conversation, lister: user.clone(), friend },
    }
}

/// `target` (on this shard) puts `user` on their list: the events and effects of a friendship
/// settled on the target's side.
struct Settle<'a> {
    target: &'a UserId,
    user: &'a UserId,
    /// The target's remark for the requester.
    target_remark: &'a str,
    /// The requester's remark for the target.
    user_remark: &'a str,
    user_home: Option<&'a RegionCode>,
    conversation_home: Option<&'a RegionCode>,
}

fn settle(ctx: &ApplyContext, s: Settle, already_listed: bool, events: &mut Vec<Event>, changes: &mut Vec<Change>) {
    if !already_listed {
        events.push(Event::FriendAdded {
            user: s.target.clone(),
            friend: s.user.clone(),
            remark: s.target_remark.to_owned(),
            at: ctx.time,
            home: s.user_home.filter(|h| *h != &ctx.region).cloned(),
        });
        changes.push(tell_pair(ctx, s.target, s.user, true, s.conversation_home));
    }
    let conversation_home = s.conversation_home.cloned().unwrap_or_else(|| ctx.region.clone());
    changes.push(Change::Emit {
        lane: ctx.lane_to(s.user.as_str(), s.user_home),
        kind: EffectKind::FriendListed {
            user: s.user.clone(),
            friend: s.target.clone(),
            remark: s.user_remark.to_owned(),
            at: ctx.time,
            conversation_home,
        },
    });
}

/// The fields of an [`crate::Command::AddFriend`].
pub(crate) struct AddFriend<'a> {
    pub user: &'a UserId,
    pub target: &'a UserId,
    pub message: &'a str,
    pub remark: &'a str,
    pub user_home: Option<&'a RegionCode>,
    pub conversation_home: Option<&'a RegionCode>,
    pub max_friends: u64,
    pub max_pending: u64,
}

/// A friend request, decided on the target's shard under the target's policy.
pub(crate) fn add(state: &impl ShardState, ctx: &ApplyContext, a: AddFriend) -> Decided {
    if let Some(r) = not_here(ctx, a.target) {
        return Ok(Err(r));
    }
    if a.user == a.target {
        return reject(Reason::PeerIsSelf, "a user cannot befriend themselves");
    }
    if let Err(r) = check_text(a.remark, a.message) {
        return Ok(Err(r));
    }
    if let Err(r) = crate::account::live_account(state, a.target)? {
        return Ok(Err(r));
    }
    if state.is_blocked(a.target, a.user)? {
        return reject(Reason::Blocked, format!("{} has blocked {}", a.target, a.user));
    }
    let mut events = vec![];
    let mut changes = vec![];
    let listed = state.friend(a.target, a.user)?.is_some();
    let policy = policy_of(state, a.target)?;
    if !listed {
        match policy {
            Policy::DenyAny => {
                return reject(Reason::FriendAddDenied, format!("{} accepts no friend requests", a.target));
            }
            Policy::NeedConfirm => {
                let counts = state.friend_counts(a.target)?;
                let waiting = state.friend_request(a.target, a.user)?.is_some();
                if !waiting && a.max_pending > 0 && counts.pending >= a.max_pending {
                    return reject(
                        Reason::FriendRequestLimit,
                        format!("{} has {} requests waiting, the most one user keeps", a.target, counts.pending),
                    );
                }
                return Ok(Ok(Applied {
                    events: vec![Event::FriendRequested {
                        user: a.target.clone(),
                        from: a.user.clone(),
                        message: a.message.to_owned(),
                        remark: a.remark.to_owned(),
                        at: ctx.time,
                    }],
                    changes: vec![],
                    reply: Reply::Friend { state: FriendState::Pending },
                }));
            }
            Policy::AllowAny => {
                let counts = state.friend_counts(a.target)?;
                if a.max_friends > 0 && counts.friends >= a.max_friends {
                    return reject(
                        Reason::FriendLimit,
                        format!("{} has {} friends, the most a list holds", a.target, counts.friends),
                    );
                }
            }
        }
    }
    // A request of someone the target already lists (a repeat, or after a one-way delete on
    // the requester's side) puts the target back on the requester's list.
    if state.friend_request(a.target, a.user)?.is_some() {
        events.push(Event::FriendRequestResolved { user: a.target.clone(), from: a.user.clone(), accepted: true });
    }
    let s = Settle {
        target: a.target,
        user: a.user,
        target_remark: "",
        user_remark: a.remark,
        user_home: a.user_home,
        conversation_home: a.conversation_home,
    };
    settle(ctx, s, listed, &mut events, &mut changes);
    Ok(Ok(Applied { events, changes, reply: Reply::Friend { state: FriendState::Added } }))
}

/// The fields of a [`crate::Command::RespondFriendRequest`].
pub(crate) struct Respond<'a> {
    pub user: &'a UserId,
    pub from: &'a UserId,
    pub accept: bool,
    pub remark: &'a str,
    pub from_home: Option<&'a RegionCode>,
    pub conversation_home: Option<&'a RegionCode>,
    pub max_friends: u64,
}

/// The target's answer to a waiting request.
pub(crate) fn respond(state: &impl ShardState, ctx: &ApplyContext, r: Respond) -> Decided {
    if let Some(rej) = not_here(ctx, r.user) {
        return Ok(Err(rej));
    }
    if let Err(rej) = check_text(r.remark, "") {
        return Ok(Err(rej));
    }
    let listed = state.friend(r.user, r.from)?.is_some();
    let Some(request) = state.friend_request(r.user, r.from)? else {
        // A repeat of an accept that took place answers the same; anything else has nothing
        // to answer.
        if r.accept && listed {
            return Ok(Ok(Applied {
                events: vec![],
                changes: vec![],
                reply: Reply::Friend { state: FriendState::Added },
            }));
        }
        return reject(Reason::FriendRequestNotFound, format!("no request from {} waits for {}", r.from, r.user));
    };
    let mut events =
        vec![Event::FriendRequestResolved { user: r.user.clone(), from: r.from.clone(), accepted: r.accept }];
    if !r.accept {
        return Ok(Ok(Applied { events, changes: vec![], reply: Reply::Friend { state: FriendState::Rejected } }));
    }
    let counts = state.friend_counts(r.user)?;
    if !listed && r.max_friends > 0 && counts.friends >= r.max_friends {
        return reject(
            Reason::FriendLimit,
            format!("{} has {} friends, the most a list holds", r.user, counts.friends),
        );
    }
    let mut changes = vec![];
    let s = Settle {
        target: r.user,
        user: r.from,
        target_remark: r.remark,
        user_remark: &request.remark,
        user_home: r.from_home,
        conversation_home: r.conversation_home,
    };
    settle(ctx, s, listed, &mut events, &mut changes);
    Ok(Ok(Applied { events, changes, reply: Reply::Friend { state: FriendState::Added } }))
}

/// The fields of a [`crate::Command::DeleteFriend`].
pub(crate) struct Delete<'a> {
    pub user: &'a UserId,
    pub friend: &'a UserId,
    pub both: bool,
    pub friend_home: Option<&'a RegionCode>,
    pub conversation_home: Option<&'a RegionCode>,
}

/// `user` takes `friend` off their list, and off `friend`'s too when `both`.
pub(crate) fn delete(state: &impl ShardState, ctx: &ApplyContext, d: Delete) -> Decided {
    if let Some(r) = not_here(ctx, d.user) {
        return Ok(Err(r));
    }
    if d.user == d.friend {
        return reject(Reason::PeerIsSelf, "a user is not on their own friend list");
    }
    let mut events = vec![];
    let mut changes = vec![];
    if state.friend(d.user, d.friend)?.is_some() {
        events.push(Event::FriendRemoved { user: d.user.clone(), friend: d.friend.clone() });
        changes.push(tell_pair(ctx, d.user, d.friend, false, d.conversation_home));
    }
    if d.both {
        // Sent whether or not this side listed them: the other side drops its entry if any.
        changes.push(Change::Emit {
            lane: ctx.lane_to(d.friend.as_str(), d.friend_home),
            kind: EffectKind::FriendUnlisted {
                user: d.friend.clone(),
                friend: d.user.clone(),
                conversation_home: d.conversation_home.cloned().unwrap_or_else(|| ctx.region.clone()),
            },
        });
    }
    Ok(Ok(Applied { events, changes, reply: Reply::Done }))
}

/// `user` sets their remark for `friend`, who must be on their list.
pub(crate) fn remark(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    friend: &UserId,
    remark: &str,
) -> Decided {
    if let Some(r) = not_here(ctx, user) {
        return Ok(Err(r));
    }
    if let Err(r) = check_text(remark, "") {
        return Ok(Err(r));
    }
    let Some(entry) = state.friend(user, friend)? else {
        return reject(Reason::NotFriend, format!("{friend} is not on {user}'s friend list"));
    };
    if entry.remark == remark {
        return Ok(Ok(Applied { events: vec![], changes: vec![], reply: Reply::Done }));
    }
    Ok(Ok(Applied {
        events: vec![Event::FriendRemarked { user: user.clone(), friend: friend.clone(), remark: remark.to_owned() }],
        changes: vec![],
        reply: Reply::Done,
    }))
}
