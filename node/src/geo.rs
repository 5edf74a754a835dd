//! A node's view of the other regions: the directory (where each user's home is), the
//! residency rule, and calls to other regions over the region link — forwarded requests,
//! directory claims and lookups, remote conversation heads and cross-region effects.
//!
//! Present only when the node runs on a topology file with more than one region; a
//! single-region node never consults it.
//!
//! **Directory.** A user id is claimed, before its account is created, in the owner region of
//! its *directory key* (HMAC-SHA256 of the id under the deployment's link secret; see
//! [`meridian_regions::residency::owner_region`]). The first claim wins, through the owner
//! region's Raft log, so two regions creating the same id at once cannot both succeed: the
//! second is told `USER_EXISTS`. Only the key and a region code cross borders. A home region
//! never changes once claimed, so a positive answer is cached for the life of the process;
//! a negative one is never cached (the user may be created a moment later).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use meridian_domain::apply::Reply;
use meridian_domain::shard::shard_for;
use meridian_domain::{Command, DirectoryKey, Effect, GroupId, RegionCode, Rejection, ShardId, UserId};
use meridian_proto::api;
use meridian_proto::link as wire;
use meridian_raft::outbox::RemoteEffects;
use meridian_raft::RaftNode;
use meridian_regions::residency;
use meridian_regions::{RegionsFile, Residency};
use prost::Message as _;
use sha2::Sha256;
use tonic::{Request, Status};

use crate::api::error::ApiError;
use crate::link::{LinkDialing, LinkState, RegionLinks, RemoteLink};

/// How long a forwarded request may take (the home region retries leader changes itself).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a directory call, a heads read or an effect delivery may take.
const LINK_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata a forwarded request carries on the receiving side: the region it came through.
/// A request that carries it is never forwarded again.
pub const FORWARDED_FROM: &str = "x-meridian-forwarded-from";

/// The other regions, as this node sees them.
#[derive(Debug)]
pub struct Geo {
    region: RegionCode,
    node_id: u64,
    file: RegionsFile,
    directory_secret: Vec<u8>,
    node: Arc<RaftNode>,
    links: Arc<RegionLinks>,
    /// Per region, one client per node of it (link address, client), in topology order.
    remotes: BTreeMap<String, Vec<(u64, String, RemoteLink)>>,
    /// Homes found in the directory, by key (a user's or a group's never changes).
    homes: Mutex<HashMap<DirectoryKey, RegionCode>>,
}

