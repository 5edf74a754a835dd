//! Realtime delivery (DLV-01/02): the `Subscribe` streams a node serves.
//!
//! Every node applies every shard of its region, so it delivers from what it applies. One
//! tailer per shard waits for the shard's applied index to move (openraft's metrics), reads
//! the new events from the shard's event log, and hands each event to the streams of the
//! users it concerns that are connected to this node: a one-to-one message to its two
//! members, a group or topic message to the connected members (a membership read on this
//! node's replica, per connected user: the group's size does not matter), a recall to the
//! conversation's members, a read cursor to its owner's other devices.
//!
//! A stream keeps, per conversation, the newest seq it has sent (seeded from the device's
//! sync token). A message at or below it is not sent again; one past a gap first sends the
//! gap, read from this node's replica (which has applied it: it precedes the message in the
//! same shard's log). So a device gets each message of a conversation once and in seq order
//! however the stream was fed — catch-up, live, or a catch-up again after the stream fell
//! behind (its queue full: it is marked and catches up from its seqs, never silently skips).
//!
//! Conversations and groups homed in another region are applied there: a stream watches
//! each such region of its user (`Link/Watch`, one per region), whose nodes serve the user's
//! events there as they would a local stream's and send them back over the region link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use meridian_domain::{ConversationId, Event, EventOffset, GroupId, Reason, Rejection, Seq, ShardId, UserId};
use meridian_proto::api;
use meridian_raft::RaftNode;
use tokio::sync::{mpsc, Notify};

use crate::api::error::ApiError;
use crate::api::wire::message_to_wire;

/// Events a stream may have queued before it is marked behind (and catches up instead).
const QUEUE: usize = 1024;
/// Events read from a shard's log at a time.
const READ_BATCH: usize = 256;
/// Messages of one conversation a catch-up (or a gap) sends; older ones get a `fetch` hint.
pub const CATCH_UP_MESSAGES: u64 = 100;

