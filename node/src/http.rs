//! A minimal plain-HTTP endpoint for probes and scrapers: `/healthz` (the process is up),
//! `/readyz` (every shard has a leader) and `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_raft::RaftNode;
use meridian_storage::latency::HistogramValues;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Binds `addr` and returns the server future.
pub async fn serve(
    addr: SocketAddr,
    node: Arc<RaftNode>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => {
                    let Ok((mut sock, _)) = accepted else { continue };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let n = sock.read(&mut buf).await.unwrap_or(0);
                        let head = String::from_utf8_lossy(&buf[..n]);
                        let path = head.split_whitespace().nth(1).unwrap_or("/");
                        let (status, body) = respond(path, &node);
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(reply.as_bytes()).await;
                    });
                }
            }
        }
    })
}

fn respond(path: &str, node: &RaftNode) -> (&'static str, String) {
    match path {
        "/healthz" => ("200 OK", "ok\n".into()),
        "/readyz" => readiness(node),
        "/metrics" => ("200 OK", metrics(node)),
        _ => ("404 Not Found", "not found\n".into()),
    }
}

/// Ready when no shard is halted here and every shard has a leader.
fn readiness(node: &RaftNode) -> (&'static str, String) {
    let halted: Vec<String> = node.halted_shards().iter().map(|(s, why)| format!("shard {s}: {why}")).collect();
    if !halted.is_empty() {
        ("503 Service Unavailable", format!("not ready: halted {}\n", halted.join("; ")))
    } else if node.all_shards_have_leaders() {
        ("200 OK", "ready\n".into())
    } else {
        ("503 Service Unavailable", "not ready: a shard has no leader\n".into())
    }
}

/// The write path's stages as histograms (docs/metrics.md lists them): a send's time
/// on the node that serves it, and where it goes.
fn write_latencies(out: &mut String, node: &RaftNode) {
    let (mut proposal, mut write, mut apply) = Default::default();
    for s in node.shards() {
        HistogramValues::add(&mut proposal, &s.stats.proposal_seconds.read());
        HistogramValues::add(&mut write, &s.stats.write_seconds.read());
        HistogramValues::add(&mut apply, &s.stats.apply_seconds.read());
    }
    let (db, rpc, api) = (node.db().stats(), node.peer_rpc_stats(), &crate::api::LATENCY);
    for (name, values, help) in [
        (
            "meridian_send_seconds",
            api.send.read(),
            "Chat/SendMessage calls served with success, handler start to answer",
        ),
        ("meridian_history_seconds", api.history.read(), "Chat/GetHistory calls served with success"),
        ("meridian_proposal_seconds", proposal, "leader: proposals from submission to answer"),
        ("meridian_raft_write_seconds", write, "leader: one entry from proposing it to its applied result"),
        ("meridian_apply_seconds", apply, "applying the entries handed over at once, every replica"),
        ("meridian_wal_sync_seconds", db.sync_seconds.read(), "one WAL sync"),
        ("meridian_wal_sync_wait_seconds", db.sync_wait_seconds.read(), "a sync request until its sync is done"),
        (
            "meridian_peer_append_seconds",
            rpc.append_seconds.read(),
            "leader: AppendEntries with entries, sent to answered",
        ),
        (
            "meridian_peer_appended_seconds",
            rpc.appended_seconds.read(),
            "follower: AppendEntries with entries, received to answered",
        ),
    ] {
        values.write_prometheus(out, name, help);
    }
}

