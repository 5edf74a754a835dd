//! openraft's `RaftStateMachine` over one shard's [`meridian_storage::ShardStore`].
//!
//! Snapshots are streamed: built from a RocksDB snapshot into a file beside the database
//! ([`meridian_storage::snapshot`]), sent by openraft in chunks read from that file, received
//! chunk by chunk into a file, checked, kept as the shard's snapshot file and installed in
//! batches — memory stays bounded whatever a shard holds. The file is replaced only by a newer
//! snapshot, atomically (temp file, fsync, rename, fsync the directory), so a restarted node
//! serves the newest to a follower that fell behind a log purge. Building, checking and
//! installing run on blocking threads, not on the runtime's workers.
//!
//! An install first keeps the received snapshot as the shard's file, then writes it into the
//! state. A node stopped in between finds its snapshot file ahead of its applied state when it
//! opens the shard, and finishes the install before Raft starts ([`ShardMachine::open`]).
//!
//! openraft purges a follower's log up to a received snapshot in the same step as it hands
//! the snapshot over for install, and the two run concurrently. A purge made durable before
//! the snapshot is kept would leave, after a stop in between, a log that starts past the
//! applied state with nothing to bridge the gap. So a purge waits at the [`PurgeGate`] until
//! the shard's kept snapshot or its applied state reaches it.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meridian_proto::durable as pb;
use meridian_storage::latency::Histogram;
use meridian_storage::snapshot::{self, SnapshotFileHeader};
use meridian_storage::ShardStore;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot};
use prost::Message as _;

use crate::convert::*;
use crate::log_store::io_err;
use crate::snapshot_file::SnapshotFile;
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
    /// Records apply looked up in the database (a record read again in the same apply call
    /// is not looked up again): per command, what apply's reads cost.
    pub apply_lookups: AtomicU64,
    /// Proposals that were in flight when this node stopped leading the shard, answered
    /// "not the leader" so that they are retried through the new leader (the batcher).
    pub proposals_deposed: AtomicU64,
    /// A snapshot install is writing the shard's state: local reads are refused meanwhile.
    pub installing: std::sync::atomic::AtomicBool,
    /// Encoded bytes of the command batches applied since this process started.
    pub applied_bytes: AtomicU64,
    /// `applied_bytes` when the kept snapshot was built or installed (0 for one found at start).
    pub applied_bytes_at_snapshot: AtomicU64,
    /// Size of the kept snapshot, in bytes (0: none).
    pub snapshot_bytes: AtomicU64,
    /// Leader: from a proposal's submission to its answer (waiting for a place in flight,
    /// then [`MachineStats::write_seconds`]); successful proposals only.
    pub proposal_seconds: Histogram,
    /// Leader: one entry's `client_write`, from proposing it to its result (the leader's
    /// append and WAL sync, replication to a majority, commit, apply); successful ones only.
    pub write_seconds: Histogram,
    /// Every replica: one call of apply (the entries openraft hands over at once).
    pub apply_seconds: Histogram,
}

impl MachineStats {
    /// A snapshot of `bytes` is kept now (built or installed).
    fn kept_snapshot(&self, bytes: u64, applied_bytes_then: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.applied_bytes_at_snapshot.store(applied_bytes_then, Ordering::Relaxed);
    }
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

/// The shard's committed log id as Raft last saved it, written with the next apply's batch
/// rather than by a database write of its own ([`crate::log_store::ShardLog::committed_into`]).
///
/// Raft applies every entry it commits, so an apply follows each advance; a stop before it
/// loses only the advance, which is always safe (a restart takes the applied state as
/// committed at least, and the leader says the rest again). Never read by apply itself.
#[derive(Debug, Clone, Default)]
pub struct CommittedSlot(Arc<Mutex<Option<LogId>>>);

impl CommittedSlot {
    /// Raft's `save_committed`.
    pub fn save(&self, committed: LogId) {
        *self.lock() = Some(committed);
    }

