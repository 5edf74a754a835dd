//! Snapshots stream through files: one replica builds, another receives chunk by chunk and
//! installs; a corrupt one changes nothing; a node stopped mid-install finishes it on open.
//! The committed id Raft saves rides in the next apply's batch.

#![allow(clippy::unwrap_used)]

use meridian_domain::{Command, RegionCode, ShardId, UserId};
use meridian_proto::durable as pb;
use meridian_raft::state_machine::ShardMachine;
use meridian_raft::types::TypeConfig;
use meridian_storage::{codec, Db, ShardStore};
use openraft::storage::{RaftSnapshotBuilder as _, RaftStateMachine as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

const SHARD: ShardId = ShardId(0);

/// A replica of shard 0 (of 1) with `users` users created at indexes 1..=users.
fn replica(dir: &std::path::Path, users: usize) -> ShardStore {
    let db = Db::open(&dir.join("db")).unwrap();
    let store = ShardStore::new(db, SHARD, 1);
    let region = RegionCode::parse("sg").unwrap();
    for i in 1..=users as u64 {
        let command = Command::CreateUser {
            user: UserId::parse(&format!("user-{i}")).unwrap(),
            home_region: region.clone(),
            nickname: format!("nickname of user {i} {}", "x".repeat(200)),
        };
        let batch = pb::CommandBatch {
            version: 1,
            time_ms: 1_000 + i as i64,
            logic_version: 1,
            commands: vec![codec::command_to_pb(&command)],
            region: String::new(),
            request_ids_expire_before_ms: 0,
        };
        let mut txn = store.begin().unwrap();
        txn.applied_mut().last_applied = Some(pb::LogId { term: 1, node_id: 1, index: i });
        txn.apply_batch(i, &batch).unwrap();
        txn.commit().unwrap();
    }
    store
}

async fn snapshot_bytes(
    machine: &mut ShardMachine,
) -> (openraft::SnapshotMeta<u64, meridian_raft::types::Node>, Vec<u8>) {
    let snapshot = machine.get_current_snapshot().await.unwrap().expect("a snapshot");
    let mut data = snapshot.snapshot;
    data.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.unwrap();
    (snapshot.meta, bytes)
}

/// Sends `bytes` to `machine` as openraft does: chunk by chunk into what it receives into.
async fn receive(
    machine: &mut ShardMachine,
    bytes: &[u8],
) -> Box<<TypeConfig as openraft::RaftTypeConfig>::SnapshotData> {
    let mut data = machine.begin_receiving_snapshot().await.unwrap();
    for (i, chunk) in bytes.chunks(64 << 10).enumerate() {
        data.seek(std::io::SeekFrom::Start((i * (64 << 10)) as u64)).await.unwrap();
        data.write_all(chunk).await.unwrap();
    }
    data
}

#[tokio::test]
async fn a_snapshot_goes_from_one_replica_to_another_through_files_and_a_corrupt_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = replica(&dir.path().join("a"), 2_000);
    let mut a = ShardMachine::open(source.clone(), dir.path().join("a/snapshots")).unwrap();
    let built = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2_000));
    let (meta, bytes) = snapshot_bytes(&mut a).await;
    assert_eq!(meta, built.meta, "the snapshot file holds what was built");
    assert!(bytes.len() > 400_000, "a snapshot of several chunks: {} bytes", bytes.len());

    let target = replica(&dir.path().join("b"), 10);
    let mut b = ShardMachine::open(target.clone(), dir.path().join("b/snapshots")).unwrap();
    let before = target.state_hash().unwrap();

    let mut corrupt = bytes.clone();
    corrupt[bytes.len() / 2] ^= 0xff;
    let data = receive(&mut b, &corrupt).await;
    assert!(b.install_snapshot(&meta, data).await.is_err(), "a corrupt snapshot is refused");
    assert_eq!(target.state_hash().unwrap(), before, "and changes nothing");
    assert!(b.get_current_snapshot().await.unwrap().is_none(), "nor becomes the shard's snapshot");

    let data = receive(&mut b, &bytes).await;
    b.install_snapshot(&meta, data).await.unwrap();
    assert_eq!(target.state_hash().unwrap(), source.state_hash().unwrap(), "the replicas agree");
    assert_eq!(b.applied_state().await.unwrap().0, meta.last_log_id);
    let (kept_meta, kept) = snapshot_bytes(&mut b).await;
    assert_eq!((kept_meta, kept), (meta, bytes), "the installed snapshot is the one it serves");
}

