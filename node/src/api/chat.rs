//! The `Chat` service: one-to-one send, history, recall, conversations, read cursors.

use std::collections::BTreeSet;

use meridian_domain::apply::Reply;
use meridian_domain::element::validate_body;
use meridian_domain::{Command, ConversationId, Reason, RegionCode, Rejection, RequestId, Seq, ShardId, UserId};
use meridian_proto::api::{self, chat_server::Chat};
use meridian_storage::codec::encoded_body_len;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::wire::{element_from_wire, message_to_wire};
use super::Context;

const DEFAULT_HISTORY_PAGE: u32 = 20;
const DEFAULT_CONVERSATION_PAGE: u32 = 50;
const MAX_CONVERSATION_PAGE: u32 = 200;

#[derive(Debug, Clone)]
pub struct ChatService {
    pub(super) ctx: Context,
}

impl ChatService {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    /// Proposes one command and returns its reply, or its rejection as an error.
    pub(super) async fn propose_one(&self, shard: ShardId, command: Command) -> Result<Reply, ApiError> {
        let mut results = self.ctx.node.propose(shard, &[command]).await?;
        match results.pop() {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(rejection)) => Err(rejection.into()),
            None => Err(ApiError::Internal("a proposal returned no result".into())),
        }
    }

    /// The caller and the C2C conversation with `peer`.
    fn conversation_with<T>(&self, req: &Request<T>, peer: &str) -> Result<(UserId, UserId, ConversationId), ApiError> {
        let me = self.ctx.caller(req)?;
        let peer = UserId::parse(peer)?;
        if peer == me {
            return Err(Rejection::new(
                Reason::PeerIsSelf,
                "a one-to-one conversation needs a peer other than yourself",
            )
            .into());
        }
        let conversation = ConversationId::c2c(&me, &peer);
        Ok((me, peer, conversation))
    }

    /// Where a one-to-one conversation lives, with more than one region: both members' home
    /// regions and the conversation's, by the residency rule. `None` in a single region.
    pub(super) async fn c2c_homes(&self, me: &UserId, peer: &UserId) -> Result<Option<C2cHomes>, ApiError> {
        let Some(geo) = &self.ctx.geo else { return Ok(None) };
        let (me_home, peer_home) = futures::future::try_join(geo.require_home(me), geo.require_home(peer)).await?;
        let conversation = geo.conversation_home((me, &me_home), (peer, &peer_home))?;
        Ok(Some(C2cHomes { me: me_home, peer: peer_home, conversation }))
    }

    /// The region to forward a request about this conversation to, if not this one.
    fn elsewhere(&self, homes: &Option<C2cHomes>) -> Option<RegionCode> {
        homes.as_ref().map(|h| &h.conversation).filter(|c| *c != self.ctx.topology.region()).cloned()
    }

    /// A member's home region as a send records it: `None` when it is this region.
    pub(super) fn abroad(&self, home: Option<&RegionCode>) -> Option<RegionCode> {
        home.filter(|h| *h != self.ctx.topology.region()).cloned()
    }

    pub(super) async fn barrier_if(&self, linearizable: bool, shard: ShardId) -> Result<(), ApiError> {
        if linearizable {
            self.ctx.node.read_barrier(shard).await?;
        }
        Ok(())
    }

    async fn send(&self, req: Request<api::SendMessageRequest>) -> Result<Homed<api::SendMessageResponse>, ApiError> {
        if !req.get_ref().group_id.is_empty() {
            return self.group_send(req).await;
        }
        let (me, peer, conversation) = self.conversation_with(&req, &req.get_ref().to)?;
        let homes = self.c2c_homes(&me, &peer).await?;
        if let Some(region) = self.elsewhere(&homes) {
            let response = self.ctx.geo()?.forward(&region, "Chat/SendMessage", &req).await?;
            return Ok((response, Some(region)));
        }
        let home = homes.as_ref().map(|h| h.conversation.clone());
        let body = req.into_inner();
        let elements = body.elements.into_iter().map(element_from_wire).collect::<Result<Vec<_>, _>>()?;
        validate_body(&elements, encoded_body_len(&elements), self.ctx.limits.max_message_bytes)?;
        // Every send carries a request id so that the node's own retries (across a leader
        // change) can never duplicate it; clients should send their own to cover theirs.
        let request_id = if body.request_id.is_empty() {
            RequestId::parse(&format!("auto-{:032x}", rand::random::<u128>()))?
        } else {
            RequestId::parse(&body.request_id)?
        };
        // Members homed here must have their account here; one homed elsewhere was found in
        // the directory.
        let (sender_home, recipient_home) = match &homes {
            Some(h) => (self.abroad(Some(&h.me)), self.abroad(Some(&h.peer))),
            None => (None, None),
        };
        if sender_home.is_none() {
            self.ctx.require_user(&me).await?;
        }
        if recipient_home.is_none() {
            self.ctx.require_user(&peer).await?;
        }
        let friends_only = self.friends_only(&peer, recipient_home.is_none())?;
        let elements = self
            .ctx
            .hooks
            .before_send(
                serde_json::json!({"from": me.as_str(), "to": peer.as_str(), "conversation_id": conversation.as_str()}),
                elements,
            )
            .await?;
        validate_body(&elements, encoded_body_len(&elements), self.ctx.limits.max_message_bytes)?;
        let shard = self.ctx.topology.conversation_shard(&conversation);
        let command = Command::SendMessage {
            sender: me,
            recipient: peer,
            elements,
            request_id: Some(request_id),
            sender_home,
            recipient_home,
            friends_only,
        };
        match self.propose_one(shard, command).await? {
            Reply::MessageAccepted { message_id, seq, time, conversation, duplicate } => Ok((
                api::SendMessageResponse {
                    message_id: message_id.to_string(),
                    seq: seq.0,
                    server_time_ms: time.0,
                    conversation_id: conversation.to_string(),
                    duplicate,
                },
                home,
            )),
            other => Err(ApiError::Internal(format!("unexpected reply to a send: {other:?}"))),
        }
    }

    async fn history(&self, req: Request<api::GetHistoryRequest>) -> Result<Homed<api::GetHistoryResponse>, ApiError> {
        if !req.get_ref().group_id.is_empty() {
            return self.group_history(req).await;
        }
        let (me, peer, conversation) = self.conversation_with(&req, &req.get_ref().peer)?;
        let homes = self.c2c_homes(&me, &peer).await?;
        if let Some(region) = self.elsewhere(&homes) {
            let response = self.ctx.geo()?.forward(&region, "Chat/GetHistory", &req).await?;
            return Ok((response, Some(region)));
        }
        let home = homes.as_ref().map(|h| h.conversation.clone());
        if homes.is_none() {
            self.ctx.require_account(&peer, true).await?;
        }
        let shard = self.ctx.topology.conversation_shard(&conversation);
        Ok((self.read_page(&conversation, shard, &me, req.into_inner()).await?, home))
    }

    /// One page of a stream (a conversation's or a group's) on `shard`, as `body` asks and as
    /// `viewer` sees it: without what they cleared or deleted for themselves (MSG-09). The
    /// seqs of those stay taken, so a page may skip seqs the viewer removed.
    pub(super) async fn read_page(
        &self,
        conversation: &ConversationId,
        shard: ShardId,
        viewer: &UserId,
        mut body: api::GetHistoryRequest,
    ) -> Result<api::GetHistoryResponse, ApiError> {
        let max = self.ctx.limits.max_history_page;
        let limit = match body.limit {
            0 => DEFAULT_HISTORY_PAGE.min(max),
            n if n > max => {
                return Err(Rejection::new(
                    Reason::PageLimitInvalid,
                    format!("limit {n} is over the page maximum {max}"),
                )
                .into())
            }
            n => n,
        };
        let linearizable = body.consistency() == api::ReadConsistency::Linearizable;
        self.barrier_if(linearizable, shard).await?;
        let store = self.ctx.node.store(shard)?;
        let last_seq = store.conversation(conversation)?.map_or(Seq::ZERO, |h| h.last_seq);
        let view = store.history_view(conversation, viewer)?;
        let cleared = view.cleared_up_to.0;
        let forward = body.direction() == api::Direction::Forward;
        if cleared > 0 && forward && body.start_seq <= cleared && body.start_seq <= last_seq.0 {
            if cleared >= last_seq.0 {
                return Ok(api::GetHistoryResponse {
                    conversation_id: conversation.to_string(),
                    messages: vec![],
                    last_seq: last_seq.0,
                    next_seq: 0,
                });
            }
            body.start_seq = cleared + 1;
        }
        if body.start_seq > last_seq.0 && body.start_seq > 1 {
            return Err(Rejection::new(
                Reason::SeqOutOfRange,
                format!("start seq {} is past the newest message ({last_seq})", body.start_seq),
            )
            .into());
        }
        let start = match (body.start_seq, forward) {
            (0, true) => Seq(1),
            (0, false) => last_seq,
            (s, _) => Seq(s),
        };
        let messages = if last_seq == Seq::ZERO {
            vec![]
        } else {
            let hot = store.messages(conversation, start, limit as usize, forward)?;
            let page = (start, limit as usize, forward);
            crate::archive::history_page(self.ctx.archive.as_deref(), store, conversation, page, hot).await?
        };
        let next_seq = match messages.last() {
            Some(m) if messages.len() == limit as usize => {
                if forward && m.seq < last_seq {
                    m.seq.0 + 1
                } else if !forward && m.seq.0 > 1 {
                    m.seq.0 - 1
                } else {
                    0
                }
            }
            _ => 0,
        };
        let next_seq = if !forward && next_seq <= cleared { 0 } else { next_seq };
        Ok(api::GetHistoryResponse {
            conversation_id: conversation.to_string(),
            messages: messages.iter().filter(|m| !view.hides(m.seq)).map(message_to_wire).collect(),
            last_seq: last_seq.0,
            next_seq,
        })
    }

    async fn recall(
        &self,
        req: Request<api::RecallMessageRequest>,
    ) -> Result<Homed<api::RecallMessageResponse>, ApiError> {
        if !req.get_ref().group_id.is_empty() {
            return self.group_recall(req).await;
        }
        let (me, peer, conversation) = self.conversation_with(&req, &req.get_ref().peer)?;
        let homes = self.c2c_homes(&me, &peer).await?;
        if let Some(region) = self.elsewhere(&homes) {
            let response = self.ctx.geo()?.forward(&region, "Chat/RecallMessage", &req).await?;
            return Ok((response, Some(region)));
        }
        let home = homes.map(|h| h.conversation);
        let seq = Seq(req.get_ref().seq);
        let shard = self.ctx.topology.conversation_shard(&conversation);
        let window_ms = self.ctx.limits.recall_window_seconds.saturating_mul(1000);
        let command = Command::RecallMessage { actor: me, conversation, seq, window_ms };
        match self.propose_one(shard, command).await? {
            Reply::MessageRecalled { seq, at } => {
                Ok((api::RecallMessageResponse { seq: seq.0, recalled_at_ms: at.0 }, home))
            }
            other => Err(ApiError::Internal(format!("unexpected reply to a recall: {other:?}"))),
        }
    }

    async fn mark_read(&self, req: Request<api::MarkReadRequest>) -> Result<Homed<api::MarkReadResponse>, ApiError> {
        if !req.get_ref().group_id.is_empty() {
            return self.group_mark_read(req).await;
        }
        let (me, peer, conversation) = self.conversation_with(&req, &req.get_ref().peer)?;
        let homes = self.c2c_homes(&me, &peer).await?;
        if let Some(region) = self.elsewhere(&homes) {
            let response = self.ctx.geo()?.forward(&region, "Chat/MarkRead", &req).await?;
            return Ok((response, Some(region)));
        }
        let home = homes.map(|h| h.conversation);
        let seq = req.get_ref().seq;
        let shard = self.ctx.topology.conversation_shard(&conversation);
        let command = Command::MarkRead { user: me, conversation, up_to: (seq != 0).then_some(Seq(seq)) };
        match self.propose_one(shard, command).await? {
            Reply::ReadMarked { read_seq, unread } => {
                Ok((api::MarkReadResponse { read_seq: read_seq.0, unread }, home))
            }
            other => Err(ApiError::Internal(format!("unexpected reply to mark-read: {other:?}"))),
        }
    }

    pub(super) async fn conversations(
        &self,
        req: Request<api::ListConversationsRequest>,
    ) -> Result<Homed<api::ListConversationsResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let mut home = None;
        if let Some(geo) = &self.ctx.geo {
            let region = geo.require_home(&me).await?;
            if &region != self.ctx.topology.region() {
                let response = geo.forward(&region, "Chat/ListConversations", &req).await?;
                return Ok((response, Some(region)));
            }
            home = Some(region);
        }
        let body = req.into_inner();
        let limit = match body.limit {
            0 => DEFAULT_CONVERSATION_PAGE,
            n if n > MAX_CONVERSATION_PAGE => {
                return Err(Rejection::new(
                    Reason::PageLimitInvalid,
                    format!("limit {n} is over the page maximum {MAX_CONVERSATION_PAGE}"),
                )
                .into())
            }
            n => n,
        } as usize;
        let linearizable = body.consistency() == api::ReadConsistency::Linearizable;
        let user_shard = self.ctx.topology.user_shard(&me);
        self.barrier_if(linearizable, user_shard).await?;
        let all_refs = self.ctx.node.store(user_shard)?.conversation_refs(&me)?;
        // Conversations homed in other regions: their heads are read through the region link.
        let here = self.ctx.topology.region();
        // Per region, the rows of conversations and groups homed there, as the list shows them
        // when the region cannot be read.
        let mut abroad: std::collections::BTreeMap<RegionCode, Vec<api::Conversation>> = Default::default();
        let mut refs = Vec::with_capacity(all_refs.len());
        for r in all_refs {
            match r.home.clone().filter(|h| h != here) {
                Some(home) => abroad.entry(home.clone()).or_default().push(api::Conversation {
                    conversation_id: r.conversation.to_string(),
                    peer: r.peer.to_string(),
                    last_time_ms: r.joined.0,
                    home_region: home.to_string(),
                    home_unavailable: true,
                    ..Default::default()
                }),
                None => refs.push(r),
            }
        }
        if linearizable {
            let shards: BTreeSet<ShardId> =
                refs.iter().map(|r| self.ctx.topology.conversation_shard(&r.conversation)).collect();
            let barriers = shards.into_iter().map(|s| self.ctx.node.read_barrier(s));
            for r in futures::future::join_all(barriers).await {
                r?;
            }
        }
        let mut rows = Vec::with_capacity(refs.len());
        let mut total_unread = 0u64;
        for r in refs {
            let store = self.ctx.node.store(self.ctx.topology.conversation_shard(&r.conversation))?;
            let Some(head) = store.conversation(&r.conversation)? else { continue };
            let unread = head.unread(&me);
            total_unread += unread;
            let read_seq = head.member(&me).map_or(0, |m| m.read_seq.0);
            // A newest message the caller removed from their view is not shown.
            let last = if store.history_view(&r.conversation, &me)?.hides(head.last_seq) {
                None
            } else {
                store.message(&r.conversation, head.last_seq)?
            };
            rows.push(api::Conversation {
                conversation_id: r.conversation.to_string(),
                peer: r.peer.to_string(),
                last_seq: head.last_seq.0,
                read_seq,
                unread,
                last_time_ms: head.last_time.0,
                last_message: last.as_ref().map(message_to_wire),
                home_region: here.to_string(),
                home_unavailable: false,
                group_id: String::new(),
                mentioned: false,
                ..Default::default()
            });
        }
        for row in self.group_rows(&me, user_shard, &mut abroad)? {
            total_unread += row.unread;
            rows.push(row);
        }
        let mut unavailable_regions = vec![];
        if let Some(geo) = &self.ctx.geo {
            let me = &me;
            let reads = abroad.iter().map(|(region, refs)| {
                let ids = refs.iter().map(|r| r.conversation_id.clone()).collect();
                async move { (region, refs, geo.heads(region, me, ids).await) }
            });
            for (region, refs, heads) in futures::future::join_all(reads).await {
                match heads {
                    Ok(heads) => {
                        for mut head in heads {
                            total_unread += head.unread;
                            // A group without messages yet sorts as of the caller's joining.
                            if head.last_time_ms == 0 {
                                if let Some(listed) = refs.iter().find(|r| r.conversation_id == head.conversation_id) {
                                    head.last_time_ms = listed.last_time_ms;
                                }
                            }
                            rows.push(head);
                        }
                    }
                    // A region that is down leaves its conversations listed, without heads.
                    Err(ApiError::RegionUnavailable(why)) => {
                        tracing::debug!(%region, %why, "conversation heads unavailable");
                        unavailable_regions.push(region.to_string());
                        rows.extend(refs.iter().cloned());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // The caller's settings: rows deleted from the list stay hidden until a newer message.
        let mut prefs = self.ctx.node.store(user_shard)?.conversation_prefs_of(&me)?;
        rows.retain_mut(|row| {
            let Some(p) = prefs.remove(&row.conversation_id) else { return true };
            if !row.home_unavailable && row.last_seq <= p.hidden_up_to.0 {
                total_unread -= row.unread;
                return false;
            }
            row.pinned = p.pinned;
            row.dnd = p.dnd;
            row.draft = p.draft;
            row.marks = p.marks;
            true
        });
        // Newest first; ties broken by id so that the order (and the page token) is total.
        rows.sort_by(|a, b| {
            b.last_time_ms.cmp(&a.last_time_ms).then_with(|| a.conversation_id.cmp(&b.conversation_id))
        });
        let start = match parse_page_token(&body.page_token)? {
            None => 0,
            Some((time, id)) => rows
                .iter()
                .position(|c| (c.last_time_ms < time) || (c.last_time_ms == time && c.conversation_id > id))
                .unwrap_or(rows.len()),
        };
        let page: Vec<api::Conversation> = rows.into_iter().skip(start).take(limit + 1).collect();
        let (page, next_page_token) = if page.len() > limit {
            let mut page = page;
            page.truncate(limit);
            let token = page.last().map(|c| format!("{}:{}", c.last_time_ms, c.conversation_id)).unwrap_or_default();
            (page, token)
        } else {
            (page, String::new())
        };
        Ok((
            api::ListConversationsResponse { conversations: page, total_unread, next_page_token, unavailable_regions },
            home,
        ))
    }
}

impl ChatService {
    /// `user`'s home region, when it is another one (requests about a user's own records go
    /// there).
    pub(super) async fn home_elsewhere(&self, user: &UserId) -> Result<Option<RegionCode>, ApiError> {
        let Some(geo) = &self.ctx.geo else { return Ok(None) };
        let home = geo.require_home(user).await?;
        Ok((&home != self.ctx.topology.region()).then_some(home))
    }

    async fn set_blocked_(&self, req: Request<api::SetBlockedRequest>) -> Result<api::SetBlockedResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/SetBlocked", &req).await;
        }
        let body = req.into_inner();
        let target = UserId::parse(&body.user)?;
        if target == me {
            return Err(Rejection::new(Reason::PeerIsSelf, "a user cannot block themselves").into());
        }
        // The block goes to the pair's conversation, wherever the residency rule puts it; two
        // users of two strict regions have none, and nothing to stop.
        let conversation_home = match self.c2c_homes(&me, &target).await {
            Ok(homes) => self.abroad(homes.as_ref().map(|h| &h.conversation)),
            Err(ApiError::Rejected(r)) if r.reason == Reason::ResidencyViolation => None,
            Err(e) => return Err(e),
        };
        if self.ctx.geo.is_none() {
            self.ctx.require_user(&target).await?;
        }
        let shard = self.ctx.topology.user_shard(&me);
        let command = Command::SetBlocked {
            user: me,
            target: target.clone(),
            blocked: body.blocked,
            conversation_home,
            max_blocked: self.ctx.limits.max_blocked,
        };
        self.propose_one(shard, command).await?;
        Ok(api::SetBlockedResponse { user: target.to_string(), blocked: body.blocked })
    }

    async fn delete_account_(
        &self,
        req: Request<api::DeleteAccountRequest>,
    ) -> Result<api::DeleteUserResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/DeleteAccount", &req).await;
        }
        self.ctx.delete_account(me).await
    }

    async fn set_profile_(&self, req: Request<api::SetProfileRequest>) -> Result<api::GetProfileResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/SetProfile", &req).await;
        }
        let fields: Vec<(String, String)> = req.into_inner().fields.into_iter().collect();
        meridian_domain::profile::check_update(&fields)?;
        self.ctx.require_user(&me).await?;
        let shard = self.ctx.topology.user_shard(&me);
        self.propose_one(shard, Command::SetProfile { user: me.clone(), fields }).await?;
        // This node's replica may trail the leader that applied it: read after a barrier.
        self.ctx.node.read_barrier(shard).await?;
        let profile = self.ctx.node.store(shard)?.profile(&me)?;
        Ok(api::GetProfileResponse { user: me.to_string(), fields: profile })
    }

    async fn get_profile_(&self, req: Request<api::GetProfileRequest>) -> Result<api::GetProfileResponse, ApiError> {
        self.ctx.principal(&req)?;
        let user = UserId::parse(&req.get_ref().user)?;
        if let Some(geo) = &self.ctx.geo {
            let home = geo.require_home(&user).await?;
            if &home != self.ctx.topology.region() {
                return geo.forward(&home, "Chat/GetProfile", &req).await;
            }
        }
        let wanted = req.into_inner().fields;
        self.ctx.require_user(&user).await?;
        let shard = self.ctx.topology.user_shard(&user);
        self.ctx.node.read_barrier(shard).await?;
        let store = self.ctx.node.store(shard)?;
        let mut profile = store.profile(&user)?;
        // The nickname given at creation, until the profile sets one.
        if let Some(account) = store.user(&user)? {
            if !profile.contains_key("nickname") && !account.nickname.is_empty() {
                profile.insert("nickname".into(), account.nickname);
            }
        }
        if !wanted.is_empty() {
            profile.retain(|name, _| wanted.contains(name));
        }
        Ok(api::GetProfileResponse { user: user.to_string(), fields: profile })
    }

    async fn list_blocked_(&self, req: Request<api::ListBlockedRequest>) -> Result<api::ListBlockedResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/ListBlocked", &req).await;
        }
        let shard = self.ctx.topology.user_shard(&me);
        self.ctx.node.read_barrier(shard).await?;
        let users = self.ctx.node.store(shard)?.blocked_users(&me)?;
        Ok(api::ListBlockedResponse { users: users.iter().map(ToString::to_string).collect() })
    }
}

