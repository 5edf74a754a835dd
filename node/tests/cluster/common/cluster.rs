//! [`Cluster`]: the node processes of one test region, their configs, logs and status.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meridian_client::api::ClusterStatusResponse;
use meridian_client::{Client, ClientConfig, ClientError};
use meridian_node::auth::TokenSigner;
use meridian_node::config::{AuthConfig, ClusterConfig, LimitsConfig, NodeConfig, PeerConfig, RaftTuning};

use super::pki::TestPki;

/// The region code of every test cluster.
pub const REGION: &str = "test";
/// How long a cluster may take to elect a leader for every shard on every node.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the replicas may take to converge once the writes stop.
pub(super) const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between two polls of the nodes' status.
pub(super) const POLL: Duration = Duration::from_millis(100);
/// Lines of each node's log printed after a failure.
const LOG_TAIL_LINES: usize = 40;

/// Raft timing and log compaction of a test cluster: quick elections, and by default no
/// snapshots at all within a test's worth of writes.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Shards of the region (a power of two).
    pub shards: u32,
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Election timeout range, in milliseconds.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries.
    pub snapshot_logs_since_last: u64,
    /// `raft.snapshot-log-size-percent` (0 here unless a test sets it: entries only).
    pub snapshot_log_size_percent: u32,
    /// Log entries kept behind a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// `cluster.max-logic-version` of the node with this index, if any (0 elsewhere: the
    /// build's newest).
    pub held_back: Option<(usize, u32)>,
    /// `limits.c2c-friends-only`: one-to-one messages between friends only, app-wide.
    pub c2c_friends_only: bool,
    /// `limits.max-joined-groups` (0: the default).
    pub max_joined_groups: u64,
    /// `[callbacks]` and `[push]`: the app's webhooks.
    pub callbacks: meridian_node::config::CallbacksConfig,
    pub push: meridian_node::config::PushConfig,
    /// `[archive]`: the cold archive (off by default).
    pub archive: meridian_node::config::ArchiveConfig,
    /// `limits.recall-window-seconds` (0: the default).
    pub recall_window_seconds: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            shards: 8,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 1_000_000,
            snapshot_log_size_percent: 0,
            max_in_snapshot_log_to_keep: 1_000_000,
            held_back: None,
            c2c_friends_only: false,
            max_joined_groups: 0,
            callbacks: Default::default(),
            push: Default::default(),
            archive: Default::default(),
            recall_window_seconds: 0,
        }
    }
}

impl Tuning {
    /// Snapshots every `since_last` entries, keeping `keep` entries behind each one.
    pub fn with_snapshots(since_last: u64, keep: u64) -> Self {
        Tuning { snapshot_logs_since_last: since_last, max_in_snapshot_log_to_keep: keep, ..Tuning::default() }
    }
}

/// One node process of the cluster.
struct NodeProcess {
    id: u64,
    addr: String,
    peer_addr: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A region of real node processes on loopback. See the module docs.
pub struct Cluster {
    /// `None` only while being dropped.
    dir: Option<tempfile::TempDir>,
    nodes: Vec<NodeProcess>,
    admin: Client,
    /// One single-attempt admin client per node, for status polls.
    probes: Vec<Client>,
    shards: u32,
    started: Instant,
    /// What the test did and when, printed after a failure next to the node logs.
    journal: Mutex<Vec<String>>,
    /// The first node's configuration: a joining node is made from it.
    template: NodeConfig,
    admin_token: String,
    /// The CA of the nodes' certificates, when they use TLS.
    ca: Option<Vec<u8>>,
}

impl Cluster {
    /// Starts `n` nodes as one freshly bootstrapped region and waits (bounded) until every
    /// node sees a leader for every shard.
    pub async fn start(n: usize, tuning: Tuning) -> Cluster {
        Self::start_with(n, tuning, None).await
    }

