//! The one place where errors become `tonic::Status`: a gRPC code, a stable reason code in
//! `x-meridian-reason` metadata and an `ErrorDetail` in the status details.

use meridian_domain::{Rejection, RejectionClass};
use meridian_proto::api::ErrorDetail;
use meridian_proto::reasons;
use prost::Message as _;
use tonic::{Code, Status};

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Retryable: the shard had no reachable leader in time.
    #[error("{0}")]
    Unavailable(String),
    /// Retryable: this node could not get the shard's leader to serve in time; the hint is
    /// that leader's client address (`x-meridian-leader`), for the caller to go to directly.
    #[error("{message}")]
    NotLeader { message: String, leader_hint: String },
    /// This node's replica of the shard has stopped: another node may serve.
    #[error("{0}")]
    Halted(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Retryable: the entity's home region did not answer (down, or its link is cut).
    #[error("{0}")]
    RegionUnavailable(String),
    /// The answer of the home region a request was forwarded to, passed on as it came.
    #[error("{}", .0.message())]
    Remote(Status),
    /// Retryable: cold history could not be read from the archive's store.
    #[error("{0}")]
    ArchiveUnavailable(String),
    /// An archived segment failed its checksums.
    #[error("{0}")]
    ArchiveCorrupt(String),
}

impl From<crate::archive::ArchiveError> for ApiError {
    fn from(e: crate::archive::ArchiveError) -> Self {
        use crate::archive::ArchiveError as E;
        match e {
            E::Unavailable(_) | E::NotConfigured => ApiError::ArchiveUnavailable(e.to_string()),
            E::Corrupt(_) => {
                tracing::error!(error = %e, "a cold read found a damaged segment");
                ApiError::ArchiveCorrupt(e.to_string())
            }
        }
    }
}

impl From<meridian_raft::RaftNodeError> for ApiError {
    fn from(e: meridian_raft::RaftNodeError) -> Self {
        use meridian_raft::RaftNodeError as E;
        match e {
            E::NotLeader { ref leader, .. } => {
                ApiError::NotLeader { leader_hint: leader.client_addr.clone(), message: e.to_string() }
            }
            E::Unavailable { .. } => ApiError::Unavailable(e.to_string()),
            E::Fatal { .. } => {
                tracing::error!(error = %e, "refused a call: the shard is halted on this node");
                ApiError::Halted(e.to_string())
            }
            E::BadRequest(m) => ApiError::Internal(m),
            E::Refused(r) => ApiError::Rejected(r),
        }
    }
}

