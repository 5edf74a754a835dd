//! The peer door is locked. Peer methods are not served on the client port; on the peer port
//! a call without the cluster credential, or with a wrong one, is refused before it is
//! decoded. Malformed proposals — a command with no kind (the two-byte request that once
//! stopped a whole region), an account with an empty id, a shard the region does not have,
//! forged effects, random bytes — are refused with a typed error with or without the
//! credential, change nothing, and the region keeps serving and restarts with every message
//! it acknowledged. The client port answers undecodable requests with `MALFORMED_REQUEST`
//! and lists only the client API through both reflection versions.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use meridian_client::api::ReadConsistency;
use meridian_proto::durable as pb;
use meridian_proto::peer::{self, peer_client::PeerClient};
use meridian_raft::ClusterCredential;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use common::{local_history, shard_of, wait_listed, Cluster, Row, Tuning};

const REASON: &str = "x-meridian-reason";

/// A codec that sends and receives bytes as they are: the way to send what no generated
/// client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.chunk().to_vec();
        src.advance(bytes.len());
        Ok(Some(bytes))
    }
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect_timeout(Duration::from_secs(2)).connect_lazy()
}

/// What a caller shows on the peer port.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shown {
    Nothing,
    Wrong,
    Right,
}

fn with_credential<T>(msg: T, shown: Shown, secret: &str) -> Request<T> {
    let request = Request::new(msg);
    let credential = match shown {
        Shown::Nothing => return request,
        Shown::Wrong => ClusterCredential::from_secret(b"not-the-cluster-secret-0000"),
        Shown::Right => ClusterCredential::from_secret(secret.as_bytes()),
    };
    let (metadata, extensions, msg) = request.into_parts();
    let carrier = credential.attach().call(Request::from_parts(metadata, extensions, ())).unwrap();
    let (metadata, extensions, ()) = carrier.into_parts();
    Request::from_parts(metadata, extensions, msg)
}

/// Calls every peer method once with an empty request; the status code of each.
async fn call_every_peer_method(addr: &str, shown: Shown, secret: &str) -> Vec<(&'static str, Code)> {
    let mut client = PeerClient::new(channel(addr).await);
    fn code<T>(r: Result<T, Status>) -> Code {
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }
    vec![
        (
            "AppendEntries",
            code(client.append_entries(with_credential(peer::AppendEntriesRequest::default(), shown, secret)).await),
        ),
        (
            "InstallSnapshot",
            code(
                client.install_snapshot(with_credential(peer::InstallSnapshotRequest::default(), shown, secret)).await,
            ),
        ),
        ("Vote", code(client.vote(with_credential(peer::VoteRequest::default(), shown, secret)).await)),
        ("Propose", code(client.propose(with_credential(peer::ProposeRequest::default(), shown, secret)).await)),
        ("ReadIndex", code(client.read_index(with_credential(peer::ReadIndexRequest::default(), shown, secret)).await)),
        (
            "ChangeMembership",
            code(
                client
                    .change_membership(with_credential(peer::ChangeMembershipRequest::default(), shown, secret))
                    .await,
            ),
        ),
        ("NodeInfo", code(client.node_info(with_credential(peer::NodeInfoRequest::default(), shown, secret)).await)),
    ]
}

/// Sends `body` as it is to `method` on `addr`.
async fn raw_call(
    addr: &str,
    method: &'static str,
    body: Vec<u8>,
    shown: Shown,
    secret: &str,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(with_credential(body, shown, secret), PathAndQuery::from_static(method), RawCodec)
        .await
        .map(|r| r.into_inner())
}

