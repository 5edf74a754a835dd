//! Region disaster recovery on one node (GEO-05, ADR 0005).
//!
//! A region may list a standby in `regions.toml` (`[[region.standby]]`, in one of its `dr`
//! places). The standby's nodes follow every shard of the region as non-voting members
//! (Raft learners, added by each shard's leader once a standby node answers as one), so
//! their replicas are the primary's, entry for entry, with the same state hash at the same
//! index. This module is each node's side of it:
//!
//! - **the role gate**: a standby node takes reads but no writes (`REGION_STANDBY`); a
//!   fenced node takes neither (`REGION_FENCED`); a region switching back pauses writes
//!   (`REGION_SWITCHING`);
//! - **fencing**: every second a node asks the region's nodes outside its own voters for
//!   their role and epoch; one that serves a higher epoch fences this node (kept in
//!   `dr.json`, so a restart stays fenced until the node is reseeded);
//! - **learners**: a shard's leader adds each topology node that answers as a standby;
//! - **promotion**: `DR_PROMOTE` marks the node and restarts it in place; at the start the
//!   replicas are rewritten into a cluster whose voters are the standby's nodes
//!   ([`meridian_raft::rewrite_for_promotion`]), and each shard's new leader raises the
//!   shard's epoch before it takes a write, so nothing it mints collides with what the old
//!   primary minted after the cut;
//! - **failback**: a fenced node writes what it acknowledged after the cut to a quarantine
//!   file (`DR_QUARANTINE`), wipes its replicas (`DR_RESEED`) and comes back as a learner of
//!   the serving side; the switch (`DR_SWITCH`) makes the primary's nodes the voters again
//!   after writes paused and the learners caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meridian_domain::{Command, EventOffset, Reason, Rejection, ShardId};
use meridian_proto::api;
use meridian_raft::{Access, CutPoint, Member, RaftNode, RegionRole, Role};
use meridian_regions::RegionSpec;
use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "dr.json";
/// The longest write pause a switchover may ask for.
const MAX_PAUSE: Duration = Duration::from_secs(120);

/// What a node keeps of disaster recovery across restarts (`DATA_DIR/dr.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DrFile {
    /// The epoch served elsewhere that fenced this node (0: not fenced).
    #[serde(default)]
    pub fenced_by_epoch: u32,
    /// The promotion of this node's side, while it is pending or until failback finishes.
    #[serde(default)]
    pub promotion: Option<Promotion>,
    /// Never bootstrap: a reseeded node joins the serving side as a learner.
    #[serde(default)]
    pub no_bootstrap: bool,
    /// What the next start does first.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The quarantine file this node wrote (a reseed waits for it).
    #[serde(default)]
    pub quarantine: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Promotion {
    pub epoch: u32,
    /// The new voters: (id, peer address, client address).
    pub voters: Vec<(u64, String, String)>,
    /// Each shard's cut, once the rewrite ran.
    #[serde(default)]
    pub cut: Vec<CutPoint>,
    /// Every shard of this replica has applied `epoch`.
    #[serde(default)]
    pub raised: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pending {
    Promote,
    Reseed,
}

impl DrFile {
    pub fn load(data_dir: &Path) -> anyhow::Result<DrFile> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("read {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DrFile::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Writes the file atomically and durably (temp file, fsync, rename, fsync the directory).
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(())
    }
}

/// Runs what a restart was asked to do, before the database opens (a reseed wipes it) and
/// right after (a promotion rewrites it). Returns the state to run with.
pub fn before_open(data_dir: &Path) -> anyhow::Result<DrFile> {
    let mut file = DrFile::load(data_dir)?;
    if file.pending == Some(Pending::Reseed) {
        for dir in ["db", "snapshots"] {
            let path = data_dir.join(dir);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("wipe {}", path.display())),
            }
        }
        tracing::warn!("reseed: this node's replicas were wiped; it rejoins its region as a standby");
        file = DrFile { no_bootstrap: true, quarantine: file.quarantine, ..DrFile::default() };
        file.save(data_dir)?;
    }
    Ok(file)
}

