//! The node's configuration file (TOML): one `[section]` per concern, kebab-case keys,
//! defaults for everything that has a sensible one, and a `validate()` whose messages name
//! the key and say what to write instead. Every field is documented in `docs/config.md`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::auth::DEFAULT_TOKEN_TTL_SECONDS;

mod archive;
mod hooks;
pub use archive::{ArchiveConfig, ArchiveStoreKind};
pub use hooks::{BeforeMode, CallbacksConfig, PreviewMode, PushConfig, MAX_HOOK_TIMEOUT_MS};

/// Shortest accepted auth secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Most shards a region may have.
pub const MAX_SHARDS: u32 = 1024;
/// Longest accepted token lifetime: 10 years, in seconds.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 24 * 60 * 60;
/// Largest accepted message size limit: 1 MiB, in bytes (well under gRPC's 4 MiB frame cap).
pub const MAX_MESSAGE_BYTES_CEILING: usize = 1024 * 1024;

/// One `meridian node` process: who it is, where it listens, where it keeps data, whom it
/// replicates with, and the limits it enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// This node's id, unique within its region; >= 1. Never reuse the id of a removed node.
    pub node_id: u64,
    /// The region this node serves: its residency code, e.g. `sg` (2..=16 of `a-z`, `0-9`, `-`).
    pub region: String,
    /// Socket address of the client API (gRPC: `Chat`, `Admin`, health, reflection).
    /// Default `127.0.0.1:7001`.
    pub listen: SocketAddr,
    /// `host:port` that clients use to reach this node. Default: `listen`.
    pub advertise: Option<String>,
    /// Socket address of the peer listener: Raft traffic and forwarded proposals from the
    /// other nodes of the region, behind the cluster credential. Required; never the same
    /// port as `listen`.
    pub peer_listen: Option<SocketAddr>,
    /// `host:port` that the region's other nodes use to reach this node's peer listener.
    /// Default: `peer-listen`.
    pub peer_advertise: Option<String>,
    /// Socket address of the plain-HTTP server (`/healthz`, `/readyz`, `/metrics`); unset = off.
    pub http_listen: Option<SocketAddr>,
    /// Source IP for this node's outgoing connections to its peers; unset = chosen by the OS.
    /// Lets a firewall tell nodes apart when several share one host (the chaos suite cuts
    /// links between nodes on loopback this way).
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Directory of this node's data (RocksDB, snapshots). Relative paths are resolved
    /// against the working directory of the process. Default `./data`.
    pub data_dir: PathBuf,
    /// Number of shards (Raft groups) in the region: a power of two in 1..=1024, default 8.
    /// Fixed when the region is bootstrapped; every node of a region must agree.
    pub shards: u32,
    /// The region's initial voters, this node included (`[[peers]]` tables of `id`, `addr`,
    /// `peer-addr`).
    pub peers: Vec<PeerConfig>,
    /// Initialize every shard with `peers` as voters when `data-dir` is new. Default true;
    /// set false for a node that will join an existing region through `Admin/AddNode`.
    pub bootstrap: bool,
    /// Token signing (`[auth]`).
    pub auth: AuthConfig,
    /// The cluster credential of peer calls (`[cluster]`).
    pub cluster: ClusterConfig,
    /// Socket address of the region-link listener: calls from other regions of the
    /// deployment, behind the link credential. Unset: no region link (a single region).
    pub link_listen: Option<SocketAddr>,
    /// The link credential (`[link]`).
    pub link: LinkConfig,
    /// TLS of the region-link listener and of this node's calls to other regions
    /// (`[link-tls]`, the same keys as `[peer-tls]`); unset = plaintext.
    pub link_tls: Option<PeerTlsConfig>,
    /// TLS of the client listener (`[tls]`); unset = plaintext.
    pub tls: Option<TlsConfig>,
    /// TLS of the peer listener and of this node's calls to its peers (`[peer-tls]`); unset =
    /// plaintext. Every node of a region must agree.
    pub peer_tls: Option<PeerTlsConfig>,
    /// Per-request limits (`[limits]`).
    pub limits: LimitsConfig,
    /// Raft timing and batching (`[raft]`).
    pub raft: RaftTuning,
    /// The deployment's topology file (`regions.toml`, see docs/config.md); relative to this
    /// config file's directory. Set, it supplies the region's shard count and initial nodes
    /// (leave `shards` and `[[peers]]` out) and is checked against its own residency policy
    /// before the node starts. Unset: a single region described by this file alone.
    pub topology: Option<PathBuf>,
    /// The topology file, loaded and checked (when `topology` is set).
    #[serde(skip)]
    pub regions: Option<meridian_regions::RegionsFile>,
    /// Threads of the node's async runtime, 1..=1024; unset = one per CPU core. Set it lower
    /// when several nodes share one machine: `meridian dev` gives each of its three nodes a
    /// third of the cores (at least one), which on a 2-core machine made sends 40–50 % faster
    /// at 64–256 clients than three runtimes of two threads each competing for the cores.
    pub worker_threads: Option<usize>,
    /// The app's callbacks (`[callbacks]`, DLV-04); none by default.
    pub callbacks: CallbacksConfig,
    /// Offline push (`[push]`, DLV-03); none by default.
    pub push: PushConfig,
    /// The cold archive (`[archive]`, GEO-04); off by default.
    pub archive: ArchiveConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            region: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertise: None,
            peer_listen: None,
            peer_advertise: None,
            http_listen: None,
            peer_source_ip: None,
            data_dir: PathBuf::from("./data"),
            shards: 8,
            peers: Vec::new(),
            bootstrap: true,
            auth: AuthConfig::default(),
            cluster: ClusterConfig::default(),
            link_listen: None,
            link: LinkConfig::default(),
            link_tls: None,
            tls: None,
            peer_tls: None,
            limits: LimitsConfig::default(),
            raft: RaftTuning::default(),
            topology: None,
            regions: None,
            worker_threads: None,
            callbacks: CallbacksConfig::default(),
            push: PushConfig::default(),
            archive: ArchiveConfig::default(),
        }
    }
}

