//! Faults: what they are, a schedule drawn from a seed, and how each is injected and healed.
//! The same seed gives the same schedule (kinds, times, durations, targets by shard or node).

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::ChaosCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 a node, restart it at heal.
    Kill,
    /// SIGSTOP a node for longer than the election timeout, SIGCONT at heal.
    Pause,
    /// Cut every link of one node, both ways.
    Isolate,
    /// Cut every link between a minority and the majority.
    Split,
    /// Drop everything one node sends to its peers (not what they send it).
    OneWay,
    /// Delay and jitter on one node's inbound peer links.
    Delay,
    /// Connection resets on one node's inbound peer links.
    Loss,
    /// Fill the disk of the node whose data lives on a small tmpfs.
    DiskFull,
    /// Restart a node with its wall clock skewed.
    ClockSkew,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Delay,
        FaultKind::Loss,
        FaultKind::DiskFull,
        FaultKind::ClockSkew,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::DiskFull => "disk-full",
            FaultKind::ClockSkew => "clock-skew",
        }
    }

    /// Parses `all` or a comma-separated list of names.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<FaultKind>> {
        if s == "all" {
            return Ok(Self::ALL.to_vec());
        }
        s.split(',')
            .map(|name| {
                Self::ALL.into_iter().find(|k| k.name() == name.trim()).ok_or_else(|| {
                    anyhow::anyhow!("unknown fault {name:?}; known: all, {}", Self::ALL.map(|k| k.name()).join(", "))
                })
            })
            .collect()
    }
}

/// Whom a fault hits: the leader of a shard at injection time, a node, or a set of nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    LeaderOf(u32),
    Node(usize),
    Minority(Vec<usize>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFault {
    pub at: Duration,
    pub hold: Duration,
    pub kind: FaultKind,
    pub target: Target,
    /// Kind-specific magnitude: delay ms, reset per-mille, clock skew seconds (signed via parity).
    pub magnitude: u64,
}

/// Draws the schedule: every enabled kind at least once (in a seeded order), then seeded
/// choices, each held for 3–8 s with 2–4 s of calm after it, until `duration`.
pub fn plan(
    seed: u64,
    duration: Duration,
    kinds: &[FaultKind],
    nodes: usize,
    shards: u32,
    disk_node: Option<usize>,
) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut order: Vec<FaultKind> = kinds.to_vec();
    order.shuffle(&mut rng);
    let mut out = Vec::new();
    let mut t = Duration::from_secs(3);
    let mut i = 0usize;
    loop {
        let hold = Duration::from_millis(rng.gen_range(3_000..=8_000));
        if t + hold + Duration::from_secs(2) > duration || kinds.is_empty() {
            break;
        }
        let kind = if i < order.len() { order[i] } else { kinds[rng.gen_range(0..kinds.len())] };
        i += 1;
        let target = match kind {
            FaultKind::DiskFull => Target::Node(disk_node.unwrap_or(0)),
            FaultKind::Split => {
                let mut all: Vec<usize> = (0..nodes).collect();
                all.shuffle(&mut rng);
                let mut minority: Vec<usize> = all[..(nodes - 1) / 2].to_vec();
                minority.sort_unstable();
                Target::Minority(minority)
            }
            _ if rng.gen_bool(0.5) => Target::LeaderOf(rng.gen_range(0..shards)),
            _ => Target::Node(rng.gen_range(0..nodes)),
        };
        let magnitude = match kind {
            FaultKind::Delay => rng.gen_range(20..=200),
            FaultKind::Loss => rng.gen_range(5..=50),
            FaultKind::ClockSkew => rng.gen_range(30..=300) * 2 + u64::from(rng.gen_bool(0.5)),
            _ => 0,
        };
        out.push(PlannedFault { at: t, hold, kind, target, magnitude });
        t += hold + Duration::from_millis(rng.gen_range(2_000..=4_000));
    }
    out
}

/// A fault in force, with what is needed to heal it.
#[derive(Debug)]
pub struct Injected {
    pub kind: FaultKind,
    pub nodes: Vec<usize>,
    pub detail: String,
}

fn others(nodes: usize, of: &[usize]) -> Vec<usize> {
    (0..nodes).filter(|n| !of.contains(n)).collect()
}

