//! Smoke test: the real `meridian-bench` against a real 3-node dev region (`meridian dev`),
//! every workload once, briefly. Asserts that each JSON line is complete and consistent,
//! never how fast anything was: the machine may be busy.
//!
//! Needs the `meridian` binary next to the bench's: `cargo build -p meridian-node` first.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../node/tests/cluster/common/dev_region.rs"]
mod dev_region;
use dev_region::DevRegion;

/// How long one bench run may take, setup included, before the test gives up on it.
const BENCH_TIMEOUT: Duration = Duration::from_secs(90);

/// The fields of the JSON line: the peer's, then ours.
const FIELDS: [&str; 16] = [
    "label",
    "workload",
    "clients",
    "conns",
    "ops",
    "elapsed_s",
    "ops_per_s",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "errors",
    "loadgen_cpu_s",
    "server_cpu_s",
];

/// Runs the bench binary to completion and returns its JSON line, parsed, and its stderr.
fn bench(region: &DevRegion, workload: &str, extra: &[String]) -> (Value, String) {
    let out_dir = region.dir.path();
    let (stdout_path, stderr_path) =
        (out_dir.join(format!("bench-{workload}.out")), out_dir.join(format!("bench-{workload}.err")));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .arg(workload)
        .args(["--endpoint", &region.endpoint, "--admin-token", &region.admin_token])
        .args(["--clients", "4", "--conns", "2", "--duration", "2", "--warmup", "1"])
        .args(["--users", "50", "--convs", "5", "--msgs", "60", "--owners", "4"])
        .args(extra)
        .env_remove("MERIDIAN_ENDPOINT")
        .env_remove("MERIDIAN_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BENCH_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meridian-bench {workload} ran past {BENCH_TIMEOUT:?}:\n{}", read(&stderr_path));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (read(&stdout_path), read(&stderr_path));
    assert!(status.success(), "meridian-bench {workload} failed ({status}):\n{stderr}");
    eprintln!("meridian-bench {workload} took {:?}:\n{stdout}", started.elapsed());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a summary line and a JSON line expected:\n{stdout}\n{stderr}");
    assert!(lines[0].starts_with(&format!("meridian-{workload}: workload={workload} ")), "{}", lines[0]);
    let report = serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[1]));
    (report, stderr)
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A fan-out report's numbers agree with each other: every completed message was a receipt
/// of every member, and the latencies are ordered.
fn assert_fanout_consistent(report: &Value) {
    let num = |field: &str| report[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number: {report}"));
    assert_eq!(report["workload"], "fanout", "{report}");
    assert_eq!(report["durable"], true, "{report}");
    assert_eq!(report["members"].as_u64(), Some(12), "{report}");
    assert_eq!(report["conns"].as_u64(), Some(3), "12 streams, 4 to a client, on 3 nodes: {report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let (messages, deliveries) = (report["messages"].as_u64().unwrap(), report["deliveries"].as_u64().unwrap());
    assert!(messages > 0, "no message reached every member: {report}");
    // Receipts of messages completed in the window, plus some of those that straddle it.
    assert!(deliveries >= messages * 12 - 2 * 12, "{report}");
    assert!(num("delivery_p50_ms") <= num("fanout_done_p50_ms"), "{report}");
    assert!(num("fanout_done_p50_ms") <= num("fanout_done_p99_ms"), "{report}");
    assert!(num("fanout_done_p99_ms") <= num("fanout_done_max_ms"), "{report}");
    assert!(num("server_cpu_s") > 0.0, "{report}");
}

/// The report's numbers agree with each other; none is about speed.
fn assert_consistent(workload: &str, report: &Value) {
    let object = report.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut expected = FIELDS.to_vec();
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{report}");

    let num = |field: &str| report[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number: {report}"));
    assert_eq!(report["workload"], workload);
    assert_eq!(report["label"], format!("meridian-{workload}"));
    assert_eq!((report["clients"].as_u64(), report["conns"].as_u64()), (Some(4), Some(2)));
    let ops = report["ops"].as_u64().unwrap();
    assert!(ops > 0, "no request succeeded: {report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let (elapsed, ops_per_s) = (num("elapsed_s"), num("ops_per_s"));
    assert!(elapsed > 0.0, "{report}");
    let expected_rate = ops as f64 / elapsed;
    assert!((ops_per_s - expected_rate).abs() <= expected_rate * 0.01, "ops_per_s is not ops / elapsed_s: {report}");
    let (p50, p90, p99, p999, max) = (num("p50_ms"), num("p90_ms"), num("p99_ms"), num("p999_ms"), num("max_ms"));
    assert!(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, "percentiles out of order: {report}");
    assert!(max > 0.0, "{report}");
    let mean = num("mean_ms");
    assert!(mean > 0.0 && mean <= max, "{report}");
    assert!(num("loadgen_cpu_s") >= 0.0, "{report}");
    assert!(num("server_cpu_s") >= 0.0, "{report}");
}

#[test]
fn every_workload_reports_consistent_numbers_against_a_dev_region() {
    let started = Instant::now();
    let meridian = Path::new(env!("CARGO_BIN_EXE_meridian-bench")).parent().unwrap().join("meridian");
    let region = DevRegion::start(&meridian);
    let mut pids = region.node_pids();
    pids.sort_unstable();
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    // How the bench logs the server processes it measures.
    let measured = format!("server_pids={pids:?}");

    // Server CPU of the first run from the pids given, of the others from discovery, which
    // must find exactly this region's nodes (other regions may run on the machine).
    let (send, send_log) = bench(&region, "send", &["--server-pids".into(), pid_list.join(",")]);
    assert_consistent("send", &send);
    assert!(send_log.contains(&measured), "{measured} expected in:\n{send_log}");
    assert!(send["server_cpu_s"].as_f64().unwrap() > 0.0, "three nodes under load used no CPU: {send}");

    let (history, history_log) = bench(&region, "history", &[]);
    assert_consistent("history", &history);
    assert!(history_log.contains(&measured), "discovery should find {measured}:\n{history_log}");

    let (conversations, _) = bench(&region, "conversations", &[]);
    assert_consistent("conversations", &conversations);

    // A rerun finds its data in place: the setup is idempotent.
    let (history_again, rerun_log) = bench(&region, "history", &[]);
    assert_consistent("history", &history_again);
    assert!(rerun_log.contains("sent=0"), "the rerun should preload nothing:\n{rerun_log}");

    let (fanout, _) =
        bench(&region, "fanout", &["--members".into(), "12".into(), "--streams-per-conn".into(), "4".into()]);
    assert_fanout_consistent(&fanout);

    drop(region);
    eprintln!("smoke test took {:?}", started.elapsed());
}
