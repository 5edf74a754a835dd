//! Newtype ids and units. Each validates its invariants on construction; inside the domain a
//! value of these types is trusted.

use std::fmt;

use crate::rejection::{Reason, Rejection};

/// Longest user id, in bytes (REL-01).
pub const MAX_USER_ID_BYTES: usize = 32;
/// Longest client request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// A user id: 1..=32 bytes of ASCII letters, digits, `_`, `-`, `.` or `@`.
///
/// The alphabet is narrower than "any bytes" on purpose: ids appear in keys, URLs, logs and
/// conversation ids (`c2c:` + two ids joined by `:`), and a narrow alphabet keeps all of
/// those unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        if s.is_empty() || s.len() > MAX_USER_ID_BYTES {
            return Err(Rejection::new(
                Reason::UserIdInvalid,
                format!("user id must be 1..={MAX_USER_ID_BYTES} bytes, got {}", s.len()),
            ));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))) {
            return Err(Rejection::new(
                Reason::UserIdInvalid,
                format!("user id {s:?} contains {c:?}; allowed: ASCII letters, digits, _ - . @"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation id. A one-to-one (C2C) conversation is `c2c:{a}:{b}` with `a < b`, so both
/// sides name the same conversation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId(String);

impl ConversationId {
    /// The C2C conversation between two distinct users.
    pub fn c2c(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self(format!("c2c:{lo}:{hi}"))
    }

    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let bad = || {
            Rejection::new(
                Reason::ConversationIdInvalid,
                format!("{s:?} is not a conversation id (expected c2c:USER:USER)"),
            )
        };
        let rest = s.strip_prefix("c2c:").ok_or_else(bad)?;
        let (a, b) = rest.split_once(':').ok_or_else(bad)?;
        let (a, b) = (UserId::parse(a)?, UserId::parse(b)?);
        if a >= b {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }

    /// The two members of a C2C conversation, in id order.
    pub fn c2c_members(&self) -> Option<(UserId, UserId)> {
        let rest = self.0.strip_prefix("c2c:")?;
        let (a, b) = rest.split_once(':')?;
        Some((UserId::parse(a).ok()?, UserId::parse(b).ok()?))
    }

    /// The other member of a C2C conversation, seen from `me`.
    pub fn peer_of(&self, me: &UserId) -> Option<UserId> {
        let (a, b) = self.c2c_members()?;
        if &a == me {
            Some(b)
        } else if &b == me {
            Some(a)
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's position in its conversation: 1, 2, 3… without gaps. `Seq(0)` means "none yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One Raft group of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A residency zone code such as `sg`, `kr`, `de`: 2..=16 of `[a-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let ok =
            (2..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(Rejection::new(
                Reason::RegionInvalid,
                format!("{s:?} is not a region code (2..=16 of a-z, 0-9, -)"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The directory's name for a user or group id: a keyed hash (hex SHA-256 HMAC under the
/// deployment's link secret) of the id. It is what crosses region borders to claim an id
/// and to look up its home region; the id itself never does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectoryKey(String);

impl DirectoryKey {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Rejection::new(
                Reason::DirectoryKeyInvalid,
                format!("{s:?} is not a directory key (64 lowercase hex digits)"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DirectoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message id, unique across regions and epochs.
///
/// From logic version 2 on it is `{region}.{epoch}.{shard}.{log index}.{position}` (shard
/// in decimal, index and position in hex): the region that accepted the send, the region's
/// epoch (a promotion of a standby bumps it, so ids minted after a failover never repeat
/// one minted before), and the entry and position that carried the send. Logic version 1
/// minted `{shard}-{index}-{position}` (hex), unique within a region only; such ids stay
/// as they were stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// The id of a send at `position` of entry `log_index` of `shard`, under `logic_version`.
    pub fn new(
        region: &RegionCode,
        epoch: u32,
        shard: ShardId,
        log_index: u64,
        position: usize,
        logic_version: u32,
    ) -> Self {
        if logic_version >= 2 {
            Self(format!("{region}.{epoch}.{}.{log_index:x}.{position:x}", shard.0))
        } else {
            Self(format!("{:x}-{log_index:x}-{position:x}", shard.0))
        }
    }

    /// Wraps a stored id (read back from disk; no validation needed).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen idempotency key: 1..=64 bytes of printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        if s.is_empty() || s.len() > MAX_REQUEST_ID_BYTES || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Rejection::new(
                Reason::RequestIdInvalid,
                format!("request id must be 1..={MAX_REQUEST_ID_BYTES} printable ASCII bytes"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Milliseconds since the Unix epoch, as assigned by a shard leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeMs(pub i64);

/// An effect's id, increasing per source shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EffectId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_limits() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse(&"a".repeat(32)).is_ok());
        let long = UserId::parse(&"a".repeat(33));
        assert_eq!(long.map_err(|r| r.reason), Err(Reason::UserIdInvalid));
        assert_eq!(UserId::parse("").map_err(|r| r.reason), Err(Reason::UserIdInvalid));
        assert_eq!(UserId::parse("a:b").map_err(|r| r.reason), Err(Reason::UserIdInvalid));
    }

    #[test]
    fn c2c_id_is_symmetric_and_parses_back() {
        let a = UserId::parse("zoe").map_err(|r| r.message);
        let b = UserId::parse("adam").map_err(|r| r.message);
        let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
        let c = ConversationId::c2c(&a, &b);
        assert_eq!(c, ConversationId::c2c(&b, &a));
        assert_eq!(c.as_str(), "c2c:adam:zoe");
        assert_eq!(ConversationId::parse(c.as_str()).ok(), Some(c.clone()));
        assert_eq!(c.peer_of(&a), Some(b.clone()));
        assert!(ConversationId::parse("c2c:zoe:adam").is_err());
    }
}
