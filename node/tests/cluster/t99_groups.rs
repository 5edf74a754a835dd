//! Groups on a real 3-node region: every type through its join rules and its cap (the 201st
//! member of a Work group is refused), mutes that expire, a live room without member state,
//! lists with unread counts, kicks, leaves and dismissal; and group sends from 20 members
//! with joins and kicks interleaved while the group shard's leader is killed: every
//! acknowledged message once, gapless, identical on every replica, unread equal to a
//! recount, projections equal to a replay.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_client::api::ReadConsistency;
use meridian_client::{Client, ClientError, Stream};

use common::{shard_of, user_ids, Cluster, Tuning};

fn reason(e: &ClientError) -> &str {
    e.reason().unwrap_or_default()
}

async fn members(client: &Client, group: &str) -> Vec<String> {
    client.group_all_members(group).await.unwrap().members.into_iter().map(|m| m.user).collect()
}

/// The group rows of `user`'s list: group id → (last seq, unread).
async fn group_rows(client: &Client) -> BTreeMap<String, (u64, u64)> {
    let list = client.conversations_all(ReadConsistency::Linearizable).await.unwrap();
    list.conversations
        .into_iter()
        .filter(|c| !c.group_id.is_empty())
        .map(|c| (c.group_id, (c.last_seq, c.unread)))
        .collect()
}

