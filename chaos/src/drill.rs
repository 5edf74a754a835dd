//! `meridian-chaos drill --region de`: the disaster-recovery drill (GEO-05, docs/dr.md).
//!
//! The three regions of the regions campaign (one node each), plus a one-node standby of the
//! drilled region in its `CODE/backup` place. The workload of the regions campaign runs
//! throughout; a third of the way in every process of the region's primary is killed
//! (optionally after the standby was frozen for `--cut-standby`, so that it misses what the
//! primary acknowledged meanwhile); the standby is promoted (`meridian dr promote`); two
//! thirds of the way in the old primary is started again (it comes back fenced) and the
//! region is failed back (`meridian dr failback`). Then the checker of the regions campaign
//! judges, with one allowance: acknowledged sends that the promotion's cut left out (their
//! message id names an entry after the standby's last one) may be missing. The drill
//! reports:
//!
//! - RPO: the acknowledged sends missing after the failover, with their time span; they
//!   must be exactly the ones acknowledged after the standby's last applied entry (any
//!   other missing send is a violation);
//! - RTO: kill → the first send by one of the region's users acknowledged again;
//! - seqs rewritten (a lost send's seq now holds a later message), rows that stayed ahead;
//! - after failback: every replica's state hash equal to the standby's at the same index,
//!   the checker's invariants, and a residency audit with 0 violations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meridian_client::api::DrCut;
use meridian_client::ClientConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::regions::{self, Lost, Pair, Record, REGIONS};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub seed: u64,
    pub duration: Duration,
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub clients: u32,
    pub base_port: u16,
    /// The region whose primary is lost.
    pub region: String,
    /// Freeze the standby (SIGSTOP) this long before the kill.
    pub cut_standby: Option<Duration>,
}

/// One acknowledged send, with what the RPO judgement needs.
#[derive(Debug, Clone)]
struct Ack {
    key: (String, String),
    rid: String,
    seq: u64,
    message_id: String,
    from_region: &'static str,
    at: Instant,
}

