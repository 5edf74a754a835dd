//! The storage half of the residency audit: every record a node holds — every column family,
//! the Raft log and the snapshot files — and whose data it is.
//!
//! A record's *subject* is the person whose data it is: an account's user; a conversation's
//! members for its messages, head, read cursors, request-id records and the commands and
//! events that carry them; a conversation list entry's owner. Records without personal data
//! (directory keys, watermarks, outbox marks, the applied state) and effects in an outbox
//! (a reference to a conversation on its way to a member's region, deleted once delivered)
//! are counted but have no subject. The node decides, per subject, whether its home region
//! allows the record to be here.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use meridian_domain::{Command, ConversationId, EffectKind, Event, RegionCode, UserId};
use meridian_proto::durable as pb;
use prost::Message as _;
use rocksdb::IteratorMode;

use crate::codec;
use crate::db::Db;
use crate::error::StorageError;
use crate::keys;
use crate::snapshot::{Records, SnapshotFileHeader, SNAPSHOT_MAGIC};

/// Whose data a record is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    User(UserId),
    Conversation(ConversationId),
}

/// The first record seen of a subject, and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub location: String,
    pub key: String,
    pub what: &'static str,
    pub records: u64,
}

/// What a scan saw.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: u64,
    /// Records that did not decode (counted, never a subject).
    pub unreadable: u64,
    pub subjects: BTreeMap<Subject, Sighting>,
}

impl Scan {
    fn see(&mut self, subject: Subject, location: &str, key: &[u8], what: &'static str) {
        self.subjects.entry(subject).and_modify(|s| s.records += 1).or_insert_with(|| Sighting {
            location: location.to_owned(),
            key: printable(key),
            what,
            records: 1,
        });
    }

    /// The events of an archived segment, read back from the archive (`location` names the
    /// object): each one's subjects, as the hot event log's are.
    pub fn see_archived(&mut self, location: &str, events: &[crate::LoggedEvent]) {
        for logged in events {
            self.records += 1;
            let key = logged.offset.to_string();
            for (subject, what) in event_subjects(&logged.event) {
                self.see(subject, location, key.as_bytes(), what);
            }
        }
    }

