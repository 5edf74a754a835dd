//! The `meridian` command: run a node, start a local dev region, or talk to a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_client::cli::ClientCommand;
use meridian_node::{config::NodeConfig, dev, server};

/// The process's Rust allocations go to jemalloc: a send's path allocates and frees many small
/// buffers (frames, entries, futures) across the runtime's and the WAL's threads, where glibc's
/// malloc took an eighth of the nodes' CPU under load. Measured against glibc and mimalloc in
/// ADR 0006, decision 16. RocksDB's C++ allocations stay with the C library's malloc (under 1 %
/// of the CPU).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "meridian", version, about = "Meridian: a self-hostable instant-messaging backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one node of a region.
    Node {
        /// The node's configuration file (TOML); see docs/config.md.
        #[arg(long)]
        config: PathBuf,
    },
    /// Starts a 3-node region on loopback as child processes, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Mints an admin token offline from a node configuration's secret and prints it.
    AdminToken {
        /// A node configuration file of the region.
        #[arg(long)]
        config: PathBuf,
        /// Who the token names (logged by nodes).
        #[arg(long, default_value = "ops")]
        subject: String,
        /// Lifetime of the token, in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_seconds: u64,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Node { config } = &cli.command {
        // The runtime's size is configured, so the config is read before it starts (and read
        // again, with errors reported, once logging is up).
        if let Some(n) = NodeConfig::load(config).ok().and_then(|c| c.worker_threads) {
            builder.worker_threads(n.clamp(1, 1024));
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Node { config } => {
                init_tracing("info,openraft=warn");
                match NodeConfig::load(&config) {
                    Ok(cfg) => server::run(cfg).await,
                    Err(e) => Err(e),
                }
            }
            Command::Dev(args) => {
                init_tracing("info");
                dev::run(args).await
            }
            Command::AdminToken { config, subject, ttl_seconds } => {
                init_tracing("warn");
                NodeConfig::load(&config).map(|cfg| {
                    let signer = meridian_node::auth::TokenSigner::from_config(&cfg.auth);
                    let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
                    let expires = chrono::Utc::now().timestamp().saturating_add(ttl);
                    println!("{}", signer.issue_admin(&subject, expires));
                })
            }
            Command::Client(cmd) => {
                init_tracing("warn");
                return meridian_client::cli::run_and_report(cmd).await;
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
