//! `meridian dev`: a 3-node region on loopback, as three child processes of this one (or,
//! with `--regions`, several regions: [`regions`]).
//!
//! The first run writes one config per node into the dev directory (with fresh random token
//! and cluster secrets); later runs reuse those configs, so the data in `DIR/node-N/` survives restarts.
//! Once every node sees a leader for every shard, the endpoints and an admin token are
//! written to `DIR/dev.env` (shell-sourceable) and printed. The cluster runs until Ctrl-C or
//! SIGTERM. It behaves like a region, not like one process: a node that dies once the region
//! is up (a crash, a `kill -9` to watch a failover) is reported — which, how, the end of its
//! log — while the others keep serving, and it is started again on its own data after a
//! short delay (longer each time it dies again soon after a start; `--no-restart` leaves it
//! down). A node that dies before the region is first up is an error. The children live in
//! their own process group, so a terminal's Ctrl-C reaches only this process, which then
//! stops them (SIGTERM, then SIGKILL after a grace period).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use meridian_proto::api::admin_client::AdminClient;
use meridian_proto::api::{ClusterStatusRequest, ClusterStatusResponse};
use rand::RngCore as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::auth::TokenSigner;
use crate::config::{AuthConfig, ClusterConfig, LimitsConfig, NodeConfig, PeerConfig, RaftTuning};

mod regions;

/// Nodes in the dev region.
const NODES: u64 = 3;
/// The dev region's code.
const REGION: &str = "dev";
/// Offset from a node's gRPC port to its HTTP port (7001 → 8001).
const HTTP_PORT_OFFSET: u16 = 1000;
/// Offset from a node's gRPC port to its peer listener's port (7001 → 7101).
const PEER_PORT_OFFSET: u16 = 100;
/// How long the cluster may take to elect a leader for every shard.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(250);
/// How often a still-waiting cluster logs its progress.
const READY_REPORT: Duration = Duration::from_secs(5);
/// How long nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a crashed node's log shown in the error.
const LOG_TAIL_LINES: usize = 30;
/// Pause before a dead node is started again; doubled (up to [`RESTART_DELAY_MAX`]) each
/// time it dies within [`STABLE_RUN`] of its start.
const RESTART_DELAY: Duration = Duration::from_secs(2);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
const STABLE_RUN: Duration = Duration::from_secs(30);

/// Arguments of `meridian dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Directory for the cluster's configs, data, logs, pid files and dev.env.
    #[arg(long, default_value = ".meridian-dev")]
    pub dir: PathBuf,
    /// Client gRPC port of node 1; node N listens on base-port + N - 1, serves its peers on
    /// base-port + 100 + N - 1 and HTTP on base-port + 1000 + N - 1. Used when the configs
    /// are first written.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Shards of the region (a power of two). Used when the configs are first written. One
    /// by default: on one machine, where the three nodes share its cores, one shard's fuller
    /// batches beat spreading the work (docs/BENCHMARKS.md, "Shards per region").
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Leave a node that dies down instead of starting it again.
    #[arg(long)]
    pub no_restart: bool,
    /// Start one region per code (e.g. `sg,kr,de,in`), each its own Raft cluster, linked by
    /// region links over a generated `regions.toml`. Unset: the single 3-node region `dev`.
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Regions (of `--regions`) whose residency is strict; the others are open.
    #[arg(long, value_delimiter = ',')]
    pub strict: Vec<String>,
    /// Nodes per region with `--regions`: 1 (the default, which fits two cores) or 3.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: u64,
    /// Switch the cold archive on: events older than this (`90s`, `10m`, `2h`, or seconds)
    /// move to segment objects in `DIR/archive` (shared by the nodes), sealed every tenth of
    /// the window (at least 1 s, at most 10 s). The recall window is cut to it when longer.
    /// Applies to new and reused configs alike (they are rewritten).
    #[arg(long, value_parser = parse_window)]
    pub archive_hot_window: Option<u64>,
}

/// `90s`, `10m`, `2h`, `1d` or plain seconds, as seconds (at least 1).
fn parse_window(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 90s, 10m or 2h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    let seconds = n.saturating_mul(scale);
    if seconds == 0 {
        return Err("the hot window must be at least 1 s".into());
    }
    Ok(seconds)
}

