//! The client half of the `meridian` command line: [`ClientCommand`], which the node binary
//! flattens into its own subcommands, and [`run`].
//!
//! Every command reads `MERIDIAN_ENDPOINT` (comma-separated node addresses) and a token from
//! the environment: admin commands and `--as USER` use `MERIDIAN_ADMIN_TOKEN`; the others use
//! `MERIDIAN_TOKEN`, or the admin token when no user token is set; `MERIDIAN_CA` (a PEM file)
//! connects with TLS to a region whose client listeners use it. Output goes to stdout, one
//! line per item, or one JSON document with `--json`.
//!
//! Module map: `args` (each command's arguments, re-exported here), [`render`] (JSON
//! documents and text lines made from API responses).

mod args;
pub mod render;

pub use args::{
    ActAs, AdminCommand, ArchiveCommand, AuditCommand, BlockCommand, ChangesArgs, ConversationCommand,
    ConversationsArgs, DrCommand, EventsArgs, FriendCommand, GroupCommand, HistoryArgs, ProfileCommand, ReadArgs,
    RecallArgs, SendArgs, StatusArgs, SubscribeArgs, TokenArgs, UserCommand,
};

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::api::{Direction, GetHistoryResponse, ReadConsistency, ReadEventsRequest};
use crate::client::Stream;
use crate::config::{ca_from_lookup, endpoints_from_lookup, ADMIN_TOKEN_ENV, TOKEN_ENV};
use crate::{Client, ClientConfig, ClientError};

/// Client commands of the `meridian` binary.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Manage accounts (admin token).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Mint a token for a user (admin token); prints just the token.
    Token(TokenArgs),
    /// Send a text message.
    Send(SendArgs),
    /// Show a conversation's messages.
    History(HistoryArgs),
    /// List conversations with unread counts, newest first.
    Conversations(ConversationsArgs),
    /// Mark a conversation read, up to a seq or to its end.
    Read(ReadArgs),
    /// Print your live events as they arrive (catch-up first), resuming across node failures.
    Subscribe(SubscribeArgs),
    /// Recall one of your messages.
    Recall(RecallArgs),
    /// Show the Raft state of every shard as one node sees it (admin token).
    Status(StatusArgs),
    /// Show a shard's event log in log order, with each event's offset (admin token).
    Events(EventsArgs),
    /// The change stream: every shard's events, resumable from printed offsets (admin token).
    Changes(ChangesArgs),
    /// Change cluster membership (admin token).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Groups: create, add, join, kick, leave, mute, dismiss, info.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Profiles: set yours, read anyone's.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Your blocklist: add, remove, list.
    Block {
        #[command(subcommand)]
        command: BlockCommand,
    },
    /// Your list's rows: pin, dnd, draft, mark, delete; your view of a history: clear,
    /// delete-messages.
    Conversation {
        #[command(subcommand)]
        command: ConversationCommand,
    },
    /// Friends: add, accept, reject, delete, remark, list, requests, check.
    Friend {
        #[command(subcommand)]
        command: FriendCommand,
    },
    /// Audits (admin token).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The cold archive: status, verify, gc (admin token).
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Region disaster recovery: status, promote, failback (admin token).
    Dr {
        #[command(subcommand)]
        command: DrCommand,
    },
}

/// Runs a client command with the process environment, printing its output to stdout.
///
/// On failure the error's text is `REASON: message` (e.g. `MESSAGE_TOO_LARGE: ...`); the
/// caller prints it as `error: {err}` and exits non-zero, or uses [`run_and_report`].
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let output = execute(cmd, &|var: &str| std::env::var(var).ok())
        .await
        // Flattened to its text: `{err:#}` would otherwise repeat the causes.
        .map_err(|err| anyhow::Error::msg(err.to_string()))?;
    output.print()
}

/// [`run`], then `error: REASON: message` on stderr and a failure exit code if it failed.
pub async fn run_and_report(cmd: ClientCommand) -> std::process::ExitCode {
    match run(cmd).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a command prints.
#[derive(Debug, PartialEq)]
enum Output {
    Lines(Vec<String>),
    Json(Value),
}

impl Output {
    fn line(line: String) -> Output {
        Output::Lines(vec![line])
    }

    fn json_or_lines(json: bool, doc: impl FnOnce() -> Value, lines: impl FnOnce() -> Vec<String>) -> Output {
        if json {
            Output::Json(doc())
        } else {
            Output::Lines(lines())
        }
    }

    fn print(&self) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let written = match self {
            Output::Lines(lines) => lines.iter().try_for_each(|l| writeln!(stdout, "{l}")),
            Output::Json(doc) => serde_json::to_string_pretty(doc)
                .map_err(std::io::Error::from)
                .and_then(|text| writeln!(stdout, "{text}")),
        };
        match written.and_then(|()| stdout.flush()) {
            // A reader that stopped early (`| head`) is not an error.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("write output")),
            _ => Ok(()),
        }
    }
}

/// The credentials a command needs.
#[derive(Debug, Clone, PartialEq)]
enum Identity {
    /// The admin token, as itself.
    Admin,
    /// A user: themselves with `MERIDIAN_TOKEN`, or `act_as` through the admin token.
    User { act_as: Option<String> },
}

impl Identity {
    fn user(act_as: &ActAs) -> Identity {
        Identity::User { act_as: act_as.user.clone() }
    }
}

