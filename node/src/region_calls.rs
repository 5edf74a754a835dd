//! What a node does for the other regions, behind the region link (`meridian.link.v1`):
//! answering forwarded client requests, directory claims and lookups, conversation heads,
//! and applying their effects. The link credential was checked before any of this runs;
//! every body is still decoded and validated here like a client's, and a forwarded request
//! goes through the same handlers (and token checks) as one sent here directly.

use std::collections::BTreeMap;

use meridian_domain::shard::shard_for;
use meridian_domain::{Command, ConversationId, DirectoryKey, Reason, RegionCode, Rejection, ShardId, UserId};
use meridian_proto::api::{self, admin_server::Admin, chat_server::Chat};
use meridian_proto::durable as pb;
use meridian_proto::link as wire;
use prost::Message as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Request;

use crate::api::admin::AdminService;
use crate::api::chat::ChatService;
use crate::api::error::ApiError;
use crate::api::wire::message_to_wire;
use crate::api::Context;
use crate::geo::FORWARDED_FROM;

/// Most effects one delivery may carry (a pump sends at most 256).
const MAX_DELIVERY: usize = 1024;
/// Most conversations one heads call may name (a list page is at most 200).
const MAX_HEADS: usize = 1000;

fn malformed(what: impl std::fmt::Display) -> ApiError {
    ApiError::Remote(meridian_proto::codec::malformed(&what.to_string()))
}

fn caller_region(ctx: &Context, region: &str) -> Result<RegionCode, ApiError> {
    let geo = ctx.geo()?;
    let region = RegionCode::parse(region)?;
    if !geo.knows(&region) || &region == geo.region() {
        return Err(Rejection::new(
            Reason::RegionInvalid,
            format!("region {region} is not another region of this deployment"),
        )
        .into());
    }
    Ok(region)
}

