//! Invariant 4: projections equal a replay of the event log. After healing, every node
//! rebuilds each shard's projections from its event log alone and compares them with its live
//! ones; any difference is a violation naming the node, the shard and the first differing key.

use std::collections::BTreeSet;

use super::{Report, Violation, ViolationKind};

pub(super) fn check(history: &super::History<'_>, report: &mut Report) {
    for record in &history.projections {
        report.projections_verified += 1;
        if !record.equal {
            report.violations.push(
                Violation::new(
                    ViolationKind::ProjectionMismatch,
                    format!("projections differ from a replay of the event log: {}", record.difference),
                )
                .at_shard_index(record.shard, record.index)
                .on_nodes(BTreeSet::from([record.node])),
            );
        }
    }
}