/// Runs the drill; `Ok(true)` when nothing but the reported RPO was found.
pub async fn run(options: DrillOptions) -> anyhow::Result<bool> {
    let code: &'static str = REGIONS
        .iter()
        .map(|(c, _)| *c)
        .find(|c| *c == options.region)
        .with_context(|| format!("--region {}: the drill deploys sg, kr and de", options.region))?;
    let campaign = regions::RegionsOptions {
        seed: options.seed,
        duration: options.duration,
        binary: options.binary.clone(),
        dir: options.dir.clone(),
        clients: options.clients,
        base_port: options.base_port,
    };
    let (mut nodes, standby, token) = regions::start_with_standby(&campaign, Some(code)).await?;
    let mut standby = standby.context("the standby node")?;
    regions::wait_linked(&nodes, &token, Duration::from_secs(60)).await?;
    let entry_addr = nodes.iter().find(|n| n.code != code).map(|n| n.client_addr).context("a surviving region")?;
    let template = {
        let mut c = ClientConfig::new([entry_addr.to_string()], token.clone());
        c.retry_budget = Duration::from_secs(10);
        c
    };
    let entry = meridian_client::Client::with_config(template.clone())?;
    wait_standby_follows(&entry, &template, code).await?;
    println!("drill: region {code} has a standby (node 11) following every shard");

    let mut rng = StdRng::seed_from_u64(options.seed);
    let endpoints: Vec<SocketAddr> = nodes.iter().map(|n| n.client_addr).collect();
    let users = regions::users();
    for (user, home) in &users {
        let via = endpoints[rng.gen_range(0..endpoints.len())];
        regions::client(via, &token, None, Duration::from_secs(20))?
            .create_user(user, Some(home))
            .await
            .with_context(|| format!("create {user} in {home} through {via}"))?;
    }
    let pairs: Vec<Pair> = regions::conversations(&users);

    let record = Arc::new(Mutex::new(Record::default()));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::new();
    for w in 0..options.clients {
        let (pairs, endpoints, token, record, acks) =
            (pairs.clone(), endpoints.clone(), token.clone(), record.clone(), acks.clone());
        let mut rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1000).wrapping_add(u64::from(w)));
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let ((a, ah), (b, bh)) = &pairs[rng.gen_range(0..pairs.len())];
                let ((from, from_region), to) = if rng.gen_bool(0.5) { ((a, *ah), b) } else { ((b, *bh), a) };
                let via = endpoints[rng.gen_range(0..endpoints.len())];
                let Ok(c) = regions::client(via, &token, Some(from), Duration::from_secs(4)) else { continue };
                let key = regions::pair(from, to);
                n += 1;
                let rid = format!("w{w}-{n}");
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sent
                    .entry(key.clone())
                    .or_default()
                    .insert(rid.clone());
                let began = Instant::now();
                let outcome = c.send_text(to, &rid, Some(rid.clone())).await;
                {
                    let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                    r.ops += 1;
                    match outcome {
                        Ok(sent) => {
                            r.acked.entry(key.clone()).or_default().push((rid.clone(), sent.seq));
                            acks.lock().unwrap_or_else(|p| p.into_inner()).push(Ack {
                                key,
                                rid,
                                seq: sent.seq,
                                message_id: sent.message_id,
                                from_region,
                                at: Instant::now(),
                            });
                        }
                        Err(e) => regions::classify_into(&mut r, &e, began.elapsed()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
            }
        }));
    }

    // The loss.
    let region_index = nodes.iter().position(|n| n.code == code).context("the drilled region's node")?;
    tokio::time::sleep_until((started + options.duration / 3).into()).await;
    let standby_pid = standby.child.as_ref().map(std::process::Child::id);
    if let (Some(cut), Some(pid)) = (options.cut_standby, standby_pid) {
        signal(pid, "-STOP")?;
        println!("drill: standby frozen (its link cut) for {} s before the kill", cut.as_secs_f64());
        tokio::time::sleep(cut).await;
    }
    nodes[region_index].kill();
    let killed = Instant::now();
    println!("drill: killed every process of region {code}'s primary at {:.1} s", started.elapsed().as_secs_f64());
    if let (Some(_), Some(pid)) = (options.cut_standby, standby_pid) {
        signal(pid, "-CONT")?;
    }
    let promoted = meridian_client::dr::promote(&entry, &template, code).await.context("dr promote")?;
    println!(
        "drill: promoted the standby (epoch {}) {:.1} s after the kill; cut: {}",
        promoted.epoch,
        killed.elapsed().as_secs_f64(),
        promoted.cut.iter().map(|c| format!("shard {} @{}", c.shard, c.index)).collect::<Vec<_>>().join(", ")
    );

    // The failback.
    tokio::time::sleep_until((started + options.duration * 2 / 3).into()).await;
    nodes[region_index].spawn(&options.binary)?;
    wait_role(&entry, &template, code, 1, "fenced").await?;
    println!("drill: the old primary came back fenced");
    let back = meridian_client::dr::failback(&entry, &template, code).await.context("dr failback")?;
    println!(
        "drill: failed back (epoch {}) in {:.1} s, writes paused {:.2} s; quarantined: {}",
        back.epoch,
        back.took.as_secs_f64(),
        back.paused.as_secs_f64(),
        back.quarantined
            .iter()
            .map(|(id, e, m, _)| format!("node {id}: {e} event(s), {m} message(s)"))
            .collect::<Vec<_>>()
            .join("; ")
    );

    for w in workers {
        let _ = w.await;
    }
    regions::wait_linked(&nodes, &token, Duration::from_secs(90)).await?;

    // The judgement.
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
    let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|p| p.into_inner()));
    let cut: BTreeMap<u32, DrCut> = promoted.cut.iter().map(|c| (c.shard, *c)).collect();
    let after_cut: Vec<&Ack> = acks.iter().filter(|a| beyond_cut(&a.message_id, code, &cut)).collect();
    let mut lost: Lost = BTreeMap::new();
    for a in &after_cut {
        lost.entry(a.key.clone()).or_default().insert(a.rid.clone(), a.seq);
    }
    let checked = regions::check(&nodes, &token, &pairs, &record, &lost).await?;
    let mut violations = checked.violations.clone();
    let expected: BTreeSet<(String, String, String)> =
        after_cut.iter().map(|a| (a.key.0.clone(), a.key.1.clone(), a.rid.clone())).collect();
    if checked.missing != expected {
        let present: Vec<_> = expected.difference(&checked.missing).collect();
        violations.push(format!(
            "RPO: {} send(s) acknowledged after the standby's last entry, {} missing; present after all: {present:?}",
            expected.len(),
            checked.missing.len()
        ));
    }
    let hashes = wait_hashes_equal(&entry, &template, code).await;
    if let Err(e) = &hashes {
        violations.push(format!("state hashes after failback: {e}"));
    }

    let first_back = acks.iter().filter(|a| a.from_region == code && a.at > killed).map(|a| a.at).min();
    let lost_times: Vec<Instant> = after_cut.iter().map(|a| a.at).collect();
    let span = match (lost_times.iter().min(), lost_times.iter().max()) {
        (Some(a), Some(b)) => format!(
            "acknowledged from {:.2} s to {:.2} s before the kill",
            killed.saturating_duration_since(*a).as_secs_f64(),
            killed.saturating_duration_since(*b).as_secs_f64()
        ),
        _ => "none".to_owned(),
    };
    println!("drill report, region {code}, seed {}:", options.seed);
    println!(
        "  workload: {} operations, {} sends acknowledged, {} unknown outcome; errors by reason: {:?}",
        record.ops,
        acks.len(),
        record.unknown,
        record.errors
    );
    println!(
        "  RPO: {} acknowledged send(s) lost ({span}); {} expected from the cut (target: <= 1 s of writes)",
        checked.missing.len(),
        expected.len()
    );
    match first_back {
        Some(t) => println!(
            "  RTO: {:.2} s from the kill to the first acknowledged send of a {code} user (target: <= 30 s)",
            t.duration_since(killed).as_secs_f64()
        ),
        None => {
            println!("  RTO: no send of a {code} user was acknowledged after the kill");
            violations.push(format!("RTO: no send of a {code} user was acknowledged after the kill"));
        }
    }
    println!(
        "  promotion took {:.2} s; failback {:.2} s with writes paused {:.2} s",
        promoted.took.as_secs_f64(),
        back.took.as_secs_f64(),
        back.paused.as_secs_f64()
    );
    println!("  seqs rewritten: {}; list rows left ahead by lost sends: {}", checked.rewritten, checked.rows_ahead);
    for (id, events, messages, file) in &back.quarantined {
        println!("  quarantine of node {id}: {events} event(s), {messages} message(s) in {file}");
    }
    match &hashes {
        Ok(shards) => println!("  state hashes after failback: equal on every replica of {shards} shard(s)"),
        Err(e) => println!("  state hashes after failback: {e}"),
    }
    println!("  residency audit and checker invariants: {} violation(s)", violations.len());
    for v in &violations {
        println!("  VIOLATION: {v}");
    }
    drop(standby.child.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    Ok(violations.is_empty())
}

