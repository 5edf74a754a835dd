//! [`BenchArgs`]: the command line of `meridian-bench`.

use std::fmt;

use anyhow::{bail, ensure};
use meridian_client::api::ReadConsistency;

/// The largest history page the server serves.
const MAX_HISTORY_PAGE: u32 = 100;
/// Largest group `fanout` makes: the cap of a `public` group (docs/groups.md).
pub(crate) const MAX_FANOUT_MEMBERS: usize = 2000;
/// Longest run accepted, in seconds: every load loop must stop by itself.
const MAX_DURATION_S: f64 = 3600.0;

/// `meridian-bench WORKLOAD --endpoint A[,B,C] [--clients C] [--conns N] ...`
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "meridian-bench", version, about = "Closed-loop load generator for a Meridian region")]
pub struct BenchArgs {
    /// What the measured requests do.
    #[arg(value_enum)]
    pub workload: WorkloadKind,
    /// The region's nodes: comma-separated host:port.
    #[arg(long, env = meridian_client::ENDPOINT_ENV, value_delimiter = ',', required = true)]
    pub endpoint: Vec<String>,
    /// The region's admin token; every request acts as its user through it.
    #[arg(long, env = meridian_client::ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub admin_token: String,
    /// Concurrent requests: tasks with one request in flight each.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Independent clients (one gRPC connection per node each) the tasks share round-robin.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Load before the measured window, not measured, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// `send`: users the sender/recipient pairs are made of.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// `send`: `existing` — every send goes to a conversation set up before the run (users
    /// paired two by two, one message each, as most real traffic is); `new` — every send is
    /// a first contact between two users who never spoke (fresh users each run).
    #[arg(long, value_enum, default_value_t = Pairs::Existing)]
    pub pairs: Pairs,
    /// `history`: conversations preloaded and read. `conversations`: conversations (peers)
    /// each listing user has.
    #[arg(long, default_value_t = 100)]
    pub convs: usize,
    /// `history`: messages preloaded into each conversation.
    #[arg(long, default_value_t = 200)]
    pub msgs: u64,
    /// `history`: messages per page read.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// `conversations`: users whose conversation lists are read.
    #[arg(long, default_value_t = 20)]
    pub owners: usize,
    /// `fanout`: members of the group, every one with a live stream.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// `fanout`: members that send, each keeping `--window` messages in flight.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// `fanout`: messages each sender keeps in flight; it sends the next when one of its
    /// earlier ones has reached every member's stream.
    #[arg(long, default_value_t = 2)]
    pub window: usize,
    /// `fanout`: member streams sharing one client (one gRPC connection per node).
    #[arg(long, default_value_t = 32)]
    pub streams_per_conn: usize,
    /// `fanout`: seconds after which a message that has not reached every member counts as
    /// an error and frees its sender's slot.
    #[arg(long, default_value_t = 10.0)]
    pub fanout_timeout: f64,
    /// Consistency of the reads (`history`, `conversations`).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Server processes whose CPU time is measured; default: the `meridian node` processes
    /// serving the endpoints.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Name of the run in the output; default: `meridian-WORKLOAD`.
    #[arg(long)]
    pub label: Option<String>,
}

/// Which conversations `send` writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pairs {
    /// Conversations that exist before the measured run.
    Existing,
    /// A new conversation with every send.
    New,
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// One-to-one sends of a 200-byte text between random pairs of users.
    Send,
    /// Pages of a preloaded conversation's history, from a random start.
    History,
    /// A user's conversation list (100 per page) with last messages and unread counts.
    Conversations,
    /// Group messages to `--members` members, each with a live stream: messages/s and
    /// deliveries/s, and the latency until every member's stream has a message.
    Fanout,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Send => "send",
            WorkloadKind::History => "history",
            WorkloadKind::Conversations => "conversations",
            WorkloadKind::Fanout => "fanout",
        })
    }
}

/// How fresh reads must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Leader read-index: sees every acknowledged write.
    Linearizable,
    /// The answering node's replica as it is.
    Local,
}

impl From<Consistency> for ReadConsistency {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Local => ReadConsistency::Local,
        }
    }
}