    /// [`Cluster::start`] with TLS on both listeners of every node (the peer side requiring
    /// client certificates) when `tls` is given; the harness's clients trust its CA.
    pub async fn start_with(n: usize, tuning: Tuning, tls: Option<TestPki>) -> Cluster {
        let dir = tempfile::Builder::new().prefix("meridian-cluster-").tempdir().expect("create a temporary directory");
        let tls_files = tls.as_ref().map(|pki| pki.write(dir.path()));
        let secret = format!("{:032x}", rand::random::<u128>());
        let cluster_secret = format!("{:032x}", rand::random::<u128>());
        let all_addrs = free_loopback_addrs(3 * n);
        let (addrs, rest) = all_addrs.split_at(n);
        let (peer_addrs, http_addrs) = rest.split_at(n);
        let peers: Vec<PeerConfig> = addrs
            .iter()
            .zip(peer_addrs)
            .enumerate()
            .map(|(i, (addr, peer))| PeerConfig {
                id: i as u64 + 1,
                addr: addr.to_string(),
                peer_addr: peer.to_string(),
            })
            .collect();

        let mut nodes = Vec::with_capacity(n);
        for (i, (addr, peer_addr)) in addrs.iter().zip(peer_addrs).enumerate() {
            let id = i as u64 + 1;
            let config = NodeConfig {
                node_id: id,
                region: REGION.to_owned(),
                listen: *addr,
                advertise: None,
                peer_listen: Some(*peer_addr),
                // `/healthz`, `/readyz` and `/metrics` of every node, for the tests that read them.
                http_listen: Some(http_addrs[i]),
                data_dir: dir.path().join(format!("node-{id}")),
                shards: tuning.shards,
                peers: peers.clone(),
                bootstrap: true,
                auth: AuthConfig { secret: secret.clone(), ..AuthConfig::default() },
                cluster: ClusterConfig {
                    secret: cluster_secret.clone(),
                    max_logic_version: match tuning.held_back {
                        Some((node, version)) if node == i => version,
                        _ => 0,
                    },
                },
                tls: tls_files.as_ref().map(|f| f.client.clone()),
                peer_tls: tls_files.as_ref().map(|f| f.peer.clone()),
                limits: LimitsConfig {
                    c2c_friends_only: tuning.c2c_friends_only,
                    max_joined_groups: if tuning.max_joined_groups == 0 {
                        LimitsConfig::default().max_joined_groups
                    } else {
                        tuning.max_joined_groups
                    },
                    recall_window_seconds: if tuning.recall_window_seconds == 0 {
                        LimitsConfig::default().recall_window_seconds
                    } else {
                        tuning.recall_window_seconds
                    },
                    ..LimitsConfig::default()
                },
                raft: RaftTuning {
                    heartbeat_interval_ms: tuning.heartbeat_interval_ms,
                    election_timeout_min_ms: tuning.election_timeout_min_ms,
                    election_timeout_max_ms: tuning.election_timeout_max_ms,
                    snapshot_logs_since_last: tuning.snapshot_logs_since_last,
                    snapshot_log_size_percent: tuning.snapshot_log_size_percent,
                    max_in_snapshot_log_to_keep: tuning.max_in_snapshot_log_to_keep,
                    ..RaftTuning::default()
                },
                callbacks: tuning.callbacks.clone(),
                push: tuning.push.clone(),
                archive: tuning.archive.clone(),
                ..NodeConfig::default()
            };
            config.validate().expect("the harness writes valid node configs");
            let config_path = dir.path().join(format!("node-{id}.toml"));
            std::fs::write(&config_path, config.to_toml().expect("serialize a node config"))
                .expect("write a node config");
            nodes.push(NodeProcess {
                id,
                addr: addr.to_string(),
                peer_addr: peer_addr.to_string(),
                config_path,
                log_path: dir.path().join(format!("node-{id}.log")),
                child: None,
            });
        }

        let signer = TokenSigner::new(AuthConfig::default().app_id, &secret);
        let admin_token = signer.issue_admin("cluster-test", chrono::Utc::now().timestamp() + 24 * 3600);
        let endpoints: Vec<String> = nodes.iter().map(|node| node.addr.clone()).collect();
        let ca = tls.as_ref().map(|pki| pki.ca_pem.clone());
        let client_config = |endpoints: &[String], token: &str| {
            let config = ClientConfig::new(endpoints, token);
            match &ca {
                Some(pem) => config.with_ca(pem.clone()),
                None => config,
            }
        };
        let admin = Client::with_config(client_config(&endpoints, &admin_token)).expect("build the admin client");
        let probes = endpoints
            .iter()
            .map(|endpoint| {
                let mut config = client_config(std::slice::from_ref(endpoint), &admin_token);
                config.connect_timeout = Duration::from_secs(1);
                config.request_timeout = Duration::from_secs(5);
                config.retry_budget = Duration::ZERO;
                Client::with_config(config).expect("build a status probe")
            })
            .collect();

        let template = NodeConfig::load(&nodes[0].config_path).expect("read back a node config");
        let mut cluster = Cluster {
            dir: Some(dir),
            nodes,
            admin,
            probes,
            shards: tuning.shards,
            started: Instant::now(),
            journal: Mutex::new(Vec::new()),
            template,
            admin_token: admin_token.clone(),
            ca,
        };
        cluster.phase(format!("starting {n} nodes, {} shards, {tuning:?}", tuning.shards));
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_node_ready(i, READY_TIMEOUT).await;
        }
        cluster.phase("every node sees a leader for every shard");
        let newest = meridian_domain::apply::LOGIC_VERSION;
        let expected = tuning.held_back.map_or(newest, |(_, v)| if v == 0 { newest } else { v.min(newest) });
        cluster.wait_logic_version(expected).await;
        cluster
    }

