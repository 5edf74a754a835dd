#![allow(clippy::unwrap_used)]
//! Self-tests of the history checker: hand-made histories, each breaking one promise, must be
//! reported as exactly that violation with the right evidence; a clean generated history of
//! several hundred operations must pass; every record survives the JSON Lines round trip.

use std::collections::{BTreeMap, HashMap};

use meridian_chaos::{
    check, read_history, ConvRow, FaultRecord, FinalConversationsRecord, FinalRecord, HealedRecord, HistoryWriter,
    MarkReadRecord, NoteKind, OpKind, Outcome, ProjectionsRecord, ReadMessage, ReadRecord, Record, Report, SendRecord,
    ShardHashRecord, Violation, ViolationKind,
};
use meridian_chaos::{DeliveredRecord, FinalFriendsRecord, FinalMembersRecord, LogEventRecord};

const AB: &str = "c2c:alice:bob";
const ALL_NODES: [u32; 3] = [1, 2, 3];

/// The C2C conversation id of two users.
fn c2c(a: &str, b: &str) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("c2c:{low}:{high}")
}

/// A message as the workload writes it: text = request id, message id = `m-{request id}`.
fn msg(seq: u64, request_id: &str, sender: &str) -> ReadMessage {
    ReadMessage {
        seq,
        message_id: format!("m-{request_id}"),
        sender: sender.into(),
        text: request_id.into(),
        system: false,
    }
}

/// Builds a history; each client operation takes 5 ms and starts 10 ms after the previous one
/// (the first at 0..5, the second at 10..15, …).
#[derive(Default)]
struct Story {
    records: Vec<Record>,
    clock: u64,
}

impl Story {
    fn tick(&mut self) -> (u64, u64) {
        let start = self.clock;
        self.clock += 10;
        (start, start + 5)
    }

    fn send(&mut self, client: u32, request_id: &str, from: &str, to: &str, outcome: Outcome, seq: Option<u64>) {
        let (start_ms, end_ms) = self.tick();
        let acked = outcome == Outcome::Ok;
        self.records.push(Record::Send(SendRecord {
            client,
            request_id: request_id.into(),
            from: from.into(),
            to: to.into(),
            conversation: c2c(from, to),
            start_ms,
            end_ms,
            outcome,
            seq: if acked { seq } else { None },
            message_id: acked.then(|| format!("m-{request_id}")),
            error: match outcome {
                Outcome::Ok => None,
                Outcome::Error => Some("NOT_FRIEND: not friends".into()),
                Outcome::Unknown => Some("DEADLINE_EXCEEDED: no answer within 2000ms".into()),
            },
        }));
    }

    fn send_ok(&mut self, client: u32, request_id: &str, from: &str, to: &str, seq: u64) {
        self.send(client, request_id, from, to, Outcome::Ok, Some(seq));
    }

    fn read(&mut self, client: u32, reader: &str, conversation: &str, messages: Vec<ReadMessage>, last_seq: u64) {
        let (start_ms, end_ms) = self.tick();
        self.records.push(Record::Read(ReadRecord {
            client,
            reader: reader.into(),
            conversation: conversation.into(),
            start_ms,
            end_ms,
            outcome: Outcome::Ok,
            messages,
            last_seq,
        }));
    }

    fn mark_read(&mut self, client: u32, user: &str, conversation: &str, read_seq: u64) {
        let (start_ms, end_ms) = self.tick();
        self.records.push(Record::MarkRead(MarkReadRecord {
            client,
            user: user.into(),
            conversation: conversation.into(),
            start_ms,
            end_ms,
            outcome: Outcome::Ok,
            read_seq: Some(read_seq),
        }));
    }

    fn final_on(&mut self, nodes: &[u32], conversation: &str, messages: &[ReadMessage]) {
        for &node in nodes {
            self.records.push(Record::Final(FinalRecord {
                node,
                conversation: conversation.into(),
                messages: messages.to_vec(),
            }));
        }
    }

    fn list(&mut self, node: u32, user: &str, rows: Vec<ConvRow>, total_unread: u64) {
        self.records.push(Record::FinalConversations(FinalConversationsRecord {
            node,
            user: user.into(),
            rows,
            total_unread,
        }));
    }

