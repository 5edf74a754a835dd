//! Raft RPCs over tonic: one HTTP/2 connection per peer address carries every shard, and
//! every call carries the cluster credential.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_proto::peer::{self, frame::Body, peer_client::PeerClient};
use meridian_storage::latency::Histogram;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::AnyError;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::convert::*;
use crate::credential::{AttachCredential, ClusterCredential};
use crate::mux::{Sent, Streams};
use crate::types::*;

/// Largest message a peer accepts: snapshot chunks and entry batches stay well under it.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// HTTP/2 flow-control windows of peer connections, both ways: the node pair's stream
/// ([`crate::mux`]) carries every shard's entries, so it gets what many unary streams shared.
pub const PEER_STREAM_WINDOW: u32 = 4 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 8 << 20;

/// A peer client: every call carries the cluster credential.
pub type PeerClientT = PeerClient<InterceptedService<Channel, AttachCredential>>;

/// How this node dials its peers: the credential it shows, and TLS when the region's peer
/// listeners use it.
#[derive(Debug, Clone)]
pub struct PeerDialing {
    pub credential: ClusterCredential,
    /// `None`: plaintext HTTP/2.
    pub tls: Option<ClientTlsConfig>,
    /// Source IP for outgoing peer connections (`None`: the OS chooses).
    pub source_ip: Option<std::net::IpAddr>,
}

/// Peer calls this node made, by kind (`/metrics`: what one write costs in RPCs).
#[derive(Debug, Default)]
pub struct PeerRpcStats {
    /// AppendEntries calls that carried entries, and the entries in them.
    pub append_entries: AtomicU64,
    pub entries_sent: AtomicU64,
    /// AppendEntries calls without entries (heartbeats, commit-index updates).
    pub heartbeats: AtomicU64,
    pub votes: AtomicU64,
    pub snapshot_chunks: AtomicU64,
    /// Proposals and read-index rounds forwarded to another node's leader.
    pub proposes: AtomicU64,
    pub read_indexes: AtomicU64,
    /// Peer streams opened ([`crate::mux`]), the request frames sent on them and the
    /// messages those frames went out in (frames per message: what batching achieved).
    pub stream_opens: AtomicU64,
    pub stream_frames: AtomicU64,
    pub stream_batches: AtomicU64,
    /// Streams closed as stuck: nothing came back on them for [`crate::mux::STREAM_SILENCE`]
    /// while calls timed out.
    pub stream_resets: AtomicU64,
    /// Frames of peers' streams this node gave up at their caller's timeout.
    pub stream_frames_expired: AtomicU64,
    /// AppendEntries calls with entries that were answered, from sending to the answer (the
    /// follower's append and WAL sync, the way there and back).
    pub append_seconds: Histogram,
    /// Follower: AppendEntries with entries received, from handing them to Raft to its
    /// answer (the append, its WAL sync).
    pub appended_seconds: Histogram,
}

/// The node's connections to its peers, shared by every shard.
#[derive(Debug, Clone)]
pub struct Connections {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    streams: Arc<Streams>,
    dialing: Arc<PeerDialing>,
    pub stats: Arc<PeerRpcStats>,
}

impl Connections {
    pub fn new(dialing: PeerDialing) -> Self {
        Self::with_stream_silence(dialing, crate::mux::STREAM_SILENCE)
    }

    /// Connections whose streams count as stuck after `silence` (tests shorten it).
    pub(crate) fn with_stream_silence(dialing: PeerDialing, silence: Duration) -> Self {
        let stats = Arc::<PeerRpcStats>::default();
        let streams = Arc::new(Streams::new(stats.clone(), silence));
        Self { channels: Arc::default(), streams, dialing: Arc::new(dialing), stats }
    }

    /// One Raft request to the peer at `addr` on the node pair's stream ([`crate::mux`]),
    /// or unary against a peer without it; its reply, or the status it was refused with.
    /// Every request is counted here, by kind (`/metrics`).
    pub async fn call(&self, addr: &str, body: Body, timeout: Duration) -> Result<Body, tonic::Status> {
        self.count(&body);
        let timed = matches!(&body, Body::AppendEntries(m) if !m.entries.is_empty()).then(Instant::now);
        let client = || self.client(addr).map_err(|e| tonic::Status::unavailable(e.to_string()));
        let reply = match self.streams.call(addr, client, body, timeout).await {
            Sent::Reply(reply) => reply,
            Sent::Unary(body) => self.unary(addr, body, timeout).await,
        };
        if let (Some(started), Ok(_)) = (timed, &reply) {
            self.stats.append_seconds.since(started);
        }
        reply
    }

