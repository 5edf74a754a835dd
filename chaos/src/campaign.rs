//! A campaign: start a region, run the workload through a seeded fault schedule, heal,
//! let it settle, read everything back from every replica, and judge the history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meridian_client::api::ReadConsistency;
use meridian_client::Client;

use crate::checker::{check, Report};
use crate::cluster::{is_root, ChaosCluster, ClusterOptions};
use crate::devices::Devices;
use crate::faults::{self, FaultKind};
use crate::firewall::Firewall;
use crate::history::{
    read_history, ConvRow, FaultRecord, FinalConversationsRecord, FinalFriendsRecord, FinalMembersRecord, FinalRecord,
    HealedRecord, HistoryWriter, LogEventRecord, ProjectionsRecord, Record, ShardHashRecord,
};
use crate::workload::{read_message, Counters, Workload};

#[derive(Debug, Clone)]
pub struct CampaignOptions {
    pub seed: u64,
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    pub nodes: usize,
    pub shards: u32,
    pub binary: PathBuf,
    /// This run's directory (configs, data, logs, history); made by the campaign.
    pub dir: PathBuf,
    /// Keep the run directory even when the campaign passes.
    pub keep: bool,
    pub clients: u32,
    pub users: usize,
    pub conversations: usize,
    pub base_port: u16,
    /// The cold archive's hot window in seconds (`None`: no archive).
    pub archive_hot_window: Option<u64>,
}

/// What a campaign found.
#[derive(Debug)]
pub struct CampaignResult {
    pub seed: u64,
    pub report: Report,
    pub faults: Vec<(String, String, Option<u64>)>,
    pub skipped: Vec<String>,
    pub elections: u64,
    pub dir: PathBuf,
    pub kept: bool,
    pub network: &'static str,
}