/// The client configuration for `identity` from the environment (read through `lookup`).
fn config_for(identity: &Identity, lookup: &impl Fn(&str) -> Option<String>) -> Result<ClientConfig, ClientError> {
    let endpoints = endpoints_from_lookup(lookup)?;
    let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
    let missing_admin = |hint| ClientError::MissingEnv { var: ADMIN_TOKEN_ENV, hint };
    let config = match identity {
        Identity::Admin => ClientConfig::new(
            endpoints,
            get(ADMIN_TOKEN_ENV).ok_or(missing_admin("this command needs the admin token"))?,
        ),
        Identity::User { act_as: Some(user) } => ClientConfig::new(
            endpoints,
            get(ADMIN_TOKEN_ENV).ok_or(missing_admin("--as USER acts through the admin token"))?,
        )
        .with_act_as(user.clone()),
        Identity::User { act_as: None } => {
            let token = get(TOKEN_ENV).or_else(|| get(ADMIN_TOKEN_ENV)).ok_or(ClientError::MissingEnv {
                var: TOKEN_ENV,
                hint: "set it to a user token (`meridian token USER` mints one), \
                           or set MERIDIAN_ADMIN_TOKEN and pass --as USER",
            })?;
            ClientConfig::new(endpoints, token)
        }
    };
    ca_from_lookup(config, lookup)
}

/// RFC 3339, or milliseconds since the Unix epoch.
fn parse_time_ms(at: &str) -> Result<i64, ClientError> {
    if let Ok(ms) = at.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(at).map(|t| t.timestamp_millis()).map_err(|e| ClientError::InvalidConfig {
        detail: format!("--at {at:?}: not RFC 3339 (2026-11-30T21:00:00Z) nor milliseconds ({e})"),
    })
}

async fn dr_command(client: &Client, config: &ClientConfig, command: DrCommand) -> Result<Output, ClientError> {
    Ok(match command {
        DrCommand::Status { region } => Output::Lines(crate::dr::status(client, config, &region, true).await?.lines()),
        DrCommand::Promote { region } => {
            let p = crate::dr::promote(client, config, &region).await?;
            let mut lines = vec![format!(
                "promoted region {region}'s standby: epoch {} in {:.1} s; the cut (last entry the standby had):",
                p.epoch,
                p.took.as_secs_f64()
            )];
            for c in &p.cut {
                lines.push(format!(
                    "  shard {}: index {} (term {}), data up to {}",
                    c.shard,
                    c.index,
                    c.term,
                    render::format_time_ms(c.time_ms)
                ));
            }
            lines.extend(p.status.lines());
            Output::Lines(lines)
        }
        DrCommand::Failback { region } => {
            let f = crate::dr::failback(client, config, &region).await?;
            let mut lines = vec![format!(
                "failed region {region} back to its primary: epoch {} in {:.1} s (writes paused {:.2} s)",
                f.epoch,
                f.took.as_secs_f64(),
                f.paused.as_secs_f64()
            )];
            for (id, events, messages, file) in &f.quarantined {
                lines.push(format!(
                    "  node {id} quarantined {events} event(s), {messages} message(s) after the cut: {file}"
                ));
            }
            lines.extend(f.status.lines());
            Output::Lines(lines)
        }
    })
}

/// How often `meridian events --follow` asks for new events when it has seen them all.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// `meridian events --follow`: prints the log from `--from` on, then every new event as it is
/// applied (one line each; with `--json`, one JSON document per line), until interrupted or
/// `--limit` events were printed.
async fn follow_events(client: &Client, args: &EventsArgs) -> Result<Output, ClientError> {
    let mut request = ReadEventsRequest { shard: args.shard, from_index: args.from, limit: 1000, ..Default::default() };
    let mut printed = 0usize;
    if args.limit == Some(0) {
        return Ok(Output::Lines(vec![]));
    }
    loop {
        let page = client.read_events(request).await?;
        if page.events.is_empty() {
            tokio::time::sleep(FOLLOW_POLL).await;
            continue;
        }
        let mut stdout = std::io::stdout().lock();
        for event in &page.events {
            let line = if args.json { render::event_json(event).to_string() } else { render::event_line(event) };
            if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                // The reader went away (`| head`): done.
                return Ok(Output::Lines(vec![]));
            }
            printed += 1;
            if args.limit.is_some_and(|limit| printed >= limit) {
                return Ok(Output::Lines(vec![]));
            }
        }
        (request.from_index, request.from_command, request.from_event) =
            (page.next_index, page.next_command, page.next_event);
    }
}

/// `meridian subscribe`: the caller's live stream, one line per event (with `--json`, one
/// JSON object per line), flushed as each arrives, until interrupted or `--limit` events.
async fn subscribe(client: &Client, args: &SubscribeArgs) -> Result<Output, ClientError> {
    let rooms: Vec<&str> = args.rooms.iter().map(String::as_str).collect();
    let mut subscription = client.subscribe_in_rooms(args.token.as_deref(), &rooms).await?;
    let mut printed = 0usize;
    while args.limit.is_none_or(|limit| printed < limit) {
        let event = subscription.next().await?;
        let line = if args.json { render::subscribe_json(&event).to_string() } else { render::subscribe_line(&event) };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
            break;
        }
        printed += 1;
    }
    Ok(Output::Lines(vec![]))
}