/// One initial voter of the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerConfig {
    /// The peer's node id (>= 1).
    pub id: u64,
    /// The peer's client API address (its `advertise`), `host:port`.
    pub addr: String,
    /// The peer's peer-listener address (its `peer-advertise`), `host:port`.
    pub peer_addr: String,
}

/// The credential that every peer call carries: the same secret on every node of a region.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// The cluster secret, at least 16 bytes, different from `auth.secret`. Required; the
    /// environment variable `MERIDIAN_CLUSTER_SECRET`, when set, takes its place.
    pub secret: String,
    /// The newest cluster logic version this node reports and applies; 0 (the default) means
    /// the newest this build implements. Lower it to hold a node to older rules during a
    /// staged upgrade: the region cannot be raised past it, and should it meet an entry of a
    /// newer version anyway, it halts that shard rather than apply it.
    pub max_logic_version: u32,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("secret", &"<redacted>")
            .field("max_logic_version", &self.max_logic_version)
            .finish()
    }
}

/// The environment variable that supplies the cluster secret.
pub const CLUSTER_SECRET_ENV: &str = "MERIDIAN_CLUSTER_SECRET";

/// The credential of region-link calls: the same secret in every region of a deployment.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinkConfig {
    /// The link secret, at least 16 bytes, different from `auth.secret` and
    /// `cluster.secret`. Required with `link-listen`; the environment variable
    /// `MERIDIAN_LINK_SECRET`, when set, takes its place.
    pub secret: String,
}

impl fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkConfig").field("secret", &"<redacted>").finish()
    }
}

/// Secrets given outside the config file (from the environment).
#[derive(Default)]
struct Secrets {
    cluster: Option<String>,
    link: Option<String>,
}

/// The environment variable that supplies the link secret.
pub const LINK_SECRET_ENV: &str = "MERIDIAN_LINK_SECRET";

