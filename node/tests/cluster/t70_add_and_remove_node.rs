//! Membership: an operator adds a fourth node (it joins every shard as a learner, catches up
//! — through snapshots, since the others purged their logs — and is promoted to voter), then
//! removes a dead node; the region keeps accepting writes and loses nothing.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_gapless, conversation_id, local_history, user_ids, Cluster, Tuning};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_every_shard_and_a_dead_node_is_removed() {
    let mut cluster = Cluster::start(3, Tuning::with_snapshots(50, 10)).await;
    let users = user_ids("m", 16);
    cluster.create_users(&users).await;
    let pairs: Vec<(String, String)> = users.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();

    cluster.phase("history before the join: enough entries that every shard purges its log");
    let mut sent = 0;
    for round in 0..60 {
        for (a, b) in &pairs {
            cluster.user(a).send_text(b, &format!("before-{round}"), None).await.unwrap();
            sent += 1;
        }
    }
    assert_eq!(sent, 480);

    cluster.phase("start node 4 (not bootstrapped) and add it");
    let joiner = cluster.spawn_joiner();
    let added = cluster.admin().add_node(4, &cluster.addr(joiner), &cluster.peer_addr(joiner), false).await.unwrap();
    assert_eq!(added.voters, vec![1, 2, 3, 4], "node 4 is a voter of the last shard changed");
    for shard in cluster.status(0).await.shards {
        assert_eq!(shard.voters, vec![1, 2, 3, 4], "shard {} voters", shard.shard);
        assert!(shard.learners.is_empty(), "shard {} learners {:?}", shard.shard, shard.learners);
    }

    cluster.phase("node 4 caught up: same state and the same histories as node 1");
    cluster.wait_converged().await;
    let joined = cluster.status(joiner).await;
    assert!(
        joined.shards.iter().any(|s| s.snapshots_installed > 0),
        "the others purged their logs, so node 4 must have caught up through a snapshot: {:?}",
        joined.shards.iter().map(|s| (s.shard, s.purged_index, s.snapshots_installed)).collect::<Vec<_>>()
    );
    for (shard, h) in cluster.comparable_state_hashes().await {
        let first = h.hashes.values().next().cloned();
        assert!(h.hashes.values().all(|x| Some(x) == first.as_ref()), "shard {shard} at {}: {:?}", h.index, h.hashes);
        assert_eq!(h.hashes.len(), 4, "shard {shard}: every node hashed");
    }
    for (a, b) in &pairs {
        let on_joiner = local_history(&cluster, joiner, a, b).await;
        assert_eq!(on_joiner, local_history(&cluster, 0, a, b).await, "{}", conversation_id(a, b));
        assert_eq!(on_joiner.len(), 60);
        assert_gapless(&on_joiner, &conversation_id(a, b));
    }

    cluster.phase("node 2 dies and is removed");
    cluster.kill9(1);
    let removed = cluster.admin().remove_node(2).await.unwrap();
    assert_eq!(removed.voters, vec![1, 3, 4]);
    // Node 1 learns each shard's final configuration with its leader's next append.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shards = cluster.status(0).await.shards;
        let stale: Vec<(u32, Vec<u64>)> =
            shards.iter().filter(|s| s.voters != [1, 3, 4]).map(|s| (s.shard, s.voters.clone())).collect();
        if stale.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "shards whose voters node 1 still sees otherwise: {stale:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    cluster.phase("writes go on without node 2, and reach node 4");
    for (a, b) in &pairs {
        cluster.user(a).send_text(b, "after", None).await.unwrap();
    }
    cluster.wait_converged().await;
    for (a, b) in &pairs {
        let rows = local_history(&cluster, joiner, a, b).await;
        assert_eq!(rows.len(), 61, "{}", conversation_id(a, b));
        assert_gapless(&rows, &conversation_id(a, b));
        assert_eq!(rows, local_history(&cluster, 2, a, b).await);
    }
}
