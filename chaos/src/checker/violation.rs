//! [`Violation`]: one broken promise, with the smallest evidence that shows it.

use std::fmt;

use serde::Serialize;

use crate::history::{MarkReadRecord, Outcome, ReadRecord, SendRecord};

/// What promise a [`Violation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An acknowledged send is missing from its conversation's final history.
    Lost,
    /// A send (one request id) appears more than once in the final history, or was
    /// acknowledged twice with different results.
    Duplicated,
    /// An acknowledged send is in the final history at another seq, with another message id,
    /// or under another sender than it was acknowledged with.
    Misplaced,
    /// Seqs are missing: a final history is not 1..=n, or a read returned a non-contiguous page.
    Gap,
    /// The same seq appears twice in a final history or in one read page.
    RepeatedSeq,
    /// A node's final history of a conversation differs from the other nodes'.
    Divergence,
    /// A read returned a seq (or reported a head) the final history does not have, or the
    /// final history holds a message no send of the history explains.
    Phantom,
    /// A read returned, at a seq, another message than the final history has there.
    Reorder,
    /// A send rejected with a typed error (definitely not applied) appears in the final history.
    RejectedApplied,
    /// A conversation was written or read but no node reported its final history.
    MissingFinal,
    /// A conversation-list row's `last_seq` differs from the final history's last seq.
    HeadMismatch,
    /// A row's unread count is not `last_seq - read_seq`, or `total_unread` is not their sum.
    UnreadMismatch,
    /// A row's read cursor is behind an acknowledged mark-read or the user's own message.
    CursorBehind,
    /// A conversation in which the user has messages is missing from the user's list.
    ListMissing,
    /// A list row that does not belong: listed twice, a C2C conversation of other users, or the
    /// wrong peer.
    ListWrong,
    /// Nodes report different state hashes for the same shard at the same index.
    HashMismatch,
    /// A node's projections of a shard differ from a replay of the shard's event log.
    ProjectionMismatch,
    /// A group's member list on a node differs from a recount of the membership events in its
    /// event log.
    MemberListMismatch,
    /// A user's friend list on a node differs from a recount of the friend events in the
    /// user's event log.
    FriendListMismatch,
    /// The event log accepted a message it must have refused: to a group from a non-member or
    /// a muted member, or one-to-one from a user the recipient had blocked (judged in log
    /// order).
    IllegalSend,
    /// A subscribed device did not receive a message of one of its one-to-one conversations
    /// (every message of the final history must reach every device of both members).
    Undelivered,
    /// A device received a message of a conversation twice, or after a later one.
    DeliveredTwice,
    /// A device received, at a seq, another message than the final history has there.
    DeliveredWrong,
    /// A record lacks what its outcome requires (an acknowledged send without its seq) or a
    /// read page is not sorted by seq: the harness, not the cluster, is at fault.
    Malformed,
}

