//! openraft's own storage conformance suite, run against Meridian's RocksDB log store and
//! state machine (each case on a fresh database in its own directory).

#![allow(clippy::result_large_err)]

use meridian_domain::ShardId;
use meridian_raft::log_store::ShardLog;
use meridian_raft::state_machine::ShardMachine;
use meridian_raft::types::{NodeId, TypeConfig};
use meridian_storage::{Db, LogStore, ShardStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, ShardLog, ShardMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, ShardLog, ShardMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        let db = Db::open(&dir.path().join("db")).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })?;
        // Shard 3 of 8: keys of other shards must never leak in.
        let shard = ShardId(3);
        let log = ShardLog::new(LogStore::new(db.clone(), shard));
        let machine = ShardMachine::open(ShardStore::new(db, shard, 8), dir.path().join("snapshots")).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder)
}
