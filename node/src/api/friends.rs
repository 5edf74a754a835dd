//! The friend calls of the `Chat` service (REL-03, REL-05): requests, answers, deletes,
//! remarks, lists and checks. The rules are the domain's (`meridian_domain::friend`); this is
//! the boundary: parsing, the caps from the configuration, and routing to the home region and
//! shard of the user whose list a call changes.
//!
//! A request is decided in the *target's* home region (their policy and list are there);
//! everything else in the caller's. Two users homed in two strict-residency regions cannot be
//! friends (`RESIDENCY_VIOLATION`): they could never exchange a message.

use meridian_domain::apply::Reply;
use meridian_domain::friend::{check_text, FriendState};
use meridian_domain::{Command, Reason, Rejection, UserId};
use meridian_proto::api;
use tonic::Request;

use super::chat::ChatService;
use super::error::ApiError;
use crate::geo::FORWARDED_FROM;

fn state_of(reply: Reply) -> Result<FriendState, ApiError> {
    match reply {
        Reply::Friend { state } => Ok(state),
        other => Err(ApiError::Internal(format!("unexpected reply to a friend command: {other:?}"))),
    }
}

fn other_than(me: &UserId, user: &str) -> Result<UserId, ApiError> {
    let user = UserId::parse(user)?;
    if &user == me {
        return Err(Rejection::new(Reason::PeerIsSelf, "a user is not their own friend").into());
    }
    Ok(user)
}

