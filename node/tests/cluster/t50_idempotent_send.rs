//! One request id sent three times, each time through another node, makes one message: the
//! same seq and message id every time, flagged `duplicate` after the first. The id is scoped
//! to (sender, conversation): the peer or another conversation may reuse it.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use meridian_client::api::{ReadConsistency, SendMessageResponse};

use common::{local_history, wait_listed, Cluster, Row, Tuning};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_id_sent_three_times_makes_one_message() {
    let mut cluster = Cluster::start(3, Tuning::default()).await;
    let users = ["alice", "bob", "carol"].map(str::to_owned);
    cluster.create_users(&users).await;
    let request_id = "t50-retry-of-one-send".to_owned();
    // One attempt per call: the test does the retrying, not the SDK.
    let alice_via = |i: usize| cluster.user_on(i, "alice").with_retry_budget(Duration::ZERO);

    cluster.phase("alice sends through node 1; bob reuses her request id; alice retries through nodes 2 and 3");
    let first = alice_via(0).send_text("bob", "hello, once", Some(request_id.clone())).await.unwrap();
    let bobs = cluster.user_on(1, "bob").send_text("alice", "hello back", Some(request_id.clone())).await.unwrap();
    let second = alice_via(1).send_text("bob", "hello, once", Some(request_id.clone())).await.unwrap();
    let third = alice_via(2).send_text("bob", "hello, once", Some(request_id.clone())).await.unwrap();
    let to_carol = alice_via(0).send_text("carol", "hello, carol", Some(request_id.clone())).await.unwrap();

    let fields = |r: &SendMessageResponse| (r.conversation_id.clone(), r.message_id.clone(), r.seq, r.server_time_ms);
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!((fields(&second), second.duplicate), (fields(&first), true), "the 2nd send is not the 1st's result");
    assert_eq!((fields(&third), third.duplicate), (fields(&first), true), "the 3rd send is not the 1st's result");
    assert_eq!((bobs.seq, bobs.duplicate), (2, false), "bob's send with alice's request id is his own message");
    assert_eq!(bobs.conversation_id, first.conversation_id);
    assert_ne!(bobs.message_id, first.message_id);
    assert_eq!((to_carol.seq, to_carol.duplicate), (1, false), "another conversation may reuse the request id");
    assert_ne!(to_carol.conversation_id, first.conversation_id);

    cluster.phase("the conversation holds alice's message once, then bob's");
    let expected = vec![
        Row {
            seq: 1,
            message_id: first.message_id.clone(),
            sender: "alice".into(),
            text: "hello, once".into(),
            recalled: false,
        },
        Row {
            seq: 2,
            message_id: bobs.message_id.clone(),
            sender: "bob".into(),
            text: "hello back".into(),
            recalled: false,
        },
    ];
    let linearizable = cluster.user("alice").history_all("bob", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(linearizable.iter().map(Row::of).collect::<Vec<_>>(), expected);
    cluster.wait_converged().await;
    for i in 0..cluster.len() {
        assert_eq!(local_history(&cluster, i, "bob", "alice").await, expected, "node {}'s replica", i + 1);
    }
    let alices = wait_listed(&cluster, "alice", &["bob", "carol"].map(str::to_owned).into()).await;
    let alice_bob = alices.conversations.iter().find(|c| c.peer == "bob");
    assert_eq!(alice_bob.map(|c| (c.last_seq, c.unread)), Some((2, 1)), "alice's view: {alices:?}");
}
