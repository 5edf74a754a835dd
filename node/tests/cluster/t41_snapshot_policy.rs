//! Snapshots scale with the shard (`raft.snapshot-log-size-percent`, 200 % here): after the
//! first one, a snapshot is built only when the commands applied since the last add up to the
//! given share of its size, not merely after `snapshot-logs-since-last` entries; the nodes' own trigger
//! still builds them, and openraft still purges the log behind each.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{shard_status, Cluster, Tuning};

/// Entries between snapshots by count alone.
const EVERY: u64 = 20;

/// Each node's (snapshot index, purged index) of shard 0.
async fn snapshots(cluster: &mut Cluster) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for i in 0..3 {
        let status = cluster.status(i).await;
        let s = shard_status(&status, 0);
        out.push((s.snapshot_index, s.purged_index));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_waits_for_log_bytes_in_proportion_to_its_size() {
    let mut cluster = Cluster::start(
        3,
        Tuning {
            shards: 1,
            snapshot_logs_since_last: EVERY,
            snapshot_log_size_percent: 200,
            max_in_snapshot_log_to_keep: 5,
            ..Tuning::default()
        },
    )
    .await;
    cluster.create_users(&["sp-a".to_owned(), "sp-b".to_owned()]).await;
    let a = cluster.user("sp-a");
    let big = "x".repeat(2_000);

    // No snapshot yet: the first comes on the entry count (one entry per send here).
    for n in 0..2 * EVERY {
        a.send_text("sp-b", &format!("{n} {big}"), Some(format!("big-{n}"))).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let now = snapshots(&mut cluster).await;
        if now.iter().all(|&(snapshot, _)| snapshot > 0) {
            break now;
        }
        assert!(Instant::now() < deadline, "no first snapshot on every node: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The largest node's: a node whose trigger came late (a busy machine) took its first
    // snapshot after more of the long messages, and needs more bytes before its next one.
    let mut size = 0;
    for node in 0..3 {
        size = size.max(cluster.metric(node, "meridian_snapshot_bytes").await);
    }
    assert!(size > 40_000, "the first snapshot holds long messages: {size} bytes");

    // Five times the entry count, in small sends whose commands add up to far less than the
    // snapshot's size: no new snapshot (by count alone there would be five).
    let mut small_bytes = 0;
    for n in 0..5 * EVERY {
        let text = format!("s{n}");
        small_bytes += text.len() as u64;
        a.send_text("sp-b", &text, Some(format!("small-{n}"))).await.unwrap();
    }
    // The trigger looks four times a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_small = snapshots(&mut cluster).await;
    assert_eq!(
        after_small.iter().map(|s| s.0).collect::<Vec<_>>(),
        first.iter().map(|s| s.0).collect::<Vec<_>>(),
        "{} small sends (~{small_bytes} bytes of text) took no new snapshot of a {size}-byte one",
        5 * EVERY
    );

    // Commands adding up to more than twice the snapshot's size: a new one on every node, and
    // the log purged behind it.
    let mut sent_bytes = 0;
    let mut n = 0;
    while sent_bytes < 3 * size {
        a.send_text("sp-b", &format!("{n} {big}"), Some(format!("more-{n}"))).await.unwrap();
        sent_bytes += big.len() as u64;
        n += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = snapshots(&mut cluster).await;
        let newer = now.iter().zip(&first).all(|(&(snapshot, purged), &(before, _))| snapshot > before && purged > 0);
        if newer {
            break;
        }
        assert!(Instant::now() < deadline, "no newer snapshot (and purge) on every node: {now:?}, first {first:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
