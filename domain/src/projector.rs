//! The projector: folds events into the projections — accounts, conversation heads and read
//! cursors, the history (messages and tombstones), conversation lists and request-id records.
//! Apply uses it for the events a command produced, and replay uses it to rebuild every
//! projection from the event log alone, so both derive the same state by the same code.

use crate::change::Change;
use crate::event::Event;
use crate::ids::Seq;
use crate::records::{Conversation, ConversationRef, DedupEntry, MemberCursor, Message, Recall, User};
use crate::state::{ShardState, StateError};

/// The projection changes one event makes to `state` (which holds everything before it).
pub fn project(state: &impl ShardState, event: &Event) -> Result<Vec<Change>, StateError> {
    Ok(match event {
        Event::UserCreated { user, home_region, nickname, at } => vec![Change::PutUser(User {
            id: user.clone(),
            home_region: home_region.clone(),
            nickname: nickname.clone(),
            created: *at,
        })],
        Event::MessageSent { conversation, seq, message_id, sender, recipient, elements, request_id, at } => {
            let mut head = match state.conversation(conversation)? {
                Some(head) => head,
                None => {
                    let mut members: Vec<MemberCursor> = [sender, recipient]
                        .into_iter()
                        .map(|u| MemberCursor { user: u.clone(), read_seq: Seq::ZERO })
                        .collect();
                    members.sort_by(|a, b| a.user.cmp(&b.user));
                    Conversation {
                        id: conversation.clone(),
                        members,
                        last_seq: Seq::ZERO,
                        last_time: *at,
                        created: *at,
                    }
                }
            };
            head.last_seq = *seq;
            head.last_time = *at;
            // Sending advances the sender's own read cursor: your own message is never unread.
            for m in &mut head.members {
                if &m.user == sender {
                    m.read_seq = *seq;
                }
            }
            let mut changes = vec![
                Change::PutMessage {
                    conversation: conversation.clone(),
                    message: Message {
                        id: message_id.clone(),
                        seq: *seq,
                        sender: sender.clone(),
                        time: *at,
                        elements: elements.clone(),
                        recalled: None,
                    },
                },
                Change::PutConversation(head),
            ];
            if let Some(request_id) = request_id {
                changes.push(Change::PutDedup {
                    conversation: conversation.clone(),
                    sender: sender.clone(),
                    request_id: request_id.clone(),
                    entry: DedupEntry { message_id: message_id.clone(), seq: *seq, time: *at },
                });
            }
            changes
        }
        Event::MessageRecalled { conversation, seq, by, at } => match state.message(conversation, *seq)? {
            // The history keeps a tombstone: seq, sender, time, who recalled it and when.
            Some(mut message) => {
                message.elements.clear();
                message.recalled = Some(Recall { by: by.clone(), at: *at });
                vec![Change::PutMessage { conversation: conversation.clone(), message }]
            }
            None => vec![],
        },
        Event::ReadMarked { conversation, user, read_seq } => match state.conversation(conversation)? {
            Some(mut head) => {
                for m in &mut head.members {
                    if &m.user == user {
                        m.read_seq = *read_seq;
                    }
                }
                vec![Change::PutConversation(head)]
            }
            None => vec![],
        },
        Event::ConversationJoined { user, conversation, peer, at, home } => vec![Change::PutConversationRef {
            user: user.clone(),
            entry: ConversationRef {
                conversation: conversation.clone(),
                peer: peer.clone(),
                joined: *at,
                home: home.clone(),
            },
        }],
        Event::LogicVersionRaised { .. } => vec![],
        Event::IdClaimed { key, region } => vec![Change::PutClaim { key: key.clone(), region: region.clone() }],
    })
}
