//! A simple closed-loop send load: C concurrent tasks, each with one send in flight, over
//! the endpoints in `MERIDIAN_ENDPOINT`, as admin acting as random users. Prints sends/s.
//! This is a smoke-level measurement; the real benchmark is `meridian-bench`.
//!
//! ```sh
//! ./scripts/dev.sh &                       # a local 3-node region
//! source .meridian-dev/dev.env
//! cargo build -p meridian-client --example send_loop
//! ./target/debug/examples/send_loop 64 8   # 64 clients for 8 seconds
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::{Client, TokenKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let users = 200usize;
    let admin = Client::from_env(TokenKind::Admin)?;
    for u in 0..users {
        admin.create_user(&format!("load{u}"), None).await?;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (admin, acked, errors) = (admin.clone(), acked.clone(), errors.clone());
            tokio::spawn(async move {
                let mut n = c;
                while Instant::now() < deadline {
                    let from = n % users;
                    let to = (n * 7 + 1) % users;
                    n += clients;
                    if from == to {
                        continue;
                    }
                    let Ok(me) = admin.with_act_as(format!("load{from}")) else { break };
                    match me.send_text(&format!("load{to}"), &"x".repeat(200), None).await {
                        Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = acked.load(Ordering::Relaxed);
    println!(
        "clients={clients} seconds={secs:.1} acked={ok} errors={} sends_per_s={:.0}",
        errors.load(Ordering::Relaxed),
        ok as f64 / secs
    );
    Ok(())
}
