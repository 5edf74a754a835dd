//! Conversation management (CONV-03, MSG-09): a user's settings for the rows of their list —
//! pinned, do not disturb, draft, marks, deleted from the list — and what they removed from
//! their own view of a stream's history.
//!
//! List settings live on the user's shard, next to the list; a history view lives on the
//! stream's shard, next to the member's read cursor, so that a history page is filtered
//! where it is read. Neither changes what anyone else sees.

use crate::apply::{Applied, ApplyContext, Outcome, Reply};
use crate::event::Event;
use crate::ids::{ConversationId, Seq, UserId};
use crate::records::ConversationPrefs;
use crate::rejection::{Reason, Rejection};
use crate::shard::shard_for;
use crate::state::{ShardState, StateError};

/// Longest draft, in bytes.
pub const MAX_DRAFT_BYTES: usize = 2048;
/// Most marks on one row, and the longest mark.
pub const MAX_MARKS: usize = 10;
pub const MAX_MARK_BYTES: usize = 32;
/// Most single messages one member keeps deleted from their view of one stream (clearing
/// the history makes room), and most one request deletes.
pub const MAX_DELETED: usize = 1000;
pub const MAX_DELETE_PER_REQUEST: usize = 100;

type Decided = Result<Outcome, StateError>;

/// A change of list settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefsChange {
    pub pinned: Option<bool>,
    pub dnd: Option<bool>,
    pub draft: Option<String>,
    pub marks: Option<Vec<String>>,
    /// Delete the row from the list up to this seq (the stream's newest when the request was
    /// accepted): it comes back with the next message.
    pub hide_up_to: Option<Seq>,
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::ConversationFieldInvalid, message)
}

impl PrefsChange {
    /// Checks the change's sizes (at the boundary and at apply).
    pub fn check(&self) -> Result<(), Rejection> {
        if self == &PrefsChange::default() {
            return Err(bad("change at least one setting: pinned, dnd, draft, marks or deleted"));
        }
        if let Some(draft) = &self.draft {
            if draft.len() > MAX_DRAFT_BYTES {
                return Err(bad(format!("a draft is at most {MAX_DRAFT_BYTES} bytes, got {}", draft.len())));
            }
        }
        if let Some(marks) = &self.marks {
            if marks.len() > MAX_MARKS {
                return Err(bad(format!("a row has at most {MAX_MARKS} marks, got {}", marks.len())));
            }
            if let Some(m) = marks.iter().find(|m| m.is_empty() || m.len() > MAX_MARK_BYTES) {
                return Err(bad(format!("a mark is 1..={MAX_MARK_BYTES} bytes, not {m:?}")));
            }
        }
        Ok(())
    }

    /// `prefs` with the change applied.
    pub fn applied_to(&self, mut prefs: ConversationPrefs) -> ConversationPrefs {
        if let Some(p) = self.pinned {
            prefs.pinned = p;
        }
        if let Some(d) = self.dnd {
            prefs.dnd = d;
        }
        if let Some(draft) = &self.draft {
            prefs.draft = draft.clone();
        }
        if let Some(marks) = &self.marks {
            let mut marks = marks.clone();
            marks.sort();
            marks.dedup();
            prefs.marks = marks;
        }
        if let Some(up_to) = self.hide_up_to {
            prefs.hidden_up_to = prefs.hidden_up_to.max(up_to);
        }
        prefs
    }
}

/// Checks a deletion request's sizes.
pub fn check_delete(clear: bool, delete: &[Seq]) -> Result<(), Rejection> {
    if !clear && delete.is_empty() {
        return Err(bad("clear the history or name messages to delete"));
    }
    if delete.len() > MAX_DELETE_PER_REQUEST {
        return Err(bad(format!("delete at most {MAX_DELETE_PER_REQUEST} messages a request, got {}", delete.len())));
    }
    if delete.contains(&Seq::ZERO) {
        return Err(Rejection::new(Reason::SeqOutOfRange, "seqs start at 1"));
    }
    Ok(())
}

fn reject(reason: Reason, message: impl Into<String>) -> Decided {
    Ok(Err(Rejection::new(reason, message)))
}

