//! A region of real `meridian node` processes on one machine, and the levers faults pull.
//!
//! Two network layouts, each giving every node an address of its own so that the kernel
//! firewall can cut the link between any two nodes:
//! - **namespaces** (root, with `ip netns`): each node runs in its own network namespace,
//!   joined to a bridge by a veth pair, at `10.213.{subnet}.{id}`;
//! - **loopback** (the fallback): each node listens on `127.0.0.{10 + id}` and binds its
//!   outgoing peer connections to it.
//!
//! Peers reach a node's peer listener through an in-process fault proxy (its advertised peer
//! address: on the bridge, or beside the node on loopback); clients reach its client
//! listener directly. One node may keep its data on a small tmpfs so that its disk can be filled.
//! Everything the cluster made — processes, mounts, firewall table, directories — is undone
//! when it is dropped, including after a panic.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meridian_client::{Client, ClientConfig};

use crate::firewall::Firewall;
use crate::proxy::Proxy;

/// Where libfaketime lives on Debian; used for the clock-skew fault.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub shards: u32,
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// This run's working directory (configs, data, logs, history).
    pub dir: PathBuf,
    /// Client gRPC port on every node's address; the proxy listens on `+1`, HTTP on `+2`,
    /// the peer listener on `+3`.
    pub base_port: u16,
    /// Put this node's data directory on a tmpfs of `tmpfs_mb` MiB (root only).
    pub disk_node: Option<usize>,
    pub tmpfs_mb: u64,
    /// Snapshot after this many entries (small values exercise snapshot installs).
    pub snapshot_logs_since_last: u64,
    /// Run each node in its own network namespace (root only).
    pub netns: bool,
    /// The cold archive's hot window in seconds, archiving to `dir/archive` (`None`: off).
    pub archive_hot_window: Option<u64>,
}

/// The network layout in use.
#[derive(Debug, Clone)]
pub enum Net {
    Loopback,
    Namespaces { tag: String, bridge: String, bridge_ip: Ipv4Addr, subnet: u8 },
}

#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub id: u64,
    pub ip: Ipv4Addr,
    pub client_addr: String,
    pub peer_addr: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The node's network namespace, in the namespaces layout.
    pub netns: Option<String>,
    /// The port of the node's fault proxy (what peers connect to).
    pub proxy_port: u16,
    child: Option<Child>,
    pub paused: bool,
    /// libfaketime offset (e.g. `+90s`) the node runs with, if any.
    pub skew: Option<String>,
    tmpfs: bool,
    proxy: Proxy,
}

#[derive(Debug)]
pub struct ChaosCluster {
    pub options: ClusterOptions,
    pub nodes: Vec<Node>,
    pub admin_token: String,
    pub firewall: Option<Firewall>,
    pub net: Net,
    teardown: Option<Teardown>,
}

/// What the cluster made in the system (namespaces, bridge, mounts), undone on drop.
#[derive(Debug)]
struct Teardown {
    net: Net,
    namespaces: Vec<String>,
    mounts: Vec<PathBuf>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = run("umount", &["-l", &m.to_string_lossy()]);
        }
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        if let Net::Namespaces { bridge, .. } = &self.net {
            let _ = run("ip", &["link", "del", bridge]);
        }
    }
}

fn node_ip(net: &Net, id: u64) -> Ipv4Addr {
    let id = u8::try_from(id).unwrap_or(200);
    match net {
        Net::Loopback => Ipv4Addr::new(127, 0, 0, 10 + id),
        Net::Namespaces { subnet, .. } => Ipv4Addr::new(10, 213, *subnet, id),
    }
}

/// Whether network namespaces can be made here (root, and `ip netns` works).
pub fn netns_available() -> bool {
    if !is_root() {
        return false;
    }
    let probe = format!("mcprobe{}", std::process::id() % 100_000);
    let ok = run("ip", &["netns", "add", &probe]).is_ok();
    let _ = run("ip", &["netns", "del", &probe]);
    ok
}