impl CampaignResult {
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let r = &self.report;
        let mut s = String::new();
        let _ = writeln!(s, "seed {}  network {}  run dir {}", self.seed, self.network, self.dir.display());
        let _ = writeln!(s, "{:<28}{:>10}", "operations", r.operations);
        let _ = writeln!(s, "{:<28}{:>10}", "sends acknowledged", r.acknowledged);
        let _ = writeln!(s, "{:<28}{:>10}", "sends unknown outcome", r.unknown);
        let _ = writeln!(s, "{:<28}{:>10}", "lost", r.count(crate::ViolationKind::Lost));
        let _ = writeln!(s, "{:<28}{:>10}", "duplicated", r.count(crate::ViolationKind::Duplicated));
        let _ = writeln!(s, "{:<28}{:>10}", "gaps", r.count(crate::ViolationKind::Gap));
        let _ = writeln!(s, "{:<28}{:>10}", "violations (all kinds)", r.violations.len());
        let _ = writeln!(s, "{:<28}{:>10}", "faults injected", self.faults.len());
        let _ = writeln!(s, "{:<28}{:>10}", "heals not recovered in time", r.unrecovered);
        let _ = writeln!(s, "{:<28}{:>10}", "elections (term increases)", self.elections);
        let _ = writeln!(s, "{:<28}{:>10}", "conversations checked", r.conversations);
        let _ = writeln!(s, "{:<28}{:>10}", "group/friend/block ops", r.socials);
        let _ = writeln!(s, "{:<28}{:>10}", "member/friend lists recounted", r.social_lists_checked);
        let _ = writeln!(s, "{:<28}{:>10}", "sends judged in log order", r.sends_judged_in_log);
        let _ = writeln!(s, "{:<28}{:>10}", "device streams judged", r.deliveries_checked);
        let _ = writeln!(s, "{:<28}{:>10}", "messages delivered live", r.messages_delivered);
        let _ = writeln!(s, "{:<28}{:>10}", "undelivered", r.count(crate::ViolationKind::Undelivered));
        let _ = writeln!(s, "{:<28}{:>10}", "shard hashes compared", r.hashes_compared);
        let _ = writeln!(s, "{:<28}{:>10}", "projection replays checked", r.projections_verified);
        let _ = writeln!(s, "recovery after each fault:");
        for (kind, detail, ms) in &self.faults {
            let rec = ms.map_or("not recovered".to_owned(), |m| format!("{m} ms"));
            let _ = writeln!(s, "  {kind:<11} {rec:>14}  {detail}");
        }
        for k in &self.skipped {
            let _ = writeln!(s, "  skipped: {k}");
        }
        s
    }
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub async fn run(opts: CampaignOptions) -> anyhow::Result<CampaignResult> {
    let dir = opts.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let root = is_root();
    let firewall =
        if Firewall::available() { Some(Firewall::create(&format!("{}", std::process::id()))?) } else { None };
    let mut skipped = vec![];
    let mut kinds = opts.faults.clone();
    if !root && kinds.contains(&FaultKind::DiskFull) {
        kinds.retain(|k| *k != FaultKind::DiskFull);
        skipped.push("disk-full (needs root to mount a tmpfs)".to_owned());
    }
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists()
        && kinds.contains(&FaultKind::ClockSkew)
    {
        kinds.retain(|k| *k != FaultKind::ClockSkew);
        skipped.push("clock-skew (libfaketime is not installed)".to_owned());
    }
    let disk_node = kinds.contains(&FaultKind::DiskFull).then_some((opts.seed as usize) % opts.nodes);
    let cluster_opts = ClusterOptions {
        nodes: opts.nodes,
        shards: opts.shards,
        binary: opts.binary.clone(),
        dir: dir.clone(),
        base_port: opts.base_port,
        disk_node,
        tmpfs_mb: 512,
        snapshot_logs_since_last: 500,
        netns: crate::cluster::netns_available(),
        archive_hot_window: opts.archive_hot_window,
    };
    let mut cluster = ChaosCluster::start(cluster_opts, firewall).await?;
    let network = cluster.network_name();
    let admin = cluster.admin()?;
    let terms_before = terms(&mut cluster).await;

    let workload = Workload::new(opts.seed, opts.users, opts.conversations, opts.clients);
    workload.create_users(&admin).await.context("create the workload's users")?;
    workload.create_groups(&admin).await.context("create the workload's groups")?;
    let history = Arc::new(HistoryWriter::create(dir.join("history.jsonl"))?);
    let device_users = workload.device_users();
    let mut device_clients = vec![];
    for (i, user) in device_users.iter().enumerate() {
        device_clients.push((user.clone(), cluster.device_client(i, user)?));
    }
    let devices = Devices::start(device_clients).await.context("subscribe the devices")?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let runner = {
        let (w, admin, history, counters) = (workload.clone(), admin.clone(), history.clone(), counters.clone());
        tokio::spawn(async move { w.run(admin, history, counters, t0, stop_rx).await })
    };

    let schedule = faults::plan(opts.seed, opts.duration, &kinds, opts.nodes, opts.shards, disk_node);
    let mut fault_log = vec![];
    for planned in &schedule {
        if let Some(wait) = planned.at.checked_sub(t0.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let injected =
            faults::inject(&mut cluster, planned).await.with_context(|| format!("inject {:?}", planned.kind))?;
        let targets: Vec<String> = injected.nodes.iter().map(|&i| format!("node-{}", cluster.nodes[i].id)).collect();
        history.append(&Record::Fault(FaultRecord {
            at_ms: ms_since(t0),
            kind: planned.kind.name().to_owned(),
            target: targets.join(","),
            detail: injected.detail.clone(),
        }))?;
        tracing::info!(kind = planned.kind.name(), target = %targets.join(","), detail = %injected.detail, "fault");
        tokio::time::sleep(planned.hold).await;
        faults::heal(&mut cluster, &injected)?;
        let healed_at = Instant::now();
        let (recovered, recovery_error) = match recover(&mut cluster, &admin, &workload).await {
            Ok(()) => (Some(ms_since(healed_at)), None),
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(kind = planned.kind.name(), target = %targets.join(","), %error, "not recovered after the heal");
                (None, Some(error))
            }
        };
        history.append(&Record::Healed(HealedRecord {
            at_ms: ms_since(t0),
            kind: planned.kind.name().to_owned(),
            target: targets.join(","),
            recovered_ms: recovered,
            recovery_error,
        }))?;
        fault_log.push((
            planned.kind.name().to_owned(),
            format!("{} {}", targets.join(","), injected.detail),
            recovered,
        ));
    }
    if let Some(rest) = opts.duration.checked_sub(t0.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let _ = stop_tx.send(true);
    let _ = runner.await;

    // Heal everything, let the region settle, then read every replica.
    for i in 0..cluster.nodes.len() {
        if !cluster.is_running(i) {
            cluster.restart(i)?;
        }
    }
    cluster.wait_for_leaders(Duration::from_secs(60)).await?;
    settle(&mut cluster).await?;
    final_reads(&mut cluster, &workload, &history).await?;
    deliveries(devices, &workload, &history, dir.join("history.jsonl")).await?;
    let elections = terms(&mut cluster).await.iter().zip(&terms_before).map(|(a, b)| a.saturating_sub(*b)).sum();
    drop(history);

    let records = read_history(dir.join("history.jsonl"))?;
    let report = check(&records);
    tracing::info!(operations = counters.operations.load(Ordering::Relaxed), "campaign finished");
    let kept = opts.keep || !report.is_ok();
    drop(cluster);
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(CampaignResult { seed: opts.seed, report, faults: fault_log, skipped, elections, dir, kept, network })
}

/// Stops the devices once they have every one-to-one message the final reads found (or a
/// minute has passed) and records what each received.
async fn deliveries(devices: Devices, w: &Workload, history: &HistoryWriter, path: PathBuf) -> anyhow::Result<()> {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for record in read_history(path)? {
        if let Record::Final(f) = record {
            let last = f.messages.iter().map(|m| m.seq).max().unwrap_or(0);
            let slot = expected.entry(f.conversation).or_default();
            *slot = (*slot).max(last);
        }
    }
    let conversations_of = |user: &str| -> Vec<String> {
        w.pairs
            .iter()
            .filter(|(a, b)| a == user || b == user)
            .map(|(a, b)| crate::workload::conversation_id(a, b))
            .collect()
    };
    for record in devices.finish(&expected, conversations_of, Duration::from_secs(60)).await {
        history.append(&Record::Delivered(record))?;
    }
    Ok(())
}

/// Per shard, the highest term any node reports.
async fn terms(cluster: &mut ChaosCluster) -> Vec<u64> {
    let mut out = vec![0u64; cluster.options.shards as usize];
    for i in 0..cluster.nodes.len() {
        if let Ok(c) = cluster.admin_at(i) {
            if let Ok(s) = c.cluster_status(false).await {
                for sh in s.shards {
                    if let Some(t) = out.get_mut(sh.shard as usize) {
                        *t = (*t).max(sh.term);
                    }
                }
            }
        }
    }
    out
}

/// After a heal: every shard has a leader and a write goes through.
async fn recover(cluster: &mut ChaosCluster, admin: &Client, w: &Workload) -> anyhow::Result<()> {
    cluster.wait_for_leaders(Duration::from_secs(60)).await?;
    let (a, b) = &w.pairs[0];
    let probe = admin.with_act_as(a.clone())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A mark-read is a real Raft write that adds no message to the history.
        match probe.mark_read(b, None).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason() == Some("CONVERSATION_NOT_FOUND") => return Ok(()),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until every node reports the same applied index for every shard, twice in a row
/// a second apart (the outboxes have drained).
async fn settle(cluster: &mut ChaosCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut previous: Option<Vec<Vec<u64>>> = None;
    loop {
        let mut all = vec![];
        for i in 0..cluster.nodes.len() {
            let s = cluster.admin_at(i)?.cluster_status(false).await?;
            all.push(s.shards.iter().map(|x| x.applied_index).collect::<Vec<_>>());
        }
        let same = all.windows(2).all(|w| w[0] == w[1]);
        if same && previous.as_ref() == Some(&all) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("replicas did not converge: applied indexes {all:?}");
        }
        previous = Some(all);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn final_reads(cluster: &mut ChaosCluster, w: &Workload, history: &HistoryWriter) -> anyhow::Result<()> {
    for i in 0..cluster.nodes.len() {
        let node = u32::try_from(cluster.nodes[i].id).unwrap_or(u32::MAX);
        let at = cluster.admin_at(i)?;
        for (a, b) in &w.pairs {
            let msgs = at.with_act_as(a.clone())?.history_all(b, ReadConsistency::Local).await?;
            let mut messages: Vec<_> = msgs.iter().map(read_message).collect();
            messages.sort_by_key(|m| m.seq);
            history.append(&Record::Final(FinalRecord {
                node,
                conversation: crate::workload::conversation_id(a, b),
                messages,
            }))?;
        }
        let owner = at.with_act_as(w.owner().to_owned())?;
        for group in &w.groups {
            let stream = meridian_client::Stream::Group(group.clone());
            let msgs = owner.stream_history_all(&stream, ReadConsistency::Local).await?;
            let mut messages: Vec<_> = msgs.iter().map(read_message).collect();
            messages.sort_by_key(|m| m.seq);
            history.append(&Record::Final(FinalRecord { node, conversation: format!("grp:{group}"), messages }))?;
            let mut members: Vec<String> =
                owner.group_all_members(group).await?.members.into_iter().map(|m| m.user).collect();
            members.sort();
            history.append(&Record::FinalMembers(FinalMembersRecord { node, group: group.clone(), members }))?;
        }
        for u in &w.users {
            let mut friends: Vec<String> =
                at.with_act_as(u.clone())?.list_friends().await?.friends.into_iter().map(|f| f.user).collect();
            friends.sort();
            history.append(&Record::FinalFriends(FinalFriendsRecord { node, user: u.clone(), friends }))?;
        }
        if i == 0 {
            // The shards' hashes are compared below, so one node's event logs stand for all.
            for shard in 0..cluster.options.shards {
                for e in at.read_all_events(shard, 1).await? {
                    if let Some(record) = log_event(node, &e) {
                        history.append(&Record::LogEvent(record))?;
                    }
                }
            }
        }
        for u in &w.users {
            let list = at.with_act_as(u.clone())?.conversations_all(ReadConsistency::Local).await?;
            let rows = list
                .conversations
                .iter()
                .map(|c| ConvRow {
                    conversation: c.conversation_id.clone(),
                    peer: c.peer.clone(),
                    last_seq: c.last_seq,
                    read_seq: c.read_seq,
                    unread: c.unread,
                })
                .collect();
            history.append(&Record::FinalConversations(FinalConversationsRecord {
                node,
                user: u.clone(),
                rows,
                total_unread: list.total_unread,
            }))?;
        }
        for s in at.cluster_status(true).await?.shards {
            history.append(&Record::ShardHash(ShardHashRecord {
                node,
                shard: s.shard,
                index: s.hashed_at_index,
                hash: s.state_hash,
            }))?;
        }
        for s in at.verify_projections().await?.shards {
            history.append(&Record::Projections(ProjectionsRecord {
                node,
                shard: s.shard,
                index: s.applied_index,
                equal: s.equal,
                difference: s.difference,
            }))?;
        }
    }
    Ok(())
}

/// The part of a logged event the social rules read, or `None` for the events they ignore.
fn log_event(node: u32, e: &meridian_client::api::LoggedEvent) -> Option<LogEventRecord> {
    use meridian_client::api::logged_event::Kind;
    let mut record = LogEventRecord {
        node,
        shard: e.shard,
        index: e.log_index,
        command: e.command,
        event: e.event,
        kind: String::new(),
        stream: String::new(),
        user: String::new(),
        other: String::new(),
        seq: 0,
        time_ms: 0,
        until_ms: 0,
        flag: false,
    };
    match e.kind.as_ref()? {
        Kind::MessageSent(m) => {
            record.kind = "MessageSent".into();
            record.stream = m.conversation_id.clone();
            record.user = m.sender.clone();
            record.other = m.recipient.clone();
            record.seq = m.seq;
            record.time_ms = m.time_ms;
        }
        // A group notice is the server's, written with the change it tells of (a leave's by the
        // member who just left): it is not a member's message.
        Kind::GroupEvent(g) if g.r#type == "GroupMessageSent" && meridian_client::is_group_notice(&g.elements) => {
            return None
        }
        Kind::GroupEvent(g)
            if matches!(
                g.r#type.as_str(),
                "GroupMemberAdded" | "GroupMemberRemoved" | "GroupMemberMuted" | "GroupMessageSent"
            ) =>
        {
            record.kind = g.r#type.clone();
            record.stream = g.group_id.clone();
            record.user = g.user.clone();
            record.seq = g.seq;
            record.time_ms = g.time_ms;
            record.until_ms = g.until_ms;
        }
        Kind::RelationEvent(r)
            if matches!(r.r#type.as_str(), "ConversationBlocked" | "FriendAdded" | "FriendRemoved") =>
        {
            record.kind = r.r#type.clone();
            record.stream = r.conversation_id.clone();
            record.user = r.user.clone();
            record.other = r.other.clone();
            record.flag = r.flag;
        }
        _ => return None,
    }
    Some(record)
}