/// Injects a planned fault. Resolves a `LeaderOf` target now (falling back to node 0).
pub async fn inject(cluster: &mut ChaosCluster, f: &PlannedFault) -> anyhow::Result<Injected> {
    let nodes = cluster.nodes.len();
    let victims = match &f.target {
        Target::LeaderOf(shard) => vec![cluster.leader_of(*shard).await.unwrap_or(0)],
        Target::Node(i) => vec![*i],
        Target::Minority(m) => m.clone(),
    };
    let v = victims[0];
    let detail = match f.kind {
        FaultKind::Kill => {
            cluster.kill9(v)?;
            "SIGKILL".to_owned()
        }
        FaultKind::Pause => {
            if !cluster.is_running(v) {
                cluster.restart(v)?;
            }
            cluster.pause(v)?;
            format!("SIGSTOP for {:?}", f.hold)
        }
        FaultKind::Isolate | FaultKind::Split => {
            let rest = others(nodes, &victims);
            cut(cluster, &victims, &rest, true)?;
            format!("{:?} cut from {:?} both ways", ids(cluster, &victims), ids(cluster, &rest))
        }
        FaultKind::OneWay => {
            let rest = others(nodes, &victims);
            cut(cluster, &victims, &rest, false)?;
            format!("packets from {:?} to {:?} dropped", ids(cluster, &victims), ids(cluster, &rest))
        }
        FaultKind::Delay => {
            let jitter = f.magnitude / 2;
            cluster.proxy(v).set(|l| {
                l.delay_ms = f.magnitude;
                l.jitter_ms = jitter;
            });
            format!("inbound peer links delayed {} ms ± {jitter} ms", f.magnitude)
        }
        FaultKind::Loss => {
            let p = f.magnitude as f64 / 1000.0;
            cluster.proxy(v).set(|l| l.reset_probability = p);
            format!("inbound peer connections reset with p = {p} per chunk")
        }
        FaultKind::DiskFull => {
            cluster.fill_disk(v)?;
            "tmpfs filled to ENOSPC".to_owned()
        }
        FaultKind::ClockSkew => {
            let secs = f.magnitude / 2;
            let skew = if f.magnitude.is_multiple_of(2) { format!("+{secs}s") } else { format!("-{secs}s") };
            cluster.nodes[v].skew = Some(skew.clone());
            cluster.restart(v)?;
            format!("restarted with wall clock {skew}")
        }
    };
    Ok(Injected { kind: f.kind, nodes: victims, detail })
}

fn ids(cluster: &ChaosCluster, nodes: &[usize]) -> Vec<u64> {
    nodes.iter().map(|&i| cluster.nodes[i].id).collect()
}

/// Cuts links from every node of `a` to every node of `b` (and back when `both`), with the
/// kernel firewall when there is one, else with the fault proxies.
pub fn cut(cluster: &ChaosCluster, a: &[usize], b: &[usize], both: bool) -> anyhow::Result<()> {
    let pairs: Vec<(usize, usize)> = a
        .iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .flat_map(|(x, y)| if both { vec![(x, y), (y, x)] } else { vec![(x, y)] })
        .collect();
    match &cluster.firewall {
        Some(fw) => {
            for (from, to) in pairs {
                cluster.cut_link(fw, from, to)?;
            }
        }
        None => {
            // The proxy in front of `to` refuses connections from `from`'s address.
            for (from, to) in pairs {
                let ip = std::net::IpAddr::V4(cluster.nodes[from].ip);
                cluster.proxy(to).set(|l| {
                    l.blocked_sources.insert(ip);
                });
            }
        }
    }
    Ok(())
}

/// Undoes a fault; afterwards every node is running, unpaused, unskewed and fully linked.
pub fn heal(cluster: &mut ChaosCluster, injected: &Injected) -> anyhow::Result<()> {
    cluster.heal_links()?;
    let touched: BTreeSet<usize> = injected.nodes.iter().copied().collect();
    for &v in &touched {
        match injected.kind {
            FaultKind::Pause => cluster.resume(v)?,
            FaultKind::DiskFull => cluster.free_disk(v)?,
            FaultKind::ClockSkew => {
                cluster.nodes[v].skew = None;
                cluster.restart(v)?;
            }
            _ => {}
        }
    }
    for i in 0..cluster.nodes.len() {
        if !cluster.is_running(i) {
            cluster.restart(i)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let d = Duration::from_secs(300);
        let a = plan(42, d, &FaultKind::ALL, 3, 8, Some(1));
        assert_eq!(a, plan(42, d, &FaultKind::ALL, 3, 8, Some(1)));
        assert_ne!(a, plan(43, d, &FaultKind::ALL, 3, 8, Some(1)));
    }

    #[test]
    fn every_kind_comes_once_before_any_repeats() {
        let a = plan(7, Duration::from_secs(300), &FaultKind::ALL, 5, 8, Some(0));
        let first: BTreeSet<FaultKind> = a.iter().take(FaultKind::ALL.len()).map(|f| f.kind).collect();
        assert_eq!(first.len(), FaultKind::ALL.len());
        for f in &a {
            if let Target::Minority(m) = &f.target {
                assert_eq!(m.len(), 2, "5 nodes: a minority of 2");
            }
            assert!(f.at + f.hold <= Duration::from_secs(300));
        }
    }

    #[test]
    fn fault_lists_parse() {
        assert_eq!(FaultKind::parse_list("all").map(|v| v.len()).ok(), Some(9));
        assert_eq!(FaultKind::parse_list("kill,one-way").ok(), Some(vec![FaultKind::Kill, FaultKind::OneWay]));
        assert!(FaultKind::parse_list("kill,meteor").is_err());
    }
}
