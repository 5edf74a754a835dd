//! Groups and relationships, judged against the event log (read from one node after healing;
//! the shard hashes tie the other replicas to it):
//!
//! - every node's member list of each group equals a recount of the group's
//!   `GroupMemberAdded` / `GroupMemberRemoved` events, in log order;
//! - every node's friend list of each user equals a recount of the user's `FriendAdded` /
//!   `FriendRemoved` events;
//! - no `GroupMessageSent` from a user who, at that point of the group's log, was not a member
//!   or was muted past the message's time; no `MessageSent` from a user whom the recipient
//!   had blocked at that point of the conversation's log (`ConversationBlocked`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{History, Report, Violation, ViolationKind};
use crate::history::LogEventRecord;

pub(super) fn check(history: &History<'_>, report: &mut Report) {
    if history.events.is_empty() && history.members.is_empty() && history.friends.is_empty() {
        return;
    }
    let mut events: Vec<&LogEventRecord> = history.events.clone();
    events.sort_by_key(|e| (e.shard, e.index, e.command, e.event));

    // Fold each stream's events in log order (a group's or a conversation's events all live
    // on its shard; a user's friend events on the user's).
    let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut muted: HashMap<(&str, &str), i64> = HashMap::new();
    let mut blocked: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut friends: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &events {
        let (stream, user) = (e.stream.as_str(), e.user.as_str());
        match e.kind.as_str() {
            "GroupMemberAdded" => {
                members.entry(stream).or_default().insert(user);
                muted.remove(&(stream, user));
            }
            "GroupMemberRemoved" => {
                members.entry(stream).or_default().remove(user);
                muted.remove(&(stream, user));
            }
            "GroupMemberMuted" => {
                muted.insert((stream, user), e.until_ms);
            }
            "GroupMessageSent" => {
                report.sends_judged_in_log += 1;
                let why = if !members.get(stream).is_some_and(|m| m.contains(user)) {
                    Some(format!("{user} was not a member at that point of the log"))
                } else {
                    muted
                        .get(&(stream, user))
                        .filter(|until| **until > e.time_ms)
                        .map(|until| format!("{user} was muted until {until} ms, the message is at {} ms", e.time_ms))
                };
                if let Some(why) = why {
                    report.violations.push(illegal(e, &format!("grp:{stream}"), why));
                }
            }
            "ConversationBlocked" => {
                if e.flag {
                    blocked.insert((stream, user));
                } else {
                    blocked.remove(&(stream, user));
                }
            }
            "MessageSent" => {
                report.sends_judged_in_log += 1;
                if blocked.contains(&(stream, e.other.as_str())) {
                    let why = format!("{} had blocked {user} at that point of the log", e.other);
                    report.violations.push(illegal(e, stream, why));
                }
            }
            "FriendAdded" => {
                friends.entry(user).or_default().insert(e.other.as_str());
            }
            "FriendRemoved" => {
                friends.entry(user).or_default().remove(e.other.as_str());
            }
            _ => {}
        }
    }

    for list in &history.members {
        report.social_lists_checked += 1;
        let recount: Vec<&str> = members.get(list.group.as_str()).into_iter().flatten().copied().collect();
        let shown: Vec<&str> = list.members.iter().map(String::as_str).collect();
        if recount != shown {
            report.violations.push(
                Violation::new(
                    ViolationKind::MemberListMismatch,
                    format!("members {} but the event log counts {}", describe(&shown), describe(&recount)),
                )
                .in_conversation(&format!("grp:{}", list.group))
                .on_nodes([list.node]),
            );
        }
    }
    for list in &history.friends {
        report.social_lists_checked += 1;
        let recount: Vec<&str> = friends.get(list.user.as_str()).into_iter().flatten().copied().collect();
        let shown: Vec<&str> = list.friends.iter().map(String::as_str).collect();
        if recount != shown {
            report.violations.push(
                Violation::new(
                    ViolationKind::FriendListMismatch,
                    format!("friends {} but the event log counts {}", describe(&shown), describe(&recount)),
                )
                .for_user(&list.user)
                .on_nodes([list.node]),
            );
        }
    }
}

fn illegal(e: &LogEventRecord, conversation: &str, why: String) -> Violation {
    Violation::new(ViolationKind::IllegalSend, format!("seq {} from {} accepted: {why}", e.seq, e.user))
        .in_conversation(conversation)
        .at_seqs([e.seq])
        .at_shard_index(e.shard, e.index)
        .on_nodes([e.node])
}

fn describe(users: &[&str]) -> String {
    if users.is_empty() {
        "(none)".to_owned()
    } else {
        users.join(",")
    }
}
