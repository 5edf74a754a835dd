//! Opening the node's RocksDB and group-synced durability.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::error::StorageError;
use crate::keys::ALL_CFS;
use crate::latency::Histogram;

/// Most bytes of write-ahead log kept before the column families holding the oldest are
/// flushed (see [`Db::open`]).
const MAX_TOTAL_WAL_BYTES: u64 = 128 << 20;
/// WAL files kept for reuse once obsolete (see [`Db::open`]).
const RECYCLED_WAL_FILES: usize = 4;

/// A sync request: when it was made, and what to call once the sync is done.
type SyncCallback = (Instant, Box<dyn FnOnce(Result<(), std::io::Error>) + Send>);

/// Counters of the group-sync thread, for tests, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Bytes of the write batches written (Raft log appends, applies, metadata): what goes
    /// to the WAL, before compaction.
    pub bytes_written: AtomicU64,
    /// Write batches written.
    pub batches_written: AtomicU64,
    /// How long each WAL sync took (its count: the syncs performed).
    pub sync_seconds: Histogram,
    /// How long each request (an append, a vote…) waited for its sync, from [`Db::sync`] to
    /// its callback: the sync in progress when it came (if any), then its own. Its count:
    /// the requests the syncs made durable.
    pub sync_wait_seconds: Histogram,
}

impl SyncStats {
    /// WAL syncs performed.
    pub fn syncs(&self) -> u64 {
        self.sync_seconds.read().count()
    }

    /// Requests (appends, votes…) those syncs made durable.
    pub fn requests(&self) -> u64 {
        self.sync_wait_seconds.read().count()
    }
}

struct SyncQueue {
    waiting: Mutex<(Vec<SyncCallback>, bool)>,
    wake: Condvar,
}

struct Inner {
    db: DB,
    queue: Arc<SyncQueue>,
    stats: SyncStats,
}

/// The node's database: every shard of the region, in one RocksDB.
///
/// Cloning is cheap; every clone shares the database and its sync thread. The sync thread
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.inner.db.path()).finish()
    }
}

/// Column families read by key on the write path: they get Bloom filters.
const POINT_READ_CFS: [&str; 2] = [crate::keys::CF_DEDUP, crate::keys::CF_PROJECTIONS];

/// The share of a memtable's size its Bloom filter takes.
const MEMTABLE_BLOOM_RATIO: f64 = 0.05;

impl Db {
    /// Writes one record straight into a column family, synced, outside Raft and apply.
    /// For repair tools and for tests that plant data in a stopped node's store; a node never
    /// calls it.
    pub fn put_unchecked(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.cf(cf)?, key, value);
        self.write_synced(batch)
    }

    /// Opens (creating if needed) the database at `path` and starts its sync thread.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // A WAL file is kept until every column family with data in it has flushed; a family
        // that is written rarely (the vote, the applied state of a quiet shard) would pin
        // every WAL file after it, and the directory would grow with every write ever made
        // (measured: 1.3 GiB of mostly WAL after 1M messages). Past this total, RocksDB
        // flushes the families that hold the oldest WAL so that it can go.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        // A WAL file that is no longer needed is kept and written over as a later WAL instead
        // of being deleted: writes inside a file's existing size leave its inode alone, so the
        // fdatasync behind every acknowledgement flushes the data blocks and no journal commit
        // (measured on this machine's disk: 105 µs against 265 µs per sync of 200 bytes,
        // ../peer-bench's prealloc_fdatasync.py against fsync_timeline.py). RocksDB recycles
        // only WAL files made since the database opened, and only with its default recovery
        // mode (point in time), which Meridian keeps.
        opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if POINT_READ_CFS.contains(name) {
                // Apply reads these by key on every send (the request id's record, mostly
                // absent; the conversation's head): a Bloom filter over the memtable's keys
                // answers "absent" without walking the skip list, and one per table file
                // without reading its blocks (write path v2: the skip-list walks of those
                // reads were ~5 % of a node's CPU under load).
                cf.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
                cf.set_memtable_whole_key_filtering(true);
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_whole_key_filtering(true);
                cf.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let queue = Arc::new(SyncQueue { waiting: Mutex::new((Vec::new(), false)), wake: Condvar::new() });
        let inner = Arc::new(Inner { db, queue: queue.clone(), stats: SyncStats::default() });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("wal-sync".into()).spawn(move || sync_loop(&queue, weak))?;
        Ok(Self { inner })
    }

    pub(crate) fn rocks(&self) -> &DB {
        &self.inner.db
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| StorageError::corrupt("column family", format!("{name} is missing")))
    }

    fn count(&self, batch: &WriteBatch) {
        let stats = &self.inner.stats;
        stats.bytes_written.fetch_add(batch.size_in_bytes() as u64, std::sync::atomic::Ordering::Relaxed);
        stats.batches_written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes a batch without waiting for the WAL sync (see [`Db::sync`]).
    pub(crate) fn write_unsynced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.count(&batch);
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.inner.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Writes a batch and syncs the WAL before returning.
    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.count(&batch);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.inner.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Calls `done` once every write made before this call is durable.
    ///
    /// Requests that arrive while a sync is running share the next one: with many shards
    /// appending at once, one fsync covers all of them (group commit).
    pub fn sync(&self, done: impl FnOnce(Result<(), std::io::Error>) + Send + 'static) {
        let q = &self.inner.queue;
        let mut w = q.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.0.push((Instant::now(), Box::new(done)));
        q.wake.notify_one();
    }

    /// Waits until every write made before this call is durable.
    pub async fn sync_async(&self) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sync(move |r| {
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| StorageError::SyncStopped)?.map_err(StorageError::Io)
    }

    /// Syncs the WAL on the calling thread.
    pub fn sync_now(&self) -> Result<(), StorageError> {
        self.inner.db.flush_wal(true)?;
        Ok(())
    }

    pub fn stats(&self) -> &SyncStats {
        &self.inner.stats
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut w = self.queue.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.1 = true;
        self.queue.wake.notify_all();
    }
}

