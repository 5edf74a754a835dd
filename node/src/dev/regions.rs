//! `meridian dev --regions sg,kr,de,in [--strict de,in] [--nodes-per-region 1|3]`: one region
//! per code on loopback, each its own Raft cluster, described by a generated `regions.toml`
//! and linked by region links.
//!
//! Ports, with `B` the base port and `r` the region's position in `--regions`: node `n` of
//! region `r` serves clients on `B + 10r + n - 1`, peers on `+100`, other regions on `+200`
//! and HTTP on `+1000`. Like the single region, a first run writes the topology and one
//! config per node (`DIR/{region}-node-{n}.toml`, fresh secrets) and later runs reuse them.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use meridian_domain::RegionCode;
use meridian_regions::{NodeSpec, RegionSpec, RegionsFile, Residency};
use tracing::info;

use super::{random_secret, write_private, DevArgs, DevSpec, HTTP_PORT_OFFSET, PEER_PORT_OFFSET};
use crate::config::{AuthConfig, ClusterConfig, LimitsConfig, LinkConfig, NodeConfig, RaftTuning};

/// Offset from a node's gRPC port to its region-link port (7001 → 7201).
const LINK_PORT_OFFSET: u16 = 200;
/// The topology file's name in the dev directory.
const TOPOLOGY: &str = "regions.toml";

fn node_name(region: &str, n: u64) -> String {
    format!("{region}-node-{n}")
}

/// The nodes of every region: reused from `dir` when its topology exists, else written.
pub(super) fn prepare(dir: &Path, args: &DevArgs) -> anyhow::Result<Vec<DevSpec>> {
    let mut specs = prepare_specs(dir, args)?;
    if let Some(window) = args.archive_hot_window {
        for spec in &mut specs {
            super::apply_dev_archive(&mut spec.config, dir, window);
            super::write_config(&spec.config_path, &spec.config)?;
        }
    }
    Ok(specs)
}

fn prepare_specs(dir: &Path, args: &DevArgs) -> anyhow::Result<Vec<DevSpec>> {
    let topology_path = dir.join(TOPOLOGY);
    if topology_path.exists() {
        return reuse(dir, &topology_path, args);
    }
    if !matches!(args.nodes_per_region, 1 | 3) {
        bail!("--nodes-per-region {}: use 1 (fits two cores) or 3", args.nodes_per_region);
    }
    for code in args.regions.iter().chain(&args.strict) {
        RegionCode::parse(code).map_err(|e| anyhow!("--regions/--strict: {e}"))?;
    }
    if let Some(stranger) = args.strict.iter().find(|s| !args.regions.contains(s)) {
        bail!("--strict {stranger}: not one of --regions {}", args.regions.join(","));
    }
    let port = |offset: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(args.base_port) + offset)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow!("--base-port {} is too high for {} regions", args.base_port, args.regions.len()))
    };
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut regions = Vec::new();
    for (r, code) in args.regions.iter().enumerate() {
        let mut nodes = Vec::new();
        for n in 1..=args.nodes_per_region {
            let grpc = 10 * r + usize::try_from(n - 1).unwrap_or(0);
            nodes.push(NodeSpec {
                id: n,
                addr: loopback(port(grpc)?).to_string(),
                peer_addr: loopback(port(grpc + usize::from(PEER_PORT_OFFSET))?).to_string(),
                link_addr: Some(loopback(port(grpc + usize::from(LINK_PORT_OFFSET))?).to_string()),
                zone: format!("{code}-{n}"),
                place: None,
            });
        }
        let strict = args.strict.contains(code);
        regions.push(RegionSpec {
            code: code.clone(),
            residency: if strict { Residency::Strict } else { Residency::Open },
            shards: args.shards,
            archive: vec![code.clone()],
            dr: vec![format!("{code}/backup")],
            nodes,
            standby: vec![],
        });
    }
    let file = RegionsFile { app: AuthConfig::default().app_id, regions };
    file.check().context("the generated topology")?;
    let text = format!(
        "# Written by `meridian dev --regions` and reused on every start. Keys: docs/config.md.\n\n{}",
        toml::to_string(&file).context("serialize the topology")?
    );
    write_private(&topology_path, &text)?;
    let (auth, cluster, link) = (random_secret(), random_secret(), random_secret());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_node = threads.div_ceil(file.regions.iter().map(|r| r.nodes.len()).sum::<usize>().max(1)).max(1);
    let mut specs = Vec::new();
    for region in &file.regions {
        for node in &region.nodes {
            let addr = |s: &str| s.parse::<SocketAddr>().map_err(|e| anyhow!("{s}: {e}"));
            let http =
                addr(&node.addr)?.port().checked_add(HTTP_PORT_OFFSET).ok_or_else(|| anyhow!("port overflow"))?;
            let name = node_name(&region.code, node.id);
            let config = NodeConfig {
                node_id: node.id,
                region: region.code.clone(),
                listen: addr(&node.addr)?,
                peer_listen: Some(addr(&node.peer_addr)?),
                link_listen: node.link_addr.as_deref().map(addr).transpose()?,
                http_listen: Some(SocketAddr::from(([127, 0, 0, 1], http))),
                data_dir: dir.join(&name),
                shards: region.shards,
                topology: Some(TOPOLOGY.into()),
                auth: AuthConfig { secret: auth.clone(), ..AuthConfig::default() },
                cluster: ClusterConfig { secret: cluster.clone(), ..ClusterConfig::default() },
                link: LinkConfig { secret: link.clone() },
                limits: LimitsConfig::default(),
                raft: RaftTuning::default(),
                worker_threads: Some(per_node),
                ..NodeConfig::default()
            };
            let spec = DevSpec::new(dir, name, config);
            super::write_config(&spec.config_path, &spec.config)?;
            specs.push(spec);
        }
    }
    // Read back as a node will: the topology file is checked against every config.
    specs.into_iter().map(|s| load(dir, s.name)).collect()
}

