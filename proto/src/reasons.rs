//! Every stable reason code a Meridian server puts in `x-meridian-reason` (and in the
//! `ErrorDetail` of a status), in one list that the server and the SDK share. The server's
//! own definitions (domain rejections, auth failures, API errors) are checked against it by a
//! test, so a code the server sends is always one the SDK knows; the SDK decides what to
//! retry from [`RETRYABLE`].

// Retryable: the request did not take effect and may succeed on another attempt.
pub const SHARD_UNAVAILABLE: &str = "SHARD_UNAVAILABLE";
pub const NOT_LEADER: &str = "NOT_LEADER";
pub const REGION_UNAVAILABLE: &str = "REGION_UNAVAILABLE";

// Requests and the doors.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
pub const PEER_UNAUTHENTICATED: &str = "PEER_UNAUTHENTICATED";
pub const LINK_UNAUTHENTICATED: &str = "LINK_UNAUTHENTICATED";
/// Two regions were started on different topology files.
pub const TOPOLOGY_MISMATCH: &str = "TOPOLOGY_MISMATCH";
pub const INTERNAL: &str = "INTERNAL";
/// This node's replica of the shard has stopped (a storage failure, or an entry of a logic
/// version this node does not implement): not retryable on this node, another may serve.
pub const SHARD_HALTED: &str = "SHARD_HALTED";

// Tokens and permissions.
pub const TOKEN_MISSING: &str = "TOKEN_MISSING";
pub const TOKEN_MALFORMED: &str = "TOKEN_MALFORMED";
pub const TOKEN_BAD_SIGNATURE: &str = "TOKEN_BAD_SIGNATURE";
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
pub const TOKEN_WRONG_APP: &str = "TOKEN_WRONG_APP";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const ACT_AS_REQUIRED: &str = "ACT_AS_REQUIRED";

