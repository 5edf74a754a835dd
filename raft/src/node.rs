//! A node's replicas of every shard of its region, and the operations that route to a
//! shard's leader: proposals, linearizable read barriers and membership changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use meridian_domain::ingress::{self, Destination, IngressLimits};
use meridian_domain::{Command, Reason, RegionCode, Rejection, ShardId};
use meridian_proto::durable as pb;
use meridian_proto::peer::{self, frame::Body};
use meridian_storage::shard::CommandResult;
use meridian_storage::{codec, Db, LogStore, ShardStore};
use openraft::{Config, ServerState, SnapshotPolicy};

use crate::batcher::{BatchError, Batcher};
use crate::convert::outcome_from_pb;
use crate::credential::DoorStats;
use crate::log_store::ShardLog;
use crate::network::{Connections, PeerDialing, ShardNetwork};
use crate::read_index::{ReadIndexRounds, RoundStats};
use crate::state_machine::{MachineStats, ShardMachine};
use crate::types::*;

mod logic_version;
mod membership;
mod standby;

pub use logic_version::{LogicVersionReport, NodeSupport, RaiseError, ShardVersion};
pub use standby::{rewrite_for_promotion, Access, CutPoint, RegionRole, Role};

/// How long an operation keeps looking for a shard leader before giving up.
const LEADER_DEADLINE: Duration = Duration::from_secs(10);

/// How long a proposal or read-index round forwarded to a shard's leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a non-preferred member waits before initializing a shard that still has no
/// leader at bootstrap (see [`RaftNode::bootstrap`]).
const BOOTSTRAP_FALLBACK: Duration = Duration::from_secs(3);

/// The Raft side of a node's configuration.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub node_id: NodeId,
    /// The region this node serves (every node of a region has the same).
    pub region: RegionCode,
    /// The newest cluster logic version this node reports and applies (at most this build's).
    pub max_logic_version: u32,
    /// Shards in the region (fixed at bootstrap).
    pub shards: u32,
    /// Where snapshot files live.
    pub snapshot_dir: PathBuf,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one (and see the next).
    pub snapshot_logs_since_last: u64,
    /// And only once the commands applied since the last snapshot add up to this percentage
    /// of its size (0: entries only). See [`crate::snapshot_policy`].
    pub snapshot_log_size_percent: u32,
    /// Entries kept in the log behind a snapshot (for followers that are only a little behind).
    pub max_in_snapshot_log_to_keep: u64,
    /// Most commands per Raft entry.
    pub max_batch_commands: usize,
    /// How long request-id records are kept, in milliseconds (0: for ever). Entries this node
    /// proposes as leader carry the cutoff it implies.
    pub request_id_window_ms: u64,
    /// How this node dials its peers (credential, TLS, source address).
    pub dialing: PeerDialing,
    /// The limits every proposed command is checked against.
    pub ingress: IngressLimits,
}

/// Why an operation on a shard did not happen. Nothing of it took effect unless said.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftNodeError {
    /// Retryable: this node could not get the shard's leader to do it in time, and knows
    /// which node leads (a caller may go there directly).
    #[error("shard {shard}: not served through this node in time ({detail}); its leader is node {}", .leader.node_id)]
    NotLeader { shard: u32, leader: LeaderHint, detail: String },
    /// Retryable: no leader was reachable in time.
    #[error("shard {shard} is unavailable: {detail}")]
    Unavailable { shard: u32, detail: String },
    /// This node's replica of the shard has stopped (a storage failure, or an entry it must
    /// not apply). Not retried here: another node may serve.
    #[error("shard {shard} is halted on this node: {detail}")]
    Fatal { shard: u32, detail: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// This node does not serve its region now (a standby, a fenced primary, a switchover):
    /// the rejection says which; nothing was proposed.
    #[error("{0}")]
    Refused(Rejection),
}

/// A shard leader as a caller can reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub node_id: NodeId,
    /// Its client address (`host:port`).
    pub client_addr: String,
}

/// One read-index round on this node's Raft, which must lead the shard: the commit index,
/// confirmed by a quorum after the call.
async fn leader_read_index(raft: &Raft) -> Result<u64, String> {
    raft.get_read_log_id().await.map(|(read, _)| read.map_or(0, |l| l.index)).map_err(|e| e.to_string())
}

/// Where a shard's leader is, for an attempt of [`RaftNode::with_leader`].
enum Leader {
    Local,
    Remote { id: NodeId, addr: String },
}

