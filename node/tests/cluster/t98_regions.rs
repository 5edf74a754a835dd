//! Four regions on one machine (`meridian dev --regions sg,kr,de,in --strict de,in`, one node
//! each), driven as a user would: users created in every region from any endpoint, ids
//! unique across regions (racing creates included), a conversation between two open regions
//! reached through a third region's endpoint, residency (`sg`↔`de` lives in `de`, `de`↔`in`
//! is refused), a region killed (`REGION_UNAVAILABLE` at once for what lives there,
//! everything else working, effects for it delivered once after its restart), and the
//! residency audit: clean after all of it, and finding a record planted abroad.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::api::{ListConversationsResponse, ReadConsistency};
use meridian_client::{Client, ClientConfig, ClientError};
use meridian_domain::{ConversationId, MessageId, Seq, UserId};
use meridian_proto::durable as pb;
use meridian_storage::{keys, Db};
use prost::Message as _;

use common::DevRegion;

fn meridian() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meridian"))
}

/// A client of one endpoint acting as `user` (admin token with act-as), failing fast.
fn client(region: &DevRegion, endpoint: &str, user: Option<&str>) -> Client {
    let mut config = ClientConfig::new([endpoint.to_owned()], region.admin_token.clone());
    if let Some(user) = user {
        config = config.with_act_as(user);
    }
    config.retry_budget = Duration::from_secs(3);
    Client::with_config(config).unwrap()
}

/// Runs the CLI against `endpoint`; returns (success, stdout, stderr).
fn cli(region: &DevRegion, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(meridian())
        .args(args)
        .env("MERIDIAN_ENDPOINT", endpoint)
        .env("MERIDIAN_ADMIN_TOKEN", &region.admin_token)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The next event of `kind` (of `conversation`, unless empty) on a stream, within 30 s.
async fn next_of(
    stream: &mut meridian_client::Subscription,
    kind: &str,
    conversation: &str,
) -> meridian_client::api::SubscribeEvent {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next()).await.expect("in time").unwrap();
        if event.r#type == kind && (conversation.is_empty() || event.conversation_id == conversation) {
            return event;
        }
    }
}

fn reason(e: &ClientError) -> String {
    e.reason().unwrap_or_default().to_owned()
}

/// The conversations of a list, as (peer, last_seq, unread, home region).
fn rows(list: &ListConversationsResponse) -> BTreeMap<String, (u64, u64, String)> {
    list.conversations.iter().map(|c| (c.peer.clone(), (c.last_seq, c.unread, c.home_region.clone()))).collect()
}

