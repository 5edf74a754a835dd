//! [`SendWorkload`]: one-to-one sends, to conversations that exist (`--pairs existing`) or
//! as first contacts (`--pairs new`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use meridian_client::Client;
use rand::rngs::StdRng;
use rand::Rng as _;

use crate::bench_args::{BenchArgs, Pairs};
use crate::client_pool::ClientPool;
use crate::workload::{create_users, text, OpError};

/// Sends of a 200-byte text.
#[derive(Debug)]
pub struct SendWorkload {
    users: Arc<[String]>,
    pairs: Pairs,
    /// `new`: the next unused pair.
    next_pair: AtomicU64,
    text: String,
}

impl SendWorkload {
    /// `existing`: creates the `--users` users `bench-u{i}` and gives every pair of
    /// [`existing_pairs`] its conversation (one message; a rerun finds it by its request id).
    /// `new`: creates `--users` users under a prefix of this run, so that no two of them have
    /// spoken.
    pub async fn prepare(args: &BenchArgs, pool: &ClientPool) -> anyhow::Result<Self> {
        let prefix = match args.pairs {
            Pairs::Existing => "bench-u".to_owned(),
            Pairs::New => format!("bench-n{:06x}-", rand::random::<u32>() & 0xff_ffff),
        };
        let mut users: Vec<String> = (0..args.users).map(|i| format!("{prefix}{i}")).collect();
        if args.pairs == Pairs::Existing {
            users = existing_pairs(users);
        }
        let users: Arc<[String]> = users.into();
        create_users(pool, args.clients, users.clone()).await?;
        let text = text();
        if args.pairs == Pairs::Existing {
            let started = std::time::Instant::now();
            let (names, body) = (users.clone(), Arc::<str>::from(text.as_str()));
            pool.spread(
                args.clients,
                users.len() / 2,
                {
                    let names = names.clone();
                    move |k| format!("the conversation of {} and {}", names[2 * k], names[2 * k + 1])
                },
                move |client, k| {
                    let (names, body) = (names.clone(), body.clone());
                    async move {
                        let (a, b) = (&names[2 * k], &names[2 * k + 1]);
                        let request_id = format!("bench-pair-{a}-{b}");
                        client.with_act_as(a.as_str())?.send_text(b, &body, Some(request_id)).await.map(drop)
                    }
                },
            )
            .await
            .context("set up the conversations")?;
            tracing::info!(
                conversations = users.len() / 2,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "conversations in place"
            );
        }
        Ok(SendWorkload { users, pairs: args.pairs, next_pair: AtomicU64::new(0), text })
    }

    /// One send; the client makes up the request id.
    pub async fn op(&self, client: &Client, rng: &mut StdRng) -> Result<(), OpError> {
        let (a, b) = match self.pairs {
            Pairs::Existing => {
                let k = rng.gen_range(0..self.users.len() / 2);
                (2 * k, 2 * k + 1)
            }
            Pairs::New => {
                let k = self.next_pair.fetch_add(1, Ordering::Relaxed);
                nth_pair(k, self.users.len()).ok_or_else(|| OpError::PairsExhausted { users: self.users.len() })?
            }
        };
        let (from, to) = if rng.gen_bool(0.5) { (a, b) } else { (b, a) };
        client.with_act_as(self.users[from].as_str())?.send_text(&self.users[to], &self.text, None).await?;
        Ok(())
    }
}

/// `users` in the order that makes (`[2k]`, `[2k+1]`) the pairs of `--pairs existing`: a
/// shuffle fixed by the number of users, the same on every run. Not (`bench-u{2k}`,
/// `bench-u{2k+1}`): the shard hash's low bits are the parity of the id's odd bytes, so the
/// conversation ids of such neighbours all land on half the shards (with two shards, on one).
fn existing_pairs(mut users: Vec<String>) -> Vec<String> {
    use rand::seq::SliceRandom as _;
    use rand::SeedableRng as _;
    let seed = users.len() as u64;
    users.shuffle(&mut StdRng::seed_from_u64(seed));
    users
}

/// The `k`-th of the `n (n - 1) / 2` pairs `(i, j)`, `i < j < n`, in the order
/// (0,1), (0,2), (1,2), (0,3), … ; `None` past the last.
fn nth_pair(k: u64, n: usize) -> Option<(usize, usize)> {
    // j is the largest with j (j - 1) / 2 <= k.
    let mut j = ((1.0 + (1.0 + 8.0 * k as f64).sqrt()) / 2.0) as u64;
    while j * (j - 1) / 2 > k {
        j -= 1;
    }
    while (j + 1) * j / 2 <= k {
        j += 1;
    }
    let i = k - j * (j - 1) / 2;
    let (i, j) = (usize::try_from(i).ok()?, usize::try_from(j).ok()?);
    (j < n).then_some((i, j))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{existing_pairs, nth_pair};

    #[test]
    fn existing_pairs_spread_over_the_shards() {
        let users: Vec<String> = (0..2000).map(|i| format!("bench-u{i}")).collect();
        let pairs = existing_pairs(users.clone());
        assert_eq!(pairs, existing_pairs(users), "the same pairs on every run");
        for shards in [2u32, 8] {
            let mut per_shard = vec![0usize; shards as usize];
            for pair in pairs.chunks(2) {
                let a = meridian_domain::UserId::parse(&pair[0]).unwrap();
                let b = meridian_domain::UserId::parse(&pair[1]).unwrap();
                let conversation = meridian_domain::ConversationId::c2c(&a, &b);
                per_shard[meridian_domain::shard::shard_for(conversation.as_str(), shards).0 as usize] += 1;
            }
            let fair = 1000 / shards as usize;
            assert!(per_shard.iter().all(|&n| n > fair * 3 / 4 && n < fair * 5 / 4), "{shards} shards: {per_shard:?}");
        }
    }

    #[test]
    fn pairs_are_enumerated_once_each_and_end() {
        let n = 40;
        let all: Vec<(usize, usize)> = (0..).map_while(|k| nth_pair(k, n)).collect();
        assert_eq!(all.len(), n * (n - 1) / 2);
        assert_eq!(&all[..4], &[(0, 1), (0, 2), (1, 2), (0, 3)]);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|&(i, j)| i < j && j < n));
        assert_eq!(nth_pair(1_000_000_000, 100_000), Some((38_440, 44_721)));
    }
}
