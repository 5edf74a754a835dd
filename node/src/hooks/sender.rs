//! After-callbacks and offline pushes, sent from each shard's event log by its leader.
//!
//! The leader reads the events past the shard's webhook cursor in log order. An event an
//! after-callback is on for is posted (retried with backoff until it is answered 2xx or its
//! attempts run out) before the next event is looked at, so callbacks go in log order: in
//! order per conversation and per group. A message for a member with no live stream in the
//! region becomes a push, gathered into batches. Once everything up to an offset has been
//! sent, the leader records it (`HooksSent`, at most once a second, and only when something
//! was sent or much of the log went by); a new leader resumes from the recorded offset, so a
//! callback or push may repeat after a leader change (at least once) but a leader change never
//! skips one. A request whose attempts all fail is given up (logged, counted in
//! `meridian_webhook_dropped_total`) so that one dead endpoint cannot stall the shard's
//! webhooks forever. When webhooks are first switched on, sending starts at the log's end
//! (recorded at once), not at its beginning.
//! Every request carries the event's offset (`event`) for the receiver to drop repeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_domain::{Command, ConversationId, Event, EventOffset, GroupId, Seq, ShardId, UserId};
use meridian_raft::RaftNode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use super::http::HookClient;
use super::{elements, Hooks, METRICS};
use crate::api::error::ApiError;
use crate::config::PreviewMode;
use crate::delivery::Hub;

/// Events read from the log at a time.
const READ_BATCH: usize = 256;
/// Shortest time between two records of the cursor.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// Entries past the recorded cursor after which it is recorded even if nothing was sent
/// (so that a new leader does not re-read a long stretch of log that needed nothing).
const RECORD_AFTER_ENTRIES: u64 = 10_000;
/// Members read at a time when a group message is pushed.
const MEMBER_PAGE: usize = 1000;

/// Starts one sender per shard when anything is sent from the log.
pub fn start(hooks: Arc<Hooks>, node: Arc<RaftNode>, hub: Arc<Hub>) {
    if !hooks.sends_from_log() {
        return;
    }
    for shard in node.shards() {
        let metrics = shard.raft.metrics();
        tokio::spawn(run(hooks.clone(), node.clone(), hub.clone(), shard.id, metrics));
    }
}

type Metrics = tokio::sync::watch::Receiver<meridian_raft::RaftMetrics>;

fn applied(metrics: &Metrics) -> u64 {
    metrics.borrow().last_applied.as_ref().map_or(0, |l| l.index)
}

