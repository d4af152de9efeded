//! A histogram with fixed buckets: one atomic add per bucket hit, one for
//! the sum, no lock, no allocation after construction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in microseconds, with the `le` text of each.
pub type Bounds = &'static [(u64, &'static str)];

/// Prometheus' default buckets (5 ms to 10 s): upstream response times
/// from a fast cached page to a slow report.
pub const LATENCY: Bounds = &[
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

/// From 1 ms (a message id's resolution) to 10 s: publish-to-delivery
/// times, normally a few milliseconds, seconds when a broker is backed up.
pub const DELIVERY: Bounds = &[
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

#[derive(Debug)]
pub struct Histogram {
    bounds: Bounds,
    /// Per bucket (not cumulative), then one past the last bound (`+Inf`).
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

/// What a scrape reads: per-bucket counts (not cumulative) and the sum.
pub struct Snapshot {
    pub buckets: Vec<u64>,
    pub sum_micros: u64,
}

impl Histogram {
    pub fn new(bounds: Bounds) -> Histogram {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum_micros: AtomicU64::new(0) }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    pub fn observe(&self, value: Duration) {
        self.observe_micros(u64::try_from(value.as_micros()).unwrap_or(u64::MAX));
    }

    /// Counts `micros` in the first bucket whose bound is at least it
    /// (`le`: less than or equal).
    pub fn observe_micros(&self, micros: u64) {
        let i = self.bounds.partition_point(|&(bound, _)| bound < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The count is the buckets' total, so `+Inf` and `_count` always
    /// agree; the sum may be a moment ahead or behind them.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}
