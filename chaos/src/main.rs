//! `meridian-chaos run`: a fault campaign against real `meridian node` processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meridian_chaos::campaign::{self, CampaignOptions};
use meridian_chaos::faults::FaultKind;

#[derive(Debug, Parser)]
#[command(
    name = "meridian-chaos",
    about = "Fault campaigns against a real Meridian region, judged by a history checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a run's binary comes from and where its directory goes: every subcommand's.
#[derive(Debug, clap::Args)]
struct Output {
    /// The `meridian` binary (default: next to this one, or $MERIDIAN_BIN).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where run directories (history, node logs, data) are made.
    #[arg(long, default_value = "/tmp/meridian-chaos")]
    dir: PathBuf,
    /// Keep the run directory even when the run passes.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one campaign and prints its summary; exits non-zero on any violation.
    Run {
        /// Seed of the fault schedule and the workload (random when absent; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How long faults are injected and the workload runs: `90s`, `5m`, `30m`.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// `all` or a comma-separated list: kill, pause, isolate, split, one-way, delay,
        /// loss, disk-full, clock-skew.
        #[arg(long, default_value = "all")]
        faults: String,
        /// Nodes in the region: 3 or 5.
        #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
        nodes: usize,
        #[command(flatten)]
        out: Output,
        /// Concurrent workload clients.
        #[arg(long, default_value_t = 12)]
        clients: u32,
        /// gRPC port on each node's loopback address (proxy +1, HTTP +2).
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Switch the cold archive on with this hot window (`2s`), in a directory of the run,
        /// so that faults hit sealing and cold reads: the final history is read across the
        /// archive and the replay reads its segments.
        #[arg(long, value_parser = parse_duration)]
        archive_hot_window: Option<Duration>,
    },
    /// Runs a campaign across three regions (sg, kr open; de strict; one node each): kills
    /// whole regions, cuts and delays the links between them; exits non-zero on any
    /// violation.
    Regions {
        /// Seed of the fault schedule and the workload (random when absent; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How long faults are injected and the workload runs: `60s`, `30m`.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        #[command(flatten)]
        out: Output,
        /// Concurrent workload clients.
        #[arg(long, default_value_t = 6)]
        clients: u32,
        /// First port; each region takes 20 from there.
        #[arg(long, default_value_t = 7600)]
        base_port: u16,
    },
    /// The disaster-recovery drill: the regions deployment with a standby for `--region`;
    /// kills the region's primary mid-load, promotes the standby, fails back, and reports RPO,
    /// RTO and the checker's verdict; exits non-zero on any violation other than the
    /// reported RPO (docs/dr.md).
    Drill {
        /// The region whose primary is lost: sg, kr or de.
        #[arg(long, default_value = "de")]
        region: String,
        /// Seed of the workload (random when absent; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How long the workload runs: the kill is at a third, the failback at two thirds.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Freeze the standby this long before the kill (its link cut): the RPO is then the
        /// sends acknowledged meanwhile.
        #[arg(long, value_parser = parse_duration)]
        cut_standby: Option<Duration>,
        #[command(flatten)]
        out: Output,
        /// Concurrent workload clients.
        #[arg(long, default_value_t = 6)]
        clients: u32,
        /// First port; each region takes 20 from there.
        #[arg(long, default_value_t = 7700)]
        base_port: u16,
    },
    /// One scenario on purpose: a shard leader cut off with proposals in flight until the
    /// others' snapshot overtakes them; checks that they are answered, that the node takes
    /// writes when it leads again, and that every replica holds every acknowledged send
    /// (ADR 0006, decision 10). Exits non-zero on any failed check.
    Deposed {
        #[command(flatten)]
        out: Output,
        /// gRPC port on each node's loopback address (proxy +1, HTTP +2, peer +3).
        #[arg(long, default_value_t = 7800)]
        base_port: u16,
    },
}

/// `meridian-chaos drill`.
fn run_drill(options: meridian_chaos::drill::DrillOptions, keep: bool) -> ExitCode {
    let (seed, run_dir) = (options.seed, options.dir.clone());
    let outcome = block_on_interruptible(meridian_chaos::drill::run(options));
    verdict(outcome, "drill", Some(seed), &run_dir, keep)
}

/// `meridian-chaos regions`.
fn run_regions(seed: Option<u64>, duration: Duration, out: Output, clients: u32, base_port: u16) -> ExitCode {
    let Output { binary, dir, keep } = out;
    let seed = seed.unwrap_or_else(|| u64::from(rand::random::<u16>()));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run_dir = dir.join(format!("regions-seed-{seed}-{stamp}"));
    let options = meridian_chaos::regions::RegionsOptions {
        seed,
        duration,
        binary: binary.unwrap_or_else(default_binary),
        dir: run_dir.clone(),
        clients,
        base_port,
    };
    let outcome = block_on_interruptible(meridian_chaos::regions::run(options));
    verdict(outcome, "regions", Some(seed), &run_dir, keep)
}