fn load(dir: &Path, name: String) -> anyhow::Result<DevSpec> {
    let path = dir.join(format!("{name}.toml"));
    let config = NodeConfig::load(&path)
        .with_context(|| format!("reuse {}: fix it, or delete {} to start afresh", path.display(), dir.display()))?;
    Ok(DevSpec::new(dir, name, config))
}

fn reuse(dir: &Path, topology_path: &Path, args: &DevArgs) -> anyhow::Result<Vec<DevSpec>> {
    let text = std::fs::read_to_string(topology_path).with_context(|| format!("read {}", topology_path.display()))?;
    let file = RegionsFile::from_toml(&text).with_context(|| format!("reuse {}", topology_path.display()))?;
    let codes: Vec<&str> = file.regions.iter().map(|r| r.code.as_str()).collect();
    if codes != args.regions.iter().map(String::as_str).collect::<Vec<_>>() {
        tracing::warn!(
            dir = %dir.display(),
            regions = %codes.join(","),
            "reusing the existing topology; --regions, --strict and --nodes-per-region apply only to a new directory"
        );
    }
    info!(topology = %topology_path.display(), "reusing the dev topology");
    let mut specs = Vec::new();
    for region in &file.regions {
        for node in &region.nodes {
            specs.push(load(dir, node_name(&region.code, node.id))?);
        }
    }
    Ok(specs)
}

/// What `meridian dev` prints once every region is up, and `dev.env`: `MERIDIAN_ENDPOINT`
/// (the first node of each region) and `MERIDIAN_ENDPOINT_<REGION>` (all of that region's).
pub(super) fn announce(specs: &[DevSpec], token: &str) -> (String, String) {
    let mut regions: Vec<(String, Vec<String>, bool)> = Vec::new();
    for spec in specs {
        let strict = spec
            .config
            .regions
            .as_ref()
            .and_then(|f| f.region(&spec.config.region))
            .is_some_and(|r| r.residency == Residency::Strict);
        match regions.iter_mut().find(|(code, _, _)| *code == spec.config.region) {
            Some((_, addrs, _)) => addrs.push(spec.config.advertise_addr()),
            None => regions.push((spec.config.region.clone(), vec![spec.config.advertise_addr()], strict)),
        }
    }
    let firsts: Vec<&str> = regions.iter().filter_map(|(_, addrs, _)| addrs.first().map(String::as_str)).collect();
    let mut env = format!("export MERIDIAN_ENDPOINT={}\n", firsts.join(","));
    for (code, addrs, _) in &regions {
        let var = code.to_ascii_uppercase().replace('-', "_");
        env.push_str(&format!("export MERIDIAN_ENDPOINT_{var}={}\n", addrs.join(",")));
    }
    env.push_str(&format!("export MERIDIAN_ADMIN_TOKEN={token}\n"));
    let list: Vec<String> = regions
        .iter()
        .map(|(code, addrs, strict)| {
            format!(
                "{code} ({}, {} node{})",
                if *strict { "strict" } else { "open" },
                addrs.len(),
                if addrs.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    (format!("regions are up: {}", list.join(", ")), env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_regions_get_a_valid_topology_and_linked_configs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = DevArgs {
            dir: tmp.path().to_path_buf(),
            base_port: 17001,
            shards: 4,
            no_restart: false,
            regions: ["sg", "kr", "de", "in"].map(String::from).to_vec(),
            strict: ["de", "in"].map(String::from).to_vec(),
            nodes_per_region: 1,
            archive_hot_window: None,
        };
        let specs = prepare(tmp.path(), &args).expect("specs");
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sg-node-1", "kr-node-1", "de-node-1", "in-node-1"]);
        let de = &specs[2].config;
        assert_eq!((de.listen.port(), de.peer_listen.map(|a| a.port())), (17021, Some(17121)));
        assert_eq!(de.link_listen.map(|a| a.port()), Some(17221));
        let file = de.regions.as_ref().expect("topology loaded");
        assert_eq!(file.region("de").map(|r| r.residency), Some(Residency::Strict));
        assert_eq!(file.region("sg").map(|r| r.residency), Some(Residency::Open));
        assert!(specs.iter().all(|s| s.config.link.secret == de.link.secret && s.config.shards == 4));
        let (what, env) = announce(&specs, "tok");
        assert!(what.contains("de (strict, 1 node)"), "{what}");
        assert!(
            env.contains("MERIDIAN_ENDPOINT=127.0.0.1:17001,127.0.0.1:17011,127.0.0.1:17021,127.0.0.1:17031"),
            "{env}"
        );
        assert!(env.contains("MERIDIAN_ENDPOINT_IN=127.0.0.1:17031"), "{env}");
        // A second run reuses everything.
        assert_eq!(prepare(tmp.path(), &args).expect("reuse"), specs);
        let bad = DevArgs { strict: vec!["fr".into()], ..args.clone() };
        let other = tempfile::tempdir().expect("tempdir");
        assert!(prepare(other.path(), &DevArgs { dir: other.path().to_path_buf(), ..bad }).is_err());
    }
}
