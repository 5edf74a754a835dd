//! The region link: nodes of different regions, started from one topology file, link up
//! over their link listeners behind the link credential; a region started on another
//! topology file is refused (`TOPOLOGY_MISMATCH`) and shown as such; the link door opens
//! only to the link credential (not to the cluster credential) and serves nothing else.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::api::ClusterStatusResponse;
use meridian_client::{Client, ClientConfig};
use meridian_node::auth::TokenSigner;
use meridian_node::config::{AuthConfig, ClusterConfig, LinkConfig, NodeConfig};
use meridian_proto::link::link_client::LinkClient;
use meridian_proto::link::HelloRequest;
use meridian_proto::peer::peer_client::PeerClient;
use meridian_raft::credential::{ClusterCredential, Door};
use prost::Message as _;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request};

use common::free_loopback_addrs;

const AUTH_SECRET: &str = "auth-secret-0123456789abcdef";
const CLUSTER_SECRET: &str = "cluster-secret-0123456789abcd";
const LINK_SECRET: &str = "link-secret-0123456789abcdefgh";

/// One single-node region: its process, killed on drop.
struct RegionNode {
    region: &'static str,
    addrs: [SocketAddr; 3],
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for RegionNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log:\n{}", self.region, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn topology(nodes: &[(&str, [SocketAddr; 3])], de_shards: u32) -> String {
    let mut text = String::from("app = \"meridian\"\n");
    for (code, [addr, peer, link]) in nodes {
        let (residency, shards) = if *code == "de" { ("strict", de_shards) } else { ("open", 8) };
        text.push_str(&format!(
            "\n[[region]]\ncode = \"{code}\"\nresidency = \"{residency}\"\nshards = {shards}\n[[region.node]]\nid = 1\n\
             addr = \"{addr}\"\npeer-addr = \"{peer}\"\nlink-addr = \"{link}\"\n"
        ));
    }
    text
}

fn start(dir: &Path, region: &'static str, addrs: [SocketAddr; 3], topology_file: &str) -> RegionNode {
    start_with(dir, region, addrs, topology_file, None)
}

