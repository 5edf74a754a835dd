//! What the tests compare: messages as [`Row`]s, acknowledged sends as [`Ack`]s, and the
//! assertions and reads over them.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use meridian_client::api::message_element::Kind;
use meridian_client::api::{ListConversationsResponse, Message, ReadConsistency};

use super::cluster::{Cluster, CONVERGE_TIMEOUT, POLL};

/// The shard that holds a conversation (or a user), by the region's stable routing.
pub fn shard_of(entity: &str, shards: u32) -> u32 {
    meridian_domain::shard::shard_for(entity, shards).0
}

/// The id of the one-to-one conversation between two users.
pub fn conversation_id(a: &str, b: &str) -> String {
    let user = |u: &str| meridian_domain::UserId::parse(u).unwrap_or_else(|e| panic!("user id {u:?}: {e}"));
    meridian_domain::ConversationId::c2c(&user(a), &user(b)).to_string()
}

/// `count` user ids with a common prefix: `{prefix}000`, `{prefix}001`…
pub fn user_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:03}")).collect()
}

/// A message as the tests compare it across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub seq: u64,
    pub message_id: String,
    pub sender: String,
    pub text: String,
    pub recalled: bool,
}

impl Row {
    pub fn of(message: &Message) -> Row {
        Row {
            seq: message.seq,
            message_id: message.message_id.clone(),
            sender: message.sender.clone(),
            text: meridian_client::message_text(message),
            recalled: message.recalled,
        }
    }
}

/// The whole conversation of `user` with `peer` as node `i`'s replica holds it (local read).
pub async fn local_history(cluster: &Cluster, i: usize, user: &str, peer: &str) -> Vec<Row> {
    let messages = cluster
        .user_on(i, user)
        .history_all(peer, ReadConsistency::Local)
        .await
        .unwrap_or_else(|e| panic!("read {user}–{peer} from node {}: {e}", i + 1));
    messages.iter().map(Row::of).collect()
}

/// `user`'s conversations (linearizable read) once every peer in `peers`, and no other, is
/// listed. A conversation reaches its members' lists asynchronously (through the outbox of
/// the conversation's shard), so this polls, bounded.
pub async fn wait_listed(cluster: &Cluster, user: &str, peers: &BTreeSet<String>) -> ListConversationsResponse {
    let client = cluster.user(user);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let listed = client
            .conversations_all(ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("list {user}'s conversations: {e}"));
        let seen: BTreeSet<String> = listed.conversations.iter().map(|c| c.peer.clone()).collect();
        if &seen == peers && listed.conversations.len() == peers.len() {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s conversations with {peers:?} were not listed within {CONVERGE_TIMEOUT:?}; listed: {seen:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Panics unless the seqs are exactly 1..=len, in order.
pub fn assert_gapless(rows: &[Row], what: &str) {
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=rows.len() as u64).collect();
    assert_eq!(seqs, expected, "{what}: seqs are not exactly 1..={}", rows.len());
}

/// An acknowledged send, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub request_id: String,
    pub sender: String,
    pub to: String,
    pub text: String,
    pub conversation_id: String,
    pub message_id: String,
    pub seq: u64,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// Acks grouped by conversation id.
pub fn acks_by_conversation(acks: &[Ack]) -> HashMap<String, Vec<Ack>> {
    let mut by: HashMap<String, Vec<Ack>> = HashMap::new();
    for ack in acks {
        by.entry(ack.conversation_id.clone()).or_default().push(ack.clone());
    }
    by
}

/// Panics unless `rows` (one conversation's history) holds exactly the acknowledged sends:
/// each once, at its acknowledged seq and message id, from its sender, with its text.
pub fn assert_history_matches_acks(rows: &[Row], acks: &[Ack], what: &str) {
    assert_eq!(
        rows.len(),
        acks.len(),
        "{what}: {} messages in the history, {} sends acknowledged",
        rows.len(),
        acks.len()
    );
    let by_seq: HashMap<u64, &Row> = rows.iter().map(|r| (r.seq, r)).collect();
    for ack in acks {
        let row = by_seq.get(&ack.seq).unwrap_or_else(|| panic!("{what}: acknowledged seq {} is missing", ack.seq));
        assert_eq!(
            (row.message_id.as_str(), row.sender.as_str(), row.text.as_str()),
            (ack.message_id.as_str(), ack.sender.as_str(), ack.text.as_str()),
            "{what}: seq {} is not the message acknowledged for request {}",
            ack.seq,
            ack.request_id
        );
    }
}

/// Reads every conversation of `pairs` from every node's own replica and asserts that each
/// history is gapless, holds every acknowledged send at its seq, and is the same on all nodes.
pub async fn assert_replicas_hold_acks(cluster: &Cluster, pairs: &[(String, String)], acks: &[Ack]) {
    let by_conversation = acks_by_conversation(acks);
    for (k, (a, b)) in pairs.iter().enumerate() {
        let id = conversation_id(a, b);
        let conversation_acks = by_conversation.get(&id).unwrap_or_else(|| panic!("no send acknowledged on {id}"));
        let mut first: Option<Vec<Row>> = None;
        for i in 0..cluster.len() {
            let what = format!("conversation {k} ({id}) on node {}", i + 1);
            let rows = local_history(cluster, i, a, b).await;
            assert_gapless(&rows, &what);
            assert_history_matches_acks(&rows, conversation_acks, &what);
            match &first {
                None => first = Some(rows),
                Some(node1) => assert_eq!(&rows, node1, "{what} differs from node 1"),
            }
        }
    }
}
