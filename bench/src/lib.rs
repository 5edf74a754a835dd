//! `meridian-bench`: Meridian's closed-loop load generator, the counterpart of the peer's
//! `etcd-load` (`/work/shared/peer-bench`). It drives the real binary through
//! `meridian-client`, exactly as an app would, and prints one human line and one JSON line
//! with the same fields as the peer's (plus the workload and the servers' CPU), so the two
//! can be set side by side.
//!
//! A run: set up the workload's data (idempotent, so reruns are fast), then C tasks, each
//! with one request in flight, spread round-robin over N independent clients (N gRPC
//! connections per node), issue requests back to back: a warm-up that is not measured,
//! then the measured window. Latencies are kept in microseconds; percentiles come from the
//! full sorted vector.
//!
//! Module map:
//! - [`BenchArgs`] (`bench_args.rs`): the command line, and its validation.
//! - [`Workload`] (`workload.rs`): what one measured request is; its setup and request live
//!   in `send.rs`, `history.rs` and `conversations.rs`.
//! - [`ClientPool`] (`client_pool.rs`): the N independent clients, an admin token acting as
//!   each request's user, and the concurrent setup helper.
//! - `closed_loop.rs`: the C tasks, the warm-up and the measured window.
//! - [`LatencyStats`] (`latency_stats.rs`): ops/s, mean and percentiles (a pure function).
//! - [`CpuMeter`] (`cpu_meter.rs`): CPU seconds of this process and of the server nodes,
//!   from `/proc/<pid>/stat`.
//! - [`Report`] (`report.rs`): the summary line and the JSON line.
//! - `fanout.rs`: the `fanout` workload, which is not a loop of requests but group messages
//!   to members that all hold a live stream; [`FanoutTracker`] (`fanout_tracker.rs`) matches
//!   the members' receipts to the messages in flight, [`FanoutReport`] (`fanout_report.rs`)
//!   prints the result.
//! - [`Outcome`]: either report.
//!
//! Depends on `meridian-client` only, never on the server crates: it sees Meridian through
//! its API. Nothing depends on it.

mod bench_args;
mod client_pool;
mod closed_loop;
mod conversations;
mod cpu_meter;
mod fanout;
mod fanout_report;
mod fanout_tracker;
mod history;
mod latency_stats;
mod report;
mod send;
mod workload;

use std::time::Duration;

use anyhow::Context as _;

pub use bench_args::{BenchArgs, Consistency, WorkloadKind};
pub use client_pool::ClientPool;
pub use cpu_meter::CpuMeter;
pub use fanout_report::FanoutReport;
pub use fanout_tracker::FanoutTracker;
pub use latency_stats::LatencyStats;
pub use report::Report;
pub use workload::Workload;

/// What a run prints: a closed-loop workload's report, or a fan-out run's.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Load(Report),
    Fanout(FanoutReport),
}

impl Outcome {
    /// The line for a person.
    pub fn summary_line(&self) -> String {
        match self {
            Outcome::Load(r) => r.summary_line(),
            Outcome::Fanout(r) => r.summary_line(),
        }
    }

    /// The line for a program: one JSON object.
    pub fn json_line(&self) -> Result<String, serde_json::Error> {
        match self {
            Outcome::Load(r) => r.json_line(),
            Outcome::Fanout(r) => r.json_line(),
        }
    }
}

/// Runs one benchmark: setup, warm-up, measured window. Returns the report to print.
pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    args.validate()?;
    if args.workload == WorkloadKind::Fanout {
        return Ok(Outcome::Fanout(fanout::run(&args).await?));
    }
    run_closed_loop(args).await.map(Outcome::Load)
}

/// Runs a closed-loop workload (every one but `fanout`).
async fn run_closed_loop(args: BenchArgs) -> anyhow::Result<Report> {
    let pool = ClientPool::connect(&args.endpoint, &args.admin_token, args.conns).context("build the clients")?;

    let setup_started = std::time::Instant::now();
    let workload =
        Workload::prepare(&args, &pool).await.with_context(|| format!("set up the {} workload", args.workload))?;
    tracing::info!(elapsed_ms = setup_started.elapsed().as_millis() as u64, "setup done");

    let meter = if args.server_pids.is_empty() {
        CpuMeter::discover(&args.endpoint)
    } else {
        CpuMeter::new(args.server_pids.clone())
    };
    tracing::info!(server_pids = ?meter.server_pids(), "measuring server CPU");

    let outcome = closed_loop::run(
        workload,
        &pool,
        args.clients,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        &meter,
    )
    .await?;
    if let Some(error) = &outcome.first_error {
        tracing::warn!(errors = outcome.errors, first = %error, "some requests failed");
    }
    let stats = LatencyStats::from_latencies(outcome.latencies_us, outcome.elapsed);
    Ok(Report::new(&args, &stats, outcome.errors, outcome.loadgen_cpu_s, outcome.server_cpu_s))
}