/// Makes the bridge (in this namespace) that every node's namespace joins.
fn make_bridge(net: &Net) -> anyhow::Result<()> {
    if let Net::Namespaces { bridge, bridge_ip, .. } = net {
        run("ip", &["link", "add", bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{bridge_ip}/24"), "dev", bridge])?;
        run("ip", &["link", "set", bridge, "up"])?;
    }
    Ok(())
}

/// Makes a node's namespace and joins it to the bridge with a veth pair.
fn make_namespace(net: &Net, id: u64, ip: Ipv4Addr) -> anyhow::Result<Option<String>> {
    let Net::Namespaces { tag, bridge, .. } = net else { return Ok(None) };
    let ns = format!("mc{tag}n{id}");
    let host_end = format!("mcv{tag}n{id}");
    run("ip", &["netns", "add", &ns])?;
    run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    run("ip", &["link", "set", &host_end, "master", bridge])?;
    run("ip", &["link", "set", &host_end, "up"])?;
    run("ip", &["netns", "exec", &ns, "ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    run("ip", &["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])?;
    run("ip", &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
    Ok(Some(ns))
}

/// Runs a command and fails with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    run("id", &["-u"]).map(|o| o.trim() == "0").unwrap_or(false)
}

impl ChaosCluster {
    /// Writes configs, starts proxies and nodes, and waits until every shard has a leader.
    pub async fn start(options: ClusterOptions, firewall: Option<Firewall>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir)?;
        let net = if options.netns {
            let tag = format!("{}", std::process::id() % 10_000);
            let subnet = u8::try_from(20 + std::process::id() % 200).unwrap_or(20);
            Net::Namespaces { bridge: format!("mcb{tag}"), tag, bridge_ip: Ipv4Addr::new(10, 213, subnet, 254), subnet }
        } else {
            Net::Loopback
        };
        // From here on, `Teardown` undoes what is made even if a later step fails.
        let mut teardown = Teardown { net: net.clone(), namespaces: vec![], mounts: vec![] };
        make_bridge(&net)?;
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let cluster_secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let mut nodes = Vec::new();
        for index in 0..options.nodes {
            let id = index as u64 + 1;
            let ip = node_ip(&net, id);
            let data_dir = options.dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let tmpfs = options.disk_node == Some(index);
            if tmpfs {
                let size = format!("size={}m", options.tmpfs_mb);
                run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &data_dir.to_string_lossy()])
                    .context("mount the tmpfs for the disk-full fault")?;
                teardown.mounts.push(data_dir.clone());
            }
            let netns = make_namespace(&net, id, ip)?;
            teardown.namespaces.extend(netns.clone());
            let client_addr = format!("{ip}:{}", options.base_port);
            let (proxy_ip, proxy_port) = match &net {
                Net::Loopback => (ip, options.base_port + 1),
                Net::Namespaces { bridge_ip, .. } => {
                    (*bridge_ip, options.base_port + 10 + u16::from(u8::try_from(id).unwrap_or(0)))
                }
            };
            let peer_addr = format!("{proxy_ip}:{proxy_port}");
            let peer_listen = format!("{ip}:{}", options.base_port + 3);
            let proxy = Proxy::start(peer_addr.parse()?, peer_listen.parse()?).await?;
            nodes.push(Node {
                index,
                id,
                ip,
                client_addr,
                peer_addr,
                config_path: options.dir.join(format!("node-{id}.toml")),
                data_dir,
                log_path: options.dir.join(format!("node-{id}.log")),
                netns,
                proxy_port,
                child: None,
                paused: false,
                skew: None,
                tmpfs,
                proxy,
            });
        }
        for n in &nodes {
            std::fs::write(&n.config_path, config_toml(&options, &net, n, &nodes, (&secret, &cluster_secret)))?;
        }
        let token = run(
            &options.binary.to_string_lossy(),
            &["admin-token", "--config", &nodes[0].config_path.to_string_lossy()],
        )?;
        let mut cluster =
            Self { options, nodes, admin_token: token.trim().to_owned(), firewall, net, teardown: Some(teardown) };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_for_leaders(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let binary = self.options.binary.clone();
        let n = &mut self.nodes[i];
        let log = File::options().create(true).append(true).open(&n.log_path)?;
        let mut cmd = match &n.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs in place: the child's pid is the node's.
                c.args(["netns", "exec", ns]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        cmd.args(["node", "--config"]).arg(&n.config_path).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        cmd.env("RUST_LOG", "info,openraft=warn");
        if let Some(skew) = &n.skew {
            cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", skew).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        n.child = Some(cmd.spawn().with_context(|| format!("start node {}", n.id))?);
        n.paused = false;
        Ok(())
    }

    /// An admin client over every node's client address.
    pub fn admin(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(self.nodes.iter().map(|n| n.client_addr.clone()), self.admin_token.clone());
        config.request_timeout = Duration::from_secs(3);
        config.retry_budget = Duration::from_secs(8);
        Ok(Client::with_config(config)?)
    }

    /// A device's client acting as `user`: every node, node `first` tried first, with a
    /// retry budget that outlasts a fault (its stream resubscribes within it).
    pub fn device_client(&self, first: usize, user: &str) -> anyhow::Result<Client> {
        let mut endpoints: Vec<String> = self.nodes.iter().map(|n| n.client_addr.clone()).collect();
        let n = endpoints.len().max(1);
        endpoints.rotate_left(first % n);
        let mut config = ClientConfig::new(endpoints, self.admin_token.clone()).with_act_as(user);
        config.request_timeout = Duration::from_secs(3);
        config.retry_budget = Duration::from_secs(30);
        Ok(Client::with_config(config)?)
    }

    /// An admin client that talks to node `i` only, without retries.
    pub fn admin_at(&self, i: usize) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new([self.nodes[i].client_addr.clone()], self.admin_token.clone());
        config.request_timeout = Duration::from_secs(5);
        config.retry_budget = Duration::ZERO;
        Ok(Client::with_config(config)?)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self.pid(i).context("node is not running")?;
        run("kill", &[sig, &pid.to_string()]).map(|_| ())
    }

    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].paused {
            self.signal(i, "-CONT")?;
        }
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        self.nodes[i].paused = false;
        Ok(())
    }

    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            self.kill9(i)?;
        }
        self.spawn(i)
    }

    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")?;
        self.nodes[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].paused {
            self.signal(i, "-CONT")?;
            self.nodes[i].paused = false;
        }
        Ok(())
    }

    pub fn proxy(&self, i: usize) -> &Proxy {
        &self.nodes[i].proxy
    }

    /// Fills the node's tmpfs until the disk is full. Returns the filler file.
    pub fn fill_disk(&self, i: usize) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let n = &self.nodes[i];
        if !n.tmpfs {
            bail!("node {} has no tmpfs data directory", n.id);
        }
        let filler = n.data_dir.join("chaos-filler");
        let mut f = File::create(&filler)?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let _ = f.sync_all();
        Ok(filler)
    }

    pub fn free_disk(&self, i: usize) -> anyhow::Result<()> {
        let filler = self.nodes[i].data_dir.join("chaos-filler");
        match std::fs::remove_file(filler) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until every running, unpaused node sees a leader for every shard.
    pub async fn wait_for_leaders(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let mut all = true;
            for i in 0..self.nodes.len() {
                if !self.is_running(i) || self.nodes[i].paused {
                    continue;
                }
                let ok = match self.admin_at(i)?.cluster_status(false).await {
                    Ok(s) => s.shards.len() == self.options.shards as usize && s.shards.iter().all(|s| s.leader != 0),
                    Err(_) => false,
                };
                all &= ok;
            }
            if all {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!("not every shard had a leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node index leading `shard`, as the first node that answers reports it.
    pub async fn leader_of(&mut self, shard: u32) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.is_running(i) || self.nodes[i].paused {
                continue;
            }
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), async {
                self.admin_at(i)?.cluster_status(false).await.map_err(anyhow::Error::from)
            })
            .await
            {
                if let Some(sh) = s.shards.iter().find(|x| x.shard == shard) {
                    if sh.leader != 0 {
                        return self.nodes.iter().position(|n| n.id == sh.leader);
                    }
                }
            }
        }
        None
    }

    /// The last lines of a node's log, for diagnostics.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill9(i);
        }
        // Unmount, delete namespaces and the bridge; the firewall table goes with its own Drop.
        self.teardown.take();
    }
}

