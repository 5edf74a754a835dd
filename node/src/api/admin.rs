//! The `Admin` service: accounts, tokens, cluster status and membership. Admin tokens only.

use std::collections::HashMap;
use std::sync::Arc;

use meridian_domain::apply::Reply;
use meridian_domain::{Command, EventOffset, Reason, RegionCode, Rejection, ShardId, UserId};
use meridian_proto::api::{self, admin_server::Admin};
use meridian_raft::Member;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::wire::logged_event_to_wire;
use super::{now_unix, Context};

/// Events of a `ReadEvents` page when the request gives no limit.
const DEFAULT_EVENT_PAGE: u32 = 100;
/// Most events of a `ReadEvents` page.
const MAX_EVENT_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: Context,
}

impl AdminService {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    async fn create_user(&self, req: Request<api::CreateUserRequest>) -> Result<api::CreateUserResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let user = UserId::parse(&req.get_ref().user_id)?;
        let home_region = if req.get_ref().home_region.is_empty() {
            self.ctx.topology.region().clone()
        } else {
            RegionCode::parse(&req.get_ref().home_region)?
        };
        if let Some(geo) = &self.ctx.geo {
            if !geo.knows(&home_region) {
                return Err(Rejection::new(
                    Reason::RegionNotServed,
                    format!("region {home_region} is not in the deployment's topology"),
                )
                .into());
            }
            if &home_region != self.ctx.topology.region() {
                return geo.forward(&home_region, "Admin/CreateUser", &req).await;
            }
            // The id is claimed in the directory first: the first region to claim it keeps it,
            // so the same id is never created in two regions, however the creates race.
            let holder = geo.claim(&user, &home_region).await?;
            if holder != home_region {
                return Err(Rejection::new(
                    Reason::UserExists,
                    format!("user {user} already exists, in region {holder}: user ids are unique across regions"),
                )
                .into());
            }
        } else if !self.ctx.topology.serves(&home_region) {
            return Err(Rejection::new(
                Reason::RegionNotServed,
                format!("region {home_region} is not served here (this is {})", self.ctx.topology.region()),
            )
            .into());
        }
        let body = req.into_inner();
        // The nickname's length, like every stateless rule, is checked at ingress by `propose`.
        let shard = self.ctx.topology.user_shard(&user);
        let command = Command::CreateUser { user, home_region, nickname: body.nickname };
        let mut results = self.ctx.node.propose(shard, &[command]).await?;
        match results.pop() {
            Some(Ok(Reply::UserCreated { user, home_region, created })) => {
                Ok(api::CreateUserResponse { user_id: user.to_string(), home_region: home_region.to_string(), created })
            }
            Some(Err(r)) => Err(r.into()),
            other => Err(ApiError::Internal(format!("unexpected reply to create-user: {other:?}"))),
        }
    }

    async fn delete_user(&self, req: Request<api::DeleteUserRequest>) -> Result<api::DeleteUserResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let user = UserId::parse(&req.get_ref().user_id)?;
        if let Some(geo) = &self.ctx.geo {
            let home = geo.require_home(&user).await?;
            if &home != self.ctx.topology.region() {
                return geo.forward(&home, "Admin/DeleteUser", &req).await;
            }
        }
        self.ctx.delete_account(user).await
    }

    fn issue_token(&self, req: Request<api::IssueUserTokenRequest>) -> Result<api::IssueUserTokenResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let body = req.into_inner();
        let user = UserId::parse(&body.user_id)?;
        let ttl = if body.ttl_seconds == 0 { self.ctx.token_ttl_seconds } else { body.ttl_seconds };
        let expires = now_unix().saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        Ok(api::IssueUserTokenResponse {
            token: self.ctx.signer.issue_user(user.as_str(), expires),
            expires_at_unix: expires,
        })
    }

    async fn read_events(&self, req: Request<api::ReadEventsRequest>) -> Result<api::ReadEventsResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let body = req.into_inner();
        let shards = self.ctx.node.shard_count();
        if body.shard >= shards {
            return Err(Rejection::new(
                Reason::ShardOutOfRange,
                format!("shard {} does not exist: the region has shards 0..{shards}", body.shard),
            )
            .into());
        }
        let limit = match body.limit {
            0 => DEFAULT_EVENT_PAGE,
            n if n <= MAX_EVENT_PAGE => n,
            n => {
                return Err(Rejection::new(
                    Reason::PageLimitInvalid,
                    format!("limit {n} is too large: at most {MAX_EVENT_PAGE} events a page"),
                )
                .into())
            }
        };
        let shard = ShardId(body.shard);
        self.ctx.node.read_barrier(shard).await?;
        let from = EventOffset {
            log_index: body.from_index,
            command: body.from_command,
            event: u16::try_from(body.from_event).unwrap_or(u16::MAX),
        };
        let store = self.ctx.node.store(shard)?;
        let events = crate::archive::events_from(self.ctx.archive.as_deref(), store, from, limit as usize).await?;
        // Just past the last event: the next event of its command, wherever that is.
        let next = events.last().map_or(from, |last| last.offset.next());
        let region = self.ctx.node.region();
        Ok(api::ReadEventsResponse {
            events: events.iter().map(|logged| logged_event_to_wire(region, shard, logged)).collect(),
            next_index: next.log_index,
            next_command: next.command,
            next_event: u32::from(next.event),
        })
    }

    async fn verify_projections(
        &self,
        req: Request<api::VerifyProjectionsRequest>,
    ) -> Result<api::VerifyProjectionsResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let node = self.ctx.node.clone();
        // Archived segments are replayed first: fetched here, then handed to the replay. A
        // segment sealed meanwhile is fetched on a next attempt.
        let mut cold: Arc<HashMap<String, Vec<meridian_domain::Event>>> = Arc::default();
        let mut attempts = 0;
        let checks = loop {
            attempts += 1;
            for shard in node.shards() {
                for segment in shard.store.archived_segments()? {
                    if cold.contains_key(&segment.key) {
                        continue;
                    }
                    let archive = self.ctx.archive.as_deref().ok_or(crate::archive::ArchiveError::NotConfigured)?;
                    let events = archive.segment_events(&segment, segment.first, usize::MAX).await?;
                    Arc::make_mut(&mut cold).insert(segment.key.clone(), events.into_iter().map(|e| e.event).collect());
                }
            }
            let (replica, segments) = (node.clone(), cold.clone());
            // Reads every shard's whole state: off the async workers.
            let outcome = tokio::task::spawn_blocking(move || {
                let cold = |s: &meridian_domain::records::ArchivedSegment| segments.get(&s.key).cloned();
                replica.shards().iter().map(|s| s.store.verify_projections_with(&cold)).collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| ApiError::Internal(format!("verification task: {e}")))?;
            let sealed_meanwhile = node
                .shards()
                .iter()
                .map(|s| s.store.archived_segments())
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .flatten()
                .any(|s| !cold.contains_key(&s.key));
            match outcome {
                Err(_) if sealed_meanwhile && attempts < 5 => continue,
                outcome => break outcome?,
            }
        };
        let shards = checks
            .into_iter()
            .map(|c| {
                if let Some(d) = &c.difference {
                    tracing::error!(shard = c.shard.0, difference = %d, "projections differ from a replay of the event log");
                }
                api::ShardProjections {
                    shard: c.shard.0,
                    equal: c.difference.is_none(),
                    applied_index: c.applied_index,
                    events_replayed: c.events,
                    keys_compared: c.keys,
                    difference: c.difference.map(|d| d.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(api::VerifyProjectionsResponse { node_id: self.ctx.node.node_id, shards })
    }

    async fn logic_version(
        &self,
        req: Request<api::LogicVersionRequest>,
    ) -> Result<api::LogicVersionResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let raise_to = req.into_inner().raise_to;
        let report = if raise_to == 0 {
            self.ctx.node.logic_version().await
        } else {
            let newest = meridian_domain::apply::LOGIC_VERSION;
            if raise_to > newest {
                return Err(Rejection::new(
                    Reason::LogicVersionUnsupported,
                    format!("logic version {raise_to} is newer than this node implements (1..={newest})"),
                )
                .into());
            }
            match self.ctx.node.raise_logic_version(raise_to).await {
                Ok(report) => {
                    tracing::info!(version = raise_to, "raised the cluster logic version");
                    report
                }
                Err(meridian_raft::RaiseError::Refused(r)) => return Err(r.into()),
                Err(meridian_raft::RaiseError::Raft(e)) => return Err(e.into()),
            }
        };
        Ok(api::LogicVersionResponse {
            nodes: report
                .nodes
                .into_iter()
                .map(|n| api::NodeLogicVersion {
                    node_id: n.node_id,
                    max_logic_version: n.max_logic_version.clone().unwrap_or(0),
                    error: n.max_logic_version.err().unwrap_or_default(),
                })
                .collect(),
            shards: report
                .shards
                .into_iter()
                .map(|s| api::ShardLogicVersion { shard: s.shard, logic_version: s.logic_version, epoch: s.epoch })
                .collect(),
        })
    }

    fn status(&self, req: Request<api::ClusterStatusRequest>) -> Result<api::ClusterStatusResponse, ApiError> {
        self.ctx.require_admin(&req)?;
        let include_hash = req.get_ref().include_state_hash;
        let shards = self
            .ctx
            .node
            .status(include_hash)
            .into_iter()
            .map(|s| {
                let (hashed_at_index, state_hash) = s.state_hash.unwrap_or_default();
                api::ShardStatus {
                    shard: s.shard,
                    leader: s.leader.unwrap_or(0),
                    term: s.term,
                    last_log_index: s.last_log_index,
                    applied_index: s.applied_index,
                    purged_index: s.purged_index,
                    snapshot_index: s.snapshot_index,
                    state_hash,
                    hashed_at_index,
                    voters: s.voters,
                    learners: s.learners,
                    snapshots_installed: s.snapshots_installed,
                    role: s.role,
                }
            })
            .collect();
        let region_links = self
            .ctx
            .links
            .snapshot()
            .into_iter()
            .map(|(region, state)| api::RegionLink { region, state: state.name().to_owned(), detail: state.detail() })
            .collect();
        Ok(api::ClusterStatusResponse {
            node_id: self.ctx.node.node_id,
            region: self.ctx.topology.region().to_string(),
            shards,
            region_links,
        })
    }
}

/// How long a following change stream waits before looking again when it has sent all.
const CHANGES_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl AdminService {
    fn changes_(
        &self,
        req: Request<api::ChangesRequest>,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<api::ChangeEvent, Status>>, ApiError> {
        self.ctx.require_admin(&req)?;
        let body = req.into_inner();
        let shards = self.ctx.node.shard_count();
        let mut next: Vec<EventOffset> =
            (0..shards).map(|_| EventOffset { log_index: 1, command: 0, event: 0 }).collect();
        for from in &body.from {
            let Some(slot) = next.get_mut(from.shard as usize) else {
                return Err(Rejection::new(
                    Reason::ShardOutOfRange,
                    format!("shard {} does not exist: the region has shards 0..{shards}", from.shard),
                )
                .into());
            };
            *slot = EventOffset {
                log_index: from.log_index.max(1),
                command: from.command,
                event: u16::try_from(from.event).unwrap_or(u16::MAX),
            };
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let node = self.ctx.node.clone();
        let archive = self.ctx.archive.clone();
        tokio::spawn(async move {
            let region = node.region().clone();
            loop {
                let mut sent = 0usize;
                for (i, offset) in next.iter_mut().enumerate() {
                    let shard = ShardId(i as u32);
                    let events = match node.store(shard).map_err(ApiError::from) {
                        Ok(store) => crate::archive::events_from(archive.as_deref(), store, *offset, 256)
                            .await
                            .map_err(ApiError::from),
                        Err(e) => Err(e),
                    };
                    let events = match events {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                    };
                    for logged in &events {
                        *offset = logged.offset.next();
                        let event = api::ChangeEvent {
                            event: Some(logged_event_to_wire(&region, shard, logged)),
                            next: Some(api::ShardOffset {
                                shard: shard.0,
                                log_index: offset.log_index,
                                command: offset.command,
                                event: u32::from(offset.event),
                            }),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    sent += events.len();
                }
                if sent == 0 {
                    if !body.follow {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(CHANGES_POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type ChangesStream = tokio_stream::wrappers::ReceiverStream<Result<api::ChangeEvent, Status>>;

    async fn changes(&self, req: Request<api::ChangesRequest>) -> Result<Response<Self::ChangesStream>, Status> {
        Ok(Response::new(self.changes_(req)?))
    }

    async fn archive(&self, req: Request<api::ArchiveRequest>) -> Result<Response<api::ArchiveResponse>, Status> {
        self.ctx.require_admin(&req)?;
        Ok(Response::new(crate::archive::admin::answer(&self.ctx, req.get_ref()).await?))
    }

    async fn dr(&self, req: Request<api::DrRequest>) -> Result<Response<api::DrResponse>, Status> {
        self.ctx.require_admin(&req)?;
        let req = req.into_inner();
        let Some(dr) = self.ctx.dr.as_ref() else {
            // Without a standby in the topology a node still says what it is, and which nodes
            // the asked region has.
            if api::DrOp::try_from(req.op) != Ok(api::DrOp::DrStatus) {
                return Err(ApiError::from(Rejection::new(
                    Reason::NodeInvalid,
                    format!("region {} lists no standby in the topology file", self.ctx.topology.region()),
                ))
                .into());
            }
            return Ok(Response::new(self.dr_status_without_standby(&req.region)));
        };
        let mut answer = dr.answer(&self.ctx, &req).await.map_err(ApiError::from)?;
        if !req.region.is_empty() && req.region != answer.region {
            answer.nodes = self.region_nodes(&req.region)?;
        }
        Ok(Response::new(answer))
    }

    async fn restore_conversation(
        &self,
        req: Request<api::RestoreConversationRequest>,
    ) -> Result<Response<api::RestoreConversationResponse>, Status> {
        self.ctx.require_admin(&req)?;
        Ok(Response::new(crate::dr::restore_conversation(&self.ctx, req.get_ref()).await?))
    }

    async fn audit_residency(
        &self,
        req: Request<api::AuditResidencyRequest>,
    ) -> Result<Response<api::AuditResidencyResponse>, Status> {
        self.ctx.require_admin(&req)?;
        let nodes = if req.get_ref().this_node_only {
            vec![crate::audit::this_node(&self.ctx).await?]
        } else {
            crate::audit::every_node(&self.ctx).await?
        };
        Ok(Response::new(api::AuditResidencyResponse { nodes }))
    }

    async fn create_user(
        &self,
        req: Request<api::CreateUserRequest>,
    ) -> Result<Response<api::CreateUserResponse>, Status> {
        Ok(Response::new(AdminService::create_user(self, req).await?))
    }

    async fn delete_user(
        &self,
        req: Request<api::DeleteUserRequest>,
    ) -> Result<Response<api::DeleteUserResponse>, Status> {
        Ok(Response::new(AdminService::delete_user(self, req).await?))
    }

    async fn issue_user_token(
        &self,
        req: Request<api::IssueUserTokenRequest>,
    ) -> Result<Response<api::IssueUserTokenResponse>, Status> {
        Ok(Response::new(self.issue_token(req)?))
    }

    async fn cluster_status(
        &self,
        req: Request<api::ClusterStatusRequest>,
    ) -> Result<Response<api::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.status(req)?))
    }

    async fn add_node(&self, req: Request<api::AddNodeRequest>) -> Result<Response<api::AddNodeResponse>, Status> {
        self.ctx.require_admin(&req)?;
        let body = req.into_inner();
        if body.node_id == 0 || body.addr.is_empty() || body.peer_addr.is_empty() {
            return Err(ApiError::Rejected(Rejection::new(
                Reason::NodeInvalid,
                "add-node needs a node id >= 1, its client address and its peer address",
            ))
            .into());
        }
        let member = Member::new(body.peer_addr, body.addr);
        let (voters, learners) =
            self.ctx.node.add_node(body.node_id, &member, body.learner_only).await.map_err(ApiError::from)?;
        Ok(Response::new(api::AddNodeResponse { voters, learners }))
    }

    async fn read_events(
        &self,
        req: Request<api::ReadEventsRequest>,
    ) -> Result<Response<api::ReadEventsResponse>, Status> {
        Ok(Response::new(AdminService::read_events(self, req).await?))
    }

    async fn verify_projections(
        &self,
        req: Request<api::VerifyProjectionsRequest>,
    ) -> Result<Response<api::VerifyProjectionsResponse>, Status> {
        Ok(Response::new(AdminService::verify_projections(self, req).await?))
    }

    async fn logic_version(
        &self,
        req: Request<api::LogicVersionRequest>,
    ) -> Result<Response<api::LogicVersionResponse>, Status> {
        Ok(Response::new(AdminService::logic_version(self, req).await?))
    }

    async fn remove_node(
        &self,
        req: Request<api::RemoveNodeRequest>,
    ) -> Result<Response<api::RemoveNodeResponse>, Status> {
        self.ctx.require_admin(&req)?;
        let (voters, learners) = self.ctx.node.remove_node(req.into_inner().node_id).await.map_err(ApiError::from)?;
        Ok(Response::new(api::RemoveNodeResponse { voters, learners }))
    }
}

impl AdminService {
    /// The nodes of `region` in the topology file (empty `region`: none).
    fn region_nodes(&self, region: &str) -> Result<Vec<api::DrNode>, ApiError> {
        if region.is_empty() {
            return Ok(vec![]);
        }
        let spec =
            self.ctx.geo.as_ref().and_then(|g| g.file().region(region).cloned()).ok_or_else(|| {
                Rejection::new(Reason::RegionInvalid, format!("region {region} is not in the topology"))
            })?;
        Ok(crate::dr::region_nodes(&spec))
    }

    fn dr_status_without_standby(&self, region: &str) -> api::DrResponse {
        let node = &self.ctx.node;
        api::DrResponse {
            node_id: node.node_id,
            region: self.ctx.topology.region().to_string(),
            role: node.region_role().as_str().to_owned(),
            epoch: node.region_epoch(),
            nodes: self.region_nodes(region).unwrap_or_default(),
            detail: "this node's region lists no standby".into(),
            ..Default::default()
        }
    }
}