async fn run(hooks: Arc<Hooks>, node: Arc<RaftNode>, hub: Arc<Hub>, shard: ShardId, mut metrics: Metrics) {
    loop {
        // A fenced node sends nothing of what it did after its region's cut (ADR 0005).
        if node.region_role() == meridian_raft::Role::Fenced {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if node.is_leader(shard) {
            let mut leader = Leader { hooks: &hooks, node: &node, hub: &hub, shard, pushes: Vec::new() };
            match leader.lead(&mut metrics).await {
                Ok(Lead::MetricsClosed) => return,
                Ok(Lead::NotLeader) => {}
                Err(e) => {
                    tracing::warn!(shard = shard.0, error = %e, "webhooks: sending from the log stopped; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        } else if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Why [`Leader::lead`] returned.
enum Lead {
    /// This node no longer leads the shard (or lost it while sending).
    NotLeader,
    /// The shard's Raft metrics ended: the node is shutting down.
    MetricsClosed,
}

struct Leader<'a> {
    hooks: &'a Hooks,
    node: &'a RaftNode,
    hub: &'a Hub,
    shard: ShardId,
    /// Pushes waiting for their batch, and when the first of them came.
    pushes: Vec<Value>,
}

impl Leader<'_> {
    /// Sends from the log while this node leads the shard. The cursor is only ever recorded
    /// at an offset everything before which this node sent (or gave up after its attempts):
    /// on losing the lead mid-way it returns before moving past the event it was sending.
    async fn lead(&mut self, metrics: &mut Metrics) -> Result<Lead, ApiError> {
        let store = self.node.store(self.shard)?;
        let mut next = match store.hooks_cursor()? {
            Some(cursor) => cursor,
            None => {
                // Webhooks newly switched on: from now on, not the whole history. Recorded
                // first, so that a next leader starts from the same place.
                let start = EventOffset { log_index: applied(metrics) + 1, command: 0, event: 0 };
                self.node.propose(self.shard, &[Command::HooksSent { up_to: start }]).await?;
                start
            }
        };
        let mut recorded = next;
        let mut sent_since_record = false;
        let mut last_record = Instant::now();
        let mut first_push: Option<Instant> = None;
        let linger = Duration::from_millis(self.hooks.push_config.linger_ms);
        while self.node.is_leader(self.shard) {
            let upto = applied(metrics);
            let mut caught_up = true;
            if next.log_index <= upto {
                let events = store.events(next, READ_BATCH)?;
                let read = events.len();
                for logged in events.into_iter().take_while(|e| e.offset.log_index <= upto) {
                    let before = self.pushes.len();
                    match self.handle(&logged.offset, &logged.event).await? {
                        None => return Ok(Lead::NotLeader),
                        Some(sent) => sent_since_record |= sent,
                    }
                    if self.pushes.len() > before && first_push.is_none() {
                        first_push = Some(Instant::now());
                    }
                    next = logged.offset.next();
                    if self.pushes.len() >= self.hooks.push_config.batch {
                        if !self.flush().await {
                            return Ok(Lead::NotLeader);
                        }
                        first_push = None;
                        sent_since_record = true;
                    }
                }
                if read == READ_BATCH && next.log_index <= upto {
                    caught_up = false;
                } else if next.log_index <= upto {
                    next = EventOffset { log_index: upto + 1, command: 0, event: 0 };
                }
            }
            if !self.pushes.is_empty() && first_push.is_some_and(|t| t.elapsed() >= linger) {
                if !self.flush().await {
                    return Ok(Lead::NotLeader);
                }
                first_push = None;
                sent_since_record = true;
            }
            let far = next.log_index.saturating_sub(recorded.log_index) >= RECORD_AFTER_ENTRIES;
            if self.pushes.is_empty()
                && next > recorded
                && (sent_since_record || far)
                && last_record.elapsed() >= RECORD_EVERY
                && self.node.is_leader(self.shard)
            {
                self.node.propose(self.shard, &[Command::HooksSent { up_to: next }]).await?;
                recorded = next;
                sent_since_record = false;
                last_record = Instant::now();
            }
            if caught_up {
                let wait = match first_push {
                    Some(t) => linger.saturating_sub(t.elapsed()),
                    None if next > recorded && sent_since_record => RECORD_EVERY,
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return Ok(Lead::MetricsClosed) },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Ok(Lead::NotLeader)
    }

    /// Acts on one event: `Some(true)` when a callback was sent for it, `None` when this node
    /// stopped leading before it was sent (the next leader sends it).
    async fn handle(&mut self, offset: &EventOffset, event: &Event) -> Result<Option<bool>, ApiError> {
        let cfg = &self.hooks.config;
        let id = format!("{}:{offset}", self.shard.0);
        let callback = match event {
            Event::MessageSent { conversation, seq, message_id, sender, recipient, elements, at, .. } => {
                self.push_c2c(conversation, *seq, sender, recipient, elements, at.0).await?;
                cfg.after_send.then(|| {
                    json!({
                        "command": "after-send", "conversation_id": conversation.to_string(),
                        "from": sender.to_string(), "to": recipient.to_string(), "seq": seq.0,
                        "message_id": message_id.to_string(), "time_ms": at.0,
                        "elements": elements::body_to_json(elements),
                    })
                })
            }
            Event::GroupMessageSent { group, seq, message_id, sender, elements, mentions, at_all, at, .. } => {
                let conversation = ConversationId::group(group);
                self.push_group(&conversation, group, (*seq, sender, at.0), elements, (mentions, *at_all)).await?;
                cfg.after_send.then(|| {
                    json!({
                        "command": "after-send", "conversation_id": conversation.to_string(),
                        "from": sender.to_string(), "group_id": group.to_string(), "seq": seq.0,
                        "message_id": message_id.to_string(), "time_ms": at.0,
                        "elements": elements::body_to_json(elements),
                    })
                })
            }
            Event::TopicMessageSent { group, topic, seq, message_id, sender, elements, at, .. } => {
                let conversation = ConversationId::topic_stream(group, topic);
                self.push_group(&conversation, group, (*seq, sender, at.0), elements, (&[], false)).await?;
                cfg.after_send.then(|| {
                    json!({
                        "command": "after-send", "conversation_id": conversation.to_string(),
                        "from": sender.to_string(), "group_id": group.to_string(), "topic": topic.to_string(),
                        "seq": seq.0, "message_id": message_id.to_string(), "time_ms": at.0,
                        "elements": elements::body_to_json(elements),
                    })
                })
            }
            Event::GroupCreated { group, kind, owner, name, at, .. } if cfg.after_create_group => Some(json!({
                "command": "after-create-group", "group_id": group.to_string(), "kind": format!("{kind:?}"),
                "owner": owner.to_string(), "name": name, "time_ms": at.0,
            })),
            Event::GroupMemberAdded { group, user, by, role, at, .. } if cfg.after_join_group => Some(json!({
                "command": "after-join-group", "group_id": group.to_string(), "user": user.to_string(),
                "by": by.to_string(), "role": format!("{role:?}"), "time_ms": at.0,
            })),
            Event::FriendAdded { user, friend, at, .. } if cfg.after_add_friend => Some(json!({
                "command": "after-add-friend", "user": user.to_string(), "friend": friend.to_string(), "time_ms": at.0,
            })),
            _ => None,
        };
        let (Some(mut body), Some(client)) = (callback, self.hooks.callbacks.as_ref()) else { return Ok(Some(false)) };
        if let Some(o) = body.as_object_mut() {
            o.insert("app_id".into(), json!(self.hooks.app_id));
            o.insert("region".into(), json!(self.hooks.region));
            o.insert("event".into(), json!(id));
        }
        let command = body.get("command").and_then(Value::as_str).unwrap_or("after").to_owned();
        if !self.deliver(client, &command, &body, self.hooks.config.max_attempts).await {
            return Ok(None);
        }
        Ok(Some(true))
    }

    /// Posts until answered 2xx, the attempts run out, or this node stops leading; false
    /// only in the last case (the next leader sends it again).
    async fn deliver(&self, client: &HookClient, command: &str, body: &Value, attempts: u32) -> bool {
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts {
            match client.post(command, body).await {
                Ok(_) => {
                    let counter = if command == "push" { &METRICS.pushes_sent } else { &METRICS.callbacks_sent };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    METRICS.callbacks_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(shard = self.shard.0, command, attempt, error = %e, url = %client.url(), "webhook failed");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            if !self.node.is_leader(self.shard) {
                return false;
            }
        }
        METRICS.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(shard = self.shard.0, command, attempts, "webhook given up after its last attempt");
        true
    }

    /// Sends the waiting pushes as one request; false when this node stopped leading.
    async fn flush(&mut self) -> bool {
        let Some(client) = self.hooks.push.as_ref() else {
            self.pushes.clear();
            return true;
        };
        let body = json!({
            "command": "push", "app_id": self.hooks.app_id, "region": self.hooks.region,
            "pushes": std::mem::take(&mut self.pushes),
        });
        self.deliver(client, "push", &body, self.hooks.push_config.max_attempts).await
    }

    /// Whether `users` have no live stream on any node of the region: those offline.
    async fn offline(&self, users: Vec<String>) -> Vec<String> {
        let mut online: std::collections::BTreeSet<String> = self.hub.online_of(users.clone()).into_iter().collect();
        if online.len() < users.len() {
            online.extend(self.node.presence_elsewhere(&users).await);
        }
        users.into_iter().filter(|u| !online.contains(u)).collect()
    }

    fn user_store(&self, user: &UserId) -> Option<&meridian_storage::ShardStore> {
        let shard = meridian_domain::shard::shard_for(user.as_str(), self.node.shard_count());
        self.node.store(shard).ok()
    }

    fn push_item(
        &self,
        user: &str,
        conversation: &ConversationId,
        (seq, sender, time_ms): (Seq, &UserId, i64),
        elements: &[meridian_domain::element::Element],
        silent: bool,
        group: Option<&GroupId>,
    ) -> Value {
        let hide = silent || self.hooks.push_config.preview == PreviewMode::Hidden;
        json!({
            "user": user, "conversation_id": conversation.to_string(), "seq": seq.0, "time_ms": time_ms,
            "group_id": group.map(|g| g.to_string()).unwrap_or_default(),
            "from": if hide { String::new() } else { sender.to_string() },
            "preview": if hide { String::new() } else { elements::preview(elements) },
            "silent": silent,
        })
    }

    async fn push_c2c(
        &mut self,
        conversation: &ConversationId,
        seq: Seq,
        sender: &UserId,
        recipient: &UserId,
        body: &[meridian_domain::element::Element],
        time_ms: i64,
    ) -> Result<(), ApiError> {
        if self.hooks.push.is_none() || sender == recipient {
            return Ok(());
        }
        if self.offline(vec![recipient.to_string()]).await.is_empty() {
            return Ok(());
        }
        // The recipient's settings are on their shard (here when they are homed here).
        let silent = match self.user_store(recipient) {
            Some(store) => store.conversation_prefs_of(recipient)?.get(conversation.as_str()).is_some_and(|p| p.dnd),
            None => false,
        };
        let item = self.push_item(recipient.as_str(), conversation, (seq, sender, time_ms), body, silent, None);
        self.pushes.push(item);
        Ok(())
    }

    /// Pushes a group (or topic) message to its offline members: not to its sender, not to
    /// members who set `recv_opt = reject`, silent for `no_notify` unless they are mentioned.
    async fn push_group(
        &mut self,
        conversation: &ConversationId,
        group: &GroupId,
        (seq, sender, time_ms): (Seq, &UserId, i64),
        body: &[meridian_domain::element::Element],
        (mentions, at_all): (&[UserId], bool),
    ) -> Result<(), ApiError> {
        if self.hooks.push.is_none() {
            return Ok(());
        }
        let store = self.node.store(self.shard)?;
        let Some(record) = store.group(group)? else { return Ok(()) };
        if record.member_count > self.hooks.push_config.max_group_members {
            return Ok(());
        }
        let mut after: Option<UserId> = None;
        loop {
            let page = store.group_members(group, after.as_ref(), MEMBER_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.user.clone());
            let mut silent_of = std::collections::HashMap::new();
            let mut candidates = Vec::new();
            for m in &page {
                let opt = m.info.get("recv_opt").map(String::as_str).unwrap_or("receive");
                if m.user == *sender || opt == "reject" {
                    continue;
                }
                let mentioned = at_all || mentions.contains(&m.user);
                silent_of.insert(m.user.to_string(), opt == "no_notify" && !mentioned);
                candidates.push(m.user.to_string());
            }
            for user in self.offline(candidates).await {
                let silent = silent_of.get(&user).copied().unwrap_or(false);
                let item = self.push_item(&user, conversation, (seq, sender, time_ms), body, silent, Some(group));
                self.pushes.push(item);
            }
            if page.len() < MEMBER_PAGE {
                break;
            }
        }
        Ok(())
    }
}
