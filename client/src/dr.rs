//! Region disaster recovery as an operator runs it (`meridian dr ...`, docs/dr.md): the
//! status of a region's primary and standby, a promotion of the standby, and a failback.
//! Each is a sequence of `Admin/Dr` steps on the region's nodes, which this module finds in
//! the topology through any node of the deployment and calls one by one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::api::{DrCut, DrNode, DrOp, DrRequest, DrResponse};
use crate::{Client, ClientConfig, ClientError};

/// How long a promotion or failback waits for one of its steps.
const STEP_DEADLINE: Duration = Duration::from_secs(90);
/// How long writes may stay paused while the primary catches up for the switch.
const SWITCH_PAUSE_SECONDS: u32 = 30;

/// What every node of a region answered.
#[derive(Debug, Clone)]
pub struct RegionDr {
    pub region: String,
    pub nodes: Vec<(DrNode, Result<DrResponse, String>)>,
}

/// One shard of `meridian dr status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardLag {
    pub shard: u32,
    /// The serving side's node and its applied index.
    pub serving: Option<(u64, u64)>,
    /// Each other node: (id, role, applied index, entries behind, seconds behind, hash equal
    /// to the serving node's at the same index).
    pub followers: Vec<(u64, String, u64, u64, f64, Option<bool>)>,
}

impl RegionDr {
    fn answered(&self) -> impl Iterator<Item = (&DrNode, &DrResponse)> {
        self.nodes.iter().filter_map(|(n, r)| r.as_ref().ok().map(|r| (n, r)))
    }

    /// The promotion's cut: per shard, the most advanced standby node's.
    pub fn cut(&self) -> Vec<DrCut> {
        let mut best: BTreeMap<u32, DrCut> = BTreeMap::new();
        for (_, r) in self.answered().filter(|(n, _)| n.standby) {
            for c in &r.cut {
                let e = best.entry(c.shard).or_insert(*c);
                if c.index > e.index {
                    *e = *c;
                }
            }
        }
        best.into_values().collect()
    }

    /// The highest epoch any node reports.
    pub fn epoch(&self) -> u32 {
        self.answered().map(|(_, r)| r.epoch).max().unwrap_or(1)
    }

    /// Per shard: the serving side's replica (the leader's, else the most advanced serving
    /// one) against every other node's.
    pub fn lag(&self) -> Vec<ShardLag> {
        let shards = self.answered().map(|(_, r)| r.shards.len()).max().unwrap_or(0);
        (0..shards)
            .map(|i| {
                let serving = self
                    .answered()
                    .filter(|(_, r)| r.role == "serving")
                    .filter_map(|(n, r)| r.shards.get(i).map(|s| (n.node_id, s)))
                    .max_by_key(|(id, s)| (s.leader == *id, s.applied_index));
                let followers = self
                    .answered()
                    .filter(|(n, _)| serving.is_none_or(|(id, _)| id != n.node_id))
                    .filter_map(|(n, r)| {
                        let s = r.shards.get(i)?;
                        let (behind, seconds, same) = match serving {
                            Some((_, lead)) => {
                                let behind = lead.applied_index.saturating_sub(s.applied_index);
                                let seconds = if behind == 0 {
                                    0.0
                                } else {
                                    (lead.last_time_ms - s.last_time_ms).max(0) as f64 / 1000.0
                                };
                                let same = (lead.applied_index == s.applied_index && !s.state_hash.is_empty())
                                    .then(|| lead.state_hash == s.state_hash);
                                (behind, seconds, same)
                            }
                            None => (0, 0.0, None),
                        };
                        Some((n.node_id, r.role.clone(), s.applied_index, behind, seconds, same))
                    })
                    .collect();
                ShardLag { shard: i as u32, serving: serving.map(|(id, s)| (id, s.applied_index)), followers }
            })
            .collect()
    }

    /// Printable lines of the status.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("region {} (epoch {})", self.region, self.epoch())];
        for (n, r) in &self.nodes {
            let side = if n.standby { format!("standby at {}", n.place) } else { "primary".to_owned() };
            match r {
                Ok(r) => out.push(format!(
                    "  node {} ({side}) {}: {}{}, epoch {}",
                    n.node_id,
                    n.addr,
                    r.role,
                    if r.paused { " (writes paused)" } else { "" },
                    r.epoch
                )),
                Err(e) => out.push(format!("  node {} ({side}) {}: unreachable ({e})", n.node_id, n.addr)),
            }
        }
        for s in self.lag() {
            let lead = s.serving.map_or("no serving replica".to_owned(), |(id, i)| format!("node {id} at {i}"));
            let rest: Vec<String> = s
                .followers
                .iter()
                .map(|(id, role, index, behind, seconds, same)| {
                    let hash = match same {
                        Some(true) => ", hash equal",
                        Some(false) => ", HASH DIFFERS",
                        None => "",
                    };
                    format!("node {id} ({role}) at {index}, {behind} behind ({seconds:.1} s){hash}")
                })
                .collect();
            let rest = if rest.is_empty() { "no other replica answers".to_owned() } else { rest.join("; ") };
            out.push(format!("  shard {}: {lead}; {rest}", s.shard));
        }
        out
    }
}

