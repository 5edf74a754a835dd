//! The outbox pump: on a shard's leader, delivers the effects its applies emitted to their
//! target shards, then acknowledges them through its own log.
//!
//! Delivery is at least once (a pump may resend after a leader change or a lost reply); the
//! receiver applies each effect once, tracking a per-source watermark. That is sound because
//! a pump always sends a target's effects starting from the lowest one not yet acknowledged,
//! in id order, and acknowledges only what the target committed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use meridian_domain::apply::max_effect_id;
use meridian_domain::{Command, Effect, ShardId};
use tokio::sync::Notify;

use crate::node::RaftNode;

/// Effects delivered per proposal.
const DELIVERY_BATCH: usize = 256;
/// How often an idle pump looks at its outbox anyway (after a restart or leader change).
const IDLE_POLL: Duration = Duration::from_millis(250);

pub(crate) fn spawn_pump(node: Weak<RaftNode>, shard: ShardId, signal: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            let Some(node) = node.upgrade() else { return };
            if let Err(e) = drain(&node, shard).await {
                tracing::warn!(shard = shard.0, error = %e, "outbox delivery failed; will retry");
                drop(node);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

/// Delivers everything in the outbox while this node leads the shard.
async fn drain(node: &RaftNode, shard: ShardId) -> Result<(), String> {
    loop {
        if !node.is_leader(shard) {
            return Ok(());
        }
        let store = node.store(shard).map_err(|e| e.to_string())?;
        let pending = store.outbox(DELIVERY_BATCH).map_err(|e| e.to_string())?;
        let Some(target) = pending.first().map(|e| e.target) else { return Ok(()) };
        let batch: Vec<Effect> = pending.into_iter().take_while(|e| e.target == target).collect();
        let up_to = max_effect_id(&batch);
        let n = batch.len();
        node.propose(target, &[Command::ApplyEffects { source: shard, effects: batch }])
            .await
            .map_err(|e| e.to_string())?;
        node.propose(shard, &[Command::AckEffects { target, up_to }]).await.map_err(|e| e.to_string())?;
        tracing::debug!(shard = shard.0, target = target.0, effects = n, "delivered effects");
    }
}
