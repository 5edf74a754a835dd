//! Read-index rounds shared by concurrent linearizable reads of one shard.
//!
//! A linearizable read needs a read index: the leader's commit index, confirmed by a quorum
//! *after* the read arrived (a heartbeat round). Concurrent reads of a shard share one round,
//! as etcd's ReadIndex batching does: while a round is in flight, new reads queue; when it
//! ends, the next round starts for everything that queued. A read never joins a round that
//! started before it arrived, so the index it gets is at least the commit index at its
//! arrival, and the quorum confirmation happened after its arrival: the read stays
//! linearizable. Under load a shard runs one round at a time instead of one per read.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::node::RaftNodeError;

type Waiter = oneshot::Sender<Result<u64, RaftNodeError>>;

#[derive(Default)]
struct State {
    /// A task is running rounds.
    running: bool,
    /// Reads that arrived since the current round started; they go in the next one.
    queued: Vec<Waiter>,
}

/// One shard's read-index rounds. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ReadIndexRounds {
    shard: u32,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for ReadIndexRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadIndexRounds").finish_non_exhaustive()
    }
}

/// Statistics of the rounds, for tests and metrics.
#[derive(Debug, Default)]
pub struct RoundStats {
    pub rounds: std::sync::atomic::AtomicU64,
    pub reads: std::sync::atomic::AtomicU64,
}

impl ReadIndexRounds {
    pub(crate) fn new(shard: u32) -> Self {
        Self { shard, state: Arc::default() }
    }

    /// The read index of a round that starts after this call. `round` runs one round; it is
    /// called from a spawned task, so a caller that gives up does not stall the others.
    pub(crate) async fn read_index<F, Fut>(&self, stats: Arc<RoundStats>, round: F) -> Result<u64, RaftNodeError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, RaftNodeError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.queued.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let shared = self.state.clone();
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                        if state.queued.is_empty() {
                            state.running = false;
                            return;
                        }
                        std::mem::take(&mut state.queued)
                    };
                    stats.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    stats.reads.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let result = round().await;
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            });
        }
        rx.await
            .map_err(|_| RaftNodeError::Unavailable { shard: self.shard, detail: "read-index round stopped".into() })?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// Reads arriving during a round share the next one, and each read's index comes from a
    /// round that started after it arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_rounds_that_start_after_them() {
        let rounds = ReadIndexRounds::new(3);
        let stats = Arc::new(RoundStats::default());
        // The "commit index" grows by one per round started; a round takes 20 ms.
        let commit = Arc::new(AtomicU64::new(0));
        let round = {
            let commit = commit.clone();
            move || {
                let commit = commit.clone();
                async move {
                    let index = commit.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(index)
                }
            }
        };
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let (rounds, stats, round, commit) = (rounds.clone(), stats.clone(), round.clone(), commit.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 8 * 5)).await;
                let seen_at_arrival = commit.load(Ordering::SeqCst);
                let index = rounds.read_index(stats, round).await.expect("read index");
                assert!(
                    index > seen_at_arrival,
                    "index {index} from a round started before the read ({seen_at_arrival})"
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let (r, n) = (stats.rounds.load(Ordering::Relaxed), stats.reads.load(Ordering::Relaxed));
        assert_eq!(n, 64);
        assert!(r < 64, "64 concurrent reads took {r} rounds: none were shared");
        assert_eq!(r, commit.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_reads_and_the_next_round_runs() {
        let rounds = ReadIndexRounds::new(3);
        let stats = Arc::new(RoundStats::default());
        let failing = || async { Err(RaftNodeError::Unavailable { shard: 3, detail: "no leader".into() }) };
        let err = rounds.read_index(stats.clone(), failing).await.expect_err("must fail");
        assert!(matches!(err, RaftNodeError::Unavailable { shard: 3, .. }), "{err:?}");
        let index = rounds.read_index(stats, || async { Ok(7) }).await.expect("second round");
        assert_eq!(index, 7);
    }
}
