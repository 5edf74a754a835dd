//! Validation and apply of one command against a shard's state.
//!
//! Apply is deterministic: its inputs are the state, the command and the [`ApplyContext`]
//! (which carries the leader-assigned time). Rule checks that depend only on the request
//! (sizes, id formats) run before Raft, at the boundary; checks that depend on state run here,
//! on every replica.

use crate::change::Change;
use crate::command::{Command, Effect, EffectKind, Lane};
use crate::event::Event;
use crate::ids::{ConversationId, DirectoryKey, EffectId, MessageId, RegionCode, Seq, ShardId, TimeMs, UserId};
use crate::projector::project;
use crate::records::Conversation;
use crate::rejection::{Reason, Rejection};
use crate::shard::shard_for;
use crate::state::{ShardState, StateError};

/// The newest rules of apply this build implements (cluster logic versions 1..=this).
///
/// Every entry carries the version its leader stamped (the shard's active version); a
/// replica that meets a version it does not implement halts the shard rather than guess.
/// The active version moves up only through [`Command::SetLogicVersion`], which an admin
/// proposes once every member reports support.
///
/// - 1: message ids `{shard}-{index}-{position}`, unique within a region.
/// - 2: message ids carry the region and its epoch ([`MessageId::new`]).
/// - 3: a pair's first message lists the conversation for a member whose index is on the
///   conversation's own shard in the same apply, instead of through the outbox.
/// - 4: request-id records are indexed by time and expire as entries say
///   ([`REQUEST_ID_EXPIRY_FROM`]).
pub const LOGIC_VERSION: u32 = 4;

/// The logic version from which request-id records are kept in a time index and expired by
/// the cutoff each entry carries (`CommandBatch.request_ids_expire_before_ms`).
pub const REQUEST_ID_EXPIRY_FROM: u32 = 4;

/// Where and when a command is applied.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// The region the shard belongs to (the same on every replica).
    pub region: RegionCode,
    /// The region's epoch, from the shard's replicated state (1 until a failover bumps it).
    pub epoch: u32,
    /// The logic version this command is applied under (the entry's, or the shard's active
    /// version when that is newer).
    pub logic_version: u32,
    pub shard: ShardId,
    /// The region's shard count (for routing effects).
    pub shards: u32,
    /// The Raft log index of the entry carrying the command.
    pub log_index: u64,
    /// The command's position in the entry's batch.
    pub position: usize,
    /// Server time assigned by the leader, never earlier than the shard's previous batch.
    pub time: TimeMs,
}

impl ApplyContext {
    /// The id of a message accepted by the command being applied.
    pub fn message_id(&self) -> MessageId {
        MessageId::new(&self.region, self.epoch, self.shard, self.log_index, self.position, self.logic_version)
    }

    /// The outbox lane to the shard of `entity` when it lives in this region (`home` `None`
    /// or this region), else to its home region.
    pub(crate) fn lane_to(&self, entity: &str, home: Option<&RegionCode>) -> Lane {
        match home {
            Some(region) if region != &self.region => Lane::Region(region.clone()),
            _ => Lane::Shard(shard_for(entity, self.shards)),
        }
    }
}

/// The result of applying one command that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The facts the command produced, in order: what the event log records.
    pub events: Vec<Event>,
    /// What the command writes to projections, the outbox and dedup records.
    pub changes: Vec<Change>,
    pub reply: Reply,
}

impl Applied {
    /// An accepted command that changed nothing (a repeat, a no-op).
    pub(crate) fn unchanged(reply: Reply) -> Outcome {
        Ok(Applied { events: vec![], changes: vec![], reply })
    }
}

/// A recall of a message already recalled: a repeat by the same actor (a retry whose first
/// attempt did commit) gets the first result, so recall is idempotent like every other
/// command; anyone else is refused.
pub(crate) fn recalled_already(recall: &crate::records::Recall, actor: &UserId, seq: Seq) -> Outcome {
    if &recall.by == actor {
        return Applied::unchanged(Reply::MessageRecalled { seq, at: recall.at });
    }
    Err(Rejection::new(Reason::AlreadyRecalled, format!("seq {seq} was already recalled by {}", recall.by)))
}

