//! The door credentials: what a node shows on every peer call (the cluster credential) and
//! on every region-link call (the link credential), and the check each listener makes before
//! anything else looks at the request. The two are derived alike from different secrets,
//! under different labels and metadata keys, so one never opens the other's door.
//!
//! Every node of a region is configured with the same cluster secret. Calls carry
//! `x-meridian-cluster-key: HEX(HMAC-SHA256(secret, "meridian-peer-v1"))`, a value derived from
//! the secret, so the secret itself never travels; the check compares it in constant time. The
//! value is a bearer credential: on a network that others can read, the peer listener should
//! use TLS (which can also require client certificates). See docs/adr/0002.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key that carries the cluster credential.
pub const CLUSTER_KEY_METADATA: &str = "x-meridian-cluster-key";
/// The metadata key that carries the link credential.
pub const LINK_KEY_METADATA: &str = "x-meridian-link-key";
/// The reason code of a peer call refused for its credential.
pub const PEER_UNAUTHENTICATED: &str = meridian_proto::reasons::PEER_UNAUTHENTICATED;
/// The reason code of a region-link call refused for its credential.
pub const LINK_UNAUTHENTICATED: &str = meridian_proto::reasons::LINK_UNAUTHENTICATED;

/// The door a credential opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The peer listener: the nodes of one region.
    Peer,
    /// The region-link listener: other regions of the deployment.
    Link,
}

impl Door {
    /// What the credential is derived for (a new scheme gets a new label).
    fn label(self) -> &'static [u8] {
        match self {
            Door::Peer => b"meridian-peer-v1",
            Door::Link => b"meridian-link-v1",
        }
    }

    fn metadata_key(self) -> &'static str {
        match self {
            Door::Peer => CLUSTER_KEY_METADATA,
            Door::Link => LINK_KEY_METADATA,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Door::Peer => PEER_UNAUTHENTICATED,
            Door::Link => LINK_UNAUTHENTICATED,
        }
    }

    fn refusal(self, why: &str) -> String {
        match self {
            Door::Peer => format!(
                "peer calls need this region's cluster credential ({why} was presented): check that every \
                 node has the same cluster secret"
            ),
            Door::Link => format!(
                "region-link calls need the deployment's link credential ({why} was presented): check that \
                 every region has the same link secret"
            ),
        }
    }
}

/// A door credential, derived from its secret: the cluster credential of a region (peer
/// door) or the link credential of a deployment (region-link door).
#[derive(Clone)]
pub struct ClusterCredential {
    /// The value calls carry, as it appears in metadata.
    value: AsciiMetadataValue,
    door: Door,
}

impl std::fmt::Debug for ClusterCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCredential(<redacted>)")
    }
}

impl ClusterCredential {
    /// The cluster credential of `secret` (the cluster secret of the node's configuration).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::for_door(Door::Peer, secret)
    }

    /// The credential of `door` derived from `secret`.
    pub fn for_door(door: Door, secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(door.label());
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let value = MetadataValue::try_from(hex.as_str()).expect("hex digits are valid metadata");
        Self { value, door }
    }

    /// Whether `presented` is this credential, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.value.as_bytes();
        presented.len() == expected.len() && bool::from(presented.ct_eq(expected))
    }

    /// The interceptor that adds this credential to outgoing peer calls.
    pub fn attach(&self) -> AttachCredential {
        AttachCredential { credential: self.clone() }
    }

    /// The interceptor that refuses incoming peer calls without this credential, counting
    /// them in `stats`.
    pub fn require(&self, stats: Arc<DoorStats>) -> RequireCredential {
        RequireCredential { credential: Arc::new(self.clone()), stats }
    }
}

/// What the peer door refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct DoorStats {
    /// Peer calls refused for a missing or wrong cluster credential.
    pub peer_calls_refused: AtomicU64,
    /// Region-link calls refused for a missing or wrong link credential.
    pub link_calls_refused: AtomicU64,
    /// Forwarded proposals refused at ingress (malformed or misrouted commands).
    pub proposals_refused: AtomicU64,
    /// Client requests this node forwarded to their home region over a region link.
    pub requests_forwarded: AtomicU64,
}

/// Adds the cluster credential to every outgoing peer call.
#[derive(Debug, Clone)]
pub struct AttachCredential {
    credential: ClusterCredential,
}

impl Interceptor for AttachCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(self.credential.door.metadata_key(), self.credential.value.clone());
        Ok(request)
    }
}

/// Refuses every incoming call that lacks the door's credential: `UNAUTHENTICATED` with
/// reason `PEER_UNAUTHENTICATED` (or `LINK_UNAUTHENTICATED`), logged with the caller's address.
#[derive(Debug, Clone)]
pub struct RequireCredential {
    credential: Arc<ClusterCredential>,
    stats: Arc<DoorStats>,
}

impl Interceptor for RequireCredential {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let door = self.credential.door;
        let presented = request.metadata().get(door.metadata_key());
        if presented.is_some_and(|v| self.credential.matches(v.as_bytes())) {
            return Ok(request);
        }
        let caller = request.remote_addr().map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
        let why = if presented.is_some() { "a wrong credential" } else { "no credential" };
        let refused = match door {
            Door::Peer => &self.stats.peer_calls_refused,
            Door::Link => &self.stats.link_calls_refused,
        };
        refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%caller, ?door, "refused a call with {why}");
        let mut status = Status::unauthenticated(door.refusal(why));
        status.metadata_mut().insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static(door.reason()));
        Err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_derived_and_compared_exactly() {
        let a = ClusterCredential::from_secret(b"0123456789abcdef");
        let b = ClusterCredential::from_secret(b"0123456789abcdeF");
        assert!(a.matches(a.value.as_bytes()));
        assert!(!a.matches(b.value.as_bytes()));
        assert!(!a.matches(b""));
        assert!(!a.matches(&a.value.as_bytes()[..10]));
        // The secret itself never travels.
        assert!(!a.value.to_str().unwrap_or_default().contains("0123456789abcdef"));
    }

    #[test]
    fn calls_without_the_credential_are_refused_with_a_reason() {
        let credential = ClusterCredential::from_secret(b"0123456789abcdef");
        let stats = Arc::new(DoorStats::default());
        let mut require = credential.require(stats.clone());
        let status = require.call(Request::new(())).expect_err("no credential");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()),
            Some(PEER_UNAUTHENTICATED)
        );
        let wrong = ClusterCredential::from_secret(b"another-secret-0000").attach().call(Request::new(()));
        assert!(require.call(wrong.expect("attach")).is_err());
        let right = credential.attach().call(Request::new(())).expect("attach");
        assert!(require.call(right).is_ok());
        assert_eq!(stats.peer_calls_refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_door_s_credential_does_not_open_the_other() {
        let secret = b"0123456789abcdef";
        let (peer, link) = (ClusterCredential::from_secret(secret), ClusterCredential::for_door(Door::Link, secret));
        assert!(!link.matches(peer.value.as_bytes()), "same secret, different labels");
        let stats = Arc::new(DoorStats::default());
        let mut require_link = link.require(stats.clone());
        let with_peer_key = peer.attach().call(Request::new(())).expect("attach");
        let status = require_link.call(with_peer_key).expect_err("the peer key on the link door");
        assert_eq!(
            status.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()),
            Some(LINK_UNAUTHENTICATED)
        );
        assert!(require_link.call(link.attach().call(Request::new(())).expect("attach")).is_ok());
        assert_eq!(stats.link_calls_refused.load(Ordering::Relaxed), 1);
        assert_eq!(stats.peer_calls_refused.load(Ordering::Relaxed), 0);
    }
}