/// `SHARD:INDEX.COMMAND.EVENT`.
fn parse_offset(text: &str) -> Result<crate::api::ShardOffset, ClientError> {
    let bad =
        || ClientError::InvalidConfig { detail: format!("{text:?}: write an offset as SHARD:INDEX.COMMAND.EVENT") };
    let (shard, rest) = text.split_once(':').ok_or_else(bad)?;
    let mut parts = rest.split('.').map(|p| p.parse::<u64>().map_err(|_| bad()));
    let (Some(index), Some(command), Some(event), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(crate::api::ShardOffset {
        shard: shard.parse().map_err(|_| bad())?,
        log_index: index?,
        command: u32::try_from(command?).map_err(|_| bad())?,
        event: u32::try_from(event?).map_err(|_| bad())?,
    })
}

/// `meridian changes`: the change stream, one line (or JSON object) per event with the
/// offset to resume its shard from, flushed as each arrives.
async fn changes(client: &Client, args: &ChangesArgs) -> Result<Output, ClientError> {
    let from = args.from.iter().map(|f| parse_offset(f)).collect::<Result<Vec<_>, _>>()?;
    let mut stream = client.changes(from, args.follow).await?;
    let mut printed = 0usize;
    while args.limit.is_none_or(|limit| printed < limit) {
        let change = match stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) => break,
            Err(status) => return Err(ClientError::from_status(status, "the change stream")),
        };
        let (Some(event), Some(next)) = (change.event, change.next) else { continue };
        let next = format!("{}:{}.{}.{}", next.shard, next.log_index, next.command, next.event);
        let line = if args.json {
            let mut json = render::event_json(&event);
            if let Value::Object(map) = &mut json {
                map.insert("next".into(), Value::String(next));
            }
            json.to_string()
        } else {
            format!("{}  next={next}", render::event_line(&event))
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
            break;
        }
        printed += 1;
    }
    Ok(Output::Lines(vec![]))
}

/// `meridian group …`.
/// `NAME=VALUE` arguments as pairs.
fn name_values(fields: &[String]) -> Result<Vec<(&str, &str)>, ClientError> {
    fields
        .iter()
        .map(|field| {
            field
                .split_once('=')
                .ok_or_else(|| ClientError::InvalidConfig { detail: format!("{field:?}: write a field as NAME=VALUE") })
        })
        .collect()
}

async fn conversation_command(client: &Client, command: ConversationCommand) -> Result<Output, ClientError> {
    let stream = command.row().stream();
    let (peer, group_id) = stream.parts()?;
    let prefs = |r: crate::api::ConversationPrefsResponse| {
        Output::line(format!(
            "{} pinned={} dnd={} draft={:?} marks={} hidden_up_to={}",
            r.conversation_id,
            r.pinned,
            r.dnd,
            r.draft,
            r.marks.join(","),
            r.hidden_up_to
        ))
    };
    let cleared = |r: crate::api::ClearHistoryResponse| {
        format!("{} cleared_up_to={} deleted={}", r.conversation_id, r.cleared_up_to, r.deleted)
    };
    let set = |request: crate::api::SetConversationPrefsRequest| crate::api::SetConversationPrefsRequest {
        peer: peer.clone(),
        group_id: group_id.clone(),
        ..request
    };
    Ok(match command {
        ConversationCommand::Pin { off, .. } => prefs(
            client
                .set_conversation_prefs(set(crate::api::SetConversationPrefsRequest {
                    pinned: Some(!off),
                    ..Default::default()
                }))
                .await?,
        ),
        ConversationCommand::Dnd { off, .. } => prefs(
            client
                .set_conversation_prefs(set(crate::api::SetConversationPrefsRequest {
                    dnd: Some(!off),
                    ..Default::default()
                }))
                .await?,
        ),
        ConversationCommand::Draft { text, .. } => prefs(
            client
                .set_conversation_prefs(set(crate::api::SetConversationPrefsRequest {
                    draft: Some(text),
                    ..Default::default()
                }))
                .await?,
        ),
        ConversationCommand::Mark { marks, .. } => prefs(
            client
                .set_conversation_prefs(set(crate::api::SetConversationPrefsRequest {
                    set_marks: true,
                    marks,
                    ..Default::default()
                }))
                .await?,
        ),
        ConversationCommand::Delete { clear, .. } => {
            let mut lines = vec![];
            if clear {
                lines.push(cleared(client.clear_history(&stream).await?));
            }
            let r = client.delete_conversation(&stream).await?;
            lines.push(format!("{} deleted from the list up to seq {}", r.conversation_id, r.hidden_up_to));
            Output::Lines(lines)
        }
        ConversationCommand::Clear { .. } => Output::line(cleared(client.clear_history(&stream).await?)),
        ConversationCommand::DeleteMessages { seqs, .. } => {
            Output::line(cleared(client.delete_messages(&stream, &seqs).await?))
        }
    })
}

async fn friend_command(client: &Client, command: FriendCommand) -> Result<Output, ClientError> {
    let answered = |r: crate::api::FriendResponse| {
        Output::line(if r.state.is_empty() {
            format!("user={}", r.user)
        } else {
            format!("user={} {}", r.user, r.state)
        })
    };
    Ok(match command {
        FriendCommand::Add { target, message, remark, .. } => {
            answered(client.add_friend(&target, &message, &remark).await?)
        }
        FriendCommand::Accept { target, remark, .. } => {
            answered(client.respond_friend_request(&target, true, &remark).await?)
        }
        FriendCommand::Reject { target, .. } => answered(client.respond_friend_request(&target, false, "").await?),
        FriendCommand::Delete { target, both, .. } => answered(client.delete_friend(&target, both).await?),
        FriendCommand::Remark { target, remark, .. } => answered(client.set_friend_remark(&target, &remark).await?),
        FriendCommand::List { json, .. } => {
            let list = client.list_friends().await?;
            Output::json_or_lines(
                json,
                || {
                    Value::Array(
                        list.friends
                            .iter()
                            .map(|f| serde_json::json!({"user": f.user, "remark": f.remark, "since_ms": f.since_ms}))
                            .collect(),
                    )
                },
                || {
                    list.friends
                        .iter()
                        .map(|f| {
                            if f.remark.is_empty() {
                                f.user.clone()
                            } else {
                                format!("{} remark={:?}", f.user, f.remark)
                            }
                        })
                        .collect()
                },
            )
        }
        FriendCommand::Requests { json, .. } => {
            let list = client.list_friend_requests().await?;
            Output::json_or_lines(
                json,
                || {
                    Value::Array(
                        list.requests
                            .iter()
                            .map(|r| serde_json::json!({"from": r.from, "message": r.message, "time_ms": r.time_ms}))
                            .collect(),
                    )
                },
                || list.requests.iter().map(|r| format!("from={} message={:?}", r.from, r.message)).collect(),
            )
        }
        FriendCommand::Check { users, json, .. } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let checks = client.check_friends(&users).await?.checks;
            Output::json_or_lines(
                json,
                || {
                    Value::Array(
                        checks.iter().map(|c| serde_json::json!({"user": c.user, "relation": c.relation})).collect(),
                    )
                },
                || checks.iter().map(|c| format!("{} {}", c.user, c.relation)).collect(),
            )
        }
    })
}

