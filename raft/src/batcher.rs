//! The shard leader's batcher: concurrent proposals share one Raft entry.
//!
//! Proposals queue up while earlier entries are in flight; each entry takes everything that
//! queued (up to a limit) and stamps it with the server time. A bounded number of entries are
//! in flight at once, which lets openraft pipeline replication while batches keep forming.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use meridian_proto::durable as pb;
use meridian_storage::shard::CommandResult;
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::state_machine::MachineStats;
use crate::types::*;

/// Raft entries one shard leader keeps in flight at once. Fewer in flight means more
/// commands per entry, and the cost that bounds throughput is per entry (RPCs, WAL writes,
/// wake-ups on every replica). Measured at 256 clients on 2 cores (docs/BENCHMARKS.md):
/// 16 in flight 2,556 sends/s, 4 in flight 3,494/s, 2 in flight 3,065/s (8 shards); again
/// on one shard (2026-12-03): 2, 4 and 8 alike within noise, 1 and 16 behind.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// This node does not lead the shard, or stopped leading it while the proposal was in
    /// flight (then it may or may not have been committed: the caller retries it through
    /// the new leader, and every command is idempotent).
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
    /// When it was submitted (for [`MachineStats::proposal_seconds`]).
    queued: Instant,
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
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Pending { commands, done, queued: Instant::now() })
            .await
            .map_err(|_| BatchError::Failed("batcher stopped".into()))?;
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

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_batch: usize, stamp: Stamp) {
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
        let raft = raft.clone();
        let mut counts = Vec::with_capacity(group.len());
        let mut commands = Vec::with_capacity(n);
        let mut waiters = Vec::with_capacity(group.len());
        for p in group {
            counts.push(p.commands.len());
            commands.extend(p.commands);
            waiters.push((p.done, p.queued));
        }
        let batch = stamp.entry(commands);
        let server = raft.server_metrics();
        let term = server.borrow().vote.leader_id.term;
        let stats = stamp.stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let proposed = Instant::now();
            let written = tokio::select! {
                biased;
                written = raft.client_write(batch) => written,
                () = deposed(server, term) => {
                    stats.proposals_deposed.fetch_add(waiters.len() as u64, Ordering::Relaxed);
                    for (done, _) in waiters {
                        let _ = done.send(Err(BatchError::NotLeader));
                    }
                    return;
                }
            };
            match written {
                Ok(resp) => {
                    let answered = Instant::now();
                    stats.write_seconds.record(answered - proposed);
                    let mut results = resp.data.results.into_iter();
                    for (count, (done, queued)) in counts.into_iter().zip(waiters) {
                        let mine: Vec<CommandResult> = results.by_ref().take(count).collect();
                        stats.proposal_seconds.record(answered.saturating_duration_since(queued));
                        let _ = done.send(Ok(mine));
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => BatchError::NotLeader,
                        RaftError::Fatal(f) => BatchError::Fatal(f.to_string()),
                        other => BatchError::Failed(other.to_string()),
                    };
                    for (done, _) in waiters {
                        let _ = done.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

/// Resolves once this node no longer leads the shard in `term`: it stepped down, a newer term
/// began, or its Raft stopped (the watch closed). A proposal in flight then gets no answer from openraft 0.9 unless its entry is
/// applied or truncated on this node, and an entry that a snapshot received later covers is
/// neither (`install_full_snapshot` truncates only a log that conflicts at the snapshot's
/// last index, and its purge answers no one): the proposal would wait for ever and hold
/// one of the [`MAX_IN_FLIGHT`] places, and once all were held the shard would take no write
/// through this node the next time it led: a leader that keeps its followers with heartbeats
/// and commits nothing, as a chaos campaign once showed for minutes (ADR 0006, decision 10).
async fn deposed(mut server: watch::Receiver<RaftServerMetrics<NodeId, Member>>, term: u64) {
    let _ = server.wait_for(|now| now.state != ServerState::Leader || now.vote.leader_id.term != term).await;
}

#[cfg(test)]
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

    #[test]
    fn entries_carry_the_request_id_cutoff_only_under_the_version_that_applies_it() {
        let entry = stamp(4, 60_000).entry(vec![]);
        assert_eq!(entry.request_ids_expire_before_ms, entry.time_ms - 60_000);
        assert_eq!((entry.logic_version, entry.region.as_str()), (4, "sg"));
        assert_eq!(stamp(3, 60_000).entry(vec![]).request_ids_expire_before_ms, 0, "version 3 ignores it");
        assert_eq!(stamp(4, 0).entry(vec![]).request_ids_expire_before_ms, 0, "a window of 0 keeps all");
    }

    fn server(state: ServerState, term: u64) -> RaftServerMetrics<NodeId, Member> {
        RaftServerMetrics {
            id: 1,
            vote: Vote::new_committed(term, 1),
            state,
            current_leader: (state == ServerState::Leader).then_some(1),
            membership_config: Arc::default(),
        }
    }

    /// Whether `deposed` has resolved after the watched changes so far.
    async fn resolved(f: &mut std::pin::Pin<Box<impl std::future::Future<Output = ()>>>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), f.as_mut()).await.is_ok()
    }

    #[tokio::test]
    async fn a_proposal_stops_waiting_when_its_leader_steps_down_or_a_new_term_begins() {
        let (tx, rx) = watch::channel(server(ServerState::Leader, 7));
        let mut waiting = Box::pin(deposed(rx, 7));
        assert!(!resolved(&mut waiting).await, "still the leader of term 7");
        tx.send_replace(server(ServerState::Leader, 7));
        assert!(!resolved(&mut waiting).await, "an unrelated change of the metrics");
        tx.send_replace(server(ServerState::Follower, 8));
        assert!(resolved(&mut waiting).await, "stepped down");

        let (tx, rx) = watch::channel(server(ServerState::Leader, 7));
        let mut waiting = Box::pin(deposed(rx, 7));
        tx.send_replace(server(ServerState::Leader, 9));
        assert!(resolved(&mut waiting).await, "leader again, of a newer term");

        let (tx, rx) = watch::channel(server(ServerState::Candidate, 7));
        assert!(resolved(&mut Box::pin(deposed(rx, 7))).await, "not the leader when proposing");
        let (tx2, rx) = watch::channel(server(ServerState::Leader, 7));
        let mut waiting = Box::pin(deposed(rx, 7));
        drop(tx2);
        assert!(resolved(&mut waiting).await, "the shard's Raft stopped");
        drop(tx);
    }
}