/// A listener's certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}

/// TLS between the nodes of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerTlsConfig {
    /// This node's certificate chain, PEM: served by its peer listener and, when peers
    /// require client certificates, shown on its calls to them.
    pub cert: PathBuf,
    /// The private key of `cert`, PEM.
    pub key: PathBuf,
    /// The CA certificate(s), PEM, that peers' certificates must chain to.
    pub ca: PathBuf,
    /// Refuse peer connections without a client certificate from `ca`. Default false.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Token signing: every node of a region shares the app id and the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// The app tokens are issued for; tokens of another app are refused. Default `meridian`.
    pub app_id: String,
    /// HMAC-SHA256 key of user and admin tokens; at least 16 bytes. Required.
    pub secret: String,
    /// Lifetime of tokens minted by `Admin/IssueUserToken` without a TTL, in seconds.
    /// Default 15552000 (180 days).
    pub token_ttl_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { app_id: "meridian".to_owned(), secret: String::new(), token_ttl_seconds: DEFAULT_TOKEN_TTL_SECONDS }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A config dump in a log must not leak the signing key.
        f.debug_struct("AuthConfig")
            .field("app_id", &self.app_id)
            .field("secret", &"<redacted>")
            .field("token_ttl_seconds", &self.token_ttl_seconds)
            .finish()
    }
}

impl AuthConfig {
    /// The default token lifetime.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_seconds)
    }
}

/// Per-request limits, defaults taken from the product we measure against (FEATURES.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Largest encoded message body (all elements together), in bytes. Default 12288 (12 KB).
    pub max_message_bytes: usize,
    /// How long after sending a sender may recall a message, in seconds. Default 120.
    pub recall_window_seconds: u64,
    /// Most messages one history page returns, in messages. Default 100.
    pub max_history_page: u32,
    /// Member caps of new groups by type (GRP-01); a live room (AVChatRoom) has none.
    pub max_group_members_work: u64,
    pub max_group_members_public: u64,
    pub max_group_members_meeting: u64,
    pub max_group_members_community: u64,
    /// Most users one blocklist holds (REL-04). Default 1000.
    pub max_blocked: u64,
    /// Most users one friend list holds (REL-03). Default 3000.
    pub max_friends: u64,
    /// Most friend requests waiting for one user's answer. Default 100.
    pub max_friend_requests: u64,
    /// Most groups one user is a member of (GRP-04; live rooms do not count). Default 5000.
    pub max_joined_groups: u64,
    /// One-to-one messages between friends only, app-wide (REL-05): the recipient must have
    /// the sender on their friend list. Default false (a user can still ask for it with the
    /// profile field `c2c_from = friends`).
    pub c2c_friends_only: bool,
    /// How long a send's request id is remembered, in seconds: a retry within the window
    /// returns the first send's result, a retry after it is a new message. Default 604800
    /// (7 days); 0 keeps every request id for ever. Records written before the region moved to
    /// logic version 4 are kept for ever.
    pub request_id_window_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 12 * 1024,
            recall_window_seconds: 120,
            max_history_page: 100,
            max_group_members_work: 200,
            max_group_members_public: 2000,
            max_group_members_meeting: 6000,
            max_group_members_community: 100_000,
            max_blocked: 1000,
            max_friends: 3000,
            max_friend_requests: 100,
            max_joined_groups: 5000,
            c2c_friends_only: false,
            request_id_window_seconds: 7 * 24 * 3600,
        }
    }
}

impl LimitsConfig {
    /// The recall window.
    pub fn recall_window(&self) -> Duration {
        Duration::from_secs(self.recall_window_seconds)
    }
}