    /// The id saved since the last apply took one, for the apply to write.
    fn take(&self) -> Option<LogId> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct ShardMachine {
    store: ShardStore,
    /// Raft's committed id, saved by the next apply.
    committed: CommittedSlot,
    files: SnapshotFiles,
    stats: Arc<MachineStats>,
    /// Wakes the outbox pump when an apply emitted effects.
    outbox_signal: Arc<tokio::sync::Notify>,
}

/// Where a shard keeps its snapshot, and the one lock under which the file is replaced.
#[derive(Debug, Clone)]
struct SnapshotFiles {
    dir: PathBuf,
    shard: u32,
    /// The last log id of the snapshot in the file: a build that finishes after a newer
    /// install must not put its older snapshot back.
    current: Arc<Mutex<Option<LogId>>>,
    /// What the file holds, told to the [`PurgeGate`].
    kept: Arc<tokio::sync::watch::Sender<Kept>>,
}

/// The snapshot kept on disk, as the purge gate sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Kept {
    /// Index of the last entry the kept snapshot covers.
    through: Option<u64>,
    /// Installs that failed before keeping their snapshot: a purge waiting for one is
    /// answered with an error instead of waiting for ever.
    failed_installs: u64,
}

/// Holds a log purge back until the shard's kept snapshot or its applied state covers every
/// entry the purge removes, so that no stop can leave the log starting past the state.
#[derive(Debug, Clone)]
pub struct PurgeGate {
    kept: tokio::sync::watch::Receiver<Kept>,
    store: ShardStore,
}

impl PurgeGate {
    /// Returns once a purge through `index` leaves nothing the shard cannot rebuild; an error
    /// if the install it waits for fails.
    pub async fn wait_covered(&self, index: u64) -> Result<(), meridian_storage::StorageError> {
        let mut kept = self.kept.clone();
        let failed_before = kept.borrow().failed_installs;
        let mut logged = false;
        loop {
            let now = *kept.borrow_and_update();
            if now.through.is_some_and(|t| t >= index) {
                return Ok(());
            }
            if now.failed_installs > failed_before {
                return Err(meridian_storage::StorageError::from(std::io::Error::other(
                    "the snapshot install this purge waited for failed: the log is left whole",
                )));
            }
            let applied = self.store.applied_state()?.last_applied.map(|l| l.index);
            if applied.is_some_and(|a| a >= index) {
                return Ok(());
            }
            if !logged {
                tracing::info!(shard = self.store.shard().0, index, "log purge waits for the snapshot to be kept");
                logged = true;
            }
            if kept.changed().await.is_err() {
                return Err(meridian_storage::StorageError::from(std::io::Error::other(
                    "the shard's state machine is gone: the log is left whole",
                )));
            }
        }
    }
}

impl SnapshotFiles {
    fn path(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("shard-{}.{kind}", self.shard))
    }

    /// The shard's snapshot file (`shard-N.snap`).
    fn current(&self) -> PathBuf {
        self.path("snap")
    }

    /// Opens the snapshot file: its snapshot's meta, the file, and where the snapshot starts.
    fn open(&self) -> Result<Option<(SnapshotMeta, std::fs::File, u64)>, meridian_storage::StorageError> {
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(self.current()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (meta, start) = SnapshotFileHeader::read(&mut std::io::BufReader::new(&mut file))?;
        if meta.version > meridian_storage::codec::RECORD_VERSION {
            return Err(meridian_storage::StorageError::corrupt(
                "snapshot file",
                format!("written by a newer version (record version {}): upgrade this node", meta.version),
            ));
        }
        file.seek(SeekFrom::Start(start))?;
        Ok(Some((snapshot_meta_from_pb(&meta), file, start)))
    }

    /// Writes `meta`'s header and then the snapshot `body` writes into the temp file `kind`,
    /// syncs it and makes it the shard's snapshot file unless that holds a newer one. Returns
    /// the file (still open, so a later replacement does not disturb a reader) and where the
    /// snapshot starts in it.
    fn replace(
        &self,
        kind: &str,
        meta: &SnapshotMeta,
        body: impl FnOnce(&mut std::fs::File) -> Result<(), meridian_storage::StorageError>,
    ) -> Result<(std::fs::File, u64), meridian_storage::StorageError> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.path(kind);
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        let header = SnapshotFileHeader::encode(&snapshot_meta_to_pb(meta));
        file.write_all(&header)?;
        if let Err(e) = body(&mut file) {
            // A half-written temp file is no snapshot: nothing may find it.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        file.sync_all()?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *current > meta.last_log_id {
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, self.current())?;
            std::fs::File::open(&self.dir)?.sync_all()?;
            *current = meta.last_log_id;
            let through = meta.last_log_id.map(|l| l.index);
            self.kept.send_modify(|k| k.through = through);
        }
        Ok((file, header.len() as u64))
    }
}

