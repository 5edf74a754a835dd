//! The peer gRPC service: Raft RPCs and forwarded proposals, reads and membership changes,
//! dispatched to the right shard. Served on the peer listener only, behind the cluster
//! credential ([`crate::credential`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use meridian_domain::{Reason, Rejection, ShardId};
use meridian_proto::peer::{self, frame::Body, peer_server::Peer, peer_server::PeerServer};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::*;
use crate::credential::{ClusterCredential, RequireCredential};
use crate::mux;
use crate::network::MAX_PEER_MESSAGE_BYTES;
use crate::node::RaftNode;
use crate::types::*;

/// Frames of one peer stream handled at once; the stream's reader waits beyond that.
pub const STREAM_FRAMES_IN_FLIGHT: usize = 1024;

#[derive(Debug, Clone)]
pub struct PeerService {
    node: Arc<RaftNode>,
    /// Set when the node stops: open peer streams end, so the server's graceful shutdown
    /// does not wait on them (a peer's stream never ends by itself).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(node: Arc<RaftNode>, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { node, stop }
    }

    /// The tonic server for this service, with message limits sized for snapshot chunks,
    /// behind the cluster credential check: a call without the credential is refused before
    /// its body is even decoded.
    pub fn into_server(
        self,
        credential: &ClusterCredential,
    ) -> InterceptedService<PeerServer<Self>, RequireCredential> {
        let stats = self.node.door.clone();
        let server = PeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        InterceptedService::new(server, credential.require(stats))
    }

    /// A promoted standby takes Raft calls only from its members (ADR 0005): the old
    /// primary's nodes, should they come back, cannot lead or vote in it.
    fn members_only(&self, shard: u32, vote: Option<&peer::Vote>) -> Result<(), Status> {
        let sender = vote.map_or(0, |v| v.node_id);
        if self.node.refuses_raft_from(shard, sender) {
            let mut status = Status::failed_precondition(format!(
                "node {} serves this region from a promotion: node {sender} is not a member of shard {shard}",
                self.node.node_id
            ));
            status.metadata_mut().insert(
                meridian_proto::REASON_METADATA_KEY,
                MetadataValue::from_static(meridian_proto::reasons::REGION_FENCED),
            );
            return Err(status);
        }
        Ok(())
    }

    fn raft(&self, shard: u32) -> Result<&Raft, Status> {
        self.node.shard(ShardId(shard)).map(|s| &s.raft).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// `INVALID_ARGUMENT` with the rejection's reason in `x-meridian-reason`.
fn refused(rejection: &Rejection) -> Status {
    let mut status = Status::invalid_argument(rejection.to_string());
    if let Ok(v) = MetadataValue::try_from(rejection.reason.as_str()) {
        status.metadata_mut().insert(meridian_proto::REASON_METADATA_KEY, v);
    }
    status
}

/// Checks a forwarded membership change before it reaches Raft.
fn check_membership_change(req: &peer::ChangeMembershipRequest) -> Result<(), Rejection> {
    use peer::change_membership_request::Op;
    let invalid = |m: String| Err(Rejection::new(Reason::NodeInvalid, m));
    if req.node_id == 0 && req.op != peer::change_membership_request::Op::SwitchVoters as i32 {
        return invalid("node ids start at 1".into());
    }
    match Op::try_from(req.op) {
        Ok(Op::AddLearner) if !is_host_port(&req.addr) || !is_host_port(&req.client_addr) => {
            invalid(format!("a new member needs host:port addresses, got {:?} and {:?}", req.addr, req.client_addr))
        }
        Ok(Op::SwitchVoters) if req.voters.is_empty() || req.voters.contains(&0) || req.voters.len() > 16 => {
            invalid(format!("a switch names 1..=16 voters with ids from 1, got {:?}", req.voters))
        }
        Ok(_) => Ok(()),
        Err(_) => invalid(format!("unknown membership operation {}", req.op)),
    }
}

/// `host:port` with a non-empty host and a port in 1..=65535.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.chars().any(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

fn remote_error<E: std::error::Error>(e: &RaftError<NodeId, E>) -> peer::RemoteError {
    peer::RemoteError { message: e.to_string(), fatal: matches!(e, RaftError::Fatal(_)), snapshot_mismatch: false }
}

impl PeerService {
    async fn append_entries_here(
        &self,
        req: peer::AppendEntriesRequest,
    ) -> Result<peer::AppendEntriesResponse, Status> {
        self.members_only(req.shard, req.vote.as_ref())?;
        let raft = self.raft(req.shard)?;
        let entries = req
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rpc = AppendEntriesRequest {
            vote: vote_from_pb(req.vote.as_ref()),
            prev_log_id: opt_log_id_from_pb(req.prev_log_id.as_ref()),
            entries,
            leader_commit: opt_log_id_from_pb(req.leader_commit.as_ref()),
        };
        use peer::append_entries_response::Result as R;
        let timed = (!rpc.entries.is_empty()).then(std::time::Instant::now);
        let appended = raft.append_entries(rpc).await;
        if let Some(started) = timed {
            self.node.peer_rpc_stats().appended_seconds.since(started);
        }
        Ok(match appended {
            Ok(AppendEntriesResponse::Success) => {
                peer::AppendEntriesResponse { result: Some(R::Success(Default::default())), error: None }
            }
            Ok(AppendEntriesResponse::PartialSuccess(m)) => peer::AppendEntriesResponse {
                result: Some(R::PartialSuccess(peer::PartialSuccess { matching: opt_log_id_to_pb(m.as_ref()) })),
                error: None,
            },
            Ok(AppendEntriesResponse::Conflict) => {
                peer::AppendEntriesResponse { result: Some(R::Conflict(Default::default())), error: None }
            }
            Ok(AppendEntriesResponse::HigherVote(v)) => {
                peer::AppendEntriesResponse { result: Some(R::HigherVote(vote_to_pb(&v))), error: None }
            }
            Err(e) => peer::AppendEntriesResponse { result: None, error: Some(remote_error(&e)) },
        })
    }

    async fn vote_here(&self, req: peer::VoteRequest) -> Result<peer::VoteResponse, Status> {
        self.members_only(req.shard, req.vote.as_ref())?;
        let raft = self.raft(req.shard)?;
        let rpc = VoteRequest {
            vote: vote_from_pb(req.vote.as_ref()),
            last_log_id: opt_log_id_from_pb(req.last_log_id.as_ref()),
        };
        Ok(match raft.vote(rpc).await {
            Ok(r) => peer::VoteResponse {
                vote: Some(vote_to_pb(&r.vote)),
                vote_granted: r.vote_granted,
                last_log_id: opt_log_id_to_pb(r.last_log_id.as_ref()),
                error: None,
            },
            Err(e) => peer::VoteResponse { error: Some(remote_error(&e)), ..Default::default() },
        })
    }

    async fn propose_here(&self, req: peer::ProposeRequest) -> Result<peer::ProposeResponse, Status> {
        let shard = ShardId(req.shard);
        // Decoded and checked into domain commands before anything is proposed; what is
        // proposed is their canonical encoding, not the bytes that came in.
        let commands = self.node.admit(shard, req.commands).map_err(|r| {
            self.node.door.proposals_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(shard = shard.0, rejection = %r, "refused a forwarded proposal");
            refused(&r)
        })?;
        Ok(self.node.propose_local(shard, commands).await)
    }

    /// One frame of the stream, answered: the reply the unary call would have returned, or
    /// its refusal. A frame that is not a request is refused, never fatal.
    async fn answer(&self, frame: peer::Frame) -> peer::Frame {
        let id = frame.id;
        let reply = match frame.body {
            Some(Body::AppendEntries(r)) => self.append_entries_here(r).await.map(Body::AppendEntriesReply),
            Some(Body::Vote(r)) => self.vote_here(r).await.map(Body::VoteReply),
            Some(Body::Propose(r)) => self.propose_here(r).await.map(Body::ProposeReply),
            Some(Body::ReadIndex(r)) => Ok(Body::ReadIndexReply(self.node.read_index_local(ShardId(r.shard)).await)),
            _ => Err(Status::invalid_argument("not a request frame")),
        };
        match reply {
            Ok(body) => peer::Frame { id, body: Some(body), timeout_ms: 0 },
            Err(status) => mux::status_frame(id, &status),
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<peer::AppendEntriesRequest>,
    ) -> Result<Response<peer::AppendEntriesResponse>, Status> {
        self.append_entries_here(request.into_inner()).await.map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<peer::InstallSnapshotRequest>,
    ) -> Result<Response<peer::InstallSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.members_only(req.shard, req.vote.as_ref())?;
        let raft = self.raft(req.shard)?;
        let meta = req.meta.as_ref().ok_or_else(|| Status::invalid_argument("snapshot chunk without meta"))?;
        let rpc = InstallSnapshotRequest {
            vote: vote_from_pb(req.vote.as_ref()),
            meta: snapshot_meta_from_pb(meta),
            offset: req.offset,
            data: req.data,
            done: req.done,
        };
        let resp = match raft.install_snapshot(rpc).await {
            Ok(r) => peer::InstallSnapshotResponse { vote: Some(vote_to_pb(&r.vote)), error: None },
            Err(e) => {
                let mut err = remote_error(&e);
                err.snapshot_mismatch = matches!(e, RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_)));
                peer::InstallSnapshotResponse { vote: None, error: Some(err) }
            }
        };
        Ok(Response::new(resp))
    }

    async fn vote(&self, request: Request<peer::VoteRequest>) -> Result<Response<peer::VoteResponse>, Status> {
        self.vote_here(request.into_inner()).await.map(Response::new)
    }

    async fn propose(&self, request: Request<peer::ProposeRequest>) -> Result<Response<peer::ProposeResponse>, Status> {
        self.propose_here(request.into_inner()).await.map(Response::new)
    }

    async fn read_index(
        &self,
        request: Request<peer::ReadIndexRequest>,
    ) -> Result<Response<peer::ReadIndexResponse>, Status> {
        Ok(Response::new(self.node.read_index_local(ShardId(request.into_inner().shard)).await))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<peer::Frames, Status>> + Send>>;

    /// The node pair's stream ([`crate::mux::serve`]): each frame is handled as it arrives (at
    /// most [`STREAM_FRAMES_IN_FLIGHT`] at once), given up at its caller's timeout, and
    /// answered with a frame of the same id.
    async fn stream(&self, request: Request<Streaming<peer::Frames>>) -> Result<Response<Self::StreamStream>, Status> {
        let service = self.clone();
        let stats = self.node.peer_rpc_stats().clone();
        let replies = mux::serve(request.into_inner(), STREAM_FRAMES_IN_FLIGHT, self.stop.clone(), stats, move |f| {
            let service = service.clone();
            async move { service.answer(f).await }
        });
        Ok(Response::new(Box::pin(replies.map(Ok))))
    }

    async fn signal(&self, request: Request<peer::SignalRequest>) -> Result<Response<peer::SignalResponse>, Status> {
        self.node.signal_here(request.into_inner());
        Ok(Response::new(peer::SignalResponse {}))
    }

    async fn presence(
        &self,
        request: Request<peer::PresenceRequest>,
    ) -> Result<Response<peer::PresenceResponse>, Status> {
        let users = request.into_inner().users;
        if users.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 users a presence call"));
        }
        Ok(Response::new(peer::PresenceResponse { online: self.node.presence_here(users) }))
    }

    async fn node_info(
        &self,
        _request: Request<peer::NodeInfoRequest>,
    ) -> Result<Response<peer::NodeInfoResponse>, Status> {
        Ok(Response::new(self.node.node_info()))
    }

    async fn change_membership(
        &self,
        request: Request<peer::ChangeMembershipRequest>,
    ) -> Result<Response<peer::ChangeMembershipResponse>, Status> {
        let req = request.into_inner();
        check_membership_change(&req).map_err(|r| refused(&r))?;
        Ok(Response::new(self.node.change_membership_local(req).await))
    }
}