impl ChaosCluster {
    /// Drops every packet node `from` sends to node `to` (kernel firewall).
    pub fn cut_link(&self, fw: &Firewall, from: usize, to: usize) -> anyhow::Result<()> {
        let (f, t) = (&self.nodes[from], &self.nodes[to]);
        match &self.net {
            Net::Loopback => fw.drop_matching("cut_out", &format!("ip saddr {} ip daddr {}", f.ip, t.ip)),
            // Peer traffic reaches `to` through its proxy on the bridge address.
            Net::Namespaces { .. } => {
                fw.drop_matching("cut_in", &format!("ip saddr {} tcp dport {}", f.ip, t.proxy_port))
            }
        }
    }

    /// Undoes every link cut and proxy fault.
    pub fn heal_links(&self) -> anyhow::Result<()> {
        if let Some(fw) = &self.firewall {
            fw.heal()?;
        }
        for i in 0..self.nodes.len() {
            self.proxy(i).heal();
        }
        Ok(())
    }

    pub fn network_name(&self) -> &'static str {
        match (&self.net, self.firewall.is_some()) {
            (Net::Namespaces { .. }, true) => "network namespaces on a bridge, links cut by nftables",
            (Net::Namespaces { .. }, false) => "network namespaces on a bridge, links cut by the fault proxy",
            (Net::Loopback, true) => "loopback addresses, links cut by nftables",
            (Net::Loopback, false) => "loopback behind the fault proxy",
        }
    }
}