    fn hash(&mut self, node: u32, shard: u32, index: u64, hash: &str) {
        self.records.push(Record::ShardHash(ShardHashRecord { node, shard, index, hash: hash.into() }));
    }

    fn delivered(&mut self, device: &str, user: &str, conversation: &str, messages: &[(u64, &str)]) {
        self.records.push(Record::Delivered(DeliveredRecord {
            device: device.into(),
            user: user.into(),
            conversation: conversation.into(),
            messages: messages.iter().map(|(seq, id)| (*seq, format!("m-{id}"))).collect(),
            connects: 2,
            caught_up: true,
        }));
    }

    fn check(&self) -> Report {
        check(&self.records)
    }
}

fn row(conversation: &str, peer: &str, last_seq: u64, read_seq: u64, unread: u64) -> ConvRow {
    ConvRow { conversation: conversation.into(), peer: peer.into(), last_seq, read_seq, unread }
}

/// The report's one violation, which must be of `kind`.
fn only_violation(report: &Report, kind: ViolationKind) -> &Violation {
    let all: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert_eq!(report.violations.len(), 1, "expected exactly one {kind} violation, got:\n{}", all.join("\n"));
    let violation = &report.violations[0];
    assert_eq!(violation.kind, kind, "{violation}");
    assert!(!report.is_ok());
    violation
}

/// Alice sends r1 and r2 to Bob, both acknowledged at seqs 1 and 2.
fn two_acknowledged_sends() -> Story {
    let mut story = Story::default();
    story.send_ok(1, "r1", "alice", "bob", 1);
    story.send_ok(1, "r2", "alice", "bob", 2);
    story
}

#[test]
fn lost_acknowledged_write() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice")]);

    let report = story.check();

    let lost = only_violation(&report, ViolationKind::Lost);
    assert_eq!(lost.conversation.as_deref(), Some(AB));
    assert_eq!(lost.seqs, vec![2]);
    assert_eq!(lost.operations.len(), 1);
    let send = &lost.operations[0];
    assert_eq!(
        (send.op, send.client, send.request_id.as_deref(), send.start_ms, send.end_ms, send.outcome),
        (OpKind::Send, 1, Some("r2"), 10, 15, Outcome::Ok)
    );
    assert_eq!(report.count(ViolationKind::Lost), 1);
    assert_eq!(report.acknowledged, 2);
}

#[test]
fn lost_write_that_a_reader_saw_is_also_a_phantom_read() {
    let mut story = two_acknowledged_sends();
    story.read(2, "bob", AB, vec![msg(1, "r1", "alice"), msg(2, "r2", "alice")], 2);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice")]);

    let report = story.check();

    let kinds: Vec<ViolationKind> = report.violations.iter().map(|violation| violation.kind).collect();
    assert_eq!(kinds, vec![ViolationKind::Lost, ViolationKind::Phantom]);
    let lost = &report.violations[0];
    assert!(lost.detail.contains("a read had returned it"), "{lost}");
    assert_eq!(lost.operations[1].op, OpKind::Read);
    assert_eq!(lost.operations[1].user, "bob");
}

#[test]
fn duplicate_request_at_two_seqs() {
    let mut story = Story::default();
    story.send_ok(1, "r1", "alice", "bob", 1);
    let mut again = msg(2, "r1", "alice");
    again.message_id = "m-r1-again".into();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), again]);

    let report = story.check();

    let duplicated = only_violation(&report, ViolationKind::Duplicated);
    assert_eq!(duplicated.conversation.as_deref(), Some(AB));
    assert_eq!(duplicated.seqs, vec![1, 2]);
    assert_eq!(duplicated.operations[0].request_id.as_deref(), Some("r1"));
    assert!(duplicated.detail.contains("m-r1-again"), "{duplicated}");
}

#[test]
fn gap_in_final_seqs() {
    let mut story = Story::default();
    story.send_ok(1, "r1", "alice", "bob", 1);
    story.send_ok(1, "r2", "alice", "bob", 2);
    story.send_ok(1, "r3", "alice", "bob", 4);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice"), msg(4, "r3", "alice")]);

    let report = story.check();

    let gap = only_violation(&report, ViolationKind::Gap);
    assert_eq!(gap.conversation.as_deref(), Some(AB));
    assert_eq!(gap.seqs, vec![3]);
    assert_eq!(gap.nodes, ALL_NODES.to_vec());
}