impl ViolationKind {
    /// Every kind, in the order of the summary table.
    pub const ALL: [ViolationKind; 24] = [
        ViolationKind::Lost,
        ViolationKind::Duplicated,
        ViolationKind::Misplaced,
        ViolationKind::Gap,
        ViolationKind::RepeatedSeq,
        ViolationKind::Divergence,
        ViolationKind::Phantom,
        ViolationKind::Reorder,
        ViolationKind::RejectedApplied,
        ViolationKind::MissingFinal,
        ViolationKind::HeadMismatch,
        ViolationKind::UnreadMismatch,
        ViolationKind::CursorBehind,
        ViolationKind::ListMissing,
        ViolationKind::ListWrong,
        ViolationKind::HashMismatch,
        ViolationKind::ProjectionMismatch,
        ViolationKind::MemberListMismatch,
        ViolationKind::FriendListMismatch,
        ViolationKind::IllegalSend,
        ViolationKind::Undelivered,
        ViolationKind::DeliveredTwice,
        ViolationKind::DeliveredWrong,
        ViolationKind::Malformed,
    ];

    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::Duplicated => "duplicated",
            ViolationKind::Misplaced => "misplaced",
            ViolationKind::Gap => "gap",
            ViolationKind::RepeatedSeq => "repeated_seq",
            ViolationKind::Divergence => "divergence",
            ViolationKind::Phantom => "phantom",
            ViolationKind::Reorder => "reorder",
            ViolationKind::RejectedApplied => "rejected_applied",
            ViolationKind::MissingFinal => "missing_final",
            ViolationKind::HeadMismatch => "head_mismatch",
            ViolationKind::UnreadMismatch => "unread_mismatch",
            ViolationKind::CursorBehind => "cursor_behind",
            ViolationKind::ListMissing => "list_missing",
            ViolationKind::ListWrong => "list_wrong",
            ViolationKind::HashMismatch => "hash_mismatch",
            ViolationKind::ProjectionMismatch => "projection_mismatch",
            ViolationKind::MemberListMismatch => "member_list_mismatch",
            ViolationKind::FriendListMismatch => "friend_list_mismatch",
            ViolationKind::IllegalSend => "illegal_send",
            ViolationKind::Undelivered => "undelivered",
            ViolationKind::DeliveredTwice => "delivered_twice",
            ViolationKind::DeliveredWrong => "delivered_wrong",
            ViolationKind::Malformed => "malformed",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of client operation an [`OpRef`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A `Send` record.
    Send,
    /// A `Read` record.
    Read,
    /// A `MarkRead` record.
    MarkRead,
}

/// A client operation cited as evidence: enough to find it in the history and in the logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpRef {
    /// The kind of operation.
    pub op: OpKind,
    /// The workload client.
    pub client: u32,
    /// The acting user (sender, reader, or the user whose cursor moved).
    pub user: String,
    /// The request id (sends only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Start of the call, ms since the start of the run.
    pub start_ms: u64,
    /// End of the call, ms since the start of the run.
    pub end_ms: u64,
    /// What the caller learnt.
    pub outcome: Outcome,
    /// The seq the operation was acknowledged with (send), the head it saw (read), or the
    /// cursor it set (mark-read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl OpRef {
    /// Cites a send.
    pub fn send(send: &SendRecord) -> Self {
        OpRef {
            op: OpKind::Send,
            client: send.client,
            user: send.from.clone(),
            request_id: Some(send.request_id.clone()),
            start_ms: send.start_ms,
            end_ms: send.end_ms,
            outcome: send.outcome,
            seq: send.seq,
        }
    }

    /// Cites a read.
    pub fn read(read: &ReadRecord) -> Self {
        OpRef {
            op: OpKind::Read,
            client: read.client,
            user: read.reader.clone(),
            request_id: None,
            start_ms: read.start_ms,
            end_ms: read.end_ms,
            outcome: read.outcome,
            seq: Some(read.last_seq),
        }
    }

    /// Cites a mark-read.
    pub fn mark_read(mark: &MarkReadRecord) -> Self {
        OpRef {
            op: OpKind::MarkRead,
            client: mark.client,
            user: mark.user.clone(),
            request_id: None,
            start_ms: mark.start_ms,
            end_ms: mark.end_ms,
            outcome: mark.outcome,
            seq: mark.read_seq,
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            OpKind::Send => {
                write!(f, "send {} by {}", self.request_id.as_deref().unwrap_or("?"), self.user)?;
                if let Some(seq) = self.seq {
                    write!(f, " acked seq {seq}")?;
                }
            }
            OpKind::Read => {
                write!(f, "read by {}", self.user)?;
                if let Some(seq) = self.seq {
                    write!(f, " head {seq}")?;
                }
            }
            OpKind::MarkRead => {
                write!(f, "mark_read by {}", self.user)?;
                if let Some(seq) = self.seq {
                    write!(f, " to {seq}")?;
                }
            }
        }
        write!(f, " (client {}, {}..{} ms, {})", self.client, self.start_ms, self.end_ms, self.outcome.as_str())
    }
}