/// The promotion rewrite, when one is pending (after the database opened, before Raft).
pub async fn after_open(
    file: &mut DrFile,
    data_dir: &Path,
    db: &meridian_storage::Db,
    shards: u32,
    node_id: u64,
) -> anyhow::Result<()> {
    if file.pending != Some(Pending::Promote) {
        return Ok(());
    }
    let promotion = file.promotion.as_mut().context("dr.json: a pending promotion without its target")?;
    let voters: BTreeMap<u64, Member> =
        promotion.voters.iter().map(|(id, peer, client)| (*id, Member::new(peer.clone(), client.clone()))).collect();
    let cut = meridian_raft::rewrite_for_promotion(db, shards, node_id, &voters, &data_dir.join("snapshots"))
        .await
        .context("rewrite the replicas for the promotion")?;
    tracing::warn!(epoch = promotion.epoch, voters = ?voters.keys().collect::<Vec<_>>(), ?cut, "promoted: this node's side serves the region");
    promotion.cut = cut;
    file.pending = None;
    file.fenced_by_epoch = 0;
    file.save(data_dir)
}

/// This node's disaster-recovery state while it runs.
#[derive(Debug)]
pub struct Dr {
    node: Arc<RaftNode>,
    region: RegionSpec,
    data_dir: PathBuf,
    file: Mutex<DrFile>,
    paused_until: Mutex<Option<Instant>>,
}

