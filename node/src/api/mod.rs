//! The client-facing gRPC services and what they share: authentication, wire conversions and
//! the one mapping of errors to `tonic::Status`.

pub mod admin;
pub mod chat;
pub mod conversations;
pub mod error;
pub mod friends;
pub mod group_admin;
pub mod groups;
pub mod likes;
pub mod subscribe;
pub mod wire;

use std::sync::Arc;

use meridian_domain::UserId;
use meridian_raft::RaftNode;
use meridian_regions::Topology;
use meridian_storage::latency::Histogram;
use tonic::Request;

use crate::auth::{bearer_token, Principal, TokenSigner};
use crate::config::LimitsConfig;
use error::ApiError;

/// How long the client API's calls take on the node that serves them (`/metrics`).
pub static LATENCY: ApiLatency = ApiLatency { send: Histogram::new(), history: Histogram::new() };

/// See [`LATENCY`]: calls answered with success by this region, from the handler's start to
/// its answer (authentication before it is not included, nor calls forwarded to another
/// region).
#[derive(Debug)]
pub struct ApiLatency {
    /// `Chat/SendMessage`, one-to-one and group.
    pub send: Histogram,
    /// `Chat/GetHistory`.
    pub history: Histogram,
}

/// What every service handler needs.
#[derive(Debug, Clone)]
pub struct Context {
    pub node: Arc<RaftNode>,
    pub topology: Topology,
    pub signer: Arc<TokenSigner>,
    pub limits: LimitsConfig,
    pub token_ttl_seconds: u64,
    /// This node's links to the other regions (empty without a topology file).
    pub links: Arc<crate::link::RegionLinks>,
    /// The other regions: directory, residency, forwarding (with a topology file of more
    /// than one region).
    pub geo: Option<Arc<crate::geo::Geo>>,
    /// Where this node keeps its snapshot files (scanned by the residency audit).
    pub snapshot_dir: std::path::PathBuf,
    /// Likes being gathered into one command per group and window (GRP-07).
    pub likes: Arc<likes::LikeGatherer>,
    /// The live streams this node serves (DLV-01/02).
    pub delivery: Arc<crate::delivery::Hub>,
    /// The app's webhooks: before-callbacks here, the rest from the log (DLV-03/04).
    pub hooks: Arc<crate::hooks::Hooks>,
    /// The cold archive (GEO-04), when `[archive]` is on.
    pub archive: Option<Arc<crate::archive::Archive>>,
    /// Disaster recovery, when the region lists a standby (ADR 0005).
    pub dr: Option<Arc<crate::dr::Dr>>,
}

pub(crate) fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Context {
    /// The verified principal of a request.
    pub fn principal<T>(&self, req: &Request<T>) -> Result<Principal, ApiError> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = bearer_token(header)?;
        Ok(self.signer.verify(token, now_unix())?)
    }

    /// The user a request acts as: the token's user, or the user an admin token names.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<UserId, ApiError> {
        let principal = self.principal(req)?;
        let requested = req.metadata().get(meridian_proto::ACT_AS_METADATA_KEY).and_then(|v| v.to_str().ok());
        let user = principal.act_as(requested)?;
        Ok(UserId::parse(&user)?)
    }

    /// The other regions; an error on a node without them.
    pub fn geo(&self) -> Result<&Arc<crate::geo::Geo>, ApiError> {
        self.geo.as_ref().ok_or_else(|| {
            meridian_domain::Rejection::new(
                meridian_domain::Reason::RegionNotServed,
                "this node runs without other regions (no topology file of several regions)",
            )
            .into()
        })
    }

    /// Requires an admin token.
    pub fn require_admin<T>(&self, req: &Request<T>) -> Result<Principal, ApiError> {
        let principal = self.principal(req)?;
        if !principal.is_admin() {
            return Err(crate::auth::AuthError::Forbidden {
                principal: principal.to_string(),
                requested: "the admin API".into(),
            }
            .into());
        }
        Ok(principal)
    }

    /// Confirms a user account exists: from the local replica, or — when it is not there yet —
    /// after a read barrier on the user's shard (it may have been created a moment ago).
    /// Requires `user`'s account to exist and not to be deleted (`UNKNOWN_USER`,
    /// `USER_DELETED`), on this node's replica or else after a read barrier.
    pub async fn require_user(&self, user: &UserId) -> Result<(), ApiError> {
        self.require_account(user, false).await
    }

    /// Requires `user`'s account to exist, or to have existed when `deleted_too` (reading a
    /// conversation with a deleted account: what it sent stays).
    pub async fn require_account(&self, user: &UserId, deleted_too: bool) -> Result<(), ApiError> {
        let shard = self.topology.user_shard(user);
        let account = match self.node.store(shard)?.user(user)? {
            Some(account) => Some(account),
            None => {
                self.node.read_barrier(shard).await?;
                self.node.store(shard)?.user(user)?
            }
        };
        match account {
            Some(a) if a.is_deleted() && !deleted_too => Err(meridian_domain::Rejection::new(
                meridian_domain::Reason::UserDeleted,
                format!("the account {user} was deleted"),
            )
            .into()),
            Some(_) => Ok(()),
            None => Err(meridian_domain::Rejection::new(
                meridian_domain::Reason::UnknownUser,
                format!("no user {user}: create the account first"),
            )
            .into()),
        }
    }

    /// Deletes `user`'s account (REL-01), on its shard in this region; whether it was live.
    pub async fn delete_account(&self, user: UserId) -> Result<meridian_proto::api::DeleteUserResponse, ApiError> {
        let shard = self.topology.user_shard(&user);
        let live = match self.require_user(&user).await {
            Ok(()) => true,
            Err(ApiError::Rejected(r)) if r.reason == meridian_domain::Reason::UserDeleted => false,
            Err(e) => return Err(e),
        };
        if live {
            let command = meridian_domain::Command::DeleteAccount { user: user.clone() };
            if let Some(Err(r)) = self.node.propose(shard, &[command]).await?.pop() {
                return Err(r.into());
            }
        }
        Ok(meridian_proto::api::DeleteUserResponse { user_id: user.to_string(), deleted: live })
    }
}