/// A response and the home region of what it was about (`None` in a single region).
pub(super) type Homed<T> = (T, Option<RegionCode>);

/// The response with the home region in its metadata (`x-meridian-home-region`).
fn homed<T>((body, home): Homed<T>) -> Response<T> {
    let mut response = Response::new(body);
    if let Some(Ok(value)) = home.map(|h| h.as_str().parse()) {
        response.metadata_mut().insert(meridian_proto::HOME_REGION_METADATA_KEY, value);
    }
    response
}

/// The home regions of a one-to-one conversation's members and of the conversation.
#[derive(Debug, Clone)]
pub(super) struct C2cHomes {
    pub(super) me: RegionCode,
    pub(super) peer: RegionCode,
    pub(super) conversation: RegionCode,
}

/// A page token is `{last_time_ms}:{conversation_id}` of the previous page's last row.
fn parse_page_token(token: &str) -> Result<Option<(i64, String)>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Rejection::new(Reason::BadSeqRange, "page token is malformed: pass back the one a response gave");
    let (time, id) = token.split_once(':').ok_or_else(bad)?;
    let time = time.parse::<i64>().map_err(|_| bad())?;
    Ok(Some((time, id.to_owned())))
}

#[tonic::async_trait]
impl Chat for ChatService {
    type SubscribeStream = tokio_stream::wrappers::ReceiverStream<Result<api::SubscribeEvent, Status>>;