/// Waits (bounded) until `user`'s list shows exactly `expected` groups.
async fn wait_group_rows(cluster: &Cluster, user: &str, expected: &[(&str, u64, u64)]) {
    let expected: BTreeMap<String, (u64, u64)> =
        expected.iter().map(|(g, last, unread)| (g.to_string(), (*last, *unread))).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = group_rows(&cluster.user(user)).await;
        if seen == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{user}'s groups: expected {expected:?}, got {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_group_type_follows_its_join_rules_and_limits() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let mut users = user_ids("w", 201);
    users.extend(["own", "zed", "pat"].map(String::from));
    cluster.create_users(&users).await;
    let own = cluster.user("own");

    cluster.phase("a work group of 200 (the owner and 199), then a 201st");
    let initial: Vec<&str> = users[..199].iter().map(String::as_str).collect();
    let created = own.create_group(Some("team"), "work", "the team", &initial).await.unwrap();
    assert_eq!((created.member_count, created.created, created.conversation_id.as_str()), (200, true, "grp:team"));
    let refused = own.add_group_members("team", &[users[199].as_str()]).await.unwrap_err();
    assert_eq!(reason(&refused), "GROUP_MEMBER_LIMIT", "{refused}");
    let info = own.group_all_members("team").await.unwrap();
    assert_eq!((info.group.as_ref().unwrap().member_count, info.members.len()), (200, 200), "nothing changed");
    // A repeat of the create by its owner changes nothing; another owner may not take the id.
    assert!(!own.create_group(Some("team"), "work", "", &[]).await.unwrap().created);
    let taken = cluster.user("zed").create_group(Some("team"), "meeting", "", &[]).await.unwrap_err();
    assert_eq!(reason(&taken), "GROUP_EXISTS");
    // A work group is joined by invitation only.
    let not_invited = cluster.user("zed").add_group_members("team", &["zed"]).await.unwrap_err();
    assert_eq!(reason(&not_invited), "PERMISSION_DENIED");

    cluster.phase("join rules: public by the owner only, meeting and community free to join");
    own.create_group(Some("pub"), "public", "", &[]).await.unwrap();
    let applied = cluster.user("zed").add_group_members("pub", &["zed"]).await.unwrap_err();
    assert_eq!(reason(&applied), "PERMISSION_DENIED", "{applied}");
    assert_eq!(own.add_group_members("pub", &["zed"]).await.unwrap().member_count, 2);
    for kind in ["meeting", "community"] {
        own.create_group(Some(kind), kind, "", &[]).await.unwrap();
        let joined = cluster.user("zed").add_group_members(kind, &["zed"]).await.unwrap();
        assert_eq!((joined.member_count, joined.changed), (2, true), "{kind}");
        // A plain member may not add others to it.
        let refused = cluster.user("zed").add_group_members(kind, &["pat"]).await.unwrap_err();
        assert_eq!(reason(&refused), "PERMISSION_DENIED", "{kind}");
    }
    let bad_type = own.create_group(Some("x"), "club", "", &[]).await.unwrap_err();
    assert_eq!(reason(&bad_type), "GROUP_TYPE_INVALID");

    cluster.phase("sends, unread counts in the members' lists, a mute that expires");
    let w1 = cluster.user("w001");
    for i in 1..=3 {
        let sent = w1.send_group_text("team", &format!("hello {i}"), Some(format!("w001-{i}"))).await.unwrap();
        assert_eq!((sent.seq, sent.conversation_id.as_str()), (i, "grp:team"));
    }
    let again = w1.send_group_text("team", "hello 1", Some("w001-1".into())).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    // Read receipts (MSG-06) for a group of at most 200: the sender has read, the rest not.
    let receipts = own.get_read_receipts("team", 1).await.unwrap();
    assert_eq!((receipts.read, receipts.unread.len()), (vec!["w001".to_owned()], 199));
    let outsider = cluster.user("zed").send_group_text("team", "let me in", None).await.unwrap_err();
    assert_eq!(reason(&outsider), "NOT_GROUP_MEMBER");
    wait_group_rows(&cluster, "w002", &[("team", 3, 3)]).await;
    wait_group_rows(&cluster, "w001", &[("team", 3, 0)]).await;
    let read = cluster.user("w002").mark_group_read("team", Some(2)).await.unwrap();
    assert_eq!((read.read_seq, read.unread), (2, 1));
    wait_group_rows(&cluster, "w002", &[("team", 3, 1)]).await;
    let history = w1.stream_history_all(&Stream::Group("team".into()), ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let not_yours = cluster
        .user("zed")
        .stream_history_all(&Stream::Group("team".into()), ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(reason(&not_yours), "NOT_GROUP_MEMBER");

    own.mute_group_member("team", "w002", 2).await.unwrap();
    let muted_at = Instant::now();
    let muted = cluster.user("w002").send_group_text("team", "can I speak?", None).await.unwrap_err();
    assert_eq!(reason(&muted), "MEMBER_MUTED", "{muted}");
    let by_member = cluster.user("w003").mute_group_member("team", "w004", 60).await.unwrap_err();
    assert_eq!(reason(&by_member), "PERMISSION_DENIED");
    tokio::time::sleep(Duration::from_millis(2_300).saturating_sub(muted_at.elapsed())).await;
    assert_eq!(cluster.user("w002").send_group_text("team", "now I can", None).await.unwrap().seq, 4);

    cluster.phase("a live room: anyone joins and sends, nothing is kept per member");
    own.create_group(Some("live"), "avchatroom", "stream", &["w005"]).await.unwrap();
    let joined = cluster.user("pat").add_group_members("live", &["pat"]).await.unwrap();
    assert_eq!((joined.member_count, joined.changed), (0, false));
    assert_eq!(cluster.user("pat").send_group_text("live", "👏", None).await.unwrap().seq, 1);
    assert!(members(&own, "live").await.is_empty());
    wait_group_rows(&cluster, "pat", &[]).await;

    cluster.phase("admins: the owner appoints one, who adds and kicks plain members; a group is handed over");
    let outsider_sets = cluster.user("w005").set_group_member_role("pub", "zed", "admin").await.unwrap_err();
    assert_eq!(reason(&outsider_sets), "PERMISSION_DENIED", "{outsider_sets}");
    let bad_role = own.set_group_member_role("pub", "zed", "owner").await.unwrap_err();
    assert_eq!(reason(&bad_role), "GROUP_ROLE_INVALID");
    assert!(own.set_group_member_role("pub", "zed", "admin").await.unwrap().changed);
    assert_eq!(cluster.user("zed").add_group_members("pub", &["pat"]).await.unwrap().member_count, 3);
    assert_eq!(cluster.user("zed").remove_group_member("pub", Some("pat")).await.unwrap().member_count, 2);
    let roles: BTreeMap<String, String> =
        own.group_all_members("pub").await.unwrap().members.into_iter().map(|m| (m.user, m.role)).collect();
    assert_eq!(roles["zed"], "admin");
    assert!(own.transfer_group("meeting", "zed").await.unwrap().changed);
    let info = own.group_all_members("meeting").await.unwrap();
    assert_eq!(info.group.unwrap().owner, "zed");
    assert!(own.remove_group_member("meeting", None).await.is_ok(), "the former owner may leave");

    cluster.phase("kick, leave, dismiss");
    assert_eq!(own.remove_group_member("team", Some("w003")).await.unwrap().member_count, 199);
    assert_eq!(cluster.user("w004").remove_group_member("team", None).await.unwrap().member_count, 198);
    let kicked = cluster.user("w003").send_group_text("team", "hey", None).await.unwrap_err();
    assert_eq!(reason(&kicked), "NOT_GROUP_MEMBER");
    wait_group_rows(&cluster, "w003", &[]).await;
    let owner_leaves = own.remove_group_member("team", None).await.unwrap_err();
    assert_eq!(reason(&owner_leaves), "PERMISSION_DENIED");
    let by_admin_only = cluster.user("w005").dismiss_group("team").await.unwrap_err();
    assert_eq!(reason(&by_admin_only), "PERMISSION_DENIED");
    own.dismiss_group("pub").await.unwrap();
    let gone = cluster.user("zed").send_group_text("pub", "anyone?", None).await.unwrap_err();
    assert_eq!(reason(&gone), "GROUP_DISMISSED");

    cluster.phase("read receipts only for groups of at most 200");
    let all: Vec<&str> = users.iter().map(String::as_str).collect();
    own.create_group(Some("big"), "meeting", "", &all).await.unwrap();
    own.send_group_text("big", "hi all", None).await.unwrap();
    let too_big = own.get_read_receipts("big", 1).await.unwrap_err();
    assert_eq!(reason(&too_big), "READ_RECEIPTS_UNAVAILABLE", "{too_big}");

    cluster.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_sends_survive_a_leader_kill_with_joins_and_kicks_interleaved() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let senders = user_ids("s", 20);
    let joiners = user_ids("j", 10);
    let mut all = senders.clone();
    all.extend(joiners.iter().cloned());
    all.push("boss".into());
    cluster.create_users(&all).await;
    let boss = cluster.user("boss");
    let sender_refs: Vec<&str> = senders.iter().map(String::as_str).collect();
    boss.create_group(Some("ops"), "work", "ops", &sender_refs).await.unwrap();
    let group_shard = shard_of("grp:ops", 8);

    cluster.phase("20 members send 8 messages each; joins and kicks interleaved; the leader is killed");
    let sends: Vec<_> = senders
        .iter()
        .map(|s| {
            let client = cluster.user(s);
            let s = s.clone();
            async move {
                let mut acks = vec![];
                for i in 0..8 {
                    let rid = format!("{s}-{i}");
                    match client.send_group_text("ops", &rid, Some(rid.clone())).await {
                        Ok(sent) => acks.push((rid, sent.seq)),
                        Err(e) => panic!("{s}'s send {i} failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                acks
            }
        })
        .collect();
    let churn = async {
        for (n, j) in joiners.iter().enumerate() {
            boss.add_group_members("ops", &[j.as_str()]).await.unwrap();
            if n % 2 == 1 {
                boss.remove_group_member("ops", Some(j)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let leader = cluster.shard_leader(group_shard).await;
    let kill = async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        cluster.kill9(leader);
    };
    let (acks, (), ()) = tokio::join!(futures::future::join_all(sends), churn, kill);
    let acks: Vec<(String, u64)> = acks.into_iter().flatten().collect();
    // More sends after the kill, from every sender, through the survivors.
    let mut late = vec![];
    for s in &senders {
        let rid = format!("{s}-late");
        let sent = cluster.user(s).send_group_text("ops", &rid, Some(rid.clone())).await.unwrap();
        late.push((rid, sent.seq));
    }
    cluster.restart(leader).await;
    cluster.wait_converged().await;

    cluster.phase("every acknowledged message once, gapless, identical on every replica");
    let acked: BTreeMap<String, u64> = acks.into_iter().chain(late).collect();
    assert_eq!(acked.len(), 20 * 9);
    let mut replicas = vec![];
    for i in 0..cluster.len() {
        let history = cluster
            .user_on(i, "boss")
            .stream_history_all(&Stream::Group("ops".into()), ReadConsistency::Local)
            .await
            .unwrap();
        let rows: Vec<(u64, String, String, bool)> =
            history.iter().map(|m| (m.seq, m.sender.clone(), meridian_client::message_text(m), is_tip(m))).collect();
        replicas.push(rows);
    }
    for (i, rows) in replicas.iter().enumerate() {
        assert_eq!(rows, &replicas[0], "node {} differs from node 1", i + 1);
    }
    let rows = &replicas[0];
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=rows.len() as u64).collect::<Vec<_>>(), "gapless");
    // Besides the sends, the stream holds a notice per join and per kick.
    let sent: Vec<_> = rows.iter().filter(|r| !r.3).collect();
    assert_eq!(sent.len(), acked.len(), "every message is an acknowledged one, once");
    for (seq, _, text, _) in sent {
        assert_eq!(acked.get(text), Some(seq), "{text} at seq {seq}");
    }
    assert_eq!(rows.len() - acked.len(), joiners.len() + joiners.len() / 2, "a notice per join and per kick");

    cluster.phase("members and unread counts equal a recount");
    let listed = members(&boss, "ops").await;
    let mut expected: Vec<String> = senders.clone();
    expected.push("boss".into());
    expected.extend(joiners.iter().enumerate().filter(|(n, _)| n % 2 == 0).map(|(_, j)| j.clone()));
    expected.sort();
    assert_eq!(listed, expected);
    let info = boss.group_all_members("ops").await.unwrap();
    let last = rows.len() as u64;
    for m in &info.members {
        let recount = rows.iter().filter(|r| r.0 > m.read_seq).count() as u64;
        let client = cluster.user(&m.user);
        let seen = group_rows(&client).await;
        assert_eq!(seen.get("ops"), Some(&(last, recount)), "{}", m.user);
    }
    cluster.verify_projections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hidden_members_mentions_recalls_and_history_for_newcomers() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let users: Vec<String> = ["own", "ann", "bob", "spy", "new"].map(String::from).to_vec();
    cluster.create_users(&users).await;
    let own = cluster.user("own");
    let request = meridian_client::api::CreateGroupRequest {
        group_id: "desk".into(),
        r#type: "work".into(),
        name: "service desk".into(),
        members: vec!["ann".into(), "bob".into()],
        hide_history_from_new_members: true,
    };
    own.create_group_with(request).await.unwrap();

    cluster.phase("a hidden member receives messages and is listed to the owner only");
    let refused = cluster.user("ann").add_hidden_group_members("desk", &["spy"]).await.unwrap_err();
    assert_eq!(reason(&refused), "PERMISSION_DENIED");
    own.add_hidden_group_members("desk", &["spy"]).await.unwrap();
    cluster.user("ann").send_group_text("desk", "a customer asks", None).await.unwrap();
    let seen_by_spy = cluster
        .user("spy")
        .stream_history_all(&Stream::Group("desk".into()), ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(seen_by_spy.len(), 1);
    wait_group_rows(&cluster, "spy", &[("desk", 1, 1)]).await;
    assert_eq!(members(&cluster.user("bob"), "desk").await, vec!["ann", "bob", "own"], "hidden from members");
    assert_eq!(members(&own, "desk").await, vec!["ann", "bob", "own", "spy"], "listed to the owner");

    cluster.phase("mentions flag the mentioned member's row until read; @all is the owner's");
    cluster.user("ann").send_group_text_mentioning("desk", "bob, look", &["bob"], false).await.unwrap();
    let rows = |user: &str| {
        let client = cluster.user(user);
        async move {
            let list = client.conversations_all(ReadConsistency::Linearizable).await.unwrap();
            list.conversations.into_iter().find(|c| c.group_id == "desk").map(|c| c.mentioned)
        }
    };
    assert_eq!(rows("bob").await, Some(true));
    assert_eq!(rows("own").await, Some(false));
    cluster.user("bob").mark_group_read("desk", None).await.unwrap();
    assert_eq!(rows("bob").await, Some(false));
    let not_all = cluster.user("ann").send_group_text_mentioning("desk", "everyone!", &[], true).await.unwrap_err();
    assert_eq!(reason(&not_all), "PERMISSION_DENIED");
    own.send_group_text_mentioning("desk", "everyone: standup", &[], true).await.unwrap();
    assert_eq!(rows("bob").await, Some(true));

    cluster.phase("recall: the sender within the window, the owner any time, no one else");
    let by_other = cluster.user("bob").recall_group_message("desk", 1).await.unwrap_err();
    assert_eq!(reason(&by_other), "NOT_MESSAGE_SENDER");
    own.recall_group_message("desk", 1).await.unwrap();
    let history = own.stream_history_all(&Stream::Group("desk".into()), ReadConsistency::Linearizable).await.unwrap();
    assert!(history[0].recalled && history[0].elements.is_empty(), "{:?}", history[0]);

    cluster.phase("a newcomer reads from their joining on");
    own.add_group_members("desk", &["new"]).await.unwrap();
    cluster.user("bob").send_group_text("desk", "welcome", None).await.unwrap();
    let newcomer = cluster
        .user("new")
        .stream_history_all(&Stream::Group("desk".into()), ReadConsistency::Linearizable)
        .await
        .unwrap();
    // From the notice of their joining on.
    assert_eq!(newcomer.iter().map(|m| (m.seq, is_tip(m))).collect::<Vec<_>>(), vec![(4, true), (5, false)]);
    cluster.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_stops_the_blocked_user_s_sends_until_it_is_lifted() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;
    let (alice, bob) = (cluster.user("alice"), cluster.user("bob"));
    bob.send_text("alice", "hi", Some("b-1".into())).await.unwrap();
    assert!(alice.set_blocked("bob", true).await.unwrap().blocked);
    assert_eq!(alice.list_blocked().await.unwrap().users, vec!["bob"]);
    // The block reaches the conversation through the outbox: moments later bob is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bob.send_text("alice", "hello?", None).await {
            Err(e) if reason(&e) == "BLOCKED" => break,
            other => assert!(Instant::now() < deadline, "still accepted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = bob.send_text("alice", "hi", Some("b-1".into())).await.unwrap();
    assert!(again.duplicate, "a retry of a send from before the block keeps its result");
    alice.send_text("bob", "I can still write to you", None).await.unwrap();
    let self_block = alice.set_blocked("alice", true).await.unwrap_err();
    assert_eq!(reason(&self_block), "PEER_IS_SELF");
    alice.set_blocked("bob", false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bob.send_text("alice", "back?", None).await.is_err() {
        assert!(Instant::now() < deadline, "bob is still refused after the unblock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alice.list_blocked().await.unwrap().users.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profiles_are_set_in_part_and_read_in_part() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    cluster.admin().create_user("ann", None).await.unwrap();
    cluster.admin().create_user("bob", None).await.unwrap();
    let ann = cluster.user("ann");
    let set = ann.set_profile(&[("signature", "hello"), ("gender", "female"), ("custom.team", "blue")]).await.unwrap();
    assert_eq!(set.fields.len(), 3);
    ann.set_profile(&[("signature", "")]).await.unwrap();
    let all = cluster.user("bob").get_profile("ann", &[]).await.unwrap();
    let names: Vec<&String> = all.fields.keys().collect();
    assert_eq!(names, vec!["custom.team", "gender"]);
    let some = cluster.user("bob").get_profile("ann", &["gender"]).await.unwrap();
    assert_eq!(some.fields.into_iter().collect::<Vec<_>>(), vec![("gender".to_owned(), "female".to_owned())]);
    for bad in [("gender", "other"), ("birthday", "1990-01-01"), ("shoe_size", "42")] {
        let e = ann.set_profile(&[bad]).await.unwrap_err();
        assert_eq!(reason(&e), "PROFILE_FIELD_INVALID", "{bad:?}");
    }
    let nobody = cluster.user("bob").get_profile("zed", &[]).await.unwrap_err();
    assert_eq!(reason(&nobody), "UNKNOWN_USER");
}

/// Polls `f` until it returns true (bounded): effects reach the other side through the outbox.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn friend_names(client: &Client) -> Vec<String> {
    client.list_friends().await.unwrap().friends.into_iter().map(|f| f.user).collect()
}

async fn relation(client: &Client, other: &str) -> String {
    client.check_friends(&[other]).await.unwrap().checks.remove(0).relation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn friends_follow_each_policy_and_friends_only_mode_refuses_strangers() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let names = ["ann", "bea", "cid", "dan", "eve"].map(String::from);
    cluster.create_users(&names).await;
    let [ann, bea, cid, dan, eve] = names.clone().map(|n| cluster.user(&n));
    bea.set_profile(&[("add_friend", "need_confirm")]).await.unwrap();
    cid.set_profile(&[("add_friend", "deny_any")]).await.unwrap();

    cluster.phase("allow_any (ann's default): friends on both sides at once");
    let added = bea.add_friend("ann", "", "Ann from work").await.unwrap();
    assert_eq!((added.user.as_str(), added.state.as_str()), ("ann", "added"));
    assert_eq!(friend_names(&ann).await, vec!["bea"]);
    eventually("bea's list gains ann", || async { friend_names(&bea).await == ["ann"] }).await;
    assert_eq!(bea.list_friends().await.unwrap().friends[0].remark, "Ann from work");
    eventually("ann sees both", || async { relation(&ann, "bea").await == "both" }).await;

    cluster.phase("need_confirm: pending, then accepted; reject drops the request");
    assert_eq!(dan.add_friend("bea", "it's dan", "").await.unwrap().state, "pending");
    let waiting = bea.list_friend_requests().await.unwrap().requests;
    assert_eq!((waiting.len(), waiting[0].from.as_str(), waiting[0].message.as_str()), (1, "dan", "it's dan"));
    assert_eq!(relation(&dan, "bea").await, "none", "nothing listed while pending");
    assert_eq!(bea.respond_friend_request("dan", true, "Dan").await.unwrap().state, "added");
    eventually("dan's list gains bea", || async { friend_names(&dan).await == ["bea"] }).await;
    assert!(bea.list_friend_requests().await.unwrap().requests.is_empty());
    assert_eq!(eve.add_friend("bea", "", "").await.unwrap().state, "pending");
    assert_eq!(bea.respond_friend_request("eve", false, "").await.unwrap().state, "rejected");
    let gone = bea.respond_friend_request("eve", true, "").await.unwrap_err();
    assert_eq!(reason(&gone), "FRIEND_REQUEST_NOT_FOUND");
    assert!(friend_names(&eve).await.is_empty());

    cluster.phase("deny_any, self, blocked: refused, nothing changes");
    let denied = ann.add_friend("cid", "", "").await.unwrap_err();
    assert_eq!(reason(&denied), "FRIEND_ADD_DENIED", "{denied}");
    assert_eq!(reason(&ann.add_friend("ann", "", "").await.unwrap_err()), "PEER_IS_SELF");
    dan.set_blocked("eve", true).await.unwrap();
    assert_eq!(reason(&eve.add_friend("dan", "", "").await.unwrap_err()), "BLOCKED");
    let long = ann.add_friend("dan", "", &"r".repeat(97)).await.unwrap_err();
    assert_eq!(reason(&long), "FRIEND_FIELD_INVALID");
    assert!(friend_names(&cid).await.is_empty() && friend_names(&eve).await.is_empty());

    cluster.phase("friends-only (dan's own setting): strangers refused, friends pass");
    dan.set_profile(&[("c2c_from", "friends")]).await.unwrap();
    let stranger = ann.send_text("dan", "hi dan", None).await.unwrap_err();
    assert_eq!(reason(&stranger), "NOT_FRIEND", "{stranger}");
    bea.send_text("dan", "hi dan, it's bea", None).await.unwrap();
    dan.send_text("ann", "dan may write to ann (ann takes anyone)", None).await.unwrap();

    cluster.phase("one-way delete, then both");
    dan.delete_friend("bea", false).await.unwrap();
    assert!(friend_names(&dan).await.is_empty());
    assert_eq!(friend_names(&bea).await, vec!["ann", "dan"], "bea keeps dan");
    eventually("bea is refused by dan", || async {
        matches!(bea.send_text("dan", "still there?", None).await, Err(e) if reason(&e) == "NOT_FRIEND")
    })
    .await;
    ann.delete_friend("bea", true).await.unwrap();
    eventually("both sides dropped", || async { friend_names(&bea).await == ["dan"] }).await;
    assert!(friend_names(&ann).await.is_empty());
    assert_eq!(relation(&bea, "ann").await, "none");
    bea.set_friend_remark("dan", "D.").await.unwrap();
    assert_eq!(bea.list_friends().await.unwrap().friends[0].remark, "D.");
    assert_eq!(reason(&bea.set_friend_remark("ann", "x").await.unwrap_err()), "NOT_FRIEND");
    cluster.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_wide_friends_only_setting_refuses_strangers() {
    let cluster = Cluster::start(1, Tuning { c2c_friends_only: true, max_joined_groups: 2, ..Tuning::default() }).await;
    cluster.create_users(&["ann".to_owned(), "bob".to_owned(), "cat".to_owned()]).await;
    let (ann, bob) = (cluster.user("ann"), cluster.user("bob"));
    assert_eq!(reason(&ann.send_text("bob", "hi", None).await.unwrap_err()), "NOT_FRIEND");
    ann.add_friend("bob", "", "").await.unwrap();
    eventually("friends may write both ways", || async {
        ann.send_text("bob", "hi", None).await.is_ok() && bob.send_text("ann", "hi", None).await.is_ok()
    })
    .await;
    assert_eq!(reason(&cluster.user("cat").send_text("ann", "hi", None).await.unwrap_err()), "NOT_FRIEND");

    // The same small region caps the groups one user joins at 2 (live rooms do not count).
    ann.create_group(Some("one"), "meeting", "", &[]).await.unwrap();
    ann.create_group(Some("two"), "meeting", "", &[]).await.unwrap();
    bob.create_group(Some("three"), "meeting", "", &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match ann.add_group_members("three", &["ann"]).await {
            Err(e) => break e,
            Ok(_) => {
                // Her list had not learnt of both groups yet: leave again and retry.
                ann.remove_group_member("three", None).await.unwrap();
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(reason(&refused), "JOINED_GROUPS_LIMIT", "{refused}");
    ann.create_group(Some("live"), "avchatroom", "", &[]).await.unwrap();
    ann.add_group_members("live", &["ann"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_profiles_name_cards_mute_all_and_bans() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let names = ["own", "adm", "ann", "bob", "cat", "dan"].map(String::from);
    cluster.create_users(&names).await;
    let [own, adm, ann, bob, cat, dan] = names.clone().map(|n| cluster.user(&n));
    own.create_group(Some("club"), "public", "the club", &["adm", "ann"]).await.unwrap();
    own.set_group_member_role("club", "adm", "admin").await.unwrap();

    cluster.phase("applications to a public group: approve, reject, and who may answer");
    let applied = bob.apply_to_join_group("club", "hi, I'm bob").await.unwrap();
    assert!(applied.pending);
    assert!(cat.apply_to_join_group("club", "").await.unwrap().pending);
    let waiting: Vec<String> =
        adm.list_join_requests("club").await.unwrap().requests.into_iter().map(|r| r.user).collect();
    assert_eq!(waiting, vec!["bob", "cat"]);
    assert_eq!(reason(&ann.list_join_requests("club").await.unwrap_err()), "PERMISSION_DENIED");
    assert_eq!(reason(&ann.respond_join_request("club", "bob", true).await.unwrap_err()), "PERMISSION_DENIED");
    assert_eq!(adm.respond_join_request("club", "bob", true).await.unwrap().member_count, 4);
    adm.respond_join_request("club", "cat", false).await.unwrap();
    let gone = adm.respond_join_request("club", "cat", true).await.unwrap_err();
    assert_eq!(reason(&gone), "GROUP_APPLICATION_NOT_FOUND");
    assert_eq!(members(&own, "club").await, vec!["adm", "ann", "bob", "own"]);
    // The notice of bob's joining (added by adm) is bob's one unread message.
    wait_group_rows(&cluster, "bob", &[("club", 1, 1)]).await;
    let joined = bob.list_joined_groups().await.unwrap().groups;
    assert_eq!((joined.len(), joined[0].group_id.as_str(), joined[0].name.as_str()), (1, "club", "the club"));

    cluster.phase("profile and join option; name cards");
    own.set_group_profile(
        "club",
        &[("introduction", "we meet on fridays"), ("join_option", "free"), ("custom.city", "sg")],
    )
    .await
    .unwrap();
    let info = ann.get_group("club", "", 10).await.unwrap().group.unwrap();
    assert_eq!((info.join_option.as_str(), info.profile.len()), ("free", 2));
    assert_eq!(info.profile["introduction"], "we meet on fridays");
    assert!(!cat.apply_to_join_group("club", "").await.unwrap().pending, "free to join now");
    let refused = ann.set_group_profile("club", &[("notification", "x")]).await.unwrap_err();
    assert_eq!(reason(&refused), "PERMISSION_DENIED");
    let too_long = own.set_group_profile("club", &[("notification", &"n".repeat(301))]).await.unwrap_err();
    assert_eq!(reason(&too_long), "GROUP_FIELD_INVALID");
    // The member cap moves within the type's (2000 for a public group).
    own.set_group_profile("club", &[("max_members", "10")]).await.unwrap();
    assert_eq!(own.get_group("club", "", 1).await.unwrap().group.unwrap().max_members, 10);
    let over = own.set_group_profile("club", &[("max_members", "2001")]).await.unwrap_err();
    assert_eq!(reason(&over), "GROUP_MEMBER_LIMIT");
    ann.set_group_member_info("club", "", &[("name_card", "Annie")]).await.unwrap();
    let card = own.get_group("club", "", 10).await.unwrap().members.into_iter().find(|m| m.user == "ann").unwrap();
    assert_eq!(card.info["name_card"], "Annie");

    cluster.phase("mute all: plain members refused, admins send");
    adm.mute_all_group("club", true).await.unwrap();
    assert_eq!(reason(&ann.send_group_text("club", "hello?", None).await.unwrap_err()), "MEMBER_MUTED");
    adm.send_group_text("club", "announcement", None).await.unwrap();
    adm.mute_all_group("club", false).await.unwrap();
    ann.send_group_text("club", "hello!", None).await.unwrap();

    cluster.phase("ban: out at once, no way back until it ends");
    assert_eq!(adm.ban_group_member("club", "bob", 2).await.unwrap().member_count, 4);
    assert!(!members(&own, "club").await.contains(&"bob".to_owned()));
    assert_eq!(reason(&bob.apply_to_join_group("club", "").await.unwrap_err()), "MEMBER_BANNED");
    assert_eq!(reason(&own.add_group_members("club", &["bob"]).await.unwrap_err()), "MEMBER_BANNED");
    assert_eq!(reason(&adm.ban_group_member("club", "own", 60).await.unwrap_err()), "PERMISSION_DENIED");
    eventually("the ban ends after 2 s", || async { bob.apply_to_join_group("club", "").await.is_ok() }).await;
    own.ban_group_member("club", "dan", 3600).await.unwrap();
    own.ban_group_member("club", "dan", 0).await.unwrap();
    assert!(!dan.apply_to_join_group("club", "").await.unwrap().pending, "the ban was lifted");
    cluster.wait_converged().await;
}

async fn seqs_seen(client: &Client, stream: &Stream) -> Vec<u64> {
    let page = client
        .stream_history(stream, 0, 100, meridian_client::api::Direction::Forward, ReadConsistency::Linearizable)
        .await
        .unwrap();
    page.messages.iter().map(|m| m.seq).collect()
}

async fn row(client: &Client, id: &str) -> Option<meridian_client::api::Conversation> {
    let list = client.conversations_all(ReadConsistency::Linearizable).await.unwrap();
    list.conversations.into_iter().find(|c| c.conversation_id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_settings_and_history_removed_for_self_only() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    cluster.create_users(&["ann".to_owned(), "bob".to_owned()]).await;
    let (ann, bob) = (cluster.user("ann"), cluster.user("bob"));
    for i in 1..=4 {
        ann.send_text("bob", &format!("m{i}"), None).await.unwrap();
    }
    let pair = "c2c:ann:bob";
    let with_ann = Stream::Peer("ann".into());
    let with_bob = Stream::Peer("bob".into());
    wait_until_listed(&bob, pair).await;

    cluster.phase("pin, do not disturb, draft and marks show in bob's row only");
    let prefs = |pinned, draft: &str, marks: Vec<String>| meridian_client::api::SetConversationPrefsRequest {
        peer: "ann".into(),
        pinned: Some(pinned),
        dnd: Some(true),
        draft: Some(draft.into()),
        set_marks: true,
        marks,
        ..Default::default()
    };
    bob.set_conversation_prefs(prefs(true, "tomorrow?", vec!["work".into()])).await.unwrap();
    let r = row(&bob, pair).await.unwrap();
    assert_eq!(
        (r.pinned, r.dnd, r.draft.as_str(), r.marks.clone()),
        (true, true, "tomorrow?", vec!["work".to_owned()])
    );
    let a = row(&ann, pair).await.unwrap();
    assert_eq!((a.pinned, a.dnd, a.draft.as_str()), (false, false, ""), "ann's row is her own");
    let long = bob.set_conversation_prefs(prefs(true, &"d".repeat(2049), vec![])).await.unwrap_err();
    assert_eq!(reason(&long), "CONVERSATION_FIELD_INVALID");

    cluster.phase("delete the row: hidden until the next message");
    assert_eq!(bob.delete_conversation(&with_ann).await.unwrap().hidden_up_to, 4);
    assert!(row(&bob, pair).await.is_none());
    assert!(row(&ann, pair).await.is_some());
    ann.send_text("bob", "m5", None).await.unwrap();
    assert_eq!(row(&bob, pair).await.map(|r| r.last_seq), Some(5), "back with a newer message");

    cluster.phase("delete messages and clear history, for bob only");
    let deleted = bob.delete_messages(&with_ann, &[2, 4]).await.unwrap();
    assert_eq!((deleted.cleared_up_to, deleted.deleted), (0, 2));
    assert_eq!(seqs_seen(&bob, &with_ann).await, vec![1, 3, 5]);
    assert_eq!(seqs_seen(&ann, &with_bob).await, vec![1, 2, 3, 4, 5]);
    let bad = bob.delete_messages(&with_ann, &[9]).await.unwrap_err();
    assert_eq!(reason(&bad), "SEQ_OUT_OF_RANGE");
    assert_eq!(bob.clear_history(&with_ann).await.unwrap().cleared_up_to, 5);
    assert!(seqs_seen(&bob, &with_ann).await.is_empty());
    assert!(row(&bob, pair).await.unwrap().last_message.is_none(), "the row shows no cleared message");
    ann.send_text("bob", "m6", None).await.unwrap();
    assert_eq!(seqs_seen(&bob, &with_ann).await, vec![6]);
    assert_eq!(seqs_seen(&ann, &with_bob).await, vec![1, 2, 3, 4, 5, 6]);

    cluster.phase("a group's stream the same way");
    ann.create_group(Some("g"), "work", "", &["bob"]).await.unwrap();
    for i in 1..=3 {
        ann.send_group_text("g", &format!("g{i}"), None).await.unwrap();
    }
    let group = Stream::Group("g".into());
    bob.delete_messages(&group, &[1]).await.unwrap();
    assert_eq!(seqs_seen(&bob, &group).await, vec![2, 3]);
    bob.clear_history(&group).await.unwrap();
    assert!(seqs_seen(&bob, &group).await.is_empty());
    assert_eq!(seqs_seen(&ann, &group).await, vec![1, 2, 3]);
    cluster.wait_converged().await;
}

async fn wait_until_listed(client: &Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(client, id).await.is_none() {
        assert!(Instant::now() < deadline, "{id} never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a message is a group notice (a join, a leave, a kick, a profile change).
fn is_tip(m: &meridian_client::api::Message) -> bool {
    meridian_client::is_group_notice(&m.elements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn likes_in_a_live_room_are_summed_into_few_entries() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    let mut users = user_ids("fan", 30);
    users.push("host".into());
    cluster.create_users(&users).await;
    cluster.user("host").create_group(Some("live"), "avchatroom", "the show", &[]).await.unwrap();
    cluster.phase("30 fans like the room at once, twice each");
    let likes = users.iter().take(30).map(|u| {
        let client = cluster.user(u);
        async move {
            let first = client.like_group("live", 1).await.unwrap().likes;
            let second = client.like_group("live", 2).await.unwrap().likes;
            assert!(second >= first + 2, "a total never goes back: {first} then {second}");
            second
        }
    });
    let totals = futures::future::join_all(likes).await;
    assert!(totals.iter().all(|t| *t <= 90), "{totals:?}");
    let info = cluster.user("host").get_group("live", "", 1).await.unwrap().group.unwrap();
    assert_eq!(info.likes, 90, "every like counted once");
    let shard = shard_of("grp:live", 8);
    let events = cluster.admin().read_all_events(shard, 1).await.unwrap();
    let entries = events
        .iter()
        .filter(|e| {
            matches!(&e.kind, Some(meridian_client::api::logged_event::Kind::GroupEvent(g)) if g.r#type == "GroupLiked")
        })
        .count();
    assert!((1..60).contains(&entries), "60 calls counted by {entries} commands: they are gathered per window");
    let refused = cluster.user("fan000").like_group("live", 101).await.unwrap_err();
    assert_eq!(reason(&refused), "GROUP_FIELD_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_community_s_topics_are_streams_of_their_own() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    cluster.create_users(&["own".to_owned(), "ann".to_owned(), "zed".to_owned()]).await;
    let (own, ann) = (cluster.user("own"), cluster.user("ann"));
    own.create_group(Some("town"), "community", "the town", &["ann"]).await.unwrap();
    own.create_topic("town", "news", "News").await.unwrap();
    own.create_topic("town", "sport", "Sport").await.unwrap();
    let refused = ann.create_topic("town", "gossip", "").await.unwrap_err();
    assert_eq!(reason(&refused), "PERMISSION_DENIED");
    for i in 1..=3 {
        let sent = ann.send_topic_text("town", "news", &format!("n{i}"), Some(format!("n{i}"))).await.unwrap();
        assert_eq!((sent.seq, sent.conversation_id.as_str()), (i, "grp:town/news"));
    }
    assert_eq!(own.send_topic_text("town", "sport", "s1", None).await.unwrap().seq, 1);
    assert_eq!(own.send_group_text("town", "hello town", None).await.unwrap().seq, 1);
    let again = ann.send_topic_text("town", "news", "n1", Some("n1".into())).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    let missing = ann.send_topic_text("town", "weather", "x", None).await.unwrap_err();
    assert_eq!(reason(&missing), "TOPIC_NOT_FOUND");
    let outsider = cluster.user("zed").send_topic_text("town", "news", "x", None).await.unwrap_err();
    assert_eq!(reason(&outsider), "NOT_GROUP_MEMBER");

    let news = Stream::Topic("town".into(), "news".into());
    let texts: Vec<String> = own
        .stream_history_all(&news, ReadConsistency::Linearizable)
        .await
        .unwrap()
        .iter()
        .map(meridian_client::message_text)
        .collect();
    assert_eq!(texts, ["n1", "n2", "n3"]);
    let unread = |topics: &[meridian_client::api::TopicInfo]| -> Vec<(String, u64, u64)> {
        topics.iter().map(|t| (t.topic.clone(), t.last_seq, t.unread)).collect()
    };
    let own_view = own.list_topics("town").await.unwrap().topics;
    assert_eq!(unread(&own_view), [("news".to_owned(), 3, 3), ("sport".to_owned(), 1, 0)]);
    own.mark_topic_read("town", "news", Some(2)).await.unwrap();
    let own_view = own.list_topics("town").await.unwrap().topics;
    assert_eq!(unread(&own_view), [("news".to_owned(), 3, 1), ("sport".to_owned(), 1, 0)]);
    cluster.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_account_leaves_its_friends_and_groups_and_its_id_stays_taken() {
    let mut cluster = Cluster::start(1, Tuning::default()).await;
    let names = ["ann", "bob", "cat"].map(String::from);
    cluster.create_users(&names).await;
    let [ann, bob, cat] = names.clone().map(|n| cluster.user(&n));
    ann.set_profile(&[("nickname", "Ann A."), ("signature", "gone soon")]).await.unwrap();
    bob.add_friend("ann", "", "").await.unwrap();
    eventually("friends both ways", || async { friend_names(&ann).await == ["bob"] }).await;
    ann.set_blocked("cat", true).await.unwrap();
    ann.create_group(Some("crew"), "work", "crew", &["bob", "cat"]).await.unwrap();
    ann.set_group_member_role("crew", "cat", "admin").await.unwrap();
    ann.send_text("bob", "keep this", None).await.unwrap();
    wait_until_listed(&ann, "grp:crew").await;

    cluster.phase("delete ann: her records go, the id stays taken");
    let deleted = cluster.admin().delete_user("ann").await.unwrap();
    assert!(deleted.deleted);
    assert!(!cluster.admin().delete_user("ann").await.unwrap().deleted, "a repeat changes nothing");
    assert!(!ann.delete_account().await.unwrap().deleted);
    for refused in [
        cluster.admin().create_user("ann", None).await.map(|_| ()),
        bob.get_profile("ann", &[]).await.map(|_| ()),
        cat.send_text("ann", "hello?", None).await.map(|_| ()),
        ann.set_profile(&[("nickname", "back")]).await.map(|_| ()),
        bob.add_friend("ann", "", "").await.map(|_| ()),
    ] {
        assert_eq!(refused.as_ref().map_err(reason), Err("USER_DELETED"), "{refused:?}");
    }
    assert!(ann.list_friends().await.unwrap().friends.is_empty());
    assert!(ann.list_blocked().await.unwrap().users.is_empty());
    assert!(ann.conversations_all(ReadConsistency::Linearizable).await.unwrap().conversations.is_empty());

    cluster.phase("her friend's list and her group drop her; the admin inherits the group");
    eventually("bob's list drops ann", || async { friend_names(&bob).await.is_empty() }).await;
    eventually("cat owns crew", || async {
        bob.get_group("crew", "", 10).await.unwrap().group.is_some_and(|g| g.owner == "cat" && g.member_count == 2)
    })
    .await;
    assert_eq!(members(&bob, "crew").await, ["bob", "cat"]);
    cat.send_group_text("crew", "still here", None).await.unwrap();

    cluster.phase("what she sent stays in the conversation");
    let history = bob
        .history("ann", 0, 10, meridian_client::api::Direction::Forward, ReadConsistency::Linearizable)
        .await
        .unwrap();
    let texts: Vec<String> = history.messages.iter().map(meridian_client::message_text).collect();
    assert_eq!(texts, ["keep this"]);
    cluster.wait_converged().await;
    cluster.verify_projections().await;
}