    fn count(&self, body: &Body) {
        let stats = &self.stats;
        match body {
            Body::AppendEntries(m) if m.entries.is_empty() => stats.heartbeats.fetch_add(1, Ordering::Relaxed),
            Body::AppendEntries(m) => {
                stats.entries_sent.fetch_add(m.entries.len() as u64, Ordering::Relaxed);
                stats.append_entries.fetch_add(1, Ordering::Relaxed)
            }
            Body::Vote(_) => stats.votes.fetch_add(1, Ordering::Relaxed),
            Body::Propose(_) => stats.proposes.fetch_add(1, Ordering::Relaxed),
            Body::ReadIndex(_) => stats.read_indexes.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    async fn unary(&self, addr: &str, body: Body, timeout: Duration) -> Result<Body, tonic::Status> {
        let mut client = self.client(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(match body {
            Body::AppendEntries(m) => {
                Body::AppendEntriesReply(client.append_entries(with_timeout(m, timeout)).await?.into_inner())
            }
            Body::Vote(m) => Body::VoteReply(client.vote(with_timeout(m, timeout)).await?.into_inner()),
            Body::Propose(m) => Body::ProposeReply(client.propose(with_timeout(m, timeout)).await?.into_inner()),
            Body::ReadIndex(m) => Body::ReadIndexReply(client.read_index(with_timeout(m, timeout)).await?.into_inner()),
            _ => return Err(tonic::Status::internal("not a request frame")),
        })
    }

    /// The client for `addr`, connecting lazily on first use and reconnecting after failures.
    pub fn client(&self, addr: &str) -> Result<PeerClientT, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let scheme = if self.dialing.tls.is_some() { "https" } else { "http" };
                let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
                let mut endpoint = Endpoint::from_shared(uri)?
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .initial_stream_window_size(PEER_STREAM_WINDOW)
                    .initial_connection_window_size(PEER_CONNECTION_WINDOW)
                    .local_address(self.dialing.source_ip);
                if let Some(tls) = &self.dialing.tls {
                    endpoint = endpoint.tls_config(tls.clone())?;
                }
                let c = endpoint.connect_lazy();
                map.insert(addr.to_owned(), c.clone());
                c
            }
        };
        Ok(PeerClient::with_interceptor(channel, self.dialing.credential.attach())
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// `msg` as a request that gives up after `timeout`.
fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Creates one shard's Raft clients.
#[derive(Debug, Clone)]
pub struct ShardNetwork {
    pub shard: u32,
    pub connections: Connections,
}

impl RaftNetworkFactory<TypeConfig> for ShardNetwork {
    type Network = ShardPeer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        ShardPeer { shard: self.shard, target, addr: node.addr.clone(), connections: self.connections.clone() }
    }
}

/// One shard's link to one peer.
#[derive(Debug)]
pub struct ShardPeer {
    shard: u32,
    target: NodeId,
    addr: String,
    connections: Connections,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

fn unreachable<E: std::error::Error>(e: &impl std::fmt::Display) -> RpcErr<E> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
}

fn wrong_reply<E: std::error::Error>() -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&AnyError::error("the peer answered with another kind of frame")))
}

fn status_err<E: std::error::Error>(s: tonic::Status) -> RpcErr<E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => unreachable(&s),
        _ => RPCError::Network(NetworkError::new(&AnyError::error(s.to_string()))),
    }
}

impl ShardPeer {
    fn client<E: std::error::Error>(&self) -> Result<PeerClientT, RpcErr<E>> {
        self.connections.client(&self.addr).map_err(|e| unreachable(&e))
    }

    fn remote<E: std::error::Error>(&self, e: &peer::RemoteError) -> RpcErr<E> {
        let err = AnyError::error(format!("node {}: {}", self.target, e.message));
        if e.fatal {
            RPCError::Unreachable(Unreachable::new(&err))
        } else {
            RPCError::Network(NetworkError::new(&err))
        }
    }
}

impl RaftNetwork<TypeConfig> for ShardPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let msg = peer::AppendEntriesRequest {
            shard: self.shard,
            vote: Some(vote_to_pb(&rpc.vote)),
            prev_log_id: opt_log_id_to_pb(rpc.prev_log_id.as_ref()),
            entries: rpc.entries.iter().map(entry_to_pb).collect(),
            leader_commit: opt_log_id_to_pb(rpc.leader_commit.as_ref()),
        };
        let reply = self.connections.call(&self.addr, Body::AppendEntries(msg), option.hard_ttl()).await;
        let Body::AppendEntriesReply(resp) = reply.map_err(status_err)? else { return Err(wrong_reply()) };
        if let Some(e) = &resp.error {
            return Err(self.remote(e));
        }
        use peer::append_entries_response::Result as R;
        match resp.result {
            Some(R::Success(_)) => Ok(AppendEntriesResponse::Success),
            Some(R::PartialSuccess(p)) => {
                Ok(AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(p.matching.as_ref())))
            }
            Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Some(R::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(vote_from_pb(Some(&v)))),
            None => Err(RPCError::Network(NetworkError::new(&AnyError::error("empty append-entries response")))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.connections.stats.snapshot_chunks.fetch_add(1, Ordering::Relaxed);
        let msg = peer::InstallSnapshotRequest {
            shard: self.shard,
            vote: Some(vote_to_pb(&rpc.vote)),
            meta: Some(snapshot_meta_to_pb(&rpc.meta)),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let resp = self
            .client()?
            .install_snapshot(with_timeout(msg, option.hard_ttl()))
            .await
            .map_err(status_err)?
            .into_inner();
        if let Some(e) = &resp.error {
            if e.snapshot_mismatch {
                // The follower lost track of the transfer (e.g. it restarted): openraft resends
                // from offset 0 on this error.
                let segment = |offset| openraft::SnapshotSegmentId { id: e.message.clone(), offset };
                let mismatch = openraft::error::SnapshotMismatch { expect: segment(0), got: segment(0) };
                return Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )));
            }
            return Err(self.remote(e));
        }
        Ok(InstallSnapshotResponse { vote: vote_from_pb(resp.vote.as_ref()) })
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        let msg = peer::VoteRequest {
            shard: self.shard,
            vote: Some(vote_to_pb(&rpc.vote)),
            last_log_id: opt_log_id_to_pb(rpc.last_log_id.as_ref()),
        };
        let reply = self.connections.call(&self.addr, Body::Vote(msg), option.hard_ttl()).await;
        let Body::VoteReply(resp) = reply.map_err(status_err)? else { return Err(wrong_reply()) };
        if let Some(e) = &resp.error {
            return Err(self.remote(e));
        }
        Ok(VoteResponse {
            vote: vote_from_pb(resp.vote.as_ref()),
            vote_granted: resp.vote_granted,
            last_log_id: opt_log_id_from_pb(resp.last_log_id.as_ref()),
        })
    }
}