/// One shard's replica on this node.
pub struct Shard {
    pub id: ShardId,
    pub raft: Raft,
    pub store: ShardStore,
    pub stats: Arc<MachineStats>,
    /// Read-index rounds of this node's linearizable reads (they may ask a remote leader).
    pub read_stats: Arc<RoundStats>,
    batcher: Batcher,
    reads: ReadIndexRounds,
    /// Read-index rounds this node runs as the leader, for followers' reads.
    leader_reads: ReadIndexRounds,
}

/// Takes the signals other nodes of the region relay to this one (the node's live streams).
pub trait SignalSink: std::fmt::Debug + Send + Sync {
    fn signal(&self, signal: peer::SignalRequest);
    /// Which of `users` have a live stream on this node.
    fn online_of(&self, users: Vec<String>) -> Vec<String>;
}

/// A node's replicas of every shard.
#[derive(Debug)]
pub struct RaftNode {
    pub node_id: NodeId,
    region: RegionCode,
    max_logic_version: u32,
    /// What the peer door refused.
    pub door: Arc<DoorStats>,
    shard_count: u32,
    ingress: IngressLimits,
    shards: Vec<Shard>,
    connections: Connections,
    db: Db,
    /// This node, for tasks that outlive a call (read-index rounds).
    me: Weak<RaftNode>,
    /// Delivery of effects to other regions, once the region links are set up.
    remote: std::sync::OnceLock<Arc<dyn crate::outbox::RemoteEffects>>,
    /// Where signals relayed by the region's other nodes go (the node's live streams).
    signals: std::sync::OnceLock<Arc<dyn SignalSink>>,
    /// Whether this node serves its region now (disaster recovery; absent: always).
    role: std::sync::OnceLock<Arc<dyn standby::RegionRole>>,
    /// Refuse Raft calls from non-members (a promoted standby).
    members_only: std::sync::atomic::AtomicBool,
}

/// The Raft state of one shard as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct ShardStatus {
    pub shard: u32,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub role: String,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub purged_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub snapshots_installed: u64,
    /// (applied index the hash was taken at, hex SHA-256), when asked for.
    pub state_hash: Option<(u64, String)>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

impl RaftNode {
    /// Opens every shard's replica on `db` and starts its Raft, batcher and outbox pump.
    pub async fn start(settings: RaftSettings, db: Db) -> anyhow::Result<Arc<Self>> {
        let connections = Connections::new(settings.dialing.clone());
        let config = Arc::new(
            Config {
                heartbeat_interval: settings.heartbeat_interval_ms,
                election_timeout_min: settings.election_timeout_min_ms,
                election_timeout_max: settings.election_timeout_max_ms,
                // With a size percentage the shards' own task triggers the builds.
                snapshot_policy: if settings.snapshot_log_size_percent == 0 {
                    SnapshotPolicy::LogsSinceLast(settings.snapshot_logs_since_last)
                } else {
                    SnapshotPolicy::Never
                },
                max_in_snapshot_log_to_keep: settings.max_in_snapshot_log_to_keep,
                snapshot_max_chunk_size: 1 << 20,
                install_snapshot_timeout: 10_000,
                ..Default::default()
            }
            .validate()?,
        );
        let mut shards = Vec::with_capacity(settings.shards as usize);
        let mut signals = Vec::new();
        for i in 0..settings.shards {
            let id = ShardId(i);
            let store = ShardStore::new(db.clone(), id, settings.shards)
                .in_region(settings.region.clone(), settings.max_logic_version);
            // Data of another region is never served under this one's name.
            let applied = store.applied_state()?;
            if !applied.region.is_empty() && applied.region != settings.region.as_str() {
                anyhow::bail!(
                    "shard {i} of this node's data belongs to region {:?}, but its config names region {:?}: \
                     point the node at its own data directory or fix `region`",
                    applied.region,
                    settings.region.as_str()
                );
            }
            let machine = ShardMachine::open(store.clone(), settings.snapshot_dir.clone())?;
            let stats = machine.stats();
            signals.push(machine.outbox_signal());
            let log = ShardLog::new(LogStore::new(db.clone(), id))
                .gated_by(machine.purge_gate())
                .committed_into(machine.committed_slot());
            let network = ShardNetwork { shard: i, connections: connections.clone() };
            let raft = Raft::new(settings.node_id, config.clone(), network, log, machine).await?;
            if settings.snapshot_log_size_percent > 0 {
                crate::snapshot_policy::spawn(
                    raft.clone(),
                    stats.clone(),
                    settings.snapshot_logs_since_last,
                    settings.snapshot_log_size_percent,
                );
            }
            let batcher =
                Batcher::start(raft.clone(), settings.max_batch_commands, stats.clone(), settings.region.to_string())
                    .keeping_request_ids_for(settings.request_id_window_ms);
            shards.push(Shard {
                id,
                raft,
                store,
                stats,
                read_stats: Arc::default(),
                batcher,
                reads: ReadIndexRounds::new(i),
                leader_reads: ReadIndexRounds::new(i),
            });
        }
        let node = Arc::new_cyclic(|me| Self {
            node_id: settings.node_id,
            region: settings.region.clone(),
            // As the stores clamp it: at most this build's, at least 1.
            max_logic_version: shards.first().map_or(1, |s| s.store.max_logic_version()),
            door: Arc::default(),
            shard_count: settings.shards,
            ingress: settings.ingress,
            shards,
            connections,
            db,
            me: me.clone(),
            remote: std::sync::OnceLock::new(),
            signals: std::sync::OnceLock::new(),
            role: std::sync::OnceLock::new(),
            members_only: std::sync::atomic::AtomicBool::new(false),
        });
        for (i, signal) in signals.into_iter().enumerate() {
            crate::outbox::spawn_pump(Arc::downgrade(&node), ShardId(i as u32), signal);
        }
        Ok(node)
    }