/// What the caller of an accepted command is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    UserCreated {
        user: UserId,
        home_region: RegionCode,
        created: bool,
    },
    MessageAccepted {
        message_id: MessageId,
        seq: Seq,
        time: TimeMs,
        conversation: ConversationId,
        duplicate: bool,
    },
    MessageRecalled {
        seq: Seq,
        at: TimeMs,
    },
    ReadMarked {
        read_seq: Seq,
        unread: u64,
    },
    /// How many messages a restore withdrew.
    Withdrawn {
        withdrawn: u64,
    },
    /// The logic version in force after the command.
    LogicVersion {
        version: u32,
    },
    /// The region that holds a directory claim (the caller's, or the earlier claimant's).
    Claimed {
        region: RegionCode,
    },
    /// A group command's result: the group's member count after it, and whether it changed
    /// anything (false for a repeat).
    GroupChanged {
        group: crate::ids::GroupId,
        member_count: u64,
        changed: bool,
    },
    /// An application to join a group: joined at once (`pending` false) or waiting.
    GroupApplication {
        group: crate::ids::GroupId,
        pending: bool,
        member_count: u64,
    },
    /// A member's view of a stream's history after a clear or delete for themselves.
    HistoryCleared {
        cleared_up_to: Seq,
        deleted: u64,
    },
    /// A group's like total after the command.
    Likes {
        total: u64,
    },
    /// What a friend request or its answer came to.
    Friend {
        state: crate::friend::FriendState,
    },
}

/// The outcome of one command: accepted with its changes, or rejected with nothing changed.
pub type Outcome = Result<Applied, Rejection>;

