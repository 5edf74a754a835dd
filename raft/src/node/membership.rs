//! Membership changes of every shard: adding a node (as a learner, then a voter), removing
//! one, and the leader's side of a forwarded change.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_domain::ShardId;
use meridian_proto::peer;
use openraft::ChangeMembers;

use super::{Leader, RaftNode, RaftNodeError};
use crate::types::*;

impl RaftNode {
    /// Adds `node_id` to every shard as a learner, then (unless `learner_only`) promotes it.
    pub async fn add_node(
        &self,
        node_id: NodeId,
        member: &Member,
        learner_only: bool,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>), RaftNodeError> {
        use peer::change_membership_request::Op;
        let mut last = (vec![], vec![]);
        for s in &self.shards {
            last = self.change_membership(s.id, Op::AddLearner, node_id, member).await?;
            if !learner_only {
                last = self.change_membership(s.id, Op::Promote, node_id, member).await?;
            }
        }
        Ok(last)
    }

    /// Removes `node_id` from every shard (voter or learner).
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(Vec<NodeId>, Vec<NodeId>), RaftNodeError> {
        use peer::change_membership_request::Op;
        let mut last = (vec![], vec![]);
        for s in &self.shards {
            last = self.change_membership(s.id, Op::Remove, node_id, &Member::default()).await?;
        }
        Ok(last)
    }

    async fn change_membership(
        &self,
        shard: ShardId,
        op: peer::change_membership_request::Op,
        node_id: NodeId,
        member: &Member,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>), RaftNodeError> {
        let req = peer::ChangeMembershipRequest {
            shard: shard.0,
            op: op as i32,
            node_id,
            addr: member.addr.clone(),
            client_addr: member.client_addr.clone(),
            voters: vec![],
        };
        self.membership_change_through_leader(req).await
    }

    /// Runs a membership change through the shard's leader, wherever it is; the members
    /// after it.
    pub(super) async fn membership_change_through_leader(
        &self,
        req: peer::ChangeMembershipRequest,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>), RaftNodeError> {
        self.with_leader(ShardId(req.shard), Duration::from_secs(60), |leader| {
            let req = req.clone();
            async move {
                let resp = match leader {
                    Leader::Local => self.change_membership_local(req).await,
                    Leader::Remote { addr, .. } => {
                        let mut client = self.connections.client(&addr).map_err(|e| e.to_string())?;
                        client.change_membership(req).await.map_err(|e| e.to_string())?.into_inner()
                    }
                };
                match resp {
                    r if r.not_leader => Err("leadership moved".to_owned()),
                    r if !r.error.is_empty() => Err(r.error),
                    r => Ok((r.voters, r.learners)),
                }
            }
        })
        .await
    }

    /// Performs a membership change on this node, which must lead the shard.
    pub async fn change_membership_local(&self, req: peer::ChangeMembershipRequest) -> peer::ChangeMembershipResponse {
        use peer::change_membership_request::Op;
        let shard = ShardId(req.shard);
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => return peer::ChangeMembershipResponse { error: e.to_string(), ..Default::default() },
        };
        if !self.is_leader(shard) {
            let (leader_id, leader_addr) = self.leader(shard).unwrap_or_default();
            return peer::ChangeMembershipResponse { not_leader: true, leader_id, leader_addr, ..Default::default() };
        }
        let ids = BTreeSet::from([req.node_id]);
        let result = match Op::try_from(req.op) {
            Ok(Op::AddLearner) => {
                let member = Member::new(req.addr.clone(), req.client_addr.clone());
                s.raft.add_learner(req.node_id, member, true).await.map(|_| ())
            }
            Ok(Op::Promote) => s.raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await.map(|_| ()),
            Ok(Op::SwitchVoters) => {
                let voters: BTreeSet<NodeId> = req.voters.iter().copied().collect();
                s.raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true).await.map(|_| ())
            }
            Ok(Op::Remove) => {
                let m = s.raft.metrics().borrow().membership_config.clone();
                let is_voter = m.membership().voter_ids().any(|v| v == req.node_id);
                if is_voter {
                    s.raft.change_membership(ChangeMembers::RemoveVoters(ids), false).await.map(|_| ())
                } else {
                    s.raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await.map(|_| ())
                }
            }
            Err(_) => {
                return peer::ChangeMembershipResponse { error: format!("unknown op {}", req.op), ..Default::default() }
            }
        };
        match result {
            Ok(()) => {
                let m = s.raft.metrics().borrow().membership_config.clone();
                peer::ChangeMembershipResponse {
                    voters: m.membership().voter_ids().collect(),
                    learners: m.membership().learner_ids().collect(),
                    ..Default::default()
                }
            }
            Err(e) => peer::ChangeMembershipResponse { error: e.to_string(), ..Default::default() },
        }
    }
}