    /// The peer calls this node made, by kind.
    pub fn peer_rpc_stats(&self) -> &Arc<crate::network::PeerRpcStats> {
        &self.connections.stats
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Hands signals relayed by other nodes to `sink` (once; later calls are ignored).
    pub fn set_signal_sink(&self, sink: Arc<dyn SignalSink>) {
        let _ = self.signals.set(sink);
    }

    /// A signal relayed to this node by another of the region.
    pub(crate) fn signal_here(&self, signal: peer::SignalRequest) {
        if let Some(sink) = self.signals.get() {
            sink.signal(signal);
        }
    }

    /// Which of `users` have a live stream on this node.
    pub(crate) fn presence_here(&self, users: Vec<String>) -> Vec<String> {
        self.signals.get().map(|sink| sink.online_of(users)).unwrap_or_default()
    }

    /// Which of `users` have a live stream on another node of the region (a node that does
    /// not answer within 2 s counts as having none).
    pub async fn presence_elsewhere(&self, users: &[String]) -> std::collections::BTreeSet<String> {
        let asks = self.all_members().into_iter().filter(|(id, _)| *id != self.node_id).map(|(node_id, addr)| {
            let users = users.to_vec();
            async move {
                let mut client = self.connections.client(&addr).ok()?;
                let mut request = tonic::Request::new(peer::PresenceRequest { users });
                request.set_timeout(std::time::Duration::from_secs(2));
                match tokio::time::timeout(std::time::Duration::from_secs(2), client.presence(request)).await {
                    Ok(Ok(answer)) => Some(answer.into_inner().online),
                    other => {
                        tracing::debug!(node_id, ?other, "presence not answered");
                        None
                    }
                }
            }
        });
        futures::future::join_all(asks).await.into_iter().flatten().flatten().collect()
    }

    /// Relays `signal` to every other member of the region, without waiting (online-only:
    /// a node that is down or slow misses it).
    pub fn relay_signal(&self, signal: peer::SignalRequest) {
        for (node_id, addr) in self.all_members() {
            if node_id == self.node_id {
                continue;
            }
            let Ok(mut client) = self.connections.client(&addr) else { continue };
            let signal = signal.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(signal);
                request.set_timeout(std::time::Duration::from_secs(2));
                if let Err(e) = client.signal(request).await {
                    tracing::debug!(node_id, error = %e, "a signal was not relayed");
                }
            });
        }
    }

    /// Hands the outbox pumps their way to other regions (once; later calls are ignored).
    pub fn set_remote_effects(&self, remote: Arc<dyn crate::outbox::RemoteEffects>) {
        let _ = self.remote.set(remote);
    }

    pub(crate) fn remote_effects(&self) -> Option<Arc<dyn crate::outbox::RemoteEffects>> {
        self.remote.get().cloned()
    }

    pub fn region(&self) -> &RegionCode {
        &self.region
    }

    /// The newest cluster logic version this node applies.
    pub fn max_logic_version(&self) -> u32 {
        self.max_logic_version
    }

    /// Why this node's replica of `shard` cannot serve at all (its Raft stopped on a fatal
    /// error, or it halted on an entry it must not apply), if it cannot.
    pub fn local_fault(&self, shard: ShardId) -> Option<String> {
        let s = self.shards.get(shard.0 as usize)?;
        if let Some(why) = s.stats.halted() {
            return Some(why);
        }
        match &s.raft.metrics().borrow().running_state {
            Err(e) => Some(e.to_string()),
            Ok(()) => None,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn shard(&self, shard: ShardId) -> Result<&Shard, RaftNodeError> {
        self.shards
            .get(shard.0 as usize)
            .ok_or_else(|| RaftNodeError::BadRequest(format!("no shard {shard} (the region has {})", self.shard_count)))
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The local replica of a shard's state (may lag; see [`RaftNode::read_barrier`]). A
    /// replica that has stopped is not read from: it would answer from a state that no
    /// longer moves.
    pub fn store(&self, shard: ShardId) -> Result<&ShardStore, RaftNodeError> {
        let s = self.shard(shard)?;
        if let Some(detail) = self.local_fault(shard) {
            return Err(RaftNodeError::Fatal { shard: shard.0, detail });
        }
        if s.stats.installing.load(Ordering::SeqCst) {
            // The shard's state is being replaced by a snapshot, in batches: not readable here.
            return Err(RaftNodeError::Unavailable { shard: shard.0, detail: "installing a snapshot".into() });
        }
        Ok(&s.store)
    }

    /// The shards this node's replica has halted (an entry it must not apply), with why.
    pub fn halted_shards(&self) -> Vec<(ShardId, String)> {
        self.shards.iter().filter_map(|s| s.stats.halted().map(|why| (s.id, why))).collect()
    }

    /// Initializes every shard with `members` when this node's data is new. Safe to call on
    /// every initial member with the same set; a no-op for shards already initialized.
    ///
    /// Leadership starts spread over the members: a shard is initialized at once only by its
    /// preferred member (the `shard mod n`-th by id), which then stands for election with
    /// nobody competing. The other members initialize it too, as a fallback, if it still has
    /// no leader after [`BOOTSTRAP_FALLBACK`] (its preferred member is down, say). Were every
    /// member to initialize every shard at once, the one that started last, with all its
    /// peers up, would win every election and carry every shard's leader work alone.
    pub async fn bootstrap(&self, nodes: BTreeMap<NodeId, Member>) -> anyhow::Result<()> {
        let ids: Vec<NodeId> = nodes.keys().copied().collect();
        let preferred = |shard: u32| ids.get(shard as usize % ids.len().max(1)).copied();
        let mut later = Vec::new();
        let mut fresh = false;
        for s in &self.shards {
            if preferred(s.id.0) == Some(self.node_id) {
                fresh |= Self::initialize(s, nodes.clone()).await? && s.id.0 == 0;
            } else {
                later.push(s.id);
            }
        }
        // A new region starts on the newest logic version its members share: the member that
        // initialized shard 0 raises it, once leaders are elected and the members answer.
        if fresh {
            let me = self.me.clone();
            tokio::spawn(async move {
                if let Some(node) = me.upgrade() {
                    node.raise_after_bootstrap().await;
                }
            });
        }
        if later.is_empty() {
            return Ok(());
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(BOOTSTRAP_FALLBACK).await;
            let Some(node) = me.upgrade() else { return };
            for shard in later {
                let Ok(s) = node.shard(shard) else { continue };
                if s.raft.metrics().borrow().current_leader.is_some() {
                    continue;
                }
                if let Err(e) = Self::initialize(s, nodes.clone()).await {
                    tracing::warn!(shard = shard.0, error = %e, "fallback initialization failed");
                }
            }
        });
        Ok(())
    }

    /// Initializes one shard; `false` when it already was.
    async fn initialize(s: &Shard, nodes: BTreeMap<NodeId, Node>) -> anyhow::Result<bool> {
        match s.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(shard = s.id.0, "initialized shard");
                Ok(true)
            }
            Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(anyhow::anyhow!("initialize shard {}: {e}", s.id)),
        }
    }

    /// The shard leader as this node knows it, with its peer address.
    pub fn leader(&self, shard: ShardId) -> Option<(NodeId, String)> {
        self.leader_member(shard).map(|(id, member)| (id, member.addr))
    }

    /// The shard leader as this node knows it, with both its addresses.
    pub fn leader_member(&self, shard: ShardId) -> Option<(NodeId, Member)> {
        let s = self.shards.get(shard.0 as usize)?;
        let metrics = s.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let member = m.membership_config.membership().get_node(&leader).cloned()?;
        Some((leader, member))
    }

    pub fn is_leader(&self, shard: ShardId) -> bool {
        self.leader(shard).is_some_and(|(id, _)| id == self.node_id)
    }

    /// Runs `attempt` against the shard's current leader (`Local` when it is this node) until
    /// it succeeds or `within` has passed; `Err` from an attempt is the reason to retry.
    async fn with_leader<T, F, Fut>(&self, shard: ShardId, within: Duration, mut attempt: F) -> Result<T, RaftNodeError>
    where
        F: FnMut(Leader) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + within;
        let mut backoff = Duration::from_millis(10);
        let mut last_error = String::from("no leader elected yet");
        loop {
            // A replica that has stopped cannot serve through this node: said at once.
            if let Some(detail) = self.local_fault(shard) {
                return Err(RaftNodeError::Fatal { shard: shard.0, detail });
            }
            let leader = match self.leader(shard) {
                Some((id, _)) if id == self.node_id => Some(Leader::Local),
                Some((id, addr)) => Some(Leader::Remote { id, addr }),
                None => None,
            };
            if let Some(leader) = leader {
                match attempt(leader).await {
                    Ok(v) => return Ok(v),
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(match self.leader_member(shard) {
                    Some((id, member)) if id != self.node_id => RaftNodeError::NotLeader {
                        shard: shard.0,
                        leader: LeaderHint { node_id: id, client_addr: member.client_addr },
                        detail: last_error,
                    },
                    _ => RaftNodeError::Unavailable { shard: shard.0, detail: last_error },
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Proposes domain commands to a shard, wherever its leader is, and returns each one's
    /// result. A command that breaks an ingress rule ([`meridian_domain::ingress`]) is not
    /// proposed: its result is the rejection.
    pub async fn propose(&self, shard: ShardId, commands: &[Command]) -> Result<Vec<CommandResult>, RaftNodeError> {
        self.gate(shard, Self::write_access(commands))?;
        let mut results: Vec<Option<CommandResult>> = vec![None; commands.len()];
        let mut admitted = Vec::with_capacity(commands.len());
        let mut positions = Vec::with_capacity(commands.len());
        for (i, command) in commands.iter().enumerate() {
            match self.check(shard, command) {
                Ok(()) => {
                    admitted.push(codec::command_to_pb(command));
                    positions.push(i);
                }
                Err(rejection) => results[i] = Some(Err(rejection)),
            }
        }
        if !admitted.is_empty() {
            let proposed = self.propose_pb(shard, admitted).await?;
            for (i, result) in positions.into_iter().zip(proposed) {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| RaftNodeError::Unavailable { shard: shard.0, detail: "a command got no result".into() })
            })
            .collect()
    }

    /// Checks one command against the ingress rules for `shard` of this region.
    fn check(&self, shard: ShardId, command: &Command) -> Result<(), Rejection> {
        let to = Destination { region: &self.region, shard, shards: self.shard_count };
        ingress::check(command, to, self.ingress, codec::encoded_body_len)
    }

    /// Decodes and checks encoded commands that arrived from the network (a forwarded
    /// proposal) and returns their canonical encoding, or the first rejection. Nothing of a
    /// batch with a rejected command is proposed.
    pub fn admit(&self, shard: ShardId, commands: Vec<pb::Command>) -> Result<Vec<pb::Command>, Rejection> {
        if commands.is_empty() {
            return Err(Rejection::new(Reason::MalformedCommand, "a proposal needs at least one command"));
        }
        commands
            .into_iter()
            .map(|c| {
                let command = codec::command_from_pb(c, &self.region)
                    .map_err(|e| Rejection::new(Reason::MalformedCommand, e.to_string()))?;
                self.check(shard, &command)?;
                Ok(codec::command_to_pb(&command))
            })
            .collect()
    }

    /// Proposes encoded commands that passed the ingress check. Retries across leader changes
    /// until [`LEADER_DEADLINE`]; a retry may re-propose a command that was in fact committed,
    /// so every command must be idempotent (sends carry request ids; the others are
    /// idempotent by nature).
    async fn propose_pb(
        &self,
        shard: ShardId,
        commands: Vec<pb::Command>,
    ) -> Result<Vec<CommandResult>, RaftNodeError> {
        let s = self.shard(shard)?;
        self.with_leader(shard, LEADER_DEADLINE, |leader| {
            let commands = commands.clone();
            async move {
                match leader {
                    Leader::Local => s.batcher.submit(commands).await.map_err(|e| e.to_string()),
                    Leader::Remote { id, addr } => {
                        let req = peer::ProposeRequest { shard: shard.0, commands };
                        match self.forward_propose(&addr, req).await {
                            Ok(Some(results)) => Ok(results),
                            Ok(None) => Err(format!("node {id} is no longer the leader")),
                            Err(e) => Err(format!("forward to node {id} at {addr}: {e}")),
                        }
                    }
                }
            }
        })
        .await
    }

    /// `Ok(None)`: the peer is not the leader.
    async fn forward_propose(
        &self,
        addr: &str,
        req: peer::ProposeRequest,
    ) -> Result<Option<Vec<CommandResult>>, String> {
        let reply = self.connections.call(addr, Body::Propose(req), FORWARD_TIMEOUT).await;
        let Body::ProposeReply(resp) = reply.map_err(|e| e.to_string())? else {
            return Err("the peer answered a proposal with another kind of frame".into());
        };
        if resp.not_leader {
            return Ok(None);
        }
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        resp.outcomes.into_iter().map(outcome_from_pb).collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// Proposes on this node only (the peer service's side of a forwarded proposal, whose
    /// commands [`RaftNode::admit`] has checked).
    pub async fn propose_local(&self, shard: ShardId, commands: Vec<pb::Command>) -> peer::ProposeResponse {
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => return peer::ProposeResponse { error: e.to_string(), ..Default::default() },
        };
        if !self.is_leader(shard) {
            return self.not_leader_response(shard);
        }
        // A forwarded raise of the epoch passes the gate; anything else is checked.
        let raise = commands.iter().all(|c| matches!(&c.kind, Some(pb::command::Kind::RaiseEpoch(_))));
        if let Err(e) = self.gate(shard, if raise { standby::Access::RaiseEpoch } else { standby::Access::Write }) {
            return peer::ProposeResponse { error: e.to_string(), ..Default::default() };
        }
        match s.batcher.submit(commands).await {
            Ok(results) => peer::ProposeResponse {
                outcomes: results.iter().map(crate::convert::outcome_to_pb).collect(),
                ..Default::default()
            },
            Err(BatchError::NotLeader) => self.not_leader_response(shard),
            Err(e) => peer::ProposeResponse { error: e.to_string(), ..Default::default() },
        }
    }

    fn not_leader_response(&self, shard: ShardId) -> peer::ProposeResponse {
        let (leader_id, leader_addr) = self.leader(shard).unwrap_or_default();
        peer::ProposeResponse { not_leader: true, leader_id, leader_addr, ..Default::default() }
    }

    /// Waits until this node's replica of `shard` reflects every write acknowledged before the
    /// call (leader read-index), so a read that follows is linearizable. Concurrent calls share
    /// read-index rounds ([`crate::read_index`]).
    pub async fn read_barrier(&self, shard: ShardId) -> Result<(), RaftNodeError> {
        self.gate(shard, standby::Access::Read)?;
        let s = self.shard(shard)?;
        let me = self.me.clone();
        let index = s
            .reads
            .read_index(s.read_stats.clone(), move || {
                let me = me.clone();
                async move {
                    match me.upgrade() {
                        Some(node) => node.fetch_read_index(shard).await,
                        None => Err(RaftNodeError::Unavailable { shard: shard.0, detail: "node stopped".into() }),
                    }
                }
            })
            .await?;
        if s.raft.metrics().borrow().last_applied.is_some_and(|l| l.index >= index) {
            return Ok(());
        }
        s.raft
            .wait(Some(LEADER_DEADLINE))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| RaftNodeError::Unavailable { shard: shard.0, detail: e.to_string() })
    }

    /// One read-index round: from this node's Raft when it leads the shard, else from the leader.
    async fn fetch_read_index(&self, shard: ShardId) -> Result<u64, RaftNodeError> {
        let s = self.shard(shard)?;
        self.with_leader(shard, LEADER_DEADLINE, |leader| async move {
            match leader {
                Leader::Local => leader_read_index(&s.raft).await,
                Leader::Remote { id, addr } => match self.remote_read_index(&addr, shard).await {
                    Ok(Some(index)) => Ok(index),
                    Ok(None) => Err(format!("node {id} is no longer the leader")),
                    Err(e) => Err(format!("read index from node {id}: {e}")),
                },
            }
        })
        .await
    }

    async fn remote_read_index(&self, addr: &str, shard: ShardId) -> Result<Option<u64>, String> {
        let request = Body::ReadIndex(peer::ReadIndexRequest { shard: shard.0 });
        let reply = self.connections.call(addr, request, FORWARD_TIMEOUT).await;
        let Body::ReadIndexReply(resp) = reply.map_err(|e| e.to_string())? else {
            return Err("the peer answered a read index with another kind of frame".into());
        };
        if resp.not_leader {
            return Ok(None);
        }
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        Ok(Some(resp.read_index))
    }

    /// The leader's side of a read index: confirm leadership with a quorum, return the index.
    /// Concurrent requests (from followers' reads) share rounds.
    pub async fn read_index_local(&self, shard: ShardId) -> peer::ReadIndexResponse {
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => return peer::ReadIndexResponse { error: e.to_string(), ..Default::default() },
        };
        let raft = s.raft.clone();
        let round = s
            .leader_reads
            .read_index(s.read_stats.clone(), move || {
                let raft = raft.clone();
                async move {
                    leader_read_index(&raft)
                        .await
                        .map_err(|detail| RaftNodeError::Unavailable { shard: shard.0, detail })
                }
            })
            .await;
        match round {
            Ok(read_index) => peer::ReadIndexResponse { read_index, ..Default::default() },
            Err(_) if !self.is_leader(shard) => {
                let (leader_id, leader_addr) = self.leader(shard).unwrap_or_default();
                peer::ReadIndexResponse { not_leader: true, leader_id, leader_addr, ..Default::default() }
            }
            Err(e) => peer::ReadIndexResponse { error: e.to_string(), ..Default::default() },
        }
    }

    // ------------------------------------------------------------ status

    pub fn status(&self, include_hash: bool) -> Vec<ShardStatus> {
        self.shards
            .iter()
            .map(|s| {
                let m = s.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let role = match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                };
                let halted = s.stats.halted().is_some();
                ShardStatus {
                    shard: s.id.0,
                    leader: m.current_leader,
                    term: m.current_term,
                    role: if halted { "halted" } else { role }.to_owned(),
                    last_log_index: m.last_log_index.unwrap_or(0),
                    applied_index: m.last_applied.map_or(0, |l| l.index),
                    purged_index: m.purged.map_or(0, |l| l.index),
                    snapshot_index: m.snapshot.map_or(0, |l| l.index),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    snapshots_installed: s.stats.snapshots_installed.load(Ordering::Relaxed),
                    state_hash: if include_hash { s.store.state_hash().ok() } else { None },
                }
            })
            .collect()
    }

    /// True when every shard has a leader this node knows of.
    pub fn all_shards_have_leaders(&self) -> bool {
        self.shards.iter().all(|s| s.raft.metrics().borrow().current_leader.is_some())
    }

    /// Resolves when any shard's Raft has stopped on a fatal error (e.g. a failed WAL write
    /// on a full disk), with a description of it. A shard that halted on an entry it must
    /// not apply is not such an error: it stays halted, and the node serves the others.
    pub async fn fatal(&self) -> String {
        let watchers = self.shards.iter().map(|s| {
            let mut rx = s.raft.metrics();
            let shard = s.id.0;
            let stats = s.stats.clone();
            Box::pin(async move {
                loop {
                    if rx.borrow().running_state.is_err() && stats.halted().is_some() {
                        return std::future::pending::<String>().await;
                    }
                    if let Err(e) = &rx.borrow().running_state {
                        return format!("shard {shard}: {e}");
                    }
                    if rx.changed().await.is_err() {
                        return format!("shard {shard}: raft stopped");
                    }
                }
            })
        });
        futures::future::select_all(watchers).await.0
    }

    pub async fn shutdown(&self) {
        for s in &self.shards {
            if let Err(e) = s.raft.shutdown().await {
                tracing::warn!(shard = s.id.0, error = %e, "raft shutdown");
            }
        }
    }
}
