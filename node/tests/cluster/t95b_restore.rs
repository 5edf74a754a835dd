//! Point-in-time restore of a conversation (GEO-05): restored to a time before a burst of
//! messages, the history shows exactly the messages sent before that time — the burst is
//! withdrawn (recalled by `@restore`), whether its messages are hot or already archived —
//! on every node and in a replay of the event log; a second restore to the same time changes
//! nothing, and a later message is not touched.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use meridian_client::api::{logged_event, ArchiveAction, ReadConsistency};
use meridian_node::config::{ArchiveConfig, ArchiveStoreKind};

use common::{conversation_id, shard_of, Cluster, Tuning};

const SHARDS: u32 = 2;
const BEFORE: u64 = 30;
const BURST: u64 = 40;

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_restored_to_before_a_burst_shows_exactly_what_came_before() {
    let store = tempfile::tempdir().unwrap();
    let replica = tempfile::tempdir().unwrap();
    let archive = ArchiveConfig {
        hot_window_seconds: 1,
        seal_interval_ms: 300,
        segment_max_events: 50,
        // One store every node reads, as in a real region, and its disaster-recovery copy.
        path: Some(store.path().to_path_buf()),
        replica_store: Some(ArchiveStoreKind::Fs),
        replica_path: Some(replica.path().to_path_buf()),
        ..Default::default()
    };
    let mut cluster =
        Cluster::start(3, Tuning { shards: SHARDS, recall_window_seconds: 1, archive, ..Default::default() }).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned(), "carol".to_owned()]).await;
    let alice = cluster.user("alice");
    let bob = cluster.user("bob");

    cluster.phase("messages before the point in time");
    for n in 1..=BEFORE {
        let (client, to) = if n % 2 == 0 { (&alice, "bob") } else { (&bob, "alice") };
        client.send_text(to, &format!("before {n}"), Some(format!("b{n}"))).await.unwrap();
    }
    // Another conversation of alice's: a restore of alice/bob leaves it alone.
    alice.send_text("carol", "unrelated", Some("c1".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at = now_ms();
    tokio::time::sleep(Duration::from_millis(100)).await;

    cluster.phase("a burst after it");
    for n in 1..=BURST {
        alice.send_text("bob", &format!("burst {n}"), Some(format!("x{n}"))).await.unwrap();
    }
    cluster.phase("wait until part of the burst is archived");
    let shard = shard_of(&conversation_id("alice", "bob"), SHARDS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster.admin().archive(ArchiveAction::ArchiveStatus, 0).await.unwrap();
        let archived = status.shards.iter().find(|s| s.shard == shard).map_or(0, |s| s.events);
        if archived >= BEFORE + BURST / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the archive took only {archived} events of shard {shard}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.phase("restore to the point in time");
    let restored = cluster.admin().restore_conversation("alice", "bob", at).await.unwrap();
    assert_eq!((restored.kept_up_to_seq, restored.withdrawn), (BEFORE, BURST), "{restored:?}");

    let expected: Vec<String> = (1..=BEFORE).map(|n| format!("before {n}")).collect();
    for i in 0..3 {
        let history = cluster.user_on(i, "alice").history_all("bob", ReadConsistency::Linearizable).await.unwrap();
        assert_eq!(history.len() as u64, BEFORE + BURST, "node {}", i + 1);
        let shown: Vec<String> = history.iter().filter(|m| !m.recalled).map(meridian_client::message_text).collect();
        assert_eq!(shown, expected, "node {}: exactly the messages before the point in time", i + 1);
        for m in history.iter().filter(|m| m.seq > BEFORE) {
            assert!(m.recalled && m.recalled_by == "@restore" && m.elements.is_empty(), "node {}: {m:?}", i + 1);
        }
    }
    let carol = cluster.user("carol").history_all("alice", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(carol.iter().map(meridian_client::message_text).collect::<Vec<_>>(), vec!["unrelated".to_owned()]);

    cluster.phase("the restore is an event; a repeat changes nothing; later messages stay");
    let events = cluster.admin().read_all_events(shard, 0).await.unwrap();
    let restores = events
        .iter()
        .filter(|e| matches!(&e.kind, Some(logged_event::Kind::GroupEvent(g)) if g.r#type == "ConversationRestored"))
        .count();
    assert_eq!(restores, 1, "one ConversationRestored event");
    let again = cluster.admin().restore_conversation("alice", "bob", at).await.unwrap();
    assert_eq!((again.kept_up_to_seq, again.withdrawn), (BEFORE, 0));
    let later = alice.send_text("bob", "after the restore", Some("late".into())).await.unwrap();
    assert_eq!(later.seq, BEFORE + BURST + 1);
    let history = alice.history_all("bob", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.last().map(meridian_client::message_text).as_deref(), Some("after the restore"));

    cluster.phase("replicas converge and every projection equals a replay of the log");
    cluster.wait_converged().await;

    cluster.phase("every sealed segment has its copy in the replica; cold reads fall back to it");
    let main_objects = segment_files(store.path());
    assert!(!main_objects.is_empty(), "segments were sealed");
    let copies = segment_files(replica.path());
    for (key, bytes) in &main_objects {
        assert_eq!(copies.get(key), Some(bytes), "{key} is copied to the replica byte for byte");
    }
    let lost = tempfile::tempdir().unwrap();
    std::fs::rename(store.path(), lost.path().join("main")).unwrap();
    cluster.stop(2).await;
    cluster.restart(2).await;
    let history = cluster.user_on(2, "bob").history_all("alice", ReadConsistency::Linearizable).await.unwrap();
    let shown: Vec<String> = history.iter().filter(|m| !m.recalled).map(meridian_client::message_text).collect();
    let mut expected_now = expected.clone();
    expected_now.push("after the restore".to_owned());
    assert_eq!(shown, expected_now, "the history read through a restarted node, with the main store gone");
}

/// Every `.seg` file under `dir`: (path relative to `dir`, bytes).
fn segment_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "seg") {
                let key = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(key, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}
