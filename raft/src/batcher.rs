//! The shard leader's batcher: concurrent proposals share one Raft entry.
//!
//! Proposals queue up while earlier entries are in flight; each entry takes everything that
//! queued (up to a limit) and stamps it with the server time. A bounded number of entries are
//! in flight at once, which lets openraft pipeline replication while batches keep forming.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_proto::durable as pb;
use meridian_storage::shard::CommandResult;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::state_machine::MachineStats;
use crate::types::*;

/// Raft entries one shard leader keeps in flight at once. Fewer in flight means more
/// commands per entry, and the cost that bounds throughput is per entry (RPCs, WAL writes,
/// wake-ups on every replica). Measured at 256 clients on 2 cores (docs/BENCHMARKS.md):
/// 16 in flight 2,556 sends/s, 4 in flight 3,494/s, 2 in flight 3,065/s.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("this node is not the shard's leader")]
    NotLeader,
    #[error("proposal failed: {0}")]
    Failed(String),
    /// The shard's Raft on this node has stopped.
    #[error("the shard's replica stopped: {0}")]
    Fatal(String),
}

struct Pending {
    commands: Vec<pb::Command>,
    done: oneshot::Sender<Result<Vec<CommandResult>, BatchError>>,
}

#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("commands", &self.commands.len()).finish()
    }
}

impl Batcher {
    /// Starts the batcher of a shard whose state machine keeps `stats` (entries are stamped
    /// with the logic version the shard applies).
    pub fn start(raft: Raft, max_batch_commands: usize, stats: Arc<MachineStats>, region: String) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(raft, rx, max_batch_commands.max(1), stats, region));
        Self { tx }
    }

    /// Proposes commands through this node's Raft, which must be the shard's leader.
    pub async fn submit(&self, commands: Vec<pb::Command>) -> Result<Vec<CommandResult>, BatchError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Pending { commands, done }).await.map_err(|_| BatchError::Failed("batcher stopped".into()))?;
        rx.await.map_err(|_| BatchError::Failed("batcher dropped the proposal".into()))?
    }
}

/// Wall-clock milliseconds. Read here, by the leader, never inside the state machine.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_batch: usize, stats: Arc<MachineStats>, region: String) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot first lets the queue fill: that is where batches come from.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut n = first.commands.len();
        let mut group = vec![first];
        while n < max_batch {
            match rx.try_recv() {
                Ok(p) => {
                    n += p.commands.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let (raft, region) = (raft.clone(), region.clone());
        // The shard's active version; apply uses the newer of it and the stamp, so an entry
        // stamped before a raise was applied here still follows the raised rules.
        let logic_version = stats.logic_version.load(Ordering::Relaxed).max(1);
        tokio::spawn(async move {
            let _permit = permit;
            let mut counts = Vec::with_capacity(group.len());
            let mut commands = Vec::with_capacity(n);
            let mut waiters = Vec::with_capacity(group.len());
            for p in group {
                counts.push(p.commands.len());
                commands.extend(p.commands);
                waiters.push(p.done);
            }
            let batch = pb::CommandBatch {
                version: meridian_storage::codec::RECORD_VERSION,
                time_ms: now_ms(),
                logic_version,
                commands,
                region,
            };
            match raft.client_write(batch).await {
                Ok(resp) => {
                    let mut results = resp.data.results.into_iter();
                    for (count, done) in counts.into_iter().zip(waiters) {
                        let mine: Vec<CommandResult> = results.by_ref().take(count).collect();
                        let _ = done.send(Ok(mine));
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => BatchError::NotLeader,
                        RaftError::Fatal(f) => BatchError::Fatal(f.to_string()),
                        other => BatchError::Failed(other.to_string()),
                    };
                    for done in waiters {
                        let _ = done.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
