//! The `fanout` workload: group messages to members that all hold a live stream, the
//! counterpart of the peer's MUC run (`xmpp_load.py muc`).
//!
//! Set-up (idempotent): the members `bench-f{M}-u{i}` and the public group `bench-fanout-{M}`
//! holding them all, created by member 0 with the others added [`ADD_BATCH`] at a time. Then
//! one `Subscribe` stream per member, [`BenchArgs::streams_per_conn`] streams to a client and
//! client `j` on node `j mod N`, each resuming from the group's newest seq (an earlier run's
//! messages are not sent again). Once every stream has caught up, each of S senders keeps W
//! messages in flight: it sends the next when one of its earlier ones has reached every
//! member's stream, its own included. A message's text carries the run's nonce and the
//! message's id, by which each receipt is matched.
//!
//! Measured within the window: receipts (deliveries), messages that reached every member,
//! the latency from the start of the send until each receipt and until the last one, and CPU.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meridian_client::api::CreateGroupRequest;
use meridian_client::{encode_sync_token, message_text, Client};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bench_args::BenchArgs;
use crate::client_pool::ClientPool;
use crate::cpu_meter::{CpuMeter, CpuSample};
use crate::fanout_report::{FanoutFigures, FanoutReport, FanoutShape};
use crate::fanout_tracker::{FanoutTracker, Receipt};
use crate::latency_stats::LatencyStats;
use crate::workload::{create_users, TEXT_BYTES};

/// Users per create or add call (the server takes up to 500).
const ADD_BATCH: usize = 250;
/// The group type: `public` holds up to 2,000 members, added by the owner.
const GROUP_TYPE: &str = "public";
/// Clients the set-up calls share.
const SETUP_CONNS: usize = 4;
/// How long the streams may take to catch up, besides [`READY_PER_STREAM`] each.
const READY_BASE: Duration = Duration::from_secs(30);
const READY_PER_STREAM: Duration = Duration::from_millis(100);
/// How often messages past the timeout are looked for.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);

/// What the member streams and the sends tell the coordinator.
#[derive(Debug)]
enum Note {
    /// A member's stream caught up, on `endpoint`.
    Ready { endpoint: String },
    /// A member's stream received message `id` at `at`.
    Receipt { id: u64, member: usize, at: Instant },
    /// The send of message `id` failed.
    SendFailed { id: u64, error: String },
    /// A member's stream broke and could not resubscribe.
    StreamFailed { member: usize, error: String },
}

