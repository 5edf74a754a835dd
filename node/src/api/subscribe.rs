//! `Chat/Subscribe`: a device's live stream (see [`crate::delivery`] for how events reach it).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_domain::{ConversationId, Reason, Rejection, UserId};
use meridian_proto::api;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::chat::ChatService;
use super::error::ApiError;
use crate::delivery::{decode_token, event_for, Item, Known, CATCH_UP_MESSAGES};

/// Events queued towards one client connection.
const OUTGOING: usize = 256;

type Outgoing = mpsc::Sender<Result<api::SubscribeEvent, Status>>;

/// Why a stream stopped: the client left, or something failed (sent to the client).
enum Stop {
    Gone,
    Failed(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Failed(e)
    }
}

impl ChatService {
    pub(super) async fn subscribe_(
        &self,
        req: Request<api::SubscribeRequest>,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<api::SubscribeEvent, Status>>, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return Err(Rejection::new(
                Reason::RegionNotServed,
                format!("{me} lives in region {home}: subscribe at a node of region {home}"),
            )
            .into());
        }
        self.ctx.require_user(&me).await?;
        let mut known = decode_token(&req.get_ref().sync_token)?;
        let rooms = self.live_rooms(&me, &req.get_ref().rooms).await?;
        // Registered before the catch-up reads anything: what is applied meanwhile is queued,
        // and the seqs kept per conversation drop what the catch-up already sent.
        let mut registration = self.ctx.delivery.register(&me);
        if !rooms.is_empty() {
            registration.enter_rooms(rooms.clone());
            // A room is followed from its newest message on (after the registration, so that
            // nothing applied in between is missed; after a read barrier, so that a message
            // acknowledged before the call is not new to a replica still applying it).
            for room in &rooms {
                let stream = ConversationId::group(room);
                let shard = self.ctx.topology.conversation_shard(&stream);
                self.ctx.node.read_barrier(shard).await?;
                let store = self.ctx.node.store(shard)?;
                known.insert(stream.to_string(), store.conversation(&stream)?.map_or(0, |h| h.last_seq.0));
            }
        }
        let (tx, rx) = mpsc::channel(OUTGOING);
        let service = self.clone();
        let metadata = req.metadata().clone();
        tokio::spawn(async move {
            let mut stream = Stream { service, me, known, metadata, tx, watch: false, abroad: Abroad::new() };
            match stream.run(registration).await {
                Stop::Gone => {}
                Stop::Failed(e) => {
                    let _ = stream.tx.send(Err(e.into())).await;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Most live rooms one stream listens to.
const MAX_ROOMS: usize = 10;

impl ChatService {
    /// The live rooms a stream asks for, checked: at most [`MAX_ROOMS`], each a live room of
    /// this region that has not banned the caller (read after a barrier: a ban acknowledged
    /// before the call holds on every node).
    async fn live_rooms(&self, me: &UserId, rooms: &[String]) -> Result<Vec<meridian_domain::GroupId>, ApiError> {
        if rooms.len() > MAX_ROOMS {
            return Err(Rejection::new(
                Reason::PageLimitInvalid,
                format!("a stream listens to at most {MAX_ROOMS} live rooms, not {}", rooms.len()),
            )
            .into());
        }
        let mut out = vec![];
        for room in rooms {
            let group = meridian_domain::GroupId::parse(room)?;
            let shard = self.ctx.topology.conversation_shard(&ConversationId::group(&group));
            self.ctx.node.read_barrier(shard).await?;
            let store = self.ctx.node.store(shard)?;
            let record = store.group(&group)?.filter(|g| !g.dismissed).ok_or_else(|| {
                ApiError::from(Rejection::new(
                    Reason::GroupNotFound,
                    format!("no live room {group} in this region (a room is listened to in its own region)"),
                ))
            })?;
            if record.kind.keeps_members() {
                return Err(Rejection::new(
                    Reason::PermissionDenied,
                    format!(
                        "{group} is a {:?} group, not a live room: its members get its messages anyway",
                        record.kind
                    ),
                )
                .into());
            }
            if store.group_ban(&group, me)?.is_some_and(|until| until.0 > crate::api::now_unix() * 1000) {
                return Err(
                    Rejection::new(Reason::MemberBanned, format!("{me} is banned from live room {group}")).into()
                );
            }
            if !out.contains(&group) {
                out.push(group);
            }
        }
        Ok(out)
    }
}

/// Most conversations one `Link/Watch` names.
const MAX_WATCHED: usize = 10_000;

/// `Link/Watch` (called by the user's home region): the live events of `user` that this
/// region applies, for the user's streams at home. The stream is registered in this node's
/// hub under the user, so it gets what a local stream of theirs would: messages, recalls and
/// signals of conversations and groups homed here.
pub fn watch(
    ctx: &crate::api::Context,
    req: meridian_proto::link::WatchRequest,
) -> Result<tokio_stream::wrappers::ReceiverStream<Result<api::SubscribeEvent, Status>>, ApiError> {
    let me = UserId::parse(&req.user)?;
    if req.known.len() > MAX_WATCHED {
        return Err(Rejection::new(
            Reason::PageLimitInvalid,
            format!("a watch names at most {MAX_WATCHED} conversations, not {}", req.known.len()),
        )
        .into());
    }
    let mut known = Known::new();
    for w in req.known {
        // One not homed here has no head here: nothing is sent for it. A one-to-one
        // conversation of two other users is not the user's to watch: dropped.
        let conversation = ConversationId::parse(&w.conversation_id)?;
        if conversation.c2c_members().is_some_and(|(a, b)| a != me && b != me) {
            continue;
        }
        known.insert(conversation.to_string(), w.seq);
    }
    let registration = ctx.delivery.register(&me);
    let (tx, rx) = mpsc::channel(OUTGOING);
    let service = ChatService::new(ctx.clone());
    tokio::spawn(async move {
        let metadata = tonic::metadata::MetadataMap::new();
        let mut stream = Stream { service, me, known, metadata, tx, watch: true, abroad: Abroad::new() };
        if let Stop::Failed(e) = stream.run(registration).await {
            let _ = stream.tx.send(Err(e.into())).await;
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A home stream's watches of the other regions that hold conversations or groups of its
/// user (`Link/Watch`, one per region), and the events they bring.
struct Abroad {
    events: mpsc::Receiver<api::SubscribeEvent>,
    sender: mpsc::Sender<api::SubscribeEvent>,
    watching: std::collections::BTreeSet<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Abroad {
    fn new() -> Abroad {
        let (sender, events) = mpsc::channel(OUTGOING);
        Abroad { events, sender, watching: Default::default(), tasks: vec![] }
    }
}

impl Drop for Abroad {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keeps a watch of `user`'s events in `region` open, from the seqs in `known` on, handing
/// each event to `sender`, until the home stream is gone; reopens it (with the seqs it has
/// handed on) when the link breaks.
async fn keep_watching(
    geo: Arc<crate::geo::Geo>,
    region: meridian_domain::RegionCode,
    user: UserId,
    mut known: Known,
    sender: mpsc::Sender<api::SubscribeEvent>,
) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        // At most MAX_WATCHED conversations are named (the region refuses more); the others
        // still come live (the watch is routed by user) and their gaps are filled by the
        // watched region from its replica when their next message arrives.
        let request = meridian_proto::link::WatchRequest {
            user: user.to_string(),
            known: known
                .iter()
                .take(MAX_WATCHED)
                .map(|(c, s)| meridian_proto::link::WatchedConversation { conversation_id: c.clone(), seq: *s })
                .collect(),
        };
        match geo.watch(&region, request).await {
            Ok(mut events) => loop {
                match events.message().await {
                    Ok(Some(event)) => {
                        backoff = std::time::Duration::from_millis(200);
                        if event.r#type == "message" {
                            let slot = known.entry(event.conversation_id.clone()).or_default();
                            *slot = (*slot).max(event.seq);
                        } else if event.r#type == "fetch" {
                            let slot = known.entry(event.conversation_id.clone()).or_default();
                            *slot = (*slot).max(event.fetch_to);
                        }
                        if sender.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%region, error = %status, "a watch of another region broke: reopening");
                        break;
                    }
                }
            },
            Err(e) => tracing::debug!(%region, error = %e, "a watch of another region failed: retrying"),
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Longest signal kind and payload, in bytes.
const MAX_SIGNAL_KIND: usize = 32;
const MAX_SIGNAL_PAYLOAD: usize = 1024;

impl ChatService {
    /// An online-only signal (MSG-07) to the other members' connected devices: this node's
    /// streams, and every other node of the region by relay. Nothing is stored.
    pub(super) async fn signal_(&self, req: Request<api::SignalRequest>) -> Result<api::SignalResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let body = req.get_ref();
        if body.kind.is_empty() || body.kind.len() > MAX_SIGNAL_KIND || body.payload.len() > MAX_SIGNAL_PAYLOAD {
            return Err(Rejection::new(
                Reason::ElementInvalid,
                format!("a signal has a kind of 1..={MAX_SIGNAL_KIND} bytes and at most {MAX_SIGNAL_PAYLOAD} bytes of payload"),
            )
            .into());
        }
        let conversation = if body.group_id.is_empty() {
            let peer = UserId::parse(&body.to)?;
            if peer == me {
                return Err(Rejection::new(Reason::PeerIsSelf, "a signal goes to someone else").into());
            }
            // The peer's streams are served in the peer's region.
            if let Some(home) = self.home_elsewhere(&peer).await? {
                return self.ctx.geo()?.forward(&home, "Chat/Signal", &req).await;
            }
            self.ctx.require_user(&peer).await?;
            ConversationId::c2c(&me, &peer)
        } else {
            let group = meridian_domain::GroupId::parse(&body.group_id)?;
            let stream = if body.topic.is_empty() {
                ConversationId::group(&group)
            } else {
                ConversationId::topic_stream(&group, &meridian_domain::TopicId::parse(&body.topic)?)
            };
            let store = self.ctx.node.store(self.ctx.topology.conversation_shard(&stream))?;
            if store.group_member(&group, &me)?.is_none() {
                return Err(
                    Rejection::new(Reason::NotGroupMember, format!("{me} is not a member of group {group}")).into()
                );
            }
            stream
        };
        let (kind, payload) = (body.kind.clone(), body.payload.clone());
        self.ctx.node.relay_signal(meridian_proto::peer::SignalRequest {
            conversation_id: conversation.to_string(),
            sender: me.to_string(),
            kind: kind.clone(),
            payload: payload.clone(),
        });
        self.ctx.delivery.signal(conversation, me, kind, payload);
        Ok(api::SignalResponse {})
    }
}

/// Most users one presence call asks about.
const MAX_PRESENCE_USERS: usize = 100;

impl ChatService {
    /// Presence (REL-06): whether each of the users has a live stream on any node of the
    /// region (this node's streams, and every other node asked).
    pub(super) async fn get_presence_(
        &self,
        req: Request<api::GetPresenceRequest>,
    ) -> Result<api::GetPresenceResponse, ApiError> {
        self.ctx.caller(&req)?;
        let asked = &req.get_ref().users;
        if asked.len() > MAX_PRESENCE_USERS {
            return Err(Rejection::new(
                Reason::PageLimitInvalid,
                format!("at most {MAX_PRESENCE_USERS} users a presence call"),
            )
            .into());
        }
        let users = asked.iter().map(|u| UserId::parse(u).map(|u| u.to_string())).collect::<Result<Vec<_>, _>>()?;
        let mut online: std::collections::BTreeSet<String> =
            self.ctx.delivery.online_of(users.clone()).into_iter().collect();
        online.extend(self.ctx.node.presence_elsewhere(&users).await);
        Ok(api::GetPresenceResponse {
            users: users.into_iter().map(|u| api::UserPresence { online: online.contains(&u), user: u }).collect(),
        })
    }
}

struct Stream {
    service: ChatService,
    me: UserId,
    /// Per conversation, the newest seq sent (or known to the device from its token).
    known: Known,
    /// The subscribe request's metadata (its credentials), for the reads made on its behalf.
    metadata: tonic::metadata::MetadataMap,
    tx: Outgoing,
    /// A `Link/Watch` stream: serves a user homed in another region, for the conversations
    /// and groups homed here (its catch-up reads their heads here, not the user's list).
    watch: bool,
    /// Watches of the other regions that home conversations of the user (home streams).
    abroad: Abroad,
}

impl Stream {
    async fn run(&mut self, mut registration: crate::delivery::Registration) -> Stop {
        if let Err(stop) = self.catch_up().await {
            return stop;
        }
        let caught_up = api::SubscribeEvent {
            r#type: "caught_up".into(),
            sync_token: meridian_proto::sync_token::encode(&self.known),
            ..Default::default()
        };
        if let Err(stop) = self.emit(caught_up).await {
            return stop;
        }
        loop {
            tokio::select! {
                Some(event) = self.abroad.events.recv() => {
                    if let Err(stop) = self.pass_on_abroad(event).await {
                        return stop;
                    }
                }
                item = registration.rx.recv() => match item {
                    Some(item) => {
                        if let Err(stop) = self.deliver(&item).await {
                            return stop;
                        }
                    }
                    None => return Stop::Gone,
                },
                _ = registration.wake.notified() => {}
                _ = self.tx.closed() => return Stop::Gone,
            }
            if registration.behind.swap(false, Ordering::AcqRel) {
                // The queue overflowed: what is still in it is older than what a catch-up
                // reads now, and the seqs drop whatever repeats.
                tracing::debug!(user = %self.me, "a stream fell behind: catching up");
                if let Err(stop) = self.catch_up().await {
                    return stop;
                }
            }
        }
    }

    /// An event a watch of another region brought: a message once, past what the device
    /// has (the watch sends a conversation's messages in seq order from the seqs it was given).
    async fn pass_on_abroad(&mut self, event: api::SubscribeEvent) -> Result<(), Stop> {
        match event.r#type.as_str() {
            "caught_up" => Ok(()),
            "message" => {
                let have = self.known.get(&event.conversation_id).copied().unwrap_or(0);
                if event.seq <= have {
                    return Ok(());
                }
                self.known.insert(event.conversation_id.clone(), event.seq);
                self.emit(event).await
            }
            "fetch" => {
                let have = self.known.get(&event.conversation_id).copied().unwrap_or(0);
                if event.fetch_to <= have {
                    return Ok(());
                }
                self.known.insert(event.conversation_id.clone(), event.fetch_to);
                self.emit(event).await
            }
            _ => self.emit(event).await,
        }
    }

    /// Opens a watch of `region` for the user's conversations homed there (home streams of
    /// a deployment of several regions), unless one is open.
    fn watch_abroad(&mut self, region: &str, conversations: &[String]) {
        if self.watch || self.abroad.watching.contains(region) {
            return;
        }
        let (Some(geo), Ok(code)) = (self.service.ctx.geo.clone(), meridian_domain::RegionCode::parse(region)) else {
            return;
        };
        let known: Known = conversations.iter().map(|c| (c.clone(), self.known.get(c).copied().unwrap_or(0))).collect();
        self.abroad.watching.insert(region.to_owned());
        let task = tokio::spawn(keep_watching(geo, code, self.me.clone(), known, self.abroad.sender.clone()));
        self.abroad.tasks.push(task);
    }

    /// The catch-up of a watch: the messages of its conversations past the seqs it was
    /// given, from this node's replica.
    async fn catch_up_watched(&mut self) -> Result<(), Stop> {
        let conversations: Vec<String> = self.known.keys().cloned().collect();
        for id in conversations {
            let conversation = ConversationId::parse(&id).map_err(ApiError::from)?;
            let store = self.service.ctx.node.store(self.service.ctx.topology.conversation_shard(&conversation));
            let head = store.map_err(ApiError::from)?.conversation(&conversation).map_err(ApiError::from)?;
            let (have, upto) = (self.known.get(&id).copied().unwrap_or(0), head.map_or(0, |h| h.last_seq.0));
            if upto > have {
                self.send_range(&conversation, have, upto).await?;
            }
        }
        Ok(())
    }

    async fn emit(&self, event: api::SubscribeEvent) -> Result<(), Stop> {
        self.tx.send(Ok(event)).await.map_err(|_| Stop::Gone)
    }

    /// Every conversation of the caller's list with messages past what the device has: those
    /// messages (at most [`CATCH_UP_MESSAGES`] a conversation, a `fetch` hint for older ones).
    async fn catch_up(&mut self) -> Result<(), Stop> {
        if self.watch {
            return self.catch_up_watched().await;
        }
        let here = self.service.ctx.topology.region().to_string();
        let mut abroad: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut page_token = String::new();
        loop {
            let mut request = Request::new(api::ListConversationsRequest {
                limit: 200,
                page_token: page_token.clone(),
                consistency: api::ReadConsistency::Linearizable.into(),
            });
            *request.metadata_mut() = self.metadata.clone();
            let (page, _) = self.service.conversations(request).await?;
            for row in page.conversations {
                if !row.home_region.is_empty() && row.home_region != here {
                    abroad.entry(row.home_region.clone()).or_default().push(row.conversation_id.clone());
                }
                let have = self.known.get(&row.conversation_id).copied().unwrap_or(0);
                if row.home_unavailable || row.last_seq <= have {
                    continue;
                }
                let conversation = ConversationId::parse(&row.conversation_id).map_err(ApiError::from)?;
                if !row.home_region.is_empty() && row.home_region != here {
                    let mut hint = event_for("fetch", &self.me, &conversation);
                    (hint.fetch_from, hint.fetch_to, hint.home_region) = (have + 1, row.last_seq, row.home_region);
                    self.emit(hint).await?;
                    self.known.insert(row.conversation_id, row.last_seq);
                    continue;
                }
                self.send_range(&conversation, have, row.last_seq).await?;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // Live from here on: what the other regions apply comes through their watches.
        for (region, conversations) in abroad {
            self.watch_abroad(&region, &conversations);
        }
        Ok(())
    }

    /// Sends messages `have+1..=upto` of a conversation homed here (a `fetch` hint for all
    /// but the newest [`CATCH_UP_MESSAGES`]), read from this node's replica as the caller
    /// sees them.
    async fn send_range(&mut self, conversation: &ConversationId, have: u64, upto: u64) -> Result<(), Stop> {
        // A member of a group that hides earlier history from newcomers reads from their
        // joining on.
        // Not (yet, on this replica) a member: nothing to send, nothing learnt.
        let Some(first_visible) = self.first_visible(conversation)? else { return Ok(()) };
        let mut from = (have + 1).max(first_visible);
        if from > upto {
            self.known.insert(conversation.to_string(), upto);
            return Ok(());
        }
        let have = from - 1;
        if upto - have > CATCH_UP_MESSAGES {
            let mut hint = event_for("fetch", &self.me, conversation);
            (hint.fetch_from, hint.fetch_to) = (from, upto - CATCH_UP_MESSAGES);
            self.emit(hint).await?;
            from = upto - CATCH_UP_MESSAGES + 1;
        }
        let shard = self.service.ctx.topology.conversation_shard(conversation);
        while from <= upto {
            let body = api::GetHistoryRequest {
                start_seq: from,
                limit: (upto - from + 1).min(100) as u32,
                direction: api::Direction::Forward.into(),
                consistency: api::ReadConsistency::Local.into(),
                ..Default::default()
            };
            let page = self.service.read_page(conversation, shard, &self.me, body).await?;
            for message in page.messages.into_iter().filter(|m| m.seq <= upto) {
                let seq = message.seq;
                let mut event = event_for("message", &self.me, conversation);
                (event.seq, event.message) = (seq, Some(message));
                self.emit(event).await?;
            }
            // Seqs the caller removed from their view are skipped, not waited for.
            if page.next_seq == 0 || page.next_seq > upto {
                break;
            }
            from = page.next_seq;
        }
        self.known.insert(conversation.to_string(), upto);
        Ok(())
    }

    /// The first seq of `conversation` the caller may read (1 but in a group that hides its
    /// history from members who joined later); `None` in a group this node's replica does
    /// not (yet) list the caller in.
    fn first_visible(&self, conversation: &ConversationId) -> Result<Option<u64>, ApiError> {
        let Some(group) = conversation.group_id() else { return Ok(Some(1)) };
        let store = self.service.ctx.node.store(self.service.ctx.topology.conversation_shard(conversation))?;
        Ok(store.group_member(&group, &self.me)?.map(|m| m.visible_from.0.max(1)))
    }

    async fn deliver(&mut self, item: &Arc<Item>) -> Result<(), Stop> {
        match item.as_ref() {
            Item::Message { conversation, message } => {
                let have = self.known.get(conversation.as_str()).copied().unwrap_or(0);
                if message.seq <= have {
                    return Ok(());
                }
                if message.seq > have + 1 {
                    // A gap (a stream that caught up before these were listed, or a
                    // conversation new to this device): sent from this node's replica first.
                    self.send_range(conversation, have, message.seq - 1).await?;
                }
                let mut event = event_for("message", &self.me, conversation);
                (event.seq, event.message) = (message.seq, Some(message.clone()));
                self.emit(event).await?;
                self.known.insert(conversation.to_string(), message.seq);
            }
            Item::Recalled { conversation, seq, by } => {
                let mut event = event_for("recalled", &self.me, conversation);
                (event.seq, event.by) = (seq.0, by.to_string());
                self.emit(event).await?;
            }
            Item::Listed { conversation } => {
                let have = self.known.get(conversation.as_str()).copied().unwrap_or(0);
                let shard = self.service.ctx.topology.conversation_shard(conversation);
                let last = self
                    .service
                    .ctx
                    .node
                    .store(shard)
                    .map_err(ApiError::from)?
                    .conversation(conversation)
                    .map_err(ApiError::from)?;
                let last_seq = last.map_or(0, |h| h.last_seq.0);
                if last_seq > have {
                    self.send_range(conversation, have, last_seq).await?;
                }
            }
            Item::ListedAbroad { conversation, region } => {
                self.watch_abroad(region.as_str(), std::slice::from_ref(&conversation.to_string()));
            }
            Item::Likes { group, total } => {
                let mut event = event_for("likes", &self.me, &ConversationId::group(group));
                event.likes = *total;
                self.emit(event).await?;
            }
            Item::Presence { user, online } => {
                let event = api::SubscribeEvent {
                    r#type: "presence".into(),
                    by: user.to_string(),
                    signal_kind: if *online { "online" } else { "offline" }.into(),
                    ..Default::default()
                };
                self.emit(event).await?;
            }
            Item::Signal { conversation, sender, kind, payload } => {
                let mut event = event_for("signal", &self.me, conversation);
                (event.by, event.signal_kind, event.signal_payload) =
                    (sender.to_string(), kind.clone(), payload.clone());
                self.emit(event).await?;
            }
            Item::Read { conversation, read_seq } => {
                let mut event = event_for("read", &self.me, conversation);
                event.read_seq = read_seq.0;
                self.emit(event).await?;
            }
        }
        Ok(())
    }
}
