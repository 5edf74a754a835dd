//! What disaster recovery (ADR 0005) needs of a node's replicas: a gate that says whether
//! this node may take writes and reads for its region (a standby may not; a fenced primary
//! may not), the rewrite that turns a standby's replicas into a cluster of their own when
//! the region is promoted there, and the membership steps of failback.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_domain::{Command, Rejection, ShardId};
use meridian_proto::durable as pb;
use meridian_proto::peer;
use meridian_storage::{Db, LogStore, ShardStore};

use super::{RaftNode, RaftNodeError};
use crate::convert::membership_to_pb;
use crate::types::*;

/// What a node is to its region (disaster recovery, ADR 0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A voter: it takes reads and writes.
    Serving,
    /// Not a voter (the standby, or a node still joining): reads only.
    Standby,
    /// Its region was promoted elsewhere: neither.
    Fenced,
    /// Promoted, raising its shards to the new epoch before it takes writes.
    Promoting,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Serving, Role::Standby, Role::Fenced, Role::Promoting];

    /// The name `NodeInfo`, `Admin/Dr` and `/metrics` carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Standby => "standby",
            Role::Fenced => "fenced",
            Role::Promoting => "promoting",
        }
    }
}

/// Whether this node serves its region right now (set by the node's disaster-recovery
/// state; absent: always).
pub trait RegionRole: std::fmt::Debug + Send + Sync {
    /// `Err` when this node must not take `access` for `shard`.
    fn check(&self, shard: ShardId, access: Access) -> Result<(), Rejection>;
    /// This node's role (cheap: no storage read).
    fn role(&self) -> Role;
    /// The region epoch this node serves or expects (reads every shard's applied state).
    fn epoch(&self) -> u32;
}

/// What a call asks of a shard, for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// The epoch raise of a promotion: it is what opens the gate, so it always passes.
    RaiseEpoch,
}

/// Where a shard's replica stood when its node was promoted: the cut of the failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CutPoint {
    pub shard: u32,
    /// The last entry applied (and kept); everything after it was dropped.
    pub index: u64,
    pub term: u64,
    /// Server time of that entry (0 when nothing was applied).
    pub time_ms: i64,
    /// The region epoch the shard had applied.
    pub epoch: u32,
}

impl RaftNode {
    /// Gates this node's proposals and read barriers by `role` (once; later calls are ignored).
    pub fn set_region_role(&self, role: std::sync::Arc<dyn RegionRole>) {
        let _ = self.role.set(role);
    }

    /// Refuses Raft traffic from nodes outside a shard's membership (set on a promoted
    /// standby: the old primary's nodes, should they come back, cannot lead it).
    pub fn set_members_only(&self, on: bool) {
        self.members_only.store(on, Ordering::Relaxed);
    }

    /// Whether a Raft call for `shard` from `sender` is refused (see [`Self::set_members_only`]).
    pub fn refuses_raft_from(&self, shard: u32, sender: NodeId) -> bool {
        if !self.members_only.load(Ordering::Relaxed) {
            return false;
        }
        let Some(s) = self.shards.get(shard as usize) else { return true };
        let metrics = s.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().get_node(&sender).is_none()
    }

    pub(super) fn gate(&self, shard: ShardId, access: Access) -> Result<(), RaftNodeError> {
        match self.role.get() {
            Some(role) if access != Access::RaiseEpoch => role.check(shard, access).map_err(RaftNodeError::Refused),
            _ => Ok(()),
        }
    }

    /// The access a proposal of `commands` asks for.
    pub(super) fn write_access(commands: &[Command]) -> Access {
        let raise = !commands.is_empty() && commands.iter().all(|c| matches!(c, Command::RaiseEpoch { .. }));
        if raise {
            Access::RaiseEpoch
        } else {
            Access::Write
        }
    }

    /// This node's role as the region-role gate reports it; serving without one.
    pub fn region_role(&self) -> Role {
        self.role.get().map_or(Role::Serving, |r| r.role())
    }

    /// The region epoch this node serves or expects; 1 without a region-role gate.
    pub fn region_epoch(&self) -> u32 {
        self.role.get().map_or(1, |r| r.epoch())
    }

    /// Whether `node` is a voter of `shard` as this node knows it; `None` while this node
    /// knows no membership of the shard. Allocates nothing (the gate asks on every write).
    pub fn is_voter(&self, shard: ShardId, node: NodeId) -> Option<bool> {
        let s = self.shards.get(shard.0 as usize)?;
        let metrics = s.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let mut voters = membership.voter_ids().peekable();
        voters.peek()?;
        Some(voters.any(|v| v == node))
    }