async fn group_command(client: &Client, command: GroupCommand) -> Result<Output, ClientError> {
    Ok(match command {
        GroupCommand::Create { id, kind, name, members, hide_history, .. } => {
            let request = crate::api::CreateGroupRequest {
                group_id: id.unwrap_or_default(),
                r#type: kind,
                name,
                members,
                hide_history_from_new_members: hide_history,
            };
            let created = client.create_group_with(request).await?;
            Output::line(format!(
                "group={} members={} created={} conversation={}",
                created.group_id, created.member_count, created.created, created.conversation_id
            ))
        }
        GroupCommand::Add { id, users, hidden, .. } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let change = if hidden {
                client.add_hidden_group_members(&id, &users).await?
            } else {
                client.add_group_members(&id, &users).await?
            };
            Output::line(render::group_change_line(&change))
        }
        GroupCommand::Join { id, act_as } => {
            let me = act_as.user.clone().or_else(|| client.act_as().map(str::to_owned)).unwrap_or_default();
            Output::line(render::group_change_line(&client.add_group_members(&id, &[me.as_str()]).await?))
        }
        GroupCommand::Kick { id, member, .. } => {
            Output::line(render::group_change_line(&client.remove_group_member(&id, Some(&member)).await?))
        }
        GroupCommand::Leave { id, .. } => {
            Output::line(render::group_change_line(&client.remove_group_member(&id, None).await?))
        }
        GroupCommand::Mute { id, member, seconds, .. } => {
            Output::line(render::group_change_line(&client.mute_group_member(&id, &member, seconds).await?))
        }
        GroupCommand::Unmute { id, member, .. } => {
            Output::line(render::group_change_line(&client.mute_group_member(&id, &member, 0).await?))
        }
        GroupCommand::Dismiss { id, .. } => Output::line(render::group_change_line(&client.dismiss_group(&id).await?)),
        GroupCommand::Admin { id, member, revoke, .. } => {
            let role = if revoke { "member" } else { "admin" };
            Output::line(render::group_change_line(&client.set_group_member_role(&id, &member, role).await?))
        }
        GroupCommand::Transfer { id, member, .. } => {
            Output::line(render::group_change_line(&client.transfer_group(&id, &member).await?))
        }
        GroupCommand::Info { id, json, .. } => {
            let info = client.group_all_members(&id).await?;
            Output::json_or_lines(json, || render::group_json(&info), || render::group_lines(&info))
        }
        GroupCommand::Members { id, after, limit, json, .. } => {
            let page = client.get_group(&id, &after, limit).await?;
            Output::json_or_lines(
                json,
                || render::group_json(&page),
                || {
                    let mut lines = render::group_lines(&page);
                    if !page.next_after.is_empty() {
                        lines.push(format!("next: --after {}", page.next_after));
                    }
                    lines
                },
            )
        }
        GroupCommand::Apply { id, message, .. } => {
            let r = client.apply_to_join_group(&id, &message).await?;
            let state = if r.pending { "pending" } else { "joined" };
            Output::line(format!("group={} {state} members={}", r.group_id, r.member_count))
        }
        GroupCommand::Approve { id, member, .. } => {
            Output::line(render::group_change_line(&client.respond_join_request(&id, &member, true).await?))
        }
        GroupCommand::Reject { id, member, .. } => {
            Output::line(render::group_change_line(&client.respond_join_request(&id, &member, false).await?))
        }
        GroupCommand::Requests { id, json, .. } => {
            let list = client.list_join_requests(&id).await?.requests;
            Output::json_or_lines(
                json,
                || {
                    Value::Array(
                        list.iter()
                            .map(|r| serde_json::json!({"user": r.user, "message": r.message, "time_ms": r.time_ms}))
                            .collect(),
                    )
                },
                || list.iter().map(|r| format!("user={} message={:?}", r.user, r.message)).collect(),
            )
        }
        GroupCommand::Set { id, fields, .. } => {
            let pairs = name_values(&fields)?;
            Output::line(render::group_change_line(&client.set_group_profile(&id, &pairs).await?))
        }
        GroupCommand::Card { id, member, fields, .. } => {
            let pairs = name_values(&fields)?;
            Output::line(render::group_change_line(&client.set_group_member_info(&id, &member, &pairs).await?))
        }
        GroupCommand::MuteAll { id, off, .. } => {
            Output::line(render::group_change_line(&client.mute_all_group(&id, !off).await?))
        }
        GroupCommand::Ban { id, member, seconds, .. } => {
            Output::line(render::group_change_line(&client.ban_group_member(&id, &member, seconds).await?))
        }
        GroupCommand::List { json, .. } => {
            let groups = client.list_joined_groups().await?.groups;
            Output::json_or_lines(
                json,
                || {
                    Value::Array(
                        groups
                            .iter()
                            .map(|g| {
                                serde_json::json!({"group_id": g.group_id, "type": g.r#type, "name": g.name,
                                    "joined_ms": g.joined_ms, "member_count": g.member_count})
                            })
                            .collect(),
                    )
                },
                || {
                    groups
                        .iter()
                        .map(|g| {
                            format!(
                                "group:{} type={} name={:?} members={}",
                                g.group_id, g.r#type, g.name, g.member_count
                            )
                        })
                        .collect()
                },
            )
        }
        GroupCommand::TopicCreate { id, topic, name, .. } => {
            Output::line(render::group_change_line(&client.create_topic(&id, &topic, &name).await?))
        }
        GroupCommand::Topics { id, .. } => {
            let topics = client.list_topics(&id).await?.topics;
            Output::Lines(
                topics
                    .iter()
                    .map(|t| {
                        format!(
                            "topic={} name={:?} last_seq={} read_seq={} unread={}",
                            t.topic, t.name, t.last_seq, t.read_seq, t.unread
                        )
                    })
                    .collect(),
            )
        }
        GroupCommand::Like { id, count, .. } => {
            let r = client.like_group(&id, count).await?;
            Output::line(format!("group={} likes={}", r.group_id, r.likes))
        }
        GroupCommand::Receipts { id, seq, json, .. } => {
            let r = client.get_read_receipts(&id, seq).await?;
            Output::json_or_lines(
                json,
                || serde_json::json!({"read": r.read, "unread": r.unread}),
                || vec![format!("read: {}", r.read.join(",")), format!("unread: {}", r.unread.join(","))],
            )
        }
    })
}