/// Applies one command. `Err` is a storage failure (fatal); `Ok(Err(_))` a rejection.
///
/// Two steps: the command is decided against the state (its events and the changes outside
/// the projections: effects, watermarks, acknowledgements), then the projector folds the
/// events into projection changes — the same fold that replay uses.
pub fn apply(state: &impl ShardState, ctx: &ApplyContext, command: &Command) -> Result<Outcome, StateError> {
    let mut applied = match decide(state, ctx, command)? {
        Ok(applied) => applied,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let mut changes = Vec::with_capacity(applied.events.len() * 2 + applied.changes.len());
    // Each event is projected against the state with the projections of the command's
    // earlier events applied (a group's creation, then its members joining one by one), as
    // replay folds them.
    for event in &applied.events {
        let view = crate::state::Pending { base: state, changes: &changes };
        let projected = project(&view, event)?;
        changes.extend(projected);
    }
    changes.append(&mut applied.changes);
    applied.changes = changes;
    Ok(Ok(applied))
}

/// The events and non-projection changes of one command, or its rejection.
fn decide(state: &impl ShardState, ctx: &ApplyContext, command: &Command) -> Result<Outcome, StateError> {
    match command {
        Command::CreateUser { user, home_region, nickname } => create_user(state, ctx, user, home_region, nickname),
        Command::DeleteAccount { user } => crate::account::delete(state, ctx, user),
        // A deleted account takes no new records on its shard.
        Command::SetProfile { user, .. }
        | Command::SetBlocked { user, .. }
        | Command::AddFriend { target: user, .. }
        | Command::RespondFriendRequest { user, .. }
        | Command::DeleteFriend { user, .. }
        | Command::SetFriendRemark { user, .. }
        | Command::SetConversationPrefs { user, .. }
            if shard_for(user.as_str(), ctx.shards) == ctx.shard && crate::account::is_deleted(state, user)? =>
        {
            reject(Reason::UserDeleted, format!("the account {user} was deleted"))
        }
        Command::SendMessage { sender, recipient, elements, request_id, sender_home, recipient_home, friends_only } => {
            let homes = [sender_home.as_ref(), recipient_home.as_ref()];
            send_message(state, ctx, (sender, recipient), elements, (request_id.as_ref(), *friends_only), homes)
        }
        Command::RecallMessage { actor, conversation, seq, window_ms } => match conversation.group_id() {
            Some(group) => crate::group::recall(state, ctx, (actor, &group, *seq, *window_ms), conversation),
            None => recall_message(state, ctx, actor, conversation, *seq, *window_ms),
        },
        Command::MarkRead { user, conversation, up_to } if conversation.topic().is_some() => {
            crate::group::topic_mark_read(state, ctx, user, conversation, *up_to)
        }
        Command::MarkRead { user, conversation, up_to } => match conversation.group_id() {
            Some(group) => crate::group::mark_read(state, ctx, user, &group, *up_to),
            None => mark_read(state, ctx, user, conversation, *up_to),
        },
        Command::ApplyEffects { source, from_region, effects } => {
            apply_effects(state, ctx, *source, from_region.as_ref(), effects)
        }
        Command::AckEffects { target: Lane::Shard(target), .. } if target.0 >= ctx.shards => reject(
            Reason::ShardOutOfRange,
            format!("the acknowledgement names shard {target}, but the region has shards 0..{}", ctx.shards),
        ),
        Command::AckEffects { target: Lane::Region(region), .. } if region == &ctx.region => reject(
            Reason::RegionInvalid,
            format!("the acknowledgement names region {region}, this shard's own: its lanes are shards"),
        ),
        Command::AckEffects { target, up_to } => Ok(Ok(Applied {
            events: vec![],
            changes: vec![Change::AckOutbox { target: target.clone(), up_to: *up_to }],
            reply: Reply::Done,
        })),
        Command::ClaimId { key, region } => claim_id(state, ctx, key, region),
        Command::CreateGroup { group, kind, owner, name, max_members, members, hide_history, homes } => {
            crate::group::create(state, ctx, (group, *kind, owner, name, *max_members, members, *hide_history), homes)
        }
        Command::AddGroupMembers { actor, group, users, hidden, homes } => {
            crate::group::add(state, ctx, (actor, group, users, *hidden), homes)
        }
        Command::RemoveGroupMember { actor, group, user } => crate::group::remove(state, ctx, actor, group, user),
        Command::SendGroupMessage { sender, group, elements, request_id, mentions, at_all } => {
            crate::group::send(state, ctx, (sender, group, elements, request_id.as_ref(), mentions, *at_all))
        }
        Command::MuteGroupMember { actor, group, user, duration_ms } => {
            crate::group::mute(state, ctx, (actor, group, user, *duration_ms))
        }
        Command::DismissGroup { actor, group } => crate::group::dismiss(state, ctx, actor, group),
        Command::SetGroupRole { actor, group, user, role } => {
            crate::group::set_role(state, ctx, actor, group, (user, *role))
        }
        Command::TransferGroup { actor, group, to } => crate::group::transfer(state, ctx, actor, group, to),
        Command::SetProfile { user, fields } => set_profile(state, ctx, user, fields),
        Command::SetConversationPrefs { user, conversation, change } => {
            crate::conversation_prefs::set_prefs(state, ctx, user, conversation, change)
        }
        Command::ClearHistoryForSelf { user, conversation, clear, delete } => {
            crate::conversation_prefs::clear_for_self(state, ctx, (user, conversation), *clear, delete)
        }
        Command::SetGroupProfile { actor, group, fields, type_cap } => {
            crate::group_admin::set_profile(state, ctx, (actor, group, *type_cap), fields)
        }
        Command::SetGroupMemberInfo { actor, group, user, fields } => {
            crate::group_admin::set_member_info(state, ctx, (actor, group, user), fields)
        }
        Command::ApplyToJoinGroup { user, group, message, homes } => {
            crate::group_admin::apply_to_join(state, ctx, user, group, message, crate::group::home_in(homes, user))
        }
        Command::RespondJoinRequest { actor, group, user, approve, homes } => {
            crate::group_admin::respond(state, ctx, (actor, group, user), *approve, crate::group::home_in(homes, user))
        }
        Command::CreateTopic { actor, group, topic, name } => {
            crate::group::create_topic(state, ctx, (actor, group, topic, name))
        }
        Command::SendTopicMessage { sender, group, topic, elements, request_id } => {
            crate::group::send_topic(state, ctx, (sender, group, topic), elements, request_id.as_ref())
        }
        Command::AddGroupLikes { group, likes } => crate::group_admin::add_likes(state, ctx, group, *likes),
        Command::MuteAllGroup { actor, group, muted } => crate::group_admin::mute_all(state, ctx, actor, group, *muted),
        Command::BanGroupMember { actor, group, user, duration_ms } => {
            crate::group_admin::ban(state, ctx, (actor, group, user), *duration_ms)
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
        } => crate::friend::add(
            state,
            ctx,
            crate::friend::AddFriend {
                user,
                target,
                message,
                remark,
                user_home: user_home.as_ref(),
                conversation_home: conversation_home.as_ref(),
                max_friends: *max_friends,
                max_pending: *max_pending,
            },
        ),
        Command::RespondFriendRequest { user, from, accept, remark, from_home, conversation_home, max_friends } => {
            crate::friend::respond(
                state,
                ctx,
                crate::friend::Respond {
                    user,
                    from,
                    accept: *accept,
                    remark,
                    from_home: from_home.as_ref(),
                    conversation_home: conversation_home.as_ref(),
                    max_friends: *max_friends,
                },
            )
        }
        Command::DeleteFriend { user, friend, both, friend_home, conversation_home } => crate::friend::delete(
            state,
            ctx,
            crate::friend::Delete {
                user,
                friend,
                both: *both,
                friend_home: friend_home.as_ref(),
                conversation_home: conversation_home.as_ref(),
            },
        ),
        Command::SetFriendRemark { user, friend, remark } => crate::friend::remark(state, ctx, user, friend, remark),
        Command::SetBlocked { user, target, blocked, conversation_home, max_blocked } => {
            set_blocked(state, ctx, (user, target, *blocked, conversation_home.as_ref(), *max_blocked))
        }
        // Storage applies it (it reads and checks the log range); a state without a log to
        // read refuses it alike on every replica.
        Command::ArchiveSegment { .. } => {
            reject(Reason::ArchiveRangeMismatch, "an archive command needs the event log")
        }
        Command::HooksSent { up_to } => Ok(Ok(Applied {
            events: vec![],
            changes: vec![Change::SetHooksCursor { up_to: *up_to }],
            reply: Reply::Done,
        })),
        Command::RestoreConversation { conversation, kept_up_to_seq, through } => {
            restore_conversation(state, ctx, conversation, *kept_up_to_seq, *through)
        }
        Command::RaiseEpoch { epoch } if *epoch <= ctx.epoch => Ok(Applied::unchanged(Reply::Done)),
        Command::RaiseEpoch { epoch } => Ok(Ok(Applied {
            events: vec![Event::EpochRaised { from: ctx.epoch, to: *epoch }],
            changes: vec![Change::SetEpoch { epoch: *epoch }],
            reply: Reply::Done,
        })),
        Command::SetLogicVersion { version } if *version <= ctx.logic_version => {
            Ok(Applied::unchanged(Reply::LogicVersion { version: ctx.logic_version }))
        }
        // Whether this replica implements `version` is the state machine's check (it halts
        // the shard when not): a rejection here would diverge from the replicas that do.
        Command::SetLogicVersion { version } => Ok(Ok(Applied {
            events: vec![Event::LogicVersionRaised { from: ctx.logic_version, to: *version }],
            changes: vec![Change::SetLogicVersion { version: *version }],
            reply: Reply::LogicVersion { version: *version },
        })),
    }
}

fn reject(reason: Reason, message: impl Into<String>) -> Result<Outcome, StateError> {
    Ok(Err(Rejection::new(reason, message)))
}

pub(crate) fn wrong_shard(ctx: &ApplyContext, entity: &str) -> Option<Rejection> {
    let home = shard_for(entity, ctx.shards);
    (home != ctx.shard)
        .then(|| Rejection::new(Reason::WrongShard, format!("{entity} lives on shard {home}, not {}", ctx.shard)))
}

fn create_user(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    home_region: &RegionCode,
    nickname: &str,
) -> Result<Outcome, StateError> {
    if let Some(r) = wrong_shard(ctx, user.as_str()) {
        return Ok(Err(r));
    }
    if let Some(existing) = state.user(user)? {
        if existing.is_deleted() {
            return reject(
                Reason::UserDeleted,
                format!("the account {user} was deleted: the id of a deleted account is not given out again"),
            );
        }
        return Ok(Applied::unchanged(Reply::UserCreated {
            user: existing.id,
            home_region: existing.home_region,
            created: false,
        }));
    }
    Ok(Ok(Applied {
        events: vec![Event::UserCreated {
            user: user.clone(),
            home_region: home_region.clone(),
            nickname: nickname.to_owned(),
            at: ctx.time,
        }],
        changes: vec![],
        reply: Reply::UserCreated { user: user.clone(), home_region: home_region.clone(), created: true },
    }))
}

fn send_message(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (sender, recipient): (&UserId, &UserId),
    elements: &[crate::element::Element],
    (request_id, friends_only): (Option<&crate::ids::RequestId>, bool),
    homes: [Option<&RegionCode>; 2],
) -> Result<Outcome, StateError> {
    if sender == recipient {
        return reject(Reason::PeerIsSelf, "a one-to-one message needs a recipient other than the sender");
    }
    let conversation = ConversationId::c2c(sender, recipient);
    if let Some(r) = wrong_shard(ctx, conversation.as_str()) {
        return Ok(Err(r));
    }
    if let Some(request_id) = request_id {
        if let Some(first) = state.dedup(&conversation, sender, request_id)? {
            return Ok(Applied::unchanged(Reply::MessageAccepted {
                message_id: first.message_id,
                seq: first.seq,
                time: first.time,
                conversation,
                duplicate: true,
            }));
        }
    }
    // A retry of a send accepted before a block still gets its first result (above).
    if state.pair_blocked(&conversation, recipient)? {
        return reject(Reason::Blocked, format!("{recipient} has blocked {sender}"));
    }
    if friends_only && !state.pair_friend(&conversation, recipient)? {
        return reject(
            Reason::NotFriend,
            format!("{recipient} takes one-to-one messages from friends only, and {sender} is not on their list"),
        );
    }
    let mut changes = Vec::with_capacity(2);
    let mut joins = Vec::new();
    let last_seq = match state.conversation(&conversation)? {
        Some(head) => head.last_seq,
        None => {
            // The pair's first message: each side's conversation index (on the users' own
            // shards, in their home regions) learns of the conversation through the outbox.
            for ((user, peer), home) in [(sender, recipient), (recipient, sender)].into_iter().zip(homes) {
                let lane = ctx.lane_to(user.as_str(), home);
                if ctx.logic_version >= 3 && lane == Lane::Shard(ctx.shard) {
                    // Logic version 3: an index on this very shard is written with the
                    // message, as the effect would have written it, not sent round the
                    // outbox (two Raft entries fewer: the delivery and its acknowledgement).
                    let listed =
                        joins.iter().any(|j| matches!(j, Event::ConversationJoined { user: u, .. } if u == user))
                            || state.has_conversation_ref(user, &conversation)?;
                    if !listed {
                        joins.push(Event::ConversationJoined {
                            user: user.clone(),
                            conversation: conversation.clone(),
                            peer: peer.clone(),
                            at: ctx.time,
                            home: None,
                        });
                    }
                    continue;
                }
                changes.push(Change::Emit {
                    lane,
                    kind: EffectKind::ConversationJoined {
                        user: user.clone(),
                        conversation: conversation.clone(),
                        peer: peer.clone(),
                        at: ctx.time,
                    },
                });
            }
            Seq::ZERO
        }
    };
    let seq = last_seq.next();
    let message_id = ctx.message_id();
    let event = Event::MessageSent {
        conversation: conversation.clone(),
        seq,
        message_id: message_id.clone(),
        sender: sender.clone(),
        recipient: recipient.clone(),
        elements: elements.to_vec(),
        request_id: request_id.cloned(),
        at: ctx.time,
    };
    Ok(Ok(Applied {
        events: std::iter::once(event).chain(joins).collect(),
        changes,
        reply: Reply::MessageAccepted { message_id, seq, time: ctx.time, conversation, duplicate: false },
    }))
}

fn member_conversation(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    conversation: &ConversationId,
) -> Result<Result<Conversation, Rejection>, StateError> {
    if let Some(r) = wrong_shard(ctx, conversation.as_str()) {
        return Ok(Err(r));
    }
    let Some(head) = state.conversation(conversation)? else {
        return Ok(Err(Rejection::new(Reason::ConversationNotFound, format!("{conversation} has no messages yet"))));
    };
    if head.member(user).is_none() {
        return Ok(Err(Rejection::new(Reason::NotAMember, format!("{user} is not a member of {conversation}"))));
    }
    Ok(Ok(head))
}

fn recall_message(
    state: &impl ShardState,
    ctx: &ApplyContext,
    actor: &UserId,
    conversation: &ConversationId,
    seq: Seq,
    window_ms: u64,
) -> Result<Outcome, StateError> {
    let head = match member_conversation(state, ctx, actor, conversation)? {
        Ok(head) => head,
        Err(r) => return Ok(Err(r)),
    };
    if seq == Seq::ZERO || seq > head.last_seq {
        return reject(
            Reason::SeqOutOfRange,
            format!("seq {seq} is not in {conversation}, whose messages are 1..={}", head.last_seq),
        );
    }
    let Some(message) = state.message(conversation, seq)? else {
        if state.cold_range(conversation, seq)?.is_some() {
            // Archived: older than the hot window, which is never shorter than the recall
            // window (the node's configuration holds to that).
            if let Some(recall) = state.recall_overlay(conversation, seq)? {
                return Ok(recalled_already(&recall, actor, seq));
            }
            return reject(
                Reason::RecallWindowExpired,
                format!("seq {seq} is archived: older than the hot window, so past the recall window"),
            );
        }
        return reject(Reason::MessageNotFound, format!("no message at seq {seq} of {conversation}"));
    };
    if &message.sender != actor {
        return reject(Reason::NotMessageSender, "only the sender may recall a message");
    }
    if let Some(recall) = &message.recalled {
        return Ok(recalled_already(recall, actor, seq));
    }
    let age_ms = ctx.time.0.saturating_sub(message.time.0);
    if u64::try_from(age_ms).unwrap_or(0) > window_ms {
        return reject(
            Reason::RecallWindowExpired,
            format!("seq {seq} was sent {age_ms} ms ago; messages can be recalled within {window_ms} ms"),
        );
    }
    Ok(Ok(Applied {
        events: vec![Event::MessageRecalled {
            conversation: conversation.clone(),
            seq,
            by: actor.clone(),
            at: ctx.time,
        }],
        changes: vec![],
        reply: Reply::MessageRecalled { seq, at: ctx.time },
    }))
}

/// Withdraws `kept+1..=through` of a conversation: each message not recalled yet (hot, or
/// archived without an overlay) gets a `MessageRecalled` by [`crate::command::RESTORE_ACTOR`].
fn restore_conversation(
    state: &impl ShardState,
    ctx: &ApplyContext,
    conversation: &ConversationId,
    kept: Seq,
    through: Seq,
) -> Result<Outcome, StateError> {
    let Some(head) = state.conversation(conversation)? else {
        return reject(Reason::ConversationNotFound, format!("no conversation {conversation}"));
    };
    if through > head.last_seq || through <= kept {
        return reject(
            Reason::SeqOutOfRange,
            format!(
                "seqs {}..={through} are not in {conversation}, whose messages are 1..={}",
                kept.0 + 1,
                head.last_seq
            ),
        );
    }
    let by = UserId::parse(crate::command::RESTORE_ACTOR).map_err(|r| StateError(r.to_string()))?;
    let mut events = vec![Event::ConversationRestored {
        conversation: conversation.clone(),
        kept_up_to_seq: kept,
        through,
        at: ctx.time,
    }];
    for seq in (kept.0 + 1..=through.0).map(Seq) {
        let withdraw = match state.message(conversation, seq)? {
            Some(message) => message.recalled.is_none(),
            None => {
                state.cold_range(conversation, seq)?.is_some() && state.recall_overlay(conversation, seq)?.is_none()
            }
        };
        if withdraw {
            events.push(Event::MessageRecalled {
                conversation: conversation.clone(),
                seq,
                by: by.clone(),
                at: ctx.time,
            });
        }
    }
    let withdrawn = events.len() as u64 - 1;
    Ok(Ok(Applied { events, changes: vec![], reply: Reply::Withdrawn { withdrawn } }))
}

fn mark_read(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    conversation: &ConversationId,
    up_to: Option<Seq>,
) -> Result<Outcome, StateError> {
    let mut head = match member_conversation(state, ctx, user, conversation)? {
        Ok(head) => head,
        Err(r) => return Ok(Err(r)),
    };
    let target = match up_to {
        None => head.last_seq,
        Some(seq) if seq > head.last_seq => {
            return reject(
                Reason::SeqOutOfRange,
                format!("seq {seq} is past the newest message of {conversation} ({})", head.last_seq),
            );
        }
        Some(seq) => seq,
    };
    let mut moved = false;
    let mut read_seq = target;
    for m in &mut head.members {
        if &m.user == user {
            // Read cursors only move forward: marking an older seq read is a no-op.
            if target > m.read_seq {
                m.read_seq = target;
                moved = true;
            }
            read_seq = m.read_seq;
        }
    }
    let unread = head.unread(user);
    let reply = Reply::ReadMarked { read_seq, unread };
    if !moved {
        return Ok(Applied::unchanged(reply));
    }
    Ok(Ok(Applied {
        events: vec![Event::ReadMarked { conversation: conversation.clone(), user: user.clone(), read_seq }],
        changes: vec![],
        reply,
    }))
}

/// What earlier effects of a batch left for a key (`seen`), else what `state` says.
fn seen_or(seen: Option<&bool>, read: impl FnOnce() -> Result<bool, StateError>) -> Result<bool, StateError> {
    seen.map_or_else(read, |seen| Ok(*seen))
}

fn apply_effects(
    state: &impl ShardState,
    ctx: &ApplyContext,
    source: ShardId,
    from_region: Option<&RegionCode>,
    effects: &[Effect],
) -> Result<Outcome, StateError> {
    if from_region == Some(&ctx.region) {
        return reject(Reason::RegionInvalid, "effects of this region are delivered without a source region");
    }
    let source_region = from_region.unwrap_or(&ctx.region);
    let before = state.watermark(source, from_region)?;
    let mut watermark = before;
    let mut changes = vec![];
    let mut events = vec![];
    // A batch may carry the same join twice (a redelivery inside one batch): one event.
    let mut joined = std::collections::BTreeSet::new();
    // A batch may join and leave one group in turn: each step sees the ones before it.
    let mut group_refs = std::collections::BTreeMap::new();
    // The same for friend lists (and the requests a friendship settles).
    let mut friends = std::collections::BTreeMap::new();
    let mut requests = std::collections::BTreeMap::new();
    // Members of this shard's groups taken out by deleted accounts, earlier in the batch.
    let mut gone = crate::account::GoneSoFar::default();
    for effect in effects {
        // Already applied (a redelivery), or misrouted: skip. Effects arrive in id order. The
        // receiving side decides where an effect belongs: with the entity it is addressed to.
        let misrouted = effect.source.shard != source
            || &effect.source.region != source_region
            || shard_for(&effect.kind.target_entity(), ctx.shards) != ctx.shard;
        if effect.id <= watermark || misrouted {
            continue;
        }
        match &effect.kind {
            EffectKind::PairBlocked { conversation, blocker, blocked } => {
                events.push(Event::ConversationBlocked {
                    conversation: conversation.clone(),
                    blocker: blocker.clone(),
                    blocked: *blocked,
                });
            }
            EffectKind::GroupListed { user, group, .. } if crate::account::is_deleted(state, user)? => {
                // A join that raced the delete: the group takes the account out again.
                changes.push(crate::account::gone_from_group(ctx, group, from_region, user));
            }
            EffectKind::GroupListed { user, group, at } => {
                let listed = seen_or(group_refs.get(&(user, group)), || state.has_group_ref(user, group))?;
                if !listed {
                    events.push(Event::GroupListed {
                        user: user.clone(),
                        group: group.clone(),
                        at: *at,
                        home: from_region.cloned(),
                    });
                }
                group_refs.insert((user, group), true);
            }
            EffectKind::GroupUnlisted { user, group } => {
                let listed = seen_or(group_refs.get(&(user, group)), || state.has_group_ref(user, group))?;
                if listed {
                    events.push(Event::GroupUnlisted { user: user.clone(), group: group.clone() });
                }
                group_refs.insert((user, group), false);
            }
            EffectKind::PairFriend { conversation, lister, friend } => {
                events.push(Event::ConversationFriended {
                    conversation: conversation.clone(),
                    lister: lister.clone(),
                    friend: *friend,
                });
            }
            EffectKind::FriendListed { user, friend, .. } if crate::account::is_deleted(state, user)? => {
                // Accepted after the delete: the friend's list drops the account again.
                changes.push(crate::account::gone_from_friend(ctx, friend, from_region, user));
            }
            EffectKind::FriendGone { user, gone } => {
                let listed = seen_or(friends.get(&(user, gone)), || Ok(state.friend(user, gone)?.is_some()))?;
                if listed {
                    events.push(Event::FriendRemoved { user: user.clone(), friend: gone.clone() });
                }
                let waiting = seen_or(requests.get(&(user, gone)), || Ok(state.friend_request(user, gone)?.is_some()))?;
                if waiting {
                    events.push(Event::FriendRequestResolved {
                        user: user.clone(),
                        from: gone.clone(),
                        accepted: false,
                    });
                }
                friends.insert((user, gone), false);
                requests.insert((user, gone), false);
            }
            EffectKind::MemberGone { group, user } => {
                events.extend(crate::account::member_gone(state, ctx, group, user, &mut gone)?);
            }
            EffectKind::FriendListed { user, friend, remark, at, conversation_home } => {
                let listed = seen_or(friends.get(&(user, friend)), || Ok(state.friend(user, friend)?.is_some()))?;
                let waiting =
                    seen_or(requests.get(&(user, friend)), || Ok(state.friend_request(user, friend)?.is_some()))?;
                // The other side accepted: a request of theirs waiting here is settled too.
                if waiting {
                    events.push(Event::FriendRequestResolved {
                        user: user.clone(),
                        from: friend.clone(),
                        accepted: true,
                    });
                }
                if !listed {
                    events.push(Event::FriendAdded {
                        user: user.clone(),
                        friend: friend.clone(),
                        remark: remark.clone(),
                        at: *at,
                        home: from_region.cloned(),
                    });
                    changes.push(crate::friend::tell_pair(ctx, user, friend, true, Some(conversation_home)));
                }
                friends.insert((user, friend), true);
                requests.insert((user, friend), false);
            }
            EffectKind::FriendUnlisted { user, friend, conversation_home } => {
                let listed = seen_or(friends.get(&(user, friend)), || Ok(state.friend(user, friend)?.is_some()))?;
                if listed {
                    events.push(Event::FriendRemoved { user: user.clone(), friend: friend.clone() });
                    changes.push(crate::friend::tell_pair(ctx, user, friend, false, Some(conversation_home)));
                }
                friends.insert((user, friend), false);
            }
            EffectKind::ConversationJoined { user, conversation, peer, at } => {
                if !state.has_conversation_ref(user, conversation)? && joined.insert((user, conversation)) {
                    events.push(Event::ConversationJoined {
                        user: user.clone(),
                        conversation: conversation.clone(),
                        peer: peer.clone(),
                        at: *at,
                        home: from_region.cloned(),
                    });
                }
            }
        }
        watermark = effect.id;
    }
    if watermark > before {
        changes.push(Change::SetWatermark { source, from_region: from_region.cloned(), up_to: watermark });
    }
    Ok(Ok(Applied { events, changes, reply: Reply::Done }))
}

/// A profile update on the user's shard: the account must exist here, and the result must
/// fit the caps (custom fields).
fn set_profile(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    fields: &[(String, String)],
) -> Result<Outcome, StateError> {
    if let Some(r) = wrong_shard(ctx, user.as_str()) {
        return Ok(Err(r));
    }
    if let Err(r) = crate::account::live_account(state, user)? {
        return Ok(Err(r));
    }
    let before = state.profile(user)?;
    let after = match crate::profile::updated(before.clone(), fields) {
        Ok(after) => after,
        Err(r) => return Ok(Err(r)),
    };
    if after == before {
        return Ok(Applied::unchanged(Reply::Done));
    }
    Ok(Ok(Applied {
        events: vec![Event::ProfileUpdated { user: user.clone(), fields: fields.to_vec() }],
        changes: vec![],
        reply: Reply::Done,
    }))
}

/// A blocklist change (REL-04) on the blocker's shard, and the effect that tells the pair's
/// conversation (which refuses the blocked member's sends to the blocker from then on).
fn set_blocked(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (user, target, blocked, conversation_home, max_blocked): (&UserId, &UserId, bool, Option<&RegionCode>, u64),
) -> Result<Outcome, StateError> {
    if let Some(r) = wrong_shard(ctx, user.as_str()) {
        return Ok(Err(r));
    }
    if user == target {
        return reject(Reason::PeerIsSelf, "a user cannot block themselves");
    }
    if state.is_blocked(user, target)? == blocked {
        return Ok(Applied::unchanged(Reply::Done));
    }
    if blocked && max_blocked > 0 && state.blocked_count(user)? >= max_blocked {
        return reject(
            Reason::BlocklistLimit,
            format!("{user} has blocked {max_blocked} users, the most a blocklist holds"),
        );
    }
    let conversation = ConversationId::c2c(user, target);
    let lane = ctx.lane_to(conversation.as_str(), conversation_home);
    Ok(Ok(Applied {
        events: vec![Event::UserBlocked { user: user.clone(), target: target.clone(), blocked, at: ctx.time }],
        changes: vec![Change::Emit {
            lane,
            kind: EffectKind::PairBlocked { conversation, blocker: user.clone(), blocked },
        }],
        reply: Reply::Done,
    }))
}

/// The directory's first-claim-wins rule: the key's first claimant keeps it; a repeat by the
/// same region is answered the same way, and another region learns who holds it.
fn claim_id(
    state: &impl ShardState,
    ctx: &ApplyContext,
    key: &DirectoryKey,
    region: &RegionCode,
) -> Result<Outcome, StateError> {
    if let Some(r) = wrong_shard(ctx, key.as_str()) {
        return Ok(Err(r));
    }
    if let Some(holder) = state.claim(key)? {
        return Ok(Applied::unchanged(Reply::Claimed { region: holder }));
    }
    Ok(Ok(Applied {
        events: vec![Event::IdClaimed { key: key.clone(), region: region.clone() }],
        changes: vec![],
        reply: Reply::Claimed { region: region.clone() },
    }))
}

/// The largest effect id in a list, for acknowledging a delivered batch.
pub fn max_effect_id(effects: &[Effect]) -> EffectId {
    effects.iter().map(|e| e.id).max().unwrap_or_default()
}