    /// Waits (bounded) until every shard applies logic version `version`, which a new region
    /// raises itself to right after bootstrap.
    pub async fn wait_logic_version(&self, version: u32) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let report = self.admin.logic_version(0).await;
            if let Ok(r) = &report {
                if r.shards.len() == self.shards as usize && r.shards.iter().all(|s| s.logic_version == version) {
                    self.phase(format!("every shard applies logic version {version}"));
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("the shards did not reach logic version {version}: {report:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts one more node that does not bootstrap: it belongs to no shard until an admin
    /// adds it (`Admin/AddNode`). Returns its index.
    pub fn spawn_joiner(&mut self) -> usize {
        let i = self.nodes.len();
        let id = i as u64 + 1;
        let free = free_loopback_addrs(3);
        let (addr, peer_addr, http_addr) = (free[0], free[1], free[2]);
        let dir = self.dir.as_ref().expect("the cluster is alive").path().to_path_buf();
        let config = NodeConfig {
            node_id: id,
            listen: addr,
            peer_listen: Some(peer_addr),
            http_listen: Some(http_addr),
            data_dir: dir.join(format!("node-{id}")),
            bootstrap: false,
            ..self.template.clone()
        };
        config.validate().expect("the harness writes valid node configs");
        let config_path = dir.join(format!("node-{id}.toml"));
        std::fs::write(&config_path, config.to_toml().expect("serialize a node config")).expect("write a node config");
        self.nodes.push(NodeProcess {
            id,
            addr: addr.to_string(),
            peer_addr: peer_addr.to_string(),
            config_path,
            log_path: dir.join(format!("node-{id}.log")),
            child: None,
        });
        let mut probe = ClientConfig::new([addr.to_string()], self.admin_token.clone());
        if let Some(pem) = &self.ca {
            probe = probe.with_ca(pem.clone());
        }
        probe.connect_timeout = Duration::from_secs(1);
        probe.request_timeout = Duration::from_secs(5);
        probe.retry_budget = Duration::ZERO;
        self.probes.push(Client::with_config(probe).expect("build a status probe"));
        self.phase(format!("start node {id} at {addr}, not bootstrapped"));
        self.spawn(i);
        i
    }

    /// The client address of node `i`.
    /// Rewrites node `i`'s `cluster.max-logic-version` (0: the build's newest); it takes
    /// effect when the node next starts.
    pub fn set_max_logic_version(&mut self, i: usize, version: u32) {
        let path = &self.nodes[i].config_path;
        let mut config = NodeConfig::load(path).expect("read back a node config");
        config.cluster.max_logic_version = version;
        std::fs::write(path, config.to_toml().expect("serialize a node config")).expect("write a node config");
    }

    /// GETs `path` from node `i`'s HTTP endpoint: the status line and the body.
    pub async fn http_get(&self, i: usize, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let config = NodeConfig::load(&self.nodes[i].config_path).expect("read back a node config");
        let addr = config.http_listen.expect("the harness gives every node an HTTP endpoint");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the HTTP endpoint");
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.expect("send a request");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
    }

    /// The value of the `/metrics` line `name` (with its labels, if any) on node `i`.
    pub async fn metric(&self, i: usize, name: &str) -> u64 {
        let (_, body) = self.http_get(i, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in node {}'s /metrics", i + 1))
    }

    /// Node `i`'s config file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.nodes[i].config_path.clone()
    }

    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].addr.clone()
    }

    /// The peer-listener address of node `i`.
    pub fn peer_addr(&self, i: usize) -> String {
        self.nodes[i].peer_addr.clone()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        let dir = self.dir.as_ref().expect("the cluster is alive").path();
        dir.join(format!("node-{}", self.nodes[i].id))
    }

    /// The region's cluster secret (what peers derive their credential from).
    pub fn cluster_secret(&self) -> String {
        self.template.cluster.secret.clone()
    }

    // ------------------------------------------------------------------------- clients

    /// An admin client over every node's endpoint, with failover.
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// The admin client pinned to node `i` (no failover): local reads see that replica.
    pub fn client_for(&self, i: usize) -> Client {
        match self.admin.with_endpoint_index(i) {
            Ok(client) => client,
            // A node that joined after the start: its probe, with the usual retry budget.
            Err(_) => self.probes[i].with_retry_budget(ClientConfig::new([""], "").retry_budget),
        }
    }

    /// The admin client acting as `user`, over every endpoint.
    pub fn user(&self, user: &str) -> Client {
        self.admin.with_act_as(user).expect("a valid user id")
    }

    /// The admin client acting as `user`, pinned to node `i`.
    pub fn user_on(&self, i: usize, user: &str) -> Client {
        self.client_for(i).with_act_as(user).expect("a valid user id")
    }

    /// Every node's endpoint, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.addr.clone()).collect()
    }