/// Turns the archive on in a dev node's config (see `--archive-hot-window`).
pub fn apply_dev_archive(config: &mut NodeConfig, dir: &Path, hot_window_seconds: u64) {
    config.archive.hot_window_seconds = hot_window_seconds;
    config.archive.path = Some(dir.join("archive"));
    config.archive.seal_interval_ms = (hot_window_seconds * 100).clamp(1000, 10_000);
    // On this machine: in the region's own jurisdiction (the dev topology lists it).
    config.archive.place = Some(config.region.clone());
    config.limits.recall_window_seconds = config.limits.recall_window_seconds.min(hot_window_seconds);
}

/// One node of the dev deployment: its name (`node-2`, `sg-node-1`), files and config.
#[derive(Debug, Clone, PartialEq)]
struct DevSpec {
    name: String,
    config_path: PathBuf,
    pid_path: PathBuf,
    config: NodeConfig,
}

impl DevSpec {
    fn new(dir: &Path, name: String, config: NodeConfig) -> Self {
        Self { config_path: dir.join(format!("{name}.toml")), pid_path: dir.join(format!("{name}.pid")), name, config }
    }
}

/// Runs a local 3-node region until Ctrl-C (Ok), restarting nodes that die once it is up;
/// an error when the region cannot come up.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Installed before any child exists, so that no signal can orphan one.
    let mut signals = ShutdownSignals::install()?;

    std::fs::create_dir_all(&args.dir).with_context(|| format!("create dev directory {}", args.dir.display()))?;
    let dir =
        std::path::absolute(&args.dir).with_context(|| format!("resolve dev directory {}", args.dir.display()))?;
    let specs = if args.regions.is_empty() {
        let configs = prepare_configs(&dir, &args)?;
        configs.into_iter().map(|c| DevSpec::new(&dir, format!("node-{}", c.node_id), c)).collect()
    } else {
        regions::prepare(&dir, &args)?
    };
    refuse_if_running(&dir, &specs)?;
    check_ports_free(&specs)?;

    let mut cluster = Cluster::start(&dir, &specs, !args.no_restart).await?;
    let outcome = cluster.serve(&dir, &specs, &mut signals).await;
    cluster.stop().await;
    outcome
}

fn config_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("node-{n}.toml"))
}

/// Loads the configs already in `dir` and writes the missing ones.
fn prepare_configs(dir: &Path, args: &DevArgs) -> anyhow::Result<Vec<NodeConfig>> {
    let mut existing = Vec::new();
    for n in 1..=NODES {
        let path = config_path(dir, n);
        existing.push(if path.exists() {
            let config = NodeConfig::load(&path).with_context(|| {
                format!("reuse {}: fix it, or delete {} to start afresh", path.display(), dir.display())
            })?;
            Some(config)
        } else {
            None
        });
    }

    let reused = existing.iter().flatten().next().cloned();
    if let Some(first) = &reused {
        let wanted_port = args.base_port;
        if first.shards != args.shards || first.listen.port() != wanted_port {
            warn!(
                dir = %dir.display(),
                shards = first.shards,
                "reusing the existing configs; --base-port and --shards apply only to a new \
                 directory (delete it, or pass another --dir)"
            );
        }
    }
    let (secret, cluster_secret) = match &reused {
        Some(c) => (c.auth.secret.clone(), c.cluster.secret.clone()),
        None => (random_secret(), random_secret()),
    };
    let shards = reused.as_ref().map_or(args.shards, |c| c.shards);

    let mut configs = Vec::new();
    for (n, config) in (1..=NODES).zip(existing) {
        let config = match config {
            Some(c) => {
                info!(config = %config_path(dir, n).display(), "reusing node-{n} config");
                c
            }
            None => {
                let c = node_config(dir, n, args.base_port, shards, &secret, &cluster_secret)?;
                write_config(&config_path(dir, n), &c)?;
                c
            }
        };
        configs.push(config);
    }
    if let Some(window) = args.archive_hot_window {
        for config in &mut configs {
            apply_dev_archive(config, dir, window);
            write_config(&config_path(dir, config.node_id), config)?;
        }
    }
    check_consistent(dir, &configs)?;
    Ok(configs)
}