#[test]
fn read_saw_another_message_at_a_seq() {
    let mut story = Story::default();
    story.send_ok(1, "rA", "alice", "bob", 1);
    story.send(1, "rB", "alice", "bob", Outcome::Unknown, None);
    story.send_ok(2, "rC", "bob", "alice", 2);
    story.read(2, "bob", AB, vec![msg(1, "rA", "alice"), msg(2, "rB", "alice")], 2);
    story.final_on(&ALL_NODES, AB, &[msg(1, "rA", "alice"), msg(2, "rC", "bob")]);

    let report = story.check();

    let reorder = only_violation(&report, ViolationKind::Reorder);
    assert_eq!(reorder.conversation.as_deref(), Some(AB));
    assert_eq!(reorder.seqs, vec![2]);
    assert!(reorder.detail.contains("m-rB") && reorder.detail.contains("m-rC"), "{reorder}");
    let read = &reorder.operations[0];
    assert_eq!((read.op, read.client, read.user.as_str(), read.start_ms), (OpKind::Read, 2, "bob", 30));
}

#[test]
fn phantom_read_of_a_seq_the_final_history_lacks() {
    let mut story = two_acknowledged_sends();
    story.send(1, "r3", "alice", "bob", Outcome::Unknown, None);
    story.read(3, "bob", AB, vec![msg(3, "r3", "alice")], 3);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);

    let report = story.check();

    let phantom = only_violation(&report, ViolationKind::Phantom);
    assert_eq!(phantom.conversation.as_deref(), Some(AB));
    assert_eq!(phantom.seqs, vec![3]);
    assert!(phantom.detail.contains("head 3 beyond the final last seq 2"), "{phantom}");
    assert_eq!(phantom.operations[0].client, 3);
}

#[test]
fn rejected_send_that_appears() {
    let mut story = Story::default();
    story.send_ok(1, "r1", "alice", "bob", 1);
    story.send(1, "r2", "alice", "bob", Outcome::Error, None);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);

    let report = story.check();

    let rejected = only_violation(&report, ViolationKind::RejectedApplied);
    assert_eq!(rejected.seqs, vec![2]);
    let send = &rejected.operations[0];
    assert_eq!((send.request_id.as_deref(), send.outcome), (Some("r2"), Outcome::Error));
    assert!(rejected.detail.contains("NOT_FRIEND"), "{rejected}");
}

#[test]
fn a_node_whose_final_history_diverges() {
    let mut story = two_acknowledged_sends();
    story.final_on(&[1, 2], AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story.final_on(&[3], AB, &[msg(1, "r1", "alice")]);

    let report = story.check();

    let divergence = only_violation(&report, ViolationKind::Divergence);
    assert_eq!(divergence.conversation.as_deref(), Some(AB));
    assert_eq!(divergence.nodes, vec![3]);
    assert_eq!(divergence.seqs, vec![2]);
    assert!(divergence.detail.contains("nodes 1,2 continues with seq 2 = m-r2"), "{divergence}");
}

#[test]
fn wrong_unread_count() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story.list(1, "bob", vec![row(AB, "alice", 2, 0, 1)], 1);

    let report = story.check();

    let unread = only_violation(&report, ViolationKind::UnreadMismatch);
    assert_eq!(unread.conversation.as_deref(), Some(AB));
    assert_eq!(unread.user.as_deref(), Some("bob"));
    assert_eq!(unread.nodes, vec![1]);
    assert!(unread.detail.contains("unread 1 but last seq 2 - read seq 0 = 2"), "{unread}");
}

#[test]
fn conversation_missing_from_a_users_list() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story.list(2, "bob", vec![], 0);

    let report = story.check();

    let missing = only_violation(&report, ViolationKind::ListMissing);
    assert_eq!(missing.conversation.as_deref(), Some(AB));
    assert_eq!(missing.user.as_deref(), Some("bob"));
    assert_eq!(missing.nodes, vec![2]);
    assert_eq!(missing.seqs, vec![2]);
}