    /// Creates the given accounts, all at once.
    pub async fn create_users(&self, users: &[String]) {
        let creates = users.iter().map(|user| self.admin.create_user(user, None));
        for (user, result) in users.iter().zip(futures::future::join_all(creates).await) {
            let created = result.unwrap_or_else(|e| panic!("create user {user}: {e}"));
            assert!(created.created, "user {user} existed before the test created it");
        }
    }

    /// A client holding `user`'s own token (minted through the admin API), over every endpoint.
    pub async fn user_with_token(&self, user: &str) -> Client {
        let token =
            self.admin.issue_token(user, None).await.unwrap_or_else(|e| panic!("issue a token for {user}: {e}"));
        let mut config = ClientConfig::new(self.endpoints(), token.token);
        if let Some(pem) = &self.ca {
            config = config.with_ca(pem.clone());
        }
        Client::with_config(config).expect("build a user client")
    }

    /// The admin token of the region.
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    // ------------------------------------------------------------------------- processes

    /// Number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Indexes of the nodes that run.
    pub fn live_nodes(&mut self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_running(i)).collect()
    }

    /// Kills node `i` with SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self, i: usize) {
        self.phase(format!("kill -9 node {}", i + 1));
        let node = &mut self.nodes[i];
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {} is not running", node.id));
        // `Child::kill` sends SIGKILL on unix.
        child.kill().expect("send SIGKILL");
        child.wait().expect("reap a killed node");
        append_marker(&node.log_path, "killed with SIGKILL by the test");
    }

    /// Freezes node `i` with SIGSTOP (`resume` wakes it): its peers see a node that answers
    /// nothing and holds whatever it had in flight.
    pub fn pause(&mut self, i: usize) {
        self.phase(format!("pause node {} (SIGSTOP)", i + 1));
        self.signal(i, "-STOP");
    }

    /// Wakes node `i` from [`Cluster::pause`] (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.phase(format!("resume node {} (SIGCONT)", i + 1));
        self.signal(i, "-CONT");
    }

    fn signal(&mut self, i: usize, signal: &str) {
        let node = &self.nodes[i];
        let pid = node.child.as_ref().unwrap_or_else(|| panic!("node {} is not running", node.id)).id();
        let sent = Command::new("kill").arg(signal).arg(pid.to_string()).status().is_ok_and(|s| s.success());
        assert!(sent, "kill {signal} node {}", node.id);
        append_marker(&node.log_path, &format!("kill {signal} by the test"));
    }

    /// Stops node `i` gracefully (SIGTERM), killing it if it does not exit within a grace period.
    pub async fn stop(&mut self, i: usize) {
        self.phase(format!("stop node {}", i + 1));
        let node = &mut self.nodes[i];
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {} is not running", node.id));
        let terminated = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_GRACE;
        let exited = terminated
            && loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                    _ => break false,
                }
            };
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            append_marker(&node.log_path, "did not stop after SIGTERM: killed by the test");
        } else {
            append_marker(&node.log_path, "stopped with SIGTERM by the test");
        }
    }

    /// Starts node `i` again with its config and data directory, and waits (bounded) until it
    /// sees a leader for every shard.
    pub async fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "node {} is still running: stop or kill it first", i + 1);
        self.phase(format!("restart node {}", i + 1));
        append_marker(&self.nodes[i].log_path, "restarted by the test");
        self.spawn(i);
        self.wait_node_ready(i, READY_TIMEOUT).await;
        self.phase(format!("node {} is back and sees a leader for every shard", i + 1));
    }

    /// Starts the stopped or killed `nodes` again together (a quorum may need more than one
    /// of them) and waits (bounded) until each sees a leader for every shard.
    pub async fn restart_together(&mut self, nodes: &[usize]) {
        for &i in nodes {
            assert!(!self.is_running(i), "node {} is still running: stop or kill it first", i + 1);
            self.phase(format!("restart node {}", i + 1));
            append_marker(&self.nodes[i].log_path, "restarted by the test");
            self.spawn(i);
        }
        for &i in nodes {
            self.wait_node_ready(i, READY_TIMEOUT).await;
        }
    }

    /// Stops every node (SIGTERM), starts them all again and waits until each sees a leader
    /// for every shard.
    pub async fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.is_running(i) {
                self.stop(i).await;
            }
        }
        self.phase("restart every node");
        for i in 0..self.nodes.len() {
            append_marker(&self.nodes[i].log_path, "restarted by the test");
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_node_ready(i, READY_TIMEOUT).await;
        }
        self.phase("every node is back and sees a leader for every shard");
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = OpenOptions::new().create(true).append(true).open(&node.log_path).expect("open a node log");
        let log_err = log.try_clone().expect("clone a node log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("node")
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("start node {}: {e}", node.id));
        node.child = Some(child);
    }

    // ------------------------------------------------------------------------- status

    /// Node `i`'s view of every shard, or why it could not be read (one attempt).
    pub async fn try_status(&self, i: usize, include_hash: bool) -> Result<ClusterStatusResponse, ClientError> {
        self.probes[i].cluster_status(include_hash).await
    }

    /// Node `i`'s view of every shard; retries for a while if the node does not answer.
    pub async fn status(&mut self, i: usize) -> ClusterStatusResponse {
        self.status_of(i, false).await
    }

    /// Node `i`'s view of every shard with each shard's state hash.
    pub async fn status_with_hash(&mut self, i: usize) -> ClusterStatusResponse {
        self.status_of(i, true).await
    }

    async fn status_of(&mut self, i: usize, include_hash: bool) -> ClusterStatusResponse {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.check_alive(i);
            match self.try_status(i, include_hash).await {
                Ok(status) => return status,
                Err(e) if Instant::now() >= deadline => panic!("node {} gave no status within 10 s: {e}", i + 1),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The index of the node that node `observer` and the leader itself agree leads `shard`.
    pub async fn shard_leader(&mut self, shard: u32) -> usize {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            for observer in self.live_nodes() {
                let Ok(status) = self.try_status(observer, false).await else { continue };
                let leader = shard_status(&status, shard).leader;
                let Some(index) = self.node_index(leader) else {
                    last = format!("node {} knows no leader of shard {shard}", observer + 1);
                    continue;
                };
                if !self.is_running(index) {
                    last = format!("node {} names node {leader}, which is down", observer + 1);
                    continue;
                }
                match self.try_status(index, false).await {
                    Ok(own) if shard_status(&own, shard).role == "leader" => return index,
                    _ => last = format!("node {leader} does not (yet) call itself the leader of shard {shard}"),
                }
            }
            assert!(Instant::now() < deadline, "shard {shard} has no agreed leader after {READY_TIMEOUT:?}: {last}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (bounded) until every running node reports, for every shard, the same leader and
    /// the same applied index, and the same again on the next poll (nothing still in flight).
    pub async fn wait_converged(&mut self) {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        let mut previous: Option<Vec<(u64, u64)>> = None;
        let mut why = String::from("not polled yet");
        loop {
            let live = self.live_nodes();
            assert!(!live.is_empty(), "wait_converged: no node is running");
            let mut views = Vec::new();
            for &i in &live {
                match self.try_status(i, false).await {
                    Ok(status) => views.push((i, status)),
                    Err(e) => why = format!("node {} does not answer: {e}", i + 1),
                }
            }
            let agreed = if views.len() == live.len() { agreement(&views, self.shards) } else { Err(why.clone()) };
            match agreed {
                Ok(now) if previous.as_ref() == Some(&now) => {
                    self.phase(format!("converged: (leader, applied) per shard = {now:?}"));
                    self.verify_projections().await;
                    return;
                }
                Ok(now) => previous = Some(now),
                Err(e) => {
                    why = e;
                    previous = None;
                }
            }
            for &i in &live {
                self.check_alive(i);
            }
            assert!(Instant::now() < deadline, "the replicas did not converge within {CONVERGE_TIMEOUT:?}: {why}");
            tokio::time::sleep(POLL * 2).await;
        }
    }

    /// Asserts that on every running node every shard's projections equal a replay of its
    /// event log (`Admin/VerifyProjections`).
    pub async fn verify_projections(&mut self) {
        for i in self.live_nodes() {
            let report = self
                .client_for(i)
                .verify_projections()
                .await
                .unwrap_or_else(|e| panic!("verify projections on node {}: {e}", i + 1));
            for shard in &report.shards {
                assert!(
                    shard.equal,
                    "node {} shard {}: projections differ from the replay: {}",
                    i + 1,
                    shard.shard,
                    shard.difference
                );
            }
        }
        self.phase("projections equal a replay of the event log on every node");
    }

    /// Every shard's state hash on every running node, taken where all of them had applied the
    /// same index (a hash is comparable only then). Polls, bounded, until each shard had such
    /// a round.
    pub async fn comparable_state_hashes(&mut self) -> BTreeMap<u32, HashedShard> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        let mut hashed: BTreeMap<u32, HashedShard> = BTreeMap::new();
        loop {
            let live = self.live_nodes();
            let polls = live.iter().map(|&i| self.try_status(i, true));
            let views: Vec<_> = futures::future::join_all(polls).await;
            if let Ok(views) = views.into_iter().collect::<Result<Vec<_>, _>>() {
                for shard in 0..self.shards {
                    let at: Vec<&meridian_client::api::ShardStatus> =
                        views.iter().map(|v| shard_status(v, shard)).collect();
                    let index = at[0].hashed_at_index;
                    if hashed.contains_key(&shard) || at.iter().any(|s| s.hashed_at_index != index || s.leader == 0) {
                        continue;
                    }
                    for (&i, s) in live.iter().zip(&at) {
                        assert!(!s.state_hash.is_empty(), "node {} gave no state hash for shard {shard}", i + 1);
                    }
                    let hashes = live.iter().zip(&at).map(|(&i, s)| (i, s.state_hash.clone())).collect();
                    let leader = self.node_index(at[0].leader).unwrap_or(usize::MAX);
                    hashed.insert(shard, HashedShard { index, leader, hashes });
                }
            }
            if hashed.len() == self.shards as usize {
                return hashed;
            }
            assert!(
                Instant::now() < deadline,
                "only shards {:?} were hashed at one index on every node within {CONVERGE_TIMEOUT:?}",
                hashed.keys().collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_node_ready(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive(i);
            let why = match self.try_status(i, false).await {
                Ok(status) => {
                    let led = status.shards.iter().filter(|s| s.leader != 0).count();
                    if status.shards.len() == self.shards as usize && led == status.shards.len() {
                        return;
                    }
                    format!("{led} of {} shards have a leader", self.shards)
                }
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "node {} was not ready within {timeout:?}: {why}", i + 1);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics if node `i` was started by the test and has exited on its own.
    fn check_alive(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(child) = node.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                panic!("node {} exited on its own ({status})", node.id);
            }
        }
    }

    fn node_index(&self, node_id: u64) -> Option<usize> {
        self.nodes.iter().position(|node| node.id == node_id)
    }

    // ------------------------------------------------------------------------- diagnostics

    /// Notes what the test is about to do; printed after a failure, with the time, to match
    /// against the node logs.
    pub fn phase(&self, what: impl Into<String>) {
        let line = format!(
            "{} (+{:.1}s) {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            self.started.elapsed().as_secs_f64(),
            what.into()
        );
        if let Ok(mut journal) = self.journal.lock() {
            journal.push(line);
        }
    }

    fn report_failure(&self, dir: &Path) {
        eprintln!("\n==== cluster test failed; files kept in {}", dir.display());
        eprintln!("---- test phases");
        if let Ok(journal) = self.journal.lock() {
            for line in journal.iter() {
                eprintln!("{line}");
            }
        }
        for node in &self.nodes {
            eprintln!("---- last {LOG_TAIL_LINES} lines of {}", node.log_path.display());
            eprintln!("{}", log_tail(&node.log_path, LOG_TAIL_LINES));
        }
        eprintln!("====");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(dir) = self.dir.take() {
            if std::thread::panicking() {
                let kept = dir.keep();
                self.report_failure(&kept);
            }
        }
    }
}

/// One shard's state hash on every running node, at one applied index.
#[derive(Debug, Clone)]
pub struct HashedShard {
    /// The applied index every node hashed at.
    pub index: u64,
    /// The index of the node the first node named as the shard's leader.
    pub leader: usize,
    /// Node index → hex state hash.
    pub hashes: BTreeMap<usize, String>,
}

/// `n` loopback addresses whose ports were free a moment ago (bound to port 0, then released).
pub fn free_loopback_addrs(n: usize) -> Vec<SocketAddr> {
    // All held at once, so that the kernel hands out `n` different ports.
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address of a bound socket")).collect()
}

/// The per-shard (leader, applied index) that every view agrees on, or what disagrees.
fn agreement(views: &[(usize, ClusterStatusResponse)], shards: u32) -> Result<Vec<(u64, u64)>, String> {
    let mut agreed = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let mut seen: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
        for (i, status) in views {
            let Some(s) = status.shards.iter().find(|s| s.shard == shard) else {
                return Err(format!("node {} does not report shard {shard}", i + 1));
            };
            seen.entry((s.leader, s.applied_index)).or_default().push(i + 1);
        }
        match seen.into_iter().collect::<Vec<_>>().as_slice() {
            [((leader, applied), _)] if *leader != 0 => agreed.push((*leader, *applied)),
            [((0, _), _)] => return Err(format!("shard {shard} has no leader")),
            views => return Err(format!("shard {shard}: nodes disagree on (leader, applied): {views:?}")),
        }
    }
    Ok(agreed)
}

/// Shard `shard` in a status response.
pub fn shard_status(status: &ClusterStatusResponse, shard: u32) -> &meridian_client::api::ShardStatus {
    status
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .unwrap_or_else(|| panic!("node {} does not report shard {shard}", status.node_id))
}

fn append_marker(log_path: &Path, what: &str) {
    if let Ok(mut log) = OpenOptions::new().append(true).open(log_path) {
        let _ = writeln!(log, "==== {} test harness: {what}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}
