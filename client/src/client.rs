//! [`Client`]: authenticated calls to a region's nodes, with failover and safe retries.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use meridian_proto::api::admin_client::AdminClient;
use meridian_proto::api::chat_client::ChatClient;
use meridian_proto::api::message_element::Kind;
use meridian_proto::api::{
    AddFriendRequest, CheckFriendsRequest, CheckFriendsResponse, DeleteFriendRequest, FriendResponse,
    ListFriendRequestsRequest, ListFriendRequestsResponse, ListFriendsRequest, ListFriendsResponse,
    RespondFriendRequestRequest, SetFriendRemarkRequest,
};
use meridian_proto::api::{
    AddGroupMembersRequest, AddNodeRequest, AddNodeResponse, AuditResidencyRequest, AuditResidencyResponse,
    ClusterStatusRequest, ClusterStatusResponse, CreateGroupRequest, CreateGroupResponse, CreateUserRequest,
    CreateUserResponse, Direction, DismissGroupRequest, GetGroupRequest, GetGroupResponse, GetHistoryRequest,
    GetHistoryResponse, GetProfileRequest, GetProfileResponse, GetRoutesRequest, GetRoutesResponse,
    GroupChangeResponse, IssueUserTokenRequest, IssueUserTokenResponse, ListBlockedRequest, ListBlockedResponse,
    ListConversationsRequest, ListConversationsResponse, LoggedEvent, LogicVersionRequest, LogicVersionResponse,
    MarkReadRequest, MarkReadResponse, Message, MessageElement, MuteGroupMemberRequest, ReadConsistency,
    ReadEventsRequest, ReadEventsResponse, RecallMessageRequest, RecallMessageResponse, RemoveGroupMemberRequest,
    RemoveNodeRequest, RemoveNodeResponse, SendMessageRequest, SendMessageResponse, SetBlockedRequest,
    SetBlockedResponse, SetGroupMemberRoleRequest, SetProfileRequest, TextElement, TransferGroupRequest,
    VerifyProjectionsRequest, VerifyProjectionsResponse,
};
use meridian_proto::api::{
    ApplyToJoinGroupRequest, ApplyToJoinGroupResponse, BanGroupMemberRequest, GetReadReceiptsRequest,
    GetReadReceiptsResponse, ListJoinRequestsRequest, ListJoinRequestsResponse, ListJoinedGroupsRequest,
    ListJoinedGroupsResponse, MuteAllGroupRequest, RespondJoinRequestRequest, SetGroupMemberInfoRequest,
    SetGroupProfileRequest,
};
use meridian_proto::api::{
    ClearHistoryRequest, ClearHistoryResponse, ConversationPrefsResponse, DeleteConversationRequest,
    DeleteMessagesRequest, SetConversationPrefsRequest,
};
use meridian_proto::api::{DeleteAccountRequest, DeleteUserRequest, DeleteUserResponse};
use meridian_proto::ACT_AS_METADATA_KEY;

use crate::backoff::Backoff;
use crate::config::{ClientConfig, TokenKind};
use crate::endpoint::NodeEndpoint;
use crate::routes::{token_user, Routes};
use crate::ClientError;

/// The largest history page the server serves.
const MAX_HISTORY_PAGE: u32 = 100;
/// The largest conversation page the server serves.
const MAX_CONVERSATION_PAGE: u32 = 200;

/// A connection to one region's nodes, as one identity.
///
/// Cheap to clone; clones share connections and the memory of which node answered last.
///
/// Every call goes first to the node that last answered. When a node cannot be reached
/// (connect error, transport failure, `UNAVAILABLE`, a timeout) the call moves on to the next
/// endpoint; when a node refuses with `UNAVAILABLE` and a reason such as `NOT_LEADER` or
/// `SHARD_UNAVAILABLE` the call pauses (growing backoff) and tries again. No new attempt
/// starts after the retry budget (default 15 s). Any other error is returned at once.
///
/// An endpoint that gave no answer — the attempt timed out, the connect failed, the
/// connection broke — is tried only after every other endpoint for a while
/// ([`ClientConfig::avoid_silent_for`], 30 s), whatever the routing table says; then one call
/// probes it. A frozen node (a stalled VM, a stopped process) still accepts connections, so
/// without this each call routed to it would wait out the request timeout.
/// [`Client::endpoint_states`] shows which endpoints are avoided.
///
/// Retries are safe for every call except, after an ambiguous failure (a timeout or a broken
/// connection mid-call), [`Client::recall`], [`Client::add_node`] and [`Client::remove_node`]:
/// the first attempt may have taken effect, and the retry then reports the resulting state
/// (e.g. the message is already recalled). Sends always carry a request id, so a retried send
/// takes effect once.
#[derive(Clone)]
pub struct Client {
    nodes: Arc<[Arc<NodeEndpoint>]>,
    /// Index into `nodes` of the node that answered last.
    preferred: Arc<AtomicUsize>,
    authorization: MetadataValue<Ascii>,
    act_as: Option<(String, MetadataValue<Ascii>)>,
    /// The user of a user token (read, not verified, from its payload), for routing.
    token_user: Option<String>,
    /// Which endpoint leads which shard (see [`crate::routes`]); `None`: no routing.
    routes: Option<Arc<Routes>>,
    timing: Timing,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    request_timeout: Duration,
    retry_budget: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    avoid_silent_for: Duration,
}

