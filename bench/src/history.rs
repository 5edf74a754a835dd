//! [`HistoryWorkload`]: pages of preloaded conversations.

use std::sync::Arc;

use anyhow::Context as _;
use meridian_client::api::{Direction, ReadConsistency};
use meridian_client::Client;
use rand::rngs::StdRng;
use rand::Rng as _;

use crate::bench_args::BenchArgs;
use crate::client_pool::ClientPool;
use crate::workload::{create_users, text, OpError};

/// Conversation `k` is between `bench-h{k}-a` and `bench-h{k}-b`, holding at least `msgs`
/// messages; a request reads `limit` of them forward from a random seq, as `a`.
#[derive(Debug)]
pub struct HistoryWorkload {
    /// `(reader, peer)` of each conversation.
    pairs: Arc<[(String, String)]>,
    msgs: u64,
    limit: u32,
    consistency: ReadConsistency,
}

impl HistoryWorkload {
    /// Creates the users and fills every conversation up to `--msgs` messages. A conversation
    /// that already holds them (an earlier run's) is left as it is.
    pub async fn prepare(args: &BenchArgs, pool: &ClientPool) -> anyhow::Result<Self> {
        let pairs: Arc<[(String, String)]> =
            (0..args.convs).map(|k| (format!("bench-h{k}-a"), format!("bench-h{k}-b"))).collect();
        let users: Arc<[String]> = pairs.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
        create_users(pool, args.clients, users).await?;

        let last_seqs = {
            let (pairs, names) = (pairs.clone(), pairs.clone());
            pool.spread(
                args.clients,
                pairs.len(),
                move |k| format!("read the newest seq of {} with {}", names[k].0, names[k].1),
                move |client, k| {
                    let pairs = pairs.clone();
                    async move {
                        let (reader, peer) = &pairs[k];
                        let page = client
                            .with_act_as(reader.as_str())?
                            .history(peer, 0, 1, Direction::Backward, ReadConsistency::Linearizable)
                            .await?;
                        Ok(page.last_seq)
                    }
                },
            )
            .await
            .context("find how full the conversations are")?
        };

        // One item per missing message: (conversation, how many it still needs).
        let missing: Vec<usize> = last_seqs
            .iter()
            .enumerate()
            .flat_map(|(k, &last)| std::iter::repeat_n(k, args.msgs.saturating_sub(last) as usize))
            .collect();
        let started = std::time::Instant::now();
        let to_send = missing.len();
        if to_send > 0 {
            let missing: Arc<[usize]> = missing.into();
            let (pairs, names, text) = (pairs.clone(), pairs.clone(), Arc::<str>::from(text()));
            let which = missing.clone();
            pool.spread(
                args.clients,
                missing.len(),
                move |i| format!("preload a message from {} to {}", names[which[i]].0, names[which[i]].1),
                move |client, i| {
                    let (pairs, missing, text) = (pairs.clone(), missing.clone(), text.clone());
                    async move {
                        let (from, to) = &pairs[missing[i]];
                        client.with_act_as(from.as_str())?.send_text(to, &text, None).await.map(drop)
                    }
                },
            )
            .await
            .context("preload the conversations")?;
        }
        tracing::info!(
            convs = pairs.len(),
            msgs = args.msgs,
            sent = to_send,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "conversations preloaded"
        );
        Ok(HistoryWorkload { pairs, msgs: args.msgs, limit: args.limit, consistency: args.consistency.into() })
    }

    /// One page read; a page shorter than the preload allows counts as an error.
    pub async fn op(&self, client: &Client, rng: &mut StdRng) -> Result<(), OpError> {
        let (reader, peer) = &self.pairs[rng.gen_range(0..self.pairs.len())];
        let limit = u64::from(self.limit);
        // A start from which a whole page lies within the preloaded messages.
        let start = 1 + rng.gen_range(0..=self.msgs.saturating_sub(limit));
        let page = client
            .with_act_as(reader.as_str())?
            .history(peer, start, self.limit, Direction::Forward, self.consistency)
            .await?;
        let want = limit.min(self.msgs) as usize;
        if page.messages.len() < want {
            return Err(OpError::ShortPage { start, got: page.messages.len(), want });
        }
        Ok(())
    }
}
