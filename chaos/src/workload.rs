//! The workload: concurrent clients sending one-to-one messages with request ids (retried
//! by the SDK on errors and timeouts), reading history pages and marking conversations read,
//! across many conversations; every operation and its outcome goes to the history.
//!
//! A sent message's text is its request id, so a message read back names its send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::api::{Direction, Message, ReadConsistency};
use meridian_client::{Client, ClientError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::history::{HistoryWriter, MarkReadRecord, Outcome, ReadMessage, ReadRecord, Record, SendRecord};

#[derive(Debug, Clone)]
pub struct Workload {
    pub users: Vec<String>,
    /// The conversations: pairs of users, `(a, b)` with `a < b`.
    pub pairs: Vec<(String, String)>,
    pub clients: u32,
    pub seed: u64,
}

/// Counts kept while the workload runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub operations: AtomicU64,
    pub acknowledged: AtomicU64,
}

pub fn conversation_id(a: &str, b: &str) -> String {
    if a < b {
        format!("c2c:{a}:{b}")
    } else {
        format!("c2c:{b}:{a}")
    }
}

/// A typed rejection means the operation certainly did not take effect; anything else
/// (timeout, unreachable, unavailable) leaves it unknown.
pub fn outcome_of(e: &ClientError) -> Outcome {
    use tonic::Code;
    match e.code() {
        Some(
            Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated,
        ) if matches!(e, ClientError::Status { .. }) => Outcome::Error,
        _ => Outcome::Unknown,
    }
}

pub fn read_message(m: &Message) -> ReadMessage {
    ReadMessage {
        seq: m.seq,
        message_id: m.message_id.clone(),
        sender: m.sender.clone(),
        text: meridian_client::message_text(m),
    }
}

impl Workload {
    pub fn new(seed: u64, users: usize, conversations: usize, clients: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let users: Vec<String> = (0..users).map(|i| format!("u{i:03}")).collect();
        let mut pairs = Vec::new();
        while pairs.len() < conversations {
            let (a, b) = (rng.gen_range(0..users.len()), rng.gen_range(0..users.len()));
            if a == b {
                continue;
            }
            let (a, b) = if users[a] < users[b] {
                (users[a].clone(), users[b].clone())
            } else {
                (users[b].clone(), users[a].clone())
            };
            if !pairs.contains(&(a.clone(), b.clone())) {
                pairs.push((a, b));
            }
        }
        Self { users, pairs, clients, seed }
    }

    pub async fn create_users(&self, admin: &Client) -> anyhow::Result<()> {
        for u in &self.users {
            admin.create_user(u, None).await?;
        }
        Ok(())
    }

    /// Runs every client until `stop` turns true.
    pub async fn run(
        &self,
        admin: Client,
        history: Arc<HistoryWriter>,
        counters: Arc<Counters>,
        t0: Instant,
        stop: watch::Receiver<bool>,
    ) {
        let tasks: Vec<_> = (0..self.clients)
            .map(|c| {
                let (w, admin, history, counters, stop) =
                    (self.clone(), admin.clone(), history.clone(), counters.clone(), stop.clone());
                tokio::spawn(async move { w.client(c, admin, history, counters, t0, stop).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn client(
        &self,
        c: u32,
        admin: Client,
        history: Arc<HistoryWriter>,
        counters: Arc<Counters>,
        t0: Instant,
        stop: watch::Receiver<bool>,
    ) {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(c)));
        let ms = |t: Instant| u64::try_from(t.duration_since(t0).as_millis()).unwrap_or(u64::MAX);
        let mut n = 0u64;
        while !*stop.borrow() {
            let (a, b) = &self.pairs[rng.gen_range(0..self.pairs.len())];
            let (me, peer) = if rng.gen_bool(0.5) { (a, b) } else { (b, a) };
            let Ok(client) = admin.with_act_as(me.clone()) else { return };
            let conversation = conversation_id(me, peer);
            let roll = rng.gen_range(0..100);
            let start = Instant::now();
            let record = if roll < 70 {
                n += 1;
                let request_id = format!("s{}-c{c}-{n}", self.seed);
                let r = client.send_text(peer, &request_id, Some(request_id.clone())).await;
                let (outcome, seq, message_id, error) = match r {
                    Ok(ok) => (Outcome::Ok, Some(ok.seq), Some(ok.message_id), None),
                    Err(e) => (outcome_of(&e), None, None, Some(e.to_string())),
                };
                Record::Send(SendRecord {
                    client: c,
                    request_id,
                    from: me.clone(),
                    to: peer.clone(),
                    conversation,
                    start_ms: ms(start),
                    end_ms: ms(Instant::now()),
                    outcome,
                    seq,
                    message_id,
                    error,
                })
            } else if roll < 90 {
                let forward = rng.gen_bool(0.5);
                let direction = if forward { Direction::Forward } else { Direction::Backward };
                let limit = rng.gen_range(5..=50);
                let r = client.history(peer, 0, limit, direction, ReadConsistency::Linearizable).await;
                let (outcome, mut messages, last_seq) = match r {
                    Ok(page) => {
                        (Outcome::Ok, page.messages.iter().map(read_message).collect::<Vec<_>>(), page.last_seq)
                    }
                    Err(e) => (outcome_of(&e), vec![], 0),
                };
                messages.sort_by_key(|m| m.seq);
                Record::Read(ReadRecord {
                    client: c,
                    reader: me.clone(),
                    conversation,
                    start_ms: ms(start),
                    end_ms: ms(Instant::now()),
                    outcome,
                    messages,
                    last_seq,
                })
            } else {
                let r = client.mark_read(peer, None).await;
                let (outcome, read_seq) = match r {
                    Ok(ok) => (Outcome::Ok, Some(ok.read_seq)),
                    // Nothing sent yet in this conversation: a rejection, not a failure.
                    Err(e) => (outcome_of(&e), None),
                };
                Record::MarkRead(MarkReadRecord {
                    client: c,
                    user: me.clone(),
                    conversation,
                    start_ms: ms(start),
                    end_ms: ms(Instant::now()),
                    outcome,
                    read_seq,
                })
            };
            counters.operations.fetch_add(1, Ordering::Relaxed);
            let ok = match &record {
                Record::Send(s) => s.outcome == Outcome::Ok,
                Record::Read(r) => r.outcome == Outcome::Ok,
                Record::MarkRead(m) => m.outcome == Outcome::Ok,
                _ => false,
            };
            if ok {
                counters.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = history.append(&record) {
                tracing::error!(error = %e, "write history");
                return;
            }
            if !ok {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
