//! Rule 3: every successful read agrees with the final history — each message it returned is
//! the final history's message at that seq, its head is not beyond the final last seq, and
//! its page is contiguous (a page of history is a seq range: any message missing from it was
//! hidden from the reader).

use super::{describe, FinalHistory, Finals, History, OpRef, Violation, ViolationKind};
use crate::history::{Outcome, ReadMessage, ReadRecord};

/// How many seqs of one read a violation lists.
const MAX_LISTED_SEQS: usize = 20;

pub(super) fn check(history: &History<'_>, finals: &Finals<'_>, violations: &mut Vec<Violation>) {
    for read in history.reads.iter().filter(|read| read.outcome == Outcome::Ok) {
        // Without a final history the conversation is reported as missing_final.
        if let Some(final_history) = finals.get(read.conversation.as_str()) {
            check_page(read, violations);
            check_against_final(read, final_history, violations);
        }
    }
}

/// The page itself: ascending, contiguous, each seq once.
fn check_page(read: &ReadRecord, violations: &mut Vec<Violation>) {
    let mut missing = Vec::new();
    let mut repeated = Vec::new();
    let mut unsorted = None;
    for pair in read.messages.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.seq == a.seq {
            repeated.push(b.seq);
        } else if b.seq < a.seq {
            unsorted.get_or_insert((a.seq, b.seq));
        } else if b.seq > a.seq + 1 {
            missing.extend((a.seq + 1..b.seq).take(MAX_LISTED_SEQS.saturating_sub(missing.len())));
        }
    }
    let violation = |kind, detail: String| {
        Violation::new(kind, detail).in_conversation(&read.conversation).with_op(OpRef::read(read))
    };
    if let Some((a, b)) = unsorted {
        violations.push(
            violation(ViolationKind::Malformed, format!("read page not sorted by seq: {b} after {a}")).at_seqs([a, b]),
        );
    } else if !missing.is_empty() {
        violations
            .push(violation(ViolationKind::Gap, "read returned a page with seqs missing".into()).at_seqs(missing));
    }
    if !repeated.is_empty() {
        violations
            .push(violation(ViolationKind::RepeatedSeq, "read returned a seq more than once".into()).at_seqs(repeated));
    }
}

/// Each returned message against the final history's message at its seq.
fn check_against_final(read: &ReadRecord, final_history: &FinalHistory<'_>, violations: &mut Vec<Violation>) {
    let mut phantoms: Vec<&ReadMessage> = Vec::new();
    let mut reorders: Vec<(&ReadMessage, &ReadMessage)> = Vec::new();
    for message in &read.messages {
        match final_history.by_seq.get(&message.seq) {
            None => phantoms.push(message),
            Some(expected) => {
                if (&expected.message_id, &expected.text, &expected.sender)
                    != (&message.message_id, &message.text, &message.sender)
                {
                    reorders.push((message, expected));
                }
            }
        }
    }
    let head_beyond = read.last_seq > final_history.last_seq;
    let violation = |kind, detail: String| {
        Violation::new(kind, detail).in_conversation(&read.conversation).with_op(OpRef::read(read))
    };

    if !phantoms.is_empty() || head_beyond {
        let mut parts = Vec::new();
        if let Some(first) = phantoms.first() {
            parts.push(format!(
                "read returned {}, a seq the final history does not have (its last seq is {}){}",
                describe(first),
                final_history.last_seq,
                where_in_final(first, final_history)
            ));
        }
        if head_beyond {
            parts.push(format!(
                "read reported head {} beyond the final last seq {}",
                read.last_seq, final_history.last_seq
            ));
        }
        let mut seqs: Vec<u64> = phantoms.iter().map(|message| message.seq).take(MAX_LISTED_SEQS).collect();
        if head_beyond && !seqs.contains(&read.last_seq) {
            seqs.push(read.last_seq);
        }
        violations.push(violation(ViolationKind::Phantom, parts.join("; ")).at_seqs(seqs));
    }

    if let Some((seen, expected)) = reorders.first() {
        let detail = format!(
            "read returned {}{}; the final history has {}",
            describe(seen),
            where_in_final(seen, final_history),
            describe(expected)
        );
        let seqs = reorders.iter().map(|(seen, _)| seen.seq).take(MAX_LISTED_SEQS);
        violations.push(violation(ViolationKind::Reorder, detail).at_seqs(seqs));
    }
}

/// Where the final history has the message a read returned, for the evidence.
fn where_in_final(message: &ReadMessage, final_history: &FinalHistory<'_>) -> String {
    match final_history.by_text.get(message.text.as_str()).and_then(|found| found.first()) {
        Some(found) if found.seq != message.seq => format!(" (final has {:?} at seq {})", message.text, found.seq),
        Some(_) => String::new(),
        None => format!(" ({:?} is not in the final history)", message.text),
    }
}