/// A forwarded client request, answered by this node's own handlers.
pub async fn forward(ctx: &Context, r: wire::ForwardRequest) -> Result<wire::ForwardResponse, ApiError> {
    let from = caller_region(ctx, &r.from_region)?;
    let mut meta = MetadataMap::new();
    for (key, value) in [("authorization", &r.authorization), (meridian_proto::ACT_AS_METADATA_KEY, &r.act_as)] {
        if !value.is_empty() {
            let value = MetadataValue::try_from(value.as_str()).map_err(|_| malformed(format!("{key} metadata")))?;
            meta.insert(key, value);
        }
    }
    meta.insert(FORWARDED_FROM, MetadataValue::try_from(from.as_str()).map_err(|_| malformed("region"))?);
    let chat = ChatService::new(ctx.clone());
    let admin = AdminService::new(ctx.clone());
    macro_rules! call {
        ($service:ident, $trait:ident :: $method:ident, $request:ty) => {{
            let body = <$request>::decode(r.body.as_slice()).map_err(|e| malformed(format!("{}: {e}", r.method)))?;
            let mut request = Request::new(body);
            *request.metadata_mut() = meta;
            let response = $trait::$method(&$service, request).await.map_err(ApiError::Remote)?;
            response.into_inner().encode_to_vec()
        }};
    }
    let body = match r.method.as_str() {
        "Chat/SendMessage" => call!(chat, Chat::send_message, api::SendMessageRequest),
        "Chat/GetHistory" => call!(chat, Chat::get_history, api::GetHistoryRequest),
        "Chat/RecallMessage" => call!(chat, Chat::recall_message, api::RecallMessageRequest),
        "Chat/MarkRead" => call!(chat, Chat::mark_read, api::MarkReadRequest),
        "Chat/ListConversations" => call!(chat, Chat::list_conversations, api::ListConversationsRequest),
        "Admin/CreateUser" => call!(admin, Admin::create_user, api::CreateUserRequest),
        "Admin/DeleteUser" => call!(admin, Admin::delete_user, api::DeleteUserRequest),
        "Chat/DeleteAccount" => call!(chat, Chat::delete_account, api::DeleteAccountRequest),
        "Chat/SetBlocked" => call!(chat, Chat::set_blocked, api::SetBlockedRequest),
        "Chat/ListBlocked" => call!(chat, Chat::list_blocked, api::ListBlockedRequest),
        "Chat/SetConversationPrefs" => {
            call!(chat, Chat::set_conversation_prefs, api::SetConversationPrefsRequest)
        }
        "Chat/DeleteConversation" => call!(chat, Chat::delete_conversation, api::DeleteConversationRequest),
        "Chat/ClearHistory" => call!(chat, Chat::clear_history, api::ClearHistoryRequest),
        "Chat/DeleteMessages" => call!(chat, Chat::delete_messages, api::DeleteMessagesRequest),
        "Chat/AddFriend" => call!(chat, Chat::add_friend, api::AddFriendRequest),
        "Chat/RespondFriendRequest" => call!(chat, Chat::respond_friend_request, api::RespondFriendRequestRequest),
        "Chat/DeleteFriend" => call!(chat, Chat::delete_friend, api::DeleteFriendRequest),
        "Chat/SetFriendRemark" => call!(chat, Chat::set_friend_remark, api::SetFriendRemarkRequest),
        "Chat/ListFriends" => call!(chat, Chat::list_friends, api::ListFriendsRequest),
        "Chat/ListFriendRequests" => call!(chat, Chat::list_friend_requests, api::ListFriendRequestsRequest),
        "Chat/CheckFriends" => call!(chat, Chat::check_friends, api::CheckFriendsRequest),
        "Chat/SetProfile" => call!(chat, Chat::set_profile, api::SetProfileRequest),
        "Chat/GetProfile" => call!(chat, Chat::get_profile, api::GetProfileRequest),
        "Chat/AddGroupMembers" => call!(chat, Chat::add_group_members, api::AddGroupMembersRequest),
        "Chat/RemoveGroupMember" => call!(chat, Chat::remove_group_member, api::RemoveGroupMemberRequest),
        "Chat/MuteGroupMember" => call!(chat, Chat::mute_group_member, api::MuteGroupMemberRequest),
        "Chat/DismissGroup" => call!(chat, Chat::dismiss_group, api::DismissGroupRequest),
        "Chat/GetGroup" => call!(chat, Chat::get_group, api::GetGroupRequest),
        "Chat/SetGroupMemberRole" => call!(chat, Chat::set_group_member_role, api::SetGroupMemberRoleRequest),
        "Chat/TransferGroup" => call!(chat, Chat::transfer_group, api::TransferGroupRequest),
        "Chat/SetGroupProfile" => call!(chat, Chat::set_group_profile, api::SetGroupProfileRequest),
        "Chat/SetGroupMemberInfo" => call!(chat, Chat::set_group_member_info, api::SetGroupMemberInfoRequest),
        "Chat/ApplyToJoinGroup" => call!(chat, Chat::apply_to_join_group, api::ApplyToJoinGroupRequest),
        "Chat/RespondJoinRequest" => call!(chat, Chat::respond_join_request, api::RespondJoinRequestRequest),
        "Chat/ListJoinRequests" => call!(chat, Chat::list_join_requests, api::ListJoinRequestsRequest),
        "Chat/MuteAllGroup" => call!(chat, Chat::mute_all_group, api::MuteAllGroupRequest),
        "Chat/BanGroupMember" => call!(chat, Chat::ban_group_member, api::BanGroupMemberRequest),
        "Chat/GetReadReceipts" => call!(chat, Chat::get_read_receipts, api::GetReadReceiptsRequest),
        "Chat/LikeGroup" => call!(chat, Chat::like_group, api::LikeGroupRequest),
        "Chat/CreateTopic" => call!(chat, Chat::create_topic, api::CreateTopicRequest),
        "Chat/ListTopics" => call!(chat, Chat::list_topics, api::ListTopicsRequest),
        "Chat/CreateGroup" => call!(chat, Chat::create_group, api::CreateGroupRequest),
        "Chat/Signal" => call!(chat, Chat::signal, api::SignalRequest),
        "Chat/ListJoinedGroups" => call!(chat, Chat::list_joined_groups, api::ListJoinedGroupsRequest),
        other => return Err(malformed(format!("{other} is not a method that is forwarded"))),
    };
    Ok(wire::ForwardResponse { body })
}

/// Checks that this region owns `key` in the directory.
fn owned_key(ctx: &Context, key: &str) -> Result<DirectoryKey, ApiError> {
    let geo = ctx.geo()?;
    let key = DirectoryKey::parse(key)?;
    let owner = meridian_regions::residency::owner_region(geo.file(), &key);
    if owner.as_ref() != Some(geo.region()) {
        return Err(Rejection::new(
            Reason::RegionInvalid,
            format!(
                "directory key {key} belongs to region {}, not {}",
                owner.map(|o| o.to_string()).unwrap_or_default(),
                geo.region()
            ),
        )
        .into());
    }
    Ok(key)
}

pub async fn claim(ctx: &Context, r: wire::ClaimRequest) -> Result<wire::ClaimResponse, ApiError> {
    let key = owned_key(ctx, &r.key)?;
    let region = caller_region(ctx, &r.region)?;
    let holder = ctx.geo()?.claim_here(key, region).await?;
    Ok(wire::ClaimResponse { region: holder.to_string() })
}