/// Runs blocking storage work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, meridian_storage::StorageError> + Send + 'static,
) -> Result<T, meridian_storage::StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| meridian_storage::StorageError::from(std::io::Error::other(e.to_string())))?
}

impl ShardMachine {
    /// The shard's state machine. Finishes a snapshot install a stop interrupted (the snapshot
    /// file ahead of the applied state) before anything reads the shard.
    pub fn open(store: ShardStore, snapshot_dir: PathBuf) -> Result<Self, meridian_storage::StorageError> {
        let files = SnapshotFiles {
            dir: snapshot_dir,
            shard: store.shard().0,
            current: Arc::default(),
            kept: Arc::new(tokio::sync::watch::channel(Kept::default()).0),
        };
        let stats = Arc::new(MachineStats::default());
        let mut applied = store.applied_state()?;
        if let Some((meta, mut file, start)) = files.open()? {
            let size = file.metadata().map(|m| m.len().saturating_sub(start)).unwrap_or(0);
            stats.kept_snapshot(size, 0);
            *files.current.lock().unwrap_or_else(|p| p.into_inner()) = meta.last_log_id;
            files.kept.send_modify(|k| k.through = meta.last_log_id.map(|l| l.index));
            let (last_applied, _) = Self::applied_of(&applied);
            if meta.last_log_id > last_applied {
                tracing::warn!(
                    shard = files.shard,
                    snapshot = %meta.snapshot_id,
                    applied = last_applied.map_or(0, |l| l.index),
                    "the snapshot file is ahead of the applied state: finishing its install"
                );
                applied = store.import_snapshot_from(&mut file, start)?;
            }
        }
        // A committed id saved past a gap in the log (entries a snapshot being installed
        // covered) would make the restart re-apply entries this replica never had.
        let log = meridian_storage::LogStore::new(store.db().clone(), store.shard());
        if let Some(clamped) = log.clamp_committed_to_log()? {
            tracing::warn!(
                shard = files.shard,
                committed = clamped.map_or(0, |l| l.index),
                "the saved committed id was past the log's entries: lowered to the last entry held"
            );
        }
        stats.logic_version.store(applied.logic_version.max(1), Ordering::Relaxed);
        Ok(Self { store, committed: CommittedSlot::default(), files, stats, outbox_signal: Arc::default() })
    }

    pub fn stats(&self) -> Arc<MachineStats> {
        self.stats.clone()
    }

    /// The gate the shard's log purges wait at ([`crate::log_store::ShardLog::gated_by`]).
    pub fn purge_gate(&self) -> PurgeGate {
        PurgeGate { kept: self.files.kept.subscribe(), store: self.store.clone() }
    }

