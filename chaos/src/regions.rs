//! `meridian-chaos regions`: a fault campaign across regions.
//!
//! Three regions of one node each on loopback — `sg` and `kr` (open), `de` (strict) — run
//! from one topology file in which every region's link address is a fault proxy in front of
//! its link listener. Users of every region are created through random regions' endpoints;
//! clients send in same-region and cross-region conversations through random endpoints
//! (nearest access: most requests are forwarded), mark them read and list them, while a
//! seeded schedule kills whole regions (restarted at heal), cuts the links into a region
//! (new connections refused, open ones reset) and delays them. Then everything heals, the
//! deployment settles and the checker judges:
//!
//! - nothing acknowledged is lost: every acknowledged send is in its conversation's
//!   history at its seq; histories are gapless; no request id appears twice; nothing
//!   appears that was never sent;
//! - cross-region effects applied once: each member's region logged exactly one
//!   `ConversationJoined` per conversation it is in;
//! - lists are right after healing: each user's list has exactly their conversations, each
//!   with its history's last seq, the unread count its cursor gives, and the home region
//!   the residency rule gives;
//! - the residency audit reports 0 violations on every region; every region's
//!   projections equal a replay of its event log.
//!
//! Requests that failed with `REGION_UNAVAILABLE` are counted with their latency (the
//! promise is to fail fast, not to hang).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meridian_client::api::logged_event::Kind as EventKind;
use meridian_client::api::ReadConsistency;
use meridian_client::{Client, ClientConfig, ClientError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::proxy::Proxy;

/// The deployment: (code, strict).
pub(crate) const REGIONS: [(&str, bool); 3] = [("sg", false), ("kr", false), ("de", true)];
const USERS_PER_REGION: usize = 4;
pub(crate) const SHARDS: u32 = 4;

#[derive(Debug, Clone)]
pub struct RegionsOptions {
    pub seed: u64,
    pub duration: Duration,
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub clients: u32,
    pub base_port: u16,
}

/// One region's single node and the proxy in front of its link listener.
pub(crate) struct RegionNode {
    pub(crate) code: &'static str,
    pub(crate) client_addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    pub(crate) child: Option<Child>,
    proxy: Proxy,
}

impl Drop for RegionNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RegionNode {
    pub(crate) fn spawn(&mut self, binary: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(binary)
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start region {}", self.code))?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn hex_secret() -> String {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// Writes the topology and the node configs and starts every region.
async fn start(options: &RegionsOptions) -> anyhow::Result<(Vec<RegionNode>, String)> {
    let (nodes, _, token) = start_with_standby(options, None).await?;
    Ok((nodes, token))
}

/// [`start`], with a one-node standby for region `standby` (node 11, in its `CODE/backup`
/// place, its ports from the region's base + 5) when named.
pub(crate) async fn start_with_standby(
    options: &RegionsOptions,
    standby: Option<&'static str>,
) -> anyhow::Result<(Vec<RegionNode>, Option<RegionNode>, String)> {
    std::fs::create_dir_all(&options.dir)?;
    let (auth, cluster, link) = (hex_secret(), hex_secret(), hex_secret());
    let ports = |i: usize| {
        let base = options.base_port + 20 * u16::try_from(i).unwrap_or(0);
        (base, base + 1, base + 2, base + 3, base + 4)
    };
    let ports_standby = |i: usize| {
        let base = options.base_port + 20 * u16::try_from(i).unwrap_or(0) + 5;
        (base, base + 1, base + 2, base + 3, base + 4)
    };
    let mut topology = String::from("app = \"meridian-chaos\"\n");
    for (i, (code, strict)) in REGIONS.iter().enumerate() {
        let (client, peer, _, proxy, _) = ports(i);
        topology.push_str(&format!(
            "\n[[region]]\ncode = \"{code}\"\nresidency = \"{}\"\nshards = {SHARDS}\narchive = [\"{code}\"]\n\
             dr = [\"{code}/backup\"]\n[[region.node]]\nid = 1\naddr = \"{}\"\npeer-addr = \"{}\"\n\
             link-addr = \"{}\"\nzone = \"{code}-1\"\n",
            if *strict { "strict" } else { "open" },
            addr(client),
            addr(peer),
            addr(proxy),
        ));
        if standby == Some(*code) {
            let (client, peer, _, proxy, _) = ports_standby(i);
            topology.push_str(&format!(
                "[[region.standby]]\nid = 11\naddr = \"{}\"\npeer-addr = \"{}\"\nlink-addr = \"{}\"\n\
                 zone = \"{code}-backup\"\nplace = \"{code}/backup\"\n",
                addr(client),
                addr(peer),
                addr(proxy),
            ));
        }
    }
    std::fs::write(options.dir.join("regions.toml"), topology)?;
    let secrets = Secrets { auth, cluster, link };
    let mut nodes = Vec::new();
    for (i, (code, _)) in REGIONS.iter().enumerate() {
        nodes.push(spawn_node(options, &secrets, code, 1, ports(i), "").await?);
    }
    let mut standby_node = None;
    if let Some((i, (code, _))) = REGIONS.iter().enumerate().find(|(_, (c, _))| Some(*c) == standby) {
        standby_node = Some(spawn_node(options, &secrets, code, 11, ports_standby(i), "-standby").await?);
    }
    let out = Command::new(&options.binary)
        .args(["admin-token", "--config"])
        .arg(&nodes[0].config)
        .output()
        .context("mint an admin token")?;
    anyhow::ensure!(out.status.success(), "admin-token: {}", String::from_utf8_lossy(&out.stderr));
    Ok((nodes, standby_node, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// The secrets every node of the deployment shares.
struct Secrets {
    auth: String,
    cluster: String,
    link: String,
}

/// Writes node `id`'s config for region `code` and starts it, with a fault proxy in front of
/// its link listener. Node 1 bootstraps its region; another id (the standby's) never does.
async fn spawn_node(
    options: &RegionsOptions,
    secrets: &Secrets,
    code: &'static str,
    id: u64,
    (client, peer, link_listen, proxy, http): (u16, u16, u16, u16, u16),
    suffix: &str,
) -> anyhow::Result<RegionNode> {
    let Secrets { auth, cluster, link } = secrets;
    let data = options.dir.join(format!("{code}{suffix}-data"));
    let config = format!(
        "node-id = {id}\nregion = \"{code}\"\nlisten = \"{}\"\npeer-listen = \"{}\"\nhttp-listen = \"{}\"\n\
         data-dir = \"{}\"\nshards = {SHARDS}\npeers = []\nbootstrap = {}\nlink-listen = \"{}\"\n\
         topology = \"regions.toml\"\nworker-threads = 1\n\n[auth]\nsecret = \"{auth}\"\n\n\
         [cluster]\nsecret = \"{cluster}\"\n\n[link]\nsecret = \"{link}\"\n",
        addr(client),
        addr(peer),
        addr(http),
        data.display(),
        id == 1,
        addr(link_listen),
    );
    let config_path = options.dir.join(format!("{code}{suffix}.toml"));
    std::fs::write(&config_path, config)?;
    let proxy = Proxy::start(addr(proxy), addr(link_listen)).await.context("start a link proxy")?;
    let mut node = RegionNode {
        code,
        client_addr: addr(client),
        config: config_path,
        log: options.dir.join(format!("{code}{suffix}.log")),
        child: None,
        proxy,
    };
    node.spawn(&options.binary)?;
    Ok(node)
}

pub(crate) fn client(
    endpoint: SocketAddr,
    token: &str,
    user: Option<&str>,
    budget: Duration,
) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new([endpoint.to_string()], token.to_owned());
    if let Some(user) = user {
        config = config.with_act_as(user);
    }
    config.retry_budget = budget;
    config.request_timeout = Duration::from_secs(5);
    Ok(Client::with_config(config)?)
}

/// Waits until every region reports every link up.
pub(crate) async fn wait_linked(nodes: &[RegionNode], token: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut all = true;
        for n in nodes {
            let up = match client(n.client_addr, token, None, Duration::ZERO)?.cluster_status(false).await {
                Ok(s) => s.region_links.len() == REGIONS.len() - 1 && s.region_links.iter().all(|l| l.state == "up"),
                Err(_) => false,
            };
            all &= up;
        }
        if all {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the regions did not link up within {within:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The users: `s0..`, `k0..`, `d0..`, homed in sg, kr, de.
pub(crate) fn users() -> Vec<(String, &'static str)> {
    REGIONS
        .iter()
        .flat_map(|(code, _)| (0..USERS_PER_REGION).map(move |i| (format!("{}{i}", &code[..1]), *code)))
        .collect()
}

/// The conversation's home region by the residency rule (one strict member: its region;
/// both open: the first id's region).
pub(crate) fn home_of(a: (&str, &str), b: (&str, &str)) -> String {
    let strict = |r: &str| REGIONS.iter().any(|(c, s)| *c == r && *s);
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    if first.1 == second.1 || strict(first.1) {
        first.1.to_owned()
    } else if strict(second.1) {
        second.1.to_owned()
    } else {
        first.1.to_owned()
    }
}

/// The workload's conversations: every cross-region pair of the users 0 and 1 of each
/// region, and one same-region pair per region.
pub(crate) fn conversations(users: &[(String, &'static str)]) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = Vec::new();
    for (i, a) in users.iter().enumerate() {
        for b in users.iter().skip(i + 1) {
            let low = |u: &str| u.ends_with('0') || u.ends_with('1');
            if (a.1 != b.1 && low(&a.0) && low(&b.0)) || (a.1 == b.1 && a.0.ends_with('2') && b.0.ends_with('3')) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

/// A conversation of the workload: its two members with their home regions.
pub(crate) type Pair = ((String, &'static str), (String, &'static str));

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    KillRegion,
    CutLinks,
    DelayLinks,
}

/// What the workload saw.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// (conversation pair) → request ids acknowledged with their seq.
    pub(crate) acked: BTreeMap<(String, String), Vec<(String, u64)>>,
    /// Every request id sent, per pair (acknowledged or not).
    pub(crate) sent: BTreeMap<(String, String), BTreeSet<String>>,
    pub(crate) ops: u64,
    pub(crate) unknown: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) region_unavailable_max: Duration,
}

pub(crate) fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Runs the campaign; `Ok(true)` when the checker found nothing.
pub async fn run(options: RegionsOptions) -> anyhow::Result<bool> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let (mut nodes, token) = start(&options).await?;
    wait_linked(&nodes, &token, Duration::from_secs(60)).await?;
    let endpoints: Vec<SocketAddr> = nodes.iter().map(|n| n.client_addr).collect();

    // Users, each created through a random region's endpoint, with its home region named.
    let users = users();
    for (user, home) in &users {
        let via = endpoints[rng.gen_range(0..endpoints.len())];
        client(via, &token, None, Duration::from_secs(20))?
            .create_user(user, Some(home))
            .await
            .with_context(|| format!("create {user} in {home} through {via}"))?;
    }
    // Conversations: every cross-region pair of the users 0 and 1 of each region, and one
    // same-region pair per region.
    let pairs = conversations(&users);
    tracing::info!(users = users.len(), conversations = pairs.len(), seed = options.seed, "regions campaign starts");

    let record = Arc::new(Mutex::new(Record::default()));
    let deadline = Instant::now() + options.duration;
    let mut workers = Vec::new();
    for w in 0..options.clients {
        let (pairs, endpoints, token, record) = (pairs.clone(), endpoints.clone(), token.clone(), record.clone());
        let mut rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1000).wrapping_add(u64::from(w)));
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let ((a, _), (b, _)) = &pairs[rng.gen_range(0..pairs.len())];
                let (from, to) = if rng.gen_bool(0.5) { (a, b) } else { (b, a) };
                let via = endpoints[rng.gen_range(0..endpoints.len())];
                let Ok(c) = client(via, &token, Some(from), Duration::from_secs(4)) else { continue };
                let started = Instant::now();
                let key = pair(from, to);
                let (outcome, rid) = if rng.gen_bool(0.8) {
                    n += 1;
                    let rid = format!("w{w}-{n}");
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .sent
                        .entry(key.clone())
                        .or_default()
                        .insert(rid.clone());
                    (c.send_text(to, &rid, Some(rid.clone())).await.map(|r| Some(r.seq)), Some(rid))
                } else {
                    (c.mark_read(to, None).await.map(|_| None), None)
                };
                {
                    let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                    r.ops += 1;
                    match outcome {
                        Ok(Some(seq)) => r.acked.entry(key).or_default().push((rid.unwrap_or_default(), seq)),
                        Ok(None) => {}
                        Err(e) => classify_into(&mut r, &e, started.elapsed()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
            }
        }));
    }

    // The fault schedule.
    let mut faults: BTreeMap<FaultKind, u64> = BTreeMap::new();
    while Instant::now() + Duration::from_secs(4) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2000..5000))).await;
        let kind = [FaultKind::KillRegion, FaultKind::CutLinks, FaultKind::DelayLinks][rng.gen_range(0..3)];
        let target = rng.gen_range(0..nodes.len());
        let hold = Duration::from_millis(rng.gen_range(2000..6000));
        let code = nodes[target].code;
        tracing::info!(?kind, region = code, hold_ms = hold.as_millis(), "fault");
        *faults.entry(kind).or_default() += 1;
        match kind {
            FaultKind::KillRegion => nodes[target].kill(),
            FaultKind::CutLinks => nodes[target].proxy.set(|f| {
                f.blocked_sources.insert(std::net::IpAddr::from([127, 0, 0, 1]));
                f.reset_probability = 1.0;
            }),
            FaultKind::DelayLinks => nodes[target].proxy.set(|f| {
                f.delay_ms = 150;
                f.jitter_ms = 100;
            }),
        }
        tokio::time::sleep(hold).await;
        nodes[target].proxy.heal();
        if nodes[target].child.is_none() {
            nodes[target].spawn(&options.binary)?;
        }
    }
    for w in workers {
        let _ = w.await;
    }
    for n in &mut nodes {
        n.proxy.heal();
        if n.child.is_none() {
            n.spawn(&options.binary)?;
        }
    }
    wait_linked(&nodes, &token, Duration::from_secs(90)).await?;

    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
    let violations = check(&nodes, &token, &pairs, &record, &Lost::default()).await?.violations;
    let acked: usize = record.acked.values().map(Vec::len).sum();
    println!("regions campaign, seed {}: 3 regions (sg open, kr open, de strict), 1 node each", options.seed);
    println!("  operations: {}  sends acknowledged: {acked}  unknown outcome: {}", record.ops, record.unknown);
    println!("  errors by reason: {:?}", record.errors);
    println!("  faults: {}", faults.iter().map(|(k, n)| format!("{k:?} {n}")).collect::<Vec<_>>().join(", "));
    println!("  slowest REGION_UNAVAILABLE answer: {} ms", record.region_unavailable_max.as_millis());
    println!("  conversations checked: {}  violations: {}", pairs.len(), violations.len());
    for v in &violations {
        println!("  VIOLATION: {v}");
    }
    Ok(violations.is_empty())
}

pub(crate) fn classify_into(r: &mut Record, e: &ClientError, took: Duration) {
    match e.reason() {
        Some(reason) => {
            if reason == "REGION_UNAVAILABLE" {
                r.region_unavailable_max = r.region_unavailable_max.max(took);
            }
            // Every refusal with a reason changed nothing — except a timeout inside the
            // home region, which the SDK reports without one.
            *r.errors.entry(reason.to_owned()).or_default() += 1;
        }
        None => {
            r.unknown += 1;
            *r.errors.entry("no reason (outcome unknown)".to_owned()).or_default() += 1;
        }
    }
}

/// Acknowledged sends a failover may have lost (the drill's RPO): per conversation, request
/// id → the seq it was acknowledged with.
pub(crate) type Lost = BTreeMap<(String, String), BTreeMap<String, u64>>;

/// What the checker found.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) violations: Vec<String>,
    /// Acknowledged sends of `lost` that are not in their history.
    pub(crate) missing: BTreeSet<(String, String, String)>,
    /// Of those, the ones whose seq now holds another message.
    pub(crate) rewritten: usize,
    /// List rows ahead of their history by at most the seqs that were lost.
    pub(crate) rows_ahead: usize,
}

/// The checker: see the module documentation. An acknowledged send missing from its history
/// is a violation unless `lost` names it (then it is counted in `missing`).
pub(crate) async fn check(
    nodes: &[RegionNode],
    token: &str,
    pairs: &[Pair],
    record: &Record,
    lost: &Lost,
) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();
    let mut violations = Vec::new();
    let endpoint = |region: &str| nodes.iter().find(|n| n.code == region).map(|n| n.client_addr);
    let budget = Duration::from_secs(30);
    // Histories, from each conversation's home region.
    let mut lengths: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((a, ah), (b, bh)) in pairs {
        let home = home_of((a, ah), (b, bh));
        let at = endpoint(&home).context("home endpoint")?;
        let history = client(at, token, Some(a), budget)?.history_all(b, ReadConsistency::Linearizable).await?;
        let key = pair(a, b);
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
            violations.push(format!("{a}/{b}: history seqs are not 1..n: {seqs:?}"));
        }
        let texts: Vec<String> = history.iter().map(meridian_client::message_text).collect();
        let unique: BTreeSet<&String> = texts.iter().collect();
        if unique.len() != texts.len() {
            violations.push(format!("{a}/{b}: a request id appears twice in the history"));
        }
        let sent = record.sent.get(&key).cloned().unwrap_or_default();
        if let Some(phantom) = texts.iter().find(|t| !sent.contains(*t)) {
            violations.push(format!("{a}/{b}: {phantom} is in the history but was never sent"));
        }
        for (rid, seq) in record.acked.get(&key).into_iter().flatten() {
            let at_seq = usize::try_from(*seq).ok().and_then(|s| texts.get(s.wrapping_sub(1)));
            if at_seq == Some(rid) {
                continue;
            }
            if lost.get(&key).is_some_and(|l| l.get(rid) == Some(seq)) {
                checked.missing.insert((key.0.clone(), key.1.clone(), rid.clone()));
                checked.rewritten += usize::from(at_seq.is_some());
            } else {
                violations.push(format!("{a}/{b}: acknowledged {rid} at seq {seq} is not there (found {at_seq:?})"));
            }
        }
        lengths.insert(key, seqs.len() as u64);
    }
    // Lists, from each user's home region; effects applied once.
    let mut expected: BTreeMap<String, BTreeMap<String, (u64, String)>> = BTreeMap::new();
    for ((a, ah), (b, bh)) in pairs {
        let length = lengths.get(&pair(a, b)).copied().unwrap_or(0);
        if length == 0 {
            continue;
        }
        let home = home_of((a, ah), (b, bh));
        expected.entry(a.clone()).or_default().insert(b.clone(), (length, home.clone()));
        expected.entry(b.clone()).or_default().insert(a.clone(), (length, home));
    }
    for (user, home) in users() {
        let at = endpoint(home).context("home endpoint")?;
        let list = client(at, token, Some(&user), budget)?.conversations_all(ReadConsistency::Linearizable).await?;
        let seen: BTreeMap<String, (u64, String)> =
            list.conversations.iter().map(|c| (c.peer.clone(), (c.last_seq, c.home_region.clone()))).collect();
        let want = expected.get(&user).cloned().unwrap_or_default();
        // A row may stay ahead of its history by seqs a failover lost (their effects reached
        // the row before the cut); never by more.
        let ahead_by_loss = |peer: &String, (seq, home): &(u64, String)| {
            let lost_max = lost.get(&pair(&user, peer)).and_then(|l| l.values().max().copied()).unwrap_or(0);
            want.get(peer).is_some_and(|(len, h)| h == home && *seq > *len && *seq <= lost_max)
        };
        let ahead = seen.iter().filter(|(p, v)| ahead_by_loss(p, v)).count();
        checked.rows_ahead += ahead;
        let matches =
            seen.len() == want.len() && seen.iter().all(|(p, v)| want.get(p) == Some(v) || ahead_by_loss(p, v));
        if !matches || list.conversations.len() != want.len() {
            violations.push(format!("{user}'s list: expected {want:?}, got {seen:?}"));
        }
        for c in &list.conversations {
            if c.unread != c.last_seq.saturating_sub(c.read_seq) || c.home_unavailable {
                violations.push(format!(
                    "{user}'s row with {}: unread {} for {}..{}",
                    c.peer, c.unread, c.read_seq, c.last_seq
                ));
            }
        }
    }
    for (code, _) in REGIONS {
        let admin = client(endpoint(code).context("endpoint")?, token, None, budget)?;
        let mut joins: BTreeMap<(String, String), u32> = BTreeMap::new();
        for shard in 0..SHARDS {
            for e in admin.read_all_events(shard, 0).await? {
                if let Some(EventKind::ConversationJoined(j)) = e.kind {
                    *joins.entry((j.user, j.conversation_id)).or_default() += 1;
                }
            }
        }
        for ((user, conversation), n) in &joins {
            if *n != 1 {
                violations.push(format!("{code}: {user} joined {conversation} {n} times"));
            }
        }
        let expected_joins: usize =
            users().iter().filter(|(_, h)| *h == code).map(|(u, _)| expected.get(u).map_or(0, BTreeMap::len)).sum();
        if joins.len() != expected_joins {
            violations.push(format!("{code}: {} conversation joins logged, {expected_joins} expected", joins.len()));
        }
        let verified = admin.verify_projections().await?;
        for s in verified.shards.iter().filter(|s| !s.equal) {
            violations.push(format!("{code}: shard {} projections differ from a replay: {}", s.shard, s.difference));
        }
    }
    let audit = client(endpoint("sg").context("endpoint")?, token, None, budget)?.audit_residency(false).await?;
    for n in &audit.nodes {
        if n.violation_count > 0 || !n.error.is_empty() {
            violations.push(format!(
                "residency audit of {} node {}: {} violation(s) {:?} {}",
                n.region, n.node_id, n.violation_count, n.violations, n.error
            ));
        }
    }
    checked.violations = violations;
    Ok(checked)
}