fn reason(status: &Status) -> &str {
    status.metadata().get(REASON).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn propose_bytes(shard: u32, commands: Vec<pb::Command>) -> Vec<u8> {
    prost::Message::encode_to_vec(&peer::ProposeRequest { shard, commands })
}

fn kind(k: pb::command::Kind) -> pb::Command {
    pb::Command { kind: Some(k) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_door_refuses_outsiders_and_malformed_proposals_change_nothing() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let secret = cluster.cluster_secret();
    let users = ["alice", "bob"].map(str::to_owned);
    cluster.create_users(&users).await;

    cluster.phase("alice and bob exchange 20 messages");
    for i in 0..20 {
        let (from, to) = if i % 2 == 0 { ("alice", "bob") } else { ("bob", "alice") };
        cluster.user(from).send_text(to, &format!("before-{i}"), None).await.unwrap();
    }

    cluster.phase("the client port serves no peer method");
    for i in 0..cluster.len() {
        for shown in [Shown::Nothing, Shown::Right] {
            for (method, code) in call_every_peer_method(&cluster.addr(i), shown, &secret).await {
                assert_eq!(code, Code::Unimplemented, "Peer/{method} on node {}'s client port ({shown:?})", i + 1);
            }
        }
    }

    cluster.phase("the peer port refuses calls without the credential or with a wrong one");
    for i in 0..cluster.len() {
        for shown in [Shown::Nothing, Shown::Wrong] {
            for (method, code) in call_every_peer_method(&cluster.peer_addr(i), shown, &secret).await {
                assert_eq!(code, Code::Unauthenticated, "Peer/{method} on node {}'s peer port ({shown:?})", i + 1);
            }
        }
    }
    let refused =
        raw_call(&cluster.peer_addr(0), "/meridian.peer.v1.Peer/Propose", vec![0x12, 0x00], Shown::Nothing, &secret)
            .await
            .unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::Unauthenticated, "PEER_UNAUTHENTICATED"));

    cluster.phase("malformed proposals, with and without the credential, to every node's peer port");
    let alice_shard = shard_of("alice", 8);
    let conversation_shard = shard_of(&common::conversation_id("alice", "bob"), 8);
    let other_shard = (alice_shard + 1) % 8;
    let forged_effect = |source_region: &str| pb::Effect {
        id: 1_000_000,
        source_shard: other_shard,
        source_region: source_region.into(),
        source_epoch: 1,
        kind: Some(pb::effect::Kind::ConversationJoined(pb::ConversationJoined {
            user: "alice".into(),
            conversation_id: common::conversation_id("alice", "mallory"),
            peer: "mallory".into(),
            time_ms: 1,
        })),
    };
    let mut malformed: Vec<(&str, Vec<u8>)> = vec![
        // The two bytes that once stopped a region: one Command with no kind.
        ("a command with no kind", vec![0x12, 0x00]),
        ("no command at all", propose_bytes(alice_shard, vec![])),
        (
            "create-user with an empty id",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::CreateUser(pb::CreateUser {
                    user_id: String::new(),
                    home_region: "test".into(),
                    nickname: String::new(),
                }))],
            ),
        ),
        (
            "create-user on a shard that is not the user's",
            propose_bytes(
                other_shard,
                vec![kind(pb::command::Kind::CreateUser(pb::CreateUser {
                    user_id: "alice".into(),
                    home_region: "test".into(),
                    nickname: String::new(),
                }))],
            ),
        ),
        (
            "a shard the region does not have",
            propose_bytes(
                999,
                vec![kind(pb::command::Kind::AckEffects(pb::AckEffects {
                    target_shard: 0,
                    up_to: 1,
                    ..Default::default()
                }))],
            ),
        ),
        (
            "an acknowledgement for a shard the region does not have",
            propose_bytes(
                conversation_shard,
                vec![kind(pb::command::Kind::AckEffects(pb::AckEffects {
                    target_shard: 4096,
                    up_to: u64::MAX,
                    ..Default::default()
                }))],
            ),
        ),
        (
            "a forged effect from another source than its batch",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::ApplyEffects(pb::ApplyEffects {
                    source_shard: (other_shard + 1) % 8,
                    effects: vec![forged_effect(common::REGION)],
                    ..Default::default()
                }))],
            ),
        ),
        (
            "a forged effect from another region (those come over region links only)",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::ApplyEffects(pb::ApplyEffects {
                    source_shard: other_shard,
                    effects: vec![forged_effect("elsewhere")],
                    ..Default::default()
                }))],
            ),
        ),
        (
            "effects of this very region dressed as another region's",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::ApplyEffects(pb::ApplyEffects {
                    source_shard: other_shard,
                    effects: vec![forged_effect(common::REGION)],
                    from_region: common::REGION.into(),
                }))],
            ),
        ),
        (
            "a directory claim whose key is no directory key",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::ClaimId(pb::ClaimId {
                    key: "alice".into(),
                    region: common::REGION.into(),
                }))],
            ),
        ),
        (
            "a logic version this build does not implement",
            propose_bytes(
                alice_shard,
                vec![kind(pb::command::Kind::SetLogicVersion(pb::SetLogicVersion { version: 99 }))],
            ),
        ),
        ("bytes that are no protobuf", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for n in 0..8 {
        let len = 1 + (n * 37) % 200;
        malformed.push(("random bytes", (0..len).map(|_| rand::random::<u8>()).collect()));
    }
    for i in 0..cluster.len() {
        for (what, body) in &malformed {
            for shown in [Shown::Nothing, Shown::Right] {
                let result =
                    raw_call(&cluster.peer_addr(i), "/meridian.peer.v1.Peer/Propose", body.clone(), shown, &secret)
                        .await;
                let status =
                    result.err().unwrap_or_else(|| panic!("{what} ({shown:?}) to node {} was accepted", i + 1));
                let expected = if shown == Shown::Right { Code::InvalidArgument } else { Code::Unauthenticated };
                assert_eq!(status.code(), expected, "{what} ({shown:?}) to node {}: {status:?}", i + 1);
                assert!(!reason(&status).is_empty(), "{what} ({shown:?}): no reason in {status:?}");
            }
        }
    }

    cluster.phase("the region keeps serving: 10 more messages, and no conversation with mallory");
    for i in 0..10 {
        cluster.user("alice").send_text("bob", &format!("after-{i}"), None).await.unwrap();
    }
    let expected: Vec<String> =
        (0..20).map(|i| format!("before-{i}")).chain((0..10).map(|i| format!("after-{i}"))).collect();
    let history = cluster.user("alice").history_all("bob", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.iter().map(|m| Row::of(m).text).collect::<Vec<_>>(), expected);
    let listed = wait_listed(&cluster, "alice", &["bob".to_owned()].into()).await;
    assert_eq!(listed.conversations.len(), 1, "alice's list: {listed:?}");
    cluster.wait_converged().await;
    let before_restart = local_history(&cluster, 0, "alice", "bob").await;
    assert_eq!(before_restart.len(), 30);

    cluster.phase("every node restarts cleanly with every message");
    cluster.restart_all().await;
    cluster.wait_converged().await;
    for i in 0..cluster.len() {
        assert_eq!(local_history(&cluster, i, "alice", "bob").await, before_restart, "node {}'s replica", i + 1);
    }
    cluster.user("bob").send_text("alice", "after the restart", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_port_types_undecodable_requests_and_reflects_only_the_client_api() {
    let cluster = Cluster::start(3, Tuning { shards: 2, ..Tuning::default() }).await;

    cluster.phase("an undecodable request is INVALID_ARGUMENT with MALFORMED_REQUEST, with or without a token");
    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    for method in ["/meridian.v1.Chat/SendMessage", "/meridian.v1.Admin/CreateUser"] {
        let status = raw_call(&cluster.addr(0), method, garbage.clone(), Shown::Nothing, "").await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::InvalidArgument, "MALFORMED_REQUEST"),
            "{method}: {status:?}"
        );
    }

    cluster.phase("reflection v1 and v1alpha list the client API and health, nothing else");
    let expected = vec![
        "grpc.health.v1.Health".to_owned(),
        "grpc.reflection.v1.ServerReflection".to_owned(),
        "grpc.reflection.v1alpha.ServerReflection".to_owned(),
        "meridian.v1.Admin".to_owned(),
        "meridian.v1.Chat".to_owned(),
    ];
    {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(channel(&cluster.addr(0)).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("v1: not a list of services");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, expected, "v1");
    }
    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(channel(&cluster.addr(1)).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("v1alpha: not a list of services");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, expected, "v1alpha");
        // The peer and durable schemas are not to be had either, while the API's are.
        for (symbol, served) in
            [("meridian.peer.v1.Peer", false), ("meridian.durable.v1.Command", false), ("meridian.v1.Chat", true)]
        {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
            };
            let mut stream = client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
            let found = matches!(
                stream.message().await,
                Ok(Some(response)) if matches!(response.message_response, Some(MessageResponse::FileDescriptorResponse(_)))
            );
            assert_eq!(found, served, "{symbol}: reflected = {found}");
        }
    }
}
