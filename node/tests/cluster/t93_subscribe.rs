//! Live streams on a real 3-node region (DLV-01/02): 50 subscribed devices of 20 users, each
//! user in two one-to-one conversations and one group; concurrent sends; `kill -9` of the
//! node serving half the streams mid-way. Every device resumes on another node with its
//! token and ends with every message of its conversations exactly once, in seq order, equal
//! to the history (so every acknowledged send is there), nothing else.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::api::{Direction, ReadConsistency};
use meridian_client::{Client, ClientConfig, Stream};

use common::{Cluster, Tuning};

const USERS: usize = 20;
const DEVICES: usize = 50;
const SENDS_PER_USER: usize = 24;

fn name(i: usize) -> String {
    format!("u{:02}", i % USERS)
}

/// What one device received: per conversation, (seq, message id) in arrival order.
type Received = Arc<Mutex<BTreeMap<String, Vec<(u64, String)>>>>;

/// A device of `user` whose stream starts at node `first` (and fails over to the others).
fn device_client(cluster: &Cluster, first: usize, user: &str) -> Client {
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(first);
    let mut config = ClientConfig::new(endpoints, cluster.admin_token()).with_act_as(user);
    config.retry_budget = Duration::from_secs(30);
    Client::with_config(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_devices_get_every_message_once_in_order_across_a_node_kill() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let names: Vec<String> = (0..USERS).map(name).collect();
    cluster.create_users(&names).await;
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    cluster.user(&names[0]).create_group(Some("room"), "work", "room", &others).await.unwrap();

    cluster.phase("50 devices subscribe: even ones at node 1, odd ones at nodes 2 and 3");
    let mut devices = vec![];
    for d in 0..DEVICES {
        let first = if d % 2 == 0 { 0 } else { 1 + (d / 2) % 2 };
        let client = device_client(&cluster, first, &name(d));
        let mut subscription = client.subscribe(None).await.unwrap();
        // The catch-up of a fresh device: nothing yet but the marker.
        let first_event = subscription.next().await.unwrap();
        assert_eq!(first_event.r#type, "caught_up", "{first_event:?}");
        let received: Received = Arc::default();
        let connects = Arc::new(AtomicU64::new(1));
        let (sink, opened) = (received.clone(), connects.clone());
        let fetcher = client.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = subscription.next().await;
                opened.store(subscription.connects(), Ordering::Relaxed);
                match next {
                    Ok(event) if event.r#type == "message" => {
                        let id = event.message.map(|m| m.message_id).unwrap_or_default();
                        sink.lock().unwrap().entry(event.conversation_id).or_default().push((event.seq, id));
                    }
                    // A device that missed more than the catch-up sends reads the rest, as
                    // the hint says, before the messages that follow it.
                    Ok(event) if event.r#type == "fetch" => {
                        let stream = if event.group_id.is_empty() {
                            Stream::Peer(event.peer.clone())
                        } else {
                            Stream::Group(event.group_id.clone())
                        };
                        let mut from = event.fetch_from;
                        while from <= event.fetch_to {
                            let page = fetcher
                                .stream_history(&stream, from, 100, Direction::Forward, ReadConsistency::Linearizable)
                                .await
                                .unwrap();
                            let mut sink = sink.lock().unwrap();
                            let seen = sink.entry(event.conversation_id.clone()).or_default();
                            for m in page.messages.iter().filter(|m| m.seq <= event.fetch_to) {
                                seen.push((m.seq, m.message_id.clone()));
                            }
                            from = if page.next_seq == 0 { event.fetch_to + 1 } else { page.next_seq };
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("device of {}: {e}", name(d)),
                }
            }
        });
        devices.push((d, received, task, connects));
    }

    cluster.phase("every user sends to the next one and to the group; node 1 is killed mid-way");
    let done = Arc::new(AtomicUsize::new(0));
    let senders = (0..USERS).map(|i| {
        let client = cluster.user(&name(i));
        let done = done.clone();
        async move {
            for k in 0..SENDS_PER_USER {
                let text = format!("{} #{k}", name(i));
                // A send that timed out across the kill may or may not have taken effect;
                // the comparison is with the history, which has it or not.
                let _ = if k % 2 == 0 {
                    client.send_text(&name(i + 1), &text, Some(format!("{}-{k}", name(i)))).await
                } else {
                    client.send_group_text("room", &text, Some(format!("{}-g{k}", name(i)))).await
                };
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let sends = futures::future::join_all(senders);
    let kill = async {
        // Mid-way: a third of the sends done.
        while done.load(Ordering::Relaxed) < USERS * SENDS_PER_USER / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.kill9(0);
        done.load(Ordering::Relaxed)
    };
    let (_, killed_at) = tokio::join!(sends, kill);
    assert!(killed_at < USERS * SENDS_PER_USER, "the kill came after the sends");

    cluster.phase("every device ends with its conversations' histories, once each, in order");
    let reader = cluster.user(&names[1]);
    let mut histories: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let room = reader.stream_history_all(&Stream::Group("room".into()), ReadConsistency::Linearizable).await.unwrap();
    histories.insert("grp:room".into(), room.iter().map(|m| (m.seq, m.message_id.clone())).collect());
    for i in 0..USERS {
        let (a, b) = (name(i), name(i + 1));
        let pair = if a < b { format!("c2c:{a}:{b}") } else { format!("c2c:{b}:{a}") };
        let messages = cluster.user(&a).history_all(&b, ReadConsistency::Linearizable).await.unwrap();
        histories.insert(pair, messages.iter().map(|m| (m.seq, m.message_id.clone())).collect());
    }
    let expected_for = |user: &str| -> BTreeMap<String, Vec<(u64, String)>> {
        histories
            .iter()
            .filter(|(id, _)| *id == "grp:room" || id.split(':').any(|p| p == user))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for (d, received, _, _) in &devices {
        let expected = expected_for(&name(*d));
        assert_eq!(expected.len(), 3, "{expected:?}");
        loop {
            let got = received.lock().unwrap().clone();
            if got == expected {
                break;
            }
            if Instant::now() > deadline {
                for (id, want) in &expected {
                    let have = got.get(id).cloned().unwrap_or_default();
                    let seqs: Vec<u64> = have.iter().map(|(s, _)| *s).collect();
                    assert_eq!(&have, want, "device {d} of {}: {id}: received seqs {seqs:?}", name(*d));
                }
                panic!("device {d}: {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let total: usize = histories.values().map(Vec::len).sum();
    assert!(total > USERS * SENDS_PER_USER / 2, "few sends were accepted: {total}");
    for (d, _, task, connects) in devices {
        task.abort();
        // The streams of node 1 moved to another node; the others stayed where they were.
        let opened = connects.load(Ordering::Relaxed);
        assert_eq!(opened >= 2, d % 2 == 0, "device {d} opened {opened} streams");
    }
    cluster.restart(0).await;
    cluster.wait_converged().await;
}

/// The next event of a stream, within 10 s.
async fn next_on(s: &mut meridian_client::Subscription) -> meridian_client::api::SubscribeEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next()).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_signals_reach_the_other_members_live_devices_and_are_not_stored() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    let names = ["ann", "bob", "cid"].map(String::from);
    cluster.create_users(&names).await;
    cluster.user("ann").create_group(Some("trio"), "work", "trio", &["bob", "cid"]).await.unwrap();
    // bob's device on node 2, cid's on node 3, ann's on node 1; signals sent through node 1.
    let mut bob = device_client(&cluster, 1, "bob").subscribe(None).await.unwrap();
    let mut cid = device_client(&cluster, 2, "cid").subscribe(None).await.unwrap();
    let mut ann = device_client(&cluster, 0, "ann").subscribe(None).await.unwrap();
    for s in [&mut bob, &mut cid, &mut ann] {
        assert_eq!(s.next().await.unwrap().r#type, "caught_up");
    }
    let sender = cluster.user_on(0, "ann");
    sender.signal("bob", "typing", "").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), bob.next()).await.unwrap().unwrap();
    assert_eq!(
        (got.r#type.as_str(), got.by.as_str(), got.signal_kind.as_str(), got.peer.as_str()),
        ("signal", "ann", "typing", "ann")
    );
    sender.group_signal("trio", "typing", "{\"draft\":true}").await.unwrap();
    for s in [&mut bob, &mut cid] {
        let got = tokio::time::timeout(Duration::from_secs(10), s.next()).await.unwrap().unwrap();
        assert_eq!(
            (got.r#type.as_str(), got.group_id.as_str(), got.signal_payload.as_str()),
            ("signal", "trio", "{\"draft\":true}")
        );
    }
    // The sender's own device gets nothing; the signals are not history.
    cluster.user("bob").send_text("ann", "a real message", None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), ann.next()).await.unwrap().unwrap();
    assert_eq!((next.r#type.as_str(), next.seq), ("message", 1), "{next:?}");
    let history = cluster.user("ann").history_all("bob", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(history.len(), 1);
    let room = cluster
        .user("bob")
        .stream_history_all(&Stream::Group("trio".into()), ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert!(room.is_empty(), "{room:?}");
    let refused = cluster.user("ann").signal("bob", "", "").await.unwrap_err();
    assert_eq!(refused.reason(), Some("ELEMENT_INVALID"));

    // A live room keeps no members: a stream that listens to it gets its messages (from its
    // newest on), recalls and like totals; one that does not gets none of them.
    cluster.user("ann").create_group(Some("stage"), "avchatroom", "stage", &[]).await.unwrap();
    cluster.user("ann").send_group_text("stage", "before anyone listens", None).await.unwrap();
    let mut fan = device_client(&cluster, 2, "bob").subscribe_in_rooms(None, &["stage"]).await.unwrap();
    let first = next_on(&mut fan).await;
    assert!(first.r#type == "message" || first.r#type == "caught_up", "{first:?}");
    let mut got = vec![];
    for i in 2..=4 {
        cluster.user_on(0, "ann").send_group_text("stage", &format!("live {i}"), None).await.unwrap();
    }
    cluster.user("cid").like_group("stage", 5).await.unwrap();
    while got.len() < 4 {
        let event = next_on(&mut fan).await;
        match event.r#type.as_str() {
            "message" if event.group_id == "stage" => {
                got.push(format!("{} {}", event.seq, meridian_client::message_text(event.message.as_ref().unwrap())))
            }
            "likes" => got.push(format!("likes {}", event.likes)),
            _ => {}
        }
    }
    assert_eq!(got, ["2 live 2", "3 live 3", "4 live 4", "likes 5"]);
    // cid's stream did not ask for the room: its next event is bob's message to it.
    cluster.user("bob").send_text("cid", "only this", None).await.unwrap();
    let next = next_on(&mut cid).await;
    assert_eq!((next.r#type.as_str(), next.peer.as_str()), ("message", "bob"), "{next:?}");
    // Only live rooms, and not for a user the room banned.
    let not_live = device_client(&cluster, 0, "bob").subscribe_in_rooms(None, &["trio"]).await.unwrap_err();
    assert_eq!(not_live.reason(), Some("PERMISSION_DENIED"), "{not_live}");
    cluster.user("ann").ban_group_member("stage", "cid", 60).await.unwrap();
    let banned = device_client(&cluster, 0, "cid").subscribe_in_rooms(None, &["stage"]).await.unwrap_err();
    assert_eq!(banned.reason(), Some("MEMBER_BANNED"), "{banned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_follows_live_streams_across_nodes_and_reaches_friends() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    cluster.create_users(&["ann".to_owned(), "bob".to_owned(), "cid".to_owned()]).await;
    cluster.user("bob").add_friend("ann", "", "").await.unwrap();
    let mut ann = device_client(&cluster, 2, "ann").subscribe(None).await.unwrap();
    assert_eq!(ann.next().await.unwrap().r#type, "caught_up");
    let online = |answer: meridian_client::api::GetPresenceResponse| -> Vec<(String, bool)> {
        answer.users.into_iter().map(|u| (u.user, u.online)).collect()
    };
    let asker = cluster.user_on(0, "cid");
    let presence = |want: [(&str, bool); 2]| want.map(|(u, o)| (u.to_owned(), o)).to_vec();
    assert_eq!(online(asker.get_presence(&["bob", "cid"]).await.unwrap()), presence([("bob", false), ("cid", false)]));

    // bob connects on node 2: ann (on node 3, bob on her list) hears of it; node 1 sees it.
    let mut bob = device_client(&cluster, 1, "bob").subscribe(None).await.unwrap();
    assert_eq!(bob.next().await.unwrap().r#type, "caught_up");
    let heard = tokio::time::timeout(Duration::from_secs(10), ann.next()).await.unwrap().unwrap();
    assert_eq!((heard.r#type.as_str(), heard.by.as_str(), heard.signal_kind.as_str()), ("presence", "bob", "online"));
    assert_eq!(online(asker.get_presence(&["bob", "cid"]).await.unwrap()), presence([("bob", true), ("cid", false)]));

    // bob's only stream closes: offline, for ann and for anyone who asks.
    drop(bob);
    let heard = tokio::time::timeout(Duration::from_secs(10), ann.next()).await.unwrap().unwrap();
    assert_eq!((heard.r#type.as_str(), heard.by.as_str(), heard.signal_kind.as_str()), ("presence", "bob", "offline"));
    assert_eq!(online(asker.get_presence(&["bob", "cid"]).await.unwrap()), presence([("bob", false), ("cid", false)]));
}