impl Dr {
    /// Installs the gate on `node` and starts the fencing, learner and epoch loops. Only for a
    /// region whose topology lists a standby.
    pub fn start(node: Arc<RaftNode>, region: RegionSpec, data_dir: PathBuf, file: DrFile) -> Arc<Dr> {
        node.set_members_only(file.promotion.is_some());
        let dr = Arc::new(Dr {
            node: node.clone(),
            region,
            data_dir,
            file: Mutex::new(file),
            paused_until: Mutex::default(),
        });
        node.set_region_role(dr.clone());
        let weak = Arc::downgrade(&dr);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(dr) = weak.upgrade() else { return };
                dr.check_fence().await;
                dr.raise_epoch().await;
                dr.add_learners().await;
            }
        });
        dr
    }

    fn state(&self) -> DrFile {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut DrFile)) -> anyhow::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut file);
        file.save(&self.data_dir)
    }

    fn me(&self) -> u64 {
        self.node.node_id
    }

    fn is_voter(&self) -> bool {
        self.node.is_voter(ShardId(0), self.me()).unwrap_or(false)
    }

    /// The highest epoch this node's replicas have applied.
    fn applied_epoch(&self) -> u32 {
        self.node.shards().iter().map(|s| s.store.applied_state().map_or(1, |a| a.epoch.max(1))).max().unwrap_or(1)
    }

    fn paused(&self) -> bool {
        let mut until = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Asks the region's nodes outside this node's voters for their role; one that serves a
    /// higher epoch fences this node.
    pub async fn check_fence(&self) {
        let state = self.state();
        // Only a node that believes it serves can be wrong about it: a learner or a node
        // that belongs to no membership yet (a reseeded one) takes no writes anyway.
        if state.fenced_by_epoch > 0 || !self.is_voter() {
            return;
        }
        let mine = self.epoch();
        let voters = self.node.members(ShardId(0)).0;
        let others: Vec<_> =
            self.region.all_nodes().filter(|n| n.id != self.me() && !voters.contains(&n.id)).cloned().collect();
        let asks = others.iter().map(|n| async move { (n.id, self.node.node_info_at(&n.peer_addr).await) });
        for (id, answer) in futures::future::join_all(asks).await {
            let Ok(info) = answer else { continue };
            let serving = info.role == Role::Serving.as_str() || info.role == Role::Promoting.as_str();
            if serving && info.region == self.region.code && info.epoch > mine {
                tracing::error!(
                    node = id,
                    epoch = info.epoch,
                    mine,
                    "fenced: the region is served by its promoted standby; this node refuses reads and writes until it is reseeded"
                );
                if let Err(e) = self.update(|f| f.fenced_by_epoch = info.epoch) {
                    tracing::error!(error = %e, "could not record the fence (held in memory)");
                    self.file.lock().unwrap_or_else(|p| p.into_inner()).fenced_by_epoch = info.epoch;
                }
                return;
            }
        }
    }

    /// On a promoted node: raises the epoch of every shard it leads; once its replicas have
    /// all applied it, builds fresh snapshots (a learner added later must get the new
    /// membership) and marks the promotion raised.
    async fn raise_epoch(&self) {
        let Some(promotion) = self.state().promotion.filter(|p| !p.raised) else { return };
        let mut all = true;
        for s in self.node.shards() {
            let epoch = s.store.applied_state().map_or(1, |a| a.epoch.max(1));
            if epoch >= promotion.epoch {
                continue;
            }
            all = false;
            if self.node.is_leader(s.id) {
                if let Err(e) = self.node.propose(s.id, &[Command::RaiseEpoch { epoch: promotion.epoch }]).await {
                    tracing::warn!(shard = s.id.0, error = %e, "raising the epoch");
                }
            }
        }
        if all {
            self.node.snapshot_all().await;
            if let Err(e) = self.update(|f| {
                if let Some(p) = f.promotion.as_mut() {
                    p.raised = true;
                }
            }) {
                tracing::warn!(error = %e, "recording the raised epoch");
            }
            tracing::info!(epoch = promotion.epoch, "every shard serves in the new epoch");
        }
    }

    /// On each shard this node leads: adds the region's nodes that answer as standbys and
    /// are not members yet as learners.
    async fn add_learners(&self) {
        let state = self.state();
        if state.fenced_by_epoch > 0 || state.promotion.as_ref().is_some_and(|p| !p.raised) {
            return;
        }
        let led: Vec<ShardId> = self.node.shards().iter().map(|s| s.id).filter(|s| self.node.is_leader(*s)).collect();
        if led.is_empty() {
            return;
        }
        for n in self.region.all_nodes().filter(|n| n.id != self.me()) {
            let missing: Vec<ShardId> = led
                .iter()
                .copied()
                .filter(|s| {
                    let (voters, learners) = self.node.members(*s);
                    !voters.contains(&n.id) && !learners.contains(&n.id)
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let Ok(info) = self.node.node_info_at(&n.peer_addr).await else { continue };
            if info.role != "standby" || info.region != self.region.code || info.node_id != n.id {
                continue;
            }
            for shard in missing {
                let member = Member::new(n.peer_addr.clone(), n.addr.clone());
                match self.node.add_learner_here(shard, n.id, member).await {
                    Ok(()) => tracing::info!(shard = shard.0, node = n.id, "added a standby node as a learner"),
                    Err(e) => tracing::warn!(shard = shard.0, node = n.id, error = %e, "adding a learner"),
                }
            }
        }
    }

    // ------------------------------------------------------------ admin steps

    /// `Admin/Dr` on this node.
    pub async fn answer(&self, ctx: &crate::api::Context, req: &api::DrRequest) -> Result<api::DrResponse, Rejection> {
        let invalid = |m: String| Rejection::new(Reason::NodeInvalid, m);
        match api::DrOp::try_from(req.op) {
            Ok(api::DrOp::DrStatus) => {}
            Ok(api::DrOp::DrPromote) => self.promote(req).map_err(|e| invalid(format!("{e:#}")))?,
            Ok(api::DrOp::DrQuarantine) => {
                return self.quarantine(ctx, req).await.map_err(|e| invalid(format!("{e:#}")));
            }
            Ok(api::DrOp::DrReseed) => self.reseed().map_err(|e| invalid(format!("{e:#}")))?,
            Ok(api::DrOp::DrPause) => {
                let pause = Duration::from_secs(u64::from(req.pause_seconds)).min(MAX_PAUSE);
                *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    (!pause.is_zero()).then(|| Instant::now() + pause);
            }
            Ok(api::DrOp::DrSwitch) => self.switch(req).await?,
            Ok(api::DrOp::DrFinish) => {
                *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.update(|f| f.promotion = None).map_err(|e| invalid(format!("{e:#}")))?;
                self.node.set_members_only(false);
            }
            Err(_) => return Err(invalid(format!("unknown dr op {}", req.op))),
        }
        Ok(self.status(req.include_state_hash))
    }

    /// This node's role, epoch and shards.
    pub fn status(&self, include_state_hash: bool) -> api::DrResponse {
        let (epoch, role) = (self.epoch(), self.role().as_str().to_owned());
        let state = self.state();
        let shards = self
            .node
            .status(include_state_hash)
            .into_iter()
            .map(|s| {
                let shard = ShardId(s.shard);
                let applied =
                    self.node.shard(shard).ok().and_then(|x| x.store.applied_state().ok()).unwrap_or_default();
                let matched = self
                    .node
                    .shard(shard)
                    .ok()
                    .and_then(|x| x.raft.metrics().borrow().replication.clone())
                    .map(|r| r.into_iter().map(|(id, l)| (id, l.map_or(0, |l| l.index))).collect())
                    .unwrap_or_default();
                let (hash_index, hash) = s.state_hash.unwrap_or_default();
                api::DrShard {
                    shard: s.shard,
                    applied_index: hash_index.max(s.applied_index),
                    last_log_index: s.last_log_index,
                    epoch: applied.epoch.max(1),
                    state_hash: hash,
                    voters: s.voters,
                    learners: s.learners,
                    leader: s.leader.unwrap_or(0),
                    last_time_ms: applied.last_time_ms,
                    matched,
                }
            })
            .collect();
        api::DrResponse {
            node_id: self.me(),
            region: self.region.code.clone(),
            role,
            epoch,
            shards,
            nodes: region_nodes(&self.region),
            cut: state.promotion.map(|p| p.cut.iter().map(cut_to_wire).collect()).unwrap_or_default(),
            quarantine_file: state.quarantine.map(|p| p.display().to_string()).unwrap_or_default(),
            paused: self.paused(),
            ..Default::default()
        }
    }

    fn promote(&self, req: &api::DrRequest) -> anyhow::Result<()> {
        let (epoch, role) = (self.epoch(), self.role());
        anyhow::ensure!(
            role == Role::Standby,
            "node {} is {}: only a standby node is promoted",
            self.me(),
            role.as_str()
        );
        anyhow::ensure!(
            self.region.is_standby(self.me()),
            "node {} is not in region {}'s standby",
            self.me(),
            self.region.code
        );
        anyhow::ensure!(req.epoch > epoch, "epoch {} is not above this node's {epoch}", req.epoch);
        anyhow::ensure!(req.epoch <= meridian_domain::ingress::MAX_EPOCH, "epoch {} is too high", req.epoch);
        let voters: Vec<(u64, String, String)> =
            req.voters
                .iter()
                .map(|id| {
                    let n = self.region.standby.iter().find(|n| n.id == *id).with_context(|| {
                        format!("node {id} is not one of region {}'s standby nodes", self.region.code)
                    })?;
                    Ok((n.id, n.peer_addr.clone(), n.addr.clone()))
                })
                .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(voters.iter().any(|(id, _, _)| *id == self.me()), "the voters must include this node");
        self.update(|f| {
            f.promotion = Some(Promotion { epoch: req.epoch, voters, cut: vec![], raised: false });
            f.pending = Some(Pending::Promote);
        })?;
        self.restart_soon("promotion");
        Ok(())
    }

    fn reseed(&self) -> anyhow::Result<()> {
        let state = self.state();
        anyhow::ensure!(state.fenced_by_epoch > 0, "node {} is not fenced: only a fenced node is reseeded", self.me());
        anyhow::ensure!(
            state.quarantine.is_some(),
            "node {} has not written its quarantine file yet (DR_QUARANTINE first)",
            self.me()
        );
        self.update(|f| f.pending = Some(Pending::Reseed))?;
        self.restart_soon("reseed");
        Ok(())
    }

    /// Writes every event this fenced node's log holds after the cut, one JSON document a
    /// line: what it acknowledged that the promoted side never received. Never merged.
    async fn quarantine(&self, ctx: &crate::api::Context, req: &api::DrRequest) -> anyhow::Result<api::DrResponse> {
        let state = self.state();
        anyhow::ensure!(state.fenced_by_epoch > 0, "node {} is not fenced", self.me());
        let cut: BTreeMap<u32, u64> = req.cut.iter().map(|c| (c.shard, c.index)).collect();
        anyhow::ensure!(
            cut.len() == self.node.shards().len(),
            "the cut names {} shard(s), the region has {}",
            cut.len(),
            self.node.shards().len()
        );
        let dir = self.data_dir.join("quarantine");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("epoch-{}-node-{}.jsonl", state.fenced_by_epoch, self.me()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let (mut events, mut messages) = (0u64, 0u64);
        for s in self.node.shards() {
            let Some(&index) = cut.get(&s.id.0) else { continue };
            let mut from = EventOffset { log_index: index.saturating_add(1), command: 0, event: 0 };
            loop {
                let page = crate::archive::events_from(ctx.archive.as_deref(), &s.store, from, 1000)
                    .await
                    .map_err(|e| anyhow::anyhow!("read shard {} from {from}: {e}", s.id.0))?;
                let Some(last) = page.last().map(|e| e.offset) else { break };
                for e in &page {
                    events += 1;
                    if e.event.name().contains("MessageSent") {
                        messages += 1;
                    }
                    let line = serde_json::json!({
                        "region": self.region.code,
                        "shard": s.id.0,
                        "offset": e.offset.to_string(),
                        "epoch": e.epoch,
                        "type": e.event.name(),
                        "event": format!("{:?}", e.event),
                    });
                    writeln!(out, "{line}")?;
                }
                from = last.next();
            }
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        let path = path.canonicalize().unwrap_or(path);
        self.update(|f| f.quarantine = Some(path.clone()))?;
        tracing::warn!(events, messages, file = %path.display(), "quarantined what this node acknowledged after the cut");
        Ok(api::DrResponse {
            quarantined_events: events,
            quarantined_messages: messages,
            quarantine_file: path.display().to_string(),
            ..self.status(false)
        })
    }

    async fn switch(&self, req: &api::DrRequest) -> Result<(), Rejection> {
        let invalid = |m: String| Rejection::new(Reason::NodeInvalid, m);
        let voters: BTreeSet<u64> = req.voters.iter().copied().collect();
        if voters.is_empty() || !voters.iter().all(|id| self.region.all_nodes().any(|n| n.id == *id)) {
            return Err(invalid(format!("voters {voters:?}: name nodes of region {}", self.region.code)));
        }
        let epoch = self.epoch();
        if req.epoch <= epoch || req.epoch > meridian_domain::ingress::MAX_EPOCH {
            return Err(invalid(format!("epoch {} is not above {epoch}", req.epoch)));
        }
        self.node.switch_voters(&voters).await.map_err(|e| invalid(format!("switch the voters: {e}")))?;
        for s in self.node.shards() {
            let raised = self.node.propose(s.id, &[Command::RaiseEpoch { epoch: req.epoch }]).await;
            if let Err(e) = raised {
                return Err(invalid(format!("raise shard {} to epoch {}: {e}", s.id.0, req.epoch)));
            }
        }
        Ok(())
    }

    /// Starts this binary again in place, with the same arguments (same process id), once
    /// the answer is on its way: the start does what `dr.json` says is pending. Nothing is
    /// shut down first — to the replicas this is a crash, which they survive by design (every
    /// acknowledged write is synced; the database's files close on exec).
    fn restart_soon(&self, why: &'static str) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tracing::warn!(why, "restarting in place");
            reexec();
        });
    }
}

fn reexec() {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::error!(error = %e, "cannot find this binary to restart; exiting for the supervisor");
            std::process::exit(75);
        }
    };
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
    tracing::error!(%error, "restart in place failed; exiting for the supervisor");
    std::process::exit(75);
}

