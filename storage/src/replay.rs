//! Replay: rebuilds a shard's projections from its event log alone, in scratch memory, with
//! the one projector apply uses (`meridian_domain::projector`), and compares the result with
//! the live projections, key by key, at one point in time.
//!
//! Projections here are the records events add up to: accounts, conversation heads and
//! cursors and users' conversation lists (`projections`, tags `u`, `c`, `r`), the history
//! (`events`) and request-id records (`dedup`). Effect watermarks and the outbox are delivery
//! bookkeeping, not projections, and are left out; so are the request-id time index and the
//! request-id records at or before the shard's expiry mark (expired live, kept by a replay).

use std::collections::BTreeMap;

use meridian_domain::projector::project;
use meridian_domain::*;
use meridian_proto::durable as pb;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::codec;
use crate::error::{decode_record, StorageError, Versioned};
use crate::keys;
use crate::shard::{projection_record, KeyValue, RecordReader, ShardStore, StateView};

/// The outcome of verifying one shard's projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionCheck {
    pub shard: ShardId,
    /// The applied index the check read at.
    pub applied_index: u64,
    /// Events replayed.
    pub events: u64,
    /// Projection keys compared (the larger of the live and replayed counts).
    pub keys: u64,
    /// The first key, in key order, where live and replayed projections differ.
    pub difference: Option<Difference>,
}

/// One key where the live projections and the replay disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub column_family: &'static str,
    /// The key without its shard prefix.
    pub key: Vec<u8>,
    /// The live value (`None`: the key is missing live).
    pub live: Option<Vec<u8>>,
    /// The replayed value (`None`: the replay has no such key).
    pub replayed: Option<Vec<u8>>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (&self.live, &self.replayed) {
            (Some(_), None) => "present live, absent from the replay",
            (None, Some(_)) => "absent live, present in the replay",
            _ => "values differ",
        };
        write!(f, "{}/{}: {what}", self.column_family, printable(&self.key))
    }
}