#[test]
fn differing_shard_hashes_at_one_index() {
    let mut story = Story::default();
    story.hash(1, 0, 10, "aa");
    story.hash(2, 0, 10, "aa");
    story.hash(3, 0, 10, "bb");

    let report = story.check();

    let mismatch = only_violation(&report, ViolationKind::HashMismatch);
    assert_eq!((mismatch.shard, mismatch.index), (Some(0), Some(10)));
    assert_eq!(mismatch.nodes, vec![3]);
    assert!(mismatch.detail.contains("node 3: bb"), "{mismatch}");
    assert_eq!(report.hashes_compared, 1);
}

#[test]
fn projections_that_differ_from_the_replay_on_one_node() {
    let mut story = Story::default();
    for node in ALL_NODES {
        story.records.push(Record::Projections(ProjectionsRecord {
            node,
            shard: 2,
            index: 40,
            equal: node != 2,
            difference: if node == 2 { "projections/c…: values differ".into() } else { String::new() },
        }));
    }

    let report = story.check();

    let mismatch = only_violation(&report, ViolationKind::ProjectionMismatch);
    assert_eq!((mismatch.shard, mismatch.index, mismatch.nodes.clone()), (Some(2), Some(40), vec![2]));
    assert!(mismatch.detail.contains("values differ"), "{mismatch}");
    assert_eq!(report.projections_verified, 3);
}

#[test]
fn hashes_at_different_indexes_are_a_note_not_a_violation() {
    let mut story = Story::default();
    story.hash(1, 4, 10, "aa");
    story.hash(2, 4, 12, "bb");

    let report = story.check();

    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!(report.notes.len(), 1);
    assert_eq!(report.notes[0].kind, NoteKind::HashIncomparable);
    assert_eq!(report.notes[0].shard, Some(4));
    assert_eq!(report.notes[0].nodes, vec![1, 2]);
}

#[test]
fn unknown_send_applied_twice() {
    let mut story = Story::default();
    story.send(1, "r1", "alice", "bob", Outcome::Unknown, None);
    let mut again = msg(2, "r1", "alice");
    again.message_id = "m-r1-again".into();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), again]);

    let report = story.check();

    let duplicated = only_violation(&report, ViolationKind::Duplicated);
    assert_eq!(duplicated.seqs, vec![1, 2]);
    assert_eq!(duplicated.operations[0].outcome, Outcome::Unknown);
}

#[test]
fn retried_request_that_took_effect_once_is_clean() {
    let mut story = Story::default();
    story.send(1, "r1", "alice", "bob", Outcome::Unknown, None);
    story.send_ok(1, "r1", "alice", "bob", 1);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice")]);

    let report = story.check();

    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!((report.sends, report.acknowledged, report.unknown, report.unknown_applied), (2, 1, 1, 0));
}

#[test]
fn acknowledged_sends_at_swapped_seqs_are_misplaced() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r2", "alice"), msg(2, "r1", "alice")]);

    let report = story.check();

    assert_eq!(report.count(ViolationKind::Misplaced), 2, "{:?}", report.violations);
    assert_eq!(report.violations.len(), 2);
    assert_eq!(report.violations[0].seqs, vec![1, 2]);
}

#[test]
fn read_cursor_behind_an_acknowledged_mark_read() {
    let mut story = two_acknowledged_sends();
    story.mark_read(2, "bob", AB, 2);
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story.list(1, "bob", vec![row(AB, "alice", 2, 1, 1)], 1);

    let report = story.check();

    let behind = only_violation(&report, ViolationKind::CursorBehind);
    assert_eq!(behind.seqs, vec![1, 2]);
    assert_eq!(behind.operations[0].op, OpKind::MarkRead);
    assert_eq!(behind.operations[0].start_ms, 20);
}

#[test]
fn senders_cursor_behind_their_own_message() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story.list(1, "alice", vec![row(AB, "bob", 2, 0, 2)], 2);

    let report = story.check();

    let behind = only_violation(&report, ViolationKind::CursorBehind);
    assert_eq!(behind.user.as_deref(), Some("alice"));
    assert_eq!(behind.operations[0].request_id.as_deref(), Some("r2"));
}

#[test]
fn acknowledged_conversation_without_final_history() {
    let story = two_acknowledged_sends();

    let report = story.check();

    let missing = only_violation(&report, ViolationKind::MissingFinal);
    assert_eq!(missing.conversation.as_deref(), Some(AB));
}

