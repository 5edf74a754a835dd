//! The Meridian IM domain: ids, message elements, commands, events, validation and apply.
//!
//! Everything here is pure: no I/O, no clock, no async, no randomness. Apply is deterministic
//! so that every replica of a shard, applying the same command batch to the same state,
//! produces byte-identical results.
//!
//! Module map:
//! - [`ids`]: newtype ids and units (`UserId`, `ConversationId`, `Seq`, `ShardId`, …).
//! - [`element`]: the typed message elements of MSG-01.
//! - [`records`]: the state a shard holds (users, conversations, messages, indexes).
//! - [`command`]: what a client or another shard asks a shard to do.
//! - [`event`]: domain events, the system of record, and their offsets in a shard's log.
//! - [`change`]: what applying a command writes (projection updates, effects).
//! - [`rejection`]: why a command was refused, with stable reason codes.
//! - [`state`]: the read interface apply needs from storage.
//! - [`ingress`]: the stateless rules every command meets before it is proposed.
//! - [`apply`]: validation and apply of one command (decide, then project its events).
//! - [`projector`]: the one fold of events into projections, shared by apply and replay.
//! - [`shard`]: the stable entity → shard hash.
//!
//! Must never depend on: storage, RocksDB, openraft, tokio, tonic or the wire types.

pub mod account;
pub mod apply;
pub mod change;
pub mod command;
pub mod conversation_prefs;
pub mod element;
pub mod event;
pub mod friend;
pub mod group;
pub mod group_admin;
pub mod ids;
pub mod ingress;
pub mod profile;
pub mod projector;
pub mod records;
pub mod rejection;
pub mod shard;
pub mod state;

pub use apply::{apply, Applied, ApplyContext};
pub use change::Change;
pub use command::{Command, Effect, EffectKind, EffectSource, Lane};
pub use element::Element;
pub use event::{Event, EventOffset};
pub use ids::{
    ConversationId, DirectoryKey, EffectId, GroupId, MessageId, RegionCode, RequestId, Seq, ShardId, TimeMs, TopicId,
    UserId,
};
pub use records::{
    AccountRecords, Conversation, ConversationPrefs, ConversationRef, DedupEntry, Friend, FriendCounts, FriendRequest,
    Group, GroupApplication, GroupKind, GroupMember, GroupRef, GroupRole, HistoryView, JoinOption, MemberCursor,
    Message, Topic, User,
};
pub use rejection::{Reason, Rejection, RejectionClass};
pub use state::{ShardState, StateError};
