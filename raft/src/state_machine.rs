//! openraft's `RaftStateMachine` over one shard's [`meridian_storage::ShardStore`].
//!
//! Snapshots are built from the shard's RocksDB data ([`ShardStore::export_snapshot`]) and
//! the newest one is kept in a file beside the database, so that a restarted node can serve
//! it to a follower that fell behind a log purge. openraft streams it in chunks.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meridian_proto::durable as pb;
use meridian_storage::ShardStore;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot};
use prost::Message as _;

use crate::convert::*;
use crate::log_store::io_err;
use crate::types::*;

/// Counters a shard's state machine keeps for status and tests.
#[derive(Debug, Default)]
pub struct MachineStats {
    /// Snapshots installed from a leader since this process started.
    pub snapshots_installed: AtomicU64,
    /// Snapshots built since this process started.
    pub snapshots_built: AtomicU64,
    /// The logic version the shard applies as of the last apply (what a leader stamps).
    pub logic_version: AtomicU32,
    /// Why this replica halted the shard (an entry it must not apply), once it has.
    pub halted: Mutex<Option<String>>,
    /// Entries with commands applied, and the commands in them (commands per entry is what
    /// batching achieves).
    pub entries_applied: AtomicU64,
    pub commands_applied: AtomicU64,
}

impl MachineStats {
    /// Why the shard is halted on this node, if it is.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn halt(&self, why: String) {
        let mut slot = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(why);
    }
}

/// A storage error of apply; a halt (an entry this replica must not apply) is recorded in
/// `stats` and logged loudly first, so the node stops this shard only, not itself.
fn apply_failed(stats: &MachineStats, shard: u32, e: meridian_storage::StorageError) -> RaftStorageError {
    if let meridian_storage::StorageError::Halted(why) = &e {
        tracing::error!(shard, reason = %why, "SHARD HALTED: this replica stops applying the shard");
        stats.halt(why.clone());
    }
    io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

#[derive(Debug, Clone)]
pub struct ShardMachine {
    store: ShardStore,
    snapshot_path: PathBuf,
    stats: Arc<MachineStats>,
    /// Wakes the outbox pump when an apply emitted effects.
    outbox_signal: Arc<tokio::sync::Notify>,
}

impl ShardMachine {
    pub fn new(store: ShardStore, snapshot_dir: PathBuf) -> Self {
        let snapshot_path = snapshot_dir.join(format!("shard-{}.snap", store.shard().0));
        let stats = Arc::new(MachineStats::default());
        if let Ok(applied) = store.applied_state() {
            stats.logic_version.store(applied.logic_version.max(1), Ordering::Relaxed);
        }
        Self { store, snapshot_path, stats, outbox_signal: Arc::default() }
    }

    pub fn stats(&self) -> Arc<MachineStats> {
        self.stats.clone()
    }

    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }

    fn applied_of(state: &pb::AppliedState) -> (Option<LogId>, StoredMembership) {
        let membership = state.membership.as_ref().map(membership_from_pb).unwrap_or_default();
        (
            opt_log_id_from_pb(state.last_applied.as_ref()),
            StoredMembership::new(opt_log_id_from_pb(state.membership_log_id.as_ref()), membership),
        )
    }

    /// Writes the snapshot file atomically: temp file, fsync, rename, fsync the directory.
    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), std::io::Error> {
        use std::io::Write;
        let dir = self.snapshot_path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.snapshot_path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let meta = snapshot_meta_to_pb(meta).encode_to_vec();
        f.write_all(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes())?;
        f.write_all(&meta)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.snapshot_path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, std::io::Error> {
        let bytes = match std::fs::read(&self.snapshot_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt snapshot file");
        let len = u32::from_be_bytes(bytes.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        let meta_bytes = bytes.get(4..4 + len).ok_or_else(bad)?;
        let meta = pb::SnapshotMetaRecord::decode(meta_bytes).map_err(|_| bad())?;
        if meta.version > meridian_storage::codec::RECORD_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "snapshot file written by a newer version (record version {}): upgrade this node",
                    meta.version
                ),
            ));
        }
        Ok(Some((snapshot_meta_from_pb(&meta), bytes[4 + len..].to_vec())))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ShardMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let (applied, data) =
            self.store.export_snapshot().map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let (last_log_id, last_membership) = Self::applied_of(&applied);
        let n = self.stats.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = format!("{}-{}-{n}", self.store.shard().0, last_log_id.map_or(0, |l| l.index));
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        self.persist_snapshot(&meta, &data)
            .map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        tracing::info!(
            shard = self.store.shard().0,
            index = last_log_id.map_or(0, |l| l.index),
            bytes = data.len(),
            "built snapshot"
        );
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for ShardMachine {
    type SnapshotBuilder = ShardMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let state = self.store.applied_state().map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        Ok(Self::applied_of(&state))
    }

    /// Applies entries in ONE WriteBatch with the applied state.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let fail = |e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e);
        let (stats, shard) = (&self.stats, self.store.shard().0);
        let mut txn = self.store.begin().map_err(fail)?;
        let effects_before = txn.applied_mut().next_effect_id;
        let mut responses = Vec::new();
        for entry in entries {
            txn.applied_mut().last_applied = Some(log_id_to_pb(&entry.log_id));
            match entry.payload {
                EntryPayload::Blank => responses.push(ShardResponse::default()),
                EntryPayload::Normal(batch) => {
                    stats.entries_applied.fetch_add(1, Ordering::Relaxed);
                    stats.commands_applied.fetch_add(batch.commands.len() as u64, Ordering::Relaxed);
                    let results =
                        txn.apply_batch(entry.log_id.index, &batch).map_err(|e| apply_failed(stats, shard, e))?;
                    responses.push(ShardResponse { results });
                }
                EntryPayload::Membership(m) => {
                    let applied = txn.applied_mut();
                    applied.membership = Some(membership_to_pb(&m));
                    applied.membership_log_id = Some(log_id_to_pb(&entry.log_id));
                    responses.push(ShardResponse::default());
                }
            }
        }
        let emitted = txn.applied_mut().next_effect_id != effects_before;
        let logic_version = txn.applied_mut().logic_version.max(1);
        txn.commit().map_err(fail)?;
        self.stats.logic_version.store(logic_version, Ordering::Relaxed);
        if emitted {
            self.outbox_signal.notify_one();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_inner();
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let applied = self.store.import_snapshot(&data).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        self.stats.logic_version.store(applied.logic_version.max(1), Ordering::Relaxed);
        self.persist_snapshot(meta, &data).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        self.stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.outbox_signal.notify_one();
        tracing::info!(shard = self.store.shard().0, snapshot = %meta.snapshot_id, bytes = data.len(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let loaded = self.load_snapshot().map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