impl BenchArgs {
    /// The run's name in the output.
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| format!("meridian-{}", self.workload))
    }

    /// Refuses arguments that cannot make a meaningful run.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.clients >= 1, "--clients must be at least 1");
        ensure!(self.conns >= 1, "--conns must be at least 1");
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= MAX_DURATION_S) {
            bail!("--duration must be more than 0 and at most {MAX_DURATION_S} seconds, got {}", self.duration);
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0 && self.warmup <= MAX_DURATION_S) {
            bail!("--warmup must be 0 to {MAX_DURATION_S} seconds, got {}", self.warmup);
        }
        ensure!(
            self.admin_token.trim() != "",
            "the admin token is empty: pass --admin-token or set MERIDIAN_ADMIN_TOKEN"
        );
        match self.workload {
            WorkloadKind::Send => ensure!(self.users >= 2, "--users must be at least 2: a send needs two users"),
            WorkloadKind::History => {
                ensure!(self.convs >= 1, "--convs must be at least 1");
                ensure!(self.msgs >= 1, "--msgs must be at least 1");
                ensure!(
                    (1..=MAX_HISTORY_PAGE).contains(&self.limit),
                    "--limit must be 1 to {MAX_HISTORY_PAGE} (the server's largest page), got {}",
                    self.limit
                );
            }
            WorkloadKind::Conversations => {
                ensure!(self.convs >= 1, "--convs must be at least 1");
                ensure!(self.owners >= 1, "--owners must be at least 1");
            }
            WorkloadKind::Fanout => {
                ensure!(
                    (2..=MAX_FANOUT_MEMBERS).contains(&self.members),
                    "--members must be 2 to {MAX_FANOUT_MEMBERS} (a public group's cap), got {}",
                    self.members
                );
                ensure!(
                    (1..=self.members).contains(&self.senders),
                    "--senders must be 1 to --members ({}), got {}",
                    self.members,
                    self.senders
                );
                ensure!(self.window >= 1, "--window must be at least 1");
                ensure!(self.streams_per_conn >= 1, "--streams-per-conn must be at least 1");
                if !(self.fanout_timeout.is_finite() && self.fanout_timeout > 0.0) {
                    bail!("--fanout-timeout must be more than 0 seconds, got {}", self.fanout_timeout);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> BenchArgs {
        let argv = ["meridian-bench"].iter().chain(args).copied();
        BenchArgs::try_parse_from(argv).expect("arguments parse")
    }

    #[test]
    fn the_documented_command_line_parses() {
        let args = parse(&[
            "history",
            "--endpoint",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--admin-token",
            "t",
            "--clients",
            "64",
            "--conns",
            "4",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--server-pids",
            "10,11,12",
        ]);
        assert_eq!(args.workload, WorkloadKind::History);
        assert_eq!(args.endpoint, vec!["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!((args.clients, args.conns, args.duration, args.warmup), (64, 4, 2.5, 0.0));
        assert_eq!((args.convs, args.msgs, args.limit), (100, 200, 50));
        assert_eq!(args.server_pids, vec![10, 11, 12]);
        assert_eq!(args.label(), "meridian-history");
        args.validate().expect("valid");
    }

    #[test]
    fn the_fanout_command_line_parses() {
        let args = parse(&[
            "fanout",
            "--endpoint",
            "n1:1,n2:2,n3:3",
            "--admin-token",
            "t",
            "--members",
            "500",
            "--senders",
            "1",
            "--window",
            "2",
            "--duration",
            "20",
        ]);
        assert_eq!(args.workload, WorkloadKind::Fanout);
        assert_eq!((args.members, args.senders, args.window, args.streams_per_conn), (500, 1, 2, 32));
        assert_eq!(args.label(), "meridian-fanout");
        args.validate().expect("valid");
    }

    #[test]
    fn arguments_that_cannot_make_a_run_are_refused() {
        let base = ["send", "--endpoint", "n1:1", "--admin-token", "t"];
        for extra in
            [&["--clients", "0"][..], &["--conns", "0"], &["--duration", "0"], &["--warmup=-1"], &["--users", "1"]]
        {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(parse(&args).validate().is_err(), "{extra:?} must be refused");
        }
        for extra in
            [&["--members", "1"][..], &["--senders", "0"], &["--members", "3", "--senders", "4"], &["--window", "0"]]
        {
            let args: Vec<&str> =
                ["fanout", "--endpoint", "n1:1", "--admin-token", "t"].iter().chain(extra).copied().collect();
            assert!(parse(&args).validate().is_err(), "fanout {extra:?} must be refused");
        }
        let too_long_page = parse(&["history", "--endpoint", "n1:1", "--admin-token", "t", "--limit", "101"]);
        assert!(too_long_page.validate().is_err());
    }
}
