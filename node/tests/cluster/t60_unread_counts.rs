//! Unread counts after a concurrent mix of sends, mark-reads and recalls agree with a recount
//! from the histories and with what the clients were told: for each user and conversation,
//! unread == last_seq − read_seq == the messages past the read cursor, which are all the
//! peer's; the total is the sum; every node serves the same counts from its own replica.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use meridian_client::api::ReadConsistency;
use meridian_client::Client;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use common::{assert_gapless, user_ids, wait_listed, Cluster, Row, Tuning};

const USERS: usize = 8;
const STEPS_PER_USER: usize = 40;

/// What a user did and what the server answered.
#[derive(Debug, Clone)]
enum Event {
    Sent { from: String, to: String, seq: u64 },
    Read { user: String, peer: String, read_seq: u64 },
}

/// One user's share of the workload: mostly sends, some mark-reads of a listed conversation
/// (up to a random seq or to the end), a few recalls of their own messages.
async fn workload(me: String, client: Client, peers: Vec<String>, seed: u64) -> Result<Vec<Event>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut mine: Vec<(String, u64)> = Vec::new();
    for step in 0..STEPS_PER_USER {
        let roll = rng.gen_range(0..100);
        if roll < 60 || step == 0 {
            let to = &peers[rng.gen_range(0..peers.len())];
            let reply = client
                .send_text(to, &format!("{me} step {step}"), None)
                .await
                .map_err(|e| format!("{me} → {to}: send: {e}"))?;
            events.push(Event::Sent { from: me.clone(), to: to.clone(), seq: reply.seq });
            mine.push((to.clone(), reply.seq));
        } else if roll < 85 {
            // Any node's list will do: its last_seq is never past the real one.
            let listed = client
                .conversations_all(ReadConsistency::Local)
                .await
                .map_err(|e| format!("{me}: list conversations: {e}"))?;
            let Some(c) = listed.conversations.get(rng.gen_range(0..listed.conversations.len().max(1))) else {
                continue;
            };
            let up_to = if rng.gen_bool(0.5) { None } else { Some(rng.gen_range(1..=c.last_seq)) };
            let reply =
                client.mark_read(&c.peer, up_to).await.map_err(|e| format!("{me}: mark {} read: {e}", c.peer))?;
            events.push(Event::Read { user: me.clone(), peer: c.peer.clone(), read_seq: reply.read_seq });
        } else if !mine.is_empty() {
            let (peer, seq) = mine.swap_remove(rng.gen_range(0..mine.len()));
            client.recall(&peer, seq).await.map_err(|e| format!("{me}: recall {seq} to {peer}: {e}"))?;
        }
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unread_counts_match_a_recount_from_the_histories() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let users = user_ids("r", USERS);
    cluster.create_users(&users).await;

    let seed: u64 = rand::random();
    cluster.phase(format!("{USERS} users each take {STEPS_PER_USER} steps at once (seed {seed})"));
    let tasks = users.iter().enumerate().map(|(i, me)| {
        let peers: Vec<String> = users.iter().filter(|u| *u != me).cloned().collect();
        tokio::spawn(workload(me.clone(), cluster.user(me), peers, seed.wrapping_add(i as u64)))
    });
    let mut events = Vec::new();
    for result in futures::future::join_all(tasks).await {
        events.extend(result.expect("a workload task panicked").unwrap_or_else(|e| panic!("{e}")));
    }

    // What the server's answers imply: a conversation's last seq is its highest acknowledged
    // seq; a read cursor is the highest of its owner's own sends and mark-read answers.
    let mut last_seq: BTreeMap<BTreeSet<String>, u64> = BTreeMap::new();
    let mut read_seq: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut expected_peers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in &events {
        let (user, peer, cursor) = match event {
            Event::Sent { from, to, seq } => {
                let last = last_seq.entry([from.clone(), to.clone()].into()).or_default();
                *last = (*last).max(*seq);
                expected_peers.entry(from.clone()).or_default().insert(to.clone());
                expected_peers.entry(to.clone()).or_default().insert(from.clone());
                (from, to, *seq)
            }
            Event::Read { user, peer, read_seq } => (user, peer, *read_seq),
        };
        let entry = read_seq.entry((user.clone(), peer.clone())).or_default();
        *entry = (*entry).max(cursor);
    }

    cluster.phase("every user's conversations, recounted from the histories");
    let mut listings = BTreeMap::new();
    for user in &users {
        let peers = expected_peers.get(user).cloned().unwrap_or_default();
        let listed = wait_listed(&cluster, user, &peers).await;
        let client = cluster.user(user);
        let mut sum = 0;
        for c in &listed.conversations {
            let what = format!("{user}'s conversation with {}", c.peer);
            let history: Vec<Row> =
                client.history_all(&c.peer, ReadConsistency::Linearizable).await.unwrap().iter().map(Row::of).collect();
            assert_gapless(&history, &what);
            let expected_last = last_seq[&[user.clone(), c.peer.clone()].into()];
            let expected_read = read_seq.get(&(user.clone(), c.peer.clone())).copied().unwrap_or(0);
            let past_cursor: Vec<&Row> = history.iter().filter(|m| m.seq > c.read_seq).collect();
            assert_eq!(
                (c.last_seq, c.read_seq, history.len() as u64),
                (expected_last, expected_read, expected_last),
                "{what}: (last_seq, read_seq, messages in history) differ from the acknowledged sends and reads"
            );
            assert_eq!(c.unread, c.last_seq - c.read_seq, "{what}: unread is not last_seq − read_seq");
            assert_eq!(c.unread, past_cursor.len() as u64, "{what}: unread is not the messages past the cursor");
            assert!(
                past_cursor.iter().all(|m| m.sender == c.peer),
                "{what}: one of {user}'s own messages counts as unread: {past_cursor:?}"
            );
            assert_eq!(c.last_message.as_ref().map(|m| m.seq), Some(c.last_seq), "{what}: last message");
            sum += c.unread;
        }
        assert_eq!(listed.total_unread, sum, "{user}'s total unread is not the sum over the conversations");
        listings.insert(user.clone(), listed);
    }

    cluster.phase("every node serves the same counts from its own replica");
    cluster.wait_converged().await;
    for (user, listed) in &listings {
        for i in 0..cluster.len() {
            let local = cluster.user_on(i, user).conversations_all(ReadConsistency::Local).await.unwrap();
            assert_eq!(&local, listed, "{user}'s conversations on node {}", i + 1);
        }
    }
}