impl ChatService {
    pub(super) async fn add_friend_(
        &self,
        req: Request<api::AddFriendRequest>,
    ) -> Result<api::FriendResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        let target = other_than(&me, &req.get_ref().user)?;
        check_text(&req.get_ref().remark, &req.get_ref().message)?;
        // Decided where the target's list and policy are.
        if let Some(geo) = &self.ctx.geo {
            let home = geo.require_home(&target).await?;
            if &home != self.ctx.topology.region() {
                return geo.forward(&home, "Chat/AddFriend", &req).await;
            }
        }
        let homes = self.c2c_homes(&me, &target).await?;
        let user_home = self.abroad(homes.as_ref().map(|h| &h.me));
        let conversation_home = self.abroad(homes.as_ref().map(|h| &h.conversation));
        self.ctx.require_user(&target).await?;
        if user_home.is_none() {
            // The requester's own cap, from this node's replica (their list grows by an effect,
            // which cannot be refused).
            self.ctx.require_user(&me).await?;
            let mine = self.ctx.node.store(self.ctx.topology.user_shard(&me))?.friends(&me)?;
            if mine.len() as u64 >= self.ctx.limits.max_friends && !mine.iter().any(|f| f.user == target) {
                return Err(Rejection::new(
                    Reason::FriendLimit,
                    format!("{me} has {} friends, the most a list holds", mine.len()),
                )
                .into());
            }
        }
        let body = req.into_inner();
        self.ctx
            .hooks
            .before(
                crate::hooks::Before::AddFriend,
                serde_json::json!({"user": me.as_str(), "friend": target.as_str(), "message": body.message}),
            )
            .await?;
        let command = Command::AddFriend {
            user: me,
            target: target.clone(),
            message: body.message,
            remark: body.remark,
            user_home,
            conversation_home,
            max_friends: self.ctx.limits.max_friends,
            max_pending: self.ctx.limits.max_friend_requests,
        };
        let state = state_of(self.propose_one(self.ctx.topology.user_shard(&target), command).await?)?;
        Ok(api::FriendResponse { user: target.to_string(), state: state.name().to_owned() })
    }

    pub(super) async fn respond_friend_request_(
        &self,
        req: Request<api::RespondFriendRequestRequest>,
    ) -> Result<api::FriendResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/RespondFriendRequest", &req).await;
        }
        let from = other_than(&me, &req.get_ref().user)?;
        check_text(&req.get_ref().remark, "")?;
        let homes = self.c2c_homes(&me, &from).await?;
        let body = req.into_inner();
        let command = Command::RespondFriendRequest {
            user: me.clone(),
            from: from.clone(),
            accept: body.accept,
            remark: body.remark,
            from_home: self.abroad(homes.as_ref().map(|h| &h.peer)),
            conversation_home: self.abroad(homes.as_ref().map(|h| &h.conversation)),
            max_friends: self.ctx.limits.max_friends,
        };
        let state = state_of(self.propose_one(self.ctx.topology.user_shard(&me), command).await?)?;
        Ok(api::FriendResponse { user: from.to_string(), state: state.name().to_owned() })
    }

    pub(super) async fn delete_friend_(
        &self,
        req: Request<api::DeleteFriendRequest>,
    ) -> Result<api::FriendResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/DeleteFriend", &req).await;
        }
        let friend = other_than(&me, &req.get_ref().user)?;
        // Two users of two strict regions were never friends: nothing to tell a conversation.
        let (friend_home, conversation_home) = match self.c2c_homes(&me, &friend).await {
            Ok(homes) => {
                (self.abroad(homes.as_ref().map(|h| &h.peer)), self.abroad(homes.as_ref().map(|h| &h.conversation)))
            }
            Err(ApiError::Rejected(r)) if r.reason == Reason::ResidencyViolation => (None, None),
            Err(e) => return Err(e),
        };
        let command = Command::DeleteFriend {
            user: me.clone(),
            friend: friend.clone(),
            both: req.get_ref().both,
            friend_home,
            conversation_home,
        };
        self.propose_one(self.ctx.topology.user_shard(&me), command).await?;
        Ok(api::FriendResponse { user: friend.to_string(), state: String::new() })
    }

    pub(super) async fn set_friend_remark_(
        &self,
        req: Request<api::SetFriendRemarkRequest>,
    ) -> Result<api::FriendResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/SetFriendRemark", &req).await;
        }
        let friend = other_than(&me, &req.get_ref().user)?;
        let remark = req.into_inner().remark;
        check_text(&remark, "")?;
        let command = Command::SetFriendRemark { user: me.clone(), friend: friend.clone(), remark };
        self.propose_one(self.ctx.topology.user_shard(&me), command).await?;
        Ok(api::FriendResponse { user: friend.to_string(), state: String::new() })
    }

    pub(super) async fn list_friends_(
        &self,
        req: Request<api::ListFriendsRequest>,
    ) -> Result<api::ListFriendsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/ListFriends", &req).await;
        }
        let shard = self.ctx.topology.user_shard(&me);
        self.ctx.node.read_barrier(shard).await?;
        let friends = self.ctx.node.store(shard)?.friends(&me)?;
        Ok(api::ListFriendsResponse {
            friends: friends
                .into_iter()
                .map(|f| api::FriendEntry { user: f.user.to_string(), remark: f.remark, since_ms: f.since.0 })
                .collect(),
        })
    }

    pub(super) async fn list_friend_requests_(
        &self,
        req: Request<api::ListFriendRequestsRequest>,
    ) -> Result<api::ListFriendRequestsResponse, ApiError> {
        let me = self.ctx.caller(&req)?;
        if let Some(home) = self.home_elsewhere(&me).await? {
            return self.ctx.geo()?.forward(&home, "Chat/ListFriendRequests", &req).await;
        }
        let shard = self.ctx.topology.user_shard(&me);
        self.ctx.node.read_barrier(shard).await?;
        let requests = self.ctx.node.store(shard)?.friend_requests(&me)?;
        Ok(api::ListFriendRequestsResponse {
            requests: requests
                .into_iter()
                .map(|r| api::FriendRequestEntry { from: r.from.to_string(), message: r.message, time_ms: r.at.0 })
                .collect(),
        })
    }

    /// Each user's relation with the caller: whether they are on the caller's list (read in
    /// the caller's home region) and whether the caller is on theirs (read in theirs).
    ///
    /// A check forwarded from the caller's home region to another region answers only the
    /// second half, for the users homed there (`theirs` or `none`).
    pub(super) async fn check_friends_(
        &self,
        req: Request<api::CheckFriendsRequest>,
    ) -> Result<api::CheckFriendsResponse, ApiError> {
        const MAX_CHECKS: usize = 100;
        let me = self.ctx.caller(&req)?;
        let users = req.get_ref().users.iter().map(|u| other_than(&me, u)).collect::<Result<Vec<_>, _>>()?;
        if users.is_empty() || users.len() > MAX_CHECKS {
            return Err(Rejection::new(
                Reason::UserIdInvalid,
                format!("check 1..={MAX_CHECKS} users at a time, not {}", users.len()),
            )
            .into());
        }
        let forwarded = req.metadata().get(FORWARDED_FROM).is_some();
        let mine_here = match self.home_elsewhere(&me).await? {
            None => true,
            Some(_) if forwarded => false,
            Some(home) => return self.ctx.geo()?.forward(&home, "Chat/CheckFriends", &req).await,
        };
        let mut checks = Vec::with_capacity(users.len());
        for user in users {
            let mine = if mine_here {
                let shard = self.ctx.topology.user_shard(&me);
                self.ctx.node.store(shard)?.friends_entry(&me, &user)?
            } else {
                false
            };
            let theirs = match self.home_elsewhere(&user).await? {
                None => {
                    let shard = self.ctx.topology.user_shard(&user);
                    self.ctx.node.store(shard)?.friends_entry(&user, &me)?
                }
                Some(_) if forwarded => false,
                Some(home) => {
                    let one = Request::from_parts(
                        req.metadata().clone(),
                        Default::default(),
                        api::CheckFriendsRequest { users: vec![user.to_string()] },
                    );
                    let answer: api::CheckFriendsResponse =
                        self.ctx.geo()?.forward(&home, "Chat/CheckFriends", &one).await?;
                    answer.checks.iter().any(|c| c.relation == "theirs" || c.relation == "both")
                }
            };
            let relation = match (mine, theirs) {
                (true, true) => "both",
                (true, false) => "mine",
                (false, true) => "theirs",
                (false, false) => "none",
            };
            checks.push(api::FriendCheck { user: user.to_string(), relation: relation.to_owned() });
        }
        Ok(api::CheckFriendsResponse { checks })
    }

    /// Whether `recipient` takes one-to-one messages from friends only: the app's setting, or
    /// their own (`c2c_from = friends` in their profile), read from this node's replica of
    /// their shard when they are homed here.
    pub(super) fn friends_only(&self, recipient: &UserId, homed_here: bool) -> Result<bool, ApiError> {
        if self.ctx.limits.c2c_friends_only {
            return Ok(true);
        }
        if !homed_here {
            return Ok(false);
        }
        let profile = self.ctx.node.store(self.ctx.topology.user_shard(recipient))?.profile(recipient)?;
        Ok(profile.get("c2c_from").is_some_and(|v| v == "friends"))
    }
}
