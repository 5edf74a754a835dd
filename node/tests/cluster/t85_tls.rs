//! A region with TLS on both listeners: the SDK and the command line connect with the CA;
//! a plaintext client, a client trusting another CA, and a peer without a client certificate
//! are refused; the nodes replicate over TLS with client certificates.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use meridian_client::api::ReadConsistency;
use meridian_client::{Client, ClientConfig};
use meridian_proto::peer::{self, peer_client::PeerClient};
use meridian_raft::ClusterCredential;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use common::{Cluster, TestPki, Tuning};

fn one_attempt(config: ClientConfig) -> Client {
    let mut config = config;
    config.retry_budget = Duration::ZERO;
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(5);
    Client::with_config(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_with_tls_serves_clients_that_trust_its_ca() {
    let pki = TestPki::new("meridian test CA");
    let ca_pem = pki.ca_pem.clone();
    let mut cluster = Cluster::start_with(3, Tuning { shards: 4, ..Tuning::default() }, Some(pki)).await;
    let users = ["alice", "bob"].map(str::to_owned);
    cluster.create_users(&users).await;

    cluster.phase("the SDK, trusting the CA, sends and reads over TLS; every replica has it");
    for i in 0..10 {
        cluster.user("alice").send_text("bob", &format!("tls-{i}"), None).await.unwrap();
    }
    let history = cluster.user("bob").history_all("alice", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.len(), 10);
    cluster.wait_converged().await;

    cluster.phase("a plaintext client and a client trusting another CA are refused");
    let endpoint = cluster.addr(0);
    let plaintext = one_attempt(ClientConfig::new([endpoint.clone()], cluster.admin_token()));
    assert!(plaintext.cluster_status(false).await.is_err(), "a plaintext client got an answer from a TLS listener");
    let other_ca = TestPki::new("another CA").ca_pem;
    let stranger = one_attempt(ClientConfig::new([endpoint.clone()], cluster.admin_token()).with_ca(other_ca));
    assert!(stranger.cluster_status(false).await.is_err(), "a client trusting another CA got an answer");
    let trusting = one_attempt(ClientConfig::new([endpoint.clone()], cluster.admin_token()).with_ca(ca_pem.clone()));
    assert_eq!(trusting.cluster_status(false).await.unwrap().shards.len(), 4);

    cluster.phase("the command line connects with MERIDIAN_CA");
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca_pem).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["history", "--as", "bob", "--with", "alice", "--json"])
        .env("MERIDIAN_ENDPOINT", cluster.endpoints().join(","))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .env("MERIDIAN_CA", ca_file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "meridian history failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("tls-9"), "the CLI's history lacks the last message: {stdout}");
    let without_ca = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status"])
        .env("MERIDIAN_ENDPOINT", cluster.addr(0))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .env_remove("MERIDIAN_CA")
        .output()
        .unwrap();
    assert!(!without_ca.status.success(), "the CLI without the CA got an answer from a TLS listener");

    cluster.phase("the peer listener requires a client certificate, even with the right credential");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem));
    let channel = Channel::from_shared(format!("https://{}", cluster.peer_addr(1)))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let credential = ClusterCredential::from_secret(cluster.cluster_secret().as_bytes());
    let request = credential.attach().call(tonic::Request::new(())).unwrap();
    let (metadata, extensions, ()) = request.into_parts();
    let request = tonic::Request::from_parts(metadata, extensions, peer::ReadIndexRequest { shard: 0 });
    let refused = PeerClient::new(channel).read_index(request).await;
    assert!(refused.is_err(), "a peer call without a client certificate was served: {refused:?}");

    cluster.phase("a node killed and restarted catches up over TLS");
    cluster.kill9(2);
    for i in 0..5 {
        cluster.user("bob").send_text("alice", &format!("while-down-{i}"), None).await.unwrap();
    }
    cluster.restart(2).await;
    cluster.wait_converged().await;
    let on_node_3 = common::local_history(&cluster, 2, "alice", "bob").await;
    assert_eq!(on_node_3.len(), 15, "node 3's replica after catching up");
}