pub async fn lookup(ctx: &Context, r: wire::LookupRequest) -> Result<wire::LookupResponse, ApiError> {
    let key = owned_key(ctx, &r.key)?;
    let holder = ctx.geo()?.lookup_here(&key).await?;
    Ok(wire::LookupResponse { region: holder.map(|h| h.to_string()).unwrap_or_default() })
}

/// Heads of conversations homed here, for a member's list in another region. Only
/// conversations the user is a member of are answered; the others are left out.
pub async fn heads(ctx: &Context, r: wire::HeadsRequest) -> Result<wire::HeadsResponse, ApiError> {
    let user = UserId::parse(&r.user)?;
    if r.conversation_ids.len() > MAX_HEADS {
        return Err(malformed(format!("at most {MAX_HEADS} conversations a call")));
    }
    let conversations = r.conversation_ids.iter().map(|c| ConversationId::parse(c)).collect::<Result<Vec<_>, _>>()?;
    let shards: std::collections::BTreeSet<ShardId> =
        conversations.iter().map(|c| ctx.topology.conversation_shard(c)).collect();
    for r in futures::future::join_all(shards.into_iter().map(|s| ctx.node.read_barrier(s))).await {
        r?;
    }
    let mut rows = Vec::with_capacity(conversations.len());
    for conversation in conversations {
        if let Some(group) = conversation.group_id() {
            // A group's row: the caller's cursor is on the group's shard (the time of joining
            // is not known here; a group without messages sorts as of the epoch).
            rows.extend(crate::api::groups::group_row(ctx, &user, &group, meridian_domain::TimeMs(0))?);
            continue;
        }
        let store = ctx.node.store(ctx.topology.conversation_shard(&conversation))?;
        let Some(head) = store.conversation(&conversation)? else { continue };
        let Some(member) = head.member(&user) else { continue };
        let last = if store.history_view(&conversation, &user)?.hides(head.last_seq) {
            None
        } else {
            store.message(&conversation, head.last_seq)?
        };
        rows.push(api::Conversation {
            conversation_id: conversation.to_string(),
            peer: conversation.peer_of(&user).map(|p| p.to_string()).unwrap_or_default(),
            last_seq: head.last_seq.0,
            read_seq: member.read_seq.0,
            unread: head.unread(&user),
            last_time_ms: head.last_time.0,
            last_message: last.as_ref().map(message_to_wire),
            home_region: ctx.topology.region().to_string(),
            home_unavailable: false,
            group_id: String::new(),
            mentioned: false,
            ..Default::default()
        });
    }
    Ok(wire::HeadsResponse { conversations: rows })
}

/// Effects of another region's shard for entities of this one: each goes to the shard that
/// holds its entity, in the order sent, with the source region named, so the target keeps a
/// watermark per source and applies each once however often it is delivered.
pub async fn deliver_effects(
    ctx: &Context,
    r: wire::DeliverEffectsRequest,
) -> Result<wire::DeliverEffectsResponse, ApiError> {
    let from = caller_region(ctx, &r.source_region)?;
    if r.effects.len() > MAX_DELIVERY {
        return Err(malformed(format!("at most {MAX_DELIVERY} effects a delivery")));
    }
    let source = ShardId(r.source_shard);
    let mut per_shard: BTreeMap<ShardId, Vec<meridian_domain::Effect>> = BTreeMap::new();
    for bytes in &r.effects {
        let effect = pb::Effect::decode(bytes.as_slice()).map_err(|e| malformed(format!("effect: {e}")))?;
        let effect = meridian_storage::codec::effect_from_pb(effect, &from).map_err(|e| malformed(e.to_string()))?;
        let shard = shard_for(&effect.kind.target_entity(), ctx.node.shard_count());
        per_shard.entry(shard).or_default().push(effect);
    }
    let count = r.effects.len();
    let proposals = per_shard.into_iter().map(|(shard, effects)| {
        let command = Command::ApplyEffects { source, from_region: Some(from.clone()), effects };
        async move {
            let mut results = ctx.node.propose(shard, &[command]).await?;
            match results.pop() {
                Some(Ok(_)) => Ok(()),
                Some(Err(rejection)) => Err(ApiError::from(rejection)),
                None => Err(ApiError::Internal("a proposal returned no result".into())),
            }
        }
    });
    for outcome in futures::future::join_all(proposals).await {
        outcome?;
    }
    Ok(wire::DeliverEffectsResponse { applied: u32::try_from(count).unwrap_or(u32::MAX) })
}