    fn classify(&mut self, cf: &str, location: &str, key: &[u8], value: &[u8], region: &RegionCode) {
        self.records += 1;
        let body = key.get(4..).unwrap_or_default();
        let seen = match cf {
            keys::CF_PROJECTIONS => match body.split_first() {
                Some((&keys::PROJ_USER, id)) => user(id).map(|u| (Subject::User(u), "account")),
                Some((&keys::PROJ_PROFILE, id)) => user(id).map(|u| (Subject::User(u), "profile")),
                Some((&keys::PROJ_BLOCKED, rest)) => {
                    prefixed(rest).and_then(|(u, _)| user(u)).map(|u| (Subject::User(u), "blocklist entry"))
                }
                Some((&keys::PROJ_FRIEND, rest)) => {
                    prefixed(rest).and_then(|(u, _)| user(u)).map(|u| (Subject::User(u), "friend list entry"))
                }
                Some((&keys::PROJ_FRIEND_REQUEST, rest)) => {
                    prefixed(rest).and_then(|(u, _)| user(u)).map(|u| (Subject::User(u), "friend request"))
                }
                Some((&keys::PROJ_CONVERSATION_PREFS, rest)) => {
                    prefixed(rest).and_then(|(u, _)| user(u)).map(|u| (Subject::User(u), "conversation settings"))
                }
                Some((&keys::PROJ_HISTORY_VIEW, rest)) => prefixed(rest)
                    .and_then(|(c, _)| conversation(c))
                    .map(|c| (Subject::Conversation(c), "history view")),
                Some((&keys::PROJ_FRIEND_COUNTS, id)) => user(id).map(|u| (Subject::User(u), "friend counts")),
                Some((&keys::PROJ_PAIR_FRIEND, rest)) => prefixed(rest)
                    .and_then(|(c, _)| conversation(c))
                    .map(|c| (Subject::Conversation(c), "conversation friend record")),
                Some((&keys::PROJ_CONVERSATION, id)) => {
                    conversation(id).map(|c| (Subject::Conversation(c), "conversation head"))
                }
                Some((&keys::PROJ_CONVERSATION_REF, rest)) => {
                    prefixed(rest).and_then(|(u, _)| user(u)).map(|u| (Subject::User(u), "conversation list entry"))
                }
                Some((&keys::PROJ_COLD_RANGE, rest)) => prefixed(rest)
                    .and_then(|(c, _)| conversation(c))
                    .map(|c| (Subject::Conversation(c), "archived seq range")),
                Some((&keys::PROJ_RECALL_OVERLAY, rest)) => prefixed(rest)
                    .and_then(|(c, _)| conversation(c))
                    .map(|c| (Subject::Conversation(c), "recall of an archived message")),
                _ => return,
            },
            keys::CF_EVENTS => {
                prefixed(body).and_then(|(c, _)| conversation(c)).map(|c| (Subject::Conversation(c), "message"))
            }
            keys::CF_DEDUP if keys::is_dedup_by_time(key) => prefixed(body.get(9..).unwrap_or_default())
                .and_then(|(c, _)| conversation(c))
                .map(|c| (Subject::Conversation(c), "request-id time index entry")),
            keys::CF_DEDUP => prefixed(body)
                .and_then(|(c, _)| conversation(c))
                .map(|c| (Subject::Conversation(c), "request-id record")),
            keys::CF_EVENT_LOG => match pb::EventRecord::decode(value).map_err(|e| e.to_string()) {
                Ok(record) => match codec::event_from_pb(record) {
                    Ok(event) => {
                        for (subject, what) in event_subjects(&event) {
                            self.see(subject, location, key, what);
                        }
                        return;
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            },
            keys::CF_RAFT_LOG => match pb::LogEntryRecord::decode(value) {
                Ok(pb::LogEntryRecord { payload: Some(pb::log_entry_record::Payload::Normal(batch)), .. }) => {
                    for command in batch.commands {
                        if let Ok(command) = codec::command_from_pb(command, region) {
                            for (subject, what) in command_subjects(&command) {
                                self.see(subject, location, key, what);
                            }
                        }
                    }
                    return;
                }
                Ok(_) => return,
                Err(_) => None,
            },
            _ => return,
        };
        match seen {
            Some((subject, what)) => self.see(subject, location, key, what),
            None => self.unreadable += 1,
        }
    }
}

fn printable(key: &[u8]) -> String {
    key.iter().map(|&b| if b.is_ascii_graphic() { char::from(b).to_string() } else { format!("\\x{b:02x}") }).collect()
}

fn prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    Some((rest.get(..len)?, rest.get(len..)?))
}

fn user(bytes: &[u8]) -> Option<UserId> {
    UserId::parse(std::str::from_utf8(bytes).ok()?).ok()
}

fn conversation(bytes: &[u8]) -> Option<ConversationId> {
    ConversationId::parse(std::str::from_utf8(bytes).ok()?).ok()
}

fn event_subjects(event: &Event) -> Vec<(Subject, &'static str)> {
    match event {
        Event::UserCreated { user, .. } => vec![(Subject::User(user.clone()), "UserCreated event")],
        Event::AccountDeleted { user, .. } => vec![(Subject::User(user.clone()), "AccountDeleted event")],
        Event::MessageSent { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "MessageSent event")]
        }
        Event::MessageRecalled { conversation, .. } | Event::ConversationRestored { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "MessageRecalled event")]
        }
        Event::ReadMarked { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "ReadMarked event")]
        }
        Event::ConversationJoined { user, .. } => vec![(Subject::User(user.clone()), "ConversationJoined event")],
        Event::GroupMemberAdded { user, .. } | Event::GroupMemberRemoved { user, .. } => {
            vec![(Subject::User(user.clone()), "group membership event")]
        }
        Event::TopicMessageSent { sender, .. } => vec![(Subject::User(sender.clone()), "TopicMessageSent event")],
        Event::GroupMessageSent { sender, .. } => vec![(Subject::User(sender.clone()), "GroupMessageSent event")],
        Event::GroupListed { user, .. } | Event::GroupUnlisted { user, .. } => {
            vec![(Subject::User(user.clone()), "group list event")]
        }
        Event::LogicVersionRaised { .. }
        | Event::EpochRaised { .. }
        | Event::SegmentArchived { .. }
        | Event::IdClaimed { .. }
        | Event::GroupCreated { .. }
        | Event::GroupMemberMuted { .. }
        | Event::GroupDismissed { .. }
        | Event::GroupRoleSet { .. }
        | Event::GroupProfileUpdated { .. }
        | Event::GroupMemberInfoSet { .. }
        | Event::GroupJoinRequested { .. }
        | Event::GroupJoinResolved { .. }
        | Event::GroupMutedAll { .. }
        | Event::GroupLiked { .. }
        | Event::TopicCreated { .. }
        | Event::GroupMemberBanned { .. } => vec![],
        Event::UserBlocked { user, .. } => vec![(Subject::User(user.clone()), "UserBlocked event")],
        Event::ProfileUpdated { user, .. } => vec![(Subject::User(user.clone()), "ProfileUpdated event")],
        Event::ConversationBlocked { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "ConversationBlocked event")]
        }
        Event::FriendRequested { user, .. }
        | Event::FriendRequestResolved { user, .. }
        | Event::FriendAdded { user, .. }
        | Event::FriendRemoved { user, .. }
        | Event::FriendRemarked { user, .. } => vec![(Subject::User(user.clone()), "friend event")],
        Event::ConversationPrefsSet { user, .. } => vec![(Subject::User(user.clone()), "ConversationPrefsSet event")],
        Event::HistoryViewSet { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "HistoryViewSet event")]
        }
        Event::ConversationFriended { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "ConversationFriended event")]
        }
    }
}

