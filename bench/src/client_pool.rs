//! [`ClientPool`]: the load generator's independent clients.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use meridian_client::{Client, ClientConfig, ClientError};

/// N independent [`Client`]s with the admin token. Each builds its own channels, so each
/// holds its own gRPC connection to every node it calls.
///
/// Client `j` lists the endpoints starting from the `j`-th (rotated), so that with several
/// clients the load enters the region through every node, as a fleet of apps' would (the
/// peer's etcd client balances over its endpoints the same way).
#[derive(Debug, Clone)]
pub struct ClientPool {
    clients: Arc<[Client]>,
}

impl ClientPool {
    /// Builds `conns` clients; connections open lazily, on each client's first call.
    pub fn connect(endpoints: &[String], admin_token: &str, conns: usize) -> Result<Self, ClientError> {
        let clients = (0..conns.max(1))
            .map(|j| {
                let mut rotated = endpoints.to_vec();
                if !rotated.is_empty() {
                    let by = j % rotated.len();
                    rotated.rotate_left(by);
                }
                Client::with_config(ClientConfig::new(rotated, admin_token))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientPool { clients: clients.into() })
    }

    /// The client task `task` uses: round-robin over the pool.
    pub fn client(&self, task: usize) -> &Client {
        &self.clients[task % self.clients.len()]
    }

    /// Calls `f(client, i)` for every `i` in `0..items`, from `tasks` concurrent tasks (task
    /// `t` on client `t`, round-robin), and returns the results in the order of `i`. Stops at
    /// the first error, which names the item through `what(i)`.
    pub async fn spread<T, F, Fut>(
        &self,
        tasks: usize,
        items: usize,
        what: impl Fn(usize) -> String,
        f: F,
    ) -> anyhow::Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(Client, usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ClientError>> + Send,
    {
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for t in 0..tasks.clamp(1, items.max(1)) {
            let (client, next, failed, f) = (self.client(t).clone(), next.clone(), failed.clone(), f.clone());
            handles.push(tokio::spawn(async move {
                let mut done = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items {
                        break;
                    }
                    match f(client.clone(), i).await {
                        Ok(value) => done.push((i, value)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err((i, e));
                        }
                    }
                }
                Ok(done)
            }));
        }
        let mut results = Vec::with_capacity(items);
        let mut first_error = None;
        for handle in handles {
            match handle.await.context("join a setup task")? {
                Ok(done) => results.extend(done),
                Err((i, e)) => {
                    first_error.get_or_insert_with(|| anyhow::Error::new(e).context(what(i)));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        results.sort_unstable_by_key(|(i, _)| *i);
        Ok(results.into_iter().map(|(_, value)| value).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_start_from_different_endpoints() {
        let endpoints: Vec<String> = ["n1:1", "n2:2", "n3:3"].iter().map(|s| s.to_string()).collect();
        let pool = ClientPool::connect(&endpoints, "token", 4).expect("pool");
        let first: Vec<String> = (0..4).map(|j| pool.client(j).endpoints()[0].clone()).collect();
        assert_eq!(first, ["http://n1:1", "http://n2:2", "http://n3:3", "http://n1:1"]);
        // Round-robin: task 5 shares client 1.
        assert_eq!(pool.client(5).endpoints(), pool.client(1).endpoints());
    }

    #[tokio::test]
    async fn spread_returns_results_in_item_order() {
        let pool = ClientPool::connect(&["n1:1".to_string()], "token", 2).expect("pool");
        let squares = pool
            .spread(3, 10, |i| format!("item {i}"), |_client, i| async move { Ok::<_, ClientError>(i * i) })
            .await
            .expect("no errors");
        assert_eq!(squares, (0..10).map(|i| i * i).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn spread_names_the_failed_item() {
        let pool = ClientPool::connect(&["n1:1".to_string()], "token", 1).expect("pool");
        let err = pool
            .spread(
                2,
                5,
                |i| format!("create user {i}"),
                |_client, i| async move {
                    if i == 3 {
                        Err(ClientError::InvalidConfig { detail: "boom".into() })
                    } else {
                        Ok(())
                    }
                },
            )
            .await
            .expect_err("item 3 fails");
        assert!(format!("{err:#}").contains("create user 3"), "{err:#}");
    }
}
