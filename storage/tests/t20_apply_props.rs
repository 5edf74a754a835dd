//! Property tests of apply against a real RocksDB: arbitrary command bytes and arbitrary
//! (often invalid) commands go through decode, validation and apply. Apply never fails for
//! them (only a storage failure may, and none happens here), never panics, and a rejected
//! command leaves the shard's state byte for byte as it was.

#![allow(clippy::unwrap_used)]

use meridian_domain::ShardId;
use meridian_proto::durable as pb;
use meridian_storage::{Db, ShardStore};
use proptest::prelude::*;
use prost::Message as _;

const SHARDS: u32 = 4;

/// Ids that are valid, and some that are not.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("alice".to_owned()),
        Just("bob".to_owned()),
        Just("carol".to_owned()),
        Just(String::new()),
        Just("has space".to_owned()),
        Just("x".repeat(33)),
        "[a-z]{1,3}",
        any::<String>(),
    ]
}

fn conversation() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("c2c:alice:bob".to_owned()),
        Just("c2c:alice:carol".to_owned()),
        Just("c2c:bob:alice".to_owned()),
        Just("c2c:alice".to_owned()),
        Just(String::new()),
        any::<String>(),
    ]
}

fn element() -> impl Strategy<Value = pb::Element> {
    prop_oneof![
        Just(pb::Element { kind: None }),
        any::<String>().prop_map(|text| pb::Element { kind: Some(pb::element::Kind::Text(pb::Text { text })) }),
        (any::<f64>(), any::<f64>()).prop_map(|(latitude, longitude)| pb::Element {
            kind: Some(pb::element::Kind::Location(pb::Location { description: String::new(), latitude, longitude }))
        }),
    ]
}

fn effect() -> impl Strategy<Value = pb::Effect> {
    let region = prop_oneof![Just(String::new()), Just("local".to_owned()), Just("sg".to_owned()), any::<String>()];
    (0u64..5, 0u32..6, region, 0u32..3, id(), conversation(), id(), any::<bool>()).prop_map(
        |(id, source_shard, source_region, source_epoch, user, conversation_id, peer, has_kind)| pb::Effect {
            id,
            source_shard,
            source_region,
            source_epoch,
            kind: has_kind.then_some({
                pb::effect::Kind::ConversationJoined(pb::ConversationJoined { user, conversation_id, peer, time_ms: 0 })
            }),
        },
    )
}

fn command() -> impl Strategy<Value = pb::Command> {
    use pb::command::Kind;
    let kind =
        prop_oneof![
            (id(), prop_oneof![Just("sg".to_owned()), any::<String>()], any::<String>()).prop_map(
                |(user_id, home_region, nickname)| Some(Kind::CreateUser(pb::CreateUser {
                    user_id,
                    home_region,
                    nickname
                }))
            ),
            (id(), id(), prop::collection::vec(element(), 0..3), prop_oneof![Just(String::new()), "[a-z]{1,4}"])
                .prop_map(|(sender, recipient, elements, request_id)| Some(Kind::SendMessage(pb::SendMessage {
                    sender,
                    recipient,
                    elements,
                    request_id,
                    ..Default::default()
                }))),
            (id(), conversation(), 0u64..4, any::<u64>()).prop_map(|(actor, conversation_id, seq, window_ms)| Some(
                Kind::RecallMessage(pb::RecallMessage { actor, conversation_id, seq, window_ms })
            )),
            (id(), conversation(), 0u64..4).prop_map(|(user, conversation_id, seq)| Some(Kind::MarkRead(
                pb::MarkRead { user, conversation_id, seq }
            ))),
            (0u32..6, prop::collection::vec(effect(), 0..3)).prop_map(|(source_shard, effects)| Some(
                Kind::ApplyEffects(pb::ApplyEffects { source_shard, effects, ..Default::default() })
            )),
            (any::<u32>(), any::<u64>()).prop_map(|(target_shard, up_to)| Some(Kind::AckEffects(pb::AckEffects {
                target_shard,
                up_to,
                ..Default::default()
            }))),
            Just(None),
        ];
    kind.prop_map(|kind| pb::Command { kind })
}

/// Applies one batch on `shard` as Raft would and checks the promises: no failure, and no
/// change at all when every command of the batch was rejected.
fn apply_checked(db: &Db, shard: u32, index: u64, batch: &pb::CommandBatch) -> Result<(), TestCaseError> {
    let store = ShardStore::new(db.clone(), ShardId(shard), SHARDS);
    let (_, before) = store.state_hash().unwrap();
    let mut txn = store.begin().unwrap();
    let results = txn.apply_batch(index, batch);
    prop_assert!(results.is_ok(), "apply failed: {:?}", results.err());
    let results = results.unwrap();
    prop_assert_eq!(results.len(), batch.commands.len());
    txn.commit().unwrap();
    let (_, after) = store.state_hash().unwrap();
    if results.iter().all(|r| r.is_err()) {
        prop_assert_eq!(before, after, "a rejected batch changed the state: {:?}", results);
    }
    Ok(())
}

