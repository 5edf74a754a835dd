//! kill -9 of a shard's leader in the middle of a concurrent send load: writes to that shard
//! resume under a new leader while the old one is down, clients that retry with the same
//! request id get each message stored exactly once, and once the old leader is back every
//! replica holds the same gapless histories.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_replicas_hold_acks, conversation_id};
use common::{shard_of, Ack, Cluster, Tuning};

/// Conversations on the shard whose leader is killed, and elsewhere.
const ON_TARGET_SHARD: usize = 8;
const ELSEWHERE: usize = 8;
/// How long one send may keep being retried (with its request id) before the test gives up.
const SEND_DEADLINE: Duration = Duration::from_secs(60);
/// How long the killed leader stays down, at least.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// The load: one task per conversation, sending in turns from either member until stopped.
struct Load {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Load {
    fn start(cluster: &Cluster, pairs: &[(String, String)]) -> Load {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (k, (a, b)) in pairs.iter().enumerate() {
            let members = [(a.clone(), b.clone(), cluster.user(a)), (b.clone(), a.clone(), cluster.user(b))];
            let (acks, stop) = (Arc::clone(&acks), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (from, to, client) = &members[n % 2];
                    let request_id = format!("t30-{k}-{n}");
                    let text = format!("conversation {k} message {n} from {from}");
                    let first_try = Instant::now();
                    // The SDK retries refusals and unreachable nodes; past its budget, so do we,
                    // with the same request id.
                    let reply = loop {
                        match client.send_text(to, &text, Some(request_id.clone())).await {
                            Ok(reply) => break reply,
                            Err(e) if first_try.elapsed() > SEND_DEADLINE => {
                                return Err(format!("send {request_id} not acknowledged in {SEND_DEADLINE:?}: {e}"));
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    };
                    let ack = Ack {
                        request_id,
                        sender: from.clone(),
                        to: to.clone(),
                        text,
                        conversation_id: reply.conversation_id,
                        message_id: reply.message_id,
                        seq: reply.seq,
                        at: Instant::now(),
                    };
                    acks.lock().unwrap().push(ack);
                    n += 1;
                }
                Ok(())
            }));
        }
        Load { acks, stop, tasks }
    }

    /// Acks on `conversations` acknowledged after `since`.
    fn acked_since(&self, conversations: &[String], since: Instant) -> usize {
        let acks = self.acks.lock().unwrap();
        acks.iter().filter(|a| a.at > since && conversations.contains(&a.conversation_id)).count()
    }

    /// Waits (bounded) until `count` sends on `conversations` were acknowledged after `since`.
    async fn wait_acked_since(&mut self, conversations: &[String], since: Instant, count: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_since(conversations, since) < count {
            if let Some(done) = self.tasks.iter().position(|t| t.is_finished()) {
                let outcome = self.tasks.swap_remove(done).await;
                panic!("{what}: a send task ended early: {outcome:?}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {count} sends acknowledged within 30 s",
                self.acked_since(conversations, since)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a send task panicked").unwrap_or_else(|e| panic!("{e}"));
        }
        let acks = self.acks.lock().unwrap();
        acks.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_mid_load_loses_and_duplicates_nothing() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let shards = 8;

    // Candidate pairs (p{2k}, p{2k+1}); keep some on the shard of the first pair, some elsewhere.
    let candidates: Vec<(String, String)> =
        (0..200).map(|k| (format!("p{:03}", 2 * k), format!("p{:03}", 2 * k + 1))).collect();
    let target = shard_of(&conversation_id(&candidates[0].0, &candidates[0].1), shards);
    let on_target = |(a, b): &&(String, String)| shard_of(&conversation_id(a, b), shards) == target;
    let mut pairs: Vec<(String, String)> = candidates.iter().filter(on_target).take(ON_TARGET_SHARD).cloned().collect();
    pairs.extend(candidates.iter().filter(|p| !on_target(p)).take(ELSEWHERE).cloned());
    assert_eq!(pairs.len(), ON_TARGET_SHARD + ELSEWHERE, "not enough candidate pairs");
    let target_conversations: Vec<String> =
        pairs[..ON_TARGET_SHARD].iter().map(|(a, b)| conversation_id(a, b)).collect();
    let users: Vec<String> = pairs.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    cluster.create_users(&users).await;

    let leader = cluster.shard_leader(target).await;
    cluster.phase(format!("load on {} conversations; node {} leads shard {target}", pairs.len(), leader + 1));
    let mut load = Load::start(&cluster, &pairs);
    let start = Instant::now();
    load.wait_acked_since(&target_conversations, start, 100, "before the kill").await;

    cluster.kill9(leader);
    let killed_at = Instant::now();
    load.wait_acked_since(&target_conversations, killed_at, 20, "writes to the shard of the killed leader").await;
    let down = killed_at.elapsed();
    if down < DOWN_FOR {
        tokio::time::sleep(DOWN_FOR - down).await;
    }
    let acked_while_down = load.acked_since(&target_conversations, killed_at);

    cluster.restart(leader).await;
    let restarted_at = Instant::now();
    load.wait_acked_since(&target_conversations, restarted_at, 50, "writes after the restart").await;
    cluster.phase("stop the load");
    let acks = load.finish().await;
    assert!(acked_while_down >= 20, "only {acked_while_down} sends on shard {target} acknowledged while down");

    cluster.wait_converged().await;

    cluster.phase(format!("check {} acknowledged sends on every node", acks.len()));
    assert_replicas_hold_acks(&cluster, &pairs, &acks).await;
}
