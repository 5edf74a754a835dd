//! Rule 2: each conversation's final seqs are exactly 1..=n, identical on every node; and
//! every conversation that was written or read has a final history to judge it by.

use std::collections::BTreeSet;

use super::{describe, FinalHistory, Finals, History, OpRef, Violation, ViolationKind};
use crate::history::{Outcome, ReadMessage};

/// How many missing seqs a gap violation lists (the detail gives the full count).
const MAX_LISTED_SEQS: usize = 20;

/// One distinct content of a conversation's final history and the nodes that reported it.
struct Replica<'a> {
    messages: Vec<&'a ReadMessage>,
    nodes: Vec<u32>,
}

/// Chooses each conversation's reference history, reports divergent nodes, gaps and repeated
/// seqs, and conversations with no final history.
pub(super) fn check<'a>(history: &History<'a>, violations: &mut Vec<Violation>) -> Finals<'a> {
    let mut finals = Finals::new();
    for (&conversation, records) in &history.finals {
        let mut replicas: Vec<Replica<'a>> = Vec::new();
        for record in records {
            let mut messages: Vec<&ReadMessage> = record.messages.iter().collect();
            messages.sort_by_key(|message| message.seq);
            match replicas.iter_mut().find(|replica| replica.messages == messages) {
                Some(replica) => replica.nodes.push(record.node),
                None => replicas.push(Replica { messages, nodes: vec![record.node] }),
            }
        }
        // Most nodes win; on a tie, the replica reported by the lowest node id.
        let Some(reference) = (0..replicas.len()).max_by_key(|&i| {
            let lowest = replicas[i].nodes.iter().min().copied().unwrap_or(u32::MAX);
            (replicas[i].nodes.len(), std::cmp::Reverse(lowest))
        }) else {
            continue;
        };
        for replica in &replicas {
            check_seqs(conversation, replica, violations);
        }
        for (i, replica) in replicas.iter().enumerate() {
            if i != reference {
                violations.push(divergence(conversation, &replicas[reference], replica));
            }
        }
        let reference = replicas.swap_remove(reference);
        finals.insert(conversation, FinalHistory::new(reference.messages));
    }
    missing_finals(history, &finals, violations);
    finals
}

/// Gaps and repeated seqs in one replica's (sorted) history.
fn check_seqs(conversation: &str, replica: &Replica<'_>, violations: &mut Vec<Violation>) {
    let mut missing = Vec::new();
    let mut missing_count: u64 = 0;
    let mut repeated = BTreeSet::new();
    let mut has_zero = false;
    let mut expected: u64 = 1;
    for message in &replica.messages {
        if message.seq == 0 {
            has_zero = true;
            continue;
        }
        if message.seq < expected {
            // Sorted, so a seq below the next expected one is a repeat.
            repeated.insert(message.seq);
            continue;
        }
        let gap = message.seq - expected;
        missing_count += gap;
        missing.extend((expected..message.seq).take(MAX_LISTED_SEQS.saturating_sub(missing.len())));
        expected = message.seq + 1;
    }
    let last = expected - 1;
    if missing_count > 0 || has_zero {
        let zero = if has_zero { "; it has a seq 0 (seqs start at 1)" } else { "" };
        violations.push(
            Violation::new(
                ViolationKind::Gap,
                format!("final history is not 1..={last}: {missing_count} seq(s) missing{zero}"),
            )
            .in_conversation(conversation)
            .at_seqs(missing)
            .on_nodes(replica.nodes.iter().copied()),
        );
    }
    if !repeated.is_empty() {
        let examples: Vec<String> = replica
            .messages
            .iter()
            .filter(|message| repeated.contains(&message.seq))
            .take(MAX_LISTED_SEQS)
            .map(|message| describe(message))
            .collect();
        violations.push(
            Violation::new(
                ViolationKind::RepeatedSeq,
                format!("final history has a seq more than once: {}", examples.join("; ")),
            )
            .in_conversation(conversation)
            .at_seqs(repeated)
            .on_nodes(replica.nodes.iter().copied()),
        );
    }
}

/// A replica that differs from the reference, shown at the first seq where they part.
fn divergence(conversation: &str, reference: &Replica<'_>, replica: &Replica<'_>) -> Violation {
    let reference_nodes = nodes_label(&reference.nodes);
    let this_nodes = nodes_label(&replica.nodes);
    let position = reference
        .messages
        .iter()
        .zip(&replica.messages)
        .position(|(a, b)| a != b)
        .unwrap_or(reference.messages.len().min(replica.messages.len()));
    let (seq, detail) = match (reference.messages.get(position), replica.messages.get(position)) {
        (Some(expected), Some(found)) => (
            expected.seq.min(found.seq),
            format!("{this_nodes} has {}; {reference_nodes} has {}", describe(found), describe(expected)),
        ),
        (Some(expected), None) => (
            expected.seq,
            format!(
                "{this_nodes} ends after {} message(s); {reference_nodes} continues with {}",
                replica.messages.len(),
                describe(expected)
            ),
        ),
        (None, Some(found)) => (
            found.seq,
            format!(
                "{this_nodes} has {} beyond the {} message(s) of {reference_nodes}",
                describe(found),
                reference.messages.len()
            ),
        ),
        // Equal contents are one replica; unreachable, but harmless.
        (None, None) => (0, format!("{this_nodes} differs from {reference_nodes}")),
    };
    Violation::new(ViolationKind::Divergence, detail)
        .in_conversation(conversation)
        .at_seqs([seq])
        .on_nodes(replica.nodes.iter().copied())
}

fn nodes_label(nodes: &[u32]) -> String {
    let list: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    if nodes.len() == 1 {
        format!("node {}", list.join(","))
    } else {
        format!("nodes {}", list.join(","))
    }
}

/// Conversations with an acknowledged send or a non-empty successful read but no final record.
fn missing_finals(history: &History<'_>, finals: &Finals<'_>, violations: &mut Vec<Violation>) {
    let mut reported = BTreeSet::new();
    let mut report = |conversation: &str, op: OpRef, violations: &mut Vec<Violation>| {
        if !finals.contains_key(conversation) && reported.insert(conversation.to_owned()) {
            violations.push(
                Violation::new(
                    ViolationKind::MissingFinal,
                    "no node reported this conversation's final history, so nothing in it can be checked",
                )
                .in_conversation(conversation)
                .with_op(op),
            );
        }
    };
    for send in history.sends.iter().filter(|send| send.outcome == Outcome::Ok) {
        report(&send.conversation, OpRef::send(send), violations);
    }
    for read in &history.reads {
        if read.outcome == Outcome::Ok && (!read.messages.is_empty() || read.last_seq > 0) {
            report(&read.conversation, OpRef::read(read), violations);
        }
    }
}