/// A key as text: printable ASCII as is, other bytes as `\xNN`.
pub fn printable(key: &[u8]) -> String {
    key.iter()
        .map(
            |&b| {
                if (0x21..0x7f).contains(&b) && b != b'\\' {
                    char::from(b).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            },
        )
        .collect()
}

type Records = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

/// Replayed projections, readable by the projector as a shard's state.
struct Scratch {
    shard: ShardId,
    records: Records,
}

impl RecordReader for Scratch {
    fn shard_id(&self) -> ShardId {
        self.shard
    }

    fn read_record<M: prost::Message + Default + Versioned>(
        &self,
        cf: &'static str,
        key: Vec<u8>,
        what: &'static str,
    ) -> Result<Option<M>, StateError> {
        self.records.get(&(cf, key)).map(|v| decode_record(what, v)).transpose().map_err(|e| StateError(e.to_string()))
    }

    fn scan_records(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        Ok(self
            .records
            .range((cf, prefix.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Whether a key of `cf` belongs to the projections events rebuild.
fn is_projection(cf: &str, key: &[u8]) -> bool {
    match cf {
        keys::CF_EVENTS => true,
        // The request-id time index is expiry's bookkeeping, not a projection.
        keys::CF_DEDUP => !keys::is_dedup_by_time(key),
        keys::CF_PROJECTIONS => {
            matches!(
                key.get(4),
                Some(
                    &keys::PROJ_USER
                        | &keys::PROJ_CONVERSATION
                        | &keys::PROJ_CONVERSATION_REF
                        | &keys::PROJ_DIRECTORY
                        | &keys::PROJ_GROUP
                        | &keys::PROJ_GROUP_MEMBER
                        | &keys::PROJ_GROUP_REF
                        | &keys::PROJ_BLOCKED
                        | &keys::PROJ_PAIR_BLOCK
                        | &keys::PROJ_PROFILE
                        | &keys::PROJ_BLOCK_COUNT
                        | &keys::PROJ_FRIEND
                        | &keys::PROJ_FRIEND_REQUEST
                        | &keys::PROJ_FRIEND_COUNTS
                        | &keys::PROJ_PAIR_FRIEND
                        | &keys::PROJ_GROUP_APPLICATION
                        | &keys::PROJ_GROUP_BAN
                        | &keys::PROJ_CONVERSATION_PREFS
                        | &keys::PROJ_HISTORY_VIEW
                        | &keys::PROJ_TOPIC
                        | &keys::PROJ_TOPIC_CURSOR
                        | &keys::PROJ_ARCHIVED_SEGMENT
                        | &keys::PROJ_COLD_RANGE
                        | &keys::PROJ_RECALL_OVERLAY
                )
            )
        }
        _ => false,
    }
}

impl ShardStore {
    /// Rebuilds this shard's projections from its event log into scratch memory and compares
    /// them with the live ones, both read from one RocksDB snapshot. A shard with archived
    /// segments needs [`ShardStore::verify_projections_with`].
    pub fn verify_projections(&self) -> Result<ProjectionCheck, StorageError> {
        self.verify_projections_with(&|_| None)
    }

    /// As [`ShardStore::verify_projections`], replaying the archived segments the manifest
    /// names first: `cold` gives each segment's events in log order (fetched beforehand). A
    /// segment it has no events for is an error naming it (the caller fetches and retries).
    pub fn verify_projections_with(
        &self,
        cold: &dyn Fn(&meridian_domain::records::ArchivedSegment) -> Option<Vec<Event>>,
    ) -> Result<ProjectionCheck, StorageError> {
        let db = self.db();
        let shard = self.shard();
        let snap = db.rocks().snapshot();
        let read_options = || {
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snap);
            ro.set_iterate_upper_bound(keys::shard_end(shard));
            ro
        };
        let from = keys::shard_prefix(shard);
        let applied: pb::AppliedState = match db.rocks().get_cf_opt(
            db.cf(keys::CF_RAFT_META)?,
            keys::meta(shard, keys::META_APPLIED),
            &read_options(),
        )? {
            Some(v) => decode_record("applied state", &v)?,
            None => pb::AppliedState::default(),
        };

        let mut scratch = Scratch { shard, records: Records::new() };
        let mut events = 0u64;
        let mut fold = |scratch: &mut Scratch, event: &Event| -> Result<(), StorageError> {
            let changes = project(&StateView(&*scratch), event).map_err(|e| StorageError::corrupt("replay", e.0))?;
            for change in changes {
                if let Some((cf, key, value)) = projection_record(shard, &change) {
                    scratch.records.insert((cf, key), value);
                } else if let Some((cf, key)) = crate::shard::projection_delete(shard, &change) {
                    scratch.records.remove(&(cf, key));
                }
            }
            events += 1;
            Ok(())
        };
        let manifest_prefix = keys::archived_segments(shard);
        let manifest = db.rocks().iterator_cf_opt(
            db.cf(keys::CF_PROJECTIONS)?,
            read_options(),
            IteratorMode::From(&manifest_prefix, Direction::Forward),
        );
        for item in manifest {
            let (key, value) = item?;
            if !key.starts_with(&manifest_prefix) {
                break;
            }
            let segment = codec::archived_segment_from_pb(decode_record("archived segment", &value)?)?;
            let Some(cold_events) = cold(&segment) else {
                return Err(StorageError::corrupt(
                    "replay",
                    format!("no events given for archived segment {}", segment.key),
                ));
            };
            for event in &cold_events {
                fold(&mut scratch, event)?;
            }
        }
        let log = db.rocks().iterator_cf_opt(
            db.cf(keys::CF_EVENT_LOG)?,
            read_options(),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in log {
            let (_, value) = item?;
            let event = codec::event_from_pb(decode_record("event", &value)?)?;
            fold(&mut scratch, &event)?;
        }

        let mut live = Records::new();
        for cf in [keys::CF_EVENTS, keys::CF_PROJECTIONS, keys::CF_DEDUP] {
            let iter =
                db.rocks().iterator_cf_opt(db.cf(cf)?, read_options(), IteratorMode::From(&from, Direction::Forward));
            for item in iter {
                let (key, value) = item?;
                if is_projection(cf, &key) {
                    live.insert((cf, key.to_vec()), value.to_vec());
                }
            }
        }

        // Request-id records expire (logic version 4) where the event log knows nothing of it:
        // those at or before the shard's expiry mark are left out on both sides.
        if !applied.request_ids_expired_through.is_empty() {
            let mut mark = keys::shard_prefix(shard);
            mark.extend_from_slice(&applied.request_ids_expired_through);
            let expired = |(cf, key): &(&'static str, Vec<u8>), value: &Vec<u8>| {
                *cf == keys::CF_DEDUP
                    && decode_record::<pb::DedupRecord>("dedup", value)
                        .is_ok_and(|r| keys::dedup_by_time(r.time_ms, key) <= mark)
            };
            live.retain(|k, v| !expired(k, v));
            scratch.records.retain(|k, v| !expired(k, v));
        }
        let keys = live.len().max(scratch.records.len()) as u64;
        let difference = first_difference(&live, &scratch.records);
        Ok(ProjectionCheck {
            shard,
            applied_index: applied.last_applied.map_or(0, |l| l.index),
            events,
            keys,
            difference,
        })
    }
}

/// The first (column family, key), in order, whose presence or value differs.
fn first_difference(live: &Records, replayed: &Records) -> Option<Difference> {
    let mut a = live.iter().peekable();
    let mut b = replayed.iter().peekable();
    let difference = |cf: &'static str, key: &[u8], live: Option<&Vec<u8>>, replayed: Option<&Vec<u8>>| Difference {
        column_family: cf,
        key: key.get(4..).unwrap_or_default().to_vec(),
        live: live.cloned(),
        replayed: replayed.cloned(),
    };
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(((cf, key), v)), None) => return Some(difference(cf, key, Some(v), None)),
            (None, Some(((cf, key), v))) => return Some(difference(cf, key, None, Some(v))),
            (Some((ka, va)), Some((kb, vb))) => {
                if ka < kb {
                    return Some(difference(ka.0, &ka.1, Some(va), None));
                }
                if kb < ka {
                    return Some(difference(kb.0, &kb.1, None, Some(vb)));
                }
                if va != vb {
                    return Some(difference(ka.0, &ka.1, Some(va), Some(vb)));
                }
                a.next();
                b.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replay proves the projections: after a workload every shard's live projections equal
    //! a rebuild from its event log alone; a corrupted, missing or extra projection key is named.
    #![allow(clippy::unwrap_used)]

    use meridian_domain::element::Element;
    use meridian_domain::shard::shard_for;
    use meridian_domain::*;
    use meridian_proto::durable as pb;

    use crate::{codec, keys, Db, ShardStore};

    const SHARDS: u32 = 4;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn store(db: &Db, entity: &str) -> ShardStore {
        ShardStore::new(db.clone(), shard_for(entity, SHARDS), SHARDS)
    }

    /// Applies `command` on its entity's shard at `index`, as one Raft entry.
    fn apply(db: &Db, entity: &str, index: u64, command: Command) -> Result<apply::Reply, Rejection> {
        let store = store(db, entity);
        let mut txn = store.begin().unwrap();
        txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
        let batch = pb::CommandBatch {
            version: 1,
            time_ms: 1_000 + index as i64,
            logic_version: 1,
            commands: vec![codec::command_to_pb(&command)],
            region: String::new(),
            request_ids_expire_before_ms: 0,
        };
        let mut results = txn.apply_batch(index, &batch).unwrap();
        txn.commit().unwrap();
        results.pop().unwrap()
    }

    /// Accounts, sends with and without request ids, a duplicate, read cursors, a recall, and
    /// the conversation-list joins delivered as effects.
    fn workload(db: &Db) {
        let region = RegionCode::parse("sg").unwrap();
        let mut index = 1;
        let mut next = || {
            index += 1;
            index
        };
        for u in ["alice", "bob", "carol"] {
            let create = Command::CreateUser { user: user(u), home_region: region.clone(), nickname: u.into() };
            apply(db, u, next(), create).unwrap();
        }
        for i in 0..12 {
            let (from, to) = [("alice", "bob"), ("bob", "alice"), ("carol", "alice")][i % 3];
            let send = Command::SendMessage {
                sender: user(from),
                recipient: user(to),
                elements: vec![Element::Text { text: format!("m{i}") }],
                request_id: (i % 2 == 0).then(|| RequestId::parse(&format!("r{i}")).unwrap()),
                sender_home: None,
                recipient_home: None,
                friends_only: false,
            };
            let conversation = ConversationId::c2c(&user(from), &user(to));
            apply(db, conversation.as_str(), next(), send.clone()).unwrap();
            if i == 0 {
                apply(db, conversation.as_str(), next(), send).unwrap(); // a duplicate
            }
        }
        // Directory claims (two keys; a second claim of the first key changes nothing).
        for (key, by) in [("ab", "sg"), ("cd", "de"), ("ab", "kr")] {
            let key = meridian_domain::DirectoryKey::parse(&key.repeat(32)).unwrap();
            let claim = Command::ClaimId { key: key.clone(), region: RegionCode::parse(by).unwrap() };
            apply(db, key.as_str(), next(), claim).unwrap();
        }
        // A group: created with two members, one more added, two sends, a read, a kick.
        let g = meridian_domain::GroupId::parse("g1").unwrap();
        let stream = ConversationId::group(&g);
        let group_commands = [
            Command::CreateGroup {
                group: g.clone(),
                kind: meridian_domain::GroupKind::Work,
                owner: user("alice"),
                name: "team".into(),
                max_members: 10,
                members: vec![user("bob")],
                hide_history: false,
                homes: vec![],
            },
            Command::AddGroupMembers {
                actor: user("bob"),
                group: g.clone(),
                users: vec![user("carol")],
                hidden: false,
                homes: vec![],
            },
            Command::SendGroupMessage {
                sender: user("carol"),
                group: g.clone(),
                elements: vec![Element::Text { text: "g1".into() }],
                request_id: Some(RequestId::parse("g-r1").unwrap()),
                mentions: vec![user("alice"), user("bob")],
                at_all: false,
            },
            Command::SendGroupMessage {
                sender: user("alice"),
                group: g.clone(),
                elements: vec![Element::Text { text: "g2".into() }],
                request_id: None,
                mentions: vec![],
                at_all: true,
            },
            Command::MarkRead { user: user("bob"), conversation: stream.clone(), up_to: Some(Seq(1)) },
            Command::RemoveGroupMember { actor: user("alice"), group: g.clone(), user: user("carol") },
        ];
        for command in group_commands {
            apply(db, stream.as_str(), next(), command).unwrap();
        }
        let ab = ConversationId::c2c(&user("alice"), &user("bob"));
        let mark = Command::MarkRead { user: user("bob"), conversation: ab.clone(), up_to: None };
        apply(db, ab.as_str(), next(), mark).unwrap();
        let recall =
            Command::RecallMessage { actor: user("alice"), conversation: ab.clone(), seq: Seq(1), window_ms: 60_000 };
        apply(db, ab.as_str(), next(), recall).unwrap();
        // Deliver every outbox effect to its target, as the pump would.
        for source in 0..SHARDS {
            let outbox = ShardStore::new(db.clone(), ShardId(source), SHARDS).outbox(1000).unwrap();
            for target in 0..SHARDS {
                let effects: Vec<Effect> = outbox
                    .iter()
                    .filter(|e| shard_for(&e.kind.target_entity(), SHARDS) == ShardId(target))
                    .cloned()
                    .collect();
                if effects.is_empty() {
                    continue;
                }
                let store = ShardStore::new(db.clone(), ShardId(target), SHARDS);
                let mut txn = store.begin().unwrap();
                let batch = pb::CommandBatch {
                    version: 1,
                    time_ms: 5_000,
                    logic_version: 1,
                    commands: vec![codec::command_to_pb(&Command::ApplyEffects {
                        source: ShardId(source),
                        from_region: None,
                        effects,
                    })],
                    region: String::new(),
                    request_ids_expire_before_ms: 0,
                };
                let index = next();
                txn.apply_batch(index, &batch).unwrap();
                txn.commit().unwrap();
            }
        }
    }

    fn checks(db: &Db) -> Vec<crate::ProjectionCheck> {
        (0..SHARDS).map(|s| ShardStore::new(db.clone(), ShardId(s), SHARDS).verify_projections().unwrap()).collect()
    }

    #[test]
    fn projections_equal_a_replay_and_a_corrupted_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        workload(&db);
        let all = checks(&db);
        for check in &all {
            assert_eq!(check.difference, None, "shard {}", check.shard);
        }
        // 3 accounts, 12 sends (the duplicate adds none), 1 recall, 4 list joins, 2 directory
        // claims (the repeat adds none); bob's mark read moves nothing (his own last message
        // already moved his cursor): no event. The group: created, 3 members added, 2 sends,
        // 1 read, 1 removal and its notice in the stream, and 3 list entries added and 1
        // taken out on the users' shards.
        assert_eq!(
            all.iter().map(|c| c.events).sum::<u64>(),
            3 + 12 + 1 + 4 + 2 + (1 + 3 + 2 + 1 + 1 + 1) + (3 + 1),
            "{all:?}"
        );

        // A conversation head whose last seq was tampered with.
        let ab = ConversationId::c2c(&user("alice"), &user("bob"));
        let shard = store(&db, ab.as_str());
        let head = shard.conversation(&ab).unwrap().unwrap();
        let tampered = Conversation { last_seq: Seq(head.last_seq.0 + 1), ..head.clone() };
        let key = keys::conversation(shard.shard(), &ab);
        let cf = db.cf(keys::CF_PROJECTIONS).unwrap();
        db.rocks().put_cf(cf, &key, prost::Message::encode_to_vec(&codec::conversation_to_pb(&tampered))).unwrap();
        let check = shard.verify_projections().unwrap();
        let difference = check.difference.expect("the tampered head is found");
        assert_eq!((difference.column_family, difference.key.as_slice()), (keys::CF_PROJECTIONS, &key[4..]));
        assert!(
            difference.to_string().contains("c2c:alice:bob") && difference.to_string().contains("values differ"),
            "{difference}"
        );
        db.rocks().put_cf(cf, &key, prost::Message::encode_to_vec(&codec::conversation_to_pb(&head))).unwrap();
        assert_eq!(shard.verify_projections().unwrap().difference, None, "restored");

        // A message missing from the history.
        let message_key = keys::message(shard.shard(), &ab, Seq(2));
        let events_cf = db.cf(keys::CF_EVENTS).unwrap();
        let saved = db.rocks().get_cf(events_cf, &message_key).unwrap().unwrap();
        db.rocks().delete_cf(events_cf, &message_key).unwrap();
        let difference = shard.verify_projections().unwrap().difference.expect("the missing message is found");
        assert_eq!(
            (difference.column_family, difference.key.as_slice(), difference.live.as_ref()),
            (keys::CF_EVENTS, &message_key[4..], None)
        );
        db.rocks().put_cf(events_cf, &message_key, saved).unwrap();

        // An account no event created.
        let mallory = user("mallory");
        let users = store(&db, "mallory");
        let record = User {
            id: mallory.clone(),
            home_region: RegionCode::parse("sg").unwrap(),
            nickname: String::new(),
            created: TimeMs(1),
            deleted: None,
        };
        db.rocks()
            .put_cf(cf, keys::user(users.shard(), &mallory), prost::Message::encode_to_vec(&codec::user_to_pb(&record)))
            .unwrap();
        let difference = users.verify_projections().unwrap().difference.expect("the forged account is found");
        assert!(
            difference.to_string().contains("mallory") && difference.to_string().contains("absent from the replay"),
            "{difference}"
        );
    }
}
