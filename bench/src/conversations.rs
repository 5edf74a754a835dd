//! [`ConversationsWorkload`]: conversation lists of users with many conversations.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use meridian_client::api::ReadConsistency;
use meridian_client::Client;
use rand::rngs::StdRng;
use rand::Rng as _;

use crate::bench_args::BenchArgs;
use crate::client_pool::ClientPool;
use crate::workload::{create_users, text, OpError};

/// Conversations per listed page.
const PAGE: u32 = 100;

/// Owners `bench-co{i}` each have one conversation with every peer `bench-cp{j}`, holding one
/// unread message from the peer; a request lists a random owner's conversations.
#[derive(Debug)]
pub struct ConversationsWorkload {
    owners: Arc<[String]>,
    /// Conversations every listed page must hold at least.
    want: usize,
    consistency: ReadConsistency,
}

impl ConversationsWorkload {
    /// Creates `--owners` owners and `--convs` peers, and has every peer send one message to
    /// every owner. An owner who already has a conversation with every peer is skipped, and
    /// each send carries a request id made of the pair, so a rerun adds nothing.
    pub async fn prepare(args: &BenchArgs, pool: &ClientPool) -> anyhow::Result<Self> {
        let owners: Arc<[String]> = (0..args.owners).map(|i| format!("bench-co{i}")).collect();
        let peers: Arc<[String]> = (0..args.convs).map(|j| format!("bench-cp{j}")).collect();
        let users: Arc<[String]> = owners.iter().chain(peers.iter()).cloned().collect();
        create_users(pool, args.clients, users).await?;

        let complete = {
            let (owners, names, peers) = (owners.clone(), owners.clone(), peers.clone());
            pool.spread(
                args.clients,
                owners.len(),
                move |i| format!("list the conversations of {}", names[i]),
                move |client, i| {
                    let (owners, peers) = (owners.clone(), peers.clone());
                    async move {
                        let listed = client
                            .with_act_as(owners[i].as_str())?
                            .conversations_all(ReadConsistency::Linearizable)
                            .await?;
                        let with: HashSet<&str> = listed.conversations.iter().map(|c| c.peer.as_str()).collect();
                        Ok(peers.iter().all(|p| with.contains(p.as_str())))
                    }
                },
            )
            .await
            .context("find which owners are set up")?
        };

        let pending: Arc<[usize]> = complete.iter().enumerate().filter(|(_, done)| !**done).map(|(i, _)| i).collect();
        let sends = pending.len() * peers.len();
        let started = std::time::Instant::now();
        if sends > 0 {
            let (owners, names, peers, text) =
                (owners.clone(), owners.clone(), peers.clone(), Arc::<str>::from(text()));
            let (which, per_owner) = (pending.clone(), peers.len());
            pool.spread(
                args.clients,
                sends,
                move |n| format!("send to {} from a peer", names[which[n / per_owner]]),
                move |client, n| {
                    let (owners, peers, pending, text) = (owners.clone(), peers.clone(), pending.clone(), text.clone());
                    async move {
                        let (owner, peer) = (&owners[pending[n / peers.len()]], &peers[n % peers.len()]);
                        // The same id on a rerun: the server returns the first send's result.
                        let request_id = format!("bench-conv-{peer}-{owner}");
                        client.with_act_as(peer.as_str())?.send_text(owner, &text, Some(request_id)).await.map(drop)
                    }
                },
            )
            .await
            .context("give the owners their conversations")?;
        }
        tracing::info!(
            owners = owners.len(),
            convs = peers.len(),
            sent = sends,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "conversations in place"
        );
        let want = peers.len().min(PAGE as usize);
        Ok(ConversationsWorkload { owners, want, consistency: args.consistency.into() })
    }

    /// One listing of a random owner's newest conversations.
    pub async fn op(&self, client: &Client, rng: &mut StdRng) -> Result<(), OpError> {
        let owner = &self.owners[rng.gen_range(0..self.owners.len())];
        let page = client.with_act_as(owner.as_str())?.conversations(PAGE, "", self.consistency).await?;
        if page.conversations.len() < self.want {
            return Err(OpError::ShortList { got: page.conversations.len(), want: self.want });
        }
        Ok(())
    }
}