#[test]
fn violation_and_summary_print_their_evidence() {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice")]);

    let report = story.check();

    let printed = report.violations[0].to_string();
    assert_eq!(
        printed,
        "LOST c2c:alice:bob seq 2: acknowledged as seq 2 / m-r2, not in the final history (last seq 1)\n    \
         send r2 by alice acked seq 2 (client 1, 10..15 ms, ok)"
    );
    let table = report.summary_table();
    let line = |label: &str| table.lines().find(|line| line.trim_start().starts_with(label)).unwrap().to_owned();
    assert!(line("lost").ends_with(" 1"), "{table}");
    assert!(line("duplicated").ends_with(" 0"), "{table}");
    assert!(line("acknowledged").ends_with(" 2"), "{table}");
    assert!(line("verdict").ends_with("FAILED"), "{table}");
}

/// A small deterministic generator (an LCG), so that the clean history is the same every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The state of a cluster that keeps every promise.
#[derive(Default)]
struct Model {
    conversations: BTreeMap<String, Vec<ReadMessage>>,
    /// Read cursors by (user, conversation).
    cursors: HashMap<(String, String), u64>,
}

impl Model {
    /// Applies a send: the next seq, and the sender's cursor moves to it.
    fn apply(&mut self, request_id: &str, from: &str, to: &str) -> u64 {
        let messages = self.conversations.entry(c2c(from, to)).or_default();
        let seq = messages.len() as u64 + 1;
        messages.push(msg(seq, request_id, from));
        self.cursors.insert((from.to_owned(), c2c(from, to)), seq);
        seq
    }
}

/// Runs a model cluster that keeps every promise and records its history: sends (some
/// unknown and applied or not, some retried, some rejected), reads of random pages,
/// mark-reads; then the finals, lists and hashes of three agreeing nodes.
fn clean_history(operations: usize) -> Vec<Record> {
    let users = ["ana", "ben", "cai", "dee", "eve"];
    let mut rng = Lcg(7);
    let mut story = Story::default();
    let mut model = Model::default();
    story.records.push(Record::Fault(FaultRecord {
        at_ms: 0,
        kind: "kill".into(),
        target: "node 2".into(),
        detail: "SIGKILL".into(),
    }));
    for op in 0..operations {
        let client = rng.below(4) as u32 + 1;
        let from = users[rng.below(5) as usize];
        let to = loop {
            let to = users[rng.below(5) as usize];
            if to != from {
                break to;
            }
        };
        let request_id = format!("r{op}");
        match rng.below(10) {
            0..=4 => {
                let seq = model.apply(&request_id, from, to);
                story.send_ok(client, &request_id, from, to, seq);
            }
            5 => {
                // Timed out; applied or not; sometimes retried with the same request id.
                let applied = rng.below(2) == 0;
                let seq = applied.then(|| model.apply(&request_id, from, to));
                story.send(client, &request_id, from, to, Outcome::Unknown, None);
                if rng.below(2) == 0 {
                    let seq = seq.unwrap_or_else(|| model.apply(&request_id, from, to));
                    story.send_ok(client, &request_id, from, to, seq);
                }
            }
            6 => story.send(client, &request_id, from, to, Outcome::Error, None),
            7 | 8 => {
                let conversation = c2c(from, to);
                let messages = model.conversations.get(&conversation).cloned().unwrap_or_default();
                let len = messages.len() as u64;
                let (low, high) = if len == 0 {
                    (0, 0)
                } else {
                    let a = rng.below(len);
                    let b = rng.below(len);
                    (a.min(b), a.max(b) + 1)
                };
                story.read(client, from, &conversation, messages[low as usize..high as usize].to_vec(), len);
            }
            _ => {
                let conversation = c2c(from, to);
                let len = model.conversations.get(&conversation).map_or(0, Vec::len) as u64;
                if len > 0 {
                    let read_seq = rng.below(len) + 1;
                    let cursor = model.cursors.entry((from.to_owned(), conversation.clone())).or_default();
                    *cursor = (*cursor).max(read_seq);
                    story.mark_read(client, from, &conversation, read_seq);
                }
            }
        }
    }
    story.records.push(Record::Healed(HealedRecord {
        at_ms: story.clock,
        kind: "kill".into(),
        target: "node 2".into(),
        recovered_ms: Some(1200),
        recovery_error: None,
    }));

    for (conversation, messages) in &model.conversations {
        story.final_on(&ALL_NODES, conversation, messages);
    }
    for node in ALL_NODES {
        for user in users {
            let mut rows = Vec::new();
            for (conversation, messages) in &model.conversations {
                let Some(peer) = users.iter().find(|&&peer| peer != user && c2c(user, peer) == *conversation) else {
                    continue;
                };
                let last_seq = messages.len() as u64;
                let read_seq = model.cursors.get(&(user.to_owned(), conversation.clone())).copied().unwrap_or(0);
                rows.push(row(conversation, peer, last_seq, read_seq, last_seq - read_seq));
            }
            let total = rows.iter().map(|row| row.unread).sum();
            story.list(node, user, rows, total);
        }
        for shard in 0..8 {
            story.hash(node, shard, 100 + u64::from(shard), &format!("{:016x}", 0xfeed_u64 * u64::from(shard + 1)));
        }
    }
    story.records
}

