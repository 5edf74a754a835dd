//! Smoke test: the real `meridian-bench` against a real 3-node dev region (`meridian dev`),
//! every workload once, briefly. Asserts that each JSON line is complete and consistent,
//! never how fast anything was: the machine may be busy.
//!
//! Needs the `meridian` binary next to the bench's: `cargo build -p meridian-node` first.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::Value;

/// How long the dev region may take to elect its leaders (a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one bench run may take, setup included, before the test gives up on it.
const BENCH_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the dev region gets to stop after SIGTERM (it gives its nodes 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A `meridian dev` region in a temporary directory, stopped (SIGTERM, then wait) on drop,
/// panics included.
struct DevRegion {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
    admin_token: String,
}

impl DevRegion {
    /// Starts the region on a random free-looking base port; tries another port if the
    /// region dies before it is ready (e.g. a port was taken).
    fn start() -> DevRegion {
        let meridian = Path::new(env!("CARGO_BIN_EXE_meridian-bench")).parent().unwrap().join("meridian");
        assert!(meridian.exists(), "{} is missing: build it first: cargo build -p meridian-node", meridian.display());
        let mut last_failure = String::new();
        for _ in 0..3 {
            let base_port = 27100 + rand::thread_rng().gen_range(0..300u16) * 10;
            let dir = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
            let child = Command::new(&meridian)
                .arg("dev")
                .arg("--dir")
                .arg(dir.path())
                .arg("--base-port")
                .arg(base_port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            let mut region = DevRegion { child, dir, endpoint: String::new(), admin_token: String::new() };
            match region.wait_ready() {
                Ok(()) => return region,
                Err(why) => last_failure = format!("base port {base_port}: {why}\n{}", region.log()),
            }
        }
        panic!("the dev region did not start: {last_failure}");
    }

    /// Waits for `dev.env` and reads the endpoints and the admin token from it.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let env_path = self.dir.path().join("dev.env");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("meridian dev exited: {status}"));
            }
            let env = std::fs::read_to_string(&env_path).unwrap_or_default();
            let var =
                |name: &str| env.lines().find_map(|l| l.strip_prefix(&format!("export {name}=")).map(str::to_owned));
            if let (Some(endpoint), Some(token)) = (var("MERIDIAN_ENDPOINT"), var("MERIDIAN_ADMIN_TOKEN")) {
                eprintln!("dev region ready after {:?}: {endpoint}", started.elapsed());
                (self.endpoint, self.admin_token) = (endpoint, token);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("no {} after {READY_TIMEOUT:?}", env_path.display()))
    }

    /// The pids of the three nodes, from their pid files.
    fn node_pids(&self) -> Vec<u32> {
        (1..=3)
            .map(|n| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("node-{n}.pid"))).unwrap();
                text.trim().parse().unwrap()
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }
}

impl Drop for DevRegion {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGTERM lets `meridian dev` stop its nodes; SIGKILL would orphan them.
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("meridian dev did not stop within {STOP_TIMEOUT:?}: killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

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
    let region = DevRegion::start();
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

    drop(region);
    eprintln!("smoke test took {:?}", started.elapsed());
}