/// A well-formed command: create the account `alice`.
fn create_alice() -> pb::Command {
    pb::Command {
        kind: Some(pb::command::Kind::CreateUser(pb::CreateUser {
            user_id: "alice".into(),
            home_region: "sg".into(),
            nickname: String::new(),
        })),
    }
}

fn batch(commands: Vec<pb::Command>) -> pb::CommandBatch {
    // Time 0 keeps the shard's clock where it is, so a rejection can be compared byte for byte.
    pb::CommandBatch {
        version: 1,
        time_ms: 0,
        logic_version: 1,
        commands,
        region: String::new(),
        request_ids_expire_before_ms: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_commands_are_applied_or_rejected_without_change(
        steps in prop::collection::vec((0u32..SHARDS, command()), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        for (i, (shard, command)) in steps.into_iter().enumerate() {
            apply_checked(&db, shard, i as u64 + 1, &batch(vec![command]))?;
        }
        // Whatever was accepted, every shard's projections equal a replay of its event log.
        for shard in 0..SHARDS {
            let check = ShardStore::new(db.clone(), ShardId(shard), SHARDS).verify_projections().unwrap();
            prop_assert_eq!(check.difference, None, "shard {}", shard);
        }
    }

    #[test]
    fn arbitrary_bytes_never_fail_apply(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..12)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        for (i, bytes) in chunks.iter().enumerate() {
            // As one command, and as a whole batch: whatever decodes is applied.
            if let Ok(command) = pb::Command::decode(bytes.as_slice()) {
                apply_checked(&db, i as u32 % SHARDS, 2 * i as u64 + 1, &batch(vec![command]))?;
            }
            if let Ok(mut decoded) = pb::CommandBatch::decode(bytes.as_slice()) {
                // Arbitrary versions would (rightly) stop the replica: the gate has its own test.
                (decoded.time_ms, decoded.version, decoded.logic_version) = (0, 1, 1);
                apply_checked(&db, i as u32 % SHARDS, 2 * i as u64 + 2, &decoded)?;
            }
        }
    }
}

/// The entry that once stopped a region: a command with no kind. It is rejected as
/// malformed on every replica, and a well-formed command beside it in the batch is applied.
#[test]
fn a_command_with_no_kind_is_rejected_and_its_neighbours_applied() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let alice_shard = meridian_domain::shard::shard_for("alice", SHARDS);
    let store = ShardStore::new(db.clone(), alice_shard, SHARDS);
    let create = create_alice();
    let mut txn = store.begin().unwrap();
    let results = txn.apply_batch(1, &batch(vec![pb::Command { kind: None }, create])).unwrap();
    txn.commit().unwrap();
    assert_eq!(results[0].as_ref().map_err(|r| r.reason), Err(meridian_domain::Reason::MalformedCommand));
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(store.user(&meridian_domain::UserId::parse("alice").unwrap()).unwrap().is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Ingress as a shard leader runs it on a forwarded proposal: decode, check, re-encode.
    /// Whatever the bytes, it never panics, and what it admits re-encodes to a command that
    /// decodes to the same domain command (the log holds the canonical form).
    #[test]
    fn ingress_admits_only_commands_whose_canonical_form_round_trips(
        command in command(),
        shard in 0u32..6,
        bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        use meridian_domain::ingress::{check, Destination, IngressLimits};
        use meridian_storage::codec;
        let limits = IngressLimits { max_message_bytes: 12 * 1024 };
        let region = meridian_domain::RegionCode::parse("local").unwrap();
        let to = Destination { region: &region, shard: ShardId(shard), shards: SHARDS };
        let from_bytes = pb::Command::decode(bytes.as_slice()).ok();
        for candidate in std::iter::once(command).chain(from_bytes) {
            let Ok(domain) = codec::command_from_pb(candidate, &region) else { continue };
            if check(&domain, to, limits, codec::encoded_body_len).is_ok() {
                let canonical = codec::command_to_pb(&domain);
                let again = codec::command_from_pb(canonical, &region);
                prop_assert_eq!(again.ok(), Some(domain));
            }
        }
    }
}

/// An entry stamped with a logic version this build does not know halts the shard on this
/// replica (a typed storage error) and applies nothing of it.
#[test]
fn an_entry_of_an_unknown_logic_version_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let alice_shard = meridian_domain::shard::shard_for("alice", SHARDS);
    let store = ShardStore::new(db.clone(), alice_shard, SHARDS);
    let create = create_alice();
    let (_, before) = store.state_hash().unwrap();
    let newer =
        pb::CommandBatch { logic_version: meridian_domain::apply::LOGIC_VERSION + 1, ..batch(vec![create.clone()]) };
    let mut txn = store.begin().unwrap();
    let err = txn.apply_batch(1, &newer).expect_err("a newer logic version is refused");
    assert!(matches!(err, meridian_storage::StorageError::Halted(_)), "{err}");
    assert!(err.to_string().contains("upgrade it"), "{err}");
    drop(txn);
    assert_eq!(store.state_hash().unwrap().1, before);
    assert!(store.user(&meridian_domain::UserId::parse("alice").unwrap()).unwrap().is_none());
}