/// Runs the fan-out workload and returns its report.
pub async fn run(args: &BenchArgs) -> anyhow::Result<FanoutReport> {
    let m = args.members;
    let members: Arc<[String]> = (0..m).map(|i| format!("bench-f{m}-u{i}")).collect();
    let group: Arc<str> = format!("bench-fanout-{m}").into();

    let setup_started = Instant::now();
    let setup = ClientPool::connect(&args.endpoint, &args.admin_token, SETUP_CONNS).context("build the clients")?;
    create_users(&setup, args.clients, members.clone()).await?;
    let last_seq = make_group(setup.client(0), &group, &members).await?;
    tracing::info!(group = %group, members = m, last_seq, elapsed_ms = setup_started.elapsed().as_millis() as u64, "group in place");

    // The member streams: every client starts at its own node (ClientPool rotates them), and
    // their number is a multiple of the nodes so that each node serves as many streams.
    let nodes = args.endpoint.len().max(1);
    let conns = m.div_ceil(args.streams_per_conn).div_ceil(nodes) * nodes;
    let streams_pool = ClientPool::connect(&args.endpoint, &args.admin_token, conns).context("build the clients")?;
    let nonce: u64 = rand::random();
    let token = encode_sync_token(&BTreeMap::from([(format!("grp:{group}"), last_seq)]));
    let (notes, mut inbox) = mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    for (member, user) in members.iter().enumerate() {
        let client = streams_pool.client(member).with_act_as(user.as_str())?;
        streams.spawn(member_stream(client, member, token.clone(), nonce, notes.clone()));
    }

    let ready_within = READY_BASE + READY_PER_STREAM * u32::try_from(m).unwrap_or(u32::MAX);
    let ready_by = tokio::time::Instant::now() + ready_within;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    while per_node.values().sum::<usize>() < m {
        let note = tokio::select! {
            note = inbox.recv() => note.context("every member stream ended")?,
            _ = tokio::time::sleep_until(ready_by) => {
                bail!("only {} of {m} member streams caught up within {ready_within:?}", per_node.values().sum::<usize>())
            }
        };
        match note {
            Note::Ready { endpoint } => *per_node.entry(endpoint).or_default() += 1,
            Note::StreamFailed { member, error } => bail!("the stream of {} failed: {error}", members[member]),
            Note::Receipt { .. } | Note::SendFailed { .. } => {}
        }
    }
    tracing::info!(
        streams = m,
        conns,
        ?per_node,
        elapsed_ms = setup_started.elapsed().as_millis() as u64,
        "every member stream is live"
    );

    let meter = if args.server_pids.is_empty() {
        CpuMeter::discover(&args.endpoint)
    } else {
        CpuMeter::new(args.server_pids.clone())
    };
    tracing::info!(server_pids = ?meter.server_pids(), "measuring server CPU");

    let senders =
        (0..args.senders).map(|s| setup.client(s).with_act_as(members[s].as_str())).collect::<Result<Vec<_>, _>>()?;
    let load_start = Instant::now();
    let mut load = Load {
        tracker: FanoutTracker::new(m),
        senders,
        group,
        nonce,
        notes,
        next_id: 0,
        window_start: load_start + Duration::from_secs_f64(args.warmup),
        window_end: load_start + Duration::from_secs_f64(args.warmup + args.duration),
        sent: 0,
        completions_us: Vec::new(),
        deliveries_us: Vec::with_capacity(1 << 16),
        errors: 0,
        first_error: None,
    };
    tracing::info!(
        senders = args.senders,
        window = args.window,
        warmup_s = args.warmup,
        duration_s = args.duration,
        "load starts"
    );
    for sender in 0..args.senders {
        for _ in 0..args.window {
            load.fire(sender);
        }
    }

    let timeout = Duration::from_secs_f64(args.fanout_timeout);
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let (start_at, end_at) =
        (tokio::time::Instant::from_std(load.window_start), tokio::time::Instant::from_std(load.window_end));
    let mut cpu_start: Option<CpuSample> = None;
    let cpu_end = loop {
        tokio::select! {
            note = inbox.recv() => match note.context("every member stream ended")? {
                Note::StreamFailed { member, error } => bail!("the stream of {} failed mid-run: {error}", members[member]),
                note => load.take(note),
            },
            _ = tokio::time::sleep_until(start_at), if cpu_start.is_none() => cpu_start = Some(meter.sample()),
            _ = tokio::time::sleep_until(end_at) => break meter.sample(),
            _ = expire.tick() => load.expire(timeout),
        }
    };
    streams.shutdown().await;
    let cpu_start = cpu_start.unwrap_or_else(|| meter.sample());
    if let Some(error) = &load.first_error {
        tracing::warn!(errors = load.errors, first = %error, "some messages failed");
    }
    tracing::info!(in_flight = load.tracker.in_flight(), "measured window over");

    let elapsed = load.window_end.duration_since(load.window_start);
    let figures = FanoutFigures {
        sent: load.sent,
        completions: LatencyStats::from_latencies(load.completions_us, elapsed),
        deliveries: LatencyStats::from_latencies(load.deliveries_us, elapsed),
        errors: load.errors,
        loadgen_cpu_s: cpu_start.own_since(&cpu_end),
        server_cpu_s: cpu_start.servers_since(&cpu_end),
    };
    let shape = FanoutShape {
        label: args.label(),
        members: m,
        senders: args.senders,
        window: args.window,
        conns,
        body_bytes: TEXT_BYTES,
    };
    Ok(FanoutReport::new(shape, &figures))
}

/// Creates the group with every member (member 0 its owner) unless it is in place, and
/// returns its newest seq.
async fn make_group(admin: &Client, group: &str, members: &[String]) -> anyhow::Result<u64> {
    let owner = admin.with_act_as(members[0].as_str())?;
    let mut rest = members[1..].chunks(ADD_BATCH);
    let first: Vec<String> = rest.next().map(<[String]>::to_vec).unwrap_or_default();
    owner
        .create_group_with(CreateGroupRequest {
            group_id: group.to_owned(),
            r#type: GROUP_TYPE.to_owned(),
            name: format!("fanout {}", members.len()),
            members: first,
            hide_history_from_new_members: false,
        })
        .await
        .with_context(|| format!("create the group {group}"))?;
    for batch in rest {
        let users: Vec<&str> = batch.iter().map(String::as_str).collect();
        owner.add_group_members(group, &users).await.with_context(|| format!("add members to {group}"))?;
    }
    let info = owner.get_group(group, "", 1).await.with_context(|| format!("read the group {group}"))?;
    let Some(info) = info.group else { bail!("the group {group} came back without its profile") };
    if info.member_count != members.len() as u64 {
        bail!(
            "the group {group} has {} members, not {}: it was changed by hand? (remove it or use other --members)",
            info.member_count,
            members.len()
        );
    }
    Ok(info.last_seq)
}