    async fn subscribe(&self, req: Request<api::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        Ok(Response::new(self.subscribe_(req).await?))
    }

    async fn get_presence(
        &self,
        req: Request<api::GetPresenceRequest>,
    ) -> Result<Response<api::GetPresenceResponse>, Status> {
        Ok(Response::new(self.get_presence_(req).await?))
    }

    async fn signal(&self, req: Request<api::SignalRequest>) -> Result<Response<api::SignalResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/Signal", &req).await?));
        }
        Ok(Response::new(self.signal_(req).await?))
    }

    async fn send_message(
        &self,
        req: Request<api::SendMessageRequest>,
    ) -> Result<Response<api::SendMessageResponse>, Status> {
        let started = std::time::Instant::now();
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(homed((self.ctx.geo()?.forward(&home, "Chat/SendMessage", &req).await?, Some(home))));
        }
        let sent = homed(self.send(req).await?);
        super::LATENCY.send.since(started);
        Ok(sent)
    }

    async fn get_history(
        &self,
        req: Request<api::GetHistoryRequest>,
    ) -> Result<Response<api::GetHistoryResponse>, Status> {
        let started = std::time::Instant::now();
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(homed((self.ctx.geo()?.forward(&home, "Chat/GetHistory", &req).await?, Some(home))));
        }
        let page = homed(self.history(req).await?);
        super::LATENCY.history.since(started);
        Ok(page)
    }

    async fn recall_message(
        &self,
        req: Request<api::RecallMessageRequest>,
    ) -> Result<Response<api::RecallMessageResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(homed((self.ctx.geo()?.forward(&home, "Chat/RecallMessage", &req).await?, Some(home))));
        }
        Ok(homed(self.recall(req).await?))
    }

    async fn list_conversations(
        &self,
        req: Request<api::ListConversationsRequest>,
    ) -> Result<Response<api::ListConversationsResponse>, Status> {
        Ok(homed(self.conversations(req).await?))
    }

    async fn mark_read(&self, req: Request<api::MarkReadRequest>) -> Result<Response<api::MarkReadResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(homed((self.ctx.geo()?.forward(&home, "Chat/MarkRead", &req).await?, Some(home))));
        }
        Ok(homed(ChatService::mark_read(self, req).await?))
    }

    async fn create_group(
        &self,
        req: Request<api::CreateGroupRequest>,
    ) -> Result<Response<api::CreateGroupResponse>, Status> {
        Ok(Response::new(self.create_group_(req).await?))
    }

    async fn add_group_members(
        &self,
        req: Request<api::AddGroupMembersRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/AddGroupMembers", &req).await?));
        }
        Ok(Response::new(self.add_group_members_(req).await?))
    }

    async fn remove_group_member(
        &self,
        req: Request<api::RemoveGroupMemberRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/RemoveGroupMember", &req).await?));
        }
        Ok(Response::new(self.remove_group_member_(req).await?))
    }

    async fn mute_group_member(
        &self,
        req: Request<api::MuteGroupMemberRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/MuteGroupMember", &req).await?));
        }
        Ok(Response::new(self.mute_group_member_(req).await?))
    }

    async fn dismiss_group(
        &self,
        req: Request<api::DismissGroupRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/DismissGroup", &req).await?));
        }
        Ok(Response::new(self.dismiss_group_(req).await?))
    }

    async fn get_group(&self, req: Request<api::GetGroupRequest>) -> Result<Response<api::GetGroupResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/GetGroup", &req).await?));
        }
        Ok(Response::new(self.get_group_(req).await?))
    }

    async fn set_group_member_role(
        &self,
        req: Request<api::SetGroupMemberRoleRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/SetGroupMemberRole", &req).await?));
        }
        Ok(Response::new(self.set_group_member_role_(req).await?))
    }

    async fn transfer_group(
        &self,
        req: Request<api::TransferGroupRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/TransferGroup", &req).await?));
        }
        Ok(Response::new(self.transfer_group_(req).await?))
    }

    async fn set_blocked(
        &self,
        req: Request<api::SetBlockedRequest>,
    ) -> Result<Response<api::SetBlockedResponse>, Status> {
        Ok(Response::new(self.set_blocked_(req).await?))
    }

    async fn list_blocked(
        &self,
        req: Request<api::ListBlockedRequest>,
    ) -> Result<Response<api::ListBlockedResponse>, Status> {
        Ok(Response::new(self.list_blocked_(req).await?))
    }

    async fn delete_account(
        &self,
        req: Request<api::DeleteAccountRequest>,
    ) -> Result<Response<api::DeleteUserResponse>, Status> {
        Ok(Response::new(self.delete_account_(req).await?))
    }

    async fn set_profile(
        &self,
        req: Request<api::SetProfileRequest>,
    ) -> Result<Response<api::GetProfileResponse>, Status> {
        Ok(Response::new(self.set_profile_(req).await?))
    }

    async fn get_profile(
        &self,
        req: Request<api::GetProfileRequest>,
    ) -> Result<Response<api::GetProfileResponse>, Status> {
        Ok(Response::new(self.get_profile_(req).await?))
    }

    async fn set_group_profile(
        &self,
        req: Request<api::SetGroupProfileRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/SetGroupProfile", &req).await?));
        }
        Ok(Response::new(self.set_group_profile_(req).await?))
    }

    async fn set_group_member_info(
        &self,
        req: Request<api::SetGroupMemberInfoRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/SetGroupMemberInfo", &req).await?));
        }
        Ok(Response::new(self.set_group_member_info_(req).await?))
    }

    async fn apply_to_join_group(
        &self,
        req: Request<api::ApplyToJoinGroupRequest>,
    ) -> Result<Response<api::ApplyToJoinGroupResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/ApplyToJoinGroup", &req).await?));
        }
        Ok(Response::new(self.apply_to_join_group_(req).await?))
    }

    async fn respond_join_request(
        &self,
        req: Request<api::RespondJoinRequestRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/RespondJoinRequest", &req).await?));
        }
        Ok(Response::new(self.respond_join_request_(req).await?))
    }

    async fn list_join_requests(
        &self,
        req: Request<api::ListJoinRequestsRequest>,
    ) -> Result<Response<api::ListJoinRequestsResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/ListJoinRequests", &req).await?));
        }
        Ok(Response::new(self.list_join_requests_(req).await?))
    }

    async fn mute_all_group(
        &self,
        req: Request<api::MuteAllGroupRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/MuteAllGroup", &req).await?));
        }
        Ok(Response::new(self.mute_all_group_(req).await?))
    }

    async fn ban_group_member(
        &self,
        req: Request<api::BanGroupMemberRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/BanGroupMember", &req).await?));
        }
        Ok(Response::new(self.ban_group_member_(req).await?))
    }

    async fn list_joined_groups(
        &self,
        req: Request<api::ListJoinedGroupsRequest>,
    ) -> Result<Response<api::ListJoinedGroupsResponse>, Status> {
        Ok(Response::new(self.list_joined_groups_(req).await?))
    }

    async fn get_read_receipts(
        &self,
        req: Request<api::GetReadReceiptsRequest>,
    ) -> Result<Response<api::GetReadReceiptsResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/GetReadReceipts", &req).await?));
        }
        Ok(Response::new(self.get_read_receipts_(req).await?))
    }

    async fn set_conversation_prefs(
        &self,
        req: Request<api::SetConversationPrefsRequest>,
    ) -> Result<Response<api::ConversationPrefsResponse>, Status> {
        Ok(Response::new(self.set_conversation_prefs_(req).await?))
    }

    async fn delete_conversation(
        &self,
        req: Request<api::DeleteConversationRequest>,
    ) -> Result<Response<api::ConversationPrefsResponse>, Status> {
        Ok(Response::new(self.delete_conversation_(req).await?))
    }

    async fn clear_history(
        &self,
        req: Request<api::ClearHistoryRequest>,
    ) -> Result<Response<api::ClearHistoryResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/ClearHistory", &req).await?));
        }
        Ok(homed(self.clear_history_(req).await?))
    }

    async fn delete_messages(
        &self,
        req: Request<api::DeleteMessagesRequest>,
    ) -> Result<Response<api::ClearHistoryResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/DeleteMessages", &req).await?));
        }
        Ok(homed(self.delete_messages_(req).await?))
    }

    async fn like_group(
        &self,
        req: Request<api::LikeGroupRequest>,
    ) -> Result<Response<api::LikeGroupResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/LikeGroup", &req).await?));
        }
        Ok(Response::new(self.like_group_(req).await?))
    }

    async fn create_topic(
        &self,
        req: Request<api::CreateTopicRequest>,
    ) -> Result<Response<api::GroupChangeResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/CreateTopic", &req).await?));
        }
        Ok(Response::new(self.create_topic_(req).await?))
    }

    async fn list_topics(
        &self,
        req: Request<api::ListTopicsRequest>,
    ) -> Result<Response<api::ListTopicsResponse>, Status> {
        if let Some(home) = self.group_elsewhere(&req.get_ref().group_id).await? {
            return Ok(Response::new(self.ctx.geo()?.forward(&home, "Chat/ListTopics", &req).await?));
        }
        Ok(Response::new(self.list_topics_(req).await?))
    }

    async fn add_friend(&self, req: Request<api::AddFriendRequest>) -> Result<Response<api::FriendResponse>, Status> {
        Ok(Response::new(self.add_friend_(req).await?))
    }

    async fn respond_friend_request(
        &self,
        req: Request<api::RespondFriendRequestRequest>,
    ) -> Result<Response<api::FriendResponse>, Status> {
        Ok(Response::new(self.respond_friend_request_(req).await?))
    }

    async fn delete_friend(
        &self,
        req: Request<api::DeleteFriendRequest>,
    ) -> Result<Response<api::FriendResponse>, Status> {
        Ok(Response::new(self.delete_friend_(req).await?))
    }

    async fn set_friend_remark(
        &self,
        req: Request<api::SetFriendRemarkRequest>,
    ) -> Result<Response<api::FriendResponse>, Status> {
        Ok(Response::new(self.set_friend_remark_(req).await?))
    }

    async fn list_friends(
        &self,
        req: Request<api::ListFriendsRequest>,
    ) -> Result<Response<api::ListFriendsResponse>, Status> {
        Ok(Response::new(self.list_friends_(req).await?))
    }

    async fn list_friend_requests(
        &self,
        req: Request<api::ListFriendRequestsRequest>,
    ) -> Result<Response<api::ListFriendRequestsResponse>, Status> {
        Ok(Response::new(self.list_friend_requests_(req).await?))
    }

    async fn check_friends(
        &self,
        req: Request<api::CheckFriendsRequest>,
    ) -> Result<Response<api::CheckFriendsResponse>, Status> {
        Ok(Response::new(self.check_friends_(req).await?))
    }

    async fn get_routes(
        &self,
        req: Request<api::GetRoutesRequest>,
    ) -> Result<Response<api::GetRoutesResponse>, Status> {
        self.ctx.principal(&req)?;
        let node = &self.ctx.node;
        let routes = (0..node.shard_count())
            .filter_map(|shard| {
                let (leader_id, leader) = node.leader_member(ShardId(shard))?;
                Some(api::ShardRoute { shard, leader_id, leader_addr: leader.client_addr })
            })
            .collect();
        let regions = self
            .ctx
            .geo
            .as_ref()
            .map(|geo| {
                geo.file()
                    .regions
                    .iter()
                    .map(|r| api::RegionRoute {
                        region: r.code.clone(),
                        endpoints: r.all_nodes().map(|n| n.addr.clone()).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(api::GetRoutesResponse {
            shards: node.shard_count(),
            routes,
            region: self.ctx.topology.region().to_string(),
            regions,
        }))
    }
}
