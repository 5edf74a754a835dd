//! The group calls of the `Chat` service (GRP-01..05): create, add or join, remove or leave,
//! mute, dismiss, read a group's profile and members, and group streams in send, history,
//! mark-read and the conversation list. The rules are the domain's (`meridian_domain::group`);
//! this is the boundary: parsing, the caps from the configuration, and routing to the group's
//! shard.
//!
//! A group lives in the home region of the user who created it (a create asked elsewhere is
//! forwarded there), its id claimed in the directory like a user's, so that ids are unique
//! across regions. Its stream, members and cursors stay there; any call about the group,
//! asked in any region, is forwarded to it. Members may live in other regions: their lists
//! of groups are in their home regions, kept by the outbox across the region link, and their
//! conversation lists read the group's head through the link. A resident of a strict region
//! joins only groups of their own region (`RESIDENCY_VIOLATION`): the group's messages,
//! theirs among them, are stored where the group lives.

use meridian_domain::apply::Reply;
use meridian_domain::element::validate_body;
use meridian_domain::shard::shard_for;
use meridian_domain::{
    Command, ConversationId, GroupId, GroupKind, Reason, RegionCode, Rejection, RequestId, Seq, ShardId, UserId,
};
use meridian_proto::api;
use meridian_storage::codec::encoded_body_len;
use tonic::Request;

use super::chat::{ChatService, Homed};
use super::error::ApiError;
use super::wire::{element_from_wire, message_to_wire};
use crate::hooks::Before;

/// Members a `GetGroup` page lists when the request gives no limit, and at most.
const DEFAULT_MEMBER_PAGE: u32 = 100;
const MAX_MEMBER_PAGE: u32 = 1000;

fn group_shard(group: &GroupId, shards: u32) -> ShardId {
    shard_for(ConversationId::group(group).as_str(), shards)
}

pub(super) fn changed(reply: Reply) -> Result<api::GroupChangeResponse, ApiError> {
    match reply {
        Reply::GroupChanged { group, member_count, changed } => {
            Ok(api::GroupChangeResponse { group_id: group.to_string(), member_count, changed })
        }
        other => Err(ApiError::Internal(format!("unexpected reply to a group command: {other:?}"))),
    }
}

impl ChatService {
    pub(super) fn shard_of(&self, group: &GroupId) -> ShardId {
        group_shard(group, self.ctx.node.shard_count())
    }

