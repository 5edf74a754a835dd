//! Storage stories over a real RocksDB in a temporary directory: state survives a reopen
//! byte for byte, concurrent appends share WAL syncs, and a shard snapshot moves a shard's
//! state exactly — and only that shard's.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use meridian_domain::element::Element;
use meridian_domain::shard::shard_for;
use meridian_domain::*;
use meridian_proto::durable as pb;
use meridian_storage::shard::{CommandResult, REQUEST_IDS_EXPIRED_PER_ENTRY};
use meridian_storage::snapshot::{ImportLimits, Records};
use meridian_storage::{codec, Db, LogStore, ShardStore};

const SHARDS: u32 = 4;

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// The Raft entry at `index` carrying one command, stamped with a time derived from the index.
fn entry(index: u64, command: &Command) -> pb::CommandBatch {
    pb::CommandBatch {
        version: 1,
        time_ms: 1_000 + index as i64,
        logic_version: 1,
        commands: vec![codec::command_to_pb(command)],
        region: String::new(),
        request_ids_expire_before_ms: 0,
    }
}

/// Applies `commands` on their own shard of `db`, one entry each, as Raft would.
fn apply_all(db: &Db, commands: &[Command], first_index: u64) -> Vec<Result<meridian_domain::apply::Reply, Rejection>> {
    let mut results = vec![];
    for (i, c) in commands.iter().enumerate() {
        let entity = match c {
            Command::CreateUser { user, .. } => user.to_string(),
            Command::SendMessage { sender, recipient, .. } => ConversationId::c2c(sender, recipient).to_string(),
            Command::MarkRead { conversation, .. } | Command::RecallMessage { conversation, .. } => {
                conversation.to_string()
            }
            other => panic!("not used here: {other:?}"),
        };
        let store = ShardStore::new(db.clone(), shard_for(&entity, SHARDS), SHARDS);
        let mut txn = store.begin().unwrap();
        let index = first_index + i as u64;
        txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
        results.extend(txn.apply_batch(index, &entry(index, c)).unwrap());
        txn.commit().unwrap();
    }
    results
}

fn workload() -> Vec<Command> {
    let region = RegionCode::parse("sg").unwrap();
    let mut cmds: Vec<Command> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| Command::CreateUser { user: user(u), home_region: region.clone(), nickname: u.to_string() })
        .collect();
    for i in 0..30 {
        let (from, to) = if i % 3 == 0 {
            ("alice", "bob")
        } else if i % 3 == 1 {
            ("bob", "carol")
        } else {
            ("carol", "alice")
        };
        cmds.push(Command::SendMessage {
            sender: user(from),
            recipient: user(to),
            elements: vec![Element::Text { text: format!("m{i}") }],
            request_id: Some(RequestId::parse(&format!("r{i}")).unwrap()),
            sender_home: None,
            recipient_home: None,
            friends_only: false,
        });
    }
    cmds.push(Command::MarkRead {
        user: user("bob"),
        conversation: ConversationId::c2c(&user("alice"), &user("bob")),
        up_to: None,
    });
    cmds
}

fn hashes(db: &Db) -> Vec<(u64, String)> {
    (0..SHARDS).map(|s| ShardStore::new(db.clone(), ShardId(s), SHARDS).state_hash().unwrap()).collect()
}

