//! The group administration calls of the `Chat` service (GRP-03..05, MSG-06): profile and
//! member fields, applications to join, muting everyone, bans, the groups a user joined and
//! read receipts. The rules are the domain's (`meridian_domain::group_admin`).

use meridian_domain::apply::Reply;
use meridian_domain::group_admin::{check_group_fields, check_member_fields};
use meridian_domain::{Command, ConversationId, GroupId, Reason, Rejection, Seq, UserId};
use meridian_proto::api;
use tonic::Request;

use super::chat::ChatService;
use super::error::ApiError;
use super::groups::changed;

/// Groups of at most this many members answer read receipts (MSG-06).
pub const MAX_RECEIPT_MEMBERS: u64 = 200;

fn fields_of(map: std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    map.into_iter().collect()
}

impl ChatService {
    pub(super) async fn set_group_profile_(
        &self,
        req: Request<api::SetGroupProfileRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let fields = fields_of(body.fields);
        check_group_fields(&fields)?;
        // The type's cap from this node's configuration (a group's type never changes).
        let kind = self.ctx.node.store(self.shard_of(&group))?.group(&group)?.map(|g| g.kind);
        let type_cap = kind.map_or(0, |k| self.cap(k));
        let command = Command::SetGroupProfile { actor: me, group: group.clone(), fields, type_cap };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn set_group_member_info_(
        &self,
        req: Request<api::SetGroupMemberInfoRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = if body.user.is_empty() { me.clone() } else { UserId::parse(&body.user)? };
        let fields = fields_of(body.fields);
        check_member_fields(&fields)?;
        let command = Command::SetGroupMemberInfo { actor: me, group: group.clone(), user, fields };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn apply_to_join_group_(
        &self,
        req: Request<api::ApplyToJoinGroupRequest>,
    ) -> Result<api::ApplyToJoinGroupResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        if body.message.len() > meridian_domain::group_admin::MAX_APPLICATION_BYTES {
            return Err(Rejection::new(
                Reason::GroupFieldInvalid,
                format!(
                    "an application's message is at most {} bytes",
                    meridian_domain::group_admin::MAX_APPLICATION_BYTES
                ),
            )
            .into());
        }
        let homes = self.member_homes([&me]).await?;
        self.require_room_for_a_group([&me], &group)?;
        self.ctx
            .hooks
            .before(
                crate::hooks::Before::JoinGroup,
                serde_json::json!({"group_id": group.as_str(), "by": me.as_str(), "users": [me.as_str()], "message": body.message}),
            )
            .await?;
        let command = Command::ApplyToJoinGroup { user: me, group: group.clone(), message: body.message, homes };
        match self.propose_one(self.shard_of(&group), command).await? {
            Reply::GroupApplication { group, pending, member_count } => {
                Ok(api::ApplyToJoinGroupResponse { group_id: group.to_string(), pending, member_count })
            }
            other => Err(ApiError::Internal(format!("unexpected reply to an application: {other:?}"))),
        }
    }

    pub(super) async fn respond_join_request_(
        &self,
        req: Request<api::RespondJoinRequestRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = UserId::parse(&body.user)?;
        let homes = if body.approve { self.member_homes([&user]).await? } else { vec![] };
        let command =
            Command::RespondJoinRequest { actor: me, group: group.clone(), user, approve: body.approve, homes };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn list_join_requests_(
        &self,
        req: Request<api::ListJoinRequestsRequest>,
    ) -> Result<api::ListJoinRequestsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let group = GroupId::parse(&req.get_ref().group_id)?;
        let (_, mine) = self.readable_group(&me, &group).await?;
        if !mine.is_some_and(|m| m.role.manages()) {
            return Err(Rejection::new(
                Reason::PermissionDenied,
                format!("only the owner and admins of group {group} see its applications"),
            )
            .into());
        }
        let applications = self.ctx.node.store(self.shard_of(&group))?.group_applications(&group)?;
        Ok(api::ListJoinRequestsResponse {
            requests: applications
                .into_iter()
                .map(|a| api::JoinRequestEntry { user: a.user.to_string(), message: a.message, time_ms: a.at.0 })
                .collect(),
        })
    }

    pub(super) async fn mute_all_group_(
        &self,
        req: Request<api::MuteAllGroupRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let command = Command::MuteAllGroup { actor: me, group: group.clone(), muted: body.muted };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    pub(super) async fn ban_group_member_(
        &self,
        req: Request<api::BanGroupMemberRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let user = UserId::parse(&body.user)?;
        let duration_ms = body.seconds.saturating_mul(1000);
        let command = Command::BanGroupMember { actor: me, group: group.clone(), user, duration_ms };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    /// Likes the group: gathered with the other likes this node receives for it, and counted
    /// by one command per window. Members only, except in a live room (anyone there).
    pub(super) async fn like_group_(
        &self,
        req: Request<api::LikeGroupRequest>,
    ) -> Result<api::LikeGroupResponse, ApiError> {
        const MAX_LIKES_PER_CALL: u64 = 100;
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        if !(1..=MAX_LIKES_PER_CALL).contains(&body.count) {
            return Err(Rejection::new(
                Reason::GroupFieldInvalid,
                format!("like 1..={MAX_LIKES_PER_CALL} times at once, not {}", body.count),
            )
            .into());
        }
        // Who may like is checked here, on this node's replica: the command that counts the
        // likes is the sum of many callers.
        let store = self.ctx.node.store(self.shard_of(&group))?;
        let Some(g) = store.group(&group)? else {
            return Err(Rejection::new(Reason::GroupNotFound, format!("no group {group}")).into());
        };
        if g.kind.keeps_members() && store.group_member(&group, &me)?.is_none() {
            return Err(Rejection::new(Reason::NotGroupMember, format!("{me} is not a member of group {group}")).into());
        }
        let likes = self.ctx.likes.like(&self.ctx, group.clone(), body.count).await?;
        Ok(api::LikeGroupResponse { group_id: group.to_string(), likes })
    }

    pub(super) async fn create_topic_(
        &self,
        req: Request<api::CreateTopicRequest>,
    ) -> Result<api::GroupChangeResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.into_inner();
        let group = GroupId::parse(&body.group_id)?;
        let topic = meridian_domain::TopicId::parse(&body.topic)?;
        let command = Command::CreateTopic { actor: me, group: group.clone(), topic, name: body.name };
        changed(self.propose_one(self.shard_of(&group), command).await?)
    }

    /// A Community's topics with the caller's cursor and unread in each (members only).
    pub(super) async fn list_topics_(
        &self,
        req: Request<api::ListTopicsRequest>,
    ) -> Result<api::ListTopicsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let group = GroupId::parse(&req.get_ref().group_id)?;
        self.readable_group(&me, &group).await?;
        let store = self.ctx.node.store(self.shard_of(&group))?;
        let mut topics = vec![];
        for t in store.topics(&group)? {
            let stream = ConversationId::topic_stream(&group, &t.id);
            let last_seq = store.conversation(&stream)?.map_or(Seq::ZERO, |h| h.last_seq);
            let read_seq = store.topic_cursor(&stream, &me)?;
            topics.push(api::TopicInfo {
                topic: t.id.to_string(),
                name: t.name,
                last_seq: last_seq.0,
                read_seq: read_seq.0,
                unread: last_seq.0.saturating_sub(read_seq.0),
            });
        }
        Ok(api::ListTopicsResponse { topics })
    }

    /// The caller's groups, from their list (on their shard) and each group's record.
    pub(super) async fn list_joined_groups_(
        &self,
        req: Request<api::ListJoinedGroupsRequest>,
    ) -> Result<api::ListJoinedGroupsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/ListJoinedGroups", &req).await;
        }
        self.ctx.require_user(&me).await?;
        let shard = self.ctx.topology.user_shard(&me);
        self.ctx.node.read_barrier(shard).await?;
        let refs = self.ctx.node.store(shard)?.group_refs(&me)?;
        let mut groups = Vec::with_capacity(refs.len());
        for r in refs {
            if let Some(home) = r.home.filter(|h| h != self.ctx.topology.region()) {
                groups.push(api::JoinedGroup {
                    group_id: r.group.to_string(),
                    joined_ms: r.joined.0,
                    home_region: home.to_string(),
                    ..Default::default()
                });
                continue;
            }
            let Some(g) = self.ctx.node.store(self.shard_of(&r.group))?.group(&r.group)? else { continue };
            if g.dismissed {
                continue;
            }
            groups.push(api::JoinedGroup {
                group_id: g.id.to_string(),
                r#type: g.kind.name().to_owned(),
                name: g.name,
                joined_ms: r.joined.0,
                member_count: g.member_count,
                home_region: String::new(),
            });
        }
        Ok(api::ListJoinedGroupsResponse { groups })
    }

    /// Read receipts of one message of a group of at most [`MAX_RECEIPT_MEMBERS`]: the
    /// members' read cursors, compared with its seq.
    pub(super) async fn get_read_receipts_(
        &self,
        req: Request<api::GetReadReceiptsRequest>,
    ) -> Result<api::GetReadReceiptsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let group = GroupId::parse(&req.get_ref().group_id)?;
        let seq = Seq(req.get_ref().seq);
        let (g, _) = self.readable_group(&me, &group).await?;
        if !g.kind.keeps_members() || g.member_count > MAX_RECEIPT_MEMBERS {
            return Err(Rejection::new(
                Reason::ReadReceiptsUnavailable,
                format!(
                    "read receipts are kept for groups of at most {MAX_RECEIPT_MEMBERS} members; group {group} has {}",
                    g.member_count
                ),
            )
            .into());
        }
        let store = self.ctx.node.store(self.shard_of(&group))?;
        let last_seq = store.conversation(&ConversationId::group(&group))?.map_or(Seq::ZERO, |h| h.last_seq);
        if seq == Seq::ZERO || seq > last_seq {
            return Err(Rejection::new(
                Reason::SeqOutOfRange,
                format!("seq {seq} is not in group {group}, whose messages are 1..={last_seq}"),
            )
            .into());
        }
        let (mut read, mut unread) = (vec![], vec![]);
        for m in store.group_members(&group, None, MAX_RECEIPT_MEMBERS as usize + 1)? {
            if m.hidden {
                continue;
            }
            if m.read_seq >= seq {
                read.push(m.user.to_string());
            } else {
                unread.push(m.user.to_string());
            }
        }
        Ok(api::GetReadReceiptsResponse { read, unread })
    }
}
