//! openraft's `RaftLogStorage` over one shard's [`meridian_storage::LogStore`].

use std::fmt::Debug;
use std::ops::RangeBounds;

use meridian_proto::durable as pb;
use meridian_storage::LogStore;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageIOError};

use crate::convert::*;
use crate::types::*;

/// Maps a storage failure into openraft's, naming what was being done.
pub(crate) fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> RaftStorageError {
    RaftStorageError::IO { source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)) }
}

/// One shard's Raft log. Cheap to clone (the reader openraft asks for is a clone).
#[derive(Debug, Clone)]
pub struct ShardLog {
    log: LogStore,
}

impl ShardLog {
    pub fn new(log: LogStore) -> Self {
        Self { log }
    }
}

impl RaftLogReader<TypeConfig> for ShardLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
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
        let records: Vec<pb::LogEntryRecord> = entries.into_iter().map(|e| entry_to_pb(&e)).collect();
        self.log.append(&records).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.log.db().sync(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.log.truncate_from(log_id.index).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.log.purge_to(&log_id_to_pb(&log_id)).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