/// Runs `run` on a multi-threaded runtime until it ends or Ctrl-C.
fn block_on_interruptible(run: impl std::future::Future<Output = anyhow::Result<bool>>) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("start the async runtime: {e}"))?;
    runtime.block_on(async move {
        tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })
}

/// Prints a run's verdict, removes its directory when it passed (unless `keep`), and gives
/// the exit code.
fn verdict(
    outcome: anyhow::Result<bool>,
    kind: &str,
    seed: Option<u64>,
    run_dir: &std::path::Path,
    keep: bool,
) -> ExitCode {
    let run = match seed {
        Some(seed) => format!("{kind}, seed {seed}"),
        None => kind.to_owned(),
    };
    match outcome {
        Ok(true) => {
            let besides = if kind == "drill" { " besides the reported RPO" } else { "" };
            println!("PASS: no violation{besides} ({run})");
            if !keep {
                let _ = std::fs::remove_dir_all(run_dir);
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("VIOLATIONS ({run}); logs kept in {}", run_dir.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("FAILED ({run}): {e:#}; logs kept in {}", run_dir.display());
            ExitCode::FAILURE
        }
    }
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("a region has 3 or 5 nodes, not {s}")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit {unit:?} in {s:?}: use s, m or h")),
    }
}

fn default_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("meridian")))
        .unwrap_or_else(|| PathBuf::from("meridian"))
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let (seed, duration, faults, nodes, binary, dir, keep, clients, base_port, archive) = match Cli::parse().command {
        Command::Run { seed, duration, faults, nodes, out, clients, base_port, archive_hot_window } => {
            (seed, duration, faults, nodes, out.binary, out.dir, out.keep, clients, base_port, archive_hot_window)
        }
        Command::Regions { seed, duration, out, clients, base_port } => {
            return run_regions(seed, duration, out, clients, base_port)
        }
        Command::Deposed { out: Output { binary, dir, keep }, base_port } => {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let run_dir = dir.join(format!("deposed-{stamp}"));
            let options = meridian_chaos::deposed::DeposedOptions {
                binary: binary.unwrap_or_else(default_binary),
                dir: run_dir.clone(),
                base_port,
            };
            let outcome = block_on_interruptible(meridian_chaos::deposed::run(options));
            return verdict(outcome, "deposed", None, &run_dir, keep);
        }
        Command::Drill {
            region,
            seed,
            duration,
            cut_standby,
            out: Output { binary, dir, keep },
            clients,
            base_port,
        } => {
            let seed = seed.unwrap_or_else(|| u64::from(rand::random::<u16>()));
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let options = meridian_chaos::drill::DrillOptions {
                seed,
                duration,
                binary: binary.unwrap_or_else(default_binary),
                dir: dir.join(format!("drill-{region}-seed-{seed}-{stamp}")),
                clients,
                base_port,
                region,
                cut_standby,
            };
            return run_drill(options, keep);
        }
    };
    let faults = match FaultKind::parse_list(&faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = seed.unwrap_or_else(|| u64::from(rand::random::<u16>()));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run_dir = dir.join(format!("seed-{seed}-{stamp}"));
    let options = CampaignOptions {
        seed,
        duration,
        faults,
        nodes,
        shards: 8,
        binary: binary.unwrap_or_else(default_binary),
        dir: run_dir.clone(),
        keep,
        clients,
        users: 40,
        conversations: 30,
        base_port,
        archive_hot_window: archive.map(|d| d.as_secs().max(1)),
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("error: start the async runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        println!("meridian-chaos: seed {seed}, {} s, {} nodes", duration.as_secs(), nodes);
        let result = tokio::select! {
            r = campaign::run(options) => r,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the campaign killed the nodes, unmounted the tmpfs and removed the
                // firewall table; the run directory goes too.
                if !keep {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
                eprintln!("interrupted; cleaned up");
                return ExitCode::from(130);
            }
        };
        match result {
            Ok(r) => {
                println!("{}", r.summary());
                if r.report.is_ok() {
                    println!("PASS: no violation (seed {seed})");
                    ExitCode::SUCCESS
                } else {
                    println!("VIOLATIONS (seed {seed}); history and node logs kept in {}", r.dir.display());
                    for v in r.report.violations.iter().take(20) {
                        println!("  {v}");
                    }
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: campaign failed to run (seed {seed}): {e:#}");
                for n in 1..=nodes {
                    let log = std::fs::read_to_string(run_dir.join(format!("node-{n}.log"))).unwrap_or_default();
                    // A panic's message, wherever it is in the log (its backtrace follows it).
                    for (i, line) in log.lines().enumerate().filter(|(_, l)| l.contains("panicked at")) {
                        eprintln!("--- node-{n}.log line {}: {line}", i + 1);
                        for next in log.lines().skip(i + 1).take(2) {
                            eprintln!("{next}");
                        }
                    }
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- node-{n}.log (last lines)");
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
                // The run directory is the evidence of what stopped the campaign: kept.
                eprintln!("logs and data kept in {}", run_dir.display());
                ExitCode::FAILURE
            }
        }
    })
}
