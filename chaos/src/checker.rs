//! [`check`]: judges a history against the promises of DESIGN.md ("Correctness we promise and
//! check") and returns a [`Report`].
//!
//! The final histories are the yardstick. For each conversation the nodes' `final` records are
//! grouped by content; the content most nodes agree on (ties: the group with the lowest node
//! id) is the *reference*, every other group is a divergence, and the sends, reads and lists
//! are judged against the reference. Its last seq is the conversation's `n`.
//!
//! One file per rule:
//! - `finals.rs` — rule 2: final seqs are exactly 1..=n and identical on every node; every
//!   written or read conversation has a final history.
//! - `sends.rs` — rules 1 and 4: an acknowledged send is in the final history exactly once, at
//!   its acknowledged seq and message id; an unknown one at most once; a rejected one never;
//!   nothing in the final history that no send explains.
//! - `reads.rs` — rule 3: every successful read agrees with the final history.
//! - `lists.rs` — rule 5: conversation lists (head, unread, cursor, completeness).
//! - `hashes.rs` — rule 6: shard hashes agree at equal indexes.
//! - `social.rs` — groups and relationships: every node's member lists and friend lists
//!   equal a recount of the events in the event log; no group message was accepted from a
//!   non-member or a muted member, and no one-to-one message from a sender the recipient had
//!   blocked, judged in log order. (Group streams are judged by rules 1, 2 and 5 like
//!   one-to-one conversations: their sends, final histories and list rows.)
//! - `delivery.rs` — DLV-01/02: every subscribed device received each message of a
//!   conversation at most once and in seq order, each the final history's message at its
//!   seq; and every message of its user's one-to-one conversations (so every acknowledged
//!   send reached every device of both members exactly once, across faults).
//! - `projections.rs` — invariant 4: every node's projections of every shard equal a replay
//!   of the shard's event log (`Admin/VerifyProjections`, run by each node after healing).
//!
//! Sends are grouped by (conversation, request id): a retry recorded as a second `send` with
//! the same request id is the same request, which must take effect once. An attempt rejected
//! with a typed error says only that *that* attempt was not applied; a request is "rejected"
//! only when every attempt was.

mod delivery;
mod finals;
mod hashes;
mod lists;
mod projections;
mod reads;
mod report;
mod sends;
mod social;
mod violation;

use std::collections::{BTreeMap, HashMap};

pub use report::Report;
pub use violation::{Note, NoteKind, OpKind, OpRef, Violation, ViolationKind};

use crate::history::{
    DeliveredRecord, FinalConversationsRecord, FinalFriendsRecord, FinalMembersRecord, FinalRecord, LogEventRecord,
    MarkReadRecord, Outcome, ProjectionsRecord, ReadMessage, ReadRecord, Record, SendRecord, ShardHashRecord,
    SocialRecord,
};

/// Judges a history. Never fails: whatever cannot be judged is a violation (e.g. an
/// acknowledged send without its seq, a conversation without a final history) or a note.
pub fn check(records: &[Record]) -> Report {
    let history = History::index(records);
    let mut report = history.counts();
    let finals = finals::check(&history, &mut report.violations);
    report.conversations = finals.len() as u64;
    report.final_messages = finals.values().map(|history| history.messages.len() as u64).sum();
    sends::check(&history, &finals, &mut report);
    reads::check(&history, &finals, &mut report.violations);
    lists::check(&history, &finals, &mut report.violations);
    hashes::check(&history, &mut report);
    projections::check(&history, &mut report);
    social::check(&history, &mut report);
    delivery::check(&history, &finals, &mut report);
    report
}

/// The records of a history, sorted by kind, in history order.
struct History<'a> {
    sends: Vec<&'a SendRecord>,
    /// Attempts of each request, keyed by (conversation, request id), in order of first attempt.
    requests: Vec<Request<'a>>,
    reads: Vec<&'a ReadRecord>,
    mark_reads: Vec<&'a MarkReadRecord>,
    /// Final records by conversation.
    finals: BTreeMap<&'a str, Vec<&'a FinalRecord>>,
    lists: Vec<&'a FinalConversationsRecord>,
    hashes: Vec<&'a ShardHashRecord>,
    projections: Vec<&'a ProjectionsRecord>,
    socials: Vec<&'a SocialRecord>,
    members: Vec<&'a FinalMembersRecord>,
    friends: Vec<&'a FinalFriendsRecord>,
    events: Vec<&'a LogEventRecord>,
    delivered: Vec<&'a DeliveredRecord>,
    faults: u64,
    heals: u64,
    unrecovered: u64,
    slowest_recovery_ms: Option<u64>,
}

/// Every attempt of one request id in one conversation.
struct Request<'a> {
    conversation: &'a str,
    request_id: &'a str,
    attempts: Vec<&'a SendRecord>,
}

