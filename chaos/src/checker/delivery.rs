//! DLV-01/02 — what subscribed devices received, judged against the final histories:
//!
//! - a device receives each message of a conversation at most once, in seq order
//!   (`delivered_twice`);
//! - what it receives at a seq is the final history's message there (`delivered_wrong`);
//! - a device receives every message of its user's one-to-one conversations that the final
//!   history holds (`undelivered`). Together with rule 1 (every acknowledged send is in the
//!   final history) this is "every acknowledged message reaches every device of both members,
//!   exactly once". Group streams are judged by the first two rules only: which messages a
//!   member is owed depends on when they joined and left, which the stream decides on the
//!   node's replica at delivery time.

use std::collections::BTreeSet;

use super::{c2c_parties, Finals, History, Report, Violation, ViolationKind};

pub(super) fn check(history: &History<'_>, finals: &Finals<'_>, report: &mut Report) {
    for d in &history.delivered {
        report.deliveries_checked += 1;
        report.messages_delivered += d.messages.len() as u64;
        let violation = |kind, detail: String, seqs: Vec<u64>| {
            Violation::new(kind, format!("device {} ({} connects): {detail}", d.device, d.connects))
                .in_conversation(&d.conversation)
                .for_user(&d.user)
                .at_seqs(seqs)
        };
        let mut newest = 0u64;
        for (seq, _) in &d.messages {
            if *seq <= newest {
                let detail = format!("seq {seq} arrived after seq {newest}");
                report.violations.push(violation(ViolationKind::DeliveredTwice, detail, vec![*seq]));
            }
            newest = newest.max(*seq);
        }
        let Some(reference) = finals.get(d.conversation.as_str()) else {
            if !d.messages.is_empty() {
                let seqs: Vec<u64> = d.messages.iter().map(|(s, _)| *s).collect();
                let detail = "received messages of a conversation with no final history".to_owned();
                report.violations.push(violation(ViolationKind::DeliveredWrong, detail, seqs));
            }
            continue;
        };
        for (seq, id) in &d.messages {
            match reference.by_seq.get(seq) {
                Some(m) if m.message_id == *id => {}
                Some(m) => {
                    let detail = format!("seq {seq} = {id}, the final history has {}", m.message_id);
                    report.violations.push(violation(ViolationKind::DeliveredWrong, detail, vec![*seq]));
                }
                None => {
                    let detail = format!("seq {seq} = {id}, which the final history does not have");
                    report.violations.push(violation(ViolationKind::DeliveredWrong, detail, vec![*seq]));
                }
            }
        }
        let Some((a, b)) = c2c_parties(&d.conversation) else { continue };
        if d.user != a && d.user != b {
            let detail = format!("received a conversation of {a} and {b}");
            report.violations.push(violation(ViolationKind::DeliveredWrong, detail, vec![]));
            continue;
        }
        let got: BTreeSet<u64> = d.messages.iter().map(|(s, _)| *s).collect();
        let missing: Vec<u64> = reference.messages.iter().map(|m| m.seq).filter(|s| !got.contains(s)).collect();
        if !missing.is_empty() {
            let detail = format!(
                "{} of {} messages never arrived{}",
                missing.len(),
                reference.messages.len(),
                if d.caught_up { "" } else { " (the device gave up waiting for its stream)" }
            );
            report.violations.push(violation(ViolationKind::Undelivered, detail, missing));
        }
    }
}
