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
pub mod wire;

use std::sync::Arc;

use meridian_domain::{ShardId, UserId};
use meridian_raft::RaftNode;
use meridian_regions::Topology;
use tonic::Request;

use crate::auth::{bearer_token, Principal, TokenSigner};
use crate::config::LimitsConfig;
use error::ApiError;

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
    pub async fn require_user(&self, user: &UserId) -> Result<(), ApiError> {
        let shard = self.topology.user_shard(user);
        if self.user_exists_locally(shard, user)? {
            return Ok(());
        }
        self.node.read_barrier(shard).await?;
        if self.user_exists_locally(shard, user)? {
            return Ok(());
        }
        Err(meridian_domain::Rejection::new(
            meridian_domain::Reason::UnknownUser,
            format!("no user {user}: create the account first"),
        )
        .into())
    }

    fn user_exists_locally(&self, shard: ShardId, user: &UserId) -> Result<bool, ApiError> {
        Ok(self.node.store(shard)?.user(user)?.is_some())
    }
}