/// The config of dev node `n` (1-based).
fn node_config(
    dir: &Path,
    n: u64,
    base_port: u16,
    shards: u32,
    secret: &str,
    cluster_secret: &str,
) -> anyhow::Result<NodeConfig> {
    let port = |offset: u64| -> anyhow::Result<u16> {
        u16::try_from(u64::from(base_port) + offset)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow!("--base-port {base_port} is too high: ports up to base-port + 1002 must exist"))
    };
    let grpc = |i: u64| port(i - 1);
    let peer_port = |i: u64| port(u64::from(PEER_PORT_OFFSET) + i - 1);
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let peers = (1..=NODES)
        .map(|i| {
            Ok(PeerConfig {
                id: i,
                addr: loopback(grpc(i)?).to_string(),
                peer_addr: loopback(peer_port(i)?).to_string(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = NodeConfig {
        node_id: n,
        region: REGION.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], grpc(n)?)),
        advertise: None,
        peer_listen: Some(loopback(peer_port(n)?)),
        peer_advertise: None,
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], port(u64::from(HTTP_PORT_OFFSET) + n - 1)?))),
        peer_source_ip: None,
        data_dir: dir.join(format!("node-{n}")),
        shards,
        peers,
        bootstrap: true,
        auth: AuthConfig { secret: secret.to_owned(), ..AuthConfig::default() },
        cluster: ClusterConfig { secret: cluster_secret.to_owned(), ..ClusterConfig::default() },
        tls: None,
        peer_tls: None,
        limits: LimitsConfig::default(),
        raft: RaftTuning::default(),
        topology: None,
        regions: None,
        link_listen: None,
        link: crate::config::LinkConfig::default(),
        link_tls: None,
        // Three nodes share this machine: a third of its cores each, so that they do not
        // all run a full-size runtime against each other.
        worker_threads: Some(
            std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(NODES as usize).max(1),
        ),
        callbacks: Default::default(),
        push: Default::default(),
        archive: Default::default(),
    };
    config.validate().with_context(|| format!("generate the config of node-{n}"))?;
    Ok(config)
}

/// 32 random bytes, hex-encoded.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn write_config(path: &Path, config: &NodeConfig) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `meridian dev` and reused on every start (data survives restarts).\n\
         # Edit freely; delete the directory to start afresh. Keys: docs/config.md.\n\n{}",
        config.to_toml()?
    );
    write_private(path, &text)?;
    info!(config = %path.display(), "wrote node-{} config", config.node_id);
    Ok(())
}

/// Writes a file only its owner can read: configs hold the secret, dev.env an admin token.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// The three configs must describe one region.
fn check_consistent(dir: &Path, configs: &[NodeConfig]) -> anyhow::Result<()> {
    let first = configs.first().ok_or_else(|| anyhow!("no node configs"))?;
    for c in configs {
        let disagree = if c.region != first.region {
            Some("region")
        } else if c.shards != first.shards {
            Some("shards")
        } else if c.peers != first.peers {
            Some("peers")
        } else if c.auth != first.auth {
            Some("[auth]")
        } else if c.cluster != first.cluster {
            Some("[cluster]")
        } else {
            None
        };
        if let Some(key) = disagree {
            bail!(
                "the configs in {} disagree on `{key}` (node-{} vs node-{}): make them equal, or \
                 delete the directory to start afresh",
                dir.display(),
                first.node_id,
                c.node_id
            );
        }
    }
    Ok(())
}

/// Fails if a node of an earlier `meridian dev` on this directory still runs (e.g. after
/// the parent was killed with SIGKILL); clears stale pid files.
fn refuse_if_running(dir: &Path, specs: &[DevSpec]) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for spec in specs {
        let Ok(text) = std::fs::read_to_string(&spec.pid_path) else {
            continue;
        };
        let config = &spec.config_path;
        let alive = text.trim().parse::<u32>().ok().filter(|pid| {
            // Only a process running this node's config counts; a recycled pid does not.
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy()))
        });
        match alive {
            Some(pid) => running.push((spec.name.clone(), pid)),
            None => {
                let _ = std::fs::remove_file(&spec.pid_path);
            }
        }
    }
    if !running.is_empty() {
        let which: Vec<String> = running.iter().map(|(name, pid)| format!("{name} pid {pid}")).collect();
        let pids: Vec<String> = running.iter().map(|(_, pid)| pid.to_string()).collect();
        bail!(
            "nodes of an earlier `meridian dev` on {} are still running ({}): stop them with \
             `kill {}` and retry",
            dir.display(),
            which.join(", "),
            pids.join(" ")
        );
    }
    Ok(())
}