fn metrics(node: &RaftNode) -> String {
    let mut out = String::new();
    let stats = node.db().stats();
    let _ = writeln!(out, "# TYPE meridian_wal_syncs_total counter");
    let _ = writeln!(out, "meridian_wal_syncs_total {}", stats.syncs());
    let _ = writeln!(out, "# TYPE meridian_wal_sync_requests_total counter");
    let _ = writeln!(out, "meridian_wal_sync_requests_total {}", stats.requests());
    let _ = writeln!(out, "# TYPE meridian_bytes_written_total counter");
    let _ = writeln!(out, "meridian_bytes_written_total {}", stats.bytes_written.load(Ordering::Relaxed));
    let (mut entries, mut commands, mut lookups, mut deposed, mut snapshot_bytes) = (0, 0, 0, 0, 0);
    for s in node.shards() {
        entries += s.stats.entries_applied.load(Ordering::Relaxed);
        commands += s.stats.commands_applied.load(Ordering::Relaxed);
        lookups += s.stats.apply_lookups.load(Ordering::Relaxed);
        deposed += s.stats.proposals_deposed.load(Ordering::Relaxed);
        snapshot_bytes += s.stats.snapshot_bytes.load(Ordering::Relaxed);
    }
    write_latencies(&mut out, node);
    let _ = writeln!(out, "# TYPE meridian_snapshot_bytes gauge");
    let _ = writeln!(out, "meridian_snapshot_bytes {snapshot_bytes}");
    let _ = writeln!(out, "# TYPE meridian_raft_entries_applied_total counter");
    let _ = writeln!(out, "meridian_raft_entries_applied_total {entries}");
    let _ = writeln!(out, "# TYPE meridian_commands_applied_total counter");
    let _ = writeln!(out, "meridian_commands_applied_total {commands}");
    let _ = writeln!(out, "# TYPE meridian_apply_lookups_total counter");
    let _ = writeln!(out, "meridian_apply_lookups_total {lookups}");
    let _ = writeln!(out, "# TYPE meridian_raft_proposals_deposed_total counter");
    let _ = writeln!(out, "meridian_raft_proposals_deposed_total {deposed}");
    let rpc = node.peer_rpc_stats();
    let _ = writeln!(out, "# TYPE meridian_peer_rpcs_total counter");
    for (kind, n) in [
        ("append_entries", &rpc.append_entries),
        ("heartbeat", &rpc.heartbeats),
        ("vote", &rpc.votes),
        ("install_snapshot", &rpc.snapshot_chunks),
        ("propose", &rpc.proposes),
        ("read_index", &rpc.read_indexes),
    ] {
        let _ = writeln!(out, "meridian_peer_rpcs_total{{kind=\"{kind}\"}} {}", n.load(Ordering::Relaxed));
    }
    for (name, n) in [
        ("meridian_peer_streams_opened_total", &rpc.stream_opens),
        ("meridian_peer_stream_frames_total", &rpc.stream_frames),
        ("meridian_peer_stream_messages_total", &rpc.stream_batches),
        ("meridian_peer_stream_resets_total", &rpc.stream_resets),
        ("meridian_peer_stream_frames_expired_total", &rpc.stream_frames_expired),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# TYPE meridian_peer_entries_sent_total counter");
    let _ = writeln!(out, "meridian_peer_entries_sent_total {}", rpc.entries_sent.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE meridian_write_batches_total counter");
    let _ = writeln!(out, "meridian_write_batches_total {}", stats.batches_written.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE meridian_peer_calls_refused_total counter");
    let _ = writeln!(out, "meridian_peer_calls_refused_total {}", node.door.peer_calls_refused.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE meridian_requests_forwarded_total counter");
    let _ = writeln!(out, "meridian_requests_forwarded_total {}", node.door.requests_forwarded.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE meridian_link_calls_refused_total counter");
    let _ = writeln!(out, "meridian_link_calls_refused_total {}", node.door.link_calls_refused.load(Ordering::Relaxed));
    let _ = writeln!(out, "# TYPE meridian_proposals_refused_total counter");
    let _ = writeln!(out, "meridian_proposals_refused_total {}", node.door.proposals_refused.load(Ordering::Relaxed));
    let hooks = &crate::hooks::METRICS;
    for (name, value) in [
        ("meridian_callbacks_sent_total", &hooks.callbacks_sent),
        ("meridian_callbacks_failed_total", &hooks.callbacks_failed),
        ("meridian_callbacks_rejected_total", &hooks.callbacks_rejected),
        ("meridian_pushes_sent_total", &hooks.pushes_sent),
        ("meridian_webhook_dropped_total", &hooks.dropped),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let archive = &crate::archive::METRICS;
    for (name, value) in [
        ("meridian_archive_segments_sealed_total", &archive.segments_sealed),
        ("meridian_archive_bytes_sealed_total", &archive.bytes_sealed),
        ("meridian_archive_seal_failures_total", &archive.seal_failures),
        ("meridian_archive_cold_reads_total", &archive.cold_reads),
        ("meridian_archive_cold_read_failures_total", &archive.cold_read_failures),
        ("meridian_archive_cache_hits_total", &archive.cache_hits),
        ("meridian_archive_cache_misses_total", &archive.cache_misses),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# TYPE meridian_archive_lag_seconds gauge");
    for (shard, lag) in archive.lag_seconds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let _ = writeln!(out, "meridian_archive_lag_seconds{{shard=\"{shard}\"}} {lag}");
    }
    let _ = writeln!(out, "# TYPE meridian_shard_applied_index gauge");
    for s in node.status(false) {
        let _ = writeln!(out, "meridian_shard_applied_index{{shard=\"{}\"}} {}", s.shard, s.applied_index);
        let _ = writeln!(
            out,
            "meridian_shard_is_leader{{shard=\"{}\"}} {}",
            s.shard,
            u8::from(s.leader == Some(node.node_id))
        );
        let _ = writeln!(out, "meridian_shard_term{{shard=\"{}\"}} {}", s.shard, s.term);
        let _ = writeln!(out, "meridian_shard_halted{{shard=\"{}\"}} {}", s.shard, u8::from(s.role == "halted"));
    }
    // On each shard this node leads: how many entries each other member (followers, and the
    // standby's learners: disaster recovery's RPO) has yet to receive.
    let _ = writeln!(out, "# TYPE meridian_replica_lag_entries gauge");
    for s in node.shards() {
        let metrics = s.raft.metrics().borrow().clone();
        let (Some(replication), Some(last)) = (metrics.replication, metrics.last_log_index) else { continue };
        for (member, matched) in replication.iter().filter(|(id, _)| **id != node.node_id) {
            let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
            let _ = writeln!(out, "meridian_replica_lag_entries{{shard=\"{}\",node=\"{member}\"}} {lag}", s.id.0);
        }
    }
    let role = node.region_role();
    let _ = writeln!(out, "# TYPE meridian_region_epoch gauge");
    let _ = writeln!(out, "meridian_region_epoch {}", node.region_epoch());
    let _ = writeln!(out, "# TYPE meridian_region_role gauge");
    for r in meridian_raft::Role::ALL {
        let _ = writeln!(out, "meridian_region_role{{role=\"{}\"}} {}", r.as_str(), u8::from(role == r));
    }
    out
}