/// Whether `message_id` (`region.epoch.shard.index.position`, hex index) names an entry of
/// `region`'s cut epoch after the cut of its shard.
fn beyond_cut(message_id: &str, region: &str, cut: &BTreeMap<u32, DrCut>) -> bool {
    let parts: Vec<&str> = message_id.split('.').collect();
    let [r, epoch, shard, index, _] = parts[..] else { return false };
    let (Ok(epoch), Ok(shard), Ok(index)) =
        (epoch.parse::<u32>(), shard.parse::<u32>(), u64::from_str_radix(index, 16))
    else {
        return false;
    };
    r == region && cut.get(&shard).is_some_and(|c| epoch == c.epoch.max(1) && index > c.index)
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill {sig} {pid} failed");
    Ok(())
}

/// Waits until the standby is a learner of every shard and caught up.
async fn wait_standby_follows(
    entry: &meridian_client::Client,
    template: &ClientConfig,
    region: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = meridian_client::dr::status(entry, template, region, false).await {
            let lag = status.lag();
            let follows = !lag.is_empty()
                && lag.iter().all(|s| {
                    s.followers.iter().any(|(id, role, _, behind, _, _)| *id == 11 && role == "standby" && *behind < 50)
                });
            if follows {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the standby of {region} did not follow every shard within 60 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until node `id` of `region` reports `role`.
async fn wait_role(
    entry: &meridian_client::Client,
    template: &ClientConfig,
    region: &str,
    id: u64,
    role: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = meridian_client::dr::status(entry, template, region, false).await {
            if status.nodes.iter().any(|(n, r)| n.node_id == id && r.as_ref().is_ok_and(|r| r.role == role)) {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "node {id} of {region} did not become {role} within 60 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every replica of every shard of `region` reports the serving replica's
/// state hash at the same index; the number of shards.
async fn wait_hashes_equal(
    entry: &meridian_client::Client,
    template: &ClientConfig,
    region: &str,
) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: String;
    loop {
        match meridian_client::dr::status(entry, template, region, true).await {
            Ok(status) => {
                let lag = status.lag();
                let equal = !lag.is_empty()
                    && lag.iter().all(|s| {
                        s.serving.is_some() && s.followers.iter().all(|(_, _, _, _, _, same)| *same == Some(true))
                    });
                if equal {
                    return Ok(lag.len());
                }
                last = status.lines().join("\n");
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("not equal within 60 s:\n{last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_beyond_the_cut_only_in_the_cut_epoch_and_after_its_index() {
        let cut = BTreeMap::from([(2, DrCut { shard: 2, index: 0x40, term: 3, time_ms: 0, epoch: 1 })]);
        assert!(beyond_cut("de.1.2.41.0", "de", &cut));
        assert!(!beyond_cut("de.1.2.40.0", "de", &cut));
        assert!(!beyond_cut("de.2.2.41.0", "de", &cut), "minted after the promotion");
        assert!(!beyond_cut("sg.1.2.41.0", "de", &cut));
        assert!(!beyond_cut("de.1.3.41.0", "de", &cut), "no cut for shard 3");
        assert!(!beyond_cut("garbage", "de", &cut));
    }
}