impl<'a> History<'a> {
    fn index(records: &'a [Record]) -> Self {
        let mut history = History {
            sends: Vec::new(),
            requests: Vec::new(),
            reads: Vec::new(),
            mark_reads: Vec::new(),
            finals: BTreeMap::new(),
            lists: Vec::new(),
            hashes: Vec::new(),
            projections: Vec::new(),
            socials: Vec::new(),
            members: Vec::new(),
            friends: Vec::new(),
            events: Vec::new(),
            delivered: Vec::new(),
            faults: 0,
            heals: 0,
            unrecovered: 0,
            slowest_recovery_ms: None,
        };
        let mut request_index: HashMap<(&str, &str), usize> = HashMap::new();
        for record in records {
            match record {
                Record::Send(send) => {
                    history.sends.push(send);
                    let key = (send.conversation.as_str(), send.request_id.as_str());
                    let index = *request_index.entry(key).or_insert_with(|| {
                        history.requests.push(Request {
                            conversation: &send.conversation,
                            request_id: &send.request_id,
                            attempts: Vec::new(),
                        });
                        history.requests.len() - 1
                    });
                    history.requests[index].attempts.push(send);
                }
                Record::Read(read) => history.reads.push(read),
                Record::MarkRead(mark) => history.mark_reads.push(mark),
                Record::Final(last) => history.finals.entry(&last.conversation).or_default().push(last),
                Record::FinalConversations(list) => history.lists.push(list),
                Record::ShardHash(hash) => history.hashes.push(hash),
                Record::Projections(check) => history.projections.push(check),
                Record::Social(social) => history.socials.push(social),
                Record::FinalMembers(members) => history.members.push(members),
                Record::FinalFriends(friends) => history.friends.push(friends),
                Record::LogEvent(event) => history.events.push(event),
                Record::Delivered(delivered) => history.delivered.push(delivered),
                Record::Fault(_) => history.faults += 1,
                Record::Healed(healed) => {
                    history.heals += 1;
                    history.unrecovered += u64::from(healed.recovery_error.is_some());
                    history.slowest_recovery_ms = history.slowest_recovery_ms.max(healed.recovered_ms);
                }
            }
        }
        history
    }

    fn counts(&self) -> Report {
        let sends_with = |outcome| self.sends.iter().filter(|send| send.outcome == outcome).count() as u64;
        Report {
            operations: (self.sends.len() + self.reads.len() + self.mark_reads.len() + self.socials.len()) as u64,
            socials: self.socials.len() as u64,
            sends: self.sends.len() as u64,
            acknowledged: sends_with(Outcome::Ok),
            rejected: sends_with(Outcome::Error),
            unknown: sends_with(Outcome::Unknown),
            reads: self.reads.len() as u64,
            mark_reads: self.mark_reads.len() as u64,
            lists: self.lists.len() as u64,
            faults: self.faults,
            heals: self.heals,
            unrecovered: self.unrecovered,
            slowest_recovery_ms: self.slowest_recovery_ms,
            ..Report::default()
        }
    }
}

/// One conversation's reference final history.
struct FinalHistory<'a> {
    /// The reference content, sorted by seq.
    messages: Vec<&'a ReadMessage>,
    /// The highest seq (0 when empty): the conversation's `n`.
    last_seq: u64,
    /// The first message at each seq.
    by_seq: HashMap<u64, &'a ReadMessage>,
    /// The messages with each text (a request id), ascending by seq.
    by_text: HashMap<&'a str, Vec<&'a ReadMessage>>,
}

impl<'a> FinalHistory<'a> {
    fn new(messages: Vec<&'a ReadMessage>) -> Self {
        let mut by_seq = HashMap::new();
        let mut by_text: HashMap<&str, Vec<&ReadMessage>> = HashMap::new();
        for message in &messages {
            by_seq.entry(message.seq).or_insert(*message);
            by_text.entry(message.text.as_str()).or_default().push(*message);
        }
        let last_seq = messages.iter().map(|message| message.seq).max().unwrap_or(0);
        FinalHistory { messages, last_seq, by_seq, by_text }
    }
}

/// The reference final histories, by conversation.
type Finals<'a> = BTreeMap<&'a str, FinalHistory<'a>>;

/// The two users of a C2C conversation id `c2c:{a}:{b}`; `None` for other conversations.
fn c2c_parties(conversation: &str) -> Option<(&str, &str)> {
    let (a, b) = conversation.strip_prefix("c2c:")?.split_once(':')?;
    Some((a, b))
}

/// A message as evidence: `seq 2 = m-7 "r-3" from bob`.
fn describe(message: &ReadMessage) -> String {
    format!("seq {} = {} {:?} from {}", message.seq, message.message_id, message.text, message.sender)
}