/// Raft timing and batching, the same for every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaftTuning {
    /// Interval between leader heartbeats, in milliseconds. Default 200. openraft also uses it
    /// as the timeout of every AppendEntries call: a follower that takes longer to make
    /// entries durable and answer (a slow fsync, a busy CPU) counts as unreachable and its
    /// replication backs off for half a second, so it must stay well above the disk's worst
    /// sync time under load.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds. Default 1000.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds. Default 2000.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one, in entries. Default 20000.
    pub snapshot_logs_since_last: u64,
    /// And only once the commands applied since the last snapshot add up to this percentage of
    /// its size: a snapshot copies the whole shard, so with an entry count alone its cost per
    /// entry grows with the data; scaled by size it stays flat, and the log kept between
    /// snapshots stays within this fraction of the state. 0: the entry count alone. Default 50.
    pub snapshot_log_size_percent: u32,
    /// Log entries kept behind a snapshot for slow followers, in entries. Default 1000.
    pub max_in_snapshot_log_to_keep: u64,
    /// Most client commands batched into one Raft entry, in commands. Default 512.
    pub max_batch_commands: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_logs_since_last: 20_000,
            snapshot_log_size_percent: 50,
            max_in_snapshot_log_to_keep: 1000,
            max_batch_commands: 512,
        }
    }
}

impl RaftTuning {
    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

/// One thing wrong with a configuration: the key (dotted, as written in the file) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub message: String,
}

/// Everything wrong with a configuration, reported at once so one edit can fix it all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid node configuration")?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.field, p.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Whether some problem concerns `field` (e.g. `raft.heartbeat-interval-ms`).
    pub fn mentions(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(ConfigProblem { field: field.to_owned(), message: message() });
        }
    }
}

