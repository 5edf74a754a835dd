//! Every accepted command leaves events in its shard's event log, in log order, on every
//! replica alike: accounts, sends, read cursors, recalls and the conversation list joins.
//! A recall is an event of its own; the recalled message's `MessageSent` stays in the log
//! with its content. `Admin/ReadEvents` pages through the log exactly, and
//! `meridian events` shows it; `meridian admin verify-projections` finds every shard's
//! projections equal to a replay of its log.

#![allow(clippy::unwrap_used)]

use crate::common;

use meridian_client::api::logged_event::Kind;
use meridian_client::api::{LoggedEvent, ReadEventsRequest};

use common::{conversation_id, shard_of, Cluster, Tuning};

const SHARDS: u32 = 4;

fn text_of(e: &LoggedEvent) -> Option<String> {
    match &e.kind {
        Some(Kind::MessageSent(m)) => Some(
            m.elements
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(meridian_client::api::message_element::Kind::Text(t)) => Some(t.text.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn summary(e: &LoggedEvent) -> String {
    match &e.kind {
        Some(Kind::UserCreated(u)) => format!("UserCreated {}", u.user_id),
        Some(Kind::MessageSent(m)) => format!("MessageSent {} {}", m.seq, m.sender),
        Some(Kind::MessageRecalled(r)) => format!("MessageRecalled {} {}", r.seq, r.by),
        Some(Kind::ReadMarked(r)) => format!("ReadMarked {} {}", r.user, r.read_seq),
        Some(Kind::ConversationJoined(j)) => format!("ConversationJoined {} {}", j.user, j.peer),
        Some(Kind::LogicVersionRaised(v)) => format!("LogicVersionRaised {} {}", v.from, v.to),
        Some(Kind::IdClaimed(c)) => format!("IdClaimed {} {}", c.key, c.region),
        Some(Kind::GroupEvent(g)) => format!("{} {} {}", g.r#type, g.group_id, g.user),
        Some(Kind::RelationEvent(r)) => format!("{} {} {}", r.r#type, r.user, r.other),
        None => "none".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_command_leaves_its_events_in_log_order() {
    let mut cluster = Cluster::start(3, Tuning { shards: SHARDS, ..Tuning::default() }).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;

    cluster.phase("alice sends three messages, bob reads them all, alice recalls the second");
    for i in 1..=3 {
        cluster.user("alice").send_text("bob", &format!("message {i}"), Some(format!("r-{i}"))).await.unwrap();
    }
    // A retry of the first send is a duplicate: no event of its own.
    cluster.user("alice").send_text("bob", "message 1", Some("r-1".into())).await.unwrap();
    cluster.user("bob").mark_read("alice", None).await.unwrap();
    cluster.user("bob").mark_read("alice", Some(1)).await.unwrap(); // backwards: a no-op, no event
    cluster.user("alice").recall("bob", 2).await.unwrap();
    common::wait_listed(&cluster, "bob", &["alice".to_owned()].into()).await;
    cluster.wait_converged().await;

    cluster.phase("the conversation's shard holds its events in order; the recalled message is still there");
    let conversation_shard = shard_of(&conversation_id("alice", "bob"), SHARDS);
    let events = cluster.admin().read_all_events(conversation_shard, 1).await.unwrap();
    let ours: Vec<&LoggedEvent> = events
        .iter()
        .filter(|e| {
            !matches!(e.kind, Some(Kind::UserCreated(_) | Kind::ConversationJoined(_) | Kind::LogicVersionRaised(_)))
        })
        .collect();
    assert_eq!(
        ours.iter().map(|e| summary(e)).collect::<Vec<_>>(),
        vec![
            "MessageSent 1 alice",
            "MessageSent 2 alice",
            "MessageSent 3 alice",
            "ReadMarked bob 3",
            "MessageRecalled 2 alice"
        ]
    );
    assert_eq!(text_of(ours[1]).as_deref(), Some("message 2"), "the recalled message's MessageSent kept its content");
    // Outside its shard an event is named by region, epoch, shard and offset; message ids
    // carry the region and epoch too (logic version 2 on; a new region starts on the newest).
    assert!(events.iter().all(|e| e.region == common::REGION && e.epoch == 1), "{events:?}");
    for e in &ours[..3] {
        let Some(Kind::MessageSent(m)) = &e.kind else { unreachable!() };
        let prefix = format!("{}.1.{conversation_shard}.", common::REGION);
        assert!(m.message_id.starts_with(&prefix), "message id {} does not start with {prefix}", m.message_id);
    }
    assert!(
        events.iter().any(
            |e| matches!(&e.kind, Some(Kind::LogicVersionRaised(v)) if v.to == meridian_domain::apply::LOGIC_VERSION)
        ),
        "the new region raised its logic version: {events:?}"
    );
    let offsets: Vec<(u64, u32, u32)> = events.iter().map(|e| (e.log_index, e.command, e.event)).collect();
    let mut sorted = offsets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(offsets, sorted, "events come in strictly increasing offsets");

    cluster.phase("the users' shards hold their accounts and their conversation-list joins");
    for (user, peer) in [("alice", "bob"), ("bob", "alice")] {
        let events = cluster.admin().read_all_events(shard_of(user, SHARDS), 1).await.unwrap();
        let mine: Vec<String> = events
            .iter()
            .map(summary)
            .filter(|s| s.ends_with(&format!(" {user}")) || s.starts_with(&format!("ConversationJoined {user}")))
            .collect();
        assert!(mine.contains(&format!("UserCreated {user}")), "{user}'s shard: {mine:?}");
        assert!(mine.contains(&format!("ConversationJoined {user} {peer}")), "{user}'s shard: {mine:?}");
    }

    cluster.phase("every replica holds the same log; pages of one event each cover it exactly");
    for shard in 0..SHARDS {
        let reference = cluster.admin().read_all_events(shard, 1).await.unwrap();
        for i in 0..cluster.len() {
            assert_eq!(
                cluster.client_for(i).read_all_events(shard, 1).await.unwrap(),
                reference,
                "shard {shard} on node {}",
                i + 1
            );
        }
        let mut paged = Vec::new();
        let mut request = ReadEventsRequest { shard, from_index: 1, limit: 1, ..Default::default() };
        loop {
            let page = cluster.admin().read_events(request).await.unwrap();
            assert!(page.events.len() <= 1);
            if page.events.is_empty() {
                break;
            }
            paged.extend(page.events);
            (request.from_index, request.from_command, request.from_event) =
                (page.next_index, page.next_command, page.next_event);
        }
        assert_eq!(paged, reference, "shard {shard} read one event at a time");
    }
    let refused = cluster.admin().read_events(ReadEventsRequest { shard: SHARDS, ..Default::default() }).await;
    assert_eq!(refused.unwrap_err().reason(), Some("SHARD_OUT_OF_RANGE"));

    cluster.phase("meridian events shows the log");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["events", "--shard", &conversation_shard.to_string(), "--from", "1"])
        .env("MERIDIAN_ENDPOINT", cluster.endpoints().join(","))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kinds: Vec<&str> = stdout.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let position =
        |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("no {kind} in:\n{stdout}"));
    assert!(position("MessageSent") < position("ReadMarked"), "{stdout}");
    assert!(position("ReadMarked") < position("MessageRecalled"), "{stdout}");

    cluster.phase("meridian events --follow prints an event applied after it started");
    let known = cluster.admin().read_all_events(conversation_shard, 1).await.unwrap().len();
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["events", "--follow", "--json", "--shard", &conversation_shard.to_string()])
        .args(["--limit", &(known + 1).to_string()])
        .env("MERIDIAN_ENDPOINT", cluster.endpoints().join(","))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(follower.try_wait().unwrap().is_none(), "the follower stopped before the new event");
    cluster.user("bob").send_text("alice", "while following", None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while follower.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the follower did not print the new event");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let output = follower.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), known + 1);
    let last = lines.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["sender"].as_str(), last["seq"].as_u64()),
        (Some("MessageSent"), Some("bob"), Some(4))
    );

    cluster.phase("meridian admin verify-projections: every shard equal on the node asked");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["admin", "verify-projections"])
        .env("MERIDIAN_ENDPOINT", cluster.addr(1))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.lines().filter(|l| l.contains(": equal (")).count(), SHARDS as usize, "{stdout}");
}

/// Runs `meridian changes ARGS --json` to its end; the JSON lines it printed.
fn changes(cluster: &Cluster, args: &[&str]) -> Vec<serde_json::Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("changes")
        .args(args)
        .arg("--json")
        .env("MERIDIAN_ENDPOINT", cluster.endpoints().join(","))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The seqs of the `MessageSent` events among `lines`, in order.
fn sent_seqs(lines: &[serde_json::Value]) -> Vec<u64> {
    lines.iter().filter(|l| l["type"] == "MessageSent").filter_map(|l| l["seq"].as_u64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_change_stream_shows_every_event_and_resumes_from_an_offset_after_a_restart() {
    let mut cluster = Cluster::start(1, Tuning { shards: SHARDS, ..Tuning::default() }).await;
    cluster.create_users(&["ann".to_owned(), "bob".to_owned()]).await;
    for i in 1..=5 {
        cluster.user("ann").send_text("bob", &format!("m{i}"), None).await.unwrap();
    }

    cluster.phase("meridian changes: every shard's events, each with the offset to resume from");
    let all = changes(&cluster, &[]);
    assert_eq!(sent_seqs(&all), [1, 2, 3, 4, 5]);
    let users: Vec<&str> =
        all.iter().filter(|l| l["type"] == "UserCreated").filter_map(|l| l["user_id"].as_str()).collect();
    assert_eq!(users.len(), 2, "{all:?}");
    let resume = all.iter().rev().find(|l| l["type"] == "MessageSent").unwrap()["next"].as_str().unwrap().to_owned();

    cluster.phase("--follow prints what is applied after it started");
    // The conversation's shard from just past its last message; the others from their ends.
    let mut from = vec![resume.clone()];
    let shard_of_resume: u32 = resume.split(':').next().unwrap().parse().unwrap();
    for shard in (0..SHARDS).filter(|s| *s != shard_of_resume) {
        if let Some(last) = all.iter().rev().find(|l| l["shard"].as_u64() == Some(u64::from(shard))) {
            from.push(last["next"].as_str().unwrap().to_owned());
        }
    }
    let from_args: Vec<String> = from.iter().flat_map(|f| ["--from".to_owned(), f.clone()]).collect();
    let mut follow_args: Vec<&str> = vec!["changes", "--follow", "--json", "--limit", "1"];
    follow_args.extend(from_args.iter().map(String::as_str));
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(&follow_args)
        .env("MERIDIAN_ENDPOINT", cluster.endpoints().join(","))
        .env("MERIDIAN_ADMIN_TOKEN", cluster.admin_token())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cluster.user("bob").send_text("ann", "m6", None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while follower.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = follower.kill();
            panic!("the follower did not print the new event");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let output = follower.wait_with_output().unwrap();
    let followed: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(followed.len(), 1, "{followed:?}");
    assert_eq!(sent_seqs(&followed), [6], "the first new event of the conversation's shard: {followed:?}");

    cluster.phase("a restart of the node: resumed from the offset, nothing lost, nothing before it");
    cluster.kill9(0);
    cluster.restart(0).await;
    cluster.user("ann").send_text("bob", "m7", None).await.unwrap();
    let after_restart = changes(&cluster, &["--from", &resume]);
    let shard = |l: &serde_json::Value| l["shard"].as_u64() == Some(u64::from(shard_of_resume));
    let resumed: Vec<serde_json::Value> = after_restart.into_iter().filter(shard).collect();
    assert_eq!(sent_seqs(&resumed), [6, 7]);
}
