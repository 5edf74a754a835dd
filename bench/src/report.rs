//! [`Report`]: one run's result, as the summary line and the JSON line.

use serde::{Deserialize, Serialize};

use crate::bench_args::BenchArgs;
use crate::latency_stats::LatencyStats;

/// One run's result. Serialized as one JSON line whose fields are the peer's (`etcd-load`)
/// plus `workload` and `server_cpu_s`, in this order. Rounded like the peer's output:
/// seconds of wall time and milliseconds to 3 decimals, ops/s to 1, CPU seconds to 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub workload: String,
    /// Concurrent requests (closed-loop tasks).
    pub clients: usize,
    /// Independent clients (connections per node).
    pub conns: usize,
    /// Requests that succeeded within the measured window.
    pub ops: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Requests that failed within the measured window.
    pub errors: u64,
    /// CPU seconds of the load generator during the window; null where `/proc` is missing.
    pub loadgen_cpu_s: Option<f64>,
    /// CPU seconds of the server processes during the window, summed; null when none was
    /// found or readable.
    pub server_cpu_s: Option<f64>,
}

impl Report {
    /// The report of a run with `args`.
    pub fn new(
        args: &BenchArgs,
        stats: &LatencyStats,
        errors: u64,
        loadgen_cpu_s: Option<f64>,
        server_cpu_s: Option<f64>,
    ) -> Report {
        Report {
            label: args.label(),
            workload: args.workload.to_string(),
            clients: args.clients,
            conns: args.conns,
            ops: stats.ops,
            elapsed_s: round(stats.elapsed_s, 3),
            ops_per_s: round(stats.ops_per_s, 1),
            mean_ms: round(stats.mean_ms, 3),
            p50_ms: round(stats.p50_ms, 3),
            p90_ms: round(stats.p90_ms, 3),
            p99_ms: round(stats.p99_ms, 3),
            p999_ms: round(stats.p999_ms, 3),
            max_ms: round(stats.max_ms, 3),
            errors,
            loadgen_cpu_s: loadgen_cpu_s.map(|s| round(s, 2)),
            server_cpu_s: server_cpu_s.map(|s| round(s, 2)),
        }
    }

    /// The line for a person, in the peer's format.
    pub fn summary_line(&self) -> String {
        format!(
            "{}: workload={} clients={} conns={} ops={} elapsed={:.2}s ops/s={:.0} mean={:.2}ms p50={:.2}ms \
             p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms errors={} loadgen_cpu={} server_cpu={}",
            self.label,
            self.workload,
            self.clients,
            self.conns,
            self.ops,
            self.elapsed_s,
            self.ops_per_s,
            self.mean_ms,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.errors,
            cpu_seconds(self.loadgen_cpu_s),
            cpu_seconds(self.server_cpu_s),
        )
    }

    /// The line for a program: one JSON object.
    pub fn json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// CPU seconds as a summary line shows them (`?` when not measured).
pub(crate) fn cpu_seconds(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "?".to_owned(), |s| format!("{s:.2}s"))
}

/// `value` rounded to `decimals` decimal places, as the peer's load generator reports figures.
pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            label: "meridian-send".into(),
            workload: "send".into(),
            clients: 64,
            conns: 4,
            ops: 12345,
            elapsed_s: 10.0,
            ops_per_s: 1234.4,
            mean_ms: 5.2,
            p50_ms: 4.1,
            p90_ms: 8.0,
            p99_ms: 15.25,
            p999_ms: 30.0,
            max_ms: 41.5,
            errors: 0,
            loadgen_cpu_s: Some(3.5),
            server_cpu_s: None,
        }
    }

    #[test]
    fn the_json_line_has_the_peers_fields_then_ours_in_order() {
        assert_eq!(
            report().json_line().expect("serializes"),
            "{\"label\":\"meridian-send\",\"workload\":\"send\",\"clients\":64,\"conns\":4,\"ops\":12345,\
             \"elapsed_s\":10.0,\"ops_per_s\":1234.4,\"mean_ms\":5.2,\"p50_ms\":4.1,\"p90_ms\":8.0,\
             \"p99_ms\":15.25,\"p999_ms\":30.0,\"max_ms\":41.5,\"errors\":0,\"loadgen_cpu_s\":3.5,\
             \"server_cpu_s\":null}"
        );
    }

    #[test]
    fn the_json_line_reads_back() {
        let line = report().json_line().expect("serializes");
        assert_eq!(serde_json::from_str::<Report>(&line).expect("parses"), report());
    }

    #[test]
    fn the_summary_line_reads_like_the_peers() {
        assert_eq!(
            report().summary_line(),
            "meridian-send: workload=send clients=64 conns=4 ops=12345 elapsed=10.00s ops/s=1234 mean=5.20ms \
             p50=4.10ms p90=8.00ms p99=15.25ms p99.9=30.00ms max=41.50ms errors=0 loadgen_cpu=3.50s server_cpu=?"
        );
    }

    #[test]
    fn figures_are_rounded_like_the_peers() {
        assert_eq!(round(1234.5678, 1), 1234.6);
        assert_eq!(round(0.0004999, 3), 0.0);
        assert_eq!(round(2.0049, 2), 2.0);
    }
}