#[test]
fn clean_history_of_hundreds_of_operations_passes() {
    let records = clean_history(400);

    let report = check(&records);

    let all: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert!(report.is_ok(), "clean history reported:\n{}", all.join("\n"));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert!(report.operations >= 350, "{}", report.summary_table());
    assert!(report.acknowledged >= 200 && report.unknown > 0 && report.rejected > 0, "{}", report.summary_table());
    assert!(report.unknown_applied > 0 && report.reads > 0 && report.mark_reads > 0, "{}", report.summary_table());
    assert_eq!(report.conversations, 10);
    assert_eq!(report.hashes_compared, 8);
    assert_eq!((report.faults, report.heals, report.unrecovered, report.slowest_recovery_ms), (1, 1, 0, Some(1200)));
    assert!(report.summary_table().lines().last().unwrap().ends_with("OK"));
}

/// One record of every kind.
fn one_of_each() -> Vec<Record> {
    let mut story = Story::default();
    story.send_ok(1, "r1", "alice", "bob", 1);
    story.send(2, "r2", "bob", "alice", Outcome::Unknown, None);
    story.read(3, "bob", AB, vec![msg(1, "r1", "alice")], 1);
    story.mark_read(3, "bob", AB, 1);
    story.final_on(&[1], AB, &[msg(1, "r1", "alice")]);
    story.list(1, "bob", vec![row(AB, "alice", 1, 1, 0)], 0);
    story.hash(1, 3, 42, "9f86d081884c7d65");
    story.records.push(Record::Projections(ProjectionsRecord {
        node: 1,
        shard: 3,
        index: 42,
        equal: true,
        difference: String::new(),
    }));
    story.records.push(Record::Fault(FaultRecord {
        at_ms: 100,
        kind: "partition".into(),
        target: "node 1".into(),
        detail: "isolated from nodes 2,3".into(),
    }));
    story.records.push(Record::Healed(HealedRecord {
        at_ms: 900,
        kind: "partition".into(),
        target: "node 1".into(),
        recovered_ms: None,
        recovery_error: Some("no leader for shard 3 within 60 s".into()),
    }));
    story.records
}

#[test]
fn a_heal_without_recovery_is_counted_and_older_heal_lines_still_read() {
    let report = check(&one_of_each());
    assert_eq!((report.heals, report.unrecovered, report.slowest_recovery_ms), (1, 1, None));
    assert!(report.summary_table().contains("heals not recovered in time"), "{}", report.summary_table());

    // A line written before the field existed.
    let line = r#"{"op":"healed","at_ms":5,"kind":"kill","target":"node-1","recovered_ms":null}"#;
    let Record::Healed(healed) = serde_json::from_str::<Record>(line).unwrap() else { panic!("not a heal") };
    assert_eq!((healed.recovered_ms, healed.recovery_error), (None, None));
}

