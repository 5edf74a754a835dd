//! A node that was down while the others compacted their logs past its last entry catches up
//! through snapshots: afterwards it has installed a snapshot of every shard, it serves the
//! leaders' histories and conversation lists from its own replica — including the recalls and
//! read cursors that changed what it held before it went down — and its state hashes equal
//! the leaders'.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use meridian_client::api::ReadConsistency;
use meridian_client::Client;

use common::{assert_gapless, assert_history_matches_acks, conversation_id, local_history, shard_of, shard_status};
use common::{Ack, Cluster, Tuning};

const SHARDS: u32 = 8;
const CONVERSATIONS_PER_SHARD: usize = 6;
/// Messages written per shard before node 3 stops.
const MESSAGES_BEFORE: usize = 12;
/// Messages written per shard while node 3 is down (one Raft entry each: one sender per shard).
const MESSAGES_PER_SHARD: usize = 75;
/// The node that is stopped (node 3).
const LAGGARD: usize = 2;

/// Sends `count` messages, one at a time, round the given conversations.
async fn send_round(
    clients: BTreeMap<String, Client>,
    conversations: Vec<(String, String)>,
    count: usize,
    tag: String,
) -> Result<Vec<Ack>, String> {
    let mut acks = Vec::with_capacity(count);
    for n in 0..count {
        let (from, to) = &conversations[n % conversations.len()];
        let (from, to) = if (n / conversations.len()).is_multiple_of(2) { (from, to) } else { (to, from) };
        let request_id = format!("t40-{tag}-{n}");
        let text = format!("{tag} message {n} from {from}");
        let reply = clients[from]
            .send_text(to, &text, Some(request_id.clone()))
            .await
            .map_err(|e| format!("send {request_id}: {e}"))?;
        acks.push(Ack {
            request_id,
            sender: from.clone(),
            to: to.clone(),
            text,
            conversation_id: reply.conversation_id,
            message_id: reply.message_id,
            seq: reply.seq,
            at: Instant::now(),
        });
    }
    Ok(acks)
}