/// A replica held to logic version 1 applies version-1 entries, and halts on the raise to 2
/// (and, after it, on any entry) without writing anything; one that implements 2 applies the
/// raise, and sends after it get ids that name the region and its epoch.
#[test]
fn the_logic_version_gates_apply_and_shapes_message_ids() {
    use meridian_domain::apply::Reply;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let conversation = meridian_domain::ConversationId::c2c(
        &meridian_domain::UserId::parse("alice").unwrap(),
        &meridian_domain::UserId::parse("bob").unwrap(),
    );
    let shard = meridian_domain::shard::shard_for(conversation.as_str(), SHARDS);
    let region = meridian_domain::RegionCode::parse("de").unwrap();
    let send = |n: u32| pb::Command {
        kind: Some(pb::command::Kind::SendMessage(pb::SendMessage {
            sender: "alice".into(),
            recipient: "bob".into(),
            elements: vec![pb::Element { kind: Some(pb::element::Kind::Text(pb::Text { text: format!("m{n}") })) }],
            request_id: format!("r{n}"),
            ..Default::default()
        })),
    };
    let raise = pb::Command { kind: Some(pb::command::Kind::SetLogicVersion(pb::SetLogicVersion { version: 2 })) };
    let v1 = |commands| pb::CommandBatch { logic_version: 1, ..batch(commands) };
    let message_id = |results: Vec<meridian_storage::shard::CommandResult>| match results.into_iter().next() {
        Some(Ok(Reply::MessageAccepted { message_id, .. })) => message_id.to_string(),
        other => panic!("not a send's result: {other:?}"),
    };

    for held_back in [true, false] {
        let store = ShardStore::new(db.clone(), shard, SHARDS).in_region(region.clone(), if held_back { 1 } else { 2 });
        let base = if held_back { 1 } else { 10 };
        let mut txn = store.begin().unwrap();
        let first = message_id(txn.apply_batch(base, &v1(vec![send(base as u32)])).unwrap());
        txn.commit().unwrap();
        assert_eq!(first, format!("{:x}-{base:x}-0", shard.0), "a version-1 id");
        let (_, before) = store.state_hash().unwrap();
        let mut txn = store.begin().unwrap();
        let raised = txn.apply_batch(base + 1, &v1(vec![raise.clone()]));
        if held_back {
            assert!(matches!(raised, Err(meridian_storage::StorageError::Halted(_))), "{raised:?}");
            drop(txn);
            assert_eq!(store.state_hash().unwrap().1, before, "a halted apply wrote nothing");
            continue;
        }
        assert_eq!(raised.unwrap(), vec![Ok(Reply::LogicVersion { version: 2 })]);
        txn.commit().unwrap();
        assert_eq!(store.applied_state().unwrap().logic_version, 2);
        // Stamped 1 by a leader that had not applied the raise yet: the raise still rules.
        let mut txn = store.begin().unwrap();
        let second = message_id(txn.apply_batch(base + 2, &v1(vec![send(base as u32 + 2)])).unwrap());
        txn.commit().unwrap();
        assert_eq!(second, format!("de.1.{}.{:x}.0", shard.0, base + 2));
        // The same store held back now: it halts on the next entry whatever its stamp.
        let held = ShardStore::new(db.clone(), shard, SHARDS).in_region(region.clone(), 1);
        let mut txn = held.begin().unwrap();
        let halted = txn.apply_batch(base + 3, &v1(vec![send(base as u32 + 3)]));
        assert!(matches!(halted, Err(meridian_storage::StorageError::Halted(_))), "{halted:?}");
    }
}

/// A record written by a newer version is a typed error on read, not a silent default.
#[test]
fn a_record_of_a_newer_version_is_refused_on_read() {
    use meridian_storage::error::decode_record;
    let newer = pb::UserRecord { version: meridian_storage::codec::RECORD_VERSION + 1, ..Default::default() };
    let err = decode_record::<pb::UserRecord>("user", &newer.encode_to_vec()).expect_err("newer version");
    assert!(err.to_string().contains("newer version"), "{err}");
    let current = pb::UserRecord { version: meridian_storage::codec::RECORD_VERSION, ..Default::default() };
    assert!(decode_record::<pb::UserRecord>("user", &current.encode_to_vec()).is_ok());
}
