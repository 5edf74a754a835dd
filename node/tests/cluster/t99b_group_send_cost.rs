//! What one group send costs, in a group of 10 and in a group of 10,000: Raft entries on the
//! group's shard and bytes written to RocksDB (`meridian_bytes_written_total`, every write
//! batch: log appends and applies) per send, on a real 3-node region. A measurement, not a
//! pass/fail test: run it with
//!
//! ```sh
//! cargo test -p meridian-node --test t99b_group_send_cost -- --ignored --nocapture
//! ```
//!
//! and it prints one line per group size (see docs/BENCHMARKS.md).

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{shard_of, user_ids, Cluster, Tuning};

const SENDS: u64 = 200;

async fn metric(cluster: &Cluster, name: &str) -> u64 {
    cluster.metric(0, name).await
}

async fn applied(cluster: &mut Cluster, shard: u32) -> u64 {
    cluster.status(0).await.shards.iter().find(|s| s.shard == shard).map(|s| s.applied_index).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn a_group_send_costs_the_same_at_10_and_at_10000_members() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let users = user_ids("m", 10_000);
    for chunk in users.chunks(500) {
        cluster.create_users(chunk).await;
    }
    cluster.create_users(&["owner".to_owned()]).await;
    let owner = cluster.user("owner");
    let mut rows = vec![];
    for (group, size) in [("small", 10usize), ("large", 10_000)] {
        owner.create_group(Some(group), "community", group, &[]).await.unwrap();
        for chunk in users[..size - 1].chunks(500) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            owner.add_group_members(group, &chunk).await.unwrap();
        }
        let info = owner.get_group(group, "", 1).await.unwrap();
        assert_eq!(info.group.unwrap().member_count, size as u64);
        cluster.wait_converged().await;
        let shard = shard_of(&format!("grp:{group}"), 8);
        let (bytes, batches, entries) = (
            metric(&cluster, "meridian_bytes_written_total").await,
            metric(&cluster, "meridian_write_batches_total").await,
            applied(&mut cluster, shard).await,
        );
        for i in 0..SENDS {
            owner.send_group_text(group, &format!("message {i}"), Some(format!("{group}-{i}"))).await.unwrap();
        }
        cluster.wait_converged().await;
        let bytes = metric(&cluster, "meridian_bytes_written_total").await - bytes;
        let batches = metric(&cluster, "meridian_write_batches_total").await - batches;
        let entries = applied(&mut cluster, shard).await - entries;
        let row = format!(
            "group of {size:>6} members: {SENDS} sends, {:.2} Raft entries per send on its shard, {} bytes and {:.2} write batches per send on node 1",
            entries as f64 / SENDS as f64,
            bytes / SENDS,
            batches as f64 / SENDS as f64
        );
        println!("{row}");
        rows.push((entries, bytes));
    }
    println!("large/small bytes per send: {:.2}", rows[1].1 as f64 / rows[0].1 as f64);
}