fn command_subjects(command: &Command) -> Vec<(Subject, &'static str)> {
    match command {
        Command::CreateUser { user, .. } | Command::DeleteAccount { user } => {
            vec![(Subject::User(user.clone()), "account command")]
        }
        Command::SendMessage { sender, recipient, .. } => {
            vec![(Subject::Conversation(ConversationId::c2c(sender, recipient)), "SendMessage command")]
        }
        Command::RecallMessage { conversation, .. }
        | Command::MarkRead { conversation, .. }
        | Command::RestoreConversation { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "conversation command")]
        }
        Command::ApplyEffects { effects, .. } => effects
            .iter()
            .map(|e| match &e.kind {
                EffectKind::ConversationJoined { user, .. }
                | EffectKind::GroupListed { user, .. }
                | EffectKind::GroupUnlisted { user, .. }
                | EffectKind::FriendListed { user, .. }
                | EffectKind::FriendUnlisted { user, .. }
                | EffectKind::FriendGone { user, .. }
                | EffectKind::MemberGone { user, .. } => (Subject::User(user.clone()), "ApplyEffects command"),
                EffectKind::PairBlocked { conversation, .. } | EffectKind::PairFriend { conversation, .. } => {
                    (Subject::Conversation(conversation.clone()), "ApplyEffects command")
                }
            })
            .collect(),
        Command::SendTopicMessage { sender, .. } => vec![(Subject::User(sender.clone()), "SendTopicMessage command")],
        Command::SendGroupMessage { sender, .. } => vec![(Subject::User(sender.clone()), "SendGroupMessage command")],
        Command::AckEffects { .. }
        | Command::SetLogicVersion { .. }
        | Command::RaiseEpoch { .. }
        | Command::HooksSent { .. }
        | Command::ArchiveSegment { .. }
        | Command::ClaimId { .. }
        | Command::CreateGroup { .. }
        | Command::AddGroupMembers { .. }
        | Command::RemoveGroupMember { .. }
        | Command::MuteGroupMember { .. }
        | Command::DismissGroup { .. }
        | Command::SetGroupRole { .. }
        | Command::TransferGroup { .. }
        | Command::SetGroupProfile { .. }
        | Command::SetGroupMemberInfo { .. }
        | Command::ApplyToJoinGroup { .. }
        | Command::RespondJoinRequest { .. }
        | Command::MuteAllGroup { .. }
        | Command::AddGroupLikes { .. }
        | Command::CreateTopic { .. }
        | Command::BanGroupMember { .. } => vec![],
        Command::SetBlocked { user, .. } => vec![(Subject::User(user.clone()), "SetBlocked command")],
        Command::SetProfile { user, .. } => vec![(Subject::User(user.clone()), "SetProfile command")],
        Command::SetConversationPrefs { user, .. } => {
            vec![(Subject::User(user.clone()), "SetConversationPrefs command")]
        }
        Command::ClearHistoryForSelf { conversation, .. } => {
            vec![(Subject::Conversation(conversation.clone()), "ClearHistoryForSelf command")]
        }
        Command::AddFriend { target, .. } => vec![(Subject::User(target.clone()), "AddFriend command")],
        Command::RespondFriendRequest { user, .. }
        | Command::DeleteFriend { user, .. }
        | Command::SetFriendRemark { user, .. } => vec![(Subject::User(user.clone()), "friend command")],
    }
}

/// Scans every record of `db` and every snapshot file in `snapshot_dir`. `region` is the
/// node's region (effects recorded before they named their region came from it).
pub fn scan(db: &Db, snapshot_dir: &Path, region: &RegionCode) -> Result<Scan, StorageError> {
    let mut scan = Scan::default();
    for cf in keys::ALL_CFS {
        for item in db.rocks().iterator_cf(db.cf(cf)?, IteratorMode::Start) {
            let (k, v) = item?;
            scan.classify(cf, cf, &k, &v, region);
        }
    }
    let files = match std::fs::read_dir(snapshot_dir) {
        Ok(dir) => dir.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e.into()),
    };
    for path in files {
        let location = format!("snapshot {}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        scan_snapshot(&mut scan, &path, &location, region);
    }
    Ok(scan)
}

/// The records of one snapshot file: a node's (a header, then the snapshot) or a bare
/// snapshot, read as a stream.
fn scan_snapshot(scan: &mut Scan, path: &Path, location: &str, region: &RegionCode) {
    let mut read = || -> Result<(), StorageError> {
        let mut file = std::fs::File::open(path)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)?;
        file.rewind()?;
        let start = if &magic == SNAPSHOT_MAGIC { 0 } else { SnapshotFileHeader::read(&mut file)?.1 };
        crate::snapshot::verify(&mut file, start)?;
        file.seek(SeekFrom::Start(start))?;
        let (_, mut records) = Records::open(BufReader::new(file))?;
        while let Some((cf, k, v)) = records.next_record()? {
            // Snapshot keys are stored without their shard prefix.
            let mut key = vec![0u8; 4];
            key.extend_from_slice(&k);
            scan.classify(cf, &format!("{location} ({cf})"), &key, &v, region);
        }
        Ok(())
    };
    if read().is_err() {
        scan.unreadable += 1;
    }
}
