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

use std::sync::{Arc, Weak};
use std::time::Duration;

use meridian_domain::apply::max_effect_id;
use meridian_domain::{Command, Effect, EffectId, ShardId};
use tokio::sync::Notify;

use crate::node::RaftNode;

/// Effects delivered per target per round.
const DELIVERY_BATCH: usize = 256;
/// How often an idle pump looks at its outbox anyway (after a restart or leader change).
const IDLE_POLL: Duration = Duration::from_millis(250);

pub(crate) fn spawn_pump(node: Weak<RaftNode>, shard: ShardId, signal: Arc<Notify>) {
    tokio::spawn(async move {
        // Per target shard: every effect below this id is acknowledged.
        let mut acked_below: Vec<EffectId> = Vec::new();
        loop {
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            let Some(node) = node.upgrade() else { return };
            acked_below.resize(node.shard_count() as usize, EffectId(0));
            if let Err(e) = drain(&node, shard, &mut acked_below).await {
                tracing::warn!(shard = shard.0, error = %e, "outbox delivery failed; will retry");
                drop(node);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

/// Delivers everything in the outbox while this node leads the shard.
async fn drain(node: &RaftNode, shard: ShardId, acked_below: &mut [EffectId]) -> Result<(), String> {
    loop {
        if !node.is_leader(shard) {
            return Ok(());
        }
        let store = node.store(shard).map_err(|e| e.to_string())?;
        let mut deliveries: Vec<(ShardId, Vec<Effect>)> = Vec::new();
        for (target, from) in acked_below.iter_mut().enumerate() {
            let target = ShardId(target as u32);
            if from.0 == 0 {
                *from = store.outbox_acked_below(target).map_err(|e| e.to_string())?;
            }
            let batch = store.outbox_for(target, *from, DELIVERY_BATCH).map_err(|e| e.to_string())?;
            if !batch.is_empty() {
                deliveries.push((target, batch));
            }
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        let sent = deliveries.iter().map(|(target, batch)| {
            let command = Command::ApplyEffects { source: shard, effects: batch.clone() };
            async move {
                let results = node.propose(*target, &[command]).await.map_err(|e| e.to_string())?;
                // A delivery the target refused is not acknowledged: acknowledging would drop
                // effects that were never applied. It is retried, loudly, until it is fixed.
                if let Some(Err(rejection)) = results.first() {
                    tracing::error!(source = shard.0, target = target.0, %rejection, "effects refused by their target");
                    return Err(format!("shard {target} refused effects from shard {shard}: {rejection}"));
                }
                Ok((*target, max_effect_id(batch)))
            }
        });
        let outcomes = futures::future::join_all(sent).await;
        let mut acks = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok((target, up_to)) => acks.push(Command::AckEffects { target, up_to }),
                Err(e) => failure = Some(e),
            }
        }
        if !acks.is_empty() {
            node.propose(shard, &acks).await.map_err(|e| e.to_string())?;
            for ack in &acks {
                if let Command::AckEffects { target, up_to } = ack {
                    if let Some(mark) = acked_below.get_mut(target.0 as usize) {
                        *mark = (*mark).max(EffectId(up_to.0.saturating_add(1)));
                    }
                }
            }
            tracing::debug!(shard = shard.0, targets = acks.len(), "delivered effects");
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}
