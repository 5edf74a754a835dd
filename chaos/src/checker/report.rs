//! [`Report`]: what a check found, counted for the summary and itemised as violations.

use std::fmt::Write as _;

use serde::Serialize;

use super::violation::{Note, Violation, ViolationKind};

/// The verdict on one history.
///
/// The counts say how much was checked (a clean verdict on ten operations means little);
/// `violations` holds every broken promise in a stable order (by rule, then conversation),
/// `notes` what could not be judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Client operations in the history (`send`, `read`, `mark_read` and `social` records).
    pub operations: u64,
    /// `send` records.
    pub sends: u64,
    /// `send` records acknowledged (`ok`).
    pub acknowledged: u64,
    /// `send` records rejected with a typed error.
    pub rejected: u64,
    /// `send` records whose outcome is unknown.
    pub unknown: u64,
    /// Request ids with an unknown outcome and no acknowledgement that did take effect.
    pub unknown_applied: u64,
    /// `read` records.
    pub reads: u64,
    /// `mark_read` records.
    pub mark_reads: u64,
    /// `social` records (joins, leaves, kicks, mutes, friend and block changes).
    pub socials: u64,
    /// Member lists and friend lists compared with a recount of the event log.
    pub social_lists_checked: u64,
    /// Messages judged against membership, mutes and blocks in log order.
    pub sends_judged_in_log: u64,
    /// (device, conversation) streams judged by the delivery rules.
    pub deliveries_checked: u64,
    /// Messages those devices received.
    pub messages_delivered: u64,
    /// Conversations with a final history.
    pub conversations: u64,
    /// Messages in the final histories (one replica's count per conversation).
    pub final_messages: u64,
    /// `final_conversations` records checked.
    pub lists: u64,
    /// (shard, index) pairs reported by two or more nodes.
    pub hashes_compared: u64,
    /// (node, shard) projection replays checked.
    pub projections_verified: u64,
    /// Faults injected.
    pub faults: u64,
    /// Faults healed.
    pub heals: u64,
    /// Heals after which the cluster was not found recovered within the harness's wait (a
    /// leader for every shard, then a write, 60 s each): liveness, not a violation.
    pub unrecovered: u64,
    /// The longest recovery a heal record reported, in ms.
    pub slowest_recovery_ms: Option<u64>,
    /// Every broken promise.
    pub violations: Vec<Violation>,
    /// What could not be judged.
    pub notes: Vec<Note>,
}

impl Report {
    /// True when no promise was broken (notes do not count).
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations of one kind.
    pub fn of_kind(&self, kind: ViolationKind) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |violation| violation.kind == kind)
    }

    /// How many violations of one kind.
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.of_kind(kind).count()
    }

    /// A plain-text table of the counts: what was checked, then each kind of violation (zeros
    /// included, so two runs' tables line up), then the verdict.
    pub fn summary_table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("operations".into(), self.operations.to_string()),
            ("  sends".into(), self.sends.to_string()),
            ("    acknowledged".into(), self.acknowledged.to_string()),
            ("    rejected".into(), self.rejected.to_string()),
            ("    unknown".into(), self.unknown.to_string()),
            ("    unknown, applied".into(), self.unknown_applied.to_string()),
            ("  reads".into(), self.reads.to_string()),
            ("  mark reads".into(), self.mark_reads.to_string()),
            ("conversations".into(), self.conversations.to_string()),
            ("final messages".into(), self.final_messages.to_string()),
            ("conversation lists".into(), self.lists.to_string()),
            ("shard hashes compared".into(), self.hashes_compared.to_string()),
            ("faults injected".into(), self.faults.to_string()),
            ("faults healed".into(), self.heals.to_string()),
            ("heals not recovered in time".into(), self.unrecovered.to_string()),
        ];
        if let Some(ms) = self.slowest_recovery_ms {
            rows.push(("slowest recovery (ms)".into(), ms.to_string()));
        }
        rows.push(("violations".into(), self.violations.len().to_string()));
        for kind in ViolationKind::ALL {
            rows.push((format!("  {}", kind.as_str().replace('_', " ")), self.count(kind).to_string()));
        }
        rows.push(("notes".into(), self.notes.len().to_string()));
        rows.push(("verdict".into(), if self.is_ok() { "OK" } else { "FAILED" }.into()));

        let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|(_, value)| value.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (label, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(table, "{label:<label_width$}  {value:>value_width$}");
        }
        table
    }
}