impl NodeConfig {
    /// Reads, parses and validates a config file; `MERIDIAN_CLUSTER_SECRET`, when set,
    /// supplies the cluster secret.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        let env = std::env::var(CLUSTER_SECRET_ENV).ok().filter(|s| !s.is_empty());
        let base = path.parent().unwrap_or(Path::new("."));
        let link_env = std::env::var(LINK_SECRET_ENV).ok().filter(|s| !s.is_empty());
        Self::from_toml_with_secrets(&text, Secrets { cluster: env, link: link_env }, base)
            .with_context(|| format!("load config file {}", path.display()))
    }

    /// Parses and validates a config from TOML text (a `topology` path is relative to the
    /// working directory).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Self::from_toml_with_secrets(text, Secrets::default(), Path::new("."))
    }

    /// Parses a config, puts the secrets from the environment in place of the file's when
    /// given, loads the topology file (relative to `base`) and validates the result.
    fn from_toml_with_secrets(text: &str, secrets: Secrets, base: &Path) -> anyhow::Result<Self> {
        let mut config: Self = toml::from_str(text).context("parse TOML")?;
        if let Some(secret) = secrets.cluster {
            config.cluster.secret = secret;
        }
        if let Some(secret) = secrets.link {
            config.link.secret = secret;
        }
        if let Some(topology) = config.topology.clone() {
            let path = base.join(&topology);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read the topology file {} (`topology`)", path.display()))?;
            let file = meridian_regions::RegionsFile::from_toml(&text)
                .with_context(|| format!("load the topology file {}", path.display()))?;
            config.adopt_topology(file)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Takes the region's shard count and initial nodes from the topology, after checking that
    /// the file names this node as this config describes it.
    fn adopt_topology(&mut self, file: meridian_regions::RegionsFile) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        let Some(region) = file.region(&self.region) else {
            let listed: Vec<&str> = file.regions.iter().map(|r| r.code.as_str()).collect();
            p.check(false, "region", || format!("{:?} is not in the topology file (it lists {listed:?})", self.region));
            return Err(ConfigError { problems: p.0 });
        };
        p.check(self.peers.is_empty(), "peers", || {
            "the topology file lists the region's nodes: leave [[peers]] out when `topology` is set".into()
        });
        self.archive.validate_place(&mut p, region);
        p.check(self.shards == 8 || self.shards == region.shards, "shards", || {
            format!(
                "{} differs from region {}'s {} in the topology file: leave `shards` out",
                self.shards, region.code, region.shards
            )
        });
        match region.all_nodes().find(|n| n.id == self.node_id) {
            None => p.check(false, "node-id", || {
                format!("node {} is not one of region {}'s nodes in the topology file", self.node_id, region.code)
            }),
            Some(me) => {
                let (addr, peer_addr) = (self.advertise_addr(), self.peer_advertise_addr());
                p.check(me.addr == addr, "advertise", || {
                    format!("this node advertises {addr}, the topology file says {}", me.addr)
                });
                p.check(me.peer_addr == peer_addr, "peer-advertise", || {
                    format!("this node's peer address is {peer_addr}, the topology file says {}", me.peer_addr)
                });
            }
        }
        if !p.0.is_empty() {
            return Err(ConfigError { problems: p.0 });
        }
        self.shards = region.shards;
        self.peers = region
            .nodes
            .iter()
            .map(|n| PeerConfig { id: n.id, addr: n.addr.clone(), peer_addr: n.peer_addr.clone() })
            .collect();
        self.regions = Some(file);
        Ok(())
    }

    /// The newest logic version this node applies (`cluster.max-logic-version`, 0 = this build's).
    pub fn max_logic_version(&self) -> u32 {
        match self.cluster.max_logic_version {
            0 => meridian_domain::apply::LOGIC_VERSION,
            v => v,
        }
    }

    /// The config as TOML text (the secret included: write it only to a private file).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("serialize config as TOML")
    }

    /// `host:port` that clients use to reach this node.
    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// `host:port` that peers use to reach this node (empty when `peer-listen` is missing,
    /// which `validate` reports).
    pub fn peer_advertise_addr(&self) -> String {
        self.peer_advertise.clone().unwrap_or_else(|| self.peer_listen.map(|a| a.to_string()).unwrap_or_default())
    }

    /// Checks every rule and reports all the problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.validate_identity(&mut p);
        self.validate_addresses(&mut p);
        self.validate_peers(&mut p);
        if let Some(n) = self.worker_threads {
            p.check((1..=1024).contains(&n), "worker-threads", || {
                format!("{n} is out of range: use 1..=1024, or leave it unset for one per core")
            });
        }
        self.auth.validate(&mut p);
        self.validate_cluster(&mut p);
        self.validate_link(&mut p);
        self.limits.validate(&mut p);
        self.raft.validate(&mut p);
        self.callbacks.validate(&mut p);
        self.push.validate(&mut p);
        self.archive.validate(&mut p, self.limits.recall_window_seconds);
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p.0 })
        }
    }

    fn validate_identity(&self, p: &mut Problems) {
        p.check(self.node_id >= 1, "node-id", || {
            "missing or 0: set node-id to this node's id (>= 1), unique within the region".into()
        });
        p.check(is_region_code(&self.region), "region", || {
            if self.region.is_empty() {
                "missing: set region to this node's region code, e.g. \"sg\"".into()
            } else {
                format!(
                    "{:?} is not a region code: use 2..=16 lowercase letters, digits or '-', e.g. \"sg\"",
                    self.region
                )
            }
        });
        p.check(!self.data_dir.as_os_str().is_empty(), "data-dir", || {
            "empty: set data-dir to the directory that holds this node's data".into()
        });
        p.check(self.shards.is_power_of_two() && self.shards <= MAX_SHARDS, "shards", || {
            format!("{} is not a power of two in 1..={MAX_SHARDS}: use e.g. 8 (the default)", self.shards)
        });
    }

    fn validate_addresses(&self, p: &mut Problems) {
        p.check(self.listen.port() != 0, "listen", || {
            "port 0 is not allowed: peers need a fixed port to reach this node".into()
        });
        match &self.advertise {
            Some(addr) => p.check(is_host_port(addr), "advertise", || {
                format!("{addr:?} is not host:port (e.g. \"node1.sg.example:7001\")")
            }),
            None => p.check(!self.listen.ip().is_unspecified(), "advertise", || {
                format!(
                    "required when listen is {} (a wildcard address peers cannot dial): set it to \
                     the host:port peers and clients use",
                    self.listen
                )
            }),
        }
        if let Some(http) = self.http_listen {
            p.check(http.port() != 0, "http-listen", || {
                "port 0 is not allowed: health checks and scrapers need a fixed port".into()
            });
            p.check(http != self.listen, "http-listen", || {
                format!("{http} is also the gRPC listen address: use another port")
            });
            p.check(Some(http) != self.peer_listen, "http-listen", || {
                format!("{http} is also the peer-listen address: use another port")
            });
        }
        match self.peer_listen {
            None => p.check(false, "peer-listen", || {
                "missing: set peer-listen to the address of this node's peer listener (Raft traffic \
                 between the region's nodes), a port of its own, e.g. \"127.0.0.1:7101\""
                    .into()
            }),
            Some(peer) => {
                p.check(peer.port() != 0, "peer-listen", || {
                    "port 0 is not allowed: peers need a fixed port to reach this node".into()
                });
                p.check(peer != self.listen, "peer-listen", || {
                    format!("{peer} is also the client listen address: the peer listener needs a port of its own")
                });
                match &self.peer_advertise {
                    Some(addr) => p.check(is_host_port(addr), "peer-advertise", || {
                        format!("{addr:?} is not host:port (e.g. \"node1.sg.internal:7101\")")
                    }),
                    None => p.check(!peer.ip().is_unspecified(), "peer-advertise", || {
                        format!(
                            "required when peer-listen is {peer} (a wildcard address peers cannot \
                             dial): set it to the host:port peers use"
                        )
                    }),
                }
            }
        }
    }

    fn validate_link(&self, p: &mut Problems) {
        let own_link = self.regions.as_ref().and_then(|file| {
            let region = file.region(&self.region)?;
            let me = region.all_nodes().find(|n| n.id == self.node_id)?;
            Some((file.regions.len(), me.link_addr.clone()))
        });
        if let Some((regions, Some(link_addr))) = &own_link {
            p.check(*regions == 1 || self.link_listen.is_some(), "link-listen", || {
                format!("missing: the topology file gives this node the link address {link_addr}: listen on it")
            });
        }
        let Some(listen) = self.link_listen else { return };
        p.check(listen.port() != 0, "link-listen", || "port 0: other regions dial this address".into());
        p.check(
            Some(listen) != self.peer_listen && listen != self.listen && Some(listen) != self.http_listen,
            "link-listen",
            || format!("{listen} is another listener's address: give the region link a port of its own"),
        );
        let secret = &self.link.secret;
        p.check(secret.len() >= MIN_SECRET_BYTES, "link.secret", || {
            format!(
                "{}: with link-listen set, give a random link secret of at least {MIN_SECRET_BYTES} bytes, the \
                 same in every region (or {LINK_SECRET_ENV})",
                if secret.is_empty() { "missing" } else { "too short" }
            )
        });
        p.check(*secret != self.auth.secret && *secret != self.cluster.secret, "link.secret", || {
            "must differ from auth.secret and cluster.secret: one key must not open another door".into()
        });
    }

    fn validate_cluster(&self, p: &mut Problems) {
        let newest = meridian_domain::apply::LOGIC_VERSION;
        p.check(self.cluster.max_logic_version <= newest, "cluster.max-logic-version", || {
            format!(
                "{} is newer than this build implements: use 1..={newest}, or 0 for {newest}",
                self.cluster.max_logic_version
            )
        });
        let secret = &self.cluster.secret;
        p.check(secret.len() >= MIN_SECRET_BYTES, "cluster.secret", || {
            if secret.is_empty() {
                format!(
                    "missing: set a random secret of at least 16 bytes, the same on every node of \
                     the region and different from auth.secret (e.g. `openssl rand -hex 32`), or \
                     supply it in the environment variable {CLUSTER_SECRET_ENV}"
                )
            } else {
                format!("too short ({} bytes): use at least {MIN_SECRET_BYTES} random bytes", secret.len())
            }
        });
        p.check(secret.is_empty() || *secret != self.auth.secret, "cluster.secret", || {
            "equals auth.secret: use a secret of its own, so that the key that signs user tokens \
             cannot also open the peer listener"
                .into()
        });
    }

    fn validate_peers(&self, p: &mut Problems) {
        let mut ids = HashSet::new();
        let mut addrs: HashMap<&str, u64> = HashMap::new();
        let mut peer_addrs: HashMap<&str, u64> = HashMap::new();
        for peer in &self.peers {
            p.check(is_host_port(&peer.peer_addr), "peers.peer-addr", || {
                format!("peer {}: {:?} is not host:port (e.g. \"10.0.0.1:7101\")", peer.id, peer.peer_addr)
            });
            if let Some(other) = peer_addrs.insert(&peer.peer_addr, peer.id) {
                p.check(false, "peers.peer-addr", || {
                    format!("peers {other} and {} share the peer address {}", peer.id, peer.peer_addr)
                });
            }
            p.check(peer.id >= 1, "peers.id", || "peer ids start at 1, found 0".into());
            p.check(ids.insert(peer.id), "peers.id", || {
                format!("node id {} is listed twice: each peer needs its own id", peer.id)
            });
            p.check(is_host_port(&peer.addr), "peers.addr", || {
                format!("peer {}: {:?} is not host:port (e.g. \"10.0.0.1:7001\")", peer.id, peer.addr)
            });
            if let Some(other) = addrs.insert(&peer.addr, peer.id) {
                p.check(false, "peers.addr", || {
                    format!("peers {other} and {} share the address {}", peer.id, peer.addr)
                });
            }
        }
        let me = self.peers.iter().find(|peer| peer.id == self.node_id);
        if self.bootstrap {
            p.check(!self.peers.is_empty(), "peers", || {
                "empty, but bootstrap = true needs the region's initial voters in [[peers]] \
                 (this node included); for a node joining an existing region set bootstrap = false"
                    .into()
            });
            p.check(self.peers.is_empty() || me.is_some(), "peers", || {
                format!(
                    "this node (node-id {}) is not listed, but bootstrap = true makes it an initial \
                     voter: add [[peers]] id = {}, addr = {:?}, peer-addr = {:?}",
                    self.node_id,
                    self.node_id,
                    self.advertise_addr(),
                    self.peer_advertise_addr()
                )
            });
        }
        if let Some(me) = me {
            let advertised = self.advertise_addr();
            p.check(me.addr == advertised, "peers.addr", || {
                format!(
                    "this node (id {}) is listed at {:?} but advertises {advertised:?}: make them equal",
                    me.id, me.addr
                )
            });
            let peer_advertised = self.peer_advertise_addr();
            p.check(self.peer_listen.is_none() || me.peer_addr == peer_advertised, "peers.peer-addr", || {
                format!(
                    "this node (id {}) is listed with peer-addr {:?} but its peer listener is at \
                     {peer_advertised:?}: make them equal",
                    me.id, me.peer_addr
                )
            });
        }
    }
}

