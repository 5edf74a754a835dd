//! Why a command was refused. A rejection is a value, not a failure: it changes nothing and
//! carries a stable reason code that clients can match on.

use std::fmt;

/// How a rejection maps onto the broad error classes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionClass {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    FailedPrecondition,
    OutOfRange,
    AlreadyExists,
    /// Retryable elsewhere or later: this node cannot serve the call now.
    Unavailable,
}

macro_rules! reasons {
    ($($variant:ident => $code:literal, $class:ident;)+) => {
        /// A stable, machine-readable reason code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// The code as it appears on the wire (`x-meridian-reason`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)+
                }
            }

            /// Parses a code back, e.g. from a forwarded proposal's outcome.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Reason::$variant),)+
                    _ => None,
                }
            }

            pub fn class(self) -> RejectionClass {
                match self {
                    $(Reason::$variant => RejectionClass::$class,)+
                }
            }
        }
    };
}

reasons! {
    UserIdInvalid => "USER_ID_INVALID", InvalidArgument;
    ConversationIdInvalid => "CONVERSATION_ID_INVALID", InvalidArgument;
    RegionInvalid => "REGION_INVALID", InvalidArgument;
    RegionNotServed => "REGION_NOT_SERVED", FailedPrecondition;
    RequestIdInvalid => "REQUEST_ID_INVALID", InvalidArgument;
    NicknameTooLong => "NICKNAME_TOO_LONG", InvalidArgument;
    MessageEmpty => "MESSAGE_EMPTY", InvalidArgument;
    MessageTooLarge => "MESSAGE_TOO_LARGE", InvalidArgument;
    ElementInvalid => "ELEMENT_INVALID", InvalidArgument;
    PeerIsSelf => "PEER_IS_SELF", InvalidArgument;
    UnknownUser => "UNKNOWN_USER", NotFound;
    ConversationNotFound => "CONVERSATION_NOT_FOUND", NotFound;
    NotAMember => "NOT_A_MEMBER", PermissionDenied;
    MessageNotFound => "MESSAGE_NOT_FOUND", NotFound;
    NotMessageSender => "NOT_MESSAGE_SENDER", PermissionDenied;
    RecallWindowExpired => "RECALL_WINDOW_EXPIRED", FailedPrecondition;
    AlreadyRecalled => "ALREADY_RECALLED", FailedPrecondition;
    SeqOutOfRange => "SEQ_OUT_OF_RANGE", OutOfRange;
    BadSeqRange => "BAD_SEQ_RANGE", InvalidArgument;
    WrongShard => "WRONG_SHARD", FailedPrecondition;
    PageLimitInvalid => "PAGE_LIMIT_INVALID", InvalidArgument;
    NodeInvalid => "NODE_INVALID", InvalidArgument;
    ShardOutOfRange => "SHARD_OUT_OF_RANGE", InvalidArgument;
    MalformedCommand => "MALFORMED_COMMAND", InvalidArgument;
    LogicVersionUnsupported => "LOGIC_VERSION_UNSUPPORTED", FailedPrecondition;
    UserExists => "USER_EXISTS", AlreadyExists;
    ResidencyViolation => "RESIDENCY_VIOLATION", FailedPrecondition;
    DirectoryKeyInvalid => "DIRECTORY_KEY_INVALID", InvalidArgument;
    GroupIdInvalid => "GROUP_ID_INVALID", InvalidArgument;
    GroupNameInvalid => "GROUP_NAME_INVALID", InvalidArgument;
    GroupTypeInvalid => "GROUP_TYPE_INVALID", InvalidArgument;
    GroupRoleInvalid => "GROUP_ROLE_INVALID", InvalidArgument;
    Blocked => "BLOCKED", PermissionDenied;
    BlocklistLimit => "BLOCKLIST_LIMIT", FailedPrecondition;
    ProfileFieldInvalid => "PROFILE_FIELD_INVALID", InvalidArgument;
    GroupNotFound => "GROUP_NOT_FOUND", NotFound;
    GroupExists => "GROUP_EXISTS", AlreadyExists;
    NotGroupMember => "NOT_GROUP_MEMBER", PermissionDenied;
    GroupMemberLimit => "GROUP_MEMBER_LIMIT", FailedPrecondition;
    PermissionDenied => "PERMISSION_DENIED", PermissionDenied;
    MemberMuted => "MEMBER_MUTED", PermissionDenied;
    GroupDismissed => "GROUP_DISMISSED", FailedPrecondition;
    NotFriend => "NOT_FRIEND", PermissionDenied;
    FriendAddDenied => "FRIEND_ADD_DENIED", PermissionDenied;
    FriendLimit => "FRIEND_LIMIT", FailedPrecondition;
    FriendRequestLimit => "FRIEND_REQUEST_LIMIT", FailedPrecondition;
    FriendRequestNotFound => "FRIEND_REQUEST_NOT_FOUND", NotFound;
    FriendFieldInvalid => "FRIEND_FIELD_INVALID", InvalidArgument;
    GroupFieldInvalid => "GROUP_FIELD_INVALID", InvalidArgument;
    MemberBanned => "MEMBER_BANNED", PermissionDenied;
    GroupApplicationLimit => "GROUP_APPLICATION_LIMIT", FailedPrecondition;
    GroupApplicationNotFound => "GROUP_APPLICATION_NOT_FOUND", NotFound;
    ReadReceiptsUnavailable => "READ_RECEIPTS_UNAVAILABLE", FailedPrecondition;
    ConversationFieldInvalid => "CONVERSATION_FIELD_INVALID", InvalidArgument;
    DeletedMessagesLimit => "DELETED_MESSAGES_LIMIT", FailedPrecondition;
    TopicInvalid => "TOPIC_INVALID", InvalidArgument;
    TopicNotFound => "TOPIC_NOT_FOUND", NotFound;
    JoinedGroupsLimit => "JOINED_GROUPS_LIMIT", FailedPrecondition;
    UserDeleted => "USER_DELETED", NotFound;
    SyncTokenInvalid => "SYNC_TOKEN_INVALID", InvalidArgument;
    CallbackRejected => "CALLBACK_REJECTED", PermissionDenied;
    CallbackFailed => "CALLBACK_FAILED", FailedPrecondition;
    ArchiveRangeMismatch => "ARCHIVE_RANGE_MISMATCH", FailedPrecondition;
    RegionStandby => "REGION_STANDBY", Unavailable;
    RegionFenced => "REGION_FENCED", Unavailable;
    RegionSwitching => "REGION_SWITCHING", Unavailable;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: a reason code and a sentence for a person that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in [Reason::MessageTooLarge, Reason::UnknownUser, Reason::RecallWindowExpired] {
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_code("NOPE"), None);
    }
}
