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

/// How long commands that ride ([`Batcher::submit_riding`]) wait for other proposals to
/// share an entry with before they go in one of their own.
pub const RIDE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

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
    /// Bookkeeping that need not be an entry of its own (outbox acknowledgements).
    rides: bool,
    done: oneshot::Sender<Result<Vec<CommandResult>, BatchError>>,
}

#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    /// The request-id window (ms, 0: for ever), shared with the task that stamps entries.
    request_id_window_ms: Arc<std::sync::atomic::AtomicU64>,
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
        let request_id_window_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stamp = Stamp { stats, region, request_id_window_ms: request_id_window_ms.clone() };
        tokio::spawn(run(raft, rx, max_batch_commands.max(1), stamp));
        Self { tx, request_id_window_ms }
    }

    /// Entries proposed from now on tell apply to expire request-id records older than
    /// `window_ms` (0: keep them for ever). Effective once the shard applies logic version
    /// [`meridian_domain::apply::REQUEST_ID_EXPIRY_FROM`].
    pub fn keeping_request_ids_for(self, window_ms: u64) -> Self {
        self.request_id_window_ms.store(window_ms, Ordering::Relaxed);
        self
    }

    /// Proposes commands through this node's Raft, which must be the shard's leader.
    pub async fn submit(&self, commands: Vec<pb::Command>) -> Result<Vec<CommandResult>, BatchError> {
        self.queue(commands, false).await
    }

    /// As [`Batcher::submit`], for commands that need not be an entry of their own: when
    /// nothing else is queued they wait up to [`RIDE_WAIT`] for a proposal to share an entry
    /// with (a client's next send, usually), and go alone only if none comes.
    pub async fn submit_riding(&self, commands: Vec<pb::Command>) -> Result<Vec<CommandResult>, BatchError> {
        self.queue(commands, true).await
    }

    async fn queue(&self, commands: Vec<pb::Command>, rides: bool) -> Result<Vec<CommandResult>, BatchError> {
        let (done, rx) = oneshot::channel();
        let pending = Pending { commands, rides, done };
        self.tx.send(pending).await.map_err(|_| BatchError::Failed("batcher stopped".into()))?;
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

/// What a leader stamps on each entry besides its commands.
struct Stamp {
    stats: Arc<MachineStats>,
    region: String,
    request_id_window_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Stamp {
    /// The entry for `commands`, stamped now: server time, logic version, region, and the
    /// request-id cutoff.
    fn entry(&self, commands: Vec<pb::Command>) -> pb::CommandBatch {
        // The shard's active version; apply uses the newer of it and the stamp, so an entry
        // stamped before a raise was applied here still follows the raised rules.
        let logic_version = self.stats.logic_version.load(Ordering::Relaxed).max(1);
        let time_ms = now_ms();
        let window = i64::try_from(self.request_id_window_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let request_ids_expire_before_ms =
            if window > 0 && logic_version >= meridian_domain::apply::REQUEST_ID_EXPIRY_FROM {
                time_ms.saturating_sub(window).max(0)
            } else {
                0
            };
        pb::CommandBatch {
            version: meridian_storage::codec::RECORD_VERSION,
            time_ms,
            logic_version,
            commands,
            region: self.region.clone(),
            request_ids_expire_before_ms,
        }
    }
}

/// One entry's proposals: `first` and whatever queued behind it, up to `max_batch` commands.
/// Riders alone wait up to [`RIDE_WAIT`] for one more proposal to carry them.
async fn gather(first: Pending, rx: &mut mpsc::Receiver<Pending>, max_batch: usize) -> Vec<Pending> {
    let mut n = first.commands.len();
    let mut group = vec![first];
    let mut waited = false;
    while n < max_batch {
        let next = match rx.try_recv() {
            Ok(p) => p,
            Err(_) if !waited && group.iter().all(|p| p.rides) => {
                waited = true;
                match tokio::time::timeout(RIDE_WAIT, rx.recv()).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => break,
                }
            }
            Err(_) => break,
        };
        n += next.commands.len();
        group.push(next);
    }
    group
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_batch: usize, stamp: Stamp) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot first lets the queue fill: that is where batches come from.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let group = gather(first, &mut rx, max_batch).await;
        let n = group.iter().map(|p| p.commands.len()).sum();
        let raft = raft.clone();
        let mut counts = Vec::with_capacity(group.len());
        let mut commands = Vec::with_capacity(n);
        let mut waiters = Vec::with_capacity(group.len());
        for p in group {
            counts.push(p.commands.len());
            commands.extend(p.commands);
            waiters.push(p.done);
        }
        let batch = stamp.entry(commands);
        tokio::spawn(async move {
            let _permit = permit;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stamp(logic_version: u32, window_ms: u64) -> Stamp {
        let stats = Arc::new(MachineStats::default());
        stats.logic_version.store(logic_version, Ordering::Relaxed);
        Stamp {
            stats,
            region: "sg".into(),
            request_id_window_ms: Arc::new(std::sync::atomic::AtomicU64::new(window_ms)),
        }
    }

    fn pending(rides: bool) -> Pending {
        Pending { commands: vec![pb::Command::default()], rides, done: oneshot::channel().0 }
    }

    #[tokio::test]
    async fn riders_wait_a_moment_for_a_proposal_to_carry_them_and_no_longer() {
        let (tx, mut rx) = mpsc::channel(8);
        let later = |rides: Vec<bool>, after: std::time::Duration| {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                for rides in rides {
                    let _ = tx.send(pending(rides)).await;
                }
            })
        };
        // Alone, a rider waits RIDE_WAIT and then goes by itself.
        let started = std::time::Instant::now();
        assert_eq!(gather(pending(true), &mut rx, 512).await.len(), 1);
        assert!(started.elapsed() >= RIDE_WAIT);
        // A proposal that comes within the wait carries it, and what queued behind joins too.
        let sent = later(vec![false, true], RIDE_WAIT / 5);
        let group = gather(pending(true), &mut rx, 512).await;
        sent.await.unwrap();
        let rides: Vec<bool> = group.iter().map(|p| p.rides).collect();
        assert!(rides.starts_with(&[true, false]), "{rides:?}");
        let rest = if rides.len() == 3 { 0 } else { gather(pending(false), &mut rx, 512).await.len() - 1 };
        assert_eq!(rides.len() + rest, 3, "the rider queued behind went in this entry or the next");
        // A proposal never waits: one that comes later goes in the next entry.
        let sent = later(vec![false], RIDE_WAIT / 5);
        assert_eq!(gather(pending(false), &mut rx, 512).await.len(), 1);
        sent.await.unwrap();
        assert_eq!(gather(pending(false), &mut rx, 512).await.len(), 2, "the later one queued meanwhile");
        // The command limit holds for riders too.
        tx.send(pending(false)).await.unwrap();
        assert_eq!(gather(pending(true), &mut rx, 1).await.len(), 1);
        assert_eq!(gather(pending(true), &mut rx, 512).await.len(), 2, "the proposal carries the next rider");
    }

    #[test]
    fn entries_carry_the_request_id_cutoff_only_under_the_version_that_applies_it() {
        let entry = stamp(4, 60_000).entry(vec![]);
        assert_eq!(entry.request_ids_expire_before_ms, entry.time_ms - 60_000);
        assert_eq!((entry.logic_version, entry.region.as_str()), (4, "sg"));
        assert_eq!(stamp(3, 60_000).entry(vec![]).request_ids_expire_before_ms, 0, "version 3 ignores it");
        assert_eq!(stamp(4, 0).entry(vec![]).request_ids_expire_before_ms, 0, "a window of 0 keeps all");
    }
}
