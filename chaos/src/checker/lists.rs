//! Rule 5: a user's conversation list equals a replay of the events — each row's head is the
//! final last seq, its unread count is `last_seq - read_seq`, the total is their sum, the
//! cursor is not behind an acknowledged mark-read or the user's own last message (sending
//! advances the sender's cursor), and every conversation with a message of the user, or
//! (C2C) with the user as a party, is listed, once, with the right peer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{c2c_parties, Finals, History, OpRef, Violation, ViolationKind};
use crate::history::{ConvRow, FinalConversationsRecord, Outcome};

/// The lowest read cursor a user may have in a conversation, and why.
struct Floor {
    seq: u64,
    reason: String,
    evidence: Option<OpRef>,
}

pub(super) fn check(history: &History<'_>, finals: &Finals<'_>, violations: &mut Vec<Violation>) {
    if history.lists.is_empty() {
        return;
    }
    let floors = cursor_floors(history, finals);
    let expected = expected_conversations(finals);
    let known: HashSet<&str> = history.requests.iter().map(|request| request.conversation).collect();
    for list in &history.lists {
        let violation = |kind, conversation: Option<&str>, detail: String| {
            let violation = Violation::new(kind, detail).for_user(&list.user).on_nodes([list.node]);
            match conversation {
                Some(conversation) => violation.in_conversation(conversation),
                None => violation,
            }
        };
        let mut listed = HashSet::new();
        for row in &list.rows {
            let conversation = row.conversation.as_str();
            if !listed.insert(conversation) {
                violations.push(violation(ViolationKind::ListWrong, Some(conversation), "listed twice".into()));
                continue;
            }
            if let Some(detail) = wrong_party(list, row) {
                violations.push(violation(ViolationKind::ListWrong, Some(conversation), detail));
            }
            match finals.get(conversation) {
                Some(final_history) if row.last_seq != final_history.last_seq => violations.push(
                    violation(
                        ViolationKind::HeadMismatch,
                        Some(conversation),
                        format!(
                            "row says last seq {}, the final history's is {}",
                            row.last_seq, final_history.last_seq
                        ),
                    )
                    .at_seqs([row.last_seq, final_history.last_seq]),
                ),
                None if row.last_seq > 0 && !known.contains(conversation) => violations.push(
                    violation(
                        ViolationKind::HeadMismatch,
                        Some(conversation),
                        format!("row says last seq {}, but no send of the history went to it", row.last_seq),
                    )
                    .at_seqs([row.last_seq]),
                ),
                _ => {}
            }
            if row.read_seq > row.last_seq {
                violations.push(violation(
                    ViolationKind::UnreadMismatch,
                    Some(conversation),
                    format!("read cursor {} is beyond the head {}", row.read_seq, row.last_seq),
                ));
            } else if row.unread != row.last_seq - row.read_seq {
                violations.push(violation(
                    ViolationKind::UnreadMismatch,
                    Some(conversation),
                    format!(
                        "unread {} but last seq {} - read seq {} = {}",
                        row.unread,
                        row.last_seq,
                        row.read_seq,
                        row.last_seq - row.read_seq
                    ),
                ));
            }
            if let Some(floor) = floors.get(&(list.user.as_str(), conversation)) {
                if row.read_seq < floor.seq {
                    violations.push(
                        violation(
                            ViolationKind::CursorBehind,
                            Some(conversation),
                            format!("read cursor {} is behind {} ({})", row.read_seq, floor.seq, floor.reason),
                        )
                        .at_seqs([row.read_seq, floor.seq])
                        .with_ops(floor.evidence.clone()),
                    );
                }
            }
        }
        let sum = list.rows.iter().fold(0u64, |sum, row| sum.saturating_add(row.unread));
        if sum != list.total_unread {
            violations.push(violation(
                ViolationKind::UnreadMismatch,
                None,
                format!("total unread {} but the rows sum to {sum}", list.total_unread),
            ));
        }
        for (conversation, last_seq) in expected.get(list.user.as_str()).into_iter().flatten() {
            if !listed.contains(conversation) {
                violations.push(
                    violation(
                        ViolationKind::ListMissing,
                        Some(conversation),
                        format!("not in the user's list, though the final history has {last_seq} message(s) in it"),
                    )
                    .at_seqs([*last_seq]),
                );
            }
        }
    }
}