#[tokio::test]
async fn a_node_stopped_mid_install_finishes_the_install_when_it_opens_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let source = replica(&dir.path().join("a"), 500);
    let mut a = ShardMachine::open(source.clone(), dir.path().join("a/snapshots")).unwrap();
    a.get_snapshot_builder().await.build_snapshot().await.unwrap();

    // The node stopped after keeping the received snapshot as its file and before (or while)
    // writing it into its state, which holds something else.
    let target = replica(&dir.path().join("b"), 20);
    std::fs::create_dir_all(dir.path().join("b/snapshots")).unwrap();
    std::fs::copy(dir.path().join("a/snapshots/shard-0.snap"), dir.path().join("b/snapshots/shard-0.snap")).unwrap();
    assert_ne!(target.state_hash().unwrap(), source.state_hash().unwrap());

    let mut b = ShardMachine::open(target.clone(), dir.path().join("b/snapshots")).unwrap();
    assert_eq!(target.state_hash().unwrap(), source.state_hash().unwrap(), "the install was finished");
    assert_eq!(b.applied_state().await.unwrap().0.map(|l| l.index), Some(500));

    // A snapshot file behind the applied state is left alone.
    let newer = replica(&dir.path().join("c"), 600);
    std::fs::create_dir_all(dir.path().join("c/snapshots")).unwrap();
    std::fs::copy(dir.path().join("a/snapshots/shard-0.snap"), dir.path().join("c/snapshots/shard-0.snap")).unwrap();
    let hash = newer.state_hash().unwrap();
    ShardMachine::open(newer.clone(), dir.path().join("c/snapshots")).unwrap();
    assert_eq!(newer.state_hash().unwrap(), hash);
}

/// Log entries `range` (blank, term 1) appended to shard 0's log in `db`.
fn append_log(db: &Db, range: std::ops::RangeInclusive<u64>) {
    let records: Vec<pb::LogEntryRecord> = range
        .map(|index| pb::LogEntryRecord {
            version: 1,
            log_id: Some(pb::LogId { term: 1, node_id: 1, index }),
            payload: Some(pb::log_entry_record::Payload::Blank(pb::Blank {})),
        })
        .collect();
    meridian_storage::LogStore::new(db.clone(), SHARD).append(&records).unwrap();
}

#[tokio::test]
async fn a_committed_id_saved_past_a_gap_in_the_log_is_lowered_when_the_shard_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = replica(dir.path(), 20);
    append_log(store.db(), 21..=30);
    let log_store = meridian_storage::LogStore::new(store.db().clone(), SHARD);
    // Committed 50 was saved while entries 31..=50 were covered by a snapshot never kept.
    log_store.save_committed(Some(&pb::LogId { term: 1, node_id: 1, index: 50 })).unwrap();
    let mut machine = ShardMachine::open(store.clone(), dir.path().join("snapshots")).unwrap();
    assert_eq!(log_store.committed().unwrap().map(|l| l.index), Some(30), "lowered to the last entry held");
    assert_eq!(machine.applied_state().await.unwrap().0.map(|l| l.index), Some(20));
    // A committed id within the log is left alone.
    log_store.save_committed(Some(&pb::LogId { term: 1, node_id: 1, index: 25 })).unwrap();
    ShardMachine::open(store.clone(), dir.path().join("snapshots")).unwrap();
    assert_eq!(log_store.committed().unwrap().map(|l| l.index), Some(25));
}

fn log_id(index: u64) -> meridian_raft::types::LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
}

fn purged(db: &Db) -> Option<u64> {
    meridian_storage::LogStore::new(db.clone(), SHARD).purged().unwrap().map(|l| l.index)
}