#[test]
fn every_record_round_trips_through_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let records = one_of_each();

    let writer = HistoryWriter::create(&path).unwrap();
    for record in &records {
        writer.append(record).unwrap();
    }

    assert_eq!(read_history(&path).unwrap(), records);
    let text = std::fs::read_to_string(&path).unwrap();
    let ops: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["op"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops,
        [
            "send",
            "send",
            "read",
            "mark_read",
            "final",
            "final_conversations",
            "shard_hash",
            "projections",
            "fault",
            "healed"
        ]
    );
    assert!(text.lines().next().unwrap().starts_with(r#"{"op":"send","client":1,"request_id":"r1","#));
    assert!(text.contains(r#""outcome":"unknown""#));
}

#[test]
fn concurrent_writers_never_interleave_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let writer = HistoryWriter::create(&path).unwrap();
    let record = &one_of_each()[2];

    std::thread::scope(|scope| {
        for _ in 0..4 {
            let writer = writer.clone();
            scope.spawn(move || {
                for _ in 0..200 {
                    writer.append(record).unwrap();
                }
            });
        }
    });

    let records = read_history(&path).unwrap();
    assert_eq!(records.len(), 800);
    assert!(records.iter().all(|read| read == record));
}

#[test]
fn a_bad_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let writer = HistoryWriter::create(&path).unwrap();
    writer.append(&one_of_each()[0]).unwrap();
    drop(writer);
    let appender = HistoryWriter::open_append(&path).unwrap();
    appender.append(&one_of_each()[1]).unwrap();
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "\n{\"op\":\"send\",\"client\":1\n").unwrap();

    let error = read_history(&path).unwrap_err().to_string();

    assert!(error.contains("line 4"), "{error}");
}

/// A logged event of shard 0 at `index`, as the campaign records it.
fn logged(index: u64, kind: &str, stream: &str, user: &str, other: &str) -> LogEventRecord {
    LogEventRecord {
        node: 1,
        shard: 0,
        index,
        command: 0,
        event: 0,
        kind: kind.into(),
        stream: stream.into(),
        user: user.into(),
        other: other.into(),
        seq: 0,
        time_ms: 1_000 + i64::try_from(index).unwrap(),
        until_ms: 0,
        flag: false,
    }
}

fn group_story(extra: Vec<LogEventRecord>, members_shown: &[&str]) -> Report {
    let mut records = vec![
        Record::LogEvent(logged(1, "GroupMemberAdded", "g", "own", "")),
        Record::LogEvent(logged(2, "GroupMemberAdded", "g", "ann", "")),
        Record::LogEvent(logged(3, "GroupMemberAdded", "g", "bob", "")),
        Record::LogEvent(logged(4, "GroupMemberRemoved", "g", "bob", "")),
    ];
    records.extend(extra.into_iter().map(Record::LogEvent));
    records.push(Record::FinalMembers(FinalMembersRecord {
        node: 2,
        group: "g".into(),
        members: members_shown.iter().map(|m| m.to_string()).collect(),
    }));
    check(&records)
}

#[test]
fn member_lists_equal_a_recount_of_the_event_log() {
    let clean = group_story(vec![], &["ann", "own"]);
    assert!(clean.is_ok(), "{:?}", clean.violations);
    assert_eq!(clean.social_lists_checked, 1);
    let report = group_story(vec![], &["ann", "bob", "own"]);
    let v = only_violation(&report, ViolationKind::MemberListMismatch);
    assert_eq!((v.conversation.as_deref(), v.nodes.clone()), (Some("grp:g"), vec![2]));
    assert!(v.detail.contains("ann,own"), "{v}");
}

#[test]
fn a_group_message_from_a_removed_or_muted_member_is_illegal() {
    let mut from_bob = logged(5, "GroupMessageSent", "g", "bob", "");
    from_bob.seq = 1;
    let report = group_story(vec![from_bob], &["ann", "own"]);
    let v = only_violation(&report, ViolationKind::IllegalSend);
    assert!(v.detail.contains("not a member"), "{v}");
    assert_eq!(v.seqs, vec![1]);

    let mut mute = logged(5, "GroupMemberMuted", "g", "ann", "");
    mute.until_ms = 5_000;
    let mut while_muted = logged(6, "GroupMessageSent", "g", "ann", "");
    while_muted.seq = 1;
    let report = group_story(vec![mute.clone(), while_muted], &["ann", "own"]);
    assert!(only_violation(&report, ViolationKind::IllegalSend).detail.contains("muted"));

    let mut after_the_mute = logged(6, "GroupMessageSent", "g", "ann", "");
    after_the_mute.time_ms = 5_000;
    let report = group_story(vec![mute, after_the_mute], &["ann", "own"]);
    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!(report.sends_judged_in_log, 1);
}