/// Calls to one node of the deployment with the operator's credentials.
fn node_client(template: &ClientConfig, addr: &str) -> Result<Client, ClientError> {
    let mut config = template.clone();
    config.endpoints = vec![addr.to_owned()];
    // One node, asked directly: a dead one must not hold a status round up.
    config.retry_budget = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_millis(500);
    Client::with_config(config)
}

async fn step(template: &ClientConfig, addr: &str, request: DrRequest) -> Result<DrResponse, ClientError> {
    node_client(template, addr)?.dr(request).await
}

/// Asks every node of `region` (found through `entry`) for its disaster-recovery status;
/// with `hashes`, each replica's state hash too (every replica read whole: not for polls).
pub async fn status(
    entry: &Client,
    template: &ClientConfig,
    region: &str,
    hashes: bool,
) -> Result<RegionDr, ClientError> {
    let answer =
        entry.dr(DrRequest { op: DrOp::DrStatus as i32, region: region.to_owned(), ..Default::default() }).await?;
    if answer.nodes.is_empty() {
        return Err(ClientError::Verification { detail: format!("region {region} is not in the topology") });
    }
    let asks = answer.nodes.iter().map(|n| async move {
        let request = DrRequest { op: DrOp::DrStatus as i32, include_state_hash: hashes, ..Default::default() };
        (n.clone(), step(template, &n.addr, request).await.map_err(|e| e.to_string()))
    });
    let nodes = futures::future::join_all(asks).await;
    Ok(RegionDr { region: region.to_owned(), nodes })
}

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub epoch: u32,
    /// Per shard, the cut: the last entry the standby had (the most advanced standby node's).
    pub cut: Vec<DrCut>,
    pub took: Duration,
    pub status: RegionDr,
}

/// Promotes `region`'s standby: each standby node becomes a voter of every shard in a new
/// epoch; the old primary's nodes are fenced as soon as they can see it.
pub async fn promote(entry: &Client, template: &ClientConfig, region: &str) -> Result<Promoted, ClientError> {
    let started = Instant::now();
    let before = status(entry, template, region, false).await?;
    let standby: Vec<&DrNode> = before.nodes.iter().map(|(n, _)| n).filter(|n| n.standby).collect();
    if standby.is_empty() {
        return Err(ClientError::Verification { detail: format!("region {region} lists no standby") });
    }
    for (n, r) in before.nodes.iter().filter(|(n, _)| n.standby) {
        match r {
            Ok(r) if r.role == "standby" => {}
            Ok(r) => {
                return Err(ClientError::Verification {
                    detail: format!("standby node {} is {} (epoch {}): nothing to promote", n.node_id, r.role, r.epoch),
                })
            }
            Err(e) => {
                return Err(ClientError::Verification {
                    detail: format!("standby node {} does not answer: {e}", n.node_id),
                })
            }
        }
    }
    let epoch = before.epoch() + 1;
    let voters: Vec<u64> = standby.iter().map(|n| n.node_id).collect();
    for n in &standby {
        let request = DrRequest {
            op: DrOp::DrPromote as i32,
            region: region.to_owned(),
            epoch,
            voters: voters.clone(),
            ..Default::default()
        };
        step(template, &n.addr, request).await?;
    }
    // Each standby node restarts itself, rewrites its replicas and elects; the new leaders
    // raise the epoch.
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = status(entry, template, region, false).await;
        if let Ok(now) = now {
            let done = now.nodes.iter().filter(|(n, _)| n.standby).all(|(_, r)| {
                r.as_ref().is_ok_and(|r| r.role == "serving" && r.shards.iter().all(|s| s.epoch >= epoch))
            });
            if done {
                wait_linked(entry, region, &voters).await;
                let took = started.elapsed();
                let status = self::status(entry, template, region, true).await.unwrap_or_else(|_| now.clone());
                return Ok(Promoted { epoch, cut: now.cut(), took, status });
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Verification {
                detail: format!("the standby of {region} did not serve in epoch {epoch} within {STEP_DEADLINE:?}"),
            });
        }
    }
}

/// What a failback did.
#[derive(Debug, Clone)]
pub struct FailedBack {
    pub epoch: u32,
    /// Per old-primary node: (id, events quarantined, messages among them, file).
    pub quarantined: Vec<(u64, u64, u64, String)>,
    /// How long writes were paused for the switch.
    pub paused: Duration,
    pub took: Duration,
    pub status: RegionDr,
}

