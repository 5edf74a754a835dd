//! The rules a command must meet before it may be proposed, whatever door it came through:
//! the ones that depend only on the command and on where it is going (ids, routing, sizes),
//! not on the shard's state. A node checks a client's request against them, and the shard
//! leader checks every forwarded proposal again, so that nothing unchecked from the network
//! reaches the Raft log. Rules that depend on state run at apply ([`crate::apply`]).

use crate::command::{Command, Effect, Lane};
use crate::element::validate_body;
use crate::ids::{RegionCode, ShardId};
use crate::rejection::{Reason, Rejection};
use crate::shard::shard_for;

/// The highest region epoch (each promotion or failback adds one). Effect ids of epoch `e`
/// start at `e << 40`, which stays far inside `u64` below this.
pub const MAX_EPOCH: u32 = 1 << 20;

/// Longest nickname, in bytes.
pub const MAX_NICKNAME_BYTES: usize = 64;

/// The limits a node enforces on incoming commands (from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressLimits {
    /// Largest encoded message body, in bytes.
    pub max_message_bytes: usize,
}

/// Where a command is going: a shard of `region`, which has `shards` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'a> {
    pub region: &'a RegionCode,
    pub shard: ShardId,
    pub shards: u32,
}

/// The homes a group command names: each for one of its `users`, once, in another region
/// than the destination's.
fn member_homes(
    homes: &[(crate::UserId, RegionCode)],
    users: &[crate::UserId],
    to: Destination,
) -> Result<(), Rejection> {
    for (n, (user, home)) in homes.iter().enumerate() {
        if !users.contains(user) || homes[..n].iter().any(|(u, _)| u == user) || home == to.region {
            return Err(Rejection::new(
                Reason::RegionInvalid,
                format!("the home region {home} given for {user} is not one of another region's member"),
            ));
        }
    }
    Ok(())
}

impl Destination<'_> {
    /// The shard that holds `entity`; a rejection when it is not this destination.
    fn owns(&self, entity: &str) -> Result<(), Rejection> {
        let home = shard_for(entity, self.shards);
        if home == self.shard {
            Ok(())
        } else {
            Err(Rejection::new(Reason::WrongShard, format!("{entity} lives on shard {home}, not {}", self.shard)))
        }
    }

    fn in_region(&self, shard: ShardId, what: &str) -> Result<(), Rejection> {
        if shard.0 < self.shards {
            Ok(())
        } else {
            Err(Rejection::new(
                Reason::ShardOutOfRange,
                format!("{what} names shard {shard}, but the region has shards 0..{}", self.shards),
            ))
        }
    }
}

