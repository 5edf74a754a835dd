//! The workload: concurrent clients sending one-to-one messages with request ids (retried
//! by the SDK on errors and timeouts), reading history pages and marking conversations read,
//! across many conversations; sending to a few groups, joining and leaving them, the owner
//! kicking and muting members; adding and deleting friends, blocking and unblocking. Every
//! operation and its outcome goes to the history.
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

use crate::history::{
    HistoryWriter, MarkReadRecord, Outcome, ReadMessage, ReadRecord, Record, SendRecord, SocialRecord,
};

/// How many groups the workload uses, all of type meeting (free to join), owned by the first
/// user, who never leaves.
pub const GROUPS: usize = 3;

#[derive(Debug, Clone)]
pub struct Workload {
    pub users: Vec<String>,
    /// The conversations: pairs of users, `(a, b)` with `a < b`.
    pub pairs: Vec<(String, String)>,
    pub clients: u32,
    pub seed: u64,
    /// The groups (`g0`, `g1`, …), owned by `users[0]`.
    pub groups: Vec<String>,
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
        system: meridian_client::is_group_notice(&m.elements),
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
        let groups = (0..GROUPS).map(|i| format!("g{i}")).collect();
        Self { users, pairs, clients, seed, groups }
    }

    /// The users who hold subscribed devices: both members of the first four conversations,
    /// and a second device for the groups' owner and for the first conversation's first
    /// member (several devices of one user).
    pub fn device_users(&self) -> Vec<String> {
        let mut users: Vec<String> = vec![];
        for (a, b) in self.pairs.iter().take(4) {
            for u in [a, b] {
                if !users.contains(u) {
                    users.push(u.clone());
                }
            }
        }
        users.push(self.owner().to_owned());
        if let Some((a, _)) = self.pairs.first() {
            users.push(a.clone());
        }
        users
    }

    /// The owner of every group.
    pub fn owner(&self) -> &str {
        &self.users[0]
    }

    pub async fn create_users(&self, admin: &Client) -> anyhow::Result<()> {
        for u in &self.users {
            admin.create_user(u, None).await?;
        }
        Ok(())
    }

    /// Creates the groups, each with every other user as an initial member.
    pub async fn create_groups(&self, admin: &Client) -> anyhow::Result<()> {
        let owner = admin.with_act_as(self.owner().to_owned())?;
        for (i, group) in self.groups.iter().enumerate() {
            let members: Vec<&str> = self.users.iter().skip(1 + i % 2).step_by(2).map(String::as_str).collect();
            owner.create_group(Some(group), "meeting", group, &members).await?;
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
            let record = if roll >= 75 {
                n += 1;
                self.social(c, n, &mut rng, &admin, start, t0).await
            } else if roll < 55 {
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
            } else if roll < 68 {
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
                Record::Social(s) => s.outcome == Outcome::Ok,
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

    /// One group or relationship operation: a group send (40%), a join or a leave, a kick or a
    /// mute by the owner, a friend add or delete, a block or an unblock.
    async fn social(&self, c: u32, n: u64, rng: &mut StdRng, admin: &Client, start: Instant, t0: Instant) -> Record {
        let ms = |t: Instant| u64::try_from(t.duration_since(t0).as_millis()).unwrap_or(u64::MAX);
        let group = self.groups[rng.gen_range(0..self.groups.len())].clone();
        // Anyone but the owner.
        let member = self.users[rng.gen_range(1..self.users.len())].clone();
        // Anyone but `member` (who is never the owner).
        let peer = match self.users[rng.gen_range(0..self.users.len())].clone() {
            same if same == member => self.users[0].clone(),
            other => other,
        };
        let roll = rng.gen_range(0..100);
        let social = |action: &str, actor: &str, target: &str, group: &str, r: Result<(), ClientError>| {
            let (outcome, error) = match r {
                Ok(()) => (Outcome::Ok, None),
                Err(e) => (outcome_of(&e), Some(e.to_string())),
            };
            Record::Social(SocialRecord {
                client: c,
                action: action.to_owned(),
                actor: actor.to_owned(),
                target: target.to_owned(),
                group: group.to_owned(),
                start_ms: ms(start),
                end_ms: ms(Instant::now()),
                outcome,
                error,
            })
        };
        let act = |user: &str| admin.with_act_as(user.to_owned());
        if roll < 48 {
            let request_id = format!("s{}-c{c}-g{n}", self.seed);
            let r = match act(&member) {
                Ok(client) => client.send_group_text(&group, &request_id, Some(request_id.clone())).await,
                Err(e) => Err(e),
            };
            let (outcome, seq, message_id, error) = match r {
                Ok(ok) => (Outcome::Ok, Some(ok.seq), Some(ok.message_id), None),
                Err(e) => (outcome_of(&e), None, None, Some(e.to_string())),
            };
            return Record::Send(SendRecord {
                client: c,
                request_id,
                from: member,
                to: group.clone(),
                conversation: format!("grp:{group}"),
                start_ms: ms(start),
                end_ms: ms(Instant::now()),
                outcome,
                seq,
                message_id,
                error,
            });
        }
        let owner = self.owner();
        match roll {
            48..=63 => {
                let r = match act(&member) {
                    Ok(client) => unit(client.add_group_members(&group, &[member.as_str()]).await),
                    Err(e) => Err(e),
                };
                social("join", &member, &member, &group, r)
            }
            64..=75 => {
                let r = match act(&member) {
                    Ok(client) => unit(client.remove_group_member(&group, None).await),
                    Err(e) => Err(e),
                };
                social("leave", &member, &member, &group, r)
            }
            76..=79 => {
                let r = match act(owner) {
                    Ok(client) => unit(client.remove_group_member(&group, Some(&member)).await),
                    Err(e) => Err(e),
                };
                social("kick", owner, &member, &group, r)
            }
            80..=83 => {
                // Seconds are whole: a mute of 1 s, so that it ends while the run goes on.
                let r = match act(owner) {
                    Ok(client) => unit(client.mute_group_member(&group, &member, 1).await),
                    Err(e) => Err(e),
                };
                social("mute", owner, &member, &group, r)
            }
            84..=91 => {
                let delete = rng.gen_bool(0.3);
                let r = match act(&member) {
                    Ok(client) if delete => unit(client.delete_friend(&peer, rng.gen_bool(0.5)).await),
                    Ok(client) => unit(client.add_friend(&peer, "", "").await),
                    Err(e) => Err(e),
                };
                social(if delete { "friend_delete" } else { "friend_add" }, &member, &peer, "", r)
            }
            _ => {
                let block = rng.gen_bool(0.4);
                let r = match act(&member) {
                    Ok(client) => unit(client.set_blocked(&peer, block).await),
                    Err(e) => Err(e),
                };
                social(if block { "block" } else { "unblock" }, &member, &peer, "", r)
            }
        }
    }
}

/// An answer reduced to whether it came.
fn unit<T>(r: Result<T, ClientError>) -> Result<(), ClientError> {
    r.map(|_| ())
}