#[test]
fn a_reopened_database_has_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (before, history_before, log_before) = {
        let db = Db::open(&path).unwrap();
        let results = apply_all(&db, &workload(), 1);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let log = LogStore::new(db.clone(), ShardId(1));
        let entries: Vec<pb::LogEntryRecord> = (1..=5)
            .map(|i| pb::LogEntryRecord {
                version: 1,
                log_id: Some(pb::LogId { term: 2, node_id: 1, index: i }),
                payload: None,
            })
            .collect();
        log.append(&entries).unwrap();
        db.sync_now().unwrap();
        let conv = ConversationId::c2c(&user("alice"), &user("bob"));
        let store = ShardStore::new(db.clone(), shard_for(conv.as_str(), SHARDS), SHARDS);
        let history = store.messages(&conv, Seq(1), 100, true).unwrap();
        (hashes(&db), history, log.entries(..).unwrap())
    };
    let db = Db::open(&path).unwrap();
    assert_eq!(hashes(&db), before, "every shard's state hash survives the reopen");
    let conv = ConversationId::c2c(&user("alice"), &user("bob"));
    let store = ShardStore::new(db.clone(), shard_for(conv.as_str(), SHARDS), SHARDS);
    let history = store.messages(&conv, Seq(1), 100, true).unwrap();
    assert_eq!(history, history_before);
    assert_eq!(history.iter().map(|m| m.seq.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(LogStore::new(db, ShardId(1)).entries(..).unwrap(), log_before);
}

#[test]
fn concurrent_appends_of_different_shards_share_wal_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("db")).unwrap();
    let threads = 8;
    let per_thread: u64 = 50;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (db, start) = (db.clone(), start.clone());
            std::thread::spawn(move || {
                let log = LogStore::new(db.clone(), ShardId(t as u32));
                start.wait();
                for i in 1..=per_thread {
                    let e = pb::LogEntryRecord {
                        version: 1,
                        log_id: Some(pb::LogId { term: 1, node_id: 1, index: i }),
                        payload: None,
                    };
                    log.append(&[e]).unwrap();
                    let (tx, rx) = std::sync::mpsc::channel();
                    db.sync(move |r| tx.send(r.is_ok()).unwrap());
                    assert!(rx.recv().unwrap(), "sync reported a failure");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let syncs = db.stats().syncs();
    let requests = db.stats().requests();
    assert_eq!(requests, threads as u64 * per_thread);
    assert!(syncs < requests, "group commit: {requests} appends should need fewer than {requests} syncs, took {syncs}");
    for t in 0..threads {
        assert_eq!(LogStore::new(db.clone(), ShardId(t as u32)).entries(..).unwrap().len(), per_thread as usize);
    }
}

#[test]
fn a_snapshot_moves_exactly_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let source = Db::open(&dir.path().join("source")).unwrap();
    apply_all(&source, &workload(), 1);
    let target = Db::open(&dir.path().join("target")).unwrap();
    // The target has different data of its own on every shard.
    apply_all(&target, &workload()[..3], 100);
    let other_before = hashes(&target);

    let shard = shard_for(ConversationId::c2c(&user("alice"), &user("bob")).as_str(), SHARDS);
    let (applied, data) = ShardStore::new(source.clone(), shard, SHARDS).export_snapshot().unwrap();
    let installed = ShardStore::new(target.clone(), shard, SHARDS).import_snapshot(&data).unwrap();
    assert_eq!(installed, applied);

    let (src, tgt) = (hashes(&source), hashes(&target));
    for s in 0..SHARDS as usize {
        if s == shard.0 as usize {
            assert_eq!(tgt[s], src[s], "the snapshotted shard equals its source");
        } else {
            assert_eq!(tgt[s], other_before[s], "shard {s} is untouched");
        }
    }

    // The same snapshot installed in batches (as a large one is) lands the same state.
    let batched = Db::open(&dir.path().join("batched")).unwrap();
    apply_all(&batched, &workload()[..3], 100);
    let limits = ImportLimits { atomic_bytes: 0, batch_bytes: 64 };
    let writes_before = batched.stats().batches_written.load(Ordering::Relaxed);
    let installed = ShardStore::new(batched.clone(), shard, SHARDS)
        .import_snapshot_with(&mut std::io::Cursor::new(&data), 0, limits)
        .unwrap();
    assert_eq!(installed, applied);
    assert!(
        batched.stats().batches_written.load(Ordering::Relaxed) - writes_before > 2,
        "the batched install wrote in several batches"
    );
    assert_eq!(hashes(&batched)[shard.0 as usize], src[shard.0 as usize], "and its state equals the source's");

    let mut corrupt = data.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    assert!(
        ShardStore::new(target.clone(), shard, SHARDS).import_snapshot(&corrupt).is_err(),
        "a corrupt snapshot is refused"
    );
    assert_eq!(hashes(&target)[shard.0 as usize], src[shard.0 as usize], "and changes nothing");
}

/// Applies `commands` as one entry each on `shard`, all in ONE transaction (a follower
/// catching up applies many entries at once), starting at log index `first_index`.
fn apply_in_one_txn(db: &Db, shard: ShardId, commands: &[Command], first_index: u64) {
    let store = ShardStore::new(db.clone(), shard, SHARDS);
    let mut txn = store.begin().unwrap();
    for (i, c) in commands.iter().enumerate() {
        let index = first_index + i as u64;
        txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
        txn.apply_batch(index, &entry(index, c)).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn an_acknowledgement_deletes_the_effects_it_covers_whether_or_not_they_are_applied_in_the_same_batch() {
    let region = RegionCode::parse("sg").unwrap();
    let users: Vec<Command> = ["alice", "bob"]
        .iter()
        .map(|u| Command::CreateUser { user: user(u), home_region: region.clone(), nickname: u.to_string() })
        .collect();
    let conversation = ConversationId::c2c(&user("alice"), &user("bob"));
    let shard = shard_for(conversation.as_str(), SHARDS);
    let send = Command::SendMessage {
        sender: user("alice"),
        recipient: user("bob"),
        elements: vec![Element::Text { text: "first".into() }],
        request_id: Some(RequestId::parse("r1").unwrap()),
        sender_home: None,
        recipient_home: None,
        friends_only: false,
    };
    // Every target's effects acknowledged (the send emits one per member's shard).
    let acks: Vec<Command> =
        (0..SHARDS).map(|t| Command::AckEffects { target: Lane::Shard(ShardId(t)), up_to: EffectId(1_000) }).collect();

    // One replica applies the send and the acknowledgements in separate batches, the other
    // in a single one; both must end with an empty outbox and identical state.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Db::open(dir_a.path()).unwrap(), Db::open(dir_b.path()).unwrap());
    for db in [&a, &b] {
        apply_all(db, &users, 1);
    }
    let outbox_len = |db: &Db| ShardStore::new(db.clone(), shard, SHARDS).outbox(100).unwrap().len();
    apply_in_one_txn(&a, shard, std::slice::from_ref(&send), 10);
    assert_eq!(outbox_len(&a), 2, "the first message of a pair emits one effect per member");
    apply_in_one_txn(&a, shard, &acks, 11);
    let mut together = vec![send];
    together.extend(acks);
    apply_in_one_txn(&b, shard, &together, 10);

    assert_eq!(outbox_len(&a), 0);
    assert_eq!(outbox_len(&b), 0, "effects emitted in the acknowledging batch were left behind");
    assert_eq!(hashes(&a), hashes(&b));
}

#[test]
fn an_account_deleted_in_the_batch_that_lists_its_group_leaves_that_group_too() {
    let region = RegionCode::parse("sg").unwrap();
    let dana = user("dana");
    let group = GroupId::parse("g7").unwrap();
    let shard = shard_for(dana.as_str(), SHARDS);
    let source = ShardId((shard.0 + 1) % SHARDS);
    let create = Command::CreateUser { user: dana.clone(), home_region: region.clone(), nickname: "Dana".into() };
    let joined = Command::ApplyEffects {
        source,
        from_region: None,
        effects: vec![Effect {
            id: EffectId(1),
            source: EffectSource { region: RegionCode::parse("local").unwrap(), epoch: 1, shard: source },
            kind: EffectKind::GroupListed { user: dana.clone(), group: group.clone(), at: TimeMs(5) },
        }],
    };
    let delete = Command::DeleteAccount { user: dana.clone() };

    // One replica applies each entry in its own transaction, the other all in one (a
    // follower catching up): the delete must see the join either way.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Db::open(dir_a.path()).unwrap(), Db::open(dir_b.path()).unwrap());
    for (i, c) in [&create, &joined, &delete].into_iter().enumerate() {
        apply_in_one_txn(&a, shard, std::slice::from_ref(c), 1 + i as u64);
    }
    apply_in_one_txn(&b, shard, &[create, joined, delete], 1);

    for db in [&a, &b] {
        let store = ShardStore::new(db.clone(), shard, SHARDS);
        assert!(store.group_refs(&dana).unwrap().is_empty());
        assert!(store.user(&dana).unwrap().is_some_and(|u| u.is_deleted() && u.nickname.is_empty()));
        let gone: Vec<EffectKind> = store.outbox(100).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(gone, [EffectKind::MemberGone { group: group.clone(), user: dana.clone() }]);
        let check = store.verify_projections().unwrap();
        assert_eq!(check.difference, None, "projections equal the replay of the event log");
    }
    assert_eq!(hashes(&a), hashes(&b));
}

/// Entries of a request-id expiry story on a one-shard region, under logic version 4: two
/// users; one send per entry a second apart with request id `r{i}`, each entry expiring what
/// is older than ten seconds; then 600 sends in one entry; then entries with the cutoff past
/// all of them (each expires at most the per-entry cap).
fn expiry_entries() -> Vec<pb::CommandBatch> {
    let region = RegionCode::parse("sg").unwrap();
    let entry = |time_ms: i64, commands: Vec<Command>, cutoff: i64| pb::CommandBatch {
        version: 1,
        time_ms,
        logic_version: 4,
        commands: commands.iter().map(codec::command_to_pb).collect(),
        region: String::new(),
        request_ids_expire_before_ms: cutoff,
    };
    let mut entries = vec![entry(
        1_000,
        ["alice", "bob"]
            .iter()
            .map(|u| Command::CreateUser { user: user(u), home_region: region.clone(), nickname: u.to_string() })
            .collect(),
        0,
    )];
    for i in 0..40 {
        let t = 1_000_000 + 1_000 * i as i64;
        entries.push(entry(t, vec![send(i)], t - 10_000));
    }
    entries.push(entry(2_000_000, (100..700).map(send).collect(), 2_000_000 - 10_000));
    for k in 0..4 {
        entries.push(entry(3_000_000 + k, vec![], 2_500_000));
    }
    entries
}

/// Alice's send `m{i}` to Bob with request id `r{i}`.
fn send(i: usize) -> Command {
    Command::SendMessage {
        sender: user("alice"),
        recipient: user("bob"),
        elements: vec![Element::Text { text: format!("m{i}") }],
        request_id: Some(RequestId::parse(&format!("r{i}")).unwrap()),
        sender_home: None,
        recipient_home: None,
        friends_only: false,
    }
}

/// Applies `entries` from log index 1 on shard 0 of 1, `per_txn` entries per transaction.
fn apply_grouped(db: &Db, entries: &[pb::CommandBatch], per_txn: usize) -> Vec<CommandResult> {
    let store = ShardStore::new(db.clone(), ShardId(0), 1);
    let mut results = vec![];
    for (n, group) in entries.chunks(per_txn).enumerate() {
        let mut txn = store.begin().unwrap();
        for (i, batch) in group.iter().enumerate() {
            let index = (n * per_txn + i + 1) as u64;
            txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
            results.extend(txn.apply_batch(index, batch).unwrap());
        }
        txn.commit().unwrap();
    }
    results
}

fn accepted_seq(result: &CommandResult) -> (u64, bool) {
    match result {
        Ok(meridian_domain::apply::Reply::MessageAccepted { seq, duplicate, .. }) => (seq.0, *duplicate),
        other => panic!("not an accepted send: {other:?}"),
    }
}

#[test]
fn request_ids_expire_after_the_window_alike_however_entries_are_grouped_and_replay_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let entries = expiry_entries();
    let dbs: Vec<Db> = [1, 3, 7, entries.len()]
        .iter()
        .map(|per_txn| {
            let db = Db::open(&dir.path().join(format!("per-{per_txn}"))).unwrap();
            apply_grouped(&db, &entries, *per_txn);
            db
        })
        .collect();
    let store = |db: &Db| ShardStore::new(db.clone(), ShardId(0), 1);
    let hash = store(&dbs[0]).state_hash().unwrap();
    for db in &dbs[1..] {
        assert_eq!(store(db).state_hash().unwrap(), hash, "every grouping expires the same records");
    }
    let db = &dbs[0];
    // Request-id records (not their time index) as a snapshot of the shard lists them.
    let live_records = |db: &Db| {
        let (_, data) = store(db).export_snapshot().unwrap();
        let (_, mut records) = Records::open(&data[..data.len() - 32]).unwrap();
        let mut n = 0;
        while let Some((cf, key, _)) = records.next_record().unwrap() {
            let mut full = vec![0; 4];
            full.extend_from_slice(&key);
            n +=
                usize::from(cf == meridian_storage::keys::CF_DEDUP && !meridian_storage::keys::is_dedup_by_time(&full));
        }
        n
    };
    // 40 + 600 records written; the cutoffs passed all of them and four entries expired
    // 4 × 256 at most: every one is gone, through the cap, not at once.
    assert_eq!(live_records(db), 0, "every record past the window is expired");
    let check = store(db).verify_projections().unwrap();
    assert_eq!(check.difference, None, "replay agrees with the live projections after expiry");

    // A part-way state: after the 600-send entry and ONE expiring entry, the cap holds.
    let partial = Db::open(&dir.path().join("partial")).unwrap();
    apply_grouped(&partial, &entries[..entries.len() - 3], 1);
    assert_eq!(live_records(&partial), 600 - REQUEST_IDS_EXPIRED_PER_ENTRY);
    assert_eq!(store(&partial).verify_projections().unwrap().difference, None);

    // A retry of an expired id is a new message; a retry within the window is the first send.
    let retry = |db: &Db, i: usize, time_ms: i64, index: u64| {
        let batch = pb::CommandBatch {
            commands: vec![codec::command_to_pb(&send(i))],
            time_ms,
            request_ids_expire_before_ms: time_ms - 10_000,
            ..entries[1].clone()
        };
        let s = store(db);
        let mut txn = s.begin().unwrap();
        txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
        let result = txn.apply_batch(index, &batch).unwrap().remove(0);
        txn.commit().unwrap();
        accepted_seq(&result)
    };
    let next = entries.len() as u64 + 1;
    assert_eq!(retry(db, 0, 3_100_000, next), (641, false), "expired: a new message");
    assert_eq!(retry(db, 0, 3_101_000, next + 1), (641, true), "within the window: the first send");
}

#[test]
fn a_record_read_twice_in_one_transaction_is_looked_up_once_and_reads_see_the_transactions_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let store = ShardStore::new(db.clone(), ShardId(0), 1);
    let region = RegionCode::parse("sg").unwrap();
    let mut entries: Vec<pb::CommandBatch> = ["alice", "bob"]
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let create = Command::CreateUser { user: user(u), home_region: region.clone(), nickname: (*u).into() };
            entry(i as u64 + 1, &create)
        })
        .collect();
    entries.push(entry(3, &send(0)));
    let first = apply_grouped(&db, &entries, 1);
    assert_eq!(accepted_seq(&first[2]), (1, false));

    // A send to a conversation that exists, alone in its transaction: the projector reads the
    // conversation's head again after the check did, and finds it without a second lookup.
    let lookups_of = |sends: std::ops::Range<usize>, first_index: u64| {
        let mut txn = store.begin().unwrap();
        let mut seqs = vec![];
        for (n, i) in sends.enumerate() {
            let index = first_index + n as u64;
            txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index });
            seqs.extend(txn.apply_batch(index, &entry(index, &send(i))).unwrap().iter().map(accepted_seq));
        }
        let lookups = txn.database_lookups();
        txn.commit().unwrap();
        (lookups, seqs)
    };
    let (one, seqs) = lookups_of(1..2, 4);
    assert_eq!(seqs, vec![(2, false)]);
    // Three sends in one transaction: the later ones read what the earlier ones wrote (the
    // head, seqs 3, 4, 5) and look up only their own request ids' records.
    let (three, seqs) = lookups_of(2..5, 5);
    assert_eq!(seqs, vec![(3, false), (4, false), (5, false)]);
    // One send: its request id's record (absent), the pair's block entry (absent) and the
    // head, each once (the head was looked up twice before apply kept what it had read).
    assert_eq!(one, 3);
    // Three: each request id's record, and the block entry and the head once between them.
    assert_eq!(three, 5);
}