/// Something to deliver, shared by every stream it goes to.
#[derive(Debug)]
pub enum Item {
    Message {
        conversation: ConversationId,
        message: api::Message,
    },
    Recalled {
        conversation: ConversationId,
        seq: Seq,
        by: UserId,
    },
    Read {
        conversation: ConversationId,
        read_seq: Seq,
    },
    Signal {
        conversation: ConversationId,
        sender: UserId,
        kind: String,
        payload: String,
    },
    /// A conversation or group entered the user's list: what it holds past the stream's seq
    /// is sent (it may have been applied before the stream connected, and not yet listed
    /// when the stream caught up).
    Listed {
        conversation: ConversationId,
    },
    /// A conversation or group homed in `region` entered the user's list: the stream watches
    /// that region (`Link/Watch`) if it does not yet.
    ListedAbroad {
        conversation: ConversationId,
        region: meridian_domain::RegionCode,
    },
    /// A group's like total changed (GRP-07).
    Likes {
        group: GroupId,
        total: u64,
    },
    /// `user`, on the stream owner's friend list, came online or went offline.
    Presence {
        user: UserId,
        online: bool,
    },
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Arc<Item>>,
    behind: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Slot {
    fn offer(&self, item: &Arc<Item>) {
        if self.tx.try_send(item.clone()).is_err() {
            // Full (or closing): the stream catches up from its seqs instead.
            self.behind.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// The node's connected streams, by user, and the tailers that feed them.
pub struct Hub {
    node: Arc<RaftNode>,
    streams: Mutex<HashMap<UserId, Vec<Slot>>>,
    /// The streams in each live room, by (user, stream id): a live room keeps no members, so
    /// its messages go to the streams that asked for it.
    rooms: Mutex<HashMap<GroupId, Vec<(UserId, u64)>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("users", &self.lock().len()).finish()
    }
}

/// A stream's place in the hub; dropping it takes the stream out.
pub struct Registration {
    hub: Weak<Hub>,
    user: UserId,
    id: u64,
    pub rx: mpsc::Receiver<Arc<Item>>,
    pub behind: Arc<AtomicBool>,
    pub wake: Arc<Notify>,
    rooms: Vec<GroupId>,
}

impl Registration {
    /// Puts the stream in `rooms` (live rooms) while it lasts.
    pub fn enter_rooms(&mut self, rooms: Vec<GroupId>) {
        if let Some(hub) = self.hub.upgrade() {
            let mut map = hub.rooms.lock().unwrap_or_else(|p| p.into_inner());
            for room in &rooms {
                map.entry(room.clone()).or_default().push((self.user.clone(), self.id));
            }
        }
        self.rooms.extend(rooms);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            if !self.rooms.is_empty() {
                let mut map = hub.rooms.lock().unwrap_or_else(|p| p.into_inner());
                for room in &self.rooms {
                    if let Some(list) = map.get_mut(room) {
                        list.retain(|(_, id)| *id != self.id);
                        if list.is_empty() {
                            map.remove(room);
                        }
                    }
                }
            }
            let mut streams = hub.lock();
            if let Some(slots) = streams.get_mut(&self.user) {
                slots.retain(|s| s.id != self.id);
                if slots.is_empty() {
                    streams.remove(&self.user);
                    drop(streams);
                    hub.announce(self.user.clone(), false);
                }
            }
        }
    }
}

impl Hub {
    /// A hub for `node`, with a tailer on each of its shards, taking the signals the
    /// region's other nodes relay.
    pub fn start(node: Arc<RaftNode>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            node: node.clone(),
            streams: Mutex::default(),
            rooms: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        node.set_signal_sink(Arc::new(SignalsTo(Arc::downgrade(&hub))));
        for shard in node.shards() {
            let metrics = shard.raft.metrics();
            tokio::spawn(tail(Arc::downgrade(&hub), shard.id, metrics));
        }
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Slot>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects a stream of `user`.
    pub fn register(self: &Arc<Self>, user: &UserId) -> Registration {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (behind, wake) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        let slot = Slot { id, tx, behind: behind.clone(), wake: wake.clone() };
        let first = {
            let mut streams = self.lock();
            let slots = streams.entry(user.clone()).or_default();
            slots.push(slot);
            slots.len() == 1
        };
        if first {
            self.announce(user.clone(), true);
        }
        Registration { hub: Arc::downgrade(self), user: user.clone(), id, rx, behind, wake, rooms: vec![] }
    }

    /// How many streams are connected, and for how many users.
    pub fn connected(&self) -> (usize, usize) {
        let streams = self.lock();
        (streams.values().map(Vec::len).sum(), streams.len())
    }

    fn idle(&self) -> bool {
        self.lock().is_empty()
    }

    fn users(&self) -> Vec<UserId> {
        self.lock().keys().cloned().collect()
    }

    /// Those of `users` with a stream connected here.
    fn connected_of<'u>(&self, users: impl IntoIterator<Item = &'u UserId>) -> Vec<UserId> {
        let streams = self.lock();
        users.into_iter().filter(|u| streams.contains_key(*u)).cloned().collect()
    }

    /// The members of `group` (on `store`, its shard) with a stream connected here, found
    /// from the smaller side: the group's members when they are fewer than the connected
    /// users, else each connected user's membership.
    fn connected_members(
        &self,
        store: &meridian_storage::ShardStore,
        group: &GroupId,
    ) -> Result<Vec<UserId>, ApiError> {
        let connected = self.users();
        let member_count = store.group(group)?.map_or(0, |g| g.member_count);
        if member_count as usize <= connected.len() {
            let members = store.group_members(group, None, member_count as usize)?;
            return Ok(self.connected_of(members.iter().map(|m| &m.user)));
        }
        let mut users = vec![];
        for user in connected {
            if store.group_member(group, &user)?.is_some() {
                users.push(user);
            }
        }
        Ok(users)
    }

    fn send(&self, users: &[UserId], item: Item) {
        let item = Arc::new(item);
        let streams = self.lock();
        for user in users {
            for slot in streams.get(user).into_iter().flatten() {
                slot.offer(&item);
            }
        }
    }

    /// Hands `item` to the streams in live room `room`; false when there are none.
    fn send_to_room(&self, room: &GroupId, item: Item) -> bool {
        let listeners = self.rooms.lock().unwrap_or_else(|p| p.into_inner()).get(room).cloned().unwrap_or_default();
        if listeners.is_empty() {
            return false;
        }
        let item = Arc::new(item);
        let streams = self.lock();
        for (user, id) in &listeners {
            for slot in streams.get(user).into_iter().flatten().filter(|s| s.id == *id) {
                slot.offer(&item);
            }
        }
        true
    }

    /// Tells the region that `user`'s first stream on this node connected (`online`), or
    /// that their last one here closed and none is left on another node.
    fn announce(self: &Arc<Self>, user: UserId, online: bool) {
        let hub = self.clone();
        tokio::spawn(async move {
            if !online && !hub.node.presence_elsewhere(&[user.to_string()]).await.is_empty() {
                return;
            }
            let kind = if online { "presence:online" } else { "presence:offline" };
            hub.node.relay_signal(meridian_proto::peer::SignalRequest {
                conversation_id: String::new(),
                sender: user.to_string(),
                kind: kind.into(),
                payload: String::new(),
            });
            hub.presence_changed(&user, online);
        });
    }

    /// Hands a presence change to this node's streams of users who list `user` as a friend.
    pub fn presence_changed(&self, user: &UserId, online: bool) {
        let shards = self.node.shard_count();
        let watchers: Vec<UserId> = self
            .users()
            .into_iter()
            .filter(|w| {
                w != user
                    && self
                        .node
                        .store(meridian_domain::shard::shard_for(w.as_str(), shards))
                        .is_ok_and(|s| s.friends_entry(w, user).unwrap_or(false))
            })
            .collect();
        if !watchers.is_empty() {
            self.send(&watchers, Item::Presence { user: user.clone(), online });
        }
    }

    /// Which of `users` have a stream connected to this node.
    pub fn online_of(&self, users: Vec<String>) -> Vec<String> {
        let streams = self.lock();
        users.into_iter().filter(|u| UserId::parse(u).is_ok_and(|id| streams.contains_key(&id))).collect()
    }

    /// Hands a signal to this node's streams of the conversation's other members (connected
    /// group members by a read of this node's replica).
    pub fn signal(&self, conversation: ConversationId, sender: UserId, kind: String, payload: String) {
        let users = match (conversation.peer_of(&sender), conversation.group_id()) {
            (Some(peer), _) => vec![peer],
            (None, Some(group)) => {
                let shard = meridian_domain::shard::shard_for(conversation.as_str(), self.node.shard_count());
                let Ok(store) = self.node.store(shard) else { return };
                let Ok(members) = self.connected_members(store, &group) else { return };
                members.into_iter().filter(|u| u != &sender).collect()
            }
            (None, None) => return,
        };
        if !users.is_empty() {
            self.send(&users, Item::Signal { conversation, sender, kind, payload });
        }
    }

    /// Hands one applied event of `shard` to the streams it concerns.
    fn handle(&self, shard: ShardId, event: &Event) -> Result<(), ApiError> {
        let sent = |event: &Event| meridian_domain::projector::sent_message(event).map(|(_, m)| m);
        let store = self.node.store(shard)?;
        let (users, item) = match event {
            Event::MessageSent { conversation, seq, sender, recipient, .. } => {
                // Nothing is read for a conversation no one connected here is in.
                let users = self.connected_of([sender, recipient]);
                if users.is_empty() {
                    return Ok(());
                }
                // Archived already (a tail far behind): the event holds the message as sent.
                let Some(message) = store.message(conversation, *seq)?.or_else(|| sent(event)) else { return Ok(()) };
                (users, Item::Message { conversation: conversation.clone(), message: message_to_wire(&message) })
            }
            Event::GroupMessageSent { group, seq, .. } | Event::TopicMessageSent { group, seq, .. } => {
                let conversation = match event {
                    Event::TopicMessageSent { topic, .. } => ConversationId::topic_stream(group, topic),
                    _ => ConversationId::group(group),
                };
                let users = self.connected_members(store, group)?;
                let in_room = self.rooms.lock().unwrap_or_else(|p| p.into_inner()).contains_key(group);
                if users.is_empty() && !in_room {
                    return Ok(());
                }
                let Some(message) = store.message(&conversation, *seq)?.or_else(|| sent(event)) else { return Ok(()) };
                let message = message_to_wire(&message);
                if in_room {
                    self.send_to_room(
                        group,
                        Item::Message { conversation: conversation.clone(), message: message.clone() },
                    );
                }
                (users, Item::Message { conversation, message })
            }
            Event::MessageRecalled { conversation, seq, by, .. } => {
                let users = match (conversation.c2c_members(), conversation.group_id()) {
                    (Some((a, b)), _) => vec![a, b],
                    (None, Some(group)) => {
                        let item = Item::Recalled { conversation: conversation.clone(), seq: *seq, by: by.clone() };
                        self.send_to_room(&group, item);
                        self.connected_members(store, &group)?
                    }
                    (None, None) => return Ok(()),
                };
                (users, Item::Recalled { conversation: conversation.clone(), seq: *seq, by: by.clone() })
            }
            Event::GroupLiked { group, .. } => {
                let total = store.group(group)?.map_or(0, |g| g.likes);
                self.send_to_room(group, Item::Likes { group: group.clone(), total });
                (self.connected_members(store, group)?, Item::Likes { group: group.clone(), total })
            }
            Event::ConversationJoined { user, conversation, home: None, .. } => {
                (vec![user.clone()], Item::Listed { conversation: conversation.clone() })
            }
            Event::GroupListed { user, group, home: None, .. } => {
                (vec![user.clone()], Item::Listed { conversation: ConversationId::group(group) })
            }
            Event::ConversationJoined { user, conversation, home: Some(region), .. } => {
                (vec![user.clone()], Item::ListedAbroad { conversation: conversation.clone(), region: region.clone() })
            }
            Event::GroupListed { user, group, home: Some(region), .. } => (
                vec![user.clone()],
                Item::ListedAbroad { conversation: ConversationId::group(group), region: region.clone() },
            ),
            Event::ReadMarked { conversation, user, read_seq } => {
                (vec![user.clone()], Item::Read { conversation: conversation.clone(), read_seq: *read_seq })
            }
            _ => return Ok(()),
        };
        self.send(&users, item);
        Ok(())
    }
}

/// The hub as the Raft node's sink of relayed signals (weak: the node outlives no hub).
#[derive(Debug)]
struct SignalsTo(Weak<Hub>);

impl meridian_raft::SignalSink for SignalsTo {
    fn online_of(&self, users: Vec<String>) -> Vec<String> {
        self.0.upgrade().map(|hub| hub.online_of(users)).unwrap_or_default()
    }

    fn signal(&self, signal: meridian_proto::peer::SignalRequest) {
        if let Some(state) = signal.kind.strip_prefix("presence:") {
            if let (Some(hub), Ok(user)) = (self.0.upgrade(), UserId::parse(&signal.sender)) {
                hub.presence_changed(&user, state == "online");
            }
            return;
        }
        let (Some(hub), Ok(conversation), Ok(sender)) =
            (self.0.upgrade(), ConversationId::parse(&signal.conversation_id), UserId::parse(&signal.sender))
        else {
            return;
        };
        hub.signal(conversation, sender, signal.kind, signal.payload);
    }
}

/// Feeds the hub from one shard: after each apply, the events past the last one handed on.
async fn tail(hub: Weak<Hub>, shard: ShardId, mut metrics: tokio::sync::watch::Receiver<meridian_raft::RaftMetrics>) {
    let applied = |m: &tokio::sync::watch::Receiver<meridian_raft::RaftMetrics>| {
        m.borrow().last_applied.as_ref().map_or(0, |l| l.index)
    };
    let start = |index: u64| EventOffset { log_index: index, command: 0, event: 0 };
    let mut next = start(applied(&metrics) + 1);
    while metrics.changed().await.is_ok() {
        let Some(hub) = hub.upgrade() else { return };
        let upto = applied(&metrics);
        if next.log_index > upto {
            continue;
        }
        if hub.idle() {
            next = start(upto + 1);
            continue;
        }
        loop {
            let events =
                match hub.node.store(shard).map_err(ApiError::from).and_then(|s| Ok(s.events(next, READ_BATCH)?)) {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(shard = shard.0, error = %e, "delivery: the event log could not be read");
                        break;
                    }
                };
            let read = events.len();
            for logged in events.into_iter().take_while(|e| e.offset.log_index <= upto) {
                if let Err(e) = hub.handle(shard, &logged.event) {
                    tracing::warn!(shard = shard.0, error = %e, "delivery: an event could not be handed on");
                }
                next = logged.offset.next();
            }
            if read < READ_BATCH || next.log_index > upto {
                break;
            }
        }
        // Every event up to `upto` is handed on (entries without events included).
        if next.log_index <= upto {
            next = start(upto + 1);
        }
    }
}

pub use meridian_proto::sync_token::Known;

/// Decodes a sync token (empty: nothing known), its conversation ids checked.
pub fn decode_token(token: &str) -> Result<Known, ApiError> {
    let bad = |why: String| {
        ApiError::from(Rejection::new(
            Reason::SyncTokenInvalid,
            format!("the sync token does not decode ({why}): subscribe without one for a full catch-up"),
        ))
    };
    let known = meridian_proto::sync_token::decode(token).map_err(bad)?;
    for conversation in known.keys() {
        ConversationId::parse(conversation).map_err(|e| bad(e.to_string()))?;
    }
    Ok(known)
}

/// The event that says where `conversation` belongs: its peer (seen from `me`), or its
/// group and topic.
pub fn event_for(kind: &str, me: &UserId, conversation: &ConversationId) -> api::SubscribeEvent {
    api::SubscribeEvent {
        r#type: kind.to_owned(),
        conversation_id: conversation.to_string(),
        peer: conversation.peer_of(me).map(|p| p.to_string()).unwrap_or_default(),
        group_id: conversation.group_id().map(|g| g.to_string()).unwrap_or_default(),
        topic: conversation.topic().map(|t| t.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}
