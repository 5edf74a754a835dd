//! The region link: the door between the regions of a deployment (`meridian.link.v1`), on
//! its own listener (`link-listen`) behind the link credential.
//!
//! Today it carries the handshake: every node dials one node of every other region
//! ([`spawn_dialer`]) with `Link/Hello`, naming its region and the digest of its topology
//! file; a region started on a different topology file is told `TOPOLOGY_MISMATCH` and is
//! never linked to. The state of each link is in `Admin/ClusterStatus` and `/metrics`.
//! Forwarded requests, cross-region effects and remote reads go over the same door.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use meridian_proto::link::link_client::LinkClient;
use meridian_proto::link::link_server::{Link, LinkServer};
use meridian_proto::link::{
    AuditRequest, AuditResponse, ClaimRequest, ClaimResponse, DeliverEffectsRequest, DeliverEffectsResponse,
    ForwardRequest, ForwardResponse, HeadsRequest, HeadsResponse, HelloRequest, HelloResponse, LookupRequest,
    LookupResponse, WatchRequest,
};
use meridian_raft::credential::{AttachCredential, ClusterCredential, DoorStats, RequireCredential};
use meridian_regions::RegionsFile;
use tonic::codegen::InterceptedService;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

/// How often a link is checked again once it is up.
const RECHECK: Duration = Duration::from_secs(2);
/// Longest pause between attempts on a link that is down.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What this node knows of its link to another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not reached yet, or not answering.
    Down(String),
    /// Reached, on the same topology.
    Up { node_id: u64, addr: String },
    /// Reached, but started on another topology file: never used.
    Mismatch(String),
}

impl LinkState {
    pub fn name(&self) -> &'static str {
        match self {
            LinkState::Down(_) => "down",
            LinkState::Up { .. } => "up",
            LinkState::Mismatch(_) => "topology-mismatch",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            LinkState::Down(why) | LinkState::Mismatch(why) => why.clone(),
            LinkState::Up { node_id, addr } => format!("node {node_id} at {addr}"),
        }
    }
}

/// This node's links to the other regions, by region code.
#[derive(Debug, Default)]
pub struct RegionLinks {
    states: Mutex<BTreeMap<String, LinkState>>,
    /// Per region, wakes its dialer early (a call found the link broken).
    wake: Mutex<BTreeMap<String, Arc<Notify>>>,
}

impl RegionLinks {
    pub fn snapshot(&self) -> BTreeMap<String, LinkState> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn state(&self, region: &str) -> Option<LinkState> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).get(region).cloned()
    }

    fn set(&self, region: &str, state: LinkState) -> Option<LinkState> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).insert(region.to_owned(), state)
    }

    fn waker(&self, region: &str) -> Arc<Notify> {
        self.wake.lock().unwrap_or_else(|p| p.into_inner()).entry(region.to_owned()).or_default().clone()
    }

    /// A call over the link to `region` failed: requests for the region fail at once from
    /// now on, and its dialer checks again (and tries its other nodes) right away.
    pub fn mark_down(&self, region: &str, why: String) {
        let before = self.set(region, LinkState::Down(why.clone()));
        if matches!(before, Some(LinkState::Up { .. })) {
            tracing::warn!(region, %why, "region link down");
        }
        self.waker(region).notify_one();
    }
}

/// Who this node is on the link.
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    pub region: String,
    pub node_id: u64,
    pub digest: String,
}

/// The region-link service of one node.
#[derive(Debug, Clone)]
pub struct LinkService {
    me: LinkIdentity,
    /// What serves the calls beyond the handshake.
    ctx: crate::api::Context,
}

impl LinkService {
    pub fn new(me: LinkIdentity, ctx: crate::api::Context) -> Self {
        Self { me, ctx }
    }

    /// The service behind the link credential.
    pub fn into_server(
        self,
        credential: &ClusterCredential,
        stats: Arc<DoorStats>,
    ) -> InterceptedService<LinkServer<Self>, RequireCredential> {
        LinkServer::with_interceptor(self, credential.require(stats))
    }
}

fn mismatch(theirs: &HelloRequest, mine: &LinkIdentity) -> Status {
    let mut status = Status::failed_precondition(format!(
        "region {} (node {}) runs on topology {}, region {} on topology {}: start every region on the same \
         regions.toml",
        theirs.region,
        theirs.node_id,
        short(&theirs.topology_digest),
        mine.region,
        short(&mine.digest)
    ));
    status.metadata_mut().insert(
        meridian_proto::REASON_METADATA_KEY,
        MetadataValue::from_static(meridian_proto::reasons::TOPOLOGY_MISMATCH),
    );
    status
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[tonic::async_trait]
impl Link for LinkService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let theirs = request.into_inner();
        if theirs.topology_digest != self.me.digest {
            tracing::error!(
                region = %theirs.region,
                node = theirs.node_id,
                theirs = short(&theirs.topology_digest),
                ours = short(&self.me.digest),
                "refused a region link: the caller runs on another topology file"
            );
            return Err(mismatch(&theirs, &self.me));
        }
        Ok(Response::new(HelloResponse {
            region: self.me.region.clone(),
            node_id: self.me.node_id,
            topology_digest: self.me.digest.clone(),
            not_serving: !crate::dr::serving(self.ctx.dr.as_deref()),
        }))
    }

    async fn forward(&self, request: Request<ForwardRequest>) -> Result<Response<ForwardResponse>, Status> {
        Ok(Response::new(crate::region_calls::forward(&self.ctx, request.into_inner()).await?))
    }

    async fn claim(&self, request: Request<ClaimRequest>) -> Result<Response<ClaimResponse>, Status> {
        Ok(Response::new(crate::region_calls::claim(&self.ctx, request.into_inner()).await?))
    }

    async fn lookup(&self, request: Request<LookupRequest>) -> Result<Response<LookupResponse>, Status> {
        Ok(Response::new(crate::region_calls::lookup(&self.ctx, request.into_inner()).await?))
    }

    async fn heads(&self, request: Request<HeadsRequest>) -> Result<Response<HeadsResponse>, Status> {
        Ok(Response::new(crate::region_calls::heads(&self.ctx, request.into_inner()).await?))
    }

    async fn deliver_effects(
        &self,
        request: Request<DeliverEffectsRequest>,
    ) -> Result<Response<DeliverEffectsResponse>, Status> {
        Ok(Response::new(crate::region_calls::deliver_effects(&self.ctx, request.into_inner()).await?))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<meridian_proto::api::SubscribeEvent, Status>>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(crate::api::subscribe::watch(&self.ctx, request.into_inner())?))
    }

    async fn audit(&self, _request: Request<AuditRequest>) -> Result<Response<AuditResponse>, Status> {
        Ok(Response::new(AuditResponse { audit: Some(crate::audit::this_node(&self.ctx).await?) }))
    }
}