impl AuthConfig {
    fn validate(&self, p: &mut Problems) {
        p.check(
            !self.app_id.is_empty()
                && self.app_id.len() <= 64
                && !self.app_id.chars().any(|c| c.is_control() || c.is_whitespace()),
            "auth.app-id",
            || format!("{:?} must be 1..=64 bytes without spaces or control characters", self.app_id),
        );
        p.check(self.secret.len() >= MIN_SECRET_BYTES, "auth.secret", || {
            if self.secret.is_empty() {
                "missing: set a random secret of at least 16 bytes, the same on every node of the \
                 region (e.g. `openssl rand -hex 32`)"
                    .into()
            } else {
                format!(
                    "too short ({} bytes): use at least {MIN_SECRET_BYTES} random bytes \
                     (e.g. `openssl rand -hex 32`)",
                    self.secret.len()
                )
            }
        });
        p.check((1..=MAX_TOKEN_TTL_SECONDS).contains(&self.token_ttl_seconds), "auth.token-ttl-seconds", || {
            format!(
                "{} is out of range: use 1..={MAX_TOKEN_TTL_SECONDS} seconds (default {})",
                self.token_ttl_seconds, DEFAULT_TOKEN_TTL_SECONDS
            )
        });
    }
}

impl LimitsConfig {
    fn validate(&self, p: &mut Problems) {
        p.check((1..=MAX_MESSAGE_BYTES_CEILING).contains(&self.max_message_bytes), "limits.max-message-bytes", || {
            format!(
                "{} is out of range: use 1..={MAX_MESSAGE_BYTES_CEILING} bytes (default 12288)",
                self.max_message_bytes
            )
        });
        p.check(self.recall_window_seconds >= 1, "limits.recall-window-seconds", || {
            "0 is not allowed: use at least 1 second (default 120)".into()
        });
        p.check(
            self.request_id_window_seconds == 0 || self.request_id_window_seconds >= 60,
            "limits.request-id-window-seconds",
            || {
                format!(
                    "{} is too short: a client retrying a send would make a second message; use 0 (for ever) or at \
                     least 60 seconds (default 604800)",
                    self.request_id_window_seconds
                )
            },
        );
        for (value, key) in [
            (self.max_group_members_work, "limits.max-group-members-work"),
            (self.max_group_members_public, "limits.max-group-members-public"),
            (self.max_group_members_meeting, "limits.max-group-members-meeting"),
            (self.max_group_members_community, "limits.max-group-members-community"),
            (self.max_blocked, "limits.max-blocked"),
            (self.max_friends, "limits.max-friends"),
            (self.max_friend_requests, "limits.max-friend-requests"),
            (self.max_joined_groups, "limits.max-joined-groups"),
        ] {
            p.check((1..=10_000_000).contains(&value), key, || {
                format!("{value} is out of range: use 1..=10000000 members")
            });
        }
        p.check((1..=1000).contains(&self.max_history_page), "limits.max-history-page", || {
            format!("{} is out of range: use 1..=1000 messages (default 100)", self.max_history_page)
        });
    }
}

