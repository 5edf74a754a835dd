//! openraft's `RaftLogStorage` over one shard's [`meridian_storage::LogStore`].

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use meridian_proto::durable as pb;
use meridian_storage::LogStore;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageIOError};
use prost::Message as _;

use crate::convert::*;
use crate::state_machine::{CommittedSlot, PurgeGate};
use crate::types::*;

/// Maps a storage failure into openraft's, naming what was being done.
pub(crate) fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> RaftStorageError {
    RaftStorageError::IO { source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)) }
}

/// Most entries the in-memory tail keeps, and most bytes (as encoded) per shard.
const TAIL_ENTRIES: usize = 1024;
const TAIL_BYTES: usize = 8 << 20;

/// The shard's most recent entries as appended, consecutive by index: replication to each
/// follower and apply read them from here instead of reading back and decoding what was
/// just written. Truncate and purge cut it exactly as they cut the log (a stale tail would
/// hand out entries the log no longer has), and a read it cannot answer whole goes to RocksDB.
#[derive(Debug, Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, entry: Entry, bytes: usize) {
        if self.entries.back().is_some_and(|(last, _)| last.log_id.index + 1 != entry.log_id.index) {
            self.clear();
        }
        self.bytes += bytes;
        self.entries.push_back((entry, bytes));
        while self.entries.len() > TAIL_ENTRIES || (self.bytes > TAIL_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, b)) = self.entries.pop_front() {
            self.bytes -= b;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops every entry from `index` on.
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, b)) = self.entries.pop_back() {
                self.bytes -= b;
            }
        }
    }

    /// Drops every entry up to `index`.
    fn purge_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= index) {
            self.pop_front();
        }
    }

    /// Entries `start..end`, if the tail holds all of them.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last + 1 {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let n = usize::try_from(end.saturating_sub(start)).ok()?;
        Some(self.entries.iter().skip(from).take(n).map(|(e, _)| e.clone()).collect())
    }
}

/// One shard's Raft log. Cheap to clone (the reader openraft asks for is a clone, sharing
/// the tail).
#[derive(Debug, Clone)]
pub struct ShardLog {
    log: LogStore,
    tail: Arc<Mutex<Tail>>,
    purge_gate: Option<PurgeGate>,
    committed: Option<CommittedSlot>,
}

impl ShardLog {
    pub fn new(log: LogStore) -> Self {
        Self { log, tail: Arc::default(), purge_gate: None, committed: None }
    }

    /// Raft's committed id goes to `slot`, and the shard's next apply writes it in its own
    /// batch: one database write fewer per commit on every replica (what a node runs with;
    /// without a slot each `save_committed` writes at once).
    pub fn committed_into(mut self, slot: CommittedSlot) -> Self {
        self.committed = Some(slot);
        self
    }

    /// Purges wait at `gate` until the shard's kept snapshot or applied state covers them
    /// (what a node runs with; without a gate a purge goes at once).
    pub fn gated_by(mut self, gate: PurgeGate) -> Self {
        self.purge_gate = Some(gate);
        self
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for ShardLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        if let (start, Some(end)) = meridian_storage::log::index_bounds(&range) {
            if end <= start {
                return Ok(Vec::new());
            }
            if let Some(entries) = self.tail().get(start, end) {
                return Ok(entries);
            }
        }
        let records = self.log.entries(range).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        records.into_iter().map(entry_from_pb).collect()
    }
}

impl RaftLogStorage<TypeConfig> for ShardLog {
    type LogReader = ShardLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let read = |e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last_purged = self.log.purged().map_err(read)?.as_ref().map(log_id_from_pb);
        let last = match self.log.last().map_err(read)? {
            Some(r) => r.log_id.as_ref().map(log_id_from_pb),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        let record = pb::VoteRecord {
            version: 1,
            term: vote.leader_id.term,
            node_id: vote.leader_id.node_id,
            committed: vote.committed,
        };
        self.log.save_vote(&record).await.map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        let v = self.log.vote().map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        Ok(v.map(|v| if v.committed { Vote::new_committed(v.term, v.node_id) } else { Vote::new(v.term, v.node_id) }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        if let (Some(slot), Some(committed)) = (&self.committed, committed) {
            slot.save(committed);
            return Ok(());
        }
        self.log
            .save_committed(opt_log_id_to_pb(committed.as_ref()).as_ref())
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        let c = self.log.committed().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(c.as_ref().map(log_id_from_pb))
    }

    /// Writes the entries, then reports them flushed from the group-sync thread once a WAL
    /// sync covers them. Never before.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let records: Vec<pb::LogEntryRecord> = entries.iter().map(entry_to_pb).collect();
        if let Err(e) = self.log.append(&records) {
            // What was written of it is unknown: the tail must not vouch for any of it.
            self.tail().clear();
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        }
        {
            let mut tail = self.tail();
            for (entry, record) in entries.into_iter().zip(&records) {
                tail.push(entry, record.encoded_len());
            }
        }
        self.log.db().sync(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.tail().truncate_from(log_id.index);
        self.log.truncate_from(log_id.index).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        if let Some(gate) = &self.purge_gate {
            gate.wait_covered(log_id.index).await.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        self.tail().purge_to(log_id.index);
        self.log.purge_to(&log_id_to_pb(&log_id)).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_tail_answers_only_what_it_holds_whole_and_follows_truncate_and_purge() {
        let mut tail = Tail::default();
        for i in 5..=9 {
            tail.push(entry(i), 10);
        }
        assert_eq!(indexes(tail.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(tail.get(4, 7)), None, "5 is the first it holds");
        assert_eq!(indexes(tail.get(8, 11)), None, "9 is the last it holds");
        tail.truncate_from(8);
        assert_eq!(indexes(tail.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(tail.get(7, 9)), None, "8 was truncated");
        // A new entry 8 (another leader's) follows the truncate.
        tail.push(entry(8), 10);
        assert_eq!(indexes(tail.get(7, 9)), Some(vec![7, 8]));
        tail.purge_to(6);
        assert_eq!(indexes(tail.get(6, 8)), None, "6 was purged");
        assert_eq!(indexes(tail.get(7, 9)), Some(vec![7, 8]));
        // A gap (an append that does not follow) empties it rather than mixing logs.
        tail.push(entry(20), 10);
        assert_eq!(indexes(tail.get(7, 8)), None);
        assert_eq!(indexes(tail.get(20, 21)), Some(vec![20]));
        assert_eq!(tail.bytes, 10);
    }

    #[test]
    fn the_tail_keeps_its_bounds() {
        let mut tail = Tail::default();
        for i in 1..=(TAIL_ENTRIES as u64 + 10) {
            tail.push(entry(i), 100);
        }
        assert_eq!(tail.entries.len(), TAIL_ENTRIES);
        assert_eq!(tail.entries.front().map(|(e, _)| e.log_id.index), Some(11));
        tail.push(entry(TAIL_ENTRIES as u64 + 11), TAIL_BYTES);
        assert_eq!(tail.entries.len(), 1, "one entry past the byte cap stays alone");
        assert_eq!(tail.bytes, TAIL_BYTES);
    }
}