fn consistency(local: bool) -> ReadConsistency {
    if local {
        ReadConsistency::Local
    } else {
        ReadConsistency::Linearizable
    }
}

/// Runs `cmd` and says what to print.
async fn execute(cmd: ClientCommand, lookup: &impl Fn(&str) -> Option<String>) -> Result<Output, ClientError> {
    let identity = match &cmd {
        ClientCommand::User { .. }
        | ClientCommand::Token(_)
        | ClientCommand::Status(_)
        | ClientCommand::Events(_)
        | ClientCommand::Changes(_)
        | ClientCommand::Admin { .. }
        | ClientCommand::Audit { .. }
        | ClientCommand::Archive { .. }
        | ClientCommand::Dr { .. } => Identity::Admin,
        ClientCommand::Send(a) => Identity::user(&a.act_as),
        ClientCommand::History(a) => Identity::user(&a.act_as),
        ClientCommand::Conversations(a) => Identity::user(&a.act_as),
        ClientCommand::Read(a) => Identity::user(&a.act_as),
        ClientCommand::Subscribe(a) => Identity::user(&a.act_as),
        ClientCommand::Recall(a) => Identity::user(&a.act_as),
        ClientCommand::Group { command } => Identity::user(command.act_as()),
        ClientCommand::Block { command } => Identity::user(command.act_as()),
        ClientCommand::Friend { command } => Identity::user(command.act_as()),
        ClientCommand::Conversation { command } => Identity::user(&command.row().act_as),
        ClientCommand::Profile { command } => Identity::user(command.act_as()),
    };
    let config = config_for(&identity, lookup)?;
    let client = Client::with_config(config.clone())?;
    let output = match cmd {
        ClientCommand::User { command: UserCommand::Create { user, home_region } } => {
            let created = client.create_user(&user, home_region.as_deref()).await?;
            Output::line(render::user_line(&created))
        }
        ClientCommand::User { command: UserCommand::Delete { user } } => {
            let deleted = client.delete_user(&user).await?;
            Output::line(if deleted.deleted {
                format!("deleted {}", deleted.user_id)
            } else {
                format!("{} was deleted already", deleted.user_id)
            })
        }
        ClientCommand::Token(args) => {
            let ttl = args.ttl_seconds.map(Duration::from_secs);
            Output::line(client.issue_token(&args.user, ttl).await?.token)
        }
        ClientCommand::Send(args) => {
            let sent = match (&args.to, &args.group) {
                (_, Some(group)) if args.topic.is_some() => {
                    let topic = args.topic.as_deref().unwrap_or_default();
                    client.send_topic_text(group, topic, &args.text, args.request_id).await?
                }
                (_, Some(group)) if !args.mention.is_empty() || args.at_all => {
                    let mentions: Vec<&str> = args.mention.iter().map(String::as_str).collect();
                    client.send_group_text_mentioning(group, &args.text, &mentions, args.at_all).await?
                }
                (_, Some(group)) => client.send_group_text(group, &args.text, args.request_id).await?,
                (Some(to), None) => client.send_text(to, &args.text, args.request_id).await?,
                (None, None) => {
                    return Err(ClientError::InvalidConfig { detail: "name --to PEER or --group GROUP".into() })
                }
            };
            if sent.duplicate {
                eprintln!("note: this request id was already accepted; showing the first result");
            }
            Output::line(render::send_line(&sent))
        }
        ClientCommand::History(args) => {
            let target = match (&args.peer, &args.group) {
                (_, Some(group)) if args.topic.is_some() => {
                    Stream::Topic(group.clone(), args.topic.clone().unwrap_or_default())
                }
                (_, Some(group)) => Stream::Group(group.clone()),
                (Some(peer), None) => Stream::Peer(peer.clone()),
                (None, None) => {
                    return Err(ClientError::InvalidConfig { detail: "name --with PEER or --group GROUP".into() })
                }
            };
            let history = if args.all {
                let messages = client.stream_history_all(&target, consistency(args.local)).await?;
                GetHistoryResponse {
                    last_seq: messages.last().map_or(0, |m| m.seq),
                    messages,
                    ..GetHistoryResponse::default()
                }
            } else {
                let direction = if args.forward { Direction::Forward } else { Direction::Backward };
                client.stream_history(&target, args.from_seq, args.limit, direction, consistency(args.local)).await?
            };
            Output::json_or_lines(
                args.json,
                || render::history_json(&history),
                || history.messages.iter().map(render::history_line).collect(),
            )
        }
        ClientCommand::Conversations(args) => {
            let list = client.conversations_all(consistency(args.local)).await?;
            Output::json_or_lines(
                args.json,
                || render::conversations_json(&list),
                || list.conversations.iter().map(render::conversation_line).collect(),
            )
        }
        ClientCommand::Read(args) => {
            let read = match (&args.peer, &args.group) {
                (_, Some(group)) if args.topic.is_some() => {
                    client.mark_topic_read(group, args.topic.as_deref().unwrap_or_default(), args.seq).await?
                }
                (_, Some(group)) => client.mark_group_read(group, args.seq).await?,
                (Some(peer), None) => client.mark_read(peer, args.seq).await?,
                (None, None) => {
                    return Err(ClientError::InvalidConfig { detail: "name --with PEER or --group GROUP".into() })
                }
            };
            Output::line(render::read_line(&read))
        }
        ClientCommand::Recall(args) => {
            let recalled = match (&args.peer, &args.group) {
                (_, Some(group)) => client.recall_group_message(group, args.seq).await?,
                (Some(peer), None) => client.recall(peer, args.seq).await?,
                (None, None) => {
                    return Err(ClientError::InvalidConfig { detail: "name --with PEER or --group GROUP".into() })
                }
            };
            Output::line(render::recall_line(&recalled))
        }
        ClientCommand::Status(args) => {
            let status = client.cluster_status(args.hash).await?;
            Output::json_or_lines(args.json, || render::status_json(&status), || render::status_lines(&status))
        }
        ClientCommand::Events(args) if args.follow => follow_events(&client, &args).await?,
        ClientCommand::Subscribe(args) => subscribe(&client, &args).await?,
        ClientCommand::Changes(args) => changes(&client, &args).await?,
        ClientCommand::Events(args) => {
            let mut events = client.read_all_events(args.shard, args.from).await?;
            if let Some(limit) = args.limit {
                events.truncate(limit);
            }
            Output::json_or_lines(args.json, || render::events_json(&events), || render::event_lines(&events))
        }
        ClientCommand::Admin { command: AdminCommand::VerifyProjections { json } } => {
            let report = client.verify_projections().await?;
            let lines = render::verification_lines(&report);
            let different: Vec<u32> = report.shards.iter().filter(|s| !s.equal).map(|s| s.shard).collect();
            if !different.is_empty() {
                return Err(ClientError::Verification {
                    detail: format!(
                        "node {}: projections differ from a replay of the event log on shards {different:?}\n{}",
                        report.node_id,
                        lines.join("\n")
                    ),
                });
            }
            Output::json_or_lines(json, || render::verification_json(&report), || lines)
        }
        ClientCommand::Admin { command: AdminCommand::LogicVersion { raise, json } } => {
            let report = client.logic_version(raise.unwrap_or(0)).await?;
            Output::json_or_lines(json, || render::logic_version_json(&report), || render::logic_version_lines(&report))
        }
        ClientCommand::Admin { command: AdminCommand::AddNode { id, addr, peer_addr, learner_only } } => {
            let members = client.add_node(id, &addr, &peer_addr, learner_only).await?;
            Output::line(render::add_node_line(&members))
        }
        ClientCommand::Admin { command: AdminCommand::Restore { user, peer, at } } => {
            let at_ms = parse_time_ms(&at)?;
            let r = client.restore_conversation(&user, &peer, at_ms).await?;
            Output::line(format!(
                "{}: kept up to seq {}, withdrew {} later message(s)",
                r.conversation_id, r.kept_up_to_seq, r.withdrawn
            ))
        }
        ClientCommand::Dr { command } => dr_command(&client, &config, command).await?,
        ClientCommand::Admin { command: AdminCommand::RemoveNode { id } } => {
            let members = client.remove_node(id).await?;
            Output::line(render::remove_node_line(&members))
        }
        ClientCommand::Group { command } => group_command(&client, command).await?,
        ClientCommand::Block { command: BlockCommand::Add { target, .. } } => {
            let r = client.set_blocked(&target, true).await?;
            Output::line(format!("user={} blocked={}", r.user, r.blocked))
        }
        ClientCommand::Block { command: BlockCommand::Remove { target, .. } } => {
            let r = client.set_blocked(&target, false).await?;
            Output::line(format!("user={} blocked={}", r.user, r.blocked))
        }
        ClientCommand::Block { command: BlockCommand::List { .. } } => {
            Output::Lines(client.list_blocked().await?.users)
        }
        ClientCommand::Friend { command } => friend_command(&client, command).await?,
        ClientCommand::Conversation { command } => conversation_command(&client, command).await?,
        ClientCommand::Profile { command: ProfileCommand::Set { fields, .. } } => {
            let pairs = name_values(&fields)?;
            let profile = client.set_profile(&pairs).await?;
            Output::Lines(profile.fields.iter().map(|(k, v)| format!("{k}={v}")).collect())
        }
        ClientCommand::Profile { command: ProfileCommand::Get { whose, fields, json, .. } } => {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let profile = client.get_profile(&whose, &fields).await?;
            Output::json_or_lines(
                json,
                || serde_json::json!({ "user": profile.user, "fields": profile.fields }),
                || profile.fields.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            )
        }
        ClientCommand::Archive { command } => {
            use meridian_proto::api::ArchiveAction;
            let (action, grace, json) = match command {
                ArchiveCommand::Status { json } => (ArchiveAction::ArchiveStatus, 0, json),
                ArchiveCommand::Verify { json } => (ArchiveAction::ArchiveVerify, 0, json),
                ArchiveCommand::Gc { grace_seconds, json } => (ArchiveAction::ArchiveGc, grace_seconds, json),
            };
            let report = client.archive(action, grace).await?;
            let lines = render::archive_lines(&report, action);
            if !report.problems.is_empty() {
                return Err(ClientError::Verification {
                    detail: format!(
                        "archive verify: {} damaged segment(s)\n{}",
                        report.problems.len(),
                        lines.join("\n")
                    ),
                });
            }
            Output::json_or_lines(json, || render::archive_json(&report), || lines)
        }
        ClientCommand::Audit { command: AuditCommand::Residency { this_node, json } } => {
            let report = client.audit_residency(this_node).await?;
            let lines = render::audit_lines(&report);
            let violations: u64 = report.nodes.iter().map(|n| n.violation_count).sum();
            let incomplete = report.nodes.iter().filter(|n| !n.error.is_empty()).count();
            if violations > 0 || incomplete > 0 {
                return Err(ClientError::Verification {
                    detail: format!(
                        "residency audit: {violations} violation(s), {incomplete} node(s) not audited\n{}",
                        lines.join("\n")
                    ),
                });
            }
            Output::json_or_lines(json, || render::audit_json(&report), || lines)
        }
    };
    Ok(output)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::config::ENDPOINT_ENV;

    /// Stands in for the node binary, which flattens [`ClientCommand`] into its own CLI.
    #[derive(Debug, Parser)]
    #[command(name = "meridian")]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        /// A server command of the node binary.
        Dev,
        #[command(flatten)]
        Client(ClientCommand),
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("meridian").chain(args.iter().copied()))?;
        match cli.command {
            Top::Client(cmd) => Ok(cmd),
            Top::Dev => panic!("parsed as dev"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn conversation_commands_parse() {
        assert!(matches!(
            parse(&["conversation", "pin", "--as", "ann", "--with", "bob"]),
            Ok(ClientCommand::Conversation { command: ConversationCommand::Pin { off: false, .. } })
        ));
        assert!(matches!(
            parse(&["conversation", "delete-messages", "--as", "ann", "--group", "team", "3,5"]),
            Ok(ClientCommand::Conversation { command: ConversationCommand::DeleteMessages { seqs, .. } })
                if seqs == [3, 5]
        ));
        assert!(parse(&["conversation", "clear", "--as", "ann"]).is_err(), "a row is named");
    }

    #[test]
    fn friend_commands_parse() {
        assert!(matches!(
            parse(&["friend", "add", "bob", "--as", "ann", "--message", "hi"]),
            Ok(ClientCommand::Friend { command: FriendCommand::Add { target, message, .. } })
                if target == "bob" && message == "hi"
        ));
        assert!(matches!(
            parse(&["friend", "delete", "bob", "--as", "ann", "--both"]),
            Ok(ClientCommand::Friend { command: FriendCommand::Delete { target, both: true, .. } }) if target == "bob"
        ));
        assert!(matches!(
            parse(&["friend", "check", "bob,cat", "--as", "ann", "--json"]),
            Ok(ClientCommand::Friend { command: FriendCommand::Check { users, json: true, .. } })
                if users == ["bob", "cat"]
        ));
    }

    #[test]
    fn profile_and_block_commands_parse() {
        assert!(matches!(
            parse(&["profile", "get", "ann", "--as", "bob", "--fields", "gender,location"]),
            Ok(ClientCommand::Profile { command: ProfileCommand::Get { whose, fields, .. } })
                if whose == "ann" && fields == ["gender", "location"]
        ));
        assert!(matches!(
            parse(&["profile", "set", "--as", "ann", "signature=hi"]),
            Ok(ClientCommand::Profile { command: ProfileCommand::Set { fields, .. } }) if fields == ["signature=hi"]
        ));
        assert!(matches!(
            parse(&["block", "add", "bob", "--as", "ann"]),
            Ok(ClientCommand::Block { command: BlockCommand::Add { target, .. } }) if target == "bob"
        ));
    }

    #[test]
    fn group_commands_parse() {
        assert!(matches!(
            parse(&["group", "create", "team", "--as", "ann", "--type", "public", "--members", "bob,cat"]),
            Ok(ClientCommand::Group { command: GroupCommand::Create { id: Some(id), kind, members, .. } })
                if id == "team" && kind == "public" && members == ["bob", "cat"]
        ));
        assert!(matches!(
            parse(&["group", "mute", "team", "cat", "--as", "ann", "--seconds", "60"]),
            Ok(ClientCommand::Group { command: GroupCommand::Mute { member, seconds: 60, .. } }) if member == "cat"
        ));
        assert!(matches!(
            parse(&["send", "--as", "bob", "--group", "team", "hi"]),
            Ok(ClientCommand::Send(SendArgs { group: Some(g), to: None, .. })) if g == "team"
        ));
        assert!(parse(&["send", "--to", "bob", "--group", "team", "hi"]).is_err(), "a peer or a group, not both");
        assert!(parse(&["read", "--group", "team"]).is_ok());
        assert!(matches!(
            parse(&["group", "card", "team", "cat", "--as", "ann", "name_card=Cat"]),
            Ok(ClientCommand::Group { command: GroupCommand::Card { member, fields, .. } })
                if member == "cat" && fields == ["name_card=Cat"]
        ));
        assert!(matches!(
            parse(&["group", "receipts", "team", "7", "--as", "ann"]),
            Ok(ClientCommand::Group { command: GroupCommand::Receipts { seq: 7, .. } })
        ));
        assert!(parse(&["group", "ban", "team", "cat", "--as", "ann", "--seconds", "60"]).is_ok());
    }

    #[test]
    fn the_command_tree_is_valid_when_flattened() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_parses_peer_request_id_text_and_act_as() {
        let cmd = parse(&["send", "--as", "alice", "--to", "bob", "--request-id", "r1", "hi bob"]).expect("parses");
        match cmd {
            ClientCommand::Send(args) => {
                assert_eq!(args.act_as.user.as_deref(), Some("alice"));
                assert_eq!(args.to.as_deref(), Some("bob"));
                assert_eq!(args.request_id.as_deref(), Some("r1"));
                assert_eq!(args.text, "hi bob");
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn history_parses_its_options_and_refuses_all_with_a_range() {
        let cmd = parse(&["history", "--with", "bob", "--from-seq", "5", "--limit", "10", "--forward", "--json"])
            .expect("parses");
        match cmd {
            ClientCommand::History(args) => {
                assert_eq!(args.act_as.user, None);
                assert_eq!(args.peer.as_deref(), Some("bob"));
                assert_eq!((args.from_seq, args.limit), (5, 10));
                assert!(args.forward && args.json && !args.all && !args.local);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["history", "--with", "bob", "--all", "--from-seq", "3"]).is_err());
        assert!(parse(&["history"]).is_err(), "--with is required");
    }

    #[test]
    fn admin_user_and_token_commands_parse() {
        assert!(matches!(
            parse(&["user", "create", "alice", "--home-region", "sg"]),
            Ok(ClientCommand::User { command: UserCommand::Create { user, home_region } })
                if user == "alice" && home_region.as_deref() == Some("sg")
        ));
        assert!(matches!(
            parse(&["token", "alice", "--ttl-seconds", "60"]),
            Ok(ClientCommand::Token(TokenArgs { user, ttl_seconds: Some(60) })) if user == "alice"
        ));
        assert!(matches!(
            parse(&["admin", "add-node", "--id", "4", "--addr", "n4:7002", "--peer-addr", "n4:7102", "--learner-only"]),
            Ok(ClientCommand::Admin { command: AdminCommand::AddNode { id: 4, addr, peer_addr, learner_only: true } })
                if addr == "n4:7002" && peer_addr == "n4:7102"
        ));
        assert!(matches!(
            parse(&["admin", "remove-node", "--id", "2"]),
            Ok(ClientCommand::Admin { command: AdminCommand::RemoveNode { id: 2 } })
        ));
        assert!(matches!(
            parse(&["admin", "logic-version", "--raise", "2"]),
            Ok(ClientCommand::Admin { command: AdminCommand::LogicVersion { raise: Some(2), json: false } })
        ));
        assert!(matches!(
            parse(&["status", "--hash", "--json"]),
            Ok(ClientCommand::Status(StatusArgs { hash: true, json: true }))
        ));
        assert!(matches!(parse(&["read", "--with", "bob"]), Ok(ClientCommand::Read(ReadArgs { seq: None, .. }))));
        assert!(parse(&["recall", "--with", "bob"]).is_err(), "--seq is required");
    }

    #[test]
    fn admin_commands_use_the_admin_token() {
        let lookup = env(&[(ENDPOINT_ENV, "n1:7001"), (TOKEN_ENV, "user-token"), (ADMIN_TOKEN_ENV, "admin-token")]);
        let config = config_for(&Identity::Admin, &lookup).expect("config");
        assert_eq!(config.token, "admin-token");
        assert_eq!(config.act_as, None);
    }

    #[test]
    fn act_as_uses_the_admin_token_and_names_the_user() {
        let lookup =
            env(&[(ENDPOINT_ENV, "n1:7001,n2:7001"), (TOKEN_ENV, "user-token"), (ADMIN_TOKEN_ENV, "admin-token")]);
        let identity = Identity::User { act_as: Some("alice".into()) };
        let config = config_for(&identity, &lookup).expect("config");
        assert_eq!(config.token, "admin-token");
        assert_eq!(config.act_as.as_deref(), Some("alice"));
        assert_eq!(config.endpoints, vec!["n1:7001", "n2:7001"]);
    }

    #[test]
    fn user_commands_prefer_the_user_token_and_fall_back_to_the_admin_token() {
        let me = Identity::User { act_as: None };
        let both = env(&[(ENDPOINT_ENV, "n1:7001"), (TOKEN_ENV, "user-token"), (ADMIN_TOKEN_ENV, "admin-token")]);
        assert_eq!(config_for(&me, &both).expect("config").token, "user-token");
        let admin_only = env(&[(ENDPOINT_ENV, "n1:7001"), (ADMIN_TOKEN_ENV, "admin-token")]);
        assert_eq!(config_for(&me, &admin_only).expect("config").token, "admin-token");
    }

    #[test]
    fn missing_tokens_are_named_in_the_error() {
        let no_tokens = env(&[(ENDPOINT_ENV, "n1:7001"), (TOKEN_ENV, "")]);
        let me = config_for(&Identity::User { act_as: None }, &no_tokens);
        assert!(matches!(me, Err(ClientError::MissingEnv { var: TOKEN_ENV, .. })));
        let act_as = config_for(
            &Identity::User { act_as: Some("alice".into()) },
            &env(&[(ENDPOINT_ENV, "n1:7001"), (TOKEN_ENV, "user-token")]),
        );
        assert!(matches!(act_as, Err(ClientError::MissingEnv { var: ADMIN_TOKEN_ENV, .. })));
        let err = config_for(&Identity::Admin, &no_tokens).expect_err("no admin token").to_string();
        assert_eq!(err, "MISSING_ENV: MERIDIAN_ADMIN_TOKEN is not set: this command needs the admin token");
    }

    #[tokio::test]
    async fn a_failed_command_reports_reason_and_message() {
        let lookup = env(&[(ADMIN_TOKEN_ENV, "admin-token")]);
        let cmd = parse(&["status"]).expect("parses");
        let err = execute(cmd, &lookup).await.expect_err("no endpoint");
        assert_eq!(err.reason(), None);
        assert!(err.to_string().starts_with("MISSING_ENV: MERIDIAN_ENDPOINT is not set"), "{err}");
    }
}
