//! `meridian node`: one node of a region — storage, every shard's Raft, and its doors: the
//! client listener (`Chat`, `Admin`, health, reflection; user and admin tokens), the peer
//! listener (Raft traffic and forwarded calls of the region's other nodes; the cluster
//! credential), and plain HTTP for health, readiness and metrics. Each gRPC listener may use
//! TLS.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use meridian_domain::ingress::IngressLimits;
use meridian_domain::RegionCode;
use meridian_proto::api::{admin_server::AdminServer, chat_server::ChatServer};
use meridian_raft::credential::Door;
use meridian_raft::{ClusterCredential, Member, PeerDialing, PeerService, RaftNode, RaftSettings};
use meridian_regions::Topology;
use meridian_storage::Db;

use crate::api::{admin::AdminService, chat::ChatService, Context};
use crate::auth::TokenSigner;
use crate::config::NodeConfig;
use crate::geo::{Geo, LinkEffects};
use crate::link::{LinkDialing, LinkIdentity, LinkService, RegionLinks};
use crate::tls;

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    let region = RegionCode::parse(&config.region).map_err(|e| anyhow::anyhow!("region: {e}"))?;
    let peer_listen = config.peer_listen.context("peer-listen is missing")?;
    let credential = ClusterCredential::from_secret(config.cluster.secret.as_bytes());
    // TLS material is read before anything else starts: a bad path fails the start.
    let client_tls = config.tls.as_ref().map(tls::server_config).transpose().context("client listener TLS")?;
    let peer_tls = config.peer_tls.as_ref().map(tls::peer_server_config).transpose().context("peer listener TLS")?;
    let peer_dial_tls = config.peer_tls.as_ref().map(tls::peer_client_config).transpose().context("peer TLS")?;
    // A restart asked for by disaster recovery runs first: a reseed wipes the replicas, a
    // promotion rewrites them (docs/dr.md).
    let mut dr_file = crate::dr::before_open(&config.data_dir)?;
    let db = Db::open(&config.data_dir.join("db")).context("open the database")?;
    crate::dr::after_open(&mut dr_file, &config.data_dir, &db, config.shards, config.node_id).await?;
    let settings = RaftSettings {
        node_id: config.node_id,
        region: region.clone(),
        max_logic_version: config.max_logic_version(),
        shards: config.shards,
        snapshot_dir: config.data_dir.join("snapshots"),
        heartbeat_interval_ms: config.raft.heartbeat_interval_ms,
        election_timeout_min_ms: config.raft.election_timeout_min_ms,
        election_timeout_max_ms: config.raft.election_timeout_max_ms,
        snapshot_logs_since_last: config.raft.snapshot_logs_since_last,
        snapshot_log_size_percent: config.raft.snapshot_log_size_percent,
        max_in_snapshot_log_to_keep: config.raft.max_in_snapshot_log_to_keep,
        max_batch_commands: config.raft.max_batch_commands,
        request_id_window_ms: config.limits.request_id_window_seconds.saturating_mul(1000),
        dialing: PeerDialing { credential: credential.clone(), tls: peer_dial_tls, source_ip: config.peer_source_ip },
        ingress: IngressLimits { max_message_bytes: config.limits.max_message_bytes },
    };
    let node = RaftNode::start(settings, db).await.context("start raft")?;
    let own_region = config.regions.as_ref().and_then(|f| f.region(region.as_str())).cloned();
    let standby_node = own_region.as_ref().is_some_and(|r| r.is_standby(config.node_id));
    let no_bootstrap = dr_file.no_bootstrap || standby_node;
    let dr = match own_region.filter(|r| !r.standby.is_empty()) {
        Some(spec) => {
            let dr = crate::dr::Dr::start(node.clone(), spec, config.data_dir.clone(), dr_file);
            // Before any client call: a primary node that comes back after its region was
            // promoted elsewhere learns it here and refuses to serve. (Its replicas' membership
            // loads in the background: a node that has one is given a second to show it.)
            let loaded = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            while node.members(meridian_domain::ShardId(0)).0.is_empty() && tokio::time::Instant::now() < loaded {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            dr.check_fence().await;
            Some(dr)
        }
        None => None,
    };
    let links = Arc::new(RegionLinks::default());
    let archive = crate::archive::Archive::open(&config.archive, &config.data_dir, region.as_str())
        .context("open the archive")?;
    let mut ctx = Context {
        node: node.clone(),
        topology: Topology::new(region.clone(), config.shards),
        signer: Arc::new(TokenSigner::from_config(&config.auth)),
        limits: config.limits.clone(),
        token_ttl_seconds: config.auth.token_ttl_seconds,
        links: links.clone(),
        geo: None,
        snapshot_dir: config.data_dir.join("snapshots"),
        likes: Default::default(),
        delivery: crate::delivery::Hub::start(node.clone()),
        hooks: Arc::new(crate::hooks::Hooks::new(&config)),
        archive: archive.clone(),
        dr: dr.clone(),
    };
    if let Some(archive) = archive {
        tracing::info!(root = archive.root(), hot_window_seconds = config.archive.hot_window_seconds, "archive on");
        let bounds = crate::archive::sealer::Bounds {
            recall_window_ms: i64::try_from(config.limits.recall_window_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            hooks_read_the_log: ctx.hooks.sends_from_log(),
        };
        crate::archive::sealer::start(archive, node.clone(), bounds);
    }
    crate::hooks::sender::start(ctx.hooks.clone(), node.clone(), ctx.delivery.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // The region-link door: calls from the other regions, behind the link credential.
    let mut link_grpc = None;
    if let (Some(link_listen), Some(file)) = (config.link_listen, config.regions.as_ref()) {
        let link_credential = ClusterCredential::for_door(Door::Link, config.link.secret.as_bytes());
        let me = LinkIdentity { region: region.to_string(), node_id: config.node_id, digest: file.digest() };
        let mut link_server = tonic::transport::Server::builder();
        let mut dial_tls = None;
        if let Some(tls) = &config.link_tls {
            link_server = link_server
                .tls_config(tls::peer_server_config(tls).context("region-link listener TLS")?)
                .context("region-link listener TLS")?;
            dial_tls = Some(tls::peer_client_config(tls).context("region-link TLS")?);
        }
        let dialing = LinkDialing { credential: link_credential.clone(), tls: dial_tls };
        if file.regions.len() > 1 {
            let geo = Arc::new(Geo::new(
                region.clone(),
                config.node_id,
                file.clone(),
                config.link.secret.as_bytes(),
                node.clone(),
                links.clone(),
                &dialing,
            ));
            node.set_remote_effects(Arc::new(LinkEffects(geo.clone())));
            ctx.geo = Some(geo);
        }
        let server = link_server
            .add_service(LinkService::new(me.clone(), ctx.clone()).into_server(&link_credential, node.door.clone()))
            .serve_with_incoming_shutdown(incoming(link_listen).await?, wait_stop(stop_rx.clone()));
        link_grpc = Some(tokio::spawn(server));
        crate::link::spawn_dialer(links.clone(), file, me, dialing);
        tracing::info!(link_listen = %link_listen, topology = %file.digest(), "region link listening");
    }

    // The peer door: the peer service alone, behind the cluster credential.
    // One stream per node pair carries every shard's frames: it gets the windows that many
    // unary streams would have shared.
    let mut peer_server = tonic::transport::Server::builder()
        .initial_stream_window_size(meridian_raft::network::PEER_STREAM_WINDOW)
        .initial_connection_window_size(meridian_raft::network::PEER_CONNECTION_WINDOW);
    if let Some(tls) = peer_tls {
        peer_server = peer_server.tls_config(tls).context("peer listener TLS")?;
    }
    let peer_grpc = peer_server
        .add_service(PeerService::new(node.clone(), stop_rx.clone()).into_server(&credential))
        .serve_with_incoming_shutdown(incoming(peer_listen).await?, wait_stop(stop_rx.clone()));
    let peer_grpc = tokio::spawn(peer_grpc);

    // The client door: the client API, health and reflection of the client API only.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ChatServer<ChatService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meridian_proto::API_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version lists both reflection services, since both are served.
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    };
    // Both reflection versions: much client tooling speaks only v1alpha.
    let reflection_v1 = reflection().build_v1().context("build the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("build the reflection service (v1alpha)")?;
    let mut client_server = tonic::transport::Server::builder();
    if let Some(tls) = client_tls {
        client_server = client_server.tls_config(tls).context("client listener TLS")?;
    }
    let grpc = client_server
        .add_service(ChatServer::new(ChatService::new(ctx.clone())))
        .add_service(AdminServer::new(AdminService::new(ctx.clone())))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming(config.listen).await?, wait_stop(stop_rx.clone()));
    let grpc = tokio::spawn(grpc);
    tracing::info!(
        node = config.node_id,
        region = %region,
        listen = %config.listen,
        peer_listen = %peer_listen,
        tls = config.tls.is_some(),
        peer_tls = config.peer_tls.is_some(),
        shards = config.shards,
        "serving"
    );

    if let Some(addr) = config.http_listen {
        let http =
            crate::http::serve(addr, node.clone(), stop_rx.clone()).await.with_context(|| format!("bind {addr}"))?;
        tokio::spawn(http);
    }

    if config.bootstrap && !no_bootstrap {
        let members: BTreeMap<u64, Member> =
            config.peers.iter().map(|p| (p.id, Member::new(p.peer_addr.clone(), p.addr.clone()))).collect();
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
    let servers = [("client", Some(grpc)), ("peer", Some(peer_grpc)), ("region link", link_grpc)];
    for (what, server) in servers.into_iter().filter_map(|(w, s)| s.map(|s| (w, s))) {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).context(format!("{what} gRPC server")),
            Err(e) => return Err(e).context(format!("{what} gRPC server task")),
        }
    }
    Ok(())
}

/// Accepted connections of a listener on `addr`, with Nagle's algorithm off on each (the
/// builder's `tcp_nodelay` does not reach connections from an incoming stream): with it on,
/// a small reply written after the request's ACK was delayed waits up to 40 ms for that ACK.
async fn incoming(addr: std::net::SocketAddr) -> anyhow::Result<tonic::transport::server::TcpIncoming> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    Ok(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
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