fn cut_to_wire(c: &CutPoint) -> api::DrCut {
    api::DrCut { shard: c.shard, index: c.index, term: c.term, time_ms: c.time_ms, epoch: c.epoch }
}

/// The nodes of `region` in the topology, the standby's included.
pub fn region_nodes(region: &RegionSpec) -> Vec<api::DrNode> {
    region
        .all_nodes()
        .map(|n| api::DrNode {
            node_id: n.id,
            addr: n.addr.clone(),
            peer_addr: n.peer_addr.clone(),
            standby: region.is_standby(n.id),
            place: n.place.clone().unwrap_or_default(),
        })
        .collect()
}

impl RegionRole for Dr {
    fn check(&self, shard: ShardId, access: Access) -> Result<(), Rejection> {
        // Read under the lock, not cloned: this runs on every proposal.
        let (fenced_by, promoting_to) = {
            let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            (file.fenced_by_epoch, file.promotion.as_ref().filter(|p| !p.raised).map(|p| p.epoch))
        };
        if fenced_by > 0 {
            return Err(Rejection::new(
                Reason::RegionFenced,
                format!(
                    "region {} was promoted to its standby (epoch {fenced_by}); node {} is fenced: use another endpoint",
                    self.region.code,
                    self.me()
                ),
            ));
        }
        if access == Access::Read {
            return Ok(());
        }
        if self.paused() {
            return Err(Rejection::new(
                Reason::RegionSwitching,
                format!("region {} is switching back to its primary: retry in a moment", self.region.code),
            ));
        }
        if let Some(target) = promoting_to {
            let epoch = self.node.shard(shard).ok().and_then(|s| s.store.applied_state().ok()).map_or(1, |a| a.epoch);
            if epoch < target {
                return Err(Rejection::new(
                    Reason::RegionSwitching,
                    format!("region {} is being promoted here (epoch {target}): retry in a moment", self.region.code),
                ));
            }
        }
        // No membership yet (a node that never joined): only a standby node is refused.
        let voter = self.node.is_voter(shard, self.me()).unwrap_or(!self.region.is_standby(self.me()));
        if !voter {
            return Err(Rejection::new(
                Reason::RegionStandby,
                format!(
                    "node {} is region {}'s standby: it takes no writes; use another endpoint",
                    self.me(),
                    self.region.code
                ),
            ));
        }
        Ok(())
    }

