//! Rules 1 and 4: an acknowledged request is in its conversation's final history exactly once,
//! at the seq and with the message id it was acknowledged with; a request of unknown outcome
//! at most once; a rejected one never. And the converse: every final message is explained by
//! a send of the history.

use std::collections::{HashMap, HashSet};

use super::{describe, Finals, History, OpRef, Report, Violation, ViolationKind};
use crate::history::{Outcome, ReadMessage, ReadRecord, SendRecord};

pub(super) fn check(history: &History<'_>, finals: &Finals<'_>, report: &mut Report) {
    // The first successful read that returned each message: evidence that a lost write had
    // once been visible.
    let mut seen_by: HashMap<(&str, &str), &ReadRecord> = HashMap::new();
    for read in history.reads.iter().filter(|read| read.outcome == Outcome::Ok) {
        for message in &read.messages {
            seen_by.entry((read.conversation.as_str(), message.text.as_str())).or_insert(read);
        }
    }

    for request in &history.requests {
        let acks: Vec<&SendRecord> =
            request.attempts.iter().copied().filter(|send| send.outcome == Outcome::Ok).collect();
        let mut acknowledged = Vec::new();
        for ack in &acks {
            match (ack.seq, ack.message_id.as_deref()) {
                (Some(seq), Some(message_id)) => acknowledged.push((seq, message_id, *ack)),
                _ => report.violations.push(
                    Violation::new(ViolationKind::Malformed, "acknowledged send without its seq or message id")
                        .in_conversation(request.conversation)
                        .with_op(OpRef::send(ack)),
                ),
            }
        }
        let Some(final_history) = finals.get(request.conversation) else {
            // Reported as missing_final when it matters (an acknowledged send).
            continue;
        };
        let found: &[&ReadMessage] = final_history.by_text.get(request.request_id).map_or(&[], Vec::as_slice);
        let all_ops = || request.attempts.iter().map(|send| OpRef::send(send));
        let violation = |kind, detail: String| {
            Violation::new(kind, detail).in_conversation(request.conversation).with_ops(all_ops())
        };
        let found_seqs = || found.iter().map(|message| message.seq);

        if let Some(&(seq, message_id, ack)) = acknowledged.first() {
            if let Some(&(other_seq, other_id, _)) =
                acknowledged.iter().find(|(s, id, _)| (*s, *id) != (seq, message_id))
            {
                report.violations.push(
                    violation(
                        ViolationKind::Duplicated,
                        format!(
                            "request {} acknowledged twice with different results: seq {seq} / {message_id} \
                             and seq {other_seq} / {other_id}",
                            request.request_id
                        ),
                    )
                    .at_seqs([seq, other_seq]),
                );
            }
            match found {
                [] => {
                    let mut lost = violation(
                        ViolationKind::Lost,
                        format!(
                            "acknowledged as seq {seq} / {message_id}, not in the final history (last seq {})",
                            final_history.last_seq
                        ),
                    )
                    .at_seqs([seq]);
                    if let Some(read) = seen_by.get(&(request.conversation, request.request_id)) {
                        lost.detail.push_str("; a read had returned it");
                        lost = lost.with_op(OpRef::read(read));
                    }
                    report.violations.push(lost);
                }
                [message] => {
                    if message.seq != seq || message.message_id != message_id || message.sender != ack.from {
                        report.violations.push(
                            violation(
                                ViolationKind::Misplaced,
                                format!(
                                    "acknowledged as seq {seq} / {message_id} from {}; the final history has {}",
                                    ack.from,
                                    describe(message)
                                ),
                            )
                            .at_seqs([seq, message.seq]),
                        );
                    }
                }
                _ => report.violations.push(
                    violation(
                        ViolationKind::Duplicated,
                        format!("acknowledged as seq {seq} / {message_id}; {}", appearances(found)),
                    )
                    .at_seqs(found_seqs()),
                ),
            }
        } else if !acks.is_empty() {
            // Acknowledged without a seq: reported as malformed above, nothing to compare.
        } else if request.attempts.iter().all(|send| send.outcome == Outcome::Error) {
            if !found.is_empty() {
                let errors: Vec<&str> = request.attempts.iter().filter_map(|send| send.error.as_deref()).collect();
                let why = if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) };
                report.violations.push(
                    violation(ViolationKind::RejectedApplied, format!("rejected{why}, yet {}", appearances(found)))
                        .at_seqs(found_seqs()),
                );
            }
        } else {
            match found {
                [] => {}
                [message] => {
                    report.unknown_applied += 1;
                    let from = &request.attempts[0].from;
                    if &message.sender != from {
                        report.violations.push(
                            violation(
                                ViolationKind::Misplaced,
                                format!("sent by {from}; the final history has {}", describe(message)),
                            )
                            .at_seqs([message.seq]),
                        );
                    }
                }
                _ => report.violations.push(
                    violation(ViolationKind::Duplicated, format!("outcome unknown; {}", appearances(found)))
                        .at_seqs(found_seqs()),
                ),
            }
        }
    }

    unexplained(history, finals, &mut report.violations);
}

fn appearances(found: &[&ReadMessage]) -> String {
    let each: Vec<String> = found.iter().map(|message| describe(message)).collect();
    match found.len() {
        1 => format!("the final history has it: {}", each.join("; ")),
        times => format!("the final history has it {times} times: {}", each.join("; ")),
    }
}

/// Final messages whose text is no request id sent to that conversation.
fn unexplained(history: &History<'_>, finals: &Finals<'_>, violations: &mut Vec<Violation>) {
    let sent: HashSet<(&str, &str)> =
        history.requests.iter().map(|request| (request.conversation, request.request_id)).collect();
    let mut sent_elsewhere: HashMap<&str, &SendRecord> = HashMap::new();
    for send in &history.sends {
        sent_elsewhere.entry(send.request_id.as_str()).or_insert(send);
    }
    for (&conversation, final_history) in finals {
        let strangers: Vec<&ReadMessage> = final_history
            .messages
            .iter()
            .copied()
            .filter(|message| !message.system && !sent.contains(&(conversation, message.text.as_str())))
            .collect();
        let Some(first) = strangers.first() else {
            continue;
        };
        let mut violation = Violation::new(
            ViolationKind::Phantom,
            format!(
                "the final history has {} message(s) no send to this conversation explains, first {}",
                strangers.len(),
                describe(first)
            ),
        )
        .in_conversation(conversation)
        .at_seqs(strangers.iter().map(|message| message.seq));
        if let Some(send) = sent_elsewhere.get(first.text.as_str()) {
            violation.detail.push_str(&format!(" (sent to {})", send.conversation));
            violation = violation.with_op(OpRef::send(send));
        }
        violations.push(violation);
    }
}