    /// The voters and learners of `shard` as this node knows them.
    pub fn members(&self, shard: ShardId) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let Some(s) = self.shards.get(shard.0 as usize) else { return Default::default() };
        let metrics = s.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        (membership.voter_ids().collect(), membership.learner_ids().collect())
    }

    /// `NodeInfo` of the node at peer address `addr` (2 s at most).
    pub async fn node_info_at(&self, addr: &str) -> Result<peer::NodeInfoResponse, String> {
        let mut client = self.connections.client(addr).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(peer::NodeInfoRequest {});
        request.set_timeout(Duration::from_secs(2));
        match tokio::time::timeout(Duration::from_secs(2), client.node_info(request)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status.message().to_owned()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// Adds `node_id` as a learner of `shard` without waiting for it to catch up; this node
    /// must lead the shard.
    pub async fn add_learner_here(&self, shard: ShardId, node_id: NodeId, member: Member) -> Result<(), String> {
        let s = self.shard(shard).map_err(|e| e.to_string())?;
        s.raft.add_learner(node_id, member, false).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Makes `voters` the voters of every shard; the voters that are not in it stay as
    /// learners (the switch of a failback, ADR 0005). Runs through each shard's leader.
    pub async fn switch_voters(&self, voters: &BTreeSet<NodeId>) -> Result<(), RaftNodeError> {
        use peer::change_membership_request::Op;
        for s in &self.shards {
            let req = peer::ChangeMembershipRequest {
                shard: s.id.0,
                op: Op::SwitchVoters as i32,
                voters: voters.iter().copied().collect(),
                ..Default::default()
            };
            self.membership_change_through_leader(req).await?;
        }
        Ok(())
    }

    /// Asks every shard's Raft to build a snapshot now (after a promotion: the snapshot a new
    /// learner receives must carry the new membership).
    pub async fn snapshot_all(&self) {
        for s in &self.shards {
            if let Err(e) = s.raft.trigger().snapshot().await {
                tracing::warn!(shard = s.id.0, error = %e, "could not trigger a snapshot");
            }
        }
    }
}

/// Turns this node's replicas of every shard into members of a cluster whose voters are
/// `voters` (a standby's promotion, ADR 0005), before the shards' Rafts start: the log
/// after the last applied entry is dropped (it was never applied here, so nothing of it was
/// acknowledged through this node) and the log up to it is purged (its membership entries
/// name the old voters), the applied state records the new membership, the vote
/// moves to a new term, and the snapshot file (with the old membership) is removed so the
/// next one is built from the new state. Returns each shard's cut. Safe to run again.
pub async fn rewrite_for_promotion(
    db: &Db,
    shards: u32,
    node_id: NodeId,
    voters: &BTreeMap<NodeId, Member>,
    snapshot_dir: &Path,
) -> anyhow::Result<Vec<CutPoint>> {
    let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
    anyhow::ensure!(ids.contains(&node_id), "node {node_id} is not one of the new voters {ids:?}");
    let membership = membership_to_pb(&openraft::Membership::new(vec![ids], voters.clone()));
    let mut cuts = Vec::with_capacity(shards as usize);
    for i in 0..shards {
        let shard = ShardId(i);
        let store = ShardStore::new(db.clone(), shard, shards);
        let log = LogStore::new(db.clone(), shard);
        let applied = store.applied_state()?;
        let last = applied.last_applied;
        log.truncate_from(last.as_ref().map_or(0, |l| l.index.saturating_add(1)))?;
        // The log up to the cut goes too: its membership entries name the old voters, and a
        // node that joins later (a reseeded primary node) must not replay them — it starts
        // from a snapshot that carries the new membership.
        if let Some(last) = last.as_ref() {
            log.purge_to(last)?;
        }
        log.save_committed(last.as_ref())?;
        let vote = log.vote()?.unwrap_or_default();
        log.save_vote(&pb::VoteRecord { version: 1, term: vote.term.saturating_add(1), node_id, committed: false })
            .await?;
        store.rewrite_membership(membership.clone())?;
        let snapshot = snapshot_dir.join(format!("shard-{i}.snap"));
        match std::fs::remove_file(&snapshot) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("remove {}: {e}", snapshot.display())),
        }
        cuts.push(CutPoint {
            shard: i,
            index: last.as_ref().map_or(0, |l| l.index),
            term: last.as_ref().map_or(0, |l| l.term),
            time_ms: applied.last_time_ms,
            epoch: applied.epoch.max(1),
        });
    }
    db.sync_async().await?;
    Ok(cuts)
}
