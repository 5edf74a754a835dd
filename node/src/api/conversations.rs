//! Conversation management calls of the `Chat` service (CONV-03, MSG-09). List settings are
//! changed in the caller's home region (their list is there); a history view in the stream's
//! home region (next to the read cursors), like a read mark.

use meridian_domain::apply::Reply;
use meridian_domain::conversation_prefs::PrefsChange;
use meridian_domain::{Command, ConversationId, GroupId, Reason, Rejection, Seq, UserId};
use meridian_proto::api;
use tonic::Request;

use super::chat::{ChatService, Homed};
use super::error::ApiError;

fn prefs_response(
    conversation: &ConversationId,
    p: meridian_domain::ConversationPrefs,
) -> api::ConversationPrefsResponse {
    api::ConversationPrefsResponse {
        conversation_id: conversation.to_string(),
        pinned: p.pinned,
        dnd: p.dnd,
        draft: p.draft,
        marks: p.marks,
        hidden_up_to: p.hidden_up_to.0,
    }
}

impl ChatService {
    /// The stream a request names: a peer (one-to-one) or a group, not both.
    fn stream_of(&self, me: &UserId, peer: &str, group: &str) -> Result<ConversationId, ApiError> {
        match (peer.is_empty(), group.is_empty()) {
            (false, true) => {
                let peer = UserId::parse(peer)?;
                if &peer == me {
                    return Err(Rejection::new(Reason::PeerIsSelf, "name a peer other than yourself").into());
                }
                Ok(ConversationId::c2c(me, &peer))
            }
            (true, false) => Ok(ConversationId::group(&GroupId::parse(group)?)),
            _ => Err(Rejection::new(Reason::GroupIdInvalid, "name a peer or a group (one of them)").into()),
        }
    }

    async fn propose_prefs(
        &self,
        me: &UserId,
        conversation: &ConversationId,
        change: PrefsChange,
    ) -> Result<api::ConversationPrefsResponse, ApiError> {
        change.check()?;
        let shard = self.ctx.topology.user_shard(me);
        let command = Command::SetConversationPrefs { user: me.clone(), conversation: conversation.clone(), change };
        self.propose_one(shard, command).await?;
        // This node's replica may trail the leader that applied it: read after a barrier.
        self.ctx.node.read_barrier(shard).await?;
        let prefs = self.ctx.node.store(shard)?.conversation_prefs_of(me)?.remove(conversation.as_str());
        Ok(prefs_response(conversation, prefs.unwrap_or_default()))
    }

    pub(super) async fn set_conversation_prefs_(
        &self,
        req: Request<api::SetConversationPrefsRequest>,
    ) -> Result<api::ConversationPrefsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/SetConversationPrefs", &req).await;
        }
        let body = req.into_inner();
        let conversation = self.stream_of(&me, &body.peer, &body.group_id)?;
        let change = PrefsChange {
            pinned: body.pinned,
            dnd: body.dnd,
            draft: body.draft,
            marks: body.set_marks.then_some(body.marks),
            hide_up_to: None,
        };
        self.propose_prefs(&me, &conversation, change).await
    }

    /// Hides a row until a message newer than the stream's newest now arrives.
    pub(super) async fn delete_conversation_(
        &self,
        req: Request<api::DeleteConversationRequest>,
    ) -> Result<api::ConversationPrefsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/DeleteConversation", &req).await;
        }
        let body = req.into_inner();
        let conversation = self.stream_of(&me, &body.peer, &body.group_id)?;
        let last_seq = self.newest_seq(&me, &conversation).await?;
        let change = PrefsChange { hide_up_to: Some(last_seq.max(Seq(1))), ..Default::default() };
        self.propose_prefs(&me, &conversation, change).await
    }

    /// The newest seq of a stream in the caller's list, read where it lives.
    async fn newest_seq(&self, me: &UserId, conversation: &ConversationId) -> Result<Seq, ApiError> {
        let here = self.ctx.topology.region().clone();
        let home = match conversation.peer_of(me) {
            Some(peer) => self.c2c_homes(me, &peer).await?.map(|h| h.conversation).unwrap_or(here.clone()),
            None => match conversation.group_id() {
                Some(group) => self.group_elsewhere(group.as_str()).await?.unwrap_or(here.clone()),
                None => here.clone(),
            },
        };
        if home == here {
            let shard = self.ctx.topology.conversation_shard(conversation);
            self.ctx.node.read_barrier(shard).await?;
            return Ok(self.ctx.node.store(shard)?.conversation(conversation)?.map_or(Seq::ZERO, |h| h.last_seq));
        }
        let heads = self.ctx.geo()?.heads(&home, me, vec![conversation.to_string()]).await?;
        Ok(Seq(heads.first().map_or(0, |h| h.last_seq)))
    }

    async fn clear_for_self(
        &self,
        me: UserId,
        conversation: ConversationId,
        clear: bool,
        delete: Vec<Seq>,
    ) -> Result<api::ClearHistoryResponse, ApiError> {
        meridian_domain::conversation_prefs::check_delete(clear, &delete)?;
        let shard = self.ctx.topology.conversation_shard(&conversation);
        let command = Command::ClearHistoryForSelf { user: me, conversation: conversation.clone(), clear, delete };
        match self.propose_one(shard, command).await? {
            Reply::HistoryCleared { cleared_up_to, deleted } => Ok(api::ClearHistoryResponse {
                conversation_id: conversation.to_string(),
                cleared_up_to: cleared_up_to.0,
                deleted,
            }),
            other => Err(ApiError::Internal(format!("unexpected reply to a clear: {other:?}"))),
        }
    }

    /// Where a stream lives when not here (one-to-one conversations may live abroad; groups
    /// live in their region).
    async fn stream_elsewhere(
        &self,
        me: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<meridian_domain::RegionCode>, ApiError> {
        match conversation.peer_of(me) {
            Some(peer) => {
                let homes = self.c2c_homes(me, &peer).await?;
                Ok(homes.map(|h| h.conversation).filter(|c| c != self.ctx.topology.region()))
            }
            None => Ok(None),
        }
    }

    pub(super) async fn clear_history_(
        &self,
        req: Request<api::ClearHistoryRequest>,
    ) -> Result<Homed<api::ClearHistoryResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let conversation = self.stream_of(&me, &req.get_ref().peer, &req.get_ref().group_id)?;
        if let Some(region) = self.stream_elsewhere(&me, &conversation).await? {
            let response = self.ctx.geo()?.forward(&region, "Chat/ClearHistory", &req).await?;
            return Ok((response, Some(region)));
        }
        Ok((self.clear_for_self(me, conversation, true, vec![]).await?, None))
    }

    pub(super) async fn delete_messages_(
        &self,
        req: Request<api::DeleteMessagesRequest>,
    ) -> Result<Homed<api::ClearHistoryResponse>, ApiError> {
        let me = self.ctx.caller(&req)?;
        let conversation = self.stream_of(&me, &req.get_ref().peer, &req.get_ref().group_id)?;
        if let Some(region) = self.stream_elsewhere(&me, &conversation).await? {
            let response = self.ctx.geo()?.forward(&region, "Chat/DeleteMessages", &req).await?;
            return Ok((response, Some(region)));
        }
        let seqs = req.into_inner().seqs.into_iter().map(Seq).collect();
        Ok((self.clear_for_self(me, conversation, false, seqs).await?, None))
    }
}
