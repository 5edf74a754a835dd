//! [`Histogram`]: how long a stage of the write path takes, as a Prometheus histogram.
//!
//! Lock-free: recording is two relaxed atomic additions and one increment, so that every send
//! can be timed at every stage without a measurable cost. The bucket bounds are fixed
//! (50 µs doubling to about 13 s), which keeps histograms of all nodes and shards addable.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 50 µs, 100 µs, 200 µs, … 13.1 s.
const BOUNDS_US: [u64; 19] = {
    let mut bounds = [0u64; 19];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 50 << i;
        i += 1;
    }
    bounds
};

/// Durations of one stage: counts per bucket (the last one: above every bound), their sum.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (`const`: it can be a `static`).
    pub const fn new() -> Self {
        Histogram { buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1], sum_ns: AtomicU64::new(0) }
    }

    /// Counts one duration.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.iter().position(|&bound| us <= bound).unwrap_or(BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts the time since `started`.
    pub fn since(&self, started: std::time::Instant) {
        self.record(started.elapsed());
    }

    /// What has been recorded so far: bucket counts and the sum.
    pub fn read(&self) -> HistogramValues {
        HistogramValues {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// The values of a [`Histogram`], which add up across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramValues {
    buckets: [u64; BOUNDS_US.len() + 1],
    sum_ns: u64,
}

impl HistogramValues {
    /// The number of durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Adds another histogram's values (of another shard, say).
    pub fn add(&mut self, other: &HistogramValues) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_ns += other.sum_ns;
    }

    /// Writes the histogram `name` in the Prometheus text format (`# HELP`, `# TYPE`,
    /// cumulative `_bucket` lines with `le` in seconds, `_sum` in seconds and `_count`).
    pub fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BOUNDS_US.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_that_bounds_them_and_add_up() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(51));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let v = h.read();
        assert_eq!((v.count(), v.sum()), (4, Duration::from_micros(50 + 51 + 3_000) + Duration::from_secs(60)));
        let mut text = String::new();
        v.write_prometheus(&mut text, "x_seconds", "test");
        assert!(text.contains("x_seconds_bucket{le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.0001\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.0016\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.0032\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"13.1072\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_count 4\n"), "{text}");
        assert!(text.contains("x_seconds_sum 60.003101\n"), "{text}");

        let mut total = v;
        total.add(&v);
        assert_eq!((total.count(), total.sum()), (8, v.sum() * 2));
    }
}
