//! `meridian dev` behaves like a region, not like one process: after `kill -9` of a node (its
//! pid from `DIR/node-1.pid`), the other two keep serving the same `MERIDIAN_ENDPOINT`
//! through the command line, the dead node is started again on its own data, and every
//! acknowledged send is in history, gapless, on the restarted node too.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_client::api::ReadConsistency;
use meridian_client::{Client, ClientConfig};

use common::DevRegion;

fn meridian() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meridian"))
}

/// Runs the CLI against the region as a user would; returns stdout, panics on failure.
fn cli(region: &DevRegion, user_token: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(meridian());
    command
        .args(args)
        .env("MERIDIAN_ENDPOINT", &region.endpoint)
        .env("MERIDIAN_ADMIN_TOKEN", &region.admin_token)
        .env_remove("MERIDIAN_TOKEN");
    if let Some(token) = user_token {
        command.env("MERIDIAN_TOKEN", token);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "meridian {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        region.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dev_node_is_reported_and_restarted_while_the_others_serve() {
    let region = DevRegion::start(meridian());
    cli(&region, None, &["user", "create", "alice"]);
    cli(&region, None, &["user", "create", "bob"]);
    let token = cli(&region, None, &["token", "alice"]).trim().to_owned();

    let mut sent = Vec::new();
    for i in 0..60 {
        let text = format!("before {i}");
        cli(&region, Some(&token), &["send", "--to", "bob", &text]);
        sent.push(text);
    }

    let killed = region.node_pids()[0];
    let status = Command::new("kill").args(["-9", &killed.to_string()]).status().unwrap();
    assert!(status.success());
    for i in 0..60 {
        let text = format!("after {i}");
        cli(&region, Some(&token), &["send", "--to", "bob", &text]);
        sent.push(text);
    }

    // Node 1 comes back on its own, under a new pid, and catches up.
    let node_1 = region.endpoint.split(',').next().unwrap().to_owned();
    let mut config = ClientConfig::new([node_1], region.admin_token.clone()).with_act_as("bob");
    config.retry_budget = Duration::from_secs(2);
    let on_node_1 = Client::with_config(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        let restarted = std::fs::read_to_string(region.dir.path().join("node-1.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|pid| pid != killed);
        if restarted {
            if let Ok(history) = on_node_1.history_all("alice", ReadConsistency::Linearizable).await {
                if history.len() == sent.len() {
                    break history;
                }
            }
        }
        assert!(Instant::now() < deadline, "node 1 did not come back with every message:\n{}", region.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=120).collect::<Vec<u64>>(), "gapless");
    let texts: Vec<String> = history.iter().map(meridian_client::message_text).collect();
    assert_eq!(texts, sent);
    // Its own replica has them too, not only the leader it asked.
    let local = on_node_1.history_all("alice", ReadConsistency::Local).await.unwrap();
    assert_eq!(local.len(), 120);
    let log = region.log();
    assert!(log.contains("node-1 exited unexpectedly"), "the death is reported:\n{log}");
    assert!(log.contains("started node-1 again"), "and the restart:\n{log}");
}