    /// Where the shard's log leaves its committed id for apply to write
    /// ([`crate::log_store::ShardLog::committed_into`]).
    pub fn committed_slot(&self) -> CommittedSlot {
        self.committed.clone()
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
}

fn snapshot_err(meta: Option<&SnapshotMeta>, verb: ErrorVerb, e: meridian_storage::StorageError) -> RaftStorageError {
    io_err(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb, e)
}

async fn tokio_file(file: std::fs::File, start: u64) -> Result<SnapshotFile, meridian_storage::StorageError> {
    Ok(SnapshotFile::at(tokio::fs::File::from_std(file), start).await?)
}

impl RaftSnapshotBuilder<TypeConfig> for ShardMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let (store, files, stats) = (self.store.clone(), self.files.clone(), self.stats.clone());
        let started = std::time::Instant::now();
        let built = blocking(move || {
            // Read before the view: the bytes since the snapshot are counted from no later.
            let applied_bytes = stats.applied_bytes.load(Ordering::Relaxed);
            let view = store.snapshot_view()?;
            let (last_log_id, last_membership) = Self::applied_of(view.applied());
            let n = stats.snapshots_built.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = format!("{}-{}-{n}", files.shard, last_log_id.map_or(0, |l| l.index));
            let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
            let mut bytes = 0;
            let (file, start) = files.replace("build", &meta, |f| {
                bytes = view.write_to(f)?;
                Ok(())
            })?;
            stats.kept_snapshot(bytes, applied_bytes);
            Ok((meta, file, start, bytes))
        })
        .await;
        let (meta, file, start, bytes) = built.map_err(|e| snapshot_err(None, ErrorVerb::Write, e))?;
        tracing::info!(
            shard = self.files.shard,
            index = meta.last_log_id.map_or(0, |l| l.index),
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        let data = tokio_file(file, start).await.map_err(|e| snapshot_err(Some(&meta), ErrorVerb::Read, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(data) })
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
        // Timing for /metrics only: nothing applied depends on it (the entries carry the
        // leader's time; apply never reads a clock for the state).
        let started = std::time::Instant::now();
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
                    stats.applied_bytes.fetch_add(batch.encoded_len() as u64, Ordering::Relaxed);
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
        stats.apply_lookups.fetch_add(txn.database_lookups(), Ordering::Relaxed);
        if let Some(committed) = self.committed.take() {
            txn.save_committed(&log_id_to_pb(&committed)).map_err(fail)?;
        }
        txn.commit().map_err(fail)?;
        self.stats.logic_version.store(logic_version, Ordering::Relaxed);
        if emitted {
            self.outbox_signal.notify_one();
        }
        self.stats.apply_seconds.since(started);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, RaftStorageError> {
        let path = self.files.path("recv");
        let dir = self.files.dir.clone();
        let file = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            // A new file each time: a write of an abandoned receive still in flight lands in
            // the old one, not in this one.
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            Ok(std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?)
        })
        .await;
        let file = match file {
            Ok(f) => tokio_file(f, 0).await,
            Err(e) => Err(e),
        };
        Ok(Box::new(file.map_err(|e| snapshot_err(None, ErrorVerb::Write, e))?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), RaftStorageError> {
        let fail = |e| snapshot_err(Some(meta), ErrorVerb::Write, e);
        let started = std::time::Instant::now();
        let (mut received, from) = snapshot.into_std().await.map_err(|e| fail(e.into()))?;
        let (store, files, stats, owned_meta) =
            (self.store.clone(), self.files.clone(), self.stats.clone(), meta.clone());
        let installed = blocking(move || {
            // Checked as it is copied behind the header: a corrupt snapshot is refused
            // before it replaces anything.
            let mut bytes = 0;
            let kept = files.replace("install", &owned_meta, |f| {
                bytes = snapshot::copy_verified(&mut received, from, std::io::BufWriter::with_capacity(1 << 20, f))?;
                Ok(())
            });
            let (mut file, start) = match kept {
                Ok(kept) => kept,
                Err(e) => {
                    files.kept.send_modify(|k| k.failed_installs += 1);
                    return Err(e);
                }
            };
            let kept_ms = started.elapsed().as_millis() as u64;
            drop(received);
            match std::fs::remove_file(files.path("recv")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            stats.installing.store(true, Ordering::SeqCst);
            let applied = store.import_snapshot_from(&mut file, start);
            stats.installing.store(false, Ordering::SeqCst);
            Ok((applied?, bytes, kept_ms))
        })
        .await;
        let (applied, bytes, kept_ms) = installed.map_err(fail)?;
        self.stats.kept_snapshot(bytes, self.stats.applied_bytes.load(Ordering::Relaxed));
        self.stats.logic_version.store(applied.logic_version.max(1), Ordering::Relaxed);
        self.stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.outbox_signal.notify_one();
        tracing::info!(
            shard = self.files.shard,
            snapshot = %meta.snapshot_id,
            bytes,
            kept_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let files = self.files.clone();
        let opened = blocking(move || files.open()).await.map_err(|e| snapshot_err(None, ErrorVerb::Read, e))?;
        let Some((meta, file, start)) = opened else { return Ok(None) };
        let data = tokio_file(file, start).await.map_err(|e| snapshot_err(Some(&meta), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}