/// A C2C row in the list of a user who is not a party, or with the wrong peer.
fn wrong_party(list: &FinalConversationsRecord, row: &ConvRow) -> Option<String> {
    let (a, b) = c2c_parties(&row.conversation)?;
    let peer = if list.user == a {
        b
    } else if list.user == b {
        a
    } else {
        return Some(format!("{} is not a party of this C2C conversation", list.user));
    };
    (row.peer != peer).then(|| format!("peer is {:?}, expected {peer:?}", row.peer))
}

/// Per user, the non-empty C2C conversations the user must have in their list (as a party or
/// a sender), with their last seq.
fn expected_conversations<'a>(finals: &Finals<'a>) -> HashMap<&'a str, BTreeMap<&'a str, u64>> {
    let mut expected: HashMap<&str, BTreeMap<&str, u64>> = HashMap::new();
    for (&conversation, final_history) in finals {
        // A group's sender may have left it since; group rows are judged when listed.
        if final_history.messages.is_empty() || c2c_parties(conversation).is_none() {
            continue;
        }
        let mut users: BTreeSet<&str> = final_history.messages.iter().map(|message| message.sender.as_str()).collect();
        if let Some((a, b)) = c2c_parties(conversation) {
            users.extend([a, b]);
        }
        for user in users {
            expected.entry(user).or_default().insert(conversation, final_history.last_seq);
        }
    }
    expected
}

/// Per (user, conversation), the highest of: the cursor of an acknowledged mark-read (capped at
/// the final last seq, since a cursor cannot pass the head) and the seq of the user's own last
/// message in the final history. Own messages are taken from the final history rather than
/// from acknowledgements so that a send of unknown outcome that did apply counts too, and a
/// lost one is reported once, as lost.
fn cursor_floors<'a>(history: &History<'a>, finals: &Finals<'a>) -> HashMap<(&'a str, &'a str), Floor> {
    let mut floors: HashMap<(&str, &str), Floor> = HashMap::new();
    let mut raise = |key: (&'a str, &'a str), floor: Floor| {
        let current = floors.entry(key).or_insert(Floor { seq: 0, reason: String::new(), evidence: None });
        if floor.seq > current.seq {
            *current = floor;
        }
    };
    for mark in history.mark_reads.iter().filter(|mark| mark.outcome == Outcome::Ok) {
        let (Some(read_seq), Some(final_history)) = (mark.read_seq, finals.get(mark.conversation.as_str())) else {
            continue;
        };
        let seq = read_seq.min(final_history.last_seq);
        raise(
            (mark.user.as_str(), mark.conversation.as_str()),
            Floor {
                seq,
                reason: format!("acknowledged mark_read to {read_seq}"),
                evidence: Some(OpRef::mark_read(mark)),
            },
        );
    }
    let sends_by_text: HashMap<(&str, &str), OpRef> = history
        .requests
        .iter()
        .filter_map(|request| {
            let send = request.attempts.iter().find(|send| send.outcome == Outcome::Ok).or(request.attempts.first())?;
            Some(((request.conversation, request.request_id), OpRef::send(send)))
        })
        .collect();
    for (&conversation, final_history) in finals {
        for message in &final_history.messages {
            raise(
                (message.sender.as_str(), conversation),
                Floor {
                    seq: message.seq,
                    reason: format!("the user's own message at seq {}", message.seq),
                    evidence: sends_by_text.get(&(conversation, message.text.as_str())).cloned(),
                },
            );
        }
    }
    floors
}