#[test]
fn a_message_to_someone_who_blocked_the_sender_is_illegal_until_unblocked() {
    let mut block = logged(1, "ConversationBlocked", AB, "alice", "");
    block.flag = true;
    let mut sent = logged(2, "MessageSent", AB, "bob", "alice");
    sent.seq = 4;
    let report = check(&[Record::LogEvent(block.clone()), Record::LogEvent(sent.clone())]);
    let v = only_violation(&report, ViolationKind::IllegalSend);
    assert_eq!(v.conversation.as_deref(), Some(AB));
    let mut unblock = logged(2, "ConversationBlocked", AB, "alice", "");
    unblock.flag = false;
    sent.index = 3;
    let report = check(&[Record::LogEvent(block), Record::LogEvent(unblock), Record::LogEvent(sent)]);
    assert!(report.is_ok(), "{:?}", report.violations);
}

#[test]
fn friend_lists_equal_a_recount_of_the_event_log() {
    let events = vec![
        Record::LogEvent(logged(1, "FriendAdded", "", "ann", "bob")),
        Record::LogEvent(logged(2, "FriendAdded", "", "ann", "cat")),
        Record::LogEvent(logged(3, "FriendRemoved", "", "ann", "bob")),
    ];
    let shown = |friends: &[&str]| {
        Record::FinalFriends(FinalFriendsRecord {
            node: 3,
            user: "ann".into(),
            friends: friends.iter().map(|f| f.to_string()).collect(),
        })
    };
    let mut clean = events.clone();
    clean.push(shown(&["cat"]));
    assert!(check(&clean).is_ok());
    let mut wrong = events;
    wrong.push(shown(&["bob", "cat"]));
    let report = check(&wrong);
    let v = only_violation(&report, ViolationKind::FriendListMismatch);
    assert_eq!((v.user.as_deref(), v.nodes.clone()), (Some("ann"), vec![3]));
}

/// Both acknowledged sends in every final history: the delivery rules judge what devices got.
fn two_sends_delivered() -> Story {
    let mut story = two_acknowledged_sends();
    story.final_on(&ALL_NODES, AB, &[msg(1, "r1", "alice"), msg(2, "r2", "alice")]);
    story
}

#[test]
fn devices_that_got_every_message_once_in_order_are_clean() {
    let mut story = two_sends_delivered();
    story.delivered("d0", "alice", AB, &[(1, "r1"), (2, "r2")]);
    story.delivered("d1", "bob", AB, &[(1, "r1"), (2, "r2")]);
    let report = story.check();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!((report.deliveries_checked, report.messages_delivered), (2, 4));
}

#[test]
fn a_device_that_missed_an_acknowledged_message_is_undelivered() {
    let mut story = two_sends_delivered();
    story.delivered("d0", "alice", AB, &[(1, "r1"), (2, "r2")]);
    story.delivered("d1", "bob", AB, &[(1, "r1")]);
    let report = story.check();
    let v = only_violation(&report, ViolationKind::Undelivered);
    assert_eq!((v.user.as_deref(), v.seqs.as_slice()), (Some("bob"), &[2][..]), "{v}");
}

#[test]
fn a_message_delivered_twice_or_out_of_order_is_reported() {
    let mut story = two_sends_delivered();
    story.delivered("d1", "bob", AB, &[(1, "r1"), (2, "r2"), (2, "r2")]);
    let v = only_violation(&story.check(), ViolationKind::DeliveredTwice).clone();
    assert_eq!(v.seqs, [2], "{v}");
    let mut story = two_sends_delivered();
    story.delivered("d1", "bob", AB, &[(2, "r2"), (1, "r1")]);
    let v = only_violation(&story.check(), ViolationKind::DeliveredTwice).clone();
    assert_eq!(v.seqs, [1], "{v}");
}

#[test]
fn a_device_that_got_another_message_at_a_seq_is_delivered_wrong() {
    let mut story = two_sends_delivered();
    story.delivered("d1", "bob", AB, &[(1, "r1"), (2, "r9")]);
    let v = only_violation(&story.check(), ViolationKind::DeliveredWrong).clone();
    assert!(v.detail.contains("m-r9") && v.detail.contains("m-r2"), "{v}");
}
