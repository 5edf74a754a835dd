//! The closed loop: C tasks, each with one request in flight, a warm-up, then the measured
//! window.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::time::Instant;

use crate::client_pool::ClientPool;
use crate::cpu_meter::CpuMeter;
use crate::workload::Workload;

/// What the measured window saw.
#[derive(Debug)]
pub struct LoopOutcome {
    /// Latency of every request that succeeded within the window, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Requests that failed within the window.
    pub errors: u64,
    /// The first failure's description, to tell the user why.
    pub first_error: Option<String>,
    /// Length of the window.
    pub elapsed: Duration,
    /// CPU seconds this process used during the window.
    pub loadgen_cpu_s: Option<f64>,
    /// CPU seconds the server processes used during the window.
    pub server_cpu_s: Option<f64>,
}

/// What one task saw.
struct TaskOutcome {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `tasks` tasks (task `t` on the pool's client `t`, round-robin) issuing requests back
/// to back for `warmup + duration`. A request counts when it completes within the measured
/// window `[start + warmup, start + warmup + duration)`, so the window's length is exactly
/// `duration`; a request still in flight at its end is waited for but not counted. CPU is
/// sampled at both ends of the window.
pub async fn run(
    workload: Arc<Workload>,
    pool: &ClientPool,
    tasks: usize,
    warmup: Duration,
    duration: Duration,
    meter: &CpuMeter,
) -> anyhow::Result<LoopOutcome> {
    let window_start = Instant::now() + warmup;
    let window_end = window_start + duration;
    tracing::info!(tasks, warmup_s = warmup.as_secs_f64(), duration_s = duration.as_secs_f64(), "load starts");

    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (workload, client) = (workload.clone(), pool.client(t).clone());
            tokio::spawn(async move {
                let mut rng = StdRng::from_entropy();
                let mut outcome =
                    TaskOutcome { latencies_us: Vec::with_capacity(1 << 14), errors: 0, first_error: None };
                while Instant::now() < window_end {
                    let sent = Instant::now();
                    let result = workload.op(&client, &mut rng).await;
                    let done = Instant::now();
                    if done < window_start || done >= window_end {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            let us = done.duration_since(sent).as_micros();
                            outcome.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Err(e) => {
                            outcome.errors += 1;
                            outcome.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                outcome
            })
        })
        .collect();

    tokio::time::sleep_until(window_start).await;
    let cpu_start = meter.sample();
    tokio::time::sleep_until(window_end).await;
    let cpu_end = meter.sample();
    let elapsed = window_end.duration_since(window_start);
    tracing::info!("measured window over; waiting for the requests in flight");

    let mut outcome = LoopOutcome {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        elapsed,
        loadgen_cpu_s: cpu_start.own_since(&cpu_end),
        server_cpu_s: cpu_start.servers_since(&cpu_end),
    };
    for handle in handles {
        let task = handle.await.context("join a load task")?;
        outcome.latencies_us.extend(task.latencies_us);
        outcome.errors += task.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = task.first_error;
        }
    }
    Ok(outcome)
}
