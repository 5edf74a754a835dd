//! The cluster logic version: a new region starts on the newest rules its members share; an
//! admin raise happens only once every member reports support, and names the members that
//! hold it back; a replica that meets an entry of rules it does not apply halts that shard
//! alone, loudly, answers calls about it with `SHARD_HALTED` at once, keeps serving the
//! others, and catches up without loss once it runs with the newer rules.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use meridian_client::api::logged_event::Kind;
use meridian_client::api::ReadConsistency;

use common::{conversation_id, local_history, shard_of, shard_status, Cluster, Tuning, REGION};

const SHARDS: u32 = 2;

fn is_v1_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_logic_version_rises_only_once_every_member_supports_it() {
    let tuning = Tuning { shards: SHARDS, held_back: Some((2, 1)), ..Tuning::default() };
    let mut cluster = Cluster::start(3, tuning).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;

    cluster.phase("node 3 applies up to version 1: the region stayed on 1");
    let report = cluster.admin().logic_version(0).await.unwrap();
    let support: Vec<(u64, u32)> = report.nodes.iter().map(|n| (n.node_id, n.max_logic_version)).collect();
    let newest = meridian_domain::apply::LOGIC_VERSION;
    assert_eq!(support, vec![(1, newest), (2, newest), (3, 1)]);
    assert!(report.shards.iter().all(|s| s.logic_version == 1 && s.epoch == 1), "{report:?}");
    let before = cluster.user("alice").send_text("bob", "under version 1", Some("v1".into())).await.unwrap();
    assert!(is_v1_id(&before.message_id), "{}", before.message_id);

    cluster.phase("a raise to 2 is refused, naming node 3, and changes nothing");
    let refused = cluster.admin().logic_version(2).await.unwrap_err();
    assert_eq!(refused.reason(), Some("LOGIC_VERSION_UNSUPPORTED"));
    assert!(refused.message().contains("node 3 supports up to 1"), "{refused}");
    let report = cluster.admin().logic_version(0).await.unwrap();
    assert!(report.shards.iter().all(|s| s.logic_version == 1), "{report:?}");
    let beyond = cluster.admin().logic_version(newest + 1).await.unwrap_err();
    assert_eq!(beyond.reason(), Some("LOGIC_VERSION_UNSUPPORTED"));

    cluster.phase("node 3 is upgraded to version 2; now the raise goes through");
    cluster.stop(2).await;
    // Up to 2, not the newest: the region's own raise after bootstrap may still be retrying
    // (it waits for every member to answer), and it must not race the raise under test.
    cluster.set_max_logic_version(2, 2);
    cluster.restart(2).await;
    let raised = cluster.admin().logic_version(2).await.unwrap();
    assert_eq!(raised.shards.len(), SHARDS as usize);
    assert!(raised.shards.iter().all(|s| s.logic_version == 2), "{raised:?}");
    // Raising again, or to an older version, is a no-op.
    let again = cluster.admin().logic_version(1).await.unwrap();
    assert!(again.shards.iter().all(|s| s.logic_version == 2), "{again:?}");

    let after = cluster.user("alice").send_text("bob", "under version 2", Some("v2".into())).await.unwrap();
    let shard = shard_of(&conversation_id("alice", "bob"), SHARDS);
    assert!(after.message_id.starts_with(&format!("{REGION}.1.{shard}.")), "{}", after.message_id);
    cluster.wait_converged().await;

    cluster.phase("every replica applied the raise as an event, and the ids in history are as minted");
    for i in 0..cluster.len() {
        let ids: Vec<String> =
            local_history(&cluster, i, "alice", "bob").await.into_iter().map(|r| r.message_id).collect();
        assert_eq!(ids, vec![before.message_id.clone(), after.message_id.clone()], "node {}", i + 1);
    }
    let events = cluster.admin().read_all_events(shard, 1).await.unwrap();
    let raises: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::LogicVersionRaised(v)) => Some((v.from, v.to)),
            _ => None,
        })
        .collect();
    assert_eq!(raises, vec![(1, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_meets_newer_rules_halts_that_shard_alone_and_loses_nothing() {
    let mut cluster = Cluster::start(3, Tuning { shards: SHARDS, ..Tuning::default() }).await;
    // Two conversations on different shards.
    let halting = ("alice", "bob");
    let shard = shard_of(&conversation_id(halting.0, halting.1), SHARDS);
    let other = (0..100)
        .map(|i| (format!("carol{i}"), "dave".to_owned()))
        .find(|(a, b)| shard_of(&conversation_id(a, b), SHARDS) != shard)
        .unwrap();
    let users = [halting.0.to_owned(), halting.1.to_owned(), other.0.clone(), other.1.clone()];
    cluster.create_users(&users).await;
    cluster.user(halting.0).send_text(halting.1, "first", Some("a-0".into())).await.unwrap();
    cluster.user(&other.0).send_text(&other.1, "first", Some("c-0".into())).await.unwrap();
    common::wait_listed(&cluster, halting.1, &[halting.0.to_owned()].into()).await;
    common::wait_listed(&cluster, &other.1, &[other.0.clone()].into()).await;
    cluster.wait_converged().await;

    cluster.phase("node 3 comes back held to version 1, in a region on version 2");
    cluster.stop(2).await;
    cluster.set_max_logic_version(2, 1);
    cluster.restart(2).await;
    let mut acknowledged = vec!["first".to_owned()];
    for i in 1..=5 {
        let text = format!("after {i}");
        cluster.user_on(0, halting.0).send_text(halting.1, &text, Some(format!("a-{i}"))).await.unwrap();
        acknowledged.push(text);
    }

    cluster.phase("node 3 halts that shard (and only that one) instead of applying the entries");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.status(2).await;
        if shard_status(&status, shard).role == "halted" {
            break;
        }
        assert!(Instant::now() < deadline, "shard {shard} did not halt on node 3: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cluster.is_running(2), "a halted shard must not stop the node");
    // Loudly: in the metrics and in readiness, naming the shard.
    let (_, metrics) = cluster.http_get(2, "/metrics").await;
    assert!(metrics.contains(&format!("meridian_shard_halted{{shard=\"{shard}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("meridian_shard_halted{{shard=\"{}\"}} 0", 1 - shard)), "{metrics}");
    let (status_line, body) = cluster.http_get(2, "/readyz").await;
    assert!(status_line.contains("503"), "{status_line}");
    assert!(body.contains(&format!("shard {shard}")), "{body}");
    assert!(cluster.http_get(0, "/readyz").await.0.contains("200"), "the other nodes stay ready");
    let status = cluster.status(2).await;
    assert_ne!(shard_status(&status, 1 - shard).role, "halted", "{status:?}");

    let refused =
        cluster.user_on(2, halting.0).history_all(halting.1, ReadConsistency::Linearizable).await.unwrap_err();
    assert_eq!(refused.reason(), Some("SHARD_HALTED"), "{refused}");
    // Nor is a halted replica read locally: it would answer from a state that no longer moves.
    let refused = cluster.user_on(2, halting.0).history_all(halting.1, ReadConsistency::Local).await.unwrap_err();
    assert_eq!(refused.reason(), Some("SHARD_HALTED"), "{refused}");
    let served = cluster.user_on(2, &other.0).history_all(&other.1, ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(served.len(), 1, "the other shard is served through node 3");
    // A client that knows other nodes moves on to them.
    let history = cluster.user(halting.0).history_all(halting.1, ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.len(), acknowledged.len());

    cluster.phase("node 3's data belongs to its region: under another region's name it refuses to start");
    cluster.stop(2).await;
    let mut renamed = meridian_node::config::NodeConfig::load(cluster.config_path(2)).unwrap();
    renamed.region = "elsewhere".into();
    let renamed_path = cluster.config_path(2).with_extension("renamed.toml");
    std::fs::write(&renamed_path, renamed.to_toml().unwrap()).unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["node", "--config"])
            .arg(&renamed_path)
            .env("NO_COLOR", "1")
            .output(),
    )
    .await
    .expect("the node gives up at once")
    .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr).into_owned() + &String::from_utf8_lossy(&refused.stdout);
    assert!(said.contains(r#"belongs to region "test""#), "{said}");

    cluster.phase("node 3 runs with the newer rules again and catches up without loss");
    cluster.set_max_logic_version(2, 0);
    cluster.restart(2).await;
    cluster.wait_converged().await;
    for i in 0..cluster.len() {
        let texts: Vec<String> =
            local_history(&cluster, i, halting.0, halting.1).await.into_iter().map(|r| r.text).collect();
        assert_eq!(texts, acknowledged, "node {}", i + 1);
    }
}