/// Waits for sync requests and serves each wave of them with one WAL sync. Holds the database
/// only while syncing, so dropping the last [`Db`] closes it at once.
fn sync_loop(queue: &SyncQueue, weak: std::sync::Weak<Inner>) {
    loop {
        let batch = {
            let mut w = queue.waiting.lock().unwrap_or_else(|p| p.into_inner());
            while w.0.is_empty() && !w.1 {
                w = queue.wake.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            if w.0.is_empty() {
                return;
            }
            std::mem::take(&mut w.0)
        };
        let result = match weak.upgrade() {
            Some(inner) => {
                let started = Instant::now();
                let r = inner.db.flush_wal(true).map_err(|e| std::io::Error::other(e.to_string()));
                let done = Instant::now();
                inner.stats.sync_seconds.record(done - started);
                for (asked, _) in &batch {
                    inner.stats.sync_wait_seconds.record(done.saturating_duration_since(*asked));
                }
                r
            }
            None => Err(std::io::Error::other("database closed")),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "WAL sync failed; acknowledging nothing");
        }
        for (_, done) in batch {
            done(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::CF_DEDUP;

    /// Set for the child process of [`acknowledged_writes_in_a_recycled_wal_survive_a_kill`]:
    /// the database directory it writes to.
    const CHILD_DIR: &str = "MERIDIAN_TEST_WAL_CHILD_DIR";
    const ACKED: u64 = 200;

    fn acks_path(dir: &Path) -> std::path::PathBuf {
        dir.join("acked")
    }

    /// The child: fills and flushes the database until RocksDB reuses an old WAL file, then
    /// writes records one by one, each synced as the Raft log's appends are (written, then
    /// the group sync), and notes each acknowledged one; then keeps writing until killed.
    #[test]
    fn wal_writer_child() {
        let Some(dir) = std::env::var_os(CHILD_DIR).map(std::path::PathBuf::from) else { return };
        let db = Db::open(&dir.join("db")).unwrap();
        let filler = vec![7u8; 64 << 10];
        for round in 0..4u32 {
            let mut batch = WriteBatch::default();
            for k in 0..32u32 {
                batch.put_cf(db.cf(CF_DEDUP).unwrap(), format!("filler-{round}-{k}"), &filler);
            }
            db.write_unsynced(batch).unwrap();
            db.sync_now().unwrap();
            for cf in ALL_CFS {
                db.rocks().flush_cf(db.cf(cf).unwrap()).unwrap();
            }
        }
        let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(acks_path(&dir)).unwrap();
        for i in 0.. {
            let mut batch = WriteBatch::default();
            batch.put_cf(db.cf(CF_DEDUP).unwrap(), format!("ack-{i}"), i.to_string());
            db.write_unsynced(batch).unwrap();
            db.sync_now().unwrap();
            if i < ACKED {
                use std::io::Write as _;
                writeln!(acks, "{i}").unwrap();
                acks.flush().unwrap();
            }
        }
    }

    /// WAL files are recycled ([`RECYCLED_WAL_FILES`]): a process killed (SIGKILL) while
    /// writing into a reused WAL file loses none of the writes it had synced, and recovery
    /// does not mistake the old records left further in the file for new ones.
    #[test]
    fn acknowledged_writes_in_a_recycled_wal_survive_a_kill() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["db::tests::wal_writer_child", "--exact", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let acked = std::fs::read_to_string(acks_path(tmp.path())).unwrap_or_default();
            if acked.lines().count() as u64 >= ACKED {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the writer stopped early");
            assert!(Instant::now() < deadline, "the writer acknowledged {} of {ACKED}", acked.lines().count());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let log = std::fs::read_to_string(tmp.path().join("db/LOG")).unwrap();
        assert!(log.contains("from recycle list"), "the writes went into a reused WAL file");
        let db = Db::open(&tmp.path().join("db")).unwrap();
        for i in 0..ACKED {
            let value = db.rocks().get_cf(db.cf(CF_DEDUP).unwrap(), format!("ack-{i}")).unwrap();
            assert_eq!(value.as_deref(), Some(i.to_string().as_bytes()), "acknowledged write {i}");
        }
    }
}
