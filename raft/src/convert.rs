//! openraft types ↔ the durable schema, and command outcomes ↔ the peer schema.

use std::collections::{BTreeMap, BTreeSet};

use meridian_domain::apply::Reply;
use meridian_domain::*;
use meridian_proto::{durable as pb, peer};
use meridian_storage::shard::CommandResult;
use openraft::{CommittedLeaderId, EntryPayload, StorageIOError};

use crate::types::*;

pub const ENTRY_VERSION: u32 = 1;

pub fn log_id_to_pb(l: &LogId) -> pb::LogId {
    pb::LogId { term: l.leader_id.term, node_id: l.leader_id.node_id, index: l.index }
}

pub fn log_id_from_pb(l: &pb::LogId) -> LogId {
    LogId::new(CommittedLeaderId::new(l.term, l.node_id), l.index)
}

pub fn opt_log_id_to_pb(l: Option<&LogId>) -> Option<pb::LogId> {
    l.map(log_id_to_pb)
}

pub fn opt_log_id_from_pb(l: Option<&pb::LogId>) -> Option<LogId> {
    l.map(log_id_from_pb)
}

pub fn vote_to_pb(v: &Vote) -> peer::Vote {
    peer::Vote { term: v.leader_id.term, node_id: v.leader_id.node_id, committed: v.committed }
}

pub fn vote_from_pb(v: Option<&peer::Vote>) -> Vote {
    match v {
        Some(v) if v.committed => Vote::new_committed(v.term, v.node_id),
        Some(v) => Vote::new(v.term, v.node_id),
        None => Vote::default(),
    }
}

pub fn membership_to_pb(m: &Membership) -> pb::MembershipConfig {
    pb::MembershipConfig {
        configs: m.get_joint_config().iter().map(|c| pb::NodeIdSet { ids: c.iter().copied().collect() }).collect(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        client_addrs: m.nodes().map(|(id, n)| (*id, n.client_addr.clone())).collect(),
    }
}

pub fn membership_from_pb(m: &pb::MembershipConfig) -> Membership {
    let configs: Vec<BTreeSet<NodeId>> = m.configs.iter().map(|c| c.ids.iter().copied().collect()).collect();
    let nodes: BTreeMap<NodeId, Node> = m
        .nodes
        .iter()
        .map(|(id, addr)| {
            // Written before members had a client address of their own: one address served both.
            let client_addr = m.client_addrs.get(id).unwrap_or(addr);
            (*id, Member::new(addr.clone(), client_addr.clone()))
        })
        .collect();
    Membership::new(configs, nodes)
}

pub fn entry_to_pb(e: &Entry) -> pb::LogEntryRecord {
    use pb::log_entry_record::Payload;
    let payload = match &e.payload {
        EntryPayload::Blank => Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(batch) => Payload::Normal(batch.clone()),
        EntryPayload::Membership(m) => Payload::Membership(membership_to_pb(m)),
    };
    pb::LogEntryRecord { version: ENTRY_VERSION, log_id: Some(log_id_to_pb(&e.log_id)), payload: Some(payload) }
}

pub fn entry_from_pb(r: pb::LogEntryRecord) -> Result<Entry, RaftStorageError> {
    use pb::log_entry_record::Payload;
    let corrupt = |what: &str| RaftStorageError::IO {
        source: StorageIOError::read_logs(openraft::AnyError::error(what.to_owned())),
    };
    if r.version > ENTRY_VERSION {
        return Err(corrupt("log entry written by a newer version"));
    }
    let log_id = log_id_from_pb(r.log_id.as_ref().ok_or_else(|| corrupt("log entry without log id"))?);
    let payload = match r.payload.ok_or_else(|| corrupt("log entry without payload"))? {
        Payload::Blank(_) => EntryPayload::Blank,
        Payload::Normal(b) => EntryPayload::Normal(b),
        Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(&m)),
    };
    Ok(Entry { log_id, payload })
}

pub fn snapshot_meta_to_pb(m: &SnapshotMeta) -> pb::SnapshotMetaRecord {
    pb::SnapshotMetaRecord {
        version: 1,
        last_log_id: opt_log_id_to_pb(m.last_log_id.as_ref()),
        membership_log_id: opt_log_id_to_pb(m.last_membership.log_id().as_ref()),
        membership: Some(membership_to_pb(m.last_membership.membership())),
        snapshot_id: m.snapshot_id.clone(),
    }
}

pub fn snapshot_meta_from_pb(m: &pb::SnapshotMetaRecord) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: opt_log_id_from_pb(m.last_log_id.as_ref()),
        last_membership: StoredMembership::new(
            opt_log_id_from_pb(m.membership_log_id.as_ref()),
            m.membership.as_ref().map(membership_from_pb).unwrap_or_default(),
        ),
        snapshot_id: m.snapshot_id.clone(),
    }
}

// ---------------------------------------------------------------- outcomes

