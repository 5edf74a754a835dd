//! Likes (GRP-07): many users liking a live room at once cost one Raft entry per window, not
//! one per like. A node gathers the likes it receives for a group for [`LIKE_WINDOW`], then
//! proposes their sum as one `AddGroupLikes` command, and answers every caller of the window
//! with the group's total once that command is applied: an answered like is durable like any
//! other write. A like whose answer is lost (the node failed after proposing) may be counted
//! when the caller retries it too: counters are at-least-once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_domain::apply::Reply;
use meridian_domain::{Command, GroupId, Rejection};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::Context;

/// How long a node gathers likes for one group before it proposes their sum.
pub const LIKE_WINDOW: Duration = Duration::from_millis(100);

type Answer = Result<u64, Failed>;

/// Why a window's likes were not counted, for each of its callers.
#[derive(Debug, Clone)]
enum Failed {
    Rejected(Rejection),
    Other(String),
}

#[derive(Debug, Default)]
struct Window {
    likes: u64,
    waiting: Vec<oneshot::Sender<Answer>>,
}

/// The likes this node is gathering, by group.
#[derive(Debug, Default)]
pub struct LikeGatherer {
    windows: Mutex<HashMap<GroupId, Window>>,
}

impl LikeGatherer {
    /// Adds `likes` to `group`'s open window (opening one, and scheduling its proposal, if
    /// none is open) and waits for the group's total after the window's command.
    pub async fn like(self: &Arc<Self>, ctx: &Context, group: GroupId, likes: u64) -> Result<u64, ApiError> {
        let (tx, rx) = oneshot::channel();
        let opened = {
            let mut windows = self.windows.lock().map_err(|_| ApiError::Internal("likes lock poisoned".into()))?;
            let window = windows.entry(group.clone()).or_default();
            window.likes = window.likes.saturating_add(likes);
            window.waiting.push(tx);
            window.waiting.len() == 1
        };
        if opened {
            let (this, ctx, group) = (self.clone(), ctx.clone(), group.clone());
            tokio::spawn(async move {
                tokio::time::sleep(LIKE_WINDOW).await;
                this.flush(&ctx, group).await;
            });
        }
        match rx.await {
            Ok(Ok(total)) => Ok(total),
            Ok(Err(Failed::Rejected(r))) => Err(r.into()),
            Ok(Err(Failed::Other(why))) => Err(ApiError::Unavailable(why)),
            Err(_) => Err(ApiError::Unavailable("the likes were not counted: try again".into())),
        }
    }

    async fn flush(&self, ctx: &Context, group: GroupId) {
        let window = match self.windows.lock() {
            Ok(mut windows) => windows.remove(&group),
            Err(_) => None,
        };
        let Some(window) = window else { return };
        let shard = ctx.topology.conversation_shard(&meridian_domain::ConversationId::group(&group));
        let command = Command::AddGroupLikes { group, likes: window.likes };
        let answer = match ctx.node.propose(shard, &[command]).await {
            Ok(mut results) => match results.pop() {
                Some(Ok(Reply::Likes { total })) => Ok(total),
                Some(Ok(other)) => Err(Failed::Other(format!("unexpected reply to likes: {other:?}"))),
                Some(Err(rejection)) => Err(Failed::Rejected(rejection)),
                None => Err(Failed::Other("a proposal returned no result".into())),
            },
            Err(e) => Err(Failed::Other(e.to_string())),
        };
        for waiter in window.waiting {
            let _ = waiter.send(answer.clone());
        }
    }
}