/// One broken promise and the smallest evidence that shows it.
///
/// The structured fields say where to look; `detail` says what was expected and what was
/// found, for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which promise.
    pub kind: ViolationKind,
    /// The conversation, when the violation is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// The user whose conversation list is wrong (list violations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The seqs involved (where it was acknowledged, where it was found, which are missing…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<u64>,
    /// The nodes at fault (the diverging replica, the node whose list is wrong, the nodes
    /// whose hash differs from the majority's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<u32>,
    /// The shard (hash violations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// The applied index (hash violations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The client operations involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OpRef>,
    /// What was expected and what was found.
    pub detail: String,
}

impl Violation {
    /// A violation of `kind` with only its detail; the builder methods add the evidence.
    pub fn new(kind: ViolationKind, detail: impl Into<String>) -> Self {
        Violation {
            kind,
            conversation: None,
            user: None,
            seqs: Vec::new(),
            nodes: Vec::new(),
            shard: None,
            index: None,
            operations: Vec::new(),
            detail: detail.into(),
        }
    }

    pub(crate) fn in_conversation(mut self, conversation: &str) -> Self {
        self.conversation = Some(conversation.to_owned());
        self
    }

    pub(crate) fn for_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub(crate) fn at_seqs(mut self, seqs: impl IntoIterator<Item = u64>) -> Self {
        self.seqs = seqs.into_iter().collect();
        self
    }

    pub(crate) fn on_nodes(mut self, nodes: impl IntoIterator<Item = u32>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    pub(crate) fn at_shard_index(mut self, shard: u32, index: u64) -> Self {
        self.shard = Some(shard);
        self.index = Some(index);
        self
    }

    pub(crate) fn with_op(mut self, op: OpRef) -> Self {
        self.operations.push(op);
        self
    }

    pub(crate) fn with_ops(mut self, ops: impl IntoIterator<Item = OpRef>) -> Self {
        self.operations.extend(ops);
        self
    }
}

impl fmt::Display for Violation {
    /// `KIND [conversation] [user U] [seq …] [node …] [shard S index I]: detail`, then one
    /// indented line per operation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind.as_str().to_uppercase())?;
        if let Some(conversation) = &self.conversation {
            write!(f, " {conversation}")?;
        }
        if let Some(user) = &self.user {
            write!(f, " user {user}")?;
        }
        if !self.seqs.is_empty() {
            let label = if self.seqs.len() == 1 { "seq" } else { "seqs" };
            write!(f, " {label} {}", join(&self.seqs))?;
        }
        if !self.nodes.is_empty() {
            let label = if self.nodes.len() == 1 { "node" } else { "nodes" };
            write!(f, " {label} {}", join(&self.nodes))?;
        }
        if let Some(shard) = self.shard {
            write!(f, " shard {shard}")?;
        }
        if let Some(index) = self.index {
            write!(f, " index {index}")?;
        }
        write!(f, ": {}", self.detail)?;
        for op in &self.operations {
            write!(f, "\n    {op}")?;
        }
        Ok(())
    }
}

/// What a [`Note`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Two nodes reported hashes of a shard at no common index, so they could not be compared.
    HashIncomparable,
}

/// Something the checker could not judge; printed, but not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// What it is about.
    pub kind: NoteKind,
    /// The shard, when about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// The nodes involved.
    pub nodes: Vec<u32>,
    /// For a person.
    pub detail: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            NoteKind::HashIncomparable => f.write_str("HASH_INCOMPARABLE")?,
        }
        if let Some(shard) = self.shard {
            write!(f, " shard {shard}")?;
        }
        if !self.nodes.is_empty() {
            write!(f, " nodes {}", join(&self.nodes))?;
        }
        write!(f, ": {}", self.detail)
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
