//! [`ClientError`]: what a call can fail with, as the server or the network said it.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;

use meridian_proto::api::ErrorDetail;
use meridian_proto::REASON_METADATA_KEY;

/// Reasons with which a node says "not now, try again": a leader election is under way or the
/// shard (or region) has no quorum at the moment. Retried with a backoff.
pub(crate) const RETRYABLE_REASONS: &[&str] = meridian_proto::reasons::RETRYABLE;

/// A failed call.
///
/// Its `Display` is `REASON: message` (the gRPC code name, e.g. `UNAVAILABLE`, when the server
/// gave no reason), which is what the command line prints after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{}: {message}", label(.reason, *.code))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The stable reason from the `x-meridian-reason` metadata (or the status's
        /// `ErrorDetail`); empty when the server gave none.
        reason: String,
        /// What went wrong, for a person.
        message: String,
        /// For `NOT_LEADER`-style errors: the address of a node that can serve; often empty.
        leader_hint: String,
    },
    /// The call failed in the transport (connection refused or reset, protocol error): the
    /// server may or may not have received it.
    #[error("{}: {endpoint}: {message}", code_name(*.code))]
    Transport {
        /// The endpoint that was called.
        endpoint: String,
        /// The code tonic gave the failure (usually `UNAVAILABLE`).
        code: Code,
        /// The transport's description of the failure.
        message: String,
    },
    /// No connection could be opened to an endpoint (the request was never sent).
    #[error("UNAVAILABLE: cannot connect to {endpoint}: {detail}")]
    Connect {
        /// The endpoint that could not be reached.
        endpoint: String,
        /// Why, with the whole chain of causes (tonic's own error says only "transport error").
        detail: String,
        /// The underlying error.
        #[source]
        source: tonic::transport::Error,
    },
    /// An endpoint did not answer within the request timeout.
    #[error("DEADLINE_EXCEEDED: {endpoint} did not answer within {}ms", .timeout.as_millis())]
    Timeout {
        /// The endpoint that was called.
        endpoint: String,
        /// The request timeout that expired.
        timeout: Duration,
    },
    /// An endpoint address is not `host:port` or `http://host:port`.
    #[error("INVALID_ENDPOINT: {endpoint:?}: {detail}")]
    InvalidEndpoint {
        /// The address as given.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A required environment variable is not set.
    #[error("MISSING_ENV: {var} is not set: {hint}")]
    MissingEnv {
        /// The variable's name.
        var: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// The client's configuration cannot work (no endpoints, a token that is not ASCII…).
    #[error("INVALID_CONFIG: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
    /// A retried call was refused, but an earlier attempt of it may have reached the server
    /// and may still take effect (it timed out, or its connection broke after sending): the
    /// refusal of the last attempt does not prove that nothing happened. Retry with the same
    /// request id to learn the outcome.
    #[error("OUTCOME_UNKNOWN: an earlier attempt may have taken effect; the last attempt got {last}")]
    OutcomeUnknown {
        /// The last attempt's refusal.
        last: Box<ClientError>,
    },
    /// A verification the node ran found a difference (e.g. projections that differ from a
    /// replay of the event log).
    #[error("VERIFICATION_FAILED: {detail}")]
    Verification {
        /// What differs, where.
        detail: String,
    },
}

impl ClientError {
    /// The server's stable reason code (e.g. `MESSAGE_TOO_LARGE`), if the server gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Status { reason, .. } if !reason.is_empty() => Some(reason),
            ClientError::OutcomeUnknown { last } => last.reason(),
            _ => None,
        }
    }

    /// The gRPC code of the failure: the server's, or the one a gRPC client conventionally
    /// reports for a local failure (`UNAVAILABLE` for connect errors, `DEADLINE_EXCEEDED` for
    /// timeouts). `None` for configuration errors, which never reached the network.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } | ClientError::Transport { code, .. } => Some(*code),
            ClientError::Connect { .. } => Some(Code::Unavailable),
            ClientError::Timeout { .. } => Some(Code::DeadlineExceeded),
            ClientError::OutcomeUnknown { .. } => Some(Code::Unknown),
            ClientError::InvalidEndpoint { .. }
            | ClientError::MissingEnv { .. }
            | ClientError::InvalidConfig { .. }
            | ClientError::Verification { .. } => None,
        }
    }

    /// The server's message, or the local description of the failure.
    pub fn message(&self) -> String {
        match self {
            ClientError::Status { message, .. } | ClientError::Transport { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when the server refused the call because it cannot serve it right now
    /// (`UNAVAILABLE` with a reason such as `NOT_LEADER`): a retry after a pause may succeed.
    /// `REGION_UNAVAILABLE` is not waited out: see [`ClientError::is_node_fault`].
    pub fn is_retryable_refusal(&self) -> bool {
        matches!(self, ClientError::Status { code: Code::Unavailable, reason, .. }
            if RETRYABLE_REASONS.contains(&reason.as_str()) && reason != meridian_proto::reasons::REGION_UNAVAILABLE)
    }

    /// The client address of the shard's leader, when the server named it (`x-meridian-leader`
    /// or the `ErrorDetail`).
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            ClientError::Status { leader_hint, .. } if !leader_hint.is_empty() => Some(leader_hint),
            _ => None,
        }
    }

    /// True when the node that answered cannot serve the call at all — its replica halted, or
    /// the home region it would forward to is unreachable from it: another endpoint may, at
    /// once, and a retry on the same one will not. A region that is down fails fast: each
    /// endpoint is asked once, with no backoff, and the error is returned.
    pub fn is_node_fault(&self) -> bool {
        matches!(self, ClientError::Status { reason, .. }
            if reason == meridian_proto::reasons::SHARD_HALTED || reason == meridian_proto::reasons::REGION_UNAVAILABLE)
    }

    /// True when the call may have reached a node and taken effect although it failed: it
    /// was sent (not a connect failure) and got no answer, or an answer that does not say it
    /// was refused before being applied.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Timeout { .. } | ClientError::OutcomeUnknown { .. } => true,
            ClientError::Status { code, .. } => {
                matches!(
                    code,
                    Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Aborted
                )
            }
            _ => false,
        }
    }

    /// True when the failure was in reaching a node rather than a node's answer, so another
    /// endpoint may do better.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            ClientError::Status { code, .. } => {
                matches!(code, Code::Unavailable | Code::DeadlineExceeded)
            }
            _ => false,
        }
    }

    /// Converts a status returned for a call to `endpoint`.
    ///
    /// A status that tonic made up from a local transport failure carries the failure as its
    /// source and becomes [`ClientError::Transport`]; a status the server sent becomes
    /// [`ClientError::Status`] with the reason read from the metadata, or from the
    /// [`ErrorDetail`] in the details when the metadata has none.
    pub(crate) fn from_status(status: tonic::Status, endpoint: &str) -> ClientError {
        if std::error::Error::source(&status).is_some() {
            return ClientError::Transport {
                endpoint: endpoint.to_owned(),
                code: status.code(),
                message: status.message().to_owned(),
            };
        }
        ClientError::from(status)
    }
}