    /// The home regions of those of `users` who live in another region (the rest must have
    /// accounts here): what a command that adds members carries. A resident of a strict
    /// region other than this one may not join a group of this region.
    pub(super) async fn member_homes<'u>(
        &self,
        users: impl IntoIterator<Item = &'u UserId>,
    ) -> Result<Vec<(UserId, RegionCode)>, ApiError> {
        let here = self.ctx.topology.region();
        let mut homes = vec![];
        for user in users {
            let Some(geo) = &self.ctx.geo else {
                self.ctx.require_user(user).await?;
                continue;
            };
            let home = geo.require_home(user).await?;
            if &home == here {
                self.ctx.require_user(user).await?;
                continue;
            }
            if geo.policy(&home)? == meridian_regions::Residency::Strict {
                return Err(Rejection::new(
                    Reason::ResidencyViolation,
                    format!(
                        "{user} lives in region {home}, whose residents' messages stay there: they cannot join a \
                         group of region {here}"
                    ),
                )
                .into());
            }
            homes.push((user.clone(), home));
        }
        Ok(homes)
    }

    /// The region of the group `group_id` names when it is another one (a call about it is
    /// forwarded there); `None` when it lives here, is unknown, or the id is malformed (the
    /// call then answers for itself).
    pub(super) async fn group_elsewhere(&self, group_id: &str) -> Result<Option<RegionCode>, ApiError> {
        let Some(geo) = &self.ctx.geo else { return Ok(None) };
        let Ok(group) = GroupId::parse(group_id) else { return Ok(None) };
        if self.ctx.node.store(self.shard_of(&group))?.group(&group)?.is_some() {
            return Ok(None);
        }
        Ok(geo.group_home(&group).await?.filter(|home| home != self.ctx.topology.region()))
    }

    /// Refuses to add any of `users` to `group` when they are in `[limits] max-joined-groups`
    /// groups already (GRP-04), counted on this node's replica of their lists: a list grows
    /// through the outbox, so joins racing each other can pass the cap by the joins in flight.
    /// Live rooms are not listed and do not count.
    pub(super) fn require_room_for_a_group<'u>(
        &self,
        users: impl IntoIterator<Item = &'u UserId>,
        group: &GroupId,
    ) -> Result<(), ApiError> {
        let live_room =
            self.ctx.node.store(self.shard_of(group))?.group(group)?.is_some_and(|g| !g.kind.keeps_members());
        if live_room {
            return Ok(());
        }
        let cap = self.ctx.limits.max_joined_groups;
        for user in users {
            let refs = self.ctx.node.store(self.ctx.topology.user_shard(user))?.group_refs(user)?;
            if refs.len() as u64 >= cap && !refs.iter().any(|r| &r.group == group) {
                return Err(Rejection::new(
                    Reason::JoinedGroupsLimit,
                    format!("{user} is in {} groups, the most one user joins", refs.len()),
                )
                .into());
            }
        }
        Ok(())
    }

    pub(super) fn cap(&self, kind: GroupKind) -> u64 {
        let limits = &self.ctx.limits;
        match kind {
            GroupKind::Work => limits.max_group_members_work,
            GroupKind::Public => limits.max_group_members_public,
            GroupKind::Meeting => limits.max_group_members_meeting,
            GroupKind::Community => limits.max_group_members_community,
            GroupKind::AvChatRoom => u64::MAX,
        }
    }

    pub(super) async fn create_group_(
        &self,
        req: Request<api::CreateGroupRequest>,
    ) -> Result<api::CreateGroupResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        // A group is created in its creator's home region.
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/CreateGroup", &req).await;
        }
        let body = req.into_inner();
        let kind = GroupKind::from_name(&body.r#type).ok_or_else(|| {
            Rejection::new(
                Reason::GroupTypeInvalid,
                format!("{:?} is not a group type: work, public, meeting, community or avchatroom", body.r#type),
            )
        })?;
        let group = if body.group_id.is_empty() {
            GroupId::parse(&format!("g{:016x}", rand::random::<u64>()))?
        } else {
            GroupId::parse(&body.group_id)?
        };
        let mut members = Vec::with_capacity(body.members.len());
        for m in &body.members {
            let user = UserId::parse(m)?;
            if user != me && !members.contains(&user) {
                members.push(user);
            }
        }
        self.ctx.require_user(&me).await?;
        let homes = self.member_homes(&members).await?;
        if kind.keeps_members() {
            self.require_room_for_a_group(std::iter::once(&me).chain(&members), &group)?;
        }
        self.ctx
            .hooks
            .before(
                Before::CreateGroup,
                serde_json::json!({
                    "group_id": group.as_str(), "kind": format!("{kind:?}"), "owner": me.as_str(),
                    "name": body.name, "members": members.iter().map(UserId::as_str).collect::<Vec<_>>(),
                }),
            )
            .await?;
        // The id is claimed in the directory first, so that no other region creates it too.
        if let Some(geo) = &self.ctx.geo {
            let here = self.ctx.topology.region();
            let holder = geo.claim_group(&group, here).await?;
            if &holder != here {
                return Err(Rejection::new(
                    Reason::GroupExists,
                    format!("group {group} already exists, in region {holder}: group ids are unique across regions"),
                )
                .into());
            }
        }
        let command = Command::CreateGroup {
            group: group.clone(),
            kind,
            owner: me,
            name: body.name,
            max_members: self.cap(kind),
            members,
            hide_history: body.hide_history_from_new_members,
            homes,
        };
        match self.propose_one(self.shard_of(&group), command).await? {
            Reply::GroupChanged { group, member_count, changed } => Ok(api::CreateGroupResponse {
                conversation_id: ConversationId::group(&group).to_string(),
                group_id: group.to_string(),
                member_count,
                created: changed,
            }),
            other => Err(ApiError::Internal(format!("unexpected reply to create-group: {other:?}"))),
        }
    }

    pub(super) async fn add_group_members_(
        &self,
        req: Request<api::AddGroupMembersRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let users = body.users.iter().map(|u| UserId::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let homes = self.member_homes(&users).await?;
        self.require_room_for_a_group(&users, &group)?;
        self.ctx
            .hooks
            .before(
                Before::JoinGroup,
                serde_json::json!({
                    "group_id": group.as_str(), "by": me.as_str(),
                    "users": users.iter().map(UserId::as_str).collect::<Vec<_>>(),
                }),
            )
            .await?;
        let command = Command::AddGroupMembers { actor: me, group: group.clone(), users, hidden: body.hidden, homes };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn remove_group_member_(
        &self,
        req: Request<api::RemoveGroupMemberRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = if body.user.is_empty() { me.clone() } else { UserId::parse(&body.user)? };
        changed(self.propose_one(self.shard_of(&group), Command::RemoveGroupMember { actor: me, group, user }).await?)
    }

    pub(super) async fn mute_group_member_(
        &self,
        req: Request<api::MuteGroupMemberRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = UserId::parse(&body.user)?;
        let duration_ms = body.seconds.saturating_mul(1000);
        let command = Command::MuteGroupMember { actor: me, group: group.clone(), user, duration_ms };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn set_group_member_role_(
        &self,
        req: Request<api::SetGroupMemberRoleRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = UserId::parse(&body.user)?;
        let role = match meridian_domain::GroupRole::from_name(&body.role) {
            Some(role) if role != meridian_domain::GroupRole::Owner => role,
            _ => {
                return Err(Rejection::new(
                    Reason::GroupRoleInvalid,
                    format!("{:?} is not a role to set: admin or member (ownership moves by TransferGroup)", body.role),
                )
                .into())
            }
        };
        let command = Command::SetGroupRole { actor: me, group: group.clone(), user, role };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn transfer_group_(
        &self,
        req: Request<api::TransferGroupRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let to = UserId::parse(&body.new_owner)?;
        changed(
            self.propose_one(self.shard_of(&group), Command::TransferGroup { actor: me, group: group.clone(), to })
                .await?,
        )
    }

    pub(super) async fn dismiss_group_(
        &self,
        req: Request<api::DismissGroupRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let group = GroupId::parse(&req.get_ref().group_id)?;
        changed(self.propose_one(self.shard_of(&group), Command::DismissGroup { actor: me, group }).await?)
    }

    /// The group (after a read barrier), and whether `me` may read it: a member, or anyone in
    /// a live room.
    pub(super) async fn readable_group(
        &self,
        me: &UserId,
        group: &GroupId,
    ) -> Result<(meridian_domain::Group, Option<meridian_domain::GroupMember>), ApiError> {
        let shard = self.shard_of(group);
        self.ctx.node.read_barrier(shard).await?;
        let store = self.ctx.node.store(shard)?;
        let Some(g) = store.group(group)? else {
            return Err(Rejection::new(Reason::GroupNotFound, format!("no group {group}")).into());
        };
        let member = store.group_member(group, me)?;
        if g.kind.keeps_members() && member.is_none() {
            return Err(Rejection::new(Reason::NotGroupMember, format!("{me} is not a member of group {group}")).into());
        }
        Ok((g, member))
    }

    pub(super) async fn get_group_(
        &self,
        req: Request<api::GetGroupRequest>,
    ) -> Result<api::GetGroupResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let limit = match body.limit {
            0 => DEFAULT_MEMBER_PAGE,
            n if n <= MAX_MEMBER_PAGE => n,
            n => {
                return Err(Rejection::new(
                    Reason::PageLimitInvalid,
                    format!("limit {n} is over the page maximum {MAX_MEMBER_PAGE}"),
                )
                .into())
            }
        } as usize;
        let after = if body.after.is_empty() { None } else { Some(UserId::parse(&body.after)?) };
        let (g, mine) = self.readable_group(&me, &group).await?;
        // Hidden members are listed to the owner and admins (and to themselves) only.
        let sees_hidden = mine.as_ref().is_some_and(|m| m.role.manages());
        let store = self.ctx.node.store(self.shard_of(&group))?;
        let last_seq = store.conversation(&ConversationId::group(&group))?.map_or(Seq::ZERO, |h| h.last_seq);
        let members: Vec<_> = store
            .group_members(&group, after.as_ref(), limit + 1)?
            .into_iter()
            .filter(|m| sees_hidden || !m.hidden || m.user == me)
            .collect();
        let next_after = if members.len() > limit { members[limit - 1].user.to_string() } else { String::new() };
        Ok(api::GetGroupResponse {
            group: Some(api::GroupInfo {
                group_id: g.id.to_string(),
                r#type: g.kind.name().to_owned(),
                name: g.name,
                owner: g.owner.to_string(),
                max_members: g.max_members,
                member_count: g.member_count,
                created_ms: g.created.0,
                dismissed: g.dismissed,
                last_seq: last_seq.0,
                profile: g.profile.into_iter().collect(),
                join_option: g.join_option.name().to_owned(),
                muted_all: g.muted_all,
                applications: g.applications,
                likes: g.likes,
            }),
            members: members
                .iter()
                .take(limit)
                .map(|m| api::GroupMemberInfo {
                    user: m.user.to_string(),
                    role: m.role.name().to_owned(),
                    joined_ms: m.joined.0,
                    read_seq: m.read_seq.0,
                    muted_until_ms: m.muted_until.0,
                    hidden: m.hidden,
                    info: m.info.clone().into_iter().collect(),
                })
                .collect(),
            next_after,
        })
    }

    pub(super) async fn group_send(
        &self,
        req: Request<api::SendMessageRequest>,
    ) -> Result<Homed<api::SendMessageResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        if !body.to.is_empty() {
            return Err(Rejection::new(Reason::GroupIdInvalid, "name a peer (`to`) or a group, not both").into());
        }
        let group = GroupId::parse(&body.group_id)?;
        let elements = body.elements.into_iter().map(element_from_wire).collect::<Result<Vec<_>, _>>()?;
        validate_body(&elements, encoded_body_len(&elements), self.ctx.limits.max_message_bytes)?;
        let request_id = if body.request_id.is_empty() {
            RequestId::parse(&format!("auto-{:032x}", rand::random::<u128>()))?
        } else {
            RequestId::parse(&body.request_id)?
        };
        let mentions = body.mentions.iter().map(|u| UserId::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let elements = self
            .ctx
            .hooks
            .before_send(
                serde_json::json!({"from": me.as_str(), "group_id": group.as_str(), "topic": body.topic}),
                elements,
            )
            .await?;
        validate_body(&elements, encoded_body_len(&elements), self.ctx.limits.max_message_bytes)?;
        let command = if body.topic.is_empty() {
            Command::SendGroupMessage {
                sender: me,
                group: group.clone(),
                elements,
                request_id: Some(request_id),
                mentions,
                at_all: body.at_all,
            }
        } else {
            if !mentions.is_empty() || body.at_all {
                return Err(Rejection::new(Reason::ElementInvalid, "mentions are for a group's main stream").into());
            }
            let topic = meridian_domain::TopicId::parse(&body.topic)?;
            Command::SendTopicMessage {
                sender: me,
                group: group.clone(),
                topic,
                elements,
                request_id: Some(request_id),
            }
        };
        match self.propose_one(self.shard_of(&group), command).await? {
            Reply::MessageAccepted { message_id, seq, time, conversation, duplicate } => Ok((
                api::SendMessageResponse {
                    message_id: message_id.to_string(),
                    seq: seq.0,
                    server_time_ms: time.0,
                    conversation_id: conversation.to_string(),
                    duplicate,
                },
                Some(self.ctx.topology.region().clone()),
            )),
            other => Err(ApiError::Internal(format!("unexpected reply to a group send: {other:?}"))),
        }
    }

    pub(super) async fn group_history(
        &self,
        req: Request<api::GetHistoryRequest>,
    ) -> Result<Homed<api::GetHistoryResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let group = GroupId::parse(&req.get_ref().group_id)?;
        let (_, member) = self.readable_group(&me, &group).await?;
        let topic = &req.get_ref().topic;
        if !topic.is_empty() {
            let topic = meridian_domain::TopicId::parse(topic)?;
            self.require_topic(&group, &topic)?;
            let stream = ConversationId::topic_stream(&group, &topic);
            let page = self.read_page(&stream, self.shard_of(&group), &me, req.into_inner()).await?;
            return Ok((page, Some(self.ctx.topology.region().clone())));
        }
        let stream = ConversationId::group(&group);
        // In a group that hides its history from new members, a member reads from the seq
        // they joined at on.
        let visible_from = member.map_or(1, |m| m.visible_from.0.max(1));
        let mut body = req.into_inner();
        let forward = body.direction() == api::Direction::Forward;
        if forward && visible_from > 1 {
            body.start_seq = body.start_seq.max(visible_from);
        }
        let mut page = self.read_page(&stream, self.shard_of(&group), &me, body).await?;
        if visible_from > 1 {
            page.messages.retain(|m| m.seq >= visible_from);
            if !forward && page.next_seq < visible_from {
                page.next_seq = 0;
            }
        }
        Ok((page, Some(self.ctx.topology.region().clone())))
    }

    pub(super) async fn group_recall(
        &self,
        req: Request<api::RecallMessageRequest>,
    ) -> Result<Homed<api::RecallMessageResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let window_ms = self.ctx.limits.recall_window_seconds.saturating_mul(1000);
        let command = Command::RecallMessage {
            actor: me,
            conversation: self.stream_named(&group, &body.topic)?,
            seq: Seq(body.seq),
            window_ms,
        };
        match self.propose_one(self.shard_of(&group), command).await? {
            Reply::MessageRecalled { seq, at } => Ok((
                api::RecallMessageResponse { seq: seq.0, recalled_at_ms: at.0 },
                Some(self.ctx.topology.region().clone()),
            )),
            other => Err(ApiError::Internal(format!("unexpected reply to a recall: {other:?}"))),
        }
    }

    pub(super) async fn group_mark_read(
        &self,
        req: Request<api::MarkReadRequest>,
    ) -> Result<Homed<api::MarkReadResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let command = Command::MarkRead {
            user: me,
            conversation: self.stream_named(&group, &body.topic)?,
            up_to: (body.seq != 0).then_some(Seq(body.seq)),
        };
        match self.propose_one(self.shard_of(&group), command).await? {
            Reply::ReadMarked { read_seq, unread } => {
                Ok((api::MarkReadResponse { read_seq: read_seq.0, unread }, Some(self.ctx.topology.region().clone())))
            }
            other => Err(ApiError::Internal(format!("unexpected reply to mark-read: {other:?}"))),
        }
    }

    /// A group's main stream, or its topic's when `topic` is not empty.
    fn stream_named(&self, group: &GroupId, topic: &str) -> Result<ConversationId, ApiError> {
        if topic.is_empty() {
            return Ok(ConversationId::group(group));
        }
        Ok(ConversationId::topic_stream(group, &meridian_domain::TopicId::parse(topic)?))
    }

    /// Refuses a topic the group does not have (on this node's replica).
    pub(super) fn require_topic(&self, group: &GroupId, topic: &meridian_domain::TopicId) -> Result<(), ApiError> {
        if self.ctx.node.store(self.shard_of(group))?.topic(group, topic)?.is_some() {
            Ok(())
        } else {
            Err(Rejection::new(Reason::TopicNotFound, format!("group {group} has no topic {topic}")).into())
        }
    }

    /// `me`'s groups as conversation rows: the stream's head and last message, and the unread
    /// count from `me`'s cursor (read from the group's shard; `user_shard` holds the list).
    /// The group rows of `me`'s list for groups homed here; the rows of groups homed in other
    /// regions go into `abroad` (read there through the link).
    pub(super) fn group_rows(
        &self,
        me: &UserId,
        user_shard: ShardId,
        abroad: &mut std::collections::BTreeMap<RegionCode, Vec<api::Conversation>>,
    ) -> Result<Vec<api::Conversation>, ApiError> {
        let here = self.ctx.topology.region();
        let refs = self.ctx.node.store(user_shard)?.group_refs(me)?;
        let mut rows = Vec::with_capacity(refs.len());
        for r in refs {
            match r.home.filter(|h| h != here) {
                Some(home) => abroad.entry(home.clone()).or_default().push(api::Conversation {
                    conversation_id: ConversationId::group(&r.group).to_string(),
                    group_id: r.group.to_string(),
                    last_time_ms: r.joined.0,
                    home_region: home.to_string(),
                    home_unavailable: true,
                    ..Default::default()
                }),
                None => rows.extend(group_row(&self.ctx, me, &r.group, r.joined)?),
            }
        }
        Ok(rows)
    }
}