/// Checks `command` against the stateless rules for `to`. `encoded_body_len` gives the
/// encoded size of a message body (its encoding belongs to storage, not to the domain).
pub fn check(
    command: &Command,
    to: Destination,
    limits: IngressLimits,
    encoded_body_len: impl Fn(&[crate::Element]) -> usize,
) -> Result<(), Rejection> {
    to.in_region(to.shard, "the proposal")?;
    match command {
        Command::CreateUser { user, nickname, .. } => {
            if nickname.len() > MAX_NICKNAME_BYTES {
                return Err(Rejection::new(
                    Reason::NicknameTooLong,
                    format!("nicknames are at most {MAX_NICKNAME_BYTES} bytes"),
                ));
            }
            to.owns(user.as_str())
        }
        Command::DeleteAccount { user } => to.owns(user.as_str()),
        Command::SendMessage { sender, recipient, elements, .. } => {
            if sender == recipient {
                return Err(Rejection::new(
                    Reason::PeerIsSelf,
                    "a one-to-one message needs a recipient other than the sender",
                ));
            }
            validate_body(elements, encoded_body_len(elements), limits.max_message_bytes)?;
            to.owns(crate::ConversationId::c2c(sender, recipient).as_str())
        }
        Command::RestoreConversation { conversation, kept_up_to_seq, through } => {
            if conversation.group_id().is_some() {
                return Err(Rejection::new(Reason::ConversationIdInvalid, "a restore takes a one-to-one conversation"));
            }
            if *through <= *kept_up_to_seq || through.0 - kept_up_to_seq.0 > crate::command::MAX_RESTORE_BATCH {
                return Err(Rejection::new(
                    Reason::BadSeqRange,
                    format!(
                        "a restore withdraws 1..={} seqs after the kept one, got {}..={}",
                        crate::command::MAX_RESTORE_BATCH,
                        kept_up_to_seq.0 + 1,
                        through.0
                    ),
                ));
            }
            to.owns(conversation.as_str())
        }
        Command::RecallMessage { conversation, .. } | Command::MarkRead { conversation, .. } => {
            to.owns(conversation.as_str())
        }
        Command::ApplyEffects { source, from_region: None, effects } => {
            to.in_region(*source, "the effects' source")?;
            effects.iter().try_for_each(|e| check_effect(e, *source, to.region, to))
        }
        Command::ApplyEffects { source, from_region: Some(region), effects } => {
            if region == to.region {
                return Err(Rejection::new(
                    Reason::RegionInvalid,
                    format!("effects of region {region} are delivered to it without a source region"),
                ));
            }
            if source.0 >= MAX_SHARDS {
                return Err(Rejection::new(
                    Reason::ShardOutOfRange,
                    format!("the effects' source names shard {source}; no region has more than {MAX_SHARDS}"),
                ));
            }
            effects.iter().try_for_each(|e| check_effect(e, *source, region, to))
        }
        Command::AckEffects { target: Lane::Shard(target), .. } => {
            to.in_region(*target, "the acknowledgement's target")
        }
        Command::AckEffects { target: Lane::Region(region), .. } => {
            if region == to.region {
                Err(Rejection::new(Reason::RegionInvalid, "an acknowledgement's region lane is another region"))
            } else {
                Ok(())
            }
        }
        Command::ClaimId { key, .. } => to.owns(key.as_str()),
        Command::SetProfile { user, fields } => {
            crate::profile::check_update(fields)?;
            to.owns(user.as_str())
        }
        Command::SetBlocked { user, target, .. } => {
            if user == target {
                return Err(Rejection::new(Reason::PeerIsSelf, "a user cannot block themselves"));
            }
            to.owns(user.as_str())
        }
        Command::AddFriend { user, target, message, remark, .. } => {
            if user == target {
                return Err(Rejection::new(Reason::PeerIsSelf, "a user cannot befriend themselves"));
            }
            crate::friend::check_text(remark, message)?;
            to.owns(target.as_str())
        }
        Command::RespondFriendRequest { user, from, remark, .. } => {
            if user == from {
                return Err(Rejection::new(Reason::PeerIsSelf, "a user cannot befriend themselves"));
            }
            crate::friend::check_text(remark, "")?;
            to.owns(user.as_str())
        }
        Command::DeleteFriend { user, friend, .. } => {
            if user == friend {
                return Err(Rejection::new(Reason::PeerIsSelf, "a user is not on their own friend list"));
            }
            to.owns(user.as_str())
        }
        Command::SetFriendRemark { user, remark, .. } => {
            crate::friend::check_text(remark, "")?;
            to.owns(user.as_str())
        }
        Command::CreateGroup { group, name, members, max_members, homes, .. } => {
            member_homes(homes, members, to)?;
            if name.len() > crate::group::MAX_GROUP_NAME_BYTES {
                return Err(Rejection::new(
                    Reason::GroupNameInvalid,
                    format!("group names are at most {} bytes", crate::group::MAX_GROUP_NAME_BYTES),
                ));
            }
            if *max_members == 0 {
                return Err(Rejection::new(Reason::GroupMemberLimit, "a group's member cap is at least 1"));
            }
            members_fit(members.len())?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::AddGroupMembers { group, users, homes, .. } => {
            member_homes(homes, users, to)?;
            if users.is_empty() {
                return Err(Rejection::new(Reason::UserIdInvalid, "name at least one user to add"));
            }
            members_fit(users.len())?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::SetConversationPrefs { user, change, .. } => {
            change.check()?;
            to.owns(user.as_str())
        }
        Command::ClearHistoryForSelf { conversation, clear, delete, .. } => {
            crate::conversation_prefs::check_delete(*clear, delete)?;
            to.owns(conversation.as_str())
        }
        Command::SetGroupProfile { group, fields, .. } => {
            crate::group_admin::check_group_fields(fields)?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::SetGroupMemberInfo { group, fields, .. } => {
            crate::group_admin::check_member_fields(fields)?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::ApplyToJoinGroup { group, message, user, homes } => {
            member_homes(homes, std::slice::from_ref(user), to)?;
            if message.len() > crate::group_admin::MAX_APPLICATION_BYTES {
                return Err(Rejection::new(
                    Reason::GroupFieldInvalid,
                    format!("an application's message is at most {} bytes", crate::group_admin::MAX_APPLICATION_BYTES),
                ));
            }
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::CreateTopic { group, name, .. } => {
            if name.len() > crate::group::MAX_GROUP_NAME_BYTES {
                return Err(Rejection::new(
                    Reason::GroupNameInvalid,
                    format!("topic names are at most {} bytes", crate::group::MAX_GROUP_NAME_BYTES),
                ));
            }
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::SendTopicMessage { group, elements, .. } => {
            validate_body(elements, encoded_body_len(elements), limits.max_message_bytes)?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::AddGroupLikes { group, likes } => {
            if !(1..=crate::group_admin::MAX_LIKES_PER_COMMAND).contains(likes) {
                return Err(Rejection::new(
                    Reason::GroupFieldInvalid,
                    format!("likes come in 1..={} at a time", crate::group_admin::MAX_LIKES_PER_COMMAND),
                ));
            }
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::RespondJoinRequest { group, user, homes, .. } => {
            member_homes(homes, std::slice::from_ref(user), to)?;
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::MuteAllGroup { group, .. }
        | Command::BanGroupMember { group, .. }
        | Command::RemoveGroupMember { group, .. }
        | Command::MuteGroupMember { group, .. }
        | Command::DismissGroup { group, .. }
        | Command::TransferGroup { group, .. } => to.owns(crate::ConversationId::group(group).as_str()),
        Command::SetGroupRole { group, role, .. } => {
            if *role == crate::GroupRole::Owner {
                return Err(Rejection::new(
                    Reason::PermissionDenied,
                    "ownership is handed over by a transfer, not by setting a role",
                ));
            }
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::SendGroupMessage { group, elements, mentions, .. } => {
            validate_body(elements, encoded_body_len(elements), limits.max_message_bytes)?;
            if mentions.len() > crate::group::MAX_MENTIONS {
                return Err(Rejection::new(
                    Reason::ElementInvalid,
                    format!("a message mentions at most {} members (or @all)", crate::group::MAX_MENTIONS),
                ));
            }
            to.owns(crate::ConversationId::group(group).as_str())
        }
        Command::HooksSent { .. } => Ok(()),
        Command::ArchiveSegment { segment, events_digest } => {
            let bad = |what: &str| Err(Rejection::new(Reason::MalformedCommand, format!("archive segment: {what}")));
            if segment.key.is_empty() || segment.key.len() > 1024 {
                return bad("the key must be 1 to 1024 bytes");
            }
            if segment.first > segment.last {
                return bad("the first offset is past the last");
            }
            if segment.digest.len() != 32 || events_digest.len() != 32 {
                return bad("digests are SHA-256 (32 bytes)");
            }
            if segment.events == 0 {
                return bad("a segment holds at least one event");
            }
            Ok(())
        }
        Command::RaiseEpoch { epoch } => {
            if (2..=MAX_EPOCH).contains(epoch) {
                Ok(())
            } else {
                Err(Rejection::new(
                    Reason::MalformedCommand,
                    format!("epoch {epoch}: a raised epoch is in 2..={MAX_EPOCH}"),
                ))
            }
        }
        Command::SetLogicVersion { version } => {
            if (1..=crate::apply::LOGIC_VERSION).contains(version) {
                Ok(())
            } else {
                Err(Rejection::new(
                    Reason::LogicVersionUnsupported,
                    format!(
                        "logic version {version} is not one this node implements (1..={})",
                        crate::apply::LOGIC_VERSION
                    ),
                ))
            }
        }
    }
}

fn members_fit(count: usize) -> Result<(), Rejection> {
    if count > crate::group::MAX_MEMBERS_PER_COMMAND {
        return Err(Rejection::new(
            Reason::GroupMemberLimit,
            format!("{count} users in one request: at most {} a request", crate::group::MAX_MEMBERS_PER_COMMAND),
        ));
    }
    Ok(())
}

/// Most shards a region may have (a sanity bound on shard ids from elsewhere).
pub const MAX_SHARDS: u32 = 4096;

/// An effect of a batch from shard `source` of `region`, for an entity on `to`'s shard.
/// Effects from other regions come with their region named, from a region link.
fn check_effect(effect: &Effect, source: ShardId, region: &RegionCode, to: Destination) -> Result<(), Rejection> {
    if effect.source.region != *region {
        return Err(Rejection::new(
            Reason::RegionInvalid,
            format!("effect {} comes from region {}, not from {region}", effect.id.0, effect.source.region),
        ));
    }
    if effect.source.shard != source || effect.source.epoch == 0 {
        return Err(Rejection::new(
            Reason::WrongShard,
            format!("effect {} comes from {}, but the batch is from shard {source}", effect.id.0, effect.source),
        ));
    }
    if let crate::EffectKind::FriendListed { user, friend, remark, .. } = &effect.kind {
        if user == friend {
            return Err(Rejection::new(Reason::PeerIsSelf, "a user is not on their own friend list"));
        }
        crate::friend::check_text(remark, "")?;
    }
    if let crate::EffectKind::FriendGone { user, gone } = &effect.kind {
        if user == gone {
            return Err(Rejection::new(Reason::PeerIsSelf, "a user is not on their own friend list"));
        }
    }
    to.owns(&effect.kind.target_entity())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, EffectId, RegionCode, Seq, TimeMs, UserId};
    use crate::{EffectKind, EffectSource};

    const LIMITS: IngressLimits = IngressLimits { max_message_bytes: 100 };

    fn user(s: &str) -> UserId {
        UserId::parse(s).expect("valid id")
    }

    fn len(elements: &[crate::Element]) -> usize {
        elements.len() * 10
    }

    static REGION: std::sync::LazyLock<RegionCode> =
        std::sync::LazyLock::new(|| RegionCode::parse("sg").expect("a region code"));

    fn home(entity: &str) -> Destination<'static> {
        Destination { region: &REGION, shard: shard_for(entity, 8), shards: 8 }
    }

    fn other(to: Destination<'static>) -> Destination<'static> {
        Destination { shard: ShardId((to.shard.0 + 1) % to.shards), ..to }
    }

    #[test]
    fn commands_must_go_to_their_entitys_shard() {
        let create = Command::CreateUser {
            user: user("alice"),
            home_region: RegionCode::parse("sg").expect("ok"),
            nickname: "".into(),
        };
        assert_eq!(check(&create, home("alice"), LIMITS, len), Ok(()));
        let r = check(&create, other(home("alice")), LIMITS, len).expect_err("misrouted");
        assert_eq!(r.reason, Reason::WrongShard);

        let conversation = ConversationId::c2c(&user("a"), &user("b"));
        let mark = Command::MarkRead { user: user("a"), conversation: conversation.clone(), up_to: Some(Seq(1)) };
        assert_eq!(check(&mark, home(conversation.as_str()), LIMITS, len), Ok(()));
        assert!(check(&mark, other(home(conversation.as_str())), LIMITS, len).is_err());
    }

    #[test]
    fn shards_outside_the_region_are_refused() {
        let ack = Command::AckEffects { target: Lane::Shard(ShardId(8)), up_to: EffectId(3) };
        let to = Destination { region: &REGION, shard: ShardId(0), shards: 8 };
        assert_eq!(check(&ack, to, LIMITS, len).map_err(|r| r.reason), Err(Reason::ShardOutOfRange));
        let ack = Command::AckEffects { target: Lane::Shard(ShardId(7)), up_to: EffectId(3) };
        assert_eq!(
            check(&ack, Destination { shard: ShardId(9), ..to }, LIMITS, len).map_err(|r| r.reason),
            Err(Reason::ShardOutOfRange)
        );
        assert_eq!(check(&ack, to, LIMITS, len), Ok(()));
    }

    #[test]
    fn sends_meet_the_body_rules() {
        let to = home(ConversationId::c2c(&user("a"), &user("b")).as_str());
        let send = |elements| Command::SendMessage {
            sender: user("a"),
            recipient: user("b"),
            elements,
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        };
        let text = crate::Element::Text { text: "hi".into() };
        assert_eq!(check(&send(vec![text.clone()]), to, LIMITS, len), Ok(()));
        assert_eq!(check(&send(vec![]), to, LIMITS, len).map_err(|r| r.reason), Err(Reason::MessageEmpty));
        assert_eq!(check(&send(vec![text; 11]), to, LIMITS, len).map_err(|r| r.reason), Err(Reason::MessageTooLarge));
        let to_self = Command::SendMessage {
            sender: user("a"),
            recipient: user("a"),
            elements: vec![],
            request_id: None,
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        };
        assert_eq!(check(&to_self, to, LIMITS, len).map_err(|r| r.reason), Err(Reason::PeerIsSelf));
    }

    #[test]
    fn forged_effects_are_refused() {
        let to = home("bob");
        let effect = |source: u32, region: &str, who: &str| Effect {
            id: EffectId(1),
            source: EffectSource { region: RegionCode::parse(region).expect("ok"), epoch: 1, shard: ShardId(source) },
            kind: EffectKind::ConversationJoined {
                user: user(who),
                conversation: ConversationId::c2c(&user("bob"), &user("carol")),
                peer: user("carol"),
                at: TimeMs(1),
            },
        };
        let apply =
            |source: u32, effects| Command::ApplyEffects { source: ShardId(source), from_region: None, effects };
        assert_eq!(check(&apply(1, vec![effect(1, "sg", "bob")]), to, LIMITS, len), Ok(()));
        // From another shard than the batch says, from another region, for another shard's user.
        assert!(check(&apply(1, vec![effect(2, "sg", "bob")]), to, LIMITS, len).is_err());
        let r = check(&apply(1, vec![effect(1, "de", "bob")]), to, LIMITS, len).expect_err("foreign");
        assert_eq!(r.reason, Reason::RegionInvalid);
        assert!(check(&apply(1, vec![effect(1, "sg", "bob")]), other(to), LIMITS, len).is_err());
        assert_eq!(check(&apply(99, vec![]), to, LIMITS, len).map_err(|r| r.reason), Err(Reason::ShardOutOfRange));
    }
}