/// Sends `count` messages on each of `shards`, shards in parallel, one at a time on each.
async fn send_on_shards(
    clients: &BTreeMap<String, Client>,
    by_shard: &BTreeMap<u32, Vec<(String, String)>>,
    shards: &[u32],
    count: usize,
    tag: &str,
) -> Vec<Ack> {
    let rounds = shards.iter().map(|shard| {
        let conversations = by_shard[shard].clone();
        tokio::spawn(send_round(clients.clone(), conversations, count, format!("{tag}-shard{shard}")))
    });
    let mut acks = Vec::new();
    for result in futures::future::join_all(rounds).await {
        acks.extend(result.expect("a send task panicked").unwrap_or_else(|e| panic!("{e}")));
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_purged_logs_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, Tuning::with_snapshots(50, 10)).await;

    // Every pair of 24 users; keep a few conversations on each shard.
    let users = common::user_ids("s", 24);
    let mut by_shard: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for (i, a) in users.iter().enumerate() {
        for b in &users[i + 1..] {
            let on = by_shard.entry(shard_of(&conversation_id(a, b), SHARDS)).or_default();
            if on.len() < CONVERSATIONS_PER_SHARD {
                on.push((a.clone(), b.clone()));
            }
        }
    }
    assert_eq!(by_shard.len(), SHARDS as usize, "some shard got no conversation");
    cluster.create_users(&users).await;
    let clients: BTreeMap<String, Client> = users.iter().map(|u| (u.clone(), cluster.user(u))).collect();

    let all_shards: Vec<u32> = (0..SHARDS).collect();

    cluster.phase(format!("{MESSAGES_BEFORE} messages per shard with every node up"));
    let mut acks = send_on_shards(&clients, &by_shard, &all_shards, MESSAGES_BEFORE, "before").await;
    cluster.wait_converged().await;
    let before = cluster.status(LAGGARD).await;
    let stopped_at: BTreeMap<u32, u64> = before.shards.iter().map(|s| (s.shard, s.last_log_index)).collect();
    cluster.stop(LAGGARD).await;

    cluster.phase("while node 3 is down: recall every conversation's first message, the peer reads it all");
    let mut recalled = BTreeSet::new();
    for ack in acks.iter().filter(|a| a.seq == 1) {
        cluster.user(&ack.sender).recall(&ack.to, 1).await.unwrap();
        cluster.user(&ack.to).mark_read(&ack.sender, None).await.unwrap();
        recalled.insert(ack.conversation_id.clone());
    }
    assert_eq!(recalled.len(), SHARDS as usize * CONVERSATIONS_PER_SHARD);

    cluster.phase(format!("{MESSAGES_PER_SHARD} messages per shard, then more until node 3's log is purged"));
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lagging = all_shards.clone();
    while !lagging.is_empty() {
        assert!(Instant::now() < deadline, "shards {lagging:?} did not purge past node 3's log within 60 s");
        let count = if round == 0 { MESSAGES_PER_SHARD } else { 10 };
        acks.extend(send_on_shards(&clients, &by_shard, &lagging, count, &format!("down{round}")).await);
        round += 1;
        // Both remaining nodes must have purged past node 3's last entry: whichever leads the
        // shard when node 3 returns can then only bring it up to date with a snapshot.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (node1, node2) = (cluster.status(0).await, cluster.status(1).await);
        lagging.retain(|&shard| {
            let purged = shard_status(&node1, shard).purged_index.min(shard_status(&node2, shard).purged_index);
            purged <= stopped_at[&shard]
        });
    }
    cluster.phase(format!("every shard purged past node 3's log after {round} rounds: {stopped_at:?}"));

    cluster.restart(LAGGARD).await;
    cluster.wait_converged().await;

    cluster.phase("node 3 installed a snapshot of every shard");
    let status = cluster.status(LAGGARD).await;
    for shard in 0..SHARDS {
        let installed = shard_status(&status, shard).snapshots_installed;
        assert!(installed > 0, "node 3 caught up on shard {shard} without a snapshot: {status:?}");
    }

    cluster.phase("node 3's own replica serves the leaders' histories");
    for ack in acks.iter_mut().filter(|a| a.seq == 1) {
        ack.text.clear();
    }
    let by_conversation = common::acks_by_conversation(&acks);
    for (&shard, conversations) in &by_shard {
        let leader = cluster.shard_leader(shard).await;
        for (a, b) in conversations {
            let id = conversation_id(a, b);
            let what = format!("{id} (shard {shard})");
            let on_leader = local_history(&cluster, leader, a, b).await;
            let on_laggard = local_history(&cluster, LAGGARD, a, b).await;
            assert_gapless(&on_leader, &what);
            assert_history_matches_acks(&on_leader, by_conversation.get(&id).map_or(&[][..], |v| v), &what);
            let tombstones: Vec<u64> = on_leader.iter().filter(|m| m.recalled).map(|m| m.seq).collect();
            assert_eq!(tombstones, vec![1], "{what}: only the first message was recalled");
            assert_eq!(on_laggard, on_leader, "{what}: node 3 differs from the leader, node {}", leader + 1);
        }
    }

    cluster.phase("node 3's own replica serves the same conversation lists");
    for user in &users {
        let on_node1 = cluster.user_on(0, user).conversations_all(ReadConsistency::Local).await.unwrap();
        let on_laggard = cluster.user_on(LAGGARD, user).conversations_all(ReadConsistency::Local).await.unwrap();
        assert_eq!(on_laggard, on_node1, "{user}'s conversations: node 3 differs from node 1");
    }

    cluster.phase("node 3's state hashes equal the leaders'");
    let hashed = cluster.comparable_state_hashes().await;
    let differing: Vec<String> = hashed
        .iter()
        .filter(|(_, h)| h.hashes.get(&LAGGARD) != h.hashes.get(&h.leader))
        .map(|(shard, h)| format!("shard {shard} at index {}: {:?} (leader: node {})", h.index, h.hashes, h.leader + 1))
        .collect();
    assert!(differing.is_empty(), "node 3's state hash differs from the leader's on:\n{}", differing.join("\n"));
}
