//! The cluster logic version: what each member supports, what each shard applies, and the
//! raise, which happens only once every member of every shard reports support.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_domain::apply::Reply;
use meridian_domain::{Command, Reason, Rejection};
use meridian_proto::peer;

use super::{RaftNode, RaftNodeError};
use crate::types::*;

/// What one member said it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSupport {
    pub node_id: NodeId,
    /// `Err`: why it did not answer.
    pub max_logic_version: Result<u32, String>,
}

/// One shard's active logic version and epoch, as this node has applied them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardVersion {
    pub shard: u32,
    pub logic_version: u32,
    pub epoch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicVersionReport {
    pub nodes: Vec<NodeSupport>,
    pub shards: Vec<ShardVersion>,
}

/// Why a raise did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaiseError {
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error(transparent)]
    Raft(#[from] RaftNodeError),
}

impl RaftNode {
    /// What this node is and supports (the peer `NodeInfo` answer).
    pub fn node_info(&self) -> peer::NodeInfoResponse {
        peer::NodeInfoResponse {
            node_id: self.node_id,
            max_logic_version: self.max_logic_version,
            region: self.region.to_string(),
            epoch: self.region_epoch(),
            role: self.region_role().as_str().to_owned(),
        }
    }

    /// Every member of every shard (voters and learners), with its peer address.
    pub(crate) fn all_members(&self) -> BTreeMap<NodeId, String> {
        let mut members = BTreeMap::new();
        for s in &self.shards {
            let metrics = s.raft.metrics();
            let m = metrics.borrow();
            for (id, member) in m.membership_config.membership().nodes() {
                members.insert(*id, member.addr.clone());
            }
        }
        members
    }

    /// Asks every member what it supports.
    async fn member_support(&self) -> Vec<NodeSupport> {
        let asks = self.all_members().into_iter().map(|(node_id, addr)| async move {
            if node_id == self.node_id {
                return NodeSupport { node_id, max_logic_version: Ok(self.max_logic_version) };
            }
            let answer = async {
                let mut client = self.connections.client(&addr).map_err(|e| e.to_string())?;
                let mut request = tonic::Request::new(peer::NodeInfoRequest {});
                request.set_timeout(Duration::from_secs(5));
                let info = client.node_info(request).await.map_err(|e| e.message().to_owned())?.into_inner();
                if info.node_id != node_id {
                    return Err(format!("{addr} answered as node {}", info.node_id));
                }
                Ok(info.max_logic_version)
            };
            NodeSupport { node_id, max_logic_version: answer.await }
        });
        futures::future::join_all(asks).await
    }

    fn shard_versions(&self) -> Vec<ShardVersion> {
        self.shards
            .iter()
            .map(|s| {
                let applied = s.store.applied_state().unwrap_or_default();
                ShardVersion { shard: s.id.0, logic_version: applied.logic_version.max(1), epoch: applied.epoch.max(1) }
            })
            .collect()
    }

    /// Reports every member's support and every shard's active version (as applied here).
    pub async fn logic_version(&self) -> LogicVersionReport {
        LogicVersionReport { nodes: self.member_support().await, shards: self.shard_versions() }
    }

    /// Raises every shard to logic version `to`, once every member of every shard reports
    /// that it implements it; else nothing is proposed and the refusal names the members that
    /// do not (or did not answer). Never lowers a version; raising to the active one is a
    /// no-op.
    pub async fn raise_logic_version(&self, to: u32) -> Result<LogicVersionReport, RaiseError> {
        self.raise_with(self.member_support().await, to).await
    }

    /// [`RaftNode::raise_logic_version`] with the members' answers already in hand.
    async fn raise_with(&self, nodes: Vec<NodeSupport>, to: u32) -> Result<LogicVersionReport, RaiseError> {
        let behind: Vec<String> = nodes
            .iter()
            .filter_map(|n| match &n.max_logic_version {
                Ok(v) if *v >= to => None,
                Ok(v) => Some(format!("node {} supports up to {v}", n.node_id)),
                Err(e) => Some(format!("node {} did not answer ({e})", n.node_id)),
            })
            .collect();
        if !behind.is_empty() {
            return Err(Rejection::new(
                Reason::LogicVersionUnsupported,
                format!("cannot raise the logic version to {to}: {}", behind.join("; ")),
            )
            .into());
        }
        let mut shards = Vec::with_capacity(self.shards.len());
        for s in &self.shards {
            let result = self.propose(s.id, &[Command::SetLogicVersion { version: to }]).await?;
            let version = match result.into_iter().next() {
                Some(Ok(Reply::LogicVersion { version })) => version,
                Some(Err(rejection)) => return Err(rejection.into()),
                other => {
                    return Err(RaftNodeError::Unavailable {
                        shard: s.id.0,
                        detail: format!("unexpected result of a logic version raise: {other:?}"),
                    }
                    .into())
                }
            };
            let epoch = s.store.applied_state().map(|a| a.epoch.max(1)).unwrap_or(1);
            shards.push(ShardVersion { shard: s.id.0, logic_version: version, epoch });
        }
        Ok(LogicVersionReport { nodes, shards })
    }

    /// After a fresh bootstrap: raises every shard to the newest version all initial members
    /// support (a new region starts on the newest rules its binaries share). Retries until the
    /// shards have leaders and the members answer.
    pub(super) async fn raise_after_bootstrap(&self) {
        let mut pause = Duration::from_millis(200);
        for _ in 0..100 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
            let nodes = self.member_support().await;
            let Some(common) = nodes
                .iter()
                .map(|n| n.max_logic_version.clone().ok())
                .collect::<Option<Vec<u32>>>()
                .and_then(|v| v.into_iter().min())
            else {
                continue;
            };
            if self.shard_versions().iter().all(|s| s.logic_version >= common) {
                return;
            }
            match self.raise_with(nodes, common).await {
                Ok(_) => {
                    tracing::info!(version = common, "raised the new region's logic version");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "logic version raise after bootstrap: will retry"),
            }
        }
        tracing::warn!("gave up raising the logic version after bootstrap: run `meridian admin logic-version --raise`");
    }
}