impl RaftTuning {
    fn validate(&self, p: &mut Problems) {
        p.check(self.heartbeat_interval_ms >= 1, "raft.heartbeat-interval-ms", || {
            "0 is not allowed: use e.g. 100 ms".into()
        });
        p.check(self.heartbeat_interval_ms < self.election_timeout_min_ms, "raft.heartbeat-interval-ms", || {
            format!(
                "{} ms must be below raft.election-timeout-min-ms ({} ms), or followers start \
                     elections against a healthy leader; a third of it or less is usual",
                self.heartbeat_interval_ms, self.election_timeout_min_ms
            )
        });
        p.check(self.election_timeout_min_ms < self.election_timeout_max_ms, "raft.election-timeout-min-ms", || {
            format!(
                "{} ms must be below raft.election-timeout-max-ms ({} ms): the timeout is drawn \
                     from that range so that candidates do not collide",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            )
        });
        p.check(self.snapshot_logs_since_last >= 1, "raft.snapshot-logs-since-last", || {
            "0 is not allowed: use e.g. 5000 entries".into()
        });
        p.check(self.snapshot_log_size_percent <= 10_000, "raft.snapshot-log-size-percent", || {
            format!(
                "{} is out of range: use 0..=10000 percent of the last snapshot's size (default 50; 0: entries only)",
                self.snapshot_log_size_percent
            )
        });
        p.check((1..=65_536).contains(&self.max_batch_commands), "raft.max-batch-commands", || {
            format!("{} is out of range: use 1..=65536 commands (default 512)", self.max_batch_commands)
        });
    }
}

/// `2..=16` of `[a-z0-9-]`, the same rule as the domain's `RegionCode`.
fn is_region_code(s: &str) -> bool {
    (2..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `host:port` with a non-empty host and a port in 1..=65535 (IPv6 hosts in brackets).
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && !host.contains(':') && !host.chars().any(char::is_whitespace)
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests;