/// How this node dials other regions.
#[derive(Debug, Clone)]
pub struct LinkDialing {
    pub credential: ClusterCredential,
    /// `[link-tls]`, when set.
    pub tls: Option<ClientTlsConfig>,
}

/// A client of one remote link address, over one lazily connected channel that the
/// periodic checks (and later calls) share; it reconnects by itself after a failure.
pub(crate) type RemoteLink = LinkClient<InterceptedService<Channel, AttachCredential>>;

impl LinkDialing {
    pub(crate) fn remote(&self, addr: &str) -> Result<RemoteLink, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("{addr}: TLS: {e}"))?;
        }
        Ok(LinkClient::with_interceptor(endpoint.connect_lazy(), self.credential.attach()))
    }
}

/// One Hello to `addr`: the link's state as it answered.
async fn hello(client: &mut RemoteLink, addr: &str, me: &LinkIdentity, region: &str) -> LinkState {
    let request = HelloRequest { region: me.region.clone(), node_id: me.node_id, topology_digest: me.digest.clone() };
    match client.hello(request).await {
        Ok(r) => {
            let r = r.into_inner();
            if r.region != region {
                LinkState::Down(format!("{addr} answered as region {}, the topology says {region}", r.region))
            } else if r.topology_digest != me.digest {
                LinkState::Mismatch(format!("{addr} runs on topology {}", short(&r.topology_digest)))
            } else if r.not_serving {
                LinkState::Down(format!(
                    "{addr} (node {}) does not serve region {region} now (standby or fenced)",
                    r.node_id
                ))
            } else {
                LinkState::Up { node_id: r.node_id, addr: addr.to_owned() }
            }
        }
        Err(status) => {
            let reason = status.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok());
            if reason == Some(meridian_proto::reasons::TOPOLOGY_MISMATCH) {
                LinkState::Mismatch(status.message().to_owned())
            } else {
                LinkState::Down(format!("{addr}: {}", status.message()))
            }
        }
    }
}

/// Keeps this node's link to every other region of `file` checked, for as long as the
/// process runs: each region's nodes are tried in turn until one answers.
pub fn spawn_dialer(links: Arc<RegionLinks>, file: &RegionsFile, me: LinkIdentity, dialing: LinkDialing) {
    for region in file.regions.iter().filter(|r| r.code != me.region) {
        // The standby's nodes last: they answer as serving only after a promotion.
        let addrs: Vec<String> = region.all_nodes().filter_map(|n| n.link_addr.clone()).collect();
        let code = region.code.clone();
        if addrs.is_empty() {
            links.set(&code, LinkState::Down("the topology gives its nodes no link-addr".into()));
            continue;
        }
        links.set(&code, LinkState::Down("not reached yet".into()));
        let (links, me) = (links.clone(), me.clone());
        let wake = links.waker(&code);
        let mut remotes: Vec<(String, Result<RemoteLink, String>)> =
            addrs.into_iter().map(|addr| (addr.clone(), dialing.remote(&addr))).collect();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            let mut next = 0;
            loop {
                let count = remotes.len();
                let (addr, remote) = &mut remotes[next % count];
                let state = match remote {
                    Ok(client) => hello(client, addr, &me, &code).await,
                    Err(why) => LinkState::Down(why.clone()),
                };
                let up = matches!(state, LinkState::Up { .. });
                let before = links.set(&code, state.clone());
                if before.as_ref().map(LinkState::name) != Some(state.name()) {
                    match &state {
                        LinkState::Up { .. } => {
                            tracing::info!(region = %code, link = %state.detail(), "region link up")
                        }
                        LinkState::Mismatch(why) => {
                            tracing::error!(region = %code, %why, "region link refused: topology mismatch")
                        }
                        LinkState::Down(why) => tracing::warn!(region = %code, %why, "region link down"),
                    }
                }
                if up {
                    pause = Duration::from_millis(200);
                    tokio::select! {
                        _ = tokio::time::sleep(RECHECK) => {}
                        _ = wake.notified() => next += 1,
                    }
                } else {
                    next += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = wake.notified() => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        });
    }
}