/// Fails `region` back to its primary: the fenced primary's nodes quarantine what they
/// acknowledged after the cut, are reseeded from the serving standby, catch up, and become
/// the voters again after a pause of writes that lets them reach lag 0 (RPO 0).
pub async fn failback(entry: &Client, template: &ClientConfig, region: &str) -> Result<FailedBack, ClientError> {
    let started = Instant::now();
    let fail = |detail: String| ClientError::Verification { detail };
    let before = status(entry, template, region, false).await?;
    let primary: Vec<DrNode> = before.nodes.iter().map(|(n, _)| n.clone()).filter(|n| !n.standby).collect();
    let serving: Vec<DrNode> = before
        .nodes
        .iter()
        .filter(|(n, r)| n.standby && r.as_ref().is_ok_and(|r| r.role == "serving"))
        .map(|(n, _)| n.clone())
        .collect();
    let standby_ids: Vec<u64> = before.nodes.iter().filter(|(n, _)| n.standby).map(|(n, _)| n.node_id).collect();
    if serving.len() != standby_ids.len() {
        return Err(fail(format!("region {region} is not served by its whole standby: nothing to fail back")));
    }
    let cut = before.cut();
    // 1. Quarantine, then reseed, every node of the old primary.
    let mut quarantined = Vec::new();
    for n in &primary {
        let state = before.nodes.iter().find(|(m, _)| m.node_id == n.node_id).and_then(|(_, r)| r.as_ref().ok());
        match state.map(|r| r.role.as_str()) {
            Some("fenced") => {
                let request = DrRequest { op: DrOp::DrQuarantine as i32, cut: cut.clone(), ..Default::default() };
                let q = step(template, &n.addr, request).await?;
                quarantined.push((n.node_id, q.quarantined_events, q.quarantined_messages, q.quarantine_file));
                step(template, &n.addr, DrRequest { op: DrOp::DrReseed as i32, ..Default::default() }).await?;
            }
            Some("standby") => {} // reseeded already by an earlier run
            Some(role) => return Err(fail(format!("primary node {} is {role}, not fenced", n.node_id))),
            None => return Err(fail(format!("primary node {} does not answer: start it first", n.node_id))),
        }
    }
    // 2. Wait until the reseeded nodes follow every shard closely.
    let primary_ids: Vec<u64> = primary.iter().map(|n| n.node_id).collect();
    let caught_up = |now: &RegionDr, within: u64| {
        now.lag().iter().all(|s| {
            s.serving.is_some()
                && primary_ids.iter().all(|id| {
                    s.followers
                        .iter()
                        .any(|(f, role, _, behind, _, _)| f == id && role == "standby" && *behind <= within)
                })
        })
    };
    wait_for(entry, template, region, "the primary's nodes to catch up", |now| caught_up(now, 100)).await?;
    // 3. Pause writes, wait for lag 0, switch the voters, raise the epoch.
    let pause_started = Instant::now();
    for n in &serving {
        let request = DrRequest { op: DrOp::DrPause as i32, pause_seconds: SWITCH_PAUSE_SECONDS, ..Default::default() };
        step(template, &n.addr, request).await?;
    }
    let unpause = || async {
        for n in &serving {
            let _ = step(template, &n.addr, DrRequest { op: DrOp::DrPause as i32, ..Default::default() }).await;
        }
    };
    if let Err(e) = wait_for(entry, template, region, "lag 0", |now| caught_up(now, 0)).await {
        unpause().await;
        return Err(e);
    }
    let epoch = status(entry, template, region, false).await?.epoch() + 1;
    let request = DrRequest {
        op: DrOp::DrSwitch as i32,
        region: region.to_owned(),
        epoch,
        voters: primary_ids.clone(),
        ..Default::default()
    };
    if let Err(e) = step(template, &serving[0].addr, request).await {
        unpause().await;
        return Err(e);
    }
    let paused = pause_started.elapsed();
    // 4. Every node's marks cleared; the standby follows again.
    for (n, _) in &before.nodes {
        let _ = step(template, &n.addr, DrRequest { op: DrOp::DrFinish as i32, ..Default::default() }).await;
    }
    let status = wait_for(entry, template, region, "the primary to serve", |now| {
        now.nodes.iter().all(|(n, r)| {
            r.as_ref().is_ok_and(|r| r.role == if n.standby { "standby" } else { "serving" } && r.epoch >= epoch)
        })
    })
    .await?;
    let took = started.elapsed();
    let status = self::status(entry, template, region, true).await.unwrap_or(status);
    Ok(FailedBack { epoch, quarantined, paused, took, status })
}

/// Waits (at most 10 s) until the entry node's link to `region` reaches one of `serving`,
/// so that the promotion's report means calls through it reach the new serving side. A node
/// of the region itself has no such link: nothing to wait for.
async fn wait_linked(entry: &Client, region: &str, serving: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(s) = entry.cluster_status(false).await {
            let linked =
                s.region_links.iter().filter(|l| l.region == region).all(|l| {
                    l.state == "up" && serving.iter().any(|id| l.detail.starts_with(&format!("node {id} at ")))
                });
            if linked {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for(
    entry: &Client,
    template: &ClientConfig,
    region: &str,
    what: &str,
    done: impl Fn(&RegionDr) -> bool,
) -> Result<RegionDr, ClientError> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Ok(now) = status(entry, template, region, false).await {
            if done(&now) {
                return Ok(now);
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Verification { detail: format!("waited {STEP_DEADLINE:?} for {what}") });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