/// Waits until `user`'s list, read at `endpoint`, is `expected`.
async fn wait_list(
    region: &DevRegion,
    endpoint: &str,
    user: &str,
    expected: &[(&str, u64, u64, &str)],
) -> ListConversationsResponse {
    let expected: BTreeMap<String, (u64, u64, String)> =
        expected.iter().map(|(p, last, unread, home)| (p.to_string(), (*last, *unread, home.to_string()))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = client(region, endpoint, Some(user)).conversations_all(ReadConsistency::Linearizable).await;
        if let Ok(list) = &seen {
            if rows(list) == expected && list.conversations.len() == expected.len() {
                return seen.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "{user}'s list at {endpoint}: expected {expected:?}, got {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests forwarded between regions so far, summed over the nodes (`/metrics`; a dev
/// node serves HTTP on its client port + 1000).
fn forwarded(endpoints: &[&String]) -> u64 {
    use std::io::{Read as _, Write as _};
    endpoints
        .iter()
        .map(|e| {
            let mut addr: std::net::SocketAddr = e.parse().unwrap();
            addr.set_port(addr.port() + 1000);
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            stream.read_to_string(&mut body).unwrap();
            body.lines()
                .find_map(|l| l.strip_prefix("meridian_requests_forwarded_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no forwarding counter in {addr}'s metrics"))
        })
        .sum()
}

fn kill(pid: u32) {
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
}

/// Starts one node of the dev deployment again from its config (the dev region runs with
/// `--no-restart`), killed on drop.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restart(region: &DevRegion, name: &str) -> Restarted {
    let log = std::fs::File::create(region.dir.path().join(format!("{name}.restarted.log"))).unwrap();
    let child = Command::new(meridian())
        .args(["node", "--config"])
        .arg(region.dir.path().join(format!("{name}.toml")))
        .current_dir(region.dir.path())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Restarted(child)
}

async fn history(region: &DevRegion, endpoint: &str, user: &str, peer: &str) -> Vec<(u64, String, String)> {
    let messages = client(region, endpoint, Some(user)).history_all(peer, ReadConsistency::Linearizable).await.unwrap();
    messages.iter().map(|m| (m.seq, m.sender.clone(), meridian_client::message_text(m))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_regions_keep_data_home_and_reach_each_other() {
    let dev = DevRegion::start_with(meridian(), &["--regions", "sg,kr,de,in", "--strict", "de,in", "--no-restart"]);
    let (sg, kr, de, inn) = (
        dev.var("MERIDIAN_ENDPOINT_SG"),
        dev.var("MERIDIAN_ENDPOINT_KR"),
        dev.var("MERIDIAN_ENDPOINT_DE"),
        dev.var("MERIDIAN_ENDPOINT_IN"),
    );

    // `meridian dev` announces the regions once every node has its links to the other regions
    // up, as well as a leader for every shard: a create asks the id's directory region, and
    // the SDK returns REGION_UNAVAILABLE at once, without retrying, while a link is down.
    for endpoint in [&sg, &kr, &de, &inn] {
        let status = client(&dev, endpoint, None).cluster_status(false).await.unwrap();
        let links: Vec<(&str, &str)> =
            status.region_links.iter().map(|l| (l.region.as_str(), l.state.as_str())).collect();
        assert_eq!(links.len(), 3, "{endpoint}: {links:?}");
        assert!(links.iter().all(|(_, state)| *state == "up"), "{endpoint}: {links:?}");
    }

    // Users, each created through its own region's endpoint; zed in kr through sg's.
    for (endpoint, user) in [(&sg, "amy"), (&kr, "kim"), (&de, "hans"), (&inn, "ravi"), (&sg, "bo")] {
        let created = client(&dev, endpoint, None).create_user(user, None).await.unwrap();
        assert!(created.created, "{user}");
    }
    let zed = client(&dev, &sg, None).create_user("zed", Some("kr")).await.unwrap();
    assert_eq!((zed.home_region.as_str(), zed.created), ("kr", true));
    // Ids are unique across regions: amy exists in sg.
    let refused = client(&dev, &de, None).create_user("amy", None).await.unwrap_err();
    assert_eq!(reason(&refused), "USER_EXISTS", "{refused}");
    let again = client(&dev, &kr, None).create_user("amy", Some("sg")).await.unwrap();
    assert_eq!((again.home_region.as_str(), again.created), ("sg", false), "a repeat in the home region is a no-op");
    // Racing creates of one id in two regions: exactly one region gets it.
    for i in 0..4 {
        let id = format!("race{i}");
        let (in_sg, in_de) = (client(&dev, &sg, None), client(&dev, &de, None));
        let (a, b) = tokio::join!(in_sg.create_user(&id, None), in_de.create_user(&id, None));
        let outcomes = [a.map(|r| r.home_region), b.map(|r| r.home_region)];
        let created: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(created.len(), 1, "{id}: {outcomes:?}");
        let loser = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
        assert_eq!(reason(loser), "USER_EXISTS", "{id}: {loser}");
    }

    // amy (sg) and kim (kr) chat through the `in` endpoint: forwarded to the conversation's
    // home (both regions open: the first id's, sg).
    for i in 1..=3 {
        let sent = client(&dev, &inn, Some("amy")).send_text("kim", &format!("amy {i}"), None).await.unwrap();
        assert_eq!(sent.seq, i);
        assert!(sent.message_id.starts_with("sg."), "{}", sent.message_id);
    }
    client(&dev, &inn, Some("kim")).send_text("amy", "kim 4", None).await.unwrap();
    wait_list(&dev, &sg, "amy", &[("kim", 4, 1, "sg")]).await;
    wait_list(&dev, &kr, "kim", &[("amy", 4, 0, "sg")]).await;
    let expected: Vec<(u64, String, String)> = [(1, "amy"), (2, "amy"), (3, "amy"), (4, "kim")]
        .iter()
        .map(|(seq, who)| (*seq, who.to_string(), format!("{who} {seq}")))
        .collect();
    assert_eq!(history(&dev, &sg, "amy", "kim").await, expected);
    assert_eq!(history(&dev, &kr, "kim", "amy").await, expected);
    let read = client(&dev, &kr, Some("amy")).mark_read("kim", None).await.unwrap();
    assert_eq!((read.read_seq, read.unread), (4, 0));

    // Residency: sg↔de lives in de; de↔in (both strict) is refused and stores nothing.
    let sent = client(&dev, &sg, Some("amy")).send_text("hans", "hallo", None).await.unwrap();
    assert!(sent.message_id.starts_with("de."), "{}", sent.message_id);
    // One request id sent through two regions at once takes effect once.
    let (via_sg, via_de) = (client(&dev, &sg, Some("amy")), client(&dev, &de, Some("amy")));
    let (x, y) = tokio::join!(
        via_sg.send_text("hans", "twice", Some("same-request".into())),
        via_de.send_text("hans", "twice", Some("same-request".into()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.seq, &x.message_id), (y.seq, &y.message_id));
    assert_eq!((x.seq, x.duplicate || y.duplicate, x.duplicate && y.duplicate), (2, true, false));
    for endpoint in [&sg, &de, &inn] {
        let refused = client(&dev, endpoint, Some("hans")).send_text("ravi", "namaste", None).await.unwrap_err();
        assert_eq!(reason(&refused), "RESIDENCY_VIOLATION", "{refused}");
        assert!(refused.message().contains("strict"), "{refused}");
    }
    wait_list(&dev, &de, "hans", &[("amy", 2, 2, "de")]).await;
    wait_list(&dev, &sg, "amy", &[("kim", 4, 0, "sg"), ("hans", 2, 0, "de")]).await;
    wait_list(&dev, &inn, "ravi", &[]).await;
    // A block crosses regions: bo (sg) blocks hans (de); their conversation lives in de, and
    // the block reaches it through the outbox lane of de: moments later hans is refused.
    client(&dev, &sg, Some("bo")).set_blocked("hans", true).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client(&dev, &de, Some("hans")).send_text("bo", "blocked?", None).await {
            Err(e) if reason(&e) == "BLOCKED" => break,
            Err(e) => panic!("{e}"),
            Ok(_) => assert!(Instant::now() < deadline, "hans is still accepted 20 s after bo blocked him"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client(&dev, &de, Some("bo")).list_blocked().await.unwrap().users, vec!["hans"], "read in bo's region");
    client(&dev, &de, Some("bo")).set_blocked("hans", false).await.unwrap();
    // A profile lives in its user's region and is read through any endpoint.
    client(&dev, &sg, Some("hans")).set_profile(&[("location", "Berlin")]).await.unwrap();
    let profile = client(&dev, &kr, Some("amy")).get_profile("hans", &["location"]).await.unwrap();
    assert_eq!(profile.fields.get("location").map(String::as_str), Some("Berlin"));

    // Groups span regions: gia (sg) creates one through kr's endpoint (it lives in sg, her
    // home); kai and kit (kr) are members; hana (de, strict) may not join a group abroad.
    for (endpoint, user) in [(&sg, "gia"), (&kr, "kai"), (&kr, "kit"), (&de, "hana")] {
        client(&dev, endpoint, None).create_user(user, None).await.unwrap();
    }
    let refused = client(&dev, &kr, Some("gia")).create_group(Some("world"), "work", "", &["kai", "hana"]).await;
    assert_eq!(refused.map_err(|e| reason(&e)).err().as_deref(), Some("RESIDENCY_VIOLATION"));
    let made = client(&dev, &kr, Some("gia")).create_group(Some("world"), "work", "", &["kai", "kit"]).await.unwrap();
    assert_eq!((made.member_count, made.created), (3, true));
    let taken = client(&dev, &de, Some("hana")).create_group(Some("world"), "work", "", &[]).await.unwrap_err();
    assert_eq!(reason(&taken), "GROUP_EXISTS", "{taken}");
    for i in 1..=3 {
        let sent = client(&dev, &kr, Some("kai")).send_group_text("world", &format!("kai {i}"), None).await.unwrap();
        assert_eq!(sent.seq, i);
        assert!(sent.message_id.starts_with("sg."), "{}", sent.message_id);
    }
    client(&dev, &sg, Some("gia")).send_group_text("world", "gia 4", None).await.unwrap();
    let stream = meridian_client::Stream::Group("world".into());
    let seen = client(&dev, &de, Some("kai")).stream_history_all(&stream, ReadConsistency::Linearizable).await.unwrap();
    let seen: Vec<(u64, String)> = seen.iter().map(|m| (m.seq, meridian_client::message_text(m))).collect();
    assert_eq!(seen, [(1, "kai 1"), (2, "kai 2"), (3, "kai 3"), (4, "gia 4")].map(|(s, t)| (s, t.to_owned())));
    // kai's list (in kr) shows the group's row, read in sg: 4 messages, 1 unread (gia's).
    let group_row = |list: &ListConversationsResponse| {
        list.conversations
            .iter()
            .find(|c| c.group_id == "world")
            .map(|c| (c.last_seq, c.unread, c.home_region.clone(), c.home_unavailable))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = client(&dev, &kr, Some("kai")).conversations_all(ReadConsistency::Linearizable).await.unwrap();
        if group_row(&list) == Some((4, 1, "sg".to_owned(), false)) {
            break;
        }
        assert!(Instant::now() < deadline, "kai's row of world: {:?}", group_row(&list));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = client(&dev, &kr, Some("kai")).list_joined_groups().await.unwrap().groups;
    assert_eq!(
        joined.iter().map(|g| (g.group_id.as_str(), g.home_region.as_str())).collect::<Vec<_>>(),
        [("world", "sg")]
    );
    let read = client(&dev, &kr, Some("kai")).mark_group_read("world", None).await.unwrap();
    assert_eq!((read.read_seq, read.unread), (4, 0));
    // Live across regions: kai's stream at kr watches sg (Link/Watch), which homes the group:
    // a new group message arrives live, and so do both ways of a new one-to-one conversation
    // with gia, wherever it is homed.
    let mut kai_stream = client(&dev, &kr, Some("kai")).subscribe(None).await.unwrap();
    let hint = next_of(&mut kai_stream, "fetch", "grp:world").await;
    assert_eq!((hint.fetch_from, hint.fetch_to, hint.home_region.as_str()), (1, 4, "sg"), "{hint:?}");
    next_of(&mut kai_stream, "caught_up", "").await;
    let live = client(&dev, &sg, Some("gia")).send_group_text("world", "gia live", None).await.unwrap();
    let event = next_of(&mut kai_stream, "message", "grp:world").await;
    assert_eq!(
        (event.seq, event.message.map(|m| meridian_client::message_text(&m))),
        (live.seq, Some("gia live".into()))
    );
    let first = client(&dev, &sg, Some("gia")).send_text("kai", "hello kai", None).await.unwrap();
    let event = next_of(&mut kai_stream, "message", &first.conversation_id).await;
    assert_eq!((event.seq, event.peer.as_str()), (1, "gia"), "{event:?}");
    let reply = client(&dev, &kr, Some("kai")).send_text("gia", "hello gia", None).await.unwrap();
    let event = next_of(&mut kai_stream, "message", &first.conversation_id).await;
    assert_eq!(event.seq, reply.seq);
    drop(kai_stream);
    // kit befriends gia across regions, then kit's account is deleted (asked in sg, done in
    // kr): gia's list in sg and the group in sg drop kit through the outbox lanes.
    client(&dev, &kr, Some("kit")).add_friend("gia", "", "").await.unwrap();
    let gia_friends = || async {
        let friends = client(&dev, &sg, Some("gia")).list_friends().await.unwrap().friends;
        friends.into_iter().map(|f| f.user).collect::<Vec<_>>()
    };
    assert_eq!(gia_friends().await, ["kit"]);
    assert!(client(&dev, &sg, None).delete_user("kit").await.unwrap().deleted);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = client(&dev, &sg, Some("gia")).group_all_members("world").await.unwrap().members;
        let members: Vec<String> = members.into_iter().map(|m| m.user).collect();
        if members == ["gia", "kai"] && gia_friends().await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "world still lists {members:?}, gia's friends {:?}", gia_friends().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = client(&dev, &sg, Some("kit")).send_group_text("world", "back?", None).await.unwrap_err();
    assert_eq!(reason(&gone), "NOT_GROUP_MEMBER", "{gone}");

    // kr goes down. What lives there fails at once with REGION_UNAVAILABLE; the rest works.
    kill(dev.pid_of("kr-node-1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let failures = [
        client(&dev, &sg, Some("kim")).conversations(50, "", ReadConsistency::Linearizable).await.map(|_| ()),
        client(&dev, &sg, Some("zed")).send_text("kim", "kr to kr", None).await.map(|_| ()),
        client(&dev, &de, None).create_user("newkr", Some("kr")).await.map(|_| ()),
    ];
    for failure in failures {
        let e = failure.unwrap_err();
        assert_eq!(reason(&e), "REGION_UNAVAILABLE", "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    client(&dev, &sg, Some("amy")).send_text("hans", "still here", None).await.unwrap();
    client(&dev, &de, Some("hans")).send_text("amy", "ja", None).await.unwrap();
    // A conversation homed in sg with a kr user works; its join for the kr side waits.
    client(&dev, &sg, Some("bo")).send_text("kim", "while kr is down", None).await.unwrap();
    client(&dev, &sg, Some("amy")).send_text("kim", "amy 5", None).await.unwrap();
    let list = client(&dev, &sg, Some("amy")).conversations_all(ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(rows(&list)["hans"], (4, 1, "de".to_owned()));

    // kr comes back: everything acknowledged is there, the pending join applied once.
    let _kr = restart(&dev, "kr-node-1");
    wait_list(&dev, &kr, "kim", &[("amy", 5, 1, "sg"), ("bo", 1, 1, "sg")]).await;
    wait_list(&dev, &kr, "zed", &[]).await;
    assert_eq!(history(&dev, &kr, "kim", "amy").await.len(), 5);

    // An SDK given every region's endpoint learns where a conversation lives from the first
    // answer and calls that region directly from then on: no more forwarding.
    let mut config = ClientConfig::new([&sg, &kr, &de, &inn], dev.admin_token.clone()).with_act_as("amy");
    config.retry_budget = Duration::from_secs(3);
    let learner = Client::with_config(config).unwrap();
    learner.send_text("hans", "learning", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = forwarded(&[&sg, &kr, &de, &inn]);
    for i in 0..5 {
        learner.send_text("hans", &format!("direct {i}"), None).await.unwrap();
    }
    assert_eq!(learner.history_all("hans", ReadConsistency::Linearizable).await.unwrap().len(), 10);
    learner.conversations_all(ReadConsistency::Linearizable).await.unwrap();
    learner.conversations_all(ReadConsistency::Linearizable).await.unwrap();
    let after = forwarded(&[&sg, &kr, &de, &inn]);
    assert_eq!(after, before, "requests were forwarded after the home regions were learned");

    // The audit finds nothing out of place.
    let (ok, out, err) = cli(&dev, &sg, &["audit", "residency"]);
    assert!(ok, "audit failed: {out}\n{err}");
    for region in ["sg", "kr", "de", "in"] {
        assert!(out.contains(&format!("region {region}: 1 node(s)")), "{out}");
    }
    assert!(out.lines().all(|l| l.ends_with(" 0 violations")), "{out}");
    let scanned: Vec<u64> =
        out.lines().filter_map(|l| l.split(", ").nth(1)?.strip_suffix(" records scanned")?.parse().ok()).collect();
    assert!(scanned.len() == 4 && scanned.iter().all(|&n| n > 0), "{out}");

    // A message of the amy/hans conversation (homed in strict de) planted in sg's store:
    // the audit finds it.
    kill(dev.pid_of("sg-node-1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let db = Db::open(&dev.dir.path().join("sg-node-1").join("db")).unwrap();
        let conversation = ConversationId::c2c(&UserId::parse("amy").unwrap(), &UserId::parse("hans").unwrap());
        let record = pb::MessageRecord {
            version: 1,
            message_id: MessageId::from_stored("de.1.4.6.0".into()).to_string(),
            seq: 1,
            sender: "amy".into(),
            time_ms: 1,
            elements: vec![],
            ..Default::default()
        };
        let key = keys::message(meridian_domain::shard::shard_for(conversation.as_str(), 8), &conversation, Seq(1));
        db.put_unchecked(keys::CF_EVENTS, &key, &record.encode_to_vec()).unwrap();
    }
    let _sg = restart(&dev, "sg-node-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ok, out, err) = loop {
        let answer = cli(&dev, &de, &["audit", "residency"]);
        if !answer.2.contains("not audited") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!ok, "the audit must fail: {out}\n{err}");
    assert!(err.contains("region sg: 1 node(s)") && err.contains("1 violations"), "{err}");
    assert!(err.contains("message of hans (home de) in sg: events"), "{err}");
    drop(dev);
}