impl Geo {
    pub fn new(
        region: RegionCode,
        node_id: u64,
        file: RegionsFile,
        link_secret: &[u8],
        node: Arc<RaftNode>,
        links: Arc<RegionLinks>,
        dialing: &LinkDialing,
    ) -> Self {
        let mut remotes = BTreeMap::new();
        for spec in &file.regions {
            let clients = spec
                .all_nodes()
                .filter_map(|n| {
                    let addr = n.link_addr.clone()?;
                    let client = dialing.remote(&addr).ok()?;
                    Some((n.id, addr, client))
                })
                .collect();
            remotes.insert(spec.code.clone(), clients);
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(link_secret).expect("HMAC takes keys of any length");
        mac.update(b"meridian/directory/v1");
        let directory_secret = mac.finalize().into_bytes().to_vec();
        Self { region, node_id, file, directory_secret, node, links, remotes, homes: Mutex::default() }
    }

    pub fn region(&self) -> &RegionCode {
        &self.region
    }

    pub fn file(&self) -> &RegionsFile {
        &self.file
    }

    /// The directory's name for a user id.
    pub fn directory_key(&self, user: &UserId) -> DirectoryKey {
        self.keyed(b"user/", user.as_str())
    }

    /// The directory's name for a group id (groups and users are claimed apart).
    pub fn group_key(&self, group: &GroupId) -> DirectoryKey {
        self.keyed(b"group/", group.as_str())
    }

    fn keyed(&self, kind: &[u8], id: &str) -> DirectoryKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.directory_secret).expect("HMAC takes keys of any length");
        mac.update(kind);
        mac.update(id.as_bytes());
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        DirectoryKey::parse(&hex).expect("64 lowercase hex digits")
    }

    fn owner(&self, key: &DirectoryKey) -> Result<RegionCode, ApiError> {
        residency::owner_region(&self.file, key)
            .ok_or_else(|| ApiError::Internal("the topology file names no region".into()))
    }

    /// The residency policy of a region of the deployment.
    pub fn policy(&self, region: &RegionCode) -> Result<Residency, ApiError> {
        Ok(residency::policy(&self.file, region)?)
    }

    /// Whether `region` is one of the deployment's.
    pub fn knows(&self, region: &RegionCode) -> bool {
        self.file.region(region.as_str()).is_some()
    }

    /// Claims `user`'s id for `region`; the answer is the region that holds it.
    pub async fn claim(&self, user: &UserId, region: &RegionCode) -> Result<RegionCode, ApiError> {
        self.claim_key(self.directory_key(user), region).await
    }

    /// Claims `group`'s id for `region` (where it is created); the region that holds it.
    pub async fn claim_group(&self, group: &GroupId, region: &RegionCode) -> Result<RegionCode, ApiError> {
        self.claim_key(self.group_key(group), region).await
    }

    async fn claim_key(&self, key: DirectoryKey, region: &RegionCode) -> Result<RegionCode, ApiError> {
        let owner = self.owner(&key)?;
        let holder = if owner == self.region {
            self.claim_here(key.clone(), region.clone()).await?
        } else {
            let mut client = self.client(&owner)?;
            let call = client.claim(wire::ClaimRequest { key: key.to_string(), region: region.to_string() });
            let answer = self.call(&owner, LINK_CALL_TIMEOUT, call).await?;
            RegionCode::parse(&answer.region)?
        };
        self.remember(&key, &holder);
        Ok(holder)
    }

    /// Claims a key in this region's directory (this region being its owner).
    pub async fn claim_here(&self, key: DirectoryKey, region: RegionCode) -> Result<RegionCode, ApiError> {
        let shard = shard_for(key.as_str(), self.node.shard_count());
        let mut results = self.node.propose(shard, &[Command::ClaimId { key, region }]).await?;
        match results.pop() {
            Some(Ok(Reply::Claimed { region })) => Ok(region),
            Some(Err(rejection)) => Err(rejection.into()),
            other => Err(ApiError::Internal(format!("unexpected reply to a directory claim: {other:?}"))),
        }
    }

    /// The region holding a key in this region's directory (linearizable).
    pub async fn lookup_here(&self, key: &DirectoryKey) -> Result<Option<RegionCode>, ApiError> {
        let shard = shard_for(key.as_str(), self.node.shard_count());
        self.node.read_barrier(shard).await?;
        Ok(self.node.store(shard)?.claim(key)?)
    }

    /// The home region of `user` by the directory alone (cached once known).
    pub async fn directory_home(&self, user: &UserId) -> Result<Option<RegionCode>, ApiError> {
        self.lookup(self.directory_key(user)).await
    }

    /// The home region of `group` by the directory (cached once known). `None`: no such
    /// group anywhere.
    pub async fn group_home(&self, group: &GroupId) -> Result<Option<RegionCode>, ApiError> {
        self.lookup(self.group_key(group)).await
    }

    async fn lookup(&self, key: DirectoryKey) -> Result<Option<RegionCode>, ApiError> {
        if let Some(home) = self.cached(&key) {
            return Ok(Some(home));
        }
        let owner = self.owner(&key)?;
        let home = if owner == self.region {
            self.lookup_here(&key).await?
        } else {
            let mut client = self.client(&owner)?;
            let answer = self
                .call(&owner, LINK_CALL_TIMEOUT, client.lookup(wire::LookupRequest { key: key.to_string() }))
                .await?;
            if answer.region.is_empty() {
                None
            } else {
                Some(RegionCode::parse(&answer.region)?)
            }
        };
        if let Some(home) = &home {
            self.remember(&key, home);
        }
        Ok(home)
    }

    /// The home region of `user`: this region when its account is here, else the directory's
    /// answer. `None`: no such user anywhere.
    pub async fn home_of(&self, user: &UserId) -> Result<Option<RegionCode>, ApiError> {
        let shard = shard_for(user.as_str(), self.node.shard_count());
        if self.node.store(shard)?.user(user)?.is_some() {
            return Ok(Some(self.region.clone()));
        }
        self.directory_home(user).await
    }

    /// `user`'s home region, or `UNKNOWN_USER`.
    pub async fn require_home(&self, user: &UserId) -> Result<RegionCode, ApiError> {
        self.home_of(user).await?.ok_or_else(|| {
            Rejection::new(meridian_domain::Reason::UnknownUser, format!("no user {user}: create the account first"))
                .into()
        })
    }

    /// The home region of the conversation of `a` and `b`, by the residency rule.
    pub fn conversation_home(
        &self,
        a: (&UserId, &RegionCode),
        b: (&UserId, &RegionCode),
    ) -> Result<RegionCode, ApiError> {
        Ok(residency::conversation_home(&self.file, a, b)?)
    }

    fn cached(&self, key: &DirectoryKey) -> Option<RegionCode> {
        self.homes.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn remember(&self, key: &DirectoryKey, home: &RegionCode) {
        self.homes.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), home.clone());
    }

    /// The client of the node `region`'s link is up to; `REGION_UNAVAILABLE` at once when the
    /// link is down.
    fn client(&self, region: &RegionCode) -> Result<RemoteLink, ApiError> {
        let unavailable = |why: String| ApiError::RegionUnavailable(format!("region {region} is unavailable: {why}"));
        let clients = self.remotes.get(region.as_str()).ok_or_else(|| unavailable("not in the topology".into()))?;
        match self.links.state(region.as_str()) {
            Some(LinkState::Up { addr, .. }) => clients
                .iter()
                .find(|(_, a, _)| *a == addr)
                .map(|(_, _, c)| c.clone())
                .ok_or_else(|| unavailable(format!("no client for {addr}"))),
            Some(state) => Err(unavailable(state.detail())),
            None => Err(unavailable("no link".into())),
        }
    }

    /// One call to `region` with a deadline. A failure of the link itself (no answer, no
    /// reason from the other side) marks the link down, so that the next request fails at
    /// once, and wakes its dialer; an answer of the other side comes back as it is.
    async fn call<T>(
        &self,
        region: &RegionCode,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ApiError> {
        let outcome = match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Status::deadline_exceeded(format!("no answer in {} ms", timeout.as_millis()))),
        };
        match outcome {
            Ok(response) => Ok(response.into_inner()),
            // The node the link reached no longer serves its region (a standby, or fenced by
            // a promotion): look for the one that does.
            Err(status) if is_not_serving(&status) => {
                self.links.mark_down(region.as_str(), format!("the linked node does not serve: {}", status.message()));
                Err(ApiError::RegionUnavailable(format!("region {region} is moving: {}", status.message())))
            }
            Err(status) if status.metadata().get(meridian_proto::REASON_METADATA_KEY).is_some() => {
                Err(ApiError::Remote(status))
            }
            Err(status) => {
                self.links.mark_down(region.as_str(), format!("a call failed: {}", status.message()));
                Err(ApiError::RegionUnavailable(format!("region {region} is unavailable: {}", status.message())))
            }
        }
    }

    /// Sends `req` to `region` as `method` (e.g. `Chat/SendMessage`) and returns its answer,
    /// or its error as it came.
    pub async fn forward<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        region: &RegionCode,
        method: &str,
        req: &Request<Req>,
    ) -> Result<Resp, ApiError> {
        if let Some(from) = req.metadata().get(FORWARDED_FROM) {
            return Err(ApiError::RegionUnavailable(format!(
                "{method} came forwarded from {} but belongs to region {region}: not forwarding it twice (the \
                 regions' directories disagree for now)",
                from.to_str().unwrap_or("?")
            )));
        }
        let meta = |key: &str| req.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let forward = wire::ForwardRequest {
            method: method.to_owned(),
            authorization: meta("authorization"),
            act_as: meta(meridian_proto::ACT_AS_METADATA_KEY),
            body: req.get_ref().encode_to_vec(),
            from_region: self.region.to_string(),
        };
        let mut client = self.client(region)?;
        self.node.door.requests_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = self.call(region, FORWARD_TIMEOUT, client.forward(forward)).await?;
        let response = Resp::decode(answer.body.as_slice())
            .map_err(|e| ApiError::Internal(format!("region {region} answered {method} with a malformed body: {e}")))?;
        tracing::debug!(%region, method, "forwarded a request to its home region");
        Ok(response)
    }

    /// Opens a watch of `user`'s live events in `region` (`Link/Watch`).
    pub async fn watch(
        &self,
        region: &RegionCode,
        request: wire::WatchRequest,
    ) -> Result<tonic::Streaming<api::SubscribeEvent>, ApiError> {
        let mut client = self.client(region)?;
        self.call(region, LINK_CALL_TIMEOUT, client.watch(request)).await
    }

    /// The heads of `conversations` (homed in `region`) as `user`'s list shows them.
    pub async fn heads(
        &self,
        region: &RegionCode,
        user: &UserId,
        conversations: Vec<String>,
    ) -> Result<Vec<api::Conversation>, ApiError> {
        let mut client = self.client(region)?;
        let request = wire::HeadsRequest { user: user.to_string(), conversation_ids: conversations };
        Ok(self.call(region, LINK_CALL_TIMEOUT, client.heads(request)).await?.conversations)
    }

    /// Every node of every region of the topology, with this one first.
    pub fn audit_targets(&self) -> Vec<(RegionCode, u64, String, Option<RemoteLink>)> {
        let mut out = Vec::new();
        for spec in &self.file.regions {
            let Ok(region) = RegionCode::parse(&spec.code) else { continue };
            for n in spec.all_nodes() {
                let client = self
                    .remotes
                    .get(&spec.code)
                    .and_then(|c| c.iter().find(|(id, _, _)| *id == n.id))
                    .map(|(_, _, c)| c.clone());
                let me = region == self.region && n.id == self.node_id;
                out.push((
                    region.clone(),
                    n.id,
                    n.link_addr.clone().unwrap_or_default(),
                    (!me).then_some(client).flatten(),
                ));
            }
        }
        out
    }

    /// Sends effects of shard `source` to `region`.
    async fn deliver_effects(&self, region: RegionCode, source: ShardId, effects: Vec<Effect>) -> Result<(), String> {
        let mut client = self.client(&region).map_err(|e| e.to_string())?;
        let request = wire::DeliverEffectsRequest {
            source_region: self.region.to_string(),
            source_shard: source.0,
            effects: effects.iter().map(|e| meridian_storage::codec::effect_to_pb(e).encode_to_vec()).collect(),
        };
        self.call(&region, LINK_CALL_TIMEOUT, client.deliver_effects(request)).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The outbox pumps' way to other regions: the region link.
#[derive(Debug)]
pub struct LinkEffects(pub Arc<Geo>);

impl RemoteEffects for LinkEffects {
    fn regions(&self) -> Vec<RegionCode> {
        self.0
            .file
            .regions
            .iter()
            .filter(|r| r.code != self.0.region.as_str())
            .filter_map(|r| RegionCode::parse(&r.code).ok())
            .collect()
    }

    fn deliver(
        &self,
        region: RegionCode,
        source: ShardId,
        effects: Vec<Effect>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let geo = self.0.clone();
        Box::pin(async move {
            // A fenced node's outbox holds what it did after the cut: it never leaves.
            if geo.node.region_role() == meridian_raft::Role::Fenced {
                return Err("this node is fenced (its region is served elsewhere in a later epoch)".to_owned());
            }
            geo.deliver_effects(region, source, effects).await
        })
    }
}

/// A refusal that says the answering node does not serve its region now.
fn is_not_serving(status: &Status) -> bool {
    let reason = status.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok());
    matches!(reason, Some(meridian_proto::reasons::REGION_FENCED | meridian_proto::reasons::REGION_STANDBY))
}
