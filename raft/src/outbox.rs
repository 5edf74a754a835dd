//! The outbox pump: on a shard's leader, delivers the effects its applies emitted to their
//! target shards, then acknowledges them through its own log.
//!
//! Delivery is at least once (a pump may resend after a leader change or a lost reply); the
//! receiver applies each effect once, tracking a per-source watermark. That is sound because
//! a pump always sends a target's effects starting from the lowest one not yet acknowledged,
//! in id order, and acknowledges only what the target committed.
//!
//! One round delivers to every target at once (each target's leader batches them with other
//! proposals) and then acknowledges all of them in one entry of its own log, so a round costs
//! the source shard one Raft entry however many targets it fed. The pump remembers, per
//! target, up to which id it has acknowledged, and reads the outbox from there: ids only grow,
//! and an acknowledgement, once committed, is never undone, so nothing unacknowledged lies
//! below that mark. A new pump starts from the mark the shard's state keeps (see
//! `ShardStore::outbox_acked_below`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use meridian_domain::apply::max_effect_id;
use meridian_domain::{Command, Effect, EffectId, Lane, RegionCode, ShardId};
use tokio::sync::Notify;

use crate::node::RaftNode;

/// Effects delivered per target per round.
const DELIVERY_BATCH: usize = 256;
/// How often an idle pump looks at its outbox anyway (after a restart or leader change).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How long a lane to another region waits after a failed delivery (a region down or cut
/// off): its effects stay in the outbox and go once the region answers again.
const REMOTE_RETRY: Duration = Duration::from_secs(1);

/// Delivery of effects to other regions (the region link; the node crate provides it).
pub trait RemoteEffects: Send + Sync + std::fmt::Debug {
    /// The other regions of the deployment: the outbox lanes to look at.
    fn regions(&self) -> Vec<RegionCode>;
    /// Delivers `effects` (of shard `source` of this region, in id order) to `region`; `Ok`
    /// once the receiving region has committed all of them.
    fn deliver(
        &self,
        region: RegionCode,
        source: ShardId,
        effects: Vec<Effect>,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// What a pump remembers between rounds.
#[derive(Default)]
struct PumpState {
    /// Per target shard: every effect below this id is acknowledged.
    acked_below: Vec<EffectId>,
    /// The same per other region.
    remote_acked_below: BTreeMap<RegionCode, EffectId>,
    /// Regions whose last delivery failed, and when to try again.
    remote_retry_at: BTreeMap<RegionCode, Instant>,
    /// Regions reported as failing (to log a change once, not every retry).
    failing: BTreeSet<RegionCode>,
}

pub(crate) fn spawn_pump(node: Weak<RaftNode>, shard: ShardId, signal: Arc<Notify>) {
    tokio::spawn(async move {
        let mut pump = PumpState::default();
        loop {
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            let Some(node) = node.upgrade() else { return };
            pump.acked_below.resize(node.shard_count() as usize, EffectId(0));
            if let Err(e) = drain(&node, shard, &mut pump).await {
                tracing::warn!(shard = shard.0, error = %e, "outbox delivery failed; will retry");
                drop(node);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

/// Delivers everything in the outbox while this node leads the shard.
async fn drain(node: &RaftNode, shard: ShardId, pump: &mut PumpState) -> Result<(), String> {
    loop {
        if !node.is_leader(shard) {
            return Ok(());
        }
        let store = node.store(shard).map_err(|e| e.to_string())?;
        let mut deliveries: Vec<(Lane, Vec<Effect>)> = Vec::new();
        for (target, from) in pump.acked_below.iter_mut().enumerate() {
            let target = ShardId(target as u32);
            if from.0 == 0 {
                *from = store.outbox_acked_below(target).map_err(|e| e.to_string())?;
            }
            let batch = store.outbox_for(target, *from, DELIVERY_BATCH).map_err(|e| e.to_string())?;
            if !batch.is_empty() {
                deliveries.push((Lane::Shard(target), batch));
            }
        }
        let remote = node.remote_effects();
        if let Some(remote) = &remote {
            let now = Instant::now();
            for region in remote.regions() {
                if pump.remote_retry_at.get(&region).is_some_and(|at| *at > now) {
                    continue;
                }
                let from = match pump.remote_acked_below.get(&region) {
                    Some(from) => *from,
                    None => store.outbox_remote_acked_below(&region).map_err(|e| e.to_string())?,
                };
                pump.remote_acked_below.insert(region.clone(), from);
                let batch = store.outbox_remote_for(&region, from, DELIVERY_BATCH).map_err(|e| e.to_string())?;
                if !batch.is_empty() {
                    deliveries.push((Lane::Region(region), batch));
                }
            }
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        let sent = deliveries.iter().map(|(lane, batch)| {
            let remote = remote.clone();
            async move {
                let up_to = max_effect_id(batch);
                match lane {
                    Lane::Shard(target) => {
                        let command = Command::ApplyEffects { source: shard, from_region: None, effects: batch.clone() };
                        let results = node.propose(*target, &[command]).await.map_err(|e| (lane, e.to_string()))?;
                        // A delivery the target refused is not acknowledged: acknowledging would
                        // drop effects that were never applied. It is retried, loudly, until fixed.
                        if let Some(Err(rejection)) = results.first() {
                            tracing::error!(source = shard.0, target = target.0, %rejection, "effects refused by their target");
                            return Err((lane, format!("shard {target} refused effects from shard {shard}: {rejection}")));
                        }
                    }
                    Lane::Region(region) => {
                        let Some(remote) = remote else { return Err((lane, "no region link".to_owned())) };
                        remote.deliver(region.clone(), shard, batch.clone()).await.map_err(|e| (lane, e))?;
                    }
                }
                Ok((lane.clone(), up_to))
            }
        });
        let outcomes = futures::future::join_all(sent).await;
        let mut acks = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok((lane, up_to)) => {
                    if let Lane::Region(region) = &lane {
                        pump.remote_retry_at.remove(region);
                        if pump.failing.remove(region) {
                            tracing::info!(shard = shard.0, %region, "effects for the region delivered again");
                        }
                    }
                    acks.push(Command::AckEffects { target: lane, up_to });
                }
                Err((Lane::Region(region), e)) => {
                    // A region that is down or cut off delays its own lane only.
                    pump.remote_retry_at.insert(region.clone(), Instant::now() + REMOTE_RETRY);
                    if pump.failing.insert(region.clone()) {
                        tracing::warn!(shard = shard.0, %region, error = %e, "effects for the region wait: delivery failed");
                    }
                }
                Err((Lane::Shard(_), e)) => failure = Some(e),
            }
        }
        if !acks.is_empty() {
            node.propose(shard, &acks).await.map_err(|e| e.to_string())?;
            for ack in &acks {
                if let Command::AckEffects { target, up_to } = ack {
                    let next = EffectId(up_to.0.saturating_add(1));
                    let mark = match target {
                        Lane::Shard(target) => pump.acked_below.get_mut(target.0 as usize),
                        Lane::Region(region) => pump.remote_acked_below.get_mut(region),
                    };
                    if let Some(mark) = mark {
                        *mark = (*mark).max(next);
                    }
                }
            }
            tracing::debug!(shard = shard.0, targets = acks.len(), "delivered effects");
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if acks.is_empty() {
            return Ok(());
        }
    }
}
