//! [`SendWorkload`]: one-to-one sends between random pairs of users.

use std::sync::Arc;

use meridian_client::Client;
use rand::rngs::StdRng;
use rand::Rng as _;

use crate::bench_args::BenchArgs;
use crate::client_pool::ClientPool;
use crate::workload::{create_users, text, OpError};

/// Sends of a 200-byte text from a random user to another random user.
#[derive(Debug)]
pub struct SendWorkload {
    users: Arc<[String]>,
    text: String,
}

impl SendWorkload {
    /// Creates the `--users` users (concurrently, `--clients` at a time).
    pub async fn prepare(args: &BenchArgs, pool: &ClientPool) -> anyhow::Result<Self> {
        let users: Arc<[String]> = (0..args.users).map(|i| format!("bench-u{i}")).collect();
        create_users(pool, args.clients, users.clone()).await?;
        Ok(SendWorkload { users, text: text() })
    }

    /// One send; the client makes up the request id.
    pub async fn op(&self, client: &Client, rng: &mut StdRng) -> Result<(), OpError> {
        let n = self.users.len();
        let from = rng.gen_range(0..n);
        // Any user but the sender: draw from the other n - 1 and skip over the sender.
        let to = (from + rng.gen_range(1..n)) % n;
        client.with_act_as(self.users[from].as_str())?.send_text(&self.users[to], &self.text, None).await?;
        Ok(())
    }
}