/// Names the first port that is taken, before any node fails on it.
fn check_ports_free(specs: &[DevSpec]) -> anyhow::Result<()> {
    for spec in specs {
        let c = &spec.config;
        let addrs = std::iter::once(("gRPC", c.listen))
            .chain(c.peer_listen.map(|a| ("peer", a)))
            .chain(c.link_listen.map(|a| ("region link", a)))
            .chain(c.http_listen.map(|a| ("HTTP", a)));
        for (what, addr) in addrs {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                bail!(
                    "{addr} ({} {what}) is not available ({e}): stop whatever holds it, or \
                     use another --dir with another --base-port",
                    spec.name
                );
            }
        }
    }
    Ok(())
}

/// The signals that stop the cluster: Ctrl-C, and SIGTERM on unix.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
                terminate: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for a stop signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// One child node: running, or down between a death and its restart.
struct DevNode {
    name: String,
    config_path: PathBuf,
    /// `None` while the node is down.
    child: Option<Child>,
    log_path: PathBuf,
    pid_path: PathBuf,
    started: Instant,
    /// The pause before the next restart.
    restart_delay: Duration,
}

impl DevNode {
    /// Starts `meridian node` on the node's config; its output goes to (the end of) its log.
    fn spawn(&mut self, exe: &Path) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        let log_err = log.try_clone().with_context(|| format!("reopen {}", self.log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        // Our own process group: a terminal's Ctrl-C reaches only us, and we stop the nodes.
        #[cfg(unix)]
        command.process_group(0);
        let child = command.spawn().with_context(|| format!("start {}", self.name))?;
        let pid = child.id().ok_or_else(|| anyhow!("{} exited as soon as it started", self.name))?;
        std::fs::write(&self.pid_path, format!("{pid}\n"))
            .with_context(|| format!("write {}", self.pid_path.display()))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(pid)
    }
}

/// The children, and how to bring one back.
struct Cluster {
    nodes: Vec<DevNode>,
    exe: PathBuf,
    restart: bool,
}

/// What the supervisor waits for next.
enum Next {
    Exited(usize, std::io::Result<ExitStatus>),
    RestartDue(usize),
}

impl Cluster {
    /// Spawns one `meridian node` per config (fresh logs). Children already started are
    /// killed (on drop) if a later one fails to start.
    async fn start(dir: &Path, specs: &[DevSpec], restart: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locate the meridian binary")?;
        let mut nodes = Vec::new();
        for spec in specs {
            let log_path = dir.join(format!("{}.log", spec.name));
            std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
            let mut node = DevNode {
                name: spec.name.clone(),
                config_path: spec.config_path.clone(),
                child: None,
                log_path,
                pid_path: spec.pid_path.clone(),
                started: Instant::now(),
                restart_delay: RESTART_DELAY,
            };
            let pid = node.spawn(&exe)?;
            let addr = spec.config.advertise_addr();
            info!(pid, %addr, region = %spec.config.region, log = %node.log_path.display(), "started {}", node.name);
            nodes.push(node);
        }
        Ok(Self { nodes, exe, restart })
    }

    /// Waits until the cluster is ready, announces it, and runs until a signal (Ok); a node
    /// exit before the region is ready is an error, one after it is reported and healed.
    async fn serve(&mut self, dir: &Path, specs: &[DevSpec], signals: &mut ShutdownSignals) -> anyhow::Result<()> {
        let first = &specs.first().ok_or_else(|| anyhow!("no node configs"))?.config;
        let signer = TokenSigner::from_config(&first.auth);
        let ttl = i64::try_from(first.auth.token_ttl_seconds).unwrap_or(i64::MAX);
        let token = signer.issue_admin("dev", chrono::Utc::now().timestamp().saturating_add(ttl));
        let endpoints: Vec<(String, String)> =
            specs.iter().map(|s| (s.name.clone(), s.config.advertise_addr())).collect();

        // Each node links to every other region of the topology (none for a single region).
        let other_regions = first.regions.as_ref().map_or(0, |file| file.regions.len().saturating_sub(1));
        let started = Instant::now();
        tokio::select! {
            biased;
            signal = signals.recv() => {
                info!("{signal}: stopping the cluster before it became ready");
                return Ok(());
            }
            exit = self.first_exit() => return Err(self.exit_error(exit)),
            ready = wait_ready(&endpoints, &token, first.shards, other_regions) => ready
                .with_context(|| format!("wait for the cluster (node logs: {}/node-N.log)", dir.display()))?,
        }
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            shards = first.shards,
            other_regions,
            "every node sees a leader for every shard and has its links to the other regions up"
        );