/// openraft purges a follower's log up to a received snapshot while the snapshot is still
/// being installed: the purge must not become durable before the snapshot is kept, or a stop
/// in between leaves a log that starts past the state with nothing to bridge the gap.
#[tokio::test]
async fn a_purge_past_the_kept_snapshot_waits_until_an_install_keeps_it_and_fails_with_it() {
    use openraft::storage::RaftLogStorage as _;
    let dir = tempfile::tempdir().unwrap();
    let source = replica(&dir.path().join("a"), 500);
    let mut a = ShardMachine::open(source.clone(), dir.path().join("a/snapshots")).unwrap();
    a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let (meta, bytes) = snapshot_bytes(&mut a).await;

    let target = replica(&dir.path().join("b"), 20);
    append_log(target.db(), 1..=30);
    let mut b = ShardMachine::open(target.clone(), dir.path().join("b/snapshots")).unwrap();
    let mut log = meridian_raft::log_store::ShardLog::new(meridian_storage::LogStore::new(target.db().clone(), SHARD))
        .gated_by(b.purge_gate());

    log.purge(log_id(15)).await.unwrap();
    assert_eq!(purged(target.db()), Some(15), "a purge the applied state covers goes at once");

    // The install fails: the waiting purge fails with it and the log stays whole.
    let mut waiting = log.clone();
    let purge = tokio::spawn(async move { waiting.purge(log_id(500)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!purge.is_finished(), "the purge waits for the snapshot");
    assert_eq!(purged(target.db()), Some(15));
    let mut corrupt = bytes.clone();
    corrupt[bytes.len() / 2] ^= 0xff;
    let data = receive(&mut b, &corrupt).await;
    assert!(b.install_snapshot(&meta, data).await.is_err());
    assert!(purge.await.unwrap().is_err(), "the purge fails with the install");
    assert_eq!(purged(target.db()), Some(15), "and removed nothing");

    // The install keeps the snapshot: the purge goes through.
    let mut waiting = log.clone();
    let purge = tokio::spawn(async move { waiting.purge(log_id(500)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!purge.is_finished(), "the purge waits for the snapshot");
    assert_eq!(purged(target.db()), Some(15));
    let data = receive(&mut b, &bytes).await;
    b.install_snapshot(&meta, data).await.unwrap();
    purge.await.unwrap().unwrap();
    assert_eq!(purged(target.db()), Some(500));
    assert_eq!(target.state_hash().unwrap(), source.state_hash().unwrap());
}

#[tokio::test]
async fn the_committed_id_is_written_with_the_next_apply_not_on_its_own() {
    use meridian_raft::log_store::ShardLog;
    use openraft::storage::RaftLogStorage as _;

    let dir = tempfile::tempdir().unwrap();
    let store = replica(dir.path(), 0);
    append_log(store.db(), 1..=3);
    let mut machine = ShardMachine::open(store.clone(), dir.path().join("snapshots")).unwrap();
    let raw = meridian_storage::LogStore::new(store.db().clone(), SHARD);
    let mut log = ShardLog::new(meridian_storage::LogStore::new(store.db().clone(), SHARD))
        .gated_by(machine.purge_gate())
        .committed_into(machine.committed_slot());
    let writes = || store.db().stats().batches_written.load(std::sync::atomic::Ordering::Relaxed);

    let before = writes();
    log.save_committed(Some(log_id(3))).await.unwrap();
    assert_eq!(writes(), before, "saving the committed id writes nothing by itself");
    assert_eq!(raw.committed().unwrap(), None);

    let entries: Vec<meridian_raft::types::Entry> =
        (1..=3).map(|i| openraft::Entry { log_id: log_id(i), payload: openraft::EntryPayload::Blank }).collect();
    machine.apply(entries).await.unwrap();
    assert_eq!(writes(), before + 1, "one write: the apply, with the committed id in its batch");
    assert_eq!(raw.committed().unwrap().map(|l| l.index), Some(3));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3)));
    assert_eq!(machine.applied_state().await.unwrap().0, Some(log_id(3)));

    // An apply after it, with no newer committed id, leaves the saved one as it is; a newer
    // one is written by the apply that follows it.
    append_log(store.db(), 4..=5);
    machine.apply([openraft::Entry { log_id: log_id(4), payload: openraft::EntryPayload::Blank }]).await.unwrap();
    assert_eq!(raw.committed().unwrap().map(|l| l.index), Some(3));
    log.save_committed(Some(log_id(5))).await.unwrap();
    machine.apply([openraft::Entry { log_id: log_id(5), payload: openraft::EntryPayload::Blank }]).await.unwrap();
    assert_eq!(raw.committed().unwrap().map(|l| l.index), Some(5));
}