impl Client {
    /// A client of the given endpoints (`host:port` or `http://host:port`) with the default
    /// timeouts. Connects lazily: no node is contacted until the first call.
    pub fn new<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        token: impl Into<String>,
    ) -> Result<Client, ClientError> {
        Client::with_config(ClientConfig::new(endpoints, token))
    }

    /// A client from `MERIDIAN_ENDPOINT` and the token of the given kind
    /// (`MERIDIAN_TOKEN` or `MERIDIAN_ADMIN_TOKEN`).
    pub fn from_env(kind: TokenKind) -> Result<Client, ClientError> {
        Client::with_config(ClientConfig::from_env(kind)?)
    }

    /// A client from a full configuration.
    pub fn with_config(config: ClientConfig) -> Result<Client, ClientError> {
        let uris = config.validate()?;
        let tls =
            config.tls_ca_pem.as_ref().map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
        let nodes = uris
            .into_iter()
            .map(|uri| NodeEndpoint::new(uri, config.connect_timeout, tls.as_ref()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = ascii_metadata(&format!("Bearer {}", config.token), "the token")?;
        let act_as = match config.act_as {
            Some(user) => Some(act_as_metadata(user)?),
            None => None,
        };
        Ok(Client {
            nodes: nodes.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            authorization,
            act_as,
            token_user: token_user(&config.token),
            routes: Some(Arc::new(Routes::default())),
            timing: Timing {
                request_timeout: config.request_timeout,
                retry_budget: config.retry_budget,
                initial_backoff: config.initial_backoff,
                max_backoff: config.max_backoff,
                avoid_silent_for: config.avoid_silent_for,
            },
        })
    }

    /// The same client acting as `user` (`x-meridian-as`; needs an admin token).
    pub fn with_act_as(&self, user: impl Into<String>) -> Result<Client, ClientError> {
        Ok(Client { act_as: Some(act_as_metadata(user.into())?), ..self.clone() })
    }

    /// The same client calling only the `index`-th endpoint (in the order given), with no
    /// failover. Reads with [`ReadConsistency::Local`] through it see that node's replica.
    pub fn with_endpoint_index(&self, index: usize) -> Result<Client, ClientError> {
        let node = self.nodes.get(index).ok_or_else(|| ClientError::InvalidConfig {
            detail: format!("endpoint index {index} is out of range: the client has {} endpoints", self.nodes.len()),
        })?;
        Ok(Client {
            nodes: Arc::new([Arc::clone(node)]),
            preferred: Arc::new(AtomicUsize::new(0)),
            routes: None,
            ..self.clone()
        })
    }

    /// The same client with another retry budget (zero: a single attempt).
    pub fn with_retry_budget(&self, budget: Duration) -> Client {
        let mut client = self.clone();
        client.timing.retry_budget = budget;
        client
    }

    /// The endpoints as URIs, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.uri().to_owned()).collect()
    }

    /// Each endpoint as this client (and its clones) saw it, in order: how many attempts got
    /// no answer from it, and whether calls keep away from it now
    /// ([`ClientConfig::avoid_silent_for`]).
    pub fn endpoint_states(&self) -> Vec<EndpointState> {
        let now = Instant::now();
        self.nodes
            .iter()
            .map(|n| EndpointState { uri: n.uri().to_owned(), silences: n.silences(), avoided: n.avoided(now) })
            .collect()
    }

    /// The endpoint a call tries next, from `index` on in order: the first that is not
    /// avoided (or whose hold has ended, for one probing call); `index` itself when every
    /// endpoint is avoided, so that an avoided endpoint is tried last, never skipped for good.
    fn in_turn(&self, index: usize) -> usize {
        let count = self.nodes.len();
        if count == 1 {
            return index;
        }
        let now = Instant::now();
        let probe = self.timing.request_timeout + self.timing.avoid_silent_for;
        (0..count).map(|k| (index + k) % count).find(|&i| self.nodes[i].take_turn(now, probe)).unwrap_or(index)
    }

    /// The user an admin token acts as, if any.
    pub fn act_as(&self) -> Option<&str> {
        self.act_as.as_ref().map(|(user, _)| user.as_str())
    }

    // ------------------------------------------------------------------------------ chat

    /// Sends a text message to `to`. See [`Client::send`].
    pub async fn send_text(
        &self,
        to: &str,
        text: &str,
        request_id: Option<String>,
    ) -> Result<SendMessageResponse, ClientError> {
        let element = MessageElement { kind: Some(Kind::Text(TextElement { text: text.to_owned() })) };
        self.send(to, vec![element], request_id).await
    }

    /// Sends a one-to-one message. Without a request id (or with an empty one) the client
    /// makes one up, so that its own retries take effect once.
    pub async fn send(
        &self,
        to: &str,
        elements: Vec<MessageElement>,
        request_id: Option<String>,
    ) -> Result<SendMessageResponse, ClientError> {
        let request = SendMessageRequest {
            to: to.to_owned(),
            elements,
            request_id: request_id.filter(|id| !id.is_empty()).unwrap_or_else(new_request_id),
            ..Default::default()
        };
        let route = self.c2c_route(&request.to);
        self.call_at(route, "SendMessage", request, |channel, request| async move {
            ChatClient::new(channel).send_message(request).await
        })
        .await
    }

    /// One page of the conversation with `peer`. `start_seq` 0 is the natural start for the
    /// direction; `limit` 0 is the server's default page size.
    pub async fn history(
        &self,
        peer: &str,
        start_seq: u64,
        limit: u32,
        direction: Direction,
        consistency: ReadConsistency,
    ) -> Result<GetHistoryResponse, ClientError> {
        let request = GetHistoryRequest {
            peer: peer.to_owned(),
            start_seq,
            limit,
            direction: direction.into(),
            consistency: consistency.into(),
            ..Default::default()
        };
        let route = self.c2c_route(&request.peer);
        self.call_at(route, "GetHistory", request, |channel, request| async move {
            ChatClient::new(channel).get_history(request).await
        })
        .await
    }

    /// Every message of the conversation with `peer`, oldest first, read page by page.
    pub async fn history_all(&self, peer: &str, consistency: ReadConsistency) -> Result<Vec<Message>, ClientError> {
        let mut messages = Vec::new();
        let mut start = 1;
        loop {
            let page = self.history(peer, start, MAX_HISTORY_PAGE, Direction::Forward, consistency).await?;
            messages.extend(page.messages);
            // A next seq that does not move forward would loop forever; the page is the end.
            if page.next_seq <= start {
                return Ok(messages);
            }
            start = page.next_seq;
        }
    }

    /// One page of the caller's conversations, newest first. `limit` 0 is the server's
    /// default; `page_token` is empty for the first page.
    pub async fn conversations(
        &self,
        limit: u32,
        page_token: &str,
        consistency: ReadConsistency,
    ) -> Result<ListConversationsResponse, ClientError> {
        let request =
            ListConversationsRequest { limit, page_token: page_token.to_owned(), consistency: consistency.into() };
        let route = self.list_route();
        self.call_at(route, "ListConversations", request, |channel, request| async move {
            ChatClient::new(channel).list_conversations(request).await
        })
        .await
    }

    /// All the caller's conversations, every page joined into one response (the total unread
    /// count is the first page's; the page token is empty).
    pub async fn conversations_all(
        &self,
        consistency: ReadConsistency,
    ) -> Result<ListConversationsResponse, ClientError> {
        let mut all = self.conversations(MAX_CONVERSATION_PAGE, "", consistency).await?;
        let mut token = std::mem::take(&mut all.next_page_token);
        let mut seen = std::collections::HashSet::new();
        // A token seen before would loop forever; the listing is then complete.
        while !token.is_empty() && seen.insert(token.clone()) {
            let mut page = self.conversations(MAX_CONVERSATION_PAGE, &token, consistency).await?;
            all.conversations.append(&mut page.conversations);
            token = page.next_page_token;
        }
        Ok(all)
    }

    /// Moves the caller's read cursor with `peer` up to `seq` (`None`: to the newest message).
    pub async fn mark_read(&self, peer: &str, seq: Option<u64>) -> Result<MarkReadResponse, ClientError> {
        let request = MarkReadRequest { peer: peer.to_owned(), seq: seq.unwrap_or(0), ..Default::default() };
        let route = self.c2c_route(peer);
        self.call_at(route, "MarkRead", request, |channel, request| async move {
            ChatClient::new(channel).mark_read(request).await
        })
        .await
    }

    /// Recalls the caller's own message `seq` in the conversation with `peer`.
    pub async fn recall(&self, peer: &str, seq: u64) -> Result<RecallMessageResponse, ClientError> {
        let request = RecallMessageRequest { peer: peer.to_owned(), seq, ..Default::default() };
        let route = self.c2c_route(peer);
        self.call_at(route, "RecallMessage", request, |channel, request| async move {
            ChatClient::new(channel).recall_message(request).await
        })
        .await
    }

    // ---------------------------------------------------------------------------- groups

    /// Creates a group owned by the caller (`group_id` `None`: the node makes one up);
    /// `kind` is work, public, meeting, community or avchatroom.
    pub async fn create_group(
        &self,
        group_id: Option<&str>,
        kind: &str,
        name: &str,
        members: &[&str],
    ) -> Result<CreateGroupResponse, ClientError> {
        let request = CreateGroupRequest {
            group_id: group_id.unwrap_or_default().to_owned(),
            r#type: kind.to_owned(),
            name: name.to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            hide_history_from_new_members: false,
        };
        self.call("CreateGroup", request, |channel, request| async move {
            ChatClient::new(channel).create_group(request).await
        })
        .await
    }

    /// Adds `users` to a group (or joins it, naming only the caller).
    pub async fn add_group_members(&self, group: &str, users: &[&str]) -> Result<GroupChangeResponse, ClientError> {
        let request = AddGroupMembersRequest {
            group_id: group.to_owned(),
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            hidden: false,
        };
        self.call_at(self.group_route(group), "AddGroupMembers", request, |channel, request| async move {
            ChatClient::new(channel).add_group_members(request).await
        })
        .await
    }

    /// Removes `user` from a group (`None`: the caller leaves).
    pub async fn remove_group_member(
        &self,
        group: &str,
        user: Option<&str>,
    ) -> Result<GroupChangeResponse, ClientError> {
        let request =
            RemoveGroupMemberRequest { group_id: group.to_owned(), user: user.unwrap_or_default().to_owned() };
        self.call_at(self.group_route(group), "RemoveGroupMember", request, |channel, request| async move {
            ChatClient::new(channel).remove_group_member(request).await
        })
        .await
    }

    /// Mutes `user` in a group for `seconds` (0: unmutes).
    pub async fn mute_group_member(
        &self,
        group: &str,
        user: &str,
        seconds: u64,
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = MuteGroupMemberRequest { group_id: group.to_owned(), user: user.to_owned(), seconds };
        self.call_at(self.group_route(group), "MuteGroupMember", request, |channel, request| async move {
            ChatClient::new(channel).mute_group_member(request).await
        })
        .await
    }

    /// Sets a member's role (owner only): `admin` or `member`.
    pub async fn set_group_member_role(
        &self,
        group: &str,
        user: &str,
        role: &str,
    ) -> Result<GroupChangeResponse, ClientError> {
        let request =
            SetGroupMemberRoleRequest { group_id: group.to_owned(), user: user.to_owned(), role: role.to_owned() };
        self.call_at(self.group_route(group), "SetGroupMemberRole", request, |channel, request| async move {
            ChatClient::new(channel).set_group_member_role(request).await
        })
        .await
    }

    /// Hands a group to another member (owner only).
    pub async fn transfer_group(&self, group: &str, new_owner: &str) -> Result<GroupChangeResponse, ClientError> {
        let request = TransferGroupRequest { group_id: group.to_owned(), new_owner: new_owner.to_owned() };
        self.call_at(self.group_route(group), "TransferGroup", request, |channel, request| async move {
            ChatClient::new(channel).transfer_group(request).await
        })
        .await
    }

    /// Dismisses a group (its owner).
    pub async fn dismiss_group(&self, group: &str) -> Result<GroupChangeResponse, ClientError> {
        let request = DismissGroupRequest { group_id: group.to_owned() };
        self.call_at(self.group_route(group), "DismissGroup", request, |channel, request| async move {
            ChatClient::new(channel).dismiss_group(request).await
        })
        .await
    }

    /// A group's profile and one page of its members, after `after`.
    pub async fn get_group(&self, group: &str, after: &str, limit: u32) -> Result<GetGroupResponse, ClientError> {
        let request = GetGroupRequest { group_id: group.to_owned(), after: after.to_owned(), limit };
        self.call_at(self.group_route(group), "GetGroup", request, |channel, request| async move {
            ChatClient::new(channel).get_group(request).await
        })
        .await
    }

    /// Sets group profile fields (GRP-03): name, introduction, notification, face_url,
    /// join_option, custom.KEY; an empty value removes a field.
    pub async fn set_group_profile(
        &self,
        group: &str,
        fields: &[(&str, &str)],
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = SetGroupProfileRequest {
            group_id: group.to_owned(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        self.call_at(self.group_route(group), "SetGroupProfile", request, |channel, request| async move {
            ChatClient::new(channel).set_group_profile(request).await
        })
        .await
    }

    /// Sets member fields of `user` (empty: the caller): name_card, recv_opt, custom.KEY.
    pub async fn set_group_member_info(
        &self,
        group: &str,
        user: &str,
        fields: &[(&str, &str)],
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = SetGroupMemberInfoRequest {
            group_id: group.to_owned(),
            user: user.to_owned(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        self.call_at(self.group_route(group), "SetGroupMemberInfo", request, |channel, request| async move {
            ChatClient::new(channel).set_group_member_info(request).await
        })
        .await
    }

    /// Applies to join a group: a member at once when it is free to join, else pending.
    pub async fn apply_to_join_group(
        &self,
        group: &str,
        message: &str,
    ) -> Result<ApplyToJoinGroupResponse, ClientError> {
        let request = ApplyToJoinGroupRequest { group_id: group.to_owned(), message: message.to_owned() };
        self.call_at(self.group_route(group), "ApplyToJoinGroup", request, |channel, request| async move {
            ChatClient::new(channel).apply_to_join_group(request).await
        })
        .await
    }

    /// Approves or rejects `user`'s application (owner or admin).
    pub async fn respond_join_request(
        &self,
        group: &str,
        user: &str,
        approve: bool,
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = RespondJoinRequestRequest { group_id: group.to_owned(), user: user.to_owned(), approve };
        self.call_at(self.group_route(group), "RespondJoinRequest", request, |channel, request| async move {
            ChatClient::new(channel).respond_join_request(request).await
        })
        .await
    }

    /// The applications waiting to join a group (owner or admin).
    pub async fn list_join_requests(&self, group: &str) -> Result<ListJoinRequestsResponse, ClientError> {
        let request = ListJoinRequestsRequest { group_id: group.to_owned() };
        self.call_at(self.group_route(group), "ListJoinRequests", request, |channel, request| async move {
            ChatClient::new(channel).list_join_requests(request).await
        })
        .await
    }

    /// Mutes (or unmutes) everyone but the owner and admins.
    pub async fn mute_all_group(&self, group: &str, muted: bool) -> Result<GroupChangeResponse, ClientError> {
        let request = MuteAllGroupRequest { group_id: group.to_owned(), muted };
        self.call_at(self.group_route(group), "MuteAllGroup", request, |channel, request| async move {
            ChatClient::new(channel).mute_all_group(request).await
        })
        .await
    }

    /// Bans `user` from a group for `seconds` (0 lifts the ban).
    pub async fn ban_group_member(
        &self,
        group: &str,
        user: &str,
        seconds: u64,
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = BanGroupMemberRequest { group_id: group.to_owned(), user: user.to_owned(), seconds };
        self.call_at(self.group_route(group), "BanGroupMember", request, |channel, request| async move {
            ChatClient::new(channel).ban_group_member(request).await
        })
        .await
    }

    /// Likes a group `count` times (GRP-07); the answer is the group's total.
    pub async fn like_group(
        &self,
        group: &str,
        count: u64,
    ) -> Result<meridian_proto::api::LikeGroupResponse, ClientError> {
        let request = meridian_proto::api::LikeGroupRequest { group_id: group.to_owned(), count };
        self.call_at(self.group_route(group), "LikeGroup", request, |channel, request| async move {
            ChatClient::new(channel).like_group(request).await
        })
        .await
    }

    /// The groups the caller is a member of.
    pub async fn list_joined_groups(&self) -> Result<ListJoinedGroupsResponse, ClientError> {
        self.call_at(self.list_route(), "ListJoinedGroups", ListJoinedGroupsRequest {}, |channel, request| async move {
            ChatClient::new(channel).list_joined_groups(request).await
        })
        .await
    }

    /// Who of a small group has read the message at `seq` (MSG-06).
    pub async fn get_read_receipts(&self, group: &str, seq: u64) -> Result<GetReadReceiptsResponse, ClientError> {
        let request = GetReadReceiptsRequest { group_id: group.to_owned(), seq };
        self.call_at(self.group_route(group), "GetReadReceipts", request, |channel, request| async move {
            ChatClient::new(channel).get_read_receipts(request).await
        })
        .await
    }

    /// Changes the caller's settings for a row of their list (CONV-03): `request` names the
    /// stream (`peer` or `group_id`) and the settings to change (absent ones stay).
    pub async fn set_conversation_prefs(
        &self,
        request: SetConversationPrefsRequest,
    ) -> Result<ConversationPrefsResponse, ClientError> {
        self.call_at(self.list_route(), "SetConversationPrefs", request, |channel, request| async move {
            ChatClient::new(channel).set_conversation_prefs(request).await
        })
        .await
    }

    /// Deletes a row from the caller's list until a newer message arrives.
    pub async fn delete_conversation(&self, stream: &Stream) -> Result<ConversationPrefsResponse, ClientError> {
        let (peer, group_id) = stream.parts()?;
        let request = DeleteConversationRequest { peer, group_id };
        self.call_at(self.list_route(), "DeleteConversation", request, |channel, request| async move {
            ChatClient::new(channel).delete_conversation(request).await
        })
        .await
    }

    /// Clears a stream's history from the caller's own view (MSG-09).
    pub async fn clear_history(&self, stream: &Stream) -> Result<ClearHistoryResponse, ClientError> {
        let (peer, group_id) = stream.parts()?;
        let request = ClearHistoryRequest { peer, group_id };
        self.call("ClearHistory", request, |channel, request| async move {
            ChatClient::new(channel).clear_history(request).await
        })
        .await
    }

    /// Deletes messages (by seq) from the caller's own view.
    pub async fn delete_messages(&self, stream: &Stream, seqs: &[u64]) -> Result<ClearHistoryResponse, ClientError> {
        let (peer, group_id) = stream.parts()?;
        let request = DeleteMessagesRequest { peer, group_id, seqs: seqs.to_vec() };
        self.call("DeleteMessages", request, |channel, request| async move {
            ChatClient::new(channel).delete_messages(request).await
        })
        .await
    }

    /// A group's profile and every member, page by page.
    pub async fn group_all_members(&self, group: &str) -> Result<GetGroupResponse, ClientError> {
        let mut all = self.get_group(group, "", 1000).await?;
        let mut after = std::mem::take(&mut all.next_after);
        while !after.is_empty() {
            let mut page = self.get_group(group, &after, 1000).await?;
            all.members.append(&mut page.members);
            if page.next_after == after {
                break;
            }
            after = page.next_after;
        }
        Ok(all)
    }

    /// Creates a group as [`Client::create_group`] does, from a full request (e.g. with
    /// `hide_history_from_new_members`).
    pub async fn create_group_with(&self, request: CreateGroupRequest) -> Result<CreateGroupResponse, ClientError> {
        self.call("CreateGroup", request, |channel, request| async move {
            ChatClient::new(channel).create_group(request).await
        })
        .await
    }

    /// Adds members who receive messages but are listed to the owner and admins only.
    pub async fn add_hidden_group_members(
        &self,
        group: &str,
        users: &[&str],
    ) -> Result<GroupChangeResponse, ClientError> {
        let request = AddGroupMembersRequest {
            group_id: group.to_owned(),
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            hidden: true,
        };
        self.call_at(self.group_route(group), "AddGroupMembers", request, |channel, request| async move {
            ChatClient::new(channel).add_group_members(request).await
        })
        .await
    }

    /// Sends a text message to a group mentioning `mentions` (and everyone with `at_all`).
    pub async fn send_group_text_mentioning(
        &self,
        group: &str,
        text: &str,
        mentions: &[&str],
        at_all: bool,
    ) -> Result<SendMessageResponse, ClientError> {
        let request = SendMessageRequest {
            mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
            at_all,
            ..group_text_request(group, text, None)
        };
        self.send_group(request).await
    }

    /// Recalls message `seq` of a group's stream (the sender within the window; the owner or
    /// an admin at any time).
    pub async fn recall_group_message(&self, group: &str, seq: u64) -> Result<RecallMessageResponse, ClientError> {
        let request = RecallMessageRequest { group_id: group.to_owned(), seq, ..Default::default() };
        self.call_at(self.group_route(group), "RecallMessage", request, |channel, request| async move {
            ChatClient::new(channel).recall_message(request).await
        })
        .await
    }

    /// Blocks (`true`) or unblocks `user` for the caller (REL-04).
    pub async fn set_blocked(&self, user: &str, blocked: bool) -> Result<SetBlockedResponse, ClientError> {
        let request = SetBlockedRequest { user: user.to_owned(), blocked };
        self.call_at(self.list_route(), "SetBlocked", request, |channel, request| async move {
            ChatClient::new(channel).set_blocked(request).await
        })
        .await
    }

    /// Sets (or, with an empty value, removes) fields of the caller's profile; the answer is
    /// the whole profile after the update.
    pub async fn set_profile(&self, fields: &[(&str, &str)]) -> Result<GetProfileResponse, ClientError> {
        let request =
            SetProfileRequest { fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() };
        self.call_at(self.list_route(), "SetProfile", request, |channel, request| async move {
            ChatClient::new(channel).set_profile(request).await
        })
        .await
    }

    /// Deletes the caller's own account (REL-01); `deleted` is false when it was deleted
    /// already. Calls about the account get `USER_DELETED` from then on.
    pub async fn delete_account(&self) -> Result<DeleteUserResponse, ClientError> {
        self.call_at(self.list_route(), "DeleteAccount", DeleteAccountRequest {}, |channel, request| async move {
            ChatClient::new(channel).delete_account(request).await
        })
        .await
    }

    /// `user`'s profile: the fields named, or all when none are.
    pub async fn get_profile(&self, user: &str, fields: &[&str]) -> Result<GetProfileResponse, ClientError> {
        let request =
            GetProfileRequest { user: user.to_owned(), fields: fields.iter().map(|f| (*f).to_owned()).collect() };
        self.call("GetProfile", request, |channel, request| async move {
            ChatClient::new(channel).get_profile(request).await
        })
        .await
    }

    /// Asks `user` to be the caller's friend (REL-03). The answer's state is `added` or
    /// `pending` (their policy asks them to confirm); `FRIEND_ADD_DENIED` when they take none.
    /// `remark` is the caller's note for them on the caller's own list.
    pub async fn add_friend(&self, user: &str, message: &str, remark: &str) -> Result<FriendResponse, ClientError> {
        let request =
            AddFriendRequest { user: user.to_owned(), message: message.to_owned(), remark: remark.to_owned() };
        self.call(
            "AddFriend",
            request,
            |channel, request| async move { ChatClient::new(channel).add_friend(request).await },
        )
        .await
    }

    /// Accepts or rejects the request of `user` waiting for the caller.
    pub async fn respond_friend_request(
        &self,
        user: &str,
        accept: bool,
        remark: &str,
    ) -> Result<FriendResponse, ClientError> {
        let request = RespondFriendRequestRequest { user: user.to_owned(), accept, remark: remark.to_owned() };
        self.call_at(self.list_route(), "RespondFriendRequest", request, |channel, request| async move {
            ChatClient::new(channel).respond_friend_request(request).await
        })
        .await
    }

    /// Takes `user` off the caller's friend list; `both`: the caller off theirs too.
    pub async fn delete_friend(&self, user: &str, both: bool) -> Result<FriendResponse, ClientError> {
        let request = DeleteFriendRequest { user: user.to_owned(), both };
        self.call_at(self.list_route(), "DeleteFriend", request, |channel, request| async move {
            ChatClient::new(channel).delete_friend(request).await
        })
        .await
    }

    /// Sets the caller's remark for a friend.
    pub async fn set_friend_remark(&self, user: &str, remark: &str) -> Result<FriendResponse, ClientError> {
        let request = SetFriendRemarkRequest { user: user.to_owned(), remark: remark.to_owned() };
        self.call_at(self.list_route(), "SetFriendRemark", request, |channel, request| async move {
            ChatClient::new(channel).set_friend_remark(request).await
        })
        .await
    }

    /// The caller's friend list.
    pub async fn list_friends(&self) -> Result<ListFriendsResponse, ClientError> {
        self.call_at(self.list_route(), "ListFriends", ListFriendsRequest {}, |channel, request| async move {
            ChatClient::new(channel).list_friends(request).await
        })
        .await
    }

    /// The friend requests waiting for the caller's answer.
    pub async fn list_friend_requests(&self) -> Result<ListFriendRequestsResponse, ClientError> {
        let request = ListFriendRequestsRequest {};
        self.call_at(self.list_route(), "ListFriendRequests", request, |channel, request| async move {
            ChatClient::new(channel).list_friend_requests(request).await
        })
        .await
    }

    /// The caller's relation with each of `users`: none, mine, theirs or both.
    pub async fn check_friends(&self, users: &[&str]) -> Result<CheckFriendsResponse, ClientError> {
        let request = CheckFriendsRequest { users: users.iter().map(|u| (*u).to_owned()).collect() };
        self.call_at(self.list_route(), "CheckFriends", request, |channel, request| async move {
            ChatClient::new(channel).check_friends(request).await
        })
        .await
    }

    /// The caller's blocklist.
    pub async fn list_blocked(&self) -> Result<ListBlockedResponse, ClientError> {
        self.call_at(self.list_route(), "ListBlocked", ListBlockedRequest {}, |channel, request| async move {
            ChatClient::new(channel).list_blocked(request).await
        })
        .await
    }

    /// Sends a text message to a group.
    pub async fn send_group_text(
        &self,
        group: &str,
        text: &str,
        request_id: Option<String>,
    ) -> Result<SendMessageResponse, ClientError> {
        self.send_group(group_text_request(group, text, request_id)).await
    }

    async fn send_group(&self, request: SendMessageRequest) -> Result<SendMessageResponse, ClientError> {
        let route = self.group_route(&request.group_id);
        self.call_at(route, "SendMessage", request, |channel, request| async move {
            ChatClient::new(channel).send_message(request).await
        })
        .await
    }

    /// One page of a one-to-one conversation or of a group's stream.
    pub async fn stream_history(
        &self,
        stream: &Stream,
        start_seq: u64,
        limit: u32,
        direction: Direction,
        consistency: ReadConsistency,
    ) -> Result<GetHistoryResponse, ClientError> {
        let (group, topic) = match stream {
            Stream::Peer(peer) => return self.history(peer, start_seq, limit, direction, consistency).await,
            Stream::Group(group) => (group, String::new()),
            Stream::Topic(group, topic) => (group, topic.clone()),
        };
        let request = GetHistoryRequest {
            group_id: group.clone(),
            topic,
            start_seq,
            limit,
            direction: direction.into(),
            consistency: consistency.into(),
            ..Default::default()
        };
        self.call_at(self.group_route(group), "GetHistory", request, |channel, request| async move {
            ChatClient::new(channel).get_history(request).await
        })
        .await
    }

    /// Every message of a one-to-one conversation or a group's stream, oldest first.
    pub async fn stream_history_all(
        &self,
        stream: &Stream,
        consistency: ReadConsistency,
    ) -> Result<Vec<Message>, ClientError> {
        let mut messages = Vec::new();
        let mut start = 1;
        loop {
            let page = self.stream_history(stream, start, MAX_HISTORY_PAGE, Direction::Forward, consistency).await?;
            messages.extend(page.messages);
            if page.next_seq <= start {
                return Ok(messages);
            }
            start = page.next_seq;
        }
    }

    /// Opens a topic in a Community (owner or admin).
    pub async fn create_topic(&self, group: &str, topic: &str, name: &str) -> Result<GroupChangeResponse, ClientError> {
        let request = meridian_proto::api::CreateTopicRequest {
            group_id: group.to_owned(),
            topic: topic.to_owned(),
            name: name.to_owned(),
        };
        self.call_at(self.group_route(group), "CreateTopic", request, |channel, request| async move {
            ChatClient::new(channel).create_topic(request).await
        })
        .await
    }

    /// A Community's topics with the caller's unread in each.
    pub async fn list_topics(&self, group: &str) -> Result<meridian_proto::api::ListTopicsResponse, ClientError> {
        let request = meridian_proto::api::ListTopicsRequest { group_id: group.to_owned() };
        self.call_at(self.group_route(group), "ListTopics", request, |channel, request| async move {
            ChatClient::new(channel).list_topics(request).await
        })
        .await
    }

    /// Sends a text message to a topic of a Community.
    pub async fn send_topic_text(
        &self,
        group: &str,
        topic: &str,
        text: &str,
        request_id: Option<String>,
    ) -> Result<SendMessageResponse, ClientError> {
        let mut request = group_text_request(group, text, request_id);
        request.topic = topic.to_owned();
        self.send_group(request).await
    }

    /// Moves the caller's read cursor in a topic up to `seq` (`None`: to the end).
    pub async fn mark_topic_read(
        &self,
        group: &str,
        topic: &str,
        seq: Option<u64>,
    ) -> Result<MarkReadResponse, ClientError> {
        let request = MarkReadRequest {
            group_id: group.to_owned(),
            topic: topic.to_owned(),
            seq: seq.unwrap_or(0),
            ..Default::default()
        };
        self.call_at(self.group_route(group), "MarkRead", request, |channel, request| async move {
            ChatClient::new(channel).mark_read(request).await
        })
        .await
    }

    /// Moves the caller's read cursor in a group's stream up to `seq` (`None`: to the end).
    pub async fn mark_group_read(&self, group: &str, seq: Option<u64>) -> Result<MarkReadResponse, ClientError> {
        let request = MarkReadRequest { group_id: group.to_owned(), seq: seq.unwrap_or(0), ..Default::default() };
        self.call_at(self.group_route(group), "MarkRead", request, |channel, request| async move {
            ChatClient::new(channel).mark_read(request).await
        })
        .await
    }

    /// Where to start a call about a group: its home region once an answer named it.
    fn group_route(&self, group: &str) -> Route {
        let key = format!("grp:{group}");
        let index = self.routes.as_ref().and_then(|r| r.place(&key, None));
        Route { index, key: Some(key) }
    }

    // ----------------------------------------------------------------------------- admin

    /// Creates (imports) an account; an existing one is left as it is (`created` false).
    /// `home_region` `None` means the region that receives the request.
    pub async fn create_user(&self, user: &str, home_region: Option<&str>) -> Result<CreateUserResponse, ClientError> {
        let request = CreateUserRequest {
            user_id: user.to_owned(),
            home_region: home_region.unwrap_or_default().to_owned(),
            nickname: String::new(),
        };
        self.call("CreateUser", request, |channel, request| async move {
            AdminClient::new(channel).create_user(request).await
        })
        .await
    }

    /// Deletes `user`'s account (admin; REL-01): see [`Client::delete_account`].
    pub async fn delete_user(&self, user: &str) -> Result<DeleteUserResponse, ClientError> {
        let request = DeleteUserRequest { user_id: user.to_owned() };
        self.call("DeleteUser", request, |channel, request| async move {
            AdminClient::new(channel).delete_user(request).await
        })
        .await
    }

    /// Mints a token for `user`; `ttl` `None` means the server's default (180 days).
    pub async fn issue_token(&self, user: &str, ttl: Option<Duration>) -> Result<IssueUserTokenResponse, ClientError> {
        let request =
            IssueUserTokenRequest { user_id: user.to_owned(), ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)) };
        self.call("IssueUserToken", request, |channel, request| async move {
            AdminClient::new(channel).issue_user_token(request).await
        })
        .await
    }

    /// Raft state of every shard as the answering node sees it; `include_hash` also hashes
    /// each shard's state (reads all of it).
    pub async fn cluster_status(&self, include_hash: bool) -> Result<ClusterStatusResponse, ClientError> {
        let request = ClusterStatusRequest { include_state_hash: include_hash };
        self.call("ClusterStatus", request, |channel, request| async move {
            AdminClient::new(channel).cluster_status(request).await
        })
        .await
    }

    /// Adds node `id` (client address `addr`, peer address `peer_addr`) to every shard;
    /// promoted to voter unless `learner_only`.
    pub async fn add_node(
        &self,
        id: u64,
        addr: &str,
        peer_addr: &str,
        learner_only: bool,
    ) -> Result<AddNodeResponse, ClientError> {
        let request =
            AddNodeRequest { node_id: id, addr: addr.to_owned(), peer_addr: peer_addr.to_owned(), learner_only };
        self.call(
            "AddNode",
            request,
            |channel, request| async move { AdminClient::new(channel).add_node(request).await },
        )
        .await
    }

    /// One page of `shard`'s event log from the offset in `request` on (admin).
    pub async fn read_events(&self, request: ReadEventsRequest) -> Result<ReadEventsResponse, ClientError> {
        self.call("ReadEvents", request, |channel, request| async move {
            AdminClient::new(channel).read_events(request).await
        })
        .await
    }

    /// The change stream (DLV-05, admin): every shard's events from the offsets in `from` on
    /// (a shard not named: from its start), then, with `follow`, each event as it is
    /// applied. Resume from the `next` offsets of the last events handled.
    pub async fn changes(
        &self,
        from: Vec<crate::api::ShardOffset>,
        follow: bool,
    ) -> Result<tonic::Streaming<crate::api::ChangeEvent>, ClientError> {
        let count = self.nodes.len();
        let mut index = self.in_turn(self.preferred.load(Ordering::Relaxed) % count);
        let mut last = None;
        for _ in 0..count {
            let node = &self.nodes[index];
            let request = crate::api::ChangesRequest { from: from.clone(), follow };
            let mut open = |channel, request| async move { AdminClient::new(channel).changes(request).await };
            match self.attempt_on(node, request, &mut open, false).await {
                Ok((stream, _)) => return Ok(stream),
                Err(err) if err.is_unreachable() || err.is_node_fault() => {
                    node.forget().await;
                    last = Some(err);
                    index = self.in_turn((index + 1) % count);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or(ClientError::InvalidConfig { detail: "no endpoint".into() }))
    }

    /// Every event of `shard`'s log from `from_index` on, page by page.
    pub async fn read_all_events(&self, shard: u32, from_index: u64) -> Result<Vec<LoggedEvent>, ClientError> {
        let mut request = ReadEventsRequest { shard, from_index, limit: 1000, ..Default::default() };
        let mut all = Vec::new();
        loop {
            let page = self.read_events(request).await?;
            if page.events.is_empty() {
                return Ok(all);
            }
            all.extend(page.events);
            (request.from_index, request.from_command, request.from_event) =
                (page.next_index, page.next_command, page.next_event);
        }
    }

    /// The archive as the answering node sees it, verified or collected as `action` says
    /// (admin).
    pub async fn archive(
        &self,
        action: meridian_proto::api::ArchiveAction,
        gc_grace_seconds: u64,
    ) -> Result<meridian_proto::api::ArchiveResponse, ClientError> {
        let request = meridian_proto::api::ArchiveRequest { action: action as i32, gc_grace_seconds };
        self.call(
            "Archive",
            request,
            |channel, request| async move { AdminClient::new(channel).archive(request).await },
        )
        .await
    }

    /// One disaster-recovery step on the answering node (admin; see [`crate::dr`]).
    pub async fn dr(
        &self,
        request: meridian_proto::api::DrRequest,
    ) -> Result<meridian_proto::api::DrResponse, ClientError> {
        self.call("Dr", request, |channel, request| async move { AdminClient::new(channel).dr(request).await }).await
    }

    /// Point-in-time restore of `user`'s conversation with `peer` (admin): the messages sent
    /// after `at_ms` are withdrawn.
    pub async fn restore_conversation(
        &self,
        user: &str,
        peer: &str,
        at_ms: i64,
    ) -> Result<meridian_proto::api::RestoreConversationResponse, ClientError> {
        let request =
            meridian_proto::api::RestoreConversationRequest { user: user.to_owned(), peer: peer.to_owned(), at_ms };
        self.call("RestoreConversation", request, |channel, request| async move {
            AdminClient::new(channel).restore_conversation(request).await
        })
        .await
    }

    /// Rebuilds every shard's projections from its event log on the answering node and
    /// compares them with the live ones (admin).
    pub async fn verify_projections(&self) -> Result<VerifyProjectionsResponse, ClientError> {
        self.call("VerifyProjections", VerifyProjectionsRequest {}, |channel, request| async move {
            AdminClient::new(channel).verify_projections(request).await
        })
        .await
    }

    /// The cluster logic version as the answering node sees it; with `raise_to` > 0, raises
    /// every shard to it once every member supports it (admin).
    pub async fn logic_version(&self, raise_to: u32) -> Result<LogicVersionResponse, ClientError> {
        self.call("LogicVersion", LogicVersionRequest { raise_to }, |channel, request| async move {
            AdminClient::new(channel).logic_version(request).await
        })
        .await
    }

    /// Removes node `id` from every shard's voters and learners.
    pub async fn remove_node(&self, id: u64) -> Result<RemoveNodeResponse, ClientError> {
        let request = RemoveNodeRequest { node_id: id };
        self.call("RemoveNode", request, |channel, request| async move {
            AdminClient::new(channel).remove_node(request).await
        })
        .await
    }

    /// The residency audit: every node of every region, or the answering node alone (admin).
    pub async fn audit_residency(&self, this_node_only: bool) -> Result<AuditResidencyResponse, ClientError> {
        let request = AuditResidencyRequest { this_node_only };
        self.call("AuditResidency", request, |channel, request| async move {
            AdminClient::new(channel).audit_residency(request).await
        })
        .await
    }

    // ---------------------------------------------------------------------------- retries

    /// The region's routing table, fetched from any node (no routing of its own).
    pub async fn routes(&self) -> Result<GetRoutesResponse, ClientError> {
        self.call("GetRoutes", GetRoutesRequest {}, |channel, request| async move {
            ChatClient::new(channel).get_routes(request).await
        })
        .await
    }

    /// The user the calls are made as, when known (act-as, or a user token's user).
    fn me(&self) -> Option<&str> {
        self.act_as.as_ref().map(|(user, _)| user.as_str()).or(self.token_user.as_deref())
    }

    /// Where to start a call about the one-to-one conversation with `peer`: in the
    /// conversation's home region when a response has named it (no forwarding between
    /// regions), at its shard's leader when the routing table knows it. Starts a refresh of
    /// the table in the background when it is missing or old.
    fn c2c_route(&self, peer: &str) -> Route {
        let (Some(routes), Some(me)) = (self.routes.as_ref(), self.me()) else { return Route::default() };
        let (leader, stale) = routes.c2c_leader(me, peer);
        self.refresh_if(stale);
        let key = Routes::c2c_key(me, peer);
        let index = key.as_deref().map_or(leader, |k| routes.place(k, leader));
        Route { index, key }
    }

    /// Where to start a call about the caller's own list: the caller's home region, once known.
    fn list_route(&self) -> Route {
        let (Some(routes), Some(me)) = (self.routes.as_ref(), self.me()) else { return Route::default() };
        let key = format!("@{me}");
        Route { index: routes.place(&key, None), key: Some(key) }
    }

    /// Starts a background refresh of the routing table when `stale`.
    fn refresh_if(&self, stale: bool) {
        let Some(routes) = self.routes.as_ref() else { return };
        if stale && routes.begin_refresh() {
            let (client, routes) = (self.with_retry_budget(Duration::from_secs(2)), routes.clone());
            let uris = self.endpoints();
            tokio::spawn(async move {
                let fetched = client.routes().await;
                if let Err(e) = &fetched {
                    tracing::debug!(error = %e, "routing table refresh failed");
                }
                routes.finish_refresh(fetched.as_ref().ok(), &uris);
            });
        }
    }

    /// The index of the endpoint whose address is `host_port` (a leader hint), if it is one
    /// of this client's.
    fn endpoint_index(&self, host_port: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            let uri = n.uri();
            let authority = uri.split_once("://").map_or(uri, |(_, rest)| rest).trim_end_matches('/');
            authority == host_port
        })
    }

    /// Runs `rpc` with failover and retries (see the type's docs).
    async fn call<Req, Resp, F, Fut>(&self, rpc: &'static str, request: Req, rpc_fn: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.call_at(Route::default(), rpc, request, rpc_fn).await
    }

    /// [`Client::call`] starting at endpoint `route.index` (the home region's, or the shard
    /// leader's) when given, else at the node that answered last; learns the home region
    /// of `route.key` from the answer.
    async fn call_at<Req, Resp, F, Fut>(
        &self,
        route: Route,
        rpc: &'static str,
        request: Req,
        mut rpc_fn: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let started = Instant::now();
        let count = self.nodes.len();
        let mut index = self.in_turn(route.index.unwrap_or_else(|| self.preferred.load(Ordering::Relaxed)) % count);
        let mut backoff = Backoff::new(self.timing.initial_backoff, self.timing.max_backoff);
        let mut unreachable_in_a_row = 0;
        let mut attempt = 1_u32;
        // Whether an earlier attempt may still take effect: then a later refusal proves
        // nothing about the request, and says so.
        let mut uncertain = false;
        loop {
            let node = &self.nodes[index];
            let err = match self.attempt(node, request.clone(), &mut rpc_fn).await {
                Ok((response, home)) => {
                    if route.index.is_none() {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    if let (Some(routes), Some(key), Some(home)) = (&self.routes, &route.key, home) {
                        routes.learn_home(key, &home);
                    }
                    return Ok(response);
                }
                Err(err) => err,
            };
            if let Some(routes) = &self.routes {
                routes.mark_stale();
            }
            // A refusal that names the shard's leader: go there next, at once the first time.
            let hinted = err.leader_hint().and_then(|hint| self.endpoint_index(hint)).filter(|&i| i != index);
            let pause = if let Some(leader) = hinted.filter(|_| err.is_retryable_refusal()) {
                unreachable_in_a_row = 0;
                let pause = if attempt == 1 { Duration::ZERO } else { backoff.next_pause() };
                // `index` moves on by one below.
                index = (leader + count - 1) % count;
                pause
            } else if err.is_retryable_refusal() {
                unreachable_in_a_row = 0;
                backoff.next_pause()
            } else if err.is_node_fault() {
                // This node's replica cannot serve (halted): another node may, at once.
                unreachable_in_a_row += 1;
                if unreachable_in_a_row >= count {
                    return Err(err);
                }
                Duration::ZERO
            } else if err.is_unreachable() {
                node.forget().await;
                unreachable_in_a_row += 1;
                // Every endpoint failed in turn: pause before the next round.
                if unreachable_in_a_row >= count {
                    unreachable_in_a_row = 0;
                    backoff.next_pause()
                } else {
                    Duration::ZERO
                }
            } else if uncertain && !err.may_have_taken_effect() {
                return Err(ClientError::OutcomeUnknown { last: Box::new(err) });
            } else {
                return Err(err);
            };
            uncertain |= err.may_have_taken_effect();
            if started.elapsed() + pause >= self.timing.retry_budget {
                tracing::debug!(rpc, attempt, error = %err, "giving up: retry budget spent");
                return Err(err);
            }
            tracing::debug!(
                rpc,
                endpoint = node.uri(),
                attempt,
                error = %err,
                pause_ms = pause.as_millis(),
                "retrying"
            );
            index = self.in_turn((index + 1) % count);
            attempt += 1;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// One attempt on one node, bounded by the request timeout.
    async fn attempt<Req, Resp, F, Fut>(
        &self,
        node: &NodeEndpoint,
        request: Req,
        rpc_fn: &mut F,
    ) -> Result<(Resp, Option<String>), ClientError>
    where
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.attempt_on(node, request, rpc_fn, true).await
    }

    /// [`Client::attempt`]; `server_deadline` false for a server stream, which lives on past
    /// the request timeout (only opening it is bounded).
    async fn attempt_on<Req, Resp, F, Fut>(
        &self,
        node: &NodeEndpoint,
        request: Req,
        rpc_fn: &mut F,
        server_deadline: bool,
    ) -> Result<(Resp, Option<String>), ClientError>
    where
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let channel = match node.channel().await {
            Ok(channel) => channel,
            Err(err) => {
                node.note_silence(self.timing.avoid_silent_for);
                return Err(err);
            }
        };
        let mut request = tonic::Request::new(request);
        self.authenticate(request.metadata_mut());
        // Tells the server the deadline (grpc-timeout) so that it can stop early.
        if server_deadline {
            request.set_timeout(self.timing.request_timeout);
        }
        let result = match tokio::time::timeout(self.timing.request_timeout, rpc_fn(channel, request)).await {
            Ok(Ok(response)) => {
                let home = response
                    .metadata()
                    .get(meridian_proto::HOME_REGION_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((response.into_inner(), home))
            }
            Ok(Err(status)) => Err(ClientError::from_status(status, node.uri())),
            Err(_elapsed) => {
                Err(ClientError::Timeout { endpoint: node.uri().to_owned(), timeout: self.timing.request_timeout })
            }
        };
        match &result {
            // No answer from the node itself: its connection broke, or it said nothing in time.
            Err(ClientError::Timeout { .. } | ClientError::Transport { .. }) => {
                node.note_silence(self.timing.avoid_silent_for)
            }
            _ => node.note_answer(),
        }
        result
    }

    fn authenticate(&self, metadata: &mut MetadataMap) {
        metadata.insert("authorization", self.authorization.clone());
        if let Some((_, user)) = &self.act_as {
            metadata.insert(ACT_AS_METADATA_KEY, user.clone());
        }
    }
}

impl fmt::Debug for Client {
    // Leaves the token out: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("act_as", &self.act_as())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// One endpoint of a [`Client`], as [`Client::endpoint_states`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    /// The endpoint's URI.
    pub uri: String,
    /// Attempts that got no answer from it (timed out, failed to connect, connection broke).
    pub silences: u64,
    /// Whether calls try it only after every other endpoint now.
    pub avoided: bool,
}

/// A message stream: a one-to-one conversation with a peer, or a group's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    Peer(String),
    Group(String),
    /// A topic of a Community: (group, topic).
    Topic(String, String),
}

impl Stream {
    /// `(peer, group_id)` as list-settings and history-view requests name a stream (one of
    /// them empty); those requests do not take topics.
    pub fn parts(&self) -> Result<(String, String), ClientError> {
        match self {
            Stream::Peer(p) => Ok((p.clone(), String::new())),
            Stream::Group(g) => Ok((String::new(), g.clone())),
            Stream::Topic(..) => Err(ClientError::InvalidConfig {
                detail: "list settings and history views are kept per conversation and group, not per topic".into(),
            }),
        }
    }
}

/// A text message to `group` (a new request id when none is given).
fn group_text_request(group: &str, text: &str, request_id: Option<String>) -> SendMessageRequest {
    SendMessageRequest {
        group_id: group.to_owned(),
        elements: vec![MessageElement { kind: Some(Kind::Text(TextElement { text: text.to_owned() })) }],
        request_id: request_id.filter(|id| !id.is_empty()).unwrap_or_else(new_request_id),
        ..Default::default()
    }
}

/// Where a call starts, and what it is about (to learn its home region from the answer).
#[derive(Debug, Clone, Default)]
struct Route {
    index: Option<usize>,
    key: Option<String>,
}

/// The concatenated text elements of a message (empty for a recalled or media-only one).
pub fn message_text(message: &crate::api::Message) -> String {
    message
        .elements
        .iter()
        .filter_map(|e| match &e.kind {
            Some(crate::api::message_element::Kind::Text(t)) => Some(t.text.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether a message's elements are a group notice (a join, a leave, a kick, a profile
/// change) that the server wrote, rather than something a member sent.
pub fn is_group_notice(elements: &[crate::api::MessageElement]) -> bool {
    elements.iter().any(|e| matches!(e.kind, Some(crate::api::message_element::Kind::GroupTip(_))))
}

/// A fresh random request id (128 bits, hex).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn act_as_metadata(user: String) -> Result<(String, MetadataValue<Ascii>), ClientError> {
    let value = ascii_metadata(&user, "the act-as user id")?;
    Ok((user, value))
}

fn ascii_metadata(value: &str, what: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    let invalid = || ClientError::InvalidConfig { detail: format!("{what} must be printable ASCII") };
    // The header parser also lets bytes above 0x7f through; gRPC metadata is ASCII.
    if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(invalid());
    }
    let mut value: MetadataValue<Ascii> = value.parse().map_err(|_| invalid())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn clients_are_built_without_contacting_any_node() {
        // Nothing listens on port 1: building must still succeed (connections are lazy).
        let client = Client::new(["127.0.0.1:1", "http://localhost:2"], "t").expect("client");
        assert_eq!(client.endpoints(), vec!["http://127.0.0.1:1", "http://localhost:2"]);
        assert_eq!(client.act_as(), None);
    }

    #[test]
    fn with_endpoint_index_pins_one_endpoint() {
        let client = Client::new(["n1:1", "n2:2", "n3:3"], "t").expect("client");
        let second = client.with_endpoint_index(1).expect("in range");
        assert_eq!(second.endpoints(), vec!["http://n2:2"]);
        assert!(matches!(client.with_endpoint_index(3), Err(ClientError::InvalidConfig { .. })));
    }

    #[test]
    fn act_as_is_kept_and_validated() {
        let admin = Client::new(["n1:1"], "admin").expect("client");
        let alice = admin.with_act_as("alice").expect("ascii user");
        assert_eq!(alice.act_as(), Some("alice"));
        assert_eq!(admin.act_as(), None);
        assert!(admin.with_act_as("bad\nuser").is_err());
        assert!(Client::new(["n1:1"], "tok\u{e9}n").is_err());
    }

    #[test]
    fn metadata_carries_bearer_token_and_act_as() {
        let client = Client::new(["n1:1"], "abc.def").and_then(|c| c.with_act_as("bob")).expect("client");
        let mut metadata = MetadataMap::new();
        client.authenticate(&mut metadata);
        assert_eq!(metadata.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer abc.def"));
        assert_eq!(metadata.get(ACT_AS_METADATA_KEY).and_then(|v| v.to_str().ok()), Some("bob"));
    }
}

/// A device's live stream (`Chat/Subscribe`, DLV-01/02) that outlives the node serving it:
/// it keeps the device's sync token up to date from the events it hands out, and when the
/// stream breaks (the node died, the network dropped) it subscribes again, at the next
/// endpoint, with that token. The server then sends only what the token lacks, so every
/// message of a conversation reaches the caller once, in seq order, across reconnects.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    /// Per conversation, the newest seq handed out (what the token encodes).
    known: std::collections::BTreeMap<String, u64>,
    stream: Option<tonic::Streaming<crate::api::SubscribeEvent>>,
    index: usize,
    /// Streams opened so far (1 + reconnects).
    connects: u64,
    /// The live rooms the stream listens to (asked again at every reconnect).
    rooms: Vec<String>,
}

impl Client {
    /// Opens the caller's live stream, resuming from `token` (from [`Subscription::token`]
    /// of an earlier one on this device) when given.
    pub async fn subscribe(&self, token: Option<&str>) -> Result<Subscription, ClientError> {
        self.subscribe_in_rooms(token, &[]).await
    }

    /// Opens the caller's live stream as [`Client::subscribe`] does, also listening to the
    /// live rooms `rooms` (AVChatRoom groups, at most 10): their messages, recalls and like
    /// totals from the room's newest message on, while the stream lasts. A live room keeps no
    /// members; a device is in it while it listens.
    pub async fn subscribe_in_rooms(&self, token: Option<&str>, rooms: &[&str]) -> Result<Subscription, ClientError> {
        let known = match token {
            Some(t) if !t.is_empty() => decode_sync_token(t)?,
            _ => Default::default(),
        };
        let index = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
        let rooms = rooms.iter().map(|r| (*r).to_owned()).collect();
        let mut subscription = Subscription { client: self.clone(), known, stream: None, index, connects: 0, rooms };
        subscription.connect().await?;
        Ok(subscription)
    }
}

impl Client {
    /// An online-only signal (MSG-07) to `to`'s connected devices, e.g. kind `typing`:
    /// never stored. See [`Client::group_signal`] for a group's.
    pub async fn signal(&self, to: &str, kind: &str, payload: &str) -> Result<(), ClientError> {
        self.send_signal(crate::api::SignalRequest { to: to.to_owned(), ..signal_of(kind, payload) }).await
    }

    /// Presence (REL-06): whether each of `users` has a live stream in the region now.
    pub async fn get_presence(&self, users: &[&str]) -> Result<crate::api::GetPresenceResponse, ClientError> {
        let request = crate::api::GetPresenceRequest { users: users.iter().map(|u| (*u).to_owned()).collect() };
        self.call("GetPresence", request, |channel, request| async move {
            ChatClient::new(channel).get_presence(request).await
        })
        .await
    }

    /// An online-only signal to the connected devices of a group's other members.
    pub async fn group_signal(&self, group: &str, kind: &str, payload: &str) -> Result<(), ClientError> {
        self.send_signal(crate::api::SignalRequest { group_id: group.to_owned(), ..signal_of(kind, payload) }).await
    }

    async fn send_signal(&self, request: crate::api::SignalRequest) -> Result<(), ClientError> {
        self.call("Signal", request, |channel, request| async move { ChatClient::new(channel).signal(request).await })
            .await
            .map(|_| ())
    }
}

/// A signal of `kind` with `payload`, to no one yet.
fn signal_of(kind: &str, payload: &str) -> crate::api::SignalRequest {
    crate::api::SignalRequest { kind: kind.to_owned(), payload: payload.to_owned(), ..Default::default() }
}

impl Subscription {
    /// The next event, reconnecting (with the token) as often as it takes within the
    /// client's retry budget per outage.
    pub async fn next(&mut self) -> Result<crate::api::SubscribeEvent, ClientError> {
        loop {
            if self.stream.is_none() {
                self.connect().await?;
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.learn(&event);
                    return Ok(event);
                }
                Ok(None) => {
                    tracing::debug!("subscription ended by the server: resubscribing");
                    self.stream = None;
                }
                Err(status) => {
                    let err = ClientError::from_status(status, self.client.nodes[self.index].uri());
                    if !(err.is_unreachable() || err.is_retryable_refusal() || err.is_node_fault()) {
                        return Err(err);
                    }
                    tracing::debug!(error = %err, "subscription broke: resubscribing");
                    let node = &self.client.nodes[self.index];
                    if matches!(err, ClientError::Transport { .. }) {
                        node.note_silence(self.client.timing.avoid_silent_for);
                    }
                    node.forget().await;
                    self.stream = None;
                    self.index = self.client.in_turn((self.index + 1) % self.client.nodes.len());
                }
            }
        }
    }

    /// The device's sync token as of the last event handed out.
    pub fn token(&self) -> String {
        encode_sync_token(&self.known)
    }

    /// The newest seq handed out of `conversation_id`.
    pub fn seq_of(&self, conversation_id: &str) -> u64 {
        self.known.get(conversation_id).copied().unwrap_or(0)
    }

    /// How many streams were opened (1 + reconnects).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The endpoint the stream is (or was last) open on.
    pub fn endpoint(&self) -> &str {
        self.client.nodes[self.index].uri()
    }

    fn learn(&mut self, event: &crate::api::SubscribeEvent) {
        let seq = match event.r#type.as_str() {
            "message" => event.seq,
            "fetch" => event.fetch_to,
            "caught_up" => {
                if let Ok(server) = decode_sync_token(&event.sync_token) {
                    for (conversation, seq) in server {
                        let entry = self.known.entry(conversation).or_default();
                        *entry = (*entry).max(seq);
                    }
                }
                return;
            }
            _ => return,
        };
        let entry = self.known.entry(event.conversation_id.clone()).or_default();
        *entry = (*entry).max(seq);
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let client = &self.client;
        let started = Instant::now();
        let count = client.nodes.len();
        let mut backoff = Backoff::new(client.timing.initial_backoff, client.timing.max_backoff);
        let mut failed_in_a_row = 0;
        loop {
            let node = &client.nodes[self.index];
            let request =
                crate::api::SubscribeRequest { sync_token: encode_sync_token(&self.known), rooms: self.rooms.clone() };
            let mut open = |channel, request| async move { ChatClient::new(channel).subscribe(request).await };
            let err = match client.attempt_on(node, request, &mut open, false).await {
                Ok((stream, _)) => {
                    self.stream = Some(stream);
                    self.connects += 1;
                    return Ok(());
                }
                Err(err) => err,
            };
            if !(err.is_unreachable() || err.is_retryable_refusal() || err.is_node_fault()) {
                return Err(err);
            }
            node.forget().await;
            self.index = client.in_turn((self.index + 1) % count);
            failed_in_a_row += 1;
            let pause = if failed_in_a_row >= count { backoff.next_pause() } else { Duration::ZERO };
            if failed_in_a_row >= count {
                failed_in_a_row = 0;
            }
            if started.elapsed() + pause >= client.timing.retry_budget {
                return Err(err);
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// Decodes a sync token (URL-safe base64 of [`crate::api::SyncToken`]).
pub fn decode_sync_token(token: &str) -> Result<std::collections::BTreeMap<String, u64>, ClientError> {
    meridian_proto::sync_token::decode(token)
        .map_err(|detail| ClientError::InvalidConfig { detail: format!("the sync token does not decode: {detail}") })
}

/// Encodes per-conversation seqs as a sync token.
pub use meridian_proto::sync_token::encode as encode_sync_token;
