//! When a shard builds a snapshot: after enough entries *and* enough bytes since the last one.
//!
//! A snapshot is a copy of the shard's whole state, so building one costs O(shard). Built every
//! N entries (openraft's `LogsSinceLast`), its cost per entry grows with the data: at 1M
//! messages a shard's 400 MB snapshot every 1,000 entries took most of the server's CPU
//! (docs/BENCHMARKS.md, "Growth"). Here a snapshot is due once at least
//! `raft.snapshot-logs-since-last` entries have been applied since the last one *and* their
//! commands add up to at least `raft.snapshot-log-size-percent` of the last snapshot's size:
//! each byte of log then pays for at most 100/percent bytes of snapshot, whatever the shard's
//! size, and the log kept between snapshots (what a restart replays, what the purge waits for)
//! stays within that fraction of the state. A shard with no snapshot yet is due on the entry
//! count alone, as before.
//!
//! openraft's own policy is then `Never` and [`spawn`] triggers the builds; openraft still
//! purges the log behind each snapshot (`max-in-snapshot-log-to-keep`) and ignores a trigger
//! while a build runs. The byte count is of commands applied since this process started or
//! since the snapshot was made, whichever is later: after a restart the next snapshot may come
//! up to that much later, never earlier.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::state_machine::MachineStats;
use crate::types::Raft;

/// How often a shard's counters are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A trigger whose snapshot has not appeared by then (a failed build) is repeated.
const RETRIGGER_AFTER: Duration = Duration::from_secs(30);

/// The rule: `entries_since` and `bytes_since` applied since the last snapshot, which was
/// `snapshot_bytes` long (0: none yet).
pub fn due(entries_since: u64, bytes_since: u64, snapshot_bytes: u64, min_entries: u64, percent: u32) -> bool {
    entries_since >= min_entries && u128::from(bytes_since) * 100 >= u128::from(snapshot_bytes) * u128::from(percent)
}

/// Triggers the shard's snapshots by [`due`] until its Raft stops.
pub(crate) fn spawn(raft: Raft, stats: Arc<MachineStats>, min_entries: u64, percent: u32) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The snapshot index a trigger was sent at, and when.
        let mut triggered: Option<(u64, Instant)> = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (applied, snapshot, running) = {
                let m = metrics.borrow_and_update();
                (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index), m.running_state.is_ok())
            };
            if !running {
                return;
            }
            if triggered.is_some_and(|(at, when)| at == snapshot && when.elapsed() < RETRIGGER_AFTER) {
                continue;
            }
            let bytes_since = stats
                .applied_bytes
                .load(Ordering::Relaxed)
                .saturating_sub(stats.applied_bytes_at_snapshot.load(Ordering::Relaxed));
            let snapshot_bytes = stats.snapshot_bytes.load(Ordering::Relaxed);
            if !due(applied.saturating_sub(snapshot), bytes_since, snapshot_bytes, min_entries, percent) {
                continue;
            }
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            triggered = Some((snapshot, Instant::now()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_is_due_after_enough_entries_and_enough_bytes_for_its_size() {
        // No snapshot yet: the entry count alone.
        assert!(!due(999, 0, 0, 1_000, 50));
        assert!(due(1_000, 0, 0, 1_000, 50));
        // A 400 MB snapshot at 50 %: 200 MB of commands since, however many entries.
        let big = 400 << 20;
        assert!(!due(1_000_000, (200 << 20) - 1, big, 1_000, 50));
        assert!(due(1_000, 200 << 20, big, 1_000, 50));
        // Enough bytes but too few entries.
        assert!(!due(10, 1 << 30, 1 << 20, 1_000, 50));
        // 0 %: entries only, as openraft's LogsSinceLast.
        assert!(due(1_000, 0, big, 1_000, 0));
        // No overflow at the extremes.
        assert!(!due(u64::MAX, u64::MAX, u64::MAX, 1, 10_000));
        assert!(due(u64::MAX, u64::MAX, u64::MAX, 1, 100));
    }
}
