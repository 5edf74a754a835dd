//! A thousand messages sent at once by many clients over fifty conversations: every
//! conversation ends up with gapless seqs holding exactly the acknowledged messages, and all
//! three replicas hold the same histories.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::time::Instant;

use meridian_client::Client;
use rand::seq::SliceRandom as _;

use common::user_ids;
use common::{acks_by_conversation, assert_replicas_hold_acks};
use common::{Ack, Cluster, Tuning};

const USERS: usize = 100;
const MESSAGES_PER_CONVERSATION: usize = 20;
const TASKS: usize = 20;

/// One planned send.
#[derive(Debug, Clone)]
struct Send {
    from: String,
    to: String,
    text: String,
    request_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_sends_are_gapless_and_identical_on_every_node() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    let users = user_ids("u", USERS);
    cluster.create_users(&users).await;

    cluster.phase("each user gets a client with their own token");
    let mut clients: HashMap<String, Client> = HashMap::new();
    for user in &users {
        clients.insert(user.clone(), cluster.user_with_token(user).await);
    }

    // Conversation k is between users 2k and 2k+1, who take turns: 10 messages each way.
    let pairs: Vec<(String, String)> = users.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    let mut plan: Vec<Send> = Vec::new();
    for (k, (a, b)) in pairs.iter().enumerate() {
        for m in 0..MESSAGES_PER_CONVERSATION {
            let (from, to) = if m.is_multiple_of(2) { (a, b) } else { (b, a) };
            plan.push(Send {
                from: from.clone(),
                to: to.clone(),
                text: format!("conversation {k} message {m} from {from}"),
                request_id: format!("t20-{k}-{m}"),
            });
        }
    }
    plan.shuffle(&mut rand::thread_rng());

    cluster.phase(format!("{} sends from {TASKS} concurrent tasks", plan.len()));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mine: Vec<Send> = plan.iter().skip(t).step_by(TASKS).cloned().collect();
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for send in mine {
                let client = &clients[&send.from];
                let reply = client
                    .send_text(&send.to, &send.text, Some(send.request_id.clone()))
                    .await
                    .map_err(|e| format!("send {} ({} → {}): {e}", send.request_id, send.from, send.to))?;
                acks.push(Ack {
                    request_id: send.request_id,
                    sender: send.from,
                    to: send.to,
                    text: send.text,
                    conversation_id: reply.conversation_id,
                    message_id: reply.message_id,
                    seq: reply.seq,
                    at: Instant::now(),
                });
            }
            Ok::<_, String>(acks)
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("a send task panicked").unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(acks.len(), pairs.len() * MESSAGES_PER_CONVERSATION);

    cluster.phase("wait for the replicas to converge");
    let mut cluster = cluster;
    cluster.wait_converged().await;

    cluster.phase("read every conversation from every node's own replica");
    assert_eq!(acks_by_conversation(&acks).len(), pairs.len(), "every pair must have one conversation");
    assert_replicas_hold_acks(&cluster, &pairs, &acks).await;
}