fn config_toml(o: &ClusterOptions, net: &Net, n: &Node, all: &[Node], secrets: (&str, &str)) -> String {
    let (secret, cluster_secret) = secrets;
    let peers: String = all
        .iter()
        .map(|p| format!("\n[[peers]]\nid = {}\naddr = \"{}\"\npeer-addr = \"{}\"\n", p.id, p.client_addr, p.peer_addr))
        .collect();
    // On loopback every node shares the host's addresses: bind outgoing peer connections to
    // the node's own so the firewall can tell nodes apart. A namespace has only its own.
    let source = match net {
        Net::Loopback => format!("peer-source-ip = \"{}\"\n", n.ip),
        Net::Namespaces { .. } => String::new(),
    };
    format!(
        r#"node-id = {id}
region = "chaos"
listen = "{client}"
peer-listen = "{ip}:{peer_port}"
peer-advertise = "{peer}"
http-listen = "{ip}:{http}"
{source}data-dir = "{data}"
shards = {shards}
bootstrap = true
{peers}
[auth]
secret = "{secret}"

[cluster]
secret = "{cluster_secret}"

[raft]
heartbeat-interval-ms = 100
election-timeout-min-ms = 500
election-timeout-max-ms = 1000
snapshot-logs-since-last = {snap}
# Also 10 % of the last snapshot's size in commands since it: the nodes' own trigger
# (production's default is 50 %), often enough for faults to land on builds and installs.
snapshot-log-size-percent = 10
max-in-snapshot-log-to-keep = 50

[limits]
# Request-id records expire (logic version 4) while faults land, in any campaign longer than
# ten minutes. The window must outlast the clock skew the faults inject (a leader whose clock
# runs 300 s ahead stamps a cutoff 300 s later) plus the SDK's 15 s of retries: then a
# campaign that finds a duplicated send has found a bug.
request-id-window-seconds = 600
{archive}"#,
        id = n.id,
        client = n.client_addr,
        peer = n.peer_addr,
        ip = n.ip,
        http = o.base_port + 2,
        peer_port = o.base_port + 3,
        data = n.data_dir.display(),
        shards = o.shards,
        snap = o.snapshot_logs_since_last,
        archive = match o.archive_hot_window {
            // Small segments, sealed often: faults land on every step of sealing.
            Some(window) => format!(
                "recall-window-seconds = {window}\n\n[archive]\nhot-window-seconds = {window}\npath = \"{}\"\nseal-interval-ms = 500\nsegment-max-events = 400\ntimeout-ms = 2000\n",
                o.dir.join("archive").display()
            ),
            None => String::new(),
        },
    )
}

/// A socket address on a node's loopback IP (for tests).
pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}