impl From<meridian_storage::StorageError> for ApiError {
    fn from(e: meridian_storage::StorageError) -> Self {
        tracing::error!(error = %e, "storage read failed");
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Rejected(r) => r.reason.as_str(),
            ApiError::Auth(a) => a.reason(),
            ApiError::Unavailable(_) => reasons::SHARD_UNAVAILABLE,
            ApiError::NotLeader { .. } => reasons::NOT_LEADER,
            ApiError::Halted(_) => reasons::SHARD_HALTED,
            ApiError::Internal(_) => reasons::INTERNAL,
            ApiError::RegionUnavailable(_) => reasons::REGION_UNAVAILABLE,
            ApiError::ArchiveUnavailable(_) => reasons::ARCHIVE_UNAVAILABLE,
            ApiError::ArchiveCorrupt(_) => reasons::ARCHIVE_CORRUPT,
            ApiError::Remote(status) => status
                .metadata()
                .get(meridian_proto::REASON_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| reasons::ALL.iter().find(|known| **known == r).copied())
                .unwrap_or(reasons::INTERNAL),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::Rejected(r) => match r.reason.class() {
                RejectionClass::InvalidArgument => Code::InvalidArgument,
                RejectionClass::NotFound => Code::NotFound,
                RejectionClass::PermissionDenied => Code::PermissionDenied,
                RejectionClass::FailedPrecondition => Code::FailedPrecondition,
                RejectionClass::OutOfRange => Code::OutOfRange,
                RejectionClass::AlreadyExists => Code::AlreadyExists,
                RejectionClass::Unavailable => Code::Unavailable,
            },
            ApiError::Auth(AuthError::Forbidden { .. } | AuthError::ActAsRequired) => Code::PermissionDenied,
            ApiError::Auth(_) => Code::Unauthenticated,
            ApiError::Unavailable(_)
            | ApiError::NotLeader { .. }
            | ApiError::RegionUnavailable(_)
            | ApiError::ArchiveUnavailable(_) => Code::Unavailable,
            ApiError::ArchiveCorrupt(_) => Code::DataLoss,
            ApiError::Remote(status) => status.code(),
            ApiError::Halted(_) | ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        if let ApiError::Remote(remote) = e {
            return remote;
        }
        let reason = e.reason();
        let message = match &e {
            ApiError::Rejected(r) => r.message.clone(),
            other => other.to_string(),
        };
        let leader_hint = match &e {
            ApiError::NotLeader { leader_hint, .. } => leader_hint.clone(),
            _ => String::new(),
        };
        let detail =
            ErrorDetail { reason: reason.to_owned(), message: message.clone(), leader_hint: leader_hint.clone() };
        let mut status = Status::with_details(e.code(), message, detail.encode_to_vec().into());
        if let Ok(v) = reason.parse() {
            status.metadata_mut().insert(meridian_proto::REASON_METADATA_KEY, v);
        }
        if let Some(Ok(v)) = (!leader_hint.is_empty()).then(|| leader_hint.parse()) {
            status.metadata_mut().insert(meridian_proto::LEADER_METADATA_KEY, v);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::Reason;

    /// Every code the server can send is in the list the SDK shares.
    #[test]
    fn every_reason_the_server_sends_is_in_the_shared_list() {
        let mut sent: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        sent.extend(
            [
                AuthError::Missing,
                AuthError::Malformed { detail: "x" },
                AuthError::BadSignature,
                AuthError::Expired { expired_at: 1 },
                AuthError::WrongApp { token_app: "a".into(), expected_app: "b".into() },
                AuthError::Forbidden { principal: "a".into(), requested: "b".into() },
                AuthError::ActAsRequired,
            ]
            .iter()
            .map(AuthError::reason),
        );
        sent.extend([
            ApiError::Unavailable(String::new()).reason(),
            ApiError::NotLeader { message: String::new(), leader_hint: String::new() }.reason(),
            ApiError::Halted(String::new()).reason(),
            ApiError::Internal(String::new()).reason(),
            ApiError::ArchiveUnavailable(String::new()).reason(),
            ApiError::ArchiveCorrupt(String::new()).reason(),
        ]);
        sent.extend([meridian_proto::codec::MALFORMED_REQUEST, meridian_raft::credential::PEER_UNAUTHENTICATED]);
        for code in sent {
            assert!(reasons::ALL.contains(&code), "{code} is not in meridian_proto::reasons::ALL");
        }
    }

    #[test]
    fn rejection_maps_to_code_reason_and_detail() {
        let s: Status = ApiError::from(Rejection::new(Reason::MessageTooLarge, "too big")).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()),
            Some("MESSAGE_TOO_LARGE")
        );
        let d = ErrorDetail::decode(s.details()).unwrap_or_default();
        assert_eq!(d.reason, "MESSAGE_TOO_LARGE");
        let s: Status = ApiError::from(AuthError::Expired { expired_at: 1 }).into();
        assert_eq!(s.code(), Code::Unauthenticated);
    }

    #[test]
    fn typed_raft_errors_keep_their_meaning() {
        use meridian_raft::{LeaderHint, RaftNodeError};
        let not_leader = RaftNodeError::NotLeader {
            shard: 3,
            leader: LeaderHint { node_id: 2, client_addr: "10.0.0.2:7001".into() },
            detail: "forward timed out".into(),
        };
        let s: Status = ApiError::from(not_leader).into();
        assert_eq!(s.code(), Code::Unavailable);
        let meta = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(meta(meridian_proto::REASON_METADATA_KEY).as_deref(), Some("NOT_LEADER"));
        assert_eq!(meta(meridian_proto::LEADER_METADATA_KEY).as_deref(), Some("10.0.0.2:7001"));
        assert_eq!(ErrorDetail::decode(s.details()).unwrap_or_default().leader_hint, "10.0.0.2:7001");

        let s: Status = ApiError::from(RaftNodeError::Fatal { shard: 1, detail: "halted".into() }).into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(
            s.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()),
            Some("SHARD_HALTED")
        );
        assert!(!reasons::RETRYABLE.contains(&"SHARD_HALTED"));
        let s: Status = ApiError::from(RaftNodeError::Unavailable { shard: 1, detail: "x".into() }).into();
        assert!(s.metadata().get(meridian_proto::LEADER_METADATA_KEY).is_none());
    }
}
