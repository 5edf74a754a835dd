//! Refused requests over real sockets: each refusal carries its stable reason code, whichever
//! node receives it (the node may have to forward the command to the shard's leader), and
//! leaves the conversations exactly as they were.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use meridian_client::api::{ListConversationsResponse, Message, ReadConsistency};
use meridian_client::{Client, ClientError};
use meridian_node::auth::TokenSigner;
use meridian_node::config::AuthConfig;
use tonic::Code;

use common::{Cluster, Tuning};

/// Everything alice and bob can see of their region.
#[derive(Debug, PartialEq)]
struct Seen {
    alice_history: Vec<Message>,
    bob_history: Vec<Message>,
    alice_conversations: ListConversationsResponse,
    bob_conversations: ListConversationsResponse,
}

async fn seen(cluster: &Cluster) -> Seen {
    let (alice, bob) = (cluster.user("alice"), cluster.user("bob"));
    let linear = ReadConsistency::Linearizable;
    Seen {
        alice_history: alice.history_all("bob", linear).await.unwrap(),
        bob_history: bob.history_all("alice", linear).await.unwrap(),
        alice_conversations: alice.conversations_all(linear).await.unwrap(),
        bob_conversations: bob.conversations_all(linear).await.unwrap(),
    }
}

/// Panics unless `result` is a refusal with `reason` and `code`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, reason: &str, code: Code, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {reason}, but the call succeeded: {v:?}"),
        Err(e) => {
            assert_eq!(e.reason(), Some(reason), "{what}: wrong reason in {e}");
            assert_eq!(e.code(), Some(code), "{what}: wrong gRPC code in {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_carry_their_reason_and_change_nothing() {
    let cluster = Cluster::start(3, Tuning::default()).await;
    cluster.create_users(&["alice".to_owned(), "bob".to_owned()]).await;

    cluster.phase("alice and bob talk a little; bob reads up to seq 2");
    let (alice, bob) = (cluster.user("alice"), cluster.user("bob"));
    for text in ["hi bob", "how are you?", "lunch?"] {
        alice.send_text("bob", text, None).await.unwrap();
    }
    let reply = bob.send_text("alice", "sure", None).await.unwrap();
    bob.mark_read("alice", Some(2)).await.unwrap();
    let last_seq = reply.seq;
    let alice_token = cluster.admin().issue_token("alice", None).await.unwrap().token;
    let before = seen(&cluster).await;
    assert_eq!(before.alice_history.len(), 4);

    for i in 0..cluster.len() {
        cluster.phase(format!("refused calls through node {}", i + 1));
        let endpoint = [cluster.endpoints()[i].clone()];
        let alice = cluster.user_on(i, "alice").with_retry_budget(Duration::ZERO);
        let bob = cluster.user_on(i, "bob").with_retry_budget(Duration::ZERO);

        assert_refused(
            alice.send_text("nobody", "anyone there?", None).await,
            "UNKNOWN_USER",
            Code::NotFound,
            "a send to a user that does not exist",
        );
        assert_refused(
            alice.send_text("bob", &"x".repeat(13 * 1024), None).await,
            "MESSAGE_TOO_LARGE",
            Code::InvalidArgument,
            "a 13 KiB text (the limit is 12 KiB)",
        );
        assert_refused(
            alice.send("bob", vec![], None).await,
            "MESSAGE_EMPTY",
            Code::InvalidArgument,
            "a message without elements",
        );
        assert_refused(
            bob.recall("alice", 1).await,
            "NOT_MESSAGE_SENDER",
            Code::PermissionDenied,
            "bob recalling alice's message",
        );
        assert_refused(
            bob.mark_read("alice", Some(last_seq + 10)).await,
            "SEQ_OUT_OF_RANGE",
            Code::OutOfRange,
            "marking read past the newest message",
        );

        let alice_as_bob = Client::new(endpoint.clone(), alice_token.clone()).unwrap().with_act_as("bob").unwrap();
        assert_refused(
            alice_as_bob.send_text("alice", "it's bob, honest", None).await,
            "FORBIDDEN",
            Code::PermissionDenied,
            "alice's user token acting as bob",
        );

        let garbage = Client::new(endpoint.clone(), "not-a-token").unwrap();
        assert_refused(
            garbage.with_act_as("alice").unwrap().send_text("bob", "hi", None).await,
            "TOKEN_MALFORMED",
            Code::Unauthenticated,
            "a token that is not a token",
        );
        let forged = TokenSigner::new(AuthConfig::default().app_id, "another-region-secret-0123456789")
            .issue_user("alice", chrono::Utc::now().timestamp() + 3600);
        let forger = Client::new(endpoint.clone(), forged).unwrap();
        assert_refused(
            forger.send_text("bob", "hi", None).await,
            "TOKEN_BAD_SIGNATURE",
            Code::Unauthenticated,
            "a user token signed with another secret",
        );
        assert_refused(
            forger.conversations(0, "", ReadConsistency::Local).await,
            "TOKEN_BAD_SIGNATURE",
            Code::Unauthenticated,
            "a read with a token signed with another secret",
        );
    }

    cluster.phase("nothing changed");
    let after = seen(&cluster).await;
    assert_eq!(after, before, "a refused call changed what alice or bob see");
    assert!(
        after.alice_conversations.conversations.iter().all(|c| c.peer == "bob"),
        "a refused send created a conversation: {:?}",
        after.alice_conversations.conversations
    );
}
