//! A region whose log already holds entries that do not decode into commands — written by a
//! faulty or older binary, planted here straight into the node's RocksDB log — starts,
//! rejects those commands at apply as `MALFORMED_COMMAND`, applies the well-formed command
//! beside them, and keeps every message it acknowledged before.

#![allow(clippy::unwrap_used)]

use crate::common;

use meridian_client::api::ReadConsistency;
use meridian_proto::durable as pb;
use meridian_storage::{Db, LogStore};

use common::{local_history, shard_of, Cluster, Tuning};

const SHARDS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_with_undecodable_commands_is_applied_by_rejecting_them() {
    let mut cluster = Cluster::start(1, Tuning { shards: SHARDS, ..Tuning::default() }).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;
    for i in 0..10 {
        cluster.user("alice").send_text("bob", &format!("before-{i}"), None).await.unwrap();
    }
    cluster.wait_converged().await;
    let before = local_history(&cluster, 0, "alice", "bob").await;
    assert_eq!(before.len(), 10);

    cluster.stop(0).await;
    cluster.phase("plant an entry of malformed commands, and one good one, at the end of every shard's log");
    let carol_shard = shard_of("carol", SHARDS);
    let mut planted = Vec::new();
    {
        let db = Db::open(&cluster.data_dir(0).join("db")).unwrap();
        for shard in 0..SHARDS {
            let log = LogStore::new(db.clone(), meridian_domain::ShardId(shard));
            let last = log.last().unwrap().expect("a log with entries");
            let last_id = last.log_id.unwrap();
            let index = last_id.index + 1;
            let mut commands = vec![
                // No kind: the command that once stopped a region.
                pb::Command { kind: None },
                // An account with an empty id.
                pb::Command {
                    kind: Some(pb::command::Kind::CreateUser(pb::CreateUser {
                        user_id: String::new(),
                        home_region: "test".into(),
                        nickname: String::new(),
                    })),
                },
                // An effect with no kind.
                pb::Command {
                    kind: Some(pb::command::Kind::ApplyEffects(pb::ApplyEffects {
                        source_shard: 0,
                        effects: vec![pb::Effect { id: 1, source_shard: 0, kind: None, ..Default::default() }],
                        ..Default::default()
                    })),
                },
            ];
            if shard == carol_shard {
                commands.push(pb::Command {
                    kind: Some(pb::command::Kind::CreateUser(pb::CreateUser {
                        user_id: "carol".into(),
                        home_region: "test".into(),
                        nickname: String::new(),
                    })),
                });
            }
            let entry = pb::LogEntryRecord {
                version: 1,
                log_id: Some(pb::LogId { index, ..last_id }),
                payload: Some(pb::log_entry_record::Payload::Normal(pb::CommandBatch {
                    version: 1,
                    time_ms: chrono::Utc::now().timestamp_millis(),
                    logic_version: 1,
                    commands,
                    region: String::new(),
                    request_ids_expire_before_ms: 0,
                })),
            };
            log.append(&[entry]).unwrap();
            planted.push((shard, index));
        }
        db.sync_now().unwrap();
    }

    cluster.phase("the node starts, applies past the planted entries and serves");
    cluster.restart(0).await;
    let status = cluster.status(0).await;
    for (shard, index) in planted {
        let s = common::shard_status(&status, shard);
        assert!(s.applied_index >= index, "shard {shard} applied {} < planted {index}", s.applied_index);
    }
    assert_eq!(local_history(&cluster, 0, "alice", "bob").await, before);
    cluster.user("bob").send_text("alice", "after", None).await.unwrap();
    let history = cluster.user("alice").history_all("bob", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.len(), 11);
    // The good command beside the malformed ones was applied.
    let created = cluster.admin().create_user("carol", None).await.unwrap();
    assert!(!created.created, "carol, created by the planted entry, was created again");
}
