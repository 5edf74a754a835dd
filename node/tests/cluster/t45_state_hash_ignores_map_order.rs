//! Regression: replicas holding the same state reported different `state_hash`es.
//!
//! The hash covers the stored bytes of each shard's applied state, whose Raft membership
//! carries a protobuf `map<uint64, string>` of node addresses; that map was encoded in
//! hash-map iteration order, which differs from one process (and one write) to the next. No
//! snapshot, restart or fault is involved: three healthy replicas that applied the same
//! entries must report the same hash for every shard.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{conversation_id, shard_of, user_ids, Cluster, Tuning};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_with_equal_state_report_equal_hashes() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let users = user_ids("h", 12);
    cluster.create_users(&users).await;

    cluster.phase("a few messages on every shard");
    let mut covered = std::collections::BTreeSet::new();
    for (i, a) in users.iter().enumerate() {
        for b in &users[i + 1..] {
            if covered.insert(shard_of(&conversation_id(a, b), 8)) {
                for text in ["ping", "pong"] {
                    cluster.user(a).send_text(b, text, None).await.unwrap();
                }
            }
        }
    }
    assert_eq!(covered.len(), 8, "every shard must hold a conversation");
    cluster.wait_converged().await;

    let hashed = cluster.comparable_state_hashes().await;
    let differing: Vec<String> = hashed
        .iter()
        .filter(|(_, h)| h.hashes.values().any(|hash| Some(hash) != h.hashes.values().next()))
        .map(|(shard, h)| format!("shard {shard} at index {}: {:?}", h.index, h.hashes))
        .collect();
    assert!(
        differing.is_empty(),
        "replicas at one applied index disagree on the state hash:\n{}",
        differing.join("\n")
    );
}