pub fn outcome_to_pb(r: &CommandResult) -> peer::CommandOutcome {
    use peer::command_outcome::Result as R;
    use peer::reply::Kind;
    let result = match r {
        Err(rej) => {
            R::Rejection(peer::Rejection { reason: rej.reason.as_str().to_owned(), message: rej.message.clone() })
        }
        Ok(reply) => R::Reply(peer::Reply {
            kind: Some(match reply {
                Reply::Done => Kind::Done(pb::Blank {}),
                Reply::UserCreated { user, home_region, created } => Kind::UserCreated(peer::UserCreated {
                    user_id: user.to_string(),
                    home_region: home_region.to_string(),
                    created: *created,
                }),
                Reply::MessageAccepted { message_id, seq, time, conversation, duplicate } => {
                    Kind::MessageAccepted(peer::MessageAccepted {
                        message_id: message_id.to_string(),
                        seq: seq.0,
                        time_ms: time.0,
                        conversation_id: conversation.to_string(),
                        duplicate: *duplicate,
                    })
                }
                Reply::MessageRecalled { seq, at } => {
                    Kind::MessageRecalled(peer::MessageRecalled { seq: seq.0, recalled_ms: at.0 })
                }
                Reply::ReadMarked { read_seq, unread } => {
                    Kind::ReadMarked(peer::ReadMarked { read_seq: read_seq.0, unread: *unread })
                }
                Reply::LogicVersion { version } => Kind::LogicVersion(peer::LogicVersionSet { version: *version }),
                Reply::Withdrawn { withdrawn } => Kind::Withdrawn(peer::Withdrawn { withdrawn: *withdrawn }),
                Reply::Claimed { region } => Kind::Claimed(peer::Claimed { region: region.to_string() }),
                Reply::GroupChanged { group, member_count, changed } => Kind::GroupChanged(peer::GroupChanged {
                    group_id: group.to_string(),
                    member_count: *member_count,
                    changed: *changed,
                }),
                Reply::GroupApplication { group, pending, member_count } => {
                    Kind::GroupApplication(peer::GroupApplication {
                        group_id: group.to_string(),
                        pending: *pending,
                        member_count: *member_count,
                    })
                }
                Reply::HistoryCleared { cleared_up_to, deleted } => {
                    Kind::HistoryCleared(peer::HistoryCleared { cleared_up_to: cleared_up_to.0, deleted: *deleted })
                }
                Reply::Likes { total } => Kind::Likes(peer::Likes { total: *total }),
                Reply::Friend { state } => Kind::Friend(peer::FriendAnswer { state: state.name().to_owned() }),
            }),
        }),
    };
    peer::CommandOutcome { result: Some(result) }
}

/// Decodes an outcome a peer sent back. A malformed one is an error of the peer link.
pub fn outcome_from_pb(o: peer::CommandOutcome) -> Result<CommandResult, String> {
    use peer::command_outcome::Result as R;
    use peer::reply::Kind;
    let bad = |what: &str| format!("malformed outcome from peer: {what}");
    match o.result.ok_or_else(|| bad("empty"))? {
        R::Rejection(r) => {
            let reason = Reason::from_code(&r.reason).ok_or_else(|| bad(&format!("unknown reason {}", r.reason)))?;
            Ok(Err(Rejection::new(reason, r.message)))
        }
        R::Reply(reply) => Ok(Ok(match reply.kind.ok_or_else(|| bad("empty reply"))? {
            Kind::Done(_) => Reply::Done,
            Kind::UserCreated(u) => Reply::UserCreated {
                user: UserId::parse(&u.user_id).map_err(|e| bad(&e.to_string()))?,
                home_region: RegionCode::parse(&u.home_region).map_err(|e| bad(&e.to_string()))?,
                created: u.created,
            },
            Kind::MessageAccepted(m) => Reply::MessageAccepted {
                message_id: MessageId::from_stored(m.message_id),
                seq: Seq(m.seq),
                time: TimeMs(m.time_ms),
                conversation: ConversationId::parse(&m.conversation_id).map_err(|e| bad(&e.to_string()))?,
                duplicate: m.duplicate,
            },
            Kind::MessageRecalled(r) => Reply::MessageRecalled { seq: Seq(r.seq), at: TimeMs(r.recalled_ms) },
            Kind::ReadMarked(r) => Reply::ReadMarked { read_seq: Seq(r.read_seq), unread: r.unread },
            Kind::LogicVersion(v) => Reply::LogicVersion { version: v.version },
            Kind::Withdrawn(w) => Reply::Withdrawn { withdrawn: w.withdrawn },
            Kind::Claimed(c) => {
                Reply::Claimed { region: RegionCode::parse(&c.region).map_err(|e| bad(&e.to_string()))? }
            }
            Kind::GroupChanged(g) => Reply::GroupChanged {
                group: meridian_domain::GroupId::parse(&g.group_id).map_err(|e| bad(&e.to_string()))?,
                member_count: g.member_count,
                changed: g.changed,
            },
            Kind::GroupApplication(a) => Reply::GroupApplication {
                group: meridian_domain::GroupId::parse(&a.group_id).map_err(|e| bad(&e.to_string()))?,
                pending: a.pending,
                member_count: a.member_count,
            },
            Kind::HistoryCleared(h) => {
                Reply::HistoryCleared { cleared_up_to: Seq(h.cleared_up_to), deleted: h.deleted }
            }
            Kind::Likes(l) => Reply::Likes { total: l.total },
            Kind::Friend(f) => Reply::Friend {
                state: meridian_domain::friend::FriendState::from_name(&f.state)
                    .ok_or_else(|| bad(&format!("unknown friend state {:?}", f.state)))?,
            },
        })),
    }
}
