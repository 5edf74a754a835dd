//! The arguments of each client command.

/// `meridian user ...`
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create (import) an account; an existing one is left as it is.
    Create {
        /// The user id (1 to 32 bytes).
        user: String,
        /// Home region code; default: the region of the node that answers.
        #[arg(long, value_name = "REGION")]
        home_region: Option<String>,
    },
    /// Delete an account (REL-01): profile, friends, requests, blocklist and conversation
    /// list go, its groups and friends drop it; its id is never given out again.
    Delete {
        /// The user id.
        user: String,
    },
}

/// `meridian archive ...`
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Segments per shard, their bytes and events, and the hot/cold boundary.
    Status {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every segment the manifests name (digest, index, every block's checksum);
    /// exits non-zero on any damaged segment.
    Verify {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Delete objects under the region's root that no manifest names and that are older than
    /// the grace period (a seal in flight writes its object before the manifest names it).
    Gc {
        /// Only objects older than this, in seconds.
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `meridian audit ...`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Scan every node of every region (every column family, the Raft log and the snapshot
    /// files) for records of people whose home is a strict region other than the node's;
    /// exits non-zero on any violation or on a node that could not be audited.
    Residency {
        /// Audit the answering node only.
        #[arg(long)]
        this_node: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `meridian admin ...`
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Add a node to every shard (as a learner, then a voter once caught up).
    AddNode {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's client API address (its `advertise`), host:port.
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
        /// The new node's peer-listener address (its `peer-advertise`), host:port.
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Leave the node a learner.
        #[arg(long)]
        learner_only: bool,
    },
    /// Rebuild every shard's projections from its event log on the node answering, and compare
    /// them with the live ones; fails when any shard differs.
    VerifyProjections {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster logic version (what each member supports, what each shard applies);
    /// with `--raise N`, raise every shard to N once every member supports it.
    LogicVersion {
        /// The version to raise to.
        #[arg(long, value_name = "N")]
        raise: Option<u32>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node (e.g. a dead one) from every shard.
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
    /// Point-in-time restore of a one-to-one conversation: every message sent after `--at`
    /// is withdrawn (recalled by `@restore`), through the log. Run it against a node of the
    /// conversation's home region.
    Restore {
        /// One member of the conversation.
        #[arg(long)]
        user: String,
        /// The other member.
        #[arg(long)]
        peer: String,
        /// Keep what was sent at or before this time: RFC 3339 (`2026-11-30T21:00:00Z`) or
        /// milliseconds since the Unix epoch.
        #[arg(long, value_name = "TIME")]
        at: String,
    },
}

/// `meridian dr ...`: region disaster recovery (docs/dr.md).
#[derive(Debug, clap::Subcommand)]
pub enum DrCommand {
    /// Every node of the region, primary and standby: role, epoch, and per shard how far
    /// each replica is behind the serving one (entries, seconds) and whether the state
    /// hashes match at the same index.
    Status {
        #[arg(long)]
        region: String,
    },
    /// Promote the region's standby: it serves the region in a new epoch; the old primary's
    /// nodes are fenced. Prints the cut (per shard, the last entry the standby had).
    Promote {
        #[arg(long)]
        region: String,
    },
    /// Fail the region back to its primary: its nodes (running, fenced) write what they
    /// acknowledged after the cut to a quarantine file, are reseeded from the standby, catch
    /// up, and take over again after a short pause of writes (RPO 0).
    Failback {
        #[arg(long)]
        region: String,
    },
}

/// Whom a user command acts as.
#[derive(Debug, Clone, clap::Args)]
pub struct ActAs {
    /// Act as USER through the admin token (MERIDIAN_ADMIN_TOKEN) instead of MERIDIAN_TOKEN.
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
}

/// `meridian token USER`
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user the token is for.
    pub user: String,
    /// Lifetime in seconds; default: the server's (180 days).
    #[arg(long, value_name = "N")]
    pub ttl_seconds: Option<u64>,
}

/// `meridian send`
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// The peer user id.
    #[arg(long, value_name = "PEER", required_unless_present = "group", conflicts_with = "group")]
    pub to: Option<String>,
    /// A group to send to instead of a peer.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A topic of the Community `--group`.
    #[arg(long, value_name = "TOPIC", requires = "group")]
    pub topic: Option<String>,
    /// Group messages: members to mention, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "A,B", requires = "group")]
    pub mention: Vec<String>,
    /// Group messages: mention everyone (owner and admins).
    #[arg(long, requires = "group")]
    pub at_all: bool,
    /// Idempotency key: a retry with the same id takes effect once. Default: a random one.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// The message text.
    pub text: String,
}

/// `meridian history`
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// The peer user id.
    #[arg(long = "with", value_name = "PEER", required_unless_present = "group", conflicts_with = "group")]
    pub peer: Option<String>,
    /// A group's stream instead of a conversation with a peer.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A topic of the Community `--group`.
    #[arg(long, value_name = "TOPIC", requires = "group")]
    pub topic: Option<String>,
    /// Start at this seq (inclusive); default: the newest message, or seq 1 with --forward.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from_seq: u64,
    /// Page size; default 20, at most 100.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u32,
    /// Oldest first (default: newest first).
    #[arg(long)]
    pub forward: bool,
    /// Read the whole conversation, oldest first, page by page.
    #[arg(long, conflicts_with_all = ["from_seq", "limit", "forward"])]
    pub all: bool,
    /// Read the answering node's replica as it is (may lag) instead of a linearizable read.
    #[arg(long)]
    pub local: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `meridian conversations`
#[derive(Debug, clap::Args)]
pub struct ConversationsArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// Read the answering node's replica as it is (may lag).
    #[arg(long)]
    pub local: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `meridian subscribe`
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// Resume from this sync token (printed with `caught_up`); default: everything.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Also listen to this live room (AVChatRoom group) while the stream is open; repeat for
    /// several (at most 10).
    #[arg(long = "room", value_name = "GROUP")]
    pub rooms: Vec<String>,
    /// One JSON object per line, flushed as each event arrives.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `meridian read`
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// The peer user id.
    #[arg(long = "with", value_name = "PEER", required_unless_present = "group", conflicts_with = "group")]
    pub peer: Option<String>,
    /// A group's stream instead of a conversation with a peer.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A topic of the Community `--group`.
    #[arg(long, value_name = "TOPIC", requires = "group")]
    pub topic: Option<String>,
    /// Read up to and including this seq; default: everything.
    #[arg(long, value_name = "N")]
    pub seq: Option<u64>,
}

/// `meridian recall`
#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    /// The peer user id.
    #[arg(long = "with", value_name = "PEER", required_unless_present = "group", conflicts_with = "group")]
    pub peer: Option<String>,
    /// A group's stream instead of a conversation with a peer.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// The seq of the message to recall.
    #[arg(long, value_name = "N")]
    pub seq: u64,
}

/// `meridian events`
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// The shard whose event log to read.
    #[arg(long)]
    pub shard: u32,
    /// The first Raft log index to show events of.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Most events to show (every one from `--from` on when unset).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep going: print new events as they are applied, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `meridian changes`
#[derive(Debug, clap::Args)]
pub struct ChangesArgs {
    /// Where to start a shard: `SHARD:INDEX.COMMAND.EVENT`, as a printed `next` (repeat for
    /// several shards; a shard not named starts at its first event).
    #[arg(long, value_name = "OFFSET")]
    pub from: Vec<String>,
    /// Keep going: print each new event as it is applied, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line, flushed as each event arrives.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `meridian status`
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Also compute each shard's state hash (reads each shard's whole state).
    #[arg(long)]
    pub hash: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `meridian group ...` (the caller acts: `--as USER` with the admin token, or a user token).
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group owned by the caller.
    Create {
        #[command(flatten)]
        act_as: ActAs,
        /// The group id; default: one generated by the node.
        id: Option<String>,
        /// work, public, meeting, community or avchatroom.
        #[arg(long = "type", value_name = "TYPE", default_value = "work")]
        kind: String,
        /// The group's name (at most 30 bytes).
        #[arg(long, default_value = "")]
        name: String,
        /// Initial members besides the caller, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        members: Vec<String>,
        /// Members who join later read the stream from their joining on.
        #[arg(long)]
        hide_history: bool,
    },
    /// Add members (or join, naming only yourself).
    Add {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
        /// Add them hidden: they receive messages and are listed to the owner and admins only.
        #[arg(long)]
        hidden: bool,
    },
    /// Join a group that is free to join (meeting, community, live room).
    Join {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
    },
    /// Remove a member (owner or admin).
    Kick {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
    },
    /// Leave a group.
    Leave {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
    },
    /// Mute a member for a while (owner or admin).
    Mute {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
        /// For how long.
        #[arg(long, value_name = "N")]
        seconds: u64,
    },
    /// Unmute a member.
    Unmute {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
    },
    /// Make a member an admin (owner); `--revoke` makes an admin a plain member again.
    Admin {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Hand the group to another member (owner).
    Transfer {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
    },
    /// Dismiss a group (owner).
    Dismiss {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
    },
    /// Apply to join: a member at once when the group is free to join, else pending.
    Apply {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Approve an application (owner or admin).
    Approve {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
    },
    /// Reject an application (owner or admin).
    Reject {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
    },
    /// The applications waiting (owner or admin).
    Requests {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Set profile fields: NAME=VALUE (name, introduction, notification, face_url, join_option,
    /// custom.KEY; an empty value removes).
    Set {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        fields: Vec<String>,
    },
    /// Set a member's fields: NAME=VALUE (name_card, recv_opt, custom.KEY).
    Card {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        fields: Vec<String>,
    },
    /// Mute everyone but the owner and admins (`--off` lifts it).
    MuteAll {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(long)]
        off: bool,
    },
    /// Ban a user for a while (`--seconds 0` lifts the ban).
    Ban {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(value_name = "USER")]
        member: String,
        #[arg(long, value_name = "N")]
        seconds: u64,
    },
    /// A page of the member list (after a user id, at most `--limit`).
    Members {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Like a group (a live room above all); prints its total.
    Like {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Open a topic in a Community (owner or admin).
    TopicCreate {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        topic: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// A Community's topics, with your unread in each.
    Topics {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
    },
    /// The groups you are a member of.
    List {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(long)]
        json: bool,
    },
    /// Who of a group of at most 200 members has read the message at SEQ.
    Receipts {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// The group's profile and its members (members only).
    Info {
        #[command(flatten)]
        act_as: ActAs,
        id: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl GroupCommand {
    pub fn act_as(&self) -> &ActAs {
        match self {
            GroupCommand::Create { act_as, .. }
            | GroupCommand::Add { act_as, .. }
            | GroupCommand::Join { act_as, .. }
            | GroupCommand::Kick { act_as, .. }
            | GroupCommand::Leave { act_as, .. }
            | GroupCommand::Mute { act_as, .. }
            | GroupCommand::Unmute { act_as, .. }
            | GroupCommand::Dismiss { act_as, .. }
            | GroupCommand::Admin { act_as, .. }
            | GroupCommand::Transfer { act_as, .. }
            | GroupCommand::Apply { act_as, .. }
            | GroupCommand::Approve { act_as, .. }
            | GroupCommand::Reject { act_as, .. }
            | GroupCommand::Requests { act_as, .. }
            | GroupCommand::Set { act_as, .. }
            | GroupCommand::Card { act_as, .. }
            | GroupCommand::MuteAll { act_as, .. }
            | GroupCommand::Ban { act_as, .. }
            | GroupCommand::Members { act_as, .. }
            | GroupCommand::List { act_as, .. }
            | GroupCommand::Like { act_as, .. }
            | GroupCommand::TopicCreate { act_as, .. }
            | GroupCommand::Topics { act_as, .. }
            | GroupCommand::Receipts { act_as, .. }
            | GroupCommand::Info { act_as, .. } => act_as,
        }
    }
}

/// `meridian block ...` (REL-04).
#[derive(Debug, clap::Subcommand)]
pub enum BlockCommand {
    /// Block a user: their one-to-one messages to you are refused with BLOCKED.
    Add {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
    },
    /// Unblock a user.
    Remove {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
    },
    /// Your blocklist.
    List {
        #[command(flatten)]
        act_as: ActAs,
    },
}

impl BlockCommand {
    pub fn act_as(&self) -> &ActAs {
        match self {
            BlockCommand::Add { act_as, .. } | BlockCommand::Remove { act_as, .. } | BlockCommand::List { act_as } => {
                act_as
            }
        }
    }
}

/// Which row of your list: `--with PEER` or `--group GROUP`.
#[derive(Debug, clap::Args)]
pub struct RowArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[arg(long = "with", value_name = "PEER", required_unless_present = "group", conflicts_with = "group")]
    pub peer: Option<String>,
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

/// `meridian conversation ...` (CONV-03, MSG-09).
#[derive(Debug, clap::Subcommand)]
pub enum ConversationCommand {
    /// Pin a row (`--off` unpins).
    Pin {
        #[command(flatten)]
        row: RowArgs,
        #[arg(long)]
        off: bool,
    },
    /// Do not disturb (`--off` lifts it).
    Dnd {
        #[command(flatten)]
        row: RowArgs,
        #[arg(long)]
        off: bool,
    },
    /// Keep a draft (an empty one removes it).
    Draft {
        #[command(flatten)]
        row: RowArgs,
        text: String,
    },
    /// Set the row's marks (none: remove them all).
    Mark {
        #[command(flatten)]
        row: RowArgs,
        #[arg(value_delimiter = ',', value_name = "A,B")]
        marks: Vec<String>,
    },
    /// Delete the row from your list until a newer message arrives (`--clear`: and clear its
    /// history from your view).
    Delete {
        #[command(flatten)]
        row: RowArgs,
        #[arg(long)]
        clear: bool,
    },
    /// Clear the history from your own view.
    Clear {
        #[command(flatten)]
        row: RowArgs,
    },
    /// Delete messages from your own view.
    DeleteMessages {
        #[command(flatten)]
        row: RowArgs,
        #[arg(required = true, value_delimiter = ',', value_name = "SEQ,SEQ")]
        seqs: Vec<u64>,
    },
}

impl ConversationCommand {
    pub fn row(&self) -> &RowArgs {
        match self {
            ConversationCommand::Pin { row, .. }
            | ConversationCommand::Dnd { row, .. }
            | ConversationCommand::Draft { row, .. }
            | ConversationCommand::Mark { row, .. }
            | ConversationCommand::Delete { row, .. }
            | ConversationCommand::Clear { row }
            | ConversationCommand::DeleteMessages { row, .. } => row,
        }
    }
}

impl RowArgs {
    pub fn stream(&self) -> crate::Stream {
        match (&self.peer, &self.group) {
            (_, Some(g)) => crate::Stream::Group(g.clone()),
            (Some(p), None) => crate::Stream::Peer(p.clone()),
            (None, None) => crate::Stream::Peer(String::new()),
        }
    }
}

/// `meridian friend ...` (REL-03).
#[derive(Debug, clap::Subcommand)]
pub enum FriendCommand {
    /// Ask a user to be your friend: added at once, or pending their answer, by their policy.
    Add {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
        /// Words shown with a pending request.
        #[arg(long, default_value = "")]
        message: String,
        /// Your note for them on your list.
        #[arg(long, default_value = "")]
        remark: String,
    },
    /// Accept a request waiting for you.
    Accept {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
        #[arg(long, default_value = "")]
        remark: String,
    },
    /// Reject a request waiting for you.
    Reject {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
    },
    /// Take a user off your list (`--both`: and you off theirs).
    Delete {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
        #[arg(long)]
        both: bool,
    },
    /// Set your remark for a friend.
    Remark {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        target: String,
        #[arg(value_name = "REMARK")]
        remark: String,
    },
    /// Your friend list.
    List {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(long)]
        json: bool,
    },
    /// The requests waiting for your answer.
    Requests {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(long)]
        json: bool,
    },
    /// Your relation with each user: none, mine, theirs or both.
    Check {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(required = true, value_delimiter = ',', value_name = "A,B")]
        users: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

impl FriendCommand {
    pub fn act_as(&self) -> &ActAs {
        match self {
            FriendCommand::Add { act_as, .. }
            | FriendCommand::Accept { act_as, .. }
            | FriendCommand::Reject { act_as, .. }
            | FriendCommand::Delete { act_as, .. }
            | FriendCommand::Remark { act_as, .. }
            | FriendCommand::List { act_as, .. }
            | FriendCommand::Requests { act_as, .. }
            | FriendCommand::Check { act_as, .. } => act_as,
        }
    }
}

/// `meridian profile ...` (REL-02).
#[derive(Debug, clap::Subcommand)]
pub enum ProfileCommand {
    /// Set fields of your profile: `name=value` (an empty value removes the field).
    Set {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(required = true, value_name = "NAME=VALUE")]
        fields: Vec<String>,
    },
    /// A user's profile: every field, or those of `--fields`.
    Get {
        #[command(flatten)]
        act_as: ActAs,
        #[arg(value_name = "USER")]
        whose: String,
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        fields: Vec<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl ProfileCommand {
    pub fn act_as(&self) -> &ActAs {
        match self {
            ProfileCommand::Set { act_as, .. } | ProfileCommand::Get { act_as, .. } => act_as,
        }
    }
}
