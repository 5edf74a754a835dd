//! The client against scripted in-process gRPC servers on real sockets: failover between
//! endpoints, retries of `NOT_LEADER` refusals with one request id, errors returned as the
//! server gave them, and the bounds on how long a call keeps trying.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

use meridian_client::api::chat_server::{Chat, ChatServer};
use meridian_client::api::{
    GetHistoryRequest, GetHistoryResponse, GetRoutesRequest, GetRoutesResponse, ListConversationsRequest,
    ListConversationsResponse, MarkReadRequest, MarkReadResponse, RecallMessageRequest, RecallMessageResponse,
    SendMessageRequest, SendMessageResponse, ShardRoute,
};
use meridian_client::{Client, ClientConfig, ClientError};

/// What a scripted server does with its next call.
enum Step {
    Fail(Status),
    Stall(Duration),
}

/// A send as the server received it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    request_id: String,
    authorization: Option<String>,
    act_as: Option<String>,
}

/// A chat server that plays its script, then accepts every send.
#[derive(Clone, Default)]
struct ScriptedChat {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The routing table `GetRoutes` answers with; none: `UNIMPLEMENTED`, as an older node.
    routes: Arc<Mutex<Option<GetRoutesResponse>>>,
    /// Set: the server takes calls and never answers them, as a stopped process or a stalled
    /// VM whose kernel still accepts connections.
    frozen: Arc<AtomicBool>,
}

impl ScriptedChat {
    fn with_script(steps: impl IntoIterator<Item = Step>) -> Self {
        let chat = ScriptedChat::default();
        chat.script.lock().expect("script lock").extend(steps);
        chat
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }
}

