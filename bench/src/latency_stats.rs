//! [`LatencyStats`]: throughput and latency percentiles of a measured window.

use std::time::Duration;

/// What a measured window's latencies add up to. Times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyStats {
    /// Requests that succeeded within the window.
    pub ops: u64,
    /// Length of the window, in seconds.
    pub elapsed_s: f64,
    /// `ops / elapsed_s`; 0 for an empty window.
    pub ops_per_s: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencyStats {
    /// Sums up per-request latencies (microseconds, any order) over a window of `elapsed`.
    ///
    /// Percentiles are read from the full sorted vector the way the peer's `etcd-load` reads
    /// them (`sorted[floor(n * p)]`, clamped to the last), so the two agree on any input.
    pub fn from_latencies(mut latencies_us: Vec<u32>, elapsed: Duration) -> LatencyStats {
        latencies_us.sort_unstable();
        let sorted = latencies_us.as_slice();
        let ops = sorted.len() as u64;
        let elapsed_s = elapsed.as_secs_f64();
        let ops_per_s = if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 };
        let mean_ms = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(|&us| f64::from(us)).sum::<f64>() / sorted.len() as f64 / 1000.0
        };
        LatencyStats {
            ops,
            elapsed_s,
            ops_per_s,
            mean_ms,
            p50_ms: percentile_ms(sorted, 0.50),
            p90_ms: percentile_ms(sorted, 0.90),
            p99_ms: percentile_ms(sorted, 0.99),
            p999_ms: percentile_ms(sorted, 0.999),
            max_ms: sorted.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        }
    }
}

/// The `p`-quantile of sorted microseconds, in milliseconds (the peer's `pct`).
fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64) * p).floor() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom as _;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    #[test]
    fn a_thousand_evenly_spread_latencies_give_known_percentiles() {
        // 1..=1000 µs, shuffled: the input order must not matter.
        let mut latencies: Vec<u32> = (1..=1000).collect();
        latencies.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        let stats = LatencyStats::from_latencies(latencies, Duration::from_secs(2));
        assert_eq!(
            stats,
            LatencyStats {
                ops: 1000,
                elapsed_s: 2.0,
                ops_per_s: 500.0,
                mean_ms: 0.5005,
                p50_ms: 0.501,
                p90_ms: 0.901,
                p99_ms: 0.991,
                p999_ms: 1.0,
                max_ms: 1.0,
            }
        );
    }

    #[test]
    fn a_slow_tail_shows_in_p99_and_max_only() {
        // 98 fast requests of 1 ms and two of 250 ms.
        let mut latencies = vec![1_000u32; 98];
        latencies.extend([250_000, 250_000]);
        let stats = LatencyStats::from_latencies(latencies, Duration::from_millis(500));
        assert_eq!(stats.ops_per_s, 200.0);
        assert_eq!((stats.p50_ms, stats.p90_ms), (1.0, 1.0));
        assert_eq!((stats.p99_ms, stats.p999_ms, stats.max_ms), (250.0, 250.0, 250.0));
        assert_eq!(stats.mean_ms, 5.98);
    }

    #[test]
    fn one_request_is_every_percentile() {
        let stats = LatencyStats::from_latencies(vec![1234], Duration::from_secs(1));
        assert_eq!(stats.ops, 1);
        for p in [stats.mean_ms, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.p999_ms, stats.max_ms] {
            assert_eq!(p, 1.234);
        }
    }

    #[test]
    fn an_empty_window_is_all_zeros() {
        let stats = LatencyStats::from_latencies(Vec::new(), Duration::from_secs(3));
        assert_eq!((stats.ops, stats.ops_per_s, stats.mean_ms, stats.p50_ms, stats.max_ms), (0, 0.0, 0.0, 0.0, 0.0));
        let no_time = LatencyStats::from_latencies(vec![5], Duration::ZERO);
        assert_eq!(no_time.ops_per_s, 0.0, "no division by zero");
    }

    #[test]
    fn ops_per_second_is_ops_over_elapsed() {
        let stats = LatencyStats::from_latencies(vec![10; 12_345], Duration::from_secs_f64(2.5));
        assert_eq!(stats.ops, 12_345);
        assert!((stats.ops_per_s - 12_345.0 / 2.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_are_ordered_on_any_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for round in 0..200 {
            let n = rng.gen_range(1..5_000);
            // Mostly small, sometimes huge: a long tail like real latencies.
            let latencies: Vec<u32> =
                (0..n).map(|_| if rng.gen_bool(0.01) { rng.gen() } else { rng.gen_range(1..20_000) }).collect();
            let (min, max) = (latencies.iter().min().copied(), latencies.iter().max().copied());
            let s = LatencyStats::from_latencies(latencies, Duration::from_secs(1));
            assert!(
                s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.p999_ms && s.p999_ms <= s.max_ms,
                "round {round}: {s:?}"
            );
            assert_eq!(Some(s.max_ms), max.map(|m| f64::from(m) / 1000.0));
            let (lo, hi) = (f64::from(min.unwrap_or(0)) / 1000.0, s.max_ms);
            assert!(
                lo <= s.mean_ms + 1e-9 && s.mean_ms <= hi + 1e-9,
                "round {round}: mean {} not in [{lo}, {hi}]",
                s.mean_ms
            );
        }
    }
}