        let env_path = dir.join("dev.env");
        let (what, env) = if first.regions.is_some() {
            regions::announce(specs, &token)
        } else {
            let endpoint_list = endpoints.iter().map(|(_, addr)| addr.as_str()).collect::<Vec<_>>().join(",");
            (
                format!(
                    "region {REGION:?} is up: {NODES} nodes, {} shard{}",
                    first.shards,
                    if first.shards == 1 { "" } else { "s" }
                ),
                format!("export MERIDIAN_ENDPOINT={endpoint_list}\nexport MERIDIAN_ADMIN_TOKEN={token}\n"),
            )
        };
        write_private(&env_path, &env)?;
        println!("# Meridian dev {what}. Ctrl-C stops it.\n# In another shell: source {}\n{env}", env_path.display());

        // Restarts due, by node index: when each may start again.
        let mut due: Vec<Option<Instant>> = vec![None; self.nodes.len()];
        loop {
            let next = tokio::select! {
                biased;
                signal = signals.recv() => {
                    info!("{signal}: stopping the cluster");
                    return Ok(());
                }
                next = self.next_event(&due) => next,
            };
            match next {
                Next::Exited(index, status) => {
                    let report = self.death_report(index, status);
                    let node = &mut self.nodes[index];
                    node.child = None;
                    let _ = std::fs::remove_file(&node.pid_path);
                    if !self.restart {
                        warn!("{report}\nleaving {} down (--no-restart); the others keep serving", node.name);
                        continue;
                    }
                    if node.started.elapsed() >= STABLE_RUN {
                        node.restart_delay = RESTART_DELAY;
                    }
                    let delay = node.restart_delay;
                    node.restart_delay = (node.restart_delay * 2).min(RESTART_DELAY_MAX);
                    warn!("{report}\nthe others keep serving; starting {} again in {delay:?}", node.name);
                    due[index] = Some(Instant::now() + delay);
                }
                Next::RestartDue(index) => {
                    due[index] = None;
                    let exe = self.exe.clone();
                    let node = &mut self.nodes[index];
                    match node.spawn(&exe) {
                        Ok(pid) => info!(pid, "started {} again on its data", node.name),
                        Err(e) => {
                            warn!(error = %e, "could not start {} again; retrying", node.name);
                            due[index] = Some(Instant::now() + node.restart_delay);
                        }
                    }
                }
            }
        }
    }

    /// The first node to exit, or the first restart to come due.
    async fn next_event(&mut self, due: &[Option<Instant>]) -> Next {
        let restart = due.iter().enumerate().filter_map(|(i, at)| at.map(|at| (i, at))).min_by_key(|(_, at)| *at);
        let restart = async move {
            match restart {
                Some((index, at)) => {
                    tokio::time::sleep_until(at).await;
                    index
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (index, status) = self.first_exit() => Next::Exited(index, status),
            index = restart => Next::RestartDue(index),
        }
    }

    /// The index and status of the first running node to exit.
    async fn first_exit(&mut self) -> (usize, std::io::Result<ExitStatus>) {
        let waits: Vec<_> = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| n.child.as_mut().map(|c| Box::pin(async move { (i, c.wait().await) })))
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(waits).await.0
    }

    /// Which node died, how, and the end of its log.
    fn death_report(&self, index: usize, status: std::io::Result<ExitStatus>) -> String {
        let Some(node) = self.nodes.get(index) else {
            return "a node exited unexpectedly".to_owned();
        };
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown status: {e}"),
        };
        let tail = log_tail(&node.log_path, LOG_TAIL_LINES);
        format!("{} exited unexpectedly ({status}); the last lines of {}:\n{tail}", node.name, node.log_path.display())
    }

    fn exit_error(&self, (index, status): (usize, std::io::Result<ExitStatus>)) -> anyhow::Error {
        anyhow!(self.death_report(index, status))
    }

    /// Stops every node: SIGTERM, then SIGKILL for those still running after the grace period.
    async fn stop(&mut self) {
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else { continue };
            if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
                if !terminate(pid).await {
                    let _ = child.start_kill();
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            let _ = std::fs::remove_file(&node.pid_path);
            let Some(child) = node.child.as_mut() else { continue };
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => debug!(%status, "{} stopped", node.name),
                Ok(Err(e)) => warn!(error = %e, "could not wait for {}", node.name),
                Err(_) => {
                    warn!("{} did not stop within {STOP_GRACE:?}: killing it", node.name);
                    if let Err(e) = child.kill().await {
                        warn!(error = %e, "could not kill {}", node.name);
                    }
                }
            }
        }
        info!("dev cluster stopped");
    }
}

