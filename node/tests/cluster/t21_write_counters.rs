//! The write-cost counters of `/metrics` (docs/BENCHMARKS.md, "What one send costs") follow
//! what the region did: 40 sends one after another in one conversation are at least 40 Raft
//! entries applied on every replica, with at least as many commands, each entry sent to both
//! followers (as frames on the node pairs' streams), and a WAL sync behind every acknowledged
//! send; two RocksDB writes per entry on each replica (the append, and the apply with the
//! committed id in its batch) and at most three lookups per send in apply; the write path's
//! stage histograms count every stage of every send (docs/metrics.md); and each shard's
//! leader reports its followers' lag (0 once the region converged).

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Cluster, Tuning};

const SENDS: u64 = 40;

async fn counter(cluster: &Cluster, node: usize, line: &str) -> u64 {
    cluster.metric(node, line).await
}

/// The stage histograms' `_count`s, in this order (docs/metrics.md).
const STAGES: [&str; 7] = [
    "meridian_send_seconds",
    "meridian_raft_write_seconds",
    "meridian_proposal_seconds",
    "meridian_peer_append_seconds",
    "meridian_peer_appended_seconds",
    "meridian_wal_sync_seconds",
    "meridian_apply_seconds",
];

async fn stage_counts(cluster: &Cluster) -> Vec<[u64; 7]> {
    let mut out = Vec::new();
    for node in 0..3 {
        let mut counts = [0; 7];
        for (count, stage) in counts.iter_mut().zip(STAGES) {
            *count = counter(cluster, node, &format!("{stage}_count")).await;
        }
        out.push(counts);
    }
    out
}

async fn counters(cluster: &Cluster) -> Vec<[u64; 9]> {
    let mut out = Vec::new();
    for node in 0..3 {
        out.push([
            counter(cluster, node, "meridian_raft_entries_applied_total").await,
            counter(cluster, node, "meridian_commands_applied_total").await,
            counter(cluster, node, "meridian_peer_entries_sent_total").await,
            counter(cluster, node, "meridian_peer_rpcs_total{kind=\"append_entries\"}").await,
            counter(cluster, node, "meridian_wal_syncs_total").await,
            counter(cluster, node, "meridian_peer_stream_frames_total").await,
            counter(cluster, node, "meridian_peer_stream_messages_total").await,
            counter(cluster, node, "meridian_apply_lookups_total").await,
            counter(cluster, node, "meridian_write_batches_total").await,
        ]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_cost_counters_follow_the_sends() {
    let mut cluster = Cluster::start(3, Tuning { shards: 2, ..Default::default() }).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;
    let alice = cluster.user("alice");
    alice.send_text("bob", "first", Some("w-0".into())).await.unwrap();
    cluster.wait_converged().await;
    let before = counters(&cluster).await;
    let stages_before = stage_counts(&cluster).await;
    for i in 1..=SENDS {
        alice.send_text("bob", &format!("m{i}"), Some(format!("w-{i}"))).await.unwrap();
    }
    cluster.wait_converged().await;
    let after = counters(&cluster).await;
    let stages_after = stage_counts(&cluster).await;
    let delta: Vec<[u64; 9]> = before.iter().zip(&after).map(|(b, a)| std::array::from_fn(|k| a[k] - b[k])).collect();
    for (node, &[entries, commands, .., lookups, writes]) in delta.iter().enumerate() {
        let node = node + 1;
        assert!(entries >= SENDS, "node {node}: {entries} entries applied for {SENDS} sends");
        assert!(commands >= entries, "node {node}: {commands} commands in {entries} entries");
        // Apply's lookups in RocksDB: every replica looks up each send's request-id record,
        // and a send to a conversation that exists costs three (that record, the pair's block
        // entry, the conversation's head: a record read twice in one apply is looked up once).
        assert!(
            lookups >= SENDS && lookups <= 3 * commands,
            "node {node}: {lookups} lookups in apply for {commands} commands ({SENDS} sends)"
        );
        // RocksDB writes: an entry's append and its apply on every replica, the committed id
        // riding in the apply's batch (three writes per entry when it had a write of its own).
        assert!(writes <= 2 * entries + 4, "node {node}: {writes} RocksDB writes for {entries} entries");
    }
    let sent: u64 = delta.iter().map(|d| d[2]).sum();
    let rpcs: u64 = delta.iter().map(|d| d[3]).sum();
    let syncs: u64 = delta.iter().map(|d| d[4]).sum();
    assert!(sent >= 2 * SENDS, "{sent} entries sent to followers for {SENDS} sends");
    assert!(rpcs >= SENDS && rpcs <= sent, "{rpcs} AppendEntries calls carrying {sent} entries");
    assert!(syncs >= SENDS, "{syncs} WAL syncs for {SENDS} acknowledged sends");
    // Every AppendEntries went as a frame on a node pair's stream, in no more messages
    // than frames.
    let frames: u64 = delta.iter().map(|d| d[5]).sum();
    let messages: u64 = delta.iter().map(|d| d[6]).sum();
    assert!(frames >= rpcs, "{frames} stream frames for {rpcs} AppendEntries calls");
    assert!(messages >= 1 && messages <= frames, "{frames} frames in {messages} stream messages");

    // The stage histograms: each send served once (a client retry could add one), and every
    // stage behind it timed: its entry proposed, written, sent to both followers and
    // appended there, synced and applied.
    let stage = |k: usize| -> u64 { stages_before.iter().zip(&stages_after).map(|(b, a)| a[k] - b[k]).sum() };
    let served = stage(0);
    assert!((SENDS..=SENDS + 2).contains(&served), "{served} sends timed for {SENDS} acknowledged");
    for (k, least) in [(1, SENDS), (2, SENDS), (3, SENDS), (4, SENDS), (5, SENDS), (6, SENDS)] {
        let n = stage(k);
        assert!(n >= least, "{}: {n} timed for {SENDS} sends (at least {least})", STAGES[k]);
    }
    // Every AppendEntries with entries timed on the leader and handled on its follower (a
    // follower that fell behind by one gets two entries in one call, so calls can be fewer
    // than entries sent; a call that timed out on a busy machine is sent but not timed).
    for k in [3, 4] {
        assert!(
            stage(k) <= rpcs && stage(k) + rpcs / 10 >= rpcs,
            "{}: {} timed, {rpcs} AppendEntries sent",
            STAGES[k],
            stage(k)
        );
    }
    let (_, body) = cluster.http_get(0, "/metrics").await;
    for stage in STAGES {
        assert!(body.contains(&format!("# TYPE {stage} histogram\n")), "{stage}: {body}");
        assert!(body.contains(&format!("{stage}_bucket{{le=\"+Inf\"}} ")), "{stage}: {body}");
    }

    // Each shard's leader reports every other member's lag: none once the region settled
    // (asked again for a while: an internal entry may land just after the convergence).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut lags = Vec::new();
        for node in 0..3 {
            let (_, body) = cluster.http_get(node, "/metrics").await;
            lags.extend(body.lines().filter(|l| l.starts_with("meridian_replica_lag_entries{")).map(str::to_owned));
            assert!(body.contains("meridian_region_epoch 1\n"), "{body}");
            assert!(body.contains("meridian_region_role{role=\"serving\"} 1\n"), "{body}");
        }
        if lags.len() == 2 * 2 && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "two shards, two other members each, all caught up: {lags:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