/// `me`'s row for a group homed in this region (on this node's replica), if a member.
pub(crate) fn group_row(
    ctx: &super::Context,
    me: &UserId,
    group: &GroupId,
    joined: meridian_domain::TimeMs,
) -> Result<Option<api::Conversation>, ApiError> {
    let store = ctx.node.store(group_shard(group, ctx.node.shard_count()))?;
    let Some(member) = store.group_member(group, me)? else { return Ok(None) };
    let at_all_seq = store.group(group)?.map_or(Seq::ZERO, |g| g.at_all_seq);
    let mentioned = member.mention_seq.max(at_all_seq) > member.read_seq;
    let stream = ConversationId::group(group);
    let head = store.conversation(&stream)?;
    let last_seq = head.as_ref().map_or(Seq::ZERO, |h| h.last_seq);
    let hidden = last_seq == Seq::ZERO || store.history_view(&stream, me)?.hides(last_seq);
    let last = if hidden { None } else { store.message(&stream, last_seq)? };
    Ok(Some(api::Conversation {
        conversation_id: stream.to_string(),
        group_id: group.to_string(),
        last_seq: last_seq.0,
        read_seq: member.read_seq.0,
        unread: last_seq.0.saturating_sub(member.read_seq.0),
        last_time_ms: head.as_ref().map_or(joined.0, |h| h.last_time.0),
        last_message: last.as_ref().map(message_to_wire),
        home_region: ctx.topology.region().to_string(),
        mentioned,
        ..Default::default()
    }))
}
