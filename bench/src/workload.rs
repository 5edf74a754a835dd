//! [`Workload`]: the request the closed loop measures, and the setup that precedes it.

use std::sync::Arc;

use anyhow::Context as _;
use meridian_client::{Client, ClientError};
use rand::rngs::StdRng;

use crate::bench_args::{BenchArgs, WorkloadKind};
use crate::client_pool::ClientPool;
use crate::conversations::ConversationsWorkload;
use crate::history::HistoryWorkload;
use crate::send::SendWorkload;

/// Size of every message text the bench sends, in bytes (the peer's `--val-size`).
pub(crate) const TEXT_BYTES: usize = 200;

/// One workload, its data set up and ready to measure.
#[derive(Debug)]
pub enum Workload {
    /// See [`WorkloadKind::Send`].
    Send(SendWorkload),
    /// See [`WorkloadKind::History`].
    History(HistoryWorkload),
    /// See [`WorkloadKind::Conversations`].
    Conversations(ConversationsWorkload),
}

/// Why one measured request failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The call failed.
    #[error(transparent)]
    Call(#[from] ClientError),
    /// A history page came back shorter than the preloaded conversation allows.
    #[error("short history page: {got} messages from seq {start}, expected {want}")]
    ShortPage { start: u64, got: usize, want: usize },
    /// A conversation list came back shorter than the setup made it.
    #[error("short conversation list: {got} conversations, expected at least {want}")]
    ShortList { got: usize, want: usize },
    /// `send --pairs new` used every pair of its users.
    #[error("every pair of the {users} users has spoken: raise --users")]
    PairsExhausted { users: usize },
}

impl Workload {
    /// Creates the workload's users and data. Idempotent: a rerun finds them in place.
    pub async fn prepare(args: &BenchArgs, pool: &ClientPool) -> anyhow::Result<Arc<Workload>> {
        let workload = match args.workload {
            WorkloadKind::Send => Workload::Send(SendWorkload::prepare(args, pool).await?),
            WorkloadKind::History => Workload::History(HistoryWorkload::prepare(args, pool).await?),
            WorkloadKind::Conversations => Workload::Conversations(ConversationsWorkload::prepare(args, pool).await?),
            WorkloadKind::Fanout => anyhow::bail!("fanout is not a closed loop of requests: see fanout.rs"),
        };
        Ok(Arc::new(workload))
    }

    /// One measured request through `client` (an admin client; the request acts as its user).
    pub async fn op(&self, client: &Client, rng: &mut StdRng) -> Result<(), OpError> {
        match self {
            Workload::Send(w) => w.op(client, rng).await,
            Workload::History(w) => w.op(client, rng).await,
            Workload::Conversations(w) => w.op(client, rng).await,
        }
    }
}

/// Setup requests in flight at once, whatever `--clients` is: setup is not measured, and a
/// 1-client run should not spend a minute creating 10,000 accounts one by one.
const SETUP_CONCURRENCY: usize = 64;

/// Creates `users` from at least [`SETUP_CONCURRENCY`] concurrent tasks; existing accounts
/// are left as they are.
pub(crate) async fn create_users(pool: &ClientPool, tasks: usize, users: Arc<[String]>) -> anyhow::Result<()> {
    let tasks = tasks.max(SETUP_CONCURRENCY);
    let started = std::time::Instant::now();
    let names = users.clone();
    let created = pool
        .spread(
            tasks,
            users.len(),
            move |i| format!("create user {}", names[i]),
            move |client, i| {
                let users = users.clone();
                async move { client.create_user(&users[i], None).await.map(|r| r.created) }
            },
        )
        .await
        .context("create the users")?;
    let new = created.iter().filter(|c| **c).count();
    tracing::info!(users = created.len(), new, elapsed_ms = started.elapsed().as_millis() as u64, "users in place");
    Ok(())
}

/// A message text of [`TEXT_BYTES`] bytes.
pub(crate) fn text() -> String {
    let mut text = String::from("meridian-bench ");
    text.extend(std::iter::repeat_n('x', TEXT_BYTES - text.len()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_exactly_the_peers_value_size() {
        assert_eq!(text().len(), TEXT_BYTES);
    }
}
