//! `meridian node`: one node of a region — storage, every shard's Raft, and the gRPC server
//! that clients and peers talk to (plus health, readiness and metrics over plain HTTP).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use meridian_domain::RegionCode;
use meridian_proto::api::{admin_server::AdminServer, chat_server::ChatServer};
use meridian_raft::{PeerService, RaftNode, RaftSettings};
use meridian_regions::Topology;
use meridian_storage::Db;

use crate::api::{admin::AdminService, chat::ChatService, Context};
use crate::auth::TokenSigner;
use crate::config::NodeConfig;

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    let region = RegionCode::parse(&config.region).map_err(|e| anyhow::anyhow!("region: {e}"))?;
    let db = Db::open(&config.data_dir.join("db")).context("open the database")?;
    let settings = RaftSettings {
        node_id: config.node_id,
        advertise: config.advertise_addr(),
        shards: config.shards,
        snapshot_dir: config.data_dir.join("snapshots"),
        heartbeat_interval_ms: config.raft.heartbeat_interval_ms,
        election_timeout_min_ms: config.raft.election_timeout_min_ms,
        election_timeout_max_ms: config.raft.election_timeout_max_ms,
        snapshot_logs_since_last: config.raft.snapshot_logs_since_last,
        max_in_snapshot_log_to_keep: config.raft.max_in_snapshot_log_to_keep,
        max_batch_commands: config.raft.max_batch_commands,
        peer_source_ip: config.peer_source_ip,
    };
    let node = RaftNode::start(settings, db).await.context("start raft")?;
    let ctx = Context {
        node: node.clone(),
        topology: Topology::new(region.clone(), config.shards),
        signer: Arc::new(TokenSigner::from_config(&config.auth)),
        limits: config.limits.clone(),
        token_ttl_seconds: config.auth.token_ttl_seconds,
    };

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("bind {}", config.listen))?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ChatServer<ChatService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(meridian_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("build the reflection service")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Nagle's algorithm off on every accepted connection (the builder's `tcp_nodelay` does not
    // reach connections from an incoming stream): with it on, a small reply written after
    // the request's ACK was delayed waits up to 40 ms for that ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let grpc = tonic::transport::Server::builder()
        .add_service(ChatServer::new(ChatService::new(ctx.clone())))
        .add_service(AdminServer::new(AdminService::new(ctx.clone())))
        .add_service(PeerService::new(node.clone()).into_server())
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, wait_stop(stop_rx.clone()));
    let grpc = tokio::spawn(grpc);
    tracing::info!(node = config.node_id, region = %region, listen = %config.listen, shards = config.shards, "serving");

    if let Some(addr) = config.http_listen {
        let http =
            crate::http::serve(addr, node.clone(), stop_rx.clone()).await.with_context(|| format!("bind {addr}"))?;
        tokio::spawn(http);
    }

    if config.bootstrap {
        let members: BTreeMap<u64, String> = config.peers.iter().map(|p| (p.id, p.addr.clone())).collect();
        node.bootstrap(members).await?;
    }

    tokio::select! {
        _ = shutdown_signal() => {}
        fatal = node.fatal() => {
            // A replica that cannot write must stop rather than diverge. Everything it
            // acknowledged is durable; a supervisor restarts it once the cause is gone.
            tracing::error!(error = %fatal, "fatal storage or raft error; stopping the node");
            let _ = stop_tx.send(true);
            return Err(anyhow::anyhow!("fatal: {fatal}"));
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    node.shutdown().await;
    match grpc.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("grpc server"),
        Err(e) => Err(e).context("grpc server task"),
    }
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
