//! Rule 6: replicas of a shard converge — at any applied index two nodes report, their state
//! hashes are equal. Nodes that report a shard at no common index cannot be compared: that is
//! a note, not a violation.

use std::collections::{BTreeMap, BTreeSet};

use super::{Note, NoteKind, Report, Violation, ViolationKind};

/// What the nodes reported for one shard: index → (node, hash), in history order.
type ShardReports<'a> = BTreeMap<u64, Vec<(u32, &'a str)>>;

pub(super) fn check(history: &super::History<'_>, report: &mut Report) {
    let mut by_shard: BTreeMap<u32, ShardReports<'_>> = BTreeMap::new();
    for hash in &history.hashes {
        by_shard.entry(hash.shard).or_default().entry(hash.index).or_default().push((hash.node, &hash.hash));
    }
    for (&shard, by_index) in &by_shard {
        for (&index, reports) in by_index {
            let nodes: BTreeSet<u32> = reports.iter().map(|(node, _)| *node).collect();
            if nodes.len() < 2 {
                continue;
            }
            report.hashes_compared += 1;
            if let Some(violation) = mismatch(shard, index, reports) {
                report.violations.push(violation);
            }
        }
        if let Some(note) = incomparable(shard, by_index) {
            report.notes.push(note);
        }
    }
}

/// The nodes whose hash differs from the one most nodes reported (ties: the lowest node's).
fn mismatch(shard: u32, index: u64, reports: &[(u32, &str)]) -> Option<Violation> {
    let mut votes: BTreeMap<&str, (usize, u32)> = BTreeMap::new();
    for &(node, hash) in reports {
        let vote = votes.entry(hash).or_insert((0, node));
        vote.0 += 1;
        vote.1 = vote.1.min(node);
    }
    if votes.len() < 2 {
        return None;
    }
    let majority = votes.iter().max_by_key(|(_, (count, lowest))| (*count, std::cmp::Reverse(*lowest)))?.0;
    let mut sorted = reports.to_vec();
    sorted.sort();
    let differing: BTreeSet<u32> = sorted.iter().filter(|(_, hash)| hash != majority).map(|(node, _)| *node).collect();
    let each: Vec<String> = sorted.iter().map(|(node, hash)| format!("node {node}: {hash}")).collect();
    Some(
        Violation::new(ViolationKind::HashMismatch, format!("state hashes differ: {}", each.join(", ")))
            .at_shard_index(shard, index)
            .on_nodes(differing),
    )
}

/// A note when two nodes reported this shard at no common index.
fn incomparable(shard: u32, by_index: &ShardReports<'_>) -> Option<Note> {
    let mut indexes: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (&index, reports) in by_index {
        for (node, _) in reports {
            indexes.entry(*node).or_default().insert(index);
        }
    }
    let nodes: Vec<(&u32, &BTreeSet<u64>)> = indexes.iter().collect();
    let mut involved = BTreeSet::new();
    for (i, (a, a_indexes)) in nodes.iter().enumerate() {
        for (b, b_indexes) in &nodes[i + 1..] {
            if a_indexes.is_disjoint(b_indexes) {
                involved.insert(**a);
                involved.insert(**b);
            }
        }
    }
    if involved.is_empty() {
        return None;
    }
    let each: Vec<String> = involved
        .iter()
        .filter_map(|node| {
            let list: Vec<String> = indexes.get(node)?.iter().map(ToString::to_string).collect();
            Some(format!("node {node} at {}", list.join(",")))
        })
        .collect();
    Some(Note {
        kind: NoteKind::HashIncomparable,
        shard: Some(shard),
        nodes: involved.into_iter().collect(),
        detail: format!("no common index to compare: {}", each.join("; ")),
    })
}
