//! `meridian-bench`: runs one workload against a Meridian region and prints a summary line,
//! then one JSON line (see the library's docs).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use meridian_bench::BenchArgs;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // Progress and warnings go to stderr; stdout holds only the two result lines.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,meridian_bench=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(meridian_bench::run(args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match report.json_line() {
        Ok(json) => {
            println!("{}", report.summary_line());
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: serialize the report: {e}");
            ExitCode::FAILURE
        }
    }
}