/// Asks a process to stop (SIGTERM) through `kill(1)`, which needs no unsafe code.
async fn terminate(pid: u32) -> bool {
    if !cfg!(unix) {
        return false;
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    matches!(status, Ok(s) if s.success())
}

/// The last `lines` lines of a log file before any final backtrace (which would crowd out
/// the error that matters), or why the file could not be read.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            // anyhow writes "Stack backtrace:", a panic "stack backtrace:".
            let end = text
                .rfind("\nStack backtrace:")
                .into_iter()
                .chain(text.rfind("\nstack backtrace:"))
                .max()
                .unwrap_or(text.len());
            let all: Vec<&str> = text[..end].lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

/// Polls `Admin/ClusterStatus` on every node until each sees a leader for all `shards` and
/// has its links to `other_regions` regions up: a cross-region call made right after the
/// announcement would otherwise meet `REGION_UNAVAILABLE` while a link is still being dialled.
async fn wait_ready(
    endpoints: &[(String, String)],
    token: &str,
    shards: u32,
    other_regions: usize,
) -> anyhow::Result<()> {
    let auth: MetadataValue<Ascii> = format!("Bearer {token}").try_into().context("put the admin token in metadata")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut next_report = Instant::now() + READY_REPORT;
    let mut clients: Vec<Option<AdminClient<Channel>>> = vec![None; endpoints.len()];
    loop {
        let mut ready = true;
        let mut progress = Vec::new();
        for ((name, addr), client) in endpoints.iter().zip(clients.iter_mut()) {
            match cluster_status(client, addr, &auth).await {
                Ok(status) => {
                    let led = status.shards.iter().filter(|s| s.leader != 0).count();
                    let all = status.shards.len() as u64 == u64::from(shards) && led == status.shards.len();
                    let up = status.region_links.iter().filter(|l| l.state == "up").count();
                    ready &= all && up == other_regions && status.region_links.len() == other_regions;
                    if other_regions == 0 {
                        progress.push(format!("{name}: {led}/{shards} shards led"));
                    } else {
                        progress
                            .push(format!("{name}: {led}/{shards} shards led, {up}/{other_regions} region links up"));
                    }
                }
                Err(StatusError::Fatal(e)) => {
                    return Err(e.context(format!("ask {name} ({addr}) for its cluster status")));
                }
                Err(StatusError::NotYet(why)) => {
                    *client = None;
                    ready = false;
                    progress.push(format!("{name}: {why}"));
                }
            }
        }
        if ready {
            return Ok(());
        }
        let progress = progress.join("; ");
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "not every shard had a leader (and every region link was up) on every node after {READY_TIMEOUT:?} ({progress})"
            );
        }
        if now >= next_report {
            info!(%progress, "waiting for shard leaders and region links");
            next_report = now + READY_REPORT;
        } else {
            debug!(%progress, "waiting for shard leaders and region links");
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Why a status poll failed: not up yet (retry) or something no retry will fix.
enum StatusError {
    NotYet(String),
    Fatal(anyhow::Error),
}

async fn cluster_status(
    client: &mut Option<AdminClient<Channel>>,
    addr: &str,
    auth: &MetadataValue<Ascii>,
) -> Result<ClusterStatusResponse, StatusError> {
    let client = match client {
        Some(c) => c,
        None => {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| StatusError::Fatal(anyhow!("bad node address {addr:?}: {e}")))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2));
            let channel =
                endpoint.connect().await.map_err(|e| StatusError::NotYet(format!("not reachable yet ({e})")))?;
            client.insert(AdminClient::new(channel))
        }
    };
    let mut request = tonic::Request::new(ClusterStatusRequest { include_state_hash: false });
    request.metadata_mut().insert("authorization", auth.clone());
    match client.cluster_status(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::Unimplemented => {
                Err(StatusError::Fatal(anyhow!(
                    "{:?}: {} (the admin token or the Admin service is broken; waiting will not help)",
                    status.code(),
                    status.message()
                )))
            }
            code => Err(StatusError::NotYet(format!("{code:?}: {}", status.message()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> DevArgs {
        DevArgs {
            dir: dir.to_path_buf(),
            base_port: 17001,
            shards: 4,
            no_restart: false,
            regions: vec![],
            strict: vec![],
            nodes_per_region: 1,
            archive_hot_window: None,
        }
    }

    #[test]
    fn archive_windows_parse_with_units_and_cut_the_recall_window() {
        assert_eq!(parse_window("10s"), Ok(10));
        assert_eq!(parse_window("90"), Ok(90));
        assert_eq!(parse_window("10m"), Ok(600));
        assert_eq!(parse_window("2h"), Ok(7200));
        for bad in ["", "0s", "s", "10x", "-1s", "1.5m"] {
            assert!(parse_window(bad).is_err(), "{bad:?} should be refused");
        }
        let dir = Path::new("/tmp/dev");
        let mut config = NodeConfig::default();
        apply_dev_archive(&mut config, dir, 10);
        assert_eq!(config.archive.hot_window_seconds, 10);
        assert_eq!(config.archive.path.as_deref(), Some(dir.join("archive").as_path()));
        assert_eq!(config.archive.seal_interval_ms, 1000);
        assert_eq!(config.limits.recall_window_seconds, 10);
        let mut config = NodeConfig::default();
        apply_dev_archive(&mut config, dir, 3600);
        assert_eq!((config.archive.seal_interval_ms, config.limits.recall_window_seconds), (10_000, 120));
    }

    #[test]
    fn first_run_writes_three_consistent_configs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let configs = prepare_configs(tmp.path(), &args(tmp.path())).expect("configs");
        assert_eq!(configs.len(), 3);
        for (i, c) in configs.iter().enumerate() {
            let n = i as u64 + 1;
            assert_eq!(c.node_id, n);
            assert_eq!(c.listen.port(), 17000 + n as u16);
            assert_eq!(c.http_listen.map(|a| a.port()), Some(18000 + n as u16));
            assert_eq!(c.peer_listen.map(|a| a.port()), Some(17100 + n as u16));
            assert_eq!(c.cluster.secret.len(), 64);
            assert_ne!(c.cluster.secret, c.auth.secret);
            assert_eq!(c.data_dir, tmp.path().join(format!("node-{n}")));
            assert_eq!(c.shards, 4);
            assert_eq!(c.auth.secret.len(), 64);
            assert_eq!(NodeConfig::load(config_path(tmp.path(), n)).expect("written config loads"), *c);
        }
    }

    #[test]
    fn a_restart_reuses_the_configs_and_the_secret() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = prepare_configs(tmp.path(), &args(tmp.path())).expect("configs");
        let other_args = DevArgs { base_port: 27001, shards: 8, ..args(tmp.path()) };
        let second = prepare_configs(tmp.path(), &other_args).expect("configs");
        assert_eq!(first, second);
    }

    #[test]
    fn a_lost_config_is_rewritten_with_the_same_secret() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = prepare_configs(tmp.path(), &args(tmp.path())).expect("configs");
        std::fs::remove_file(config_path(tmp.path(), 2)).expect("remove");
        let second = prepare_configs(tmp.path(), &args(tmp.path())).expect("configs");
        assert_eq!(first, second);
    }

    #[test]
    fn configs_of_two_regions_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        prepare_configs(tmp.path(), &args(tmp.path())).expect("configs");
        let path = config_path(tmp.path(), 3);
        let mut c = NodeConfig::load(&path).expect("load");
        c.auth.secret = "another-secret-0123456789".into();
        write_config(&path, &c).expect("write");
        let err = prepare_configs(tmp.path(), &args(tmp.path())).expect_err("must refuse");
        assert!(format!("{err:#}").contains("disagree on `[auth]`"), "{err:#}");
    }

    #[test]
    fn a_too_high_base_port_is_explained() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err =
            prepare_configs(tmp.path(), &DevArgs { base_port: 65000, ..args(tmp.path()) }).expect_err("must refuse");
        assert!(format!("{err:#}").contains("--base-port 65000 is too high"), "{err:#}");
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(random_secret(), random_secret());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
    }

    #[test]
    fn log_tail_stops_before_a_backtrace() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("x.log");
        std::fs::write(&path, "a\nError: boom\n\nStack backtrace:\n   0: main\n").expect("write");
        assert_eq!(log_tail(&path, 2), "a\nError: boom");
    }
}