fn start_with(
    dir: &Path,
    region: &'static str,
    addrs: [SocketAddr; 3],
    topology_file: &str,
    link_tls: Option<meridian_node::config::PeerTlsConfig>,
) -> RegionNode {
    let config = NodeConfig {
        link_tls,
        node_id: 1,
        region: region.into(),
        listen: addrs[0],
        peer_listen: Some(addrs[1]),
        link_listen: Some(addrs[2]),
        data_dir: dir.join(format!("{region}-data")),
        topology: Some(topology_file.into()),
        auth: AuthConfig { secret: AUTH_SECRET.into(), ..AuthConfig::default() },
        cluster: ClusterConfig { secret: CLUSTER_SECRET.into(), ..ClusterConfig::default() },
        link: LinkConfig { secret: LINK_SECRET.into() },
        ..NodeConfig::default()
    };
    let path = dir.join(format!("{region}.toml"));
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    let log = dir.join(format!("{region}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["node", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    RegionNode { region, addrs, child, log }
}

async fn status(node: &RegionNode) -> Option<ClusterStatusResponse> {
    let token = TokenSigner::new(AuthConfig::default().app_id, AUTH_SECRET)
        .issue_admin("link-test", chrono::Utc::now().timestamp() + 3600);
    let mut config = ClientConfig::new([node.addrs[0].to_string()], token);
    config.retry_budget = Duration::ZERO;
    Client::with_config(config).unwrap().cluster_status(false).await.ok()
}

/// Waits until `node` reports the link to each region in the state given.
async fn wait_links(node: &RegionNode, expected: &[(&str, &str)]) -> ClusterStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = status(node).await;
        if let Some(s) = &seen {
            let states: Vec<(&str, &str)> =
                s.region_links.iter().map(|l| (l.region.as_str(), l.state.as_str())).collect();
            if states == expected {
                return seen.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "{}: links {expected:?} expected, got {seen:?}", node.region);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn with_key<T>(msg: T, credential: Option<ClusterCredential>) -> Request<T> {
    let request = Request::new(msg);
    let Some(credential) = credential else { return request };
    let (metadata, extensions, msg) = request.into_parts();
    let carrier = credential.attach().call(Request::from_parts(metadata, extensions, ())).unwrap();
    let (metadata, extensions, ()) = carrier.into_parts();
    Request::from_parts(metadata, extensions, msg)
}

fn reason(status: &tonic::Status) -> String {
    status.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()).unwrap_or("").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_on_one_topology_link_up_and_a_stranger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_loopback_addrs(9);
    let addrs = |i: usize| [ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]];
    let (sg, kr, de) = (addrs(0), addrs(1), addrs(2));
    let nodes = [("sg", sg), ("kr", kr), ("de", de)];
    std::fs::write(dir.path().join("regions.toml"), topology(&nodes, 8)).unwrap();
    // de was started on an older copy of the file: same regions, another shard count for de.
    std::fs::write(dir.path().join("regions-old.toml"), topology(&nodes, 4)).unwrap();
    let sg = start(dir.path(), "sg", sg, "regions.toml");
    let kr = start(dir.path(), "kr", kr, "regions.toml");
    let de = start(dir.path(), "de", de, "regions-old.toml");

    let seen = wait_links(&sg, &[("de", "topology-mismatch"), ("kr", "up")]).await;
    assert!(seen.region_links.iter().any(|l| l.detail.contains("regions.toml")), "{seen:?}");
    wait_links(&kr, &[("de", "topology-mismatch"), ("sg", "up")]).await;
    wait_links(&de, &[("kr", "topology-mismatch"), ("sg", "topology-mismatch")]).await;

    let link = |node: &RegionNode| {
        Channel::from_shared(format!("http://{}", node.addrs[2]))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    };
    let hello = |digest: &str| HelloRequest { region: "test".into(), node_id: 9, topology_digest: digest.into() };
    let right = ClusterCredential::for_door(Door::Link, LINK_SECRET.as_bytes());
    let peer_key = ClusterCredential::from_secret(CLUSTER_SECRET.as_bytes());
    let mut client = LinkClient::new(link(&kr));
    for (shown, what) in [(None, "no credential"), (Some(peer_key.clone()), "the cluster credential")] {
        let refused = client.hello(with_key(hello(""), shown)).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::Unauthenticated, "LINK_UNAUTHENTICATED"),
            "{what}"
        );
    }
    let refused = client.hello(with_key(hello("0000"), Some(right.clone()))).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "TOPOLOGY_MISMATCH"));
    let digest =
        meridian_regions::RegionsFile::from_toml(&std::fs::read_to_string(dir.path().join("regions.toml")).unwrap())
            .unwrap()
            .digest();
    let answer = client.hello(with_key(hello(&digest), Some(right.clone()))).await.unwrap().into_inner();
    assert_eq!((answer.region.as_str(), answer.node_id), ("kr", 1));

    // The link door serves the link only; the peer door does not serve it.
    let mut peer_on_link = PeerClient::new(link(&kr));
    let status = peer_on_link
        .node_info(with_key(meridian_proto::peer::NodeInfoRequest {}, Some(right.clone())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let peer_port = Channel::from_shared(format!("http://{}", kr.addrs[1])).unwrap().connect_lazy();
    let status = LinkClient::new(peer_port).hello(with_key(hello(&digest), Some(peer_key))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    drop((sg, kr, de));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_over_tls_with_client_certificates_comes_up_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::TestPki::new("link test CA").write(dir.path()).peer;
    let ports = free_loopback_addrs(6);
    let (sg, kr) = ([ports[0], ports[1], ports[2]], [ports[3], ports[4], ports[5]]);
    std::fs::write(dir.path().join("regions.toml"), topology(&[("sg", sg), ("kr", kr)], 8)).unwrap();
    let sg = start_with(dir.path(), "sg", sg, "regions.toml", Some(tls.clone()));
    let kr = start_with(dir.path(), "kr", kr, "regions.toml", Some(tls));
    wait_links(&sg, &[("kr", "up")]).await;
    wait_links(&kr, &[("sg", "up")]).await;

    // A plaintext caller, even with the right credential, gets nowhere.
    let plaintext = Channel::from_shared(format!("http://{}", kr.addrs[2])).unwrap().connect_lazy();
    let right = ClusterCredential::for_door(Door::Link, LINK_SECRET.as_bytes());
    let hello = HelloRequest { region: "sg".into(), node_id: 1, topology_digest: String::new() };
    let refused =
        tokio::time::timeout(Duration::from_secs(10), LinkClient::new(plaintext).hello(with_key(hello, Some(right))))
            .await
            .expect("answered or failed in time");
    assert!(refused.is_err(), "plaintext Hello on a TLS link port: {refused:?}");
    drop((sg, kr));
}

/// Every link method, called with the right credential but with what a broken or hostile
/// peer region might send, gets a typed refusal; nothing of it takes effect and the region
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_link_calls_are_refused_with_a_reason_and_change_nothing() {
    use meridian_proto::link::{
        ClaimRequest, DeliverEffectsRequest, ForwardRequest, HeadsRequest, LookupRequest, WatchRequest,
        WatchedConversation,
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = free_loopback_addrs(6);
    let (sg, kr) = ([ports[0], ports[1], ports[2]], [ports[3], ports[4], ports[5]]);
    std::fs::write(dir.path().join("regions.toml"), topology(&[("sg", sg), ("kr", kr)], 8)).unwrap();
    let sg = start(dir.path(), "sg", sg, "regions.toml");
    let kr = start(dir.path(), "kr", kr, "regions.toml");
    wait_links(&sg, &[("kr", "up")]).await;
    wait_links(&kr, &[("sg", "up")]).await;

    let token = TokenSigner::new(AuthConfig::default().app_id, AUTH_SECRET)
        .issue_admin("link-test", chrono::Utc::now().timestamp() + 3600);
    let admin = |node: &RegionNode| {
        let mut config = ClientConfig::new([node.addrs[0].to_string()], token.clone());
        config.retry_budget = Duration::from_secs(5);
        Client::with_config(config).unwrap()
    };
    admin(&kr).create_user("kim", None).await.unwrap();
    admin(&sg).create_user("amy", None).await.unwrap();

    let right = ClusterCredential::for_door(Door::Link, LINK_SECRET.as_bytes());
    let mut link = LinkClient::new(Channel::from_shared(format!("http://{}", kr.addrs[2])).unwrap().connect_lazy());
    let bearer = format!("Bearer {token}");
    let forward = |method: &str, body: Vec<u8>, from: &str| ForwardRequest {
        method: method.into(),
        authorization: bearer.clone(),
        act_as: "kim".into(),
        body,
        from_region: from.into(),
    };
    let send = meridian_client::api::SendMessageRequest {
        to: "amy".into(),
        elements: vec![],
        request_id: "r-1".into(),
        ..Default::default()
    };
    let cases: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "a method that is not forwarded",
            link.forward(with_key(forward("Admin/AddNode", vec![], "sg"), Some(right.clone()))).await.map(|_| ()),
            "MALFORMED_REQUEST",
        ),
        (
            "a body that is no request of its method",
            link.forward(with_key(forward("Chat/SendMessage", vec![0x0a, 0xff, 0xff], "sg"), Some(right.clone())))
                .await
                .map(|_| ()),
            "MALFORMED_REQUEST",
        ),
        (
            "a request forwarded from the region itself",
            link.forward(with_key(forward("Chat/SendMessage", send.encode_to_vec(), "kr"), Some(right.clone())))
                .await
                .map(|_| ()),
            "REGION_INVALID",
        ),
        (
            "a request forwarded from a region the topology does not name",
            link.forward(with_key(forward("Chat/SendMessage", send.encode_to_vec(), "mars"), Some(right.clone())))
                .await
                .map(|_| ()),
            "REGION_INVALID",
        ),
        (
            "a forwarded send without a token",
            link.forward(with_key(
                ForwardRequest {
                    authorization: String::new(),
                    ..forward("Chat/SendMessage", send.encode_to_vec(), "sg")
                },
                Some(right.clone()),
            ))
            .await
            .map(|_| ()),
            "TOKEN_MISSING",
        ),
        (
            "a claim whose key is no directory key",
            link.claim(with_key(ClaimRequest { key: "kim".into(), region: "sg".into() }, Some(right.clone())))
                .await
                .map(|_| ()),
            "DIRECTORY_KEY_INVALID",
        ),
        (
            "a lookup of a key given as a user id",
            link.lookup(with_key(LookupRequest { key: "amy".into() }, Some(right.clone()))).await.map(|_| ()),
            "DIRECTORY_KEY_INVALID",
        ),
        (
            "heads of a conversation id that is not one",
            link.heads(with_key(
                HeadsRequest { user: "kim".into(), conversation_ids: vec!["not a conversation".into()] },
                Some(right.clone()),
            ))
            .await
            .map(|_| ()),
            "CONVERSATION_ID_INVALID",
        ),
        (
            "a watch of a user id that does not parse",
            link.watch(with_key(WatchRequest { user: "no spaces".into(), known: vec![] }, Some(right.clone())))
                .await
                .map(|_| ()),
            "USER_ID_INVALID",
        ),
        (
            "a watch of a conversation id that does not parse",
            link.watch(with_key(
                WatchRequest {
                    user: "amy".into(),
                    known: vec![WatchedConversation { conversation_id: "c2c:x".into(), seq: 1 }],
                },
                Some(right.clone()),
            ))
            .await
            .map(|_| ()),
            "CONVERSATION_ID_INVALID",
        ),
        (
            "effects that do not decode",
            link.deliver_effects(with_key(
                DeliverEffectsRequest { source_region: "sg".into(), source_shard: 1, effects: vec![vec![0xff, 0x01]] },
                Some(right.clone()),
            ))
            .await
            .map(|_| ()),
            "MALFORMED_REQUEST",
        ),
        (
            "effects claiming to come from the region itself",
            link.deliver_effects(with_key(
                DeliverEffectsRequest { source_region: "kr".into(), source_shard: 1, effects: vec![] },
                Some(right.clone()),
            ))
            .await
            .map(|_| ()),
            "REGION_INVALID",
        ),
    ];
    for (what, outcome, expected) in cases {
        let status = outcome.expect_err(what);
        assert_eq!(reason(&status), expected, "{what}: {status:?}");
    }
    // A key some other region owns is refused by a region that does not own it.
    let mut refused_claims = 0;
    for i in 0..8 {
        let key = format!("{i:x}").repeat(64);
        let claim = ClaimRequest { key, region: "sg".into() };
        if let Err(status) = link.claim(with_key(claim, Some(right.clone()))).await {
            assert_eq!(reason(&status), "REGION_INVALID", "{status:?}");
            refused_claims += 1;
        }
    }
    assert!(refused_claims > 0, "with two regions, some of 8 keys belong to sg");
    // Heads of a conversation the user is not in answer nothing.
    let heads = link
        .heads(with_key(
            HeadsRequest { user: "kim".into(), conversation_ids: vec!["c2c:amy:zed".into()] },
            Some(right.clone()),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(heads.conversations.is_empty());

    // Nothing took effect: no conversation, and both regions still serve.
    let kim = admin(&kr).with_act_as("kim").unwrap();
    assert!(kim
        .conversations_all(meridian_client::api::ReadConsistency::Linearizable)
        .await
        .unwrap()
        .conversations
        .is_empty());
    let sent = kim.send_text("amy", "still here", None).await.unwrap();
    assert_eq!(sent.seq, 1);
    drop((sg, kr));
}