/// An error and its causes, joined with `: `.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<tonic::Status> for ClientError {
    /// Reads the server's error: code, reason (metadata first, then `ErrorDetail`), message.
    fn from(status: tonic::Status) -> ClientError {
        let detail = if status.details().is_empty() {
            ErrorDetail::default()
        } else {
            // Details that are not an ErrorDetail (another server, a proxy) are ignored.
            ErrorDetail::decode(status.details()).unwrap_or_default()
        };
        // Metadata first: it survives proxies that drop details.
        let text = |key: &str| {
            let value = status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::trim);
            value.filter(|v| !v.is_empty()).map(str::to_owned)
        };
        let reason = text(REASON_METADATA_KEY).unwrap_or(detail.reason);
        let leader_hint = text(meridian_proto::LEADER_METADATA_KEY).unwrap_or(detail.leader_hint);
        let message = if status.message().is_empty() { detail.message } else { status.message().to_owned() };
        ClientError::Status { code: status.code(), reason, message, leader_hint }
    }
}

fn label(reason: &str, code: Code) -> &str {
    if reason.is_empty() {
        code_name(code)
    } else {
        reason
    }
}

/// The canonical upper-case name of a gRPC code, as other gRPC implementations print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;

    fn status_with_reason(code: Code, message: &str, reason: &'static str) -> tonic::Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(REASON_METADATA_KEY, MetadataValue::from_static(reason));
        tonic::Status::with_metadata(code, message, metadata)
    }

    #[test]
    fn reason_is_read_from_metadata() {
        let status = status_with_reason(
            Code::InvalidArgument,
            "message is 20000 bytes, the limit is 12288",
            "MESSAGE_TOO_LARGE",
        );
        let err = ClientError::from_status(status, "http://n1:7001");
        assert_eq!(err.reason(), Some("MESSAGE_TOO_LARGE"));
        assert_eq!(err.code(), Some(Code::InvalidArgument));
        assert_eq!(err.to_string(), "MESSAGE_TOO_LARGE: message is 20000 bytes, the limit is 12288");
        assert!(!err.is_retryable_refusal());
        assert!(!err.is_unreachable());
    }

    #[test]
    fn reason_falls_back_to_error_detail() {
        let detail = ErrorDetail {
            reason: "NOT_LEADER".into(),
            message: "node 2 is not the leader of shard 3".into(),
            leader_hint: "10.0.0.1:7001".into(),
        };
        let status = tonic::Status::with_details(Code::Unavailable, "", detail.encode_to_vec().into());
        let err = ClientError::from(status);
        match &err {
            ClientError::Status { code, reason, message, leader_hint } => {
                assert_eq!(*code, Code::Unavailable);
                assert_eq!(reason, "NOT_LEADER");
                assert_eq!(message, "node 2 is not the leader of shard 3");
                assert_eq!(leader_hint, "10.0.0.1:7001");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert!(err.is_retryable_refusal());
    }

    #[test]
    fn metadata_reason_wins_over_detail() {
        let detail = ErrorDetail { reason: "FROM_DETAIL".into(), ..ErrorDetail::default() };
        let mut metadata = MetadataMap::new();
        metadata.insert(REASON_METADATA_KEY, MetadataValue::from_static("SHARD_UNAVAILABLE"));
        let status = tonic::Status::with_details_and_metadata(
            Code::Unavailable,
            "shard 1 has no quorum",
            detail.encode_to_vec().into(),
            metadata,
        );
        let err = ClientError::from(status);
        assert_eq!(err.reason(), Some("SHARD_UNAVAILABLE"));
        assert!(err.is_retryable_refusal());
    }

    #[test]
    fn status_without_reason_is_labelled_with_its_code() {
        let err = ClientError::from(tonic::Status::permission_denied("act-as needs an admin"));
        assert_eq!(err.reason(), None);
        assert_eq!(err.to_string(), "PERMISSION_DENIED: act-as needs an admin");
    }

    #[test]
    fn undecodable_details_are_ignored() {
        let status = tonic::Status::with_details(Code::Internal, "boom", vec![0xff, 0xff, 0xff].into());
        let err = ClientError::from(status);
        assert_eq!(err.reason(), None);
        assert_eq!(err.to_string(), "INTERNAL: boom");
    }

    #[test]
    fn unavailable_with_other_reason_is_not_a_retryable_refusal() {
        let status = status_with_reason(Code::Unavailable, "draining", "NODE_DRAINING");
        let err = ClientError::from(status);
        assert!(!err.is_retryable_refusal());
        assert!(err.is_unreachable());
    }
}