// Rejections by the domain's rules (a rejected command changes nothing).
pub const USER_ID_INVALID: &str = "USER_ID_INVALID";
pub const CONVERSATION_ID_INVALID: &str = "CONVERSATION_ID_INVALID";
pub const REGION_INVALID: &str = "REGION_INVALID";
pub const REGION_NOT_SERVED: &str = "REGION_NOT_SERVED";
pub const REQUEST_ID_INVALID: &str = "REQUEST_ID_INVALID";
pub const NICKNAME_TOO_LONG: &str = "NICKNAME_TOO_LONG";
pub const MESSAGE_EMPTY: &str = "MESSAGE_EMPTY";
pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
pub const ELEMENT_INVALID: &str = "ELEMENT_INVALID";
pub const PEER_IS_SELF: &str = "PEER_IS_SELF";
pub const UNKNOWN_USER: &str = "UNKNOWN_USER";
pub const CONVERSATION_NOT_FOUND: &str = "CONVERSATION_NOT_FOUND";
pub const NOT_A_MEMBER: &str = "NOT_A_MEMBER";
pub const MESSAGE_NOT_FOUND: &str = "MESSAGE_NOT_FOUND";
pub const NOT_MESSAGE_SENDER: &str = "NOT_MESSAGE_SENDER";
pub const RECALL_WINDOW_EXPIRED: &str = "RECALL_WINDOW_EXPIRED";
pub const ALREADY_RECALLED: &str = "ALREADY_RECALLED";
pub const SEQ_OUT_OF_RANGE: &str = "SEQ_OUT_OF_RANGE";
pub const BAD_SEQ_RANGE: &str = "BAD_SEQ_RANGE";
pub const WRONG_SHARD: &str = "WRONG_SHARD";
pub const PAGE_LIMIT_INVALID: &str = "PAGE_LIMIT_INVALID";
pub const NODE_INVALID: &str = "NODE_INVALID";
pub const SHARD_OUT_OF_RANGE: &str = "SHARD_OUT_OF_RANGE";
pub const MALFORMED_COMMAND: &str = "MALFORMED_COMMAND";
pub const LOGIC_VERSION_UNSUPPORTED: &str = "LOGIC_VERSION_UNSUPPORTED";
pub const USER_EXISTS: &str = "USER_EXISTS";
pub const RESIDENCY_VIOLATION: &str = "RESIDENCY_VIOLATION";
pub const DIRECTORY_KEY_INVALID: &str = "DIRECTORY_KEY_INVALID";
pub const GROUP_ID_INVALID: &str = "GROUP_ID_INVALID";
pub const GROUP_NAME_INVALID: &str = "GROUP_NAME_INVALID";
pub const GROUP_TYPE_INVALID: &str = "GROUP_TYPE_INVALID";
pub const GROUP_ROLE_INVALID: &str = "GROUP_ROLE_INVALID";
pub const BLOCKED: &str = "BLOCKED";
pub const NOT_FRIEND: &str = "NOT_FRIEND";
pub const FRIEND_ADD_DENIED: &str = "FRIEND_ADD_DENIED";
pub const FRIEND_LIMIT: &str = "FRIEND_LIMIT";
pub const FRIEND_REQUEST_LIMIT: &str = "FRIEND_REQUEST_LIMIT";
pub const FRIEND_REQUEST_NOT_FOUND: &str = "FRIEND_REQUEST_NOT_FOUND";
pub const FRIEND_FIELD_INVALID: &str = "FRIEND_FIELD_INVALID";
pub const GROUP_FIELD_INVALID: &str = "GROUP_FIELD_INVALID";
pub const MEMBER_BANNED: &str = "MEMBER_BANNED";
pub const GROUP_APPLICATION_LIMIT: &str = "GROUP_APPLICATION_LIMIT";
pub const GROUP_APPLICATION_NOT_FOUND: &str = "GROUP_APPLICATION_NOT_FOUND";
pub const READ_RECEIPTS_UNAVAILABLE: &str = "READ_RECEIPTS_UNAVAILABLE";
pub const CONVERSATION_FIELD_INVALID: &str = "CONVERSATION_FIELD_INVALID";
pub const DELETED_MESSAGES_LIMIT: &str = "DELETED_MESSAGES_LIMIT";
pub const TOPIC_INVALID: &str = "TOPIC_INVALID";
pub const TOPIC_NOT_FOUND: &str = "TOPIC_NOT_FOUND";
pub const JOINED_GROUPS_LIMIT: &str = "JOINED_GROUPS_LIMIT";
/// The account was deleted (REL-01); its id is never given to another account.
pub const USER_DELETED: &str = "USER_DELETED";
/// A Subscribe token that does not decode: subscribe without one (a full catch-up).
pub const SYNC_TOKEN_INVALID: &str = "SYNC_TOKEN_INVALID";
/// The app's before-callback (DLV-04) refused the request; the message carries its reason.
pub const CALLBACK_REJECTED: &str = "CALLBACK_REJECTED";
/// A fail-closed before-callback did not answer in time or answered nonsense: nothing was done.
pub const CALLBACK_FAILED: &str = "CALLBACK_FAILED";
/// An archive command named a range that is not the shard's next hot range, or whose events
/// differ from this replica's (a stale or repeated seal): nothing was archived.
pub const ARCHIVE_RANGE_MISMATCH: &str = "ARCHIVE_RANGE_MISMATCH";
/// This node is its region's standby (disaster recovery): it takes no writes until the
/// region is promoted to it. Retry through another endpoint.
pub const REGION_STANDBY: &str = "REGION_STANDBY";
/// This node's side of its region was fenced: the region was promoted to its standby, which
/// serves it now. Nothing was done; retry through another endpoint.
pub const REGION_FENCED: &str = "REGION_FENCED";
/// The region is switching back to its primary (a failback): writes pause for a moment.
pub const REGION_SWITCHING: &str = "REGION_SWITCHING";
/// Cold history (in the archive's object store) could not be read right now: the store is
/// unreachable or timed out. Hot data is unaffected; retry later.
pub const ARCHIVE_UNAVAILABLE: &str = "ARCHIVE_UNAVAILABLE";
/// An archived segment failed its checksums: the object was damaged or replaced.
pub const ARCHIVE_CORRUPT: &str = "ARCHIVE_CORRUPT";
pub const BLOCKLIST_LIMIT: &str = "BLOCKLIST_LIMIT";
pub const PROFILE_FIELD_INVALID: &str = "PROFILE_FIELD_INVALID";
pub const GROUP_NOT_FOUND: &str = "GROUP_NOT_FOUND";
pub const GROUP_EXISTS: &str = "GROUP_EXISTS";
pub const NOT_GROUP_MEMBER: &str = "NOT_GROUP_MEMBER";
pub const GROUP_MEMBER_LIMIT: &str = "GROUP_MEMBER_LIMIT";
pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
pub const MEMBER_MUTED: &str = "MEMBER_MUTED";
pub const GROUP_DISMISSED: &str = "GROUP_DISMISSED";

