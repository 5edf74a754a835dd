//! The cluster credential: what a node shows on every peer call, and the check the peer
//! listener makes before anything else looks at the request.
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
/// The reason code of a peer call refused for its credential.
pub const PEER_UNAUTHENTICATED: &str = meridian_proto::reasons::PEER_UNAUTHENTICATED;
/// What the credential is derived for (a new scheme gets a new label).
const LABEL: &[u8] = b"meridian-peer-v1";

/// A region's cluster credential, derived from its cluster secret.
#[derive(Clone)]
pub struct ClusterCredential {
    /// The value calls carry, as it appears in metadata.
    value: AsciiMetadataValue,
}

impl std::fmt::Debug for ClusterCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCredential(<redacted>)")
    }
}

impl ClusterCredential {
    /// The credential of `secret` (the cluster secret of the node's configuration).
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(LABEL);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let value = MetadataValue::try_from(hex.as_str()).expect("hex digits are valid metadata");
        Self { value }
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
    /// Forwarded proposals refused at ingress (malformed or misrouted commands).
    pub proposals_refused: AtomicU64,
}

/// Adds the cluster credential to every outgoing peer call.
#[derive(Debug, Clone)]
pub struct AttachCredential {
    credential: ClusterCredential,
}

impl Interceptor for AttachCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(CLUSTER_KEY_METADATA, self.credential.value.clone());
        Ok(request)
    }
}

/// Refuses every incoming peer call that lacks the cluster credential: `UNAUTHENTICATED`
/// with reason `PEER_UNAUTHENTICATED`, logged with the caller's address.
#[derive(Debug, Clone)]
pub struct RequireCredential {
    credential: Arc<ClusterCredential>,
    stats: Arc<DoorStats>,
}

impl Interceptor for RequireCredential {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get(CLUSTER_KEY_METADATA);
        if presented.is_some_and(|v| self.credential.matches(v.as_bytes())) {
            return Ok(request);
        }
        let caller = request.remote_addr().map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
        let why = if presented.is_some() { "a wrong cluster credential" } else { "no cluster credential" };
        self.stats.peer_calls_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%caller, "refused a peer call with {why}");
        let mut status = Status::unauthenticated(format!(
            "peer calls need this region's cluster credential ({why} was presented): check that \
             every node has the same cluster secret"
        ));
        status
            .metadata_mut()
            .insert(meridian_proto::REASON_METADATA_KEY, MetadataValue::from_static(PEER_UNAUTHENTICATED));
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
}