/// One member's stream: reports when it has caught up, then every message of this run it
/// receives, with the time it arrived.
async fn member_stream(client: Client, member: usize, token: String, nonce: u64, notes: mpsc::UnboundedSender<Note>) {
    let result: Result<(), meridian_client::ClientError> = async {
        let mut subscription = client.subscribe(Some(&token)).await?;
        loop {
            let event = subscription.next().await?;
            let note = match event.r#type.as_str() {
                "caught_up" => Note::Ready { endpoint: subscription.endpoint().to_owned() },
                "message" => {
                    let at = Instant::now();
                    let Some(id) = event.message.as_ref().and_then(|m| body_id(&message_text(m), nonce)) else {
                        continue;
                    };
                    Note::Receipt { id, member, at }
                }
                _ => continue,
            };
            if notes.send(note).is_err() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = notes.send(Note::StreamFailed { member, error: format!("{e:#}") });
    }
}

/// The load: the messages in flight, the senders' windows, and what the window measured.
struct Load {
    tracker: FanoutTracker,
    /// Clients acting as the sending members.
    senders: Vec<Client>,
    group: Arc<str>,
    nonce: u64,
    notes: mpsc::UnboundedSender<Note>,
    next_id: u64,
    window_start: Instant,
    window_end: Instant,
    /// Messages started within the window.
    sent: u64,
    completions_us: Vec<u32>,
    deliveries_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Load {
    fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }

    /// Starts the next message of `sender`, unless the window is over.
    fn fire(&mut self, sender: usize) {
        let now = Instant::now();
        if now >= self.window_end {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.tracker.start(id, sender, now);
        if self.in_window(now) {
            self.sent += 1;
        }
        let (client, group, text, notes) =
            (self.senders[sender].clone(), self.group.clone(), body(self.nonce, id), self.notes.clone());
        tokio::spawn(async move {
            if let Err(e) = client.send_group_text(&group, &text, None).await {
                let _ = notes.send(Note::SendFailed { id, error: format!("{e:#}") });
            }
        });
    }

    fn take(&mut self, note: Note) {
        match note {
            Note::Receipt { id, member, at } => match self.tracker.receipt(id, member, at) {
                Receipt::Ignored => {}
                Receipt::Delivered { latency } => {
                    if self.in_window(at) {
                        self.deliveries_us.push(micros(latency));
                    }
                }
                Receipt::Completed { latency, sender } => {
                    if self.in_window(at) {
                        self.deliveries_us.push(micros(latency));
                        self.completions_us.push(micros(latency));
                    }
                    self.fire(sender);
                }
            },
            Note::SendFailed { id, error } => {
                if let Some(abandoned) = self.tracker.abandon(id) {
                    self.failed(format!("send of message {id} failed: {error}"));
                    self.fire(abandoned.sender);
                }
            }
            Note::Ready { .. } | Note::StreamFailed { .. } => {}
        }
    }

    /// Gives up on the messages that have not reached every member within `timeout`.
    fn expire(&mut self, timeout: Duration) {
        for abandoned in self.tracker.expire(Instant::now(), timeout) {
            self.failed(format!("message {} missed {} members after {timeout:?}", abandoned.id, abandoned.missing));
            self.fire(abandoned.sender);
        }
    }

    fn failed(&mut self, error: String) {
        if self.in_window(Instant::now()) {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            tracing::warn!(%error, "a message failed");
            self.first_error = Some(error);
        }
    }
}

fn micros(latency: Duration) -> u32 {
    u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)
}

/// The text of message `id` of the run `nonce`: both, then padding to [`TEXT_BYTES`].
fn body(nonce: u64, id: u64) -> String {
    let mut text = format!("fanout {nonce:016x} {id} ");
    let pad = TEXT_BYTES.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// The id of a message of the run `nonce`, from its text; `None` for any other text.
fn body_id(text: &str, nonce: u64) -> Option<u64> {
    let mut words = text.strip_prefix("fanout ")?.split(' ');
    let run = u64::from_str_radix(words.next()?, 16).ok()?;
    if run != nonce {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_the_peers_size_and_gives_back_its_id() {
        for id in [0, 7, u64::MAX] {
            let text = body(0xfeed, id);
            assert_eq!(text.len(), TEXT_BYTES);
            assert_eq!(body_id(&text, 0xfeed), Some(id));
        }
    }

    #[test]
    fn other_texts_have_no_id() {
        assert_eq!(body_id(&body(1, 5), 2), None, "an earlier run's message");
        for text in ["", "hello", "fanout ", "fanout zz 1", "fanout 1", "fanout 1 x", "meridian-bench xxx"] {
            assert_eq!(body_id(text, 1), None, "{text:?}");
        }
    }
}