fn header(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tonic::async_trait]
impl Chat for ScriptedChat {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let seen = Seen {
            request_id: request.get_ref().request_id.clone(),
            authorization: header(request.metadata(), "authorization"),
            act_as: header(request.metadata(), meridian_proto::ACT_AS_METADATA_KEY),
        };
        let calls = {
            let mut all = self.seen.lock().expect("seen lock");
            all.push(seen);
            all.len()
        };
        if self.frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let step = self.script.lock().expect("script lock").pop_front();
        match step {
            Some(Step::Fail(status)) => return Err(status),
            Some(Step::Stall(pause)) => tokio::time::sleep(pause).await,
            None => {}
        }
        Ok(Response::new(SendMessageResponse {
            message_id: format!("m{calls}"),
            seq: 1,
            server_time_ms: 1_700_000_000_000,
            conversation_id: format!("c2c:{}", request.get_ref().to),
            duplicate: false,
        }))
    }

    async fn get_history(&self, _: Request<GetHistoryRequest>) -> Result<Response<GetHistoryResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn recall_message(
        &self,
        _: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_conversations(
        &self,
        _: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn mark_read(&self, _: Request<MarkReadRequest>) -> Result<Response<MarkReadResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_routes(&self, _: Request<GetRoutesRequest>) -> Result<Response<GetRoutesResponse>, Status> {
        if self.frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        match self.routes.lock().expect("routes lock").clone() {
            Some(routes) => Ok(Response::new(routes)),
            None => Err(Status::unimplemented("not scripted")),
        }
    }

    async fn create_group(
        &self,
        _: Request<meridian_client::api::CreateGroupRequest>,
    ) -> Result<Response<meridian_client::api::CreateGroupResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn add_group_members(
        &self,
        _: Request<meridian_client::api::AddGroupMembersRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn remove_group_member(
        &self,
        _: Request<meridian_client::api::RemoveGroupMemberRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn mute_group_member(
        &self,
        _: Request<meridian_client::api::MuteGroupMemberRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn dismiss_group(
        &self,
        _: Request<meridian_client::api::DismissGroupRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_group(
        &self,
        _: Request<meridian_client::api::GetGroupRequest>,
    ) -> Result<Response<meridian_client::api::GetGroupResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_group_member_role(
        &self,
        _: Request<meridian_client::api::SetGroupMemberRoleRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn transfer_group(
        &self,
        _: Request<meridian_client::api::TransferGroupRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_blocked(
        &self,
        _: Request<meridian_client::api::SetBlockedRequest>,
    ) -> Result<Response<meridian_client::api::SetBlockedResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_blocked(
        &self,
        _: Request<meridian_client::api::ListBlockedRequest>,
    ) -> Result<Response<meridian_client::api::ListBlockedResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_group_profile(
        &self,
        _: Request<meridian_client::api::SetGroupProfileRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_group_member_info(
        &self,
        _: Request<meridian_client::api::SetGroupMemberInfoRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn apply_to_join_group(
        &self,
        _: Request<meridian_client::api::ApplyToJoinGroupRequest>,
    ) -> Result<Response<meridian_client::api::ApplyToJoinGroupResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn respond_join_request(
        &self,
        _: Request<meridian_client::api::RespondJoinRequestRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_join_requests(
        &self,
        _: Request<meridian_client::api::ListJoinRequestsRequest>,
    ) -> Result<Response<meridian_client::api::ListJoinRequestsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn mute_all_group(
        &self,
        _: Request<meridian_client::api::MuteAllGroupRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn ban_group_member(
        &self,
        _: Request<meridian_client::api::BanGroupMemberRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_joined_groups(
        &self,
        _: Request<meridian_client::api::ListJoinedGroupsRequest>,
    ) -> Result<Response<meridian_client::api::ListJoinedGroupsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_read_receipts(
        &self,
        _: Request<meridian_client::api::GetReadReceiptsRequest>,
    ) -> Result<Response<meridian_client::api::GetReadReceiptsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_conversation_prefs(
        &self,
        _: Request<meridian_client::api::SetConversationPrefsRequest>,
    ) -> Result<Response<meridian_client::api::ConversationPrefsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_conversation(
        &self,
        _: Request<meridian_client::api::DeleteConversationRequest>,
    ) -> Result<Response<meridian_client::api::ConversationPrefsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn clear_history(
        &self,
        _: Request<meridian_client::api::ClearHistoryRequest>,
    ) -> Result<Response<meridian_client::api::ClearHistoryResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_messages(
        &self,
        _: Request<meridian_client::api::DeleteMessagesRequest>,
    ) -> Result<Response<meridian_client::api::ClearHistoryResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn like_group(
        &self,
        _: Request<meridian_client::api::LikeGroupRequest>,
    ) -> Result<Response<meridian_client::api::LikeGroupResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn create_topic(
        &self,
        _: Request<meridian_client::api::CreateTopicRequest>,
    ) -> Result<Response<meridian_client::api::GroupChangeResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_topics(
        &self,
        _: Request<meridian_client::api::ListTopicsRequest>,
    ) -> Result<Response<meridian_client::api::ListTopicsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn add_friend(
        &self,
        _: Request<meridian_client::api::AddFriendRequest>,
    ) -> Result<Response<meridian_client::api::FriendResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn respond_friend_request(
        &self,
        _: Request<meridian_client::api::RespondFriendRequestRequest>,
    ) -> Result<Response<meridian_client::api::FriendResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_friend(
        &self,
        _: Request<meridian_client::api::DeleteFriendRequest>,
    ) -> Result<Response<meridian_client::api::FriendResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_friend_remark(
        &self,
        _: Request<meridian_client::api::SetFriendRemarkRequest>,
    ) -> Result<Response<meridian_client::api::FriendResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_friends(
        &self,
        _: Request<meridian_client::api::ListFriendsRequest>,
    ) -> Result<Response<meridian_client::api::ListFriendsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_friend_requests(
        &self,
        _: Request<meridian_client::api::ListFriendRequestsRequest>,
    ) -> Result<Response<meridian_client::api::ListFriendRequestsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn check_friends(
        &self,
        _: Request<meridian_client::api::CheckFriendsRequest>,
    ) -> Result<Response<meridian_client::api::CheckFriendsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn set_profile(
        &self,
        _: Request<meridian_client::api::SetProfileRequest>,
    ) -> Result<Response<meridian_client::api::GetProfileResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_profile(
        &self,
        _: Request<meridian_client::api::GetProfileRequest>,
    ) -> Result<Response<meridian_client::api::GetProfileResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_account(
        &self,
        _: Request<meridian_client::api::DeleteAccountRequest>,
    ) -> Result<Response<meridian_client::api::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_presence(
        &self,
        _: Request<meridian_client::api::GetPresenceRequest>,
    ) -> Result<Response<meridian_client::api::GetPresenceResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn signal(
        &self,
        _: Request<meridian_client::api::SignalRequest>,
    ) -> Result<Response<meridian_client::api::SignalResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type SubscribeStream = tokio_stream::wrappers::ReceiverStream<Result<meridian_client::api::SubscribeEvent, Status>>;

    async fn subscribe(
        &self,
        _: Request<meridian_client::api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

/// Serves `chat` on a fresh loopback port.
async fn serve(chat: ScriptedChat) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        Server::builder().add_service(ChatServer::new(chat)).serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A loopback address nobody listens on.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

fn refusal(reason: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static(reason));
    Status::with_metadata(Code::Unavailable, "no leader yet", metadata)
}

fn fast_config(endpoints: &[SocketAddr]) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints.iter().map(|a| a.to_string()), "tok-1");
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_millis(500);
    config.retry_budget = Duration::from_secs(5);
    config.initial_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn unreachable_endpoints_are_skipped_and_the_live_one_remembered() {
    let dead = dead_addr().await;
    let draining = ScriptedChat::with_script([Step::Fail(Status::unavailable("shutting down"))]);
    let live = ScriptedChat::default();
    let draining_addr = serve(draining.clone()).await;
    let live_addr = serve(live.clone()).await;
    let client =
        Client::with_config(fast_config(&[dead, draining_addr, live_addr]).with_act_as("alice")).expect("client");

    let sent = client.send_text("bob", "hello", Some("req-1".into())).await.expect("send fails over to the live node");
    assert_eq!(sent.conversation_id, "c2c:bob");
    // The second call goes straight to the node that answered.
    client.send_text("bob", "again", Some("req-2".into())).await.expect("second send");

    let seen = |request_id: &str| Seen {
        request_id: request_id.into(),
        authorization: Some("Bearer tok-1".into()),
        act_as: Some("alice".into()),
    };
    assert_eq!(draining.seen(), vec![seen("req-1")]);
    assert_eq!(live.seen(), vec![seen("req-1"), seen("req-2")]);
}

#[tokio::test]
async fn not_leader_refusals_are_retried_with_the_same_request_id() {
    let chat = ScriptedChat::with_script([Step::Fail(refusal("NOT_LEADER")), Step::Fail(refusal("SHARD_UNAVAILABLE"))]);
    let addr = serve(chat.clone()).await;
    let client = Client::with_config(fast_config(&[addr])).expect("client");

    // No request id given: the client makes one up and keeps it across its retries.
    client.send_text("bob", "hello", None).await.expect("third attempt succeeds");

    let ids: Vec<String> = chat.seen().into_iter().map(|s| s.request_id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0].len(), 32, "a generated id: {ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "ids changed: {ids:?}");
}

#[tokio::test]
async fn a_rejection_is_returned_at_once_with_its_reason() {
    let mut metadata = MetadataMap::new();
    metadata.insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static("MESSAGE_TOO_LARGE"));
    let chat = ScriptedChat::with_script([Step::Fail(Status::with_metadata(
        Code::InvalidArgument,
        "message is 20000 bytes, the limit is 12288",
        metadata,
    ))]);
    let addr = serve(chat.clone()).await;
    let client = Client::with_config(fast_config(&[addr])).expect("client");

    let err = client.send_text("bob", "big", Some("r".into())).await.expect_err("rejected");

    assert_eq!(err.reason(), Some("MESSAGE_TOO_LARGE"));
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.to_string(), "MESSAGE_TOO_LARGE: message is 20000 bytes, the limit is 12288");
    assert_eq!(chat.seen().len(), 1, "a rejection is not retried");
}

#[tokio::test]
async fn refusals_stop_when_the_retry_budget_is_spent() {
    let chat = ScriptedChat::with_script((0..1000).map(|_| Step::Fail(refusal("NOT_LEADER"))));
    let addr = serve(chat.clone()).await;
    let mut config = fast_config(&[addr]);
    config.retry_budget = Duration::from_millis(300);
    let client = Client::with_config(config).expect("client");

    let started = Instant::now();
    let err = client.send_text("bob", "hello", None).await.expect_err("never a leader");

    assert_eq!(err.reason(), Some("NOT_LEADER"));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(chat.seen().len() >= 2, "retried at least once");
}

#[tokio::test]
async fn a_node_that_does_not_answer_in_time_is_left_for_the_next() {
    let slow = ScriptedChat::with_script([Step::Stall(Duration::from_secs(3))]);
    let fast = ScriptedChat::default();
    let slow_addr = serve(slow.clone()).await;
    let fast_addr = serve(fast.clone()).await;
    let client = Client::with_config(fast_config(&[slow_addr, fast_addr])).expect("client");

    client.send_text("bob", "hello", Some("req-7".into())).await.expect("the second node answers");

    assert_eq!(ids_of(&slow), vec!["req-7"]);
    assert_eq!(ids_of(&fast), vec!["req-7"]);
}

#[tokio::test]
async fn a_pinned_client_calls_only_its_endpoint() {
    let first = ScriptedChat::default();
    let second = ScriptedChat::default();
    let addrs = [serve(first.clone()).await, serve(second.clone()).await];
    let client = Client::with_config(fast_config(&addrs)).expect("client");

    client
        .with_endpoint_index(1)
        .expect("in range")
        .send_text("bob", "hello", Some("pinned".into()))
        .await
        .expect("send");

    assert!(first.seen().is_empty());
    assert_eq!(second.seen().len(), 1);
}

#[tokio::test]
async fn every_endpoint_dead_gives_a_connect_error_within_the_budget() {
    let dead = [dead_addr().await, dead_addr().await];
    let mut config = fast_config(&dead);
    config.retry_budget = Duration::from_millis(200);
    let client = Client::with_config(config).expect("client");

    let started = Instant::now();
    let err = client.send_text("bob", "hello", None).await.expect_err("nobody listens");

    assert!(matches!(err, ClientError::Connect { .. } | ClientError::Transport { .. }), "{err:?}");
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert!(err.to_string().starts_with("UNAVAILABLE: "), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn calls_go_to_the_leader_the_routing_table_names() {
    let follower = ScriptedChat::default();
    let leader = ScriptedChat::default();
    let follower_addr = serve(follower.clone()).await;
    let leader_addr = serve(leader.clone()).await;
    // Every shard led by the second endpoint; only the first one answers GetRoutes.
    let table = GetRoutesResponse {
        shards: 8,
        routes: (0..8).map(|shard| ShardRoute { shard, leader_id: 2, leader_addr: leader_addr.to_string() }).collect(),
        ..Default::default()
    };
    *follower.routes.lock().expect("routes lock") = Some(table);
    let client = Client::with_config(fast_config(&[follower_addr, leader_addr]).with_act_as("alice")).expect("client");

    // The first call has no table yet: it goes to the first endpoint and fetches the table.
    client.send_text("bob", "first", Some("req-0".into())).await.expect("first send");
    assert_eq!(follower.seen().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while leader.seen().is_empty() {
        assert!(Instant::now() < deadline, "no call reached the leader's endpoint");
        client.send_text("bob", "probe", None).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = follower.seen().len();
    for i in 0..10 {
        client.send_text("carol", "routed", Some(format!("req-{i}"))).await.expect("routed send");
    }
    assert_eq!(follower.seen().len(), before, "routed calls went to a follower");
    assert!(leader.seen().len() >= 11, "the leader saw {} calls", leader.seen().len());
}

#[tokio::test]
async fn without_routes_from_the_nodes_calls_still_go_through() {
    // GetRoutes unimplemented (an older node): calls go where they always went.
    let only = ScriptedChat::default();
    let addr = serve(only.clone()).await;
    let client = Client::with_config(fast_config(&[addr]).with_act_as("alice")).expect("client");
    for i in 0..5 {
        client.send_text("bob", "hi", Some(format!("r{i}"))).await.expect("send");
    }
    assert_eq!(only.seen().len(), 5);
}

/// A `NOT_LEADER` refusal that names the leader (`x-meridian-leader`).
fn redirect_to(leader: SocketAddr) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static("NOT_LEADER"));
    metadata.insert(meridian_proto::LEADER_METADATA_KEY, leader.to_string().parse().expect("ascii"));
    Status::with_metadata(Code::Unavailable, "not served through this node in time", metadata)
}

#[tokio::test]
async fn a_leader_hint_sends_the_retry_to_the_leader() {
    let leader = ScriptedChat::default();
    let leader_addr = serve(leader.clone()).await;
    let follower = ScriptedChat::with_script([Step::Fail(redirect_to(leader_addr))]);
    let bystander = ScriptedChat::default();
    let follower_addr = serve(follower.clone()).await;
    let bystander_addr = serve(bystander.clone()).await;
    // The follower first, the node next in line second, the leader last.
    let client = Client::with_config(fast_config(&[follower_addr, bystander_addr, leader_addr]).with_act_as("alice"))
        .expect("client");

    client.send_text("bob", "hello", Some("req-1".into())).await.expect("the leader accepts");

    assert_eq!(follower.seen().len(), 1);
    assert!(bystander.seen().is_empty(), "the retry skipped the hinted leader: {:?}", bystander.seen());
    assert_eq!(leader.seen().into_iter().map(|s| s.request_id).collect::<Vec<_>>(), vec!["req-1".to_owned()]);
}

#[tokio::test]
async fn a_halted_shard_moves_the_call_to_another_node_at_once() {
    let mut metadata = MetadataMap::new();
    metadata.insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static("SHARD_HALTED"));
    let halted = ScriptedChat::with_script([Step::Fail(Status::with_metadata(
        Code::Internal,
        "shard 3 is halted on this node",
        metadata.clone(),
    ))]);
    let healthy = ScriptedChat::default();
    let client =
        Client::with_config(fast_config(&[serve(halted.clone()).await, serve(healthy.clone()).await])).expect("client");
    client.send_text("bob", "hello", Some("req-1".into())).await.expect("the other node serves");
    assert_eq!((halted.seen().len(), healthy.seen().len()), (1, 1));

    // Alone, a halted node's answer is returned as it is, not retried until the budget ends.
    let only = ScriptedChat::with_script(
        (0..100).map(|_| Step::Fail(Status::with_metadata(Code::Internal, "halted", metadata.clone()))),
    );
    let client = Client::with_config(fast_config(&[serve(only.clone()).await])).expect("client");
    let err = client.send_text("bob", "hello", Some("req-2".into())).await.expect_err("halted");
    assert_eq!(err.reason(), Some("SHARD_HALTED"));
    assert_eq!(only.seen().len(), 1);
}

#[tokio::test]
async fn a_refusal_after_an_attempt_that_may_have_applied_is_an_unknown_outcome() {
    // The first node takes the send but does not answer in time; the second refuses the
    // retry. The first attempt may still take effect: the caller must not read the refusal
    // as "nothing happened".
    let slow = ScriptedChat::with_script([Step::Stall(Duration::from_secs(3))]);
    let mut metadata = MetadataMap::new();
    metadata.insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static("NOT_GROUP_MEMBER"));
    let refusing = ScriptedChat::with_script([Step::Fail(Status::with_metadata(
        Code::PermissionDenied,
        "u010 is not a member of group g0",
        metadata,
    ))]);
    let (slow_addr, refusing_addr) = (serve(slow.clone()).await, serve(refusing.clone()).await);
    let client = Client::with_config(fast_config(&[slow_addr, refusing_addr])).expect("client");

    let err = client.send_text("bob", "hello", Some("req-9".into())).await.expect_err("refused");

    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!(err.reason(), Some("NOT_GROUP_MEMBER"), "the last refusal's reason is kept");
    assert_eq!(err.code(), Some(Code::Unknown));
    assert!(err.to_string().starts_with("OUTCOME_UNKNOWN: "), "{err}");
}

/// A table naming `leader` the leader of each of 8 shards.
fn every_shard_led_by(leader: SocketAddr) -> GetRoutesResponse {
    GetRoutesResponse {
        shards: 8,
        routes: (0..8).map(|shard| ShardRoute { shard, leader_id: 2, leader_addr: leader.to_string() }).collect(),
        ..Default::default()
    }
}

/// Sends until a call has reached `chat` (the routing table has been fetched and names it).
async fn until_routed_to(client: &Client, chat: &ScriptedChat) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while chat.seen().is_empty() {
        assert!(Instant::now() < deadline, "no call reached the leader's endpoint");
        client.send_text("bob", "probe", None).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes, both serving a table that names the second the leader of every shard.
async fn led_by_the_second() -> (ScriptedChat, ScriptedChat, SocketAddr, SocketAddr) {
    let other = ScriptedChat::default();
    let leader = ScriptedChat::default();
    let (other_addr, leader_addr) = (serve(other.clone()).await, serve(leader.clone()).await);
    for chat in [&other, &leader] {
        *chat.routes.lock().expect("routes lock") = Some(every_shard_led_by(leader_addr));
    }
    (other, leader, other_addr, leader_addr)
}

fn ids_of(chat: &ScriptedChat) -> Vec<String> {
    chat.seen().into_iter().map(|s| s.request_id).collect()
}

#[tokio::test]
async fn a_frozen_leader_costs_one_timeout_then_is_tried_last() {
    // The routing table (both nodes serve it) names the second endpoint leader of every
    // shard; that node then freezes, and the table goes on naming it.
    let (other, leader, other_addr, leader_addr) = led_by_the_second().await;
    let mut config = fast_config(&[other_addr, leader_addr]).with_act_as("alice");
    config.avoid_silent_for = Duration::from_secs(60);
    let client = Client::with_config(config).expect("client");
    until_routed_to(&client, &leader).await;

    leader.frozen.store(true, Ordering::SeqCst);
    let before = leader.seen().len();
    let other_before = other.seen().len();
    for i in 0..10 {
        client.send_text("carol", "hi", Some(format!("f{i}"))).await.expect("the other node takes it");
    }

    // One attempt timed out on the frozen node; every send after it went straight to the
    // other node, although the table still names the frozen one.
    assert_eq!(ids_of(&leader)[before..], ["f0"]);
    let expected: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    assert_eq!(ids_of(&other)[other_before..], expected[..]);
    let states = client.endpoint_states();
    assert_eq!((states[0].silences, states[0].avoided), (0, false), "{states:?}");
    assert_eq!((states[1].silences, states[1].avoided), (1, true), "{states:?}");
}

#[tokio::test]
async fn once_its_hold_ends_one_call_probes_an_avoided_endpoint_and_an_answer_restores_it() {
    let (_other, leader, other_addr, leader_addr) = led_by_the_second().await;
    let hold = Duration::from_millis(300);
    let mut config = fast_config(&[other_addr, leader_addr]).with_act_as("alice");
    config.avoid_silent_for = hold;
    let client = Client::with_config(config).expect("client");
    until_routed_to(&client, &leader).await;
    leader.frozen.store(true, Ordering::SeqCst);
    client.send_text("carol", "hi", Some("a".into())).await.expect("send");
    assert!(client.endpoint_states()[1].avoided);

    // The hold ends while the node is still frozen: of eight calls at once, one probes it
    // (and times out, then goes on to the other node); the rest keep away.
    tokio::time::sleep(hold + Duration::from_millis(100)).await;
    let before = leader.seen().len();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.send_text("carol", "hi", Some(format!("p{i}"))).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("every call is taken by the other node");
    }
    assert_eq!(leader.seen().len(), before + 1, "exactly one probe");
    assert_eq!(client.endpoint_states()[1].silences, 2);

    // Thawed: after the next hold, a probe gets an answer, and the calls routed to it go there.
    leader.frozen.store(false, Ordering::SeqCst);
    tokio::time::sleep(hold + Duration::from_millis(100)).await;
    let before = leader.seen().len();
    for i in 0..3 {
        client.send_text("carol", "hi", Some(format!("t{i}"))).await.expect("send");
    }
    assert_eq!(ids_of(&leader)[before..], ["t0", "t1", "t2"]);
    assert!(!client.endpoint_states()[1].avoided);
}