/// Whether `conversation` is a row of `user`'s list (a one-to-one conversation they are in,
/// or a group they are a member of).
fn listed(state: &impl ShardState, user: &UserId, conversation: &ConversationId) -> Result<bool, StateError> {
    match conversation.group_id() {
        Some(group) => state.has_group_ref(user, &group),
        None => state.has_conversation_ref(user, conversation),
    }
}

pub(crate) fn set_prefs(
    state: &impl ShardState,
    ctx: &ApplyContext,
    user: &UserId,
    conversation: &ConversationId,
    change: &PrefsChange,
) -> Decided {
    let home = shard_for(user.as_str(), ctx.shards);
    if home != ctx.shard {
        return reject(Reason::WrongShard, format!("{user} lives on shard {home}, not {}", ctx.shard));
    }
    if let Err(r) = change.check() {
        return Ok(Err(r));
    }
    if !listed(state, user, conversation)? {
        return reject(Reason::ConversationNotFound, format!("{conversation} is not in {user}'s conversation list"));
    }
    let before = state.conversation_prefs(user, conversation)?.unwrap_or_default();
    let after = change.applied_to(before.clone());
    if after == before {
        return Ok(Ok(Applied { events: vec![], changes: vec![], reply: Reply::Done }));
    }
    Ok(Ok(Applied {
        events: vec![Event::ConversationPrefsSet {
            user: user.clone(),
            conversation: conversation.clone(),
            prefs: after,
        }],
        changes: vec![],
        reply: Reply::Done,
    }))
}

pub(crate) fn clear_for_self(
    state: &impl ShardState,
    ctx: &ApplyContext,
    (user, conversation): (&UserId, &ConversationId),
    clear: bool,
    delete: &[Seq],
) -> Decided {
    let home = shard_for(conversation.as_str(), ctx.shards);
    if home != ctx.shard {
        return reject(Reason::WrongShard, format!("{conversation} lives on shard {home}, not {}", ctx.shard));
    }
    if let Err(r) = check_delete(clear, delete) {
        return Ok(Err(r));
    }
    // The member's read cursor, if a member.
    let cursor = match conversation.group_id() {
        Some(group) => state.group_member(&group, user)?.map(|m| m.read_seq),
        None => state.conversation(conversation)?.and_then(|h| h.member(user).map(|m| m.read_seq)),
    };
    let Some(read_seq) = cursor else {
        return reject(Reason::NotAMember, format!("{user} is not a member of {conversation}"));
    };
    let last_seq = state.conversation(conversation)?.map_or(Seq::ZERO, |h| h.last_seq);
    if let Some(seq) = delete.iter().find(|s| **s > last_seq) {
        return reject(
            Reason::SeqOutOfRange,
            format!("seq {seq} is past the newest message of {conversation} ({last_seq})"),
        );
    }
    let before = state.history_view(conversation, user)?.unwrap_or_default();
    let mut view = before.clone();
    if clear {
        view.cleared_up_to = view.cleared_up_to.max(last_seq);
    }
    view.deleted.extend(delete.iter().copied());
    let cleared = view.cleared_up_to;
    view.deleted.retain(|s| *s > cleared);
    view.deleted.sort();
    view.deleted.dedup();
    if view.deleted.len() > MAX_DELETED {
        return reject(
            Reason::DeletedMessagesLimit,
            format!("{user} keeps at most {MAX_DELETED} messages of {conversation} deleted: clear the history instead"),
        );
    }
    let reply = Reply::HistoryCleared { cleared_up_to: view.cleared_up_to, deleted: view.deleted.len() as u64 };
    let mut events = vec![];
    if view != before {
        events.push(Event::HistoryViewSet { conversation: conversation.clone(), user: user.clone(), view });
    }
    // What one clears is read: nothing cleared stays unread.
    if clear && read_seq < last_seq {
        events.push(Event::ReadMarked { conversation: conversation.clone(), user: user.clone(), read_seq: last_seq });
    }
    Ok(Ok(Applied { events, changes: vec![], reply }))
}
