//! One shard's Raft log: encoded entries by index, plus the vote, committed and purged ids.
//!
//! Writes land in RocksDB unsynced and in call order, so they are readable at once and a
//! truncate can never overtake an append; durability comes from [`Db::sync`], which the
//! caller waits on before reporting an append flushed.

use std::ops::RangeBounds;

use meridian_domain::ShardId;
use meridian_proto::durable as pb;
use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::db::Db;
use crate::error::{decode, decode_record, StorageError};
use crate::keys;

#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    shard: ShardId,
}

/// `range` of log indexes as `start..end` (`end` `None`: unbounded).
pub fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl LogStore {
    pub fn new(db: Db, shard: ShardId) -> Self {
        Self { db, shard }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Writes entries (unsynced). Call [`Db::sync`] before reporting them flushed.
    pub fn append(&self, entries: &[pb::LogEntryRecord]) -> Result<(), StorageError> {
        let cf = self.db.cf(keys::CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        for e in entries {
            let index = e.log_id.as_ref().map_or(0, |l| l.index);
            batch.put_cf(cf, keys::log_entry(self.shard, index), e.encode_to_vec());
        }
        self.db.write_unsynced(batch)
    }

    /// Entries with index in `range`, in order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<pb::LogEntryRecord>, StorageError> {
        let (start, end) = index_bounds(&range);
        if end.is_some_and(|e| e <= start) {
            return Ok(vec![]);
        }
        let cf = self.db.cf(keys::CF_RAFT_LOG)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(match end {
            Some(e) => keys::log_entry(self.shard, e),
            None => keys::shard_end(self.shard),
        });
        let from = keys::log_entry(self.shard, start);
        let iter = self.db.rocks().iterator_cf_opt(cf, ro, IteratorMode::From(&from, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item?;
            out.push(decode("log entry", &v)?);
        }
        Ok(out)
    }

    /// The entry with the highest index, if any.
    pub fn last(&self) -> Result<Option<pb::LogEntryRecord>, StorageError> {
        let cf = self.db.cf(keys::CF_RAFT_LOG)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::shard_prefix(self.shard));
        let end = keys::shard_end(self.shard);
        let mut iter = self.db.rocks().iterator_cf_opt(cf, ro, IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                if k.len() == 12 && k.starts_with(&keys::shard_prefix(self.shard)) {
                    Ok(Some(decode("log entry", &v)?))
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }

    /// Deletes every entry with index >= `from` (unsynced; ordered before later appends).
    pub fn truncate_from(&self, from: u64) -> Result<(), StorageError> {
        let cf = self.db.cf(keys::CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, keys::log_entry(self.shard, from), keys::shard_end(self.shard));
        self.db.write_unsynced(batch)
    }

    /// Records `purged` and deletes every entry up to and including its index.
    pub fn purge_to(&self, purged: &pb::LogId) -> Result<(), StorageError> {
        let log = self.db.cf(keys::CF_RAFT_LOG)?;
        let meta = self.db.cf(keys::CF_RAFT_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::meta(self.shard, keys::META_PURGED), purged.encode_to_vec());
        batch.delete_range_cf(
            log,
            keys::log_entry(self.shard, 0),
            keys::log_entry(self.shard, purged.index.saturating_add(1)),
        );
        self.db.write_unsynced(batch)
    }

    pub fn purged(&self) -> Result<Option<pb::LogId>, StorageError> {
        self.get_meta(keys::META_PURGED, "purged log id")
    }

    /// Saves the vote and waits until it is durable.
    pub async fn save_vote(&self, vote: &pb::VoteRecord) -> Result<(), StorageError> {
        self.put_meta(keys::META_VOTE, vote.encode_to_vec())?;
        self.db.sync_async().await
    }

    pub fn vote(&self) -> Result<Option<pb::VoteRecord>, StorageError> {
        let meta = self.db.cf(keys::CF_RAFT_META)?;
        match self.db.rocks().get_pinned_cf(meta, keys::meta(self.shard, keys::META_VOTE))? {
            Some(v) => Ok(Some(decode_record("vote", &v)?)),
            None => Ok(None),
        }
    }

    pub fn save_committed(&self, committed: Option<&pb::LogId>) -> Result<(), StorageError> {
        match committed {
            Some(c) => self.put_meta(keys::META_COMMITTED, c.encode_to_vec()),
            None => {
                let meta = self.db.cf(keys::CF_RAFT_META)?;
                let mut batch = WriteBatch::default();
                batch.delete_cf(meta, keys::meta(self.shard, keys::META_COMMITTED));
                self.db.write_unsynced(batch)
            }
        }
    }

    pub fn committed(&self) -> Result<Option<pb::LogId>, StorageError> {
        self.get_meta(keys::META_COMMITTED, "committed log id")
    }

    /// The last log id the shard's state machine applied (its applied state, in the same
    /// database).
    pub fn applied(&self) -> Result<Option<pb::LogId>, StorageError> {
        Ok(self.get_meta::<pb::AppliedState>(keys::META_APPLIED, "applied state")?.and_then(|a| a.last_applied))
    }

    /// Lowers the saved committed log id to the last entry this log holds without a gap after
    /// the applied state, when it is past it; returns the new value if it changed. A restart
    /// re-applies the log from the applied state up to the saved committed id, so a committed
    /// id past a gap (entries a snapshot being installed covered, never received) would stop
    /// the shard from starting. A lower committed id is always safe: the leader says it again.
    pub fn clamp_committed_to_log(&self) -> Result<Option<Option<pb::LogId>>, StorageError> {
        let Some(committed) = self.committed()? else { return Ok(None) };
        let applied = self.applied()?;
        let from = applied.as_ref().map_or(0, |a| a.index.saturating_add(1));
        if committed.index < from {
            return Ok(None);
        }
        let mut last = applied;
        let mut expected = from;
        for record in self.entries(from..=committed.index)? {
            match record.log_id {
                Some(id) if id.index == expected => {
                    expected += 1;
                    last = Some(id);
                }
                _ => break,
            }
        }
        if last.as_ref() == Some(&committed) {
            return Ok(None);
        }
        self.save_committed(last.as_ref())?;
        Ok(Some(last))
    }

    fn put_meta(&self, tag: u8, value: Vec<u8>) -> Result<(), StorageError> {
        let meta = self.db.cf(keys::CF_RAFT_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::meta(self.shard, tag), value);
        self.db.write_unsynced(batch)
    }

    fn get_meta<M: prost::Message + Default>(&self, tag: u8, what: &'static str) -> Result<Option<M>, StorageError> {
        let meta = self.db.cf(keys::CF_RAFT_META)?;
        match self.db.rocks().get_pinned_cf(meta, keys::meta(self.shard, tag))? {
            Some(v) => Ok(Some(decode(what, &v)?)),
            None => Ok(None),
        }
    }
}