/// The codes whose request may be retried as it is: nothing took effect.
pub const RETRYABLE: &[&str] = &[
    SHARD_UNAVAILABLE,
    NOT_LEADER,
    REGION_UNAVAILABLE,
    ARCHIVE_UNAVAILABLE,
    REGION_STANDBY,
    REGION_FENCED,
    REGION_SWITCHING,
];

/// Every code, in the order above.
pub const ALL: &[&str] = &[
    SHARD_UNAVAILABLE,
    NOT_LEADER,
    REGION_UNAVAILABLE,
    MALFORMED_REQUEST,
    PEER_UNAUTHENTICATED,
    LINK_UNAUTHENTICATED,
    TOPOLOGY_MISMATCH,
    INTERNAL,
    SHARD_HALTED,
    TOKEN_MISSING,
    TOKEN_MALFORMED,
    TOKEN_BAD_SIGNATURE,
    TOKEN_EXPIRED,
    TOKEN_WRONG_APP,
    FORBIDDEN,
    ACT_AS_REQUIRED,
    USER_ID_INVALID,
    CONVERSATION_ID_INVALID,
    REGION_INVALID,
    REGION_NOT_SERVED,
    REQUEST_ID_INVALID,
    NICKNAME_TOO_LONG,
    MESSAGE_EMPTY,
    MESSAGE_TOO_LARGE,
    ELEMENT_INVALID,
    PEER_IS_SELF,
    UNKNOWN_USER,
    CONVERSATION_NOT_FOUND,
    NOT_A_MEMBER,
    MESSAGE_NOT_FOUND,
    NOT_MESSAGE_SENDER,
    RECALL_WINDOW_EXPIRED,
    ALREADY_RECALLED,
    SEQ_OUT_OF_RANGE,
    BAD_SEQ_RANGE,
    WRONG_SHARD,
    PAGE_LIMIT_INVALID,
    NODE_INVALID,
    SHARD_OUT_OF_RANGE,
    MALFORMED_COMMAND,
    LOGIC_VERSION_UNSUPPORTED,
    USER_EXISTS,
    RESIDENCY_VIOLATION,
    DIRECTORY_KEY_INVALID,
    GROUP_ID_INVALID,
    GROUP_NAME_INVALID,
    GROUP_TYPE_INVALID,
    GROUP_ROLE_INVALID,
    BLOCKED,
    NOT_FRIEND,
    FRIEND_ADD_DENIED,
    FRIEND_LIMIT,
    FRIEND_REQUEST_LIMIT,
    FRIEND_REQUEST_NOT_FOUND,
    FRIEND_FIELD_INVALID,
    GROUP_FIELD_INVALID,
    MEMBER_BANNED,
    GROUP_APPLICATION_LIMIT,
    GROUP_APPLICATION_NOT_FOUND,
    READ_RECEIPTS_UNAVAILABLE,
    CONVERSATION_FIELD_INVALID,
    DELETED_MESSAGES_LIMIT,
    TOPIC_INVALID,
    TOPIC_NOT_FOUND,
    JOINED_GROUPS_LIMIT,
    USER_DELETED,
    SYNC_TOKEN_INVALID,
    CALLBACK_REJECTED,
    CALLBACK_FAILED,
    ARCHIVE_RANGE_MISMATCH,
    REGION_STANDBY,
    REGION_FENCED,
    REGION_SWITCHING,
    ARCHIVE_UNAVAILABLE,
    ARCHIVE_CORRUPT,
    BLOCKLIST_LIMIT,
    PROFILE_FIELD_INVALID,
    GROUP_NOT_FOUND,
    GROUP_EXISTS,
    NOT_GROUP_MEMBER,
    GROUP_MEMBER_LIMIT,
    PERMISSION_DENIED,
    MEMBER_MUTED,
    GROUP_DISMISSED,
];