    fn role(&self) -> Role {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.fenced_by_epoch > 0 {
            Role::Fenced
        } else if file.promotion.as_ref().is_some_and(|p| !p.raised) {
            Role::Promoting
        } else if self.is_voter() {
            Role::Serving
        } else {
            Role::Standby
        }
    }

    fn epoch(&self) -> u32 {
        let promoted = self.state().promotion.as_ref().map_or(0, |p| p.epoch);
        self.applied_epoch().max(promoted)
    }
}

/// Whether this node may take part in the region as the link layer sees it: a standby or
/// fenced node answers `Hello` but is not where other regions send their calls.
pub fn serving(dr: Option<&Dr>) -> bool {
    dr.is_none_or(|d| d.role() == Role::Serving)
}

/// Point-in-time restore of one one-to-one conversation (`Admin/RestoreConversation`): the
/// messages sent after `at_ms` are withdrawn through the log (commands of at most
/// [`meridian_domain::command::MAX_RESTORE_BATCH`] seqs), so every replica and every replay
/// agrees; the archive keeps every segment as it was. Runs on the conversation's home region.
pub async fn restore_conversation(
    ctx: &crate::api::Context,
    req: &api::RestoreConversationRequest,
) -> Result<api::RestoreConversationResponse, crate::api::error::ApiError> {
    use meridian_domain::{ConversationId, Seq, UserId};
    let user = UserId::parse(&req.user)?;
    let peer = UserId::parse(&req.peer)?;
    let conversation = ConversationId::c2c(&user, &peer);
    let shard = ctx.topology.conversation_shard(&conversation);
    ctx.node.read_barrier(shard).await?;
    let store = ctx.node.store(shard)?;
    let Some(head) = store.conversation(&conversation)? else {
        return Err(Rejection::new(
            Reason::ConversationNotFound,
            format!(
                "no conversation {conversation} in region {} (run the restore in its home region)",
                ctx.topology.region()
            ),
        )
        .into());
    };
    // Times never go backwards within a shard: walk back from the newest message to the
    // last one sent at or before `at_ms`.
    let mut kept = Seq::ZERO;
    let mut start = head.last_seq;
    'walk: while start > Seq::ZERO {
        let hot = store.messages(&conversation, start, 200, false)?;
        let page = crate::archive::history_page(ctx.archive.as_deref(), store, &conversation, (start, 200, false), hot)
            .await?;
        if page.is_empty() {
            break;
        }
        for m in &page {
            if m.time.0 <= req.at_ms {
                kept = m.seq;
                break 'walk;
            }
        }
        let lowest = page.iter().map(|m| m.seq).min().unwrap_or(Seq::ZERO);
        start = Seq(lowest.0.saturating_sub(1));
    }
    let mut withdrawn = 0;
    let mut from = kept;
    while from < head.last_seq {
        let through = Seq(head.last_seq.0.min(from.0 + meridian_domain::command::MAX_RESTORE_BATCH));
        let command =
            Command::RestoreConversation { conversation: conversation.clone(), kept_up_to_seq: from, through };
        match ctx.node.propose(shard, &[command]).await?.into_iter().next() {
            Some(Ok(meridian_domain::apply::Reply::Withdrawn { withdrawn: n })) => withdrawn += n,
            Some(Err(rejection)) => return Err(rejection.into()),
            other => return Err(crate::api::error::ApiError::Internal(format!("unexpected restore result {other:?}"))),
        }
        from = through;
    }
    tracing::warn!(%conversation, kept = kept.0, withdrawn, at_ms = req.at_ms, "restored a conversation to a point in time");
    Ok(api::RestoreConversationResponse {
        conversation_id: conversation.to_string(),
        kept_up_to_seq: kept.0,
        withdrawn,
    })
}
