//! What the load client measures besides deliveries: the CPU time and
//! resident memory of processes (from `/proc`), and a latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on Linux
/// whatever the kernel's own tick).
pub const TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system, every thread) the processes have used, in
/// clock ticks; None if unreadable. From the publish to the end of the
/// drain, this is what the deliveries cost each side.
pub fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    sum_over(pids, |pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; the fields after its
        // closing parenthesis start at field 3 (state), so utime and stime
        // (fields 14 and 15) are the 12th and 13th.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
    })
}

/// Resident set size of the processes, in KiB (summed); None if unreadable.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    sum_over(pids, |pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    })
}

/// `read` summed over the processes; None when there are none or one of
/// them could not be read.
fn sum_over(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| read(pid)).sum()
}

/// Log-linear histogram of microseconds: exact below 128, then 64
/// sub-buckets per power of two (upper bounds within 1.6%).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    pub max: AtomicU64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..SUB * 48).map(|_| AtomicU64::new(0)).collect(),
            count: 0.into(),
            max: 0.into(),
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
    }

    /// The highest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (((i % SUB) + SUB + 1) << shift) - 1
    }

    pub fn record(&self, v: u64) {
        let i = Self::index(v).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Adds another histogram's counts to this one.
    pub fn add(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&other.buckets) {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
        self.count.fetch_add(other.count.load(Relaxed), Relaxed);
        self.max.fetch_max(other.max.load(Relaxed), Relaxed);
    }

    pub fn percentile(&self, p: f64) -> u64 {
        let count = self.count.load(Relaxed);
        if count == 0 {
            return 0;
        }
        let rank = ((p * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Self::upper(i).min(self.max.load(Relaxed));
            }
        }
        self.max.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [0, 1, 127, 128, 129, 255, 256, 1000, 12_345, 1 << 30, (1 << 40) + 7] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v}");
            assert!(i == 0 || Histogram::upper(i - 1) < v, "{v}");
            assert!((Histogram::upper(i) - v) as f64 <= v as f64 / 64.0 + 1.0, "{v}");
        }
        let h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        // Bucket upper bounds: 500 lands in [500, 503].
        assert_eq!(h.percentile(0.5), 503);
        assert!((990..=1000).contains(&h.percentile(0.99)));
        assert_eq!(h.percentile(1.0), 1000);
    }
}
