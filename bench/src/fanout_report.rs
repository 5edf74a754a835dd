//! [`FanoutReport`]: one fan-out run's result, as the summary line and the JSON line.

use serde::{Deserialize, Serialize};

use crate::latency_stats::LatencyStats;
use crate::report::{cpu_seconds, round};

/// One fan-out run's result. The JSON line carries the fields of the peer's MUC run
/// (`xmpp_load.py muc`: `members`, `senders`, `window`, `body_bytes`, `sent_per_s`,
/// `deliveries_per_s`, `fanout_done_p50_ms`, `fanout_done_p99_ms`, `delivery_p50_ms`,
/// `delivery_p99_ms`, `elapsed_s`, `loadgen_cpu_s`) plus ours. Rounded like the other
/// report: rates to 1 decimal, milliseconds to 3, CPU seconds to 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutReport {
    pub label: String,
    pub workload: String,
    pub members: usize,
    pub senders: usize,
    /// Messages each sender keeps in flight.
    pub window: usize,
    /// Clients the member streams are spread over (one gRPC connection per node each).
    pub conns: usize,
    pub body_bytes: usize,
    /// Messages started within the window, per second.
    pub sent_per_s: f64,
    /// Messages that reached every member within the window.
    pub messages: u64,
    pub msgs_per_s: f64,
    /// Member stream receipts within the window.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// From the send's start until the last member's stream had the message.
    pub fanout_done_p50_ms: f64,
    pub fanout_done_p99_ms: f64,
    pub fanout_done_max_ms: f64,
    /// From the send's start until one member's stream had it, over every receipt.
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub elapsed_s: f64,
    /// Sends that failed, messages that missed a member past the timeout, streams that
    /// broke for good, within the window.
    pub errors: u64,
    pub loadgen_cpu_s: Option<f64>,
    pub server_cpu_s: Option<f64>,
    /// A send is acknowledged once fsync'd on a majority, and a member's stream gets a
    /// message only after its node applied it, i.e. after that commit: always true.
    pub durable: bool,
}

/// The measured parts of a run, before rounding.
#[derive(Debug)]
pub struct FanoutFigures {
    pub sent: u64,
    pub completions: LatencyStats,
    pub deliveries: LatencyStats,
    pub errors: u64,
    pub loadgen_cpu_s: Option<f64>,
    pub server_cpu_s: Option<f64>,
}

/// The shape of the run: what the report repeats of the command line.
#[derive(Debug, Clone)]
pub struct FanoutShape {
    pub label: String,
    pub members: usize,
    pub senders: usize,
    pub window: usize,
    pub conns: usize,
    pub body_bytes: usize,
}

impl FanoutReport {
    /// The report of a run of `shape` that measured `figures`.
    pub fn new(shape: FanoutShape, figures: &FanoutFigures) -> FanoutReport {
        let (c, d) = (&figures.completions, &figures.deliveries);
        let elapsed_s = c.elapsed_s;
        let sent_per_s = if elapsed_s > 0.0 { figures.sent as f64 / elapsed_s } else { 0.0 };
        FanoutReport {
            label: shape.label,
            workload: "fanout".into(),
            members: shape.members,
            senders: shape.senders,
            window: shape.window,
            conns: shape.conns,
            body_bytes: shape.body_bytes,
            sent_per_s: round(sent_per_s, 1),
            messages: c.ops,
            msgs_per_s: round(c.ops_per_s, 1),
            deliveries: d.ops,
            deliveries_per_s: round(d.ops_per_s, 1),
            fanout_done_p50_ms: round(c.p50_ms, 3),
            fanout_done_p99_ms: round(c.p99_ms, 3),
            fanout_done_max_ms: round(c.max_ms, 3),
            delivery_p50_ms: round(d.p50_ms, 3),
            delivery_p99_ms: round(d.p99_ms, 3),
            elapsed_s: round(elapsed_s, 3),
            errors: figures.errors,
            loadgen_cpu_s: figures.loadgen_cpu_s.map(|s| round(s, 2)),
            server_cpu_s: figures.server_cpu_s.map(|s| round(s, 2)),
            durable: true,
        }
    }

    /// The line for a person.
    pub fn summary_line(&self) -> String {
        format!(
            "{}: workload=fanout members={} senders={} window={} conns={} msgs/s={:.0} deliveries/s={:.0} \
             sent/s={:.0} done_p50={:.2}ms done_p99={:.2}ms done_max={:.2}ms delivery_p50={:.2}ms \
             delivery_p99={:.2}ms elapsed={:.2}s errors={} loadgen_cpu={} server_cpu={} durable={}",
            self.label,
            self.members,
            self.senders,
            self.window,
            self.conns,
            self.msgs_per_s,
            self.deliveries_per_s,
            self.sent_per_s,
            self.fanout_done_p50_ms,
            self.fanout_done_p99_ms,
            self.fanout_done_max_ms,
            self.delivery_p50_ms,
            self.delivery_p99_ms,
            self.elapsed_s,
            self.errors,
            cpu_seconds(self.loadgen_cpu_s),
            cpu_seconds(self.server_cpu_s),
            self.durable,
        )
    }

    /// The line for a program: one JSON object.
    pub fn json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rates_come_from_the_window_and_every_receipt_counts_once() {
        // 2 s window: 3 messages to 4 members completed, 12 receipts, 4 sends started.
        let window = Duration::from_secs(2);
        let completions = LatencyStats::from_latencies(vec![4_000, 5_000, 9_000], window);
        let deliveries = LatencyStats::from_latencies((1..=12).map(|i| i * 500).collect(), window);
        let figures = FanoutFigures {
            sent: 4,
            completions,
            deliveries,
            errors: 0,
            loadgen_cpu_s: Some(1.234),
            server_cpu_s: None,
        };
        let shape = FanoutShape {
            label: "meridian-fanout".into(),
            members: 4,
            senders: 1,
            window: 2,
            conns: 3,
            body_bytes: 200,
        };
        let report = FanoutReport::new(shape, &figures);
        assert_eq!((report.messages, report.deliveries), (3, 12));
        assert_eq!((report.msgs_per_s, report.deliveries_per_s, report.sent_per_s), (1.5, 6.0, 2.0));
        assert_eq!((report.fanout_done_p50_ms, report.fanout_done_p99_ms, report.fanout_done_max_ms), (5.0, 9.0, 9.0));
        assert_eq!((report.delivery_p50_ms, report.delivery_p99_ms), (3.5, 6.0));
        assert_eq!(report.loadgen_cpu_s, Some(1.23));
        assert!(report.durable);

        let line = report.json_line().expect("serializes");
        assert!(line.starts_with("{\"label\":\"meridian-fanout\",\"workload\":\"fanout\",\"members\":4,"), "{line}");
        assert_eq!(serde_json::from_str::<FanoutReport>(&line).expect("parses"), report);
        assert!(report.summary_line().contains(" deliveries/s=6 sent/s=2 "), "{}", report.summary_line());
    }
}
